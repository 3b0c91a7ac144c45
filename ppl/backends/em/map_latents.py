"""MAP of global continuous latents inside EM (``method="em", map_latents=...``).

EM for MAP (Bishop 2006, §9.3 and exercise 9.20 / §9.4; Goodfellow et al. 2016, §19.3):
to maximise the posterior density ``p(θ | v) ∝ p(v | θ) p(θ)`` of global latents θ,
run EM on ``log p(v, θ) = log p(v | θ) + log p(θ)``.  The E-step is unchanged; the
M-step maximises ``Q(θ) + log p(θ)``.

:class:`LatentsAsParams` rewrites the model so that the existing EM machinery does
exactly that: each chosen ``sample`` site becomes a ``pyro.param`` of the same name
(its initial value the prior's mean, its constraint the prior's support) and a
``pyro.factor("<name>_prior", prior.log_prob(value))``.  The factor depends on params
only, so its E-step weight is 1: it adds ``log p(θ)`` to the log-evidence of every
E-step (the history is ``log p(v, θ)``) and to the objective of the M-step.
"""

from __future__ import annotations

import pyro
import torch
from pyro.poutine.messenger import Messenger
from torch.distributions import transform_to

from ...compiler import compile as compile_graph
from ...dsl import Model
from ...errors import OptionError, UnsupportedModelError

__all__ = ["LatentsAsParams", "prior_factor_name", "select_map_latents", "map_model"]


def prior_factor_name(site: str) -> str:
    """Name of the ``pyro.factor`` that carries the prior of MAP site ``site``."""
    return f"{site}_prior"


def _initial_value(fn) -> torch.Tensor:
    """The prior's mean when finite and inside its support, else its mode, else the image
    of 0 under ``transform_to(support)``."""
    support = fn.support
    for attr in ("mean", "mode"):
        try:
            v = getattr(fn, attr)
        except (NotImplementedError, AttributeError, ValueError):
            continue
        v = torch.as_tensor(v).detach()
        if v.is_floating_point() and bool(torch.isfinite(v).all()) and bool(support.check(v).all()):
            return v.clone()
    shape = tuple(fn.batch_shape) + tuple(fn.event_shape)
    return transform_to(support)(torch.zeros(shape)).detach()


class LatentsAsParams(Messenger):
    """Replace each latent ``sample`` site named in ``names`` by a ``pyro.param`` of the
    same name (constraint: the site's support; initial value: the prior's mean) plus a
    ``pyro.factor(f"{name}_prior", prior.log_prob(value))``.

    Applied directly around the model function, so it sees the site before ``condition``,
    ``trace`` or enumeration do; the original sample site leaves no trace.

    Attributes
    ----------
    priors : dict[str, Distribution]
        Site -> its prior as seen at the latest run (batch shape from its plates).
    """

    def __init__(self, names):
        super().__init__()
        self.names = frozenset(names)
        self.priors: dict = {}

    def _pyro_sample(self, msg):
        name = msg["name"]
        if name not in self.names or msg["is_observed"]:
            return
        fn = msg["fn"]
        self.priors[name] = fn
        value = pyro.param(name, lambda: _initial_value(fn), constraint=fn.support)
        pyro.factor(prior_factor_name(name), fn.log_prob(value))
        msg["value"] = value
        msg["done"] = True
        msg["stop"] = True  # no handler below sees it: the sample site disappears from every trace


def select_map_latents(graph, map_latents) -> tuple:
    """The sites ``map_latents`` picks in ``graph`` (validated).

    Parameters
    ----------
    graph : FactorGraph
        The original model (its continuous latents are candidates).
    map_latents : bool, str or sequence of str
        ``True``: every continuous latent; ``False``/``None``: none; names: those sites.

    Returns
    -------
    tuple[str, ...]
        In trace order.

    Raises
    ------
    OptionError
        A bad type, an unknown or observed name, a discrete site, a ``ppl.param``.
    UnsupportedModelError
        A chosen site inside a plate that also holds discrete latents or observed data
        (a local latent: its number grows with the data, MAP of it is not EM).
    """
    if map_latents is None or map_latents is False:
        return ()
    if map_latents is True:
        names = graph.continuous_latent()
    elif isinstance(map_latents, str):
        names = [map_latents]
    elif isinstance(map_latents, (list, tuple, set, frozenset)) and all(isinstance(n, str) for n in map_latents):
        names = list(map_latents)
    else:
        raise OptionError(f"map_latents must be True, False, a site name or a list of site names, got {map_latents!r}")
    variables = graph.variables
    for n in names:
        v = variables.get(n)
        if v is None or v.role != "latent":
            kind = "not a site of the model" if v is None else \
                f"{'an' if v.role[0] in 'aeiou' else 'a'} {v.role} site, not a latent one"
            raise OptionError(f"map_latents: '{n}' is {kind}; the model's latent sites are {graph.latent()}")
        if v.cardinality is not None or v.discrete:
            raise OptionError(f"map_latents: '{n}' is a discrete latent ({v.family}); EM sums discrete latents out "
                              "exactly, MAP applies to continuous global latents only")
    local_plates = set()
    for v in variables.values():
        if v.role == "observed" or (v.role == "latent" and v.cardinality is not None):
            local_plates.update(v.plates)
    for n in names:
        bad = [p for p in variables[n].plates if p in local_plates]
        if bad:
            raise UnsupportedModelError(
                f"map_latents: '{n}' is a local latent (inside plate(s) {bad}, which also hold(s) data or discrete "
                "latents); only global continuous latents (outside the data plates) can be estimated by MAP in EM; "
                "use method='svi' for local continuous latents")
    order = list(variables)
    return tuple(sorted(set(names), key=order.index))


def map_model(graph, names):
    """The compiled model with ``names`` turned into params and prior factors (memoised on
    ``graph``); its :class:`LatentsAsParams` handler is memoised on the new graph under
    ``("em", "map_latents_handler")``.

    Returns
    -------
    FactorGraph
    """
    def build():
        model = graph.model
        handler = LatentsAsParams(names)
        wrapped = Model(handler(model.fn), name=model.name, state_names=model.state_names)
        wrapped.signature = model.signature
        data = dict(graph.bound.kwargs)
        data.update(graph.bound.observations)
        out = compile_graph(wrapped, data)
        out.memo("em", "map_latents_handler", lambda: handler)
        return out

    return graph.memo("em", ("map_latents_graph", tuple(names)), build)
