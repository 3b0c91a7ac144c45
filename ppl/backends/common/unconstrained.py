"""Running a compiled model at a point of unconstrained space: each continuous latent's value
is ``biject_to(support)(z)`` for the support the model builds at this run, with the log
Jacobian of the transform (the change of variables of Stan's unconstrained parameterisation,
Carpenter et al. 2017, §"Variable transforms").  Shared by :mod:`.potential` and
:mod:`.supports`.

A Normal latent whose scale is another latent (a hierarchy's group effects under their
population sd) may instead be *non-centred*: ``h = loc + scale · z`` with ``z`` standard
normal a priori (Papaspiliopoulos, Roberts & Sköld 2007, "A general framework for the
parametrization of hierarchical models", Statist. Sci. 22; Betancourt & Girolami 2015 on
the funnel it removes).  The posterior is the same; its geometry in ``z`` is not: the
funnel's neck, where HMC diverges, becomes a round Gaussian when the data say little
about each group.  :func:`noncentrable_sites` finds them; :class:`Unconstrained` and the
potential's inverse take ``noncentred`` site names.
"""

from __future__ import annotations

import warnings

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch.distributions import Normal, TransformedDistribution, biject_to
from torch.distributions.transforms import AffineTransform

from ...compiler.families import base_distribution
from ...compiler.observations import CheckObservations
from ...compiler.provenance import provenance_of
from .params import param_scope

__all__ = ["Unconstrained", "conditioned_model", "start_value", "site_transform", "noncentrable_sites"]


def _normal_base(fn):
    """``(Normal, event dims)`` under ``Independent`` and Pyro's masked / expanded wrappers
    (:func:`~ppl.compiler.families.base_distribution`), or ``(None, 0)``."""
    base = base_distribution(fn)
    return (base, len(fn.event_shape) - len(base.event_shape)) if isinstance(base, Normal) else (None, 0)


def site_transform(fn, noncentred: bool = False):
    """The map from unconstrained ``z`` to the site's value: ``biject_to(fn.support)``, or,
    for a non-centred Normal site, ``loc + scale · z`` (an ``AffineTransform`` at this
    run's loc and scale; its log Jacobian ``Σ log scale`` turns the Normal's density into
    a standard normal's)."""
    if noncentred:
        base, events = _normal_base(fn)
        if base is not None:
            return AffineTransform(base.loc, base.scale, event_dim=events)
    return biject_to(fn.support)


def noncentrable_sites(graph) -> list:
    """The continuous latents of ``graph`` with a Normal distribution whose scale depends
    on another continuous latent (a hierarchy's group effects), in trace order.  The
    candidates are the Normal latents whose distribution depends on another latent (the
    compiled provenance, which joins loc's and scale's sites when they broadcast); a
    candidate is kept when its scale differs between two prior runs of the model (seeds 1
    and 2, in a private param store, the caller's random states restored); a model that
    raises there gives none.  A
    site whose distribution depends on a discrete latent is left out.  Computed once per
    graph."""
    return list(graph.memo("noncentred", "sites", lambda: _noncentrable(graph)))


def _noncentrable(graph) -> tuple:
    latents, discrete = set(graph.continuous_latent()), set(graph.discrete_latent())
    sources = {s: set(provenance_of(_normal_base(graph.sites[s].fn)[0].scale))
               for s in graph.continuous_latent() if _normal_base(graph.sites[s].fn)[0] is not None}
    # a scale that may depend on a summed-out discrete latent is left centred: the summed
    # density evaluates each site at one value per point, not one per discrete state
    candidates = [s for s, src in sources.items() if (src & latents) - {s} and not src & discrete]
    if not candidates:
        return ()
    from ...rng import seeded_globals   # ppl.rng imports the backends' package (a cycle at import time)

    model = conditioned_model(graph, graph.bound.observations)
    scales = []
    for seed in (1, 2):
        try:
            with seeded_globals(seed), param_scope(graph), pyro.validation_enabled(False), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trace = poutine.trace(model).get_trace(**graph.bound.kwargs)
        except Exception:  # noqa: BLE001 - a model that fails at a prior draw: keep the centred form
            return ()
        scales.append({s: _normal_base(trace.nodes[s]["fn"])[0] for s in candidates if s in trace.nodes})
    out = []
    for s in candidates:
        a, b = scales[0].get(s), scales[1].get(s)
        if a is not None and b is not None and a.scale.shape == b.scale.shape and not torch.equal(a.scale, b.scale):
            out.append(s)
    return tuple(out)


def conditioned_model(graph, observations):
    """The user's model conditioned on ``observations``; ``obs=`` values the model takes as
    Python numbers become tensors of the site's dtype, as in the compiled trace (the data
    were validated at compile time)."""
    cast = CheckObservations(graph.model, observations, validate=False, sites=graph.sites)
    return cast(poutine.condition(graph.model.fn, data=observations) if observations else graph.model.fn)


class Unconstrained(Messenger):
    """At each continuous latent named in ``z``, take the value ``biject_to(fn.support)(z)``
    (the support of the distribution the model builds there, at this run; for a site in
    ``noncentred``, ``loc + scale · z``: :func:`site_transform`) and add
    ``log |det ∂h/∂z|`` to :attr:`log_jacobian`; discrete latents named in ``fixed`` take
    those values."""

    def __init__(self, z: dict, fixed: dict | None = None, particles: int | None = None,
                 noncentred: frozenset = frozenset()):
        super().__init__()
        self.z, self.fixed = z, dict(fixed or {})
        self.noncentred = noncentred
        self.particles = particles
        self.log_jacobian = 0.0
        self.values: dict = {}
        self.supports: dict = {}

    def _pyro_sample(self, msg):
        name = msg["name"]
        if msg["is_observed"]:
            return
        if name in self.z:
            self.supports[name] = msg["fn"].support
            t = site_transform(msg["fn"], name in self.noncentred)
            h = t(self.z[name])
            ld = t.log_abs_det_jacobian(self.z[name], h)
            if self.particles is None:
                self.log_jacobian = self.log_jacobian + ld.sum()
            else:  # one value per particle (the leading dim)
                self.log_jacobian = self.log_jacobian + ld.reshape(self.particles, -1).sum(-1)
            msg["value"], msg["done"] = h, True
            self.values[name] = h
        elif name in self.fixed:
            msg["value"], msg["done"] = self.fixed[name], True


def _center(fn):
    """A central point of ``fn``: its mean where finite and inside its support; for a
    TransformedDistribution without a mean (``OrderedTransform`` of a Normal), the base's
    central point pushed through the transforms (for monotone transforms of a symmetric
    base, the median); None when neither exists."""
    try:
        mean = fn.mean
        if bool(torch.isfinite(mean).all()) and bool(fn.support.check(mean).all()):
            return mean
    except (NotImplementedError, RuntimeError, AttributeError, ValueError):
        pass
    if isinstance(fn, TransformedDistribution):
        c = _center(fn.base_dist)
        if c is not None:
            try:
                for t in fn.transforms:
                    c = t(c)
                if bool(torch.isfinite(c).all()) and bool(fn.support.check(c).all()):
                    return c
            except (NotImplementedError, RuntimeError, ValueError):
                pass
    return None


def start_value(record, device, dtype) -> torch.Tensor:
    """A site's prior mean where finite and inside its support (for a transformed
    distribution without a mean, its base's mean pushed through the transforms), else its
    compiled value (a detached plain tensor in ``dtype`` on ``device``; no model run)."""
    v = record.value
    c = _center(record.fn)
    if c is not None:
        try:
            v = c.expand(v.shape)
        except RuntimeError:
            pass
    return v.detach().as_subclass(torch.Tensor).to(device=device, dtype=dtype).clone()
