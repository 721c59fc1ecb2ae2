"""Which last-layer covariance ranks errors best? A study on saved features, no retraining.

    python benchmarks/uncertainty_variants.py --extract     # features of the quality runs (once)
    python benchmarks/uncertainty_variants.py                # compare the variants, write the report

For each run of ``benchmarks/uncertainty_quality.py`` (the shipped config per bundled data set,
the 15-min acetylacetone model) the script stores, per structure of the training, validation
and test splits (the checkpoint's own data module): the summed readout features
``F = Σ_i f_i``, each atom's ``f_i`` and type, the signed energy error, each atom's force-error
norm, and the force Gram ``G = Σ_a (∂F/∂r_a)(∂F/∂r_a)ᵀ`` (d×d; ``d`` backward passes).

The variants differ only in the precision matrix ``Σ`` of the Bayesian linear readout
(``σ²(x) = α² φ(x)ᵀ Σ⁻¹ φ(x)``), all calibrated as the shipped fit does
(``nequip_flash_ace.uncertainty.calibrate_precision``: ς² on its grid, α² closed form, lowest
validation energy NLL; κ on a grid around it):

- ``energy``: ``Σ = Σ_train F Fᵀ + ς² I`` (what ships today);
- ``energy+types``: ``φ = (F, n_types)``, the per-type energy shifts counted as readout weights;
- ``forces+types``: ``Σ = Σ_train [φ φᵀ / N² + κ G / (3N)] + ς² I``, the Gauss-Newton matrix of
  the training loss (per-atom energy and force terms) in the readout weights, so directions the
  forces pin down count as known.

Only the test splits are reported; choices are made on validation.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, RUNS, markdown_table, provenance  # noqa: E402

RUN_DIRS = {
    "cuau": RUNS / "uncertainty" / "quality_cuau",
    "paracetamol": RUNS / "uncertainty" / "quality_paracetamol",
    "silicon": RUNS / "uncertainty" / "quality_silicon",
    "acac": RUNS / "acac_15min" / "flash_ace_seed0",
}
STORE = RUNS / "uncertainty" / "variants"


def _force_module(model):
    from nequip.nn import ForceStressOutput

    for m in model.modules():
        if isinstance(m, ForceStressOutput):
            return m
    raise RuntimeError("no ForceStressOutput in the model")


def extract_loader(model, loader) -> list:
    """Per-structure records over ``loader`` (see the module docstring)."""
    from nequip.data import AtomicDataDict

    from nequip_flash_ace.uncertainty import _uncertainty_module

    module = _uncertainty_module(model)
    energy_model = _force_module(model).func
    records = []
    for batch in loader:
        data = AtomicDataDict.to_(batch, "cpu")
        ref_e = data[AtomicDataDict.TOTAL_ENERGY_KEY].view(-1).double()
        ref_f = data[AtomicDataDict.FORCE_KEY].double()
        pos = data[AtomicDataDict.POSITIONS_KEY].detach().clone().requires_grad_(True)
        data = dict(data)
        data[AtomicDataDict.POSITIONS_KEY] = pos
        out = energy_model(data)
        energy = out[AtomicDataDict.TOTAL_ENERGY_KEY].view(-1)
        forces = -torch.autograd.grad(energy.sum(), pos, retain_graph=True)[0].double()
        f = module.linear_features(out)  # float64, (atoms, d)
        F = module.structure_features(out, f)
        d = F.shape[1]
        jac = torch.stack([torch.autograd.grad(F[:, k].sum(), pos, retain_graph=k < d - 1)[0].double() for k in range(d)], dim=-1)
        batch_index = out[AtomicDataDict.BATCH_KEY].view(-1) if AtomicDataDict.BATCH_KEY in out else torch.zeros(len(pos), dtype=torch.long)
        types = out[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
        for frame in range(F.shape[0]):
            atoms = batch_index == frame
            j = jac[atoms].reshape(-1, d)
            records.append({
                "F": F[frame].detach().numpy(), "f": f[atoms].detach().numpy(), "types": types[atoms].numpy(),
                "e_err": float(energy[frame].detach().double() - ref_e[frame]),
                "f_err": torch.linalg.norm(forces[atoms] - ref_f[atoms], dim=1).numpy(),
                "G": (j.T @ j).numpy(),
            })
    return records


def extract(name: str) -> None:
    from nequip_flash_ace.uncertainty import load_for_fit, run_datamodule

    flagged, _, model, _ = load_for_fit(RUN_DIRS[name] / "best.ckpt")
    splits = {}
    with run_datamodule(flagged, "fit") as dm:
        splits["train"] = extract_loader(model, dm.train_dataloader())
        splits["val"] = extract_loader(model, dm.val_dataloader()[0])
    with run_datamodule(flagged, "test") as dm:
        for k, loader in enumerate(dm.test_dataloader()):
            splits[f"test{k}"] = extract_loader(model, loader)
    STORE.mkdir(parents=True, exist_ok=True)
    torch.save({"splits": splits, "num_types": int(max(r["types"].max() for s in splits.values() for r in s)) + 1}, STORE / f"{name}.pt")
    print(name, {k: len(v) for k, v in splits.items()}, flush=True)


# --- the variants -------------------------------------------------------------------------

def _phi(records, num_types, with_types):
    F = np.stack([r["F"] for r in records])
    if with_types:
        counts = np.stack([np.bincount(r["types"], minlength=num_types) for r in records]).astype(float)
        F = np.concatenate([F, counts], axis=1)
    return F


def _phi_atoms(records, num_types, with_types):
    f = np.concatenate([r["f"] for r in records])
    if with_types:
        types = np.concatenate([r["types"] for r in records])
        f = np.concatenate([f, np.eye(num_types)[types]], axis=1)
    return f


def precision(train, num_types, variant, kappa):
    with_types = variant != "energy"
    phi = _phi(train, num_types, with_types)
    if variant == "forces+types":
        n = np.array([len(r["types"]) for r in train], dtype=float)
        gram = (phi / n[:, None]).T @ (phi / n[:, None])
        d = train[0]["G"].shape[0]
        force = sum(r["G"] / (3 * len(r["types"])) for r in train)
        gram[:d, :d] += kappa * force
    else:
        gram = phi.T @ phi
    return gram


def nll_heads(train_phi, train_err, val_phi, val_err) -> dict:
    """The ``nll_heads`` variant (module docstring): returns the same keys as
    ``calibrate_precision`` plus ``noise`` (s²) and ``heads`` (M); ``inverse_covariance`` is C."""
    torch.set_num_threads(1)  # seconds of work; leaves the other core to a running study
    phi = torch.as_tensor(train_phi, dtype=torch.float64)
    err_sq = torch.as_tensor(train_err, dtype=torch.float64) ** 2
    scale = phi.std(0).clamp_min(1e-12)
    standard = phi / scale
    val_err_sq = np.asarray(val_err, dtype=np.float64) ** 2
    best = None
    for heads in (1, 4, 16):
        for ridge in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
            torch.manual_seed(0)
            spread = (0.01 * torch.randn(phi.shape[1], heads, dtype=torch.float64)).requires_grad_(True)
            log_noise = torch.log(err_sq.mean()).detach().requires_grad_(True)
            opt = torch.optim.LBFGS([spread, log_noise], max_iter=400, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                variance = ((standard @ spread) ** 2).sum(1) + log_noise.exp()
                loss = (variance.log() + err_sq / variance).mean() + ridge * (spread**2).sum()
                loss.backward()
                return loss

            opt.step(closure)
            loadings = (spread / scale[:, None]).detach()
            c = (loadings @ loadings.T).numpy()
            noise = float(log_noise.detach().exp())
            raw = np.einsum("vi,ij,vj->v", val_phi, c, val_phi) + noise
            variance_scale = float(np.mean(val_err_sq / raw))
            nll = float(np.mean(np.log(variance_scale * raw) + val_err_sq / (variance_scale * raw)))
            if best is None or nll < best["nll"]:
                best = {"inverse_covariance": c, "variance_scale": variance_scale, "noise": noise, "nll": nll,
                        "regulariser": ridge, "heads": heads}
    return best


def evaluate(store, variant):
    from scipy.stats import spearmanr

    from nequip_flash_ace.uncertainty import calibrate_precision

    splits, num_types = store["splits"], store["num_types"]
    with_types = variant in ("energy+types", "forces+types")
    val_phi = _phi(splits["val"], num_types, with_types)
    val_err = np.array([r["e_err"] for r in splits["val"]])
    if variant == "nll_heads":
        best = dict(nll_heads(_phi(splits["train"], num_types, False), [r["e_err"] for r in splits["train"]], val_phi, val_err),
                    kappa=None)
    else:
        kappas = [None] if variant != "forces+types" else list(10.0 ** np.arange(-3, 4))
        fits = (dict(calibrate_precision(precision(splits["train"], num_types, variant, kappa), val_phi, val_err), kappa=kappa)
                for kappa in kappas)
        best = min(fits, key=lambda fit: fit["nll"])
    out = {"variant": variant, "val_nll": best["nll"], "regulariser": best["regulariser"], "kappa": best["kappa"], "heads": best.get("heads")}
    noise = best.get("noise", 0.0)
    for name in sorted(k for k in splits if k.startswith("test")):
        recs = splits[name]
        phi = _phi(recs, num_types, with_types)
        err = np.abs([r["e_err"] for r in recs])
        sigma = np.sqrt(best["variance_scale"] * (np.einsum("vi,ij,vj->v", phi, best["inverse_covariance"], phi) + noise))
        phi_a = _phi_atoms(recs, num_types, with_types)
        sigma_a = np.sqrt(best["variance_scale"] * np.einsum("vi,ij,vj->v", phi_a, best["inverse_covariance"], phi_a))
        f_err = np.concatenate([r["f_err"] for r in recs])
        out[name] = {
            "spearman_energy": float(spearmanr(sigma, err).statistic),
            "spearman_atoms": float(spearmanr(sigma_a, f_err).statistic),
            "within_1sigma": float(np.mean(err <= sigma)), "within_2sigma": float(np.mean(err <= 2 * sigma)),
            "mean_sigma_mev": 1e3 * float(sigma.mean()), "mean_abs_err_mev": 1e3 * float(err.mean()),
            "mean_err_mev": 1e3 * float(np.mean([r["e_err"] for r in recs])),
        }
    return out


def committee_ceiling() -> list:
    """How well *two fully retrained models* rank the energy errors: Spearman between the
    seeds' disagreement ``|E_0 - E_1|`` and seed 0's ``|ΔE|`` on each data set's test split,
    from the attention study's runs (``accuracy_budget.py --study attention``, 2.5 min,
    seeds 0 and 1). A committee costs full trainings; it bounds what a last-layer estimate
    of the same models can be expected to do."""
    from ase.io import read
    from scipy.stats import spearmanr

    stems = {"cuau": "accuracy_attention", "paracetamol": "accuracy_attention_paracetamol",
             "silicon": "accuracy_attention_silicon", "acac": "accuracy_attention_acac"}
    rows = []
    for data, stem in stems.items():
        for model in ("flash_ace_1L_no_attention", "flash_ace_2L_no_attention", "nequip"):
            paths = [RUNS / stem / f"{model}_seed{seed}" / "test_dataset0.xyz" for seed in (0, 1)]
            if not all(p.exists() for p in paths):
                continue
            frames = [read(p, index=":") for p in paths]
            e0, e1 = (np.array([a.get_potential_energy() for a in f]) for f in frames)
            ref = np.array([a.info["original_dataset_energy"] for a in frames[0]])
            rows.append({"data": data, "model": model, "frames": len(ref),
                         "spearman": float(spearmanr(np.abs(e0 - e1), np.abs(e0 - ref)).statistic)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--extract", action="store_true")
    parser.add_argument("--data", nargs="+", default=list(RUN_DIRS))
    args = parser.parse_args(argv)
    if args.extract:
        for name in args.data:
            extract(name)
        return
    results = []
    for name in args.data:
        store = torch.load(STORE / f"{name}.pt", weights_only=False)
        for variant in ("energy", "energy+types", "forces+types", "nll_heads"):
            r = evaluate(store, variant)
            r["data"] = name
            results.append(r)
            print(json.dumps(r), flush=True)
    rows = []
    for r in results:
        for t in sorted(k for k in r if k.startswith("test")):
            m = r[t]
            rows.append([r["data"], t, r["variant"], f"{r['val_nll']:.3f}", f"{m['spearman_energy']:.2f}", f"{m['spearman_atoms']:.2f}",
                         f"{100 * m['within_1sigma']:.0f} %", f"{100 * m['within_2sigma']:.0f} %", f"{m['mean_sigma_mev']:.3g}",
                         f"{m['mean_abs_err_mev']:.3g}", f"{m['mean_err_mev']:+.3g}"])
    lines = ["# Last-layer covariance variants", "", "```", json.dumps(provenance(), indent=1), "```", "",
             "`python benchmarks/uncertainty_variants.py` (module docstring).", "",
             markdown_table(["data", "test", "variant", "val NLL", "Spearman σ_E vs \\|ΔE\\|", "Spearman σ_i vs \\|ΔF_i\\|", "≤ 1σ", "≤ 2σ",
                             "mean σ_E (meV)", "mean \\|ΔE\\| (meV)", "mean ΔE (meV)"], rows)]
    ceiling = committee_ceiling()
    if ceiling:
        lines += ["", "## What a two-model committee achieves", "",
                  "Spearman between two independently trained seeds' energy disagreement and seed 0's |ΔE| (test split; "
                  "for acetylacetone the 300 K set), from the runs of `accuracy_budget.py --study attention` (2.5 min each).", "",
                  markdown_table(["data", "model", "frames", "Spearman \\|E_0 − E_1\\| vs \\|ΔE\\|"],
                                 [[r["data"], r["model"], r["frames"], f"{r['spearman']:.2f}"] for r in ceiling])]
    (RESULTS / "uncertainty_variants.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "uncertainty_variants.json").write_text(json.dumps({"variants": results, "committee": ceiling}, indent=1))


if __name__ == "__main__":
    main()
