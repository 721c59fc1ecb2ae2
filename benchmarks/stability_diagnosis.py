"""Why does training wobble on diverse structures? Measure how the sizes that enter the
cubic product basis scale with an atom's neighbour count, at initialisation or in a
trained model.

    python benchmarks/stability_diagnosis.py                      # silicon + Cu–Au, default model
    python benchmarks/stability_diagnosis.py --set neighbour_normalization=coordination
    python benchmarks/stability_diagnosis.py --data silicon --checkpoint RUN/best.ckpt ...   # trained models

For every atom of the training frames it records the smooth coordination
``n_i = Σ_j f_c(r_ij)``, the per-atom norms of the atomic basis ``A_i`` (after the
neighbour normalisation; scalars and all l), of the product basis ``B_i`` and, with
attention, the largest weight relative to the uniform one (``w_ij / f_c(r_ij)``), layer
by layer, and the per-frame gradient norm of the force loss with respect to the
parameters. Atoms are binned by ``n_i``; the table gives medians per bin and the
log-log slope ``d log|X| / d log n`` (1 for a sum of aligned terms, 3 for a cubic
product of them). Writes benchmarks/results/stability_diagnosis.{md,json}.

    python benchmarks/stability_diagnosis.py --train --seeds 0 1 2 3 4 --jobs 2

``--train`` watches real trainings instead: the silicon config at 2 layers, lr 1e-2, 10
epochs, for each setting of ``TRAIN_SETTINGS`` (no attention; attention with the raw
``q·k`` scores of versions up to 0.2.0; attention with normalised scores) and seed, with
``_training_probe.TrainingProbe`` recording every 5th optimiser step what grows
(gradient norms per module and the three largest per parameter, ``τ``, sink scores, score
sizes, attention entropy, edge amplification, feature norms entering each layer). The
report gives the validation curves, the worst rebound (an epoch's validation force MAE
over the best before it, after epoch 3) and per run the largest gradient norm and the
largest share of it held by the attention temperatures. Runs are equal-epoch, so
``--jobs 2`` (one thread each) is fair; writes benchmarks/results/stability_training.{md,json},
runs under benchmarks/runs/stability_training/.
"""

import argparse
import json
import sys
from pathlib import Path

import ase.io
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _harness import RESULTS, markdown_table, parse_value, provenance  # noqa: E402
from helpers import build_model, make_data  # noqa: E402

from nequip.data import AtomicDataDict  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = {"silicon": ("silicon_gfn1", ["Si"]), "cuau": ("cuau_emt", ["Cu", "Au"])}


def load_frames(name, max_frames, r_max):
    folder, types = DATA[name]
    atoms = ase.io.read(REPO / "data" / folder / "train.xyz", index=":")
    rng = np.random.default_rng(0)
    pick = sorted(rng.choice(len(atoms), size=min(max_frames, len(atoms)), replace=False))
    frames = []
    for i in pick:
        a = atoms[i]
        data = make_data(a.positions, [types.index(s) for s in a.get_chemical_symbols()], r_max, a.cell.array, a.pbc)
        frames.append((data, torch.as_tensor(a.get_forces(), dtype=torch.float64)))
    return frames, types


def diagnose(name, overrides, max_frames, r_max=5.0, checkpoint=None):
    frames, types = load_frames(name, max_frames, r_max)
    counts = [d[AtomicDataDict.EDGE_INDEX_KEY].shape[1] / len(d[AtomicDataDict.POSITIONS_KEY]) for d, _ in frames]
    config = {"_target_": "nequip_flash_ace.model.FlashACEModel", "seed": 0, "r_max": r_max, "type_names": types,
              "avg_num_neighbors": float(np.mean(counts)), **overrides}
    if checkpoint:
        from nequip.model import ModelFromCheckpoint
        from nequip.utils.global_state import set_global_state

        set_global_state()
        model = ModelFromCheckpoint(checkpoint)
        model = model["sole_model"] if isinstance(model, torch.nn.ModuleDict) else model
        overrides = {"checkpoint": str(Path(checkpoint).resolve().relative_to(REPO)) if Path(checkpoint).resolve().is_relative_to(REPO) else str(checkpoint)}
    else:
        model = build_model(config, "float64")
    layers = [m for m in model.modules() if type(m).__name__ == "FlashACELayer"]
    record = {}

    def attention_hook(key):
        def fn(module, args, kwargs, output):
            # largest weight relative to the uniform one, w_ij / f_c(r_ij), per centre: how
            # far the learned scores concentrate the sum (1 everywhere at initialisation)
            envelope = kwargs["edge_envelope"].reshape(-1, 1)
            ratio = torch.where(envelope > 1e-3, output / envelope.clamp(min=1e-3), torch.zeros_like(output)).amax(1)
            record[key] = torch.zeros(kwargs["center_scalars"].shape[0], dtype=ratio.dtype).scatter_reduce(
                0, kwargs["edge_center"], ratio.detach(), reduce="amax", include_self=True)
        return fn

    def hook(key):
        def fn(module, inputs, output):
            record[key] = (inputs[0] if key.endswith("A") else output).detach()
        return fn

    for i, layer in enumerate(layers):
        layer.linear_atomic_basis.register_forward_hook(hook(f"L{i}_A"))
        layer.product_basis.register_forward_hook(hook(f"L{i}_B"))
    with_attention = [i for i, layer in enumerate(layers) if layer.attention is not None]
    for i in with_attention:
        layers[i].attention.register_forward_hook(attention_hook(f"L{i}_w_over_fc"), with_kwargs=True)
    rows = {k: [] for k in ["n"] + [f"L{i}_{x}" for i in range(len(layers)) for x in ("A0", "A", "B")]
            + [f"L{i}_w_over_fc" for i in with_attention]}
    grad_norms, frame_n = [], []
    params = [p for p in model.parameters() if p.requires_grad]
    for data, forces in frames:
        out = model(AtomicDataDict.to_(dict(data), "cpu"))
        envelope = out[AtomicDataDict.EDGE_CUTOFF_KEY].view(-1)
        n = torch.zeros(len(forces), dtype=torch.float64).index_add_(0, out[AtomicDataDict.EDGE_INDEX_KEY][0], envelope.double())
        rows["n"].append(n.detach())
        for i in range(len(layers)):
            a = record[f"L{i}_A"]
            rows[f"L{i}_A0"].append(a[:, : layers[i].num_features].norm(dim=1) / layers[i].num_features ** 0.5)
            rows[f"L{i}_A"].append(a.norm(dim=1) / a.shape[1] ** 0.5)
            b = record[f"L{i}_B"]
            rows[f"L{i}_B"].append(b.norm(dim=1) / b.shape[1] ** 0.5)
        for i in with_attention:
            rows[f"L{i}_w_over_fc"].append(record[f"L{i}_w_over_fc"])
        loss = ((out[AtomicDataDict.FORCE_KEY].to(torch.float64) - forces) ** 2).mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grad_norms.append(float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None))))
        frame_n.append(float(n.mean()))
    cat = {k: torch.cat(v).double().numpy() for k, v in rows.items()}
    n = cat["n"]
    edges = np.quantile(n, np.linspace(0, 1, 7))
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (n >= lo) & (n <= hi)
        bins.append({"n_range": [float(lo), float(hi)], **{k: float(np.median(v[m])) for k, v in cat.items()}})
    slopes = {k: float(np.polyfit(np.log(n[n > 1]), np.log(np.maximum(v[n > 1], 1e-30)), 1)[0]) for k, v in cat.items() if k != "n"}
    g, fn = np.array(grad_norms), np.array(frame_n)
    return {"data": name, "overrides": overrides, "frames": len(frames), "atoms": int(len(n)),
            "n_min": float(n.min()), "n_max": float(n.max()), "avg_num_neighbors": config["avg_num_neighbors"],
            "bins": bins, "slopes": slopes,
            "grad_norm_median": float(np.median(g)), "grad_norm_max": float(g.max()),
            "grad_norm_max_over_median": float(g.max() / np.median(g)),
            "grad_norm_slope_vs_n": float(np.polyfit(np.log(fn), np.log(g), 1)[0])}


def report(results, stem):
    lines = ["# Sizes entering the product basis vs neighbour count", "", "```",
             json.dumps(provenance(), indent=1), "```", "",
             "Per atom: `n = Σ_j f_c(r_ij)`; `|A0|`, `|A|`: RMS over components of the atomic basis "
             "(scalars only / all l) after the neighbour normalisation; `|B|`: RMS of the product basis "
             "output; medians per sextile of `n`. Slope: least-squares `d log|X| / d log n` over all atoms. "
             "`w_over_fc`: largest attention weight relative to the uniform one, `max_j w_ij / f_c(r_ij)`. "
             "Gradient: norm of the per-frame force-MSE gradient over all parameters (fresh models: float64, seed 0).", ""]
    for r in results:
        keys = [k for k in r["bins"][0] if k not in ("n_range",)]
        rows = [[f"{b['n_range'][0]:.1f}–{b['n_range'][1]:.1f}"] + [f"{b[k]:.3g}" for k in keys] for b in r["bins"]]
        rows.append(["slope"] + ["–"] + [f"{r['slopes'][k]:.2f}" for k in keys[1:]])
        lines += [f"## {r['data']}, {r['overrides'] or 'default model'}", "",
                  f"{r['frames']} training frames, {r['atoms']} atoms, n from {r['n_min']:.1f} to {r['n_max']:.1f}, "
                  f"avg_num_neighbors {r['avg_num_neighbors']:.1f}. Per-frame gradient norm: median "
                  f"{r['grad_norm_median']:.3g}, max {r['grad_norm_max']:.3g} (×{r['grad_norm_max_over_median']:.1f}), "
                  f"slope vs mean n {r['grad_norm_slope_vs_n']:.2f}.", "",
                  markdown_table(["n range"] + ["median n" if k == "n" else k for k in keys], rows), ""]
    RESULTS.mkdir(exist_ok=True, parents=True)
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    (RESULTS / f"{stem}.json").write_text(json.dumps({"results": results, "provenance": provenance()}, indent=1))
    print("\n".join(lines))


# name -> config overrides (the silicon config at two layers, its lr 1e-2)
TRAIN_SETTINGS = {
    "2L_no_attention": ["num_heads=0"],
    "2L_attention_raw_scores": ["num_heads=4", "attention_score_inputs=pair", "+training_module.model.attention_normalized_scores=false"],
    "2L_attention": ["num_heads=4", "attention_score_inputs=pair"],
}
TRAIN_RUNS = Path(__file__).resolve().parent / "runs" / "stability_training"


def train_one(name: str, seed: int, epochs: int) -> Path:
    import os
    import subprocess

    run_dir = TRAIN_RUNS / f"{name}_seed{seed}"
    if (run_dir / "done").exists():
        return run_dir
    exe = Path(sys.executable).parent / "nequip-train"
    probe = "{_target_:_training_probe.TrainingProbe,out_file:" + str(run_dir / "probe.jsonl") + ",every:5}"
    cmd = [str(exe), "-cp", str(REPO / "configs"), "-cn", "flash_ace_silicon", f"hydra.run.dir={run_dir}", "run=[train]",
           "num_layers=2", f"seed={seed}", f"max_epochs={epochs}", "max_time=00:02:00:00",
           # the probe only: no early stopping or checkpoints, a rebound is what is measured
           f"trainer.callbacks=[{probe}]", *TRAIN_SETTINGS[name]]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} seed {seed}: {(proc.stderr or proc.stdout)[-2000:]}")
    (run_dir / "done").write_text("")
    return run_dir


def summarise_run(name: str, seed: int, run_dir: Path) -> dict:
    import csv

    with open(run_dir / "csv" / "metrics.csv") as f:
        curve = [float(r["val0_epoch/forces_mae"]) for r in csv.DictReader(f) if r.get("val0_epoch/forces_mae")]
    rebound = max([curve[e] / min(curve[:e]) for e in range(3, len(curve))], default=float("nan"))
    probe = [json.loads(line) for line in (run_dir / "probe.jsonl").read_text().splitlines()]
    totals = np.array([p["grad_norm"]["total"] for p in probe])
    temperature_share = [max((v for k, v in p["largest_grads"].items() if k.endswith("score_temperature")), default=0.0)
                         / max(p["grad_norm"]["total"], 1e-30) for p in probe]
    attention_layers = sorted({k for p in probe for k in p if k.endswith(".attention")})
    return {
        "setting": name, "seed": seed, "val_force_mae": curve, "best": min(curve), "final": curve[-1], "worst_rebound": rebound,
        "grad_norm_max": float(totals.max()), "grad_norm_median": float(np.median(totals)),
        "steps_over_clip": float((totals > 10.0).mean()),
        "temperature_share_max": float(max(temperature_share)),
        "score_max": {k: max(p[k]["score_max"] for p in probe) for k in attention_layers},
        "amplification_max": {k: max(p[k]["amplification_max"] for p in probe) for k in attention_layers},
        "layer1_input_max": max(p["layer1"]["input"][0] for p in probe if "layer1" in p),
    }


def train_report(runs: list, epochs: int):
    header = ["setting", "seed"] + [str(e + 1) for e in range(epochs)] + [
        "worst rebound", "max grad norm (median)", "steps clipped", "max τ share of grad norm", "max |s| (layer 0 / 1)",
        "max w/f_c (layer 0 / 1)", "max |h| into layer 1"]
    rows = []
    for r in runs:
        pair = lambda d: " / ".join(f"{v:.2f}" for _, v in sorted(d.items())) or "–"  # noqa: E731
        rows.append([r["setting"], r["seed"]] + [f"{v:.3f}" for v in r["val_force_mae"]] + [""] * (epochs - len(r["val_force_mae"]))
                    + [f"{r['worst_rebound']:.2f}", f"{r['grad_norm_max']:.0f} ({r['grad_norm_median']:.1f})",
                       f"{100 * r['steps_over_clip']:.0f} %", f"{r['temperature_share_max']:.2f}" if r["score_max"] else "–",
                       pair(r["score_max"]), pair(r["amplification_max"]), f"{r['layer1_input_max']:.2f}"])
    summary = []
    for name in TRAIN_SETTINGS:
        mine = [r for r in runs if r["setting"] == name]
        if mine:
            best = np.array([r["best"] for r in mine])
            summary.append([name, len(mine), f"{best.mean():.3f} ± {best.std():.3f}", f"{max(r['worst_rebound'] for r in mine):.2f}",
                            sum(r["worst_rebound"] > 1.3 for r in mine)])
    lines = ["# What grows while two-layer models train on diverse silicon", "", "```", json.dumps(provenance(), indent=1), "```", "",
             f"`python benchmarks/stability_diagnosis.py --train ...`: `configs/flash_ace_silicon.yaml` at 2 layers, lr 1e-2, "
             f"gradient clip 10, {epochs} epochs, no early stopping; 2 runs at a time, 1 thread each (equal epochs). "
             "Validation force MAE (eV/Å) per epoch; worst rebound = an epoch's value over the best before it, after "
             "epoch 3 (> 1.3 counts as a blow-up); gradient norms before clipping, every 5th step; τ share = the "
             "largest attention-temperature gradient over the total norm.", "",
             markdown_table(["setting", "seeds", "best validation F MAE", "worst rebound", "seeds with rebound > 1.3"], summary), "",
             markdown_table(header, rows)]
    RESULTS.mkdir(exist_ok=True, parents=True)
    (RESULTS / "stability_training.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "stability_training.json").write_text(json.dumps({"runs": runs, "provenance": provenance()}, indent=1))
    print("\n".join(lines))


def train_main(args):
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(name, seed) for name in args.settings for seed in args.seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        dirs = list(pool.map(lambda job: train_one(*job, args.epochs), jobs))
    train_report([summarise_run(name, seed, d) for (name, seed), d in zip(jobs, dirs)], args.epochs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", action="store_true", help="watch real 2-layer trainings on silicon (module docstring)")
    parser.add_argument("--settings", nargs="+", default=list(TRAIN_SETTINGS), choices=list(TRAIN_SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data", nargs="+", default=["silicon", "cuau"], choices=sorted(DATA))
    parser.add_argument("--frames", type=int, default=120, help="training frames per data set")
    parser.add_argument("--set", nargs="*", default=[], help="model builder overrides key=value")
    parser.add_argument("--checkpoint", nargs="+", default=[None], help="diagnose trained models (nequip-train checkpoints) instead of a fresh one")
    parser.add_argument("--out", default="stability_diagnosis")
    args = parser.parse_args()
    if args.train:
        return train_main(args)
    torch.set_default_dtype(torch.float64)
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    report([diagnose(d, overrides, args.frames, checkpoint=c) for c in args.checkpoint for d in args.data], args.out)


if __name__ == "__main__":
    main()
