"""Accuracy at equal wall-clock budget, and the attention-vs-depth study.

    python benchmarks/accuracy_budget.py --study peers --quick   # 4 models x 1 seed x 45 s
    python benchmarks/accuracy_budget.py --study depth --quick   # 8 settings x 1 seed x 45 s
    python benchmarks/accuracy_budget.py --study peers --budget-min 15 --seeds 0 1 2   # full

Every run is `nequip-train -cp configs -cn flash_ace|flash_ace_deep` on the bundled data
(same split: whole trajectories) with `max_time` = the budget, then its test metrics (best
checkpoint, held-out trajectory). Peers replace the model block through Hydra overrides,
so data, loss, optimiser and schedule are identical. Writes
benchmarks/results/accuracy_<study>[_quick].{md,json} and a PNG of test force MAE per run.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, markdown_table, provenance  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
M = "training_module.model"
FLASH_ONLY = [f"~{M}.num_radial", f"~{M}.correlation_order", f"~{M}.num_heads"]

PEERS = {
    "flash_ace": ("flash_ace", []),
    "flash_ace_no_attention": ("flash_ace", ["num_heads=0"]),
    "nequip": ("flash_ace", [f"{M}._target_=nequip.model.NequIPGNNModel", "num_layers=4", "l_max=1", "num_features=32", *FLASH_ONLY]),
    "allegro": (
        "flash_ace",
        [f"{M}._target_=allegro.model.AllegroModel", "num_layers=2", "l_max=1", *FLASH_ONLY, f"~{M}.num_features",
         f"+{M}.num_scalar_features=64", f"+{M}.num_tensor_features=16", f"+{M}.allegro_mlp_hidden_layers_width=64",
         f"+{M}.readout_mlp_hidden_layers_width=32",
         f"+{M}.radial_chemical_embed={{_target_: allegro.nn.TwoBodyBesselScalarEmbed, num_bessels: 8}}"],
    ),
}
# naive: the 2-layer config with only the depth changed; coupled: the deep preset
# (lower lr, clipping, faster scheduler, energy-weight warm-up, bigger effective batch)
DEPTH = {
    f"{layers}L_{'att' if heads else 'noatt'}_{knobs}": (
        "flash_ace" if knobs == "naive" else "flash_ace_deep",
        [f"num_layers={layers}", f"num_heads={heads}"],
    )
    for layers in (2, 4) for heads in (4, 0) for knobs in ("naive", "coupled")
}


def train(name, config_name, overrides, seed, budget_min, out_root):
    run_dir = out_root / f"{name}_seed{seed}"
    minutes = int(budget_min)
    seconds = int(round((budget_min - minutes) * 60))
    cmd = ["nequip-train", "-cp", str(REPO / "configs"), "-cn", config_name, f"hydra.run.dir={run_dir}", f"seed={seed}",
           f"max_time=00:00:{minutes:02d}:{seconds:02d}", "max_epochs=1000", f"data_dir={REPO / 'data' / 'cuau_emt'}", *overrides]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    wall = time.time() - start
    result = {"name": name, "seed": seed, "budget_min": budget_min, "wall_s": wall}
    if proc.returncode != 0:
        result["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1][:200]
        return result
    from nequip_flash_ace.report import parity_plots

    errs = parity_plots(run_dir / "test_dataset0.xyz", run_dir)
    import csv

    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val0_epoch/forces_mae")]
    result.update(
        epochs=len(rows),
        test_force_mae=errs["forces"]["mae"], test_force_rmse=errs["forces"]["rmse"],
        test_energy_mae=errs["energy_per_atom"]["mae"], test_energy_rmse=errs["energy_per_atom"]["rmse"],
        val_force_mae_curve=[float(r["val0_epoch/forces_mae"]) for r in rows],
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", choices=["peers", "depth"], default="peers")
    parser.add_argument("--quick", action="store_true", help="45 s per run, one seed")
    parser.add_argument("--budget-min", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    budget = 0.75 if args.quick else args.budget_min
    seeds = [0] if args.quick else args.seeds
    settings = PEERS if args.study == "peers" else DEPTH
    out_root = REPO / "benchmarks" / "runs" / args.study
    results = []
    for name, (config_name, overrides) in settings.items():
        for seed in seeds:
            r = train(name, config_name, overrides, seed, budget, out_root)
            print(json.dumps({k: v for k, v in r.items() if k != "val_force_mae_curve"}), flush=True)
            results.append(r)
    write_report(results, args, budget, seeds)


def write_report(results, args, budget, seeds):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"accuracy_{args.study}" + ("_quick" if args.quick else "")
    rows = []
    by_name = {}
    for r in results:
        by_name.setdefault(r["name"], []).append(r)
    summary = []
    for name, runs in by_name.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            rows.append([name, len(runs), "fails: " + runs[0]["error"], "-", "-", "-"])
            continue
        f = np.array([r["test_force_mae"] for r in ok])
        e = np.array([r["test_energy_mae"] for r in ok]) * 1e3
        summary.append((float(f.mean()), name))
        rows.append([name, len(ok), f"{f.mean():.4f} ± {f.std():.4f}", f"{np.mean([r['test_force_rmse'] for r in ok]):.4f}",
                     f"{e.mean():.2f} ± {e.std():.2f}", f"{np.mean([r['epochs'] for r in ok]):.1f}"])
    lines = [f"# Accuracy at equal budget: {args.study}{' (quick)' if args.quick else ''}", "", "```", json.dumps(provenance(), indent=1), "```", "",
             f"Budget {budget} min wall per run (nequip-train `max_time`), seeds {seeds}, bundled Cu–Au EMT data "
             "(train 6 trajectories, test 1 held-out trajectory), test metrics of the best checkpoint. Mean ± std over seeds.", "",
             markdown_table(["model", "runs", "test force MAE (eV/Å)", "force RMSE", "energy MAE (meV/atom)", "epochs in budget"], rows)]
    if summary:
        best = min(summary)
        lines += ["", f"Lowest test force MAE at this budget: **{best[1]}** ({best[0]:.4f} eV/Å)."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"results": results, "provenance": provenance()}, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, runs in by_name.items():
            for r in runs:
                if "val_force_mae_curve" in r:
                    ax.plot(np.linspace(0, r["wall_s"] / 60, len(r["val_force_mae_curve"])), r["val_force_mae_curve"], label=f"{name} s{r['seed']}")
        ax.set_xlabel("training wall time (min, approx.)")
        ax.set_ylabel("validation force MAE (eV/Å)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / f"{stem}.png", dpi=110)
    except Exception as err:  # plotting is a convenience
        print(f"plot skipped: {err}")
    print(f"wrote {RESULTS / (stem + '.md')}")


if __name__ == "__main__":
    main()
