"""What a backend is: a named inference method that declares its options as data, says
whether it applies to an analysed model (and where ``method="auto"`` ranks it), and runs
to a :class:`~ppl.posterior.Posterior`.

Writing one is described in ``docs/backends.md``; register an instance with
:func:`ppl.register_backend`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import UnsupportedModelError
from ..trust import UNRELIABLE, Trust
from .options import settings, validate_options

__all__ = ["Applicability", "Backend", "applicability", "list_names"]


def list_names(names, limit: int = 4) -> str:
    """``"a, b, c, d and 3 more"``: at most ``limit`` names shown."""
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


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


def applicability(backend, analysis) -> Applicability:
    """Whether ``backend`` applies to ``analysis``: the checks every backend shares, then
    its own :meth:`Backend.check`.

    Shared: a plate the model subsamples (``plate(..., subsample_size=B)``) is refused by
    every backend without :attr:`Backend.subsampling`, naming the plate: such a backend
    would fit one random minibatch, scaled up, as if it were the data."""
    subsampled = [p for p in analysis.graph.plates.values() if p.subsample_size is not None]
    if subsampled and not getattr(backend, "subsampling", False):
        plates = ", ".join(f"'{p.name}' (subsample_size={p.subsample_size} of {p.full_size})" for p in subsampled)
        return Applicability(False, f"plate {plates} is subsampled in the model: subsample_size is SVI's "
                                    f"minibatching, and this method needs every copy of the plate in each "
                                    f"evaluation (it would fit one random minibatch as if it were the data); "
                                    f"use method='svi', or drop subsample_size")
    return backend.check(analysis)


class Backend(ABC):
    """Base class of inference backends.

    Class attributes
    ----------------
    name : str
        The ``method=`` name.
    summary : str
        One line: what it computes.
    options : dict
        Option name -> :class:`~ppl.backends.options.Option` (constraint, default, doc),
        declared once; :meth:`validate_options` checks values against it.  (A plain
        name -> doc string entry is accepted too, for backends written before options
        were declared as data: any value then passes.)
    rank : float
        Where ``method="auto"`` tries it: lower first (built-ins use 10-90; a backend
        registered from outside defaults to 100, after them).
    rank_note : str
        Why it ranks where it does, for ``diagnostics["routing"]["passed_over"]``.
    reference_sampler : bool
        A reliable result of it may serve as ``ppl.compare``'s reference when no exact
        row ran (NUTS).
    gaussian_approximation : bool
        Its answer is one Gaussian in unconstrained space, judged by PSIS (Laplace,
        Pathfinder); auto records its k̂ so later attempts can read it (:meth:`auto_skip`).
    warm_starts : bool
        Its ``init`` option takes an earlier Posterior of the model: under
        ``method="auto"`` it is given the Gaussian approximation with the lowest k̂ that an
        earlier attempt left unreliable (:mod:`ppl.backends.common.warmstart`).
    subsampling : bool
        It runs on a model that subsamples a plate itself (Pyro's ``plate(name, N,
        subsample_size=B)``: each run sees a random B of the N copies, scaled by N/B), as a
        stochastic-gradient method can (SVI).  Every other backend needs all copies in each
        evaluation and is refused such a model by :func:`applicability`.
    reuses_prepared : bool
        It may run on a graph :mod:`ppl.prepared` rebound to new evidence without tracing
        the model again: it reads observed values only through ``graph.bound`` and the
        tables of :func:`~ppl.backends.common.discrete.discrete_plan` (exact), never
        through the traced distributions of other sites.

    Subclasses implement :meth:`check` and :meth:`run`, and may override
    :meth:`check_options` and :meth:`deciding_fact`.
    """

    name: str = ""
    summary: str = ""
    options: dict = {}
    rank: float = 100.0
    rank_note: str = "backends registered from outside rank after the built-in ones"
    reference_sampler: bool = False
    gaussian_approximation: bool = False
    warm_starts: bool = False
    subsampling: bool = False
    reuses_prepared: bool = False

    @abstractmethod
    def check(self, analysis) -> Applicability:
        """Whether this backend applies to ``analysis`` (a :class:`ppl.analysis.Analysis`), and why."""

    @abstractmethod
    def run(self, graph, analysis, **options):
        """Run inference on ``graph`` (a :class:`ppl.compiler.FactorGraph`) and return a Posterior.

        ``options`` are those :meth:`validate_options` returned (declared defaults filled)."""

    def check_options(self, analysis, verdict: Applicability, options: dict) -> Applicability:
        """The verdict for a run with ``options``: by default :meth:`check`'s ``verdict``.
        A backend whose applicability depends on an option (e.g. SVI with a guide that
        samples the discrete latents enumeration could not handle) overrides this."""
        return verdict

    def validate_options(self, options: dict, fill: bool = True) -> dict:
        """``options`` checked against :attr:`options` (see
        :func:`~ppl.backends.options.validate_options`), defaults filled when ``fill``.

        Raises
        ------
        UnknownOptionError (a TypeError)
            An option this backend does not take (lists those it does).
        OptionError
            A value its declared constraint refuses (names the option, value and what is
            accepted)."""
        return validate_options(self.name, self.options, options, fill=fill)

    def settings(self, options: dict):
        """:meth:`validate_options` as attributes (``o.max_iter``): what :meth:`run` reads."""
        return settings(self.name, self.options, options)

    def assess(self, posterior, graph, analysis) -> Trust:
        """How far to trust ``posterior`` (what :meth:`run` returned): a
        :class:`~ppl.trust.Trust` built from the result's own diagnostics.  ``ppl.infer``
        stores it as ``posterior.trust`` (unless :meth:`run` set one) and warns with
        :class:`~ppl.errors.TrustWarning` when it is unreliable.  The default says that
        nothing was checked."""
        return Trust(UNRELIABLE, [f"method '{self.name}' reports no diagnostics, so its answer could not be checked"])

    def auto_variants(self, analysis) -> list:
        """Option sets ``method="auto"`` tries this backend with, in turn (the user's own
        options win); default one, the declared defaults."""
        return [{}]

    def auto_cost(self, options: dict) -> float | None:
        """The relative cost of a run with ``options`` (any unit, e.g. iterations), or None
        when unknown (default).  ``method="auto"`` scales an earlier attempt's seconds by
        the ratio of two costs to skip a variant that would run past its ``time_budget``."""
        return None

    def auto_skip(self, analysis, options: dict, attempts: list) -> str | None:
        """Why ``method="auto"`` should not try this backend with ``options`` after the
        ``attempts`` so far (dicts with ``method``, ``verdict``, ``psis_khat``,
        ``gaussian_approximation``), or None to try it; default None."""
        return None

    def deciding_fact(self, analysis, verdicts: dict) -> str:
        """The sentence saying why ``method="auto"`` chose this backend.

        Parameters
        ----------
        analysis : Analysis
        verdicts : dict
            Name -> ``(applies, reason)`` of every registered backend, in rank order.
        """
        ok, why = verdicts[self.name]
        failed = "; ".join(f"{n}: {w}" for n, (o, w) in verdicts.items() if not o)
        return f"the first registered method that applies, in rank order ({failed or 'none failed'}): {why}"

    def __repr__(self):
        return f"<backend '{self.name}': {self.summary}>"
