"""Factor tables as functions of the ``ppl.param`` values θ, re-evaluated without
re-running the model.

One enumerated run of the model with every ``ppl.param`` replaced by a
:class:`~ppl.compiler.probe.Probe` shows, for every factor, whether each parameter of
its distribution is a *gather* of θ (``loc[z]``: entry ``e`` is θ element ``i(e)``), a
constant, or some other function of θ.  A factor whose distribution parameters are all
gathers or constants is *fast*: its log table at any θ is
``Family(**{slot: θ[i]}).log_prob(value)``, and factors with the same family and shapes
(the ``T`` emission factors of a ``markov`` loop) are stacked and evaluated as one batch.
Every other factor is *slow*: its table is recomputed by a model run with the new θ
substituted (exact for any model code, but a full trace per evaluation).

Layouts follow :func:`ppl.compiler.tables.factor_layout`: plates (global order), then the
factor's discrete latents (scope order), then the slot's own trailing dims (Independent
dims, then the parameter's event dims); size 1 where a tensor is constant.

This is what the EM backend's E-step (tables at the new θ) and M-step (closed forms
over gathers; expected complete-data log-likelihood for L-BFGS) are built on.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from ..ops import expfam
from . import families
from .probe import Probe, escaped_params, positions_of, scale_of, track_scales
from .tables import enumerated_trace, factor_layout, latent_mask, log_factor_tables, masked_latent_log_prob

__all__ = ["SubstituteLatents", "ParamSpace", "FactorTemplate", "FactorGroup", "ParametricTables", "parametric_tables"]

#: Distribution families rebuilt from their constructor arguments (slots).
FAMILY_SLOTS = {
    "Normal": ("loc", "scale"),
    "Laplace": ("loc", "scale"),
    "Cauchy": ("loc", "scale"),
    "StudentT": ("df", "loc", "scale"),
    "Gamma": ("concentration", "rate"),
    "Exponential": ("rate",),
    "Poisson": ("rate",),
    "Categorical": None,  # probs or logits
    "Bernoulli": None,  # probs or logits
    "MultivariateNormal": None,  # loc and one of covariance_matrix / scale_tril / precision_matrix
}
_MVN_SCALES = ("covariance_matrix", "scale_tril", "precision_matrix")


def slot_event_rank(family: str, slot: str) -> int:
    """Trailing dims of a distribution parameter beyond the batch shape."""
    if family == "Categorical":
        return 1
    if family == "MultivariateNormal":
        return 1 if slot == "loc" else 2
    return 0


@dataclass
class ParamSpace:
    """The ``ppl.param`` values θ as one flat vector.

    Attributes
    ----------
    names : tuple[str, ...]
    shapes : dict[str, torch.Size]
    constraints : dict[str, Constraint]
    offsets : dict[str, int]
        Position of each param's first element in the flat vector.
    size : int
    """

    names: tuple
    shapes: dict
    constraints: dict
    offsets: dict
    size: int

    @staticmethod
    def build(values: dict, constraints: dict) -> "ParamSpace":
        """The space of ``values`` (name -> constrained tensor, in this order) with their
        ``constraints`` (name -> Constraint or None)."""
        offsets, n = {}, 0
        for k, v in values.items():
            offsets[k] = n
            n += v.numel()
        return ParamSpace(tuple(values), {k: v.shape for k, v in values.items()}, dict(constraints), offsets, n)

    def flat(self, values: dict) -> torch.Tensor:
        """θ as one vector of length :attr:`size`."""
        return torch.cat([values[k].reshape(-1) for k in self.names]) if self.names else torch.zeros(0)

    def unflat(self, flat: torch.Tensor) -> dict:
        """Name -> view of ``flat`` with the param's shape."""
        return {k: flat[o:o + self.shapes[k].numel()].reshape(self.shapes[k]) for k, o in self.offsets.items()}

    def owners(self, positions: torch.Tensor) -> set:
        """Names of the params holding the flat elements ``positions``."""
        if not self.names or positions.numel() == 0:
            return set()
        starts = torch.tensor([self.offsets[k] for k in self.names], device=positions.device)
        which = torch.searchsorted(starts, positions.reshape(-1).unique(), right=True) - 1
        return {self.names[i] for i in which.unique().tolist()}


@dataclass
class FactorTemplate:
    """One factor, from the probe run.

    Attributes
    ----------
    name : str
    family : str
    cls : type
        The distribution class to rebuild.
    slots : dict[str, tuple[str, torch.Tensor]]
        Slot -> ``("gather", positions)`` or ``("const", values)``, in the factor layout.
    value : torch.Tensor
        The site's value (observed data, or the enumerated support), factor layout.
    n_re : int
        Dims reinterpreted as event dims (``Independent``).
    mask : torch.BoolTensor or None
        Factor layout, batch dims only.
    scale : float
    plates, vars : tuple[str, ...]
    sizes : tuple[int, ...]
        Table shape.
    deps : frozenset[str]
        Params the table depends on.
    slow : str or None
        Why the table cannot be rebuilt from slots (``None`` if it can).
    """

    name: str
    family: str
    cls: type = None
    slots: dict = field(default_factory=dict)
    value: torch.Tensor = None
    n_re: int = 0
    mask: torch.Tensor = None
    scale: float = 1.0
    plates: tuple = ()
    vars: tuple = ()
    sizes: tuple = ()
    deps: frozenset = frozenset()
    slow: str = None
    masked_fill: float = 0.0  # log table entry of masked-out copies (-log K for a latent's own factor)
    scales: dict = field(default_factory=dict)  # slot -> constant factor of a scaled gather (CAVI probes)
    value_gather: bool = False  # the value is a gather of θ (a substituted latent's own factor)

    def key(self):
        """Templates with equal keys are evaluated as one stacked batch."""
        slots = tuple((s, k, tuple(t.shape), t.dtype) for s, (k, t) in sorted(self.slots.items()))
        slots += tuple((s, tuple(t.shape)) for s, t in sorted(self.scales.items()))
        mask = None if self.mask is None else tuple(self.mask.shape)
        return (self.cls, slots, tuple(self.value.shape), self.value.dtype, self.value_gather, self.n_re, mask,
                self.scale,
                self.plates, len(self.vars), self.sizes, self.masked_fill)


@dataclass
class FactorGroup:
    """Fast factors with the same key, stacked along a leading dim of size ``G``
    (size 1 where all members agree).

    Attributes
    ----------
    members : list[str]
        Factor names, in stacking order.
    template : FactorTemplate
        The first member (family, n_re, layout); its slots and value replaced by the stacks.
    slots : dict[str, tuple[str, torch.Tensor]]
    value : torch.Tensor
    mask : torch.Tensor or None
    deps : frozenset[str]
    """

    members: list
    template: FactorTemplate
    slots: dict
    value: torch.Tensor
    mask: torch.Tensor
    deps: frozenset
    stats: dict = field(default_factory=dict)  # value-derived constants (x xᵀ)
    scales: dict = field(default_factory=dict)  # slot -> stacked factors of scaled gathers

    def observed(self, theta_flat: torch.Tensor) -> torch.Tensor:
        """The members' values: the data or enumerated support, or θ's elements for the
        factors of substituted latents."""
        return theta_flat[self.value] if self.template.value_gather else self.value

    def arguments(self, theta_flat: torch.Tensor) -> dict:
        """Slot -> the distribution argument at θ (gathers, scaled gathers, constants)."""
        kw = {s: (theta_flat[t] if k == "gather" else t) for s, (k, t) in self.slots.items()}
        for s, c in self.scales.items():
            kw[s] = kw[s] * c
        return kw

    def distribution(self, theta_flat: torch.Tensor):
        """The members' base distribution at θ, batch shape ``(G,) + layout``."""
        return self.template.cls(**self.arguments(theta_flat), validate_args=False)

    def log_tables(self, theta_flat: torch.Tensor) -> torch.Tensor:
        """Log tables of every member at θ: shape ``(G,) + sizes`` (G possibly broadcast 1)."""
        t = self.template
        lp = self._gaussian(theta_flat)
        if lp is None:
            lp = self.distribution(theta_flat).log_prob(self.observed(theta_flat))
            if t.n_re:
                lp = lp.sum(dim=tuple(range(-t.n_re, 0)))
        return self.finish(lp)

    def expected_log_tables(self, thetas: list) -> torch.Tensor:
        """The average of :meth:`log_tables` over the θ's in ``thetas`` (equal weights; CAVI's
        sigma points), shape ``(G,) + sizes``.

        For a MultivariateNormal of a floating value the average is taken of the parameters'
        natural statistics ``(Λ, Λμ, μᵀΛμ, ln|Λ|)`` (small: no data dims), and the table is
        ``½E ln|Λ| - ½⟨x xᵀ, EΛ⟩ + xᵀE[Λμ] - ½E[μᵀΛμ] - (D/2) ln 2π`` (Bishop 2006, eq.
        10.64): exact for any θ's, since the log density is linear in those statistics, and
        one pass over the data instead of one per θ."""
        t = self.template
        x = self.value
        if t.value_gather or not (t.family == "MultivariateNormal" and t.n_re == 0 and x.is_floating_point()
                                  and len(thetas) > 1):
            return sum(self.log_tables(f) for f in thetas) / len(thetas)
        acc = None
        for flat in thetas:
            kw = self.arguments(flat)
            loc = kw["loc"]
            if "precision_matrix" in kw:
                prec = kw["precision_matrix"]
            else:
                tril = kw["scale_tril"] if "scale_tril" in kw else torch.linalg.cholesky(kw["covariance_matrix"])
                prec = torch.cholesky_inverse(tril.reshape((-1,) + tril.shape[-2:])).reshape(tril.shape)
            pl = torch.einsum("...de,...e->...d", prec, loc)
            stats = (prec, pl, (pl * loc).sum(-1), torch.logdet(prec))
            acc = stats if acc is None else tuple(a + b for a, b in zip(acc, stats))
        return self.mvn_table_from_statistics(*(a / len(thetas) for a in acc))

    def mvn_table_from_statistics(self, prec, prec_loc, quad, logdet) -> torch.Tensor:
        """The members' expected MultivariateNormal log tables from the expected natural
        statistics of their arguments, ``E[Λ]``, ``E[Λμ]``, ``E[μᵀΛμ]``, ``E ln|Λ|``, laid
        out like the slots (:func:`ppl.ops.expfam.mvn_expected_log_prob`)."""
        return self.finish(expfam.mvn_expected_log_prob(self.value, prec, prec_loc, quad, logdet, self.outer()))

    def finish(self, lp: torch.Tensor) -> torch.Tensor:
        """Mask, scale and broadcast the members' log-probabilities (``(G,) +`` a layout that
        broadcasts to ``sizes``) to ``(G,) + sizes``."""
        t = self.template
        if self.mask is not None:
            lp = torch.where(self.mask, lp, torch.full((), t.masked_fill, dtype=lp.dtype, device=lp.device))
        if t.scale != 1.0:
            lp = lp * t.scale
        return lp.expand((len(self.members),) + t.sizes)


    def outer(self):
        """``x xᵀ`` of the (constant) MultivariateNormal values, computed once, or None
        when it would take more than 512 MiB."""
        x = self.value
        if self.stats.get("xx") is None and "xx" not in self.stats:
            ok = x.is_floating_point() and x.numel() * x.shape[-1] * x.element_size() <= 2 ** 29
            self.stats["xx"] = x.unsqueeze(-1) * x.unsqueeze(-2) if ok else None
        return self.stats["xx"]

    def _gaussian(self, theta_flat):
        """Normal / MultivariateNormal tables by matrix products (:mod:`ppl.ops.expfam`),
        or None for other families."""
        t = self.template
        kw = self.arguments(theta_flat)
        x = self.value
        if t.family == "Normal" and x.is_floating_point():
            return expfam.normal_log_prob(x, kw["loc"], kw["scale"], t.n_re)
        if t.family == "MultivariateNormal" and t.n_re == 0 and x.is_floating_point():
            if "covariance_matrix" in kw:
                tril = torch.linalg.cholesky(kw["covariance_matrix"])
            elif "scale_tril" in kw:
                tril = kw["scale_tril"]
            else:
                tril = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(kw["precision_matrix"])))
            return expfam.mvn_log_prob(x, kw["loc"], tril, self.outer())
        return None


class SubstituteLatents(Messenger):
    """Give every latent sample site named in ``values`` that value (not observed: its own
    factor is evaluated at it, as for any sampled value)."""

    def __init__(self, values: dict):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg):
        if msg["name"] in self.values and not msg["is_observed"]:
            msg["value"] = self.values[msg["name"]]
            msg["done"] = True


class _SubstituteParams(Messenger):
    """Give every ``ppl.param`` site the value in ``values`` (and record its constraint)."""

    def __init__(self, values: dict):
        super().__init__()
        self.values = values
        self.constraints: dict = {}

    def _pyro_param(self, msg):
        name = msg["name"]
        if name in self.values:
            msg["value"] = self.values[name]
            self.constraints[name] = msg["kwargs"].get("constraint")


def _compact(x: torch.Tensor) -> torch.Tensor:
    """Shrink broadcast (stride 0) dims to size 1."""
    for d in range(x.dim()):
        if x.shape[d] > 1 and x.stride(d) == 0:
            x = x.narrow(d, 0, 1)
    return x


def _compact_equal(x: torch.Tensor) -> torch.Tensor:
    """Shrink every dim along which ``x`` is constant to size 1."""
    x = _compact(x)
    for d in range(x.dim()):
        if x.shape[d] > 1:
            first = x.narrow(d, 0, 1)
            if torch.equal(x, first.expand_as(x)):
                x = first
    return x


def _plain(x):
    return x.as_subclass(torch.Tensor) if isinstance(x, Probe) else x


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
        values are substituted into the model (:class:`SubstituteLatents`), so tables are
        functions of latent values (CAVI's sigma points).  A latent's own factor (its value
        varies with θ) is always slow.

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

    def __init__(self, graph, dims, plate_order, values, dtype=torch.float64, device=None, latents=()):
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
        sub = _SubstituteParams({k: v for k, v in probe_values.items() if k not in self.latents})
        subl = SubstituteLatents({k: v for k, v in probe_values.items() if k in self.latents})
        with track_scales() if self.latents else contextlib.nullcontext():
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
            lp_shape = torch.broadcast_shapes(fn.batch_shape, value.shape[: value.dim() - len(fn.event_shape)])
            layout = factor_layout(graph, name, lp_shape, dims, plate_order)
            deps = frozenset(graph.factors[name].scope) & param_names
            self._sites[name] = (site, layout)
            self.templates[name] = self._template(name, site, layout, deps, escaped)
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
        self.layouts = {n: (t.plates, t.vars) for n, t in self.templates.items()}
        self.direct = {}
        for name in self.latents:  # a slow latent factor whose distribution depends on no θ: fn.log_prob(value)
            if name in self.slow and not (set(graph.factors[name].scope) & set(values)) - {name}:
                direct = self._own_factor(name)
                if direct is not None:
                    self.direct[name] = direct
        self._sites = None  # the probe trace is not kept

    def _traced(self, name) -> torch.Tensor:
        """The table of factor ``name`` from the probe run's own distribution (plain values)."""
        site, layout = self._sites[name]
        with torch._C.DisableTorchFunctionSubclass():
            lp = site["fn"].log_prob(site["value"])
            lp = _plain(lp)
            scale, mask = site.get("scale", 1.0), site.get("mask")
            if isinstance(mask, torch.Tensor):
                lp = torch.where(_plain(mask), lp, torch.zeros((), dtype=lp.dtype))
            elif mask is False:
                lp = torch.zeros_like(lp)
            lp = lp * _plain(scale) if not (isinstance(scale, float) and scale == 1.0) else lp
            table = layout.canonical(lp.detach(), 0, expand=True).to(self.dtype)
            own = latent_mask(site) if name in self.dims else None
            if own is not None:
                keep = layout.canonical(_plain(own), 0, expand=True)
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
            lp = fn.log_prob(values[name])
            return layout.canonical(lp, 0, expand=True).to(dtype)
        return table

    # ---------------------------------------------------------------- build
    def _template(self, name, site, layout, lp_deps, escaped) -> FactorTemplate:
        fn = site["fn"]
        t = FactorTemplate(name, families.family_name(fn), plates=layout.plates, vars=layout.vars,
                           sizes=layout.sizes, deps=frozenset(lp_deps))
        if lp_deps & escaped:
            t.slow = f"param(s) {sorted(lp_deps & escaped)} leave torch (float()/item()/numpy) in the model"
            return t
        mask = site.get("mask")
        if mask is True:
            mask = None
        elif isinstance(mask, torch.Tensor):
            mask = _plain(mask)
        scale = site.get("scale", 1.0)
        if isinstance(scale, torch.Tensor):
            if scale.numel() != 1:
                t.slow = "a tensor-valued poutine.scale"
                return t
            scale = float(scale)
        t.scale = float(scale)
        # look through wrappers: a mask above Independent, Independent, expand
        n_re = 0
        while True:
            kind = type(fn).__name__
            if kind == "MaskedDistribution" and n_re == 0:
                m = _plain(fn._mask)
                mask = m if mask is None or isinstance(mask, bool) else (mask & m)
                fn = fn.base_dist
            elif kind == "Independent":
                n_re += fn.reinterpreted_batch_ndims
                fn = fn.base_dist
            elif kind == "ExpandedDistribution":
                fn = fn.base_dist
            else:
                break
        family = type(fn).__name__
        if mask is False:
            t.slow = "a site masked out entirely"
            return t
        if family not in FAMILY_SLOTS:
            t.slow = f"family {family} is re-evaluated by a model run"
            return t
        names = FAMILY_SLOTS[family]
        if names is None:
            if family == "MultivariateNormal":
                scale_slot = next((s for s in _MVN_SCALES if s in fn.__dict__), None)
                names = ("loc", scale_slot)
            else:
                names = ("probs",) if fn.__dict__.get("probs") is fn._param else ("logits",)
        t.cls, t.n_re = type(fn), n_re
        slot_deps = set()
        for s in names:
            x = fn.__dict__.get(s)
            if x is None:
                t.slow = f"{family} without its '{s}' argument"
                return t
            tail = n_re + slot_event_rank(family, s)
            pos, deps = positions_of(x)
            if deps and pos is None:
                t.slow = f"{family} {s} is computed from param(s) {sorted(deps)} (not a plain selection)"
                return t
            slot_deps |= deps
            src = pos if pos is not None else _plain(x).detach().to(self.dtype)
            src = layout.canonical(_compact(src), tail)
            t.slots[s] = ("gather", _compact_equal(src)) if pos is not None else ("const", _compact(src))
            factor = scale_of(x)
            if factor is not None and pos is not None:
                t.scales[s] = _compact_equal(layout.canonical(_compact(factor.to(self.dtype)), tail))
        if name in self.latents:
            slot_deps.add(name)  # its value
        if set(t.deps) - slot_deps:
            t.slow = f"depends on param(s) {sorted(set(t.deps) - slot_deps)} outside its distribution's arguments"
            return t
        if name in self.latents:  # a substituted latent's own factor: its value is θ itself
            pos, _ = positions_of(site["value"])
            if pos is None:
                t.slow = "the value of a substituted latent is not its own probe"
                return t
            t.value_gather = True
            t.value = _compact(layout.canonical(_compact(pos), n_re + len(fn.event_shape)))
            t.deps = t.deps | {name}
            return t
        value = _plain(site["value"]).detach()
        if value.is_floating_point():
            value = value.to(self.dtype)
        t.value = _compact(layout.canonical(_compact(value), n_re + len(fn.event_shape)))
        if mask is not None and not isinstance(mask, bool):
            t.mask = _compact(layout.canonical(_compact(mask.bool()), 0))
            if name in self.dims:
                t.masked_fill = -math.log(self.graph.variables[name].cardinality)
        return t

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
        flat = self.space.flat(values)
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
                for m in g.members:
                    self.templates[m].slow = "rebuilding its distribution did not reproduce the traced table"
                    self.slow.append(m)
        self.groups = keep

    # ---------------------------------------------------------------- use
    def tables(self, values: dict, grad: bool = False) -> dict:
        """Every factor's log table at θ = ``values``.

        Returns
        -------
        dict[str, torch.Tensor]
            Factor name -> table (its layout's full shape).  Group members are views of
            one stacked tensor per group (see :meth:`group_tables`).
        """
        flat = self.space.flat(values)
        out = dict(self.constant)
        for g, stacked in zip(self.groups, self.group_tables(flat)):
            for i, n in enumerate(g.members):
                out[n] = stacked[i]
        out.update(self.slow_tables(values, grad=grad))
        return out

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
        out = {}
        if run:
            sub = poutine.substitute(data={k: v for k, v in values.items() if k not in self.latents})
            subl = SubstituteLatents({k: v for k, v in values.items() if k in self.latents})
            tables = log_factor_tables(self.graph, self.dims, self.plate_order, dtype=self.dtype, device=self.device,
                                       messengers=(sub, subl), names=run, grad=grad, validate=False)
            out = {n: f.table for n, f in tables.items()}
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            for n in slow:
                if n in self.direct:
                    out[n] = self.direct[n](values)
        return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.expand_as(b), b
    finite = torch.isfinite(b)
    if not torch.equal(torch.isfinite(a), finite) or not torch.equal(a[~finite], b[~finite]):
        return False
    return bool(torch.allclose(a[finite], b[finite], rtol=1e-9, atol=1e-9))


def parametric_tables(graph, dims, plate_order, values, dtype=torch.float64, device=None) -> ParametricTables:
    """Build (or fetch from ``graph.cache``) the :class:`ParametricTables` of ``graph``.

    The structure found does not depend on θ, so one probe run per graph, precision and
    device is kept; ``values`` is only the point of the probe run and of its check."""
    key = ("parametric_tables", dtype, str(device or "cpu"), tuple(sorted(dims.items())))
    pt = graph.cache.get(key)
    if pt is None:
        pt = ParametricTables(graph, dims, plate_order, values, dtype=dtype, device=device)
        graph.cache[key] = pt
    return pt
