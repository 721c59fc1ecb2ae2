"""A small ACE descriptor of each atom's neighbourhood: what the ``descriptor`` attention query reads."""

import torch
from e3nn.o3._irreps import Irreps
from e3nn.o3._linear import Linear

from nequip.nn.mlp import ScalarMLPFunction

from .atomic_basis import AtomicBasis
from .product_basis import ProductBasis, atomic_basis_irreps


class EnvironmentDescriptor(torch.nn.Module):
    r"""Rotation-invariant (ν+1)-body descriptor ``D_i`` of atom ``i``'s neighbourhood, ``k`` channels.

    .. math::
        A^D_{i k l m} = n_i \sum_j R^D_{k l}(u_{ij})\, Y_{lm}(\hat r_{ij})\, (W x^{(0)}_j)_k,
        \qquad D_i = \mathrm{ProductBasis}_\nu\big(\mathrm{Linear}(A^D_i)\big)\big|_{0e}

    with ``u_ij`` the layer's species-pair radial embedding (cutoff-multiplied, so ``R^D``
    vanishes at ``r_max`` with it: the radial map has no bias), ``x^{(0)}_j`` the
    neighbour's scalar features projected to ``k`` channels, ``n_i`` the layer's
    neighbour normalisation and only the scalar (``0e``) output of the product basis
    kept. It is the same expansion as the layer's own atomic and product basis, with
    ``k`` channels and scalar inputs only, i.e. ``l_max + 1`` paths instead of one per
    input irrep and edge harmonic: a fraction of the layer's cost, computed before the
    attention weights exist, so that the weights go into the layer's one atomic-basis sum.

    Only ``i``'s own edges enter; an atom without neighbours has ``D_i = 0``.

    Args:
        num_scalar_features: width ``C`` of the layer's scalar features
        num_channels: ``k``
        num_radial: width of ``u_ij``
        edge_sh_irreps: irreps of the edge spherical harmonics (``1 x l``, ``l = 0..l_max``)
        l_max: highest ``l`` of ``A^D``
        correlation_order: ν of its product basis
        num_types: number of species (product-basis weights per species)

    Shapes: ``scalars (num_nodes, C)`` (centres and ghosts), ``pair_embedding (E,
    num_radial)``, ``edge_sh (E, edge_sh_irreps.dim)``, ``normaliser`` ``(num_centers, 1)``
    or ``(1, 1)``; returns ``(num_centers, k)``.
    """

    def __init__(
        self,
        num_scalar_features: int,
        num_channels: int,
        num_radial: int,
        edge_sh_irreps,
        l_max: int,
        correlation_order: int,
        num_types: int,
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.project = ScalarMLPFunction(num_scalar_features, num_channels)
        irreps_a = atomic_basis_irreps(num_channels, l_max)
        self.atomic_basis = AtomicBasis(Irreps(f"{num_channels}x0e"), edge_sh_irreps, irreps_a)
        self.radial = ScalarMLPFunction(num_radial, self.atomic_basis.num_weights, bias=False)
        # scalar inputs: one path per l, already in the product basis's layout; the linear
        # map mixes channels of equal l (the product basis is channel-wise)
        self.linear = Linear(irreps_a, irreps_a)
        self.product_basis = ProductBasis(
            num_features=num_channels,
            l_max=l_max,
            irreps_out=Irreps(f"{num_channels}x0e"),
            correlation_order=correlation_order,
            num_types=num_types,
        )

    def forward(
        self,
        scalars: torch.Tensor,
        pair_embedding: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbour: torch.Tensor,
        normaliser: torch.Tensor,
        center_types: torch.Tensor,
    ) -> torch.Tensor:
        num_centers = center_types.shape[0]
        a = self.atomic_basis(
            self.project(scalars), edge_sh, self.radial(pair_embedding), edge_center, edge_neighbour, num_centers
        )
        return self.product_basis(self.linear(a * normaliser), center_types)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}"
