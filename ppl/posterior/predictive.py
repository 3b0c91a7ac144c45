"""Posterior and prior predictive draws: :func:`posterior_predictive` (``post.predictive``,
``ppl.predict``) and :func:`prior_predictive` (``ppl.prior_predictive``).

The posterior predictive of a new replicate ``ỹ`` of the observed sites is
``p(ỹ | y) = ∫ p(ỹ | h) p(h | y) dh`` (Gelman et al., *Bayesian Data Analysis*, 3rd ed.,
§1.3, eq. 1.4): draw the latents ``h`` jointly from the posterior (``post.sample``), then run
the model with ``h`` fixed and its observed sites *not* conditioned, so they are drawn from
their distributions.  The prior predictive draws ``h`` from the prior instead (eq. 1.3).

The run is Pyro's: :class:`pyro.infer.Predictive` over the model wrapped in
:func:`pyro.poutine.uncondition` (random variables only), vectorised over the draws (``parallel=True``).  The
vectorised run is checked against one-draw runs of the model (the log density of every
site at the first and last draw, and the value of every deterministic site, must agree);
a model that does not broadcast over a batch of draws is run one draw at a time instead
(``parallel=False``, slow; a ``UserWarning`` says so).  Discrete latents that a
posterior's draws sum out (Laplace, Pathfinder, NUTS) are drawn from their exact
conditionals given each draw (:mod:`ppl.posterior.conditionals`).  Learned ``ppl.param`` values come
from ``post.params`` in a private Pyro param store (:func:`param_scope`), never from Pyro's
global one.  A loaded posterior runs its model compiled again on the saved data
(:func:`ppl.posterior.reattach.model_graph`), with its latents drawn from its saved draws.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from pyro import poutine
from pyro.poutine.uncondition_messenger import UnconditionMessenger
from pyro.poutine.util import site_is_subsample

from ..backends.common.params import param_scope, warm_start_values
from ..dsl import BoundData, as_model, is_deterministic, is_factor, trace_model
from ..errors import DataError, ModelError, OptionError, PPLError, UnsupportedModelError
from .checks import check_count, check_memory, check_seed, default_budget, isolated_rng, numel
from .conditionals import summed_out_draws
from .reattach import model_graph

__all__ = ["posterior_predictive", "predict", "prior_predictive", "replicate"]

# what a model that does not broadcast over a batch of draws raises in the vectorised run
_BROADCAST_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError, TypeError, NotImplementedError)


class _Uncondition(UnconditionMessenger):
    """Pyro's ``uncondition`` for random variables only: a ``deterministic`` or ``factor``
    site keeps its value (unconditioned, a deterministic site's Delta would be drawn with
    every batch dim as an event dim)."""

    def _pyro_sample(self, msg):
        if not (is_deterministic(msg) or is_factor(msg)):
            super()._pyro_sample(msg)


@dataclass
class _Plan:
    """One prototype run of the unconditioned model with the prediction's arguments."""

    fn: object          # the model function, its observed sites unconditioned
    kwargs: dict        # its arguments
    shapes: dict        # sample / deterministic site -> shape of one draw (batch + event)
    batch: dict         # site -> batch shape of its distribution
    dtypes: dict        # site -> (dtype, device) of its value
    latents: list       # latent sites (not observed, not deterministic)
    observed: list      # observed sites (in data or in the code)
    returned: list      # sites returned
    nesting: int        # max plate nesting of the model
    deterministic: set  # deterministic sites


def _check_sites(sites, call: str):
    """``sites`` as a list of names, or None."""
    if sites is None:
        return None
    if isinstance(sites, str):
        return [sites]
    if isinstance(sites, (list, tuple, set, frozenset)) and sites and all(isinstance(s, str) for s in sites):
        return list(dict.fromkeys(sites))
    raise OptionError(f"{call}(): sites must be None, a site name or a non-empty sequence of site names, "
                      f"got {sites!r}")


def _carriers(graph) -> list:
    """Arguments of the fitted model whose value is the ``obs=`` value of an observed site
    (``def m(x, y): ... obs=y``): identity of the traced value with the bound argument."""
    def build():
        with param_scope(graph):
            trace = trace_model(graph.model, graph.bound)
        values = [site["value"] for site in trace.nodes.values()
                  if site["type"] == "sample" and site["is_observed"] and not is_deterministic(site)]
        return [k for k, v in graph.bound.kwargs.items()
                if isinstance(v, torch.Tensor) and any(v is value for value in values)]

    return graph.memo("predictive", "carriers", build)


def _posterior_kwargs(graph, data, call: str) -> tuple:
    """The model arguments of a prediction, and the arguments set to None: ``data=None``
    keeps the fitted ones; new ``data`` overrides them, and an argument carrying observed
    values that ``data`` leaves out becomes None (its site is drawn)."""
    if data is None:
        return dict(graph.bound.kwargs), []
    if not isinstance(data, Mapping):
        raise DataError(f"{call}(): data must be a mapping of names to values (or None: the fitted data), got "
                        f"{type(data).__name__}")
    model = graph.model
    arguments, observed, latents = model.argument_names, graph.observed(), graph.latent()
    given = {}
    for key, value in data.items():
        if key in arguments:
            given[key] = value
        elif key in latents:
            raise DataError(f"{call}(): data key '{key}' names latent site '{key}' of model '{model.name}', which "
                            "is drawn from the posterior; data may name arguments of the model "
                            f"{arguments} and observed sites {observed} (whose values are not used: they are drawn)")
        elif key not in observed:
            raise DataError(f"{call}(): data key {key!r} of model '{model.name}' names neither an argument nor an "
                            f"observed site; valid argument names: {arguments}; observed sites: {observed}")
    nulled = [k for k in _carriers(graph) if k not in given]
    merged = {**graph.bound.kwargs, **{k: None for k in nulled}, **given}
    return model.bind(merged).kwargs, nulled


def _is_variable(site) -> bool:
    return site["type"] == "sample" and not site_is_subsample(site) and not is_factor(site)


def _plan(model, kwargs, observed_names, wanted, call: str, nulled=(), all_if_unobserved=False) -> _Plan:
    """Trace the unconditioned model once with ``kwargs``; its sites, shapes and roles."""
    fn = _Uncondition()(model.fn)
    try:
        trace = trace_model(model, BoundData(kwargs=kwargs), _Uncondition())
    except ModelError as e:
        hint = (f"; the argument(s) {list(nulled)} carry observed values and were set to None so that their sites "
                "are drawn: let the model run with them None (as Pyro's Predictive needs), or give them in data "
                "(their values are not used)") if nulled else ""
        raise ModelError(f"{call}(): {e}{hint}") from None
    sites = {n: s for n, s in trace.nodes.items() if _is_variable(s)}
    deterministic = {n for n, s in sites.items() if is_deterministic(s)}
    seen = {n for n, s in sites.items() if s["infer"].get("was_observed") and n not in deterministic}
    observed = [n for n in sites if (n in observed_names or n in seen) and n not in deterministic]
    latents = [n for n in sites if n not in deterministic and n not in observed]
    returned = wanted if wanted is not None else (observed or (latents if all_if_unobserved else []))
    unknown = [s for s in returned if s not in sites]
    if unknown:
        raise OptionError(f"{call}(): sites {unknown} are not sample or deterministic sites of model "
                          f"'{model.name}' with this data; its sites: {list(sites)}")
    if not returned:
        raise OptionError(f"{call}(): model '{model.name}' has no observed site to predict; name the sites to "
                          f"return with sites= (its sites: {list(sites)})")
    dims = [f.dim for s in sites.values() for f in s["cond_indep_stack"] if f.vectorized]
    return _Plan(fn=fn, kwargs=kwargs, shapes={n: tuple(s["value"].shape) for n, s in sites.items()},
                 batch={n: tuple(s["fn"].batch_shape) for n, s in sites.items()},
                 dtypes={n: (s["value"].dtype, s["value"].device) for n, s in sites.items()},
                 latents=latents, observed=observed, returned=list(returned), nesting=-min(dims) if dims else 0,
                 deterministic=deterministic)


def _check_plan_memory(plan: _Plan, n: int, budget, call: str) -> None:
    """Refuse, before drawing, draws of every site of the run over ``budget`` bytes."""
    size = sum(numel(shape) * max(plan.dtypes[s][0].itemsize, 1) for s, shape in plan.shapes.items())
    elements = sum(numel(shape) for shape in plan.shapes.values())
    check_memory(n, size, budget, what=f"{call}(num_samples={n})",
                 detail=f"{elements:,} element(s) of {len(plan.shapes)} site(s), {size:,} bytes per draw")


def _plate_note(graph, site: str) -> str:
    """The plates of ``site`` and their fitted sizes, for messages."""
    var = graph.variables.get(site)
    plates = [p for p in (var.plates if var is not None else ()) if p in graph.plates]
    return f" (it lies in plate(s) {plates}, fitted with size(s) {[graph.plates[p].size for p in plates]})" \
        if plates else ""


def _check_latent_shapes(graph, posterior, plan: _Plan, call: str) -> None:
    """Every latent of the run must be a site of the posterior, with its fitted shape."""
    for site in plan.latents:
        var = graph.variables.get(site)
        if var is None or site not in posterior.sites:
            raise UnsupportedModelError(
                f"{call}(): latent site '{site}' of model '{graph.model.name}' has no posterior draws in this "
                f"posterior (method '{posterior.method}'; its sites: {posterior.sites}); the model's sites must be "
                "those it was fitted with")
        fitted = tuple(var.batch_shape) + tuple(var.event_shape)
        if fitted != plan.shapes[site]:
            raise DataError(
                f"{call}(): latent site '{site}' has shape {plan.shapes[site]} with the new data but {fitted} in "
                f"the posterior{_plate_note(graph, site)}: a latent local to the members of a plate has no "
                "posterior for new members, so it cannot be drawn from the posterior. Predict at the fitted plate "
                "size, or make the latent global")


def _shaped(draws: dict, plan: _Plan, n: int, call: str, method: str) -> dict:
    """The posterior draws of the run's latents, in each site's dtype and device, shape
    ``(n,) + shape``."""
    out = {}
    for site in plan.latents:
        if site not in draws:
            raise UnsupportedModelError(f"{call}(): the posterior of method '{method}' gives no joint draws of "
                                        f"latent site '{site}'")
        dtype, device = plan.dtypes[site]
        value = draws[site].detach().to(dtype=dtype, device=device)
        if tuple(value.shape) != (n,) + plan.shapes[site]:
            raise DataError(f"{call}(): posterior draws of '{site}' have shape {tuple(value.shape[1:])}, the model "
                            f"with this data needs {plan.shapes[site]}")
        out[site] = value
    return out


def _vectorised(plan: _Plan, draws: dict, n: int):
    """Pyro's vectorised Predictive trace, or None (with the reason) if the model does not
    broadcast over a leading plate of ``n`` draws."""
    from pyro.infer import Predictive

    padded = {}
    for s, v in draws.items():  # Pyro pads (n,) + shape with 1s by total dims; pad by batch dims instead
        pad = max(plan.nesting - len(plan.batch[s]), 0)
        padded[s] = v.reshape((n,) + (1,) * pad + plan.shapes[s])
    try:
        trace = Predictive(plan.fn, posterior_samples=padded, num_samples=n,
                           parallel=True).get_vectorized_trace(**plan.kwargs)
    except PPLError:
        raise
    except _BROADCAST_ERRORS as e:
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    out = {}
    for s, shape in plan.shapes.items():
        value = trace.nodes[s]["value"] if s in trace.nodes else None
        if value is None or value.numel() != n * numel(shape) or (value.dim() and value.shape[0] != n):
            return None, f"site '{s}' is not drawn once per draw"
        out[s] = value.reshape((n,) + shape)
    return (trace, out), ""


def _agrees(plan: _Plan, trace, out: dict, n: int) -> bool:
    """Whether one-draw runs of the model at the first and last draw give every site the
    log density (deterministic sites: the value) of the vectorised run."""
    draw_dim = -(plan.nesting + 1)
    for i in sorted({0, n - 1}):
        one = {s: v[i] for s, v in out.items()}
        single = poutine.trace(poutine.condition(plan.fn, one)).get_trace(**plan.kwargs)
        for s, value in one.items():
            if s not in single.nodes:
                return False
            if s in plan.deterministic:
                if not torch.allclose(single.nodes[s]["value"].double(), value.double(), rtol=1e-5, atol=1e-8):
                    return False
                continue
            lp = trace.nodes[s]["fn"].log_prob(trace.nodes[s]["value"])
            if lp.dim() < -draw_dim or lp.shape[draw_dim] != n:
                return False
            vec = lp.select(lp.dim() + draw_dim, i).sum().double()
            ref = single.nodes[s]["fn"].log_prob(value).sum().double()
            if not torch.isclose(vec, ref, rtol=1e-4, atol=1e-4):
                return False
    return True


def _checked_trace(plan: _Plan, draws: dict, n: int):
    """Pyro's vectorised trace of the run at ``draws`` when the model broadcasts over them
    and one-draw runs agree with it (:func:`_agrees`): ``((trace, out), "")``, else
    ``(None, reason)``.  Run under ``torch.no_grad()``."""
    result, reason = _vectorised(plan, draws, n)
    if result is None:
        return None, reason
    trace, out = result
    try:
        if _agrees(plan, trace, out, n):
            return result, ""
    except PPLError:
        raise
    except _BROADCAST_ERRORS as e:
        return None, f"{type(e).__name__} in a one-draw run: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return None, "the vectorised run gives other densities than one-draw runs"


def _warn_slow(call: str, reason: str, n: int) -> None:
    """Say that the model is run one draw at a time (when there is more than one)."""
    if n > 1:
        warnings.warn(f"{call}(): the model does not broadcast over a batch of draws ({reason}); drawing one at "
                      "a time, which is slow. Index by latents with ppl.Vindex and let plates broadcast",
                      UserWarning, stacklevel=5)


def _run(plan: _Plan, draws: dict, n: int, call: str) -> dict:
    """Draws of the returned sites, ``(n,) + shape`` each: vectorised where the model
    broadcasts and the one-draw check agrees, else one draw at a time."""
    from pyro.infer import Predictive

    with torch.no_grad():
        result, reason = _checked_trace(plan, draws, n)
        if result is not None:
            return {s: result[1][s].detach().clone() for s in plan.returned}
        _warn_slow(call, reason, n)
        try:
            samples = Predictive(plan.fn, posterior_samples=draws, num_samples=n, return_sites=plan.returned,
                                 parallel=False)(**plan.kwargs)
        except PPLError:
            raise
        except Exception as e:
            raise ModelError(f"{call}(): the model raised while drawing: {type(e).__name__}: {e}") from e
        return {s: samples[s].detach().reshape((n,) + plan.shapes[s]).clone() for s in plan.returned}


def _pointwise(site, plan: _Plan, name: str, n: int) -> torch.Tensor:
    """``log p(value | rest)`` of one site of a checked vectorised trace, per draw and plate
    copy: shape ``(n,) + batch_shape`` (event dims summed by ``log_prob``; the draw dim is at
    ``-(nesting + 1)``, as :func:`_agrees` checked; plate dims the site is not in are 1)."""
    lp = site["fn"].log_prob(site["value"])
    batch = plan.batch[name]
    trailing = tuple(lp.shape[lp.dim() - plan.nesting:]) if plan.nesting else ()
    trailing = trailing[max(plan.nesting - len(batch), 0):]
    return lp.reshape((n,) + trailing).expand((n,) + batch).detach().clone()


def _log_likelihood(plan: _Plan, observed: dict, draws: dict, n: int, call: str) -> dict:
    """``log p(y_i | h_s)`` of every observed site at its ``observed`` value, given each draw
    ``h_s`` of the latents: site -> ``(n,) + batch_shape``; vectorised as :func:`_run`,
    else one draw at a time."""
    fixed = {**draws, **{s: v.expand((n,) + tuple(v.shape)) for s, v in observed.items()}}
    with torch.no_grad():
        result, reason = _checked_trace(plan, fixed, n)
        if result is not None:
            trace = result[0]
            return {s: _pointwise(trace.nodes[s], plan, s, n) for s in observed}
        _warn_slow(call, reason, n)
        rows = []
        for i in range(n):
            try:
                one = poutine.trace(poutine.condition(plan.fn, {s: v[i] for s, v in fixed.items()}))
                single = one.get_trace(**plan.kwargs)
            except PPLError:
                raise
            except Exception as e:
                raise ModelError(f"{call}(): the model raised while scoring the data: {type(e).__name__}: {e}") \
                    from e
            rows.append({s: single.nodes[s]["fn"].log_prob(single.nodes[s]["value"]).expand(plan.batch[s])
                         for s in observed})
        return {s: torch.stack([r[s] for r in rows]).detach() for s in observed}


def _noise_rng(seed):
    """The stream of the model's own draws: seeded from ``seed`` by numpy's SeedSequence (a
    stream independent of the latents' draws made with ``seed`` itself), or torch's global
    RNG when ``seed`` is None."""
    if seed is None:
        return contextlib.nullcontext()
    return isolated_rng(int(np.random.SeedSequence(int(seed)).generate_state(1)[0]))


def posterior_predictive(posterior, num_samples: int = 1000, data=None, seed: int | None = None, sites=None) -> dict:
    """Posterior predictive draws: the latents drawn jointly from ``posterior``, the
    observed sites drawn from the model given them (Gelman et al. 2013, eq. 1.4).

    Parameters
    ----------
    posterior : Posterior
        A result of ``ppl.infer`` (its ``graph`` holds the model and the fitted data), or a
        loaded one with its model (re-imported by path, or ``ppl.load(path, model=...)``):
        the model is compiled again on the saved data.
    num_samples : int
        Draws, a positive integer.
    data : mapping or None
        ``None``: the data the posterior was fitted on.  A mapping gives new data: keys
        naming arguments of the model replace the fitted arguments (new covariates, a new
        plate size); an argument that carries observed values (``obs=y``) and that
        ``data`` leaves out is passed as ``None``; keys naming observed sites are accepted
        and their values not used (those sites are drawn).  A loaded posterior whose
        data were not saved needs ``data``, complete (every argument the model needs).
    seed : int or None
        Makes the draws reproducible (the latents are ``posterior.sample(num_samples,
        seed)``; the model's draws come from an independent stream derived from ``seed``),
        leaving the global RNGs as they were; ``None``: the posterior's run seed where it
        has one, else torch's global RNG.
    sites : str or sequence of str, optional
        Sites to return; default every observed site.  Latent and deterministic sites may
        be named too (latents: their posterior draws, jointly with the rest).

    Returns
    -------
    dict[str, torch.Tensor]
        Site -> draws of shape ``(num_samples,) + batch_shape + event_shape`` in the
        model's dtype.

    Raises
    ------
    OptionError
        ``num_samples`` not a positive integer, a bad ``seed``, ``sites`` naming no site
        of the model (the message names them), or no observed site to return.
    DataError
        ``data`` not a mapping, a key naming a latent site or nothing of the model, a bad
        value (as :meth:`ppl.Model.bind`); or new data that changes the shape of a latent
        local to a plate (the message names the site and the plate).
    UnsupportedModelError
        The posterior has no model (a loaded posterior whose model was defined in
        ``__main__`` or does not import here: the message says what to do), a loaded
        posterior has no saved data and ``data`` is None (the message says why they were
        not saved), or there are no joint draws of a latent the model needs that can be
        drawn from its exact conditional (discrete latents summed out by Laplace,
        Pathfinder or NUTS are: :func:`~ppl.posterior.conditionals.summed_out_draws`).
    IntractableError
        The draws of every site of the run would exceed ``posterior.budget`` bytes.
    ModelError
        The model raises when run with the prediction's arguments, or a loaded
        posterior's model is not the fitted one (name, sites, roles, families or shapes).
    """
    call = "predictive"
    n, seed, wanted = check_count(num_samples, call=call), check_seed(seed, call=call), _check_sites(sites, call)
    graph, plan, params = _prepared(posterior, data, wanted, call)
    _check_plan_memory(plan, n, posterior.budget, call)
    seed = posterior.seed if seed is None else seed
    draws = posterior.sample(n, seed) if plan.latents else {}
    with param_scope(graph, params), _noise_rng(seed):
        return _run(plan, _completed(posterior, graph, plan, draws, n, call), n, call)


def _prepared(posterior, data, wanted, call: str) -> tuple:
    """``(graph, plan, params)`` of a run of ``posterior``'s model with ``data``, its latents
    checked against the posterior's."""
    graph = model_graph(posterior, call, data)
    kwargs, nulled = _posterior_kwargs(graph, data, call)
    params = warm_start_values(posterior, graph)
    with param_scope(graph, params):
        plan = _plan(graph.model, kwargs, set(graph.observed()), wanted, call, nulled)
    _check_latent_shapes(graph, posterior, plan, call)
    return graph, plan, params


def _completed(posterior, graph, plan: _Plan, draws: dict, n: int, call: str) -> dict:
    """The run's latent draws (:func:`_shaped`), discrete latents summed out of ``draws``
    drawn from ``p(z | h, y)`` (inside the caller's ``param_scope`` and RNG block)."""
    missing = [s for s in plan.latents if s not in draws]
    if missing:
        draws = {**draws, **summed_out_draws(graph, draws, missing, n, call=call, method=posterior.method)}
    return _shaped(draws, plan, n, call, posterior.method)


def replicate(posterior, draws: dict, num_draws: int, seed: int | None = None, *, predictive: bool = True,
              log_likelihood: bool = True, call: str = "to_arviz") -> dict:
    """At given joint posterior draws of the latents, on the fitted data: posterior
    predictive draws of the observed sites (as :func:`posterior_predictive`) and the
    pointwise log-likelihood ``log p(y_i | h_s)`` of each observed value ``y_i`` (each plate
    copy of each observed site) given each draw ``h_s`` (Vehtari, Gelman & Gabry 2017,
    eq. 2: the input of PSIS-LOO).  The model runs with the latents fixed at the draws,
    vectorised over them where it broadcasts and agrees with one-draw runs, else one draw
    at a time (a ``UserWarning`` says so).

    Parameters
    ----------
    posterior : Posterior
        A result of ``ppl.infer`` holding its graph.
    draws : dict[str, torch.Tensor]
        Latent site -> draws ``(n,) + batch_shape + event_shape`` (as ``posterior.sample``
        returns; discrete latents the posterior sums out are drawn from ``p(z | h, y)``).
    num_draws : int
        ``n``, the draws (a model without latents is still run ``n`` times).
    seed : int or None
        Seed of the model's own draws (an independent stream derived from it, as
        :func:`posterior_predictive`); ``None``: torch's global RNG.
    predictive, log_likelihood : bool
        Which of the two to compute.
    call : str
        The calling function, for messages.

    Returns
    -------
    dict
        ``"posterior_predictive"``: site -> draws ``(n,) + batch_shape + event_shape``;
        ``"log_likelihood"``: site -> log densities in nats, ``(n,) + batch_shape`` (event
        dims summed).  Only the keys asked for.

    Raises
    ------
    OptionError
        The model has no observed site.
    UnsupportedModelError, DataError, IntractableError, ModelError
        As :func:`posterior_predictive` (no model, draws missing or of the wrong shape, the
        run over ``posterior.budget``, a model that raises).
    """
    n = check_count(num_draws, name="num_draws", call=call)
    graph, plan, params = _prepared(posterior, None, None, call)
    _check_plan_memory(plan, n, posterior.budget, call)
    out = {}
    with param_scope(graph, params), _noise_rng(seed):
        fixed = _completed(posterior, graph, plan, draws, n, call)
        if predictive:
            out["posterior_predictive"] = _run(plan, fixed, n, call)
        if log_likelihood:
            observed = {s: graph.sites[s].value.detach().expand(plan.shapes[s]) for s in plan.observed}
            out["log_likelihood"] = _log_likelihood(plan, observed, fixed, n, call)
    return out


def predict(posterior, num_samples: int = 1000, data=None, seed: int | None = None, sites=None) -> dict:
    """``posterior.predictive(num_samples, data=data, seed=seed, sites=sites)`` as a function
    (see :func:`posterior_predictive`: parameters, returns, raises).

    Raises
    ------
    OptionError
        If ``posterior`` is not a ppl Posterior."""
    if not callable(getattr(posterior, "sample", None)) or not hasattr(posterior, "graph"):
        raise OptionError(f"predict(): posterior must be a ppl Posterior (the result of ppl.infer), got "
                          f"{type(posterior).__name__}")
    return posterior_predictive(posterior, num_samples, data=data, seed=seed, sites=sites)


def prior_predictive(model, data=None, num_samples: int = 1000, seed: int | None = None, sites=None) -> dict:
    """Prior predictive draws: the latents drawn from the prior, the observed sites from
    the model given them (Gelman et al. 2013, eq. 1.3); ``ppl.param`` sites at the values
    the model declares.

    Parameters
    ----------
    model : Model, callable or FactorGraph
        A ``@ppl.model`` (a plain Pyro model function is wrapped), or a compiled graph
        (then ``data`` must be None).
    data : mapping or None
        As for ``ppl.infer``: keys naming arguments are passed; keys naming sample sites
        mark them observed (their values are not used: they are drawn).
    num_samples : int
        Draws, a positive integer.
    seed : int or None
        Makes the draws reproducible, leaving the global RNGs as they were; ``None``:
        torch's global RNG.
    sites : str or sequence of str, optional
        Sites to return; default the observed sites (named in ``data`` or observed by the
        code with ``obs=``), or every sample site when nothing is observed.

    Returns
    -------
    dict[str, torch.Tensor]
        Site -> draws of shape ``(num_samples,) + batch_shape + event_shape``.

    Raises
    ------
    OptionError
        ``model`` not callable, ``num_samples`` not a positive integer, a bad ``seed``, or
        ``sites`` naming no site of the model.
    DataError
        As ``ppl.compile`` for ``data``.
    IntractableError
        The draws would exceed ppl's default memory budget (2 GiB).
    ModelError
        The model raises when run.

    Notes
    -----
    ``ppl.factor`` terms weight the density but cannot be drawn from: the latents are drawn
    from their ``ppl.sample`` statements alone (as Pyro's ``Predictive`` does).
    """
    from ..compiler import FactorGraph

    call = "prior_predictive"
    n, seed, wanted = check_count(num_samples, call=call), check_seed(seed, call=call), _check_sites(sites, call)
    graph = None
    if isinstance(model, FactorGraph):
        if data is not None:
            raise DataError(f"{call}(): pass data to ppl.compile, not with an already compiled FactorGraph")
        graph, bound, model = model, model.bound, model.model
    elif not callable(model):
        raise OptionError(f"{call}(): model must be a ppl.model or a callable model function, got "
                          f"{type(model).__name__}")
    else:
        model = as_model(model)
        bound = model.bind(data)
    with param_scope(graph):
        plan = _plan(model, bound.kwargs, set(bound.observations) | set(graph.observed() if graph else ()), wanted,
                     call, all_if_unobserved=True)
        _check_plan_memory(plan, n, default_budget(), call)
        with _noise_rng(seed):
            return _run(plan, {}, n, call)
