"""Importance weighting of an approximation q in unconstrained space against the model's
log density (:class:`~ppl.backends.common.potential.Potential`), Pareto smoothing, PSIS
resampling, and the trust verdict those give — shared by Laplace, Pathfinder and any
method whose q has a density in unconstrained space.

With draws ``z_s ~ q`` and ``log w_s = log p(h(z_s), v) + log|det ∂h/∂z| - log q(z_s)``,
PSIS (Vehtari et al. 2024) smooths the largest weights; draws resampled by the smoothed
weights approximate the posterior, and k̂ says whether they can be trusted (Yao et al.
2018; Zhang et al. 2022, §2.3 for Pathfinder's importance resampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyro
import torch

from ...trust import RELIABLE, UNRELIABLE, Trust
from ...trust.psis import PSISResult, psis, second_moment_khat

__all__ = ["WeightedDraws", "weigh", "psis_trust", "MIN_PSIS_DRAWS", "draws_by_site", "discrete_sites",
           "mean_field_weights", "tail_mass", "TAIL_MASS_LIMIT", "spread_khat",
           "VARIANCE_SHARE_LIMIT", "gaussian_misfit"]


@dataclass
class WeightedDraws:
    """Draws of q in unconstrained space with their Pareto-smoothed weights.

    Attributes
    ----------
    z : torch.Tensor, shape (S, D)
        The draws.
    log_p : torch.Tensor, shape (S,)
        ``log p(h(z), v) + log|det ∂h/∂z|`` at each draw (nats).
    log_q : torch.Tensor, shape (S,)
        ``log q(z)`` at each draw (nats).
    result : PSISResult
        The smoothed weights and k̂.
    tail : tuple or None
        :func:`tail_mass` of the draws: ``(mass, axis, sd, variance_share)``; ``None`` when
        not probed.
    spread : tuple or None
        :func:`spread_khat` of the draws: ``(khat, site, index, ess)`` of the coordinate
        whose variance estimate is least trustworthy; ``None`` when not computed.
    """

    z: torch.Tensor
    log_p: torch.Tensor
    log_q: torch.Tensor
    result: PSISResult
    tail: tuple | None = None
    spread: tuple | None = None

    @property
    def elbo(self) -> float:
        """``mean(log p - log q)``: the ELBO of q (nats; -inf if some draw has no density)."""
        return float((self.log_p - self.log_q).mean())

    def resample(self, n: int, generator=None) -> torch.Tensor:
        """``n`` draws resampled by the smoothed weights, shape ``(n, D)`` (the raw draws
        when every weight is equal)."""
        idx = self.result.resample(n, generator)
        return self.z[idx.to(self.z.device)]


#: Seconds the model's density may take over an approximation's draws before fewer draws
#: (at least 200) are used: k̂'s threshold then adapts to the smaller sample (Vehtari et al. 2024).
WEIGH_SECONDS = 15.0


def weigh(potential, z: torch.Tensor, log_q: torch.Tensor, max_seconds: float | None = WEIGH_SECONDS) -> WeightedDraws:
    """Importance-weigh draws ``z`` ``(S, D)`` of a q with log density ``log_q`` ``(S,)``;
    for a slow model only the first draws that fit in ``max_seconds`` (at least 200).
    :func:`tail_mass` of the draws is kept in ``tail`` (a Gaussian q's verdict reads it:
    PSIS cannot see tails its draws never reach).

    Raises
    ------
    NumericalError
        When a log weight is NaN or +inf (the density is not finite at a draw).
    """
    from ...errors import NumericalError

    log_p = potential.log_density_batch(z, max_seconds=max_seconds)
    z, log_q = z[: log_p.shape[0]], log_q[: log_p.shape[0]]
    lw = log_p - log_q.double().cpu()
    try:
        result = psis(lw)
    except ValueError as e:
        raise NumericalError(f"importance weights of the approximation: {e}") from None
    tail = tail_mass(potential, z) if z.shape[0] > z.shape[1] + 1 else None
    return WeightedDraws(z, log_p, log_q.double().cpu(), result, tail, spread_khat(potential, z, lw, result))


#: Most coordinates :func:`spread_khat` fits (about 1.3 ms each for 1000 draws): beyond it,
#: those whose importance-weighted variance exceeds q's draws' variance the most.
SPREAD_COORDINATES = 256


def spread_khat(potential, z: torch.Tensor, log_weights: torch.Tensor, result: PSISResult) -> tuple | None:
    """How far the importance estimate of each unconstrained coordinate's variance can be
    trusted: its PSIS k̂ (:func:`~ppl.trust.psis.second_moment_khat`, the tail of
    ``(θ - E θ)² · p/q``, Vehtari et al. 2024, §3) and its effective sample size
    ``(Σ_s w_s h_s)² / Σ_s (w_s h_s)²`` (the importance ESS of the function ``h``, Owen 2013,
    §9.3), with ``w`` the smoothed weights of draws ``z`` ``(S, D)``.

    Returns
    -------
    tuple or None
        ``(khat, site, index, ess)``: among the coordinates whose k̂ reaches the sample-size
        threshold, the one with the smallest ESS (else the one with the largest k̂), its site
        and flat index in the site's unconstrained value; ``None`` without coordinates or
        finite k̂s.  Of more than :data:`SPREAD_COORDINATES` coordinates, those where the
        posterior is widest relative to q are fitted.
    """
    if z.shape[1] == 0 or z.shape[0] < MIN_PSIS_DRAWS:
        return None
    zd = z.detach().double().cpu()
    mean = result.mean(zd)
    coords = torch.arange(zd.shape[1])
    if zd.shape[1] > SPREAD_COORDINATES:   # where p is widest relative to q: the weighted / raw variance
        ratio = result.mean((zd - mean).pow(2)) / zd.var(0).clamp_min(1e-300)
        coords = torch.argsort(ratio, descending=True)[:SPREAD_COORDINATES]
    k = second_moment_khat(log_weights, zd[:, coords], mean[coords])
    if not np.isfinite(k).any():
        return None
    hw = result.weights()[:, None] * (zd[:, coords] - mean[coords]).pow(2)
    ess = (hw.sum(0).pow(2) / hw.pow(2).sum(0).clamp_min(1e-300)).numpy()
    heavy = np.isfinite(k) & (k >= result.threshold)
    best = int(np.argmin(np.where(heavy, ess, np.inf))) if heavy.any() else int(np.nanargmax(k))
    d = int(coords[best])
    for site, size in zip(potential.sites, potential.sizes):
        if d < size:
            return float(k[best]), site, d, float(ess[best])
        d -= size
    return None


#: Above this share of the model's mass beyond 4 sds of q along a principal axis, q's draws
#: (which reach about 4 sds) cannot represent the posterior (a Gaussian leaves 6e-5 there).
TAIL_MASS_LIMIT = 0.02
#: Above this share of the variance of the model's density along a principal axis beyond
#: 4 sds of q (a Gaussian: 0.1 %), a variance estimate with a heavy-tailed k̂ is not
#: trusted (:func:`psis_trust`): resampled draws cannot show that part of the spread.
VARIANCE_SHARE_LIMIT = 0.05
#: The probe's grid along each axis, in sds of q: fine inside ±4, coarse out to ±30.
_TAIL_GRID = torch.cat([torch.arange(-30.0, -4.5, 1.0), torch.arange(-4.0, 4.01, 0.5), torch.arange(5.0, 30.01, 1.0)])


def _line_log_density(potential, points: torch.Tensor) -> torch.Tensor:
    """The model's log density at ``points`` ``(G, D)``, float64 on the CPU; a point where
    the model cannot be evaluated (far out, a transform overflows and the support check
    fails) is ``-inf``."""
    from ...errors import PPLError

    try:
        return potential.log_density_batch(points).double().cpu()
    except (ValueError, RuntimeError, PPLError):
        out = torch.empty(points.shape[0], dtype=torch.float64)
        for i in range(points.shape[0]):
            try:
                out[i] = float(potential.log_density(points[i]))
            except (ValueError, RuntimeError, PPLError):
                out[i] = -math.inf
        return torch.where(torch.isnan(out), torch.full_like(out, -math.inf), out)


def tail_mass(potential, z: torch.Tensor, max_axes: int = 32, max_seconds: float = 5.0) -> tuple | None:
    """How much of the model's mass lies where draws ``z`` ``(S, D)`` never reach.

    Along each principal axis ``u_i`` of the draws' covariance (largest variances first, at
    most ``max_axes``), the model's log density is evaluated on the line
    ``mean + t · sd_i · u_i`` for ``t`` in [-30, 30] and the share of that 1-D density beyond
    ``|t| > 4`` is integrated (trapezoid rule).  For a Gaussian posterior matched by q the
    share is 6e-5 (along an eigenvector of the covariance the conditional sd equals the
    marginal one); a posterior with tails heavier than q's (a Cauchy under a Laplace or
    Pathfinder fit) keeps ~10-20 % there.  PSIS k̂ is estimated from the draws' own weights
    (Vehtari et al. 2024, §3), so it cannot see mass beyond the draws' reach and can fall
    below 0.7 for such targets; this probe can.  The grid stops at ±30 sds, so the share
    it reports is a lower bound.

    Returns
    -------
    tuple or None
        ``(mass, axis, sd, variance_share)``: the largest share of mass, that axis' rank
        (0 = largest variance) and its sd (unconstrained units), and the largest share over
        the axes of the line density's variance (about its own mean) that lies beyond 4
        sds; ``None`` when the model's density is not finite at the draws' mean or the time
        budget ``max_seconds`` (s) ends before one axis.
    """
    import time

    zd = z.detach().double()
    mean = zd.mean(0)
    cov = torch.cov(zd.T).reshape(zd.shape[1], zd.shape[1])
    try:
        var, axes = torch.linalg.eigh(cov.cpu())
    except RuntimeError:  # a degenerate cloud of draws: nothing to probe
        return None
    t = _TAIL_GRID.double()
    width = torch.zeros_like(t)
    width[1:] += (t[1:] - t[:-1]) / 2
    width[:-1] += (t[1:] - t[:-1]) / 2
    beyond = t.abs() > 4.0 + 1e-9
    worst, start = None, time.perf_counter()
    for rank, i in enumerate(torch.argsort(var, descending=True)[:max_axes].tolist()):
        sd = float(var[i].clamp_min(0).sqrt())
        if sd == 0.0:
            continue
        line = mean.cpu() + t[:, None] * sd * axes[:, i]
        lp = _line_log_density(potential, line.to(z.dtype).to(z.device))
        if lp.shape[0] != t.shape[0] or not math.isfinite(float(lp.max())):
            continue
        mass = (lp - lp.max()).exp() * width
        share = float(mass[beyond].sum() / mass.sum())
        second = mass * (t - float((mass * t).sum() / mass.sum())) ** 2
        spread = float(second[beyond].sum() / second.sum())
        if worst is None or share > worst[0]:
            worst = (share, rank, sd, worst[3] if worst else 0.0)
        worst = worst[:3] + (max(worst[3], spread),)
        if time.perf_counter() - start > max_seconds:
            break
    return worst


def draws_by_site(potential, z: torch.Tensor, chains: int = 1) -> dict:
    """Site -> constrained draws ``(chains, S / chains) + shape`` of the rows of ``z``."""
    values = potential.constrain(z)
    out = {}
    for s, v in values.items():
        per = v.shape[0] // chains
        out[s] = v[: per * chains].reshape((chains, per) + tuple(v.shape[1:])).detach()
    return out


def discrete_sites(potential, draws: dict) -> dict:
    """Keyword arguments of :class:`~ppl.posterior.DrawsPosterior` for the discrete latents
    ``potential`` sums out: ``discrete`` (their marginals, computed on first use from the
    ``draws``, site -> ``(C, S) + shape``), ``supports`` and ``families``; empty without
    discrete latents."""
    if not potential.discrete:
        return {}
    from ...compiler.families import enumerate_values

    graph = potential.graph
    flat = {s: v.reshape((-1,) + tuple(v.shape[2:])) for s, v in draws.items()}
    return {"discrete": lambda: potential.discrete_marginals(flat),
            "supports": {n: enumerate_values(graph.sites[n].fn) for n in potential.discrete},
            "families": {n: graph.variables[n].family for n in potential.discrete}}


#: Fewest draws on which a PSIS verdict can be "reliable" (with fewer, k̂'s tail fit has
#: under 10 points and the estimates themselves are a handful of draws).
MIN_PSIS_DRAWS = 100


def psis_trust(w: WeightedDraws, *, what: str, next_method: str | None, corrected: bool = True) -> Trust:
    """The verdict of an approximation from its PSIS diagnostics.

    Parameters
    ----------
    w : WeightedDraws
    what : str
        The approximation, for the reasons (``"the Laplace approximation"``).
    next_method : str or None
        What to try when unreliable.
    corrected : bool
        The answer is the PSIS-resampled draws (reliable when k̂ is below the sample-size
        threshold, Vehtari et al. 2024); otherwise the raw q (reliable only when k̂ < 0.5,
        Yao et al. 2018, §2.2).

    An approximation whose k̂ passes is still unreliable when :func:`tail_mass` of its
    draws (``w.tail``) exceeds :data:`TAIL_MASS_LIMIT`: the model keeps mass beyond the
    draws' reach, which k̂ cannot see; or when a coordinate's variance estimate cannot be
    trusted (:func:`spread_khat`: heavy-tailed k̂ on few effective draws or with much of
    the spread out of reach).
    """
    r = w.result
    s = w.z.shape[0]
    numbers = {"psis_khat": r.khat, "khat_threshold": r.threshold if corrected else min(0.5, r.threshold),
               "psis_ess": r.ess, "num_draws": s}
    if w.tail is not None:
        numbers["tail_mass"], numbers["tail_variance_share"] = w.tail[0], w.tail[3]
    if w.spread is not None:
        numbers["psis_khat_variance"], numbers["variance_ess"] = w.spread[0], w.spread[3]
    if not math.isfinite(w.elbo) and not math.isnan(r.khat) and r.ess < 1.5:
        return Trust(UNRELIABLE, [f"{what} puts its draws where the model has no density"], numbers, next_method)
    trust = _psis_verdict(w, r, s, numbers, what, next_method, corrected)
    outside = float((~torch.isfinite(w.log_p)).double().mean())
    if outside > 0:   # the ELBO is -inf: say why, whatever the verdict
        numbers["draws_without_density"] = outside
        trust.reasons.append(f"{outside:.1%} of the draws of {what} fall where the model has no density (log p = "
                             "-inf, or NaN, read as -inf), so its ELBO is -inf; importance resampling gives them "
                             "weight 0")
    return trust


def gaussian_misfit(numbers: dict) -> str | None:
    """Why a Gaussian approximation's PSIS numbers (``trust.numbers`` of Laplace or
    Pathfinder) show a posterior whose shape no Gaussian matches, or None: k̂ of the
    weights at 0.7 or above (Yao et al. 2018, §2.2), more than :data:`TAIL_MASS_LIMIT` of
    the mass beyond the draws' reach, or a variance estimate that fails
    (:func:`psis_trust`'s rule).  Too few draws, or draws where the model has no density,
    say nothing about the shape."""
    k = numbers.get("psis_khat")
    if k is not None and k >= 0.7:
        return f"k̂ {k:.2f}"
    if (numbers.get("tail_mass") or 0.0) > TAIL_MASS_LIMIT:
        return f"{numbers['tail_mass']:.0%} of the mass beyond its draws' reach"
    if _variance_fails(numbers):
        return f"variance k̂ {numbers['psis_khat_variance']:.2f}"
    return None


def _variance_fails(numbers: dict) -> bool:
    """Whether a verdict's numbers show a variance estimate that fails: its k̂
    (``psis_khat_variance``, :func:`spread_khat`) reaches ``khat_threshold`` and the heavy
    tail matters, either because the estimate rests on fewer than min(100, S/10) effective
    draws (the weights' own ESS rule) or because more than :data:`VARIANCE_SHARE_LIMIT` of
    the model's spread along an axis lies beyond the draws' reach (:func:`tail_mass`).  k̂
    alone also flags near-Gaussian posteriors with a slightly heavier tail whose sds the
    draws estimate well (a Gamma rate from 20 points)."""
    kv, limit = numbers.get("psis_khat_variance"), numbers.get("khat_threshold")
    if kv is None or limit is None or not kv >= limit:
        return False
    return ((numbers.get("variance_ess") or 0.0) < min(100.0, 0.1 * (numbers.get("num_draws") or 0))
            or (numbers.get("tail_variance_share") or 0.0) > VARIANCE_SHARE_LIMIT)


def _psis_verdict(w: WeightedDraws, r, s: int, numbers: dict, what: str, next_method, corrected: bool) -> Trust:
    """:func:`psis_trust`'s verdict from the draws' count, k̂, the importance ESS and the
    tail probe."""
    limit = numbers["khat_threshold"]
    if s < MIN_PSIS_DRAWS:
        return Trust(UNRELIABLE, [f"{what} was checked on {s} draws: PSIS needs at least {MIN_PSIS_DRAWS} to "
                                  "estimate k̂ (its tail fit uses min(S/5, 3√S) of them, Vehtari et al. 2024, §3), "
                                  f"and its means, sds and quantiles come from those {s} draws; raise num_draws"],
                     numbers, next_method)
    if math.isnan(r.khat):
        return Trust(RELIABLE, [f"{what} matches the posterior: every importance weight p/q is equal"], numbers)
    if r.khat < limit and r.ess >= min(100.0, 0.1 * s) and w.tail is not None and w.tail[0] > TAIL_MASS_LIMIT:
        mass, rank, sd = w.tail[:3]
        axis = "its widest principal axis" if rank == 0 else f"its principal axis no. {rank + 1} by width"
        return Trust(UNRELIABLE, [f"along {axis} (sd {sd:.3g}, unconstrained units) the model keeps {mass:.0%} of its "
                                  f"mass beyond 4 sds of {what}, where its draws do not reach: the posterior's tails "
                                  f"are heavier than the approximation's, so its means and sds can be far off although "
                                  f"PSIS k̂ = {r.khat:.2f} (k̂ only sees the draws' own tail)"], numbers, next_method)
    if r.khat < limit and r.ess >= min(100.0, 0.1 * s) and _variance_fails(numbers):
        k, site, index, ess = w.spread
        where = f"site '{site}'" + (f" (unconstrained coordinate {index})" if w.z.shape[1] > 1 else "")
        share = numbers.get("tail_variance_share") or 0.0
        why = (f"it rests on {ess:.0f} effective draws" if ess < min(100.0, 0.1 * s) else
               f"{share:.0%} of the model's spread along a principal axis lies beyond 4 sds of the draws")
        return Trust(UNRELIABLE, [f"the posterior variance of {where} cannot be estimated from {what}'s draws: "
                                  f"PSIS k̂ of (θ - E θ)² · p/q is {k:.2f} >= {limit:.2f} (Vehtari et al. 2024, §3) "
                                  f"and {why}, although k̂ of the weights p/q alone is {r.khat:.2f}: the posterior's "
                                  "tails are heavier than the approximation's, so its sds (and the means that depend "
                                  "on the tails) can be far off"], numbers, next_method)
    if r.khat < limit and r.ess >= min(100.0, 0.1 * s):
        how = "its PSIS-resampled draws are reliable" if corrected else "q itself is close to the posterior"
        return Trust(RELIABLE, [f"PSIS k̂ = {r.khat:.2f} < {limit:.2f} with importance ESS {r.ess:.0f} of {s}: "
                                f"{how} (Vehtari et al. 2024; Yao et al. 2018)"], numbers)
    if r.khat >= limit:
        why = (f"PSIS k̂ = {r.khat:.2f} >= {limit:.2f}: {what} misses posterior mass (the weights p/q have a heavy "
               "tail), so its numbers can be far off")
    else:
        why = f"the importance ESS is {r.ess:.0f} of {s} draws: too few effective draws to trust the estimates"
    return Trust(UNRELIABLE, [why], numbers, next_method)


def mean_field_weights(graph, *, factors: dict, tables: dict, num_draws: int, seed: int = 0,
                       dtype=torch.float64) -> WeightedDraws:
    """Importance weights of a factorised q (CAVI's mean field) against the full log joint
    ``log p(h, v)`` (every latent conditioned, nothing summed out).

    Parameters
    ----------
    graph : FactorGraph
    factors : dict[str, torch.distributions.Distribution]
        Continuous site -> its factor (batch shape = the site's batch shape).
    tables : dict[str, tuple]
        Discrete site -> ``(probs, support)``: probabilities ``batch_shape + (K,)`` and
        support values ``(K,) + event_shape``.
    num_draws : int
        ``S``.
    seed : int
        Seed of the draws (the global RNG state is left as it was).

    Returns
    -------
    WeightedDraws
        ``z`` is empty (``(S, 0)``): the draws live in the sites' own spaces.

    Raises
    ------
    NumericalError
        When a log weight is NaN or +inf.
    """
    from ...errors import NumericalError
    from ...posterior.tables import support_values
    from .logjoint import LogJoint
    from .runtime import run_context

    gen = torch.Generator().manual_seed(int(seed))
    s = int(num_draws)
    values, log_q = {}, torch.zeros(s, dtype=torch.float64)
    for site, (probs, support) in tables.items():
        p = probs.detach().cpu().double()
        flat = p.reshape(-1, p.shape[-1])
        idx = torch.multinomial(flat, s, replacement=True, generator=gen).T            # (S, copies)
        log_q += flat.clamp_min(1e-300).log().gather(1, idx.T).T.sum(-1)
        values[site] = support_values(support.cpu(), idx.reshape((s,) + tuple(p.shape[:-1])))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for site, q in factors.items():
            draw = q.sample((s,))
            lp = q.log_prob(draw).detach().double().cpu()
            log_q += lp.reshape(s, -1).sum(-1)
            values[site] = draw
    device = next((v.device for v in values.values()), torch.device("cpu"))
    log_p = torch.empty(s, dtype=torch.float64)
    with run_context(device, dtype, None), torch.no_grad(), pyro.validation_enabled(False):
        lj = LogJoint(graph, device, dtype)
        failed = None
        for i in range(s):
            try:
                log_p[i] = float(lj({k: v[i].to(device) for k, v in values.items()}))
            except (ValueError, RuntimeError) as e:
                log_p[i], failed = -math.inf, failed or e
    if failed is not None and not bool(torch.isfinite(log_p).any()):
        raise NumericalError(f"the model's log joint could not be evaluated at any draw of q: "
                             f"{type(failed).__name__}: {str(failed).splitlines()[0] if str(failed) else failed!r}")
    log_p = torch.where(torch.isnan(log_p), torch.full_like(log_p, -math.inf), log_p)
    try:
        result = psis(log_p - log_q)
    except ValueError as e:
        raise NumericalError(f"importance weights of the mean-field approximation: {e}") from None
    return WeightedDraws(torch.zeros(s, 0), log_p, log_q, result)
