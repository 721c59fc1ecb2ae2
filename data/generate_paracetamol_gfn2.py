"""Generate the bundled paracetamol data set: GFN2-xTB molecular dynamics in vacuum.

Reference method: GFN2-xTB (Bannwarth, Ehlert, Grimme, JCTC 15, 1652 (2019)) through
`tblite` (`pip install tblite`), energies in eV and forces in eV/Å, no periodic
boundaries (no stress).

Molecule: paracetamol (acetaminophen, C8H9NO2, 20 atoms): a flexible organic molecule
with a rotatable amide, a methyl rotor and a hydroxyl rotor.

Sampling: independent Langevin MD trajectories at 500–700 K (0.5 fs step, friction
0.01 / fs), each from the same start geometry with its own temperature and seed;
``equilibration`` steps first, then one frame every ``stride`` steps. Trajectories are
kept apart so that train/val/test are split by trajectory, not by frame.

Start geometry: embedded from the SMILES CC(=O)Nc1ccc(O)cc1 with RDKit's ETKDG and
MMFF (random seed 7) once, written below; GFN2-xTB MD takes it from there.

Run:  OMP_NUM_THREADS=1 python data/generate_paracetamol_gfn2.py   (about 10 min on one
core; OMP_NUM_THREADS=1 matters: tblite with 2 threads is ~100x slower here)
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

START_GEOMETRY = [  # Å
    ("C", -3.6645, -0.5774, -0.0163),
    ("C", -2.2115, -0.8955, -0.2688),
    ("O", -1.8819, -1.9716, -0.7542),
    ("N", -1.3791, 0.1527, 0.0800),
    ("C", 0.0262, 0.2051, -0.0235),
    ("C", 0.8145, -0.8440, -0.5033),
    ("C", 2.2065, -0.7144, -0.5745),
    ("C", 2.8084, 0.4685, -0.1636),
    ("O", 4.1596, 0.6358, -0.2164),
    ("C", 2.0426, 1.5214, 0.3165),
    ("C", 0.6534, 1.3898, 0.3866),
    ("H", -4.0643, -0.0139, -0.8633),
    ("H", -4.2257, -1.5094, 0.0977),
    ("H", -3.7841, 0.0040, 0.9025),
    ("H", -1.8247, 0.9846, 0.4455),
    ("H", 0.3767, -1.7816, -0.8314),
    ("H", 2.7931, -1.5462, -0.9517),
    ("H", 4.5570, -0.1767, -0.5711),
    ("H", 2.5236, 2.4416, 0.6352),
    ("H", 0.0743, 2.2273, 0.7657),
]

# (name, temperature K, seed, split)
TRAJECTORIES = [
    ("traj00", 500, 1, "train"),
    ("traj01", 600, 2, "train"),
    ("traj02", 700, 3, "train"),
    ("traj03", 550, 4, "train"),
    ("traj04", 650, 5, "val"),
    ("traj05", 600, 6, "test"),
]


def start_molecule() -> Atoms:
    return Atoms(
        symbols=[s for s, *_ in START_GEOMETRY],
        positions=[xyz for _, *xyz in START_GEOMETRY],
        pbc=False,
    )


def run_trajectory(temperature, seed, n_frames, stride, equilibration):
    from tblite.ase import TBLite

    rng = np.random.default_rng(seed)
    atoms = start_molecule()
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=temperature, friction=0.01 / units.fs, rng=rng)
    dyn.run(equilibration)
    frames = []
    for _ in range(n_frames):
        dyn.run(stride)
        frame = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions.copy(), pbc=False)
        frame.calc = SinglePointCalculator(
            frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
        )
        frames.append(frame)
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "paracetamol_gfn2"))
    parser.add_argument("--frames", type=int, default=200, help="frames per trajectory")
    parser.add_argument("--stride", type=int, default=20, help="MD steps (0.5 fs) between frames")
    parser.add_argument("--equilibration", type=int, default=1000)
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: set OMP_NUM_THREADS=1 (tblite with more threads is far slower on small molecules)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    by_split = {"train": [], "val": [], "test": []}
    for name, temp, seed, split in TRAJECTORIES:
        start = time.time()
        frames = run_trajectory(temp, seed, args.frames, args.stride, args.equilibration)
        for f in frames:
            f.info["trajectory"] = name
            f.info["temperature_K"] = temp
        by_split[split] += frames
        energies = np.array([f.get_potential_energy() for f in frames])
        print(
            f"{name}: {len(frames)} frames, T={temp} K, split={split}, "
            f"E range {energies.max() - energies.min():.2f} eV, {time.time() - start:.0f} s"
        )
    for split, frames in by_split.items():
        write(out / f"{split}.xyz", frames, format="extxyz")
        print(f"{split}.xyz: {len(frames)} frames")


if __name__ == "__main__":
    main()
