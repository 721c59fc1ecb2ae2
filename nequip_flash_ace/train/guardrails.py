"""Start-up warnings for knob values that measurably trained worse here.

Each rule names the measurement behind it (``docs/benchmarks.md``); a combination that was
never measured to hurt gets no warning."""

import logging
import warnings
from typing import List

import lightning

logger = logging.getLogger(__name__)


class FlashACEConfigWarning(UserWarning):
    """A knob value that trained measurably worse; the message says what was measured."""


def config_advice(l_max: int, num_radial: int, lr: float) -> List[str]:
    """One message per knob value measured to hurt (empty list: nothing to say).

    Measured at equal CPU time (2–2.5 min), validation force MAE, against the shipped
    default (``benchmarks/accuracy_budget.py --study knobs`` and ``--study ablation``)."""
    advice = []
    if l_max < 2:
        advice.append(
            f"l_max={l_max}: l_max 1 had 1.45x the validation force error of l_max 2 on the bundled molecule "
            f"(1.05x on Cu-Au; docs/benchmarks.md, 'Knobs'). Use l_max >= 2 for directional bonds."
        )
    if num_radial < 8:
        advice.append(
            f"num_radial={num_radial}: 4 radial functions had 1.09-1.10x the validation force error of 8 on both "
            f"bundled data sets (docs/benchmarks.md, 'Knobs'). Use num_radial >= 8."
        )
    if lr <= 1e-3:
        advice.append(
            f"lr={lr:g}: at CPU budgets of minutes lr 1e-3 had 3.3x the validation force error of lr 1e-2 "
            f"(4 layers, 2 min; docs/benchmarks.md, 'Knobs'): too few optimiser steps. Use lr 5e-3 to 2e-2 "
            f"unless the run is long."
        )
    return advice


class ConfigGuardrails(lightning.Callback):
    """Warn once, at start-up, about knob values measured to hurt (:func:`config_advice`).

    Put it in ``trainer.callbacks`` with the config's top-level knobs interpolated;
    it only warns, it never changes a setting.
    """

    def __init__(self, l_max: int, num_radial: int, lr: float) -> None:
        super().__init__()
        self.advice = config_advice(l_max=l_max, num_radial=num_radial, lr=lr)
        for message in self.advice:
            warnings.warn(message, FlashACEConfigWarning, stacklevel=2)
            logger.warning("Flash-ACE config advice: %s", message)
