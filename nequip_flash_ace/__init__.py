"""Flash-ACE: attention on an Atomic Cluster Expansion backbone, as a NequIP extension."""

from ._version import __version__
from . import _compile  # noqa: F401  (registers data fields and compile targets with the host)

__all__ = ["__version__"]
