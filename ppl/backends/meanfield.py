"""The coordinate-ascent loop shared by every CAVI path (discrete tables, Gaussian
factors, conjugate factors by sigma points): sweeps, the ELBO history, the convergence
rule, the divergence check and the warnings, in one place."""

from __future__ import annotations

import math
import warnings

from ..errors import ConvergenceWarning, DataError, NumericalError
from .base import BoundMonitor, count_observations

__all__ = ["Q_TOL", "coordinate_ascent"]

#: Besides the ELBO's ``tol``, convergence needs q to move less than this between sweeps
#: (probabilities, or parameters relative to their size).
Q_TOL = 1e-6


def coordinate_ascent(state, sweep, elbo, moved, *, graph, schedule, damping, max_iter, tol, progress):
    """The CAVI loop every path shares: ``state = sweep(state)`` until converged.

    Converged when the ELBO changes by less than ``tol`` per observed value *and*
    ``moved(new, old)`` (the largest change of q, relative) is below :data:`Q_TOL` — a
    parallel 2-cycle keeps the ELBO fixed while q flips.  ``sweep`` must return a new state,
    not change its argument.

    Returns
    -------
    (state, history, converged, decreases)
        The final state, the ELBO per sweep (the first entry: the initial state), whether it
        converged (else a ``ConvergenceWarning``), and the number of sweeps that lowered it.

    Raises
    ------
    DataError
        The initial ELBO is not finite (evidence of probability zero under q).
    NumericalError
        The ELBO becomes non-finite or falls 1000-fold below its start (diverging parallel
        updates).
    """
    monitor = BoundMonitor("ELBO", tol, count_observations(graph), max_iter, progress,
                           monotone=schedule == "sequential", desc=f"cavi ({schedule})")
    try:
        first = elbo(state)
        if not math.isfinite(first):
            raise DataError(f"the ELBO of model '{graph.model.name}' is {first} at the initial q: the evidence has "
                            "probability zero under it")
        monitor.record(first)
        for _ in range(max_iter):
            new = sweep(state)
            value = elbo(new)
            if not math.isfinite(value) or value < first - 1e3 * (1.0 + abs(first)):
                raise NumericalError(
                    f"CAVI ({schedule}, damping {damping:g}) diverged at sweep {len(monitor.history)}: the ELBO is "
                    f"{value:.6g}, from {first:.6g} at the start. Parallel updates of strongly coupled factors "
                    "diverge unless damped: lower damping, or use schedule='sequential', which cannot diverge")
            change = moved(new, state)
            state = new
            if monitor.record(value) and change < Q_TOL:
                break
            monitor.converged = False
    finally:
        monitor.close()
    if not monitor.converged:
        warnings.warn(f"CAVI did not converge in {max_iter} sweeps (ELBO change per observed value above tol={tol} "
                      "or q still moving); raise max_iter, or damp parallel updates (damping < 1)",
                      ConvergenceWarning, stacklevel=4)
    history = monitor.history
    decreases = sum(1 for a, b in zip(history, history[1:]) if b < a - 1e-9 * (1 + abs(a)))
    return state, history, monitor.converged, decreases
