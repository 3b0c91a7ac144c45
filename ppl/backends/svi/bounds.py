"""Bounds of a fitted guide, from importance weights ``log w_s = log p(v, h_s) - log q(h_s)``,
``h_s ~ q``:

- the ELBO ``L = E_q[log w]`` (Goodfellow et al. 2016, eq. 19.1), estimated by the mean of
  the ``log w_s`` with its standard error;
- the importance-weighted bound ``log (1/S) Σ_s w_s`` (Burda et al. 2016, IWAE; the
  Rényi bound at α = 0, Li & Turner 2016), which lies between the ELBO and
  ``log p(v)`` in expectation and tends to ``log p(v)`` as S grows;
- the Pareto k̂ of the weights' upper tail (PSIS diagnostic, :func:`ppl.trust.psis.psis`
  as for every other method: Vehtari et al. 2024, Yao et al. 2018): k̂ < 0.5 good,
  0.5-0.7 usable, > 0.7 the guide is unreliable.

Discrete latents the model enumerates are summed out inside ``log p(v, h_s)`` (one
``TraceEnum_ELBO`` particle per draw), so the weights are those of q(h) as a proposal for
the marginal posterior of the guided sites.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.importance import vectorized_importance_weights

from ...errors import NumericalError
from ...trust.psis import psis

__all__ = ["BoundEstimate", "importance_log_weights", "estimate_bounds"]


@dataclass
class BoundEstimate:
    """Bounds from ``num_particles`` importance weights (all in nats).

    Attributes
    ----------
    elbo : float
        Mean of ``log w``.
    elbo_se : float
        Its standard error ``sd(log w) / sqrt(S)``.
    iwae : float
        ``logsumexp(log w) - log S``.
    khat : float
        PSIS Pareto shape (``inf`` when the tail has fewer than 10 draws; ``nan`` when the
        weights are all equal, i.e. q = p).
    num_particles : int
    """

    elbo: float
    elbo_se: float
    iwae: float
    khat: float
    num_particles: int


def importance_log_weights(model, guide, kwargs, *, num_particles, max_plate_nesting, enumerated, chunk=100):
    """``log w_s``, shape ``(num_particles,)``.

    Without enumeration the draws are vectorised ``chunk`` at a time with Pyro's
    ``vectorized_importance_weights`` (the same draws ``pyro.infer.importance.psis_diagnostic``
    makes with ``max_simultaneous_particles=chunk`` under the same seed); a model that does
    not vectorise is run one draw at a time.  With enumerated sites each draw is one
    ``TraceEnum_ELBO`` particle.
    """
    if enumerated:
        elbo = TraceEnum_ELBO(num_particles=1, max_plate_nesting=max_plate_nesting)
        with torch.no_grad():
            return torch.tensor([-elbo.loss(model, guide, **kwargs) for _ in range(num_particles)],
                                dtype=torch.float64)
    chunk = max(1, min(chunk, num_particles))
    out = []
    with torch.no_grad():
        try:
            for _ in range(math.ceil(num_particles / chunk)):
                lw, _, _ = vectorized_importance_weights(model, guide, num_samples=chunk,
                                                         max_plate_nesting=max_plate_nesting, **kwargs)
                out.append(torch.as_tensor(lw, dtype=torch.float64).reshape(-1).expand(chunk))  # 0.0: no sites
        except (RuntimeError, ValueError, AssertionError, NotImplementedError):
            out = [_one_log_weight(model, guide, kwargs) for _ in range(num_particles)]
            return torch.stack(out)
    return torch.cat(out)[:num_particles]


def _one_log_weight(model, guide, kwargs):
    from pyro import poutine

    guide_trace = poutine.trace(guide).get_trace(**kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**kwargs)
    return (model_trace.log_prob_sum() - guide_trace.log_prob_sum()).double()


def estimate_bounds(model, guide, kwargs, *, num_particles, max_plate_nesting, enumerated, deterministic=False,
                    chunk=100, reduce=None) -> BoundEstimate:
    """ELBO (with standard error), IWAE bound and PSIS k̂ from ``num_particles`` draws of
    ``guide``; ``deterministic=True`` (no guided latents) takes one draw: the ELBO is then
    the exact log evidence.  ``reduce`` maps the ``(S,)`` log weights first (distributed:
    their weighted mean over ranks, the same draws on every rank).

    Raises
    ------
    NumericalError
        If a weight is NaN or +inf.
    """
    n = 1 if deterministic else int(num_particles)
    lw = importance_log_weights(model, guide, kwargs, num_particles=n, max_plate_nesting=max_plate_nesting,
                                enumerated=enumerated, chunk=chunk)
    lw = lw if reduce is None else reduce(lw)
    if bool(torch.isnan(lw).any()) or bool((lw == float("inf")).any()):
        raise NumericalError(f"{int((torch.isnan(lw) | (lw == float('inf'))).sum())} of {lw.numel()} importance "
                             "weights log p(v, h) - log q(h) are NaN or +inf: the model's density is not finite "
                             "at the guide's draws")
    m = lw.numel()
    elbo = float(lw.mean())
    if not math.isfinite(elbo):  # some draw has p(v, h) = 0: the ELBO is -inf
        return BoundEstimate(elbo, float("inf"), float(torch.logsumexp(lw, 0) - math.log(m)), float("inf"), m)
    se = float(lw.std(unbiased=True) / math.sqrt(m)) if m > 1 else 0.0
    iwae = float(torch.logsumexp(lw, 0) - math.log(m))
    if deterministic or float(lw.max() - lw.min()) < 1e-9 * (1 + abs(elbo)):
        khat = float("nan")
    else:
        khat = psis(lw).khat
    return BoundEstimate(elbo, se, iwae, khat, m)
