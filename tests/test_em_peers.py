"""method="em" against peer implementations of the same EM iterations.

References: scikit-learn's ``GaussianMixture`` (all four covariance types) and hmmlearn's
``GaussianHMM`` / ``CategoricalHMM``, started from the same fixed parameters θ0 with
every prior switched off.  EM is deterministic given θ0, so the log-likelihood after
each iteration and the parameters after n M-steps must agree to round-off:

* sklearn ``GaussianMixture(max_iter=n, tol=0).lower_bound_`` is the mean log-likelihood
  at θ_{n-1}, i.e. ``history[n - 1] / N``;
* hmmlearn ``model.monitor_.history`` after ``n_iter=n`` holds the total log-likelihoods
  at θ_{n-2} and θ_{n-1}, i.e. ``history[n - 2 : n]``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pytest
import torch

import ppl
from em_helpers import em as _em
from em_helpers import to_np as _np
import ppl.distributions as dist
from ppl.distributions import constraints

F64 = torch.float64
N_ITER = 8  # EM iterations compared step by step
REL = 1e-6








# ====================================================================== scikit-learn
def _mixture_data():
    """A seeded 3-component 2-D mixture, N = 300."""
    rng = np.random.default_rng(1234)
    means = np.array([[-3.0, 0.0], [3.0, 0.5], [0.0, 4.0]])
    covs = np.array([[[1.0, 0.4], [0.4, 0.8]], [[0.6, -0.2], [-0.2, 1.5]], [[1.2, 0.0], [0.0, 0.5]]])
    counts = [90, 110, 100]
    X = np.concatenate([rng.multivariate_normal(m, c, size=n) for m, c, n in zip(means, covs, counts)])
    return X[rng.permutation(len(X))]


K_GMM = 3
W0 = np.array([0.3, 0.3, 0.4])
MU0 = np.array([[-2.0, 1.0], [2.0, -1.0], [1.0, 3.0]])
COV0 = {
    "full": np.array([[[1.0, 0.2], [0.2, 1.0]], [[2.0, 0.0], [0.0, 1.0]], [[1.0, -0.3], [-0.3, 1.5]]]),
    "tied": np.array([[1.5, 0.3], [0.3, 1.2]]),
    "diag": np.array([[1.0, 2.0], [1.5, 1.0], [1.0, 1.0]]),  # variances (K, D)
    "spherical": np.array([1.0, 2.0, 1.5]),  # variances (K,)
}
REG_COVAR = 1e-3


def make_gmm(cov_type, K=K_GMM):
    @ppl.model
    def gmm(x):
        N, D = x.shape
        w = ppl.param("weights", torch.full((K,), 1.0 / K, dtype=F64), constraint=constraints.simplex)
        loc = ppl.param("loc", x[:K].clone())
        if cov_type == "full":
            cov = ppl.param("cov", torch.eye(D, dtype=F64).repeat(K, 1, 1), constraint=constraints.positive_definite)
        elif cov_type == "tied":
            cov = ppl.param("cov", torch.eye(D, dtype=F64), constraint=constraints.positive_definite)
        elif cov_type == "diag":
            scale = ppl.param("scale", torch.ones(K, D, dtype=F64), constraint=constraints.positive)
        else:
            scale = ppl.param("scale", torch.ones(K, dtype=F64), constraint=constraints.positive)
        with ppl.plate("data", N):
            z = ppl.sample("z", dist.Categorical(w))
            if cov_type == "full":
                ppl.sample("obs", dist.MultivariateNormal(loc[z], covariance_matrix=cov[z]), obs=x)
            elif cov_type == "tied":
                ppl.sample("obs", dist.MultivariateNormal(loc[z], covariance_matrix=cov), obs=x)
            elif cov_type == "diag":
                ppl.sample("obs", dist.Normal(loc[z], scale[z]).to_event(1), obs=x)
            else:
                ppl.sample("obs", dist.Normal(loc[z], scale[z].unsqueeze(-1)).to_event(1), obs=x)

    return gmm


def _ppl_init(cov_type):
    init = {"weights": W0.copy(), "loc": MU0.copy()}
    if cov_type in ("full", "tied"):
        init["cov"] = COV0[cov_type].copy()
    else:
        init["scale"] = np.sqrt(COV0[cov_type])
    return init


def _sk_precisions(cov_type):
    c = COV0[cov_type]
    return np.linalg.inv(c) if cov_type in ("full", "tied") else 1.0 / c


def _sk_fit(X, cov_type, n):
    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(
        n_components=K_GMM,
        covariance_type=cov_type,
        max_iter=n,
        tol=0.0,
        reg_covar=REG_COVAR,
        weights_init=W0,
        means_init=MU0,
        precisions_init=_sk_precisions(cov_type),
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        gm.fit(X)
    assert gm.n_iter_ == n
    return gm


def _ppl_cov(post, cov_type):
    """ppl's learned covariances in sklearn's ``covariances_`` layout."""
    if cov_type in ("full", "tied"):
        return _np(post.params["cov"])
    return _np(post.params["scale"]) ** 2


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag", "spherical"])
def test_gmm_matches_sklearn_step_by_step(cov_type):
    pytest.importorskip("sklearn")
    X = _mixture_data()
    N = len(X)
    post = _em(make_gmm(cov_type), {"x": X}, max_iter=N_ITER, tol=0.0, reg_covar=REG_COVAR, init=_ppl_init(cov_type))
    hist = np.asarray(post.history, dtype=float)
    assert len(hist) == N_ITER + 1
    assert post.diagnostics["n_obs"] == N

    for n in range(1, N_ITER + 1):
        gm = _sk_fit(X, cov_type, n)
        assert hist[n - 1] / N == pytest.approx(gm.lower_bound_, rel=REL), f"iteration {n}"
        if getattr(gm, "lower_bounds_", None) is not None:  # scikit-learn >= 1.7 keeps them all
            np.testing.assert_allclose(hist[:n] / N, np.asarray(gm.lower_bounds_, dtype=float), rtol=REL)

    # parameters after N_ITER M-steps (gm is the max_iter=N_ITER fit)
    np.testing.assert_allclose(_np(post.params["weights"]), gm.weights_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(_np(post.params["loc"]), gm.means_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(_ppl_cov(post, cov_type), gm.covariances_, rtol=1e-6, atol=1e-8)
    # and the responsibilities at θ_final equal sklearn's predict_proba
    np.testing.assert_allclose(_np(post.marginal("z").probs), gm.predict_proba(X), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cov_type", ["full", "diag"])
def test_gmm_converged_optimum_matches_sklearn(cov_type):
    """Run both to convergence from θ0: same local optimum, same mean log-likelihood."""
    pytest.importorskip("sklearn")
    X = _mixture_data()
    post = _em(make_gmm(cov_type), {"x": X}, max_iter=500, tol=1e-12, reg_covar=REG_COVAR, init=_ppl_init(cov_type))
    gm = _sk_fit(X, cov_type, 500)
    assert post.log_evidence / len(X) == pytest.approx(gm.score(X), rel=1e-8)
    np.testing.assert_allclose(_np(post.params["loc"]), gm.means_, atol=1e-4)
    np.testing.assert_allclose(_ppl_cov(post, cov_type), gm.covariances_, atol=1e-4)


# ====================================================================== hmmlearn
T_HMM = 400
K_HMM = 3


def _regime_data(T=T_HMM, seed=7):
    """Seeded 3-regime switching data: Gaussian levels with sticky switching."""
    rng = np.random.default_rng(seed)
    A = np.array([[0.95, 0.03, 0.02], [0.04, 0.92, 0.04], [0.03, 0.05, 0.92]])
    mu = np.array([-2.0, 0.5, 3.0])
    sd = np.array([0.6, 1.0, 0.8])
    s = np.empty(T, dtype=int)
    s[0] = 0
    for t in range(1, T):
        s[t] = rng.choice(3, p=A[s[t - 1]])
    return rng.normal(mu[s], sd[s]), s


PI0 = np.array([0.5, 0.3, 0.2])
A0 = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.15, 0.15, 0.7]])
HMM_MU0 = np.array([-1.0, 0.0, 2.0])
HMM_VAR0 = np.array([1.0, 2.0, 1.5])


@ppl.model
def gaussian_hmm(y, K=K_HMM):
    init = ppl.param("init", torch.ones(K, dtype=F64) / K, constraint=constraints.simplex)
    trans = ppl.param("trans", torch.full((K, K), 1.0 / K, dtype=F64), constraint=constraints.simplex)
    loc = ppl.param("loc", torch.linspace(-1, 1, K, dtype=F64))
    scale = ppl.param("scale", torch.ones(K, dtype=F64), constraint=constraints.positive)
    x = None
    for t in ppl.markov(range(len(y))):
        x = ppl.sample(f"x_{t}", dist.Categorical(init if t == 0 else trans[x]))
        ppl.sample(f"y_{t}", dist.Normal(loc[x], scale[x]), obs=y[t])


def _hmmlearn_gaussian(n_iter, implementation):
    from hmmlearn.hmm import GaussianHMM

    h = GaussianHMM(
        n_components=K_HMM,
        covariance_type="diag",
        n_iter=n_iter,
        tol=0.0,
        init_params="",
        params="stmc",
        implementation=implementation,
        # every prior off (startprob_prior = transmat_prior = 1 and covars_weight = 1 are no-ops)
        startprob_prior=1.0,
        transmat_prior=1.0,
        means_prior=0.0,
        means_weight=0.0,
        covars_prior=0.0,
        covars_weight=1.0,
    )
    h.startprob_ = PI0.copy()
    h.transmat_ = A0.copy()
    h.means_ = HMM_MU0[:, None].copy()
    h.covars_ = HMM_VAR0[:, None].copy()
    return h


@pytest.fixture(scope="module")
def gaussian_hmm_fit():
    """ppl EM on the regime data from θ0, N_ITER iterations, reg_covar=0 (hmmlearn adds none)."""
    pyro.clear_param_store()
    y, _ = _regime_data()
    init = {"init": PI0, "trans": A0, "loc": HMM_MU0, "scale": np.sqrt(HMM_VAR0)}
    post = _em(gaussian_hmm, {"y": y}, max_iter=N_ITER, tol=0.0, reg_covar=0.0, init=init)
    pyro.clear_param_store()
    return y, post


@pytest.mark.parametrize("implementation", ["log", "scaling"])
def test_gaussian_hmm_matches_hmmlearn(gaussian_hmm_fit, implementation):
    pytest.importorskip("hmmlearn")
    y, post = gaussian_hmm_fit
    hist = np.asarray(post.history, dtype=float)
    assert len(hist) == N_ITER + 1
    assert post.diagnostics["n_obs"] == len(y)
    Y = y[:, None]
    for n in range(1, N_ITER + 1):
        h = _hmmlearn_gaussian(n, implementation)
        h.fit(Y)
        ref = np.asarray(h.monitor_.history, dtype=float)  # the last (at most) 2 log-likelihoods
        np.testing.assert_allclose(hist[n - len(ref) : n], ref, rtol=REL, err_msg=f"n_iter={n}")
    # parameters after N_ITER M-steps
    np.testing.assert_allclose(_np(post.params["init"]), h.startprob_, atol=1e-7)
    np.testing.assert_allclose(_np(post.params["trans"]), h.transmat_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(_np(post.params["loc"]), h.means_[:, 0], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(_np(post.params["scale"]) ** 2, h.covars_[:, 0, 0], rtol=1e-6, atol=1e-8)
    # the state posteriors at θ_final
    gamma = np.stack([_np(post.marginal(f"x_{t}").probs) for t in range(len(y))])
    np.testing.assert_allclose(gamma, h.predict_proba(Y), atol=1e-7)
    assert post.log_evidence == pytest.approx(h.score(Y), rel=1e-9)
    # the MAP state path at θ_final is hmmlearn's Viterbi path
    path = post.map()
    np.testing.assert_array_equal(np.array([int(path[f"x_{t}"]) for t in range(len(y))]), h.predict(Y))


# ---------------------------------------------------------------- categorical emissions
M_SYMBOLS = 4
CAT_PI0 = np.array([0.6, 0.4])
CAT_A0 = np.array([[0.7, 0.3], [0.25, 0.75]])
CAT_B0 = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])


def _categorical_data(T=300, seed=3):
    rng = np.random.default_rng(seed)
    A = np.array([[0.9, 0.1], [0.15, 0.85]])
    B = np.array([[0.7, 0.2, 0.05, 0.05], [0.05, 0.1, 0.25, 0.6]])
    s = 0
    y = np.empty(T, dtype=np.int64)
    for t in range(T):
        y[t] = rng.choice(M_SYMBOLS, p=B[s])
        s = rng.choice(2, p=A[s])
    return y


@ppl.model
def categorical_hmm(y, K=2, M=M_SYMBOLS):
    init = ppl.param("init", torch.ones(K, dtype=F64) / K, constraint=constraints.simplex)
    trans = ppl.param("trans", torch.full((K, K), 1.0 / K, dtype=F64), constraint=constraints.simplex)
    emission = ppl.param("emission", torch.full((K, M), 1.0 / M, dtype=F64), constraint=constraints.simplex)
    x = None
    for t in ppl.markov(range(len(y))):
        x = ppl.sample(f"x_{t}", dist.Categorical(init if t == 0 else trans[x]))
        ppl.sample(f"y_{t}", dist.Categorical(emission[x]), obs=y[t])


def test_categorical_hmm_matches_hmmlearn():
    pytest.importorskip("hmmlearn")
    try:
        from hmmlearn.hmm import CategoricalHMM
    except ImportError:  # pragma: no cover - hmmlearn < 0.3
        pytest.skip("hmmlearn has no CategoricalHMM")
    y = _categorical_data()
    init = {"init": CAT_PI0, "trans": CAT_A0, "emission": CAT_B0}
    post = _em(categorical_hmm, {"y": y}, max_iter=N_ITER, tol=0.0, init=init)
    hist = np.asarray(post.history, dtype=float)
    assert len(hist) == N_ITER + 1
    for n in range(1, N_ITER + 1):
        h = CategoricalHMM(
            n_components=2,
            n_features=M_SYMBOLS,
            n_iter=n,
            tol=0.0,
            init_params="",
            params="ste",
            startprob_prior=1.0,
            transmat_prior=1.0,
            emissionprob_prior=1.0,
        )
        h.startprob_ = CAT_PI0.copy()
        h.transmat_ = CAT_A0.copy()
        h.emissionprob_ = CAT_B0.copy()
        h.fit(y[:, None])
        ref = np.asarray(h.monitor_.history, dtype=float)
        np.testing.assert_allclose(hist[n - len(ref) : n], ref, rtol=REL, err_msg=f"n_iter={n}")
    np.testing.assert_allclose(_np(post.params["init"]), h.startprob_, atol=1e-7)
    np.testing.assert_allclose(_np(post.params["trans"]), h.transmat_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(_np(post.params["emission"]), h.emissionprob_, rtol=1e-6, atol=1e-8)
