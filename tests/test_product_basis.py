"""The sparse product basis equals the dense reference; old checkpoints still load.

``dense_product_basis.DenseProductBasis`` is the previous evaluation (full coupling
tensors contracted per atom). The package's ``ProductBasis`` must give the same
values, first and second derivatives w.r.t. the atomic basis ``A`` and the species
weights ``W``, in float64, for both species steps.
"""

import itertools
from pathlib import Path

import pytest
import torch
from e3nn import o3

from nequip.data import AtomicDataDict

from dense_product_basis import DenseProductBasis
from helpers import build_model, make_data
from nequip_flash_ace.nn import ProductBasis
from nequip_flash_ace.nn.coupling import count_symmetric_couplings, sorted_tuple_couplings

CANDIDATE_IRREPS = ["0e", "0o", "1o", "1e", "2e", "2o", "3o", "3e"]
CASES = [(l_max, nu) for l_max in (0, 1, 2) for nu in (1, 2, 3, 4)] + [(3, nu) for nu in (1, 2, 3)]
REL_TOL = 1e-12


def _reachable_irreps(l_max, nu):
    """Every candidate irrep some order ``<= nu`` reaches (including odd-order-only ones)."""
    out = []
    for name in CANDIDATE_IRREPS:
        ir = o3.Irrep(name)
        if any(count_symmetric_couplings(l_max, k, ir.l, ir.p) for k in range(1, nu + 1)):
            out.append(name)
    return out


def _rel_err(x, ref):
    return ((x - ref).abs().max() / ref.abs().max().clamp(min=1e-300)).item()


def _values_and_derivatives(module, a, types, r_out, r_a, r_w):
    """Output, d<r_out, B>/d(A, W) and d<d<r_out,B>/d(A,W), (r_a, r_w)>/d(A, W)."""
    params = [module.weights[name] for name in sorted(module.weights.keys())]
    out = module(a, types)
    first = torch.autograd.grad((out * r_out).sum(), [a] + params, create_graph=True)
    probe = (first[0] * r_a).sum() + sum((g * r).sum() for g, r in zip(first[1:], r_w))
    second = torch.autograd.grad(probe, [a] + params)
    return out, first, second


@pytest.mark.parametrize("num_types", [1, 3])
@pytest.mark.parametrize("l_max,nu", CASES)
def test_sparse_product_basis_equals_dense_reference(l_max, nu, num_types):
    torch.manual_seed(l_max * 10 + nu)
    c = 3
    names = _reachable_irreps(l_max, nu)
    irreps_out = "+".join(f"{c}x{n}" for n in names)
    dense = DenseProductBasis(c, l_max, irreps_out, nu, num_types).double()
    for contraction in ("couplings", "atoms"):
        sparse = ProductBasis(c, l_max, irreps_out, nu, num_types, species_contraction=contraction).double()
        sparse.load_state_dict(dense.state_dict(), strict=True)  # dense keys are accepted
        num_atoms = 7
        a = torch.randn(num_atoms, sparse.irreps_in.dim, dtype=torch.float64, requires_grad=True)
        types = torch.randint(0, num_types, (num_atoms,))
        r_out = torch.randn(num_atoms, sparse.irreps_out.dim, dtype=torch.float64)
        r_a = torch.randn_like(a)
        r_w = [torch.randn_like(sparse.weights[n]) for n in sorted(sparse.weights.keys())]
        got = _values_and_derivatives(sparse, a, types, r_out, r_a, r_w)
        ref = _values_and_derivatives(dense, a, types, r_out, r_a, r_w)
        assert _rel_err(got[0], ref[0]) < REL_TOL, (contraction, "values")
        for what, g_list, r_list in (("first", got[1], ref[1]), ("second", got[2], ref[2])):
            for i, (g, r) in enumerate(zip(g_list, r_list)):
                assert _rel_err(g, r) < REL_TOL, (contraction, what, "A" if i == 0 else f"W{i - 1}")


def test_sorted_tuples_fold_multiplicities():
    """C_t = (number of distinct orderings of t) x U_t for the symmetric couplings."""
    from nequip_flash_ace.nn import symmetric_coupling_basis

    u = symmetric_coupling_basis(2, 3, 1, -1)
    tuples, coeffs = sorted_tuple_couplings(2, 3, 1, -1)
    for t, row in zip(tuples, coeffs):
        mult = len(set(itertools.permutations(t)))
        assert torch.allclose(row, mult * u[t], atol=1e-14)
    # every tuple that was dropped has only rounding-level couplings
    kept = set(tuples)
    for t in itertools.combinations_with_replacement(range(9), 3):
        if t not in kept:
            assert u[t].abs().max() < 1e-12


def test_species_step_chosen_by_operation_count():
    one = ProductBasis(8, 2, "8x0e+8x1o", 3, num_types=1)
    many = ProductBasis(8, 2, "8x0e+8x1o", 3, num_types=40)
    assert one.species_contraction == "couplings"
    assert many.species_contraction == "atoms"
    for pb in (one, many):
        costs = pb.macs_per_atom_channel
        assert costs[pb.species_contraction] == min(costs.values())
    with pytest.raises(ValueError, match="species_contraction"):
        ProductBasis(8, 2, "8x0e", 3, num_types=1, species_contraction="dense")


def test_state_dict_holds_weights_and_the_coupling_fingerprint():
    pb = ProductBasis(4, 2, "4x0e+4x1o", 3, num_types=2)
    assert all(key.startswith("weights.") or key == "coupling_fingerprint" for key in pb.state_dict())
    assert pb.coupling_fingerprint.shape == (2, 3, 2)  # (output irrep, order, checksum)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checkpoint_with_other_coupling_tables_is_refused(dtype):
    """The tables are rebuilt from the hyperparameters on load; a checkpoint whose saved
    fingerprint says it was trained with other tables fails with one message naming the
    irrep and order, instead of silently computing a different model."""
    pb = ProductBasis(3, 2, "3x0e+3x1o", 3, num_types=2).to(dtype)
    state = pb.state_dict()
    fresh = ProductBasis(3, 2, "3x0e+3x1o", 3, num_types=2).to(dtype)
    fresh.load_state_dict(state, strict=True)  # the same tables load (also after a float32 round trip)
    changed = dict(state)
    changed["coupling_fingerprint"] = state["coupling_fingerprint"].clone()
    changed["coupling_fingerprint"][1, 2, 1] += 0.05  # irrep 1o, order 3
    with pytest.raises(RuntimeError, match=r"coupling_fingerprint: irrep 1o order 3: this version builds other"):
        fresh.load_state_dict(changed)


def test_fingerprint_sees_a_reordered_or_resigned_table():
    from nequip_flash_ace.nn.coupling import coupling_checksum, sorted_tuple_couplings

    _, table = sorted_tuple_couplings(2, 2, 0, 1)
    base = coupling_checksum(table)
    assert not torch.allclose(coupling_checksum(table.flip(0)), base, atol=1e-3)
    resigned = table.clone()
    resigned[0] *= -1
    assert not torch.allclose(coupling_checksum(resigned), base, atol=1e-3)


def test_wrong_saved_couplings_are_refused():
    dense = DenseProductBasis(3, 2, "3x0e", 2, 1).double()
    state = dense.state_dict()
    state["coupling_0_2"] = state["coupling_0_2"] * 1.01
    sparse = ProductBasis(3, 2, "3x0e", 2, 1).double()
    with pytest.raises(RuntimeError, match="coupling_0_2"):
        sparse.load_state_dict(state)


def test_checkpoint_of_dense_version_reproduces_energies_and_forces():
    """A float64 model saved before the sparse evaluation loads and gives the same numbers."""
    saved = torch.load(Path(__file__).parent / "data" / "compat_nu3_attention.pt", weights_only=False)
    # saved when the builder's attention query defaulted to pair (its config does not name it)
    model = build_model(dict(saved["config"], attention_score_inputs=saved["config"].get("attention_score_inputs", "pair")), "float64")
    model.load_state_dict(saved["state_dict"], strict=True)
    for ref in saved["references"]:
        s = {k: v.numpy() for k, v in ref["structure"].items()}
        data = make_data(s["positions"], s["atom_types"], saved["config"]["r_max"], s.get("cell"), s.get("pbc"))
        out = model(data)
        energy = out[AtomicDataDict.TOTAL_ENERGY_KEY].detach()
        forces = out[AtomicDataDict.FORCE_KEY].detach()
        assert torch.allclose(energy, ref["energy"], rtol=0, atol=1e-10 * max(1.0, ref["energy"].abs().max().item()))
        assert (forces - ref["forces"]).abs().max() < 1e-10
