"""Does a maximum exist?  Decided from the log joint itself along rays toward the edges of
each site's support, not from how far an optimiser's iterate travelled.

For a coordinate with a support edge (a positive scale at 0, a probability at 0 or 1), its
free value ``u`` (the value mapped by ``biject_to(support).inv``) runs to ``±∞`` at the
edge.  Along ``u + t·d`` with the other coordinates fixed, the log joint ``f(t)``

* approaches a finite supremum when the edge is harmless (a Bernoulli probability that
  tends to 1 on all-ones data: the increments of ``f`` over doubling steps shrink
  geometrically, ``f(t) → C``), and
* grows without bound when the density explodes there (a Gamma(a < 1) value at 0:
  ``f(t) ≈ (1 - a)|t|``, the increments double; a log growth ``c·log|t|`` keeps them
  constant).

So the edge is unbounded when the increment over ``t ∈ [16, 32]`` is positive and at
least 0.9 of the one over ``[8, 16]`` (bounded approaches shrink it by at least half, for
any ``f = C - O(1/t)`` or faster).  The steps stop at ``|t| = 32`` in free units
(``e^-32 ≈ 1e-14`` from the edge), within float64's reach for every transform.
"""

from __future__ import annotations

import math

import pyro
import torch
from torch.distributions import transform_to
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from .pointopt import DivergedError, maximise, param_block

__all__ = ["SHRUNK", "shrunk_elements", "Edge", "unbounded_edges", "PROBE_STEPS", "unbounded_params",
           "unbounded_reason", "profile_edges", "elbo_param_edges", "FAR_FREE", "PROFILE_STEPS"]

#: Free-space steps of the probe (doubling).
PROBE_STEPS = (0.0, 8.0, 16.0, 32.0)

#: Free-space steps of the profile probe and of the probe of learned params (doubling; stops
#: at e^-8 of the returned value, where float64 still resolves a data point and a covariance).
PROFILE_STEPS = (0.0, 2.0, 4.0, 8.0)

#: Elements of a block probed at most (a fixed subset of larger blocks).
MAX_ELEMENTS = 50

#: A transformed free value beyond this magnitude (a scale below e^-20, a probability within
#: e^-20 of 0 or 1) has run toward the edge of its support: worth probing.
FAR_FREE = 20.0


class Edge:
    """An edge of a site's support where the log joint grows without bound.

    Attributes
    ----------
    name : str
        The site or param.
    index : int
        The element (flat index into the block's free value).
    direction : int
        +1 or -1: the free value's direction toward the edge.
    value : float
        The model-side value reached by the probe (nats grow as it approaches the edge).
    growth : float
        The log joint's increase over the last probe step (nats).
    """

    def __init__(self, name, index, direction, value, growth):
        self.name, self.index, self.direction, self.value, self.growth = name, index, direction, value, growth

    def __repr__(self):
        return f"Edge({self.name}[{self.index}], direction={self.direction:+d}, growth={self.growth:.3g})"


def _ray(objective, blocks, block, k, direction, steps=PROBE_STEPS) -> list:
    base = {b.name: b.value() for b in blocks}
    out = []
    for t in steps:
        free = block.free.detach().clone().reshape(-1)
        free[k] = free[k] + direction * t
        vals = dict(base)
        with torch.no_grad():
            vals[block.name] = block.to_value(free.reshape(block.free.shape))
            try:
                f = float(objective(vals))
            except (ValueError, RuntimeError):
                f = math.nan
        out.append((f, vals[block.name].reshape(-1)[k].item() if vals[block.name].numel() else math.nan))
    return out


def _grows(values) -> float | None:
    """The last increment when ``f`` grows without bound along the probe, else None."""
    f = [v for v, _ in values]
    if not all(math.isfinite(x) for x in f):
        return None
    inc1, inc2 = f[2] - f[1], f[3] - f[2]
    if inc2 > 1e-6 and inc1 > 0 and inc2 >= 0.9 * inc1:
        return inc2
    return None


def unbounded_edges(objective, blocks, elements=None, seed: int = 0, steps=PROBE_STEPS) -> list:
    """The support edges toward which ``objective`` (a log joint of the blocks' model-side
    values, nats) grows without bound, probing each transformed block's elements (at most
    :data:`MAX_ELEMENTS` per block, or those in ``elements``: block name -> flat indices)
    in both directions, at the free-space ``steps`` (doubling, from 0).

    Returns
    -------
    list[Edge]
        Empty when every probed edge is bounded.
    """
    found = []
    gen = torch.Generator().manual_seed(seed)
    for block in blocks:
        if not block.transformed or block.free.numel() == 0:
            continue
        n = block.free.numel()
        if elements is not None:
            idx = list(elements.get(block.name, []))
        elif n <= MAX_ELEMENTS:
            idx = list(range(n))
        else:
            idx = torch.randperm(n, generator=gen)[:MAX_ELEMENTS].tolist()
        for k in idx:
            for direction in (1, -1):
                values = _ray(objective, blocks, block, k, direction, steps)
                growth = _grows(values)
                if growth is not None:
                    found.append(Edge(block.name, k, direction, values[-1][1], growth))
                    break
    return found


def unbounded_params(objective, values: dict, constraints: dict, elements: dict | None = None) -> list:
    """The support edges of ``ppl.param`` values toward which ``objective`` (a
    log-likelihood or ELBO of the params' constrained values, nats) grows without bound,
    probed by :func:`unbounded_edges` along rays from ``values`` (the point an optimiser
    returned).  It is the evidence that the maximum-likelihood estimate does not exist there:
    on one data point ``log N(x | x, s) = -log s - log √(2π)`` grows without bound as
    ``s -> 0``, and a mixture component sitting on one data point does the same (Bishop 2006,
    PRML §9.2.1, the singularities of the Gaussian mixture likelihood).

    Parameters
    ----------
    objective : callable
        Name -> constrained value (every param of ``values``) -> float.
    values : dict
        Param name -> constrained value at the returned point.
    constraints : dict
        Param name -> constraint (None: real, nothing probed).
    elements : dict, optional
        Param name -> flat indices of its free value to probe, or None for all (at most
        :data:`MAX_ELEMENTS`); params left out are not probed.  Default: every param.

    Returns
    -------
    list[Edge]
        Empty when every probed edge is bounded (e.g. 200 points from N(0, 0.01): the
        likelihood falls as s -> 0 below the sample sd, a proper maximum).
    """
    blocks = [param_block(n, v, constraints.get(n)) for n, v in values.items() if constraints.get(n) is not None]
    if elements is not None:
        blocks = [b for b in blocks if b.name in elements]
        elements = {b.name: (range(b.free.numel()) if elements[b.name] is None else elements[b.name])
                    for b in blocks}
        elements = {k: list(v)[:MAX_ELEMENTS] for k, v in elements.items()}
    fixed = {n: v for n, v in values.items() if n not in {b.name for b in blocks}}
    return unbounded_edges(lambda vals: objective({**fixed, **vals}), blocks, elements=elements, steps=PROFILE_STEPS)


def unbounded_reason(edges: list, method: str) -> str:
    """The trust reason for a result at which the likelihood has no maximum (``edges`` from
    :func:`unbounded_params`, not empty): which param, that the likelihood is unbounded
    there and why (Bishop 2006, PRML §9.2.1), and what to do."""
    e = edges[0]
    names = sorted({x.name for x in edges})
    toward = "0" if e.value < 1e-6 else f"{e.value:.3g}"
    return (f"the likelihood is unbounded at param '{e.name}' (element {e.index}): log p keeps increasing (by "
            f"{e.growth:.3g} nats per probe step) as it runs toward the edge of its support ({toward}), so the "
            f"maximum-likelihood value of {names} does not exist and the point method '{method}' returned (a "
            "learned scale at its floor or still shrinking) is an artefact of where it stopped: a component collapsed "
            "on a data point, or too few data for a learned scale (Bishop 2006, PRML §9.2.1). Put a prior on the "
            f"scale (make '{e.name}' a latent, e.g. InverseGamma or HalfNormal), add data, or use fewer components")


def profile_edges(objective, values: dict, constraints: dict, refit_iter: int = 30,
                  elements: dict | None = None) -> list:
    """The lower support edges of positive (``greater_than``) params toward which the
    *profile* of ``objective`` grows without bound: along each element's ray toward the
    edge (:data:`PROFILE_STEPS` in free units) every other param is re-fitted (L-BFGS,
    warm-started from the previous point of the ray), so a location that must follow the
    shrinking scale onto a data point does (``max_μ log N(x | μ, s) = -log s + c``; Bishop
    2006, PRML §9.2.1).  The growth test is :func:`unbounded_edges`'.  The steps stop at
    ``e^-8`` of the returned scale, far above float64's resolution of a data point.

    Parameters
    ----------
    objective : callable
        Name -> constrained value -> differentiable scalar tensor (nats).
    values, constraints : dict
        As :func:`unbounded_params`.
    refit_iter : int
        L-BFGS iterations of each re-fit.
    elements : dict, optional
        Name -> the flat element indices to probe (default: every element, up to
        :data:`MAX_ELEMENTS`); each probe costs two re-fits or more.

    Returns
    -------
    list[Edge]
    """
    found = []
    for name, c in constraints.items():
        if not _lower_bounded(c):
            continue
        block = param_block(name, values[name], c)
        chosen = range(block.free.numel()) if elements is None else elements.get(name, [])
        for k in list(chosen)[:MAX_ELEMENTS]:
            f, others = [], {n: v for n, v in values.items() if n != name}
            for t in PROFILE_STEPS:
                free = block.free.clone().reshape(-1)
                free[k] = free[k] - t
                fixed = block.to_value(free.reshape(block.free.shape))
                blocks = [param_block(n, v, constraints.get(n) or torch.distributions.constraints.real)
                          for n, v in others.items()]
                try:
                    if blocks:
                        f.append(maximise(lambda v: objective({**v, name: fixed}), blocks, max_iter=refit_iter).value)
                    else:
                        f.append(float(objective({name: fixed})))
                except (DivergedError, ValueError, RuntimeError):
                    f.append(math.nan)
                others = {**others, **{b.name: b.value() for b in blocks}}
                if len(f) == 2 and not f[1] > f[0]:  # falls toward the edge: a maximum inside
                    break
            growth = _grows([(x, None) for x in f]) if len(f) == len(PROFILE_STEPS) else None
            if growth is not None:
                found.append(Edge(name, k, -1, float(fixed.reshape(-1)[k]), growth))
    return found


def _lower_bounded(constraint) -> bool:
    """Whether a param's constraint is a lower bound alone (``positive``, ``greater_than``):
    the scales whose edge the profile probes."""
    return type(constraint).__name__ in ("_GreaterThan", "_GreaterThanEq")


def shrunk_elements(value: torch.Tensor, init: torch.Tensor) -> list:
    """Flat indices of a positive param's elements worth probing for an unbounded
    likelihood: shrunk by more than ``e^SHRUNK`` from their declared initial value, or
    below ``1/20`` of the param's median element (one component collapsed while the others
    did not).  A scale that stayed near its start or its siblings has a maximum nearby."""
    v = value.detach().double().reshape(-1)
    i = init.detach().double().expand_as(value).reshape(-1) if init is not None else v
    with torch.no_grad():
        shrunk = (torch.log(i.clamp_min(1e-300)) - torch.log(v.clamp_min(1e-300)) > SHRUNK) | (v < v.median() / 20)
    return torch.nonzero(shrunk).reshape(-1).tolist()


#: Nats of log-scale a positive param must lose from its initial value before SVI probes it.
SHRUNK = 3.0


def _pushed_to_edge(objective, values: dict, cons: dict, positive: list) -> dict:
    """Name -> flat indices of positive params whose free (log-scale) value the objective's
    gradient still pushes toward 0 by more than :data:`PUSH` nats per unit at the fit (an
    SVI run stopped on its way to the edge); ``{}`` where the gradient cannot be taken."""
    free = {n: transform_to(cons[n]).inv(values[n]).detach().clone().requires_grad_(True) for n in positive}
    try:
        with torch.enable_grad():
            value = objective({**values, **{n: transform_to(cons[n])(f) for n, f in free.items()}})
            grads = torch.autograd.grad(value, list(free.values()), allow_unused=True)
    except (ValueError, RuntimeError):
        return {}
    return {n: torch.nonzero(g.reshape(-1) < -PUSH).reshape(-1).tolist() for n, g in zip(free, grads)
            if g is not None}


#: The ELBO's gradient in a scale's log (nats per unit) below which the fit is still shrinking it.
PUSH = 0.5


def elbo_param_edges(model, guide, kwargs: dict, graph, max_plate_nesting: int, enumerated: bool = False,
                     seed: int = 0) -> list:
    """:func:`profile_edges` for SVI's learned ``ppl.param`` of ``graph`` whose scales shrank
    (:func:`shrunk_elements`): the objective is
    the ELBO with the guide held at its fit (one draw, the same at every point:
    common random numbers, so the ELBO is a deterministic function of the params; exact
    when nothing is guided), the params substituted into the model.  If its profile grows
    without bound toward a scale's edge, so does the supremum of the ELBO over params and
    guide: no maximum exists.  Pyro's param store and torch's RNG are left as they were.

    Returns
    -------
    list[str]
        :func:`unbounded_reason` of the edges found, else empty."""
    store = pyro.get_param_store()
    cons = store.get_state()["constraints"]
    values = {n: store[n].detach().clone() for n in graph.params() if n in cons}
    positive = [n for n in values if _lower_bounded(cons[n])]
    if not positive:
        return []
    elbo = (TraceEnum_ELBO if enumerated else Trace_ELBO)(max_plate_nesting=max_plate_nesting)

    def objective(vals):
        with torch.random.fork_rng(devices=[]):
            pyro.set_rng_seed(seed)
            return -elbo.differentiable_loss(poutine.substitute(model, data=vals), guide, **kwargs)

    pushed = _pushed_to_edge(objective, values, cons, positive)
    elements = {n: sorted(set(shrunk_elements(values[n], graph.sites[n].value)) | set(pushed.get(n, [])))
                for n in positive}
    if not any(elements.values()):
        return []

    edges = profile_edges(objective, values, {n: cons[n] for n in values}, elements=elements)
    return [unbounded_reason(edges, "svi")] if edges else []
