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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=["silicon", "cuau"], choices=sorted(DATA))
    parser.add_argument("--frames", type=int, default=120, help="training frames per data set")
    parser.add_argument("--set", nargs="*", default=[], help="model builder overrides key=value")
    parser.add_argument("--checkpoint", nargs="+", default=[None], help="diagnose trained models (nequip-train checkpoints) instead of a fresh one")
    parser.add_argument("--out", default="stability_diagnosis")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    report([diagnose(d, overrides, args.frames, checkpoint=c) for c in args.checkpoint for d in args.data], args.out)


if __name__ == "__main__":
    main()
