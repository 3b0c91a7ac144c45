"""``method="cavi"``: mean-field coordinate-ascent variational inference."""

from .backend import CAVIBackend

__all__ = ["CAVIBackend"]
