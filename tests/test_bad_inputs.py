"""Never silently wrong: structures no model can describe stop with one line naming the
atoms — in the eager model, through the ASE calculator on a checkpoint, and through
``FlashACECalculator`` on an AOTInductor-compiled model (which can only answer NaN) —
while legitimate edge cases (isolated atom, dimer beyond the cutoff, a frame far from
the origin) give the right numbers. One test per row of the bad-inputs issue's table."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read

from nequip.data import AtomicDataDict
from nequip.integrations.ase import NequIPCalculator

from helpers import build_model, energy_and_forces, make_data
from model_configs import ATTENTION_NU2, BACKBONE_NU3, TYPE_NAMES
from nequip_flash_ace.integrations.ase import FlashACECalculator, describe_bad_geometry
from nequip_flash_ace.nn import InputGeometryCheck
from workflow_utils import DATA_DIR

R_MAX = BACKBONE_NU3["r_max"]
SHIFTS = BACKBONE_NU3["per_type_energy_shifts"]


def _cluster():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 3.0, size=(6, 3))
    # keep every pair apart by > 0.5 Å so the good structure is good
    pos += np.arange(6)[:, None] * np.array([0.8, 0.0, 0.0])
    return pos, [0, 1, 2, 0, 1, 2]


def _bad(kind):
    pos, types = _cluster()
    if kind == "nan":
        pos[2] = [np.nan, 0.0, 1.0]
    elif kind == "same_site":
        pos[4] = pos[1]
    elif kind == "close":
        pos[4] = pos[1] + [1e-4, 0.0, 0.0]
    return pos, types


@pytest.fixture(params=[BACKBONE_NU3, ATTENTION_NU2], ids=["backbone", "attention"])
def model(request):
    return build_model(request.param, "float64")


@pytest.mark.parametrize(
    "kind,message",
    [
        ("nan", r"Flash-ACE input: atom\(s\) \[2\] have a non-finite position"),
        ("same_site", r"Flash-ACE input: atoms [14] and [14] are 0 Å apart, closer than min_atom_distance = 0.1 Å"),
        ("close", r"Flash-ACE input: atoms [14] and [14] are 0.0001 Å apart, closer than min_atom_distance = 0.1 Å"),
    ],
)
def test_eager_model_refuses_and_names_the_atoms(model, kind, message):
    pos, types = _bad(kind)
    with pytest.raises(ValueError, match=message):
        energy_and_forces(model, make_data(pos, types, R_MAX))


def test_non_finite_cell_is_refused(model):
    pos, types = _cluster()
    data = make_data(pos, types, R_MAX, cell=np.eye(3) * 12.0, pbc=[True] * 3)
    data[AtomicDataDict.CELL_KEY] = data[AtomicDataDict.CELL_KEY].clone()
    data[AtomicDataDict.CELL_KEY][0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="Flash-ACE input: the cell is not finite"):
        energy_and_forces(model, data)


def test_distance_threshold_is_a_keyword(model):
    pos, types = _bad("close")
    loose = build_model(dict(BACKBONE_NU3, min_atom_distance=0.0), "float64")
    energy, _, _ = energy_and_forces(loose, make_data(pos, types, R_MAX))
    assert torch.isfinite(energy)  # switched off: the user asked for it
    with pytest.raises(ValueError, match="min_atom_distance"):
        build_model(dict(BACKBONE_NU3, min_atom_distance=-1.0), "float64")
    with pytest.raises(ValueError, match="min_atom_distance"):
        InputGeometryCheck(min_distance=float("nan"))


@pytest.fixture
def compiled_branch(monkeypatch):
    """The branch a traced graph (nequip-compile, torch.compile) takes, run eagerly."""
    import nequip_flash_ace.nn.geometry_check as geometry_check

    monkeypatch.setattr(geometry_check, "_traced", lambda: True)


def test_good_structures_are_unchanged_by_the_check(model, monkeypatch):
    """On a good structure the check adds exactly nothing, eager or in the compiled form."""
    import nequip_flash_ace.nn.geometry_check as geometry_check

    pos, types = _cluster()
    e, f, _ = energy_and_forces(model, make_data(pos, types, R_MAX))
    monkeypatch.setattr(geometry_check, "_traced", lambda: True)
    e2, f2, _ = energy_and_forces(model, make_data(pos, types, R_MAX))
    assert e2 == e and torch.equal(f2, f)


@pytest.mark.parametrize("kind", ["nan", "same_site", "close"])
def test_compiled_form_answers_nan_energy_and_forces(model, compiled_branch, kind):
    """What nequip-compile traces cannot raise a message: energy and forces are NaN."""
    pos, types = _bad(kind)
    e, f, _ = energy_and_forces(model, make_data(pos, types, R_MAX))
    assert torch.isnan(e) and torch.isnan(f).all()


def test_isolated_atom_far_dimer_and_shifted_frame_are_right(model):
    for t, name in enumerate(TYPE_NAMES):
        e, f, _ = energy_and_forces(model, make_data([[0.0, 0.0, 0.0]], [t], R_MAX))
        assert e.item() == pytest.approx(SHIFTS[name], abs=1e-12) and f.abs().max() == 0
    e, f, _ = energy_and_forces(model, make_data([[0.0, 0.0, 0.0], [0.0, 0.0, R_MAX + 0.01]], [0, 2], R_MAX))
    assert e.item() == pytest.approx(SHIFTS["H"] + SHIFTS["O"], abs=1e-12) and f.abs().max() == 0
    pos, types = _cluster()
    e0, f0, _ = energy_and_forces(model, make_data(pos, types, R_MAX))
    e1, f1, _ = energy_and_forces(model, make_data(pos + 1000.0, types, R_MAX))
    assert abs(e1 - e0) < 1e-9 and (f1 - f0).abs().max() < 1e-9


def test_describe_bad_geometry_names_the_atoms():
    atoms = Atoms("H3", positions=[[0, 0, 0], [2, 0, 0], [4, 0, 0]])
    assert describe_bad_geometry(atoms) == ""
    atoms.positions[1] = [0, 0, 0]
    assert describe_bad_geometry(atoms) == "atoms [0, 1] sit on the same site"
    atoms.positions[1] = [0.05, 0, 0]
    assert describe_bad_geometry(atoms) == "atoms 0 and 1 are 0.05 Å apart, closer than 0.1 Å"
    atoms.positions[2] = [np.nan, 0, 0]
    assert describe_bad_geometry(atoms).startswith("atom(s) [2] have a non-finite position")
    periodic = Atoms("H2", positions=[[0, 0, 0], [9.95, 0, 0]], cell=np.eye(3) * 10, pbc=True)
    assert describe_bad_geometry(periodic).startswith("atoms 0 and 1 are 0.05 Å apart")  # minimum image


# ---------------------------------------------------------------- through ASE (trained models)
def _frame_with(kind):
    atoms = read(DATA_DIR / "test.xyz", index="0")
    if kind == "nan":
        atoms.positions[3] = [np.nan, 0.0, 0.0]
    elif kind == "same_site":
        atoms.positions[5] = atoms.positions[3]
    elif kind == "close":
        atoms.positions[5] = atoms.positions[3] + [1e-4, 0.0, 0.0]
    elif kind == "unknown_element":
        atoms.symbols[3] = "Fe"
    return atoms


ASE_MESSAGES = {
    "nan": r"Flash-ACE input: atom\(s\) \[3\] have a non-finite position",
    "same_site": r"Flash-ACE input: atoms \[3, 5\] sit on the same site|atoms [35] and [35] are 0 Å apart",
    "close": r"Flash-ACE input: atoms [35] and [35] are 0.0001 Å apart",
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nan", "same_site", "close"])
def test_ase_calculator_on_a_checkpoint_refuses(run_attention_f64, kind):
    run_dir, _ = run_attention_f64
    calc = NequIPCalculator._from_saved_model(run_dir / "best.ckpt", device="cpu", chemical_species_to_atom_type_map=True)
    atoms = _frame_with(kind)
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"Flash-ACE input: .*(\[3\]|[35] and [35])"):
        atoms.get_potential_energy()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nan", "same_site", "close"])
def test_compiled_model_through_flash_ace_calculator_refuses(ase_artifact, kind):
    _, compiled = ase_artifact
    atoms = _frame_with(kind)
    atoms.calc = FlashACECalculator.from_compiled_model(compiled, device="cpu", chemical_species_to_atom_type_map=True)
    with pytest.raises(ValueError, match=ASE_MESSAGES[kind]):
        atoms.get_potential_energy()
    # the host's own calculator gets NaN from the compiled model, never a finite wrong energy
    atoms.calc = NequIPCalculator.from_compiled_model(compiled, device="cpu", chemical_species_to_atom_type_map=True)
    assert np.isnan(atoms.get_potential_energy()) and np.isnan(atoms.get_forces()).all()


@pytest.mark.slow
def test_compiled_model_on_a_good_frame_is_unchanged_by_the_calculator(ase_artifact):
    run_dir, compiled = ase_artifact
    atoms = _frame_with("good")
    atoms.calc = FlashACECalculator.from_compiled_model(compiled, device="cpu", chemical_species_to_atom_type_map=True)
    energy = atoms.get_potential_energy()
    reference = atoms.copy()
    reference.calc = NequIPCalculator._from_saved_model(run_dir / "best.ckpt", device="cpu", chemical_species_to_atom_type_map=True)
    assert abs(energy - reference.get_potential_energy()) < 1e-9


@pytest.mark.slow
def test_unknown_element_is_the_hosts_key_error(run_attention_f64):
    run_dir, _ = run_attention_f64
    atoms = _frame_with("unknown_element")
    atoms.calc = NequIPCalculator._from_saved_model(run_dir / "best.ckpt", device="cpu", chemical_species_to_atom_type_map=True)
    with pytest.raises(KeyError, match="chemical species that was not specified"):
        atoms.get_potential_energy()


def test_the_check_is_traceable_by_make_fx(model):
    """nequip-compile traces with make_fx (symbolic, data-dependent ops are errors): the
    check must take its branch-free form there, and the traced graph still answers NaN."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from nequip_flash_ace.nn import geometry_check

    calls = []
    original = geometry_check._traced
    pos, types = _cluster()
    data = make_data(pos, types, R_MAX)
    check = InputGeometryCheck(0.1)

    def run(energy, lengths, positions):
        calls.append(original())
        out = check({AtomicDataDict.PER_ATOM_ENERGY_KEY: energy, AtomicDataDict.EDGE_LENGTH_KEY: lengths,
                     AtomicDataDict.POSITIONS_KEY: positions, AtomicDataDict.EDGE_INDEX_KEY: data[AtomicDataDict.EDGE_INDEX_KEY]})
        return out[AtomicDataDict.PER_ATOM_ENERGY_KEY]

    lengths = torch.rand(10, 1, dtype=torch.float64) + 1.0
    energy = torch.zeros(6, 1, dtype=torch.float64)
    graph = make_fx(run, tracing_mode="symbolic", _error_on_data_dependent_ops=True)(energy, lengths, data["pos"])
    assert calls == [True]
    assert torch.equal(graph(energy, lengths, data["pos"]), energy)
    short = lengths.clone()
    short[3] = 0.01
    assert torch.isnan(graph(energy, short, data["pos"])).all()
