"""The coordinate-ascent loop every CAVI path shares (discrete tables, Gaussian factors,
binary quadratic, conjugate factors by sigma points), as hooks of the iterative template
(:func:`ppl.backends.template.run_iterations`): sweeps, the ELBO history, the convergence
rule, the divergence check, restarts and the warnings, in one place."""

from __future__ import annotations

import math

from ...errors import DataError, NumericalError
from ..common.distributed import NO_SHARD
from ..template import FitResult, IterativeFit, run_iterations

__all__ = ["Q_TOL", "coordinate_ascent", "Sweeps"]

#: Besides the ELBO's ``tol``, convergence needs q to move less than this between sweeps
#: (probabilities, or parameters relative to their size).
Q_TOL = 1e-6


class Sweeps(IterativeFit):
    """CAVI's sweeps: ``initial(restart)`` (a starting q), ``sweep(q)`` (a new q, the
    argument unchanged), ``elbo(q)`` in nats and ``moved(new, old)`` (the largest change
    of q, relative)."""

    what = "ELBO"
    label = "CAVI"
    move_tol = Q_TOL

    def __init__(self, graph, initial, sweep, elbo, moved, schedule: str, damping: float):
        self.graph, self._initial, self._sweep, self._elbo, self._moved = graph, initial, sweep, elbo, moved
        self.schedule, self.damping = schedule, damping
        self.monotone = schedule == "sequential"
        self.label = f"cavi ({schedule})"

    def initialize(self, restart):
        return self._initial(restart)

    def step(self, state):
        return self._sweep(state)

    def bound(self, state):
        return self._elbo(state)

    def moved(self, new, old):
        return self._moved(new, old)

    def check_start(self, value, restart):
        if not math.isfinite(value):
            raise DataError(f"the ELBO of model '{self.graph.model.name}' is {value} at the initial q: the evidence "
                            "has probability zero under it")

    def check_step(self, value, first, iteration):
        if not math.isfinite(value) or value < first - 1e3 * (1.0 + abs(first)):
            raise NumericalError(
                f"CAVI ({self.schedule}, damping {self.damping:g}) diverged at sweep {iteration}: the ELBO is "
                f"{value:.6g}, from {first:.6g} at the start. Parallel updates of strongly coupled factors diverge "
                "unless damped: lower damping, or use schedule='sequential', which cannot diverge")

    def not_converged(self, result, max_iter, tol):
        return (f"CAVI did not converge in {max_iter} sweeps (ELBO change per observed value above tol={tol} or q "
                "still moving); raise max_iter, or damp parallel updates (damping < 1)")


def coordinate_ascent(initial, sweep, elbo, moved, *, graph, schedule, damping, max_iter, tol, progress,
                      n_init: int = 1, shard=NO_SHARD) -> FitResult:
    """The CAVI loop every path shares: ``state = sweep(state)`` until converged, from
    ``n_init`` starts (``initial(restart)``), keeping the run with the highest ELBO.

    Converged when the ELBO changes by less than ``tol`` per observed value *and*
    ``moved(new, old)`` (the largest change of q, relative) is below :data:`Q_TOL` — a
    parallel 2-cycle keeps the ELBO fixed while q flips.  ``sweep`` must return a new state,
    not change its argument.  ``shard`` (distributed): ``tol`` per observed value of every rank.

    Returns
    -------
    FitResult
        ``state``, ``history`` (the ELBO per sweep; the first entry: the initial state),
        ``converged`` (else a ``ConvergenceWarning``), ``decreases``, ``restarts``.

    Raises
    ------
    DataError
        The initial ELBO is not finite (evidence of probability zero under q).
    NumericalError
        The ELBO becomes non-finite or falls 1000-fold below its start (diverging parallel
        updates).
    """
    fit = Sweeps(graph, initial, sweep, elbo, moved, schedule, damping)
    return run_iterations(fit, max_iter=max_iter, tol=tol, n_obs=shard.n_obs(graph), n_init=n_init,
                          progress=progress)
