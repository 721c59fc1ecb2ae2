"""Generalized Clebsch–Gordan coefficients for the ACE product basis.

The product basis of body order ν+1 needs, for every output irrep ``(L, p)``, a
basis of the equivariant multilinear maps

    U : Sym^ν(V) → L,        V = ⊕_{l=0}^{l_max} l^{(-1)^l}

i.e. the maps from the ν-th *symmetric* tensor power of one channel of the atomic
basis ``A`` (the factors of the product are the same channel of the same atom, so
only permutation-symmetric couplings survive the contraction) to the output irrep.

We build them ourselves from e3nn's real ``wigner_3j``:

1. recursive coupling: an equivariant map ``V^{⊗k} → L1`` is coupled with one more
   factor ``l`` through ``wigner_3j(L1, l, L)``;
2. after every step the candidates for each ``(L, p)`` are symmetrised over all
   permutations of the ``k`` factors and reduced to a linearly independent set by
   Gram–Schmidt in candidate order (so that, e.g., the ν=2, L=0 basis is exactly the
   power spectrum ``Σ_m A_lm A_lm`` of each ``l``).

Reducing after every step is what keeps this cheap: any symmetric map on ν factors
restricted to its first ν-1 factors is symmetric there, so it lies in the span of the
(reduced) ν-1 basis coupled with one more factor.

Everything is computed in float64 on the CPU and cached per
``(l_max, correlation_order, L, p)``; the model stores the results as buffers.
"""

import functools
import itertools
from typing import Dict, List, Tuple

import torch
from e3nn.o3._wigner import wigner_3j

# relative norm below which a Gram–Schmidt residual counts as linearly dependent;
# the Gram-matrix formulation loses half the digits, so 1e-6 is the safe floor
_RANK_TOL = 1e-6
# coefficients below this fraction of the largest |U| are rounding noise of entries
# that vanish by symmetry (observed: ~1e-17 against O(0.1-1) entries)
_ZERO_TOL = 1e-10


def atomic_basis_dim(l_max: int) -> int:
    """Dimension ``D = (l_max + 1)^2`` of one channel of ``V = ⊕_l l^{(-1)^l}``."""
    return (l_max + 1) ** 2


def _l_offset(l: int) -> int:  # noqa: E741
    return l * l


def _symmetrize(t: torch.Tensor, order: int) -> torch.Tensor:
    """Symmetrise ``t`` of shape ``(n, D, ..., D, M)`` over its ``order`` D axes.

    ``t`` must already be symmetric in its first ``order - 1`` D axes (true for
    couplings built from a symmetric prefix), so averaging over the ``order``
    transpositions that move the last factor to each position is the full average
    over all ``order!`` permutations.
    """
    if order == 1:
        return t
    out = t.clone()
    last = order  # axis index of the last factor (axis 0 indexes candidates)
    for j in range(1, order):
        out = out + t.transpose(j, last)
    return out / order


def _independent_subset(candidates: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Orthonormalise ``candidates`` (n, ...) in order, dropping linearly dependent ones.

    Equivalent to Gram–Schmidt in candidate order, done on the Gram matrix (an
    in-order Cholesky that skips dependent columns) so that the cost is one matmul
    of the big flattened tensors. Returns (r, ...) with r the rank, orthonormal in
    the Frobenius inner product over all trailing axes.

    Linear dependence is judged relative to the largest norm in ``reference`` (the
    candidates before symmetrisation): a symmetrised candidate that cancelled to
    rounding noise must count as zero, not be rescaled into a spurious basis vector.
    """
    n = candidates.shape[0]
    if n == 0:
        return candidates
    flat = candidates.reshape(n, -1)
    gram = flat @ flat.T
    scale = reference.reshape(reference.shape[0], -1).norm(dim=1).max().square()
    # rows of `coeff` express the orthonormal vectors in terms of the candidates
    coeff = torch.zeros(n, n, dtype=flat.dtype)
    kept: List[int] = []
    for i in range(n):
        e = torch.zeros(n, dtype=flat.dtype)
        e[i] = 1.0
        q = coeff[kept]
        for _ in range(2):  # re-orthogonalise once for stability
            e = e - q.T @ (q @ (gram @ e))
        norm2 = e @ gram @ e
        if norm2 > (_RANK_TOL**2) * scale:
            coeff[i] = e / norm2.sqrt()
            kept.append(i)
    if not kept:
        return candidates.new_zeros((0,) + candidates.shape[1:])
    basis = coeff[kept] @ flat
    return basis.reshape((len(kept),) + candidates.shape[1:])


@functools.lru_cache(maxsize=None)
def _symmetric_couplings(
    l_max: int, order: int, L_bound: int
) -> Dict[Tuple[int, int], torch.Tensor]:
    """Bases of equivariant maps ``Sym^order(V) → (L, p)`` for all ``L <= L_bound``.

    Returns a dict ``(L, p) -> U`` with ``U`` of shape ``(n, D, ..., D, 2L+1)``
    (``order`` axes of size ``D``), orthonormal and permutation-symmetric.
    """
    D = atomic_basis_dim(l_max)
    if order == 1:
        out = {}
        for l in range(l_max + 1):  # noqa: E741
            u = torch.zeros(1, D, 2 * l + 1, dtype=torch.float64)
            u[0, _l_offset(l) : _l_offset(l) + 2 * l + 1] = torch.eye(
                2 * l + 1, dtype=torch.float64
            )
            if l <= L_bound:
                out[(l, (-1) ** l)] = u
        return out

    # intermediate irreps may exceed the final bound by what one more factor can remove
    prev = _symmetric_couplings(l_max, order - 1, L_bound + l_max)
    candidates: Dict[Tuple[int, int], List[torch.Tensor]] = {}
    for (L1, p1), u_prev in prev.items():
        for l in range(l_max + 1):  # noqa: E741
            p = p1 * (-1) ** l
            for L in range(abs(L1 - l), min(L1 + l, L_bound) + 1):
                w3j = wigner_3j(L1, l, L, dtype=torch.float64)  # (2L1+1, 2l+1, 2L+1)
                new = torch.zeros(
                    u_prev.shape[:-1] + (D, 2 * L + 1), dtype=torch.float64
                )
                # U'[..., a, M] = Σ_{M1} U[..., M1] w3j[M1, m(a), M]
                new[..., _l_offset(l) : _l_offset(l) + 2 * l + 1, :] = torch.einsum(
                    "...i,ijk->...jk", u_prev, w3j
                )
                candidates.setdefault((L, p), []).append(new)

    out = {}
    for key in sorted(candidates):
        raw = torch.cat(candidates[key], dim=0)
        basis = _independent_subset(_symmetrize(raw, order), reference=raw)
        if basis.shape[0] > 0:
            out[key] = basis
    return out


def symmetric_coupling_basis(l_max: int, order: int, L: int, p: int) -> torch.Tensor:
    """Generalized Clebsch–Gordan coefficients ``Sym^order(V) → (L, p)``.

    Args:
        l_max: highest ``l`` of the atomic basis ``V = ⊕_{l<=l_max} l^{(-1)^l}``
        order: correlation order ν (number of factors), ``>= 1``
        L, p: output irrep

    Returns:
        float64 tensor of shape ``(D,) * order + (2L+1, n)`` with ``D = (l_max+1)^2``
        and ``n >= 0`` independent, permutation-symmetric couplings (the last axis
        indexes them; ``n == 0`` means no such coupling exists).
    """
    if order < 1:
        raise ValueError(f"correlation order must be >= 1, got {order}")
    basis = _symmetric_couplings(l_max, order, L).get((L, p))
    D = atomic_basis_dim(l_max)
    if basis is None:
        return torch.zeros((D,) * order + (2 * L + 1, 0), dtype=torch.float64)
    # (n, D.., M) -> (D.., M, n)
    return basis.permute(tuple(range(1, order + 2)) + (0,)).contiguous()


@functools.lru_cache(maxsize=None)
def sorted_tuple_couplings(
    l_max: int, order: int, L: int, p: int
) -> Tuple[List[Tuple[int, ...]], torch.Tensor]:
    """The couplings of :func:`symmetric_coupling_basis` restricted to sorted index tuples.

    Because ``U`` is symmetric under permutations of its factors and the product
    ``A_{a1} ... A_{ak}`` is too, the full sum over ``a ∈ D^k`` collapses onto sorted
    tuples ``t = (a1 <= ... <= ak)``:

        Σ_a U_{a, M, η} A_{a1} ... A_{ak} = Σ_t C_{t, M, η} A_{t1} ... A_{tk},
        C_{t, M, η} = Σ_{distinct permutations π of t} U_{π(t), M, η}

    (for an exactly symmetric ``U`` this is the multiplicity of ``t`` times
    ``U_t``). Tuples whose coefficients vanish for every ``(M, η)`` are dropped: they
    are zero by angular-momentum or parity selection and only differ from zero by
    rounding in ``U``.

    Returns:
        ``(tuples, C)``: the kept sorted tuples (lexicographic order) and a float64
        tensor ``(len(tuples), 2L+1, n)``.
    """
    u = symmetric_coupling_basis(l_max, order, L, p)  # (D,)*order + (M, n)
    D = atomic_basis_dim(l_max)
    if u.shape[-1] == 0:
        return [], u.new_zeros((0, 2 * L + 1, 0))
    drop_below = _ZERO_TOL * u.abs().max()
    tuples: List[Tuple[int, ...]] = []
    rows: List[torch.Tensor] = []
    for t in itertools.combinations_with_replacement(range(D), order):
        row = sum(u[perm] for perm in set(itertools.permutations(t)))
        if row.abs().max() > drop_below:
            tuples.append(t)
            rows.append(row)
    return tuples, torch.stack(rows)  # cached: callers copy (e.g. `.to(dtype)`) before changing it


def monomial_recursion(
    needed: List[List[Tuple[int, ...]]],
) -> Tuple[List[List[Tuple[int, ...]]], List[torch.Tensor], List[torch.Tensor]]:
    """Index tables that build the monomials ``P_t = A_{t1} ... A_{tk}`` order by order.

    Every monomial of order ``k >= 2`` is one earlier monomial times one factor,
    ``P_{(t1..tk)} = P_{(t1..t(k-1))} A_{tk}``, so a monomial costs one multiply-add
    per atom and channel whatever its order (the DAG of the fast ACE codes, here
    with sorted tuples, whose prefixes are sorted tuples too).

    Args:
        needed: ``needed[k-1]`` are the sorted tuples of order ``k`` that some
            coupling uses (any order; duplicates allowed)

    Returns:
        ``(monomials, prefix, last)``: ``monomials[k-1]`` are the sorted tuples
        evaluated at order ``k`` (the needed ones plus the prefixes that higher orders
        build on, lexicographic); for ``k >= 2``, ``prefix[k-2]`` indexes each one's
        prefix in ``monomials[k-2]`` and ``last[k-2]`` is its last factor ``tk``
        (long tensors of length ``len(monomials[k-1])``).
    """
    max_order = len(needed)
    monomials: List[List[Tuple[int, ...]]] = [[] for _ in range(max_order)]
    wanted = set()
    for k in range(max_order, 0, -1):
        wanted |= set(needed[k - 1])
        monomials[k - 1] = sorted(wanted)
        wanted = {t[:-1] for t in wanted}
    prefix, last = [], []
    for k in range(2, max_order + 1):
        position = {t: i for i, t in enumerate(monomials[k - 2])}
        prefix.append(torch.tensor([position[t[:-1]] for t in monomials[k - 1]], dtype=torch.long))
        last.append(torch.tensor([t[-1] for t in monomials[k - 1]], dtype=torch.long))
    return monomials, prefix, last


def count_symmetric_couplings(l_max: int, order: int, L: int, p: int) -> int:
    """Number of independent couplings ``Sym^order(V) → (L, p)``."""
    return symmetric_coupling_basis(l_max, order, L, p).shape[-1]


__all__ = [
    "atomic_basis_dim",
    "symmetric_coupling_basis",
    "count_symmetric_couplings",
    "sorted_tuple_couplings",
    "monomial_recursion",
]



def coupling_checksum(table: torch.Tensor) -> torch.Tensor:
    """Two numbers that change when a coupling table changes: the sum of its entries and
    their sum weighted by ``cos(position)`` (which also sees reordered or re-signed
    entries). ``(2,)``, float64. Used as a fingerprint of the tables a model is trained with."""
    flat = table.to(torch.float64).reshape(-1)
    weights = torch.cos(torch.arange(flat.numel(), dtype=torch.float64))
    return torch.stack([flat.sum(), (flat * weights).sum()])
