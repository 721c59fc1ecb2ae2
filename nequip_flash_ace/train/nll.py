"""The Gaussian negative log-likelihood of the energy, as a host metric (loss term)."""

import torch

from nequip.data import AtomicDataDict
from nequip.data.stats import _MeanX

from .. import _keys


class EnergyGaussianNLL(_MeanX):
    """Mean Gaussian negative log-likelihood of the per-atom energy error under the model's
    own energy uncertainty, for a shallow ensemble (``num_energy_heads`` > 1):

        NLL = ½ [ (ΔE/N)² / (σ_E/N)² + ln (σ_E/N)² ]        per structure of N atoms,

    up to a constant, ``ΔE`` the error of the ensemble-mean energy and ``σ_E`` its spread
    (``total_energy_uncertainty``). ``ΔE`` enters without gradient, so this term trains the
    spread of the heads (and the shared layers through it) to match the errors, while the
    usual energy and force losses alone train the prediction.

    Use it in the host's ``MetricsManager`` with ``field: null`` (it reads both dicts), e.g.
    as ``extra_metrics`` of ``nequip.train.EnergyForceStressLoss``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def update(self, preds: AtomicDataDict.Type, target: AtomicDataDict.Type) -> None:
        if _keys.TOTAL_ENERGY_UNCERTAINTY not in preds:
            raise KeyError(
                "EnergyGaussianNLL needs the model's `total_energy_uncertainty`: train a shallow ensemble "
                "(`num_energy_heads` >= 2)"
            )
        num_atoms = preds[AtomicDataDict.NUM_NODES_KEY].reshape(-1, 1).to(torch.float64)
        error = (preds[AtomicDataDict.TOTAL_ENERGY_KEY].detach() - target[AtomicDataDict.TOTAL_ENERGY_KEY]) / num_atoms
        variance = (preds[_keys.TOTAL_ENERGY_UNCERTAINTY] / num_atoms).square()
        super().update(0.5 * (error.square() / variance + torch.log(variance)))

    def __str__(self) -> str:
        return "nll"
