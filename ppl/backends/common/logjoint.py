"""The log joint ``log p(v, h; θ)`` of a compiled model as a differentiable function of
chosen latent values and ``ppl.param`` values: what point estimators (MAP) optimise.

The user's model is run unchanged under Pyro handlers: ``condition`` fixes the latents
(and the data), :class:`SubstituteParams` fixes the params, ``trace`` records every site,
and the log density is ``Σ_sites scale · mask · log_prob`` as Pyro's
``Trace.log_prob_sum`` computes it.  Terms of chosen sites can be left out: the MAP
backend leaves out Laplace priors, whose ``|h - μ| / b`` term it handles by its prox
(:meth:`LogJoint.l1_terms`).
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.autoguide import initialization as init_strategies
from pyro.poutine.messenger import Messenger

from ...compiler.families import family_name
from ...compiler.observations import CheckObservations
from ...ops.proximal import soft_threshold
from ...errors import OptionError
from .initcheck import checked_init_values
from .runtime import place

__all__ = ["LogJoint", "SubstituteParams", "L1Term", "INIT_STRATEGIES"]

#: ``init=`` names -> Pyro init strategies (each falls back to the prior median, then a
#: feasible point, where the first is undefined).
def _init_to_finite_mean(site=None):
    """The prior mean where it is finite (Pyro's ``init_to_mean`` accepts the infinite mean
    of a HalfCauchy), else the prior median."""
    value = init_strategies.init_to_mean(site, fallback=init_strategies.init_to_median)
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        return init_strategies.init_to_median(site)
    return value


INIT_STRATEGIES = {
    "mean": lambda: _init_to_finite_mean,
    "median": lambda: init_strategies.init_to_median,
    "sample": lambda: init_strategies.init_to_sample,
    "feasible": lambda: init_strategies.init_to_feasible,
}


class SubstituteParams(Messenger):
    """Give each ``pyro.param`` named in ``values`` that (constrained) value instead of the
    param store's, so that it can be a leaf being optimised."""

    def __init__(self, values: dict):
        super().__init__()
        self.values = values

    def _pyro_param(self, msg):
        name = msg["name"]
        if name in self.values:
            msg["value"] = self.values[name]
            msg["done"] = True


class L1Term:
    """A Laplace prior's non-smooth part ``Σ weight · |h - center|`` (tensors with the site's
    value shape; ``weight = scale / b``, 0 where masked).

    When every weight is equal and every center 0 (the usual sparse-coding prior) the prox
    and penalty take a fused path (``softshrink``, one ``abs().sum()``)."""

    def __init__(self, center: torch.Tensor, weight: torch.Tensor):
        self.center = center
        self.weight = weight
        flat_w = weight.reshape(-1)
        self.uniform = (float(flat_w[0]) if flat_w.numel() and bool((flat_w == flat_w[0]).all())
                        and bool((center == 0).all()) else None)

    def penalty(self, h: torch.Tensor) -> torch.Tensor:
        if self.uniform is not None:
            return self.uniform * torch.linalg.vector_norm(h.reshape(-1), 1)
        return (self.weight * (h - self.center).abs()).sum()

    def prox(self, h: torch.Tensor, step: float) -> torch.Tensor:
        """Soft-thresholding: the prox of ``step ·`` the penalty."""
        if self.uniform is not None:
            return torch.nn.functional.softshrink(h, self.uniform * step)
        return soft_threshold(h, self.weight * step, self.center)

    def rows(self, k: int, sl: slice) -> "L1Term":
        """The term of rows ``sl`` of the ``(-1, k)`` view."""
        return L1Term(self.center.reshape(-1, k)[sl], self.weight.reshape(-1, k)[sl])


def _laplace(fn, value: torch.Tensor, scale, mask) -> L1Term | None:
    """The :class:`L1Term` of a Laplace site (wrappers: Independent, expand, mask)."""
    event_dim = len(fn.event_shape)
    masks = [] if mask is None else [mask]
    base = fn
    while type(base).__name__ in ("Independent", "ExpandedDistribution", "MaskedDistribution"):
        if type(base).__name__ == "MaskedDistribution":
            masks.append(base._mask)
        base = base.base_dist
    if type(base).__name__ != "Laplace":
        return None
    shape = value.shape
    center = torch.broadcast_to(base.loc.detach(), shape)
    weight = torch.broadcast_to((1.0 / base.scale.detach()), shape) * scale
    for m in masks:
        if isinstance(m, bool):
            m = torch.tensor(m, device=value.device)
        m = m.reshape(tuple(m.shape) + (1,) * event_dim)
        weight = torch.where(m, weight, torch.zeros_like(weight))
    return L1Term(center.clone(), weight.clone())


class LogJoint:
    """``log p(v, h; θ)`` of ``graph``'s model and data (see module docstring).

    Parameters
    ----------
    graph : FactorGraph
    device : torch.device
    dtype : torch.dtype
        Floating data are cast to it.
    """

    def __init__(self, graph, device, dtype):
        self.graph = graph
        self.kwargs = {k: place(v, device, dtype) for k, v in graph.bound.kwargs.items()}
        self.observations = {k: place(v, device, dtype) for k, v in graph.bound.observations.items()}
        self.device, self.dtype = device, dtype
        # observed values cast per run to the family's dtype (int data on a Bernoulli site), as
        # in the compiled trace; the data were validated at compile time
        self._cast = CheckObservations(graph.model, self.observations, validate=False, sites=graph.sites)

    def trace(self, values: dict, params: dict | None = None, messengers=()) -> poutine.Trace:
        """One run of the model with ``values`` (site -> value) conditioned and ``params``
        (name -> constrained value) substituted."""
        fn = self._cast(poutine.condition(self.graph.model.fn, data={**self.observations, **values}))
        if params:
            fn = SubstituteParams(params)(fn)
        for m in messengers:
            fn = m(fn)
        return poutine.trace(fn).get_trace(**self.kwargs)

    @staticmethod
    def terms(trace, skip=()) -> dict:
        """Site -> its summed log density (scale and mask applied), leaving out ``skip``."""
        out = {}
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or name in skip:
                continue
            lp = site["fn"].log_prob(site["value"])
            out[name] = scale_and_mask(lp, site["scale"], site["mask"]).sum()
        return out

    def __call__(self, values: dict, params: dict | None = None, skip=()) -> torch.Tensor:
        """``log p(v, h; θ)`` minus the terms of ``skip`` (a scalar tensor, differentiable
        in ``values`` and ``params``)."""
        return sum(self.terms(self.trace(values, params), skip).values())

    def initial_values(self, sites, init, params: dict | None = None) -> dict:
        """Starting values of ``sites``: by a Pyro init strategy (``init`` a name of
        :data:`INIT_STRATEGIES`), or from a dict site -> value (other sites by ``"mean"``).

        Raises
        ------
        OptionError
            Unknown strategy name, or a dict entry of the wrong shape or outside the support.
        """
        given = {}
        if isinstance(init, dict):
            given = checked_init_values(self.graph, init, sites)
            given = {k: place(v, self.device, self.dtype) for k, v in given.items()}
            strategy = INIT_STRATEGIES["mean"]()
        elif isinstance(init, str) and init in INIT_STRATEGIES:
            strategy = INIT_STRATEGIES[init]()
        else:
            raise OptionError(f"init must be one of {sorted(INIT_STRATEGIES)} or a dict site -> value, got {init!r}")
        fn = self._cast(poutine.condition(self.graph.model.fn, data={**self.observations, **given}))
        if params:
            fn = SubstituteParams(params)(fn)
        with torch.no_grad():
            try:
                tr = poutine.trace(init_strategies.InitMessenger(strategy)(fn)).get_trace(**self.kwargs)
            except (ValueError, RuntimeError) as e:
                if not given:
                    raise
                raise OptionError(f"init: the model fails at the starting values of {sorted(given)} "
                                  f"({type(e).__name__}: {str(e).splitlines()[0].rstrip(':')}); start them "
                                  "inside the region where the model's distributions are valid") from None
        out = {}
        for s in sites:
            site = tr.nodes[s]
            value = site["value"].detach()
            if s in given:
                if not bool(site["fn"].support.check(value).all()):
                    raise OptionError(f"init['{s}'] lies outside the support of site '{s}' ({site['fn'].support})")
            out[s] = value.clone()
        return out

    def l1_terms(self, sites, values: dict, params: dict | None = None) -> dict:
        """Site -> :class:`L1Term` for each of ``sites`` whose distribution is a Laplace."""
        tr = self.trace(values, params)
        out = {}
        for s in sites:
            site = tr.nodes[s]
            if family_name(site["fn"]) == "Laplace":
                term = _laplace(site["fn"], site["value"], site["scale"], site["mask"])
                if term is not None:
                    out[s] = term
        return out
