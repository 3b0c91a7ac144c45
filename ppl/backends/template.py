"""The one iterative template every iterative backend runs on.

validate → initialise → repeat step / bound (with ``n_init`` restarts) → convergence and
divergence checks → the best run → posterior.  EM, CAVI's paths, MAP's coordinate ascent
and SVI's optimisation are hooks of it (:class:`IterativeFit`), so restarts, progress
bars, the objective's history, ``converged``, warnings and the diagnostics they produce
behave the same in every backend.  The model is scikit-learn's
``BaseMixture.fit_predict`` (``n_init`` restarts, ``tol``, a ``ConvergenceWarning``, keep
the best by the bound).

The objective is a bound on the log evidence in nats (the ELBO, Goodfellow et al. 2016,
eq. 19.1; EM's ``log p(v; θ)``, eq. 19.8 at the E-step's optimum; MAP's ``log p(ĥ, v)``):
a method whose updates maximise it exactly (EM, sequential CAVI, MAP's block coordinate
ascent) never lowers it, so a decrease beyond round-off is reported as a
:class:`~ppl.errors.BoundDecreaseWarning`.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ..errors import BoundDecreaseWarning, ConvergenceWarning, DataError, NumericalError

__all__ = ["progress_bar", "BoundMonitor", "IterativeFit", "FitResult", "run_iterations", "FunctionFit"]


def progress_bar(total: int, desc: str, progress=None):
    """A tqdm bar on stderr, or ``None`` when ``progress`` is False.  ``progress=None``
    shows it only on a terminal (tqdm's ``disable=None``)."""
    if progress is not None and not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=None if progress is None else False, file=sys.stderr)


class BoundMonitor:
    """The bookkeeping of one run: the objective per iteration (``history``), the stopping
    rule, the monotonicity check and an optional tqdm progress bar.

    Parameters
    ----------
    what : str
        Name of the objective in messages (``"log-likelihood"``, ``"ELBO"``).
    tol : float
        Converged when ``|Δ objective| / n_obs < tol`` between consecutive iterations.
    n_obs : int
        Number of observed values the objective is averaged over for ``tol``.
    max_iter : int
        For the progress bar.
    progress : bool or None
        Show a tqdm bar with the running objective; ``None`` shows it only on a terminal.
    monotone : bool
        The objective must not decrease (EM, sequential CAVI): a decrease of more than
        ``1e-9 · (1 + |objective|)`` warns with :class:`~ppl.errors.BoundDecreaseWarning`.
    desc : str
        Label of the progress bar.
    """

    def __init__(self, what: str, tol: float, n_obs: int, max_iter: int, progress=None, monotone: bool = True,
                 desc: str = ""):
        self.what = what
        self.tol = float(tol)
        self.n_obs = max(int(n_obs), 1)
        self.monotone = monotone
        self.history: list = []
        self.converged = False
        self._bar = progress_bar(max_iter, desc or what, progress)

    def record(self, value: float) -> bool:
        """Append ``value`` (nats); returns True once converged."""
        value = float(value)
        if self.history:
            prev = self.history[-1]
            if self.monotone and value < prev - 1e-9 * (1.0 + abs(prev)):
                warnings.warn(
                    f"the {self.what} decreased at iteration {len(self.history)}: {prev:.10g} -> {value:.10g} nats "
                    f"(by {prev - value:.3g}); this should not happen for an exact monotone method - please report it",
                    BoundDecreaseWarning, stacklevel=4)
            self.converged = abs(value - prev) / self.n_obs < self.tol
        self.history.append(value)
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.what} {value:.6g}")
            if len(self.history) > 1:
                self._bar.update(1)
        return self.converged

    def last_change(self) -> float:
        """``|Δ objective| / n_obs`` of the last iteration (``inf`` before two values)."""
        h = self.history
        return abs(h[-1] - h[-2]) / self.n_obs if len(h) > 1 else math.inf

    def close(self) -> None:
        """Close the progress bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class IterativeFit(ABC):
    """An iterative algorithm as hooks of the template (:func:`run_iterations`).

    Subclasses implement :meth:`initialize`, :meth:`step` and :meth:`bound`; the others
    have defaults.  ``state`` is whatever the algorithm iterates on (q, θ, a point);
    :meth:`step` returns a new state and must not change its argument.

    Attributes
    ----------
    what : str
        The objective's name in messages (``"ELBO"``, ``"log-likelihood"``).
    label : str
        The method's name in messages and on the progress bar (``"CAVI"``).
    monotone : bool
        Exact maximising updates: a decrease beyond round-off warns.
    move_tol : float
        Besides the bound's ``tol``, convergence needs :meth:`moved` below this.
    records_start : bool
        The starting state has a bound (False for stochastic optimisers, whose first
        estimate comes with the first step).
    """

    what = "ELBO"
    label = "fit"
    monotone = True
    move_tol = math.inf
    records_start = True

    @abstractmethod
    def initialize(self, restart: int):
        """The starting state of restart ``restart`` (0: the user's or default start;
        later ones: fresh random starts)."""

    @abstractmethod
    def step(self, state):
        """One iteration (a sweep, an EM step, an optimiser step): the new state."""

    @abstractmethod
    def bound(self, state) -> float:
        """The objective at ``state``, in nats."""

    def moved(self, new, old) -> float:
        """How far the state moved in the last step (0 when only the bound decides)."""
        return 0.0

    def check_start(self, value: float, restart: int) -> None:
        """Called with the bound of a starting state: by default a non-finite one raises
        :class:`~ppl.errors.DataError` (the evidence has probability zero there)."""
        if not math.isfinite(value):
            raise DataError(f"the {self.what} is {value} at the starting point of {self.label}: the evidence has "
                            "probability zero under it")

    def check_step(self, value: float, first: float, iteration: int) -> None:
        """Called after every step: by default a non-finite bound, or one fallen 1000-fold
        below its start, raises :class:`~ppl.errors.NumericalError`."""
        if not math.isfinite(value) or value < first - 1e3 * (1.0 + abs(first)):
            raise NumericalError(f"{self.label} diverged at iteration {iteration}: the {self.what} is {value:.6g}, "
                                 f"from {first:.6g} at the start")

    def stop(self, history: list, rule: bool, change: float) -> bool:
        """Whether the run has converged after the last iteration: by default the
        bound's rule (``rule``: ``|Δ| / n_obs < tol``) and ``change < move_tol``."""
        return rule and change < self.move_tol

    def not_converged(self, result: "FitResult", max_iter: int, tol: float) -> str:
        """The :class:`~ppl.errors.ConvergenceWarning` text for a best run that did not
        converge."""
        return (f"{self.label} did not converge in max_iter={max_iter} iterations (last change of the {self.what} "
                f"per observed value {result.last_change:.3g} >= tol={tol}); raise max_iter or tol")

    def score(self, state, history: list) -> float:
        """What restarts are ranked by (the highest wins): the final bound."""
        return history[-1]


@dataclass
class FitResult:
    """The outcome of :func:`run_iterations`.

    Attributes
    ----------
    state : object
        The final state of the best restart.
    history : list[float]
        Its objective per iteration (nats); ``history[0]`` at the starting state.
    converged : bool
    decreases : int
        Iterations of the best run that lowered the objective beyond round-off.
    restarts : list[float]
        The score of every restart (nats).
    best_restart : int
    last_change : float
        ``|Δ objective| / n_obs`` at the best run's last iteration.
    seconds : float
        Wall time of all restarts.
    runs : list
        ``(state, history, converged)`` of every restart.
    started : bool
        ``history[0]`` is the starting state's bound (the fit's ``records_start``).
    """

    state: Any
    history: list
    converged: bool
    decreases: int
    restarts: list
    best_restart: int
    last_change: float
    seconds: float
    runs: list = field(default_factory=list, repr=False)
    started: bool = True

    @property
    def n_iter(self) -> int:
        """Iterations of the best run (``history`` has one more entry when it starts with
        the starting state's bound)."""
        return max(len(self.history) - int(self.started), 0)

    def diagnostics(self) -> dict:
        """The template's facts for ``Posterior.diagnostics``: ``n_iter``, ``restarts``,
        ``best_restart``, ``decreases``, ``seconds_per_iteration``."""
        n = sum(max(len(h) - int(self.started), 0) for _, h, _ in self.runs) or 1
        return {"n_iter": self.n_iter, "restarts": list(self.restarts), "best_restart": self.best_restart,
                "decreases": self.decreases, "seconds_per_iteration": self.seconds / n}


def _one_run(fit: IterativeFit, restart: int, *, max_iter, tol, n_obs, progress, desc):
    monitor = BoundMonitor(fit.what, tol, n_obs, max_iter, progress, monotone=fit.monotone, desc=desc)
    try:
        state = fit.initialize(restart)
        first = None
        if fit.records_start:
            first = float(fit.bound(state))
            fit.check_start(first, restart)
            monitor.record(first)
        for it in range(max_iter):
            new = fit.step(state)
            value = float(fit.bound(new))
            first = value if first is None else first
            fit.check_step(value, first, it + 1)
            change = fit.moved(new, state)
            state = new
            rule = monitor.record(value)
            monitor.converged = fit.stop(monitor.history, rule, change)
            if monitor.converged:
                break
    finally:
        monitor.close()
    return state, monitor


def run_iterations(fit: IterativeFit, *, max_iter: int, tol: float, n_obs: int = 1, n_init: int = 1,
                   progress=None, warn: bool = True) -> FitResult:
    """Run ``fit`` ``n_init`` times (restarts) for at most ``max_iter`` steps each and keep
    the run with the highest :meth:`IterativeFit.score`.

    A run converges when the objective changes by less than ``tol`` per observed value
    (``n_obs``) between iterations and the state moved less than ``fit.move_tol``.

    Returns
    -------
    FitResult

    Raises
    ------
    DataError
        A starting state where the evidence has probability zero (:meth:`IterativeFit.check_start`).
    NumericalError
        A diverging run (:meth:`IterativeFit.check_step`).

    Warns
    -----
    ConvergenceWarning
        When the best run did not converge (``warn``).
    """
    start = time.perf_counter()
    runs = []
    for r in range(n_init):
        desc = f"{fit.label} {r + 1}/{n_init}" if n_init > 1 else fit.label
        state, monitor = _one_run(fit, r, max_iter=max_iter, tol=tol, n_obs=n_obs, progress=progress, desc=desc)
        runs.append((state, monitor))
    scores = [fit.score(s, m.history) for s, m in runs]
    best = max(range(n_init), key=lambda i: (scores[i] if math.isfinite(scores[i]) else -math.inf, -i))
    state, monitor = runs[best]
    h = monitor.history
    decreases = sum(1 for a, b in zip(h, h[1:]) if b < a - 1e-9 * (1 + abs(a)))
    result = FitResult(state, h, monitor.converged, decreases, scores, best, monitor.last_change(),
                       time.perf_counter() - start, [(s, m.history, m.converged) for s, m in runs],
                       fit.records_start)
    if warn and not result.converged:
        warnings.warn(fit.not_converged(result, max_iter, tol), ConvergenceWarning, stacklevel=3)
    return result


class FunctionFit(IterativeFit):
    """An :class:`IterativeFit` from plain functions (for algorithms whose state is
    built elsewhere): ``initialize(restart)``, ``step(state)``, ``bound(state)``,
    ``moved(new, old)``."""

    def __init__(self, initialize, step, bound, moved=None, *, what="ELBO", label="fit", monotone=True,
                 move_tol=math.inf):
        self._initialize, self._step, self._bound, self._moved = initialize, step, bound, moved
        self.what, self.label, self.monotone, self.move_tol = what, label, monotone, move_tol

    def initialize(self, restart):
        return self._initialize(restart)

    def step(self, state):
        return self._step(state)

    def bound(self, state):
        return self._bound(state)

    def moved(self, new, old):
        return self._moved(new, old) if self._moved is not None else 0.0
