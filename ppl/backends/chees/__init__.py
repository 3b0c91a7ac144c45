"""``method="chees"``: ChEES-HMC, many chains in lockstep (see :mod:`.backend`)."""

from .backend import CheesBackend

__all__ = ["CheesBackend"]
