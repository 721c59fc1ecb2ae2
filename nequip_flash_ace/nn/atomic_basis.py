"""ACE atomic basis: the edge tensor products ``R(r_ij) [h_j ⊗ Y(r̂_ij)]`` summed onto centres."""

import math
from typing import List, Tuple

import torch
from e3nn.o3._irreps import Irreps
from e3nn.o3._wigner import wigner_3j


class AtomicBasis(torch.nn.Module):
    r"""Channel-wise edge tensor product, summed over each centre's neighbours.

    For every path ``p = (l1, l2 → L)`` allowed by ``irreps_out`` and every channel ``c``:

    .. math::
        A_{i c p M} = \sum_{j} R_{ij p c} \sqrt{2L+1}
            \sum_{m_1 m_2} C^{l_1 l_2 L}_{m_1 m_2 M} h_{j c l_1 m_1} Y_{l_2 m_2}(\hat r_{ij})

    with ``C`` e3nn's real Wigner 3j symbols and ``sqrt(2L+1)`` its component
    normalisation: the same function as the host's ``TensorProductScatter`` with
    ``uvu`` instructions (one weight per edge, path and channel).

    Evaluated per path in two small steps, with channels innermost so that every
    per-edge operation is a batch of small dense matrix products:

    1. ``G_{e M m1} = sqrt(2L+1) Σ_{m2} C_{m1 m2 M} Y_{e m2}``: shared by all
       channels, ``(E, 2L+1, 2l1+1)``;
    2. ``msg_{e M c} = Σ_{m1} G_{e M m1} (R_{e p c} h_{j(e) m1 c})``: ``(2l1+1)(2L+1)``
       multiply-adds per edge and channel; then a scatter-sum of that path's messages
       onto the ``num_centers`` centre atoms and the transpose to e3nn's ``mul_ir``
       layout on the atoms (not the edges). One scatter per path: concatenating the
       paths' edge messages for a single scatter was measured 1.25x slower for
       energy+forces and 1.19x for a training step (1000 atoms, default model), and it
       holds all paths' edge messages at once.

    Args:
        feature_irreps_in: irreps of ``h`` (all multiplicities equal, ``c``)
        edge_sh_irreps: irreps of ``Y`` (``1 x l`` for ``l = 0..l_max``)
        irreps_allowed: the ``(l, p)`` that the output may contain

    Attributes:
        paths: ``(i_in, i_edge, L, p)`` in weight order (the order the loops create them)
        irreps_out: the paths' irreps, sorted by irrep (stable): the layout of the output
        num_weights: ``len(paths) * c``; the edge weights are laid out as ``(path, channel)``

    Shapes:
        ``x``: ``(num_nodes, feature_irreps_in.dim)``; ``edge_attr``: ``(E, edge_sh_irreps.dim)``;
        ``edge_weight``: ``(E, num_weights)``; ``edge_center`` values ``< num_centers`` (the
        local atoms: edges start only there, also in the ghost-atom layout); output
        ``(num_centers, irreps_out.dim)``.
    """

    def __init__(self, feature_irreps_in, edge_sh_irreps, irreps_allowed) -> None:
        super().__init__()
        feature_irreps_in = Irreps(feature_irreps_in)
        edge_sh_irreps = Irreps(edge_sh_irreps)
        allowed = {ir for _, ir in Irreps(irreps_allowed)}
        muls = {mul for mul, _ in feature_irreps_in}
        if len(muls) != 1:
            raise ValueError(f"AtomicBasis needs equal multiplicities in {feature_irreps_in}")
        self.num_features = muls.pop()
        if any(mul != 1 for mul, _ in edge_sh_irreps):
            raise ValueError(f"edge spherical harmonics must have multiplicity 1, got {edge_sh_irreps}")

        paths = []
        for i_in, (_, ir_in) in enumerate(feature_irreps_in):
            for i_edge, (_, ir_edge) in enumerate(edge_sh_irreps):
                for ir_out in ir_in * ir_edge:
                    if ir_out in allowed:
                        paths.append((i_in, i_edge, ir_out))
        self.num_paths = len(paths)
        self.num_weights = self.num_paths * self.num_features
        # output layout: paths sorted by irrep, ties in creation order (as Irreps.sort)
        order = sorted(range(len(paths)), key=lambda i: (paths[i][2], i))
        self.irreps_out = Irreps([(self.num_features, paths[i][2]) for i in order])
        self.paths: List[Tuple[int, int, int, int]] = [(i, e, ir.l, ir.p) for i, e, ir in paths]
        self.output_order: List[int] = order
        # widths of the input blocks (all channels) and of one channel's irrep
        self.in_dims: List[int] = [mul * ir.dim for mul, ir in feature_irreps_in]
        self.in_irrep_dims: List[int] = [ir.dim for _, ir in feature_irreps_in]
        self.edge_dims: List[int] = [ir.dim for _, ir in edge_sh_irreps]
        dtype = torch.get_default_dtype()
        for p_i, (i_in, i_edge, ir_out) in enumerate(paths):
            l1 = feature_irreps_in[i_in].ir.l
            l2 = edge_sh_irreps[i_edge].ir.l
            # C_{m1 m2 M} sqrt(2L+1), stored as (2l2+1, (2L+1)(2l1+1)) for step 1
            c = wigner_3j(l1, l2, ir_out.l, dtype=torch.float64) * math.sqrt(ir_out.dim)
            self.register_buffer(
                f"coupling_{p_i}",
                c.permute(1, 2, 0).reshape(2 * l2 + 1, -1).to(dtype),
                persistent=False,
            )

    def _node_features_per_edge(self, x: torch.Tensor, edge_neighbour: torch.Tensor) -> List[torch.Tensor]:
        """The neighbour's features per input irrep as ``(E, 2l1+1, c)``."""
        num_nodes = x.shape[0]
        c = self.num_features
        h = []
        for x_l, d1 in zip(x.split(self.in_dims, dim=1), self.in_irrep_dims):
            x_l = x_l.reshape(num_nodes, c, d1).transpose(1, 2).contiguous()
            h.append(torch.index_select(x_l, 0, edge_neighbour))
        return h

    def _message(self, p_i: int, h: List[torch.Tensor], y: List[torch.Tensor], w: List[torch.Tensor]) -> torch.Tensor:
        """Path ``p_i``'s edge messages ``msg_{e M c}`` (steps 1 and 2), ``(E, 2L+1, c)``."""
        i_in, i_edge, L, _ = self.paths[p_i]
        num_edges = y[i_edge].shape[0]
        g = torch.matmul(y[i_edge], getattr(self, f"coupling_{p_i}")).view(num_edges, 2 * L + 1, self.in_irrep_dims[i_in])
        return torch.bmm(g, h[i_in] * w[p_i].unsqueeze(1))

    def _sum_onto_centres(self, message: torch.Tensor, edge_center: torch.Tensor, num_centers: int) -> torch.Tensor:
        """Scatter-sum of one path's messages, in the mul_ir layout ``(num_centers, c (2L+1))``."""
        # index_put with accumulate keeps only the index for its backward (a row gather);
        # index_add would also keep the messages (measured: 164 MB of a 1000-atom
        # energy+forces call)
        summed = torch.zeros(
            (num_centers,) + message.shape[1:], dtype=message.dtype, device=message.device
        ).index_put((edge_center,), message, accumulate=True)
        return summed.transpose(1, 2).reshape(num_centers, -1)

    def _split(self, edge_attr: torch.Tensor, edge_weight: torch.Tensor):
        # split/unbind rather than narrow: their backward is one cat, not a zero-filled
        # full-size gradient per slice
        y = edge_attr.split(self.edge_dims, dim=1)
        w = edge_weight.view(edge_attr.shape[0], self.num_paths, self.num_features).unbind(1)
        return list(y), list(w)

    def forward(
        self,
        x: torch.Tensor,
        edge_attr: torch.Tensor,
        edge_weight: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbour: torch.Tensor,
        num_centers: int,
    ) -> torch.Tensor:
        h = self._node_features_per_edge(x, edge_neighbour)
        y, w = self._split(edge_attr, edge_weight)
        # path by path: only one path's messages exist at a time
        atom_blocks = [
            self._sum_onto_centres(self._message(p_i, h, y, w), edge_center, num_centers)
            for p_i in range(self.num_paths)
        ]
        return torch.cat([atom_blocks[i] for i in self.output_order], dim=1)

    def extra_repr(self) -> str:
        return f"{self.num_paths} paths -> {self.irreps_out}"
