"""Guides for ``method="svi"``: building one from a name, checking a user's guide against
the model, and reading a fitted guide's per-site marginals.

A guide q(h; φ) is the variational family of the ELBO
``L(q) = E_q[log p(v, h) - log q(h)]`` (Goodfellow et al. 2016, eq. 19.1); Pyro's
autoguides build one from the model (Kucukelbir et al. 2017, ADVI: a Gaussian in the
unconstrained space ``biject_to(support)^{-1}``).
"""

from __future__ import annotations

from operator import attrgetter

import torch
from pyro import poutine
from pyro.infer import autoguide
from torch.distributions import biject_to

from ...errors import ModelError, OptionError
from ...ops.shapes import broadcast_shapes

__all__ = ["GUIDES", "STANDARDIZED", "build_guide", "check_guide", "guide_marginal_fn", "empty_guide",
           "packed_layout"]

#: ``guide=`` names -> Pyro autoguide classes.
GUIDES = {
    "normal": autoguide.AutoNormal,                      # mean field: independent Normal per element
    "diagonal": autoguide.AutoDiagonalNormal,            # the same family, packed into one vector
    "mvn": autoguide.AutoMultivariateNormal,             # full-rank Gaussian over all latents
    "lowrank": autoguide.AutoLowRankMultivariateNormal,  # W Wᵀ + diag covariance
    "delta": autoguide.AutoDelta,                        # point mass: MAP (§19.3)
    "iaf": autoguide.AutoIAFNormal,                      # inverse autoregressive flow (Kingma et al. 2016)
}

class StandardizedNormal(autoguide.AutoNormal):
    """AutoNormal whose optimised location ``u`` of a site is read as ``c + sd ⊙ (u - c)``
    once :meth:`standardize` has fixed ``c`` (the location then) and ``sd`` (the Laplace
    fit's posterior sds): a gradient step of size ``lr`` on ``u`` moves the location by
    ``lr`` posterior sds, in whatever units the site lives (see
    :mod:`ppl.backends.svi.warmstart`).  Before :meth:`standardize` it is AutoNormal."""

    def standardize(self, sds: dict) -> None:
        """``sds``: site -> sds of the site's unconstrained shape (other shapes are skipped)."""
        std = {}
        for name, sd in sds.items():
            u = attrgetter(name)(self.locs)
            if tuple(u.shape) == tuple(sd.shape):
                std[name] = (u.detach().clone(), sd.to(u))
        self.__dict__["_std"] = std

    def _get_loc_and_scale(self, name):
        loc, scale = super()._get_loc_and_scale(name)
        std = self.__dict__.get("_std", {}).get(name)
        if std is None:
            return loc, scale
        c, sd = std
        return c + sd * (loc - c), scale


class _StandardizedLoc:
    """Mixin for the packed autoguides: ``loc`` reads the optimised vector ``u`` as
    ``c + sd ⊙ (u - c)`` once :meth:`standardize` has fixed ``c`` and ``sd`` (see
    :class:`StandardizedNormal`)."""

    @property
    def loc(self):
        from pyro.nn import PyroModule

        u = PyroModule.__getattr__(self, "loc")
        std = self.__dict__.get("_std")
        return u if std is None else std[0] + std[1] * (u - std[0])

    def standardize(self, sd: torch.Tensor) -> None:
        """``sd``: shape ``(latent_dim,)``, in the packed order."""
        from pyro.nn import PyroModule

        u = PyroModule.__getattr__(self, "loc")
        self.__dict__["_std"] = (u.detach().clone(), sd.to(u))


class StandardizedDiagonalNormal(_StandardizedLoc, autoguide.AutoDiagonalNormal):
    """AutoDiagonalNormal with a standardized location (:class:`_StandardizedLoc`)."""


class StandardizedMultivariateNormal(_StandardizedLoc, autoguide.AutoMultivariateNormal):
    """AutoMultivariateNormal with a standardized location (:class:`_StandardizedLoc`)."""


class StandardizedLowRankMultivariateNormal(_StandardizedLoc, autoguide.AutoLowRankMultivariateNormal):
    """AutoLowRankMultivariateNormal with a standardized location (:class:`_StandardizedLoc`)."""


#: ``guide=`` names -> the standardized autoguide used with a Laplace warm start.
STANDARDIZED = {
    "normal": StandardizedNormal,
    "diagonal": StandardizedDiagonalNormal,
    "mvn": StandardizedMultivariateNormal,
    "lowrank": StandardizedLowRankMultivariateNormal,
}

_INIT = {
    "feasible": autoguide.init_to_feasible,
    "median": autoguide.init_to_median,
    "mean": autoguide.init_to_mean,
    "sample": autoguide.init_to_sample,
}


def empty_guide(*args, **kwargs):
    """The guide of a model without latents left to sample (all enumerated or none)."""
    return None


def _init_fn(init):
    if isinstance(init, dict):
        values = {k: torch.as_tensor(v, dtype=torch.get_default_dtype()) for k, v in init.items()}
        return _InRunDtype(autoguide.init_to_value(values=values))
    if callable(init):
        return _InRunDtype(init)
    try:
        return _InRunDtype(_INIT[init])
    except (KeyError, TypeError):
        raise OptionError(f"init must be one of {sorted(_INIT)}, a dict site -> value, or a Pyro init_loc_fn; "
                          f"got {init!r}") from None


class _InRunDtype:
    """``init_loc_fn`` whose floating values are in torch's default dtype when the guide is
    set up (the run's dtype): a prior the model did not build in this run (a
    ``PyroModule``'s ``PyroSample`` prior, built once in float32) would otherwise give the
    guide float32 parameters in a float64 run.  Values already in that dtype are returned
    as they are.  A class, so that a fitted guide still pickles."""

    def __init__(self, init_loc_fn):
        self.init_loc_fn = init_loc_fn

    def __call__(self, site):
        value = self.init_loc_fn(site)
        dtype = torch.get_default_dtype()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
            value = value.to(dtype)
        return value


def build_guide(spec, model_fn, hidden, *, has_latents, init="feasible", init_scale=0.1, options=None,
                standardized=False):
    """The guide ``spec`` names, for ``model_fn`` with the sites ``hidden`` left out.

    Parameters
    ----------
    spec : str, AutoGuide subclass or callable
        A name of :data:`GUIDES`; a Pyro ``AutoGuide`` subclass (built on the model); or a
        callable guide (a function or ``PyroModule``, e.g. an amortised encoder guide)
        used as is.
    model_fn : callable
        The conditioned model.
    hidden : list[str]
        Sites the guide must not sample (enumerated discrete latents).
    has_latents : bool
        False when no latent is left for the guide: an empty guide is returned.
    init : str, dict or callable
        Initial location of autoguides: ``"feasible"``, ``"median"``, ``"mean"``,
        ``"sample"``, a dict site -> value, or a Pyro ``init_loc_fn``.
    init_scale : float
        Initial scale of Gaussian autoguides (unconstrained space).
    options : dict, optional
        Extra keyword arguments for the autoguide (``rank`` of ``"lowrank"``,
        ``hidden_dim``/``num_transforms`` of ``"iaf"``).
    standardized : bool
        Build the :data:`STANDARDIZED` class of a name (a Laplace warm start follows).

    Returns
    -------
    (guide, kind)
        ``kind`` is the name (``"normal"``, ...), ``"custom"`` or ``"empty"``.

    Raises
    ------
    OptionError
        Unknown name, bad ``init``/``init_scale``, options the autoguide does not take.
    """
    options = dict(options or {})
    if isinstance(spec, str) or (isinstance(spec, type) and issubclass(spec, autoguide.AutoGuide)):
        if isinstance(spec, str):
            if spec not in GUIDES:
                raise OptionError(f"guide={spec!r} is not a guide name; names: {sorted(GUIDES)}, "
                                  "or pass a Pyro AutoGuide class or a callable guide")
            cls, kind = (STANDARDIZED.get(spec, GUIDES[spec]) if standardized else GUIDES[spec]), spec
        else:
            cls, kind = spec, spec.__name__
        if not has_latents:
            return empty_guide, "empty"
        _forget_params(cls.__name__)
        blocked = poutine.block(model_fn, hide=list(hidden)) if hidden else model_fn
        kwargs = {}
        if cls is not autoguide.AutoIAFNormal:
            kwargs["init_loc_fn"] = _init_fn(init)
        if cls not in (autoguide.AutoDelta, autoguide.AutoIAFNormal) and issubclass(
                cls, (autoguide.AutoNormal, autoguide.AutoMultivariateNormal, autoguide.AutoDiagonalNormal,
                      autoguide.AutoLowRankMultivariateNormal)):
            kwargs["init_scale"] = float(init_scale)
        try:
            return cls(blocked, **kwargs, **options), kind
        except (TypeError, ValueError) as e:   # an unknown keyword; a value the autoguide refuses (rank=0)
            raise OptionError(f"guide_options {options} do not fit {cls.__name__}: {e}") from None
    if callable(spec):
        if options:
            raise OptionError("guide_options apply to guides given by name; a callable guide is used as is")
        return spec, "custom"
    raise OptionError(f"guide must be a name {sorted(GUIDES)}, an AutoGuide class or a callable, "
                      f"got {type(spec).__name__}")


def _forget_params(prefix: str) -> None:
    """Drop an earlier autoguide's parameters (``"AutoNormal.locs.x"``, ...) from Pyro's
    param store, so every ``infer`` call starts its guide afresh (a stale entry of another
    shape would otherwise be picked up)."""
    import pyro

    store = pyro.get_param_store()
    for name in [n for n in store.keys() if n.startswith(prefix + ".")]:
        del store[name]


def _stochastic(trace):
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site.get("is_observed")
            and type(site["fn"]).__name__ != "_Subsample" and not site["infer"].get("is_auxiliary")}


def check_guide(model_fn, guide, kwargs, enumerated, latents) -> list:
    """Run the guide once and the model against it; return the sites the guide samples.

    Parameters
    ----------
    model_fn, guide : callable
    kwargs : dict
        Model/guide arguments.
    enumerated : set[str]
        Sites the model enumerates (the guide may leave them out).
    latents : list[str]
        Latent sites of the model.

    Raises
    ------
    ModelError
        If the guide raises, samples a site the model does not have or observes, leaves
        out a latent site that is not enumerated, or gives a value whose shape or support
        does not fit the model's site; the message names the sites.
    """
    try:
        guide_trace = poutine.trace(guide).get_trace(**kwargs)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"the guide raised while being run: {type(e).__name__}: {e}") from e
    sampled = _stochastic(guide_trace)
    extra = [n for n in sampled if n not in latents]
    if extra:
        raise ModelError(f"the guide samples site(s) {extra} that are not latent sites of the model "
                         f"(its latent sites: {latents}); a guide samples the model's latent sites by the same names")
    missing = [n for n in latents if n not in sampled and n not in enumerated]
    if missing:
        raise ModelError(f"the guide does not sample latent site(s) {missing} of the model; a guide must sample every "
                         "continuous latent (discrete ones it leaves out are enumerated)")
    try:  # the model's own sites (a prior run), to check the guide's values against
        prior_trace = poutine.trace(model_fn).get_trace(**kwargs)
    except Exception as e:
        raise ModelError(f"the model raised while being run: {type(e).__name__}: {e}") from e
    for name, gsite in sampled.items():
        msite = prior_trace.nodes.get(name)
        if msite is None:
            continue
        value, fn = gsite["value"], msite["fn"]
        want = fn.batch_shape + fn.event_shape
        try:
            ok_shape = broadcast_shapes(value.shape, want) == want
        except RuntimeError:
            ok_shape = False
        if not ok_shape:
            raise ModelError(f"the guide's value of site '{name}' has shape {tuple(value.shape)}; the model's site "
                             f"has batch shape {tuple(fn.batch_shape)} and event shape {tuple(fn.event_shape)}")
        if not bool(fn.support.check(value).all()):
            raise ModelError(f"the guide's value of site '{name}' lies outside the model's support {fn.support} "
                             f"(site family {type(fn).__name__}): give the guide a distribution on that support")
    try:
        poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(**kwargs)
    except Exception as e:
        raise ModelError(f"the model failed when run on the guide's values: {type(e).__name__}: {e}") from e
    return list(sampled)


def _is_identity(transform) -> bool:
    while hasattr(transform, "base_transform"):
        transform = transform.base_transform
    return isinstance(transform, torch.distributions.transforms.ComposeTransform) and not transform.parts


def _on_support(base, fn):
    transform = biject_to(fn.support)
    if _is_identity(transform):
        return base
    return torch.distributions.TransformedDistribution(base, [transform])


def guide_marginal_fn(guide, kind, kwargs):
    """A function ``site -> Distribution or None``: the fitted guide's exact marginal of a
    site (batch shape = the site's plate batch shape, event shape = its event shape), for
    the Gaussian autoguides (a Gaussian in unconstrained space pushed through
    ``biject_to(support)``) and AutoDelta (a Delta); ``None`` where the form has no closed
    marginal (flows, custom guides, sites with matrix-valued unconstrained events)."""
    if kind in ("custom", "empty") or not isinstance(guide, autoguide.AutoGuide):
        return lambda site: None
    if isinstance(guide, autoguide.AutoDelta):
        with torch.no_grad():
            point = guide.median(**kwargs)
        sites = dict(guide.prototype_trace.iter_stochastic_nodes())
        return lambda site: (_delta_at(point[site], sites[site]["fn"].event_dim) if site in point else None)
    if isinstance(guide, autoguide.AutoNormal):
        return lambda site: _autonormal_marginal(guide, site)
    if isinstance(guide, (autoguide.AutoMultivariateNormal, autoguide.AutoLowRankMultivariateNormal,
                          autoguide.AutoDiagonalNormal)):
        with torch.no_grad():
            q = guide.get_posterior(**kwargs)
            loc = q.mean.detach()
            cov = _covariance(q).detach()
        layout = packed_layout(guide)
        return lambda site: _block_marginal(loc, cov, layout.get(site))
    return lambda site: None


def _delta_at(value, event_dim):
    """A point mass at ``value`` (AutoDelta's marginal)."""
    import pyro.distributions as pdist

    return pdist.Delta(value.detach(), event_dim=event_dim)


def _autonormal_marginal(guide, site):
    sites = dict(guide.prototype_trace.iter_stochastic_nodes())
    if site not in sites:
        return None
    fn = sites[site]["fn"]
    with torch.no_grad():
        # AutoNormal keeps each site's loc and (constrained) scale as attributes of its locs and scales
        loc, scale = (t.detach() for t in guide._get_loc_and_scale(site))
    event_u = fn.event_dim + loc.dim() - sites[site]["value"].dim()
    base = torch.distributions.Normal(loc, scale, validate_args=False)
    if event_u:
        base = torch.distributions.Independent(base, event_u)
    return _on_support(base, fn)


def _covariance(q):
    if isinstance(q, torch.distributions.Independent):
        return torch.diag_embed(q.variance)
    return q.covariance_matrix


def packed_layout(guide) -> dict:
    """Site -> (fn, offset, unconstrained shape, unconstrained event rank) in an
    AutoContinuous guide's packed latent vector (the order of its prototype trace)."""
    layout, pos = {}, 0
    for name, site in guide.prototype_trace.iter_stochastic_nodes():
        shape = tuple(biject_to(site["fn"].support).inv(site["value"]).shape)
        size = 1
        for s in shape:
            size *= s
        event_u = site["fn"].event_dim + len(shape) - site["value"].dim()
        layout[name] = (site["fn"], pos, shape, event_u)
        pos += size
    return layout


def _block_marginal(loc, cov, entry):
    if entry is None:
        return None
    fn, pos, shape, event_u = entry
    if event_u > 1:
        return None
    batch = shape[: len(shape) - event_u]
    e = shape[-1] if event_u else 1
    n = 1
    for s in batch:
        n *= s
    idx = torch.arange(n * e, device=loc.device).reshape(n, e) + pos
    block_loc = loc[idx]
    block_cov = cov[idx[:, :, None], idx[:, None, :]]
    if event_u == 0:
        base = torch.distributions.Normal(block_loc.reshape(batch), block_cov.reshape(batch).clamp_min(0).sqrt(),
                                          validate_args=False)
    else:
        base = torch.distributions.MultivariateNormal(block_loc.reshape(batch + (e,)),
                                                      covariance_matrix=block_cov.reshape(batch + (e, e)),
                                                      validate_args=False)
    return _on_support(base, fn)
