"""What the last-layer uncertainty costs at inference: energy+forces against
energy+forces+σ, the default model with the same weights, in one process.

    python benchmarks/uncertainty_cost.py            # 1000-atom Cu-Au cell

The σ model is the builder's default with ``last_layer_uncertainty=True`` and fitted-like
buffers (a random positive-definite Σ⁻¹; the cost does not depend on the values). Median
wall time in alternating order and the peak memory of each call alone. Writes
benchmarks/results/uncertainty_cost.md.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import FLASH_ACE, RESULTS, alternating_medians, atoms_to_data, build_peer, bulk_cuau, markdown_table, model_step, provenance  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--atoms", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    types = ["Cu", "Au"]
    data = atoms_to_data(bulk_cuau(args.atoms), 5.0, types)
    plain = build_peer(dict(FLASH_ACE), types, 5.0)
    with_sigma = build_peer(dict(FLASH_ACE, last_layer_uncertainty=True), types, 5.0)
    missing = with_sigma.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".uncertainty." in k for k in missing), missing
    module = next(m for m in with_sigma.modules() if m.__class__.__name__ == "LastLayerUncertainty")
    a = torch.randn(module.num_features, module.num_features, dtype=torch.float64)
    module.inverse_covariance.copy_(a @ a.T + torch.eye(module.num_features, dtype=torch.float64))
    module.variance_scale.fill_(1.0)
    models = {"energy + forces": plain, "energy + forces + σ": with_sigma}
    med, peaks = alternating_medians({k: model_step(m, data, "ef") for k, m in models.items()}, args.repeats)
    ratio = med["energy + forces + σ"] / med["energy + forces"]
    prov = provenance()
    rows = [[k, f"{1e3 * med[k]:.1f}", " / ".join(f"{p:.0f}" for p in peaks[k])] for k in models]
    text = "\n".join([
        "# Cost of the last-layer uncertainty at inference", "",
        f"`python benchmarks/uncertainty_cost.py {' '.join(sys.argv[1:])}`; default model (builder defaults), "
        f"{len(data['pos'])}-atom Cu–Au cell, float32, eager, {torch.get_num_threads()} threads, median of "
        f"{args.repeats} in alternating order; commit {prov['git_commit']}, {prov['machine']}.", "",
        markdown_table(["prediction", "median (ms)", "peak MB"], rows), "",
        f"energy + forces + σ / energy + forces: **{ratio:.3f}** (target ≤ 1.1)."])
    (RESULTS / "uncertainty_cost.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
