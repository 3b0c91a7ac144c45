"""Running a compiled model at a point of unconstrained space: each continuous latent's value
is ``biject_to(support)(z)`` for the support the model builds at this run, with the log
Jacobian of the transform (the change of variables of Stan's unconstrained parameterisation,
Carpenter et al. 2017, §"Variable transforms").  Shared by :mod:`.potential` and
:mod:`.supports`.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch.distributions import TransformedDistribution, biject_to

from ...compiler.observations import CheckObservations

__all__ = ["Unconstrained", "conditioned_model", "start_value"]


def conditioned_model(graph, observations):
    """The user's model conditioned on ``observations``; ``obs=`` values the model takes as
    Python numbers become tensors of the site's dtype, as in the compiled trace (the data
    were validated at compile time)."""
    cast = CheckObservations(graph.model, observations, validate=False, sites=graph.sites)
    return cast(poutine.condition(graph.model.fn, data=observations) if observations else graph.model.fn)


class Unconstrained(Messenger):
    """At each continuous latent named in ``z``, take the value ``biject_to(fn.support)(z)``
    (the support of the distribution the model builds there, at this run) and add
    ``log |det ∂h/∂z|`` to :attr:`log_jacobian`; discrete latents named in ``fixed`` take
    those values."""

    def __init__(self, z: dict, fixed: dict | None = None, particles: int | None = None):
        super().__init__()
        self.z, self.fixed = z, dict(fixed or {})
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
            t = biject_to(msg["fn"].support)
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
