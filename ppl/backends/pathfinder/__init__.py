"""``method="pathfinder"``: normal approximations along L-BFGS paths (Zhang et al. 2022)."""

from .backend import PathfinderBackend

__all__ = ["PathfinderBackend"]
