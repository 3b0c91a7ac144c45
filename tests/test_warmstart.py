"""Samplers started from an earlier result (``init=<Posterior>``, and auto's warm start):
``ppl.backends.common.warmstart``.  References: the closed-form posterior of a linear
regression with known noise, and, for statsmodels' longley data (unknown noise), the exact
posterior by one-dimensional quadrature over the noise scale (b | sigma, y is Gaussian)."""

import numpy as np
import pytest
import torch

import ppl
import pyro.distributions as dist
from ppl.errors import OptionError


def _regression_data(seed=0, n=40):
    g = np.random.default_rng(seed)
    x1 = g.normal(1000.0, 30.0, n)                 # a predictor in the thousands
    x2 = 0.02 * x1 + g.normal(0.0, 0.3, n)         # correlated with it
    X = np.stack([x1, x2], 1)
    y = 3.0 + X @ np.array([0.01, -2.0]) + g.normal(0.0, 1.0, n)
    return torch.tensor(X), torch.tensor(y)


@ppl.model
def known_noise(X, y):
    b0 = ppl.sample("b0", dist.Normal(torch.zeros((), dtype=torch.float64), 100.0))
    b = ppl.sample("b", dist.Normal(torch.zeros(2, dtype=torch.float64), 10.0).to_event(1))
    with ppl.plate("n", y.shape[0]):
        ppl.sample("y", dist.Normal(b0 + X @ b, 1.0), obs=y)


def _closed_form(X, y):
    Xf = np.hstack([np.ones((len(y), 1)), X.numpy()])
    prior_prec = np.diag([1 / 100.0**2, 1 / 10.0**2, 1 / 10.0**2])
    cov = np.linalg.inv(Xf.T @ Xf + prior_prec)
    return cov @ Xf.T @ y.numpy(), np.sqrt(np.diag(cov))


def _check(post, mean, sd, tol=0.2):
    got = np.concatenate([np.atleast_1d(post.mean("b0").numpy()), post.mean("b").numpy()])
    got_sd = np.sqrt(np.concatenate([np.atleast_1d(post.variance("b0").numpy()), post.variance("b").numpy()]))
    assert np.all(np.abs(got - mean) / sd < tol), (got, mean, sd)
    assert np.all(np.abs(got_sd / sd - 1) < tol), (got_sd, sd)


def test_chees_from_a_laplace_result_starts_there_and_is_right():
    X, y = _regression_data()
    data = {"X": X, "y": y}
    lap = ppl.infer(known_noise, data, method="laplace", seed=0)
    post = ppl.infer(known_noise, data, method="chees", seed=0, init=lap, warmup_steps=150, num_samples=200)
    assert post.diagnostics["init"] == "the draws of a laplace result"
    mean, sd = _closed_form(X, y)
    _check(post, mean, sd)
    assert post.diagnostics["max_rhat"] < 1.05     # a short run: the chains agree, if not yet to 1.01


def test_chees_from_a_posterior_without_unconstrained_draws():
    """An SVI result keeps no unconstrained draws: its samples are mapped back through
    the supports' transforms."""
    X, y = _regression_data(1)
    data = {"X": X, "y": y}
    lap = ppl.infer(known_noise, data, method="laplace", seed=0)
    lap.weighted_draws = None      # as any posterior without them
    post = ppl.infer(known_noise, data, method="chees", seed=1, init=lap, warmup_steps=150, num_samples=200)
    _check(post, *_closed_form(X, y))


def test_init_from_another_models_posterior_is_refused():
    X, y = _regression_data()

    @ppl.model
    def other(y):
        ppl.sample("m", dist.Normal(0.0, 1.0))
        with ppl.plate("n", y.shape[0]):
            ppl.sample("y", dist.Normal(0.0, 1.0), obs=y)

    @ppl.model
    def other_m(y):
        m = ppl.sample("m", dist.Normal(0.0, 10.0))
        with ppl.plate("n", y.shape[0]):
            ppl.sample("y", dist.Normal(m, 1.0), obs=y)

    post = ppl.infer(other_m, {"y": y}, method="laplace", seed=0)
    with pytest.raises(OptionError, match=r"init=<laplace Posterior> is not a result of model 'known_noise'"):
        ppl.infer(known_noise, {"X": X, "y": y}, method="chees", seed=0, init=post)


def _longley():
    sm = pytest.importorskip("statsmodels.api")
    d = sm.datasets.longley.load_pandas().data
    X = d[["GNPDEFL", "GNP", "UNEMP", "ARMED", "POP", "YEAR"]].to_numpy(dtype=np.float64)
    return X, d.TOTEMP.to_numpy(dtype=np.float64)


@ppl.model
def longley(X, y):
    zero = torch.zeros((), dtype=torch.float64)
    b0 = ppl.sample("b0", dist.Normal(zero, 1e5))
    with ppl.plate("k", X.shape[1]):
        b = ppl.sample("b", dist.Normal(zero, 1e3))
    sigma = ppl.sample("sigma", dist.HalfNormal(zero + 1e3))
    with ppl.plate("n", X.shape[0]):
        ppl.sample("y", dist.Normal(b0 + X @ b, sigma), obs=y)


def _longley_exact(X, y):
    """Posterior means and sds of (b0, b, sigma): quadrature over log sigma of
    HalfNormal(1e3)(sigma) N(y | 0, sigma² I + X S0 Xᵀ), and b | sigma, y Gaussian."""
    n, k = X.shape
    Xf = np.hstack([np.ones((n, 1)), X])
    scale = 1 / np.sqrt((Xf ** 2).mean(0))
    Xs = Xf * scale
    prior_prec = np.diag((scale / np.array([1e5] + [1e3] * k)) ** 2)
    log_s = np.linspace(np.log(10.0), np.log(5e3), 2001)
    logw, means, covs = [], [], []
    for ls in log_s:
        s = np.exp(ls)
        A = Xs.T @ Xs / s**2 + prior_prec
        m = np.linalg.solve(A, Xs.T @ y / s**2)
        logw.append(-n * ls + 0.5 * np.linalg.slogdet(prior_prec)[1] - 0.5 * np.linalg.slogdet(A)[1]
                    - 0.5 * (y @ y / s**2 - m @ A @ m) - 0.5 * (s / 1e3) ** 2 + ls)
        means.append(m)
        covs.append(np.linalg.inv(A))
    w = np.exp(np.array(logw) - max(logw))
    w /= w.sum()
    sig = np.exp(log_s)
    mc = np.einsum("i,ij->j", w, np.array(means))
    second = np.einsum("i,ijk->jk", w, np.array(covs) + np.einsum("ij,ik->ijk", means, means))
    sd = np.sqrt(np.diag(second - np.outer(mc, mc))) * scale
    s_mean = w @ sig
    return mc * scale, sd, s_mean, np.sqrt(w @ sig**2 - s_mean**2)


@pytest.mark.slow
def test_auto_on_longley_warm_starts_chees_from_laplace():
    """statsmodels' longley regression (predictors in the hundreds to tens of thousands,
    correlated at 0.99+): Laplace is unreliable (k̂ ~ 0.8, a Student-t-like posterior), and
    ChEES from uniform(-2, 2) starts ended its warmup with R-hat 10; started from the
    Laplace fit it is right and reliable."""
    X, y = _longley()
    data = {"X": torch.tensor(X), "y": torch.tensor(y)}
    post = ppl.infer(longley, data, seed=0)
    assert post.method == "chees" and post.trust.verdict == "reliable"
    tried = post.diagnostics["routing"]["attempts"]
    assert [a["method"] for a in tried][:2] == ["laplace", "pathfinder"]
    assert tried[-1]["warm_start"] in ("laplace", "pathfinder")
    mean, sd, s_mean, s_sd = _longley_exact(X, y)
    got = np.concatenate([np.atleast_1d(post.mean("b0").numpy()), post.mean("b").numpy()])
    got_sd = np.sqrt(np.concatenate([np.atleast_1d(post.variance("b0").numpy()), post.variance("b").numpy()]))
    assert np.all(np.abs(got - mean) / sd < 0.1)
    assert np.all(np.abs(got_sd / sd - 1) < 0.1)
    assert abs(float(post.mean("sigma")) - s_mean) / s_sd < 0.1
    assert abs(float(post.variance("sigma")) ** 0.5 / s_sd - 1) < 0.1


def test_a_warm_start_in_one_mode_does_not_hide_the_other():
    """mu enters the likelihood as mu², so the posterior has modes at about ±2.  A one-path
    Pathfinder fit sits in one of them (and PSIS cannot see the other); ChEES started from it
    keeps half its chains at uniform(-2, 2) starts, which reach the other mode, so R-hat
    says the chains disagree instead of a confident one-mode answer."""
    @ppl.model
    def square(x):
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 3.0))
        with ppl.plate("d", len(x)):
            ppl.sample("x", dist.Normal(mu * mu, 1.0), obs=x)

    x = 4.0 + torch.randn(20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.warns(ppl.errors.TrustWarning):
        one = ppl.infer(square, {"x": x}, method="pathfinder", seed=3, num_paths=1)
        post = ppl.infer(square, {"x": x}, method="chees", seed=0, init=one)
    assert float((one.draws("mu") > 0).double().mean()) in (0.0, 1.0)     # the fit is in one mode
    signs = (post.draws("mu") > 0).double().mean(1)                          # per chain
    assert float(signs.min()) < 0.5 < float(signs.max())                      # chains in both modes
    assert post.trust.verdict == "unreliable" and post.diagnostics["max_rhat"] > 1.1


def _result(method, numbers, draws=None):
    import types

    from ppl.trust import UNRELIABLE, Trust

    post = types.SimpleNamespace(method=method, trust=Trust(UNRELIABLE, ["a reason"], dict(numbers)))
    if draws is not None:
        post.weighted_draws = types.SimpleNamespace(log_p=torch.zeros(draws, dtype=torch.float64))
    return post


def test_auto_returns_the_approximation_when_the_last_sampler_chains_disagree():
    """When nothing is reliable, auto returns the last result, except a sampler whose chains
    disagree (R-hat >= 1.1) after a Gaussian approximation with k̂ < 1."""
    from ppl.auto import _least_unreliable

    lap = _result("laplace", {"psis_khat": 0.8}, draws=1000)
    assert _least_unreliable(_result("chees", {"rhat": 2.7}), lap) is lap
    assert "R-hat 2.70 >= 1.1" in lap.trust.reasons[-1] and lap.trust.verdict == "unreliable"
    for last, approx in [(_result("chees", {"rhat": 1.05}), _result("laplace", {"psis_khat": 0.8}, 1000)),
                         (_result("chees", {"rhat": 2.7}), _result("laplace", {"psis_khat": 1.3}, 1000)),
                         (_result("chees", {"rhat": 2.7}), None),
                         (_result("svi", {"psis_khat": 0.9}), _result("laplace", {"psis_khat": 0.8}, 1000))]:
        assert _least_unreliable(last, approx) is last
