"""``method="map"``: the joint MAP ``ĥ = argmax_h log p(h, v)`` and MAP learning of params.

MAP inference is variational inference with a point mass ``q(h) = δ(h - ĥ)``
(Goodfellow et al. 2016, §19.3, eq. 19.9-19.11); its ELBO is ``-∞`` for continuous h, so
the objective reported is ``log p(ĥ, v)``.

* **Discrete latents**: max-product variable elimination with backtracking, the exact
  backend's contraction engine in the ``(max, +)`` semiring
  (:meth:`~ppl.backends.common.discrete.DiscretePlan.argmax`; Koller & Friedman 2009, §13.2-13.3).
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

import time

import torch

from ...errors import NumericalError, OptionError
from ...posterior import PointPosterior
from ...trust import UNRELIABLE, Trust
from ..base import Applicability, Backend
from ..common.elimination import discrete_applicability
from ..common.logjoint import INIT_STRATEGIES, LogJoint
from ..common.params import current_params, store_params
from ..common.pointopt import OPTIMIZERS
from ..common.routing import held_params_note, not_ok
from ..common.runtime import run_context
from ..options import COMMON, Boolean, Integer, MappingOf, NoneValue, OneOf, Option, Real, option_table
from ..template import IterativeFit, run_iterations
from .steps import check_existence, discrete_step, kkt_residuals, latent_step, param_step

__all__ = ["MAPBackend"]


class MAPBackend(Backend):
    """Joint MAP inference and MAP learning (see the module docstring); options in
    :attr:`options`.  Non-smooth problems (Laplace priors, projected params) always use
    FISTA, whatever ``optimizer`` says."""

    name = "map"
    summary = "joint MAP: max-product over discrete latents, L-BFGS / FISTA (Laplace priors) over continuous ones"
    options = option_table(
        Option("optimizer", OneOf(*OPTIMIZERS), "lbfgs", "'lbfgs' or 'adam' for smooth continuous latents"),
        Option("lr", Real(0.0, low_open=True), 0.05, "Adam's learning rate"),
        Option("max_iter", Integer(1), 1000, "iterations per inner optimisation"),
        Option("tol", Real(0.0), 1e-6, "max-abs (prox-)gradient, nats per unit, at which an inner optimisation stops"),
        Option("max_rounds", Integer(1), 100, "coordinate-ascent / learning rounds"),
        Option("round_iter", Integer(1) | NoneValue(), None,
               "inner iterations per step inside rounds (None: max_iter); the last latent step runs to tol"),
        Option("rtol", Real(0.0), 1e-9, "change of log p(h, v) between rounds at which rounds stop"),
        Option("learn_params", Boolean(), False, "also maximise over the ppl.params"),
        Option("n_init", Integer(1), 1,
               "starts (later ones drawn from the prior); the highest log joint is kept (local optima)"),
        Option("init", OneOf(*sorted(INIT_STRATEGIES)) | MappingOf("a dict site -> value"), "mean",
               "start of continuous latents: a Pyro init strategy name or a dict site -> value"),
        COMMON["dtype"].but(doc="precision of the optimisation"), COMMON["device"],
        COMMON["seed"].but(doc="seed of init='sample'"), COMMON["progress"],
        COMMON["heuristic"].but(doc="elimination-order heuristic of the max-product pass"),
        COMMON["memory_budget"].but(doc="bytes for the largest max-product table (None: 2 GiB)"),
    )
    rank = 90
    rank_note = "a point estimate without uncertainty is the last resort"

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

    def deciding_fact(self, analysis, verdicts) -> str:
        """Nothing that gives a distribution applies."""
        failed = "; ".join(f"{n}: {w}" for n, w in not_ok(verdicts).items())
        return (f"last resort, a point estimate: no method giving a distribution applies ({failed}): "
                f"{verdicts[self.name][1]}{held_params_note(analysis, verdicts)}")

    def assess(self, posterior, graph, analysis):
        """A point estimate is not a posterior: unreliable as one (its spread is zero)."""
        numbers = {"log_joint": posterior.diagnostics.get("log_joint")}
        what = ("the joint MAP assignment (max-product)" if not graph.continuous_latent()
                else "the posterior mode")
        return Trust(UNRELIABLE, [f"a point estimate ({what}) carries no posterior uncertainty: means are the mode and "
                                  "spreads are zero; use method='laplace' (or 'exact' for discrete latents) for a "
                                  "posterior"], numbers, next_method="laplace" if graph.continuous_latent() else "exact")

    def run(self, graph, analysis, **options):
        """Run MAP with ``options`` (see :attr:`options`).

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
        o = self.settings(options)
        start = time.perf_counter()
        if o.learn_params and not graph.params():
            raise OptionError(f"learn_params=True but model '{graph.model.name}' has no ppl.param to learn")
        with run_context(o.device, o.dtype, o.seed):
            fit = MAPFit(graph, analysis, o)
            result = run_iterations(fit, max_iter=1 if fit.single else o.max_rounds, tol=o.rtol, n_init=o.n_init,
                                    progress=o.progress if not fit.single else False)
            state = fit.finish(result)
            if fit.pnames:
                store_params(state["params"])
            if fit.continuous:
                check_existence(fit.lj, graph, fit.continuous, state["values"], state["disc"], state["params"])
            kkt = kkt_residuals(fit.lj, graph, fit.continuous, state["values"], state["disc"], state["params"]) \
                if fit.continuous else {}
        point = {**state["values"], **state["disc"]}
        order = [n for n in graph.latent() if n in point]
        diagnostics = {"log_joint": result.history[-1], "rounds": len(result.history), "inner": fit.steps,
                       "restarts": result.restarts, "best_restart": result.best_restart, "device": str(o.device)}
        if kkt:
            diagnostics["kkt_residual"] = kkt
        return PointPosterior(
            self.name, graph=graph, values={n: point[n] for n in order},
            event_dims={n: len(graph.variables[n].event_shape) for n in order},
            log_joint=result.history[-1], params=dict(state["params"] or {}), history=result.history,
            converged=result.converged, elapsed=time.perf_counter() - start, diagnostics=diagnostics)


class MAPFit(IterativeFit):
    """MAP's rounds as hooks of the iterative template: a round updates the params (MAP
    learning), then the discrete latents by max-product, then the continuous latents by
    gradient ascent; the bound is ``log p(ĥ, v; θ)`` after the round, which never
    decreases (block coordinate ascent).  A model with one kind of latent and no params
    takes one round (:attr:`single`), converged when its inner optimisations are."""

    what = "log joint"
    label = "MAP"
    monotone = True
    records_start = False

    def __init__(self, graph, analysis, o):
        self.graph, self.analysis, self.o = graph, analysis, o
        self.pnames = graph.params() if o.learn_params else []
        self.continuous, self.discrete = graph.continuous_latent(), graph.discrete_latent()
        self.full = {"optimizer": o.optimizer, "lr": o.lr, "max_iter": o.max_iter, "tol": o.tol, "memo": {}}
        self.single = not self.pnames and not (self.continuous and self.discrete)
        self.round_iter = o.max_iter if o.round_iter is None else o.round_iter
        self.inner = self.full if self.single else {**self.full, "max_iter": self.round_iter}
        self.lj = LogJoint(graph, o.device, o.dtype)
        self.steps: list = []
        self.runs: dict = {}   # restart -> its steps

    def _infer_latents(self, state, inner) -> dict:
        state = dict(state)
        if self.discrete:
            state["disc"], best = discrete_step(self.graph, self.analysis, state["values"], state["params"],
                                                self.o.dtype, self.o.device)
            self.steps.append({"step": "max-product", "log_joint": best})
        if self.continuous:
            state["values"], info = latent_step(self.lj, self.graph, self.continuous, state["values"], state["disc"],
                                                state["params"], inner)
            self.steps.append(info)
        return state

    def initialize(self, restart):
        self.steps = self.runs.setdefault(restart, [])
        params = current_params(self.graph, self.pnames, self.o.dtype, self.o.device) if self.pnames else None
        init = self.o.init if restart == 0 else "sample"
        values = self.lj.initial_values(self.continuous, init, params) if self.continuous else {}
        state = {"values": values, "disc": {}, "params": params}
        if self.pnames:  # ĥ for the initial θ; each round then updates θ, then ĥ given the new θ
            state = self._infer_latents(state, self.inner)
        return state

    def step(self, state):
        if self.pnames:
            params, info = param_step(self.lj, self.graph, self.pnames, {**state["values"], **state["disc"]},
                                      state["params"], self.inner)
            self.steps.append(info)
            state = {**state, "params": params}
        state = self._infer_latents(state, self.inner)
        with torch.no_grad():
            state["total"] = float(self.lj({**state["values"], **state["disc"]}, state["params"]))
        return state

    def bound(self, state):
        return state["total"]

    def check_step(self, value, first, iteration):
        if value != value or value in (float("inf"), float("-inf")):
            raise NumericalError(f"the log joint of model '{self.graph.model.name}' is {value} at the MAP estimate")

    def stop(self, history, rule, change):
        if self.single:
            return all(s.get("converged", True) for s in self.steps[-3:])
        return rule

    def not_converged(self, result, max_iter, tol):
        return (f"MAP did not converge in {len(result.history)} round(s) (inner residual "
                f"{self.steps[-1].get('residual', 0):.3g}, tol {self.o.tol}); raise max_iter / max_rounds")

    def finish(self, result) -> dict:
        """The best state, its latents solved to ``tol`` when rounds capped the inner
        iterations (``round_iter``); ``result.history[-1]`` then holds the finished round."""
        state = result.state
        self.steps = self.runs.get(result.best_restart, self.steps)
        if self.round_iter < self.o.max_iter and self.continuous:
            values, info = latent_step(self.lj, self.graph, self.continuous, state["values"], state["disc"],
                                       state["params"], self.full)
            self.steps.append(info)
            state = {**state, "values": values}
            with torch.no_grad():
                result.history[-1] = float(self.lj({**values, **state["disc"]}, state["params"]))
        return state
