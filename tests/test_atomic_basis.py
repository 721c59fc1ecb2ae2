"""``AtomicBasis`` equals the host's ``TensorProductScatter`` with the same instructions.

The host module (e3nn ``TensorProduct``, ``uvu``, per-edge weights, then a scatter-sum)
is what the layer used before; it stays the reference here. Values, first and second
derivatives w.r.t. features, spherical harmonics and edge weights, in float64.
"""

import pytest
import torch
from e3nn import o3

from nequip.nn._tp_scatter_base import TensorProductScatter

from nequip_flash_ace.nn.atomic_basis import AtomicBasis
from nequip_flash_ace.nn.product_basis import atomic_basis_irreps


def _host_reference(feature_irreps_in, sh_irreps, irreps_a):
    """The layer's previous construction: instructions in loop order, outputs sorted."""
    irreps_mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(feature_irreps_in):
        for j, (_, ir_edge) in enumerate(sh_irreps):
            for ir_out in ir_in * ir_edge:
                if ir_out in irreps_a:
                    instructions.append((i, j, len(irreps_mid), "uvu", True))
                    irreps_mid.append((mul, ir_out))
    irreps_mid, perm, _ = o3.Irreps(irreps_mid).sort()
    instructions = [(i1, i2, perm[o], m, t) for i1, i2, o, m, t in instructions]
    return TensorProductScatter(feature_irreps_in, sh_irreps, irreps_mid, instructions), irreps_mid


@pytest.mark.parametrize(
    "features,l_max",
    [("4x0e", 2), ("4x0e+4x1o", 2), ("4x0e+4x1o+4x2e", 2), ("3x0e+3x1o", 1), ("3x0e+3x1o", 3), ("2x0e", 0)],
)
def test_atomic_basis_equals_host_tensor_product_scatter(features, l_max):
    torch.manual_seed(l_max)
    feature_irreps = o3.Irreps(features)
    sh_irreps = o3.Irreps.spherical_harmonics(l_max)
    irreps_a = atomic_basis_irreps(feature_irreps[0].mul, l_max)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ours = AtomicBasis(feature_irreps, sh_irreps, irreps_a)
        host, irreps_mid = _host_reference(feature_irreps, sh_irreps, irreps_a)
    finally:
        torch.set_default_dtype(previous)
    assert ours.irreps_out == irreps_mid
    assert ours.num_weights == host.tp.weight_numel

    num_nodes, num_edges = 6, 17
    x = torch.randn(num_nodes, feature_irreps.dim, dtype=torch.float64, requires_grad=True)
    vec = torch.randn(num_edges, 3, dtype=torch.float64)
    y = o3.spherical_harmonics(sh_irreps, vec, normalize=True).requires_grad_(True)
    w = torch.randn(num_edges, ours.num_weights, dtype=torch.float64, requires_grad=True)
    center = torch.randint(0, num_nodes, (num_edges,))
    neighbour = torch.randint(0, num_nodes, (num_edges,))
    probe = torch.randn(num_nodes, irreps_mid.dim, dtype=torch.float64)
    tangents = [torch.randn_like(t) for t in (x, y, w)]

    def derivatives(out):
        first = torch.autograd.grad((out * probe).sum(), [x, y, w], create_graph=True)
        second = torch.autograd.grad(sum((g * t).sum() for g, t in zip(first, tangents)), [x, y, w])
        return [out] + list(first) + list(second)

    got = derivatives(ours(x, y, w, center, neighbour, num_nodes))
    ref = derivatives(host(x, y, w, edge_dst=center, edge_src=neighbour))
    for g, r in zip(got, ref):
        assert (g - r).abs().max() <= 1e-12 * r.abs().max().clamp(min=1.0)

    # the ghost-atom layout: edges start at the first 4 (local) atoms only, and the sum
    # is sized to them; it equals the host's rows of those atoms
    local = 4
    center = torch.randint(0, local, (num_edges,))
    got = ours(x, y, w, center, neighbour, local)
    ref = host(x, y, w, edge_dst=center, edge_src=neighbour)
    assert got.shape == (local, irreps_mid.dim)
    assert (got - ref[:local]).abs().max() <= 1e-12 * ref.abs().max().clamp(min=1.0)

