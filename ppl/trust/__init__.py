"""How far to trust an answer: the verdict every Posterior carries (``post.trust``) and the
diagnostics behind it (PSIS k̂ and importance ESS, R-hat and ESS of chains, convergence of
stochastic optimisation), with thresholds from the literature.  See docs/trust.md."""

from .verdict import EXACT, RELIABLE, UNRELIABLE, Trust
from .psis import PSISResult, khat_threshold, psis

__all__ = ["Trust", "EXACT", "RELIABLE", "UNRELIABLE", "PSISResult", "psis", "khat_threshold"]
