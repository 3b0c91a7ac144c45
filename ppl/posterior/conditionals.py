"""Joint draws of the discrete latents that a posterior's draws sum out (Laplace,
Pathfinder, NUTS hold draws of the continuous latents ``h`` only): ``z ~ p(z | h, y)`` for
each draw ``h``, on the fitted data, by Pyro's ``infer_discrete`` (forward-filter
backward-sample over the enumerated sites, temperature 1; Obermeyer et al. 2019), so that
``(h, z)`` is a joint posterior draw."""

from __future__ import annotations

import pyro
from pyro import poutine
from pyro.infer import config_enumerate, infer_discrete

from ..errors import PPLError, UnsupportedModelError
from .checks import numel

__all__ = ["summed_out_draws"]

# what a model that does not broadcast over a batch of draws raises in the vectorised run
_BROADCAST_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError, TypeError, NotImplementedError)


def _shape(graph, site) -> tuple:
    var = graph.variables[site]
    return tuple(var.batch_shape) + tuple(var.event_shape)


def _conditioned(graph, values: dict):
    """The fitted model, its observations and ``values`` conditioned, discrete latents
    marked for parallel enumeration."""
    fn = poutine.condition(graph.model.fn, data=graph.bound.observations) if graph.bound.observations \
        else graph.model.fn
    return config_enumerate(poutine.condition(fn, data=values), default="parallel")


def _vectorised(graph, draws: dict, sites: list, n: int, nesting: int) -> dict:
    padded = {}
    for s, v in draws.items():
        pad = max(nesting - len(graph.variables[s].batch_shape), 0)
        padded[s] = v.reshape((n,) + (1,) * pad + _shape(graph, s))
    model = _conditioned(graph, padded)

    def batched(**kwargs):  # the draws plate inside: infer_discrete blocks handlers outside it
        with pyro.plate("_ppl_draws", n, dim=-(nesting + 1)):
            return model(**kwargs)

    trace = poutine.trace(infer_discrete(batched, first_available_dim=-(nesting + 2))).get_trace(
        **graph.bound.kwargs)
    out = {}
    for s in sites:
        value = trace.nodes[s]["value"]
        if value.numel() != n * numel(_shape(graph, s)) or (value.dim() and value.shape[0] != n):
            raise ValueError(f"site '{s}' is not drawn once per draw")
        out[s] = value.reshape((n,) + _shape(graph, s))
    return out


def _one_at_a_time(graph, draws: dict, sites: list, n: int, nesting: int) -> dict:
    import torch

    rows = []
    for i in range(n):
        model = _conditioned(graph, {s: v[i] for s, v in draws.items()})
        trace = poutine.trace(infer_discrete(model, first_available_dim=-(nesting + 1))).get_trace(
            **graph.bound.kwargs)
        rows.append([trace.nodes[s]["value"].reshape(_shape(graph, s)) for s in sites])
    return {s: torch.stack([row[j] for row in rows]) for j, s in enumerate(sites)}


def summed_out_draws(graph, draws: dict, sites: list, n: int, *, call: str, method: str) -> dict:
    """Draw the discrete latents ``sites`` from ``p(z | h, y)`` given each draw ``h``.

    Vectorised over a plate of the ``n`` draws where the model broadcasts, else one draw
    at a time.  Uses torch's global RNG (seed it, in a kept state, around the call) and
    Pyro's param store as it is (run it inside ``param_scope``).

    Parameters
    ----------
    graph : FactorGraph
        The fitted model and data.
    draws : dict[str, torch.Tensor]
        Site -> posterior draws ``(n,) + batch_shape + event_shape`` of the other latents.
    sites : list[str]
        Discrete latents with finite support, summed out of ``draws``.
    n : int
        Draws.
    call, method : str
        The calling function and the posterior's method, for messages.

    Returns
    -------
    dict[str, torch.Tensor]
        Site -> draws ``(n,) + batch_shape + event_shape``.

    Raises
    ------
    UnsupportedModelError
        A site of ``sites`` is not a discrete latent with finite support of ``graph``, or
        a latent of ``graph`` is neither drawn nor enumerable, or ``infer_discrete`` fails.
    """
    variables = graph.variables
    bad = [s for s in sites if s not in variables or variables[s].role != "latent" or variables[s].cardinality is None]
    bad += [s for s in graph.latent() if s not in draws and s not in sites and variables[s].cardinality is None]
    if bad:
        raise UnsupportedModelError(f"{call}(): the posterior of method '{method}' gives no joint draws of latent "
                                    f"site(s) {bad}, and they cannot be enumerated; use a method whose draws "
                                    "include them")
    draws = {s: v for s, v in draws.items() if s in variables and variables[s].role == "latent"}
    nesting = max([-p.dim for p in graph.plates.values() if p.dim is not None] + [0])
    try:
        try:
            return _vectorised(graph, draws, sites, n, nesting)
        except PPLError:
            raise
        except _BROADCAST_ERRORS:
            return _one_at_a_time(graph, draws, sites, n, nesting)
    except PPLError:
        raise
    except Exception as e:
        raise UnsupportedModelError(f"{call}(): drawing the discrete latent(s) {sites} that the posterior of method "
                                    f"'{method}' summed out failed ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                    "use method='exact', 'svi' or 'cavi', whose draws include them") from e
