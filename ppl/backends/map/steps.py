"""The steps of MAP's coordinate ascent: max-product over the discrete latents, gradient
/ FISTA ascent over the continuous latents, gradient ascent over the params; the KKT
residual of Laplace sites; and the check that a maximum exists (the log joint must not
grow without bound toward an edge of a site's support)."""

from __future__ import annotations

import math
import warnings

import torch

from ...analysis.report import analyze_graph
from ...compiler.factor_graph import compile as compile_graph
from ...errors import ConvergenceWarning, DataError, NumericalError
from ..common.discrete import DiscretePlan, discrete_plan
from ..common.params import param_constraint, store_params
from ..common.pointopt import DivergedError, latent_block, maximise, param_block
from ..common.nonfinite import nonfinite_names
from ..common.existence import unbounded_edges

__all__ = ["discrete_step", "latent_step", "param_step", "kkt_residuals", "proximal_terms", "check_existence"]

#: A transformed free value beyond this magnitude (a scale below e^-20, a probability within
#: e^-20 of 0 or 1) is near the edge of its support: whether the log joint stays bounded
#: there is then checked along a ray toward the edge.
EDGE_CLIMBING = 20.0


def discrete_step(graph, analysis, values, params, dtype, device):
    """Max-product over the discrete latents given the continuous ``values`` (and the
    current params): site -> argmax values, and ``max log p(h, v)``."""
    if params:
        store_params(params)
    if not values:
        plan = discrete_plan(graph, analysis, dtype=dtype, device=device)
    else:
        data = {**graph.bound.kwargs, **graph.bound.observations, **values}
        cond = compile_graph(graph.model, data)
        plan = DiscretePlan(cond, analyze_graph(cond, analysis.heuristic, analysis.memory_budget,
                                                torch.finfo(dtype).bits // 8), dtype=dtype, device=device)
    best, idx = plan.argmax()
    if not torch.isfinite(best):
        raise DataError(f"the evidence on {graph.observed()} has probability zero under model "
                        f"'{graph.model.name}' (max log p(h, v) = -inf)", log_evidence=-math.inf)
    return {v: plan.values(v, idx[v], 1)[0] for v in plan.cards}, float(best)


def latent_step(lj, graph, sites, values, disc, params, inner):
    """Maximise the log joint over the continuous latents ``sites`` given ``disc``."""
    supports = {s: lj.graph.sites[s].fn.support for s in sites}
    l1 = proximal_terms(lj, graph, sites, {**values, **disc}, params, warn=True)
    blocks = [latent_block(s, values[s], supports[s], l1.get(s), math.prod(graph.variables[s].event_shape))
              for s in sites]
    skip = tuple(l1)

    def objective(vals):
        return lj({**disc, **vals}, params, skip=skip)

    res = _guarded(maximise, objective, blocks, inner, graph, what="latent",
                   trace_at=lambda vals: lj.trace({**disc, **vals}, params))
    return {b.name: b.value() for b in blocks}, _info("latents", res)


def param_step(lj, graph, names, fixed, params, inner):
    """Maximise ``log p(v, ĥ; θ)`` over the ``ppl.param`` values."""
    blocks = [param_block(n, params[n], param_constraint(n)) for n in names]

    def objective(vals):
        return lj(fixed, vals)

    res = _guarded(maximise, objective, blocks, inner, graph, what="param", trace_at=lambda vals: lj.trace(fixed, vals))
    return {b.name: b.value() for b in blocks}, _info("params", res)


def kkt_residuals(lj, graph, sites, values, disc, params) -> dict:
    """Per Laplace site, the max violation of the optimality (KKT) conditions of
    ``max log p``: ``|∂f/∂h + w·sign(h - μ)|`` where ``h ≠ μ``, ``max(|∂f/∂h| - w, 0)``
    where ``h = μ`` (``f`` = the negative smooth part, ``w = 1/b``)."""
    l1 = proximal_terms(lj, graph, sites, {**values, **disc}, params)
    if not l1:
        return {}
    leaves = {s: values[s].clone().requires_grad_(True) for s in l1}
    with torch.enable_grad():
        f = -lj({**values, **disc, **leaves}, params, skip=tuple(l1))
        grads = torch.autograd.grad(f, list(leaves.values()))
    out = {}
    for (s, h), g in zip(leaves.items(), grads):
        term, h = l1[s], h.detach()
        d = h - term.center
        viol = torch.where(d != 0, (g + term.weight * d.sign()).abs(), (g.abs() - term.weight).clamp_min(0))
        out[s] = float(viol.max()) if viol.numel() else 0.0
    return out


def proximal_terms(lj, graph, sites, values, params, warn=False) -> dict:
    """Site -> L1Term of the Laplace priors handled by the prox: those whose location and
    scale depend on no other optimised latent (the others are smooth terms, with a warning
    when ``warn``)."""
    l1 = lj.l1_terms(sites, values, params)
    for s in list(l1):
        others = [v for v in graph.factors[s].scope if v != s and v in sites]
        if others:
            if warn:
                warnings.warn(f"site '{s}': its Laplace prior depends on the latent(s) {others}, so it is optimised "
                              "as a smooth term (no exact zeros)", ConvergenceWarning, stacklevel=5)
            del l1[s]
    return l1


def _info(what, res) -> dict:
    return {"step": what, "method": res.method, "iterations": res.n_iter, "residual": res.residual,
            "converged": res.converged, "objective": res.value}


def _guarded(fn, objective, blocks, inner, graph, what, trace_at=None):
    """Run :func:`maximise`; when it diverged, or left a transformed value far out toward
    the edge of its support, decide from the log joint along rays toward those edges
    (:func:`~ppl.backends.common.existence.unbounded_edges`) whether a maximum exists: raise
    NumericalError naming the site where the log joint grows without bound; accept a
    bounded edge (the maximum is the supremum there, e.g. a probability of 1).  Where the
    log joint is not finite at the start, the error names the sites where it is not
    (``trace_at``: block values -> a trace of the model there), not a support edge."""
    start = {b.name: b.value().detach().clone() for b in blocks}
    try:
        res = fn(objective, blocks, **inner)
    except DivergedError as e:
        for b, x in zip(blocks, e.blocks):
            b.free = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
        _raise_if_nonfinite_at(trace_at, start, graph)
        raise NumericalError(_unbounded(graph, blocks, what, unbounded_edges(objective, blocks))) from None
    far = {b.name: torch.nonzero((b.free.abs() > EDGE_CLIMBING).reshape(-1)).reshape(-1).tolist()
           for b in blocks if b.transformed}
    far = {k: v for k, v in far.items() if v}
    if far:
        edges = unbounded_edges(objective, blocks, elements=far)
        if edges:
            raise NumericalError(_unbounded(graph, blocks, what, edges))
    if not bool(torch.isfinite(torch.tensor(res.value))):
        _raise_if_nonfinite_at(trace_at, start, graph)
        raise NumericalError(_unbounded(graph, blocks, what, []))
    return res


def _raise_if_nonfinite_at(trace_at, values: dict, graph) -> None:
    """NumericalError naming the sample sites whose log density is not finite at the
    optimiser's start ``values`` (an observation the model gives probability zero whatever
    the latents, such as a Beta observation of exactly 1 with ``b > 1``), if there are any."""
    if trace_at is None:
        return
    try:
        with torch.no_grad():
            names = nonfinite_names(trace_at(values))
    except (ValueError, RuntimeError):
        return
    if names:
        raise NumericalError(f"MAP of model '{graph.model.name}': the log joint is not finite at the optimiser's "
                             f"start, at {names}: check that every observed value is possible under its "
                             "distribution (e.g. a Beta observation of exactly 0 or 1, a count above a Binomial's "
                             "total_count) and that the priors give the start a density")


def check_existence(lj, graph, sites, values, disc, params) -> None:
    """After the last step: the point found is a maximum only if the log joint is bounded
    toward every support edge of the continuous latents (probed along rays from it).

    Raises
    ------
    NumericalError
        Naming the site and the edge where the log joint grows without bound (an interior
        local maximum can hide it)."""
    supports = {s: lj.graph.sites[s].fn.support for s in sites}
    blocks = [latent_block(s, values[s], supports[s], None, math.prod(graph.variables[s].event_shape))
              for s in sites]

    def objective(vals):
        return lj({**disc, **vals}, params)

    edges = unbounded_edges(objective, blocks)
    if edges:
        raise NumericalError(_unbounded(graph, blocks, "latent", edges, interior=True))


def _unbounded(graph, blocks, what, edges, interior: bool = False) -> str:
    """Message for an objective without a maximum: the edge where the log joint was seen to
    grow without bound, else the block whose free value ran furthest."""
    kind = "param" if what == "param" else "site"
    if edges:
        e = edges[0]
        where, name = f"{e.value:.3g}", e.name
        how = f"grows without bound (by {e.growth:.3g} nats per step toward the edge)"
    else:
        def reach(b):
            x = b.free.detach()
            return float("inf") if not bool(torch.isfinite(x).all()) else float(x.abs().max())

        worst = max(blocks, key=reach)
        free = worst.free.detach().reshape(-1)
        free = torch.where(torch.isfinite(free), free, torch.zeros_like(free))
        at = int(free.abs().argmax()) if free.numel() else 0
        where = f"{float(worst.value().reshape(-1)[at]):.3g}" if free.numel() else "?"
        name, how = worst.name, "is not finite or the optimiser diverged"
    found = " (the point found is only a local maximum)" if interior else ""
    return (f"MAP does not exist for model '{graph.model.name}': the log joint {how} as {kind} '{name}' runs to "
            f"the edge of its support (reached {where}){found}: the posterior is improper or has no mode there "
            f"(e.g. a scale going to 0 under a flat prior, a Gamma shape below 1, or one data point per scale). Give "
            f"'{name}' a prior that vanishes at that edge, add data, or use method='laplace' or 'nuts'")
