"""``method="svi"``: stochastic variational inference with Pyro guides."""

from .backend import SVIBackend

__all__ = ["SVIBackend"]
