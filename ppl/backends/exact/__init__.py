"""``method="exact"``: variable elimination over discrete latents."""

from .backend import ExactBackend

__all__ = ["ExactBackend"]
