"""Shared benchmark harness: bulk systems, timing, peak memory in a fresh process, provenance."""

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def bulk_cuau(num_atoms_target: int, seed: int = 0, rattle: float = 0.05):
    """A rattled fcc Cu–Au cell of about ``num_atoms_target`` atoms at fixed density."""
    from ase.build import bulk

    # the most cubic a x b x c repetition of the 4-atom cubic cell closest to the target
    cells = max(1, round(num_atoms_target / 4))
    reps = min(
        ((a, b, c) for a in range(1, 40) for b in range(1, a + 1) for c in range(1, b + 1)),
        key=lambda r: (abs(r[0] * r[1] * r[2] - cells), r[0] / r[2]),
    )
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True) * reps
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.random(len(atoms)) < 0.4] = "Au"
    atoms.rattle(rattle, seed=seed)
    return atoms


def atoms_to_data(atoms, r_max, type_names=("Cu", "Au")):
    from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase

    data = compute_neighborlist_(from_ase(atoms), r_max=r_max)
    symbols = atoms.get_chemical_symbols()
    data[AtomicDataDict.ATOM_TYPE_KEY] = torch.tensor([list(type_names).index(s) for s in symbols])
    return data


def timeit(fn, repeats=3, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def model_step(model, data, mode):
    """A callable for one energy+forces evaluation (``ef``) or one training step with a
    force loss (``train``: forces keep their graph, double backward to the parameters)."""
    from nequip.data import AtomicDataDict as K

    if mode == "ef":
        model.eval()
        return lambda: model(dict(data))
    model.train()

    def step():
        out = model(dict(data))
        out[K.FORCE_KEY].square().mean().backward()
        model.zero_grad(set_to_none=True)

    return step


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case_in_subprocess(script: Path, args: list, timeout=1800) -> dict:
    """Run one benchmark case in a fresh Python process (clean peak-RSS), return its JSON line."""
    proc = subprocess.run(
        [sys.executable, str(script), "--case", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-500:].strip().splitlines()[-1] if (proc.stderr or proc.stdout) else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def provenance() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent).stdout.strip()
    except Exception:
        commit = "unknown"
    import nequip

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "torch": torch.__version__,
        "nequip": nequip.__version__,
        "python": platform.python_version(),
        "git_commit": commit,
        "torch_threads": torch.get_num_threads(),
    }


def fit_exponent(xs, ys) -> float:
    """Slope of log(y) against log(x)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
