"""Training helpers of Flash-ACE (the host supplies trainer, loss and metrics)."""

from .guardrails import ConfigGuardrails, FlashACEConfigWarning, config_advice
from .progress import TrainingProgress

__all__ = ["ConfigGuardrails", "FlashACEConfigWarning", "TrainingProgress", "config_advice"]
