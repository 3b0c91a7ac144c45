"""The trust verdict of a result: ``"exact"``, ``"reliable"`` or ``"unreliable"``, the
reasons (sentences a user can act on), the numbers behind them, and what to try next.

Goodfellow et al. 2016, §19.1 (the ELBO's gap to log p(v) is KL(q‖p)) and §19.4.4 (judging
an approximation needs an estimate of log p(v)); the thresholds are those of the papers
each diagnostic comes from: :mod:`ppl.trust.psis` (Pareto k̂ and the importance ESS, used
through :mod:`ppl.backends.common.importance`) and :mod:`ppl.backends.common.chains`
(R-hat, bulk / tail ESS and divergences of chains).  Each backend builds its verdict in its
own ``assess`` (e.g. :mod:`ppl.backends.cavi.assess`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from ..errors import TrustWarning

__all__ = ["EXACT", "RELIABLE", "UNRELIABLE", "Trust"]

EXACT, RELIABLE, UNRELIABLE = "exact", "reliable", "unreliable"


@dataclass
class Trust:
    """How far to trust a Posterior.

    Attributes
    ----------
    verdict : str
        ``"exact"`` (computed exactly, to round-off), ``"reliable"`` (an approximation
        whose diagnostics pass at the literature's thresholds) or ``"unreliable"`` (a
        diagnostic failed, or nothing could be checked).
    reasons : list[str]
        Why, in sentences a user can act on.
    numbers : dict
        The diagnostics behind it (``psis_khat``, ``khat_threshold``, ``ess``, ``rhat``,
        ``kl_gap``, ...); a diagnostic that was not computed is absent.
    next_method : str or None
        What to try next when unreliable (a method name, possibly with options).
    """

    verdict: str
    reasons: list = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    next_method: str | None = None

    def __post_init__(self):
        if self.verdict not in (EXACT, RELIABLE, UNRELIABLE):
            raise ValueError(f"verdict must be 'exact', 'reliable' or 'unreliable', got {self.verdict!r}")

    @property
    def ok(self) -> bool:
        """True for ``"exact"`` and ``"reliable"``."""
        return self.verdict != UNRELIABLE

    @classmethod
    def exact(cls, reason: str, **numbers) -> "Trust":
        """An exact result."""
        return cls(EXACT, [reason], dict(numbers))

    def warn(self, method: str, stacklevel: int = 3) -> None:
        """Issue a :class:`~ppl.errors.TrustWarning` when the verdict is unreliable."""
        if self.verdict == UNRELIABLE:
            nxt = f"; try method='{self.next_method}'" if self.next_method else ""
            warnings.warn(f"the result of method '{method}' is unreliable: {' '.join(self.reasons)}{nxt}",
                          TrustWarning, stacklevel=stacklevel)

    def line(self) -> str:
        """One line: the verdict and its first reason."""
        first = self.reasons[0] if self.reasons else ""
        return f"{self.verdict}: {first}" if first else self.verdict

    def __str__(self):
        lines = [f"trust: {self.verdict}"]
        lines += [f"  - {r}" for r in self.reasons]
        shown = {k: v for k, v in self.numbers.items() if isinstance(v, (int, float, str)) or v is None}
        if shown:
            lines.append("  numbers: " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
        if self.next_method and self.verdict == UNRELIABLE:
            lines.append(f"  next: method='{self.next_method}'")
        return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
