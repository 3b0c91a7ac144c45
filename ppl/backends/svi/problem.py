"""What one SVI run optimises: the user's model conditioned on the data (on a minibatch
when subsampling), the guide, and which discrete latents are summed out instead of
guided."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyro import poutine

from ...compiler.observations import CheckObservations
from ...errors import OptionError, UnsupportedModelError
from ..common.initcheck import checked_init_values
from ..common.potential import enumeration_problem
from ..common.runtime import place
from .guides import build_guide, check_guide
from .minibatch import Minibatcher
from .warmstart import laplace_start

__all__ = ["SVIProblem", "build_problem"]


@dataclass
class SVIProblem:
    """The pieces of an SVI run.

    Attributes
    ----------
    kwargs, observations : dict[str, Tensor]
        The model's arguments and observed values, placed on the run's device and dtype.
    state : dict
        ``{"obs": observations}``: the observations the model is conditioned on now (a
        minibatch's during training).
    model_fn : callable
        The conditioned model.
    enum_model : callable
        ``model_fn`` with the enumerated sites marked ``enumerate="parallel"``.
    guide : callable
    kind : str
        The guide's name (``"normal"``, ...), ``"custom"`` or ``"empty"``.
    guided, enumerated : list[str]
        Latent sites the guide samples / that are summed out exactly.
    batcher : Minibatcher or None
    mpn : int
        The model's max plate nesting.
    """

    kwargs: dict
    observations: dict
    state: dict
    model_fn: object
    enum_model: object
    guide: object
    kind: str
    guided: list
    enumerated: list
    batcher: object = None
    mpn: int = 0
    extra: dict = field(default_factory=dict)

    def restore(self) -> None:
        """Condition on the full data again (after training on minibatches)."""
        self.state["obs"] = self.observations


def _conditioned(graph, observations):
    """``(model_fn, state)``: the model conditioned on ``state["obs"]`` (the full data
    unless a minibatch is set)."""
    state = {"obs": observations}
    # obs= values the model takes as Python numbers become tensors of the site's dtype, as
    # in the compiled trace (no re-validation: the data were checked at compile time)
    cast = CheckObservations(graph.model, observations, validate=False, sites=graph.sites)
    conditioned = cast(poutine.condition(graph.model.fn, data=observations) if observations else graph.model.fn)

    def model_fn(*args, **kw):
        if state["obs"] is observations:  # the full data: the model conditioned once
            return conditioned(*args, **kw)
        return cast(poutine.condition(graph.model.fn, data=state["obs"]))(*args, **kw)

    return model_fn, state


def build_problem(graph, analysis, o, loss: str, dtype, restart: int = 0) -> SVIProblem:
    """The :class:`SVIProblem` of ``graph`` for options ``o`` (validated settings); a
    ``restart`` > 0 starts the Laplace fit from a random point, or the guide at a prior
    draw where there is no Laplace start.

    Raises
    ------
    UnsupportedModelError
        Discrete latents that neither the guide samples nor enumeration can sum out.
    OptionError
        A loss that cannot enumerate, or minibatches over local latents of an autoguide.
    ModelError
        A user guide that does not match the model.
    """
    device = o.device
    kwargs = {k: place(v, device, dtype) for k, v in graph.bound.kwargs.items()}
    observations = {k: place(v, device, dtype) for k, v in graph.bound.observations.items()}
    model_fn, state = _conditioned(graph, observations)
    latents = graph.latent()
    discrete = set(graph.discrete_latent())
    continuous = [n for n in latents if n not in discrete]
    extra = {"warm": None, "init": o.init if isinstance(o.init, str) else "given"}
    if isinstance(o.guide, (str, type)):
        enumerated = sorted(discrete, key=latents.index)
        problem = enumeration_problem(analysis) if enumerated else None
        if problem:
            raise UnsupportedModelError(problem)
        init = checked_init_values(graph, o.init, continuous) if isinstance(o.init, dict) else o.init
        if isinstance(init, str) and init == "laplace":
            name = o.guide if isinstance(o.guide, str) else "custom"
            warm, why = (laplace_start(graph, analysis, name, device, dtype, o.subsample_size is not None, restart)
                         if continuous and not o.shard.active else
                         (None, "distributed=True: each rank holds a shard" if continuous else "no continuous latent"))
            init = warm.values if warm is not None else ("median" if restart == 0 else "sample")
            extra.update(warm=warm, init="laplace" if warm is not None else f"median (no Laplace start: {why})",
                         init_note=why)
        q, kind = build_guide(o.guide, model_fn, enumerated, has_latents=bool(continuous), init=init,
                              init_scale=o.init_scale, options=o.guide_options,
                              standardized=extra["warm"] is not None)
        guided = continuous
    else:
        q, kind = build_guide(o.guide, model_fn, (), has_latents=True, options=o.guide_options)
        guided = check_guide(model_fn, q, kwargs, discrete, latents)
        enumerated = [n for n in latents if n in discrete and n not in guided]
    if enumerated and loss != "elbo":
        raise OptionError(f"loss='{loss}' cannot sum out the discrete latent(s) {enumerated}: use loss='elbo' "
                          "(exact enumeration), or a guide that samples them")
    enum_set = set(enumerated)
    enum_model = poutine.infer_config(
        model_fn, lambda msg: {"enumerate": "parallel"} if msg["name"] in enum_set else {}) if enumerated else model_fn
    batcher = None
    if o.subsample_size is not None:
        batcher = Minibatcher(graph, o.subsample_size, kwargs, observations)
        local = [n for n in guided if batcher.plate in graph.variables[n].plates] \
            if kind not in ("custom", "empty") else []
        if local:
            raise OptionError(
                f"subsample_size: the latent site(s) {local} are local to the subsampled plate '{batcher.plate}'; "
                "an autoguide keeps one parameter per data point, which minibatches cannot follow here: pass an "
                "amortised guide (guide=callable encoder) or drop subsample_size")
    mpn = max([-p.dim for p in graph.plates.values()], default=0)
    return SVIProblem(kwargs, observations, state, model_fn, enum_model, q, kind, list(guided), enumerated,
                      batcher, mpn, extra)
