"""Flash-ACE: attention on an Atomic Cluster Expansion backbone, as a NequIP extension."""

from ._version import __version__

__all__ = ["__version__"]
