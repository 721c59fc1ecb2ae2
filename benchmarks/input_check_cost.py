"""What the input geometry check (InputGeometryCheck) costs: the default model with and
without it, same weights, in one process, timed in alternating order.

    python benchmarks/input_check_cost.py            # 1000-atom Cu-Au cell

Energy+forces and one force-loss training step; median wall time and the peak memory of
each piece of work alone (twice, in both orders). Writes benchmarks/results/input_check_cost.md.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import FLASH_ACE, RESULTS, alternating_medians, atoms_to_data, build_peer, bulk_cuau, markdown_table, model_step, provenance  # noqa: E402


def without_check(model):
    """``model`` with its InputGeometryCheck taken out of the graph."""
    from nequip.nn import SequentialGraphNetwork

    for m in model.modules():
        if isinstance(m, SequentialGraphNetwork) and "geometry_check" in m._modules:
            del m._modules["geometry_check"]
            return model
    raise RuntimeError("no geometry_check module found")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--atoms", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    data = atoms_to_data(bulk_cuau(args.atoms), 5.0, ["Cu", "Au"])
    with_check = build_peer(dict(FLASH_ACE), ["Cu", "Au"], 5.0)
    plain = build_peer(dict(FLASH_ACE), ["Cu", "Au"], 5.0)
    plain.load_state_dict(with_check.state_dict())
    models = {"without check": without_check(plain), "with check (shipped)": with_check}
    rows = []
    for mode, repeats in (("ef", args.repeats), ("train", max(4, args.repeats // 2))):
        steps = {k: model_step(m, data, mode) for k, m in models.items()}
        med, peaks = alternating_medians(steps, repeats)
        ratio = med["with check (shipped)"] / med["without check"]
        rows.append([mode, f"{1e3 * med['without check']:.1f}", f"{1e3 * med['with check (shipped)']:.1f}", f"{ratio:.3f}",
                     " / ".join(f"{p:.0f}" for p in peaks["without check"]),
                     " / ".join(f"{p:.0f}" for p in peaks["with check (shipped)"])])
    prov = provenance()
    text = "\n".join([
        "# Cost of the input geometry check", "",
        f"`python benchmarks/input_check_cost.py {' '.join(sys.argv[1:])}`; default model (builder defaults), "
        f"{len(data['pos'])}-atom Cu–Au cell, float32, {torch.get_num_threads()} threads, median of {args.repeats} "
        f"(training step: {max(4, args.repeats // 2)}) in alternating order; commit {prov['git_commit']}, {prov['machine']}.", "",
        markdown_table(["mode", "without (ms)", "with (ms)", "with / without", "peak MB without", "peak MB with"], rows)])
    (RESULTS / "input_check_cost.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
