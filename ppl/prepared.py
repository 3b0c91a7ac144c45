"""Prepared models: a model compiled once per set of observed sites, then only rebound.

``ppl.infer(model, data)`` called again on the same model with new values of the same
observed sites (the same names, shapes and dtypes; the same model arguments) reuses the
compiled :class:`~ppl.compiler.FactorGraph`, its analysis and its contraction plan
instead of tracing the model again.  This is what a diagnosis loop over cases does
(evidence in, every marginal out), and what pgmpy's ``VariableElimination`` object is
built for.

How new evidence reaches the tables without a new run of the model
-------------------------------------------------------------------
Every observed site that is discrete, finite and scalar (no plate: a Bayesian-network
node, one step of a ``markov`` loop) is *clamped*: the model is compiled a second time
with those sites left latent, so each factor table is computed over the observed
site's whole support (one enumerated run, as for any latent: Obermeyer et al. 2019).
Evidence is then a selection along those table dims, exactly the reduction of a factor
by evidence of Koller & Friedman (2009), Def. 4.5 — no tracing, no new plan.  The run
with the sites enumerated is also the check that the model's structure does not depend
on their values: Python control flow on them fails there, and the model is then never
prepared (every call compiles, as before).

When results are reused, and when not
-------------------------------------
Reuse happens only when everything that could change the answer is equal:

* the same model object, and everything its function can read besides its arguments
  unchanged (:func:`ppl.fingerprint.fingerprint`: closure cells, default arguments,
  globals named in its code and in nested lambdas, module attributes it names, object and
  class attributes, ``functools.partial`` arguments, containers, ``torch.nn.Module``
  parameters; tensors and arrays by a digest of their content), so an in-place edit of a
  table, a changed config attribute or a ``ppl.param``'s initial value invalidates the
  entry; where that cannot be fingerprinted reliably, nothing is reused;
* model arguments equal in value (a content digest of every tensor), no masked arrays;
* the same observed-site names, each value of the same shape and dtype, inside the
  site's support (anything else compiles afresh, which raises the usual ``DataError``);
* no warm start (``init=``);
* a method that declares it can run on a rebound graph (``Backend.reuses_prepared``:
  exact variable elimination); ``method="auto"`` reuses the graph for those backends
  and compiles afresh for any other backend it escalates to.

The cache holds the last :data:`MAX_ENTRIES` prepared models (least recently used
first out); :func:`clear_cache` empties it.  Results are identical to a fresh compile
(tests/test_prepared.py checks it, and the invalidation).
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch

from .analysis.moral import moral_graph
from .compiler import FactorGraph
from .compiler.families import enumerate_values
from .compiler.tables import enumeration_dims, log_factor_tables
from .dsl import BoundData, Model, as_model
from .errors import PPLError
from .fingerprint import fingerprint

__all__ = ["Prepared", "lookup", "store", "clear_cache", "MAX_ENTRIES"]

#: How many prepared models the cache keeps (least recently used evicted first).
MAX_ENTRIES = 8
#: A graph whose data (arguments and observations) take more bytes than this is not kept.
MAX_DATA_BYTES = 16 << 20
#: A clamped model's full tables may hold at most this many entries more than the
#: evidence-reduced ones (times 16), so a factor with many observed parents is never
#: enumerated over all their joint states.
MIN_TABLE_ENTRIES = 1 << 20

#: Owners of :meth:`FactorGraph.memo` entries that depend on the model's structure only (not
#: on observed values), carried over to a rebound graph: the analysis and the backends'
#: verdicts (``api``), the declared ``ppl.param`` constraints (``params``).
STRUCTURAL_MEMOS = ("api", "params")

_CACHE: OrderedDict = OrderedDict()
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every prepared model (the next call of each model compiles afresh)."""
    with _LOCK:
        _CACHE.clear()


# ------------------------------------------------------------------ fingerprints
def _digest(value):
    """A hashable digest of a model argument's value, or ``None`` if it has none."""
    if isinstance(value, torch.Tensor):
        try:
            raw = value.detach().cpu().contiguous().numpy().tobytes()
        except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16...): no digest, no reuse
            return None
        return ("tensor", str(value.dtype), tuple(value.shape), hashlib.blake2b(raw, digest_size=16).digest())
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("scalar", type(value).__name__, value)
    return None


# ---------------------------------------------------------------------- entries
class Prepared:
    """One model compiled for one set of observed sites (see the module docstring).

    Attributes
    ----------
    graph : FactorGraph
        Compiled with the first values seen (its analysis and plan are reused).
    clamped : tuple[str, ...]
        The observed sites evidence is selected on (discrete, finite, scalar).
    """

    def __init__(self, model: Model, graph: FactorGraph, arguments: dict):
        self.model = model
        self.graph = graph
        self.arguments = arguments  # name -> digest
        self.fingerprint = fingerprint(model.function)  # None: not reliable, never reused
        obs = graph.bound.observations
        self.shapes = {k: (tuple(v.shape), v.dtype) for k, v in obs.items()}
        self.clamped = tuple(k for k in obs if _clampable(graph, k))
        self.states = {k: _state_index(graph, k) for k in self.clamped}
        self._latent = None  # the graph with the clamped sites latent: built on first reuse
        self._tables: dict = {}
        self._clampable = None

    @property
    def reusable(self) -> bool:
        """Whether evidence may be rebound by selection: every observed site is clamped
        (the model's structure is checked by :meth:`clampable` on first reuse)."""
        return len(self.clamped) == len(self.graph.bound.observations)

    def matches(self, model, arguments: dict) -> bool:
        """Whether a call with ``arguments`` (digests) may reuse this entry."""
        return (self.fingerprint is not None and arguments == self.arguments
                and model.state_names == self.model.state_names and fingerprint(model.function) == self.fingerprint)

    def clampable(self) -> bool:
        """Whether clamping is exact for this model, checked once: the model compiles
        with the clamped sites latent, with the same sites, plates and cardinalities,
        within the table budget, and its full tables reduced at the evidence
        :attr:`graph` was compiled with equal :attr:`graph`'s own traced tables to
        round-off (float64).  A masked or rescaled observed site, or structure that
        depends on an observed value, fails it, and the model is then never rebound."""
        if self._clampable is None:
            self._clampable = self.reusable and self._check()
        return self._clampable

    def _check(self) -> bool:
        from .backends.common.params import param_scope

        g = self.graph
        try:
            with param_scope(g):
                dims = enumeration_dims(g, moral_graph(g))
                own = log_factor_tables(g, dims, g.plate_order, dtype=torch.float64)
            reduced = self.clamped_tables(g, {n: (f.plates, f.vars) for n, f in own.items()}, torch.float64, "cpu")
        except PPLError:
            return False
        if reduced is None:
            return False
        for name, f in own.items():
            a, b = reduced[name], f.table
            if a.shape != b.shape:
                return False
            finite = torch.isfinite(b)
            if not torch.equal(torch.isfinite(a), finite) or not torch.equal(a[~finite], b[~finite]):
                return False
            if not torch.allclose(a[finite], b[finite], rtol=1e-10, atol=1e-12):
                return False
        return True

    def same_evidence(self, observations: dict) -> bool:
        """Whether ``observations`` equal the values :attr:`graph` was compiled with (same
        names, shapes, dtypes and values): the call repeats one already compiled."""
        old = self.graph.bound.observations
        return set(observations) == set(old) and all(
            observations[k].shape == old[k].shape and observations[k].dtype == old[k].dtype
            and torch.equal(observations[k], old[k]) for k in old)

    def again(self) -> FactorGraph:
        """The very call again: :attr:`graph` itself, seen through a shallow copy that
        shares everything cached on it (its memo: analysis, plans) and is marked
        :attr:`~ppl.compiler.FactorGraph.rebound`, so that only backends that may reuse a
        prepared graph run on it."""
        new = copy.copy(self.graph)
        new.rebound = self
        return new

    def rebind(self, observations: dict) -> FactorGraph | None:
        """The graph bound to new ``observations`` (site -> tensor, converted), or
        ``None`` when they do not fit this entry (other names, shapes, dtypes, or a value
        outside the site's support: the caller compiles afresh and reports it)."""
        if not self.clampable() or set(observations) != set(self.shapes):
            return None
        for k, v in observations.items():
            if (tuple(v.shape), v.dtype) != self.shapes[k] or float(v) not in self.states[k]:
                return None
        g = self.graph
        sites = dict(g.sites)
        for k, v in observations.items():
            sites[k] = replace(g.sites[k], value=v)
        bound = BoundData(g.bound.args, g.bound.kwargs, dict(observations))
        new = FactorGraph(g.model, bound, g.variables, g.factors, g.plates, sites)
        new._nx = g._nx
        for slot, value in list(g._memo.items()):
            if slot[0] in STRUCTURAL_MEMOS:
                new._memo[slot] = replace(value, graph=new) if hasattr(value, "moral") else value
        new.rebound = self
        return new

    def clamped_tables(self, graph: FactorGraph, layouts: dict, dtype, device) -> dict | None:
        """Log tables of ``graph``'s factors by reducing the full tables at ``graph``'s
        evidence (Koller & Friedman 2009, Def. 4.5: factor reduction), or ``None`` if
        this model cannot be clamped.

        Parameters
        ----------
        graph : FactorGraph
            :attr:`graph` or a graph :meth:`rebind` returned.
        layouts : dict[str, (tuple, tuple)]
            Factor name -> ``(plates, vars)`` of the table wanted (the layout of
            :attr:`graph`'s tables).
        dtype : torch.dtype
        device : torch.device or str

        Returns
        -------
        dict[str, torch.Tensor] or None
            Factor name -> log table of shape ``(plate sizes...) + (cards of vars...)``
            (views of the full tables: do not modify them).
        """
        full = self._full_tables(dtype, device)
        if full is None:
            return None
        index = {k: self.states[k][float(v)] for k, v in graph.bound.observations.items()}
        out = {}
        for name, (plates, vars_) in layouts.items():
            f = full[name]
            table, kept = f.table, []
            for i in reversed(range(len(f.vars))):
                v = f.vars[i]
                if v in index:
                    table = table.select(len(f.plates) + i, index[v])
                else:
                    kept.append(v)
            if tuple(reversed(kept)) != tuple(vars_) or tuple(f.plates) != tuple(plates):
                return None
            out[name] = table
        return out

    def _full_tables(self, dtype, device):
        key = (dtype, str(device))
        if key not in self._tables:
            latent = self._latent_graph()
            self._tables[key] = None if latent is None else self._build_full_tables(latent, dtype, device)
        return self._tables[key]

    def _latent_graph(self):
        """The model compiled with the clamped sites latent (``None`` if it cannot be, or
        its tables would be too large)."""
        if self._latent is None:
            from .backends.common.params import param_scope
            from .compiler import compile as compile_graph

            g = self.graph
            data = {**g.bound.kwargs, **{k: v for k, v in g.bound.observations.items() if k not in self.clamped}}
            try:
                with param_scope():
                    latent = compile_graph(self.model, data)
            except PPLError:
                latent = None
            ok = latent is not None and _same_structure(g, latent, self.clamped) and _small_enough(g, latent)
            self._latent = latent if ok else False
        return self._latent or None

    def _build_full_tables(self, latent, dtype, device):
        from .backends.common.params import param_scope

        try:
            with param_scope(latent):
                dims = enumeration_dims(latent, moral_graph(latent))
                return log_factor_tables(latent, dims, latent.plate_order, dtype=dtype, device=device)
        except PPLError:
            return None


def _clampable(graph, name: str) -> bool:
    v = graph.variables[name]
    site = graph.sites[name]
    # masked or rescaled sites pass this structural test; Prepared.clampable's numeric check refuses them
    return (v.role == "observed" and v.discrete and v.cardinality is not None and not v.plates
            and tuple(v.batch_shape) == () and tuple(v.event_shape) == () and site.fn is not None)


def _state_index(graph, name: str) -> dict:
    """Value (as float) -> position in the site's enumerated support."""
    values = enumerate_values(graph.sites[name].fn).reshape(-1).tolist()
    return {float(x): i for i, x in enumerate(values)}


def _same_structure(observed: FactorGraph, latent: FactorGraph, clamped) -> bool:
    if list(observed.factors) != list(latent.factors) or set(observed.plates) != set(latent.plates):
        return False
    for k in clamped:
        v = latent.variables.get(k)
        if v is None or v.role != "latent" or v.cardinality != observed.variables[k].cardinality:
            return False
    return not latent.continuous_latent()


def _small_enough(observed: FactorGraph, latent: FactorGraph) -> bool:
    def entries(graph):
        total = 0
        for f in graph.factors.values():
            n = 1
            for s in f.scope:
                v = graph.variables[s]
                if v.role == "latent" and v.cardinality is not None:
                    n *= v.cardinality
            for p in f.plates:
                n *= graph.plates[p].size
            total += n
        return total

    return entries(latent) <= max(MIN_TABLE_ENTRIES, 16 * entries(observed))


# ------------------------------------------------------------------------ cache
def _split(model: Model, data):
    """``(argument digests, converted observations)`` of a call, or ``None`` when the
    call cannot use the cache (a masked array, an argument without a digest, data that
    is not a plain mapping of values)."""
    from .compiler import binding

    if data is None:
        data = {}
    if not isinstance(data, Mapping) or getattr(model, "missing_values", None):
        return None
    names = set(model.argument_names)
    arguments, observations = {}, {}
    try:
        for key, value in data.items():
            if not isinstance(key, str) or isinstance(value, np.ma.MaskedArray):
                return None
            if key in names:
                d = _digest(binding.convert_argument(key, value))
                if d is None:
                    return None
                arguments[key] = d
            else:
                observations[key] = binding.convert_observation(key, value, model.state_names.get(key))
    except PPLError:
        return None  # compiling afresh raises it with the usual context
    return arguments, observations


def lookup(model, data) -> FactorGraph | None:
    """A rebound graph of ``model`` for ``data`` from the cache, or ``None``."""
    model = as_model(model) if not isinstance(model, FactorGraph) else None
    if model is None:
        return None
    split = _split(model, data)
    if split is None:
        return None
    arguments, observations = split
    key = (id(model.function), frozenset(observations))
    with _LOCK:
        entry = _CACHE.get(key)
        if entry is not None:
            _CACHE.move_to_end(key)
    if entry is None or not entry.matches(model, arguments):
        return None
    if entry.same_evidence(observations):
        return entry.again()
    return entry.rebind(observations)


def _data_bytes(graph: FactorGraph) -> int:
    values = list(graph.bound.kwargs.values()) + list(graph.bound.observations.values())
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


def store(model, data, graph: FactorGraph) -> None:
    """Keep ``graph`` (just compiled from ``model`` and ``data``) for later calls, unless its
    data exceed :data:`MAX_DATA_BYTES` (the cache must not hold a large data set, and what
    the graph derived from it, after the call returns)."""
    if _data_bytes(graph) > MAX_DATA_BYTES:
        return
    model = as_model(model)
    split = _split(model, data)
    if split is None:
        return
    arguments, observations = split
    key = (id(model.function), frozenset(observations))
    with _LOCK:
        old = _CACHE.get(key)
    if old is not None and old.matches(model, arguments):
        return  # the same structure, kept already (e.g. a model found not clampable)
    entry = Prepared(model, graph, arguments)
    if not entry.reusable or entry.fingerprint is None:
        return
    with _LOCK:
        _CACHE[key] = entry
        _CACHE.move_to_end(key)
        while len(_CACHE) > MAX_ENTRIES:
            _CACHE.popitem(last=False)
