"""Every factor's log table as a function of θ: the probe run, and the evaluation of
the tables at a new θ (stacked groups, direct functions, or a model run)."""

from __future__ import annotations

import contextlib

import torch
from pyro import poutine
from torch.distributions import biject_to
from torch.distributions.constraints import real

from ...ops.shapes import broadcast_shapes
from ..chunked import chunked_log_prob
from ..derivation import Derivation, record_derived
from ..mutation import restoring_classes
from ..handlers import SubstituteLatents, SubstituteParams
from ..internals import no_torch_function
from ..probe import Probe, escaped_params, plain, track_scales
from ..tables import enumerated_trace, factor_layout, latent_mask, log_factor_tables, masked_latent_log_prob
from ..zeros import exact_log_prob
from .groups import FactorGroup
from .space import ParamSpace
from .templates import build_template

__all__ = ["ParametricTables", "parametric_tables", "TableMap"]


class TableMap(dict):
    """Factor name -> log table, plus ``stacks`` (each group's stacked tensor ``(G,) +
    sizes``) and ``rows``: name -> ``(g, i)`` for a table that is row ``i`` of
    ``stacks[g]``, so a consumer that needs many rows of one group (a chain's stack,
    :mod:`ppl.backends.common.chainstack`) takes them in one op."""

    def __init__(self, *args, stacks: list | None = None, rows: dict | None = None):
        super().__init__(*args)
        self.stacks = stacks if stacks is not None else []
        self.rows = rows if rows is not None else {}


class ParametricTables:
    """Every factor's log table as a function of θ (see the module docstring).

    Parameters
    ----------
    graph : FactorGraph
    dims : dict[str, int]
        Enumeration dims (:func:`ppl.compiler.tables.enumeration_dims`).
    plate_order : tuple[str, ...]
    values : dict[str, torch.Tensor]
        θ at which the probe run is made (constrained values).
    dtype, device
        Of the tables.
    latents : collection of str
        Names in ``values`` that are continuous *latent sample sites*, not params: their
        values are substituted into the model (:class:`~ppl.compiler.handlers.SubstituteLatents`), so tables are
        functions of latent values (CAVI's sigma points).  A latent's own factor (its value
        varies with θ) is always slow.
    derive : bool
        Record the functions of θ the model computes before selecting from them
        (:mod:`ppl.compiler.derivation`), so factors such as ``Normal(locs[z], 1)`` with
        ``locs = stack([mu0, mu0 + gap])`` are fast; the group tables then take the
        extended vector (:meth:`flat`), so callers that read gathers as θ elements (EM's
        closed forms) leave this off.

    Attributes
    ----------
    space : ParamSpace
    templates : dict[str, FactorTemplate]
    groups : list[FactorGroup]
        The fast factors.
    slow : list[str]
        Factors re-evaluated by a model run.
    constant : dict[str, LogFactor]
        Tables that depend on no param (computed once).
    direct : dict[str, callable]
        Slow factors whose table a caller knows as a function of θ (name -> ``f(values)``
        returning the table, differentiable), evaluated without a model run by
        :meth:`slow_tables`; empty unless a caller (EM's ``map_latents`` prior factors)
        installs some.
    """

    def __init__(self, graph, dims, plate_order, values, dtype=torch.float64, device=None, latents=(),
                 derive=False):
        self.graph = graph
        self.latents = frozenset(latents)
        self.dims = dims
        self.plate_order = plate_order
        self.dtype = dtype
        self.device = device
        values = {k: torch.as_tensor(v).to(dtype=dtype, device=device) for k, v in values.items()}
        escaped_params(reset=True)
        probe_values, offset = {}, 0
        for k, v in values.items():
            pos = torch.arange(offset, offset + v.numel(), device=device).reshape(v.shape)
            probe_values[k] = Probe.wrap(v.clone(), pos, {k})
            offset += v.numel()
        sub = SubstituteParams({k: v for k, v in probe_values.items() if k not in self.latents})
        subl = SubstituteLatents({k: v for k, v in probe_values.items() if k in self.latents})
        self.derivation = Derivation(offset) if derive else None
        with track_scales() if self.latents else contextlib.nullcontext(), restoring_classes(), \
                record_derived(self.derivation) if derive else contextlib.nullcontext():
            trace = enumerated_trace(graph, dims, dtype, sub, subl, log_prob=False)
        self.space = ParamSpace.build(values, sub.constraints)
        escaped = escaped_params(reset=True)
        param_names = set(values)
        self.templates = {}
        self._sites = {}
        for name in graph.factors:
            site = trace.nodes[name]
            fn = site["fn"]
            value = site["value"]
            lp_shape = broadcast_shapes(fn.batch_shape, value.shape[: value.dim() - len(fn.event_shape)])
            layout = factor_layout(graph, name, lp_shape, dims, plate_order)
            deps = frozenset(graph.factors[name].scope) & param_names
            self._sites[name] = (site, layout)
            self.templates[name] = build_template(
                name, site, layout, deps, escaped, dtype=self.dtype, latent=name in self.latents,
                cardinality=graph.variables[name].cardinality if name in dims else None)
        if self.derivation is not None:
            self._prune_derivation()
        # constant tables, groups of fast ones, the slow rest
        self.constant = {}
        buckets: dict = {}
        self.slow = []
        for name, t in self.templates.items():
            if not t.deps and t.slow is None:
                self.constant[name] = self._traced(name)
            elif t.slow is None:
                buckets.setdefault(t.key(), []).append(t)
            else:
                self.slow.append(name)
        self.groups = [self._stack(ts) for ts in buckets.values()]
        self._verify(values)
        supports = {k: graph.sites[k].fn.support for k in self.latents if k in graph.sites}
        self._verify_elsewhere(values, {**sub.constraints, **supports})
        self.layouts = {n: (t.plates, t.vars) for n, t in self.templates.items()}
        self.direct = {}
        for name in self.latents:  # a slow latent factor whose distribution depends on no θ: fn.log_prob(value)
            if name in self.slow and not (set(graph.factors[name].scope) & set(values)) - {name}:
                direct = self._own_factor(name)
                if direct is not None:
                    self.direct[name] = direct
        self._sites = None  # the probe trace is not kept

    def _prune_derivation(self) -> None:
        """Keep the recorded functions of θ that fast factors gather from, renumbered
        (:meth:`Derivation.prune <ppl.compiler.derivation.Derivation.prune>`)."""
        fast = [t for t in self.templates.values() if t.slow is None]
        used = [x for t in fast for k, x in t.slots.values() if k == "gather"]
        mapping = self.derivation.prune(used)
        for t in fast:
            t.slots = {s: (k, mapping.to(x.device)[x] if k == "gather" else x) for s, (k, x) in t.slots.items()}
        if not self.derivation.ops:
            self.derivation = None

    def _traced(self, name) -> torch.Tensor:
        """The table of factor ``name`` from the probe run's own distribution (plain values)."""
        site, layout = self._sites[name]
        with no_torch_function():
            lp = exact_log_prob(site["fn"], site["value"], chunked_log_prob(site["fn"], site["value"]))
            lp = plain(lp)
            scale, mask = site.get("scale", 1.0), site.get("mask")
            if isinstance(mask, torch.Tensor):
                lp = torch.where(plain(mask), lp, torch.zeros((), dtype=lp.dtype))
            elif mask is False:
                lp = torch.zeros_like(lp)
            lp = lp * plain(scale) if not (isinstance(scale, float) and scale == 1.0) else lp
            table = layout.canonical(lp.detach(), 0, expand=True).to(self.dtype)
            own = latent_mask(site) if name in self.dims else None
            if own is not None:
                keep = layout.canonical(plain(own), 0, expand=True)
                fill = masked_latent_log_prob(self.graph.variables[name].cardinality, table)
                table = torch.where(keep, table, fill)
        return table

    def _own_factor(self, name):
        """``values -> table`` of latent ``name``'s own factor from the probe run's
        distribution (its arguments are constants), or None if it is masked or scaled."""
        site, layout = self._sites[name]
        scale = site.get("scale", 1.0)
        if site.get("mask") is not None or not (isinstance(scale, (int, float)) and scale == 1.0):
            return None
        fn = site["fn"]
        dtype = self.dtype

        def table(values):
            lp = exact_log_prob(fn, values[name], fn.log_prob(values[name]))
            return layout.canonical(lp, 0, expand=True).to(dtype)
        return table

    # ---------------------------------------------------------------- build
    def _stack(self, ts) -> FactorGroup:
        first = ts[0]

        def stack(xs):
            s = torch.stack(xs) if len(xs) > 1 else xs[0].unsqueeze(0)
            if s.shape[0] > 1 and torch.equal(s, s[:1].expand_as(s)):
                s = s[:1]
            return s

        slots = {s: (k, stack([t.slots[s][1] for t in ts])) for s, (k, _) in first.slots.items()}
        mask = None if first.mask is None else stack([t.mask for t in ts])
        deps = frozenset().union(*(t.deps for t in ts))
        scales = {s: stack([t.scales[s] for t in ts]) for s in first.scales}
        return FactorGroup([t.name for t in ts], first, slots, stack([t.value for t in ts]), mask, deps,
                           scales=scales)

    def _verify(self, values) -> None:
        """Rebuilt tables must equal the traced ones at the probe θ (checked on the first,
        middle and last member of each group); a group that does not (an unusual wrapper,
        a constructor that transforms its arguments) is demoted to slow."""
        flat = self.flat(values)
        keep = []
        for g in self.groups:
            n = len(g.members)
            rows = sorted({0, n // 2, n - 1})
            try:
                with torch.no_grad():
                    tables = g.log_tables(flat)
                    ok = all(_same(tables[i], self._traced(g.members[i])) for i in rows)
            except Exception:  # a constructor that refuses the stacked layout
                ok = False
            if ok:
                keep.append(g)
            else:
                self._demote(g, "rebuilding its distribution did not reproduce the traced table")
        self.groups = keep

    def _demote(self, group, why: str) -> None:
        """Make every member of ``group`` a slow factor (re-evaluated by model runs), saying ``why``."""
        for m in group.members:
            self.templates[m].slow = why
            self.slow.append(m)

    def _verify_elsewhere(self, values, constraints) -> None:
        """The fast tables must also equal a model run's at a second θ (each value moved
        inside its support by a fixed step that differs element by element): equality at
        the probe θ alone cannot tell a function of θ from a constant that happens to
        match there (a normalisation the probe point already satisfies, a value the probe
        could not follow).  Groups that differ are demoted to slow.  Where the model
        cannot be run at the moved θ (a support that depends on another value), a
        smaller step is tried; where it cannot be run there either, the groups that
        gather recorded functions of θ (:mod:`ppl.compiler.derivation`: checked at the
        probe point only) are demoted, the plain gathers kept."""
        if not self.groups:
            return
        names = [m for g in self.groups for m in g.members]
        for step in (0.3, 0.03):
            moved = _moved(values, constraints, step)
            try:
                with torch.no_grad():
                    fast = self.group_tables(self.flat(moved))
                    ref = self._run(moved, names, grad=False)
            except Exception:  # noqa: BLE001 - the model refuses this θ: try closer, else skip
                continue
            keep = []
            for g, stacked in zip(self.groups, fast):
                if all(_same(stacked[i], ref[m]) for i, m in enumerate(g.members)):
                    keep.append(g)
                else:
                    self._demote(g, "its rebuilt table did not follow a change of θ")
            self.groups = keep
            return
        if self.derivation is not None:
            keep = []
            for g in self.groups:
                if any(k == "gather" and bool((x >= self.space.size).any()) for k, x in g.slots.values()):
                    self._demote(g, "it gathers a recorded function of θ that could not be checked at a second θ")
                else:
                    keep.append(g)
            self.groups = keep

    # ---------------------------------------------------------------- use
    def tables(self, values: dict, grad: bool = False) -> dict:
        """Every factor's log table at θ = ``values``.

        Returns
        -------
        TableMap
            Factor name -> table (its layout's full shape).  Group members are views of
            one stacked tensor per group (see :meth:`group_tables`), named in ``rows``.
        """
        stacks = self.group_tables(self.flat(values))
        if getattr(self, "_rows", None) is None or self._rows[0] is not self.groups:   # (groups final after __init__)
            self._rows = (self.groups, {n: (gi, i) for gi, g in enumerate(self.groups)
                                        for i, n in enumerate(g.members)})
        out = TableMap(self.constant, stacks=stacks, rows=self._rows[1])
        for g, stacked in zip(self.groups, stacks):
            out.update(zip(g.members, stacked.unbind(0)))   # one op (and one backward node) per group
        out.update(self.slow_tables(values, grad=grad))
        return out

    def flat(self, values: dict) -> torch.Tensor:
        """The vector the groups gather from: θ's flat vector (:class:`ParamSpace`), and
        with ``derive`` the recorded functions of it after (:meth:`Derivation.extend
        <ppl.compiler.derivation.Derivation.extend>`)."""
        flat = self.space.flat(values)
        return flat if self.derivation is None else self.derivation.extend(flat)

    def group_tables(self, flat: torch.Tensor) -> list:
        """Per group, the stacked tables ``(G,) + sizes``."""
        return [g.log_tables(flat) for g in self.groups]

    def slow_tables(self, values: dict, grad: bool = False, names=None) -> dict:
        """Tables of the slow factors (or of ``names`` among them), by one model run with θ
        substituted (the :attr:`direct` ones by their functions, without a run)."""
        slow = self.slow if names is None else [n for n in self.slow if n in names]
        if not slow:
            return {}
        run = [n for n in slow if n not in self.direct]
        out = self._run(values, run, grad) if run else {}
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            for n in slow:
                if n in self.direct:
                    out[n] = self.direct[n](values)
        return out


    def _run(self, values: dict, names: list, grad: bool) -> dict:
        """Tables of factors ``names`` by one model run with θ = ``values`` substituted."""
        sub = poutine.substitute(data={k: v for k, v in values.items() if k not in self.latents})
        subl = SubstituteLatents({k: v for k, v in values.items() if k in self.latents})
        tables = log_factor_tables(self.graph, self.dims, self.plate_order, dtype=self.dtype, device=self.device,
                                   messengers=(sub, subl), names=names, grad=grad, validate=False)
        return {n: f.table for n, f in tables.items()}


def _moved(values: dict, constraints: dict, step: float) -> dict:
    """``values`` each moved by about ``step`` in its unconstrained space (element ``i``
    of the whole θ by ``step * cos(1.7 i + 0.4)``), mapped back into its support
    (``constraints``: name -> Constraint, real when absent); a value that cannot be moved
    (integer, on its support's edge) is kept."""
    out, offset = {}, 0
    for k, v in values.items():
        n = v.numel()
        if v.is_floating_point() and n:
            try:
                t = biject_to(constraints.get(k) or real)
                u = t.inv(v)
                i = torch.arange(offset, offset + u.numel(), dtype=u.dtype, device=u.device).reshape(u.shape)
                w = t(u + step * torch.cos(1.7 * i + 0.4))
                v = w if w.shape == v.shape and bool(torch.isfinite(w).all()) else v
            except (NotImplementedError, ValueError, RuntimeError, TypeError):
                pass
        out[k] = v
        offset += n
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` (broadcast to ``b``) equals ``b``: the same non-finite entries, the finite
    ones within 1e-9 (relative and absolute)."""
    a, b = a.expand_as(b), b
    finite = torch.isfinite(b)
    if not torch.equal(torch.isfinite(a), finite) or not torch.equal(a[~finite], b[~finite]):
        return False
    return bool(torch.allclose(a[finite], b[finite], rtol=1e-9, atol=1e-9))


def parametric_tables(graph, dims, plate_order, values, dtype=torch.float64, device=None) -> ParametricTables:
    """Build (or fetch from the graph's memo) the :class:`ParametricTables` of ``graph``.

    The structure found does not depend on θ, so one probe run per graph, precision,
    device and enumeration dims is kept (:meth:`FactorGraph.memo
    <ppl.compiler.factor_graph.FactorGraph.memo>`, owner ``"parametric_tables"``);
    ``values`` is only the point of the probe run and of its check.

    Parameters
    ----------
    graph : FactorGraph
    dims : dict[str, int]
        Enumeration dims (:func:`ppl.compiler.tables.enumeration_dims`).
    plate_order : tuple[str, ...]
    values : dict[str, torch.Tensor]
        θ at which a new probe run is made (constrained values).
    dtype : torch.dtype
    device : torch.device or str, optional

    Returns
    -------
    ParametricTables

    Raises
    ------
    ModelError, UnsupportedModelError
        As the enumerated run (:func:`ppl.compiler.tables.enumerated_trace`).
    """
    key = (dtype, str(device or "cpu"), tuple(sorted(dims.items())))
    return graph.memo("parametric_tables", key,
                      lambda: ParametricTables(graph, dims, plate_order, values, dtype=dtype, device=device))
