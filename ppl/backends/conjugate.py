"""CAVI for conjugate-exponential continuous latents (Normal, Gamma) by sigma points.

In a conjugate-exponential model the log joint is *multilinear* in the sufficient statistics
``T_j(h_j)`` of the latents: linear in each site's statistics when the others are fixed
(Normal: ``(h, h²)``; Gamma: ``(log τ, τ)``).  Then, under a mean field,

* ``E_q[ln p(v, h)]`` is an affine function of each site's mean parameters
  ``μ_j = E_q[T_j]``, and
* the optimal factor is in the site's own family with natural parameters
  ``η_j* = ∂ E_q[ln p] / ∂ μ_j`` (the rule of Autoconj, Hoffman, Johnson & Tran 2018;
  Goodfellow et al. 2016, eq. 19.56; Bishop 2006, §10.4).

``E_q[ln p]`` is computed exactly from the user's model, with no symbolic rewriting, by
*sigma points*.  Each site is replaced by a two-point distribution with the same mean
parameters:
* Normal: ``m ± σ``;
* Gamma: ``μ₂ ± √(μ₂² − e^{2μ₁})``, whose geometric mean is ``e^{μ₁}`` and arithmetic mean ``μ₂``.

The model is evaluated at every combination of the sites' points, and the results are
averaged.  For a function linear in each site's statistics this average equals the
expectation under q exactly.  The points are differentiable in ``μ``, so autograd gives
``η*``.

Multilinearity is *checked*, not assumed.  ``E_q[ln p]`` must be affine in each site's
mean parameters: a second difference along a random direction must vanish to round-off.
A non-conjugate model, such as a Poisson likelihood on a Normal latent, fails that check
and is refused.

This path is for models whose continuous factors each touch one plate copy of each site:
a factor in plates ``P`` may use sites in plates ``⊆ P``. Then moving all copies of a site
to their ``+`` points together gives every factor copy its own independent combination, so
``2^(number of sites)`` model runs give the exact expectation. Factors that couple the
copies of one site (a regression with weights in a plate) are the Gaussian path's
(:func:`ppl.backends.cavi._run_gaussian`).
"""

from __future__ import annotations

import itertools
import math
import time

import torch

from ..errors import NumericalError, OptionError
from .base import run_context
from .meanfield import coordinate_ascent
from .logjoint import LogJoint

__all__ = ["FAMILIES", "conjugate_problem", "run_conjugate"]

#: Families with a sigma-point rule, and the most sites the path enumerates (2^k runs).
FAMILIES = ("Normal", "Gamma")
MAX_SITES = 8


# ----------------------------------------------------------------------------- families
def _points(family, mu1, mu2):
    """The two sigma points of a site with mean parameters ``(mu1, mu2)`` (weights ½)."""
    if family == "Normal":
        half = torch.sqrt((mu2 - mu1 * mu1).clamp_min(0.0))
        return mu1 - half, mu1 + half
    half = torch.sqrt((mu2 * mu2 - torch.exp(2.0 * mu1)).clamp_min(0.0))       # Gamma
    return mu2 - half, mu2 + half


def _mean_params(family, q):
    """``(E[T₁], E[T₂])`` of the factor ``q`` (``(m, s²)`` for Normal, ``(a, b)`` for Gamma)."""
    p1, p2 = q
    if family == "Normal":
        return p1, p1 * p1 + p2
    return torch.special.digamma(p1) - torch.log(p2), p1 / p2


def _from_natural(family, eta1, eta2):
    """The factor of natural parameters ``η`` (``(m, s²)`` or ``(a, b)``), or None if improper."""
    if family == "Normal":
        precision = -2.0 * eta2
        if not bool((precision > 0).all()):
            return None
        return eta1 / precision, 1.0 / precision
    a, b = eta1 + 1.0, -eta2
    if not bool(((a > 0) & (b > 0)).all()):
        return None
    return a, b


def _natural(family, q):
    p1, p2 = q
    if family == "Normal":
        return p1 / p2, -0.5 / p2
    return p1 - 1.0, -p2


def _entropy(family, q) -> torch.Tensor:
    p1, p2 = q
    if family == "Normal":
        return 0.5 * torch.log(2 * math.pi * math.e * p2).sum()
    a, b = p1, p2
    return (a - torch.log(b) + torch.lgamma(a) + (1.0 - a) * torch.special.digamma(a)).sum()


def _distribution(family, q):
    p1, p2 = q
    if family == "Normal":
        return torch.distributions.Normal(p1, p2.sqrt())
    return torch.distributions.Gamma(p1, p2)


# ----------------------------------------------------------------------------- expectation
class _Expectation:
    """``E_q[ln p(v, h)]`` as a function of every site's mean parameters, by sigma points."""

    def __init__(self, lj, sites, families):
        self.lj, self.sites, self.families = lj, sites, families

    def __call__(self, mu: dict) -> torch.Tensor:
        points = {s: _points(self.families[s], *mu[s]) for s in self.sites}
        total = 0.0
        for signs in itertools.product((0, 1), repeat=len(self.sites)):
            total = total + self.lj({s: points[s][k] for s, k in zip(self.sites, signs)})
        return total / 2 ** len(self.sites)


def conjugate_problem(graph, sites) -> str | None:
    """Why the sigma-point path does not apply to ``graph``'s continuous latents, or None."""
    if len(sites) > MAX_SITES:
        return f"{len(sites)} continuous latent sites (the sigma-point path enumerates 2^k, at most {MAX_SITES})"
    for s in sites:
        var = graph.variables[s]
        if var.family not in FAMILIES or var.event_shape:
            return (f"continuous latent '{s}' ({var.family}{' with event shape' if var.event_shape else ''}): "
                    f"closed-form mean-field updates exist here for scalar {', '.join(FAMILIES)} latents")
    for name, f in graph.factors.items():
        for s in f.scope:
            if s in sites and not set(graph.variables[s].plates) <= set(f.plates):
                return (f"factor '{name}' couples the plate copies of latent '{s}' (a factor outside the plate of "
                        "some of its latents); the sigma-point path needs one copy per factor")
    try:
        lj, families, q = _setup(graph, sites, torch.device("cpu"), torch.float64, seed=0)
        expectation = _Expectation(lj, sites, families)
        with torch.no_grad():
            mu = {u: _mean_params(families[u], q[u]) for u in sites}
            for s in sites:
                # E_q[ln p] must be affine in μ_s: its second difference along the line from
                # μ_s to the mean parameters of a perturbed factor (both feasible) vanishes
                a = torch.stack(mu[s])
                b = torch.stack(_mean_params(families[s], _perturbed(families[s], q[s])))
                line = [a + t * (b - a) for t in (0.0, 0.5, 1.0)]
                vals = [float(expectation({**mu, s: (p[0], p[1])})) for p in line]
                second = vals[0] - 2 * vals[1] + vals[2]
                if not all(math.isfinite(v) for v in vals) or abs(second) > 1e-8 * (sum(abs(v) for v in vals) + 1):
                    return (f"the log joint is not linear in the sufficient statistics of latent '{s}' "
                            f"({families[s]}): the model is not conjugate-exponential in it (e.g. a non-Gaussian "
                            "likelihood on a Normal latent), so its mean-field factor has no closed form here")
    except (ValueError, RuntimeError) as e:
        return f"the model could not be evaluated on sigma points: {type(e).__name__}: {e}"
    return None


def _perturbed(family, q):
    """A nearby member of the family (the mean parameters of the segment between it and ``q``
    are feasible: both sets are convex)."""
    p1, p2 = q
    if family == "Normal":
        return p1 + 0.3, p2 * 1.5
    return p1 * 1.5, p2 * 0.8


def _setup(graph, sites, device, dtype, seed, init="random"):
    """LogJoint, families, and initial factors: site -> (p1, p2) with the site's shape."""
    families = {s: graph.variables[s].family for s in sites}
    with run_context(device, dtype, seed):
        lj = LogJoint(graph, device, dtype)
        start = lj.initial_values(sites, "sample" if init == "random" else "mean") if not isinstance(init, dict) \
            else lj.initial_values(sites, init)
    q = {}
    for s in sites:
        v = start[s]
        if families[s] == "Normal":
            q[s] = (v.clone(), torch.ones_like(v))
        else:
            q[s] = (torch.full_like(v, 2.0), 2.0 / v)              # mean = value, shape 2
    return lj, families, q


# ----------------------------------------------------------------------------- run
def run_conjugate(method, graph, *, max_iter, tol, damping, schedule, init, seed, dtype, device, progress, start):
    """CAVI sweeps with sigma-point natural parameters; see the module docstring."""
    from ..posterior import FactorPosterior

    sites = graph.continuous_latent()
    if not (isinstance(init, dict) or init in ("random", "uniform")):
        raise OptionError(f"init must be 'random', 'uniform' or a dict site -> starting value, got {init!r}")
    lj, families, q = _setup(graph, sites, device, dtype, seed, init)
    expectation = _Expectation(lj, sites, families)

    def elbo(q) -> float:
        with torch.no_grad():
            mu = {s: _mean_params(families[s], q[s]) for s in sites}
            return float(expectation(mu) + sum(_entropy(families[s], q[s]) for s in sites))

    def optimum(q, s):
        mu = {u: tuple(t.detach() for t in _mean_params(families[u], q[u])) for u in sites}
        leaves = tuple(t.clone().requires_grad_(True) for t in mu[s])
        with torch.enable_grad():
            e = expectation({**mu, s: leaves})
            eta = torch.autograd.grad(e, leaves)
        old = _natural(families[s], q[s])
        eta = tuple((1.0 - damping) * o + damping * n for o, n in zip(old, eta))
        new = _from_natural(families[s], *eta)
        if new is None:
            raise NumericalError(f"CAVI: the update of latent '{s}' ({families[s]}) has improper natural "
                                 f"parameters (the model's log joint is not bounded in it under q)")
        return tuple(t.detach() for t in new)

    def sweep(q):
        if schedule == "sequential":
            q = dict(q)
            for s in sites:
                q[s] = optimum(q, s)
            return q
        return {s: optimum(q, s) for s in sites}

    def moved(new, old):
        return max(float((a - b).abs().max()) / (1.0 + float(b.abs().max()))
                   for s in sites for a, b in zip(new[s], old[s]))

    with run_context(device, dtype, None):
        q, history, converged, decreases = coordinate_ascent(
            q, sweep, elbo, moved, graph=graph, schedule=schedule, damping=damping, max_iter=max_iter, tol=tol,
            progress=progress)
    diagnostics = {"schedule": schedule, "damping": damping, "sweeps": len(history) - 1, "path": "sigma points",
                   "decreases": decreases, "device": str(device)}
    return FactorPosterior(method, graph=graph, factors={s: _distribution(families[s], q[s]) for s in sites},
                           elbo=history[-1], history=history, converged=converged,
                           elapsed=time.perf_counter() - start, diagnostics=diagnostics)
