"""Refuse the ghost-atom (``pair_allegro``) input layout for a message-passing model."""

from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin
from nequip.scripts._workflow_utils import get_workflow_state

import torch


class MessagePassingLocalityGuard(GraphModuleMixin, torch.nn.Module):
    r"""Stops a model with more than one layer from running on the ghost-atom graph layout.

    With ``num_layers`` layers the energy of atom ``i`` depends on atoms up to
    ``num_layers · r_max`` away: layer 2 reads the layer-1 features of ``i``'s
    neighbours, and those come from the neighbours' own edges.

    ``pair_style allegro`` (``nequip-compile --target pair_allegro``) and the host's
    ``allegro_data_settings`` hand the model positions of local *and* ghost atoms with
    edges from local atoms only, and no ``edge_cell_shift``: ghost atoms then have no
    edges, their layer-1 features are those of isolated atoms, and every layer after the
    first is wrong — by an amount that changes with the MPI domain decomposition. Only a
    ``num_layers: 1`` model is exact on that route.

    ``nequip-compile`` (host workflow state ``"compile"``) traces the model with exactly
    the input fields of its target: ``pair_nequip``, ``ase`` and ``batch`` all include
    ``edge_cell_shift``; ``pair_allegro`` does not. So while compiling, a graph without
    ``edge_cell_shift`` (and without the ``edge_vectors`` that the ML-IAP route hands in,
    with a ghost exchange between layers) is the ghost-atom layout, and the compile stops
    with one line. Outside ``nequip-compile`` nothing is checked: host data built from a
    dictionary without a cell carries no ``edge_cell_shift`` and is a complete graph.
    No parameters, no buffers: adding it does not change saved state dicts.
    """

    def __init__(self, num_layers: int, irreps_in=None) -> None:
        super().__init__()
        self.num_layers = num_layers
        self._init_irreps(irreps_in=irreps_in)

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        if (
            get_workflow_state() == "compile"
            and AtomicDataDict.EDGE_CELL_SHIFT_KEY not in data
            and AtomicDataDict.EDGE_VECTORS_KEY not in data
        ):
            raise ValueError(
                f"Flash-ACE with num_layers={self.num_layers} is not strictly local and would give wrong energies "
                "and forces on the ghost-atom graph layout (graph has no `edge_cell_shift`, as `nequip-compile "
                "--target pair_allegro` / pair_style allegro give it); only num_layers=1 is allowed there "
                "(configs/flash_ace_local.yaml); use --target pair_nequip for this model"
            )
        return data
