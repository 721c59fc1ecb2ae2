"""What Flash-ACE registers with the host when it is imported: its data fields (so that
batching and compilation know which are per atom and per frame) and its compile targets
for ``nequip-compile`` (as ``nequip-allegro`` registers ``pair_allegro``).

``ase_uncertainty``: the host's ``ase`` target plus the energy standard deviations of a
model fitted by ``python -m nequip_flash_ace.uncertainty``, for
``FlashACEUncertaintyCalculator.from_compiled_model``.
"""

from nequip.data import register_fields
from nequip.scripts._compile_utils import ASE_TARGET, register_compile_targets

from . import _keys

register_fields(
    graph_fields=[_keys.TOTAL_ENERGY_UNCERTAINTY],
    node_fields=[_keys.READOUT_FEATURES, _keys.ATOMIC_ENERGY_UNCERTAINTY],
)

ASE_UNCERTAINTY_TARGET_NAME = "ase_uncertainty"
ASE_UNCERTAINTY_TARGET = dict(
    ASE_TARGET, output=list(ASE_TARGET["output"]) + [_keys.TOTAL_ENERGY_UNCERTAINTY, _keys.ATOMIC_ENERGY_UNCERTAINTY]
)
register_compile_targets({ASE_UNCERTAINTY_TARGET_NAME: ASE_UNCERTAINTY_TARGET})
