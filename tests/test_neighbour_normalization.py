"""What the atomic-basis sum is divided by: the constant average neighbour count, or each
atom's own smooth coordination ``1 + Σ_j f_c(r_ij)`` (``neighbour_normalization``)."""

import numpy as np
import pytest
import torch

from nequip.data import AtomicDataDict
from nequip_flash_ace.nn.layer import FlashACELayer

from helpers import build_model, make_data
from model_configs import ATTENTION_NU2


def _atomic_bases(model, data):
    """The normalised atomic basis ``A`` of every layer (input of ``linear_atomic_basis``)."""
    seen = []
    layers = [m for m in model.modules() if isinstance(m, FlashACELayer)]
    hooks = [m.linear_atomic_basis.register_forward_hook(lambda mod, args, out: seen.append(args[0])) for m in layers]
    out = model(AtomicDataDict.to_(dict(data), "cpu"))
    for h in hooks:
        h.remove()
    return seen, out


def _cluster(num_atoms=11, box=4.5, seed=0):
    rng = np.random.default_rng(seed)
    return make_data(rng.uniform(0, box, (num_atoms, 3)), rng.integers(0, 3, num_atoms), ATTENTION_NU2["r_max"])


@pytest.mark.parametrize("num_heads", [0, 2])
def test_coordination_divides_each_atoms_sum_by_its_smooth_coordination(num_heads):
    """A_i(coordination) · (1 + Σ_j f_c(r_ij)) = the unnormalised sum A_i(average, N_avg = 1),
    atom by atom, in the first layer (same parameters; float64)."""
    data = _cluster()
    common = dict(ATTENTION_NU2, num_heads=num_heads, avg_num_neighbors=1.0)
    plain = build_model(dict(common, neighbour_normalization="average"), "float64")
    local = build_model(dict(common, neighbour_normalization="coordination"), "float64")
    local.load_state_dict(plain.state_dict())
    (a_plain, *_), _ = _atomic_bases(plain, data)
    (a_local, *_), out = _atomic_bases(local, data)
    envelope = out[AtomicDataDict.EDGE_CUTOFF_KEY].reshape(-1)
    centre = out[AtomicDataDict.EDGE_INDEX_KEY][0]
    coordination = 1.0 + torch.zeros(a_plain.shape[0], dtype=torch.float64).index_add_(0, centre, envelope)
    assert coordination.max() > 3.0 and (envelope < 1).any()  # a real, partly decayed neighbourhood
    torch.testing.assert_close(a_local * coordination.unsqueeze(1), a_plain, atol=1e-12, rtol=0)
    assert a_plain.abs().max() > 1e-3


def test_coordination_keeps_the_atomic_basis_bounded_as_neighbours_pile_up():
    """Pile more and more neighbours around an atom: the unnormalised sum grows with their
    number; the coordination-normalised one, an f_c-weighted mean of the messages
    ``m_j = f_c(r_j) M_j``, stays below ``max_j |M_j|`` whatever their number."""
    config = dict(ATTENTION_NU2, num_heads=0, avg_num_neighbors=1.0, num_layers=1, feature_l_max=0)
    plain = build_model(dict(config, neighbour_normalization="average"), "float64")
    local = build_model(dict(config, neighbour_normalization="coordination"), "float64")
    local.load_state_dict(plain.state_dict())
    rng = np.random.default_rng(1)
    # neighbours of one type on a shell at 1.5-3.9 Å around atom 0 (r_max 4)
    directions = rng.normal(size=(48, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    shell = directions * rng.uniform(1.5, 3.9, (48, 1))

    def centre_basis(model, k):
        data = make_data(np.vstack([[0.0, 0.0, 0.0], shell[:k]]), [0] + [1] * k, config["r_max"])
        (a, *_), out = _atomic_bases(model, data)
        first = out[AtomicDataDict.EDGE_INDEX_KEY][0] == 0
        return a[0].norm().item(), out[AtomicDataDict.EDGE_CUTOFF_KEY].reshape(-1)[first]

    # M_j from one neighbour alone: A = f_c M_j / (1 + f_c)
    bound = 0.0
    for j in range(48):
        data = make_data(np.vstack([[0.0, 0.0, 0.0], shell[j : j + 1]]), [0, 1], config["r_max"])
        (a, *_), out = _atomic_bases(local, data)
        f_c = out[AtomicDataDict.EDGE_CUTOFF_KEY].reshape(-1)[0].item()
        bound = max(bound, a[0].norm().item() * (1 + f_c) / f_c)
    sizes = {k: (centre_basis(plain, k)[0], centre_basis(local, k)[0]) for k in (1, 3, 12, 48)}
    assert centre_basis(plain, 48)[1].min() < 0.5  # some neighbours sit in the cutoff's decay
    assert sizes[48][0] > 10 * sizes[1][0], sizes  # the plain sum grows with the neighbour count
    assert all(local_size <= bound for _, local_size in sizes.values()), (sizes, bound)
    assert sizes[48][1] < 1.5 * sizes[12][1], sizes  # and the mean saturates


def test_unknown_normalization_is_refused():
    with pytest.raises(ValueError, match="`neighbour_normalization` must be 'average' or 'coordination', got 'mean'"):
        build_model(dict(ATTENTION_NU2, neighbour_normalization="mean"), "float64")
