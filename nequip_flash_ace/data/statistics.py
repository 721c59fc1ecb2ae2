"""Per-type reference energies by least squares, as a host data statistic.

The host's ``per_atom_energy_mean`` gives every species the same energy shift. When
the composition varies between frames, the right shifts are the per-type reference
energies ``e_z`` that best explain the total energies from the composition alone,

    e = argmin_e Σ_frames (E_f - Σ_z n_{f z} e_z)^2,

with ``n_{f z}`` the number of atoms of type ``z`` in frame ``f`` (the fit MACE makes
for its ``E0s``). The network then only has to learn what the composition does not
explain. ``FlashACEDataStatisticsManager`` is the host's
``CommonDataStatisticsManager`` plus this fit, available to configs as
``${training_data_stats:per_type_energy_least_squares}`` (a ``{type: e_z}`` dict).
"""

from typing import Any, Dict, List, Optional

import torch
from torchmetrics import Metric

from nequip.data import AtomicDataDict, CommonDataStatisticsManager, DataStatisticsManager
from nequip.utils.logger import RankedLogger

logger = RankedLogger(__name__, rank_zero_only=True)

LEAST_SQUARES_NAME = "per_type_energy_least_squares"


def type_counts(data: AtomicDataDict.Type, num_types: int) -> torch.Tensor:
    """``n_{f z}``: atoms of each type in each frame of a (batched) graph, ``(frames, num_types)``."""
    types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
    if AtomicDataDict.BATCH_KEY in data:
        frame = data[AtomicDataDict.BATCH_KEY].view(-1)
        num_frames = data[AtomicDataDict.NUM_NODES_KEY].shape[0]
    else:
        frame = torch.zeros_like(types)
        num_frames = 1
    counts = torch.zeros(num_frames * num_types, dtype=torch.float64, device=types.device)
    counts.index_add_(0, frame * num_types + types, torch.ones_like(types, dtype=torch.float64))
    return counts.view(num_frames, num_types)


class PerTypeEnergyLeastSquares(Metric):
    """Accumulates the normal equations of the per-type energy fit; ``compute`` solves them.

    State (float64, summed across processes): ``gram = Σ_f n_f n_f^T`` and
    ``rhs = Σ_f n_f E_f``. The solution is the minimum-norm least-squares solution
    ``pinv(gram) rhs``, equal to ``numpy.linalg.lstsq`` on the frames: a type that never
    occurs gets 0, and compositions that cannot separate two types share the energy.
    """

    full_state_update = False

    def __init__(self, num_types: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_types = num_types
        self.add_state("gram", default=torch.zeros(num_types, num_types, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("rhs", default=torch.zeros(num_types, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_frames", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, counts: torch.Tensor, energies: torch.Tensor) -> None:
        counts = counts.to(self.gram)
        energies = energies.reshape(-1).to(self.gram)
        self.gram += counts.T @ counts
        self.rhs += counts.T @ energies
        self.num_frames += counts.shape[0]

    def compute(self) -> torch.Tensor:
        if self.num_frames == 0:
            raise ValueError(f"`{LEAST_SQUARES_NAME}` needs at least one frame with a total energy")
        return torch.linalg.pinv(self.gram, hermitian=True) @ self.rhs


class FlashACEDataStatisticsManager(DataStatisticsManager):
    """The host's common statistics plus ``per_type_energy_least_squares``.

    Args:
        type_names: the model's type names (the fit has one energy per type)
        dataloader_kwargs: as for the host's managers
    """

    def __init__(self, type_names: List[str], dataloader_kwargs: Optional[Dict[str, Any]] = None) -> None:
        # reuse the host's definitions of its common statistics rather than restating them
        common = CommonDataStatisticsManager(dataloader_kwargs=dataloader_kwargs, type_names=type_names)
        metrics = [
            {
                "name": common.names[i],
                "field": common.fields[i],
                "metric": (common[i][0] if common.per_type[i] else common[i]).clone(),
                "per_type": common.per_type[i],
                "ignore_nan": common.ignore_nans[i],
            }
            for i in range(common.num_metrics)
        ]
        super().__init__(metrics=metrics, dataloader_kwargs=dataloader_kwargs, type_names=list(type_names))
        # kept out of the ModuleList: the host indexes its metrics by position
        self._least_squares = [PerTypeEnergyLeastSquares(len(type_names))]

    def forward(self, data: AtomicDataDict.Type):
        super().forward(data)
        if AtomicDataDict.TOTAL_ENERGY_KEY not in data:
            raise KeyError(f"`{LEAST_SQUARES_NAME}` needs `total_energy` in the training data")
        self._least_squares[0].update(
            type_counts(data, len(self.type_names)), data[AtomicDataDict.TOTAL_ENERGY_KEY]
        )

    def compute(self):
        stats = super().compute()
        # torchmetrics squeezes a one-element result to 0-d (a single type): keep it a vector
        solution = self._least_squares[0].compute().reshape(-1)
        shifts = {name: float(v) for name, v in zip(self.type_names, solution)}
        self.stats_dict[LEAST_SQUARES_NAME] = shifts
        logger.info(f"{LEAST_SQUARES_NAME}: {shifts}")
        return stats

    def reset(self):
        super().reset()
        self._least_squares[0].reset()
