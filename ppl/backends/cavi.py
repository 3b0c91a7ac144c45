"""``method="cavi"``: mean-field coordinate-ascent variational inference.

The mean-field family ``q(h) = Π_j q_j(h_j)`` (Goodfellow et al. 2016, §19.4, eq. 19.17;
a plate of N copies of a site gives N independent factors, updated as one batched tensor
operation) and the coordinate update

    ln q_j*(h_j) = E_{i≠j}[ln p(v, h)] + const                          (eq. 19.56)

which for a discrete ``h_j`` with any local factors is, factor by factor, the expectation of
the factor's log table over the other variables of its scope under their current ``q``
(a contraction of the table against those ``q``'s, eq. 19.18 in general form).  The ELBO

    L(q) = Σ_factors E_q[ln f] + Σ_j H(q_j)                              (eq. 19.30)

is computed exactly after every sweep.

Schedules:

* ``"sequential"``: one site at a time (all plate copies of it at once: copies of a site
  share no factor, so this is the same as one copy at a time).  Each update maximises L
  over ``q_j`` exactly, so L never decreases; a decrease beyond round-off raises
  :class:`~ppl.errors.BoundDecreaseWarning`.
* ``"parallel"``: every site from the same old ``q`` (a block update).  It can overshoot
  and oscillate (§19.4.1); ``damping`` moves each factor a step of that size toward its
  optimum, in natural parameters: ``ln q ← (1 - d) ln q + d ln q*`` (normalised).  Along
  that path KL(q‖q*) falls monotonically, so damping never hurts a sequential update either.

This version handles three kinds of model:

* every latent discrete (finite support): the updates above, by contraction of factor
  tables;
* every latent Normal and the log joint a quadratic form in them (Gaussian priors and
  Gaussian likelihoods whose means are linear in the latents: Bayesian linear regression,
  the slides' factorised Gaussian, eq. 19.57-19.67).  The precision ``Λ`` and linear term
  ``b`` of ``ln p(v, h) = c + bᵀh - ½ hᵀΛh`` are found from the model by autograd (one
  gradient and one Hessian-vector product per latent dimension, then verified at a random
  point), and each factor's update is ``q_B = N(Λ_BB⁻¹ (b_B - Λ_B,¬B m_¬B), Λ_BB⁻¹)``
  (eq. 19.56 for a Gaussian; the slides' "Factorized Gaussian": means converge to the
  exact posterior means, variances are ``1/Λ_ii``, too small).

* scalar Normal and Gamma latents in a conjugate-exponential model (a Normal mean with a
  Gamma precision, a Gamma rate under a Poisson likelihood): natural parameters as
  gradients of ``E_q[ln p]`` computed on sigma points (:mod:`ppl.backends.conjugate`).

Other continuous families (Beta, Dirichlet, Wishart, …) and models that mix discrete and
continuous latents raise :class:`~ppl.errors.UnsupportedModelError` naming the site and its
family, or the structural test that failed.
"""

from __future__ import annotations

import math
import string
import time

import pyro
import torch

from ..analysis.report import format_bytes
from ..compiler import families
from ..compiler.parametric import parametric_tables
from ..compiler.tables import enumeration_dims, log_factor_tables
from ..errors import IntractableError, OptionError, UnsupportedModelError
from ..ops.contract import LogFactor
from ..posterior import MeanFieldPosterior
from .base import (Applicability, Backend, check_int, check_number, current_params, param_constraint,
                   seeded_generator, store_params)
from .binary import binary_problem, run_binary
from .conjugate import conjugate_problem, run_conjugate
from .discrete import batch_layout
from .meanfield import coordinate_ascent
from .pointopt import maximise, param_block

__all__ = ["CAVIBackend", "SCHEDULES", "INITS", "MAX_GAUSSIAN_DIM"]

#: Most latent dimensions the Gaussian path takes (it builds the dense precision ``Λ``).
MAX_GAUSSIAN_DIM = 4096

#: ``schedule=`` names.
SCHEDULES = ("sequential", "parallel")

#: ``init=`` names.
INITS = ("random", "uniform")


class CAVIBackend(Backend):
    """Mean-field CAVI (see the module docstring).

    Options
    -------
    max_iter : int
        Sweeps at most (default 200).
    tol : float
        Converged when the ELBO changes by less than ``tol`` nats per observed value
        between sweeps (default 1e-8) and no probability of q moves by more than
        :data:`ppl.backends.meanfield.Q_TOL`.
    damping : float in (0, 1]
        Step toward each factor's optimum in natural parameters (default 1: the full
        coordinate update).
    schedule : {"sequential", "parallel"}
        Site by site (default; the ELBO never decreases) or all sites at once.
    init : {"random", "uniform"} or dict
        Starting ``q``: Dirichlet(1) draws per plate copy (default; breaks the symmetry of
        mixtures), uniform, or a dict site -> probabilities ``batch_shape + (K,)``.  For
        Normal latents: a prior draw, the prior mean, or a dict site -> starting mean.
    seed : int
        Seed of ``init="random"`` and of ``sample()``.
    learn_params : bool
        Variational EM (Goodfellow et al. 2016, §19.2 with a mean-field E-step): after
        each sweep, maximise ``E_q[ln p(v, h; θ)]`` over the model's ``ppl.param`` θ
        (L-BFGS in unconstrained space; projected for ``unit_norm_columns``).  Both steps
        raise the same ELBO ``L(q, θ)``, so its history never decreases.
    dtype, device, progress
        Table precision (default float64), ``"cpu"``/``"cuda"``, a tqdm bar over sweeps.
    memory_budget, heuristic
        Bytes the largest factor table may take (default 2 GiB); the elimination heuristic
        is not used by CAVI (accepted for symmetry with ``exact``).
    """

    name = "cavi"
    summary = "mean-field coordinate ascent, closed-form updates (discrete; Gaussian-quadratic; conjugate Normal/Gamma)"
    options = {
        "max_iter": "sweeps at most (default 200)",
        "tol": "ELBO change per observed value at which sweeps stop (default 1e-8)",
        "damping": "step toward each factor's optimum, in (0, 1] (default 1)",
        "schedule": "'sequential' (default) or 'parallel'",
        "init": "'random' (default), 'uniform' or a dict site -> probabilities",
        "seed": "seed of init='random' and of sample()",
        "learn_params": "variational EM: also maximise the ELBO over the ppl.params (default False)",
        "dtype": "table precision, default torch.float64",
        "device": "'cpu' (default) or 'cuda'",
        "progress": "tqdm bar over sweeps (default: on a terminal)",
        "memory_budget": "bytes for the largest factor table, default 2 GiB",
        "heuristic": "accepted and unused (CAVI needs no elimination order)",
    }

    # ------------------------------------------------------------------ applicability
    def check(self, analysis) -> Applicability:
        """CAVI (this version) applies when every latent is discrete and enumerable and the
        largest factor table fits the memory budget; a continuous latent is named with its
        family."""
        graph = analysis.graph
        if analysis.continuous:
            return _gaussian_applicability(graph, analysis)
        if analysis.undeclared_batch:
            site, dims = next(iter(analysis.undeclared_batch.items()))
            return Applicability(False, f"site '{site}' has batch dims {dims} not declared by a plate, so its "
                                        "discrete latents cannot be enumerated: declare i.i.d. copies with ppl.plate",
                                 UnsupportedModelError)
        if not analysis.discrete:
            return Applicability(True, "no latent variables: the ELBO is the log likelihood")
        binary = _binary_path(graph, analysis)
        if binary:
            return Applicability(True, binary)
        if analysis.cost.intractable:  # a factor over every copy of a plated latent: no per-copy table
            return Applicability(False, analysis.cost.intractable, UnsupportedModelError)
        name, size = _largest_factor(graph)
        nbytes = size * analysis.itemsize
        if nbytes > analysis.memory_budget:
            return Applicability(False, f"factor '{name}' has a table of {size:,} entries ({format_bytes(nbytes)}), "
                                        f"over the {format_bytes(analysis.memory_budget)} memory budget",
                                 IntractableError, dict(bytes=nbytes, budget=analysis.memory_budget))
        return Applicability(True, f"mean field over {len(analysis.discrete)} discrete latent(s); largest factor "
                                   f"table {format_bytes(nbytes)} (cost per sweep ~ the sum of factor tables)")

    # ------------------------------------------------------------------------- run
    def run(self, graph, analysis, *, max_iter=200, tol=1e-8, damping=1.0, schedule="sequential", init="random",
            seed=None, learn_params=False, dtype=torch.float64, device=None, progress=None, memory_budget=None,
            heuristic=None):
        """Run CAVI; see the class docstring for options.

        Returns
        -------
        MeanFieldPosterior
            ``marginal(site)`` = ``q_site`` (Categorical / Bernoulli with the site's plate
            batch shape), ``elbo`` (nats, eq. 19.30, exact for this q), ``history`` (ELBO
            per sweep; the first entry is the ELBO of the initial q), ``converged``,
            ``sample(n)`` (independent draws from the q's), ``map()`` (each q's mode),
            ``diagnostics`` (``schedule``, ``damping``, ``sweeps``, ``decreases``).

        Raises
        ------
        OptionError
            Bad option values (unknown schedule or init, damping outside (0, 1], an init
            table of the wrong shape or not a distribution).
        DataError
            The evidence has probability zero under every q (ELBO = -inf).
        """
        del memory_budget, heuristic
        start = time.perf_counter()
        max_iter = check_int("max_iter", max_iter, 1)
        check_number("tol", tol, low=0.0)
        damping = check_number("damping", damping, low=0.0, high=1.0, low_open=True)
        if schedule not in SCHEDULES:
            raise OptionError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise OptionError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        device = torch.device(device) if device is not None else torch.device("cpu")
        if analysis.continuous:
            if learn_params:  # variational EM: the conjugate path's sweeps with an M-step after each
                problem = conjugate_problem(graph, analysis.moral)
                if problem:
                    raise UnsupportedModelError(f"learn_params=True with continuous latents needs closed-form "
                                                f"conjugate updates: {problem}; use method='svi' to learn params "
                                                "with a guide")
            options = dict(max_iter=max_iter, tol=tol, damping=damping, schedule=schedule, init=init, seed=seed,
                           dtype=dtype, device=device, progress=progress, start=start)
            if (not learn_params and not analysis.discrete and _all_normal(graph, analysis.continuous)
                    and _not_quadratic(graph, analysis.continuous) is None):
                return _run_gaussian(self.name, graph, **options)
            return run_conjugate(self.name, graph, analysis.moral, learn_params=learn_params, **options)
        if not learn_params and _binary_path(graph, analysis):
            return run_binary(self.name, graph, max_iter=max_iter, tol=tol, damping=damping, schedule=schedule,
                              init=init, seed=seed, dtype=dtype, device=device, progress=progress, start=start)
        sites = list(analysis.discrete)
        dims = enumeration_dims(graph, analysis.moral)
        learner = _ParamStep(graph, dims, dtype, device) if learn_params else None
        tables = log_factor_tables(graph, dims, graph.plate_order, dtype=dtype, device=device)
        mf = _MeanField(graph, sites, tables, dtype, device)
        q = mf.initial(init, seed)
        def sweep(q):
            q = dict(q)
            if schedule == "sequential":
                for v in sites:
                    q[v] = _damped(q[v], mf.optimum(v, q), damping)
            else:
                q = {v: _damped(q[v], mf.optimum(v, q), damping) for v in sites}
            if learner is not None:  # M-step on the same ELBO
                learner.step(mf, q)
            return q

        def moved(new, old):
            return max((float((new[v].exp() - old[v].exp()).abs().max()) for v in sites), default=0.0)

        q, history, converged, decreases = coordinate_ascent(
            q, sweep, mf.elbo, moved, graph=graph, schedule=schedule, damping=damping, max_iter=max_iter, tol=tol,
            progress=progress)
        params = {}
        if learner is not None:
            params = learner.values
            store_params(params)
        probs = {v: q[v].exp().reshape(batch_layout(graph, graph.variables[v].plates) + (mf.cards[v],))
                 for v in sites}
        supports = {v: families.enumerate_values(graph.sites[v].fn).to(device) for v in sites}
        diagnostics = {"schedule": schedule, "damping": damping, "sweeps": len(history) - 1,
                       "decreases": decreases, "device": str(device), "path": "discrete tables"}
        return MeanFieldPosterior(self.name, graph=graph, marginals=probs, supports=supports,
                                  families={v: graph.variables[v].family for v in sites}, seed=seed,
                                  elbo=history[-1], history=history, params=params,
                                  converged=converged, elapsed=time.perf_counter() - start,
                                  diagnostics=diagnostics)


# ---------------------------------------------------------------------------- numerics
class _MeanField:
    """Factor tables, their einsum layouts, and the two computations: a site's optimal
    ``ln q_j*`` and the ELBO.  ``q`` maps site -> log probabilities, shape (sizes of the
    site's plates, in plate order) + (K,)."""

    def __init__(self, graph, sites, tables, dtype, device):
        self.graph = graph
        self.sites = sites
        self.dtype, self.device = dtype, device
        self._probs = []  # (log q tensor, its exp), most recent first
        self.cards = {v: graph.variables[v].cardinality for v in sites}
        self.var_plates = {v: tuple(p for p in graph.plate_order if p in graph.variables[v].plates) for v in sites}
        letters = iter(string.ascii_letters)
        self.letter = {("plate", p): next(letters) for p in graph.plate_order}
        for v in sites:
            self.letter[("var", v)] = next(letters)
        self.by_site = {v: [] for v in sites}
        self.factors = self.layout(tables)
        for i, (_, _, _, vars_) in enumerate(self.factors):
            for v in vars_:
                self.by_site[v].append(i)

    def probs(self, logq: torch.Tensor) -> torch.Tensor:
        """``exp`` of a factor's log probabilities, kept for the last few tensors asked (a
        sweep and its ELBO ask for the same factor several times)."""
        for t, p in self._probs:
            if t is logq:
                return p
        p = logq.exp()
        self._probs = [(logq, p)] + self._probs[:2 * max(1, len(self.sites))]
        return p

    def layout(self, tables) -> list:
        """``(name, table, plates, vars)`` per factor; ``log 0`` replaced by a very negative
        finite stand-in, so that ``-inf`` times ``q = 0`` counts as 0 (0 · log 0 = 0)."""
        floor = -1e250 if self.dtype == torch.float64 else -1e30
        return [(name, f.table.clamp_min(floor), tuple(f.plates), tuple(f.vars)) for name, f in tables.items()]

    def _subs(self, plates, vars_) -> str:
        return "".join(self.letter[("plate", p)] for p in plates) + "".join(self.letter[("var", v)] for v in vars_)

    def optimum(self, v, q) -> torch.Tensor:
        """``ln q_v*``: Σ over v's factors of E_{q of the others}[ln f], normalised (eq. 19.56)."""
        total = torch.zeros(tuple(self.graph.plates[p].size for p in self.var_plates[v]) + (self.cards[v],),
                            dtype=self.dtype, device=self.device)
        for i in self.by_site[v]:
            _, table, plates, vars_ = self.factors[i]
            others = [u for u in vars_ if u != v]
            operands = [table] + [self.probs(q[u]) for u in others]
            subs = [self._subs(plates, vars_)] + [self._subs(self.var_plates[u], (u,)) for u in others]
            out = self._subs(self.var_plates[v], (v,))
            total = total + torch.einsum(",".join(subs) + "->" + out, *operands)
        return total - torch.logsumexp(total, -1, keepdim=True)

    def elbo(self, q) -> float:
        """``Σ_f E_q[ln f] + Σ_j H(q_j)`` in nats (eq. 19.30)."""
        total = self.expected_log_joint(q, self.factors)
        for v in self.sites:
            p = self.probs(q[v])
            total = total - torch.where(p > 0, p * q[v], torch.zeros_like(p)).sum()
        return float(total)

    def expected_log_joint(self, q, factors) -> torch.Tensor:
        """``Σ_f E_q[ln f]`` over ``factors`` (a :meth:`layout`), differentiable in the tables."""
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for _, table, plates, vars_ in factors:
            if not vars_:
                total = total + table.sum()
                continue
            operands = [table] + [self.probs(q[u]) for u in vars_]
            subs = [self._subs(plates, vars_)] + [self._subs(self.var_plates[u], (u,)) for u in vars_]
            total = total + torch.einsum(",".join(subs) + "->", *operands)
        return total

    def initial(self, init, seed) -> dict:
        shapes = {v: tuple(self.graph.plates[p].size for p in self.var_plates[v]) + (self.cards[v],)
                  for v in self.sites}
        if isinstance(init, dict):
            unknown = [k for k in init if k not in shapes]
            if unknown:
                raise OptionError(f"init names {unknown}, which are not discrete latent sites; those are {self.sites}")
            out = self.initial("uniform", seed)
            for v, p in init.items():
                p = torch.as_tensor(p, dtype=self.dtype, device=self.device)
                if p.numel() != math.prod(shapes[v]):
                    raise OptionError(f"init['{v}'] has shape {tuple(p.shape)}; expected {shapes[v]} (the site's plate "
                                      "sizes and its number of states)")
                p = p.reshape(shapes[v])
                if bool((p < 0).any()) or not torch.allclose(p.sum(-1), torch.ones((), dtype=self.dtype)):
                    raise OptionError(f"init['{v}'] must hold probabilities summing to 1 over the last dim")
                out[v] = p.log()
            return out
        if init == "uniform":
            return {v: torch.full(s, -math.log(s[-1]), dtype=self.dtype, device=self.device) for v, s in shapes.items()}
        if init == "random":
            gen = seeded_generator(seed, self.device)
            out = {}
            for v, s in shapes.items():
                e = -torch.log(torch.rand(s, dtype=self.dtype, device=self.device, generator=gen).clamp_min(1e-300))
                out[v] = (e / e.sum(-1, keepdim=True)).log()       # Dirichlet(1): normalised exponentials
            return out
        raise OptionError(f"init must be one of {list(INITS)} or a dict site -> probabilities, got {init!r}")


class _ParamStep:
    """Variational EM's M-step: maximise ``E_q[ln p(v, h; θ)]`` over the ``ppl.param`` θ,
    the factor tables rebuilt from θ by one enumerated run per evaluation."""

    def __init__(self, graph, dims, dtype, device):
        names = graph.params()
        if not names:
            raise OptionError(f"learn_params=True but model '{graph.model.name}' has no ppl.param to learn")
        self.graph, self.dims, self.dtype, self.device = graph, dims, dtype, device
        self.constraints = {n: param_constraint(n) for n in names}
        self.values = current_params(graph, names, dtype, device)
        # the tables as functions of θ: gathers of θ rebuilt without a model run (EM's machinery)
        self.pt = parametric_tables(graph, dims, graph.plate_order, self.values, dtype=dtype, device=device)

    def tables(self, values):
        tabs = self.pt.tables(values, grad=True)
        return {n: LogFactor(tabs[n], *self.pt.layouts[n]) for n in self.graph.factors}

    def step(self, mf, q) -> None:
        """One M-step (in place): the new θ, and ``mf``'s tables at it."""
        fixed_q = {v: t.detach() for v, t in q.items()}
        blocks = [param_block(n, v, self.constraints[n]) for n, v in self.values.items()]

        def objective(vals):
            return mf.expected_log_joint(fixed_q, mf.layout(self.tables(vals)))

        maximise(objective, blocks, optimizer="lbfgs", max_iter=100, tol=1e-9)
        self.values = {b.name: b.value() for b in blocks}
        with torch.no_grad():
            mf.factors = mf.layout(self.tables(self.values))


def _damped(old: torch.Tensor, new: torch.Tensor, damping: float) -> torch.Tensor:
    """``(1 - d) ln q_old + d ln q*``, normalised (a step in natural parameters, §19.4.1)."""
    if damping == 1.0:
        return new
    mixed = (1.0 - damping) * old + damping * new
    return mixed - torch.logsumexp(mixed, -1, keepdim=True)


# ---------------------------------------------------------------------- binary latents, quadratic log joint
def _binary_path(graph, analysis) -> str | None:
    """Why the binary quadratic path (:mod:`ppl.backends.binary`) is taken, or None: every
    latent a scalar Bernoulli, the log joint quadratic in them, and the largest factor's
    table (``2^scope`` per copy) larger than the ``K²`` block the quadratic path works with."""
    sites = list(analysis.discrete)
    if not sites or any(graph.variables[s].family != "Bernoulli" for s in sites):
        return None
    scope = max((sum(1 for v in f.scope if v in analysis.discrete) for f in graph.factors.values()), default=0)
    if 2.0 ** scope <= len(sites) ** 2:
        return None
    if binary_problem(graph, sites) is not None:
        return None
    return (f"mean field over {len(sites)} binary latent(s) under a quadratic log joint: updates from E[h] and "
            f"E[hhᵀ] (eq. 19.44), no 2^{scope} table")


# ---------------------------------------------------------------------- Gaussian latents
def _gaussian_applicability(graph, analysis) -> Applicability:
    if analysis.discrete or not _all_normal(graph, analysis.continuous):
        return _conjugate_applicability(graph, analysis)
    n = sum(graph.sites[s].value.numel() for s in analysis.continuous)
    if n > MAX_GAUSSIAN_DIM:
        return Applicability(False, f"{n} latent dimensions: the Gaussian mean field builds the dense {n} x {n} "
                                    f"precision (at most {MAX_GAUSSIAN_DIM}); use method='svi'",
                             UnsupportedModelError)
    problem = _not_quadratic(graph, analysis.continuous)
    if problem:
        other = _conjugate_applicability(graph, analysis)
        return other if other.ok else Applicability(False, problem, UnsupportedModelError)
    return Applicability(True, f"Gaussian mean field over {len(analysis.continuous)} Normal latent site(s), {n} "
                               "dimension(s) of a quadratic log joint (closed-form Gaussian factors)")


def _all_normal(graph, sites) -> bool:
    return all(graph.variables[s].family == "Normal" and len(graph.variables[s].event_shape) <= 1 for s in sites)


def _conjugate_applicability(graph, analysis) -> Applicability:
    if analysis.discrete:
        if analysis.cost.intractable:
            return Applicability(False, analysis.cost.intractable, UnsupportedModelError)
        name, size = _largest_factor(graph)
        nbytes = size * analysis.itemsize
        if nbytes > analysis.memory_budget:
            return Applicability(False, f"factor '{name}' has a table of {size:,} entries ({format_bytes(nbytes)}) "
                                        f"over its discrete latents, over the {format_bytes(analysis.memory_budget)} "
                                        "memory budget", IntractableError, dict(bytes=nbytes,
                                                                                budget=analysis.memory_budget))
    problem = conjugate_problem(graph, analysis.moral)
    if problem:
        return Applicability(False, f"{problem}; use method='svi' (mean field: guide='normal') or 'map'",
                             UnsupportedModelError)
    families = sorted({graph.variables[s].family for s in analysis.continuous})
    mixed = f" and {len(analysis.discrete)} discrete latent(s) (expected factor tables)" if analysis.discrete else ""
    return Applicability(True, f"conjugate-exponential mean field over {len(analysis.continuous)} continuous latent "
                               f"site(s) ({', '.join(families)}){mixed}: natural parameters by sigma points "
                               "(checked linear)")


def _not_quadratic(graph, sites) -> str | None:
    """Why the log joint is not a quadratic form in the Normal latents ``sites``, or None.

    A cheap test run by the analysis: along a random direction d from the prior means,
    ``t -> ln p(m + t d)`` must be a polynomial of degree 2, so its third finite difference
    at t = 0, 1, 2, 3 vanishes to round-off (four runs of the model, no autograd).  The run
    verifies the full quadratic again (:func:`~ppl.ops.quadratic.dense_quadratic`)."""
    key = ("cavi_not_quadratic", tuple(sites))
    if key not in graph.cache:  # the analysis and the run both ask: four model runs, once
        graph.cache[key] = _third_difference_problem(graph, sites)
    return graph.cache[key]


def _third_difference_problem(graph, sites, kind="Normal") -> str | None:
    from .base import run_context
    from .logjoint import LogJoint

    device, dtype = torch.device("cpu"), torch.float64
    # no validation: discrete latents are evaluated at real values (their log pmf's polynomial
    # extension), and a Python-number observation must not fail a support check
    with run_context(device, dtype, 0), torch.no_grad(), pyro.validation_enabled(False):
        lj = LogJoint(graph, device, dtype)
        try:
            start = lj.initial_values(sites, "mean")
        except Exception as e:  # noqa: BLE001 - a model that cannot run here is refused, not crashed
            return (f"the model could not be evaluated at the prior means of {sites}: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else e!r}")
        gen = torch.Generator().manual_seed(0)
        step = {s: torch.randn(v.shape, dtype=dtype, generator=gen) for s, v in start.items()}
        values = []
        for t in range(4):
            try:
                values.append(float(lj({s: start[s] + t * step[s] for s in sites})))
            except Exception:  # noqa: BLE001 - not evaluable along the line: not a quadratic here
                values.append(float("nan"))
    third = values[3] - 3 * values[2] + 3 * values[1] - values[0]
    spread = sum(abs(v) for v in values) + 1.0
    if not all(math.isfinite(v) for v in values) or abs(third) > 1e-8 * spread:
        return (f"the log joint is not a quadratic form in the {kind} latents {sites} (a non-Gaussian likelihood, a "
                "latent scale, or a mean that is not linear in the latents), so their mean-field factors have no "
                "closed form here; use method='svi' (mean field: guide='normal') or 'map'")
    return None


def _run_gaussian(method, graph, *, max_iter, tol, damping, schedule, init, seed, dtype, device, progress, start):
    """CAVI for Normal latents under a quadratic log joint (see the module docstring)."""
    from ..ops.quadratic import dense_quadratic
    from ..posterior import FactorPosterior
    from .base import run_context
    from .logjoint import LogJoint

    sites = graph.continuous_latent()
    with run_context(device, dtype, seed):
        lj = LogJoint(graph, device, dtype)
        if isinstance(init, dict):
            start_values = lj.initial_values(sites, init)
        elif init in INITS:
            start_values = lj.initial_values(sites, "sample" if init == "random" else "mean")
        else:
            raise OptionError(f"init must be one of {list(INITS)} or a dict site -> mean, got {init!r}")
        shapes = {s: tuple(start_values[s].shape) for s in sites}
        sizes = [math.prod(shapes[s]) for s in sites]

        def unflatten(x):
            parts = torch.split(x, sizes)
            return {s: p.reshape(shapes[s]) for s, p in zip(sites, parts)}

        x0 = torch.cat([start_values[s].reshape(-1) for s in sites])
        quad = dense_quadratic(lambda x: lj(unflatten(x)), x0, max_dim=MAX_GAUSSIAN_DIM)
    if quad is None:
        raise UnsupportedModelError(
            f"model '{graph.model.name}': the log joint is not a quadratic form in the Normal latents {sites} (a "
            "non-Gaussian likelihood, a latent scale, or a mean that is not linear in the latents), so their "
            "mean-field factors are not Gaussian in closed form; use method='svi' (guide='normal') or 'map'")
    f0, g0, H = quad
    lam = -H
    b = g0 + lam @ x0                                   # ln p = c + bᵀx - ½ xᵀΛx
    blocks, offset = [], 0
    for s in sites:
        e = math.prod(graph.variables[s].event_shape) if graph.variables[s].event_shape else 1
        for i in range(math.prod(shapes[s]) // e):
            blocks.append(torch.arange(offset + i * e, offset + (i + 1) * e, device=device))
        offset += math.prod(shapes[s])
    precisions = [lam[idx][:, idx] for idx in blocks]
    chols = []
    for idx, p in zip(blocks, precisions):
        chol, info = torch.linalg.cholesky_ex(p)
        if int(info) != 0:
            raise UnsupportedModelError(f"model '{graph.model.name}': the log joint is not concave in latent "
                                        f"dimension(s) {idx.tolist()} (an improper posterior): no Gaussian factor")
        chols.append(chol)
    log_det = sum(2.0 * float(torch.log(torch.diagonal(c)).sum()) for c in chols)
    entropy = 0.5 * len(x0) * math.log(2 * math.pi * math.e) - 0.5 * log_det
    # E_q[ln p] = ln p(m) - ½ Σ_B tr(Λ_BB Σ_B) = ln p(m) - n/2 since Σ_B = Λ_BB⁻¹

    def elbo(m):
        d = m - x0
        return float(f0 + g0 @ d + 0.5 * d @ (H @ d)) - 0.5 * len(x0) + entropy

    def block_optimum(m, k):
        idx = blocks[k]
        r = b[idx] - lam[idx] @ m + precisions[k] @ m[idx]    # b_B - Λ_B,¬B m_¬B
        return torch.cholesky_solve(r.unsqueeze(-1), chols[k]).squeeze(-1)

    def sweep(m):
        m = m.clone()
        if schedule == "sequential":
            for k, idx in enumerate(blocks):
                m[idx] = (1.0 - damping) * m[idx] + damping * block_optimum(m, k)
        else:
            new = torch.cat([block_optimum(m, k) for k in range(len(blocks))])
            order = torch.cat(blocks)
            m[order] = (1.0 - damping) * m[order] + damping * new
        return m

    def moved(new, old):
        return float((new - old).abs().max()) / (1.0 + float(new.abs().max())) if len(new) else 0.0

    m, history, converged, decreases = coordinate_ascent(
        x0.clone(), sweep, elbo, moved, graph=graph, schedule=schedule, damping=damping, max_iter=max_iter, tol=tol,
        progress=progress)
    means, factors, k = unflatten(m), {}, 0
    for s in sites:
        var = graph.variables[s]
        e = math.prod(var.event_shape) if var.event_shape else 1
        n_blocks = math.prod(shapes[s]) // e
        cov = torch.stack([torch.cholesky_inverse(chols[k + i]) for i in range(n_blocks)])
        batch = tuple(shapes[s][:len(shapes[s]) - len(var.event_shape)])
        cov = cov.reshape(batch + (e, e))
        factors[s] = (torch.distributions.Normal(means[s], cov[..., 0, 0].sqrt()) if not var.event_shape
                      else torch.distributions.MultivariateNormal(means[s], covariance_matrix=cov))
        k += n_blocks
    diagnostics = {"schedule": schedule, "damping": damping, "sweeps": len(history) - 1, "dimensions": len(x0),
                   "path": "gaussian",
                   "decreases": decreases, "device": str(device)}
    return FactorPosterior(method, graph=graph, factors=factors, elbo=history[-1], history=history,
                           converged=converged, elapsed=time.perf_counter() - start, diagnostics=diagnostics)

def _largest_factor(graph) -> tuple:
    """(name, entries) of the factor with the largest table: Π cards of its discrete
    latents × Π sizes of its plates."""
    best = ("", 1)
    discrete = set(graph.discrete_latent())
    for name, f in graph.factors.items():
        size = math.prod(graph.variables[v].cardinality for v in f.scope if v in discrete)
        size *= math.prod(graph.plates[p].size for p in f.plates)
        if size > best[1]:
            best = (name, size)
    return best
