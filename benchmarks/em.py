"""EM (maximum likelihood, ``ppl.infer(..., method="em")``): ppl vs scikit-learn and hmmlearn.

Cases (``--cases``, default all three):

* ``gmm-full``, ``gmm-diag``: a K = 8 Gaussian mixture in D = 10 dimensions fitted to
  N = 200 000 points, full and diagonal covariances, against scikit-learn's
  ``GaussianMixture(covariance_type=..., tol=0, reg_covar=1e-6, max_iter=n)``.
  The data are drawn from a seeded mixture (numpy, :func:`make_gmm_data`).
* ``hmm``: a 4-state HMM with Gaussian emissions, T = 100 000, written as the
  ``ppl.markov`` loop of the EM API, against hmmlearn's
  ``GaussianHMM(covariance_type="diag", init_params="", covars_prior=0, means_prior=0,
  means_weight=0, tol=0, n_iter=n)``.  Parameters and data as in ``hmm_exact.py``
  (seed 0 / seed 1).

Both libraries start from the same parameters θ0 (:func:`gmm_theta0`, :func:`hmm_theta0`):
scikit-learn gets them as ``weights_init`` / ``means_init`` / ``precisions_init``,
hmmlearn as ``startprob_`` / ``transmat_`` / ``means_`` / ``covars_``, ppl as
``init={param name: value}``.

**Time per EM iteration.**  Every library is run to exactly ``n1`` and to ``n2``
iterations (``--iters``, default 2 and 12 for the mixtures; ``--hmm-iters``, default 2
and 52 for the HMM, whose ppl calls carry seconds of per-call work at T = 100 000 against
hundredths of a second per iteration; tolerances 0 so nothing stops early) and the time
per iteration is ``(t(n2) - t(n1)) / (n2 - n1)``: the set-up costs (ppl's per-call
work, sklearn's input validation and final E-step, ...) cancel.  ``t(n)`` is the median
of ``--repeat`` calls (n1 and n2 calls interleaved, a ``gc.collect()`` before each;
fewer once a library's fits in a case took ``--budget`` seconds).  ppl is run on a graph
compiled once, ``g = ppl.compile(model, data)``, with ``ppl.infer(g, method="em",
max_iter=n, tol=0, init=θ0, marginals=False, map=False)`` (EM only, no posterior
post-processing); its set-up is reported separately: the compile, and the first
``infer`` on the fresh graph minus the other ``n1 - 1`` iterations ("compile + first
iteration").

**Check.**  Both sides must compute the same log-likelihoods: ppl's ``post.history[i]``
(log p(data; θ_i), total nats) against scikit-learn's ``lower_bounds_[i] * N`` (average
log-likelihood before M-step i+1) for every iteration, and against every entry of
hmmlearn's ``monitor_.history`` (log p at θ_i before M-step i+1; hmmlearn 0.3.3 keeps all
of them), for the n1 and n2 runs.  The largest
relative difference is printed; above 1e-6 it is flagged and the exit status is 1.

**Threads.** The target is stated on 2 CPU cores, so ``--threads`` defaults to 2 for
every library: torch's intra-op threads and the BLAS / OpenMP pools of numpy, scipy and
scikit-learn (threadpoolctl).  hmmlearn's forward-backward is a single-threaded C++ loop.

Not timed: imports, data generation, a warm-up of every library on a tiny problem, ppl's
compile (reported on its own).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings

import numpy as np

try:  # run as a script (python benchmarks/em.py) or as a module (python -m benchmarks.em)
    from _common import (gaussian_mixture_sample, Timer, add_common_args, source_state, fmt_ratio, fmt_sci, fmt_seconds, markdown_table,
                         print_machine, start, write_json)
    import hmm_exact
except ImportError:  # pragma: no cover
    from benchmarks._common import (gaussian_mixture_sample, Timer, add_common_args, source_state, fmt_ratio, fmt_sci, fmt_seconds, markdown_table,
                                    print_machine, start, write_json)
    from benchmarks import hmm_exact

ALL_CASES = ("gmm-full", "gmm-diag", "hmm")
GMM_N, GMM_D, GMM_K = 200_000, 10, 8
HMM_T, HMM_K = 100_000, 4
QUICK_GMM_N, QUICK_HMM_T = 20_000, 1_000
REG_COVAR = 1e-6
#: log-likelihoods must agree to this relative difference
LOGLIK_RTOL = 1e-6
#: ppl must be at least this much faster per iteration (peer s/iter / ppl s/iter)
TARGET_RATIO = 1.0


# --------------------------------------------------------------------------- GMM
def make_gmm_data(n: int, d: int = GMM_D, k: int = GMM_K, seed: int = 0):
    """``n`` points from a seeded K-component Gaussian mixture in ``d`` dimensions.

    weights ~ Dirichlet(2·1); means ~ N(0, 2² I); covariances ``A Aᵀ / d + 0.2 I``
    with ``A`` standard normal (correlated, overlapping components).

    Returns ``(X (n, d) float64, truth dict)``.
    """
    x, truth = gaussian_mixture_sample(n, d, k, seed, concentration=2.0, spread=2.0, floor=0.2)
    return x, {key: truth[key] for key in ("weights", "means", "covs")}


def gmm_theta0(x: np.ndarray, k: int, cov_type: str, seed: int = 0) -> dict:
    """Initial parameters: uniform weights, means = ``k`` seeded random data rows,
    identity covariances (full) / unit variances (diag)."""
    rng = np.random.default_rng(seed + 1000)
    n, d = x.shape
    rows = rng.choice(n, size=k, replace=False)
    theta = {"weights": np.full(k, 1.0 / k), "loc": x[rows].copy()}
    if cov_type == "full":
        theta["cov"] = np.tile(np.eye(d), (k, 1, 1))
    else:
        theta["scale"] = np.ones((k, d))
    return theta


def make_gmm_model(ppl, k: int, cov_type: str):
    """The mixture as in the EM API (``ppl.param`` values selected by the latent ``z``)."""
    import torch

    import ppl.distributions as dist
    from ppl.distributions import constraints

    if cov_type == "full":
        @ppl.model
        def gmm(x):
            n, d = x.shape
            w = ppl.param("weights", torch.ones(k, dtype=x.dtype) / k, constraint=constraints.simplex)
            loc = ppl.param("loc", x[:k].clone())
            cov = ppl.param("cov", torch.eye(d, dtype=x.dtype).repeat(k, 1, 1),
                            constraint=constraints.positive_definite)
            with ppl.plate("data", n):
                z = ppl.sample("z", dist.Categorical(w))
                ppl.sample("obs", dist.MultivariateNormal(loc[z], covariance_matrix=cov[z]), obs=x)
    else:
        @ppl.model
        def gmm(x):
            n, d = x.shape
            w = ppl.param("weights", torch.ones(k, dtype=x.dtype) / k, constraint=constraints.simplex)
            loc = ppl.param("loc", x[:k].clone())
            scale = ppl.param("scale", torch.ones(k, d, dtype=x.dtype), constraint=constraints.positive)
            with ppl.plate("data", n):
                z = ppl.sample("z", dist.Categorical(w))
                ppl.sample("obs", dist.Normal(loc[z], scale[z]).to_event(1), obs=x)
    return gmm


def sklearn_gmm(theta: dict, cov_type: str, n_iter: int):
    """A scikit-learn ``GaussianMixture`` started at ``theta`` (not fitted)."""
    from sklearn.mixture import GaussianMixture

    k, d = theta["loc"].shape
    if cov_type == "full":
        precisions = np.linalg.inv(theta["cov"])
    else:
        precisions = 1.0 / theta["scale"] ** 2
    return GaussianMixture(n_components=k, covariance_type=cov_type, tol=0.0, reg_covar=REG_COVAR,
                           max_iter=n_iter, n_init=1, weights_init=theta["weights"], means_init=theta["loc"],
                           precisions_init=precisions)


# --------------------------------------------------------------------------- HMM
def hmm_theta0(y: np.ndarray, k: int = HMM_K) -> dict:
    """Initial HMM parameters: uniform initial distribution, sticky transitions
    (0.5 on the diagonal, the rest spread evenly), means at the (i + 0.5)/k quantiles of
    the data, unit standard deviations."""
    trans = np.full((k, k), 0.5 / (k - 1))
    np.fill_diagonal(trans, 0.5)
    return {"init": np.full(k, 1.0 / k), "trans": trans,
            "loc": np.quantile(y, (np.arange(k) + 0.5) / k), "scale": np.ones(k)}


def make_hmm_model(ppl, k: int = HMM_K):
    """The HMM as in the EM API: a ``ppl.markov`` loop over ``y`` (a (T,) float tensor)."""
    import torch

    import ppl.distributions as dist
    from ppl.distributions import constraints

    @ppl.model
    def hmm(y):
        init = ppl.param("init", torch.ones(k, dtype=y.dtype) / k, constraint=constraints.simplex)
        trans = ppl.param("trans", torch.full((k, k), 1.0 / k, dtype=y.dtype), constraint=constraints.simplex)
        loc = ppl.param("loc", torch.linspace(-1, 1, k, dtype=y.dtype))
        scale = ppl.param("scale", torch.ones(k, dtype=y.dtype), constraint=constraints.positive)
        x = None
        for t in ppl.markov(range(len(y))):
            x = ppl.sample(f"x_{t}", dist.Categorical(init if t == 0 else trans[x]))
            ppl.sample(f"y_{t}", dist.Normal(loc[x], scale[x]), obs=y[t])

    return hmm


def hmmlearn_hmm(theta: dict, n_iter: int, implementation: str = "log"):
    """An hmmlearn ``GaussianHMM`` (diagonal, no priors, no initialisation) holding ``theta``."""
    from hmmlearn.hmm import GaussianHMM

    k = len(theta["init"])
    h = GaussianHMM(n_components=k, covariance_type="diag", init_params="", params="stmc", covars_prior=0.0,
                    means_prior=0.0, means_weight=0.0, tol=0.0, n_iter=n_iter, implementation=implementation)
    h.n_features = 1
    h.startprob_ = theta["init"].copy()
    h.transmat_ = theta["trans"].copy()
    h.means_ = theta["loc"].reshape(k, 1).copy()
    h.covars_ = (theta["scale"] ** 2).reshape(k, 1).copy()
    return h


# --------------------------------------------------------------------------- timing
def per_iteration(fit, n1: int, n2: int, repeat: int, budget: float, label: str) -> dict:
    """Time ``fit(n1)`` and ``fit(n2)`` (interleaved, up to ``repeat`` times each, stopping
    once ``budget`` seconds were spent after at least one pair); seconds per iteration =
    (median t(n2) - median t(n1)) / (n2 - n1).  Keeps the last results of both."""
    t1s, t2s, total = [], [], 0.0
    out1 = out2 = None
    for r in range(max(repeat, 1)):
        gc.collect()  # start every timed fit without the previous fit's garbage (as timeit does)
        s1 = time.perf_counter()
        out1 = fit(n1)
        t1 = time.perf_counter() - s1
        gc.collect()
        s2 = time.perf_counter()
        out2 = fit(n2)
        t2 = time.perf_counter() - s2
        t1s.append(t1)
        t2s.append(t2)
        total += t1 + t2
        print(f"  {label}: t({n1}) = {t1:.3f} s, t({n2}) = {t2:.3f} s "
              f"-> {(t2 - t1) / (n2 - n1):.4g} s/iter", flush=True)
        if total >= budget:
            break
    m1, m2 = statistics.median(t1s), statistics.median(t2s)
    return {"t_n1": t1s, "t_n2": t2s, "median_n1": m1, "median_n2": m2, "per_iter": (m2 - m1) / (n2 - n1),
            "per_iter_each": [(b - a) / (n2 - n1) for a, b in zip(t1s, t2s)], "out_n1": out1, "out_n2": out2}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _quiet(fn):
    """Call ``fn()`` with convergence warnings (every fixed-iteration fit gives one) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


# --------------------------------------------------------------------------- ppl fits
def ppl_em(ppl, graph, init: dict, n_iter: int, reg_covar: float):
    import pyro
    import torch

    pyro.clear_param_store()
    init_t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in init.items()}
    return _quiet(lambda: ppl.infer(graph, method="em", max_iter=n_iter, tol=0.0, init=init_t,
                                    reg_covar=reg_covar, progress=False, marginals=False, map=False))


def ppl_setup(ppl, model, data: dict, init: dict, n1: int, reg_covar: float) -> dict:
    """Compile once and make the first ``infer`` call on the fresh graph (timed)."""
    import pyro

    pyro.clear_param_store()  # ppl.param returns stored values: another model's "loc" would be picked up
    with Timer() as t:
        graph = ppl.compile(model, data)
    compile_s = t.seconds
    with Timer() as t:
        post = ppl_em(ppl, graph, init, n1, reg_covar)
    return {"graph": graph, "compile_s": compile_s, "first_call_s": t.seconds, "first_post": post}


def check_history(post, n_iter: int, label: str) -> list:
    h = list(post.history)
    if len(h) != n_iter + 1:
        print(f"  WARNING: {label}: len(history) = {len(h)}, expected {n_iter + 1}", flush=True)
    return h


# --------------------------------------------------------------------------- cases
def run_gmm(cov_type: str, args, ppl, n: int) -> dict:
    import torch

    name = f"gmm-{cov_type}"
    n1, n2 = args.iters
    x, _ = make_gmm_data(n, args.gmm_D, args.gmm_K, seed=args.seed)
    theta = gmm_theta0(x, args.gmm_K, cov_type, seed=args.seed)
    xt = torch.as_tensor(x, dtype=torch.float64)
    model = make_gmm_model(ppl, args.gmm_K, cov_type)
    row = {"case": name, "size": f"N={n:,}, D={args.gmm_D}, K={args.gmm_K}", "peer": "scikit-learn",
           "n1": n1, "n2": n2}

    print(f"[{name}] ppl compile + first call (max_iter={n1}) ...", flush=True)
    setup = ppl_setup(ppl, model, {"x": xt}, theta, n1, REG_COVAR)
    print(f"  compile {setup['compile_s']:.3f} s, first call {setup['first_call_s']:.3f} s", flush=True)
    graph = setup["graph"]
    print(f"[{name}] ppl per iteration ...", flush=True)
    p = per_iteration(lambda k: ppl_em(ppl, graph, theta, k, REG_COVAR), n1, n2, args.repeat, args.budget,
                      "ppl")

    print(f"[{name}] scikit-learn per iteration ...", flush=True)
    s = per_iteration(lambda k: _quiet(lambda: sklearn_gmm(theta, cov_type, k).fit(x)), n1, n2, args.repeat,
                      args.budget, "sklearn")

    # log-likelihood check: history[i] / N == lower_bounds_[i] for i < n (both runs)
    diffs = []
    for k_iter, post, gm in ((n1, p["out_n1"], s["out_n1"]), (n2, p["out_n2"], s["out_n2"])):
        h = check_history(post, k_iter, f"ppl {name} max_iter={k_iter}")
        lbs = list(getattr(gm, "lower_bounds_", [])) or [gm.lower_bound_]
        offset = k_iter - len(lbs)
        for i, lb in enumerate(lbs):
            diffs.append(_rel(h[offset + i] / n, lb))
        if gm.n_iter_ != k_iter:
            print(f"  WARNING: scikit-learn ran {gm.n_iter_} iterations, not {k_iter}", flush=True)
    post, gm = p["out_n2"], s["out_n2"]
    row["loglik_rel_diff"] = max(diffs)
    row["ppl_final_avg_loglik"] = post.history[n2 - 1] / n
    row["peer_final_avg_loglik"] = float(gm.lower_bound_)
    row["max_abs_diff_means"] = float(np.abs(post.params["loc"].numpy() - gm.means_).max())
    row["max_abs_diff_weights"] = float(np.abs(post.params["weights"].numpy() - gm.weights_).max())
    _fill_timing(row, setup, p, s, n1)
    row["ppl_diag_s_per_iter"] = post.diagnostics.get("seconds_per_iteration")
    row["ppl_m_step"] = {k: str(v) for k, v in dict(post.diagnostics.get("m_step", {})).items()}
    _report(row)
    return row


def run_hmm(args, ppl, T: int) -> dict:
    import torch

    n1, n2 = args.hmm_iters
    params = hmm_exact.make_params(args.seed, HMM_K)
    _, y = hmm_exact.sample_data(params, T, seed=args.seed + 1)
    theta = hmm_theta0(y, HMM_K)
    yt = torch.as_tensor(y, dtype=torch.float64)
    model = make_hmm_model(ppl, HMM_K)
    row = {"case": "hmm", "size": f"T={T:,}, K={HMM_K}", "peer": f"hmmlearn ({args.hmmlearn_impl})",
           "n1": n1, "n2": n2}

    print(f"[hmm] ppl compile + first call (max_iter={n1}) on T={T:,} ...", flush=True)
    setup = ppl_setup(ppl, model, {"y": yt}, theta, n1, args.hmm_reg_covar)
    print(f"  compile {setup['compile_s']:.3f} s, first call {setup['first_call_s']:.3f} s", flush=True)
    graph = setup["graph"]
    print("[hmm] ppl per iteration ...", flush=True)
    p = per_iteration(lambda k: ppl_em(ppl, graph, theta, k, args.hmm_reg_covar), n1, n2, args.repeat,
                      args.budget, "ppl")

    y2 = y.reshape(-1, 1)
    impls = [args.hmmlearn_impl] + [i for i in ("log", "scaling") if i != args.hmmlearn_impl and args.both_impls]
    peer = {}
    for impl in impls:
        print(f"[hmm] hmmlearn (implementation={impl!r}) per iteration ...", flush=True)
        peer[impl] = per_iteration(lambda k: _quiet(lambda: hmmlearn_hmm(theta, k, impl).fit(y2)), n1, n2,
                                   args.repeat, args.budget, f"hmmlearn {impl}")
    s = peer[args.hmmlearn_impl]

    diffs = []
    for impl, res in peer.items():
        for k_iter, post, h in ((n1, p["out_n1"], res["out_n1"]), (n2, p["out_n2"], res["out_n2"])):
            hist = check_history(post, k_iter, f"ppl hmm max_iter={k_iter}")
            mon = list(h.monitor_.history)
            if h.monitor_.iter != k_iter:
                print(f"  WARNING: hmmlearn ({impl}) ran {h.monitor_.iter} iterations, not {k_iter}", flush=True)
            start_i = h.monitor_.iter - len(mon)
            diffs += [_rel(hist[start_i + i], v) for i, v in enumerate(mon)]
    post, h = p["out_n2"], s["out_n2"]
    row["loglik_rel_diff"] = max(diffs)
    row["ppl_final_avg_loglik"] = post.history[n2 - 1] / T
    row["peer_final_avg_loglik"] = float(h.monitor_.history[-1]) / T
    row["max_abs_diff_means"] = float(np.abs(post.params["loc"].numpy().ravel() - h.means_.ravel()).max())
    row["max_abs_diff_trans"] = float(np.abs(post.params["trans"].numpy() - h.transmat_).max())
    _fill_timing(row, setup, p, s, n1)
    row["ppl_diag_s_per_iter"] = post.diagnostics.get("seconds_per_iteration")
    row["ppl_m_step"] = {k: str(v) for k, v in dict(post.diagnostics.get("m_step", {})).items()}
    row["other_impls"] = {impl: {"per_iter": res["per_iter"], "t_n1": res["t_n1"], "t_n2": res["t_n2"]}
                          for impl, res in peer.items() if impl != args.hmmlearn_impl}
    _report(row)
    return row


def _fill_timing(row, setup, p, s, n1) -> None:
    row["ppl_compile_s"] = setup["compile_s"]
    row["ppl_first_call_s"] = setup["first_call_s"]
    row["ppl_s_per_iter"] = p["per_iter"]
    # compile + first iteration: the first call on the fresh graph less its other n1 - 1 iterations
    row["ppl_setup_s"] = setup["compile_s"] + setup["first_call_s"] - (n1 - 1) * p["per_iter"]
    row["ppl_times"] = {k: p[k] for k in ("t_n1", "t_n2", "per_iter_each")}
    row["peer_s_per_iter"] = s["per_iter"]
    row["peer_setup_s"] = s["median_n1"] - (n1 - 1) * s["per_iter"]
    row["peer_times"] = {k: s[k] for k in ("t_n1", "t_n2", "per_iter_each")}
    row["ratio"] = s["per_iter"] / p["per_iter"] if p["per_iter"] > 0 else float("nan")


def _report(row) -> None:
    print(f"[{row['case']}] ppl {row['ppl_s_per_iter']:.4g} s/iter (diagnostics say "
          f"{row['ppl_diag_s_per_iter']}), {row['peer']} {row['peer_s_per_iter']:.4g} s/iter, "
          f"ratio {row['ratio']:.3g}; ppl set-up {row['ppl_setup_s']:.3g} s; log-lik rel diff "
          f"{row['loglik_rel_diff']:.1e}; m_step {row['ppl_m_step']}", flush=True)


# --------------------------------------------------------------------------- output
def format_table(rows) -> str:
    columns = ["case", "size", "ppl s/iter", "peer", "peer s/iter", "ratio (peer/ppl)", "target", "met?",
               "loglik rel diff"]
    out = []
    for r in rows:
        ok = r["loglik_rel_diff"] <= LOGLIK_RTOL
        out.append({
            "case": r["case"], "size": r["size"], "peer": r["peer"],
            "ppl s/iter": fmt_seconds(r["ppl_s_per_iter"]),
            "peer s/iter": fmt_seconds(r["peer_s_per_iter"]),
            "ratio (peer/ppl)": fmt_ratio(r["ratio"]),
            "target": f"ratio >= {TARGET_RATIO:g}",
            "met?": "yes" if r["ratio"] >= TARGET_RATIO else "NO",
            "loglik rel diff": fmt_sci(r["loglik_rel_diff"]) + ("" if ok else " (FLAG)"),
        })
    notes = [
        "s/iter = (t(n2) - t(n1)) / (n2 - n1), t(n) = median wall time of a fit with exactly n EM iterations "
        "(tol 0); set-up costs cancel. ratio > 1: ppl is faster.",
        "ppl: `ppl.infer(g, method=\"em\", max_iter=n, tol=0, init=θ0, marginals=False, map=False)` on "
        "`g = ppl.compile(model, data)` compiled once (see the set-up table).",
        f"loglik rel diff: max over the compared iterations of |ppl history[i] - peer| / |peer|; flagged above "
        f"{LOGLIK_RTOL:g}.",
    ]
    return markdown_table(out, columns, title="EM time per iteration: ppl vs scikit-learn / hmmlearn",
                          notes=notes)


def _range(values) -> str:
    return f"{fmt_seconds(min(values))} to {fmt_seconds(max(values))}" if len(values) > 1 else fmt_seconds(values[0])


def format_setup_table(rows) -> str:
    columns = ["case", "iterations n1 / n2", "ppl compile s", "ppl first call s (n1 iters)",
               "ppl set-up s (compile + 1st iter)", "ppl t(n1) / t(n2) s (median)", "peer set-up s",
               "peer t(n1) / t(n2) s (median)", "s/iter range ppl / peer", "final avg loglik ppl / peer"]
    out = []
    for r in rows:
        out.append({
            "case": r["case"], "iterations n1 / n2": f"{r['n1']} / {r['n2']}",
            "ppl compile s": fmt_seconds(r["ppl_compile_s"]),
            "ppl first call s (n1 iters)": fmt_seconds(r["ppl_first_call_s"]),
            "ppl set-up s (compile + 1st iter)": fmt_seconds(r["ppl_setup_s"]),
            "ppl t(n1) / t(n2) s (median)": f"{fmt_seconds(statistics.median(r['ppl_times']['t_n1']))} / "
                                            f"{fmt_seconds(statistics.median(r['ppl_times']['t_n2']))}",
            "peer set-up s": fmt_seconds(r["peer_setup_s"]),
            "peer t(n1) / t(n2) s (median)": f"{fmt_seconds(statistics.median(r['peer_times']['t_n1']))} / "
                                             f"{fmt_seconds(statistics.median(r['peer_times']['t_n2']))}",
            "s/iter range ppl / peer": f"{_range(r['ppl_times']['per_iter_each'])} / "
                                       f"{_range(r['peer_times']['per_iter_each'])}",
            "final avg loglik ppl / peer": f"{r['ppl_final_avg_loglik']:.10g} / {r['peer_final_avg_loglik']:.10g}",
        })
    notes = [
        "ppl set-up = compile + first `infer` on the fresh graph - (n1 - 1) × s/iter: compile plus the first "
        "iteration with every one-time cost (analysis, plan, factor tables). peer set-up = t(n1) - (n1 - 1) × s/iter.",
        "s/iter range: smallest-largest (t(n2) - t(n1)) / (n2 - n1) over the repeats (one pair per repeat).",
        "final avg loglik: log p(data; θ_{n2-1}) / n_obs, the last value both report after n2 iterations.",
    ]
    return markdown_table(out, columns, title="Set-up and raw times", notes=notes)


# --------------------------------------------------------------------------- main
def warm_up(ppl, args) -> None:
    """Each library once on a tiny problem (one-time import and dispatch costs)."""
    import pyro
    import torch

    for cov_type in ("full", "diag"):
        x, _ = make_gmm_data(400, args.gmm_D, args.gmm_K, seed=99)
        theta = gmm_theta0(x, args.gmm_K, cov_type)
        pyro.clear_param_store()
        g = ppl.compile(make_gmm_model(ppl, args.gmm_K, cov_type), {"x": torch.as_tensor(x)})
        ppl_em(ppl, g, theta, 3, REG_COVAR)
        _quiet(lambda: sklearn_gmm(theta, cov_type, 3).fit(x))
    params = hmm_exact.make_params(0, HMM_K)
    _, y = hmm_exact.sample_data(params, 200, seed=99)
    theta = hmm_theta0(y)
    pyro.clear_param_store()
    g = ppl.compile(make_hmm_model(ppl), {"y": torch.as_tensor(y)})
    ppl_em(ppl, g, theta, 3, args.hmm_reg_covar)
    for impl in ("log", "scaling"):
        _quiet(lambda: hmmlearn_hmm(theta, 3, impl).fit(y.reshape(-1, 1)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cases", default=",".join(ALL_CASES), help=f"comma-separated subset of {ALL_CASES}")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: GMM N={QUICK_GMM_N:,}, HMM T={QUICK_HMM_T:,}, 1 repeat")
    parser.add_argument("--gmm-N", type=int, default=None, help=f"default {GMM_N:,} ({QUICK_GMM_N:,} with --quick)")
    parser.add_argument("--gmm-D", type=int, default=GMM_D)
    parser.add_argument("--gmm-K", type=int, default=GMM_K)
    parser.add_argument("--hmm-T", type=int, default=None, help=f"default {HMM_T:,} ({QUICK_HMM_T:,} with --quick)")
    parser.add_argument("--iters", default="2,12", help="n1,n2: the two iteration counts timed (GMM cases)")
    parser.add_argument("--hmm-iters", default="2,52",
                        help="n1,n2 for the HMM (more iterations: ppl's per-call overhead is seconds at T=100,000, "
                             "an iteration a few hundredths of a second)")
    parser.add_argument("--repeat", type=int, default=None, help="timed fits per iteration count (median); "
                        "default 3 (1 with --quick)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="stop repeating (after one n1/n2 pair) once a library's fits in a case took this long")
    parser.add_argument("--hmmlearn-impl", default="log", choices=("log", "scaling"),
                        help="hmmlearn implementation in the table (hmmlearn's default is 'log')")
    parser.add_argument("--no-both-impls", dest="both_impls", action="store_false",
                        help="do not also time hmmlearn's other implementation (reported in a note)")
    parser.add_argument("--hmm-reg-covar", type=float, default=0.0,
                        help="ppl's reg_covar for the HMM (hmmlearn's M-step adds nothing to the variances)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and θ0")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false")
    add_common_args(parser)
    parser.set_defaults(threads=2)
    args = parser.parse_args(argv)
    for opt in ("iters", "hmm_iters"):
        value = tuple(int(s) for s in getattr(args, opt).split(","))
        if len(value) != 2 or not 1 <= value[0] < value[1]:
            parser.error(f"--{opt.replace('_', '-')} takes two counts n1,n2 with 1 <= n1 < n2")
        setattr(args, opt, value)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in args.cases:
        if c not in ALL_CASES:
            parser.error(f"unknown case {c!r}; choose from {ALL_CASES}")
    if args.gmm_N is None:
        args.gmm_N = QUICK_GMM_N if args.quick else GMM_N
    if args.hmm_T is None:
        args.hmm_T = QUICK_HMM_T if args.quick else HMM_T
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    ppl, info = start(args, ("sklearn", "hmmlearn", "pyro"))
    if "em" not in ppl.registered_backends():
        print("ppl has no 'em' backend registered")
        return 2
    if args.warm_up:
        print("warm-up on tiny problems ...", flush=True)
        warm_up(ppl, args)
    info["ppl_source"] = source_state()
    print(f"ppl source: {info['ppl_source']}", flush=True)
    rows = []
    for case in args.cases:
        load0 = os.getloadavg()[0]
        with Timer() as t:
            if case.startswith("gmm-"):
                rows.append(run_gmm(case[4:], args, ppl, args.gmm_N))
            else:
                rows.append(run_hmm(args, ppl, args.hmm_T))
        rows[-1]["case_wall_s"] = t.seconds
        rows[-1]["load_1min"] = (round(load0, 2), round(os.getloadavg()[0], 2))
    print()
    print(format_table(rows))
    print()
    print(format_setup_table(rows))
    for r in rows:
        for impl, res in r.get("other_impls", {}).items():
            print(f"\n- hmmlearn implementation={impl!r}: {res['per_iter']:.4g} s/iter "
                  f"(ratio {res['per_iter'] / r['ppl_s_per_iter']:.3g}x vs ppl)")
    print()
    for r in rows:
        met = "MET" if r["ratio"] >= TARGET_RATIO else "NOT MET"
        print(f"Target ppl at least as fast per EM iteration as {r['peer']} on {r['case']} ({r['size']}), "
              f"{args.threads} threads: {met} ({r['ratio']:.3g}x)")
    print()
    print_machine(info)
    print(f"ppl source: {info['ppl_source']}; 1-min load average at start / end of each case: "
          + ", ".join(f"{r['case']} {r['load_1min'][0]} / {r['load_1min'][1]}" for r in rows))
    bad = [r["case"] for r in rows if not r["loglik_rel_diff"] <= LOGLIK_RTOL]
    if bad:
        print(f"FAIL: log-likelihoods differ by more than {LOGLIK_RTOL:g} (relative) on {bad}")
    else:
        print(f"OK: log-likelihoods agree within {LOGLIK_RTOL:g} (relative) on every case")
    if args.json:
        clean = [{k: v for k, v in r.items()} for r in rows]
        write_json(args.json, {"machine": info, "args": vars(args), "results": clean})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
