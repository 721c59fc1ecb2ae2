"""Speed and memory of Flash-ACE next to NequIP and Allegro (eager PyTorch, CPU or GPU).

    python benchmarks/speed_vs_peers.py --quick     # 21-atom molecule, 64/256-atom bulk
    python benchmarks/speed_vs_peers.py             # + bulk from ~100 to ~8000 atoms

Energy + forces per atom-step and one training step (force loss) for every model, each
case in a fresh process (clean peak RSS). Ratios to NequIP are the headline. Peers run at
their documented default sizes (NequIP: 4 layers, l_max 1, 32 features; Allegro: 2 layers,
l_max 1, 64 scalar / 16 tensor features) and, for NequIP, at the width that matches
Flash-ACE's parameter count. Needs `pip install nequip-allegro` (benchmark extra).
Writes benchmarks/results/speed_vs_peers[_quick].{md,json}.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _harness import RESULTS, atoms_to_data, bulk_cuau, fit_exponent, markdown_table, model_step, peak_rss_mb, provenance, run_case_in_subprocess, timeit  # noqa: E402

R_MAX = 5.0
TYPES_BULK = ["Cu", "Au"]
TYPES_MOL = ["C", "H", "O"]


def model_configs(type_names, nequip_matched_features=None):
    common = dict(seed=0, r_max=R_MAX, type_names=type_names, avg_num_neighbors=20.0)
    configs = {
        "flash_ace": dict(common, _target_="nequip_flash_ace.model.FlashACEModel"),
        "flash_ace_no_attention": dict(common, _target_="nequip_flash_ace.model.FlashACEModel", num_heads=0),
        "nequip": dict(common, _target_="nequip.model.NequIPGNNModel", num_layers=4, l_max=1, num_features=32),
        "allegro": dict(
            common, _target_="allegro.model.AllegroModel", l_max=1, num_layers=2, num_scalar_features=64,
            num_tensor_features=16, allegro_mlp_hidden_layers_width=64, readout_mlp_hidden_layers_width=32,
            radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 8},
        ),
    }
    if nequip_matched_features:
        configs["nequip_param_matched"] = dict(configs["nequip"], num_features=nequip_matched_features)
    return configs


def num_params(config):
    from helpers import build_model

    return sum(p.numel() for p in build_model(config, "float32").parameters())


def match_nequip_width(type_names):
    target = num_params(model_configs(type_names)["flash_ace"])
    best = min(range(8, 129, 4), key=lambda f: abs(num_params(dict(model_configs(type_names)["nequip"], num_features=f)) - target))
    return best


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


def run_case(model, system, mode, nequip_matched_features=None):
    from helpers import build_model
    from nequip.data import AtomicDataDict as K

    torch.set_num_threads(2)
    if system == "molecule21":
        atoms, types = molecule21(), TYPES_MOL
    else:
        atoms, types = bulk_cuau(int(system.split("_")[1])), TYPES_BULK
    config = model_configs(types, nequip_matched_features)[model]
    m = build_model(config, "float32")
    data = atoms_to_data(atoms, R_MAX, types)
    base = peak_rss_mb()
    seconds = timeit(model_step(m, data, mode), repeats=3)
    return {"model": model, "system": system, "atoms": len(atoms), "mode": mode, "seconds": seconds,
            "us_per_atom_step": 1e6 * seconds / len(atoms), "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base,
            "params": sum(p.numel() for p in m.parameters()), "edges": int(data[K.EDGE_INDEX_KEY].shape[1])}


def same_process_headline(repeats=20):
    """Flash-ACE (defaults) and NequIP (4 layers, l_max 1, 32 features) in one process,
    timed alternately so that machine noise hits both alike."""
    from helpers import build_model

    torch.set_num_threads(2)
    for system, atoms, types in (("molecule21", molecule21(), TYPES_MOL), ("bulk_64", bulk_cuau(64), TYPES_BULK)):
        configs = model_configs(types)
        models = {name: build_model(configs[name], "float32").eval() for name in ("flash_ace", "nequip")}
        data = atoms_to_data(atoms, R_MAX, types)
        times = {name: [] for name in models}
        for _ in range(repeats):
            for name, m in models.items():
                times[name].append(timeit(lambda: m(dict(data)), repeats=1, warmup=1))
        med = {name: float(np.median(t)) for name, t in times.items()}
        params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
        print(f"{system} ({len(atoms)} atoms): energy+forces median of {repeats}: "
              f"Flash-ACE {med['flash_ace'] * 1e3:.1f} ms ({params['flash_ace']} params), "
              f"NequIP {med['nequip'] * 1e3:.1f} ms ({params['nequip']} params), ratio {med['flash_ace'] / med['nequip']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--same-process", action="store_true",
                        help="only: Flash-ACE default vs NequIP, energy+forces on the 21-atom molecule and a 64-atom cell, timed alternately in one process")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.same_process:
        same_process_headline()
        return
    if args.case:
        print(json.dumps(run_case(**json.loads(args.case))))
        return
    matched = match_nequip_width(TYPES_BULK)
    systems = ["molecule21", "bulk_64", "bulk_256"] if args.quick else ["molecule21", "bulk_64", "bulk_108", "bulk_500", "bulk_1000", "bulk_2048", "bulk_4000", "bulk_8000"]
    models = list(model_configs(TYPES_BULK, matched))
    results = []
    for system in systems:
        for model in models:
            for mode in ("ef", "train"):
                if mode == "train" and system not in ("molecule21", "bulk_64", "bulk_256", "bulk_1000"):
                    continue
                r = run_case_in_subprocess(Path(__file__).resolve(), {"model": model, "system": system, "mode": mode, "nequip_matched_features": matched})
                r.update(model=model, system=system, mode=mode) if "error" in r else None
                print(r, flush=True)
                results.append(r)
    write_report(results, matched, args.quick)


def write_report(results, matched, quick):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "speed_vs_peers_quick" if quick else "speed_vs_peers"
    lines = [f"# Speed and memory vs NequIP and Allegro{' (quick)' if quick else ''}", "", "```", json.dumps(provenance(), indent=1), "```", "",
             f"Eager PyTorch, float32, 2 threads, r_max {R_MAX} Å. NequIP param-matched width: {matched} features. "
             "`ef` = energy + forces; `train` = one step with a force loss (double backward). "
             "Ratio = time / NequIP's time on the same system and mode (lower is faster).", ""]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["model"], r["system"], "-", r["mode"], "fails", "-", "-", "-", "-"])
            continue
        ref = next((x for x in results if x.get("model") == "nequip" and x["system"] == r["system"] and x["mode"] == r["mode"] and "seconds" in x), None)
        ratio = f"{r['seconds'] / ref['seconds']:.2f}" if ref else "-"
        rows.append([r["model"], r["system"], r["atoms"], r["mode"], f"{r['seconds'] * 1e3:.1f}", f"{r['us_per_atom_step']:.0f}",
                     ratio, f"{r['peak_rss_mb'] - r['base_rss_mb']:.0f}", r["params"]])
    lines.append(markdown_table(["model", "system", "atoms", "mode", "ms", "µs/atom-step", "× NequIP", "peak MB", "params"], rows))
    lines.append("")
    for model in sorted({r["model"] for r in results}):
        pts = [(r["atoms"], r["seconds"]) for r in results if r.get("model") == model and r["mode"] == "ef" and "seconds" in r and r["system"].startswith("bulk") and r["atoms"] >= 100]
        if len(pts) >= 2:
            x, y = zip(*pts)
            lines.append(f"- time scaling exponent (ef, bulk ≥ 100 atoms) {model}: {fit_exponent(x, y):.2f}")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"results": results, "provenance": provenance(), "nequip_matched_features": matched}, indent=1))
    print(f"wrote {RESULTS / (stem + '.md')}")


if __name__ == "__main__":
    main()
