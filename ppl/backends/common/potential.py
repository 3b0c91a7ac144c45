"""The log density of a compiled model in unconstrained space, with its tractable discrete
latents summed out: what Laplace, Pathfinder and NUTS work on, and what importance
weights of any approximation are computed with.

Every continuous latent ``h_s`` is reached from ``z_s ∈ ℝ^d`` by ``biject_to(support)``,
taken from the site's distribution *as the model builds it at each evaluation*, so a
support that depends on another latent (``Uniform(0, 1 - a)``) follows that latent; the
log Jacobian ``log |det ∂h/∂z|`` is added.  The discrete latents are summed out by ppl's
own variable elimination (:class:`~ppl.backends.common.discrete.DiscretePlan`, chains by
the same plan as the exact backend) over factor tables computed at the continuous values
(:class:`~ppl.compiler.parametric.ParametricTables` with the continuous latents as
arguments), the marginal density Pyro's ``TraceEnum_ELBO`` computes (Obermeyer et al.
2019) at a fraction of its cost.  The latents are laid out as one flat vector ``z`` of size
``D``.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from torch.distributions import biject_to

from ...analysis.report import format_bytes
from ...errors import ModelError, PPLError
from .nonfinite import nonfinite_names
from .runtime import place
from .supports import dependent_supports
from .unconstrained import Unconstrained, conditioned_model, site_transform, start_value

__all__ = ["Potential", "enumeration_problem", "conditioned_model", "Unconstrained", "start_value"]


def enumeration_problem(analysis) -> str | None:
    """Why the discrete latents cannot be summed out exactly (None when they can, or there
    are none): batch dims no plate declares, plates that do not nest, or a table over the
    memory budget."""
    if not analysis.discrete:
        return None
    shown = ", ".join(analysis.discrete[:6]) + (" ..." if len(analysis.discrete) > 6 else "")
    hint = ("pass a guide that samples them (guide=callable, with loss='rws' or 'elbo'), or use method='exact' / "
            "'em' if there are no continuous latents")
    if analysis.undeclared_batch:
        site, dims = next(iter(analysis.undeclared_batch.items()))
        return (f"discrete latent(s) {shown} cannot be enumerated: site '{site}' has batch dims {dims} not "
                f"declared by a plate; declare them with ppl.plate, or {hint}")
    if analysis.cost.intractable:
        return f"discrete latent(s) {shown} cannot be summed out: {analysis.cost.intractable}; {hint}"
    if analysis.clique_bytes > analysis.memory_budget:
        return (f"summing out the discrete latent(s) {shown} needs a table of {format_bytes(analysis.clique_bytes)} "
                f"(treewidth <= {analysis.treewidth}), over the {format_bytes(analysis.memory_budget)} budget; "
                f"{hint}")
    return None


#: Draws whose exact discrete conditionals are averaged by :meth:`Potential.discrete_marginals`.
DISCRETE_MARGINAL_DRAWS = 200


#: What building recorded tables may raise on a model whose computations they cannot
#: follow; the caller then keeps a path with model runs (the reference).
_RECORDING_ERRORS = (PPLError, RuntimeError, ValueError, TypeError, NotImplementedError, AttributeError, KeyError,
                     IndexError)


def _recorded_tables(graph, dims: dict, values: dict, latents: list, dtype, device, derive: bool = True):
    """:class:`~ppl.compiler.parametric.ParametricTables` of ``graph`` at ``values`` with the
    continuous ``latents`` as arguments and (``derive``) the functions of them the model
    computes recorded; None where recording fails."""
    from ...compiler.parametric import ParametricTables

    try:
        return ParametricTables(graph, dims, graph.plate_order, values, dtype=dtype, device=device, latents=latents,
                                derive=derive)
    except _RECORDING_ERRORS:
        if not derive:
            raise
        return None


class _EnumeratedTables:
    """``log p(h_c, v)`` with the discrete latents summed out: factor tables at the
    continuous values by :class:`~ppl.compiler.parametric.ParametricTables` (continuous latents as arguments), log Z
    by the exact backend's plan."""

    def __init__(self, graph, analysis, start: dict, params: dict, dtype, device):
        from ...compiler.tables import enumeration_dims
        from ...ops.contract import LogFactor
        from .discrete import DiscretePlan

        cont = list(start)
        dims = enumeration_dims(graph, analysis.moral)
        self.params = params
        values = {**start, **params}
        self.pt = graph.memo("potential", ("tables", dtype, str(device), tuple(cont)), lambda: (
            _recorded_tables(graph, dims, values, cont, dtype, device)   # else model runs for the computed ones
            or _recorded_tables(graph, dims, values, cont, dtype, device, derive=False)))

        def plan():
            with torch.no_grad():
                tables = self.pt.tables({**start, **params})
            factors = {n: LogFactor(tables[n], *self.pt.layouts[n]) for n in graph.factors}
            return DiscretePlan(graph, analysis, dtype=dtype, device=device, tables=factors)

        self.plan = graph.memo("potential", ("plan", dtype, str(device), analysis.heuristic), plan)

    def __call__(self, values: dict) -> torch.Tensor:
        tables = self.pt.tables({**values, **self.params}, grad=torch.is_grad_enabled())
        return self.plan.log_z(tables)

    def marginals(self, values: dict) -> dict:
        """``p(z | h_c, v)`` of every discrete latent at the continuous ``values`` (site ->
        probabilities ``batch_shape + (K,)``), by the exact plan at that draw's tables."""
        with torch.no_grad():
            tables = self.pt.tables({**values, **self.params})
            _, marg = self.plan.at_tables(tables).log_partition(marginals=True)
        return {} if marg is None else {v: marg[v] for v in marg}


class _SummedTables:
    """``log p(h, v)`` of a model without discrete latents as the sum of its factor log
    tables at the continuous values (:class:`~ppl.compiler.parametric.ParametricTables`, functions of θ recorded
    and replayed): no model run, so no Pyro handlers per evaluation, and it vmaps.  Built
    only where every factor is fast or a prior's own direct table (:meth:`build` is None
    otherwise)."""

    def __init__(self, pt, params: dict):
        self.pt, self.params = pt, params

    @staticmethod
    def build(graph, start: dict, params: dict, dtype, device):
        def make():
            pt = _recorded_tables(graph, {}, {**start, **params}, list(start), dtype, device)
            return pt if pt is not None and set(pt.slow) <= set(pt.direct) else None  # else the model run
        pt = graph.memo("potential", ("summed", dtype, str(device), tuple(start)), make)
        return None if pt is None else _SummedTables(pt, params)

    def __call__(self, values: dict) -> torch.Tensor:
        tables = self.pt.tables({**values, **self.params}, grad=torch.is_grad_enabled())
        return sum(t.sum() for t in tables.values())


class Potential:
    """``log p(h, v) + log|det ∂h/∂z|`` as a function of the unconstrained flat vector
    ``z`` (discrete latents summed out), see the module docstring.

    Parameters
    ----------
    graph : FactorGraph
    device : torch.device
    dtype : torch.dtype
        Floating data and the model's own tensors are in this precision.
    analysis : Analysis, optional
        Needed when the model has discrete latents (their elimination order).
    noncentred : iterable of str
        Normal latents parameterised as ``loc + scale · z``
        (:func:`~ppl.backends.common.unconstrained.noncentrable_sites`): same density, a
        model run per point.

    Attributes
    ----------
    sites : list[str]
        The continuous latents, in trace order.
    shapes : dict[str, torch.Size]
        Unconstrained shape of each (a simplex of K entries has K - 1).
    dim : int
        ``D``, the length of ``z``.
    median : torch.Tensor, shape (D,)
        A starting point: each site's prior mean (its compiled value where the mean is
        not finite), unconstrained.

    Raises
    ------
    ModelError
        When the model cannot be evaluated at its starting point.
    """

    def __init__(self, graph, device, dtype, analysis=None, noncentred=()):
        self.graph, self.device, self.dtype = graph, device, dtype
        self.noncentred = frozenset(noncentred) & frozenset(graph.continuous_latent())
        self.kwargs = {k: place(v, device, dtype) for k, v in graph.bound.kwargs.items()}
        self.observations = {k: place(v, device, dtype) for k, v in graph.bound.observations.items()}
        store = pyro.get_param_store()
        # the ppl.param values of this run (the run's param store: declared, warm-started or
        # learned), fixed in the model so later evaluations (lazy posterior queries) neither
        # read nor fill Pyro's global store; pyro.module weights are the module's own
        self.params = {p: (store[p] if p in store else place(graph.sites[p].value, device, dtype)).detach()
                       .to(device=device, dtype=dtype if graph.sites[p].value.is_floating_point() else None)
                       for p in graph.params() if "$$$" not in p}
        model = conditioned_model(graph, self.observations)
        self.model = poutine.substitute(model, data=self.params) if self.params else model
        self.sites = list(graph.continuous_latent())
        self.discrete = list(graph.discrete_latent())
        self.fixed = {s: place(graph.sites[s].value, device, dtype) for s in self.discrete}
        start = {s: start_value(graph.sites[s], device, dtype) for s in self.sites}
        self.shapes = {s: biject_to(graph.sites[s].fn.support).inv(start[s]).shape for s in self.sites}
        self.sizes = [int(math.prod(self.shapes[s])) for s in self.sites]
        self.dim = sum(self.sizes)
        self.median = self._start(start)
        self.transforms = None
        self.mpn = max([-p.dim for p in graph.plates.values()], default=0)
        self._vector_ok = None
        self._vmap_ok = None
        self._batch_transforms = None
        self.tabled = None
        params = {p: place(graph.sites[p].value, device, dtype).detach() for p in graph.params()}
        params.update({p: store[p].detach().to(dtype=dtype, device=device) for p in graph.params() if p in store})
        if self.discrete:
            if analysis is None:
                raise ModelError("a log density with discrete latents needs the model's analysis")
            self.tabled = _EnumeratedTables(graph, analysis, start, params, dtype, device)
            self.transforms = None if self.noncentred else self._static_transforms()
        elif self.sites and not self.noncentred and not dependent_supports(graph):
            self.tabled = _SummedTables.build(graph, start, params, dtype, device)
            self.transforms = None if self.tabled is None else self._static_transforms()
        if self.noncentred:
            self._batch_transforms = False   # loc + scale · z depends on other latents: a model run per point
        self.median = self._feasible(self.median, graph.model.name)

    def _feasible(self, median: torch.Tensor, name: str, tries: int = 32) -> torch.Tensor:
        """``median`` if the log density is finite there, else the first of ``tries`` seeded
        uniform(-2, 2) points where it is (``Uniform(z - 1, z + 1)`` observed at y = 2), else
        ``median`` if it could be evaluated; raises ModelError if it could not (nor any point)."""
        gen, failure = torch.Generator().manual_seed(0), None
        for i in range(tries + 1):   # a fixed seed: the same start in every run
            z = median if i == 0 else self.random_start(gen).to(dtype=self.dtype, device=self.device)
            try:
                if bool(torch.isfinite(self.log_density(z).detach()).all()):
                    return z
            except (RuntimeError, ValueError) as e:
                failure = failure if i else e
        if failure is None:   # evaluable, not finite: the backends name the sites
            return median
        raise ModelError(f"model '{name}' cannot be evaluated at its starting point: {type(failure).__name__}: "
                         f"{str(failure).splitlines()[0] if str(failure) else failure!r}") from failure

    @property
    def enumerated(self):
        """The summed-out density's tables (:class:`_EnumeratedTables`) when the model has
        discrete latents, else None."""
        return self.tabled if self.discrete else None

    def _static_transforms(self):
        """Site -> its transform when no support depends on another latent
        (:func:`dependent_supports`), so the enumerated density needs no extra model run;
        else None."""
        if dependent_supports(self.graph):
            return None
        with torch.no_grad():
            _, a = self._run(self.median)
        return {s: biject_to(a.supports[s]) for s in self.sites}

    def random_start(self, generator=None) -> torch.Tensor:
        """A uniform(-2, 2) point ``(D,)`` in unconstrained space (Stan's default start;
        the restarts of Laplace, SVI's warm start and NUTS' ``init="uniform"``), float64."""
        return torch.rand(self.dim, generator=generator, dtype=torch.float64) * 4 - 2

    def _start(self, start: dict) -> torch.Tensor:
        z = {}
        for s in self.sites:
            if s in self.noncentred:   # z = 0: the site at its loc
                z[s] = torch.zeros(self.shapes[s], dtype=self.dtype, device=self.device)
                continue
            t = biject_to(self.graph.sites[s].fn.support)
            v = t.inv(start[s]).detach().as_subclass(torch.Tensor)   # compiled supports hold tracked bounds
            z[s] = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
        return self.flat(z)

    # ------------------------------------------------------------------ layout
    def flat(self, values: dict) -> torch.Tensor:
        """Site -> unconstrained value, as one vector ``(D,)``."""
        if not self.sites:
            return torch.zeros(0, dtype=self.dtype, device=self.device)
        return torch.cat([values[s].reshape(-1).to(self.dtype) for s in self.sites])

    def unflat(self, z: torch.Tensor) -> dict:
        """``z`` ``(..., D)`` -> site -> unconstrained value ``(...,) + shape``."""
        parts = torch.split(z, self.sizes, dim=-1)
        lead = tuple(z.shape[:-1])
        return {s: p.reshape(lead + tuple(self.shapes[s])) for s, p in zip(self.sites, parts)}

    def _run(self, z: torch.Tensor):
        handler = Unconstrained(self.unflat(z), self.fixed, noncentred=self.noncentred)
        with pyro.validation_enabled(False):
            trace = poutine.trace(handler(self.model)).get_trace(**self.kwargs)
        return trace, handler

    def constrain(self, z: torch.Tensor) -> dict:
        """Site -> constrained value at ``z`` (shape ``(D,)``, or ``(S, D)``: all rows at
        once through the supports' transforms where no support depends on another latent
        (checked against a model run at the first row), else row by row)."""
        if z.dim() == 2:
            batched = self._constrain_batch(z) if len(z) > 1 else None
            if batched is not None:
                return batched
            rows = [self.constrain(r) for r in z]
            return {s: torch.stack([r[s] for r in rows]) for s in self.sites}
        with torch.no_grad():
            _, handler = self._run(z)
        return {s: handler.values[s].detach() for s in self.sites}

    def _constrain_batch(self, z: torch.Tensor):
        """:meth:`constrain` of every row of ``z`` ``(S, D)`` by the static transforms, or
        None where supports depend on other latents or the batched transform does not
        reproduce a model run at the first row."""
        if self._batch_transforms is None:
            self._batch_transforms = False if dependent_supports(self.graph) else \
                (self.transforms or self._static_transforms() or False)
        if self._batch_transforms is False:
            return None
        with torch.no_grad():
            try:
                out = {s: self._batch_transforms[s](u).detach() for s, u in self.unflat(z).items()}
            except (RuntimeError, ValueError, TypeError):
                return None
            first = self.constrain(z[0])
        if not all(out[s].shape[1:] == first[s].shape and torch.allclose(out[s][0], first[s], equal_nan=True)
                   for s in self.sites):
            self._batch_transforms = False
            return None
        return out

    def unconstrain(self, values: dict) -> torch.Tensor:
        """The ``z`` of one draw of constrained values (site -> value), supports taken in
        trace order (a dependent support at the values of the latents before it)."""
        handler = _Inverse(values, self.fixed, self.noncentred)
        with torch.no_grad(), pyro.validation_enabled(False):
            poutine.trace(handler(self.model)).get_trace(**self.kwargs)
        return self.flat(handler.z)

    def nonfinite_sites(self, z: torch.Tensor, where: str = "at the prior median") -> str:
        """Where the log density is not finite at ``z`` ``(D,)``, for an error message:
        ``"; at the prior median the log density is not finite at observed site 'y'"``
        (sample sites, observed first; ``where`` names ``z``), or ``""`` when none is found
        or the model run itself fails."""
        try:
            with torch.no_grad():
                trace, _ = self._run(z)
                names = nonfinite_names(trace)
        except (ValueError, RuntimeError):
            return ""
        return f"; {where} the log density is not finite at {names}" if names else ""

    # ----------------------------------------------------------------- density
    def _evaluate(self, z: torch.Tensor):
        """``(log p(h(z), v), log |det ∂h/∂z|)`` at ``z`` ``(D,)``."""
        if self.tabled is not None and self.transforms is not None:
            values, log_jacobian = {}, 0.0
            for s, u in self.unflat(z).items():
                t = self.transforms[s]
                values[s] = t(u)
                log_jacobian = log_jacobian + t.log_abs_det_jacobian(u, values[s]).sum()
            return self.tabled(values), log_jacobian
        trace, handler = self._run(z)
        if self.enumerated is not None:
            return self.enumerated(handler.values), handler.log_jacobian
        total = 0.0
        for site in trace.nodes.values():
            if site["type"] == "sample":
                lp = site["fn"].log_prob(site["value"])
                total = total + scale_and_mask(lp, site["scale"], site["mask"]).sum()
        return torch.as_tensor(total, dtype=self.dtype), handler.log_jacobian

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(h(z), v) + log |det ∂h/∂z|`` (nats), a scalar differentiable in ``z`` ``(D,)``."""
        log_p, log_jacobian = self._evaluate(z)
        return log_p + log_jacobian

    def log_density_and_grad(self, z: torch.Tensor):
        """``(log density, its gradient)`` at ``z`` ``(D,)``, both detached."""
        z = z.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = self.log_density(z)
            (grad,) = torch.autograd.grad(value, z)
        return value.detach(), grad.detach()

    def log_density_batch(self, zs: torch.Tensor, max_seconds: float | None = None,
                          min_count: int = 200) -> torch.Tensor:
        """:meth:`log_density` of each row of ``zs`` ``(S, D)``, shape ``(S,)`` (no grad);
        ``-inf`` where the model has no density.  With ``max_seconds``, evaluation stops
        once that time is spent and at least ``min_count`` rows are done: the result then
        covers the first rows only."""
        import time

        if self._vectorizes(zs):
            return self._batched(zs, max_seconds, min_count, self._run_particles)
        if self._vmaps(zs):
            return self._batched(zs, max_seconds, min_count, self._run_vmap)
        out = torch.empty(zs.shape[0], dtype=torch.float64)
        start = time.perf_counter()
        n = zs.shape[0]
        failed = None
        with torch.no_grad():
            for i in range(zs.shape[0]):
                try:
                    out[i] = float(self.log_density(zs[i]))
                except (ValueError, RuntimeError) as e:
                    out[i], failed = -math.inf, failed or e
                if max_seconds is not None and i + 1 >= min_count and time.perf_counter() - start > max_seconds:
                    n = i + 1
                    break
        out = out[:n]
        if failed is not None and not bool(torch.isfinite(out).any()):
            raise ModelError(f"model '{self.graph.model.name}': the log density could not be evaluated at any of "
                             f"{n} points: {type(failed).__name__}: "
                             f"{str(failed).splitlines()[0] if str(failed) else failed!r}")
        return torch.where(torch.isnan(out), torch.full_like(out, -math.inf), out)

    def log_density_rows(self, zs: torch.Tensor) -> torch.Tensor:
        """:meth:`log_density` of each row of ``zs`` ``(S, D)``, shape ``(S,)``, differentiable
        (gradients flow to ``zs``): one vectorised run of the model where it evaluates a
        batch of points (:meth:`vectorizes`), else ``torch.func.vmap`` of :meth:`log_density`
        where that matches it at a few rows, else row by row; NaN where the density is not
        defined or the model raises there (a caller treats it as -inf)."""
        try:
            if self.vectorizes(zs):
                return self._run_particles(zs)
            if self._vmaps(zs):
                return torch.func.vmap(self.log_density)(zs).double()
        except (ValueError, RuntimeError):
            if torch.jit.is_tracing():
                raise  # a batched run that cannot be traced is not traced (the caller runs it eagerly)
            # else a point where the model raises (a scale overflowing to inf): find it row by row
        return torch.stack([self._row(z) for z in zs])

    def _row(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`log_density` at ``z``; NaN (with a zero gradient) where the model raises."""
        try:
            return self.log_density(z).double()
        except (ValueError, RuntimeError):
            return (z * 0).sum().double() + math.nan

    def _vmaps(self, zs) -> bool:
        """Whether ``torch.func.vmap`` of :meth:`log_density` gives the row-by-row values
        at a few rows (a model that does not broadcast over a particles plate, e.g.
        ``X @ w``, often vmaps; one with Python control flow on values does not)."""
        if self._vmap_ok is None:
            self._vmap_ok = False
            if zs.shape[0] >= 2:
                probe = zs[: min(4, zs.shape[0])].detach()
                try:
                    with torch.no_grad():
                        one = torch.stack([self.log_density(r).double() for r in probe])
                        many = torch.func.vmap(self.log_density)(probe).double()
                    finite = torch.isfinite(one)
                    self._vmap_ok = bool(finite.any()) and torch.allclose(many[finite], one[finite], rtol=1e-9,
                                                                         atol=1e-9)
                except Exception:  # noqa: BLE001 - any failure under vmap means: row by row
                    self._vmap_ok = False
        return self._vmap_ok

    # ------------------------------------------------------------ vectorised
    def vectorizes(self, zs) -> bool:
        """Whether the model evaluates the rows of ``zs`` ``(S, D)`` in one run (see
        :meth:`_vectorizes`)."""
        return self._vectorizes(zs)

    def batches(self, zs) -> bool:
        """Whether :meth:`log_density_batch` evaluates rows like ``zs`` ``(S, D)`` in
        batches (one model run under a particles plate, or ``torch.func.vmap``), not one
        model run per row."""
        return self._vectorizes(zs) or self._vmaps(zs)

    def _vectorizes(self, zs) -> bool:
        """Whether the model evaluates a batch of draws in one run (under a particles plate
        left of its own plates, as Pyro's ``vectorized_importance_weights``): tried once
        on a few rows and checked against one-at-a-time values; models with discrete
        latents, or that do not broadcast, are evaluated row by row."""
        if self._vector_ok is None:
            self._vector_ok = False
            if self.enumerated is None and self.sites and zs.shape[0] >= 2:
                probe = zs[: min(4, zs.shape[0])]
                try:
                    with torch.no_grad():
                        one = torch.stack([self.log_density(r).double() for r in probe])
                        many = self._run_particles(probe)
                    finite = torch.isfinite(one)
                    self._vector_ok = bool(finite.any()) and torch.allclose(many[finite], one[finite], rtol=1e-9,
                                                                           atol=1e-9)
                except Exception:  # noqa: BLE001 - any failure of a batched run means: row by row
                    self._vector_ok = False
        return self._vector_ok

    def _batched(self, zs, max_seconds, min_count, run, chunk: int = 256) -> torch.Tensor:
        """``run`` (a batched evaluation of rows) over chunks of ``zs``; a chunk where the
        model raises at some row is evaluated row by row (NaN there)."""
        import time

        start, parts = time.perf_counter(), []
        with torch.no_grad():
            for i in range(0, zs.shape[0], chunk):
                try:
                    parts.append(run(zs[i:i + chunk]).double())
                except (ValueError, RuntimeError):
                    parts.append(torch.stack([self._row(z) for z in zs[i:i + chunk]]))
                done = i + chunk
                if max_seconds is not None and done >= min_count and time.perf_counter() - start > max_seconds:
                    break
        out = torch.cat(parts)
        return torch.where(torch.isnan(out), torch.full_like(out, -math.inf), out)

    def _run_vmap(self, zs: torch.Tensor) -> torch.Tensor:
        """:meth:`log_density` of the rows of ``zs`` by ``torch.func.vmap``; shape ``(S,)``."""
        return torch.func.vmap(self.log_density)(zs)

    def _run_particles(self, zs: torch.Tensor) -> torch.Tensor:
        """``log density`` of ``S`` rows by one run of the model inside a plate of size S at
        dim ``-(mpn + 1)``; shape ``(S,)``."""
        n, mpn = zs.shape[0], self.mpn
        z = {}
        for s, v in self.unflat(zs).items():
            batch = len(self.graph.variables[s].batch_shape)
            z[s] = v.reshape((n,) + (1,) * (mpn - batch) + tuple(self.shapes[s]))
        handler = Unconstrained(z, {}, particles=n, noncentred=self.noncentred)
        with pyro.validation_enabled(False), pyro.plate("_ppl_particles", n, dim=-(mpn + 1)):
            trace = poutine.trace(handler(self.model)).get_trace(**self.kwargs)
        total = handler.log_jacobian.double() if torch.is_tensor(handler.log_jacobian) else \
            torch.zeros(n, dtype=torch.float64)
        for site in trace.nodes.values():
            if site["type"] != "sample" or site["name"] == "_ppl_particles":
                continue
            lp = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
            total = total + _per_particle(lp, n, mpn)
        return total

    def discrete_marginals(self, draws: dict, max_draws: int = DISCRETE_MARGINAL_DRAWS) -> dict:
        """``p(z | v)`` of every summed-out discrete latent: the exact conditionals
        ``p(z | h_c, v)`` averaged over up to ``max_draws`` evenly spaced posterior draws of
        the continuous latents (a Rao-Blackwellised estimate; Robert & Casella 2004, §4.7).

        Parameters
        ----------
        draws : dict[str, torch.Tensor]
            Site -> constrained draws, shape ``(N,) + shape``, for every continuous latent.

        Returns
        -------
        dict[str, torch.Tensor]
            Site -> probabilities, shape ``batch_shape + (K,)`` (empty without discrete
            latents, or when a draw's evidence is impossible)."""
        if self.enumerated is None or not draws:
            return {}
        n = int(next(iter(draws.values())).shape[0])
        rows = torch.linspace(0, n - 1, min(n, max_draws)).round().long().unique()
        total: dict = {}
        for i in rows.tolist():
            marg = self.enumerated.marginals({s: draws[s][i].to(self.device, self.dtype) for s in self.sites})
            if not marg:
                return {}
            for v, p in marg.items():
                total[v] = total.get(v, 0) + p.double()
        return {v: t / len(rows) for v, t in total.items()}

    def log_joint(self, draws: dict) -> torch.Tensor:
        """``log p(h, v)`` (discrete latents summed out) at each of S draws of the
        continuous latents (site -> ``(S,) + shape``, constrained), shape ``(S,)``; ``-inf``
        where the model has no density."""
        n = next(iter(draws.values())).shape[0] if draws else 1
        out = torch.empty(n, dtype=torch.float64)
        with torch.no_grad():
            for i in range(n):
                try:
                    out[i] = float(self._evaluate(self.unconstrain({s: draws[s][i] for s in self.sites}))[0])
                except (ValueError, RuntimeError):
                    out[i] = -math.inf
        return torch.where(torch.isnan(out), torch.full_like(out, -math.inf), out)


class _Inverse(Messenger):
    """The inverse of :class:`Unconstrained`: records ``z = biject_to(fn.support).inv(h)``
    at each continuous latent given ``values``."""

    def __init__(self, values: dict, fixed: dict, noncentred: frozenset = frozenset()):
        super().__init__()
        self.values, self.fixed, self.z, self.noncentred = values, fixed, {}, noncentred

    def _pyro_sample(self, msg):
        name = msg["name"]
        if msg["is_observed"]:
            return
        if name in self.values:
            h = self.values[name]
            self.z[name] = site_transform(msg["fn"], name in self.noncentred).inv(h)
            msg["value"], msg["done"] = h, True
        elif name in self.fixed:
            msg["value"], msg["done"] = self.fixed[name], True


def _per_particle(lp: torch.Tensor, n: int, mpn: int) -> torch.Tensor:
    """A site's log density summed over everything but the particle dim ``-(mpn + 1)``,
    shape ``(n,)`` (a term that does not depend on the particles is shared by all)."""
    lp = lp.double()
    if lp.dim() < mpn + 1 or lp.shape[lp.dim() - mpn - 1] != n:
        return lp.sum().expand(n)
    return lp.movedim(lp.dim() - mpn - 1, 0).reshape(n, -1).sum(-1)
