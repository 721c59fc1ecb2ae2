"""Flash-ACE graph modules: the ACE maths (coupling coefficients, product basis) and
the layer that wires the atomic basis, neighbour attention and product basis together."""

from .coupling import symmetric_coupling_basis, count_symmetric_couplings
from .product_basis import ProductBasis, atomic_basis_irreps
from .attention import NeighbourAttention, smooth_segment_softmax
from .radial import SpeciesPairRadialWeights
from .descriptor import EnvironmentDescriptor
from .layer import FlashACELayer
from .locality import MessagePassingLocalityGuard
from .geometry_check import InputGeometryCheck
from .uncertainty import LastLayerUncertainty

__all__ = [
    "symmetric_coupling_basis",
    "count_symmetric_couplings",
    "ProductBasis",
    "atomic_basis_irreps",
    "NeighbourAttention",
    "smooth_segment_softmax",
    "SpeciesPairRadialWeights",
    "EnvironmentDescriptor",
    "FlashACELayer",
    "MessagePassingLocalityGuard",
    "InputGeometryCheck",
    "LastLayerUncertainty",
]
