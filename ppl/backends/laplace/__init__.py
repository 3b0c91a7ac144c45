"""``method="laplace"``: a Gaussian at the mode in unconstrained space, PSIS-checked."""

from .backend import LaplaceBackend

__all__ = ["LaplaceBackend"]
