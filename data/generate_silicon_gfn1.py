"""Generate the bundled diverse silicon data set: random and distorted crystals, GFN1-xTB.

Reference method: periodic GFN1-xTB (Grimme, Bannwarth, Shushkov, JCTC 13, 1989
(2017)) through `tblite` (`pip install tblite`): energies (eV), forces (eV/Å) and
stress (eV/Å^3). GFN1 is used because it has parameters for periodic Si; like any
tight-binding method it is a model chemistry, chosen here to give a wide, varied and
physically consistent landscape, not DFT accuracy.

What it contains (the kind of data active learning brings, not one MD basin), all in
8-atom periodic cells:
- ``random``: random cells, volume per atom log-uniform in 12–40 Å³ (diamond Si: 20),
  cell angles 60–120°, atoms placed at random with a minimum distance that scales with
  the density;
- ``relaxed``: random cells after 3 and after 10 FIRE steps (fixed cell), i.e. the
  lower-energy structures a structure search passes through;
- ``prototype``: diamond, β-tin, simple cubic, bcc, fcc and hcp cells, isotropically
  scaled (volume ×0.8–1.5), sheared (±6 %) and rattled (σ = 0.02, 0.08 or 0.2 Å).

**k-point convergence.** tblite samples the Brillouin zone at Γ only, which for a 4–7 Å
cell is far from converged (the same 8-atom fcc cell: −45.83 eV/atom alone, −47.367 in
its 2×2×2 supercell, −47.382 in 3×3×3; measured). Every cell is therefore labelled in a
supercell at least ``--min-width`` (7 Å) wide in every direction (``SupercellGFN1``),
which converges the energy to about 0.015 eV/atom on that fcc cell.

Structures whose SCF does not converge are dropped (listed in ``progress_dropped.txt``).
Random split 80 / 10 / 10 by structure (both frames of a relaxation in the same split).

Run:  OMP_NUM_THREADS=1 python data/generate_silicon_gfn1.py --workers 2
(hours on 2 cores: most supercells have 64 atoms, 10–15 s each; progress is written to
``progress.xyz`` after every structure and a rerun resumes from it; OMP_NUM_THREADS=1
matters: tblite with 2 threads is far slower here)
"""

import argparse
import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.optimize import FIRE

PROTOTYPES = {  # name -> (ASE bulk arguments, repeats to an 8-atom cell)
    "diamond": (dict(crystalstructure="diamond", a=5.43, cubic=True), (1, 1, 1)),
    "beta_tin": (dict(crystalstructure="bct", a=4.92, c=2.71), (2, 2, 2)),
    "simple_cubic": (dict(crystalstructure="sc", a=2.53), (2, 2, 2)),
    "bcc": (dict(crystalstructure="bcc", a=3.08, cubic=True), (2, 2, 1)),
    "fcc": (dict(crystalstructure="fcc", a=3.85, cubic=True), (1, 1, 2)),
    "hcp": (dict(crystalstructure="hcp", a=2.72, c=4.44), (2, 2, 1)),
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


def supercell_repeats(cell, min_width):
    """Repeats along each cell vector so that every perpendicular width is >= ``min_width``."""
    cell = np.asarray(cell)
    volume = abs(np.linalg.det(cell))
    widths = [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    return tuple(int(np.ceil(min_width / w)) for w in widths)


class SupercellGFN1(Calculator):
    """GFN1-xTB of a small periodic cell, evaluated in a supercell.

    tblite samples the Brillouin zone at Γ only. For an 8-atom cell of 4–5 Å that is far
    from converged: the energy per atom of the same fcc cell changes by 1.5 eV when it is
    computed in its 2×2×2 supercell (measured), an error that depends on the cell, not
    on the atoms' surroundings, so no local potential can learn it. Γ in a supercell of
    ``r`` repeats is exactly an ``r``-point k-mesh of the small cell, so the small cell is
    labelled with the supercell's energy per cell, the forces on its atoms (the first
    ``n`` atoms of ``Atoms.repeat``) and the stress (intensive).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, min_width, **kwargs):
        super().__init__(**kwargs)
        self.min_width = min_width
        self._big = None  # (repeats, n atoms, calculator): kept so relaxations restart the SCF

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        repeats = supercell_repeats(self.atoms.cell, self.min_width)
        key = (repeats, len(self.atoms))
        if self._big is None or self._big[0] != key:
            self._big = (key, gfn1_calculator())
        big = self.atoms.repeat(repeats)
        big.calc = self._big[1]
        copies = int(np.prod(repeats))
        energy = big.get_potential_energy() / copies
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": big.get_forces()[: len(self.atoms)],
            "stress": big.get_stress(),
        }
        self.repeats = repeats


def label(atoms, source, calc):
    """Energy, forces, stress as a SinglePointCalculator copy, or None if the SCF fails."""
    atoms = atoms.copy()
    atoms.calc = calc
    try:
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    except Exception as error:  # tblite raises on SCF non-convergence
        print(f"  dropped ({source}): {str(error).splitlines()[0][:80]}", flush=True)
        return None
    frame = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=True)
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces, stress=stress)
    frame.info["source"] = source
    frame.info["volume_per_atom"] = round(atoms.get_volume() / len(atoms), 3)
    frame.info["supercell"] = "x".join(map(str, calc.repeats))
    return frame


def run_task(task):
    """Label one structure (``random``, ``prototype_*``) or the frames of one short
    relaxation (``relaxed``: after 3 and 10 FIRE steps, fixed cell); returns
    ``(task id, frames)`` (no frames if the SCF failed)."""
    task_id, source, atoms, min_width = task
    calc = SupercellGFN1(min_width)
    if source != "relaxed":
        frames = [label(atoms, source, calc)]
    else:
        atoms = atoms.copy()
        atoms.calc = calc
        frames, done = [], 0
        try:
            opt = FIRE(atoms, logfile=None)
            for n in (3, 10):
                opt.run(fmax=0.05, steps=n - done)
                done = n
                frames.append(label(atoms, "relaxed", calc))
        except Exception as error:
            print(f"  dropped relaxation: {str(error).splitlines()[0][:80]}", flush=True)
    frames = [f for f in frames if f is not None]
    for f in frames:
        f.info["task"] = task_id
    return task_id, frames


def make_tasks(args):
    """Every structure to label, in a fixed order drawn from ``--seed``."""
    rng = np.random.default_rng(args.seed)

    def random_structure():
        while True:
            atoms = random_cell(rng, 8, float(np.exp(rng.uniform(np.log(12), np.log(40)))))
            if atoms is not None:
                return atoms

    tasks = [(f"random_{i}", "random", random_structure(), args.min_width) for i in range(args.random)]
    tasks += [(f"relaxed_{i}", "relaxed", random_structure(), args.min_width) for i in range(args.relaxed)]
    tasks += [(f"{name}_{i}", f"prototype_{name}", prototype(rng, name), args.min_width)
              for name in PROTOTYPES for i in range(args.per_prototype)]
    return tasks


def check_kpoints(path, max_repeat):
    """Energy per atom of some frames of ``path`` computed in n×n×n supercells, n = 1..max_repeat."""
    frames = read(path, index=":")
    # the densest close-packed cells (fcc and hcp near 12.2 Å³/atom) and the first random cell
    picks = [f for f in frames if f.info.get("source") in ("prototype_fcc", "prototype_hcp")
             and abs(f.info["volume_per_atom"] - 12.2) < 0.1][:2]
    picks += [f for f in frames if f.info.get("source") == "random"][:1]
    for frame in picks:
        energies = []
        for n in range(1, max_repeat + 1):
            big = frame.repeat(n)
            big.calc = gfn1_calculator()
            energies.append(big.get_potential_energy() / len(big))
            print(f"{frame.info['source']} ({len(frame)} atoms, widths {np.round(frame.cell.lengths(), 2)} Å) in {n}x{n}x{n}: "
                  f"{energies[-1]:.4f} eV/atom; label {frame.get_potential_energy() / len(frame):.4f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check-kpoints", metavar="XYZ", help="only print how the energy per atom of some frames of "
                        "this file converges with the supercell (1x1x1 up to --max-repeat)")
    parser.add_argument("--max-repeat", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "silicon_gfn1"))
    parser.add_argument("--random", type=int, default=340, help="random cells (single points)")
    parser.add_argument("--relaxed", type=int, default=60, help="random cells relaxed for 3 and 10 steps")
    parser.add_argument("--per-prototype", type=int, default=70)
    parser.add_argument("--min-width", type=float, default=7.0,
                        help="label every cell in a supercell at least this wide (Å) in every direction")
    parser.add_argument("--workers", type=int, default=1, help="processes (one core each)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    if args.check_kpoints:
        return check_kpoints(args.check_kpoints, args.max_repeat)
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: set OMP_NUM_THREADS=1 (tblite with more threads is far slower here)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # progress is appended task by task, so an interrupted run resumes where it stopped
    progress, dropped_file = out / "progress.xyz", out / "progress_dropped.txt"
    frames = read(progress, index=":") if progress.exists() and progress.stat().st_size else []
    done = {f.info["task"] for f in frames}
    done |= set(dropped_file.read_text().split()) if dropped_file.exists() else set()
    tasks = make_tasks(args)
    pending = [t for t in tasks if t[0] not in done]
    print(f"{len(tasks)} structures, {len(tasks) - len(pending)} already labelled, {len(pending)} to go", flush=True)
    start = time.time()
    with Pool(args.workers) as pool:
        for i, (task_id, new) in enumerate(pool.imap_unordered(run_task, pending), start=1):
            if new:
                write(progress, new, format="extxyz", append=True)
                frames += new
            else:
                with open(dropped_file, "a") as f:
                    f.write(task_id + "\n")
            if i % 10 == 0 or i == len(pending):
                rate = (time.time() - start) / i
                print(f"{i}/{len(pending)} labelled, {rate:.0f} s each, ~{rate * (len(pending) - i) / 60:.0f} min to go", flush=True)
    dropped = sorted(set(dropped_file.read_text().split())) if dropped_file.exists() else []
    print(f"{len(frames)} frames; {len(dropped)} structures dropped (SCF)")

    # split by task (the two frames of a relaxation stay together), in task order
    order = {t[0]: i for i, t in enumerate(tasks)}
    frames.sort(key=lambda f: (order[f.info["task"]], f.info["source"] == "relaxed" and f.get_potential_energy()))
    task_ids = sorted({f.info["task"] for f in frames}, key=order.get)
    perm = np.random.default_rng(args.seed + 1).permutation(len(task_ids))
    n_hold = len(task_ids) // 10
    split_of = {task_ids[j]: ("val" if k < n_hold else "test" if k < 2 * n_hold else "train") for k, j in enumerate(perm)}
    for split in ("train", "val", "test"):
        chosen = [f for f in frames if split_of[f.info["task"]] == split]
        write(out / f"{split}.xyz", chosen, format="extxyz")
        print(f"{split}.xyz: {len(chosen)} frames")
    energies = np.array([f.get_potential_energy() / len(f) for f in frames])
    forces = np.concatenate([np.abs(f.get_forces()).ravel() for f in frames])
    volumes = np.array([f.info["volume_per_atom"] for f in frames])
    stress = np.array([np.abs(f.get_stress()).max() for f in frames])
    sources = {src: sum(f.info["source"] == src for f in frames) for src in sorted({f.info["source"] for f in frames})}
    print(
        f"energy/atom {energies.min():.2f} .. {energies.max():.2f} eV, max |F| {forces.max():.1f} eV/Å, "
        f"force RMS {np.sqrt(np.mean(forces ** 2)):.2f} eV/Å, volume/atom {volumes.min():.1f} .. {volumes.max():.1f} Å^3, "
        f"max |stress| {stress.max():.2f} eV/Å^3; frames per kind {sources}"
    )


if __name__ == "__main__":
    main()
