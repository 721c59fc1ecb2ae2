"""Long MD with the shipped models: does it stay physical above the training temperatures?

    python benchmarks/long_md.py                          # Cu-Au 1200 K and paracetamol 800 K, float32 and float64
    python benchmarks/long_md.py --data cuau --dtype float32 --ps 2      # a short look

For each data set and dtype: train the shipped config as the quick start does
(``nequip-train -cp configs -cn <config> model_dtype=<dtype>``, its own max_epochs; the
wall-clock guard is lifted to an hour so that a slower float64 run or a busy machine
still trains every epoch), then run ASE MD with the trained checkpoint through ``FlashACECalculator``:
Langevin at the target temperature for the first half, NVE for the second. Every
``--every`` steps it records the total energy, the closest pair (minimum image) and, for
the molecule, whether the covalent bonds of the first frame are intact (a bond is broken
beyond 1.5x the sum of covalent radii; a new bond forms below 1.0x). The NVE energy drift
is the slope of a straight-line fit of the total energy, in meV/atom/ps. Writes
benchmarks/results/long_md.{md,json}; training runs under benchmarks/runs/long_md/.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, RUNS, markdown_table, provenance  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# data set -> (config, test file, temperature K, timestep fs)
CASES = {
    "cuau": ("flash_ace", REPO / "data" / "cuau_emt" / "test.xyz", 1200.0, 1.0),
    "paracetamol": ("flash_ace_paracetamol", REPO / "data" / "paracetamol_gfn2" / "test.xyz", 800.0, 0.5),
}


def train_shipped(config: str, dtype: str, run_dir: Path, *overrides) -> Path:
    """The quick-start training of a shipped config (train only); its best checkpoint."""
    # the nequip-train next to this Python (a venv need not be activated)
    exe = Path(sys.executable).parent / "nequip-train"
    cmd = [str(exe) if exe.exists() else "nequip-train", "-cp", str(REPO / "configs"), "-cn", config, f"hydra.run.dir={run_dir}",
           f"model_dtype={dtype}", "run=[train]", "max_time=00:01:00:00", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"training failed: {(proc.stderr or proc.stdout)[-2000:]}")
    return run_dir / "best.ckpt"


def epochs_trained(run_dir: Path) -> int:
    """Epochs in a run's CSV log (validated epochs)."""
    import csv

    with open(run_dir / "csv" / "metrics.csv") as f:
        return len({r["epoch"] for r in csv.DictReader(f) if r.get("val0_epoch/forces_mae")})


def bonds(atoms, factor: float):
    """Pairs (i < j) closer than ``factor`` x the sum of their covalent radii."""
    from ase.data import covalent_radii

    d = atoms.get_all_distances(mic=atoms.pbc.any())
    r = covalent_radii[atoms.numbers]
    i, j = np.nonzero(np.triu(d < factor * (r[:, None] + r[None, :]), k=1))
    return set(zip(i.tolist(), j.tolist()))


def run_md(checkpoint: Path, frame_file: Path, temperature_k: float, timestep_fs: float, ps: float,
           every: int = 10, seed: int = 0, molecule: bool = False) -> dict:
    """Langevin for the first half of ``ps`` picoseconds, NVE for the second; see the module docstring."""
    from ase import units
    from ase.io import read
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    from nequip_flash_ace.integrations.ase import FlashACECalculator

    atoms = read(frame_file, index="0")
    atoms.calc = FlashACECalculator._from_saved_model(str(checkpoint), device="cpu", chemical_species_to_atom_type_map=True)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=rng)
    Stationary(atoms)
    steps = int(round(ps * 1000 / timestep_fs))
    bonded = bonds(atoms, 1.2) if molecule else set()
    record = {"t_ps": [], "etot_ev": [], "min_dist": [], "temperature_k": [], "phase": []}
    broken, formed = set(), set()

    def sample(phase):
        record["t_ps"].append(len(record["t_ps"]) * every * timestep_fs / 1000)
        record["etot_ev"].append(float(atoms.get_potential_energy() + atoms.get_kinetic_energy()))
        d = atoms.get_all_distances(mic=atoms.pbc.any())
        record["min_dist"].append(float(d[np.triu_indices(len(atoms), 1)].min()))
        record["temperature_k"].append(float(atoms.get_temperature()))
        record["phase"].append(phase)
        if molecule:
            broken.update(bonded - bonds(atoms, 1.5))
            formed.update(bonds(atoms, 1.0) - bonded)

    start = time.time()
    stopped = None
    try:
        langevin = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_k, friction=0.01 / units.fs, rng=rng)
        langevin.attach(lambda: sample("langevin"), interval=every)
        langevin.run(steps // 2)
        nve = VelocityVerlet(atoms, timestep_fs * units.fs)
        nve.attach(lambda: sample("nve"), interval=every)
        nve.run(steps - steps // 2)
    except ValueError as error:
        # the model's input check stopped the run (atoms closer than min_atom_distance):
        # the MD fell apart, a result to report, not a crash of the benchmark
        stopped = f"after {record['t_ps'][-1] if record['t_ps'] else 0:.3f} ps: {error}"
    wall = time.time() - start
    t = np.array(record["t_ps"])
    e = np.array(record["etot_ev"])
    in_nve = np.array(record["phase"]) == "nve"
    slope = np.polyfit(t[in_nve], e[in_nve], 1)[0] if in_nve.sum() > 2 else float("nan")
    return dict(
        record,
        atoms=len(atoms), steps=steps, timestep_fs=timestep_fs, temperature_target_k=temperature_k, wall_s=wall,
        finite=bool(np.isfinite(e).all()), min_dist_overall=float(np.min(record["min_dist"])) if record["min_dist"] else float("nan"),
        nve_drift_mev_per_atom_ps=float(1e3 * slope / len(atoms)),
        nve_spread_mev_per_atom=float(1e3 * (e[in_nve].max() - e[in_nve].min()) / len(atoms)) if in_nve.any() else float("nan"),
        mean_temperature_langevin_k=float(np.mean(np.array(record["temperature_k"])[~in_nve])),
        bonds_broken=sorted(broken), bonds_formed=sorted(formed), bonds=len(bonded), stopped=stopped,
    )


def write_report(results, prov):
    rows = []
    for r in results:
        intact = "–" if r["data"] == "cuau" else (
            "yes" if not r["bonds_broken"] and not r["bonds_formed"]
            else f"no: {len(r['bonds_broken'])} broken, {len(r['bonds_formed'])} formed")
        rows.append([r["data"], r["dtype"], r.get("epochs_trained", "?"), f"{r['temperature_target_k']:.0f}", f"{r['mean_temperature_langevin_k']:.0f}",
                     f"{r['ps']:g}", r["timestep_fs"], f"{r['min_dist_overall']:.2f}", intact,
                     f"{r['nve_drift_mev_per_atom_ps']:+.3g}", f"{r['nve_spread_mev_per_atom']:.3g}", f"{r['wall_s']:.0f}"])
    text = "\n".join([
        "# Long MD with the shipped models", "", "```", json.dumps(prov, indent=1), "```", "",
        "`python benchmarks/long_md.py " + " ".join(sys.argv[1:]) + "`: the shipped config trained as in the quick start "
        "(its own epochs and time limit), then ASE MD with the best checkpoint (eager, `FlashACECalculator`): "
        "Langevin (friction 0.01/fs) for the first half, NVE for the second. Closest pair over the whole run "
        "(minimum image); molecule intact = no bond of the first frame beyond 1.5x the covalent radii and no new one "
        "below 1.0x; NVE drift = slope of a line fit of the total energy.", "",
        markdown_table(["data", "dtype", "epochs trained", "target K", "Langevin mean K", "ps", "fs/step", "closest pair (Å)",
                        "molecule intact", "NVE drift (meV/atom/ps)", "NVE spread (meV/atom)", "MD wall (s)"], rows)])
    (RESULTS / "long_md.md").write_text(text + "\n")
    (RESULTS / "long_md.json").write_text(json.dumps({"results": results, "provenance": prov}, indent=1))
    print(text, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--dtype", nargs="+", choices=["float32", "float64"], default=["float32", "float64"])
    parser.add_argument("--ps", type=float, default=20.0, help="picoseconds of MD (half Langevin, half NVE)")
    parser.add_argument("--every", type=int, default=10, help="sample every this many steps")
    args = parser.parse_args()
    prov = provenance()
    results = []
    for data in args.data:
        config, frames, temperature, timestep = CASES[data]
        for dtype in args.dtype:
            run_dir = RUNS / "long_md" / f"{data}_{dtype}"
            checkpoint = run_dir / "best.ckpt"
            if not checkpoint.exists():
                start = time.time()
                train_shipped(config, dtype, run_dir)
                print(f"{data} {dtype}: trained in {time.time() - start:.0f} s", flush=True)
            r = run_md(checkpoint, frames, temperature, timestep, args.ps, args.every, molecule=data == "paracetamol")
            r.update(data=data, dtype=dtype, ps=args.ps, epochs_trained=epochs_trained(run_dir))
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if not isinstance(v, list)}), flush=True)
            write_report(results, prov)


if __name__ == "__main__":
    main()
