"""A diverse periodic data set the project does not ship: Al–Ni–Cu–Pd cells labelled with ASE's EMT.

    python benchmarks/alloy_emt_data.py            # writes benchmarks/runs/alloy_emt/{train,val,test}.xyz

Made to check settings on data that chose none of them (the attention issue's acceptance:
the builder's attention defaults against tutorial NequIP, 10 epochs, two seeds). It is
regenerated from its seed, never committed, and never used to choose a setting.

Contents, all periodic, 8 or 16 atoms, each atom's species drawn at random from the four
(so compositions run from pure metals to quaternary):
- ``random``: random triclinic cells (angles 60–120°), volume per atom 10–22 Å³ (fcc Cu:
  11.8, Al: 16.6), atoms at a minimum distance scaled with the density;
- ``relaxed``: random cells after 3 and 10 FIRE steps at fixed cell;
- ``prototype``: fcc, bcc, hcp, simple cubic and diamond cells scaled (volume ×0.85–1.35),
  sheared (±6 %) and rattled (σ 0.02, 0.08 or 0.2 Å).
Energies (eV), forces (eV/Å) and stress (eV/Å³) from EMT (Jacobsen, Stoltze, Nørskov 1996),
a model chemistry chosen because it is cheap and smooth, not for accuracy. Random split
80/10/10 by structure.
"""

import argparse
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.optimize import FIRE

OUT = Path(__file__).resolve().parent / "runs" / "alloy_emt"
SPECIES = ("Al", "Ni", "Cu", "Pd")
# name -> (ASE bulk arguments for a Cu-sized lattice, repeats to 8 atoms)
PROTOTYPES = {
    "fcc": (dict(crystalstructure="fcc", a=3.7, cubic=True), (1, 1, 2)),
    "bcc": (dict(crystalstructure="bcc", a=2.95, cubic=True), (2, 2, 1)),
    "hcp": (dict(crystalstructure="hcp", a=2.6, c=4.25), (2, 2, 1)),
    "simple_cubic": (dict(crystalstructure="sc", a=2.4), (2, 2, 2)),
    "diamond": (dict(crystalstructure="diamond", a=5.2, cubic=True), (1, 1, 1)),
}


def random_cell(rng, n_atoms, volume_per_atom):
    """Random triclinic cell of ``n_atoms`` at ``volume_per_atom``, atoms at a minimum
    distance (2.2 Å at 12 Å³/atom, scaled with the density); None if they do not fit."""
    while True:
        lengths = rng.uniform(0.7, 1.3, 3)
        alpha, beta, gamma = np.radians(rng.uniform(60, 120, 3))
        a, b, c = lengths
        cx = c * np.cos(beta)
        cy = c * (np.cos(alpha) - np.cos(beta) * np.cos(gamma)) / np.sin(gamma)
        cz2 = c**2 - cx**2 - cy**2
        if cz2 > 0.1 * c**2:
            break
    cell = np.array([[a, 0, 0], [b * np.cos(gamma), b * np.sin(gamma), 0], [cx, cy, np.sqrt(cz2)]])
    cell *= (n_atoms * volume_per_atom / abs(np.linalg.det(cell))) ** (1 / 3)
    d_min = 2.2 * (volume_per_atom / 12.0) ** (1 / 3)
    frac = [rng.uniform(size=3)]
    for _ in range(5000):
        if len(frac) == n_atoms:
            break
        trial = rng.uniform(size=3)
        delta = np.asarray(frac) - trial
        delta -= np.round(delta)
        if np.linalg.norm(delta @ cell, axis=1).min() >= d_min:
            frac.append(trial)
    if len(frac) < n_atoms:
        return None
    return Atoms(list(rng.choice(SPECIES, n_atoms)), cell=cell, pbc=True, scaled_positions=frac)


def prototype(rng, name, repeat_16):
    kwargs, repeats = PROTOTYPES[name]
    atoms = bulk("Cu", **kwargs) * repeats
    if repeat_16:
        atoms = atoms * (2, 1, 1)
    atoms.set_chemical_symbols(list(rng.choice(SPECIES, len(atoms))))
    strain = np.eye(3) * rng.uniform(0.85, 1.35) ** (1 / 3) + rng.uniform(-0.06, 0.06, (3, 3))
    atoms.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
    atoms.positions += rng.normal(scale=rng.choice([0.02, 0.08, 0.2]), size=atoms.positions.shape)
    return atoms


def label(atoms, source):
    atoms = atoms.copy()
    atoms.calc = EMT()
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                       stress=atoms.get_stress())
    frame.info["source"] = source
    return frame


def generate(seed: int = 2026, n_random: int = 300, n_relaxed: int = 80, per_prototype: int = 60):
    """Structures grouped by origin (a relaxation's two frames are one group)."""
    rng = np.random.default_rng(seed)
    groups = []
    while len(groups) < n_random + n_relaxed:
        atoms = random_cell(rng, int(rng.choice([8, 16])), float(rng.uniform(10, 22)))
        if atoms is None:
            continue
        if len(groups) < n_random:
            groups.append([label(atoms, "random")])
        else:
            atoms.calc = EMT()
            opt, frames = FIRE(atoms, logfile=None), []
            for steps in (3, 7):
                opt.run(fmax=0.05, steps=steps)
                frames.append(label(atoms, "relaxed"))
            groups.append(frames)
    for name in PROTOTYPES:
        for i in range(per_prototype):
            groups.append([label(prototype(rng, name, repeat_16=i % 2 == 1), f"prototype_{name}")])
    return groups, rng


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    groups, rng = generate(args.seed)
    order = rng.permutation(len(groups))
    n_val = n_test = len(groups) // 10
    splits = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, idx in splits.items():
        frames = [f for i in idx for f in groups[i]]
        write(out / f"{split}.xyz", frames, format="extxyz")
        print(f"{split}: {len(frames)} frames", flush=True)


if __name__ == "__main__":
    main()
