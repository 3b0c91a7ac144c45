"""A sampler's warm start from an earlier result: where its chains begin and the metric
(mass matrix) its warmup begins with.

Zhang, Carpenter, Gelman & Vehtari (2022), "Pathfinder: Parallel quasi-Newton variational
inference", JMLR 23, §1 and §5: a normal approximation's draws are good starting points for
MCMC, and its covariance a good first mass matrix, which spares the warmup the long way in
from the prior's region.  This matters where the posterior's scales differ by orders of
magnitude (a regression on unscaled predictors, e.g. statsmodels' longley data): from
uniform(-2, 2) starts the first metric is estimated far from the posterior, and ChEES-HMC's
warmup ended there with a step size of 0.003, R-hat 10; started from the Laplace fit's draws
and covariance it is right and reliable (tests/test_warmstart.py).

The earlier result is any :class:`~ppl.posterior.Posterior` of the same model with draws of
its continuous latents (Laplace, Pathfinder, SVI, NUTS, ChEES).  Laplace and Pathfinder
keep the approximation's own draws in unconstrained space (``weighted_draws.z``); for others
the draws are mapped back through the supports' transforms.  The chains then still have to
agree (R-hat) and mix (ESS): a warm start changes where they begin, not how they are judged.
ChEES starts half of its chains there and half at its own uniform(-2, 2) starts: chains
from dispersed starts are what lets R-hat see a mode the approximation missed (on a
posterior with modes at mu = ±2 and a one-path Pathfinder fit in one of them, the chains
split and R-hat was 1.49; all from the fit, they would have agreed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import OptionError, PPLError

__all__ = ["WarmStart", "warm_start", "start_khat", "MIN_DRAWS", "MIN_FINITE"]

#: Draws of the earlier result used, at least (the covariance of ``D`` coordinates needs
#: more: ``10 D``, capped by what the result holds).
MIN_DRAWS = 200


#: A Gaussian approximation can start a sampler only when at least this many of its draws
#: have a finite log density (16 chains start from distinct ones).
MIN_FINITE = 64


def start_khat(posterior) -> float:
    """How well ``posterior`` (a Laplace or Pathfinder result) would start a sampler: its
    PSIS k̂ (lower: the approximation closer to the posterior), or ``inf`` when it is None,
    keeps no unconstrained draws, has fewer than :data:`MIN_FINITE` of them with a finite
    density, or no finite k̂ (``method="auto"`` passes the lowest to ChEES)."""
    weighted = getattr(posterior, "weighted_draws", None)
    if weighted is None or int(torch.isfinite(weighted.log_p).sum()) < MIN_FINITE:
        return math.inf
    khat = posterior.trust.numbers.get("psis_khat")
    return khat if khat is not None and math.isfinite(khat) else math.inf


@dataclass
class WarmStart:
    """Where a sampler's chains begin and its first metric.

    Attributes
    ----------
    starts : torch.Tensor, shape (C, D)
        Distinct draws of the earlier result, unconstrained, each with a finite log density.
    factor : torch.Tensor, shape (D, D) or (D,)
        ``L`` with ``L Lᵀ`` the draws' covariance (lower triangular), or their standard
        deviations where a dense estimate is not wanted or not positive definite.
    source : str
        The earlier result's method (for the diagnostics).
    """

    starts: torch.Tensor
    factor: torch.Tensor
    source: str


def warm_start(posterior, potential, num_chains: int, generator, dense: bool) -> WarmStart:
    """The :class:`WarmStart` of ``num_chains`` chains on ``potential`` from ``posterior``.

    Parameters
    ----------
    posterior : Posterior
        An earlier result of the same model (same continuous latents and shapes).
    potential : Potential
        The model's log density in unconstrained space, ``D`` coordinates.
    num_chains : int
    generator : torch.Generator
        Picks which draws the chains start from.
    dense : bool
        Whether the metric may be dense (a full covariance).

    Raises
    ------
    OptionError
        If ``posterior`` is not a result of this model's continuous latents, or fewer than
        ``num_chains`` of its draws have a finite log density under the model.
    """
    z = _unconstrained_draws(posterior, potential)
    with torch.no_grad():
        lp = potential.log_density_rows(z)
    z = torch.unique(z[torch.isfinite(lp)], dim=0)
    if z.shape[0] < max(num_chains, 2):
        raise OptionError(f"init=<{posterior.method} Posterior>: {z.shape[0]} distinct draws have a finite log "
                          f"density under model '{potential.graph.model.name}', {num_chains} chains need as many")
    pick = torch.randperm(z.shape[0], generator=generator)[:num_chains].to(z.device)
    return WarmStart(starts=z[pick].clone(), factor=_factor(z, dense), source=posterior.method)


def _factor(z: torch.Tensor, dense: bool) -> torch.Tensor:
    d = z.shape[1]
    sd = z.std(0).clamp_min(1e-12 * float(z.abs().max().clamp_min(1.0)))
    if not dense or d < 2 or z.shape[0] < 10 * d:
        return sd
    cov = torch.cov(z.T)
    chol, info = torch.linalg.cholesky_ex(cov)
    return chol if int(info) == 0 and bool(torch.isfinite(chol).all()) else sd


def _unconstrained_draws(posterior, potential) -> torch.Tensor:
    """``(S, D)`` draws of ``posterior`` in ``potential``'s unconstrained coordinates."""
    weighted = getattr(posterior, "weighted_draws", None)
    if weighted is not None and weighted.z.shape[1] == potential.dim and _same_latents(posterior, potential):
        return weighted.z.to(potential.median)
    names = list(potential.sites)
    try:
        draws = posterior.sample(max(MIN_DRAWS, 10 * potential.dim), seed=0)
    except PPLError as e:
        raise OptionError(f"init=<{posterior.method} Posterior>: it gives no draws to start from: {e}") from e
    missing = [n for n in names if n not in draws]
    shapes = {n: tuple(draws[n].shape[1:]) for n in names if n in draws}
    expected = {n: tuple(potential.graph.sites[n].value.shape) for n in names}
    if missing or shapes != {n: expected[n] for n in shapes}:
        raise OptionError(f"init=<{posterior.method} Posterior> is not a result of model "
                          f"'{potential.graph.model.name}': "
                          + (f"it has no draws of {missing}" if missing else
                             f"its draws have shapes {shapes}, the model's latents {expected}"))
    n = next(iter(draws.values())).shape[0]
    rows = [potential.unconstrain({k: draws[k][i].to(potential.median) for k in names}) for i in range(n)]
    return torch.stack(rows)


def _same_latents(posterior, potential) -> bool:
    """Whether ``posterior``'s graph has ``potential``'s continuous latents, in the same
    order and shapes (then its unconstrained draws are in the same coordinates)."""
    graph = getattr(posterior, "graph", None)
    if graph is None or potential.noncentred:   # non-centred sites: other coordinates than the draws'
        return False
    if graph is potential.graph:
        return True
    mine, theirs = potential.graph, graph
    return (list(theirs.continuous_latent()) == potential.sites
            and all(theirs.sites[s].value.shape == mine.sites[s].value.shape for s in potential.sites))
