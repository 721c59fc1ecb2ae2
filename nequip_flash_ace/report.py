"""Run report: learning curves and test-set parity plots of a ``nequip-train`` run.

Usage::

    python -m nequip_flash_ace.report RUN_DIR [--out OUT_DIR]

Reads what the run wrote with ``configs/flash_ace.yaml``:

- ``RUN_DIR/csv/metrics.csv`` (Lightning's CSV logger) → ``learning_curves.png``;
- ``RUN_DIR/test_dataset0.xyz`` (the host's ``TestTimeXYZFileWriter``: predictions of
  the best checkpoint next to the ``original_dataset_*`` labels) →
  ``parity_energy.png`` and ``parity_forces.png`` with MAE/RMSE in the titles.

Writes the PNGs to ``OUT_DIR`` (default ``RUN_DIR/report``) and prints their paths and
the test errors.
"""

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np


def _read_metrics(csv_path: Path) -> Dict[str, List[tuple]]:
    series: Dict[str, List[tuple]] = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch")
            if epoch in ("", None):
                continue  # e.g. step-level rows of some loggers
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                series.setdefault(key, []).append((float(epoch), float(value)))
    return series


def learning_curves(csv_path: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _read_metrics(csv_path)
    panels = [
        ("loss (weighted sum)", ["train_loss_epoch/weighted_sum", "val0_epoch/weighted_sum"]),
        ("force MAE (eV/Å)", ["train0_epoch/forces_mae", "val0_epoch/forces_mae"]),
        ("energy MAE per atom (eV)", ["train0_epoch/per_atom_energy_mae", "val0_epoch/per_atom_energy_mae"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            if key in series:
                epochs, values = zip(*series[key])
                ax.plot(epochs, values, marker=".", label=key.split("/")[0])
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _errors(pred: np.ndarray, ref: np.ndarray) -> Dict[str, float]:
    diff = pred - ref
    return {"mae": float(np.abs(diff).mean()), "rmse": float(np.sqrt((diff**2).mean()))}


def parity_plots(xyz_path: Path, out: Path) -> Dict[str, object]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.io import read

    frames = read(xyz_path, index=":")
    if not frames:
        raise ValueError(f"{xyz_path} holds no frames")
    e_pred = np.array([a.get_potential_energy() / len(a) for a in frames])
    e_ref = np.array([a.info["original_dataset_energy"] / len(a) for a in frames])
    f_pred = np.concatenate([a.get_forces() for a in frames]).ravel()
    f_ref = np.concatenate([a.arrays["original_dataset_forces"] for a in frames]).ravel()
    results = {
        "energy_per_atom": _errors(e_pred, e_ref),
        "forces": _errors(f_pred, f_ref),
        "num_frames": len(frames),
    }
    paths = []
    for name, pred, ref, unit in (
        ("energy", e_pred, e_ref, "eV/atom"),
        ("forces", f_pred, f_ref, "eV/Å"),
    ):
        err = results["energy_per_atom" if name == "energy" else "forces"]
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(ref, pred, s=4, alpha=0.5)
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel(f"reference {name} ({unit})")
        ax.set_ylabel(f"predicted {name} ({unit})")
        ax.set_title(f"test {name}: MAE {err['mae']:.4g}, RMSE {err['rmse']:.4g}")
        fig.tight_layout()
        path = out / f"parity_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    results["paths"] = paths
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nequip_flash_ace.report",
        description="Learning curves and test parity plots of a nequip-train run.",
    )
    parser.add_argument("run_dir", type=Path, help="the run's output directory (hydra.run.dir)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the PNGs (default RUN_DIR/report)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir
    csv_path = run_dir / "csv" / "metrics.csv"
    xyz_path = run_dir / "test_dataset0.xyz"
    missing = [str(p) for p in (csv_path, xyz_path) if not p.exists()]
    if missing:
        print(
            f"error: {', '.join(missing)} not found. The report needs the CSV logger and the "
            f"TestTimeXYZFileWriter callback of configs/flash_ace.yaml, and a run with `test` in `run`.",
            file=sys.stderr,
        )
        return 2
    out = args.out or run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    curves = learning_curves(csv_path, out)
    parity = parity_plots(xyz_path, out)
    print(f"learning curves: {curves}")
    for p in parity["paths"]:
        print(f"parity plot:     {p}")
    e, f = parity["energy_per_atom"], parity["forces"]
    print(
        f"test ({parity['num_frames']} frames): energy MAE {e['mae']:.5g} eV/atom (RMSE {e['rmse']:.5g}), "
        f"force MAE {f['mae']:.5g} eV/Å (RMSE {f['rmse']:.5g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
