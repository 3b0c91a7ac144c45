"""A Posterior as an ArviZ ``InferenceData`` (``post.to_arviz``): the posterior draws in chains,
the observed data, posterior predictive draws, the pointwise log-likelihood and the prior.

Groups follow ArviZ's schema (ArviZ ``InferenceData`` documentation, "InferenceData
schema specification"): every draw group is shaped ``(chain, draw, *shape)``, dims are
named after the model's plates where a batch dim is one (``"{site}_dim_{k}"`` otherwise, as
ArviZ names them), so the groups line up by coordinate and ``az.loo`` / ``az.compare`` /
``az.plot_ppc`` read them as they read PyMC's or NumPyro's.  Draws come from the posterior
(:meth:`~ppl.posterior.base.Posterior.sample`, or a sampler's real chains), the predictive
and the log-likelihood from :func:`ppl.posterior.predictive.replicate` at the same draws, the
prior from :func:`ppl.posterior.predictive.prior_predictive`; on a loaded posterior, all of them
from its model compiled again on the saved data (:func:`ppl.posterior.reattach.model_graph`).
"""

from __future__ import annotations

import math

from ..errors import DataError, ModelError, OptionError, UnsupportedModelError
from ..peers import import_arviz
from .checks import check_count, check_seed
from .predictive import prior_predictive, replicate
from .reattach import model_graph

__all__ = ["chain_layout", "site_dims", "to_inference_data"]


def chain_layout(num_samples: int, chains: int) -> tuple:
    """``(C, S)``: ``num_samples`` independent draws laid out as ``C`` chains of ``S`` draws.

    ``C = chains`` when ``num_samples >= chains**2``, else ``max(1, isqrt(num_samples))`` so
    that no chain is shorter than the number of chains (ArviZ takes more chains than draws
    for a transposed array and warns); ``S = num_samples // C`` (the remainder, fewer than
    ``C`` draws, is not drawn).

    Parameters
    ----------
    num_samples, chains : int
        Positive integers (checked by the caller).

    Returns
    -------
    tuple[int, int]
    """
    c = chains if num_samples >= chains * chains else max(1, math.isqrt(num_samples))
    return c, num_samples // c


def site_dims(graph, site: str, ndim: int, *, event: bool = True, reserved=()) -> list | None:
    """Names of the dims of one site's value after ``(chain, draw)``: a batch dim that is a
    plate of the site (its dim and size) takes the plate's name, any other dim
    ``"{site}_dim_{k}"``.

    Parameters
    ----------
    graph : FactorGraph or None
        The compiled model (``None``: ArviZ's default names).
    site : str
    ndim : int
        Dims of the value after ``(chain, draw)`` (``batch + event``, or ``batch`` alone).
    event : bool
        Whether the value carries the site's event dims.
    reserved : collection of str
        Names a plate must not take (``chain``, ``draw``, the group's variables).

    Returns
    -------
    list[str] or None
        ``None`` when the graph does not describe a value of ``ndim`` dims.
    """
    var = (getattr(graph, "variables", None) or {}).get(site)
    if var is None:
        return None
    batch = tuple(var.batch_shape)
    if len(batch) + (len(var.event_shape) if event else 0) != ndim:
        return None
    names = [f"{site}_dim_{k}" for k in range(ndim)]
    for p in var.plates:
        info = graph.plates.get(p)
        if info is None or p in reserved or p in ("chain", "draw"):
            continue
        k = len(batch) + info.dim
        if 0 <= k < len(batch) and batch[k] == info.size:
            names[k] = p
    return names


def _dataset(az, values: dict, graph, *, event=True, draws=True, attrs=None):
    """An ArviZ dataset of ``values`` (site -> tensor ``(C, S) + shape``, or ``shape`` alone
    when ``draws`` is False), dims named by :func:`site_dims`."""
    lead = 2 if draws else 0
    arrays = {k: v.detach().cpu().numpy() for k, v in values.items()}
    dims = {}
    for k, a in arrays.items():
        names = site_dims(graph, k, a.ndim - lead, event=event, reserved=set(arrays))
        if names:
            dims[k] = names
    return az.dict_to_dataset(arrays, dims=dims, default_dims=None if draws else [], attrs=attrs)


def _split(values: dict, c: int, s: int) -> dict:
    """Site -> ``(c * s,) + shape`` tensors as ``(c, s) + shape``."""
    return {k: v.reshape((c, s) + tuple(v.shape[1:])) for k, v in values.items()}


def _check_flags(**flags) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise OptionError(f"to_arviz(): {name} must be True or False, got {value!r} ({type(value).__name__})")


def _model_groups(post, graph, az, latents: dict, layout: tuple, seed, *, predictive, log_likelihood,
                  notes) -> dict:
    """``observed_data``, ``posterior_predictive`` and ``log_likelihood`` at the draws
    ``latents`` (site -> ``layout + shape``, ``layout = (C, S)``) of ``graph``, the model the posterior runs;
    skipped, with a note, when it observes no site, or the posterior cannot give joint draws of a latent the
    model needs."""
    observed = graph.observed()
    if not observed:
        notes.append("observed_data, posterior_predictive, log_likelihood: the model observes no site")
        return {}
    groups = {"observed_data": _dataset(az, {s: graph.sites[s].value for s in observed}, graph, draws=False)}
    if not (predictive or log_likelihood):
        return groups
    c, s = layout
    flat = {k: v.reshape((c * s,) + tuple(v.shape[2:])) for k, v in latents.items()}
    try:
        out = replicate(post, flat, c * s, seed, predictive=predictive, log_likelihood=log_likelihood)
    except UnsupportedModelError as e:
        notes.append(f"posterior_predictive, log_likelihood: not computed ({e})")
        return groups
    if predictive:
        groups["posterior_predictive"] = _dataset(az, _split(out["posterior_predictive"], c, s), graph)
    if log_likelihood:
        groups["log_likelihood"] = _dataset(az, _split(out["log_likelihood"], c, s), graph, event=False)
    return groups


def _prior_groups(graph, az, c: int, s: int, seed) -> dict:
    """``prior`` (latents) and ``prior_predictive`` (observed sites): prior draws of the
    fitted model ``graph``, ``ppl.param`` sites at their declared values."""
    latents, observed = graph.latent(), graph.observed()
    draws = _split(prior_predictive(graph, num_samples=c * s, seed=seed, sites=latents + observed), c, s)
    groups = {"prior": _dataset(az, {k: draws[k] for k in latents}, graph)}
    if observed:
        groups["prior_predictive"] = _dataset(az, {k: draws[k] for k in observed}, graph)
    return groups


def to_inference_data(post, num_samples: int = 1000, seed: int | None = None, predictive: bool = True,
                      log_likelihood: bool = True, prior: bool = False, chains: int = 4):
    """``post`` as an ``arviz.InferenceData``: the groups of
    :meth:`ppl.posterior.base.Posterior.to_arviz` (which documents them).

    Parameters
    ----------
    post : Posterior
    num_samples : int
        Independent draws (not used for a sampler's real chains), a positive integer.
    seed : int or None
        Seed of every group's draws; ``None``: ``post.seed``, else torch's global RNG.
    predictive, log_likelihood, prior : bool
        Which optional groups to build.
    chains : int
        Chains that independent draws are laid out as (:func:`chain_layout`).

    Returns
    -------
    arviz.InferenceData
        Its ``posterior`` group's attrs hold ``ppl_method`` and, when a group was skipped,
        ``ppl_notes`` (why: e.g. a loaded posterior without its model or its data, or whose
        model is not the fitted one).

    Raises
    ------
    OptionError
        A count, seed or flag of the wrong type or range (the message names it).
    IntractableError
        Draws, or the model runs at them, over ``post.budget`` bytes (checked before
        allocating).
    UnsupportedModelError
        ``post`` cannot be sampled.
    ModelError
        The model raises when run at the draws.
    ImportError
        ArviZ is not installed.
    """
    call = "to_arviz"
    n = check_count(num_samples, call=call)
    chains = check_count(chains, name="chains", call=call)
    seed = check_seed(seed, call=call)
    _check_flags(predictive=predictive, log_likelihood=log_likelihood, prior=prior)
    az = import_arviz(call)
    seed = post.seed if seed is None else seed
    c, s = chain_layout(n, chains)
    latents = post._chain_draws(c, s, seed)
    if latents:  # a sampler's real chains keep their own layout
        c, s = (int(d) for d in next(iter(latents.values())).shape[:2])
    notes, groups = [], {}
    try:
        graph = model_graph(post, call)
    except (UnsupportedModelError, ModelError, DataError) as e:  # a loaded posterior without a (matching) model
        graph = None
        notes.append(f"observed_data, posterior_predictive, log_likelihood, prior: not built ({e})")
    else:
        groups.update(_model_groups(post, graph, az, latents, (c, s), seed, predictive=predictive,
                                    log_likelihood=log_likelihood, notes=notes))
        if prior:
            groups.update(_prior_groups(graph, az, c, s, seed))
    attrs = {"ppl_method": str(post.method)}
    if notes:
        attrs["ppl_notes"] = "; ".join(notes)
    return az.InferenceData(posterior=_dataset(az, latents, graph, attrs=attrs), **groups)
