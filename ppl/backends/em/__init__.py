"""``method="em"``: maximum-likelihood learning of ``ppl.param`` values by EM with exact E-steps."""

from .backend import EMBackend

__all__ = ["EMBackend"]
