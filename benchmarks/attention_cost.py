"""What attention costs in the shipped one-layer model: a training step and an
energy+forces call of the default model (no attention) against the same model with
4 heads of ``pair`` and of ``descriptor`` scores, in one process.

    python benchmarks/attention_cost.py            # 1000-atom Cu-Au cell

Median wall time in alternating order and the peak memory of each call alone, float32,
eager. Target (attention issue): a training step with the many-body query (``descriptor``) ≤ 1.8×
the shipped model's.
Writes benchmarks/results/attention_cost.md.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import FLASH_ACE, RESULTS, alternating_medians, atoms_to_data, build_peer, bulk_cuau, count_params, markdown_table, model_step, provenance  # noqa: E402

MODELS = {
    "shipped (no attention)": dict(FLASH_ACE),
    "4 heads, pair scores": dict(FLASH_ACE, num_heads=4, attention_score_inputs="pair"),
    "4 heads, descriptor scores": dict(FLASH_ACE, num_heads=4, attention_score_inputs="descriptor"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--atoms", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    types = ["Cu", "Au"]
    data = atoms_to_data(bulk_cuau(args.atoms), 5.0, types)
    models = {name: build_peer(kwargs, types, 5.0) for name, kwargs in MODELS.items()}
    rows = []
    base = "shipped (no attention)"
    for mode, repeats in (("ef", args.repeats), ("train", max(4, args.repeats // 2))):
        med, peaks = alternating_medians({k: model_step(m, data, mode) for k, m in models.items()}, repeats)
        for name in models:
            rows.append([mode, name, count_params(MODELS[name], types), f"{1e3 * med[name]:.1f}", f"{med[name] / med[base]:.2f}",
                         " / ".join(f"{p:.0f}" for p in peaks[name])])
    prov = provenance()
    text = "\n".join([
        "# Cost of attention in the one-layer model", "",
        f"`python benchmarks/attention_cost.py {' '.join(sys.argv[1:])}`; builder defaults (one layer) with and without "
        f"4 attention heads, {len(data['pos'])}-atom Cu–Au cell, float32, eager, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} (training step with a force loss: {max(4, args.repeats // 2)}) in alternating order; "
        f"commit {prov['git_commit']}, {prov['machine']}.", "",
        markdown_table(["mode", "model", "params", "median (ms)", "/ shipped", "peak MB"], rows)])
    (RESULTS / "attention_cost.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
