"""Training helpers of Flash-ACE (the host supplies trainer, loss and metrics)."""

from .guardrails import ConfigGuardrails, FlashACEConfigWarning, config_advice

__all__ = ["ConfigGuardrails", "FlashACEConfigWarning", "config_advice"]
