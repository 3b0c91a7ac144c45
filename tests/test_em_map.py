"""method="em" with map_latents: MAP of global continuous latents (EM for MAP).

References (none of them is ppl): EM for MAP written out by hand in numpy/scipy
(responsibilities, the conjugate M-steps of a Normal prior on the locations and of a
Dirichlet prior on the weights, log p(v, θ) = log p(v | θ) + log p(θ)), and plain
maximum-likelihood EM of ppl on the same model with ppl.param values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

import ppl
import ppl.distributions as dist
from em_helpers import em as _em
from em_helpers import to_np as _np
from ppl.distributions import constraints

F64 = torch.float64
W = np.array([0.4, 0.6])
SIGMA = 1.0


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-2.0, 1.0, 30), rng.normal(2.0, 1.0, 40)])


def _monotone(history):
    h = np.asarray(history, dtype=float)
    assert np.all(np.isfinite(h))
    assert np.all(np.diff(h) >= -1e-9 * (1 + np.abs(h[1:]))), np.diff(h)


def make_loc_prior(s0, mu0=0.0):
    """Two-component 1-D mixture, fixed weights and scale, loc ~ Normal(mu0, s0) (K,)."""

    @ppl.model
    def loc_prior(x):
        loc = ppl.sample("loc", dist.Normal(torch.tensor(mu0, dtype=F64), s0).expand([2]).to_event(1))
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(torch.tensor(W, dtype=F64)))
            ppl.sample("obs", dist.Normal(loc[z], torch.tensor(SIGMA, dtype=F64)), obs=x)

    return loc_prior


def np_em_map(x, loc, s0, mu0, n_iter, w=W, sigma=SIGMA):
    """EM for MAP by hand: history log p(v, θ_i) and the final loc."""
    hist = []
    for i in range(n_iter + 1):
        lp = np.log(w)[None, :] + stats.norm.logpdf(x[:, None], loc[None, :], sigma)
        ll = logsumexp(lp, axis=1)
        hist.append(ll.sum() + stats.norm.logpdf(loc, mu0, s0).sum())
        if i == n_iter:
            break
        r = np.exp(lp - ll[:, None])
        loc = (r.T @ x / sigma**2 + mu0 / s0**2) / (r.sum(0) / sigma**2 + 1 / s0**2)
    return np.array(hist), loc


# ====================================================================== (1) Normal prior on loc
@pytest.mark.parametrize("m_step", ["auto", "gradient"])
def test_normal_prior_on_loc_matches_numpy_em_for_map(x, m_step):
    s0, mu0, n = 1.5, 0.5, 12
    loc0 = np.array([-1.0, 1.0])
    post = _em(make_loc_prior(s0, mu0), {"x": x}, map_latents=True, init={"loc": loc0}, max_iter=n, tol=0,
               m_step=m_step)
    ref_hist, ref_loc = np_em_map(x, loc0, s0, mu0, n)
    assert post.diagnostics["map_latents"] == ["loc"]
    assert set(post.params) == {"loc"}
    np.testing.assert_allclose(_np(post.params["loc"]), ref_loc, rtol=0, atol=1e-6)
    np.testing.assert_allclose(post.history, ref_hist, rtol=1e-9, atol=1e-6)
    assert post.log_evidence == pytest.approx(ref_hist[-1], abs=1e-6)
    _monotone(post.history)
    # the prior moved the estimate towards mu0 compared to maximum likelihood
    ml = _em(make_ml(), {"x": x}, init={"loc": loc0}, max_iter=n, tol=0)
    assert np.all(np.abs(_np(post.params["loc"]) - mu0) < np.abs(_np(ml.params["loc"]) - mu0))


def make_ml():
    @ppl.model
    def loc_ml(x):
        loc = ppl.param("loc", torch.tensor([-1.0, 1.0], dtype=F64))
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(torch.tensor(W, dtype=F64)))
            ppl.sample("obs", dist.Normal(loc[z], torch.tensor(SIGMA, dtype=F64)), obs=x)

    return loc_ml


def test_normal_prior_closed_form_with_learned_scale(x):
    """Closed-form MAP loc (Normal prior) followed by the ML scale update (ECM), against numpy."""
    s0, mu0, n = 1.0, 0.0, 10

    @ppl.model
    def mix(x):
        loc = ppl.sample("loc", dist.Normal(torch.full((2,), mu0, dtype=F64), s0).to_event(1))
        scale = ppl.param("scale", torch.ones(2, dtype=F64), constraint=constraints.positive)
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(torch.tensor(W, dtype=F64)))
            ppl.sample("obs", dist.Normal(loc[z], scale[z]), obs=x)

    loc, sd = np.array([-1.0, 1.0]), np.ones(2)
    post = _em(mix, {"x": x}, map_latents=["loc"], init={"loc": loc}, max_iter=n, tol=0, reg_covar=0.0)
    assert post.diagnostics["m_step"]["loc"] == "closed form (Normal loc, MAP with a Normal prior)"
    hist = []
    for i in range(n + 1):
        lp = np.log(W)[None, :] + stats.norm.logpdf(x[:, None], loc[None, :], sd[None, :])
        ll = logsumexp(lp, axis=1)
        hist.append(ll.sum() + stats.norm.logpdf(loc, mu0, s0).sum())
        if i == n:
            break
        r = np.exp(lp - ll[:, None])
        loc = (r.T @ x / sd**2 + mu0 / s0**2) / (r.sum(0) / sd**2 + 1 / s0**2)
        sd = np.sqrt((r * (x[:, None] - loc[None, :]) ** 2).sum(0) / r.sum(0))
    np.testing.assert_allclose(post.history, hist, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(_np(post.params["loc"]), loc, atol=1e-10)
    np.testing.assert_allclose(_np(post.params["scale"]), sd, atol=1e-10)
    _monotone(post.history)


# ====================================================================== (2) broad prior -> ML
def test_broad_prior_approaches_maximum_likelihood(x):
    loc0 = np.array([-1.0, 1.0])
    post = _em(make_loc_prior(1e4), {"x": x}, map_latents=True, init={"loc": loc0}, max_iter=200, tol=1e-12)
    ml = _em(make_ml(), {"x": x}, init={"loc": loc0}, max_iter=200, tol=1e-12)
    np.testing.assert_allclose(_np(post.params["loc"]), _np(ml.params["loc"]), atol=1e-6)
    # history = log p(v | θ) + log p(θ): the prior term is the (nearly constant) broad log density
    prior = stats.norm.logpdf(_np(post.params["loc"]), 0.0, 1e4).sum()
    assert post.history[-1] == pytest.approx(ml.history[-1] + prior, abs=1e-6)


# ====================================================================== (3) Dirichlet prior on weights
@pytest.mark.parametrize("m_step", ["auto", "gradient"])
def test_dirichlet_prior_on_weights_fixed_point(x, m_step):
    alpha = np.array([3.0, 5.0])

    @ppl.model
    def mix(x):
        w = ppl.sample("w", dist.Dirichlet(torch.tensor(alpha, dtype=F64)))
        loc = ppl.param("loc", torch.tensor([-1.0, 1.0], dtype=F64))
        scale = ppl.param("scale", torch.ones(2, dtype=F64), constraint=constraints.positive)
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(w))
            ppl.sample("obs", dist.Normal(loc[z], scale[z]), obs=x)

    post = _em(mix, {"x": x}, map_latents=True, max_iter=300, tol=1e-12, reg_covar=0.0, m_step=m_step)
    assert post.diagnostics["map_latents"] == ["w"]
    if m_step == "auto":
        assert post.diagnostics["m_step"]["w"] == "closed form (Categorical probabilities, MAP with a Dirichlet prior)"
    w, loc, sd = (_np(post.params[k]) for k in ("w", "loc", "scale"))
    lp = np.log(w)[None, :] + stats.norm.logpdf(x[:, None], loc[None, :], sd[None, :])
    ll = logsumexp(lp, axis=1)
    r = np.exp(lp - ll[:, None])
    nk, K = r.sum(0), len(alpha)
    np.testing.assert_allclose(w, (nk + alpha - 1) / (len(x) + alpha.sum() - K), atol=1e-6)
    np.testing.assert_allclose(loc, r.T @ x / nk, atol=1e-6)
    log_joint = ll.sum() + stats.dirichlet.logpdf(w, alpha)
    assert post.log_evidence == pytest.approx(log_joint, abs=1e-8)
    _monotone(post.history)


# ====================================================================== (4) monotone, several latents
def test_monotone_history_with_two_map_latents(x):
    @ppl.model
    def mix(x):
        w = ppl.sample("w", dist.Dirichlet(torch.tensor([2.0, 2.0], dtype=F64)))
        with ppl.plate("components", 2):
            loc = ppl.sample("loc", dist.Normal(torch.tensor(0.0, dtype=F64), 3.0))
            scale = ppl.sample("scale", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(w))
            ppl.sample("obs", dist.Normal(loc[z], scale[z]), obs=x)

    post = _em(mix, {"x": x}, map_latents=True, init={"loc": [-1.0, 1.0]}, max_iter=30, tol=0)
    assert post.diagnostics["map_latents"] == ["w", "loc", "scale"]
    assert post.diagnostics["m_step"]["scale"].startswith("gradient")  # LogNormal prior: no closed form
    _monotone(post.history)
    assert post.history[-1] > post.history[0] + 1.0
    assert torch.all(post.params["scale"] > 0) and post.params["w"].sum().item() == pytest.approx(1.0)


# ====================================================================== (5) errors
def test_bad_map_latents_raise(x):
    m = make_loc_prior(2.0)
    with pytest.raises(ppl.UnsupportedModelError, match="map_latents"):
        ppl.infer(m, {"x": x}, method="em")
    with pytest.raises(ppl.OptionError, match="'nope' is not a site"):
        ppl.infer(m, {"x": x}, method="em", map_latents=["nope"])
    with pytest.raises(ppl.OptionError, match="'z' is a discrete latent"):
        ppl.infer(m, {"x": x}, method="em", map_latents=["loc", "z"])
    with pytest.raises(ppl.OptionError, match="'obs' is an observed site"):
        ppl.infer(m, {"x": x}, method="em", map_latents="obs")
    with pytest.raises(ppl.OptionError, match="map_latents must be"):
        ppl.infer(m, {"x": x}, method="em", map_latents=3)

    @ppl.model
    def local(x):
        loc = ppl.sample("loc", dist.Normal(torch.zeros(2, dtype=F64), 2.0).to_event(1))
        with ppl.plate("data", len(x)):
            u = ppl.sample("u", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
            z = ppl.sample("z", dist.Categorical(torch.tensor(W, dtype=F64)))
            ppl.sample("obs", dist.Normal(loc[z] + u, torch.tensor(SIGMA, dtype=F64)), obs=x)

    with pytest.raises(ppl.UnsupportedModelError, match="'u' is a local latent"):
        ppl.infer(local, {"x": x}, method="em", map_latents=True)
    with pytest.raises(ppl.UnsupportedModelError, match="continuous latent.*u"):
        ppl.infer(local, {"x": x}, method="em", map_latents=["loc"])
