"""The factor graph of a model bound to data: the compiler's output.

Built once per :func:`compile` from one provenance-tracked trace (see
:mod:`ppl.compiler.trace`).  Plates are kept as templates: a site inside a plate of
size N is *one* variable node whose ``plates`` name that plate, not N nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import networkx as nx

from ..dsl import BoundData, Model, as_model
from ..rng import seeded_globals
from . import families
from .trace import check_structure as _check_structure
from .trace import trace_with_provenance

__all__ = ["Variable", "Factor", "FactorGraph", "compile"]

FACTOR_PREFIX = "f:"

_T = TypeVar("_T")


@dataclass(frozen=True)
class Variable:
    """A variable node: one sample site or param.

    Attributes
    ----------
    name : str
        The site name.
    role : str
        ``"latent"``, ``"observed"`` or ``"param"``.
    family : str
        Distribution family of the site (``"param"`` for params).
    support : str
        The support constraint, readable.
    cardinality : int or None
        Number of states for an enumerable discrete site, else ``None``.
    discrete : bool
    event_shape : tuple[int, ...]
    batch_shape : tuple[int, ...]
        The site distribution's batch shape (plates included).
    plates : tuple[str, ...]
        Names of the enclosing vectorised plates, outermost first.
    """

    name: str
    role: str
    family: str
    support: str
    cardinality: int | None
    discrete: bool
    event_shape: tuple
    batch_shape: tuple
    plates: tuple


@dataclass(frozen=True)
class Factor:
    """A factor node: the log density of one sample site (or a ``ppl.factor`` term).

    Attributes
    ----------
    name : str
        The site name (the networkx node is ``"f:" + name``).
    family : str
        The site's distribution family (``"factor"`` for ``ppl.factor``).
    scope : tuple[str, ...]
        Variables the log density depends on, in trace order.
    plates : tuple[str, ...]
        Enclosing plates, outermost first.
    """

    name: str
    family: str
    scope: tuple
    plates: tuple


@dataclass
class FactorGraph:
    """Variables, factors and plates of a model bound to data.

    Build it with :func:`ppl.compile`.  ``ppl.infer`` and ``ppl.analyze`` accept a
    FactorGraph in place of ``(model, data)``, so a model compiled once can be queried
    many times.

    Attributes
    ----------
    model : Model
    bound : BoundData
        Arguments and observations the graph was compiled with.
    variables : dict[str, Variable]
        In trace order.
    factors : dict[str, Factor]
        In trace order.
    plates : dict[str, PlateInfo]
    sites : dict[str, SiteRecord]
        The traced sites (distribution objects and values), for backends.

    Derived artefacts (analyses, exact plans, structural tests) are kept per graph with
    :meth:`memo`.
    """

    model: Model
    bound: BoundData
    variables: dict
    factors: dict
    plates: dict
    sites: dict
    _nx: Any = field(default=None, repr=False)
    #: The :class:`ppl.prepared.Prepared` entry this graph was rebound from (new evidence,
    #: same structure), or ``None`` for a graph compiled from the model.
    rebound: Any = field(default=None, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)  # (owner, key) -> value, see memo()

    # ------------------------------------------------------------------ memo
    def memo(self, owner: str, key: Hashable, build: Callable[[], _T]) -> _T:
        """The value stored under ``(owner, key)``, built by ``build()`` the first time.

        A derived artefact that depends only on the graph (and on ``key``) is computed
        once per graph: an elimination plan, the probe run of
        :func:`ppl.compiler.parametric.parametric_tables`, an analysis.

        Parameters
        ----------
        owner : str
            Who stores the value: the module or backend that builds it (``"exact"``,
            ``"parametric_tables"``...).  Owners have separate key spaces, so two owners
            never see each other's entries, whatever their keys.
        key : hashable
            What the value depends on besides the graph, within the owner (a dtype, a
            device, enumeration dims...).
        build : callable() -> T
            Called once, with no arguments, when ``(owner, key)`` has no value yet; not
            called when it has one.

        Returns
        -------
        T
            The stored value (the same object on every call).  Values live as long as
            the graph: nothing evicts them.

        Raises
        ------
        TypeError
            If ``key`` is not hashable.
        Exception
            Whatever ``build`` raises; nothing is stored then, and the next call builds
            again.
        """
        slot = (owner, key)
        try:
            return self._memo[slot]
        except KeyError:
            value = build()
            self._memo[slot] = value
            return value

    # --------------------------------------------------------------- queries
    @property
    def plate_order(self) -> tuple:
        """Plate names ordered by tensor dim (outermost position first), then name: the
        layout every backend uses for plate dims."""
        return tuple(sorted(self.plates, key=lambda p: (self.plates[p].dim, p)))

    def latent(self) -> list[str]:
        """Names of latent variables, in trace order."""
        return [n for n, v in self.variables.items() if v.role == "latent"]

    def observed(self) -> list[str]:
        """Names of observed variables, in trace order."""
        return [n for n, v in self.variables.items() if v.role == "observed"]

    def params(self) -> list[str]:
        """Names of ``ppl.param`` sites, in trace order."""
        return [n for n, v in self.variables.items() if v.role == "param"]

    def discrete_latent(self) -> list[str]:
        """Latent variables with a finite, enumerable support."""
        return [n for n, v in self.variables.items() if v.role == "latent" and v.cardinality is not None]

    def continuous_latent(self) -> list[str]:
        """Latent variables that cannot be enumerated (continuous or infinite support)."""
        return [n for n, v in self.variables.items() if v.role == "latent" and v.cardinality is None]

    def to_networkx(self) -> nx.Graph:
        """The factor graph as a plain bipartite :class:`networkx.Graph`.

        Variable nodes are keyed by site name with ``bipartite=0, kind="variable"`` and
        the :class:`Variable` fields as attributes; factor nodes are keyed
        ``"f:" + site`` with ``bipartite=1, kind="factor"`` and the :class:`Factor`
        fields.  An edge joins a factor to each variable of its scope.  The graph is
        built once per compile and a copy is returned.
        """
        if self._nx is None:
            g = nx.Graph(name=self.model.name)
            for v in self.variables.values():
                g.add_node(v.name, bipartite=0, kind="variable", **_fields(v))
            for f in self.factors.values():
                node = FACTOR_PREFIX + f.name
                g.add_node(node, bipartite=1, kind="factor", **_fields(f))
                g.add_edges_from((node, s) for s in f.scope)
            g.graph["plates"] = {p.name: (p.size, p.dim) for p in self.plates.values()}
            self._nx = g
        return self._nx.copy()

    def __str__(self) -> str:
        lines = [f"FactorGraph of model '{self.model.name}': "
                 f"{len(self.latent())} latent, {len(self.observed())} observed, {len(self.params())} param "
                 f"variables; {len(self.factors)} factors; {len(self.plates)} plates"]
        if self.plates:
            lines.append("plates:")
            for p in self.plates.values():
                lines.append(f"  {p.name:<16} size {p.size:<8} dim {p.dim}")
        lines.append("variables:")
        lines.append(f"  {'name':<20} {'role':<9} {'family':<14} {'states':>6}  {'event':<8} plates")
        for v in list(self.variables.values())[:60]:
            states = "-" if v.cardinality is None else str(v.cardinality)
            lines.append(
                f"  {v.name:<20} {v.role:<9} {v.family:<14} {states:>6}  {str(tuple(v.event_shape)):<8} "
                f"{','.join(v.plates) or '-'}"
            )
        if len(self.variables) > 60:
            lines.append(f"  ... {len(self.variables) - 60} more")
        lines.append("factors:")
        for f in list(self.factors.values())[:60]:
            lines.append(f"  {f.name:<20} {f.family:<14} scope ({', '.join(f.scope)})")
        if len(self.factors) > 60:
            lines.append(f"  ... {len(self.factors) - 60} more")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<FactorGraph '{self.model.name}': {len(self.variables)} variables, "
                f"{len(self.factors)} factors, plates {list(self.plates)}>")


def _fields(obj) -> dict:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__ if k != "name"}


#: The seed of the global random streams while a model is traced for compiling: the latents'
#: prior draws there (the compiled values, a starting point for sites whose prior has no
#: finite mean) are the same whatever the caller drew before, so ``ppl.analyze`` followed
#: by ``ppl.infer`` (which reuses the compiled graph) answers as ``ppl.infer`` alone.
COMPILE_SEED = 0


def compile(model, data=None, *, check_structure: bool = True) -> FactorGraph:
    """Trace ``model`` once with ``data`` and build its :class:`FactorGraph`.

    Dependencies are found by provenance tracking (no user annotations): a factor's
    scope is the set of sites its log density was computed from.  The run draws from the
    global random streams seeded with :data:`COMPILE_SEED` (the caller's states are
    restored).  A second, plain run from another random-number stream checks that the
    model's sites do not change from run to run (:func:`ppl.compiler.trace.check_structure`).

    Parameters
    ----------
    model : Model or callable
        A ``@ppl.model`` (a plain Pyro model function is wrapped).
    data : mapping, optional
        Bound as :mod:`ppl.dsl` says (docs/dsl.md): argument names -> arguments, site
        names -> observations.
    check_structure : bool, default True
        Run the model a second time to check that its sites stay the same.  ``False``
        for a graph derived from one already checked (the same model with more of its
        sites bound as data).

    Returns
    -------
    FactorGraph

    Raises
    ------
    DataError
        Unknown data key, a key naming a site the model already observes with ``obs=``,
        empty or masked data, bad shape, NaN/inf, observed value outside support.
    ModelError
        Duplicate site names, inconsistent plates, a model that modifies its arguments in
        place, a model whose sites change between two runs, or the model raising while
        traced.
    """
    model = as_model(model)
    bound = model.bind(data)
    with seeded_globals(COMPILE_SEED):   # the compiled values do not depend on the caller's random state
        records = trace_with_provenance(model, bound)
        if check_structure:
            _check_structure(model, bound, records)
    variables, factors, plates, sites = {}, {}, {}, {}
    for r in records:
        sites[r.name] = r
        for p in r.plates:
            plates.setdefault(p.name, p)
        plate_names = tuple(p.name for p in r.plates)
        if r.kind == "param":
            variables[r.name] = Variable(
                r.name, "param", "param", "real", None, False, (), tuple(r.value.shape), ()
            )
        elif r.kind == "sample":
            fn = r.fn
            variables[r.name] = Variable(
                r.name,
                "observed" if r.is_observed else "latent",
                families.family_name(fn),
                families.support_repr(fn),
                families.cardinality(fn),
                families.is_discrete(fn),
                tuple(fn.event_shape),
                tuple(fn.batch_shape),
                plate_names,
            )
    known = set(variables)
    for r in records:
        if r.kind in ("sample", "factor"):
            factors[r.name] = Factor(
                r.name, families.family_name(r.fn), tuple(s for s in r.scope if s in known), tuple(p.name for p in r.plates)
            )
    return FactorGraph(model, bound, variables, factors, plates, sites)
