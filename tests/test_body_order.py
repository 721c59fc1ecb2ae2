"""One ACE layer with a linear readout is exactly (ν+1)-body.

For a centre atom with neighbours S, the site energy of one layer is a polynomial of
degree ≤ ν in the atomic basis A = Σ_{j∈S} φ(r_ij), with no constant term beyond the
per-type shift. Hence it is a sum of terms each involving at most ν neighbours, and
the inclusion–exclusion sum Σ_{T⊆S} (-1)^{|S|-|T|} E_i(T) vanishes for |S| = ν+1
(to float64 rounding) while for |S| = ν it equals the genuine ν-neighbour term.
"""

import itertools

import numpy as np
import pytest
import torch

from nequip.data import AtomicDataDict

from helpers import build_model, make_data
from model_configs import BASE


def _site_energy_alternating_sum(model, center_type, neighbour_pos, neighbour_types, r_max):
    total = 0.0
    n = len(neighbour_pos)
    magnitudes = []
    for size in range(n + 1):
        for subset in itertools.combinations(range(n), size):
            pos = [[0.0, 0.0, 0.0]] + [neighbour_pos[k] for k in subset]
            types = [center_type] + [neighbour_types[k] for k in subset]
            out = model(make_data(pos, types, r_max))
            e_center = out[AtomicDataDict.PER_ATOM_ENERGY_KEY][0, 0].item()
            total += (-1) ** (n - size) * e_center
            magnitudes.append(abs(e_center))
    return total, max(magnitudes)


@pytest.mark.parametrize(
    "nu,l_max", [(1, 2), (2, 2), (3, 2), (3, 1), (4, 1)]
)
def test_single_layer_is_exactly_nu_plus_one_body(nu, l_max):
    r_max = 4.0
    config = dict(
        BASE,
        r_max=r_max,
        num_layers=1,
        l_max=l_max,
        feature_l_max=0,
        correlation_order=nu,
        num_heads=0,
        readout_mlp_hidden_layers_depth=0,  # linear readout
    )
    model = build_model(config, "float64")
    rng = np.random.default_rng(nu * 10 + l_max)
    # neighbours inside the cutoff of the centre, in random directions and distances
    num = nu + 1
    directions = rng.normal(size=(num, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = rng.uniform(1.0, 3.0, size=num)
    neighbour_pos = (directions * radii[:, None]).tolist()
    neighbour_types = rng.integers(0, 3, size=num).tolist()

    vanishing, scale = _site_energy_alternating_sum(model, 1, neighbour_pos, neighbour_types, r_max)
    assert abs(vanishing) < 1e-11 * max(scale, 1.0), (vanishing, scale)

    genuine, _ = _site_energy_alternating_sum(
        model, 1, neighbour_pos[:nu], neighbour_types[:nu], r_max
    )
    assert abs(genuine) > 1e-6, genuine


def test_attention_breaks_strict_body_order():
    """Sanity check of the test itself: the softmax normaliser couples all neighbours."""
    r_max = 4.0
    nu = 1
    config = dict(
        BASE, r_max=r_max, num_layers=1, l_max=1, feature_l_max=0, correlation_order=nu,
        num_heads=2, attention_head_dim=4, attention_score_inputs="pair", readout_mlp_hidden_layers_depth=0,
    )
    model = build_model(config, "float64")
    with torch.no_grad():
        for layer in [m for m in model.modules() if hasattr(m, "sink_score")]:
            layer.sink_score.fill_(0.7)
    pos = [[1.5, 0.0, 0.0], [0.0, 1.7, 0.2], [0.3, -0.2, 2.1]]
    vanishing, scale = _site_energy_alternating_sum(model, 1, pos[:2], [0, 2], r_max)
    assert abs(vanishing) > 1e-8 * scale
