"""Fit hidden Markov models to the yearly sunspot numbers by EM.

The series is the yearly mean sunspot number 1700-2008 (309 values) that ships with
statsmodels (``statsmodels.api.datasets.sunspots``), so this runs offline.  We

1. fit a Gaussian-emission HMM with K = 2, 3, 4 hidden regimes to the square root of
   the series (the square root evens out the variance between quiet and active years),
   written as a ``ppl.markov`` loop over the years with ``ppl.param`` initial
   probabilities, transition matrix, means and scales, and print for each K the log
   likelihood, the number of free parameters and BIC = -2 log L + p log T;
2. print the learned means, scales and transition matrix of the K with the lowest BIC,
   and its Viterbi path (``post.map()``): the regime counts, the number of switches, and
   the path itself year by year;
3. discretise the raw series into three levels (low / medium / high, split at its
   terciles) and fit a categorical HMM with K = 2 hidden states;
4. where hmmlearn is installed, start hmmlearn's ``GaussianHMM`` / ``CategoricalHMM``
   from the same θ_0 and print its log-likelihood next to ppl's, and compare ppl's
   ``post.history`` with hmmlearn's ``monitor_.history`` after the same number of
   iterations.

The regimes are listed in increasing order of their mean (state 0 is the quietest).

Run: ``python ppl_examples/em_hmm.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import pyro
import torch

import ppl
import ppl.distributions as dist
from ppl.distributions import constraints

try:  # run as a script (python ppl_examples/...) or as a module
    from _threads import limit_threads
except ImportError:  # pragma: no cover
    from ppl_examples._threads import limit_threads

LEVELS = ("low", "medium", "high")


def load_sunspots():
    """Years (int array) and yearly sunspot numbers (float64 array) from statsmodels."""
    import statsmodels.api as sm

    frame = sm.datasets.sunspots.load_pandas().data
    return frame["YEAR"].to_numpy().astype(int), frame["SUNACTIVITY"].to_numpy(dtype=np.float64)


# ---------------------------------------------------------------------- models and θ_0

def gaussian_init(y, K):
    """θ_0 of the Gaussian HMM: uniform start, sticky transitions (0.8 on the diagonal),
    means at the (k + 1/2)/K quantiles of y, every scale std(y) / K."""
    y = torch.as_tensor(y, dtype=torch.float64)
    probs = (torch.arange(K, dtype=torch.float64) + 0.5) / K
    return {
        "init": torch.full((K,), 1.0 / K, dtype=torch.float64),
        "trans": 0.8 * torch.eye(K, dtype=torch.float64) + 0.2 / K,
        "loc": torch.quantile(y, probs),
        "scale": torch.full((K,), float(y.std()) / K, dtype=torch.float64),
    }


@ppl.model
def gaussian_hmm(y, K=3):
    """HMM with K hidden regimes and Normal(loc[x_t], scale[x_t]) emissions."""
    theta0 = gaussian_init(y, K)
    init = ppl.param("init", theta0["init"], constraint=constraints.simplex)
    trans = ppl.param("trans", theta0["trans"], constraint=constraints.simplex)
    loc = ppl.param("loc", theta0["loc"])
    scale = ppl.param("scale", theta0["scale"], constraint=constraints.positive)
    x = None
    for t in ppl.markov(range(len(y))):
        x = ppl.sample(f"x_{t}", dist.Categorical(init if t == 0 else trans[x]))
        ppl.sample(f"y_{t}", dist.Normal(loc[x], scale[x]), obs=y[t])


def categorical_init(K, M):
    """θ_0 of the categorical HMM: uniform start, sticky transitions, and emission rows
    tilted apart (state k leans to level m in proportion to exp((2k/(K-1) - 1)(2m/(M-1) - 1)));
    a symmetric θ_0 would be a fixed point of EM."""
    k = torch.linspace(-1.0, 1.0, K, dtype=torch.float64)[:, None]
    m = torch.linspace(-1.0, 1.0, M, dtype=torch.float64)[None, :]
    return {
        "init": torch.full((K,), 1.0 / K, dtype=torch.float64),
        "trans": 0.8 * torch.eye(K, dtype=torch.float64) + 0.2 / K,
        "emission": torch.softmax(k * m, dim=-1),
    }


@ppl.model
def categorical_hmm(y, K=2, M=3):
    """HMM with K hidden states and Categorical(emission[x_t]) emissions over M levels."""
    theta0 = categorical_init(K, M)
    init = ppl.param("init", theta0["init"], constraint=constraints.simplex)
    trans = ppl.param("trans", theta0["trans"], constraint=constraints.simplex)
    emission = ppl.param("emission", theta0["emission"], constraint=constraints.simplex)
    x = None
    for t in ppl.markov(range(len(y))):
        x = ppl.sample(f"x_{t}", dist.Categorical(init if t == 0 else trans[x]))
        ppl.sample(f"y_{t}", dist.Categorical(emission[x]), obs=y[t])


# ---------------------------------------------------------------------- fitting

def fit(model, data, **options):
    """``ppl.infer(..., method="em")`` on a clean param store; returns (posterior, seconds)."""
    pyro.clear_param_store()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)   # reported as converged=False instead
        post = ppl.infer(model, data, method="em", progress=False, **options)
    return post, time.perf_counter() - start


def viterbi(post, T):
    """The MAP state sequence as a numpy int array."""
    path = post.map()
    return np.array([int(path[f"x_{t}"]) for t in range(T)])


def relabel_by_mean(loc):
    """order[i] = old state shown as state i; rank[old] = new label (increasing loc)."""
    order = np.argsort(np.asarray(loc))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return order, rank


def print_matrix(name, m, row_labels, col_labels, indent="    "):
    print(f"{indent}{name:<10}" + "".join(f"{c:>9}" for c in col_labels))
    for label, row in zip(row_labels, m):
        print(f"{indent}{label:<10}" + "".join(f"{v:9.3f}" for v in row))


def print_path(years, states, per_line=60, indent="    "):
    for i in range(0, len(states), per_line):
        chunk = "".join(str(s) for s in states[i:i + per_line])
        print(f"{indent}{years[i]}-{years[min(i + per_line, len(states)) - 1]}  {chunk}")


def path_summary(states, K):
    counts = np.bincount(states, minlength=K)
    switches = int((states[1:] != states[:-1]).sum())
    return counts, switches


def hmmlearn_gaussian(z, K, n_iter, tol, theta0):
    """hmmlearn GaussianHMM from θ_0 without priors; returns the fitted model, or None."""
    try:
        from hmmlearn.hmm import GaussianHMM
    except ImportError:
        return None
    h = GaussianHMM(K, covariance_type="diag", n_iter=n_iter, tol=tol, init_params="", params="stmc",
                    covars_prior=0.0, implementation="log")
    h.startprob_ = theta0["init"].numpy()
    h.transmat_ = theta0["trans"].numpy()
    h.means_ = theta0["loc"].numpy()[:, None]
    h.covars_ = (theta0["scale"].numpy() ** 2)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h.fit(z[:, None])
    return h


def hmmlearn_categorical(levels, K, n_iter, tol, theta0):
    """hmmlearn CategoricalHMM from θ_0; returns the fitted model, or None."""
    try:
        from hmmlearn.hmm import CategoricalHMM
    except ImportError:
        return None
    h = CategoricalHMM(K, n_iter=n_iter, tol=tol, init_params="", params="ste", implementation="log")
    h.n_features = theta0["emission"].shape[1]
    h.startprob_ = theta0["init"].numpy()
    h.transmat_ = theta0["trans"].numpy()
    h.emissionprob_ = theta0["emission"].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h.fit(levels[:, None])
    return h


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", default="2,3,4", help="comma-separated numbers of regimes of the Gaussian HMM")
    parser.add_argument("--max-iter", type=int, default=500, help="EM iterations at most")
    parser.add_argument("--tol", type=float, default=1e-6, help="stop when log-likelihood / T changes less")
    parser.add_argument("--reg-covar", type=float, default=1e-6, help="added to every variance in the M-step")
    parser.add_argument("--check-iter", type=int, default=20, help="iterations of the same-θ_0 check with hmmlearn")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (0: the libraries' defaults)")
    parser.add_argument("--quick", action="store_true", help="smoke run: K = 2, 3 and at most 30 iterations")
    args = parser.parse_args(argv)
    args.Ks = [int(k) for k in args.K.split(",")]
    if args.quick:
        args.Ks = [k for k in args.Ks if k <= 3] or args.Ks[:1]
        args.max_iter = min(args.max_iter, 30)
        args.check_iter = min(args.check_iter, 10)
    with limit_threads(args.threads):
        _run(args)


def _run(args):
    Ks = args.Ks
    start = time.perf_counter()
    years, spots = load_sunspots()
    T = len(spots)
    z = np.sqrt(spots)
    y = torch.as_tensor(z)
    print(f"sunspots: yearly means {years[0]}-{years[-1]}, T = {T}; modelled as sqrt(sunspot number), "
          f"range {z.min():.2f} to {z.max():.2f}\n")

    # -------------------------------------------------------------- Gaussian HMM, K regimes
    print(f"Gaussian HMM on sqrt(sunspots), EM (max_iter={args.max_iter}, tol={args.tol:g}, "
          f"reg_covar={args.reg_covar:g}); hmmlearn GaussianHMM from the same θ_0 alongside")
    print(f"  {'K':>2} {'params':>6} {'log lik':>11} {'BIC':>10} {'iters':>5} {'conv':>5} {'seconds':>8}"
          f"   {'hmmlearn log lik':>16} {'iters':>5}")
    fits = {}
    for K in Ks:
        post, seconds = fit(gaussian_hmm, {"y": y, "K": K}, max_iter=args.max_iter, tol=args.tol,
                            reg_covar=args.reg_covar)
        n_params = (K - 1) + K * (K - 1) + 2 * K
        loglik = post.log_evidence
        bic = -2.0 * loglik + n_params * math.log(T)
        fits[K] = (post, bic)
        h = hmmlearn_gaussian(z, K, args.max_iter, args.tol * T, gaussian_init(y, K))
        peer = f"{h.score(z[:, None]):16.4f} {h.monitor_.iter:5d}" if h is not None else f"{'(not installed)':>16}"
        print(f"  {K:2d} {n_params:6d} {loglik:11.4f} {bic:10.2f} {post.diagnostics['n_iter']:5d} "
              f"{str(bool(post.converged)):>5} {seconds:8.2f}   {peer}")
    best = min(fits, key=lambda k: fits[k][1])
    post = fits[best][0]
    print("  (hmmlearn makes one more M-step after the last log-likelihood it records, so it stops one iteration")
    print("  later than ppl, at a slightly higher log-likelihood)")
    print(f"  lowest BIC: K = {best}\n")

    loc = post.params["loc"].detach().cpu().numpy()
    scale = post.params["scale"].detach().cpu().numpy()
    trans = post.params["trans"].detach().cpu().numpy()
    order, rank = relabel_by_mean(loc)
    labels = [f"regime {i}" for i in range(best)]
    print(f"  learned parameters, K = {best} (regimes in increasing order of mean; sqrt scale, and "
          f"the mean squared back to sunspot numbers):")
    for i, k in enumerate(order):
        print(f"    regime {i}: mean {loc[k]:6.3f} (~{loc[k] ** 2:6.1f} spots), scale {scale[k]:6.3f}, "
              f"expected stay {1.0 / max(1.0 - trans[k, k], 1e-12):5.1f} years")
    print_matrix("trans", trans[np.ix_(order, order)], labels, [f"-> {i}" for i in range(best)])
    states = rank[viterbi(post, T)]
    counts, switches = path_summary(states, best)
    print("  Viterbi path (post.map()): years per regime "
          + ", ".join(f"{i}: {c}" for i, c in enumerate(counts)) + f"; {switches} switches")
    print_path(years, states)
    print()

    # -------------------------------------------------------------- categorical HMM, 3 levels
    cuts = np.quantile(spots, [1 / 3, 2 / 3])
    levels = (spots > cuts[0]).astype(np.int64) + (spots > cuts[1]).astype(np.int64)
    Kc, M = 2, len(LEVELS)
    print(f"categorical HMM, K = {Kc} hidden states, on the series cut at its terciles "
          f"({cuts[0]:.1f}, {cuts[1]:.1f} spots) into {', '.join(LEVELS)}: "
          + ", ".join(f"{LEVELS[m]} {c}" for m, c in enumerate(np.bincount(levels, minlength=M))) + " years")
    cpost, seconds = fit(categorical_hmm, {"y": torch.as_tensor(levels), "K": Kc, "M": M},
                         max_iter=args.max_iter, tol=args.tol)
    n_params = (Kc - 1) + Kc * (Kc - 1) + Kc * (M - 1)
    h = hmmlearn_categorical(levels, Kc, args.max_iter, args.tol * T, categorical_init(Kc, M))
    peer = (f"; hmmlearn CategoricalHMM from the same θ_0: {h.score(levels[:, None]):.4f} "
            f"({h.monitor_.iter} iterations)") if h is not None else ""
    print(f"  log lik {cpost.log_evidence:.4f}, BIC {-2 * cpost.log_evidence + n_params * math.log(T):.2f}, "
          f"{cpost.diagnostics['n_iter']} iterations, converged {bool(cpost.converged)}, {seconds:.2f} s{peer}")
    emission = cpost.params["emission"].detach().cpu().numpy()
    ctrans = cpost.params["trans"].detach().cpu().numpy()
    corder, crank = relabel_by_mean(emission @ np.arange(M))        # by expected level
    clabels = [f"state {i}" for i in range(Kc)]
    print_matrix("emission", emission[corder], clabels, LEVELS)
    print_matrix("trans", ctrans[np.ix_(corder, corder)], clabels, [f"-> {i}" for i in range(Kc)])
    cstates = crank[viterbi(cpost, T)]
    ccounts, cswitches = path_summary(cstates, Kc)
    print("  Viterbi path: years per state " + ", ".join(f"{i}: {c}" for i, c in enumerate(ccounts))
          + f"; {cswitches} switches")
    print_path(years, cstates)
    print()

    # -------------------------------------------------------------- same θ_0, same iterations
    n = args.check_iter
    Kg = Ks[0]
    print(f"same θ_0, {n} iterations (ppl post.history[{n - 1}] vs hmmlearn monitor_.history[-1], "
          f"both log p(y; θ_{n - 1})):")
    gpost, _ = fit(gaussian_hmm, {"y": y, "K": Kg}, max_iter=n, tol=0.0, reg_covar=0.0)
    h = hmmlearn_gaussian(z, Kg, n, -np.inf, gaussian_init(y, Kg))
    cpost, _ = fit(categorical_hmm, {"y": torch.as_tensor(levels), "K": Kc, "M": M}, max_iter=n, tol=0.0)
    hc = hmmlearn_categorical(levels, Kc, n, -np.inf, categorical_init(Kc, M))
    for name, p, peer in ((f"Gaussian K={Kg} (reg_covar=0)", gpost, h), (f"categorical K={Kc}", cpost, hc)):
        theirs = f"{peer.monitor_.history[-1]:.10f}" if peer is not None else "(hmmlearn not installed)"
        diff = f"   |diff| = {abs(p.history[n - 1] - peer.monitor_.history[-1]):.2e}" if peer is not None else ""
        increasing = all(b >= a - 1e-9 * abs(a) for a, b in zip(p.history, p.history[1:]))
        print(f"  {name:<28} ppl {p.history[n - 1]:.10f}   hmmlearn {theirs}{diff}   "
              f"ppl history non-decreasing: {increasing}")
    print(f"\ntotal wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
