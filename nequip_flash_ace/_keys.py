"""Data fields Flash-ACE adds to the host's ``AtomicDataDict``, registered with the host so
that batching, compilation and the integrations know which are per atom and per frame."""

from nequip.data import register_fields

# the features the readout's last linear map reads, per local atom (LastLayerUncertainty)
READOUT_FEATURES = "readout_features"
# standard deviations of the predicted energies (eV): per frame and per atom
TOTAL_ENERGY_UNCERTAINTY = "total_energy_uncertainty"
ATOMIC_ENERGY_UNCERTAINTY = "atomic_energy_uncertainty"

register_fields(
    graph_fields=[TOTAL_ENERGY_UNCERTAINTY],
    node_fields=[READOUT_FEATURES, ATOMIC_ENERGY_UNCERTAINTY],
)
