"""Missing values (Pyro's ``obs_mask``): exact log evidence and EM on a two-node
Bayesian network, against a numpy reference that marginalises the missing entries."""

import numpy as np
import pyro
import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.distributions import constraints

PA = np.array([0.6, 0.4])
PB = np.array([[0.7, 0.3], [0.2, 0.8]])


def _model(pa0, pb0):
    @ppl.model
    def bn(a, b):
        pa = ppl.param("pa", torch.tensor(pa0), constraint=constraints.simplex)
        pb = ppl.param("pb", torch.tensor(pb0), constraint=constraints.simplex)
        with ppl.plate("rows", a.shape[0]):
            xa = ppl.sample("A", dist.Categorical(pa), obs=a.clamp_min(0), obs_mask=a >= 0)
            ppl.sample("B", dist.Categorical(pb[xa]), obs=b.clamp_min(0), obs_mask=b >= 0)

    return bn


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.choice(2, size=n, p=PA)
    b = np.array([rng.choice(2, p=PB[i]) for i in a])
    a[rng.random(n) < 0.3] = -1
    b[rng.random(n) < 0.25] = -1
    b[:5] = -1
    a[:5] = -1  # rows with nothing observed
    return a, b


def _np_loglik_and_step(a, b, pa, pb):
    """Incomplete-data log-likelihood and one EM step, by enumerating each row's missing values."""
    ll, ca, cb = 0.0, np.zeros(2), np.zeros((2, 2))
    for ai, bi in zip(a, b):
        joint = pa[:, None] * pb  # p(A, B)
        keep = np.ones((2, 2))
        if ai >= 0:
            keep[[k for k in range(2) if k != ai], :] = 0
        if bi >= 0:
            keep[:, [k for k in range(2) if k != bi]] = 0
        w = joint * keep
        z = w.sum()
        ll += np.log(z)
        w /= z
        ca += w.sum(1)
        cb += w
    return ll, ca / ca.sum(), cb / cb.sum(1, keepdims=True)




def test_masked_log_evidence_matches_numpy():
    a, b = _data()
    post = ppl.infer(_model(PA, PB), {"a": torch.tensor(a), "b": torch.tensor(b)}, method="exact")
    ll, _, _ = _np_loglik_and_step(a, b, PA, PB)
    assert post.log_evidence == pytest.approx(ll, rel=1e-12)


def test_em_with_missing_values_matches_numpy_em():
    a, b = _data()
    pa, pb = np.array([0.5, 0.5]), np.array([[0.6, 0.4], [0.3, 0.7]])
    with pytest.warns(ppl.ConvergenceWarning):
        post = ppl.infer(_model(pa, pb), {"a": torch.tensor(a), "b": torch.tensor(b)}, method="em",
                         max_iter=6, tol=0.0, init={"pa": pa, "pb": pb})
    ref = []
    for _ in range(7):
        ll, pa_new, pb_new = _np_loglik_and_step(a, b, pa, pb)
        ref.append(ll)
        if len(ref) < 7:
            pa, pb = pa_new, pb_new
    np.testing.assert_allclose(post.history, ref, rtol=1e-12)
    np.testing.assert_allclose(post.params["pa"].numpy(), pa, rtol=1e-10)
    np.testing.assert_allclose(post.params["pb"].numpy(), pb, rtol=1e-10)
    assert post.diagnostics["m_step"]["pb"].startswith("closed form")


def test_gradient_m_step_on_positive_definite_param_reaches_the_closed_form_optimum():
    """positive_definite params go through transform_to (biject_to has no such transform);
    L-BFGS M-steps reach the optimum the closed form reaches."""
    rng = np.random.default_rng(3)
    x = torch.tensor(np.concatenate([rng.normal(-2, 0.7, (60, 2)), rng.normal(2, 1.2, (60, 2))]))
    init = {"w": np.array([0.5, 0.5]), "loc": np.array([[-1.0, 0.0], [1.0, 0.0]]), "cov": np.stack([np.eye(2)] * 2)}

    @ppl.model
    def gmm(x):
        w = ppl.param("w", torch.ones(2) / 2, constraint=constraints.simplex)
        loc = ppl.param("loc", torch.zeros(2, 2, dtype=torch.float64))
        cov = ppl.param("cov", torch.eye(2, dtype=torch.float64).repeat(2, 1, 1),
                        constraint=constraints.positive_definite)
        with ppl.plate("n", x.shape[0]):
            z = ppl.sample("z", dist.Categorical(w))
            ppl.sample("x", dist.MultivariateNormal(loc[z], covariance_matrix=cov[z]), obs=x)

    closed = ppl.infer(gmm, {"x": x}, method="em", init=init, max_iter=200, tol=1e-10)
    pyro.clear_param_store()
    grad = ppl.infer(gmm, {"x": x}, method="em", init=init, max_iter=200, tol=1e-10, m_step="gradient")
    assert grad.diagnostics["m_step"]["cov"].startswith("gradient")
    assert np.all(np.diff(grad.history) >= -1e-9 * np.abs(grad.history[1:]))
    assert grad.log_evidence == pytest.approx(closed.log_evidence, rel=1e-6)
    np.testing.assert_allclose(grad.params["cov"].numpy(), closed.params["cov"].numpy(), atol=1e-3)
