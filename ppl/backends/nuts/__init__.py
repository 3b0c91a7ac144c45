"""``method="nuts"``: Pyro's No-U-Turn Sampler, several chains, R-hat and ESS."""

from .backend import NUTSBackend

__all__ = ["NUTSBackend"]
