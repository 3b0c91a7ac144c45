"""Fit Gaussian mixtures to the iris and wine data by EM, next to scikit-learn.

Both data sets ship with scikit-learn (Fisher's iris: 150 flowers, 4 measurements, 3
species; the UCI wine data: 178 wines, 13 chemical measurements, 3 cultivars), so this
runs offline.  The features are standardised.  For each data set and each covariance
type (full and diagonal) we

1. write the mixture as a ppl model with ``ppl.param`` weights, locations and
   covariances (the conventions of docs/em.md, so every M-step is in closed form),
2. fit it with ``ppl.infer(model, data, method="em", init="kmeans++", n_init=...)``,
3. print the final average log-likelihood log p(x; θ) / N, the EM iterations, whether
   it converged, the seconds taken, and the adjusted Rand index (ARI) of the MAP
   cluster of each row, ``post.marginal("z").probs.argmax(-1)``, against the true
   classes,
4. print scikit-learn's ``GaussianMixture`` with the same K, covariance type,
   k-means++ initialisation, n_init, tol and reg_covar side by side.

The two start from different k-means++ seeds and different initial covariances, so
their optima can differ.  A last check starts both from one identical θ_0 and compares
ppl's ``post.history`` with scikit-learn's ``lower_bound_`` after the same number of
iterations: they are the same computation and agree to round-off.

Run: ``python ppl_examples/em_gmm.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
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

K = 3
COVARIANCE_TYPES = ("full", "diag")


@ppl.model
def gmm_full(x, K=3):
    """K-component mixture with one full covariance matrix per component."""
    N, D = x.shape
    w = ppl.param("weights", torch.full((K,), 1.0 / K, dtype=x.dtype), constraint=constraints.simplex)
    loc = ppl.param("loc", x[:K].clone())                    # replaced by init="kmeans++"
    cov = ppl.param("cov", torch.eye(D, dtype=x.dtype).repeat(K, 1, 1), constraint=constraints.positive_definite)
    with ppl.plate("data", N):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.MultivariateNormal(loc[z], covariance_matrix=cov[z]), obs=x)


@ppl.model
def gmm_diag(x, K=3):
    """K-component mixture with a diagonal covariance (one scale per feature) per component."""
    N, D = x.shape
    w = ppl.param("weights", torch.full((K,), 1.0 / K, dtype=x.dtype), constraint=constraints.simplex)
    loc = ppl.param("loc", x[:K].clone())                    # replaced by init="kmeans++"
    scale = ppl.param("scale", torch.ones(K, D, dtype=x.dtype), constraint=constraints.positive)
    with ppl.plate("data", N):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.Normal(loc[z], scale[z]).to_event(1), obs=x)


MODELS = {"full": gmm_full, "diag": gmm_diag}


def load(name):
    """Standardised features (float64) and the true class labels of a bundled data set."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    bunch = {"iris": datasets.load_iris, "wine": datasets.load_wine}[name]()
    return StandardScaler().fit_transform(bunch.data).astype(np.float64), np.asarray(bunch.target)


def fit_ppl(X, cov_type, args):
    """EM fit with ppl; returns a dict of the numbers printed, and the posterior."""
    pyro.clear_param_store()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)   # reported in the table instead
        post = ppl.infer(MODELS[cov_type], {"x": torch.as_tensor(X), "K": K}, method="em",
                         init="kmeans++", n_init=args.n_init, max_iter=args.max_iter, tol=args.tol,
                         reg_covar=args.reg_covar, seed=args.seed, progress=False)
    seconds = time.perf_counter() - start
    labels = post.marginal("z").probs.argmax(-1).cpu().numpy()
    return {
        "avg_ll": post.log_evidence / len(X),
        "n_iter": post.diagnostics["n_iter"],
        "converged": bool(post.converged),
        "seconds": seconds,
        "labels": labels,
    }, post


def fit_sklearn(X, cov_type, args):
    """scikit-learn GaussianMixture with the same settings."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(K, covariance_type=cov_type, init_params="k-means++", n_init=args.n_init,
                         max_iter=args.max_iter, tol=args.tol, reg_covar=args.reg_covar, random_state=args.seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    seconds = time.perf_counter() - start
    return {
        "avg_ll": float(gm.score(X)),       # average log-likelihood at the final parameters, as ppl's
        "n_iter": int(gm.n_iter_),
        "converged": bool(gm.converged_),
        "seconds": seconds,
        "labels": gm.predict(X),
    }


def same_start_check(X, cov_type, n_iter, reg_covar, seed):
    """Run ppl and scikit-learn for ``n_iter`` iterations from one θ_0; return
    (ppl history[n_iter - 1] / N, scikit-learn lower_bound_)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    N, D = X.shape
    rng = np.random.default_rng(seed)
    weights = np.full(K, 1.0 / K)
    means = X[rng.choice(N, K, replace=False)]
    init = {"weights": torch.as_tensor(weights), "loc": torch.as_tensor(means)}
    if cov_type == "full":
        init["cov"] = torch.eye(D, dtype=torch.float64).repeat(K, 1, 1)
        precisions = np.tile(np.eye(D), (K, 1, 1))
    else:
        init["scale"] = torch.ones(K, D, dtype=torch.float64)
        precisions = np.ones((K, D))
    pyro.clear_param_store()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        post = ppl.infer(MODELS[cov_type], {"x": torch.as_tensor(X), "K": K}, method="em", init=init,
                         max_iter=n_iter, tol=0.0, reg_covar=reg_covar, progress=False)
    gm = GaussianMixture(K, covariance_type=cov_type, max_iter=n_iter, tol=0.0, reg_covar=reg_covar,
                         weights_init=weights, means_init=means, precisions_init=precisions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    return post.history[n_iter - 1] / N, float(gm.lower_bound_)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="iris,wine", help="comma-separated: iris, wine")
    parser.add_argument("--max-iter", type=int, default=300, help="EM iterations at most (both libraries)")
    parser.add_argument("--n-init", type=int, default=5, help="k-means++ restarts; the best is kept (both libraries)")
    parser.add_argument("--tol", type=float, default=1e-4, help="stop when the average log-likelihood changes less")
    parser.add_argument("--reg-covar", type=float, default=1e-6, help="added to every variance (both libraries)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-iter", type=int, default=10, help="iterations of the same-start check")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads for both libraries (0: the libraries' defaults)")
    parser.add_argument("--quick", action="store_true", help="smoke run: n_init 2, at most 100 iterations")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_init = min(args.n_init, 2)
        args.max_iter = min(args.max_iter, 100)
    with limit_threads(args.threads):
        _run(args)


def _run(args):
    from sklearn.metrics import adjusted_rand_score

    start = time.perf_counter()
    print(f"K={K}, init k-means++, n_init={args.n_init}, max_iter={args.max_iter}, tol={args.tol:g}, "
          f"reg_covar={args.reg_covar:g}, seed={args.seed}, threads={args.threads or 'default'}\n")
    # one short untimed fit of each library first, so that the timings below exclude one-off start-up costs
    warm = argparse.Namespace(**{**vars(args), "n_init": 1, "max_iter": 2})
    fit_ppl(load("iris")[0], "full", warm)
    fit_sklearn(load("iris")[0], "full", warm)
    for name in args.datasets.split(","):
        X, y = load(name)
        print(f"{name}: {X.shape[0]} rows, {X.shape[1]} standardised features, {len(np.unique(y))} true classes")
        print(f"  {'':<6} {'ppl EM':^44}   {'scikit-learn GaussianMixture':^44}")
        header = f"{'avg loglik':>11} {'iters':>5} {'conv':>5} {'seconds':>8} {'ARI':>6}"
        print(f"  {'cov':<6} {header}      {header}")
        for cov_type in COVARIANCE_TYPES:
            ours, post = fit_ppl(X, cov_type, args)
            theirs = fit_sklearn(X, cov_type, args)
            cells = []
            for r in (ours, theirs):
                ari = adjusted_rand_score(y, r["labels"])
                cells.append(f"{r['avg_ll']:11.4f} {r['n_iter']:5d} {str(r['converged']):>5} "
                             f"{r['seconds']:8.3f} {ari:6.3f}")
            print(f"  {cov_type:<6} {cells[0]}      {cells[1]}")
            restarts = post.diagnostics.get("restarts")
            if restarts is not None and len(restarts) > 1:
                per_init = ", ".join(f"{v / len(X):.4f}" for v in restarts)
                print(f"  {'':<6} ppl restarts (avg loglik per init): {per_init}")
        print()

    X, _ = load("iris")
    print(f"same θ_0 (random rows as means, unit covariances), {args.check_iter} iterations, iris:")
    for cov_type in COVARIANCE_TYPES:
        ours, theirs = same_start_check(X, cov_type, args.check_iter, args.reg_covar, args.seed)
        print(f"  {cov_type:<5} ppl history[{args.check_iter - 1}]/N = {ours:.12f}   "
              f"scikit-learn lower_bound_ = {theirs:.12f}   |diff| = {abs(ours - theirs):.2e}")
    print(f"\ntotal wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
