"""Fit the last-layer uncertainty of a trained Flash-ACE model, without retraining.

    python -m nequip_flash_ace.uncertainty RUN_DIR            # reads RUN_DIR/best.ckpt
    python -m nequip_flash_ace.uncertainty path/to/model.ckpt --out model_with_sigma.ckpt

Writes a checkpoint (default ``RUN_DIR/uncertainty.ckpt``) of the same model with
``last_layer_uncertainty`` on and its buffers fitted (``nn/uncertainty.py`` gives the
equations): ``nequip-compile`` (``--target ase_uncertainty``) and ``nequip-package`` take it
as any checkpoint, and ``FlashACEUncertaintyCalculator`` reads ``energy_uncertainty`` and
``energies_uncertainty`` from it.

Fit, on the run's own data (the data module of the checkpoint's config):

- ``Σ = Σ_train F Fᵀ + ς² I`` over the training structures' summed readout features;
- calibration on the validation split: for each ``ς²`` on a grid, ``α²`` that maximises the
  Gaussian likelihood of the validation energy errors ``e_v`` given ``σ_v`` (closed form,
  ``α² = mean(e_v² / s_v)`` with ``s_v = F_vᵀ Σ⁻¹ F_v``); the ``ς²`` with the lowest mean
  negative log-likelihood ``mean(log σ_v² + e_v² / σ_v²)`` is kept.
"""

import argparse
import contextlib
import copy
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

# ς² grid, relative to the mean eigenvalue of Σ_train F Fᵀ. The floor keeps Σ⁻¹'s condition
# number at most ~1e6 × (the training features' own spread): below it, σ² = α² Fᵀ Σ⁻¹ F of
# a feature direction the training set barely covers amplifies round-off in F, and an
# AOTInductor-compiled float64 model no longer agrees with the eager one to 1e-10
REGULARISER_GRID = tuple(10.0**k for k in range(-6, 3))


def fit_last_layer(train_features: np.ndarray, val_features: np.ndarray, val_errors: np.ndarray) -> Dict:
    """The calibrated Bayesian linear readout.

    Args:
        train_features: ``F`` of the training structures, (frames, d)
        val_features: ``F`` of the validation structures, (frames, d)
        val_errors: predicted minus reference energy of the validation structures, (frames,)
    Returns:
        dict with ``inverse_covariance`` (d, d), ``variance_scale`` α², ``regulariser`` ς²
        and ``nll`` (the validation mean negative log-likelihood, up to a constant)
    """
    train_features = np.asarray(train_features, dtype=np.float64)
    return calibrate_precision(train_features.T @ train_features, val_features, val_errors)


def calibrate_precision(gram: np.ndarray, val_features: np.ndarray, val_errors: np.ndarray) -> Dict:
    """:func:`fit_last_layer` for a given training Gram matrix (``Σ_train F Fᵀ`` there; any
    positive semi-definite precision of the readout weights, e.g. one with force terms):
    ``Σ = gram + ς² I`` with ``ς²`` on :data:`REGULARISER_GRID` (relative to the mean
    eigenvalue of ``gram``), ``α²`` closed form, the lowest validation NLL kept. Same return."""
    gram = np.asarray(gram, dtype=np.float64)
    val_features = np.asarray(val_features, dtype=np.float64)
    errors_sq = np.asarray(val_errors, dtype=np.float64) ** 2
    d = gram.shape[0]
    mean_eigenvalue = max(np.trace(gram) / d, np.finfo(np.float64).tiny)
    best = None
    for relative in REGULARISER_GRID:
        regulariser = relative * mean_eigenvalue
        inverse = np.linalg.inv(gram + regulariser * np.eye(d))
        rigidity = np.einsum("vi,ij,vj->v", val_features, inverse, val_features)
        rigidity = np.maximum(rigidity, np.finfo(np.float64).tiny)
        variance_scale = float(np.mean(errors_sq / rigidity))
        variance = np.maximum(variance_scale * rigidity, np.finfo(np.float64).tiny)
        nll = float(np.mean(np.log(variance) + errors_sq / variance))
        if best is None or nll < best["nll"]:
            best = {"inverse_covariance": inverse, "variance_scale": variance_scale, "regulariser": regulariser, "nll": nll}
    return best


def _uncertainty_module(model):
    from .nn import LastLayerUncertainty

    for module in model.modules():
        if isinstance(module, LastLayerUncertainty):
            return module
    raise ValueError("the model has no LastLayerUncertainty module (FlashACEModel with last_layer_uncertainty=True)")


def _type_scales(model, num_types: int) -> torch.Tensor:
    """The per-type energy scale of the model's PerTypeScaleShift (ones where it has none)."""
    from nequip.nn import PerTypeScaleShift

    for module in model.modules():
        if isinstance(module, PerTypeScaleShift) and module.has_scales:
            return module.scales.detach().to(torch.float64).reshape(-1).expand(num_types).clone()
    return torch.ones(num_types, dtype=torch.float64)


def structure_features(model, loader) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(``F`` per structure, predicted energy, reference energy) over a data loader."""
    from nequip.data import AtomicDataDict

    module = _uncertainty_module(model)
    features, predicted, reference = [], [], []
    for batch in loader:
        out = model(AtomicDataDict.to_(batch, next(model.parameters()).device))
        f = module.linear_features(out).detach()
        features.append(module.structure_features(out, f).cpu().numpy())
        predicted.append(out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().view(-1).cpu().numpy())
        reference.append(batch[AtomicDataDict.TOTAL_ENERGY_KEY].view(-1).cpu().numpy())
    return np.concatenate(features), np.concatenate(predicted), np.concatenate(reference)


def _with_uncertainty_flag(checkpoint: Dict) -> Dict:
    out = copy.deepcopy(checkpoint)
    hparams = out["hyper_parameters"]
    blocks = [hparams["model"], hparams["info_dict"]["training_module"]["model"]]
    for block in blocks:
        if block.get("_target_") != "nequip_flash_ace.model.FlashACEModel":
            raise ValueError(
                f"training_module.model._target_ is {block.get('_target_')!r}; the last-layer uncertainty "
                "needs nequip_flash_ace.model.FlashACEModel"
            )
        block["last_layer_uncertainty"] = True
    return out


def load_for_fit(checkpoint_path: Path):
    """The model of ``checkpoint_path`` with ``last_layer_uncertainty`` on (buffers unfitted).

    Returns ``(flagged checkpoint dict, lightning module, model, missing state keys)``;
    ``model`` is the evaluation (EMA) model in eval mode.
    """
    import hydra

    from nequip.model.utils import override_model_compile_mode
    from nequip.train.lightning import _SOLE_MODEL_KEY
    from nequip.utils.global_state import set_global_state

    set_global_state()
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    flagged = _with_uncertainty_flag(checkpoint)

    training_module = hydra.utils.get_class(flagged["hyper_parameters"]["info_dict"]["training_module"]["_target_"])
    with tempfile.TemporaryDirectory() as tmp, override_model_compile_mode("eager"), warnings.catch_warnings():
        # Lightning builds the flagged model from a file: a temporary one, so that no
        # checkpoint the user sees ever holds an unfitted model (σ = 0).
        # The new buffers are not in the checkpoint yet: strict=False, and only they may be
        # missing (checked below), so Lightning's note that they are is expected
        unfitted = Path(tmp) / "unfitted.ckpt"
        torch.save(flagged, unfitted)
        warnings.filterwarnings("ignore", message="Found keys that are in the model state dict but not in the checkpoint")
        lightning_module = training_module.load_from_checkpoint(unfitted, weights_only=False, strict=False)
    missing = set(lightning_module.state_dict()) - set(checkpoint["state_dict"])
    if not missing or not all(".uncertainty." in key for key in missing):
        raise RuntimeError(f"unexpected keys missing from {checkpoint_path}: {sorted(k for k in missing if '.uncertainty.' not in k)}")
    model = lightning_module.evaluation_model[_SOLE_MODEL_KEY]  # the EMA weights, as inference uses
    model.eval()
    module = _uncertainty_module(model)
    module.type_scales.copy_(_type_scales(model, module.type_scales.numel()))
    return flagged, lightning_module, model, missing


@contextlib.contextmanager
def run_datamodule(flagged: Dict, stage: str = "fit"):
    """The checkpoint's own data module, set up for ``stage`` with training-only transforms off."""
    import hydra

    from nequip.utils.dtype import torch_default_dtype
    from nequip.utils.global_dtype import _GLOBAL_DTYPE

    with torch_default_dtype(_GLOBAL_DTYPE):
        datamodule = hydra.utils.instantiate(copy.deepcopy(flagged["hyper_parameters"]["info_dict"]["data"]), _recursive_=False)
        datamodule.prepare_data()
        datamodule.setup(stage=stage)
        try:
            with datamodule._unaugmented() if hasattr(datamodule, "_unaugmented") else contextlib.nullcontext():
                yield datamodule
        finally:
            datamodule.teardown(stage=stage)


def fit_checkpoint(checkpoint_path: Path, out_path: Path) -> Dict:
    """Fit the uncertainty of the model in ``checkpoint_path``; write ``out_path``. Returns the fit."""
    flagged, lightning_module, model, missing = load_for_fit(checkpoint_path)
    module = _uncertainty_module(model)
    with run_datamodule(flagged) as datamodule:
        train_f, _, _ = structure_features(model, datamodule.train_dataloader())
        val_f, val_pred, val_ref = structure_features(model, datamodule.val_dataloader()[0])

    fit = fit_last_layer(train_f, val_f, val_pred - val_ref)
    module.inverse_covariance.copy_(torch.as_tensor(fit["inverse_covariance"]))
    module.variance_scale.fill_(fit["variance_scale"])
    state = lightning_module.state_dict()
    flagged["state_dict"].update({key: state[key].clone() for key in missing})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(flagged, out_path)
    from scipy.stats import spearmanr

    sigma = np.sqrt(fit["variance_scale"] * np.einsum("vi,ij,vj->v", val_f, fit["inverse_covariance"], val_f))
    abs_errors = np.abs(val_pred - val_ref)
    # the rank correlation is a summary for the user; the fit itself is chosen on the likelihood
    fit.update(train_frames=len(train_f), val_frames=len(val_f), num_features=train_f.shape[1],
               val_spearman=float(spearmanr(sigma, abs_errors).statistic),
               val_sigma_mean=float(sigma.mean()), val_abs_error_mean=float(abs_errors.mean()))
    return fit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Fit the last-layer energy uncertainty of a trained Flash-ACE model.")
    parser.add_argument("run", help="a run directory (its best.ckpt is read) or a checkpoint file")
    parser.add_argument("--out", help="checkpoint to write (default: <run directory>/uncertainty.ckpt)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    checkpoint = run / "best.ckpt" if run.is_dir() else run
    if not checkpoint.exists():
        print(f"nequip_flash_ace.uncertainty: no checkpoint at {checkpoint}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else checkpoint.parent / "uncertainty.ckpt"
    fit = fit_checkpoint(checkpoint, out)
    print(
        f"[flash-ace] last-layer uncertainty: {fit['num_features']} features, {fit['train_frames']} training and "
        f"{fit['val_frames']} validation structures; ς² = {fit['regulariser']:.3g}, α² = {fit['variance_scale']:.3g}; "
        f"validation: mean σ_E {1e3 * fit['val_sigma_mean']:.3g} meV, mean |error| {1e3 * fit['val_abs_error_mean']:.3g} meV, "
        f"rank correlation of σ_E with |error| {fit['val_spearman']:.2f}"
    )
    print(f"[flash-ace] wrote {out}  (nequip-compile {out} model.nequip.pt2 --mode aotinductor --device cpu --target ase_uncertainty)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
