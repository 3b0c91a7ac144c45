"""method="em": expectation-maximisation of the ppl.param values of a discrete-latent model.

References (none of them is ppl): EM steps and log-likelihoods written out by hand in
numpy/scipy for each model below (mixtures by responsibilities, HMMs by the forward
algorithm), numpy EM run to convergence, and the "exact" backend on the same model with
the learned values as constants.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

import ppl
from em_helpers import em as _em
from em_helpers import to_np as _np
import ppl.distributions as dist
from ppl.distributions import constraints

F64 = torch.float64








def _assert_monotone(history):
    h = np.asarray(history, dtype=float)
    assert np.all(np.isfinite(h))
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:])), np.diff(h)


# ====================================================================== models
def make_mix1d(weights, loc, scale):
    """Two-component 1-D Gaussian mixture whose ppl.param defaults are (weights, loc, scale)."""
    w, mu, s = (torch.as_tensor(np.asarray(v, dtype=float), dtype=F64) for v in (weights, loc, scale))

    @ppl.model
    def mix1d(x):
        weights = ppl.param("weights", w.clone(), constraint=constraints.simplex)
        loc = ppl.param("loc", mu.clone())
        scale = ppl.param("scale", s.clone(), constraint=constraints.positive)
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(weights))
            ppl.sample("obs", dist.Normal(loc[z], scale[z]), obs=x)

    return mix1d


def make_gmm(K=3, const=None):
    """Full-covariance GMM on (N, D) data; ``const`` = dict of values used as constants (no ppl.param)."""

    @ppl.model
    def gmm(x):
        N, D = x.shape
        if const is None:
            w = ppl.param("weights", torch.full((K,), 1.0 / K, dtype=F64), constraint=constraints.simplex)
            loc = ppl.param("loc", x[:K].clone())
            cov = ppl.param("cov", torch.eye(D, dtype=F64).repeat(K, 1, 1), constraint=constraints.positive_definite)
        else:
            w, loc, cov = (torch.as_tensor(const[k], dtype=F64) for k in ("weights", "loc", "cov"))
        with ppl.plate("data", N):
            z = ppl.sample("z", dist.Categorical(w))
            ppl.sample("obs", dist.MultivariateNormal(loc[z], covariance_matrix=cov[z]), obs=x)

    return gmm


def make_hmm(K=3, const=None):
    @ppl.model
    def hmm(y):
        if const is None:
            init = ppl.param("init", torch.ones(K, dtype=F64) / K, constraint=constraints.simplex)
            trans = ppl.param("trans", torch.full((K, K), 1.0 / K, dtype=F64), constraint=constraints.simplex)
            loc = ppl.param("loc", torch.linspace(-1, 1, K, dtype=F64))
            scale = ppl.param("scale", torch.ones(K, dtype=F64), constraint=constraints.positive)
        else:
            init, trans, loc, scale = (torch.as_tensor(const[k], dtype=F64) for k in ("init", "trans", "loc", "scale"))
        x = None
        for t in ppl.markov(range(len(y))):
            x = ppl.sample(f"x_{t}", dist.Categorical(init if t == 0 else trans[x]))
            ppl.sample(f"y_{t}", dist.Normal(loc[x], scale[x]), obs=y[t])

    return hmm


@ppl.model
def bernoulli_mix(x, K=2):
    N, D = x.shape
    w = ppl.param("weights", torch.full((K,), 1.0 / K, dtype=F64), constraint=constraints.simplex)
    probs = ppl.param("probs", torch.full((K, D), 0.5, dtype=F64), constraint=constraints.unit_interval)
    with ppl.plate("data", N):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.Bernoulli(probs[z]).to_event(1), obs=x)


@ppl.model
def poisson_mix(x, K=2):
    w = ppl.param("weights", torch.full((K,), 1.0 / K, dtype=F64), constraint=constraints.simplex)
    rate = ppl.param("rate", torch.arange(1, K + 1, dtype=F64), constraint=constraints.positive)
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.Poisson(rate[z]), obs=x)


@ppl.model
def softplus_mix(x, K=2):
    """Normal scale through softplus: no closed-form M-step for 'raw_scale'."""
    w = ppl.param("weights", torch.full((K,), 1.0 / K, dtype=F64), constraint=constraints.simplex)
    loc = ppl.param("loc", torch.tensor([-1.0, 1.0], dtype=F64))
    raw = ppl.param("raw_scale", torch.zeros(K, dtype=F64))
    scale = torch.nn.functional.softplus(raw)
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.Normal(loc[z], scale[z]), obs=x)


@ppl.model
def gamma_mix(x, K=2):
    w = ppl.param("weights", torch.full((K,), 1.0 / K, dtype=F64), constraint=constraints.simplex)
    conc = ppl.param("concentration", torch.tensor([1.0, 3.0], dtype=F64), constraint=constraints.positive)
    rate = ppl.param("rate", torch.tensor([1.0, 1.0], dtype=F64), constraint=constraints.positive)
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.Gamma(conc[z], rate[z]), obs=x)


# ====================================================================== numpy references
def np_mix1d_logp(x, w, mu, s):
    return np.log(w)[None, :] + stats.norm.logpdf(x[:, None], mu[None, :], s[None, :])


def np_mix1d_step(x, w, mu, s, reg=0.0):
    """One EM step of a 1-D Gaussian mixture: (log-lik at θ, responsibilities, w', mu', s')."""
    lp = np_mix1d_logp(x, w, mu, s)
    ll = logsumexp(lp, axis=1)
    r = np.exp(lp - ll[:, None])
    nk = r.sum(0)
    w1 = nk / len(x)
    mu1 = r.T @ x / nk
    var1 = (r * (x[:, None] - mu1[None, :]) ** 2).sum(0) / nk + reg
    return ll.sum(), r, w1, mu1, np.sqrt(var1)


def np_mix1d_em(x, w, mu, s, iters=5000):
    for _ in range(iters):
        _, _, w, mu, s = np_mix1d_step(x, w, mu, s)
    return np_mix1d_step(x, w, mu, s)[0], w, mu, s


def np_gmm_loglik(X, weights, loc, cov):
    lp = np.stack(
        [np.log(weights[k]) + stats.multivariate_normal.logpdf(X, loc[k], cov[k]) for k in range(len(weights))], 1
    )
    return logsumexp(lp, axis=1).sum()


def np_hmm_loglik(y, init, trans, loc, scale):
    lb = stats.norm.logpdf(y[:, None], loc[None, :], scale[None, :])
    a = np.log(init) + lb[0]
    for t in range(1, len(y)):
        a = logsumexp(a[:, None] + np.log(trans), axis=0) + lb[t]
    return logsumexp(a)


def np_bernoulli_mix_logp(X, w, p):
    return np.log(w)[None, :] + X @ np.log(p).T + (1 - X) @ np.log1p(-p).T


def np_poisson_mix_logp(x, w, rate):
    return np.log(w)[None, :] + stats.poisson.logpmf(x[:, None], rate[None, :])


# ====================================================================== data
X1D = np.array([-2.2, -1.9, -0.4, 0.1, 1.7, 2.4, 3.0])
TH0 = dict(weights=np.array([0.35, 0.65]), loc=np.array([-1.0, 1.5]), scale=np.array([0.8, 1.3]))


def _two_gaussians(n=200, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.random(n) < 0.4
    return np.where(z, rng.normal(-2.0, 0.7, n), rng.normal(2.5, 1.2, n))


def _gmm2d(seed=0, n_per=100, means=((-3.0, 0.0), (3.0, 0.5), (0.0, 4.0)), sd=1.0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(m, sd, size=(n_per, 2)) for m in means])
    return X[rng.permutation(len(X))]


GMM_INIT = dict(
    weights=np.array([0.3, 0.3, 0.4]),
    loc=np.array([[-2.0, 1.0], [2.0, -1.0], [1.0, 3.0]]),
    cov=np.array([np.eye(2), 2 * np.eye(2), [[1.0, 0.3], [0.3, 1.0]]]),
)


def _hmm_data(T=200, seed=5):
    rng = np.random.default_rng(seed)
    A = np.array([[0.9, 0.05, 0.05], [0.1, 0.85, 0.05], [0.05, 0.1, 0.85]])
    mu, sd = np.array([-2.0, 0.0, 2.5]), np.array([0.5, 0.8, 0.6])
    s, y = 0, np.empty(T)
    for t in range(T):
        y[t] = rng.normal(mu[s], sd[s])
        s = rng.choice(3, p=A[s])
    return y


HMM_INIT = dict(
    init=np.array([0.4, 0.3, 0.3]),
    trans=np.array([[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7]]),
    loc=np.array([-1.0, 0.5, 1.5]),
    scale=np.array([1.0, 1.0, 1.0]),
)


# ====================================================================== one EM step by hand
@pytest.mark.parametrize("reg", [0.0, 0.05])
@pytest.mark.parametrize("how", ["param_store", "init_dict"])
def test_one_step_by_hand_two_gaussians(how, reg):
    if how == "param_store":  # θ0 = the model's own ppl.param values
        model, init = make_mix1d(**TH0), None
    else:  # the model's defaults are something else; init= overrides them
        model, init = make_mix1d([0.9, 0.1], [5.0, 6.0], [3.0, 0.1]), {k: v.copy() for k, v in TH0.items()}
    with pytest.warns(ppl.ConvergenceWarning):
        post = ppl.infer(model, {"x": X1D}, method="em", max_iter=1, tol=0.0, reg_covar=reg, init=init)

    ll0, _, w1, mu1, s1 = np_mix1d_step(X1D, TH0["weights"], TH0["loc"], TH0["scale"], reg)
    ll1, r1, *_ = np_mix1d_step(X1D, w1, mu1, s1)

    assert set(post.params) == {"weights", "loc", "scale"}
    np.testing.assert_allclose(_np(post.params["weights"]), w1, rtol=0, atol=1e-10)
    np.testing.assert_allclose(_np(post.params["loc"]), mu1, rtol=0, atol=1e-10)
    np.testing.assert_allclose(_np(post.params["scale"]), s1, rtol=0, atol=1e-10)
    assert len(post.history) == 2
    assert post.history[0] == pytest.approx(ll0, abs=1e-10)
    assert post.history[1] == pytest.approx(ll1, abs=1e-10)
    assert post.log_evidence == pytest.approx(ll1, abs=1e-10)
    np.testing.assert_allclose(_np(post.marginal("z").probs), r1, atol=1e-10)
    assert post.converged is False
    assert post.diagnostics["n_iter"] == 1
    assert post.diagnostics["n_obs"] == len(X1D)
    assert post.diagnostics["average_log_likelihood"] == pytest.approx(ll1 / len(X1D), abs=1e-12)
    for name in ("weights", "loc", "scale"):
        assert "closed form" in post.diagnostics["m_step"][name], post.diagnostics["m_step"]


def test_one_step_by_hand_bernoulli_mixture():
    rng = np.random.default_rng(11)
    X = (rng.random((40, 5)) < np.where(np.arange(40)[:, None] < 20, 0.8, 0.2)).astype(float)
    w0 = np.array([0.45, 0.55])
    p0 = np.array([[0.6, 0.7, 0.5, 0.65, 0.55], [0.3, 0.4, 0.35, 0.5, 0.2]])
    post = _em(bernoulli_mix, {"x": X}, max_iter=1, tol=0.0, init={"weights": w0, "probs": p0})

    lp = np_bernoulli_mix_logp(X, w0, p0)
    ll0 = logsumexp(lp, axis=1).sum()
    r = np.exp(lp - logsumexp(lp, axis=1, keepdims=True))
    nk = r.sum(0)
    w1, p1 = nk / len(X), (r.T @ X) / nk[:, None]
    ll1 = logsumexp(np_bernoulli_mix_logp(X, w1, p1), axis=1).sum()
    np.testing.assert_allclose(_np(post.params["weights"]), w1, atol=1e-10)
    np.testing.assert_allclose(_np(post.params["probs"]), p1, atol=1e-10)
    np.testing.assert_allclose(post.history, [ll0, ll1], rtol=0, atol=1e-9)
    assert post.diagnostics["n_obs"] == len(X)


def test_one_step_by_hand_poisson_mixture():
    rng = np.random.default_rng(12)
    x = np.concatenate([rng.poisson(2.0, 30), rng.poisson(9.0, 20)]).astype(float)
    w0, rate0 = np.array([0.5, 0.5]), np.array([1.0, 5.0])
    post = _em(poisson_mix, {"x": x}, max_iter=1, tol=0.0, init={"weights": w0, "rate": rate0})

    lp = np_poisson_mix_logp(x, w0, rate0)
    ll0 = logsumexp(lp, axis=1).sum()
    r = np.exp(lp - logsumexp(lp, axis=1, keepdims=True))
    nk = r.sum(0)
    w1, rate1 = nk / len(x), (r.T @ x) / nk
    ll1 = logsumexp(np_poisson_mix_logp(x, w1, rate1), axis=1).sum()
    np.testing.assert_allclose(_np(post.params["weights"]), w1, atol=1e-10)
    np.testing.assert_allclose(_np(post.params["rate"]), rate1, atol=1e-10)
    np.testing.assert_allclose(post.history, [ll0, ll1], rtol=0, atol=1e-9)


# ====================================================================== monotone log-likelihood
def _monotone_case(kind):
    """(model, data, init, loglik(params) in numpy)."""
    if kind == "gmm":
        X = _gmm2d(seed=21)
        return make_gmm(), {"x": X}, GMM_INIT, lambda p: np_gmm_loglik(X, p["weights"], p["loc"], p["cov"])
    if kind == "hmm":
        y = _hmm_data()
        return make_hmm(), {"y": y}, HMM_INIT, lambda p: np_hmm_loglik(y, p["init"], p["trans"], p["loc"], p["scale"])
    if kind == "bernoulli":
        rng = np.random.default_rng(22)
        truth = np.array([[0.9, 0.8, 0.1, 0.2, 0.7, 0.5], [0.2, 0.1, 0.8, 0.9, 0.3, 0.5]])
        X = (rng.random((150, 6)) < truth[rng.integers(0, 2, 150)]).astype(float)
        init = {"weights": np.array([0.5, 0.5]), "probs": np.array([[0.6] * 6, [0.45] * 6]) + 0.05 * rng.random((2, 6))}
        return bernoulli_mix, {"x": X}, init, lambda p: logsumexp(
            np_bernoulli_mix_logp(X, p["weights"], p["probs"]), axis=1
        ).sum()
    if kind == "poisson":
        rng = np.random.default_rng(23)
        x = np.concatenate([rng.poisson(3.0, 100), rng.poisson(12.0, 60)]).astype(float)
        init = {"weights": np.array([0.5, 0.5]), "rate": np.array([5.0, 6.0])}
        return poisson_mix, {"x": x}, init, lambda p: logsumexp(
            np_poisson_mix_logp(x, p["weights"], p["rate"]), axis=1
        ).sum()
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["gmm", "hmm", "bernoulli", "poisson"])
def test_log_likelihood_is_monotone(kind):
    model, data, init, np_loglik = _monotone_case(kind)
    post = _em(model, data, max_iter=30, tol=0.0, reg_covar=0.0, init=init)  # BoundDecreaseWarning -> error
    _assert_monotone(post.history)
    assert len(post.history) == 31
    assert post.history[-1] > post.history[0] + 1.0  # it actually learned something
    assert post.history[0] == pytest.approx(np_loglik(init), rel=1e-10)
    assert post.history[-1] == pytest.approx(np_loglik({k: _np(v) for k, v in post.params.items()}), rel=1e-10)
    assert post.log_evidence == pytest.approx(post.history[-1], rel=1e-12)


# ====================================================================== closed form vs gradient M-step
def test_closed_form_and_gradient_m_steps_reach_the_numpy_optimum():
    x = _two_gaussians()
    w0, mu0, s0 = np.array([0.5, 0.5]), np.array([-1.0, 1.0]), np.array([1.0, 1.0])
    ll_ref, w_ref, mu_ref, s_ref = np_mix1d_em(x, w0, mu0, s0)
    model = make_mix1d(w0, mu0, s0)
    fits = {}
    for m_step in ("auto", "gradient"):
        pyro.clear_param_store()
        post = _em(model, {"x": x}, max_iter=1000, tol=1e-10, reg_covar=0.0, m_step=m_step)
        _assert_monotone(post.history)
        fits[m_step] = post
        assert post.log_evidence == pytest.approx(ll_ref, rel=1e-4), m_step
        atol = 1e-4 if m_step == "auto" else 1e-2
        np.testing.assert_allclose(_np(post.params["weights"]), w_ref, atol=atol, err_msg=m_step)
        np.testing.assert_allclose(_np(post.params["loc"]), mu_ref, atol=atol, err_msg=m_step)
        np.testing.assert_allclose(_np(post.params["scale"]), s_ref, atol=atol, err_msg=m_step)
    # closed form converges to the fixed point to round-off
    assert fits["auto"].log_evidence == pytest.approx(ll_ref, rel=1e-9)
    for name in ("weights", "loc", "scale"):
        assert "closed form" in fits["auto"].diagnostics["m_step"][name]
        assert "gradient" in fits["gradient"].diagnostics["m_step"][name]
        assert "closed form" not in fits["gradient"].diagnostics["m_step"][name]


def test_parameter_without_closed_form_learns_by_gradient():
    x = _two_gaussians(seed=3)
    post = _em(softplus_mix, {"x": x}, max_iter=300, tol=1e-10)
    assert "gradient" in post.diagnostics["m_step"]["raw_scale"]
    _assert_monotone(post.history)
    p = {k: _np(v) for k, v in post.params.items()}
    s = np.log1p(np.exp(p["raw_scale"]))
    ll = logsumexp(np_mix1d_logp(x, p["weights"], p["loc"], s), axis=1).sum()
    assert post.history[-1] == pytest.approx(ll, rel=1e-10)
    # the same optimum as numpy EM on the (w, mu, sigma) parametrisation, started at the same point
    ll_ref, *_ = np_mix1d_em(x, np.array([0.5, 0.5]), np.array([-1.0, 1.0]), np.log1p(np.exp(np.zeros(2))))
    assert post.history[-1] > post.history[0] + 10.0
    assert post.history[-1] == pytest.approx(ll_ref, rel=1e-4)


def test_gamma_emission_learns_by_gradient():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.gamma(2.0, 1.0 / 2.0, 120), rng.gamma(9.0, 1.0 / 1.5, 80)])
    post = _em(gamma_mix, {"x": x}, max_iter=40, tol=0.0)
    assert "gradient" in post.diagnostics["m_step"]["concentration"]
    _assert_monotone(post.history)
    p = {k: _np(v) for k, v in post.params.items()}
    lp = np.log(p["weights"])[None, :] + stats.gamma.logpdf(
        x[:, None], p["concentration"][None, :], scale=1.0 / p["rate"][None, :]
    )
    ll = logsumexp(lp, axis=1).sum()
    assert post.history[-1] == pytest.approx(ll, rel=1e-10)
    lp0 = np.log([0.5, 0.5])[None, :] + stats.gamma.logpdf(x[:, None], np.array([1.0, 3.0])[None, :], scale=1.0)
    assert post.history[0] == pytest.approx(logsumexp(lp0, axis=1).sum(), rel=1e-10)
    assert post.history[-1] > post.history[0] + 10.0


# ====================================================================== errors and options
@ppl.model
def continuous_latent(x):
    w = ppl.param("weights", torch.tensor([0.5, 0.5], dtype=F64), constraint=constraints.simplex)
    global_shift = ppl.sample("global_shift", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.Normal(torch.tensor([-1.0, 1.0], dtype=F64)[z] + global_shift, 1.0), obs=x)


@ppl.model
def no_params(x):
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F64)))
        ppl.sample("obs", dist.Normal(torch.tensor([-1.0, 1.0], dtype=F64)[z], 1.0), obs=x)


def test_continuous_latent_is_unsupported():
    with pytest.raises(ppl.UnsupportedModelError, match="global_shift"):
        ppl.infer(continuous_latent, {"x": X1D}, method="em")


def test_model_without_params_is_unsupported():
    with pytest.raises(ppl.UnsupportedModelError):
        ppl.infer(no_params, {"x": X1D}, method="em")


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="max_iters"):
        ppl.infer(make_mix1d(**TH0), {"x": X1D}, method="em", max_iters=3)


def test_max_iter_reached_warns():
    with pytest.warns(ppl.ConvergenceWarning):
        post = ppl.infer(make_mix1d(**TH0), {"x": _two_gaussians()}, method="em", max_iter=3, tol=1e-12)
    assert post.converged is False
    assert post.diagnostics["n_iter"] == 3
    assert len(post.history) == 4


def test_tol_stops_on_average_log_likelihood_change():
    x = _two_gaussians(n=300, seed=8)
    tol = 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error", ppl.ConvergenceWarning)  # it must converge, not hit max_iter
        post = ppl.infer(make_mix1d([0.5, 0.5], [-1.0, 1.0], [1.0, 1.0]), {"x": x}, method="em", max_iter=1000, tol=tol)
    assert post.converged is True
    h = np.asarray(post.history)
    n = len(h) - 1
    assert post.diagnostics["n_iter"] == n
    assert abs(h[-1] - h[-2]) / len(x) < tol
    assert np.all(np.abs(np.diff(h[:-1])) / len(x) >= tol)  # it did not stop earlier
    # and the numpy EM from the same start is after n steps exactly where ppl is
    w, mu, s = np.array([0.5, 0.5]), np.array([-1.0, 1.0]), np.array([1.0, 1.0])
    for _ in range(n):
        _, _, w, mu, s = np_mix1d_step(x, w, mu, s, reg=1e-6)
    np.testing.assert_allclose(_np(post.params["loc"]), mu, atol=1e-8)
    np.testing.assert_allclose(_np(post.params["scale"]), s, atol=1e-8)


def test_singular_covariance_is_a_data_error():
    rng = np.random.default_rng(9)
    X = np.concatenate([rng.normal(0.0, 1.0, (50, 2)), [[100.0, 100.0]]])
    init = {"weights": np.array([0.5, 0.5]), "loc": np.array([[0.0, 0.0], [100.0, 100.0]]),
            "cov": np.array([np.eye(2), 0.01 * np.eye(2)])}  # fmt: skip
    with pytest.raises(ppl.DataError, match="reg_covar") as info:
        _em(make_gmm(K=2), {"x": X}, max_iter=5, tol=0.0, reg_covar=0.0, init=init)
    assert "cov" in str(info.value)


def test_n_init_keeps_the_best_restart():
    X = _gmm2d(seed=31, sd=1.3)
    post = _em(make_gmm(), {"x": X}, n_init=3, init="random", seed=0, max_iter=25, tol=1e-6)
    restarts = post.diagnostics["restarts"]
    assert len(restarts) == 3
    assert post.history[-1] == pytest.approx(max(restarts), abs=1e-9)
    p = {k: _np(v) for k, v in post.params.items()}
    assert post.log_evidence == pytest.approx(np_gmm_loglik(X, p["weights"], p["loc"], p["cov"]), rel=1e-10)


def test_kmeans_plus_plus_finds_well_separated_means():
    true = np.array([[-6.0, 0.0], [6.0, 0.0], [0.0, 8.0]])
    X = _gmm2d(seed=41, n_per=200, means=true, sd=0.5)
    post = _em(make_gmm(), {"x": X}, init="kmeans++", seed=0, max_iter=100, tol=1e-8)
    loc = _np(post.params["loc"])
    loc = loc[np.lexsort((loc[:, 0], loc[:, 1]))]
    ref = true[np.lexsort((true[:, 0], true[:, 1]))]
    np.testing.assert_allclose(loc, ref, atol=0.1)
    np.testing.assert_allclose(np.sort(_np(post.params["weights"])), [1 / 3] * 3, atol=0.01)


# ====================================================================== log evidence = exact at θ_final
def test_gmm_log_evidence_equals_exact_with_learned_constants():
    X = _gmm2d(seed=51)
    post = _em(make_gmm(), {"x": X}, init=GMM_INIT, max_iter=20, tol=0.0)
    learned = {k: _np(v).copy() for k, v in post.params.items()}
    pyro.clear_param_store()
    exact = ppl.infer(make_gmm(const=learned), {"x": X}, method="exact")
    assert post.log_evidence == pytest.approx(exact.log_evidence, rel=1e-12, abs=1e-9)
    assert post.log_evidence == pytest.approx(np_gmm_loglik(X, **learned), rel=1e-10)
    np.testing.assert_allclose(_np(post.marginal("z").probs), _np(exact.marginal("z").probs), atol=1e-10)


def test_learned_params_warm_start_a_later_call_only_when_asked():
    """docs/em.md: the learned values are in post.params, Pyro's param store is left as it was,
    and ``init=post`` starts a later call (here exact inference) at them."""
    X = _gmm2d(seed=51)
    pyro.clear_param_store()
    post = _em(make_gmm(), {"x": X}, init=GMM_INIT, max_iter=5, tol=0.0)
    learned = {k: _np(v).copy() for k, v in post.params.items()}
    assert not list(pyro.get_param_store().keys())
    exact = ppl.infer(make_gmm(), {"x": X}, method="exact", init=post)
    assert exact.log_evidence == pytest.approx(np_gmm_loglik(X, **learned), rel=1e-10)
    again = _em(make_gmm(), {"x": X}, init=GMM_INIT, max_iter=5, tol=0.0)
    for name, value in learned.items():  # a second fit starts where the first did
        np.testing.assert_allclose(_np(again.params[name]), value, atol=1e-12, err_msg=name)


def test_hmm_log_evidence_equals_exact_with_learned_constants():
    y = _hmm_data(T=120, seed=52)
    post = _em(make_hmm(), {"y": y}, init=HMM_INIT, max_iter=10, tol=0.0)
    assert post.diagnostics["n_obs"] == len(y)
    learned = {k: _np(v).copy() for k, v in post.params.items()}
    pyro.clear_param_store()
    exact = ppl.infer(make_hmm(const=learned), {"y": y}, method="exact")
    assert post.log_evidence == pytest.approx(exact.log_evidence, rel=1e-12, abs=1e-9)
    assert post.log_evidence == pytest.approx(np_hmm_loglik(y, **learned), rel=1e-10)


@ppl.model
def hmm_float32_inits(y, K=3):
    """The documented HMM with float32 param inits (torch's default dtype)."""
    init = ppl.param("init", torch.ones(K) / K, constraint=constraints.simplex)
    trans = ppl.param("trans", torch.full((K, K), 1.0 / K), constraint=constraints.simplex)
    loc = ppl.param("loc", torch.linspace(-1, 1, K))
    scale = ppl.param("scale", torch.ones(K), constraint=constraints.positive)
    x = None
    for t in ppl.markov(range(len(y))):
        x = ppl.sample(f"x_{t}", dist.Categorical(init if t == 0 else trans[x]))
        ppl.sample(f"y_{t}", dist.Normal(loc[x], scale[x]), obs=y[t])


def test_float32_param_inits_are_fitted_in_float64():
    y = _hmm_data(T=100, seed=61)
    post = _em(hmm_float32_inits, {"y": y}, max_iter=5, tol=0.0)
    th0 = dict(init=np.ones(3) / 3, trans=np.full((3, 3), 1 / 3), loc=np.linspace(-1, 1, 3), scale=np.ones(3))
    assert post.history[0] == pytest.approx(np_hmm_loglik(y, **th0), rel=1e-10)
    assert all(v.dtype == torch.float64 for v in post.params.values())
    learned = {k: _np(v) for k, v in post.params.items()}
    assert post.history[-1] == pytest.approx(np_hmm_loglik(y, **learned), rel=1e-10)
    _assert_monotone(post.history)
    assert post.history[-1] > post.history[0] + 1.0


def test_restarts_of_a_model_without_locations_draw_new_probability_tables():
    """A mixture of categoricals (4 draws per row) has no Normal loc to seed: restarts draw
    every simplex param afresh (uniform Dirichlet rows), so n_init > 1 explores different
    starts, where repeating the symmetric start would stay at its saddle point."""
    import warnings

    from ppl.distributions import constraints

    rng = np.random.default_rng(0)
    x = torch.tensor(np.concatenate([rng.choice(3, (60, 4), p=[0.8, 0.1, 0.1]),
                                     rng.choice(3, (60, 4), p=[0.1, 0.1, 0.8])]))

    @ppl.model
    def cat_mix(x):
        w = ppl.param("w", torch.ones(2, dtype=torch.float64) / 2, constraint=constraints.simplex)
        e = ppl.param("e", torch.ones(2, 3, dtype=torch.float64) / 3, constraint=constraints.simplex)
        with ppl.plate("data", x.shape[0]):
            z = ppl.sample("z", dist.Categorical(w))
            rows = e[z]
            ppl.sample("x", dist.Categorical(rows.unsqueeze(-2)).expand(rows.shape[:-1] + (x.shape[1],)).to_event(1),
                       obs=x)

    start = {"w": [0.5, 0.5], "e": np.ones((2, 3)) / 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        one = ppl.infer(cat_mix, {"x": x}, method="em", max_iter=30, init=start)
        many = ppl.infer(cat_mix, {"x": x}, method="em", max_iter=30, n_init=4, seed=1, init=start)
    # from the symmetric start EM cannot break the symmetry: it stops at the one-component MLE
    freq = np.bincount(x.numpy().ravel(), minlength=3) / x.numel()
    assert one.history[-1] == pytest.approx(float(np.sum(np.log(freq[x.numpy()]))), rel=1e-10)
    assert many.history[-1] > one.history[-1] + 20.0
    assert many.diagnostics["best_restart"] > 0
