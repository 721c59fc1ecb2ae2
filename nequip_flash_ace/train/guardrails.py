"""Start-up advice for risky combinations of Flash-ACE training knobs."""

import logging
import warnings
from typing import List, Optional

import lightning

logger = logging.getLogger(__name__)


class FlashACEConfigWarning(UserWarning):
    """A combination of knobs that tends to train badly; the message says what to change."""


def config_advice(
    num_layers: int,
    num_heads: int,
    l_max: int,
    num_radial: int,
    lr: float,
    gradient_clip_val: Optional[float],
    batch_size: int,
    accumulate_grad_batches: int = 1,
) -> List[str]:
    """Return one message per risky knob combination (empty list: nothing to say).

    The rules encode the method authors' advice for deeper attention stacks: depth
    only pays off when learning rate, clipping, basis size and batch noise move with it.
    """
    advice = []
    deep = num_layers >= 4
    clipped = gradient_clip_val is not None and float(gradient_clip_val) > 0
    if deep and num_heads > 0 and lr >= 5e-3 and not clipped:
        advice.append(
            f"num_layers={num_layers} with attention, lr={lr:g} and no gradient clipping: deep attention stacks "
            f"tend to diverge early. Use lr between 1e-3 and 5e-4 and set gradient_clip_val (e.g. 10)."
        )
    if deep and num_radial < 8:
        advice.append(
            f"num_layers={num_layers} with num_radial={num_radial}: adding depth while shrinking the radial basis "
            f"starves every layer of radial resolution. Keep num_radial >= 8."
        )
    if deep and l_max < 2:
        advice.append(
            f"num_layers={num_layers} with l_max={l_max}: adding depth while reducing the angular basis rarely "
            f"pays off. Keep l_max >= 2 when going deeper."
        )
    if deep and num_heads > 0 and batch_size * max(accumulate_grad_batches, 1) <= 4:
        advice.append(
            f"num_layers={num_layers} with attention and an effective batch of {batch_size * max(accumulate_grad_batches, 1)}: "
            f"the gradient noise of tiny batches destabilises deep attention. Use batch_size >= 8 or "
            f"trainer.accumulate_grad_batches."
        )
    return advice


class ConfigGuardrails(lightning.Callback):
    """Warn once, at start-up, about risky knob combinations (see :func:`config_advice`).

    Put it in ``trainer.callbacks`` with the config's top-level knobs interpolated;
    it only warns, it never changes a setting.
    """

    def __init__(
        self,
        num_layers: int,
        num_heads: int,
        l_max: int,
        num_radial: int,
        lr: float,
        gradient_clip_val: Optional[float] = None,
        batch_size: int = 1,
        accumulate_grad_batches: int = 1,
    ) -> None:
        super().__init__()
        self.advice = config_advice(
            num_layers=num_layers,
            num_heads=num_heads,
            l_max=l_max,
            num_radial=num_radial,
            lr=lr,
            gradient_clip_val=gradient_clip_val,
            batch_size=batch_size,
            accumulate_grad_batches=accumulate_grad_batches,
        )
        for message in self.advice:
            warnings.warn(message, FlashACEConfigWarning, stacklevel=2)
            logger.warning("Flash-ACE config advice: %s", message)
