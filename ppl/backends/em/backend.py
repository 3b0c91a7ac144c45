"""``method="em"``: maximum-likelihood learning of ``ppl.param`` values by
expectation-maximisation with exact E-steps.

EM is coordinate ascent on the evidence lower bound ``L(v, θ, q)`` (Goodfellow et al.
2016, §19.2, eq. 19.8; Dempster, Laird & Rubin 1977):

* E-step: ``q(h) = p(h | v; θ)``, exactly, by the exact backend's elimination plan
  (:class:`~ppl.backends.common.discrete.DiscretePlan`); the bound is then tight,
  ``L = log p(v; θ)``, which is recorded each iteration;
* M-step: ``θ ← argmax_θ Σ_f E_q[log φ_f(x_f; θ)]``, in closed form from expected
  sufficient statistics where a parameter's role is recognised, by L-BFGS otherwise
  (:mod:`ppl.backends.em.mstep`).

With ``map_latents``, global continuous latents are estimated by MAP: EM for MAP
(Bishop 2006, §9.3, where the M-step maximises Q(θ, θ_old) + ln p(θ), and §9.4; Goodfellow
et al. 2016, §19.2–19.3) maximises ``log p(v, θ) = log p(v | θ) + log p(θ)``; see
:mod:`ppl.backends.em.map_latents`.

Factor tables at each new θ come from :mod:`ppl.compiler.parametric` (stacked, no model
re-run for recognised families), and chains use the exact backend's parallel scan, so an
iteration on a 100 000-step HMM is a handful of tensor operations.
"""

from __future__ import annotations

import math
import time

import torch

from ...analysis.report import analyze_graph
from ...compiler.parametric import parametric_tables
from ...compiler.tables import enumeration_dims
from ...errors import DataError, UnsupportedModelError
from ...ops.contract import LogFactor
from ...trust import RELIABLE, UNRELIABLE, Trust
from ..base import Applicability, Backend
from ..common.discrete import DiscretePlan
from ..common.distributed import NO_SHARD, data_shard
from ..common.elimination import discrete_applicability, table_posterior
from ..common.existence import FAR_FREE, unbounded_params, unbounded_reason
from ..common.params import current_params, store_params
from ..common.streaming import stream_trust
from ..options import (COMMON, STREAM, Boolean, InstanceOf, Integer, MappingOf, NoneValue, OneOf, Option, Real,
                       option_table)
from ..template import IterativeFit, run_iterations
from ..base import list_names
from .init import random_tables, seed_locations, user_init
from .map_latents import map_model, prior_factor_name, select_map_latents
from .mstep import GradientMStep, apply_closed_form, plan_closed_forms
from .online import run_online_em
from .tablefeed import TableFeed

__all__ = ["EMBackend"]


class EMBackend(Backend):
    """EM with exact E-steps (see the module docstring); options in :attr:`options`.

    ``init``: ``None`` starts from the current values of the ``ppl.param`` sites in Pyro's
    param store (EM leaves its result there, so a second run continues from it); a dict
    name -> value (constrained space) overrides some; ``"kmeans++"`` gives every param used
    as the location of a Normal / MultivariateNormal selected by a discrete latent
    k-means++ seeds (Arthur & Vassilvitskii 2007) from its observed data as rows;
    ``"random"`` random data rows.  Restarts after the first re-seed locations by
    k-means++ (or, without locations, draw every probability table afresh).

    ``map_latents`` (``True``, a name or a list of names) estimates global continuous
    latents by MAP: each chosen site ``s`` (a ``sample`` outside every plate that holds
    data or discrete latents) becomes a param of the same name and shape, constrained to
    the prior's support and initialised at the prior's mean (or ``init[s]``), plus a factor
    ``"<s>_prior"`` = log p(s).  EM then maximises log p(v, θ) = log p(v | θ) + log p(θ)
    (EM for MAP: Bishop 2006, §9.3 and §9.4; Goodfellow et al. 2016, §19.2–19.3): the
    M-step maximises Q(θ) + log p(θ), in closed form for a Normal prior on a Normal ``loc``
    and a Dirichlet prior (all concentrations ≥ 1) on Categorical ``probs``, by L-BFGS
    otherwise, and ``history`` holds log p(v, θ_i), which never decreases.  Raises
    ``OptionError`` for a name that is not a latent site, a discrete site or a bad type,
    and ``UnsupportedModelError`` for a local latent.
    """

    name = "em"
    summary = "maximum-likelihood ppl.param learning by EM with exact E-steps and closed-form M-steps"
    options = option_table(
        Option("max_iter", Integer(0), 100, "M-steps at most"),
        Option("tol", Real(0.0), 1e-4, "stop when the average log-likelihood (nats per observed value) changes less"),
        Option("n_init", Integer(1), 1, "restarts (k-means++ or random tables after the first); the best is kept"),
        Option("init", OneOf("kmeans++", "random") | MappingOf("a dict param -> value") | NoneValue(), None,
               "None (param store), a dict param -> value, 'kmeans++' or 'random'"),
        Option("reg_covar", Real(0.0), 1e-6, "added to variances and covariance diagonals (as scikit-learn)"),
        Option("m_step", OneOf("auto", "gradient"), "auto", "'auto' (closed form where recognised) or 'gradient'"),
        Option("gradient_steps", Integer(1), 20, "L-BFGS iterations per gradient M-step"),
        COMMON["seed"].but(doc="seed of the initialisation and of sample()"),
        COMMON["dtype"], COMMON["device"], COMMON["heuristic"], COMMON["memory_budget"], COMMON["progress"],
        COMMON["distributed"],
        COMMON["marginals"].but(doc="latent marginals at the learned params"),
        COMMON["map"].but(doc="MAP assignment at the learned params"),
        Option("map_latents", Boolean() | InstanceOf(str, "a site name")
               | InstanceOf((list, tuple), "a list of site names") | NoneValue(), None,
               "True, a site name or a list: global continuous latents estimated by MAP"),
        *STREAM.values(),
        Option("polish_passes", Integer(0), 0,
               "stream: after the epochs, at most this many batch EM steps over the stream (one pass each, exact "
               "sums) until one moves no param more than stream_tol: batch EM's fixed point in bounded memory"),
    )
    rank = 10
    rank_note = "EM ranks first only for a model with ppl.params to learn"

    def check(self, analysis) -> Applicability:
        """EM applies when every latent is discrete, the model has ``ppl.param`` values to
        learn and the exact E-step fits the memory budget (the exact backend's check).
        With ``map_latents``, :meth:`check_options` checks the model with those latents
        made params instead."""
        graph = analysis.graph
        if analysis.continuous:
            shown = ", ".join(analysis.continuous[:6]) + (" ..." if len(analysis.continuous) > 6 else "")
            return Applicability(
                False, f"continuous latent(s) {shown}: EM's exact E-step needs every latent discrete (estimate "
                "global continuous latents by MAP with map_latents=True, make them ppl.params, or use "
                "method='svi')", UnsupportedModelError)
        if not graph.params():
            return Applicability(False, "the model has no ppl.param to learn", UnsupportedModelError)
        exact = discrete_applicability(analysis)
        if not exact.ok:
            return Applicability(False, f"exact E-step: {exact.reason}; for variational EM (a mean-field "
                                 "E-step) use method='cavi' with learn_params=True", exact.error, exact.details)
        return Applicability(True, f"{len(graph.params())} param(s) to learn; exact E-step: {exact.reason}")

    def check_options(self, analysis, verdict: Applicability, options: dict) -> Applicability:
        """With ``map_latents``, the verdict for the model with those latents made params
        (validating the names; see :func:`~ppl.backends.em.map_latents.select_map_latents`)."""
        names = select_map_latents(analysis.graph, options.get("map_latents"))
        if not names:
            return verdict
        manalysis = _map_analysis(analysis, names)
        v = self.check(manalysis)
        return Applicability(v.ok, f"MAP of {list(names)}; {v.reason}", v.error, v.details)

    def deciding_fact(self, analysis, verdicts) -> str:
        """The model has params to learn and a tractable E-step."""
        params = list(analysis.graph.params())
        return (f"the model has {len(params)} ppl.param(s) to learn ({list_names(params)}) and EM's E-step is "
                f"tractable, so EM learns them (exact would hold them fixed): {verdicts[self.name][1]}")

    def assess(self, posterior, graph, analysis):
        """Reliable when EM converged: the latents' posterior is then exact given the learned
        params, which are a (local) maximum-likelihood point estimate; unreliable when it
        stopped at ``max_iter``."""
        d = posterior.diagnostics
        if "stream" in d:
            return stream_trust(posterior, "online EM's params stopped moving over the last epoch: a fixed point of "
                                "EM (a local maximum of the likelihood), found by stochastic approximation", True)
        numbers = {"n_iter": d.get("n_iter"), "average_log_likelihood": d.get("average_log_likelihood")}
        restarts = d.get("restarts") or []
        if len(restarts) > 1:
            numbers["restart_spread"] = max(restarts) - min(restarts)
        if d.get("unbounded"):
            return Trust(UNRELIABLE, list(d["unbounded"]), numbers)
        if not posterior.converged:
            return Trust(UNRELIABLE, ["EM stopped at max_iter before the log-likelihood converged: the params are "
                                      "not at a maximum yet; raise max_iter"], numbers, next_method="em")
        reasons = ["EM converged: the latents' posterior is exact given the learned params, which are a maximum-"
                   "likelihood point estimate (a local maximum; n_init restarts compare several)"]
        return Trust(RELIABLE, reasons, numbers)

    def run(self, graph, analysis, **options):
        """Run EM with ``options`` (see :attr:`options`).

        Returns
        -------
        TablePosterior
            ``params`` (learned θ), ``history`` (log p(v; θ_i) per iteration, nats,
            ``history[0]`` at the initial θ), ``log_evidence`` = ``elbo`` at the learned θ,
            the latents' posterior at the learned θ, ``converged``.  With
            ``map_latents``, ``params`` also holds the MAP values of those sites and
            ``history`` / ``log_evidence`` are log p(v, θ) (prior included).

        Raises
        ------
        DataError
            Bad ``init`` (unknown name, shape, outside the constraint), evidence
            impossible at the initial θ, or a covariance turning singular.
        OptionError (a ValueError)
            Bad option values, a ``map_latents`` entry that is not a continuous latent
            site, or ``distributed=True`` outside a process group.
        UnsupportedModelError
            A ``map_latents`` site that is a local latent; with ``distributed``, a latent
            outside the data plate.
        ModelError
            With ``distributed``, ranks whose models differ
            (:func:`~ppl.backends.common.distributed.data_shard`).

        With ``distributed=True`` each rank holds a shard of the data plate; the E-step's
        expected sufficient statistics and the log likelihood are sums over data points
        (Dempster, Laird & Rubin 1977; Bishop 2006, §9.2), so they are summed over ranks
        (the factors outside the plate weighted ``1 / W`` on each of the W ranks), every
        rank takes the same M-step and ends with the same params.  θ_0 is rank 0's (so
        ``init="kmeans++"`` seeds from rank 0's shard).

        With ``stream`` (a callable returning an iterator of minibatch dicts), online EM
        (Cappé & Moulines 2009; :mod:`ppl.backends.em.online`) returns a
        :class:`~ppl.posterior.stream.StreamPosterior`; see docs/streaming.md.
        """
        o = self.settings(options)
        start = time.perf_counter()
        if o.stream is not None:  # online EM over minibatches (docs/streaming.md)
            return run_online_em(self.name, EMFit, graph, analysis, o, start)
        map_names = select_map_latents(graph, o.map_latents)
        if map_names:
            analysis = _map_analysis(analysis, map_names)
            graph = analysis.graph
        shard = data_shard(graph, o.distributed, self.name, local=graph.latent())
        fit = EMFit.build(graph, analysis, o, map_names, shard)
        setup = time.perf_counter() - start
        result = run_iterations(fit, max_iter=o.max_iter, tol=o.tol, n_obs=fit.n_obs, n_init=o.n_init,
                                progress=o.progress)
        state = result.state
        final = fit.plan.with_tables(*state["tables"])
        log_z, probs = final.log_partition(marginals=o.marginals)
        params = {k: v.clone() for k, v in fit.pt.space.unflat(state["flat"]).items()}
        store_params(params)
        diagnostics = {**result.diagnostics(), "m_step": fit.m_step_labels(), "n_obs": fit.n_obs,
                       "setup_seconds": setup, "average_log_likelihood": result.history[-1] / fit.n_obs,
                       "fast_factors": sum(len(g.members) for g in fit.pt.groups), "slow_factors": list(fit.pt.slow),
                       "device": str(o.device)}
        if map_names:
            diagnostics["map_latents"] = list(map_names)
        diagnostics["unbounded"] = _unbounded(fit, params, o.reg_covar)
        value = shard.total(log_z)
        return shard.annotate(table_posterior(
            self.name, graph, final, probs, seed=o.seed, map=o.map, elbo=value, log_evidence=value, params=params,
            history=result.history, converged=result.converged, start=start, diagnostics=diagnostics))


class EMFit(IterativeFit):
    """EM as hooks of the iterative template: the state is θ (a flat vector) with the
    E-step at it (``log_z``, the factor and chain marginals, the tables); a step is the
    M-step from those responsibilities followed by the E-step at the new θ."""

    what = "log-likelihood"
    label = "EM"
    monotone = True

    def __init__(self, graph, pt, plan, feed, updates, gradient, gstep, theta0, init, gen, reg_covar,
                 shard=NO_SHARD):
        self.graph, self.pt, self.plan, self.feed = graph, pt, plan, feed
        self.updates, self.gradient, self.gstep = updates, gradient, gstep
        self.theta0, self.init, self.gen, self.reg_covar = theta0, init, gen, reg_covar
        self.shard = shard
        self.n_obs = shard.n_obs(graph)
        self.why: dict = {}
        # distributed: the share of each factor outside the data plate (1 / W), for its
        # table (in the log likelihood) and for its E-step weights (in the M-step)
        self.table_shares = [shard.share(n) for n in feed.standalone]
        self.weight_shares = [torch.tensor([shard.share(m) for m in g.members], dtype=pt.dtype, device=pt.device)
                              for g in pt.groups]
        self.shared = any(s != 1.0 for s in self.table_shares) or any(bool((w != 1).any())
                                                                      for w in self.weight_shares)

    @classmethod
    def build(cls, graph, analysis, o, map_names, shard=NO_SHARD) -> "EMFit":
        """The parametric tables, the E-step's plan and the M-step's updates of ``graph``
        (``shard``: this rank's share of the data plate, for a distributed run)."""
        dtype, device = o.dtype, o.device
        theta0 = current_params(graph, graph.params(), dtype, device)
        dims = graph.memo("em", ("enumeration_dims", analysis.heuristic),
                          lambda: enumeration_dims(graph, analysis.moral))  # a colouring: seconds on long chains
        pt = parametric_tables(graph, dims, graph.plate_order, theta0, dtype=dtype, device=device)
        theta0.update(user_init(o.init, pt.space, dtype, device))
        plan, feed = _structure(graph, analysis, pt, theta0, dtype, device)
        priors = _prior_factors(graph, pt, map_names, theta0) if map_names else {}
        updates, gradient, why = plan_closed_forms(pt, gradient_only=(o.m_step == "gradient"), priors=priors)
        gstep = GradientMStep(pt, gradient, max_iter=o.gradient_steps, shard=shard)
        gen = torch.Generator().manual_seed(int(o.seed) if o.seed is not None else 0)
        fit = cls(graph, pt, plan, feed, updates, gradient, gstep, theta0, o.init, gen, o.reg_covar, shard)
        fit.why = why
        return fit

    def initialize(self, restart):
        theta = dict(self.theta0)
        strategy = self.init if isinstance(self.init, str) else ("kmeans++" if restart > 0 else None)
        if strategy is not None:
            seeded = seed_locations(self.pt, theta, strategy, self.gen)
            # a model without Normal locations to seed (a BN, a categorical HMM): restarts draw
            # every probability table afresh, so they differ
            theta.update(seeded or random_tables(self.pt.space, theta, self.gen))
        return self.e_step(self.shard.broadcast(self.pt.space.flat(theta).clone()))  # distributed: rank 0's θ_0

    def e_step(self, flat) -> dict:
        """The E-step at θ = ``flat``: ``log_z``, the factor and chain marginals, the tables."""
        pt = self.pt
        with torch.no_grad():
            values = pt.space.unflat(flat)
            other = dict(pt.constant)
            other.update(pt.slow_tables(values))
            tables = self.feed.assemble(pt.group_tables(flat), other)
            if self.shared:  # factors outside the data plate hold no latent: their share leaves q as it is
                tables = ([t if s == 1.0 else t * s for t, s in zip(tables[0], self.table_shares)], tables[1])
            log_z, fm, cm = self.plan.factor_posteriors(*tables)
        return {"flat": flat, "log_z": log_z, "fm": fm, "cm": cm, "tables": tables,
                "total": self.shard.total(log_z)}

    def step(self, state):
        return self.e_step(self.m_step(state))

    def m_step(self, state) -> torch.Tensor:
        """θ (flat) after the M-step from ``state``'s E-step weights (closed forms, then the
        gradient M-step); with a streaming hook as ``shard`` the closed forms read the
        running statistics (online EM, :mod:`ppl.backends.common.streaming`)."""
        flat = state["flat"].clone()
        with torch.no_grad():
            weights, other_w = self.feed.weights(state["fm"], state["cm"])
            if self.shared:
                weights = [w * s.reshape((-1,) + (1,) * (w.dim() - 1)) for w, s in zip(weights, self.weight_shares)]
                other_w = {n: w * self.shard.share(n) for n, w in other_w.items()}
            centre = state["flat"] if getattr(self.shard, "centre_at_e_step", False) else None
            for u in self.updates:
                apply_closed_form(u, self.pt, flat, weights, self.reg_covar, self.shard, centre)
        self.gstep(flat, weights, other_w)
        return flat

    def bound(self, state):
        return state["total"]

    def _impossible(self, where: str) -> DataError:
        return DataError(
            f"the evidence has probability zero under model '{self.graph.model.name}' at the {where} parameter "
            "values (log-likelihood -inf); start from values that give every observation positive probability",
            log_evidence=-math.inf)

    def check_start(self, value, restart):
        if not math.isfinite(value):
            raise self._impossible("initial")

    def check_step(self, value, first, iteration):
        if not math.isfinite(value):
            raise self._impossible(f"iteration-{iteration}")

    def not_converged(self, result, max_iter, tol):
        return (f"EM did not converge in max_iter={max_iter} iterations (last change of the average log-likelihood "
                f"{result.last_change:.3g} >= tol={tol}); raise max_iter or tol")

    def m_step_labels(self) -> dict:
        """Param -> how its M-step is done (closed form by name, or gradient and why)."""
        labels = {u.param: u.label for u in self.updates}
        labels.update({p: f"gradient (L-BFGS): {self.why.get(p, '')}".rstrip(": ") for p in self.gradient})
        return labels


# ---------------------------------------------------------------------- helpers
def _unbounded(fit, params: dict, reg_covar: float) -> list:
    """Why the learned params are no maximum-likelihood estimate (empty when they may be
    one): a Normal scale or a covariance at the M-step's floor (``reg_covar``), or a
    transformed param run far toward its support edge, where the log-likelihood keeps
    increasing along a ray toward the edge (:func:`~ppl.backends.common.existence.unbounded_params`:
    a component collapsed on a data point, Bishop 2006, PRML §9.2.1).  The floor only
    chooses what to probe; the probe of the log-likelihood decides."""
    space, elements = fit.pt.space, {}
    for u in fit.updates:
        v = params[u.param].detach()
        if u.role == "normal_scale" and reg_covar > 0 and bool((v * v <= 2 * reg_covar).any()):
            elements[u.param] = torch.nonzero((v * v <= 2 * reg_covar).reshape(-1)).reshape(-1).tolist()
        elif u.role == "mvn_cov" and reg_covar > 0:
            cov = v @ v.transpose(-1, -2) if u.uses[0][1] == "scale_tril" else v
            cov = torch.linalg.inv(cov) if u.uses[0][1] == "precision_matrix" else cov
            if bool((torch.linalg.eigvalsh(cov) <= 2 * reg_covar).any()):
                elements[u.param] = None
    for n in fit.gradient:
        c = space.constraints.get(n)
        if c is not None and n not in elements:
            free = torch.distributions.transform_to(c).inv(params[n].detach()).reshape(-1)
            far = torch.nonzero(free.abs() > FAR_FREE).reshape(-1).tolist()
            if far:
                elements[n] = far
    if not elements:
        return []

    def objective(values):
        return float(fit.e_step(space.flat({**params, **values}))["total"])

    edges = unbounded_params(objective, params, dict(space.constraints), elements)
    return [unbounded_reason(edges, "em")] if edges else []


def _map_analysis(analysis, names):
    """The analysis of the model with ``names`` made params (memoised on the new graph)."""
    mgraph = map_model(analysis.graph, names)
    key = ("map_analysis", analysis.heuristic, analysis.memory_budget, analysis.itemsize)
    return mgraph.memo("em", key, lambda: analyze_graph(mgraph, heuristic=analysis.heuristic,
                                                        memory_budget=analysis.memory_budget,
                                                        itemsize=analysis.itemsize))


def _prior_factors(graph, pt, names, theta0) -> dict:
    """Install a direct (no model run) evaluation of each MAP site's prior factor in
    ``pt`` where the prior depends on nothing but the site, and return site -> (factor
    name, prior distribution) for those (the candidates for a closed-form MAP M-step)."""
    handler = graph.memo("em", "map_latents_handler", lambda: None)
    known = graph.memo("em", ("map_priors", id(pt)), dict)  # site -> (factor, prior) installed in pt
    out = {}
    for name in names:
        f = prior_factor_name(name)
        if f not in pt.slow or set(graph.factors[f].scope) - {name}:
            continue
        if f not in pt.direct:
            with torch.no_grad():
                ref = pt.slow_tables(theta0)[f]  # a model run: also refreshes handler.priors
            prior = handler.priors[name]

            def table(values, prior=prior, name=name, shape=ref.shape):
                return prior.log_prob(values[name]).to(pt.dtype).reshape(shape)

            try:
                with torch.no_grad():
                    ok = bool(torch.allclose(table(theta0), ref, rtol=1e-10, atol=1e-10))
            except (RuntimeError, ValueError):
                ok = False
            if not ok:
                continue
            pt.direct[f] = table
            known[name] = (f, prior)
        if name in known:
            out[name] = known[name]
    return out


def _structure(graph, analysis, pt, theta0, dtype, device):
    """The elimination structure of the E-step (tables at θ0) and its :class:`TableFeed`,
    memoised per graph."""
    def build():
        with torch.no_grad():
            tables = pt.tables(theta0)
        factors = {n: LogFactor(tables[n], *pt.layouts[n]) for n in graph.factors}
        plan = DiscretePlan(graph, analysis, dtype=dtype, device=device, tables=factors)
        return plan, TableFeed(plan, pt)

    return graph.memo("em", ("plan", dtype, str(device), analysis.heuristic), build)
