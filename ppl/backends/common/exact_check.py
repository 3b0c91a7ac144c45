"""An approximate posterior over discrete latents checked against the exact marginals,
where those fit the memory budget: the reference a mean field (or any discrete
approximation) cannot share a bug with, since PSIS k̂ cannot judge bounded weights."""

from __future__ import annotations

import torch

from ...errors import PPLError
from ...trust import RELIABLE, UNRELIABLE, Trust
from .discrete import discrete_plan

__all__ = ["against_exact", "exact_trust", "MARGINAL_TOL"]

#: A discrete approximation is reliable when no marginal probability is off the exact one by more.
MARGINAL_TOL = 0.01


def against_exact(posterior, graph, analysis):
    """The largest error of an approximation's discrete marginals against exact ones
    (variable elimination, Koller & Friedman 2009, ch. 9).

    Parameters
    ----------
    posterior : Posterior
        Has ``probs(site)`` for every discrete latent (e.g. CAVI's mean field).
    graph : FactorGraph
    analysis : Analysis

    Returns
    -------
    tuple or None
        ``(error, site, log_evidence)``: ``max |q(z) - p(z | v)|`` over every discrete site's
        probabilities, the site where it occurs and the exact ``log p(v)`` (nats); ``None``
        unless every latent is discrete, the exact tables fit ``analysis.memory_budget`` and
        no ``ppl.param`` was learned (the exact tables use the model's declared values)."""
    if analysis.continuous or not analysis.discrete or not analysis.exact_fits or posterior.params:
        return None
    try:
        plan = discrete_plan(graph, analysis, dtype=torch.float64, device=torch.device("cpu"))
        log_z, exact = plan.log_partition(marginals=True)
        worst, where = 0.0, None
        for site in analysis.discrete:
            err = float((posterior.probs(site).detach().double().cpu() - exact[site].detach().double().cpu())
                        .abs().max())
            if where is None or err > worst:
                worst, where = err, site
    except (PPLError, KeyError, RuntimeError):
        return None
    return worst, where, float(log_z)


def exact_trust(posterior, graph, analysis, *, what: str) -> Trust | None:
    """The verdict of a discrete approximation from :func:`against_exact`: reliable when no
    marginal is off by more than :data:`MARGINAL_TOL`, else unreliable with
    ``next_method="exact"``; ``None`` when the exact marginals cannot be had.  Sets
    ``posterior.diagnostics["exact_log_evidence"]``.

    Parameters
    ----------
    posterior, graph, analysis
        As :func:`against_exact`.
    what : str
        The approximation, for the reasons (``"the mean field"``).
    """
    checked = against_exact(posterior, graph, analysis)
    if checked is None:
        return None
    err, site, log_z = checked
    posterior.diagnostics["exact_log_evidence"] = log_z
    numbers = {"max_marginal_error": err}
    if err <= MARGINAL_TOL:
        return Trust(RELIABLE, [f"every discrete marginal is within {err:.2g} of the exact one (variable elimination "
                                "fits the memory budget, so ppl checked)"], numbers)
    return Trust(UNRELIABLE, [f"{what}'s marginal of '{site}' is off the exact one by {err:.3f} (> {MARGINAL_TOL}; "
                              "KL(q||p) is mode-seeking and the latents are correlated): the exact posterior fits "
                              "the memory budget, use method='exact'"], numbers, next_method="exact")
