"""Loss weights at equal epochs: forces weighted 10× the energy (and stress) vs 1:1(:1).

    python benchmarks/loss_weights.py                 # trains 4 runs (Cu–Au 15 epochs, paracetamol 8), ~50 min on 2 cores
    python benchmarks/loss_weights.py --report-only   # rewrite the report from the runs on disk

Every run is the shipped config through `nequip-train`, only `forces_weight` changes
(Cu–Au: energy:forces:stress 1:10:1 vs 1:1:1; paracetamol: energy:forces 1:10 vs 1:1).
Per-epoch validation metrics come from the CSV log, test metrics from the best
checkpoint's test run. Epochs, not wall time: both weightings cost the same per epoch.
Writes benchmarks/results/loss_weights.{md,png}; runs under benchmarks/runs/loss_weights/.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, RUNS, markdown_table, provenance  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# name -> (config, forces_weight, epochs)
RUN_SET = {
    "cuau_forces10": ("flash_ace", 10.0, 15),
    "cuau_equal": ("flash_ace", 1.0, 15),
    "paracetamol_forces10": ("flash_ace_paracetamol", 10.0, 8),
    "paracetamol_equal": ("flash_ace_paracetamol", 1.0, 8),
}
METRICS = {"F": "forces_mae", "E": "per_atom_energy_mae", "σ": "stress_mae"}


def train(name, config, forces_weight, epochs):
    run_dir = RUNS / "loss_weights" / name
    cmd = ["nequip-train", "-cp", str(REPO / "configs"), "-cn", config, f"forces_weight={forces_weight}",
           f"max_epochs={epochs}", "max_time=00:01:00:00", f"hydra.run.dir={run_dir}"]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, env=dict(os.environ))


def read_run(name):
    rows = list(csv.DictReader(open(RUNS / "loss_weights" / name / "csv" / "metrics.csv")))
    curves = {k: [float(r[f"val0_epoch/{m}"]) for r in rows if r.get(f"val0_epoch/{m}")] for k, m in METRICS.items()}
    test = {k: float(r[f"test0_epoch/{m}"]) for r in rows for k, m in METRICS.items() if r.get(f"test0_epoch/{m}")}
    return {k: v for k, v in curves.items() if v}, test


def report():
    runs = {name: read_run(name) for name in RUN_SET if (RUNS / "loss_weights" / name / "csv" / "metrics.csv").exists()}
    lines = ["# Loss weights at equal epochs", "", "```", json.dumps(provenance(), indent=1), "```", "",
             "Shipped configs, only `forces_weight` changed; validation MAE after every epoch "
             "(F meV/Å, E meV/atom, σ meV/Å³) and the test run of the best checkpoint.", ""]
    rows = []
    for name, (curves, test) in runs.items():
        config, weight, _ = RUN_SET[name]
        for key, curve in curves.items():
            rows.append([config, f"{weight:g}", f"val {key}", " ".join(f"{1e3 * v:.3g}" for v in curve),
                         f"{1e3 * test[key]:.3g}" if key in test else "–"])
    lines += [markdown_table(["config", "forces_weight", "metric", "validation, epoch by epoch", "test"], rows), ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "loss_weights.md").write_text("\n".join(lines))
    plot(runs)
    print("\n".join(lines))


def plot(runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for name, (curves, _) in runs.items():
        config, weight, _ = RUN_SET[name]
        style = dict(marker="o", ms=3, lw=1, ls="-" if weight == 1.0 else "--",
                     color="tab:blue" if "paracetamol" in config else "tab:red",
                     label=f"{config}, forces_weight {weight:g}")
        for ax, key in zip(axes, METRICS):
            if key in curves:
                ax.plot(range(1, len(curves[key]) + 1), [1e3 * v for v in curves[key]], **style)
    for ax, (key, unit) in zip(axes, (("F", "meV/Å"), ("E", "meV/atom"), ("σ", "meV/Å³"))):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {key} MAE ({unit})")
        ax.set_yscale("log")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "loss_weights.png", dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        for name, setting in RUN_SET.items():
            train(name, *setting)
    report()


if __name__ == "__main__":
    main()
