"""Draws of a fitted SVI guide (guided sites from q, enumerated ones from p(z | h, v) by Pyro's ``infer_discrete``)
and the enumerated sites' marginals (``TraceEnum_ELBO.compute_marginals`` averaged over guide draws)."""

from __future__ import annotations

import contextlib
import warnings

import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from ...compiler.families import enumerate_values
from ...errors import UnsupportedModelError

__all__ = ["DISCRETE_MARGINAL_DRAWS", "discrete_marginals", "probs_of", "joint_sampler"]

#: Guide draws whose conditional marginals p(z | h, v) are averaged for enumerated sites.
DISCRETE_MARGINAL_DRAWS = 16


def discrete_marginals(graph, model, guide, kwargs, enumerated, mpn, deterministic, device) -> dict:
    """p(z | v) of each enumerated site, ``batch_shape + (K,)``: TraceEnum_ELBO's exact conditional
    marginals p(z | h, v), averaged over guide draws h (one when nothing is guided); raises
    UnsupportedModelError where Pyro cannot compute them."""
    if not enumerated:
        return {}
    elbo = TraceEnum_ELBO(max_plate_nesting=mpn)
    draws = 1 if deterministic else DISCRETE_MARGINAL_DRAWS
    total: dict = {}
    with torch.no_grad():
        for _ in range(draws):
            try:
                marginals = elbo.compute_marginals(model, guide, **kwargs)
            except KeyError as e:  # pyro.ops.rings.broadcast loses a plate of size 1 (Pyro 1.9)
                raise UnsupportedModelError(f"svi: Pyro's compute_marginals failed on {sorted(enumerated)} (KeyError "
                                            f"{e}: a plate of size 1?); use method='em', 'exact' or 'laplace'") from None
            for name, d in marginals.items():
                if name in enumerated:
                    var = graph.variables[name]
                    values = enumerate_values(graph.sites[name].fn)
                    probs = probs_of(d, values, var.batch_shape, device)
                    total[name] = total.get(name, 0) + probs.double()
    return {k: v / draws for k, v in total.items()}


def probs_of(d, values, batch_shape, device):
    """Probabilities of the support ``values`` (``(K,) + event_shape``) under ``d``:
    ``batch_shape + (K,)``."""
    k, event = values.shape[0], values.shape[1:]
    values = values.to(device).reshape((k,) + (1,) * len(batch_shape) + event)
    return d.log_prob(values).exp().reshape((k,) + tuple(batch_shape)).movedim(0, -1)


def joint_sampler(model, guide, kwargs, guided, enumerated, mpn, graph):
    """Joint draws: guided sites from q, enumerated sites (if ``discrete``) from
    p(z | h, v) (``infer_discrete``); vectorised over a draws plate when the model allows,
    else one draw at a time."""
    from pyro.infer import infer_discrete

    def one(n, vectorized=True, discrete=True):
        def draws_plate():
            return pyro.plate("_ppl_draws", n, dim=-(mpn + 1)) if vectorized else contextlib.nullcontext()

        with draws_plate():
            guide_trace = poutine.trace(guide).get_trace(**kwargs)
        values = {s: guide_trace.nodes[s]["value"] for s in guided}
        if enumerated and discrete:
            def replayed(**kw):  # the draws plate inside: infer_discrete blocks handlers outside it
                with draws_plate():
                    return poutine.replay(model, trace=guide_trace)(**kw)

            first = -(mpn + 2) if vectorized else -(mpn + 1)
            model_trace = poutine.trace(infer_discrete(replayed, first_available_dim=first)).get_trace(**kwargs)
            values.update({s: model_trace.nodes[s]["value"] for s in enumerated})
        return values

    def shape_of(site):
        var = graph.variables[site]
        return tuple(var.batch_shape) + tuple(var.event_shape)

    def sampler(n, seed=None, discrete=True):
        rng = torch.random.fork_rng() if seed is not None else contextlib.nullcontext()
        with rng, torch.no_grad():
            if seed is not None:
                pyro.set_rng_seed(int(seed))
            try:
                values = one(n, discrete=discrete)
                return {s: v.detach().reshape((n,) + shape_of(s)) for s, v in values.items()}
            except (RuntimeError, ValueError, AssertionError, NotImplementedError) as e:
                if n > 1:
                    warnings.warn(f"posterior draws: the model does not broadcast over a batch of draws "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); drawing one at a time, "
                                  "which is slow. Index by latents with ppl.Vindex and let plates broadcast",
                                  UserWarning, stacklevel=3)
                draws = [one(1, vectorized=False, discrete=discrete) for _ in range(n)]
                return {s: torch.stack([d[s].detach().reshape(shape_of(s)) for d in draws]) for s in draws[0]}

    return sampler
