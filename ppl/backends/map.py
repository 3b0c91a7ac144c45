"""``method="map"``: the joint MAP ``ĥ = argmax_h log p(h, v)`` and MAP learning of params.

MAP inference is variational inference with a point mass ``q(h) = δ(h - ĥ)``
(Goodfellow et al. 2016, §19.3, eq. 19.9-19.11); its ELBO is ``-∞`` for continuous h, so
the objective reported is ``log p(ĥ, v)``.

* **Discrete latents**: max-product variable elimination with backtracking, the exact
  backend's contraction engine in the ``(max, +)`` semiring
  (:meth:`~ppl.backends.discrete.DiscretePlan.argmax`; Koller & Friedman 2009, §13.2-13.3).
  On a chain this is the Viterbi algorithm.
* **Continuous latents**: the log joint in unconstrained space (``biject_to(support)``),
  by L-BFGS (default) or Adam, one optimisation over all plated copies at once.  Laplace
  priors make the objective non-smooth (``-|h - μ| / b``); then the backend runs monotone
  FISTA with backtracking, whose soft-threshold prox gives exact zeros — sparse coding
  (eq. 19.14-19.16) is this case.
* **Both**: coordinate ascent, max-product over the discrete latents given the continuous
  ones, then the continuous optimiser given the discrete ones; ``log p(ĥ, v)`` never
  decreases.
* **MAP learning** (``learn_params=True``, §19.3's alternating procedure): after MAP
  inference of ``h`` at the initial θ, each round maximises ``log p(v, ĥ; θ)`` over the
  ``ppl.param`` θ, then re-infers ``ĥ`` given the new θ — so the ĥ returned is the MAP
  under the θ returned.
  A param declared with ``constraint=ppl.constraints.unit_norm_columns`` is kept on the
  set by projection (projected gradient inside the same FISTA), which is what dictionary
  learning needs (the norm constraint on W's columns, §19.3).

An objective that grows without bound (an improper posterior or one without a mode, e.g. a
scale going to 0 under a flat prior) raises :class:`~ppl.errors.NumericalError` naming the
site, instead of returning an infinite value.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from ..analysis.report import analyze_graph
from ..compiler.factor_graph import compile as compile_graph
from ..errors import ConvergenceWarning, DataError, NumericalError, OptionError
from ..posterior import PointPosterior
from .base import (Applicability, Backend, BoundMonitor, check_int, check_number, current_params,
                   param_constraint, run_context, store_params)
from .discrete import DiscretePlan, discrete_applicability, discrete_plan
from .logjoint import INIT_STRATEGIES, LogJoint
from .pointopt import OPTIMIZERS, DivergedError, latent_block, maximise, param_block

__all__ = ["MAPBackend"]

#: A transformed free value beyond this magnitude means the site is at the edge of its
#: support (e.g. a scale below e^-40): there is no interior maximum.
_EDGE = 40.0
#: ... or beyond this one (a scale below e^-20) while the optimiser has not converged.
_EDGE_CLIMBING = 20.0


class MAPBackend(Backend):
    """Joint MAP inference and MAP learning (see the module docstring).

    Options
    -------
    optimizer : {"lbfgs", "adam"}
        For smooth continuous problems (default ``"lbfgs"``); non-smooth ones (Laplace
        priors, projected params) always use FISTA.
    lr : float
        Adam's learning rate (default 0.05).
    max_iter : int
        Iterations of each inner optimisation (default 1000).
    tol : float
        Inner convergence: max-abs (prox-)gradient of the free variables, in nats per unit
        (default 1e-6).
    max_rounds : int
        Rounds of coordinate ascent (mixed models) or of learning (default 100).
    round_iter : int, optional
        Inner iterations per step inside those rounds (default ``max_iter``).  A few dozen
        make each round cheap: every step still raises the log joint (inexact block
        coordinate ascent), and the latents are re-solved to ``tol`` after the last round.
    rtol : float
        Rounds stop when ``log p(ĥ, v)`` rises by less than ``rtol · (1 + |log p|)``
        (default 1e-9).
    learn_params : bool
        Also maximise over the model's ``ppl.param`` values (default False: they stay fixed).
    init : str or dict
        Starting point of continuous latents: ``"mean"`` (prior mean, default),
        ``"median"``, ``"sample"``, ``"feasible"``, or a dict site -> value.
    dtype, device, seed, progress
        Precision (default float64), ``"cpu"``/``"cuda"``, the seed of ``init="sample"``,
        and a tqdm bar over rounds.
    heuristic, memory_budget
        Elimination order and table budget of the max-product pass (as ``exact``).
    """

    name = "map"
    summary = "joint MAP: max-product over discrete latents, L-BFGS / FISTA (Laplace priors) over continuous ones"
    options = {
        "optimizer": "'lbfgs' (default) or 'adam' for smooth continuous latents",
        "lr": "Adam learning rate (default 0.05)",
        "max_iter": "iterations per inner optimisation (default 1000)",
        "tol": "max-abs (prox-)gradient at which an inner optimisation stops (default 1e-6)",
        "max_rounds": "coordinate-ascent / learning rounds (default 100)",
        "round_iter": "inner iterations per step inside rounds (default max_iter); the last latent step runs to tol",
        "rtol": "relative log-joint change at which rounds stop (default 1e-9)",
        "learn_params": "also maximise over the ppl.params (default False)",
        "init": "'mean' (default), 'median', 'sample', 'feasible' or a dict site -> value",
        "dtype": "precision, default torch.float64",
        "device": "'cpu' (default) or 'cuda'",
        "seed": "seed of init='sample'",
        "progress": "tqdm bar over rounds (default: on a terminal)",
        "heuristic": "'min_fill' (default) or 'min_degree' for the max-product pass",
        "memory_budget": "bytes for the largest max-product table, default 2 GiB",
    }

    # ------------------------------------------------------------------ applicability
    def check(self, analysis) -> Applicability:
        """MAP applies when the discrete latents, if any, can be maximised out exactly by
        max-product (the exact backend's conditions); continuous latents are optimised."""
        n_cont = len(analysis.continuous)
        if analysis.discrete:
            verdict = discrete_applicability(analysis)
            if not verdict.ok:
                return verdict
            if n_cont:
                return Applicability(True, f"coordinate ascent: max-product over {len(analysis.discrete)} discrete "
                                           f"latent(s), gradient ascent over {n_cont} continuous", details=verdict.details)
            return Applicability(True, f"max-product over {len(analysis.discrete)} discrete latent(s): the exact joint "
                                       "MAP", details=verdict.details)
        if n_cont:
            return Applicability(True, f"gradient ascent on log p(h, v) over {n_cont} continuous latent(s) "
                                       "(FISTA for Laplace priors)")
        return Applicability(True, "no latent variables: MAP learning maximises the likelihood of the params")

    # ------------------------------------------------------------------------- run
    def run(self, graph, analysis, *, optimizer="lbfgs", lr=0.05, max_iter=1000, tol=1e-6, max_rounds=100,
            round_iter=None, rtol=1e-9, learn_params=False, init="mean", dtype=torch.float64, device=None, seed=None,
            progress=None,
            heuristic=None, memory_budget=None):
        """Run MAP; see the class docstring for options.

        Returns
        -------
        PointPosterior
            ``map()`` (site -> ĥ, ``batch_shape + event_shape``), ``log_joint``
            (``log p(ĥ, v; θ)``, nats), ``elbo = None``, ``history`` (log joint per round),
            ``converged``, ``params`` (learned values when ``learn_params``), and
            ``diagnostics`` (``log_joint``, ``rounds``, ``inner`` (per-step method,
            iterations and residual), ``kkt_residual`` for Laplace sites).

        Raises
        ------
        OptionError
            Bad option values.
        NumericalError
            The log joint is unbounded (names the site) or not finite at the start.
        DataError
            The evidence has probability zero (max-product finds no assignment).
        """
        del heuristic, memory_budget  # consumed by the analysis
        start = time.perf_counter()
        if optimizer not in OPTIMIZERS:
            raise OptionError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        max_iter = check_int("max_iter", max_iter, 1)
        max_rounds = check_int("max_rounds", max_rounds, 1)
        round_iter = max_iter if round_iter is None else check_int("round_iter", round_iter, 1)
        check_number("tol", tol, low=0.0)
        check_number("rtol", rtol, low=0.0)
        check_number("lr", lr, low=0.0, low_open=True)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise OptionError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if isinstance(init, str) and init not in INIT_STRATEGIES:
            raise OptionError(f"init must be one of {sorted(INIT_STRATEGIES)} or a dict site -> value, got {init!r}")
        device = torch.device(device) if device is not None else torch.device("cpu")
        pnames = graph.params() if learn_params else []
        if learn_params and not pnames:
            raise OptionError(f"learn_params=True but model '{graph.model.name}' has no ppl.param to learn")
        continuous, discrete = graph.continuous_latent(), graph.discrete_latent()
        inner = {"optimizer": optimizer, "lr": lr, "max_iter": max_iter, "tol": tol, "memo": {}}
        full = inner

        with run_context(device, dtype, seed):
            lj = LogJoint(graph, device, dtype)
            params = current_params(graph, pnames, dtype, device) if pnames else None
            values = lj.initial_values(continuous, init, params) if continuous else {}
            disc: dict = {}
            single = not pnames and not (continuous and discrete)
            monitor = BoundMonitor("log joint", rtol, 1, max_rounds, progress if not single else False,
                                   desc="map")
            steps: list = []
            try:
                def infer_latents(inner):
                    nonlocal disc, values
                    if discrete:
                        disc, best = self._discrete_step(graph, analysis, values, params, dtype, device)
                        steps.append({"step": "max-product", "log_joint": best})
                    if continuous:
                        values, info = self._latent_step(lj, graph, continuous, values, disc, params, inner)
                        steps.append(info)

                if not single:
                    inner = {**inner, "max_iter": round_iter}
                if pnames:  # ĥ for the initial θ; each round then updates θ, then ĥ given the new θ
                    infer_latents(inner)
                for _ in range(max_rounds):
                    if pnames:
                        params, info = self._param_step(lj, graph, pnames, {**values, **disc}, params, inner)
                        steps.append(info)
                    infer_latents(inner)
                    with torch.no_grad():
                        total = float(lj({**values, **disc}, params))
                    if not torch.isfinite(torch.tensor(total)):
                        raise NumericalError(f"the log joint of model '{graph.model.name}' is {total} at the MAP "
                                             "estimate")
                    if monitor.record(total) or single:
                        break
                if round_iter < max_iter and continuous:  # the answer's latents solved to tol
                    values, info = self._latent_step(lj, graph, continuous, values, disc, params, full)
                    steps.append(info)
                    with torch.no_grad():
                        monitor.history[-1] = float(lj({**values, **disc}, params))  # the last round, finished
            finally:
                monitor.close()
            if pnames:
                store_params(params)
            kkt = self._kkt(lj, graph, continuous, values, disc, params) if continuous else {}

        converged = (all(s.get("converged", True) for s in steps[-3:]) if single
                     else monitor.converged)
        if not converged:
            warnings.warn(f"MAP did not converge in {len(monitor.history)} round(s) (inner residual "
                          f"{steps[-1].get('residual', 0):.3g}, tol {tol}); raise max_iter / max_rounds",
                          ConvergenceWarning, stacklevel=3)
        point = {**values, **disc}
        order = [n for n in graph.latent() if n in point]
        diagnostics = {"log_joint": monitor.history[-1], "rounds": len(monitor.history), "inner": steps,
                       "device": str(device)}
        if kkt:
            diagnostics["kkt_residual"] = kkt
        return PointPosterior(
            self.name, graph=graph, values={n: point[n] for n in order},
            event_dims={n: len(graph.variables[n].event_shape) for n in order},
            log_joint=monitor.history[-1], params=dict(params or {}), history=monitor.history,
            converged=converged, elapsed=time.perf_counter() - start, diagnostics=diagnostics)

    # ------------------------------------------------------------------ steps
    def _discrete_step(self, graph, analysis, values, params, dtype, device):
        """Max-product over the discrete latents given the continuous ``values`` (and the
        current params): site -> argmax values, and ``max log p(h, v)``."""
        if params:
            store_params(params)
        if not values:
            plan = discrete_plan(graph, analysis, dtype=dtype, device=device)
        else:
            data = {**graph.bound.kwargs, **graph.bound.observations, **values}
            cond = compile_graph(graph.model, data)
            plan = DiscretePlan(cond, analyze_graph(cond, analysis.heuristic, analysis.memory_budget,
                                                    torch.finfo(dtype).bits // 8), dtype=dtype, device=device)
        best, idx = plan.argmax()
        if not torch.isfinite(best):
            raise DataError(f"the evidence on {graph.observed()} has probability zero under model "
                            f"'{graph.model.name}' (max log p(h, v) = -inf)")
        return {v: plan.values(v, idx[v], 1)[0] for v in plan.cards}, float(best)

    def _latent_step(self, lj, graph, sites, values, disc, params, inner):
        """Maximise the log joint over the continuous latents ``sites`` given ``disc``."""
        supports = {s: lj.graph.sites[s].fn.support for s in sites}
        l1 = _proximal_terms(lj, graph, sites, {**values, **disc}, params, warn=True)
        blocks = [latent_block(s, values[s], supports[s], l1.get(s), math.prod(graph.variables[s].event_shape))
                  for s in sites]
        skip = tuple(l1)

        def objective(vals):
            return lj({**disc, **vals}, params, skip=skip)

        res = _guarded(maximise, objective, blocks, inner, graph, what="latent")
        return {b.name: b.value() for b in blocks}, _info("latents", res)

    def _param_step(self, lj, graph, names, fixed, params, inner):
        """Maximise ``log p(v, ĥ; θ)`` over the ``ppl.param`` values."""
        blocks = [param_block(n, params[n], param_constraint(n)) for n in names]

        def objective(vals):
            return lj(fixed, vals)

        res = _guarded(maximise, objective, blocks, inner, graph, what="param")
        return {b.name: b.value() for b in blocks}, _info("params", res)

    def _kkt(self, lj, graph, sites, values, disc, params) -> dict:
        """Per Laplace site, the max violation of the optimality (KKT) conditions of
        ``max log p``: ``|∂f/∂h + w·sign(h - μ)|`` where ``h ≠ μ``, ``max(|∂f/∂h| - w, 0)``
        where ``h = μ`` (``f`` = the negative smooth part, ``w = 1/b``)."""
        l1 = _proximal_terms(lj, graph, sites, {**values, **disc}, params)
        if not l1:
            return {}
        leaves = {s: values[s].clone().requires_grad_(True) for s in l1}
        with torch.enable_grad():
            f = -lj({**values, **disc, **leaves}, params, skip=tuple(l1))
            grads = torch.autograd.grad(f, list(leaves.values()))
        out = {}
        for (s, h), g in zip(leaves.items(), grads):
            term, h = l1[s], h.detach()
            d = h - term.center
            viol = torch.where(d != 0, (g + term.weight * d.sign()).abs(), (g.abs() - term.weight).clamp_min(0))
            out[s] = float(viol.max()) if viol.numel() else 0.0
        return out


def _proximal_terms(lj, graph, sites, values, params, warn=False) -> dict:
    """Site -> L1Term of the Laplace priors handled by the prox: those whose location and
    scale depend on no other optimised latent (the others are smooth terms, with a warning
    when ``warn``)."""
    l1 = lj.l1_terms(sites, values, params)
    for s in list(l1):
        others = [v for v in graph.factors[s].scope if v != s and v in sites]
        if others:
            if warn:
                warnings.warn(f"site '{s}': its Laplace prior depends on the latent(s) {others}, so it is optimised "
                              "as a smooth term (no exact zeros)", ConvergenceWarning, stacklevel=5)
            del l1[s]
    return l1


def _info(what, res) -> dict:
    return {"step": what, "method": res.method, "iterations": res.n_iter, "residual": res.residual,
            "converged": res.converged, "objective": res.value}


def _guarded(fn, objective, blocks, inner, graph, what):
    """Run :func:`maximise`; on divergence, or a transformed value left at the edge of its
    support, raise NumericalError naming the site responsible."""
    try:
        res = fn(objective, blocks, **inner)
    except DivergedError as e:
        for b, x in zip(blocks, e.blocks):
            b.free = x
        raise NumericalError(_unbounded(graph, blocks, what)) from None
    # at the edge: far out in unconstrained space, or well out and still climbing (not converged)
    edge = [b for b in blocks if b.transformed and (bool((b.free.abs() > _EDGE).any()) or (
        not res.converged and bool((b.free.abs() > _EDGE_CLIMBING).any())))]
    if edge or not bool(torch.isfinite(torch.tensor(res.value))):
        raise NumericalError(_unbounded(graph, edge or blocks, what))
    return res


def _unbounded(graph, blocks, what) -> str:
    """Message for an objective without a maximum: the block whose free value ran furthest."""
    def reach(b):
        x = b.free.detach()
        return float("inf") if not bool(torch.isfinite(x).all()) else float(x.abs().max())

    worst = max(blocks, key=reach)
    free = worst.free.detach().reshape(-1)
    free = torch.where(torch.isfinite(free), free, torch.zeros_like(free))
    at = int(free.abs().argmax()) if free.numel() else 0
    where = f"{float(worst.value().reshape(-1)[at]):.3g}" if free.numel() else "?"
    kind = "param" if what == "param" else "site"
    return (f"MAP does not exist for model '{graph.model.name}': the log joint grows without bound as {kind} "
            f"'{worst.name}' runs to the edge of its support (reached {where}): the posterior is improper "
            f"or has no mode there (e.g. a scale going to 0 under a flat prior, or one data point per scale). Give "
            f"'{worst.name}' a prior that vanishes at that edge, add data, or use method='svi'")

