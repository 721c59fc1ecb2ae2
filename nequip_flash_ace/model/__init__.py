from .flash_ace_models import FlashACEModel

__all__ = ["FlashACEModel"]
