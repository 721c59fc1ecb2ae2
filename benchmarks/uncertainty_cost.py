"""What the uncertainty costs at inference: energy+forces against energy+forces+σ,
the default model, in one process.

    python benchmarks/uncertainty_cost.py            # 1000-atom Cu-Au cell

Two σ models beside the plain one: the builder's default with ``last_layer_uncertainty=True``
and fitted-like buffers (the plain model's weights, a random positive-definite Σ⁻¹; the
cost does not depend on the values), and the shallow ensemble (``num_energy_heads=8``, the
``+uncertainty=ensemble`` config; the plain model's weights except the readout's last
linear map, which has 8 outputs). Median wall time in alternating order and the peak
memory of each call alone. Writes benchmarks/results/uncertainty_cost.md.
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
    ensemble = build_peer(dict(FLASH_ACE, num_energy_heads=8), types, 5.0)
    target = ensemble.state_dict()
    shared = {k: v for k, v in plain.state_dict().items() if k in target and target[k].shape == v.shape}
    ensemble.load_state_dict(shared, strict=False)
    models = {"energy + forces": plain, "energy + forces + σ (last layer)": with_sigma, "energy + forces + σ (8-head ensemble)": ensemble}
    med, peaks = alternating_medians({k: model_step(m, data, "ef") for k, m in models.items()}, args.repeats)
    ratios = {k: med[k] / med["energy + forces"] for k in models if k != "energy + forces"}
    prov = provenance()
    rows = [[k, f"{1e3 * med[k]:.1f}", " / ".join(f"{p:.0f}" for p in peaks[k])] for k in models]
    text = "\n".join([
        "# Cost of the uncertainty at inference", "",
        f"`python benchmarks/uncertainty_cost.py {' '.join(sys.argv[1:])}`; default model (builder defaults), "
        f"{len(data['pos'])}-atom Cu–Au cell, float32, eager, {torch.get_num_threads()} threads, median of "
        f"{args.repeats} in alternating order; commit {prov['git_commit']}, {prov['machine']}.", "",
        markdown_table(["prediction", "median (ms)", "peak MB"], rows), "",
        *[f"{k} / energy + forces: **{r:.3f}** (target ≤ 1.1)." for k, r in ratios.items()]])
    (RESULTS / "uncertainty_cost.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
