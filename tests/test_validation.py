"""Invalid hyperparameters fail at build time with one line naming the argument."""

import pytest

from helpers import build_model
from model_configs import ATTENTION_NU2

BAD = [
    ({"l_max": -1}, "`l_max`"),
    ({"correlation_order": 0}, "`correlation_order`"),
    ({"correlation_order": 5}, "`correlation_order`"),
    ({"num_layers": 0}, "`num_layers`"),
    ({"num_features": 0}, "`num_features`"),
    ({"num_radial": 0}, "`num_radial`"),
    ({"feature_l_max": 3}, "`feature_l_max`"),
    ({"num_heads": -1}, "`num_heads`"),
    ({"num_heads": 3}, "divisible by `num_heads`"),
    ({"r_max": 0.0}, "`r_max`"),
    ({"type_names": ["H", "C-1"]}, "`type_names`"),
    ({"type_names": ["H", "H"]}, "`type_names`"),
    ({"avg_num_neighbors": {"H": 3.0, "C": 4.0, "O": 5.0, "Xe": 1.0}}, "`avg_num_neighbors`"),
    ({"avg_num_neighbors": {"H": 3.0, "C": 4.0}}, "`avg_num_neighbors`"),
    ({"per_type_energy_shifts": {"H": 1.0, "C": 2.0, "Xx": 3.0}}, "`per_type_energy_shifts`"),
    ({"per_type_energy_scales": {"H": 1.0}}, "`per_type_energy_scales`"),
    ({"neighbour_normalization": "per_atom"}, "`neighbour_normalization`"),
    ({"attention_score_inputs": "dense"}, "`attention_score_inputs`"),
    ({"min_atom_distance": -0.1}, "`min_atom_distance`"),
]


@pytest.mark.parametrize("update,needle", BAD)
def test_bad_hyperparameter_is_a_clear_error(update, needle):
    config = dict(ATTENTION_NU2, **update)
    with pytest.raises(ValueError) as err:
        build_model(config, "float64")
    message = str(err.value)
    assert needle in message
    assert "\n" not in message.strip()


@pytest.mark.parametrize("key", ["neighbor_normalization", "normalization", "num_head"])
def test_a_misspelt_keyword_is_refused_not_ignored(key):
    """``neighbour_normalization`` keeps its spelling; no other key is taken silently."""
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{key}'"):
        build_model(dict(ATTENTION_NU2, **{key: "coordination"}), "float64")
