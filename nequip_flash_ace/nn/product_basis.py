"""ACE product basis: species-weighted symmetric tensor powers of the atomic basis."""

import math
from typing import List, Optional

import torch
from e3nn.o3._irreps import Irreps

from . import _compat
from .coupling import (
    coupling_checksum,
    atomic_basis_dim,
    monomial_recursion,
    sorted_tuple_couplings,
)


def atomic_basis_irreps(num_features: int, l_max: int) -> Irreps:
    """Irreps ``num_features x (l, (-1)^l)`` for ``l = 0..l_max`` of the atomic basis A."""
    return Irreps([(num_features, (l, (-1) ** l)) for l in range(l_max + 1)])


SPECIES_CONTRACTIONS = ("couplings", "atoms")


def coupling_fingerprint_mismatch(saved: torch.Tensor, expected: torch.Tensor, irreps_out) -> str:
    """Where a saved ``(irrep, order, 2)`` coupling fingerprint differs from this
    version's ("" if nowhere). Tolerances allow a float32 round trip; a changed table
    moves its checksums by O(0.1)."""
    if saved.shape != expected.shape:
        return f"shape {tuple(saved.shape)}, this version {tuple(expected.shape)}"
    saved, expected = saved.to(torch.float64), expected.to(torch.float64)
    bad = ((saved - expected).abs() > 1e-4 + 1e-5 * expected.abs()).any(-1).nonzero().tolist()
    return ", ".join(f"irrep {irreps_out[i].ir} order {k + 1}" for i, k in bad)


class ProductBasis(torch.nn.Module):
    r"""Channel-wise ACE product basis up to correlation order ν.

    For every atom ``i`` of species ``z``, channel ``c`` and output irrep ``(L, p)``:

    .. math::
        B_{i c L M} = \sum_{k=1}^{\nu} \sum_{\eta} W^{(k)}_{z \eta c}
            \sum_{a_1 \dots a_k} U^{(k) L M \eta}_{a_1 \dots a_k}
            A_{i c a_1} \cdots A_{i c a_k}

    where ``a`` runs over the ``D = (l_max+1)^2`` components ``(l, m)`` of one channel
    of the atomic basis and ``U^{(k)}`` are the symmetric generalized Clebsch–Gordan
    coefficients of :func:`~nequip_flash_ace.nn.coupling.symmetric_coupling_basis`.

    Evaluation (same function, cost set by the non-zero couplings):

    1. **monomials over sorted tuples**: ``U`` is symmetric in its factors, so
       ``Σ_a U_a A_{a1}..A_{ak} = Σ_t C_t P_t`` over sorted tuples ``t`` with
       ``P_t = A_{t1}..A_{tk}`` and ``C_t`` the couplings summed over the distinct
       permutations of ``t`` (:func:`~nequip_flash_ace.nn.coupling.sorted_tuple_couplings`;
       tuples whose couplings all vanish are not formed). Each ``P_t`` is its prefix
       monomial times one factor (:func:`~nequip_flash_ace.nn.coupling.monomial_recursion`).
       All orders are stacked into one vector ``P_{ict}`` of ``T`` monomials.
    2. **species step**, one of (chosen by operation count, see ``species_contraction``):

       - ``"couplings"``: the weights are contracted into the couplings once per
         forward pass, ``K_{c t z M} = Σ_η C_{t M η} W_{z η c}``, and every atom takes
         ``B_{icM} = Σ_t P_{ict} K_{c t z_i M}``: ``T·Z·ΣM`` multiply-adds per atom and
         channel (``Z`` species), the cheapest for few species;
       - ``"atoms"``: couplings first, ``Q_{icMη} = Σ_t P_{ict} C_{tMη}``, then the
         atom's own weights, ``B_{icM} = Σ_η W_{z_i η c} Q_{icMη}``:
         ``(T + 1)·Σ_L M_L n_L`` per atom and channel, whatever the number of species.

    There is no constant term: ``A = 0`` (an isolated atom) gives ``B = 0``.

    Args:
        num_features: channels ``c`` (same for input and output)
        l_max: highest ``l`` of the input ``A`` (irreps :func:`atomic_basis_irreps`)
        irreps_out: output irreps; every multiplicity must be ``num_features``.
            Irreps that no coupling of order ``<= correlation_order`` reaches are an error.
        correlation_order: ν, 1 to 4
        num_types: number of species (the weights ``W`` are per species)
        species_contraction: ``"couplings"``, ``"atoms"`` or ``None`` (the one with
            fewer multiply-adds per atom and channel)

    Parameters: ``weights["{i_out}_{k}"]`` of shape ``(num_types, n, num_features)``
    for every output irrep ``i_out`` and order ``k`` with ``n > 0`` couplings.

    Shapes:
        ``A``: ``(num_atoms, irreps_in.dim)`` in e3nn ``mul_ir`` layout;
        ``atom_types``: ``(num_atoms,)``; output ``(num_atoms, irreps_out.dim)``.
    """

    species_contraction: str

    def __init__(
        self,
        num_features: int,
        l_max: int,
        irreps_out,
        correlation_order: int,
        num_types: int,
        species_contraction: Optional[str] = None,
    ) -> None:
        super().__init__()
        if not 1 <= correlation_order <= 4:
            raise ValueError(
                f"`correlation_order` must be 1, 2, 3 or 4, got {correlation_order}"
            )
        if species_contraction is not None and species_contraction not in SPECIES_CONTRACTIONS:
            raise ValueError(
                f"`species_contraction` must be one of {SPECIES_CONTRACTIONS} or None, got {species_contraction!r}"
            )
        self.num_features = num_features
        self.l_max = l_max
        self.correlation_order = correlation_order
        self.num_types = num_types
        self.irreps_in = atomic_basis_irreps(num_features, l_max)
        self.irreps_out = Irreps(irreps_out)
        self.dim_a = atomic_basis_dim(l_max)

        # one weight tensor per (output irrep, order) that has couplings at all; orders
        # without couplings get none, so that every parameter receives a gradient (DDP
        # without find_unused_parameters). Created in the same order and with the same
        # initialisation as before the sparse evaluation, so a seed gives the same model.
        self.out_dims: List[int] = []
        self.num_couplings: List[List[int]] = []
        self.weights = torch.nn.ParameterDict()
        tables = []  # per output irrep, per order: (sorted tuples, C (T_k, M, n_k))
        for i_out, (mul, ir) in enumerate(self.irreps_out):
            if mul != num_features:
                raise ValueError(
                    f"ProductBasis output irreps must all have multiplicity {num_features}, got {self.irreps_out}"
                )
            counts = []
            per_order = []
            for k in range(1, correlation_order + 1):
                tuples, coeffs = sorted_tuple_couplings(l_max, k, ir.l, ir.p)
                n = coeffs.shape[-1]
                counts.append(n)
                per_order.append((tuples, coeffs))
                if n == 0:
                    continue
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
            tables.append(per_order)

        # === monomial tables: every sorted tuple some coupling uses, plus prefixes ===
        needed = [
            [t for per_order in tables for t in per_order[k - 1][0]]
            for k in range(1, correlation_order + 1)
        ]
        monomials, prefix, last = monomial_recursion(needed)
        self.num_monomials_per_order: List[int] = [len(m) for m in monomials]
        self.num_monomials = sum(self.num_monomials_per_order)
        # the buffers are derived from the hyperparameters, so they stay out of the
        # state dict (checkpoints hold only the weights, as before)
        self.register_buffer(
            "first_order_index",
            torch.tensor([t[0] for t in monomials[0]], dtype=torch.long),
            persistent=False,
        )
        for k in range(2, correlation_order + 1):
            self.register_buffer(f"prefix_index_{k}", prefix[k - 2], persistent=False)
            self.register_buffer(f"last_factor_index_{k}", last[k - 2], persistent=False)

        # === coupling matrices on the stacked monomials, per output irrep ===
        row_offset = [sum(self.num_monomials_per_order[: k - 1]) for k in range(1, correlation_order + 1)]
        position = [{t: i for i, t in enumerate(m)} for m in monomials]
        dtype = torch.get_default_dtype()
        self.num_couplings_total: List[int] = []
        # (irrep, order, 2) checksums of the tables, saved with the weights: a checkpoint
        # trained with other tables is refused on load (see _load_from_state_dict)
        fingerprint = torch.zeros(len(tables), correlation_order, 2, dtype=torch.float64)
        for i_out, per_order in enumerate(tables):
            for k, (_, coeffs) in enumerate(per_order, start=1):
                fingerprint[i_out, k - 1] = coupling_checksum(coeffs)
            n_total = sum(c.shape[-1] for _, c in per_order)
            coupling = torch.zeros(self.num_monomials, self.out_dims[i_out], n_total, dtype=torch.float64)
            col = 0
            for k, (tuples, coeffs) in enumerate(per_order, start=1):
                n = coeffs.shape[-1]
                for t, row in zip(tuples, coeffs):
                    coupling[row_offset[k - 1] + position[k - 1][t], :, col : col + n] = row
                col += n
            self.register_buffer(f"coupling_{i_out}", coupling.to(dtype), persistent=False)
            self.num_couplings_total.append(n_total)
        self.register_buffer("coupling_fingerprint", fingerprint.to(dtype))

        sum_m = sum(self.out_dims)
        sum_mn = sum(m * n for m, n in zip(self.out_dims, self.num_couplings_total))
        self.macs_per_atom_channel = {
            "couplings": self.num_monomials * num_types * sum_m,
            "atoms": (self.num_monomials + 1) * sum_mn,
        }
        if species_contraction is None:
            species_contraction = min(SPECIES_CONTRACTIONS, key=self.macs_per_atom_channel.get)
        self.species_contraction = species_contraction

    def _weights(self, i_out: int) -> torch.Tensor:
        """``W`` of output irrep ``i_out``, all orders stacked: ``(num_types, n_total, c)``."""
        return torch.cat(
            [
                self.weights[f"{i_out}_{k}"]
                for k in range(1, self.correlation_order + 1)
                if self.num_couplings[i_out][k - 1] > 0
            ],
            dim=1,
        )

    def monomials(self, atomic_basis: torch.Tensor) -> torch.Tensor:
        """``P_{c t i} = A_{i c t1} ... A_{i c tk}`` for all formed sorted tuples ``t``.

        Args:
            atomic_basis: ``(num_atoms, irreps_in.dim)`` in ``mul_ir`` layout

        Returns:
            ``(num_features, num_monomials, num_atoms)``, orders ``1..ν`` stacked
        """
        num_atoms = atomic_basis.shape[0]
        c = self.num_features
        # mul_ir layout -> (channels, D, atoms) with D running over (l, m): building a
        # monomial copies contiguous rows over atoms, and the channel-wise contraction
        # below is one batched matmul on contiguous matrices (forward and backward)
        blocks = []
        start = 0
        for l in range(self.l_max + 1):  # noqa: E741
            width = c * (2 * l + 1)
            blocks.append(atomic_basis.narrow(1, start, width).reshape(num_atoms, c, 2 * l + 1))
            start += width
        a = torch.cat(blocks, dim=-1).permute(1, 2, 0).contiguous()  # (c, D, atoms)

        p = torch.index_select(a, 1, self.first_order_index)
        orders = [p]
        for k in range(2, self.correlation_order + 1):
            # P_(t1..tk) = P_(t1..t(k-1)) * A_tk
            p = torch.index_select(p, 1, getattr(self, f"prefix_index_{k}")) * torch.index_select(
                a, 1, getattr(self, f"last_factor_index_{k}")
            )
            orders.append(p)
        return torch.cat(orders, dim=1)

    def forward(self, atomic_basis: torch.Tensor, atom_types: torch.Tensor) -> torch.Tensor:
        p = self.monomials(atomic_basis)  # (c, T, atoms)
        c, num_atoms = p.shape[0], p.shape[2]
        outs = []
        if self.species_contraction == "couplings":
            # K_{c z M t} = Σ_η C_{t M η} W_{z η c}: once per call, never per atom
            species_couplings = []
            for i_out, m in enumerate(self.out_dims):
                coupling = getattr(self, f"coupling_{i_out}")  # (T, M, n)
                w = self._weights(i_out)  # (Z, n, c)
                n = w.shape[1]
                k = torch.matmul(
                    coupling.reshape(-1, n), w.transpose(0, 1).reshape(n, -1)
                )  # (T*M, Z*c)
                species_couplings.append(k.reshape(self.num_monomials, m, self.num_types, c))
            k = torch.cat(species_couplings, dim=1)  # (T, ΣM, Z, c)
            sum_m = k.shape[1]
            k = k.permute(3, 2, 1, 0).reshape(c, self.num_types * sum_m, self.num_monomials)
            # B_{c zM i} = Σ_t K_{c zM t} P_{t c i}: one (Z·ΣM, T) x (T, atoms) product per channel
            b = torch.bmm(k, p)  # (c, Z*ΣM, atoms)
            if self.num_types > 1:
                # keep the atom's own species: a static-shape gather, no masks
                b = torch.gather(
                    b.view(c, self.num_types, sum_m, num_atoms),
                    1,
                    atom_types.view(1, 1, 1, num_atoms).expand(c, 1, sum_m, num_atoms),
                )
            b = b.reshape(c, sum_m, num_atoms)
            start = 0
            for m in self.out_dims:
                outs.append(b.narrow(1, start, m).permute(2, 0, 1).reshape(num_atoms, c * m))
                start += m
        else:
            for i_out, m in enumerate(self.out_dims):
                coupling = getattr(self, f"coupling_{i_out}")  # (T, M, n)
                n = coupling.shape[-1]
                # Q_{c Mη i} = Σ_t C_{t M η} P_{c t i}: couplings shared by all channels
                q = torch.matmul(coupling.reshape(self.num_monomials, m * n).t(), p)
                q = q.view(c, m, n, num_atoms)
                # W_{z_i η c} per atom: only n numbers per atom and channel
                w = torch.index_select(self._weights(i_out), 0, atom_types)  # (atoms, n, c)
                b = (q * w.permute(2, 1, 0).unsqueeze(1)).sum(2)  # (c, M, atoms)
                outs.append(b.permute(2, 0, 1).reshape(num_atoms, c * m))
        return torch.cat(outs, dim=-1)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        _compat.check_and_drop_dense_couplings(self, state_dict, prefix, error_msgs)
        _compat.add_missing_coupling_fingerprint(self, state_dict, prefix)
        # the coupling tables are rebuilt from the hyperparameters, never loaded: the saved
        # fingerprint says whether they are the tables the weights were trained with
        saved = state_dict.get(prefix + "coupling_fingerprint")
        if saved is not None:
            mismatch = coupling_fingerprint_mismatch(saved, self.coupling_fingerprint, self.irreps_out)
            if mismatch:
                error_msgs.append(
                    f"{prefix}coupling_fingerprint: {mismatch}: this version builds other coupling tables than the "
                    "checkpoint was trained with, so its weights would compute a different model; load it with the "
                    "nequip-flash-ace version that wrote it"
                )
                state_dict[prefix + "coupling_fingerprint"] = self.coupling_fingerprint.clone()
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation_order={self.correlation_order}, "
            f"couplings per (irrep, order)={self.num_couplings}, "
            f"monomials per order={self.num_monomials_per_order}, "
            f"species_contraction={self.species_contraction!r}"
        )
