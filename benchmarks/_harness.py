"""Shared benchmark harness: peer model definitions, bulk systems, timing, peak memory
(in a fresh process or per piece of work), provenance."""

import ctypes
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = Path(__file__).resolve().parent / "runs"

# Peer models as keyword arguments of their builders (the common keys -- seed, r_max,
# type_names, avg_num_neighbors, model_dtype -- are added where they are built).
# Defaults: NequIP's documented tutorial size; Allegro's tutorial size at l_max 1.
# `width` parametrises the param-matched variants.
FLASH_ACE = {"_target_": "nequip_flash_ace.model.FlashACEModel"}


def nequip_kwargs(width: int = 32) -> dict:
    return {"_target_": "nequip.model.NequIPGNNModel", "num_layers": 4, "l_max": 1, "num_features": width}


def allegro_kwargs(width: int = 64) -> dict:
    return {
        "_target_": "allegro.model.AllegroModel", "l_max": 1, "num_layers": 2,
        "num_scalar_features": width, "num_tensor_features": max(4, width // 4),
        "allegro_mlp_hidden_layers_width": width, "readout_mlp_hidden_layers_width": max(8, width // 2),
        "radial_chemical_embed": {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 8},
    }


def peer_models(matched_widths=None) -> dict:
    """name -> builder kwargs for Flash-ACE (the builder's defaults, and with attention) and the peers;
    ``matched_widths = {"nequip": w, "allegro": w}`` adds the param-matched peers."""
    models = {
        "flash_ace": dict(FLASH_ACE),
        "flash_ace_attention": dict(FLASH_ACE, num_heads=4, attention_score_inputs="pair"),
        "nequip": nequip_kwargs(),
        "allegro": allegro_kwargs(),
    }
    if matched_widths:
        models["nequip_param_matched"] = nequip_kwargs(matched_widths["nequip"])
        models["allegro_param_matched"] = allegro_kwargs(matched_widths["allegro"])
    return models


def build_peer(kwargs: dict, type_names, r_max: float = 5.0, model_dtype: str = "float32"):
    """One model of ``peer_models`` (or any builder kwargs), with the common keys filled in."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers import build_model

    config = dict(kwargs, seed=0, r_max=r_max, type_names=list(type_names), avg_num_neighbors=20.0)
    with warnings.catch_warnings():
        # NequIP warns that per-type energy shifts/scales are unset; they change no cost, and
        # the width search for the param-matched peers builds ~50 models (one warning pair each)
        warnings.filterwarnings("ignore", message="Found `per_type_energy_")
        return build_model(config, model_dtype)


_PARAM_COUNTS: dict = {}


def count_params(kwargs: dict, type_names, r_max: float = 5.0) -> int:
    # remembered per (model, types, r_max): the width searches of the peer studies build
    # the same ~50 models every time they are asked
    key = (json.dumps(kwargs, sort_keys=True, default=str), tuple(type_names), float(r_max))
    if key not in _PARAM_COUNTS:
        _PARAM_COUNTS[key] = sum(p.numel() for p in build_peer(kwargs, type_names, r_max).parameters())
    return _PARAM_COUNTS[key]


def param_matched_widths(type_names, flash_kwargs: dict = FLASH_ACE) -> dict:
    """Widths of NequIP and Allegro whose parameter count is closest to Flash-ACE's
    (``flash_kwargs``: the builder's defaults unless a config's knobs are given)."""
    target = count_params(flash_kwargs, type_names)
    return {
        "nequip": min(range(8, 129, 4), key=lambda w: abs(count_params(nequip_kwargs(w), type_names) - target)),
        "allegro": min(range(32, 161, 8), key=lambda w: abs(count_params(allegro_kwargs(w), type_names) - target)),
    }


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


def alternating_medians(steps: dict, repeats: int, memory_repeats: int = 2):
    """Median wall time (s) of each callable in ``steps`` (name -> step), timed one after
    the other in alternating order (so that drift of the machine hits all alike) after two
    warm-up calls each, and the peak memory (MB) of each alone, ``memory_repeats`` times
    in alternating order: ({name: median s}, {name: [peak MB, ...]})."""
    for f in steps.values():
        f()
        f()
    times = {k: [] for k in steps}
    for rep in range(repeats):
        for k in (list(steps) if rep % 2 == 0 else list(reversed(list(steps)))):
            start = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - start)
    peaks = {k: [] for k in steps}
    for rep in range(memory_repeats):
        for k in (list(steps) if rep % 2 == 0 else list(reversed(list(steps)))):
            with PeakMemory() as pm:
                steps[k]()
            peaks[k].append(pm.peak_mb)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}, peaks


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakMemory:
    """Peak resident memory of one piece of work inside a long-lived process (Linux):
    freed heap is handed back to the OS (``malloc_trim``), the kernel's high-water mark
    is reset (``/proc/self/clear_refs`` = 5), and the new high-water mark minus the
    resident size before the work is the work's peak. Lets several models be measured
    side by side in one process."""

    _libc = ctypes.CDLL("libc.so.6")

    @staticmethod
    def _status_mb(field: str) -> float:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024.0

    def __enter__(self):
        import gc

        gc.collect()
        self._libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.base_mb = self._status_mb("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak_mb = self._status_mb("VmHWM") - self.base_mb
        return False


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
        # uncommitted changes to the package, tests or benchmarks: the commit alone does not say what ran
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "nequip_flash_ace", "configs", "benchmarks/*.py"],
                               capture_output=True, text=True, cwd=RESULTS.parent.parent).stdout.strip()
        commit += "+uncommitted" if dirty else ""
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


def parse_value(text: str):
    """A ``key=value`` command-line value as the number it spells, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
