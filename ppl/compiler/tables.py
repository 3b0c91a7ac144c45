"""Log-factor tables of a model's discrete latents, from one enumerated run.

Each discrete latent is given its own tensor dimension (left of the plate dims) and
its value is set to its whole support along that dimension, as in Pyro's parallel
enumeration (Obermeyer et al. 2019).  Every factor's ``log_prob`` then comes out as a
table over its scope, broadcast over the others.  Unlike Pyro, no ``markov``
annotations are needed to keep the number of dimensions small: two latents that never
share a factor can share a dimension, so dimensions are a colouring of the moral graph
(smallest-last greedy colouring, linear time; a chain needs 2, munin about 10).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import networkx as nx
import pyro
import torch

from ..dsl import BoundData, default_dtype, trace_model
from ..errors import ModelError, UnsupportedModelError
from ..ops.contract import LogFactor
from .chunked import precompute_log_probs
from .handlers import CheckObservations, EnumerateSites
from .handlers.check_observations_messenger import STRUCTURE_CHANGED
from .internals import mask_of
from .zeros import exact_log_prob

__all__ = ["FactorLayout", "latent_mask", "masked_latent_log_prob", "enumerated_trace", "enumeration_dims", "factor_layout", "log_factor_tables"]

_MAX_DIMS = 60  # torch supports 64 dims


def enumeration_dims(graph, moral: nx.Graph) -> dict:
    """Assign each discrete latent a (negative) tensor dim left of every plate dim, so that
    latents sharing a factor get different dims.

    Returns
    -------
    dict[str, int]

    Raises
    ------
    UnsupportedModelError
        If more dims would be needed than torch supports.
    """
    discrete = graph.discrete_latent()
    sub = nx.Graph(moral.subgraph(discrete))  # a concrete copy: colouring on a view is slow
    colours = nx.greedy_color(sub, strategy="smallest_last") if len(sub) else {}
    # left of every plate dim and of every batch dim any site has, declared or not, so an
    # undeclared batch dim can never be mistaken for a latent's enumeration dim
    batch_rank = max((len(r.fn.batch_shape) for r in graph.sites.values() if r.fn is not None), default=0)
    first = -1 - max(max((-p.dim for p in graph.plates.values()), default=0), batch_rank)
    dims = {v: first - colours.get(v, 0) for v in discrete}
    if dims and -min(dims.values()) > _MAX_DIMS:
        raise UnsupportedModelError(
            f"enumerating this model needs {-min(dims.values())} tensor dims (> {_MAX_DIMS}); "
            "its discrete latents interact too densely for exact enumeration: use method='svi' or 'cavi'"
        )
    return dims


def log_factor_tables(graph, dims: dict, plate_order: tuple, dtype=torch.float64, device=None,
                      messengers=(), names=None, grad: bool = False, validate: bool = True) -> dict:
    """Evaluate every factor as a compact :class:`~ppl.ops.contract.LogFactor`.

    Parameters
    ----------
    graph : FactorGraph
    dims : dict[str, int]
        From :func:`enumeration_dims`.
    plate_order : tuple[str, ...]
        Global plate order; each table's leading dims follow it.
    dtype : torch.dtype
    device : torch.device or str, optional
    messengers : sequence of pyro Messenger
        Extra handlers for the run (e.g. ``poutine.substitute`` of ``ppl.param`` values).
    names : collection of str, optional
        Only these factors (default all).
    grad : bool
        Keep autograd history (tables differentiable in substituted param tensors).
    validate : bool
        Check the observed values (default); ``False`` for repeated runs of a model whose
        data were checked already.

    Returns
    -------
    dict[str, LogFactor]
        Factor (site) name -> table of shape ``(plate sizes...) + (cards of its discrete
        latents, in scope order)``.

    Raises
    ------
    UnsupportedModelError
        If a discrete latent's batch shape is not declared by plates, or a factor
        depends on a latent that is not enumerable.
    ModelError
        If the model fails under enumeration (e.g. Python control flow on a latent's
        value, or indexing that does not broadcast; use ``ppl.Vindex``).
    """
    trace = enumerated_trace(graph, dims, dtype, *messengers, grad=grad, log_prob=names is None, validate=validate)
    if names is not None:  # only the factors asked for (a data-sized likelihood is not recomputed)
        wanted = set(names)
        with quiet_nan():
            trace.compute_log_prob(site_filter=lambda name, site: name in wanted)
    tables = {}
    for name in graph.factors if names is None else names:
        site = trace.nodes[name]
        layout = factor_layout(graph, name, site["log_prob"].shape, dims, plate_order)
        log_prob = exact_log_prob(site["fn"], site["value"], site["log_prob"], site.get("mask"))
        table = layout.canonical(log_prob, 0, expand=True)
        mask = latent_mask(site) if name in dims else None
        if mask is not None:
            keep = layout.canonical(mask, 0, expand=True)
            table = torch.where(keep, table, masked_latent_log_prob(graph.variables[name].cardinality, table))
        tables[name] = LogFactor(table.to(dtype=dtype, device=device), layout.plates, layout.vars)
    return tables


def latent_mask(site):
    """The mask of a sample site (``poutine.mask``, ``.mask()``, ``obs_mask``'s unobserved
    half) as a bool tensor, or ``None`` if it has none."""
    masks = []
    m = site.get("mask")
    if isinstance(m, torch.Tensor):
        masks.append(m)
    fn = site["fn"]
    while type(fn).__name__ in ("MaskedDistribution", "ExpandedDistribution"):
        if type(fn).__name__ == "MaskedDistribution" and isinstance(mask_of(fn), torch.Tensor):
            masks.append(mask_of(fn))
        fn = fn.base_dist
    if not masks:
        return None
    out = masks[0].bool()
    for x in masks[1:]:
        out = out & x.bool()
    return out.as_subclass(torch.Tensor) if type(out) is not torch.Tensor else out


def masked_latent_log_prob(cardinality: int, like: torch.Tensor) -> torch.Tensor:
    """The log table entry of a masked-out copy of a discrete latent: ``-log K``.

    A masked copy does not exist in the model (``obs_mask`` splits a site into an
    observed and an unobserved half, each masked where the other holds); its own factor
    must then sum to 1 over its K states, not to K (``log_prob`` 0), or the log evidence
    would be off by ``log K`` per masked copy."""
    return torch.full((), -math.log(cardinality), dtype=like.dtype, device=like.device)


@contextlib.contextmanager
def quiet_nan():
    """Pyro's "Encountered NaN: log_prob_sum at site ..." warnings off: tables are evaluated
    at points a user never chose (an applicability check's probe, a parameter overflowing
    ``exp``), and every consumer checks its tables for non-finite entries itself."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
        yield


def enumerated_trace(graph, dims: dict, dtype, *messengers, grad: bool = False, log_prob: bool = True,
                     validate: bool = True):
    """One run of the model with every discrete latent enumerated (see the module
    docstring), ``log_prob`` computed at every site unless ``log_prob=False``, observed
    values checked unless ``validate=False``.  Raises as :func:`log_factor_tables`."""
    with pyro.validation_enabled(False), default_dtype(dtype):
        try:
            trace = trace_model(graph.model, _bound_in(graph, dtype), EnumerateSites(dims), *messengers,
                                CheckObservations(graph.model, graph.bound.observations, validate, sites=graph.sites),
                                grad=grad)
            if log_prob:
                precompute_log_probs(trace)  # large observed sites chunk by chunk (bounded temporaries)
                with quiet_nan():
                    trace.compute_log_prob()
        except ModelError as e:
            if STRUCTURE_CHANGED in str(e):  # says what to do already
                raise
            raise ModelError(
                f"{e}\n(while evaluating factor tables with every discrete latent enumerated: the model must "
                "accept a latent's whole support as a batched value - no Python control flow on latent values, "
                "and use ppl.Vindex for indexing with several latents)"
            ) from None
        except Exception as e:
            raise ModelError(
                f"model '{graph.model.name}' failed with its discrete latents enumerated ({type(e).__name__}: {e}); "
                "no Python control flow on latent values, and use ppl.Vindex for indexing with several latents"
            ) from e
    return trace


def _bound_in(graph, dtype):
    """``graph.bound`` with floating tensor arguments in ``dtype`` (as every other run of the
    model places them: the log joint, the potential, SVI), so that a float32 array passed as
    an argument meets float64 latents in a float64 run; built once per graph and dtype."""
    bound = graph.bound
    if dtype not in (torch.float32, torch.float64) or not any(
            isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != dtype for v in bound.kwargs.values()):
        return bound

    def build():
        kwargs = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                  for k, v in bound.kwargs.items()}
        return BoundData(bound.args, kwargs, bound.observations)

    return graph.memo("tables", ("bound", dtype), build)


@dataclass(frozen=True)
class FactorLayout:
    """Where a factor's batch dims go in its table: plates (global order), then its
    discrete latents (scope order).

    Attributes
    ----------
    name : str
    plates, vars : tuple[str, ...]
    sizes : tuple[int, ...]
        The table shape.
    rank : int
        Number of batch dims of the enumerated ``log_prob`` (padded on the left).
    positions : tuple[int, ...]
        Batch dim (of ``rank``) of each plate / latent, in table order.
    """

    name: str
    plates: tuple
    vars: tuple
    sizes: tuple
    rank: int
    positions: tuple

    def canonical(self, x: torch.Tensor, tail: int, expand: bool = False) -> torch.Tensor:
        """Lay ``x`` (batch dims as the enumerated ``log_prob``, right-aligned, then
        ``tail`` trailing dims) out as the table: shape ``sizes + x's tail``, with size 1
        where ``x`` is constant (broadcast) unless ``expand``.

        Raises
        ------
        UnsupportedModelError
            If ``x`` varies along a batch dim that is neither a plate nor a latent's.
        """
        batch = tuple(x.shape[: x.dim() - tail])
        tail_shape = tuple(x.shape[x.dim() - tail:])
        if len(batch) > self.rank:
            raise UnsupportedModelError(
                f"site '{self.name}': a tensor of shape {tuple(x.shape)} has more batch dims than its log density")
        batch = (1,) * (self.rank - len(batch)) + batch
        stray = [i - self.rank for i in range(self.rank) if i not in self.positions and batch[i] != 1]
        if stray:
            raise UnsupportedModelError(
                f"site '{self.name}': its log density has shape {batch}, with dims {stray} that are neither a "
                "declared plate nor an enumerated discrete latent; declare i.i.d. copies with ppl.plate"
            )
        x = x.reshape(batch + tail_shape)
        if expand:
            x = x.expand(tuple(self.sizes[self.positions.index(i)] if i in self.positions else 1
                               for i in range(self.rank)) + tail_shape)
        others = [i for i in range(self.rank) if i not in self.positions]
        order = list(self.positions) + others + list(range(self.rank, self.rank + len(tail_shape)))
        x = x.permute(order) if order else x
        return x.reshape(tuple(x.shape[: len(self.positions)]) + tail_shape)


def factor_layout(graph, name: str, lp_shape, dims: dict, plate_order: tuple) -> FactorLayout:
    """The :class:`FactorLayout` of factor ``name`` whose enumerated ``log_prob`` has shape
    ``lp_shape``."""
    f = graph.factors[name]
    plates = graph.plates
    vars_ = tuple(v for v in f.scope if v in dims)
    fplates = tuple(p for p in plate_order if p in f.plates)
    keep = [plates[p].dim for p in fplates] + [dims[v] for v in vars_]
    sizes = tuple([plates[p].size for p in fplates] + [graph.variables[v].cardinality for v in vars_])
    rank = max([-d for d in keep] + [len(lp_shape)])
    return FactorLayout(name, fplates, vars_, sizes, rank, tuple(rank + d for d in keep))
