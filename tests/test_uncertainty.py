"""The last-layer energy uncertainty (``nn/uncertainty.py``, ``python -m
nequip_flash_ace.uncertainty``, ``FlashACEUncertaintyCalculator``), in float64.

- the features it reads are the inputs of the readout's last linear maps: the site energy
  is exactly ``shift + scale · w · g``;
- switching it on changes no energy or force;
- σ against a direct numpy evaluation of ``α² Fᵀ Σ⁻¹ F`` and ``α² f_iᵀ Σ⁻¹ f_i``;
- σ unchanged by rotating and translating the input;
- the calibration against a brute-force numpy search of the same criterion;
- the command on a trained float64 model, eager from its checkpoint and compiled with
  ``--target ase_uncertainty``: the same σ to 1e-10.
"""

import numpy as np
import pytest
import torch
from ase.io import read
from scipy.spatial.transform import Rotation

from nequip.data import AtomicDataDict

from helpers import build_model, make_data
from model_configs import BACKBONE_NU3, TYPE_NAMES
from nequip_flash_ace import _keys
from nequip_flash_ace.uncertainty import REGULARISER_GRID, fit_last_layer
from workflow_utils import DATA_DIR, nequip_compile, python_module

# two layers (features of both readouts), per-type scales; no pair potential, whose energy
# is not the readout's
CONFIG = dict({k: v for k, v in BACKBONE_NU3.items() if k != "pair_potential"}, last_layer_uncertainty=True)
R_MAX = CONFIG["r_max"]


def _structure(seed=0, n=7):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.0, 3.2, size=(n, 3)) + np.arange(n)[:, None] * np.array([0.45, 0.0, 0.0])
    return pos, rng.integers(0, len(TYPE_NAMES), size=n)


def _fitted_model(seed=0):
    """The model with random, symmetric positive-definite Σ⁻¹ and α² (as if fitted)."""
    model = build_model(CONFIG)
    module = next(m for m in model.modules() if m.__class__.__name__ == "LastLayerUncertainty")
    rng = np.random.default_rng(seed)
    d = module.inverse_covariance.shape[0]
    a = rng.normal(size=(d, d))
    module.inverse_covariance.copy_(torch.as_tensor(a @ a.T / d + 0.1 * np.eye(d)))
    module.variance_scale.fill_(0.37)
    module.type_scales.copy_(torch.tensor([1.0, 1.2, 0.9], dtype=torch.float64))  # BASE's per-type scales
    return model, module


def _run(model, pos, types):
    return model(make_data(pos, types, R_MAX))


def test_readout_features_are_what_the_last_linear_maps_read():
    model, _ = _fitted_model()
    pos, types = _structure()
    out = _run(model, pos, types)
    features = out[_keys.READOUT_FEATURES].detach()
    layers = [m for m in model.modules() if m.__class__.__name__ == "FlashACELayer"]
    assert features.shape == (len(pos), sum(layer.readout_feature_dim for layer in layers))
    # w of each layer's last linear map, times its weight normalisation
    w = []
    for layer in layers:
        last = layer.readout.mlp[-1]
        w.append((last.weight * last.alpha).detach().view(-1))
    site = features @ torch.cat(w)
    scales = torch.tensor([CONFIG["per_type_energy_scales"][t] for t in TYPE_NAMES], dtype=torch.float64)
    shifts = torch.tensor([CONFIG["per_type_energy_shifts"][t] for t in TYPE_NAMES], dtype=torch.float64)
    t = torch.as_tensor(types)
    expected = shifts[t] + scales[t] * site
    torch.testing.assert_close(out[AtomicDataDict.PER_ATOM_ENERGY_KEY].detach().view(-1), expected, rtol=0, atol=1e-12)


def test_uncertainty_changes_no_energy_or_force():
    with_sigma, _ = _fitted_model()
    without = build_model(dict(CONFIG, last_layer_uncertainty=False))
    pos, types = _structure(1)
    a, b = _run(with_sigma, pos, types), _run(without, pos, types)
    for key in (AtomicDataDict.TOTAL_ENERGY_KEY, AtomicDataDict.PER_ATOM_ENERGY_KEY, AtomicDataDict.FORCE_KEY):
        assert torch.equal(a[key], b[key]), key


def test_sigma_matches_direct_numpy():
    model, module = _fitted_model()
    pos, types = _structure(2)
    out = _run(model, pos, types)
    g = out[_keys.READOUT_FEATURES].detach().numpy()
    f = g * np.array([1.0, 1.2, 0.9])[types][:, None]
    inv = module.inverse_covariance.numpy()
    total = f.sum(axis=0)
    np.testing.assert_allclose(out[_keys.TOTAL_ENERGY_UNCERTAINTY].item(), np.sqrt(0.37 * total @ inv @ total), rtol=1e-12)
    per_atom = np.sqrt(0.37 * np.einsum("ai,ij,aj->a", f, inv, f))
    np.testing.assert_allclose(out[_keys.ATOMIC_ENERGY_UNCERTAINTY].detach().numpy().ravel(), per_atom, rtol=1e-12)
    assert out[_keys.TOTAL_ENERGY_UNCERTAINTY].shape == (1, 1)


def test_sigma_matches_in_a_batch():
    from nequip.data import AtomicDataDict as ADD

    model, _ = _fitted_model()
    frames = [make_data(*_structure(seed), R_MAX) for seed in (3, 4)]
    batched = model(ADD.batched_from_list(frames))
    single = [model(frame)[_keys.TOTAL_ENERGY_UNCERTAINTY].item() for frame in frames]
    np.testing.assert_allclose(batched[_keys.TOTAL_ENERGY_UNCERTAINTY].detach().numpy().ravel(), single, rtol=1e-12)


def test_sigma_invariant_under_rotation_and_translation():
    model, _ = _fitted_model()
    pos, types = _structure(5)
    moved = pos @ Rotation.random(random_state=0).as_matrix().T + np.array([3.1, -7.4, 12.0])
    a, b = _run(model, pos, types), _run(model, moved, types)
    for key in (_keys.TOTAL_ENERGY_UNCERTAINTY, _keys.ATOMIC_ENERGY_UNCERTAINTY):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-10)
    assert a[_keys.TOTAL_ENERGY_UNCERTAINTY].item() > 0


def test_calibration_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 6)) @ np.diag([3.0, 1.0, 0.5, 0.1, 0.01, 0.001])
    val = rng.normal(size=(40, 6)) * 1.5
    errors = rng.normal(size=40) * 0.01
    fit = fit_last_layer(train, val, errors)

    gram = train.T @ train
    scale = np.trace(gram) / 6
    nll = []
    for relative in REGULARISER_GRID:
        inv = np.linalg.inv(gram + relative * scale * np.eye(6))
        s = np.array([v @ inv @ v for v in val])
        a2 = np.mean(errors**2 / s)
        nll.append((np.mean(np.log(a2 * s) + errors**2 / (a2 * s)), inv, a2, relative * scale))
    best = min(nll, key=lambda x: x[0])
    np.testing.assert_allclose(fit["nll"], best[0], rtol=1e-10)
    np.testing.assert_allclose(fit["inverse_covariance"], best[1], rtol=1e-10)
    np.testing.assert_allclose(fit["variance_scale"], best[2], rtol=1e-10)
    np.testing.assert_allclose(fit["regulariser"], best[3], rtol=1e-12)
    # calibrated: the mean of (error / σ)² on the validation set is 1 by construction
    s = np.einsum("vi,ij,vj->v", val, fit["inverse_covariance"], val)
    np.testing.assert_allclose(np.mean(errors**2 / (fit["variance_scale"] * s)), 1.0, rtol=1e-10)


@pytest.mark.slow
def test_fit_command_eager_and_compiled_agree(run_local_f64, monkeypatch):
    """``python -m nequip_flash_ace.uncertainty RUN`` on a trained float64 model; the
    checkpoint it writes, eager and compiled (``--target ase_uncertainty``), gives the same
    energies, forces and σ; the model without σ is refused with a one-line hint."""
    from nequip_flash_ace.integrations.ase import FlashACEUncertaintyCalculator

    run_dir = run_local_f64
    proc = python_module("nequip_flash_ace.uncertainty", str(run_dir), cwd=run_dir.parent)
    assert "last-layer uncertainty" in proc.stdout, proc.stdout + proc.stderr
    checkpoint = run_dir / "uncertainty.ckpt"
    compiled = run_dir / "model_sigma.nequip.pt2"
    # nequip-compile's own eager-vs-compiled check, at the agreement asked of σ here
    monkeypatch.setenv("NEQUIP_FLOAT64_MODEL_TOL", "1e-10")
    nequip_compile(checkpoint, compiled, "ase_uncertainty")

    eager = FlashACEUncertaintyCalculator._from_saved_model(str(checkpoint), chemical_species_to_atom_type_map=True)
    aoti = FlashACEUncertaintyCalculator.from_compiled_model(str(compiled), chemical_species_to_atom_type_map=True)
    frames = read(DATA_DIR / "test.xyz", index=":3")
    for atoms in frames:
        results = []
        for calc in (eager, aoti):
            atoms = atoms.copy()
            atoms.calc = calc
            atoms.get_potential_energy()
            results.append(dict(calc.results))
        a, b = results
        assert a["energy_uncertainty"] > 0
        np.testing.assert_allclose(a["energy_uncertainty"], b["energy_uncertainty"], rtol=0, atol=1e-10)
        np.testing.assert_allclose(a["energies_uncertainty"], b["energies_uncertainty"], rtol=0, atol=1e-10)
        np.testing.assert_allclose(a["energy"], b["energy"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(a["forces"], b["forces"], rtol=0, atol=1e-9)

    plain = FlashACEUncertaintyCalculator._from_saved_model(str(run_dir / "best.ckpt"), chemical_species_to_atom_type_map=True)
    atoms = frames[0].copy()
    atoms.calc = plain
    with pytest.raises(ValueError, match=r"python -m nequip_flash_ace.uncertainty"):
        atoms.get_potential_energy()
