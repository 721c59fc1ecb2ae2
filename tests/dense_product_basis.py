"""The dense ACE product basis, kept as the reference for the sparse one.

This is the package's ``ProductBasis`` as it was before the sparse evaluation
(commit f7affaa): for every atom it contracts the full coupling tensor
``U^(k)`` of shape ``(D,)*k + (M, n)`` with that atom's species weights. It is slow
and memory-hungry but follows the equation literally; ``tests/test_product_basis.py``
checks the package's sparse evaluation against it (values and derivatives).
"""

import math
from typing import List

import torch
from e3nn.o3._irreps import Irreps

from nequip_flash_ace.nn.coupling import atomic_basis_dim, symmetric_coupling_basis


from nequip_flash_ace.nn.product_basis import atomic_basis_irreps


class DenseProductBasis(torch.nn.Module):
    r"""Channel-wise ACE product basis up to correlation order ν.

    For every atom ``i`` of species ``z``, channel ``c`` and output irrep ``(L, p)``:

    .. math::
        B_{i c L M} = \sum_{k=1}^{\nu} \sum_{\eta} W^{(k)}_{z \eta c}
            \sum_{a_1 \dots a_k} U^{(k) L M \eta}_{a_1 \dots a_k}
            A_{i c a_1} \cdots A_{i c a_k}

    where ``a`` runs over the ``D = (l_max+1)^2`` components ``(l, m)`` of one channel
    of the atomic basis and ``U^{(k)}`` are the symmetric generalized Clebsch–Gordan
    coefficients of :func:`~nequip_flash_ace.nn.coupling.symmetric_coupling_basis`.
    The sum is evaluated Horner-style from the highest order down, so the largest
    intermediate is ``(num_atoms, channels, D^(ν-1), 2L+1)``.

    There is no constant term: ``A = 0`` (an isolated atom) gives ``B = 0``.

    Args:
        num_features: channels ``c`` (same for input and output)
        l_max: highest ``l`` of the input ``A`` (irreps :func:`atomic_basis_irreps`)
        irreps_out: output irreps; every multiplicity must be ``num_features``.
            Irreps that no coupling of order ``<= correlation_order`` reaches are an error.
        correlation_order: ν, 1 to 4
        num_types: number of species (the weights ``W`` are per species)

    Shapes:
        ``A``: ``(num_atoms, irreps_in.dim)`` in e3nn ``mul_ir`` layout;
        ``atom_types``: ``(num_atoms,)``; output ``(num_atoms, irreps_out.dim)``.
    """

    def __init__(
        self,
        num_features: int,
        l_max: int,
        irreps_out,
        correlation_order: int,
        num_types: int,
    ) -> None:
        super().__init__()
        if not 1 <= correlation_order <= 4:
            raise ValueError(
                f"`correlation_order` must be 1, 2, 3 or 4, got {correlation_order}"
            )
        self.num_features = num_features
        self.l_max = l_max
        self.correlation_order = correlation_order
        self.irreps_in = atomic_basis_irreps(num_features, l_max)
        self.irreps_out = Irreps(irreps_out)
        self.dim_a = atomic_basis_dim(l_max)

        # one coupling buffer and one weight tensor per (output irrep, order) that has
        # couplings at all; orders without couplings get neither, so that every
        # parameter receives a gradient (DDP without find_unused_parameters)
        self.out_dims: List[int] = []
        self.num_couplings: List[List[int]] = []
        self.weights = torch.nn.ParameterDict()
        dtype = torch.get_default_dtype()
        for i_out, (mul, ir) in enumerate(self.irreps_out):
            if mul != num_features:
                raise ValueError(
                    f"ProductBasis output irreps must all have multiplicity {num_features}, got {self.irreps_out}"
                )
            counts = []
            for k in range(1, correlation_order + 1):
                u = symmetric_coupling_basis(l_max, k, ir.l, ir.p)
                n = u.shape[-1]
                counts.append(n)
                if n == 0:
                    continue
                self.register_buffer(f"coupling_{i_out}_{k}", u.to(dtype))
                # variance-preserving init across the n couplings of this order
                self.weights[f"{i_out}_{k}"] = torch.nn.Parameter(
                    torch.randn(num_types, n, num_features) / math.sqrt(n)
                )
            if sum(counts) == 0:
                raise ValueError(
                    f"output irrep {ir} cannot be reached from atomic-basis irreps up to l_max={l_max} "
                    f"with correlation_order={correlation_order}"
                )
            self.num_couplings.append(counts)
            self.out_dims.append(ir.dim)

    def _coupling(self, i_out: int, k: int) -> torch.Tensor:
        return getattr(self, f"coupling_{i_out}_{k}")

    def forward(self, atomic_basis: torch.Tensor, atom_types: torch.Tensor) -> torch.Tensor:
        num_atoms = atomic_basis.shape[0]
        c = self.num_features
        # mul_ir layout -> (atoms, channels, D) with D running over (l, m)
        blocks = []
        start = 0
        for l in range(self.l_max + 1):  # noqa: E741
            width = c * (2 * l + 1)
            blocks.append(
                atomic_basis.narrow(1, start, width).reshape(num_atoms, c, 2 * l + 1)
            )
            start += width
        a = torch.cat(blocks, dim=-1)  # (atoms, c, D)

        outs = []
        for i_out, out_dim in enumerate(self.out_dims):
            # Horner: acc holds Σ_{k'>k} (U W)^(k') contracted with A (k'-k) times
            acc = None
            for k in range(self.correlation_order, 0, -1):
                n = self.num_couplings[i_out][k - 1]
                if n > 0:
                    w = self.weights[f"{i_out}_{k}"]
                    u = self._coupling(i_out, k)  # (D,)*k + (M, n)
                    u = u.reshape(-1, n)  # (D^k * M, n)
                    w_atoms = torch.index_select(w, 0, atom_types)  # (atoms, n, c)
                    term = torch.matmul(u, w_atoms)  # (atoms, D^k*M, c)
                    # (atoms, c, D^(k-1), D, M): the last factor a_k next to M
                    term = term.transpose(1, 2).reshape(
                        num_atoms, c, -1, self.dim_a, out_dim
                    )
                    acc = term if acc is None else acc + term
                if acc is not None:
                    # contract the last factor with A:  Σ_a X[..., a, M] A[a]
                    x = acc.reshape(num_atoms, c, -1, self.dim_a, out_dim)
                    acc = torch.einsum("bcxam,bca->bcxm", x, a)
                    if k > 1:
                        acc = acc.reshape(num_atoms, c, -1, self.dim_a, out_dim)
            assert acc is not None
            outs.append(acc.reshape(num_atoms, c * out_dim))
        return torch.cat(outs, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation_order={self.correlation_order}, "
            f"couplings per (irrep, order)={self.num_couplings}"
        )
