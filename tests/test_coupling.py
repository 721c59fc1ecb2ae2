"""Generalized Clebsch–Gordan coefficients and the product basis, as separate units."""

import itertools
import math

import pytest
import torch
from e3nn import o3

from nequip_flash_ace.nn import ProductBasis, symmetric_coupling_basis
from nequip_flash_ace.nn.coupling import atomic_basis_dim

CASES = [(l_max, nu) for l_max in (0, 1, 2) for nu in (1, 2, 3, 4)] + [(3, 2), (3, 3)]


def _sym_power_character(chi, nu):
    """Character of Sym^ν from the characters chi(k) of g^k (cycle-index formula)."""
    if nu == 1:
        return chi(1)
    if nu == 2:
        return (chi(1) ** 2 + chi(2)) / 2
    if nu == 3:
        return (chi(1) ** 3 + 3 * chi(1) * chi(2) + 2 * chi(3)) / 6
    if nu == 4:
        return (
            chi(1) ** 4 + 6 * chi(1) ** 2 * chi(2) + 3 * chi(2) ** 2 + 8 * chi(1) * chi(3) + 6 * chi(4)
        ) / 24
    raise ValueError(nu)


def _multiplicity_by_characters(l_max, nu, L, p, num_points=4000):
    """Multiplicity of (L, p) in Sym^ν(⊕_l l^{(-1)^l}) by integrating characters over O(3).

    Independent of the coupling code: only the SO(3) character formula, the Haar
    measure (1 - cos θ)/π on the rotation angle, and inversion acting as parity.
    """
    theta = (torch.arange(num_points, dtype=torch.float64) + 0.5) * math.pi / num_points
    weight = (1 - torch.cos(theta)) / math.pi * (math.pi / num_points)

    def chi_l(l, angle):  # noqa: E741
        return torch.sin((2 * l + 1) * angle / 2) / torch.sin(angle / 2)

    def chi_v(k, inverted):
        angle = k * theta
        sign = (-1) ** k if inverted else 1  # (-R)^k = (-1)^k R^k
        total = torch.zeros_like(theta)
        for l in range(l_max + 1):  # noqa: E741
            parity = (-1) ** l
            total = total + (parity if sign == -1 else 1) * chi_l(l, angle)
        return total

    proper = _sym_power_character(lambda k: chi_v(k, False), nu) * chi_l(L, theta)
    improper = _sym_power_character(lambda k: chi_v(k, True), nu) * p * chi_l(L, theta)
    return float(((proper + improper) * weight).sum() / 2)


@pytest.mark.parametrize("l_max,nu", CASES)
def test_coupling_count_matches_character_theory(l_max, nu):
    for L in range(0, 3):
        for p in (1, -1):
            n = symmetric_coupling_basis(l_max, nu, L, p).shape[-1]
            expected = _multiplicity_by_characters(l_max, nu, L, p)
            assert abs(expected - round(expected)) < 1e-6, expected
            assert n == round(expected), f"l_max={l_max} ν={nu} L={L} p={p}: {n} vs {expected}"


@pytest.mark.parametrize("l_max,nu", CASES)
def test_couplings_full_rank_and_symmetric(l_max, nu):
    for L in range(3):
        for p in (1, -1):
            u = symmetric_coupling_basis(l_max, nu, L, p)
            n = u.shape[-1]
            if n == 0:
                continue
            flat = u.reshape(-1, n)
            assert torch.linalg.matrix_rank(flat) == n
            for perm in itertools.permutations(range(nu)):
                permuted = u.permute(perm + (nu, nu + 1))
                torch.testing.assert_close(permuted, u, atol=1e-12, rtol=0)


@pytest.mark.parametrize("l_max,nu", CASES)
def test_couplings_equivariant(l_max, nu):
    """U[a1..aν, M] D(g)_{a1 b1}...D(g)_{aν bν} = D_L(g)_{M N} U[b1..bν, N] for random O(3) g."""
    irreps_v = o3.Irreps([(1, (l, (-1) ** l)) for l in range(l_max + 1)])
    torch.manual_seed(0)
    for _ in range(3):
        rot = o3.rand_matrix(dtype=torch.float64)
        for g in (rot, -rot):
            d_v = irreps_v.D_from_matrix(g)
            for L in range(3):
                for p in (1, -1):
                    u = symmetric_coupling_basis(l_max, nu, L, p)
                    if u.shape[-1] == 0:
                        continue
                    d_out = o3.Irrep(L, p).D_from_matrix(g)
                    lhs = u
                    for axis in range(nu):
                        lhs = torch.tensordot(d_v.T, lhs, dims=([1], [axis])).movedim(0, axis)
                    rhs = torch.einsum("...mk,mn->...nk", u, d_out.T)
                    torch.testing.assert_close(lhs, rhs, atol=1e-10, rtol=0)


@pytest.mark.parametrize("l_max", [1, 2, 3])
def test_nu2_invariants_are_power_spectrum(l_max):
    """Each ν=2, L=0 coupling is c · Σ_m A_lm A_lm for one l, and every l appears once."""
    u = symmetric_coupling_basis(l_max, 2, 0, 1)[..., 0, :]  # (D, D, n)
    assert u.shape[-1] == l_max + 1
    found = []
    for k in range(u.shape[-1]):
        mat = u[..., k]
        for l in range(l_max + 1):  # noqa: E741
            block = torch.zeros_like(mat)
            block[l * l : (l + 1) ** 2, l * l : (l + 1) ** 2] = torch.eye(2 * l + 1, dtype=mat.dtype)
            factor = (mat * block).sum() / (block * block).sum()
            if torch.allclose(mat, factor * block, atol=1e-12) and abs(factor) > 1e-6:
                found.append(l)
    assert sorted(found) == list(range(l_max + 1))


def test_nu2_product_basis_is_power_spectrum():
    """The ProductBasis module with ν=2 gives B_c = Σ_l (w1 A_00 + w2_l Σ_m A_lm A_lm) per channel."""
    torch.manual_seed(0)
    with torch.random.fork_rng():
        pb = ProductBasis(num_features=3, l_max=2, irreps_out="3x0e", correlation_order=2, num_types=1).double()
    a = torch.randn(5, pb.irreps_in.dim, dtype=torch.float64)
    types = torch.zeros(5, dtype=torch.long)
    out = pb(a, types)
    # rebuild from the power spectrum with the module's own weights
    u2 = symmetric_coupling_basis(2, 2, 0, 1)[..., 0, :]
    w1, w2 = pb.weights["0_1"][0], pb.weights["0_2"][0]  # (1, c), (n2, c)
    blocks = [a[:, :3].reshape(5, 3, 1), a[:, 3:12].reshape(5, 3, 3), a[:, 12:].reshape(5, 3, 5)]
    power = torch.stack([(b * b).sum(-1) for b in blocks], dim=-1)  # (atoms, c, l)
    factors = torch.stack([u2[l * l, l * l, :] for l in range(3)])  # (l, n2)
    expected = blocks[0][..., 0] * w1[0] + torch.einsum("bcl,ln,nc->bc", power, factors, w2)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("nu", [1, 2, 3, 4])
def test_product_basis_equivariant_and_zero_at_zero(nu):
    torch.manual_seed(nu)
    pb = ProductBasis(4, 2, "4x0e+4x1o+4x2e", nu, num_types=3).double()
    a = torch.randn(7, pb.irreps_in.dim, dtype=torch.float64)
    types = torch.randint(0, 3, (7,))
    for _ in range(3):
        rot = o3.rand_matrix(dtype=torch.float64)
        for g in (rot, -rot):
            d_in = pb.irreps_in.D_from_matrix(g)
            d_out = pb.irreps_out.D_from_matrix(g)
            torch.testing.assert_close(pb(a @ d_in.T, types), pb(a, types) @ d_out.T, atol=1e-10, rtol=0)
    assert pb(torch.zeros_like(a), types).abs().max() == 0


def test_product_basis_is_polynomial_of_degree_nu():
    """B(t A) is a polynomial in t of degree exactly ν with no constant term."""
    torch.manual_seed(3)
    nu = 3
    pb = ProductBasis(2, 1, "2x0e+2x1o", nu, num_types=1).double()
    a = torch.randn(4, pb.irreps_in.dim, dtype=torch.float64)
    types = torch.zeros(4, dtype=torch.long)
    ts = torch.linspace(-2, 2, 9, dtype=torch.float64)
    values = torch.stack([pb(t * a, types) for t in ts])  # (9, atoms, dim)
    vander = torch.stack([ts**k for k in range(nu + 1)], dim=1)  # (9, ν+1)
    coeffs = torch.linalg.lstsq(vander, values.reshape(9, -1)).solution
    residual = vander @ coeffs - values.reshape(9, -1)
    assert residual.abs().max() < 1e-10
    assert coeffs[0].abs().max() < 1e-10  # no constant term
    assert coeffs[nu].abs().max() > 1e-3  # the top order is used


def test_coupling_cache_is_fast():
    import time

    start = time.perf_counter()
    for l_max in (1, 2, 3):
        for nu in (1, 2, 3):
            for L in range(3):
                symmetric_coupling_basis(l_max, nu, L, (-1) ** L)
    # cached: a second sweep is a dictionary look-up
    start = time.perf_counter()
    symmetric_coupling_basis(3, 3, 1, -1)
    assert atomic_basis_dim(3) == 16
    assert time.perf_counter() - start < 1.0
