"""Names of the data fields Flash-ACE adds to the host's ``AtomicDataDict``.

Constants only, so that model code can import them without pulling in ``nequip.data``
(``nequip-package`` follows every import of a model's modules); ``_compile.py``
registers them with the host (per atom, per frame) when the package is imported."""

# the features the readout's last linear map reads, per local atom (LastLayerUncertainty)
READOUT_FEATURES = "readout_features"
# standard deviations of the predicted energies (eV): per frame and per atom
TOTAL_ENERGY_UNCERTAINTY = "total_energy_uncertainty"
ATOMIC_ENERGY_UNCERTAINTY = "atomic_energy_uncertainty"
