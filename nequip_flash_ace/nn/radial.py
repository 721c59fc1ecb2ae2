"""Species-pair dependent radial weights R(r_ij; z_i, z_j)."""

import torch

from nequip.nn.mlp import ScalarMLPFunction


class SpeciesPairRadialWeights(torch.nn.Module):
    r"""Radial weights per tensor-product path and channel, depending on both species.

    The host's cutoff-multiplied Bessel encoding ``e(r_ij)`` (``num_radial`` functions)
    is modulated per ordered species pair, ``u_ij = e(r_ij) ⊙ (1 + P_{z_i z_j})``,
    then a bias-free SiLU MLP maps ``u_ij`` to the ``num_weights`` weights of the
    atomic-basis tensor product (one per (path, channel)). ``e`` carries the host's
    polynomial cutoff (``p = 6``), so it and its first two derivatives vanish at
    ``r_max`` (C², not C^∞); the MLP has no bias (``silu(0) = 0``), so the weights
    vanish there to the same order.

    ``P`` starts at zero, i.e. as a species-agnostic radial MLP.

    Shapes: ``edge_embedding (E, num_radial)``, ``edge_pair_type (E,)`` with values in
    ``[0, num_types^2)`` → ``u (E, num_radial)``, weights ``(E, num_weights)``.
    """

    def __init__(
        self,
        num_radial: int,
        num_types: int,
        num_weights: int,
        mlp_depth: int,
        mlp_width: int,
    ) -> None:
        super().__init__()
        self.num_types = num_types
        self.pair_modulation = torch.nn.Parameter(torch.zeros(num_types * num_types, num_radial))
        self.mlp = ScalarMLPFunction(
            input_dim=num_radial,
            output_dim=num_weights,
            hidden_layers_depth=mlp_depth,
            hidden_layers_width=mlp_width,
            nonlinearity="silu",
            bias=False,
            forward_weight_init=True,
        )

    def pair_embedding(
        self, edge_embedding: torch.Tensor, center_types: torch.Tensor, neighbour_types: torch.Tensor
    ) -> torch.Tensor:
        """``u_ij = e(r_ij) ⊙ (1 + P_{z_i z_j})``, shape ``(E, num_radial)``."""
        pair = center_types * self.num_types + neighbour_types
        return edge_embedding * (1.0 + torch.index_select(self.pair_modulation, 0, pair))

    def forward(self, pair_embedding: torch.Tensor) -> torch.Tensor:
        return self.mlp(pair_embedding)
