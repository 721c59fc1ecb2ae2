"""Speed and memory of Flash-ACE next to NequIP and Allegro, eager and AOTInductor-compiled.

    python benchmarks/speed_vs_peers.py --quick     # < 10 min: molecule, 108/256/500-atom bulk, 2 compiles
    python benchmarks/speed_vs_peers.py             # bulk from 108 to 8000 atoms, all models compiled
    python benchmarks/speed_vs_peers.py --same-process   # one-minute Flash-ACE vs NequIP check

All models of one system run side by side in one process and are timed round-robin
(model A, B, C, A, B, C, ...) so that machine noise hits them alike; the median is
reported. Peak memory per model and mode is the high-water mark of that piece of work
alone (`_harness.PeakMemory`). Peers: NequIP and Allegro at their tutorial sizes and at
the width that matches Flash-ACE's parameter count (`_harness.peer_models`).

Modes: `ef` = energy + forces (eager: one backward pass; compiled: the artefact
`nequip-compile --mode aotinductor --target ase` would write, built in-process with the
host's `aot_export_model`); `train` = one eager training step with a force loss (double
backward). Ratios to NequIP are the headline. Needs `pip install nequip-allegro`.
Writes benchmarks/results/speed_vs_peers[_quick].{md,json,png}.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    RESULTS, RUNS, PeakMemory, atoms_to_data, build_peer, bulk_cuau, fit_exponent, markdown_table, model_step,
    param_matched_widths, peer_models, provenance, run_case_in_subprocess,
)

R_MAX = 5.0
TYPES_BULK = ["Cu", "Au"]
TYPES_MOL = ["C", "H", "O"]
COMPILED_DIR = RUNS / "compiled"
TRAIN_SYSTEMS = ("molecule21", "bulk_108", "bulk_1000")


def molecule21():
    """A compact 21-atom C9H8O4 cluster (aspirin's composition and size), min distance 1 Å."""
    from ase import Atoms

    rng = np.random.default_rng(0)
    symbols = ["C"] * 9 + ["H"] * 8 + ["O"] * 4
    pos = []
    while len(pos) < 21:
        p = rng.uniform(-3.2, 3.2, 3)
        if np.linalg.norm(p) < 3.5 and all(np.linalg.norm(p - q) > 1.0 for q in pos):
            pos.append(p)
    return Atoms(symbols, positions=pos)


def system(name):
    if name == "molecule21":
        return molecule21(), TYPES_MOL
    return bulk_cuau(int(name.split("_")[1])), TYPES_BULK


def build(kwargs, type_names):
    return build_peer(kwargs, type_names, R_MAX)


def aot_fields():
    from nequip.scripts._compile_utils import COMPILE_TARGET_DICT

    target = COMPILE_TARGET_DICT["ase"]
    return target["input"], target["output"]


def compile_case(name, widths):
    """AOTInductor-compile one model (float32, CPU, target ase, dynamic atoms/edges)."""
    from nequip.scripts._compile_utils import COMPILE_TARGET_DICT
    from nequip.utils.aot import aot_export_model

    torch.set_num_threads(2)
    model = build(peer_models(widths)[name], TYPES_BULK)
    data = atoms_to_data(bulk_cuau(108), R_MAX, TYPES_BULK)
    target = COMPILE_TARGET_DICT["ase"]
    batch_map = target["batch_map_settings"]({
        "graph": torch.export.Dim("num_frames", min=2), "node": torch.export.Dim("num_nodes", min=2),
        "edge": torch.export.Dim("num_edges", min=2),
    })
    COMPILED_DIR.mkdir(parents=True, exist_ok=True)
    path = COMPILED_DIR / f"{name}.nequip.pt2"
    start = time.perf_counter()
    aot_export_model(model=model, device="cpu", input_fields=target["input"], output_fields=target["output"],
                     data=target["data_settings"](dict(data)), batch_map=batch_map, output_path=str(path))
    return {"model": name, "compile_s": time.perf_counter() - start, "path": str(path)}


def load_compiled(path):
    from nequip.nn.compile import DictInputOutputWrapper

    inputs, outputs = aot_fields()
    aoti = DictInputOutputWrapper(torch._inductor.aoti_load_package(str(path)), inputs, outputs)
    return lambda data: aoti({k: data[k] for k in inputs})


def round_robin(steps, repeats):
    """Time every callable ``repeats`` times, interleaved (A, B, C, A, B, C, ...) so that
    machine noise hits all alike; returns key -> list of seconds."""
    times = {key: [] for key in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - start)
    return times


def system_case(system_name, widths, compiled, repeats):
    """Every model on one system, in this one process: memory per piece of work, then
    round-robin timing. Returns one row per (model, backend, mode)."""
    from nequip.data import AtomicDataDict as K

    torch.set_num_threads(2)
    atoms, types = system(system_name)
    data = atoms_to_data(atoms, R_MAX, types)
    steps, params = {}, {}
    for name, kwargs in peer_models(widths).items():
        model = build(kwargs, types)
        params[name] = sum(p.numel() for p in model.parameters())
        steps[(name, "eager", "ef")] = model_step(model, data, "ef")
        if system_name in TRAIN_SYSTEMS:
            # a second instance: model_step switches train/eval mode on the module it is given
            steps[(name, "eager", "train")] = model_step(build(kwargs, types), data, "train")
        if name in compiled and types == TYPES_BULK:
            fn = load_compiled(compiled[name])
            steps[(name, "aotinductor", "ef")] = lambda fn=fn: fn(dict(data))
    peaks = {}
    for key, step in steps.items():
        with PeakMemory() as mem:
            step()  # also the warm-up call
        peaks[key] = mem.peak_mb
    times = round_robin(steps, repeats)
    return [
        {"model": name, "backend": backend, "mode": mode, "system": system_name, "atoms": len(atoms),
         "edges": int(data[K.EDGE_INDEX_KEY].shape[1]), "seconds": float(np.median(times[key])),
         "us_per_atom_step": 1e6 * float(np.median(times[key])) / len(atoms), "peak_mb": peaks[key],
         "params": params[name], "repeats": repeats}
        for key in steps for name, backend, mode in [key]
    ]


def same_process_headline(repeats=20):
    """Flash-ACE (defaults) and NequIP (tutorial size), energy+forces, one process, alternately."""
    torch.set_num_threads(2)
    models = peer_models()
    for name in ("molecule21", "bulk_64"):
        atoms, types = system(name)
        data = atoms_to_data(atoms, R_MAX, types)
        steps = {m: model_step(build(models[m], types), data, "ef") for m in ("flash_ace", "nequip")}
        for step in steps.values():
            step()  # warm-up
        times = round_robin(steps, repeats)
        med = {m: float(np.median(t)) for m, t in times.items()}
        print(f"{name} ({len(atoms)} atoms): energy+forces median of {repeats}: Flash-ACE {med['flash_ace'] * 1e3:.1f} ms, "
              f"NequIP {med['nequip'] * 1e3:.1f} ms, ratio {med['flash_ace'] / med['nequip']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--same-process", action="store_true", help=same_process_headline.__doc__)
    parser.add_argument("--systems", nargs="+", help="override the system list, e.g. molecule21 bulk_108 bulk_1000")
    parser.add_argument("--compile", nargs="*", help="models to AOTInductor-compile (default: all; --quick: flash_ace nequip)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="result stem (default speed_vs_peers[_quick])")
    parser.add_argument("--from-json", type=Path, help="only rewrite the table and plot from a results JSON of an earlier run")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        write_report(saved["results"], saved["compile"], saved["widths"], args.out or args.from_json.stem, saved["provenance"])
        return
    if args.same_process:
        same_process_headline()
        return
    if args.case:
        case = json.loads(args.case)
        fn = compile_case if case.pop("kind") == "compile" else system_case
        print(json.dumps(fn(**case)))
        return

    widths = param_matched_widths(TYPES_BULK)
    models = peer_models(widths)
    if args.quick:
        # three bulk sizes: the smallest set that still fits a scaling exponent
        systems = ["molecule21", "bulk_108", "bulk_256", "bulk_500"]
        to_compile = ["flash_ace", "nequip"] if args.compile is None else args.compile
    else:
        systems = ["molecule21", "bulk_108", "bulk_256", "bulk_500", "bulk_1000", "bulk_2048", "bulk_4000", "bulk_8000"]
        to_compile = list(models) if args.compile is None else args.compile
    systems = args.systems or systems
    unknown = sorted(set(to_compile) - set(models))
    if unknown:
        parser.error(f"--compile: unknown model(s) {unknown}; choose from {sorted(models)}")

    script = Path(__file__).resolve()
    compiled, compile_rows = {}, []
    for name in to_compile:  # one process per compile: isolates failures and memory
        r = run_case_in_subprocess(script, {"kind": "compile", "name": name, "widths": widths})
        print("compile", name, r, flush=True)
        compile_rows.append(dict(r, model=name))
        if "error" not in r:
            compiled[name] = r["path"]
    rows = []
    for name in systems:
        atoms = len(system(name)[0])
        repeats = 10 if atoms <= 300 else 5 if atoms <= 1100 else 3
        r = run_case_in_subprocess(script, {"kind": "system", "system_name": name, "widths": widths,
                                            "compiled": compiled, "repeats": repeats}, timeout=3600)
        if isinstance(r, dict):  # an error
            print(name, r, flush=True)
            rows.append(dict(r, system=name))
            continue
        for row in r:
            print(f"{row['system']:>11} {row['model']:>22} {row['backend']:>11} {row['mode']:>5} "
                  f"{row['seconds'] * 1e3:9.1f} ms {row['peak_mb']:8.0f} MB", flush=True)
        rows += r
    write_report(rows, compile_rows, widths, args.out or ("speed_vs_peers_quick" if args.quick else "speed_vs_peers"))


def ratio(rows, row, ref_model):
    ref = next((x for x in rows if x.get("model") == ref_model and x.get("system") == row["system"]
                and x.get("backend") == row["backend"] and x.get("mode") == row["mode"]), None)
    return row["seconds"] / ref["seconds"] if ref else None


def scaling(rows, model, backend, key):
    pts = [(r["atoms"], r[key]) for r in rows if r.get("model") == model and r.get("backend") == backend
           and r.get("mode") == "ef" and r["system"].startswith("bulk") and r[key] > 0]
    return fit_exponent(*zip(*pts)) if len(pts) >= 3 else None


def write_report(rows, compile_rows, widths, stem, measured_on=None):
    """Markdown table, JSON and PNG; ``measured_on``: provenance of the run (default: now)."""
    measured_on = measured_on or provenance()
    RESULTS.mkdir(parents=True, exist_ok=True)
    ok = [r for r in rows if "seconds" in r]
    models = list(dict.fromkeys(r["model"] for r in ok))
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    lines = [f"# Speed and memory vs NequIP and Allegro{' (quick)' if 'quick' in stem else ''}", "", "```",
             json.dumps(measured_on, indent=1), "```", "",
             f"float32, CPU, 2 threads, r_max {R_MAX} Å, rattled fcc Cu–Au at fixed density (≈ 42 neighbours per atom) "
             f"and a 21-atom C9H8O4 cluster. Param-matched widths: NequIP {widths['nequip']} features, Allegro "
             f"{widths['allegro']} scalar features. All models of a system in one process, timed round-robin, median. "
             "`ef` = energy + forces, `train` = one training step with a force loss. × NequIP / × Allegro = time ratio "
             "to the tutorial-size peer on the same system, backend and mode (< 1: faster). Peak MB: high-water mark of "
             "that piece of work alone.", ""]
    # headline at ~1000 atoms
    head = [r for r in ok if r["system"] == "bulk_1000"]
    if head:
        lines += ["## Headline: 1000-atom Cu–Au cell", "",
                  markdown_table(["model", "backend", "mode", "ms", "× NequIP", "× Allegro", "peak MB", "params"],
                                 [[r["model"], r["backend"], r["mode"], f"{r['seconds'] * 1e3:.0f}", fmt(ratio(ok, r, "nequip")),
                                   fmt(ratio(ok, r, "allegro")), f"{r['peak_mb']:.0f}", r["params"]] for r in head]), ""]
    exp_rows = []
    for m in models:
        for backend in ("eager", "aotinductor"):
            t, mem = scaling(ok, m, backend, "seconds"), scaling(ok, m, backend, "peak_mb")
            if t is not None:
                exp_rows.append([m, backend, fmt(t), fmt(mem)])
    if exp_rows:
        lines += ["## Scaling exponents (energy + forces, bulk)", "",
                  "Slope of log(time) and log(peak memory) against log(atoms) over the bulk systems (1 = linear).", "",
                  markdown_table(["model", "backend", "time exponent", "memory exponent"], exp_rows), ""]
    if compile_rows:
        lines += ["## AOTInductor compile (in-process `aot_export_model`, target ase, 2 cores)", "",
                  markdown_table(["model", "compile s / error"], [[c["model"], f"{c['compile_s']:.0f}" if "compile_s" in c else c["error"]]
                                                                  for c in compile_rows]), ""]
    lines += ["## All measurements", "",
              markdown_table(["model", "system", "atoms", "backend", "mode", "ms", "µs/atom-step", "× NequIP", "× Allegro", "peak MB", "params"],
                             [[r["model"], r["system"], r["atoms"], r["backend"], r["mode"], f"{r['seconds'] * 1e3:.1f}",
                               f"{r['us_per_atom_step']:.0f}", fmt(ratio(ok, r, "nequip")), fmt(ratio(ok, r, "allegro")),
                               f"{r['peak_mb']:.0f}", r["params"]] for r in ok])]
    failed = [r for r in rows if "seconds" not in r]
    if failed:
        lines += ["", "Failed cases: " + "; ".join(f"{r['system']}: {r['error']}" for r in failed)]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"results": rows, "compile": compile_rows, "widths": widths,
                                                      "provenance": measured_on}, indent=1))
    plot(ok, models, RESULTS / f"{stem}.png")
    print(f"wrote {RESULTS / (stem + '.md')}")


def plot(rows, models, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.0))
    colors = dict(zip(models, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for m in models:
        for backend, style in (("eager", "-"), ("aotinductor", "--")):
            pts = sorted((r["atoms"], r["us_per_atom_step"], r["peak_mb"]) for r in rows if r["model"] == m
                         and r["backend"] == backend and r["mode"] == "ef" and r["system"].startswith("bulk"))
            if len(pts) < 2:
                continue
            n, us, mb = zip(*pts)
            label = f"{m} ({'compiled' if backend == 'aotinductor' else 'eager'})"
            axes[0].plot(n, us, style, marker="o", ms=3, color=colors[m], label=label)
            axes[1].plot(n, mb, style, marker="o", ms=3, color=colors[m], label=label)
    axes[0].set_ylabel("energy + forces, µs per atom-step")
    axes[1].set_ylabel("peak memory (MB)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("atoms (Cu–Au bulk, fixed density)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
