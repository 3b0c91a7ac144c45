"""Is the log joint ``ln p(v, h)`` a quadratic form in given latents?  A cheap structural
test (a third finite difference along a random line, memoised on the graph) that decides
whether closed-form Gaussian answers exist: CAVI's Gaussian and binary paths use it, and a
quadratic log joint in Normal latents makes the Laplace approximation exact."""

from __future__ import annotations

import math

import pyro
import torch

from .logjoint import LogJoint
from .runtime import run_context

__all__ = ["third_difference_problem", "not_quadratic", "all_normal"]


def all_normal(graph, sites) -> bool:
    """Every site in ``sites`` is a Normal with at most one event dim."""
    return all(graph.variables[s].family == "Normal" and len(graph.variables[s].event_shape) <= 1 for s in sites)



def not_quadratic(graph, sites) -> str | None:
    """Why the log joint is not a quadratic form in the Normal latents ``sites``, or None.

    A cheap test run by the analysis: along a random direction d from the prior means,
    ``t -> ln p(m + t d)`` must be a polynomial of degree 2, so its third finite difference
    at t = 0, 1, 2, 3 vanishes to round-off (four runs of the model, no autograd).  The run
    verifies the full quadratic again (:func:`~ppl.ops.quadratic.dense_quadratic`)."""
    # the analysis and the run both ask: four model runs, once
    return graph.memo("quadratic", ("not_quadratic", tuple(sites)), lambda: third_difference_problem(graph, sites))


def third_difference_problem(graph, sites, kind="Normal") -> str | None:
    """Why ``ln p(v, h)`` is not a quadratic form in the ``kind`` latents ``sites`` (a
    third finite difference along a random line that does not vanish), or None."""
    device, dtype = torch.device("cpu"), torch.float64
    # no validation: discrete latents are evaluated at real values (their log pmf's polynomial
    # extension), and a Python-number observation must not fail a support check
    with run_context(device, dtype, 0), torch.no_grad(), pyro.validation_enabled(False):
        lj = LogJoint(graph, device, dtype)
        try:
            start = lj.initial_values(sites, "mean")
        except Exception as e:  # noqa: BLE001 - a model that cannot run here is refused, not crashed
            return (f"the model could not be evaluated at the prior means of {sites}: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else e!r}")
        gen = torch.Generator().manual_seed(0)
        step = {s: torch.randn(v.shape, dtype=dtype, generator=gen) for s, v in start.items()}
        values = []
        for t in range(4):
            try:
                values.append(float(lj({s: start[s] + t * step[s] for s in sites})))
            except Exception:  # noqa: BLE001 - not evaluable along the line: not a quadratic here
                values.append(float("nan"))
    third = values[3] - 3 * values[2] + 3 * values[1] - values[0]
    spread = sum(abs(v) for v in values) + 1.0
    if not all(math.isfinite(v) for v in values) or abs(third) > 1e-8 * spread:
        return (f"the log joint is not a quadratic form in the {kind} latents {sites} (a non-Gaussian likelihood, a "
                "latent scale, or a mean that is not linear in the latents), so their mean-field factors have no "
                "closed form here; use method='svi' (mean field: guide='normal') or 'map'")
    return None
