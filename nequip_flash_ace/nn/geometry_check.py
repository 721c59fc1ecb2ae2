"""Refuse structures for which no energy can be right: non-finite coordinates, atoms on
top of each other."""

import math

import torch

from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin, with_edge_vectors_


def _traced() -> bool:
    """Whether this forward pass is being traced into a graph (``torch.compile``,
    ``torch.export``, or the host's ``make_fx`` in ``nequip-compile``, also of a packaged
    model) rather than run: a traced graph cannot branch on a tensor's value."""
    if torch.compiler.is_compiling():
        return True
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return get_proxy_mode() is not None


class InputGeometryCheck(GraphModuleMixin, torch.nn.Module):
    r"""Stops the model on a structure it cannot describe, naming the atoms.

    Two things make every prediction wrong without any sign of it:

    - a non-finite position (or cell): the neighbour list drops such an atom silently,
      so it would count as isolated and the energy would stay finite;
    - two atoms closer than ``min_distance`` (Å): no training set holds such pairs, and
      at zero distance the edge direction is undefined (NaN forces, finite energy).

    Run from Python (eager model, ASE calculator on a checkpoint) the model raises a
    ``ValueError`` whose one line names the atoms. A compiled model (``nequip-compile``,
    train-time ``torch.compile``) cannot raise a message from inside its graph, so there
    the site energies are poisoned instead: energy, forces and stress come out NaN, which
    ``nequip_flash_ace.integrations.ase.FlashACECalculator`` turns into the same one-line
    error, and which stops an MD engine at its next energy output.

    Placed after the per-type scale and shift, so the edge lengths it reads are the ones
    the model already computed. No parameters and no buffers.

    Args:
        min_distance: shortest allowed distance between two atoms (Å); ``0`` switches the
            distance check off (the non-finite check always runs)
    """

    def __init__(self, min_distance: float = 0.1, irreps_in=None) -> None:
        super().__init__()
        if not (min_distance >= 0 and math.isfinite(min_distance)):
            raise ValueError(f"`min_atom_distance` must be a finite number >= 0 (Å), got {min_distance}")
        self.min_distance = float(min_distance)
        self._init_irreps(irreps_in=irreps_in)

    def _bad_atoms(self, data: AtomicDataDict.Type):
        """(atoms with a non-finite position, edges shorter than ``min_distance``, whether
        any cell is non-finite), as boolean masks."""
        lengths = data[AtomicDataDict.EDGE_LENGTH_KEY].view(-1)
        short = lengths < self.min_distance
        # the ML-IAP route hands in edge vectors, not positions
        if AtomicDataDict.POSITIONS_KEY in data:
            bad_pos = ~torch.isfinite(data[AtomicDataDict.POSITIONS_KEY]).all(dim=-1)
        else:
            bad_pos = torch.zeros(1, dtype=torch.bool, device=lengths.device)
        bad_cell = torch.zeros((), dtype=torch.bool, device=lengths.device)
        if AtomicDataDict.CELL_KEY in data:
            bad_cell = ~torch.isfinite(data[AtomicDataDict.CELL_KEY]).all()
        return bad_pos, short, bad_cell

    @torch.jit.unused
    def _raise(self, data: AtomicDataDict.Type, bad_pos, short, bad_cell) -> None:
        if bool(bad_cell):
            raise ValueError("Flash-ACE input: the cell is not finite; no energy can be right for this structure")
        if bool(bad_pos.any()):
            atoms = bad_pos.nonzero().view(-1).tolist()
            first = data[AtomicDataDict.POSITIONS_KEY][atoms[0]].detach().tolist()
            raise ValueError(
                f"Flash-ACE input: atom(s) {atoms[:10]}{' ...' if len(atoms) > 10 else ''} have a non-finite "
                f"position (atom {atoms[0]}: {first}); no energy can be right for this structure"
            )
        if bool(short.any()):
            edges = short.nonzero().view(-1)
            lengths = data[AtomicDataDict.EDGE_LENGTH_KEY].detach().view(-1)[edges]
            closest = int(edges[torch.argmin(lengths)])
            i, j = data[AtomicDataDict.EDGE_INDEX_KEY][:, closest].tolist()
            raise ValueError(
                f"Flash-ACE input: atoms {i} and {j} are {float(lengths.min()):.3g} Å apart, closer than "
                f"min_atom_distance = {self.min_distance:g} Å ({edges.numel() // 2 or 1} such pair(s)); "
                "set the FlashACEModel keyword `min_atom_distance` (0 = no check) if this is intended"
            )

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        if AtomicDataDict.EDGE_LENGTH_KEY not in data:
            data = with_edge_vectors_(data, with_lengths=True)
        bad_pos, short, bad_cell = self._bad_atoms(data)
        bad = bad_pos.any() | short.any() | bad_cell
        if not _traced():
            if bool(bad):
                self._raise(data, bad_pos, short, bad_cell)
            return data
        # compiled: NaN energies, and NaN forces through a term that depends on the
        # geometry (0 · x on a good structure, where x is finite: nothing changes there)
        energy = data[AtomicDataDict.PER_ATOM_ENERGY_KEY]
        poison = torch.where(bad, torch.full_like(energy, math.nan), torch.zeros_like(energy))
        geometry = data[AtomicDataDict.EDGE_LENGTH_KEY].sum()
        if AtomicDataDict.POSITIONS_KEY in data:
            geometry = geometry + data[AtomicDataDict.POSITIONS_KEY].sum()
        data[AtomicDataDict.PER_ATOM_ENERGY_KEY] = energy + poison * geometry
        return data
