"""The shallow-ensemble energy uncertainty (``ShallowEnsembleEnergy``,
``train.EnergyGaussianNLL``), in float64.

- one head is the plain model (same parameters, same energies);
- the energy is the mean of the heads and the forces are −∇ of it;
- σ against a direct numpy evaluation of the heads' spread, per atom and per structure,
  alone and in a batch;
- σ unchanged by rotating and translating the input;
- the NLL term (β-NLL, β = 1) against its formula, and it trains only the spread (no
  gradient through the error);
- the builder refuses the two uncertainties at once and fewer than one head.
"""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from nequip.data import AtomicDataDict

from helpers import build_model, make_data
from model_configs import BACKBONE_NU3, TYPE_NAMES
from nequip_flash_ace import _keys
from nequip_flash_ace.train import EnergyGaussianNLL

HEADS = 5
# two layers (the first one's linear readout is shared by every head), per-type scales and
# shifts, the ZBL pair term (shared too)
CONFIG = dict(BACKBONE_NU3, num_energy_heads=HEADS)
R_MAX = CONFIG["r_max"]
SCALES = np.array([CONFIG["per_type_energy_scales"][t] for t in TYPE_NAMES])
SHIFTS = np.array([CONFIG["per_type_energy_shifts"][t] for t in TYPE_NAMES])


def _structure(seed=0, n=7):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.0, 3.2, size=(n, 3)) + np.arange(n)[:, None] * np.array([0.45, 0.0, 0.0])
    return pos, rng.integers(0, len(TYPE_NAMES), size=n)


def _model(variance_scale=0.37):
    model = build_model(CONFIG)
    module = next(m for m in model.modules() if m.__class__.__name__ == "ShallowEnsembleEnergy")
    module.variance_scale.fill_(variance_scale)
    return model


def _run(model, pos, types):
    return model(make_data(pos, types, R_MAX))


def test_one_head_is_the_plain_model():
    plain = build_model(BACKBONE_NU3)
    one = build_model(dict(BACKBONE_NU3, num_energy_heads=1))
    assert plain.state_dict().keys() == one.state_dict().keys()
    pos, types = _structure(1)
    a, b = _run(plain, pos, types), _run(one, pos, types)
    for key in (AtomicDataDict.TOTAL_ENERGY_KEY, AtomicDataDict.FORCE_KEY):
        assert torch.equal(a[key], b[key]), key
    assert _keys.TOTAL_ENERGY_UNCERTAINTY not in a


def test_energy_is_the_mean_of_the_heads_and_forces_its_gradient():
    model = _model()
    pos, types = _structure(2)
    out = _run(model, pos, types)
    heads = out[_keys.ATOMIC_ENERGY_HEADS].detach().numpy()
    assert heads.shape == (len(pos), HEADS)
    assert np.ptp(heads, axis=1).min() > 0  # the heads differ from the start
    # ZBL adds the same pair energy to every head's atoms: compare without it
    no_pair = build_model(dict(CONFIG, pair_potential=None))
    no_pair.load_state_dict(model.state_dict(), strict=False)
    bare = _run(no_pair, pos, types)
    np.testing.assert_allclose(bare[AtomicDataDict.TOTAL_ENERGY_KEY].item(), heads.mean(axis=1).sum(), rtol=1e-12)

    # forces = -dE/dx of the mean energy, by central differences
    forces = out[AtomicDataDict.FORCE_KEY].detach().numpy()
    h = 1e-5
    for atom, axis in ((0, 0), (3, 2), (6, 1)):
        energies = []
        for sign in (1, -1):
            moved = pos.copy()
            moved[atom, axis] += sign * h
            energies.append(_run(model, moved, types)[AtomicDataDict.TOTAL_ENERGY_KEY].item())
        np.testing.assert_allclose(forces[atom, axis], -(energies[0] - energies[1]) / (2 * h), rtol=1e-6, atol=1e-8)


def test_sigma_matches_direct_numpy():
    model = _model(0.37)
    pos, types = _structure(3)
    out = _run(model, pos, types)
    # the scaled and shifted heads the module leaves in the data (the scaling is checked below)
    heads = out[_keys.ATOMIC_ENERGY_HEADS].detach().numpy()
    per_atom = np.sqrt(0.37 * heads.var(axis=1, ddof=1))
    np.testing.assert_allclose(out[_keys.ATOMIC_ENERGY_UNCERTAINTY].detach().numpy().ravel(), per_atom, rtol=1e-12)
    total = np.sqrt(0.37 * heads.sum(axis=0).var(ddof=1))
    np.testing.assert_allclose(out[_keys.TOTAL_ENERGY_UNCERTAINTY].item(), total, rtol=1e-12)
    assert out[_keys.TOTAL_ENERGY_UNCERTAINTY].shape == (1, 1)


def test_heads_carry_the_per_type_scale_and_shift():
    model = _model()
    ensemble = next(m for m in model.modules() if m.__class__.__name__ == "ShallowEnsembleEnergy")
    raw = {}
    ensemble.register_forward_pre_hook(lambda module, args: raw.update(heads=args[0][_keys.ATOMIC_ENERGY_HEADS].detach().clone()))
    pos, types = _structure(4)
    out = _run(model, pos, types)
    heads = out[_keys.ATOMIC_ENERGY_HEADS].detach().numpy()
    expected = SHIFTS[types][:, None] + SCALES[types][:, None] * raw["heads"].numpy()
    np.testing.assert_allclose(heads, expected, rtol=1e-12)


def test_sigma_matches_in_a_batch():
    model = _model()
    frames = [make_data(*_structure(seed), R_MAX) for seed in (5, 6)]
    batched = model(AtomicDataDict.batched_from_list(frames))
    single = [model(frame) for frame in frames]
    np.testing.assert_allclose(
        batched[_keys.TOTAL_ENERGY_UNCERTAINTY].detach().numpy().ravel(),
        [s[_keys.TOTAL_ENERGY_UNCERTAINTY].item() for s in single],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        batched[_keys.ATOMIC_ENERGY_UNCERTAINTY].detach().numpy().ravel(),
        np.concatenate([s[_keys.ATOMIC_ENERGY_UNCERTAINTY].detach().numpy().ravel() for s in single]),
        rtol=1e-12,
    )


def test_sigma_invariant_under_rotation_and_translation():
    model = _model()
    pos, types = _structure(7)
    moved = pos @ Rotation.random(random_state=0).as_matrix().T + np.array([3.1, -7.4, 12.0])
    a, b = _run(model, pos, types), _run(model, moved, types)
    for key in (_keys.TOTAL_ENERGY_UNCERTAINTY, _keys.ATOMIC_ENERGY_UNCERTAINTY):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-10)
    assert a[_keys.TOTAL_ENERGY_UNCERTAINTY].item() > 0


def test_nll_matches_its_formula_and_trains_only_the_spread():
    energy = torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([[0.3], [0.1], [0.8]], dtype=torch.float64, requires_grad=True)
    reference = torch.tensor([[1.2], [-2.05], [0.1]], dtype=torch.float64)
    num_atoms = torch.tensor([4, 2, 8])
    preds = {
        AtomicDataDict.TOTAL_ENERGY_KEY: energy,
        _keys.TOTAL_ENERGY_UNCERTAINTY: sigma,
        AtomicDataDict.NUM_NODES_KEY: num_atoms,
    }
    target = {AtomicDataDict.TOTAL_ENERGY_KEY: reference}
    nll = EnergyGaussianNLL()(preds, target)
    e = ((energy - reference) / num_atoms.view(-1, 1)).detach().numpy().ravel()
    v = ((sigma / num_atoms.view(-1, 1)) ** 2).detach().numpy().ravel()
    # β-NLL, β = 1: each structure's NLL weighted by its own variance
    np.testing.assert_allclose(nll.item(), np.mean(v * 0.5 * (e**2 / v + np.log(v))), rtol=1e-12)
    nll.backward()
    assert energy.grad is None or torch.all(energy.grad == 0)
    # v · d/dσ of ½(e²/(σ/N)² + ln (σ/N)²), averaged over the 3 structures: zero at σ/N = |e|
    s = sigma.detach().numpy().ravel()
    n = num_atoms.numpy()
    expected = v * (-(e**2) * n**2 / s**3 + 1 / s) / 3
    np.testing.assert_allclose(sigma.grad.numpy().ravel(), expected, rtol=1e-10)


def test_nll_refuses_a_model_without_heads():
    preds = {AtomicDataDict.TOTAL_ENERGY_KEY: torch.zeros(1, 1), AtomicDataDict.NUM_NODES_KEY: torch.tensor([2])}
    with pytest.raises(KeyError, match="num_energy_heads"):
        EnergyGaussianNLL()(preds, {AtomicDataDict.TOTAL_ENERGY_KEY: torch.zeros(1, 1)})


@pytest.mark.parametrize(
    "knobs, match",
    [
        (dict(num_energy_heads=0), "`num_energy_heads` must be >= 1"),
        (dict(num_energy_heads=4, last_layer_uncertainty=True), "choose one"),
    ],
)
def test_builder_refuses(knobs, match):
    with pytest.raises(ValueError, match=match):
        build_model(dict(BACKBONE_NU3, **knobs))


@pytest.mark.slow
def test_trained_ensemble_calibrated_eager_and_compiled_agree(tmp_path, data_subset, monkeypatch):
    """``nequip-train ... +uncertainty=ensemble`` (float64, one epoch), then ``python -m
    nequip_flash_ace.uncertainty RUN`` calibrates σ on validation (the mean of (ΔE/σ)² there
    is 1); the checkpoint it writes, eager and compiled (``--target ase_uncertainty``),
    gives the same energies, forces and σ."""
    from ase.io import read

    from nequip_flash_ace.integrations.ase import FlashACEUncertaintyCalculator
    from workflow_utils import nequip_compile, nequip_train, python_module

    run_dir = tmp_path / "run_ensemble_f64"
    nequip_train(run_dir, data_subset, "max_epochs=1", "model_dtype=float64", "num_features=8", "+uncertainty=ensemble")
    proc = python_module("nequip_flash_ace.uncertainty", str(run_dir), cwd=tmp_path)
    assert "shallow-ensemble uncertainty: 8 heads" in proc.stdout, proc.stdout + proc.stderr
    checkpoint = run_dir / "uncertainty.ckpt"
    compiled = run_dir / "model_sigma.nequip.pt2"
    monkeypatch.setenv("NEQUIP_FLOAT64_MODEL_TOL", "1e-10")
    nequip_compile(checkpoint, compiled, "ase_uncertainty")

    eager = FlashACEUncertaintyCalculator._from_saved_model(str(checkpoint), chemical_species_to_atom_type_map=True)
    aoti = FlashACEUncertaintyCalculator.from_compiled_model(str(compiled), chemical_species_to_atom_type_map=True)
    for atoms in read(data_subset / "test.xyz", index=":3"):
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

    # calibrated on the validation split: mean (ΔE/σ)² = 1 there
    ratios = []
    for atoms in read(data_subset / "val.xyz", index=":"):
        reference = atoms.get_potential_energy()
        atoms = atoms.copy()
        atoms.calc = eager
        ratios.append(((atoms.get_potential_energy() - reference) / eager.results["energy_uncertainty"]) ** 2)
    np.testing.assert_allclose(np.mean(ratios), 1.0, rtol=1e-8)
