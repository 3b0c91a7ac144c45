"""The Bayesian Gaussian mixture by mean-field CAVI, against scikit-learn's BayesianGaussianMixture.

The model (Bishop 2006, §10.2, eq. 10.37-10.40), ``ppl.models.bayesian_gmm``: Dirichlet
weights and K Normal-Wishart components::

    π ~ Dirichlet(α0 1_K)
    Λ_k ~ Wishart(ν0, W0),   μ_k | Λ_k ~ N(m0, (β0 Λ_k)⁻¹)          (plate "components")
    z_n ~ Categorical(π),    x_n | z_n ~ N(μ_{z_n}, Λ_{z_n}⁻¹)       (plate "data")

``ppl.infer(bayesian_gmm, data, method="cavi")`` recognises (μ_k, Λ_k) as one Normal-Wishart
factor and π as a Dirichlet one (``post.diagnostics["factors"]``), q(z) as a table per data
point, and runs Bishop's coordinate updates (eq. 10.46-10.63).  ``bgmm_priors(X, K)`` gives
scikit-learn's default priors (α0 = 1/K, β0 = 1, m0 = the data mean, ν0 = D, W0⁻¹ = the data
covariance), which are passed to ``BayesianGaussianMixture(weight_concentration_prior_type=
"dirichlet_distribution", ...)`` explicitly, with ``reg_covar=0`` (scikit-learn's default
1e-6 adds N_k·1e-6·I to every W_k⁻¹ in its M-step, a slightly different model; ``--reg-covar``),
so both fit the same model and the same mean-field family.  Both start from the same
responsibilities: the one-hot k-means labels that scikit-learn computes with
``random_state=0`` (``KMeans(n_clusters=K, n_init=1, random_state=np.random.RandomState(0))``).
ppl runs with tol 1e-12 (at most 3000 sweeps), scikit-learn with tol 1e-12 (at most 5000
iterations).

The data: scikit-learn's bundled iris (150 flowers, 4 features, 3 species) and wine (178
wines, 13 features, 3 cultivars) data sets (offline), each feature standardised,
(x - mean) / std, as float64 torch tensors; K = 3 components (``--components``).

The ELBOs: ppl's ``post.elbo`` is the full ELBO of eq. 10.70-10.77 in nats.  scikit-learn's
``lower_bound_`` drops the terms that do not depend on q (it is the ELBO less a constant c of
N, D, K and the priors, where q satisfies the M-step, as it does where scikit-learn evaluates
it), so the two numbers cannot be compared directly.  This script therefore evaluates
Bishop's ELBO (eq. 10.70-10.77, written out below in numpy, sharing no code with ppl) at
both q's, and also prints ``lower_bound_ + c`` with c in closed form (``dropped_constant``).

What is printed, per data set: N, D, K; sweeps, seconds and convergence of both; ppl's ELBO,
Bishop's ELBO at ppl's q (a check: the same number), Bishop's ELBO at scikit-learn's q, their
difference (≥ 0 up to round-off when ppl reaches at least as good a fixed point), and
scikit-learn's ``lower_bound_`` with c added back (Bishop's ELBO again, at the q of its last
M-step); the largest |difference| between the two q(z) tables (components matched by their
overlap; with the same start they keep the same order); the adjusted Rand index of the MAP
clusters against the true classes for both; and the expected weights E[π_k] of both, sorted.  Also
the analysis of the model on iris (``ppl.analyze``, whose "cavi" line says why CAVI applies)
and the "cavi" line on wine.

The PNG (``--out``, default ``demo_output/``, file ``cavi_bgmm.png``): ppl's ELBO per sweep
(``post.history``, sweep 0 is the k-means start) on both data sets, with Bishop's ELBO at
scikit-learn's q as a dashed line, and the distance to the final ELBO on a log scale.

Run: ``python ppl_examples/cavi_bgmm.py`` (``--out DIR`` for the PNG; about 10 s on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import digamma, gammaln, multigammaln

import ppl
from ppl.models import bayesian_gmm, bgmm_priors

try:  # run as a script (python ppl_examples/...) or as a module
    from _threads import limit_threads
except ImportError:  # pragma: no cover
    from ppl_examples._threads import limit_threads

DATASETS = ("iris", "wine")


def load(name):
    """Standardised features (N × D, float64 torch tensor) and true classes of a bundled data set."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    X = (bunch.data - bunch.data.mean(0)) / bunch.data.std(0)
    return torch.as_tensor(X, dtype=torch.float64), bunch.target


# ------------------------------------------------------------------ Bishop's ELBO, eq. 10.70-10.77, in numpy
def _e_log_det(W, nu):
    """E[ln |Λ_k|] under q(Λ_k) = W(W_k, ν_k) (eq. 10.65)."""
    D = W.shape[-1]
    return digamma((nu[:, None] - np.arange(D)) / 2).sum(1) + D * math.log(2) + np.linalg.slogdet(W)[1]


def _log_b(W, nu):
    """ln B(W, ν), the Wishart's log normaliser (eq. B.79)."""
    D = W.shape[-1]
    return -nu / 2 * np.linalg.slogdet(W)[1] - nu * D / 2 * math.log(2) - multigammaln(nu / 2, D)


def _log_c(alpha):
    """ln C(α), the Dirichlet's log normaliser (eq. B.23)."""
    return gammaln(alpha.sum()) - gammaln(alpha).sum()


def bishop_elbo(X, q, prior):
    """The ELBO of eq. 10.70 at ``q = {resp (N,K), alpha (K,), beta (K,), m (K,D), W (K,D,D), nu (K,)}``."""
    N, D = X.shape
    r, alpha, beta, m, W, nu = (q[k] for k in ("resp", "alpha", "beta", "m", "W", "nu"))
    a0, b0, m0, W0, nu0 = (prior[k] for k in ("alpha0", "beta0", "m0", "W0", "nu0"))
    K = len(alpha)
    nk = r.sum(0) + 1e-300
    xbar = r.T @ X / nk[:, None]
    S = np.einsum("nk,kni,knj->kij", r, X[None] - xbar[:, None], X[None] - xbar[:, None]) / nk[:, None, None]
    log_lam = _e_log_det(W, nu)
    log_pi = digamma(alpha) - digamma(alpha.sum())
    quad = lambda v: np.einsum("ki,kij,kj->k", v, W, v)  # noqa: E731
    e_x = 0.5 * np.sum(nk * (log_lam - D / beta - nu * np.einsum("kij,kji->k", S, W) - nu * quad(xbar - m)
                             - D * math.log(2 * math.pi)))                                        # 10.71
    e_z = np.sum(r * log_pi)                                                                      # 10.72
    e_pi = _log_c(np.full(K, a0)) + (a0 - 1) * log_pi.sum()                                       # 10.73
    e_mu_lam = (0.5 * np.sum(D * math.log(b0 / (2 * math.pi)) + log_lam - D * b0 / beta - b0 * nu * quad(m - m0))
                + K * _log_b(W0, nu0) + (nu0 - D - 1) / 2 * log_lam.sum()
                - 0.5 * np.sum(nu * np.einsum("ij,kji->k", np.linalg.inv(W0), W)))                # 10.74
    q_z = np.sum(r * np.log(np.where(r > 0, r, 1.0)))                                             # 10.75
    q_pi = np.sum((alpha - 1) * log_pi) + _log_c(alpha)                                           # 10.76
    entropy_lam = -_log_b(W, nu) - (nu - D - 1) / 2 * log_lam + nu * D / 2                        # B.82
    q_mu_lam = np.sum(0.5 * log_lam + D / 2 * np.log(beta / (2 * math.pi)) - D / 2 - entropy_lam)  # 10.77
    return float(e_x + e_z + e_pi + e_mu_lam - q_z - q_pi - q_mu_lam)


def dropped_constant(N, D, K, prior):
    """The q-independent terms that scikit-learn's ``lower_bound_`` leaves out: where the M-step
    holds (α_k = α0 + N_k, β_k = β0 + N_k, ν_k = ν0 + N_k, and m_k, W_k from the data, which is how
    scikit-learn evaluates it), eq. 10.70 reduces to

        ELBO = -Σ r ln r - ln C(α) - Σ_k ln B(W_k, ν_k) - D/2 Σ_k ln β_k
               - N D/2 ln 2π + ln C(α0 1_K) + K ln B(W0, ν0) + K D/2 ln β0,

    scikit-learn keeps the first line, with ln Γ_D's D(D-1)/4 ln π term left out of each
    ln B(W_k, ν_k): c is the second line plus K D(D-1)/4 ln π."""
    return (-N * D / 2 * math.log(2 * math.pi) + _log_c(np.full(K, prior["alpha0"]))
            + K * float(_log_b(prior["W0"], prior["nu0"])) + K * D / 2 * math.log(prior["beta0"])
            + K * D * (D - 1) / 4 * math.log(math.pi))


# ------------------------------------------------------------------ the two q's in the same parametrisation
def q_of_ppl(post, D):
    """ppl's q: the Dirichlet's concentration, the Wishart's (ν_k, W_k), and (m_k, β_k) from the
    marginal of μ_k, a Student t with ν_k - D + 1 degrees of freedom, location m_k and scale
    matrix W_k⁻¹ / (β_k (ν_k - D + 1))."""
    prec, loc = post.marginal("prec"), post.marginal("loc")
    nu, W = prec.df.numpy(), prec.covariance_matrix.numpy()  # torch's Wishart calls its scale W "covariance_matrix"
    scale = (loc.scale_tril @ loc.scale_tril.transpose(-1, -2)).numpy()
    beta = np.trace(np.linalg.inv(W), axis1=1, axis2=2) / ((nu - D + 1) * np.trace(scale, axis1=1, axis2=2))
    return {"resp": post.probs("z").numpy(), "alpha": post.marginal("weights").concentration.numpy(),
            "beta": beta, "m": loc.loc.numpy(), "W": W, "nu": nu}


def q_of_sklearn(sk, X):
    """scikit-learn's q: its ``covariances_`` are W_k⁻¹ / ν_k; q(z) is its E-step, ``predict_proba``."""
    return {"resp": sk.predict_proba(X), "alpha": sk.weight_concentration_, "beta": sk.mean_precision_,
            "m": sk.means_, "nu": sk.degrees_of_freedom_,
            "W": np.linalg.inv(sk.covariances_ * sk.degrees_of_freedom_[:, None, None])}


def fit(name, K, reg_covar=0.0):
    """Fit both on one data set; return a dict of what is printed and plotted."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import BayesianGaussianMixture

    X, classes = load(name)
    N, D = X.shape
    Xn = X.numpy()
    data = bgmm_priors(X, K)
    prior = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in data.items() if k != "x"}

    t = time.perf_counter()
    sk = BayesianGaussianMixture(n_components=K, weight_concentration_prior_type="dirichlet_distribution",
                                 weight_concentration_prior=prior["alpha0"], mean_precision_prior=prior["beta0"],
                                 mean_prior=prior["m0"], degrees_of_freedom_prior=prior["nu0"],
                                 covariance_prior=np.linalg.inv(prior["W0"]), tol=1e-12, max_iter=5000,
                                 reg_covar=reg_covar, random_state=0).fit(Xn)
    t_sk = time.perf_counter() - t

    # scikit-learn's start with random_state=0: one-hot k-means labels
    labels = KMeans(n_clusters=K, n_init=1, random_state=np.random.RandomState(0)).fit(Xn).labels_
    start = torch.nn.functional.one_hot(torch.as_tensor(labels.astype(np.int64)), K).double()
    t = time.perf_counter()
    post = ppl.infer(bayesian_gmm, data, method="cavi", init={"z": start}, tol=1e-12, max_iter=3000)
    t_ppl = time.perf_counter() - t

    q, q_sk = q_of_ppl(post, D), q_of_sklearn(sk, Xn)
    rows, cols = linear_sum_assignment(-(q["resp"].T @ q_sk["resp"]))  # match components by overlap
    perm = cols[np.argsort(rows)]
    return dict(name=name, N=N, D=D, K=K, post=post, sk=sk, t_ppl=t_ppl, t_sk=t_sk, perm=perm,
                elbo=post.elbo, elbo_check=bishop_elbo(Xn, q, prior), elbo_sk=bishop_elbo(Xn, q_sk, prior),
                bound_sk=sk.lower_bound_, constant=dropped_constant(N, D, K, prior),
                resp_diff=float(np.abs(q["resp"] - q_sk["resp"][:, perm]).max()),
                ari=adjusted_rand_score(classes, q["resp"].argmax(1)),
                ari_sk=adjusted_rand_score(classes, sk.predict(Xn)),
                weights=np.sort(q["alpha"] / q["alpha"].sum())[::-1], weights_sk=np.sort(sk.weights_)[::-1])


def report(r):
    post, sk = r["post"], r["sk"]
    print(f"\n=== {r['name']}: N = {r['N']}, D = {r['D']}, K = {r['K']} ===")
    print(f"factors recognised: {post.diagnostics['factors']}")
    print(f"ppl CAVI:       {post.diagnostics['sweeps']} sweeps in {r['t_ppl']:.2f} s, converged {post.converged}, "
          f"ELBO decreases {post.diagnostics['decreases']}")
    print(f"sklearn BGMM:   {sk.n_iter_} iterations in {r['t_sk']:.2f} s, converged {sk.converged_}")
    print(f"ELBO (ours) = {r['elbo']:.8f}   (Bishop eq. 10.70 at our q: {r['elbo_check']:.8f})")
    print(f"ELBO of sklearn's q (same formula) = {r['elbo_sk']:.8f}")
    print(f"difference (ours - sklearn's) = {r['elbo'] - r['elbo_sk']:.3e} nats")
    print(f"sklearn lower_bound_ = {r['bound_sk']:.8f}, which drops the q-independent constant "
          f"c = {r['constant']:.8f}; lower_bound_ + c = {r['bound_sk'] + r['constant']:.8f}")
    identity = "same order" if np.array_equal(r["perm"], np.arange(r["K"])) else f"permutation {r['perm'].tolist()}"
    print(f"max |responsibility difference| = {r['resp_diff']:.3e} (components matched by overlap: {identity})")
    print(f"adjusted Rand index of the MAP clusters vs the true classes: ours {r['ari']:.4f}, "
          f"sklearn {r['ari_sk']:.4f}")
    print(f"E[pi] sorted: ours [{', '.join(f'{w:.4f}' for w in r['weights'])}], "
          f"sklearn [{', '.join(f'{w:.4f}' for w in r['weights_sk'])}]")


def plot(results, out):
    """Write the PNG (see the module docstring); return its path, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("\nmatplotlib is not installed (pip install matplotlib): no PNG written")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 7), squeeze=False)
    for col, r in enumerate(results):
        hist = np.asarray(r["post"].history)
        ax = axes[0, col]
        ax.plot(np.arange(len(hist)), hist, ".-", ms=3, label="ppl CAVI (post.history)")
        ax.axhline(r["elbo_sk"], ls="--", color="C1", label="ELBO at sklearn's q")
        lo = min(hist[min(1, len(hist) - 1)], r["elbo_sk"])
        ax.set_ylim(lo - 0.05 * (hist[-1] - lo + 1), hist[-1] + 0.05 * (hist[-1] - lo + 1))
        ax.set(title=f"{r['name']} (N={r['N']}, D={r['D']}, K={r['K']})", xlabel="sweep", ylabel="ELBO (nats)")
        ax.legend(loc="lower right")
        ax = axes[1, col]
        gap = hist[-1] - hist[:-1]
        ax.semilogy(np.arange(len(gap)), np.where(gap > 0, gap, np.nan), ".-", ms=3)
        ax.set(xlabel="sweep", ylabel="final ELBO - ELBO (nats)", title="distance to the final ELBO")
    fig.tight_layout()
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "cavi_bgmm.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=3, help="mixture components K")
    parser.add_argument("--reg-covar", type=float, default=0.0,
                        help="scikit-learn's reg_covar (its default 1e-6 adds N_k 1e-6 I to W_k^-1: another model)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (0: the libraries' defaults)")
    parser.add_argument("--out", default="demo_output/", help="directory of the PNG")
    args = parser.parse_args(argv)
    with limit_threads(args.threads), warnings.catch_warnings():
        # compiling the model traces it once with a draw from the prior; a Wishart draw at the
        # smallest degrees of freedom (ν0 = D) is sometimes singular, and torch warns and redraws
        warnings.filterwarnings("ignore", message="Singular sample detected", category=UserWarning)
        _run(args)


def _run(args):
    start = time.perf_counter()
    K = args.components
    X, _ = load("iris")
    print(ppl.analyze(bayesian_gmm, bgmm_priors(X, K)))
    X, _ = load("wine")
    cavi = next(line.strip() for line in str(ppl.analyze(bayesian_gmm, bgmm_priors(X, K))).splitlines()
                if line.strip().startswith("cavi"))
    print(f"\nwine, the analysis's cavi line: {cavi}")

    results = [fit(name, K, args.reg_covar) for name in DATASETS]
    for r in results:
        report(r)
    path = plot(results, args.out)
    if path is not None:
        print(f"\nwrote {path}")
    print(f"\ntotal wall time {time.perf_counter() - start:.1f} s")
    assert all(math.isfinite(r["elbo"]) for r in results)


if __name__ == "__main__":
    main()
