"""Generate the bundled Cu–Au data set with ASE's EMT calculator.

Reference method: ASE's effective-medium theory (EMT) for Cu and Au
(Jacobsen, Stoltze, Nørskov, Surf. Sci. 366, 394 (1996)), energies in eV, forces in
eV/Å, stress in eV/Å^3.

Sampling: independent Langevin MD trajectories of periodic fcc Cu(1-x)Au(x) cells
(32 atoms, 2x2x2 conventional cells) at elevated temperature, each with its own
composition, lattice strain, temperature and random seed. Frames are taken every
``stride`` steps after an equilibration period. Trajectories are written to separate
files so that train/val/test can be split by trajectory, not by frame.

Run:  python data/generate_cuau_emt.py   (about a minute on one core)
"""

import argparse
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

# (name, Au fraction, temperature K, isotropic strain, seed, split)
TRAJECTORIES = [
    ("traj00", 0.25, 900, 0.00, 1, "train"),
    ("traj01", 0.50, 1200, 0.01, 2, "train"),
    ("traj02", 0.75, 1000, -0.01, 3, "train"),
    ("traj03", 0.10, 1400, 0.02, 4, "train"),
    ("traj04", 0.60, 800, -0.02, 5, "train"),
    ("traj05", 0.40, 1100, 0.015, 6, "train"),
    ("traj06", 0.30, 1000, 0.005, 7, "val"),
    ("traj07", 0.55, 1300, -0.005, 8, "test"),
]


def make_cell(au_fraction, strain, rng):
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True) * (2, 2, 2)  # lattice between Cu and Au
    n_au = int(round(au_fraction * len(atoms)))
    symbols = np.array(["Cu"] * len(atoms))
    symbols[rng.choice(len(atoms), n_au, replace=False)] = "Au"
    atoms.set_chemical_symbols(symbols.tolist())
    # a small random shear plus the isotropic strain, so stresses vary between trajectories
    deform = np.eye(3) * (1 + strain) + rng.normal(scale=0.01, size=(3, 3))
    atoms.set_cell(atoms.cell[:] @ deform, scale_atoms=True)
    return atoms


def run_trajectory(au_fraction, temperature, strain, seed, n_frames, stride, equilibration):
    rng = np.random.default_rng(seed)
    atoms = make_cell(au_fraction, strain, rng)
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=temperature, friction=0.02, rng=rng)
    dyn.run(equilibration)
    frames = []
    for _ in range(n_frames):
        dyn.run(stride)
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(
            frame,
            energy=atoms.get_potential_energy(),
            forces=atoms.get_forces(),
            stress=atoms.get_stress(),
        )
        frames.append(frame)
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "cuau_emt"))
    parser.add_argument("--frames", type=int, default=60, help="frames per trajectory")
    parser.add_argument("--stride", type=int, default=10, help="MD steps between frames")
    parser.add_argument("--equilibration", type=int, default=200)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, x_au, temp, strain, seed, split in TRAJECTORIES:
        frames = run_trajectory(x_au, temp, strain, seed, args.frames, args.stride, args.equilibration)
        for f in frames:
            f.info["trajectory"] = name
            f.info["temperature_K"] = temp
        write(out / f"{split}_{name}.xyz", frames, format="extxyz")
        print(f"{name}: {len(frames)} frames, x_Au={x_au}, T={temp} K, split={split}")
    # one file per split, as the config reads them
    for split in ("train", "val", "test"):
        frames = []
        from ase.io import read

        for path in sorted(out.glob(f"{split}_traj*.xyz")):
            frames += read(path, index=":")
            path.unlink()
        write(out / f"{split}.xyz", frames, format="extxyz")
        print(f"{split}.xyz: {len(frames)} frames")


if __name__ == "__main__":
    main()
