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

import networkx as nx
import pyro
import torch
from pyro.poutine.messenger import Messenger

from ..dsl import trace_model
from ..errors import ModelError, UnsupportedModelError
from ..ops.contract import LogFactor
from . import families
from .observations import CheckObservations

__all__ = ["enumeration_dims", "log_factor_tables"]

_MAX_DIMS = 60  # torch supports 64 dims


class _EnumerateSites(Messenger):
    """Set each named latent site's value to its support laid out along its own dim."""

    def __init__(self, dims: dict):
        super().__init__()
        self.dims = dims

    def _pyro_sample(self, msg):
        name = msg["name"]
        if name not in self.dims or msg["is_observed"]:
            return
        fn = msg["fn"]
        values = families.enumerate_values(fn)
        dim = self.dims[name]
        shape = (values.shape[0],) + (1,) * (-dim - 1) + tuple(fn.event_shape)
        msg["value"] = values.reshape(shape)
        msg["done"] = True
        msg["infer"] = dict(msg.get("infer") or {}, _enumerate_dim=dim)


@contextlib.contextmanager
def _default_dtype(dtype):
    """Run the enumerated trace with ``dtype`` as torch's default float dtype, so tensors
    the model creates (``torch.ones(K)``...) have the precision the tables are asked in."""
    old = torch.get_default_dtype()
    if dtype not in (torch.float32, torch.float64) or dtype == old:
        yield
        return
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


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


def log_factor_tables(graph, dims: dict, plate_order: tuple, dtype=torch.float64, device=None) -> dict:
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
    with pyro.validation_enabled(False), _default_dtype(dtype):
        try:
            trace = trace_model(graph.model, graph.bound, _EnumerateSites(dims),
                                CheckObservations(graph.model, graph.bound.observations))
            trace.compute_log_prob()
        except ModelError as e:
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
    plates = graph.plates
    discrete = set(dims)
    tables = {}
    for name, f in graph.factors.items():
        site = trace.nodes[name]
        lp = site["log_prob"]
        vars_ = tuple(v for v in f.scope if v in discrete)
        fplates = tuple(p for p in plate_order if p in f.plates)
        keep = [plates[p].dim for p in fplates] + [dims[v] for v in vars_]
        sizes = [plates[p].size for p in fplates] + [graph.variables[v].cardinality for v in vars_]
        rank = max([-d for d in keep] + [lp.dim()])
        lp = lp.reshape((1,) * (rank - lp.dim()) + tuple(lp.shape))
        positions = [rank + d for d in keep]
        stray = [i - rank for i in range(rank) if i not in positions and lp.shape[i] != 1]
        if stray:
            raise UnsupportedModelError(
                f"site '{name}': its log density has shape {tuple(lp.shape)}, with dims {stray} that are neither a "
                "declared plate nor an enumerated discrete latent; declare i.i.d. copies with ppl.plate"
            )
        full = [1] * rank
        for d, s in zip(keep, sizes):
            full[rank + d] = s
        lp = lp.expand(full)
        others = [i for i in range(rank) if i not in positions]
        table = lp.permute(positions + others).reshape(sizes) if others or positions else lp.reshape(())
        tables[name] = LogFactor(table.to(dtype=dtype, device=device), fplates, vars_)
    return tables
