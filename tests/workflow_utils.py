"""Helpers for the tests that drive the real command-line workflow (train → compile → use)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

from ase.io import read, write

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"
DATA_DIR = REPO / "data" / "cuau_emt"


def run(cmd, cwd, timeout=900):
    """Run a command; on failure show its output in the assertion message."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
        f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    )
    return proc


def write_data_subset(out_dir: Path, n_train=16, n_val=4, n_test=4, source: Path = DATA_DIR) -> Path:
    """Every k-th frame of the bundled split files, so subsets still span all trajectories."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        frames = read(source / f"{split}.xyz", index=":")
        step = max(1, len(frames) // n)
        write(out_dir / f"{split}.xyz", frames[::step][:n], format="extxyz")
    return out_dir


def nequip_train(run_dir: Path, data_dir: Path, *overrides, config_name="flash_ace"):
    """``nequip-train -cp <repo>/configs -cn flash_ace`` with overrides, as a user runs it."""
    cmd = [
        "nequip-train",
        "-cp",
        str(CONFIG_DIR),
        "-cn",
        config_name,
        f"data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    return run(cmd, cwd=run_dir.parent)


def validation_force_mae(run_dir: Path):
    """The validation force MAE of each epoch, from the run's CSV log (Lightning's sanity-check
    epoch 0 may add a first row)."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(r["val0_epoch/forces_mae"]) for r in csv.DictReader(f) if r.get("val0_epoch/forces_mae")]


def nequip_compile(model_path: Path, out_path: Path, target: str, *extra):
    return run(
        [
            "nequip-compile",
            model_path,
            out_path,
            "--mode",
            "aotinductor",
            "--device",
            "cpu",
            "--target",
            target,
            *extra,
        ],
        cwd=out_path.parent,
    )


def python_module(module, *args, cwd):
    return run([sys.executable, "-m", module, *args], cwd=cwd)
