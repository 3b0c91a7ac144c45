"""What a backend is: a named inference method that says whether it applies to an
analysed model and runs to a :class:`~ppl.posterior.Posterior`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import UnsupportedModelError

__all__ = ["Applicability", "Backend"]


@dataclass(frozen=True)
class Applicability:
    """Answer of :meth:`Backend.check`.

    Attributes
    ----------
    ok : bool
    reason : str
        Why it applies (facts and cost) or why not (naming the sites at fault).
    error : type
        Error class to raise if the user insists (``UnsupportedModelError`` or
        ``IntractableError``).
    details : dict
        Extra keyword arguments for the error (e.g. treewidth, bytes).
    """

    ok: bool
    reason: str
    error: type = UnsupportedModelError
    details: dict | None = None


class Backend(ABC):
    """Base class of inference backends.

    Subclasses set :attr:`name`, :attr:`summary` and :attr:`options` (option name ->
    one-line doc) and implement :meth:`check` and :meth:`run`.  Register an instance
    with :func:`ppl.register_backend`.
    """

    name: str = ""
    summary: str = ""
    options: dict = {}

    @abstractmethod
    def check(self, analysis) -> Applicability:
        """Whether this backend applies to ``analysis`` (a :class:`ppl.analysis.Analysis`), and why."""

    @abstractmethod
    def run(self, graph, analysis, **options):
        """Run inference on ``graph`` (a :class:`ppl.compiler.FactorGraph`) and return a Posterior."""

    def validate_options(self, options: dict) -> None:
        """Raise ``TypeError`` naming any option this backend does not take (and listing those it does)."""
        unknown = [k for k in options if k not in self.options]
        if unknown:
            valid = ", ".join(f"{k} ({v})" for k, v in self.options.items())
            raise TypeError(f"method '{self.name}' got unknown option(s) {unknown}; it takes: {valid}")

    def __repr__(self):
        return f"<backend '{self.name}': {self.summary}>"
