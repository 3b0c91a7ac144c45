"""Continuous latents whose support depends on other latents (``beta ~ Uniform(0, 1 - alpha)``):
found by running the model at two points of unconstrained space and comparing the support
bounds each site is built with.  An autoguide's fixed transform cannot follow such a support,
so SVI refuses these models and names the site.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from torch.distributions import biject_to

from ...errors import ModelError
from .unconstrained import Unconstrained, conditioned_model, start_value
from .runtime import place

__all__ = ["dependent_supports"]


def dependent_supports(graph) -> list:
    """The continuous latents whose support depends on the values of other latents
    (``Uniform(0, 1 - a)``): the model is run at its starting point and at a shifted point
    in unconstrained space, and the sites whose support bounds differ are returned (in
    trace order).  A model that cannot be run so gives ``[]`` (the backends' own runs
    report it).  Computed once per graph."""
    return graph.memo("potential", "dependent_supports", lambda: _dependent_supports(graph))


def _dependent_supports(graph) -> list:
    cpu, dtype = torch.device("cpu"), torch.float64
    try:
        kwargs = {k: place(v, cpu, dtype) for k, v in graph.bound.kwargs.items()}
        model = conditioned_model(graph, {k: place(v, cpu, dtype) for k, v in graph.bound.observations.items()})
        sites = list(graph.continuous_latent())
        fixed = {s: place(graph.sites[s].value, cpu, dtype) for s in graph.discrete_latent()}
        z = {}
        for s in sites:
            u = biject_to(graph.sites[s].fn.support).inv(start_value(graph.sites[s], cpu, dtype))
            u = u.detach().as_subclass(torch.Tensor)
            z[s] = torch.where(torch.isfinite(u), u, torch.zeros_like(u))
        supports = []
        for shift in (0.0, 0.7):
            handler = Unconstrained({s: v + shift for s, v in z.items()}, fixed)
            with torch.no_grad(), pyro.validation_enabled(False):
                poutine.trace(handler(model)).get_trace(**kwargs)
            supports.append(handler.supports)
    except (RuntimeError, ValueError, TypeError, ModelError):
        return []
    return [s for s in sites if _support_key(supports[0].get(s)) != _support_key(supports[1].get(s))]


def _support_key(support) -> tuple:
    """What identifies a support constraint: its type and its bounds' values."""
    if support is None:
        return ()
    bounds = []
    for attr in ("lower_bound", "upper_bound"):
        b = getattr(support, attr, None)
        if isinstance(b, torch.Tensor):
            bounds.append(tuple(b.detach().reshape(-1).tolist()))
        elif b is not None:
            bounds.append(float(b))
    base = getattr(support, "base_constraint", None)
    return (type(support).__name__, tuple(bounds), _support_key(base) if base is not None else ())
