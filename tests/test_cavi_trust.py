"""How far to trust CAVI's Gaussian path, against closed forms computed here by hand.

* The sd ratio is per coordinate of q's *block* factors: a vector site's event is one
  block with covariance ``Λ_BB⁻¹``, so a model with one vector latent has q exact (ratio
  1, "reliable"), while two scalar latents correlated in the posterior get the ratio
  ``√(Λ_ii⁻¹ / (Λ⁻¹)_ii)`` of the 2x2 precision ("unreliable", next ``laplace``).
* The KL gap ``log p(v) - ELBO`` (Goodfellow et al. 2016, eq. 19.1) against the marginal
  likelihood of ``y`` computed as a MultivariateNormal: 0 when q is exact, positive
  otherwise.
"""

import math
import warnings

import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.errors import TrustWarning

F64 = torch.float64
NOISE = 0.5
PRIOR_SD = 2.0


@ppl.model
def vector_regression(X, y, prior_sd=PRIOR_SD, noise=NOISE):
    """One 2-d latent weight (one event block) and known noise."""
    w = ppl.sample("w", dist.Normal(torch.zeros(2, dtype=X.dtype), prior_sd).to_event(1))
    with ppl.plate("data", X.shape[0]):
        ppl.sample("y", dist.Normal(X @ w, noise), obs=y)


@ppl.model
def sum_of_two(y, prior_sd=10.0):
    """y ~ N(a + b, 1), a, b ~ N(0, 10²): a and b strongly (negatively) correlated a posteriori."""
    a = ppl.sample("a", dist.Normal(torch.tensor(0.0, dtype=F64), prior_sd))
    b = ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), prior_sd))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(a + b, 1.0), obs=y)


def _regression_data():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(30, 2, generator=g, dtype=F64)
    X[:, 1] = X[:, 0] + 0.2 * X[:, 1]                      # correlated features: w1, w2 correlated a posteriori
    y = X @ torch.tensor([1.5, -0.7], dtype=F64) + NOISE * torch.randn(30, generator=g, dtype=F64)
    return X, y


def _infer(model, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrustWarning)
        return ppl.infer(model, data, method="cavi", tol=1e-14, max_iter=5000, seed=0)


def test_one_vector_block_is_exact_and_reliable():
    X, y = _regression_data()
    post = _infer(vector_regression, {"X": X, "y": y})
    assert post.diagnostics["path"] == "gaussian" and post.converged
    lam = X.T @ X / NOISE ** 2 + torch.eye(2, dtype=F64) / PRIOR_SD ** 2
    cov = torch.linalg.inv(lam)
    # the posterior is strongly correlated, so a per-coordinate 1/Λ_ii would be far too small
    assert float((1 / torch.diagonal(lam) / torch.diagonal(cov)).sqrt().min()) < 0.5
    torch.testing.assert_close(post.mean("w"), cov @ X.T @ y / NOISE ** 2, atol=1e-8, rtol=0)
    torch.testing.assert_close(post.variance("w"), torch.diagonal(cov), atol=1e-12, rtol=1e-10)
    assert post.trust.verdict == "reliable"
    assert post.diagnostics["sd_ratio_min"] == pytest.approx(1.0, abs=1e-9)
    assert post.trust.numbers["sd_ratio_min"] == pytest.approx(1.0, abs=1e-9)


def test_kl_gap_is_zero_when_q_is_exact():
    X, y = _regression_data()
    post = _infer(vector_regression, {"X": X, "y": y})
    n = len(y)
    log_z = float(torch.distributions.MultivariateNormal(
        torch.zeros(n, dtype=F64), NOISE ** 2 * torch.eye(n, dtype=F64) + PRIOR_SD ** 2 * X @ X.T).log_prob(y))
    exact = post.diagnostics["exact_log_evidence"]
    assert exact == pytest.approx(log_z, abs=1e-8)
    gap = post.trust.numbers["kl_gap"]
    assert gap == exact - post.elbo
    assert gap == pytest.approx(0.0, abs=1e-8)
    assert gap >= -1e-9


def test_correlated_scalar_latents_are_unreliable_with_the_closed_form_ratio():
    y = torch.tensor([1.2, 0.4, 2.1], dtype=F64)
    n, s = len(y), 10.0
    post = _infer(sum_of_two, {"y": y})
    assert post.diagnostics["path"] == "gaussian" and post.converged
    # ln p = c + bᵀh - ½ hᵀΛh with Λ = [[n + 1/s², n], [n, n + 1/s²]], b = (Σy, Σy)
    d, o = n + 1 / s ** 2, float(n)
    exact_var = d / (d * d - o * o)                        # (Λ⁻¹)_11 = (Λ⁻¹)_22
    q_var = 1 / d                                          # q's factors are scalar blocks: 1/Λ_ii
    ratio = math.sqrt(q_var / exact_var)                   # = √(1 - o²/d²)
    assert ratio == pytest.approx(math.sqrt(1 - o * o / (d * d)), rel=1e-12)
    assert ratio < 0.9
    assert float(post.variance("a")) == pytest.approx(q_var, rel=1e-10)
    assert post.trust.verdict == "unreliable"
    assert post.trust.next_method == "laplace"
    assert post.diagnostics["sd_ratio_min"] == pytest.approx(ratio, rel=1e-9)
    assert post.trust.numbers["sd_ratio_min"] == pytest.approx(ratio, rel=1e-9)
    # the KL gap against y's marginal likelihood N(0, I + 2 s² 11ᵀ): positive, q being too narrow
    log_z = float(torch.distributions.MultivariateNormal(
        torch.zeros(n, dtype=F64), torch.eye(n, dtype=F64) + 2 * s ** 2 * torch.ones(n, n, dtype=F64)).log_prob(y))
    exact = post.diagnostics["exact_log_evidence"]
    assert exact == pytest.approx(log_z, abs=1e-8)
    gap = post.trust.numbers["kl_gap"]
    assert gap == exact - post.elbo
    assert gap >= -1e-9
    # mean field over two coordinates with equal marginal precision d: KL(q‖p) = -½ log(1 - ρ²), ρ = o/d
    assert gap == pytest.approx(-0.5 * math.log(1 - (o / d) ** 2), abs=1e-8)


# ------------------------------------------------------------------ discrete: checked against exact marginals
@ppl.model
def two_independent_coins(a_obs, b_obs):
    """Two independent binary latents, each with its own noisy child: the posterior factorises,
    so the mean field is exact."""
    a = ppl.sample("a", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
    b = ppl.sample("b", dist.Bernoulli(torch.tensor(0.6, dtype=F64)))
    ppl.sample("ea", dist.Bernoulli(0.1 + 0.8 * a), obs=a_obs)
    ppl.sample("eb", dist.Bernoulli(0.2 + 0.7 * b), obs=b_obs)


@ppl.model
def explaining_away(alarm):
    """Two rare causes of one observed alarm: a posteriori they are strongly anti-correlated."""
    a = ppl.sample("a", dist.Bernoulli(torch.tensor(0.1, dtype=F64)))
    b = ppl.sample("b", dist.Bernoulli(torch.tensor(0.1, dtype=F64)))
    ppl.sample("alarm", dist.Bernoulli(0.01 + 0.98 * torch.maximum(a, b)), obs=alarm)


def _brute_force(p_joint):
    """Marginals of a 2x2 joint table of (a, b) given the evidence."""
    p = p_joint / p_joint.sum()
    return p.sum(1), p.sum(0)


def test_discrete_mean_field_of_a_factorised_posterior_is_reliable():
    data = {"a_obs": torch.tensor(1.0, dtype=F64), "b_obs": torch.tensor(0.0, dtype=F64)}
    post = ppl.infer(two_independent_coins, data, method="cavi", seed=0)
    # by hand: p(a=1 | ea=1) ∝ 0.3·0.9, p(a=0 | ea=1) ∝ 0.7·0.1; p(b=1 | eb=0) ∝ 0.6·0.1, p(b=0 | eb=0) ∝ 0.4·0.8
    assert float(post.probs("a")[1]) == pytest.approx(0.27 / 0.34, abs=1e-6)
    assert float(post.probs("b")[1]) == pytest.approx(0.06 / 0.38, abs=1e-6)
    assert post.trust.verdict == "reliable"
    assert post.trust.numbers["max_marginal_error"] < 1e-6


def test_discrete_mean_field_off_the_exact_marginals_is_unreliable():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrustWarning)
        post = ppl.infer(explaining_away, {"alarm": torch.tensor(1.0, dtype=F64)}, method="cavi", seed=0)
    lik = torch.tensor([[0.01, 0.99], [0.99, 0.99]], dtype=F64)          # p(alarm=1 | a, b)
    prior = torch.outer(torch.tensor([0.9, 0.1], dtype=F64), torch.tensor([0.9, 0.1], dtype=F64))
    pa, pb = _brute_force(prior * lik)
    err = max(float((post.probs("a") - pa).abs().max()), float((post.probs("b") - pb).abs().max()))
    assert err > 0.01                                 # the mean field cannot represent explaining away
    assert post.trust.verdict == "unreliable" and post.trust.next_method == "exact"
    assert post.trust.numbers["max_marginal_error"] == pytest.approx(err, abs=1e-9)
