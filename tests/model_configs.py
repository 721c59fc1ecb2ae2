"""Small Flash-ACE configurations shared by the tests (3 types, as the host's fixtures need)."""

TYPE_NAMES = ["H", "C", "O"]

BASE = {
    "_target_": "nequip_flash_ace.model.FlashACEModel",
    "seed": 123,
    "r_max": 4.0,
    "type_names": TYPE_NAMES,
    "avg_num_neighbors": 6.0,
    "per_type_energy_shifts": {"H": -1.5, "C": -3.0, "O": -4.5},
    "per_type_energy_scales": {"H": 1.0, "C": 1.2, "O": 0.9},
    "num_features": 8,
    "num_radial": 6,
    "radial_mlp_depth": 1,
    "radial_mlp_width": 16,
    "readout_mlp_hidden_layers_width": 8,
}

BACKBONE_NU1 = dict(BASE, num_layers=2, l_max=1, feature_l_max=1, correlation_order=1, num_heads=0)
BACKBONE_NU3 = dict(
    BASE,
    num_layers=2,
    l_max=2,
    feature_l_max=1,
    correlation_order=3,
    num_heads=0,
    pair_potential={
        "_target_": "nequip.nn.pair_potential.ZBL",
        "units": "metal",
        "chemical_species": TYPE_NAMES,
    },
)
# temperature 1 at initialisation: the physics tests must see attention that depends
# on the features (the default, 0, starts every head uniform: w_ij = f_c(r_ij))
ATTENTION_NU2 = dict(
    BASE,
    num_layers=2,
    l_max=2,
    feature_l_max=1,
    correlation_order=2,
    num_heads=2,
    attention_head_dim=4,
    attention_temperature_init=1.0,
    attention_score_inputs="pair",  # the variants of tests/test_attention.py change it
)
# the environment-aware query in a strictly local (one-layer) model
ATTENTION_ENVIRONMENT_LOCAL = dict(
    ATTENTION_NU2,
    num_layers=1,
    correlation_order=3,
    attention_score_inputs="environment",
)
# attention whose query reads the centre's many-body invariants (a small ACE descriptor
# computed first), one layer: strictly local
ATTENTION_DESCRIPTOR_LOCAL = dict(
    ATTENTION_NU2,
    num_layers=1,
    correlation_order=3,
    attention_score_inputs="descriptor",
)
