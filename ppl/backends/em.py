"""``method="em"``: maximum-likelihood learning of ``ppl.param`` values by
expectation-maximisation with exact E-steps.

EM is coordinate ascent on the evidence lower bound ``L(v, θ, q)`` (Goodfellow et al.
2016, §19.2, eq. 19.8; Dempster, Laird & Rubin 1977):

* E-step: ``q(h) = p(h | v; θ)``, exactly, by the exact backend's elimination plan
  (:class:`~ppl.backends.discrete.DiscretePlan`); the bound is then tight,
  ``L = log p(v; θ)``, which is recorded each iteration;
* M-step: ``θ ← argmax_θ Σ_f E_q[log φ_f(x_f; θ)]``, in closed form from expected
  sufficient statistics where a parameter's role is recognised, by L-BFGS otherwise
  (:mod:`ppl.backends.mstep`).

With ``map_latents``, global continuous latents are estimated by MAP: EM for MAP
(Bishop 2006, §9.3, where the M-step maximises Q(θ, θ_old) + ln p(θ), and §9.4; Goodfellow
et al. 2016, §19.2–19.3) maximises ``log p(v, θ) = log p(v | θ) + log p(θ)``; see
:mod:`ppl.backends.map_latents`.

Factor tables at each new θ come from :mod:`ppl.compiler.parametric` (stacked, no model
re-run for recognised families), and chains use the exact backend's parallel scan, so an
iteration on a 100 000-step HMM is a handful of tensor operations.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from ..compiler.parametric import parametric_tables
from ..compiler.tables import enumeration_dims
from ..errors import ConvergenceWarning, DataError, OptionError, UnsupportedModelError
from ..ops.contract import LogFactor
from ..ops.expfam import uniform_simplex
from .base import (Applicability, Backend, BoundMonitor, check_int, check_number, count_observations,
                   current_params, store_params)
from .discrete import DiscretePlan, table_posterior
from .exact import ExactBackend
from .map_latents import map_model, prior_factor_name, select_map_latents
from .mstep import GradientMStep, apply_closed_form, plan_closed_forms
from .tablefeed import TableFeed

__all__ = ["EMBackend"]


class EMBackend(Backend):
    """EM with exact E-steps (see the module docstring).

    Options
    -------
    max_iter : int
        At most this many M-steps (default 100).
    tol : float
        Stop when the average log-likelihood (``log p(v; θ) / n_obs``, ``n_obs`` the
        number of observed values) changes by less than ``tol`` (default 1e-4).
    n_init : int
        Restarts (default 1); the one with the highest final log-likelihood is kept.
        Restarts after the first re-seed location parameters by k-means++.
    init : None, dict, "kmeans++" or "random"
        ``None``: the current values of the ``ppl.param`` sites in Pyro's param store
        (where the model's ``ppl.param`` statements put them; EM leaves its result there,
        so a second run continues from it); a dict name -> value (constrained space) overrides some; ``"kmeans++"``:
        every param used as the location of a Normal / MultivariateNormal selected by a
        discrete latent gets k-means++ seeds (Arthur & Vassilvitskii 2007) from its observed
        data as rows; ``"random"``: random data rows.
    reg_covar : float
        Added to variances and covariance diagonals by the closed-form M-step (default
        1e-6, as scikit-learn).
    m_step : {"auto", "gradient"}
        ``"gradient"`` uses L-BFGS for every param (for checking the closed forms).
    gradient_steps : int
        L-BFGS iterations per gradient M-step (default 20).
    seed : int
        Seed of the initialisation and of ``sample()``.
    dtype, device, heuristic, memory_budget
        As for ``method="exact"``.
    progress : bool or None
        tqdm bar with the running log-likelihood (``None``: only on a terminal).
    marginals, map : bool
        Compute the latents' marginals / MAP assignment at the learned θ (default True).
    map_latents : bool, str or list of str
        Estimate global continuous latents by MAP (default ``None``: none). ``True``:
        every continuous latent; a name or a list of names: those sites.  Each chosen
        site ``s`` (a ``sample`` outside every plate that holds data or discrete latents,
        of any shape, e.g. ``(K,)`` component locations or ``(K,)`` Dirichlet weights)
        becomes a param of the same name and shape, constrained to the prior's support
        and initialised at the prior's mean (or ``init[s]``), plus a factor
        ``"<s>_prior"`` = log p(s).  EM then maximises log p(v, θ) = log p(v | θ) +
        log p(θ) (EM for MAP: Bishop 2006, §9.3 and §9.4; Goodfellow et al. 2016,
        §19.2–19.3): the M-step maximises Q(θ) + log p(θ) — in closed form for a Normal
        prior on a Normal ``loc`` and a Dirichlet prior (all concentrations ≥ 1) on
        Categorical ``probs``, by L-BFGS otherwise — and ``history`` holds
        log p(v, θ_i), which never decreases.  The MAP values are in ``post.params``
        under the site names; ``post.diagnostics["map_latents"]`` lists the sites.
        Raises ``OptionError`` for a name that is not a latent site, a discrete site or
        a bad type, and ``UnsupportedModelError`` for a local latent (inside a plate
        with data or discrete latents).
    """

    name = "em"
    summary = "maximum-likelihood ppl.param learning by EM with exact E-steps and closed-form M-steps"
    options = {
        "max_iter": "M-steps at most, default 100",
        "tol": "stop when the average log-likelihood changes less, default 1e-4",
        "n_init": "restarts, best kept, default 1",
        "init": "None (param store), dict name -> value, 'kmeans++' or 'random'",
        "reg_covar": "added to variances / covariance diagonals, default 1e-6",
        "m_step": "'auto' (closed form where recognised) or 'gradient'",
        "gradient_steps": "L-BFGS iterations per gradient M-step, default 20",
        "seed": "seed of the initialisation and of sample()",
        "dtype": "table precision, default torch.float64",
        "device": "'cpu' or 'cuda', default cpu",
        "heuristic": "'min_fill' (default) or 'min_degree'",
        "memory_budget": "bytes for the largest table, default 2 GiB",
        "progress": "tqdm progress bar (None: only on a terminal)",
        "marginals": "latent marginals at the learned params (default True)",
        "map": "MAP assignment at the learned params (default True)",
        "map_latents": "True, a site name or a list: global continuous latents estimated by MAP (default None)",
    }

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
        exact = ExactBackend().check(analysis)
        if not exact.ok:
            return Applicability(False, f"exact E-step: {exact.reason}; for variational EM (a mean-field "
                                 "E-step) use method='cavi' with learn_params=True", exact.error, exact.details)
        return Applicability(True, f"{len(graph.params())} param(s) to learn; exact E-step: {exact.reason}")

    def check_options(self, analysis, verdict: Applicability, options: dict) -> Applicability:
        """With ``map_latents``, the verdict for the model with those latents made params
        (validating the names; see :func:`~ppl.backends.map_latents.select_map_latents`)."""
        names = select_map_latents(analysis.graph, options.get("map_latents"))
        if not names:
            return verdict
        manalysis = _map_analysis(analysis, names)
        v = self.check(manalysis)
        return Applicability(v.ok, f"MAP of {list(names)}; {v.reason}", v.error, v.details)

    def run(self, graph, analysis, *, max_iter=100, tol=1e-4, n_init=1, init=None, reg_covar=1e-6, m_step="auto",
            gradient_steps=20, seed=None, dtype=torch.float64, device=None, heuristic=None, memory_budget=None,
            progress=None, marginals=True, map=True, map_latents=None):
        """Run EM; see the class docstring for options.

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
            Bad ``max_iter``, ``tol``, ``n_init``, ``reg_covar``, ``m_step``, or a
            ``map_latents`` entry that is not a continuous latent site.
        UnsupportedModelError
            A ``map_latents`` site that is a local latent.
        """
        del heuristic, memory_budget  # consumed by the analysis
        start = time.perf_counter()
        map_names = select_map_latents(graph, map_latents)
        if map_names:
            analysis = _map_analysis(analysis, map_names)
            graph = analysis.graph
        _check_numbers(max_iter=max_iter, tol=tol, n_init=n_init, reg_covar=reg_covar, gradient_steps=gradient_steps)
        if m_step not in ("auto", "gradient"):
            raise OptionError(f"m_step must be 'auto' or 'gradient', got {m_step!r}")
        device = torch.device(device) if device is not None else torch.device("cpu")
        names = graph.params()
        theta0 = current_params(graph, names, dtype, device)
        dims = graph.cache.get(("enumeration_dims", analysis.heuristic))
        if dims is None:  # a graph colouring: seconds on a 100 000-step chain, so once per graph
            dims = graph.cache[("enumeration_dims", analysis.heuristic)] = enumeration_dims(graph, analysis.moral)
        pt = parametric_tables(graph, dims, graph.plate_order, theta0, dtype=dtype, device=device)
        space = pt.space
        theta0.update(_user_init(init, space, dtype, device))
        plan, feed = _structure(graph, analysis, pt, theta0, dtype, device)
        priors = _prior_factors(graph, pt, map_names, theta0) if map_names else {}
        updates, gradient, why = plan_closed_forms(pt, gradient_only=(m_step == "gradient"), priors=priors)
        gstep = GradientMStep(pt, gradient, max_iter=gradient_steps)
        n_obs = count_observations(graph)
        gen = torch.Generator().manual_seed(int(seed) if seed is not None else 0)
        setup = time.perf_counter() - start

        runs = []
        for r in range(n_init):
            theta = dict(theta0)
            strategy = init if isinstance(init, str) else ("kmeans++" if r > 0 else None)
            if strategy is not None:
                seeded = _seed_locations(pt, theta, strategy, gen)
                # a model without Normal locations to seed (a BN, a categorical HMM): restarts draw
                # every probability table afresh, so they differ
                theta.update(seeded or _random_tables(pt.space, theta, gen))
            runs.append(self._fit(pt, plan, feed, updates, gstep, space.flat(theta).clone(), max_iter, tol, n_obs,
                                  reg_covar, progress, f"EM {r + 1}/{n_init}" if n_init > 1 else "EM"))
        best = max(range(n_init), key=lambda i: runs[i]["history"][-1])
        run = runs[best]
        if not run["converged"]:
            warnings.warn(f"EM did not converge in max_iter={max_iter} iterations (last change of the average "
                          f"log-likelihood {run['last_change']:.3g} >= tol={tol}); raise max_iter or tol",
                          ConvergenceWarning, stacklevel=4)
        final = plan.with_tables(*run["tables"])
        log_z, probs = final.log_partition(marginals=marginals)
        params = {k: v.clone() for k, v in space.unflat(run["flat"]).items()}
        store_params(params)
        m_steps = {u.param: u.label for u in updates}
        m_steps.update({p: f"gradient (L-BFGS): {why.get(p, '')}".rstrip(": ") for p in gradient})
        iters = len(run["history"]) - 1
        diagnostics = {
            "n_iter": iters, "m_step": m_steps, "n_obs": n_obs,
            "seconds_per_iteration": run["seconds"] / max(iters, 1), "setup_seconds": setup,
            "restarts": [x["history"][-1] for x in runs], "best_restart": best,
            "average_log_likelihood": run["history"][-1] / n_obs,
            "fast_factors": sum(len(g.members) for g in pt.groups), "slow_factors": list(pt.slow),
            "device": str(device),
        }
        if map_names:
            diagnostics["map_latents"] = list(map_names)
        value = float(log_z)
        return table_posterior(self.name, graph, final, probs, seed=seed, map=map, elbo=value, log_evidence=value,
                               params=params, history=run["history"], converged=run["converged"], start=start,
                               diagnostics=diagnostics)

    @staticmethod
    def _fit(pt, plan, feed, updates, gstep, flat, max_iter, tol, n_obs, reg_covar, progress, desc) -> dict:
        """One EM run from ``flat`` (θ as a vector, updated in place)."""
        monitor = BoundMonitor("log-likelihood", tol, n_obs, max_iter, progress=progress, desc=desc)
        space = pt.space
        t0 = time.perf_counter()
        try:
            for it in range(max_iter + 1):
                with torch.no_grad():
                    values = space.unflat(flat)
                    other = dict(pt.constant)
                    other.update(pt.slow_tables(values))
                    tables = feed.assemble(pt.group_tables(flat), other)
                    log_z, fm, cm = plan.factor_posteriors(*tables)
                if not torch.isfinite(log_z):
                    raise DataError(
                        f"the evidence has probability zero under model '{plan.graph.model.name}' at the "
                        f"{'initial' if it == 0 else f'iteration-{it}'} parameter values (log-likelihood -inf); "
                        "start from values that give every observation positive probability")
                if monitor.record(float(log_z)) or it == max_iter:
                    break
                with torch.no_grad():
                    weights, other_w = feed.weights(fm, cm)
                    for u in updates:
                        apply_closed_form(u, pt, flat, weights, reg_covar)
                gstep(flat, weights, other_w)
        finally:
            monitor.close()
        h = monitor.history
        return {"flat": flat, "history": h, "converged": monitor.converged, "tables": tables,
                "seconds": time.perf_counter() - t0,
                "last_change": abs(h[-1] - h[-2]) / n_obs if len(h) > 1 else math.inf}


# ---------------------------------------------------------------------- helpers
def _check_numbers(**kw) -> None:
    for k in ("max_iter", "n_init", "gradient_steps"):
        check_int(k, kw[k], 0 if k == "max_iter" else 1)
    for k in ("tol", "reg_covar"):
        check_number(k, kw[k], low=0.0)


def _map_analysis(analysis, names):
    """The analysis of the model with ``names`` made params (cached on the new graph)."""
    from ..analysis.report import analyze_graph

    mgraph = map_model(analysis.graph, names)
    key = ("em_map_analysis", analysis.heuristic, analysis.memory_budget, analysis.itemsize)
    out = mgraph.cache.get(key)
    if out is None:
        out = mgraph.cache[key] = analyze_graph(mgraph, heuristic=analysis.heuristic,
                                                memory_budget=analysis.memory_budget, itemsize=analysis.itemsize)
    return out


def _prior_factors(graph, pt, names, theta0) -> dict:
    """Install a direct (no model run) evaluation of each MAP site's prior factor in
    ``pt`` where the prior depends on nothing but the site, and return site -> (factor
    name, prior distribution) for those (the candidates for a closed-form MAP M-step)."""
    handler = graph.cache["map_latents_handler"]
    known = graph.cache.setdefault(("em_map_priors", id(pt)), {})  # site -> (factor, prior) installed in pt
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
    cached per graph."""
    key = ("em_plan", dtype, str(device), analysis.heuristic)
    cached = graph.cache.get(key)
    if cached is None:
        with torch.no_grad():
            tables = pt.tables(theta0)
        factors = {n: LogFactor(tables[n], *pt.layouts[n]) for n in graph.factors}
        plan = DiscretePlan(graph, analysis, dtype=dtype, device=device, tables=factors)
        cached = graph.cache[key] = (plan, TableFeed(plan, pt))
    return cached


def _user_init(init, space, dtype, device) -> dict:
    """Validate a user ``init`` mapping (constrained values) against the params."""
    if init is None or isinstance(init, str):
        if isinstance(init, str) and init not in ("kmeans++", "random"):
            raise OptionError(f"init must be None, a dict, 'kmeans++' or 'random', got {init!r}")
        return {}
    if not hasattr(init, "items"):
        raise OptionError(f"init must be None, a dict of param values, 'kmeans++' or 'random', got {type(init).__name__}")
    out = {}
    for k, v in init.items():
        if k not in space.shapes:
            raise DataError(f"init: '{k}' is not a ppl.param of the model; its params are {list(space.names)}")
        t = torch.as_tensor(v).detach().to(dtype=dtype, device=device)
        if tuple(t.shape) != tuple(space.shapes[k]):
            raise DataError(f"init['{k}']: expected shape {tuple(space.shapes[k])}, got {tuple(t.shape)}")
        c = space.constraints.get(k)
        if not torch.isfinite(t).all():
            raise DataError(f"init['{k}']: values must be finite")
        if c is not None and not bool(c.check(t).all()):
            raise DataError(f"init['{k}']: values outside the param's constraint {c}")
        out[k] = t.clone()
    return out


def _seed_locations(pt, theta, strategy, gen) -> dict:
    """New values for every param used as a Normal/MultivariateNormal ``loc``: k-means++
    seeds (or random rows) of the data that loc explains."""
    out = {}
    for g in pt.groups:
        if g.template.family not in ("Normal", "MultivariateNormal") or "loc" not in g.slots:
            continue
        kind, pos = g.slots["loc"]
        if kind != "gather" or not g.value.is_floating_point():
            continue
        owners = pt.space.owners(pos)
        if len(owners) != 1:
            continue
        p = owners.pop()
        shape = pt.space.shapes[p]
        if p in out or len(shape) == 0:
            continue
        rows = shape[0]
        width = int(math.prod(shape[1:])) if len(shape) > 1 else 1
        points = g.value.reshape(-1, width) if g.value.shape[-1:] == (width,) or width == 1 else None
        if points is None or points.shape[0] < rows:
            continue
        out[p] = _kmeans_pp(points, rows, gen, strategy).reshape(shape).to(theta[p].dtype)
    return out


def _random_tables(space, theta, gen) -> dict:
    """New values for every simplex-constrained param (probability tables): each row drawn
    from the uniform Dirichlet(1)."""
    from torch.distributions import constraints

    return {p: uniform_simplex(space.shapes[p], gen).to(dtype=theta[p].dtype, device=theta[p].device)
            for p in space.names
            if space.constraints.get(p) is constraints.simplex and len(space.shapes[p]) >= 1}


def _kmeans_pp(x: torch.Tensor, k: int, gen, strategy: str) -> torch.Tensor:
    """``k`` rows of ``x`` (n, d): uniformly at random, or by k-means++ D² sampling."""
    n = x.shape[0]
    cpu = x.detach().to("cpu")
    if strategy == "random":
        return cpu[torch.randperm(n, generator=gen)[:k]].to(x.device)
    centers = [cpu[int(torch.randint(n, (1,), generator=gen))]]
    d2 = ((cpu - centers[0]) ** 2).sum(-1)
    for _ in range(1, k):
        total = d2.sum()
        i = int(torch.multinomial(d2 / total, 1, generator=gen)) if total > 0 else int(torch.randint(n, (1,), generator=gen))
        centers.append(cpu[i])
        d2 = torch.minimum(d2, ((cpu - cpu[i]) ** 2).sum(-1))
    return torch.stack(centers).to(x.device)
