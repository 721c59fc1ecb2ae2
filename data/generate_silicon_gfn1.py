"""Generate the bundled diverse silicon data set: random and distorted crystals, GFN1-xTB.

Reference method: periodic GFN1-xTB (Grimme, Bannwarth, Shushkov, JCTC 13, 1989
(2017)) through `tblite` (`pip install tblite`): energies (eV), forces (eV/Å) and
stress (eV/Å^3). GFN1 is used because it has parameters for periodic Si; like any
tight-binding method it is a model chemistry, chosen here to give a wide, varied and
physically consistent landscape, not DFT accuracy.

What it contains (the kind of data active learning brings, not one MD basin):
- ``random``: random cells of 8, 12 or 16 atoms, volume per atom log-uniform in
  12–40 Å³ (diamond Si: 20), cell angles 60–120°, atoms placed at random with a
  minimum distance that scales with the density;
- ``relaxed``: some of those random cells after 3 and after 10 FIRE steps (fixed
  cell), i.e. the lower-energy structures a structure search passes through;
- ``prototype``: diamond, β-tin, simple cubic, bcc, fcc and hcp supercells (8 or 16
  atoms), isotropically scaled (volume ×0.8–1.5), sheared (±6 %) and rattled
  (σ = 0.02, 0.08 or 0.2 Å).
Structures whose SCF does not converge are dropped (the count is printed). Random
split 80 / 10 / 10 with a fixed seed.

Run:  OMP_NUM_THREADS=1 python data/generate_silicon_gfn1.py   (about 20–30 min on one
core; OMP_NUM_THREADS=1 matters: tblite with 2 threads is far slower here)
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.optimize import FIRE

PROTOTYPES = {  # name -> (ASE bulk arguments, supercell repeats)
    "diamond": (dict(crystalstructure="diamond", a=5.43, cubic=True), (1, 1, 1)),
    "beta_tin": (dict(crystalstructure="bct", a=4.92, c=2.71), (2, 2, 2)),
    "simple_cubic": (dict(crystalstructure="sc", a=2.53), (2, 2, 2)),
    "bcc": (dict(crystalstructure="bcc", a=3.08, cubic=True), (2, 2, 2)),
    "fcc": (dict(crystalstructure="fcc", a=3.85, cubic=True), (1, 1, 2)),
    "hcp": (dict(crystalstructure="hcp", a=2.72, c=4.44), (2, 2, 2)),
}


def random_cell(rng, n_atoms, volume_per_atom):
    """A random triclinic cell of the given volume with atoms at a minimum distance."""
    while True:
        lengths = rng.uniform(0.7, 1.3, 3)
        angles = np.radians(rng.uniform(60, 120, 3))
        a, b, c = lengths
        alpha, beta, gamma = angles
        # cell from lengths and angles (a along x, b in the xy plane)
        cx = c * np.cos(beta)
        cy = c * (np.cos(alpha) - np.cos(beta) * np.cos(gamma)) / np.sin(gamma)
        cz2 = c**2 - cx**2 - cy**2
        if cz2 <= 0.1 * c**2:
            continue
        cell = np.array([[a, 0, 0], [b * np.cos(gamma), b * np.sin(gamma), 0], [cx, cy, np.sqrt(cz2)]])
        cell *= (n_atoms * volume_per_atom / abs(np.linalg.det(cell))) ** (1 / 3)
        break
    # minimum distance: 2.0 Å at diamond density, scaled with the density
    d_min = 2.0 * (volume_per_atom / 20.0) ** (1 / 3)
    atoms = Atoms("Si", cell=cell, pbc=True, scaled_positions=[rng.uniform(size=3)])
    attempts = 0
    while len(atoms) < n_atoms:
        attempts += 1
        if attempts > 5000:
            return None
        trial = atoms + Atoms("Si", cell=cell, pbc=True, scaled_positions=[rng.uniform(size=3)])
        if trial.get_distances(len(trial) - 1, range(len(trial) - 1), mic=True).min() >= d_min:
            atoms = trial
    return atoms


def prototype(rng, name):
    kwargs, repeats = PROTOTYPES[name]
    atoms = bulk("Si", **kwargs) * repeats
    scale = rng.uniform(0.8, 1.5) ** (1 / 3)
    strain = np.eye(3) * scale + rng.uniform(-0.06, 0.06, (3, 3))
    atoms.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
    atoms.positions += rng.normal(scale=rng.choice([0.02, 0.08, 0.2]), size=atoms.positions.shape)
    return atoms


def gfn1_calculator():
    from tblite.ase import TBLite

    return TBLite(method="GFN1-xTB", verbosity=0, max_iterations=150, electronic_temperature=3000.0, mixer_damping=0.2)


def label(atoms, source):
    """GFN1-xTB energy, forces, stress as a SinglePointCalculator copy, or None if SCF fails."""
    atoms = atoms.copy()
    atoms.calc = gfn1_calculator()
    try:
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    except Exception as error:  # tblite raises on SCF non-convergence
        print(f"  dropped ({source}): {str(error).splitlines()[0][:80]}")
        return None
    frame = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=True)
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces, stress=stress)
    frame.info["source"] = source
    frame.info["volume_per_atom"] = round(atoms.get_volume() / len(atoms), 3)
    return frame


def relaxation_frames(atoms, steps=(3, 10)):
    """Frames after each number of FIRE steps (positions only), labelled on the way."""
    atoms = atoms.copy()
    atoms.calc = gfn1_calculator()
    frames, done = [], 0
    try:
        opt = FIRE(atoms, logfile=None)
        for n in steps:
            opt.run(fmax=0.05, steps=n - done)
            done = n
            frames.append(label(atoms, "relaxed"))
    except Exception as error:
        print(f"  dropped relaxation: {str(error).splitlines()[0][:80]}")
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "silicon_gfn1"))
    parser.add_argument("--random", type=int, default=340, help="random cells (single points)")
    parser.add_argument("--relaxed", type=int, default=110, help="random cells relaxed for 3 and 10 steps")
    parser.add_argument("--per-prototype", type=int, default=70)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: set OMP_NUM_THREADS=1 (tblite with more threads is far slower here)")
    rng = np.random.default_rng(args.seed)
    start = time.time()
    frames, dropped = [], 0

    def random_structure():
        while True:
            atoms = random_cell(rng, int(rng.choice([8, 12, 16])), float(np.exp(rng.uniform(np.log(12), np.log(40)))))
            if atoms is not None:
                return atoms

    for i in range(args.random):
        frame = label(random_structure(), "random")
        dropped += frame is None
        frames += [frame] if frame is not None else []
    print(f"random: {len(frames)} frames, {time.time() - start:.0f} s")
    for i in range(args.relaxed):
        new = relaxation_frames(random_structure())
        dropped += sum(f is None for f in new) + 2 - len(new)
        frames += [f for f in new if f is not None]
    print(f"+ relaxed: {len(frames)} frames, {time.time() - start:.0f} s")
    for name in PROTOTYPES:
        for i in range(args.per_prototype):
            frame = label(prototype(rng, name), f"prototype_{name}")
            dropped += frame is None
            frames += [frame] if frame is not None else []
    print(f"+ prototypes: {len(frames)} frames, {dropped} dropped (SCF), {time.time() - start:.0f} s")

    order = rng.permutation(len(frames))
    n_val = n_test = len(frames) // 10
    splits = {
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
        "train": order[n_val + n_test :],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, idx in splits.items():
        write(out / f"{split}.xyz", [frames[i] for i in sorted(idx)], format="extxyz")
        print(f"{split}.xyz: {len(idx)} frames")
    energies = np.array([f.get_potential_energy() / len(f) for f in frames])
    forces = np.concatenate([np.abs(f.get_forces()).ravel() for f in frames])
    volumes = np.array([f.info["volume_per_atom"] for f in frames])
    print(
        f"energy/atom {energies.min():.2f} .. {energies.max():.2f} eV, max |F| {forces.max():.1f} eV/Å, "
        f"volume/atom {volumes.min():.1f} .. {volumes.max():.1f} Å^3"
    )


if __name__ == "__main__":
    main()
