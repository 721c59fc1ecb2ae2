"""Smooth, memory-efficient neighbour attention over an edge list.

Everything here works on the edge list directly: scores and weights are
``(num_edges, num_heads)`` tensors and the normaliser is a segment sum over the
centre atom, so memory is O(edges x heads). No ``(N, N)`` matrix and no padded
``(N, max_neighbours)`` block is ever built, and every op is an ordinary
differentiable torch op, so double backward (force training), ``torch.compile`` and
``torch.export``/AOTInductor work without custom kernels.
"""

import math
from typing import Optional

import torch

from nequip.nn import scatter
from nequip.nn.mlp import ScalarMLPFunction

from . import _compat


def smooth_segment_softmax(
    scores: torch.Tensor,
    envelope: torch.Tensor,
    sink_scores: torch.Tensor,
    edge_center: torch.Tensor,
    num_centers: int,
) -> torch.Tensor:
    r"""Softmax over each centre's neighbours with a cutoff envelope and a sink.

    .. math::
        a_{ij} = \frac{f_c(r_{ij}) e^{s_{ij}}}{e^{b_i} + \sum_k f_c(r_{ik}) e^{s_{ik}}}

    The envelope ``f_c`` makes a neighbour at the cutoff contribute exactly nothing;
    with the host's polynomial cutoff (``p = 6``) the weights are C² there: value,
    first and second derivatives vanish at ``r_max``, the third does not. The sink term
    ``e^{b_i}`` keeps the denominator positive for atoms with no neighbours.

    Every term is evaluated as ``exp(s_ij + ln f_c(r_ij) - m_i)`` with the per-centre
    shift ``m_i = max({b_i} ∪ {s_ij + ln f_c(r_ij) : f_c > 0})`` (detached: the softmax
    does not depend on it). Shifting by the largest *term* rather than the largest
    score keeps the largest term of every denominator exactly 1, so no edge can
    underflow the others: with the score alone, a high-scoring edge just inside the
    cutoff (``f_c`` tiny) would set the shift, push every other term and the sink below
    float32's range and take the whole weight itself, a jump as it crosses ``r_max``.

    Args:
        scores: ``(num_edges, H)``
        envelope: ``(num_edges, 1)`` or ``(num_edges,)``, in ``[0, 1]``
        sink_scores: ``(num_centers, H)``
        edge_center: ``(num_edges,)`` centre index ``i`` of every edge, ``< num_centers``
        num_centers: number of centre atoms

    Returns:
        ``a``: ``(num_edges, H)``; ``Σ_j a_ij = 1 - (sink share) <= 1``.
    """
    envelope = envelope.reshape(-1, 1).expand_as(scores)
    live = envelope > 0
    # ln f_c on live edges; edges outside the cutoff get a finite stand-in (ln 1) and are
    # masked below, so neither the value nor the gradient sees ln 0
    log_envelope = torch.log(torch.where(live, envelope, torch.ones_like(envelope)))
    terms = scores + log_envelope
    with torch.no_grad():
        shift = sink_scores.detach().clone().scatter_reduce(
            0,
            edge_center.view(-1, 1).expand_as(scores),
            torch.where(live, terms, torch.full_like(terms, -math.inf)),
            reduce="amax",
            include_self=True,
        )
    # live terms have exponent <= 0 by construction (the clamp only guards rounding)
    exponent = (terms - torch.index_select(shift, 0, edge_center)).clamp(max=0.0)
    numerator = torch.where(live, torch.exp(exponent), torch.zeros_like(exponent))
    denominator = torch.exp(sink_scores - shift) + scatter(
        numerator, edge_center, dim=0, dim_size=num_centers
    )
    return numerator / torch.index_select(denominator, 0, edge_center)


SCORE_INPUTS = ("pair", "environment", "descriptor")


class NeighbourAttention(torch.nn.Module):
    r"""Multi-head invariant attention weights for the atomic-basis sum.

    Scores are ``s_ij = τ_h q̂_i · k̂_ij / sqrt(d)`` per head ``h``, where ``x̂ =
    x / sqrt(mean_d(x²) + ε)`` is a head's query or key scaled to unit root-mean-square
    (``ε = 1e-6``, so the map is smooth), with ``k_ij = W_k h_j^{(0)} + W_r u_ij`` from
    the neighbour's scalar features plus the (species-pair modulated, cutoff-multiplied)
    radial embedding ``u_ij`` of the edge, a learned per-head temperature ``τ_h`` that
    starts at zero, and a query set by ``score_inputs``:

    - ``"pair"``: ``q_i = W_q h_i^{(0)}``, the centre's scalar features. In the
      first layer ``h^{(0)}`` is the type embedding, so the scores see only the
      species pair and the distance: a reweighting the radial MLP could learn
      itself, apart from the softmax's normalisation;
    - ``"environment"``: ``q_i = W_q h_i^{(0)} + W_e [ρ_i, ln c_i]`` with
      ``c_i = 1 + Σ_j f_c(r_ij)`` the smooth coordination and
      ``ρ_i = (1/c_i) Σ_j u_ij`` the mean radial embedding of the neighbourhood
      (``num_radial`` values). The query then knows how dense and what kind the
      environment is already in the first layer. Both inputs stay bounded (or grow
      as ``ln n``) from a dimer to a compressed crystal, are smooth at the cutoff
      and come from ``i``'s own edges, so a one-layer model stays strictly local;
    - ``"descriptor"``: ``q_i = W_q [h_i^{(0)}, D_i]``, where the caller passes as
      ``center_scalars`` the centre's scalar features followed by ``D_i``, the
      invariants of a small product basis of its own over ``i``'s neighbourhood (a few
      channels, built before the weighted sum; :class:`~nequip_flash_ace.nn.FlashACELayer`
      does): the query reads the centre's (ν+1)-body environment, not only its species
      and two-body summaries. Still only ``i``'s own edges, so a one-layer model stays
      strictly local. ``num_query_features`` is the width of that concatenation.

    Why the normalisation: without it ``s`` grows as ``|q||k|``, i.e. as the square of
    the incoming features, so a second layer's scores follow the size of the first
    layer's output, which varies with density on diverse crystals, and a step of ``τ``
    moves the scores by an amount set by those features. Normalised, ``|s| <= sqrt(d)
    |τ|`` and ``|∂s_ij/∂τ| <= sqrt(d)`` per edge whatever the features; the temperature
    alone sets how sharp a head can be. (The temperature's gradient is still a sum over
    every edge of the batch, and it often holds most of the gradient norm on silicon,
    with or without the normalisation: ``benchmarks/stability_diagnosis.py --train``.)
    Checkpoints trained before the normalisation have no ``normalized_scores`` buffer
    and load with the raw ``q · k`` they were trained with.

    The sink score is a learnable per-species, per-head bias (zero at the start).
    The returned edge weights are

    .. math::
        w_{ij} = \Big(1 + \sum_k f_c(r_{ik})\Big)\, a_{ij}

    i.e. the attention distribution rescaled by the smooth coordination number, so
    that with uniform scores (all ``s = b``) ``w_ij = f_c(r_ij)`` and the layer is a
    plain ACE sum again; the sum over neighbours stays extensive as in ACE.

    Training starts from exactly that plain sum: with ``τ = 0`` and ``b = 0`` every
    score is zero whatever the features, so ``w_ij = f_c(r_ij)`` for every head at
    initialisation, and attention grows from the backbone as ``τ`` is learned (random
    query/key projections alone would start from a perturbed ACE). ``τ``'s gradient
    ``q·k/√d`` is non-zero from the first step; the projections follow once ``τ ≠ 0``.
    Checkpoints saved before ``τ`` existed were trained with ``τ = 1`` and load as such.

    Args:
        num_scalar_features: width ``C0`` of the scalar features
        num_radial: width of the radial embedding ``u_ij``
        num_heads: ``H``
        head_dim: ``d``, width of each head's query/key
        num_types: number of species (for the sink scores)
        initial_temperature: ``τ_h`` at initialisation (default ``0``: uniform start;
            ``1`` starts from the random query/key projections)
        score_inputs: what the query sees, ``"pair"`` (default), ``"environment"`` or ``"descriptor"``
        num_query_features: width of ``center_scalars`` (default ``num_scalar_features``)
        normalized_scores: unit-RMS queries and keys (default); ``False``: the raw ``q · k``
            of versions up to 0.2.0

    Shapes: see :meth:`forward`.
    """

    def __init__(
        self,
        num_scalar_features: int,
        num_radial: int,
        num_heads: int,
        head_dim: int,
        num_types: int,
        initial_temperature: float = 0.0,
        score_inputs: str = "pair",
        normalized_scores: bool = True,
        num_query_features: Optional[int] = None,
    ) -> None:
        super().__init__()
        if score_inputs not in SCORE_INPUTS:
            raise ValueError(
                f"`attention_score_inputs` must be one of {list(SCORE_INPUTS)}, got {score_inputs!r}"
            )
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.query = ScalarMLPFunction(
            num_scalar_features if num_query_features is None else num_query_features, num_heads * head_dim
        )
        self.key_features = ScalarMLPFunction(num_scalar_features, num_heads * head_dim)
        self.key_radial = ScalarMLPFunction(num_radial, num_heads * head_dim)
        self.query_environment = None
        if score_inputs == "environment":
            self.query_environment = ScalarMLPFunction(num_radial + 1, num_heads * head_dim)
        self.score_inputs = score_inputs
        self.sink_score = torch.nn.Parameter(torch.zeros(num_types, num_heads))
        self.score_temperature = torch.nn.Parameter(torch.full((num_heads,), float(initial_temperature)))
        self.inv_sqrt_d = 1.0 / math.sqrt(head_dim)
        # 1: scores from unit-RMS queries and keys; 0 only for checkpoints trained before
        # (set by _compat at load). The Python flag is what forward reads.
        self.register_buffer("normalized_scores", torch.tensor(float(normalized_scores)))
        self.normalize = bool(normalized_scores)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        _compat.default_attention_temperature(self, state_dict, prefix)
        _compat.raw_attention_scores(self, state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self.normalize = bool(self.normalized_scores)

    def scores(
        self,
        center_scalars: torch.Tensor,
        neighbour_scalars: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbour: torch.Tensor,
        center_coordination: torch.Tensor,
    ) -> torch.Tensor:
        """The scores ``s_ij`` before the softmax, ``(num_edges, H)``; arguments as in :meth:`forward`."""
        num_centers = center_scalars.shape[0]
        q = self.query(center_scalars)
        if self.query_environment is not None:
            mean_radial = scatter(edge_radial, edge_center, dim=0, dim_size=num_centers) / center_coordination
            q = q + self.query_environment(torch.cat([mean_radial, torch.log(center_coordination)], dim=1))
        k = torch.index_select(self.key_features(neighbour_scalars), 0, edge_neighbour)
        k = k + self.key_radial(edge_radial)
        q = torch.index_select(q, 0, edge_center).view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_heads, self.head_dim)
        if self.normalize:
            q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6)
            k = k * torch.rsqrt(k.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (q * k).sum(-1) * (self.score_temperature * self.inv_sqrt_d)

    def forward(
        self,
        center_scalars: torch.Tensor,
        neighbour_scalars: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_envelope: torch.Tensor,
        edge_center: torch.Tensor,
        edge_neighbour: torch.Tensor,
        center_types: torch.Tensor,
        center_coordination: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            center_scalars: ``(num_centers, num_query_features)``
            neighbour_scalars: ``(num_nodes, C0)`` (centres plus ghosts, if any)
            edge_radial: ``(num_edges, num_radial)``
            edge_envelope: ``(num_edges, 1)``, the cutoff function ``f_c(r_ij)``
            edge_center, edge_neighbour: ``(num_edges,)``
            center_types: ``(num_centers,)``
            center_coordination: ``(num_centers, 1)``, ``c_i = 1 + Σ_j f_c(r_ij)``
                (the layer computes it once for attention and normalisation)

        Returns:
            ``(num_edges, H)`` edge weights ``w_ij``
        """
        num_centers = center_scalars.shape[0]
        scores = self.scores(center_scalars, neighbour_scalars, edge_radial, edge_center, edge_neighbour, center_coordination)
        sink = torch.index_select(self.sink_score, 0, center_types)
        a = smooth_segment_softmax(scores, edge_envelope, sink, edge_center, num_centers)
        return a * torch.index_select(center_coordination, 0, edge_center)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, score_inputs={self.score_inputs!r}"
