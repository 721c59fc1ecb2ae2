"""The Gaussian negative log-likelihood of the energy, as a host metric (loss term)."""

import torch

from nequip.data import AtomicDataDict
from nequip.data.stats import _MeanX

from .. import _keys


class EnergyGaussianNLL(_MeanX):
    """Gaussian negative log-likelihood of the per-atom energy error under the model's own
    energy uncertainty, for a shallow ensemble (``num_energy_heads`` > 1), in its β-NLL
    form with β = 1 (Seitzer et al., ICLR 2022):

        L = v̄ · ½ [ e² / v + ln v ],      e = ΔE/N,  v = (σ_E/N)²,  v̄ = v without gradient,

    per structure of ``N`` atoms, averaged; ``ΔE`` is the error of the ensemble-mean energy
    and ``σ_E`` its spread (``total_energy_uncertainty``). The likelihood alone
    (``v̄ = 1``) has gradients of order ``1/σ``, thousands of times the squared errors' at
    meV accuracy, and drowned the energy and force losses of the shared layers in our
    trainings; the weight ``v̄`` brings them to the size of the squared error's and keeps the
    optimum where it was, ``v = e²``. ``e`` enters without gradient, so this term trains
    the spread of the heads (and the shared layers through it) and the usual energy and
    force losses alone train the prediction.

    Use it in the host's ``MetricsManager`` with ``field: null`` (it reads both dicts), e.g.
    as ``extra_metrics`` of ``nequip.train.EnergyForceStressLoss``
    (``configs/uncertainty/ensemble.yaml``).
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
        super().update(variance.detach() * 0.5 * (error.square() / variance + torch.log(variance)))

    def __str__(self) -> str:
        return "nll"
