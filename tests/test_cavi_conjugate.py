"""CAVI on conjugate-exponential models with Dirichlet, Beta, Wishart and Normal-Wishart
factors, alone and mixed with discrete latents.

References that cannot share the backend's code: closed-form posteriors and log evidences
(Beta-Bernoulli, Dirichlet-Categorical, Normal-Wishart), Bishop's (2006, §10.2) variational
GMM updates and ELBO written in numpy (``tests/bgmm_oracle.py``), scikit-learn's
``BayesianGaussianMixture`` on iris and wine, and finite differences for every sigma-point
rule's natural parameters (the BayesPy check).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import gammaln, multigammaln

import ppl
import ppl.distributions as dist
from ppl.models import bayesian_gmm, bgmm_priors
from ppl.ops import sigma

import bgmm_oracle

F64 = torch.float64


# ------------------------------------------------------------------ rules: sigma points and natural parameters
def _random_factor(rule, gen):
    u = lambda *s: torch.rand(s, generator=gen, dtype=F64)  # noqa: E731
    if isinstance(rule, sigma.NormalWishartRule):
        a = torch.randn(2, 3, 3, generator=gen, dtype=F64)
        return (torch.randn(2, 3, generator=gen, dtype=F64), u(2) + 0.5, u(2) * 3 + 4.0,
                a @ a.transpose(-1, -2) / 3 + torch.eye(3, dtype=F64))
    if isinstance(rule, sigma.WishartRule):
        a = torch.randn(2, 3, 3, generator=gen, dtype=F64)
        return u(2) * 3 + 4.0, a @ a.transpose(-1, -2) / 3 + torch.eye(3, dtype=F64)
    if isinstance(rule, sigma.MultivariateNormalRule):
        a = torch.randn(2, 3, 3, generator=gen, dtype=F64)
        return torch.randn(2, 3, generator=gen, dtype=F64), a @ a.transpose(-1, -2) / 3 + 0.5 * torch.eye(3, dtype=F64)
    if isinstance(rule, sigma.DirichletRule):
        return (u(2, 4) * 5 + 0.3,)
    if isinstance(rule, sigma.NormalRule):
        return torch.randn(3, generator=gen, dtype=F64), u(3) + 0.1
    return u(3) * 5 + 0.3, u(3) * 3 + 0.2      # Gamma, Beta


def _statistics(rule, values):
    if isinstance(rule, sigma.NormalRule):
        (x,) = values
        return x, x * x
    if isinstance(rule, sigma.GammaRule):
        (x,) = values
        return x.log(), x
    if isinstance(rule, sigma.BetaRule):
        (x,) = values
        return x.log(), (1 - x).log()
    if isinstance(rule, sigma.DirichletRule):
        return (values[0].log(),)
    if isinstance(rule, sigma.WishartRule):
        (lam,) = values
        return lam, torch.logdet(lam)
    if isinstance(rule, sigma.MultivariateNormalRule):
        (x,) = values
        return x, x.unsqueeze(-1) * x.unsqueeze(-2)
    mu, lam = values
    lm = torch.einsum("...ij,...j->...i", lam, mu)
    return lam, lm, (lm * mu).sum(-1), torch.logdet(lam)


RULES = [sigma.NormalRule(), sigma.GammaRule(), sigma.BetaRule(), sigma.DirichletRule(), sigma.WishartRule(),
         sigma.MultivariateNormalRule(), sigma.NormalWishartRule()]
SYMMETRIC = (sigma.WishartRule, sigma.NormalWishartRule, sigma.MultivariateNormalRule)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_sigma_points_reproduce_the_mean_parameters_and_give_the_natural_parameters(rule):
    """The points average T to M exactly; for a function linear in T the autograd gradient
    of the point average with respect to M is its coefficient, equal to a central finite
    difference; mean -> natural -> factor round-trips."""
    gen = torch.Generator().manual_seed(0)
    q = _random_factor(rule, gen)
    m = rule.mean(q)
    pts = rule.points(m)
    for k, target in enumerate(m):
        avg = sum(_statistics(rule, p)[k] for p in pts) / len(pts)
        torch.testing.assert_close(avg, target, rtol=1e-10, atol=1e-10)
    coef = [torch.randn(t.shape, generator=gen, dtype=F64) for t in m]
    for k, c in enumerate(coef):
        if isinstance(rule, SYMMETRIC) and c.dim() == 3:
            coef[k] = c + c.transpose(-1, -2)                # a linear function of a symmetric matrix

    def f(mm):
        p = rule.points(mm)
        return sum(sum((c * s).sum() for c, s in zip(coef, _statistics(rule, x))) for x in p) / len(p)

    leaves = tuple(t.clone().requires_grad_(True) for t in m)
    grads = torch.autograd.grad(f(leaves), leaves)
    for g, c in zip(grads, coef):
        sym = isinstance(rule, SYMMETRIC) and c.dim() == 3
        g = 0.5 * (g + g.transpose(-1, -2)) if sym else g
        torch.testing.assert_close(g, c, rtol=1e-6, atol=1e-6)
    # finite difference along a feasible direction (toward another member's mean parameters)
    other = rule.mean(rule.perturbed(q, gen))
    h = 1e-5
    plus = f(tuple(a + h * (b - a) for a, b in zip(m, other)))
    minus = f(tuple(a - h * (b - a) for a, b in zip(m, other)))
    directional = sum(float((g * (b - a)).sum()) for g, a, b in zip(grads, m, other))
    assert float(plus - minus) / (2 * h) == pytest.approx(directional, rel=1e-5, abs=1e-6)
    back = rule.from_natural(rule.natural(q))
    for a, b in zip(back, q):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_wishart_entropy_is_torchs():
    gen = torch.Generator().manual_seed(1)
    nu, w = _random_factor(sigma.WishartRule(), gen)
    h = sigma.WishartRule().entropy((nu, w))
    assert float(h) == pytest.approx(float(torch.distributions.Wishart(nu, covariance_matrix=w).entropy().sum()),
                                     rel=1e-12)


# ------------------------------------------------------------------ exact cases: the mean field holds the posterior
@ppl.model
def beta_bernoulli(x):
    p = ppl.sample("p", dist.Beta(torch.tensor(2.0, dtype=F64), torch.tensor(3.0, dtype=F64)))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Bernoulli(p), obs=x)


def test_beta_bernoulli_is_exact():
    x = torch.tensor([1, 0, 1, 1, 1, 0, 1], dtype=F64)
    post = ppl.infer(beta_bernoulli, {"x": x}, method="cavi", tol=1e-14)
    q = post.marginal("p")
    k, n = float(x.sum()), len(x)
    assert float(q.concentration1) == pytest.approx(2.0 + k, abs=1e-9)
    assert float(q.concentration0) == pytest.approx(3.0 + n - k, abs=1e-9)
    log_z = (gammaln(2 + 3) - gammaln(2) - gammaln(3) + gammaln(2 + k) + gammaln(3 + n - k) - gammaln(5 + n))
    assert post.elbo == pytest.approx(log_z, abs=1e-9)


@ppl.model
def dirichlet_categorical(x, alpha):
    pi = ppl.sample("pi", dist.Dirichlet(alpha))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Categorical(pi), obs=x)


def test_dirichlet_categorical_is_exact():
    alpha = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=F64)
    x = torch.tensor([0, 2, 2, 3, 1, 2, 0, 2])
    post = ppl.infer(dirichlet_categorical, {"x": x, "alpha": alpha}, method="cavi", tol=1e-14)
    counts = torch.bincount(x, minlength=4).to(F64)
    torch.testing.assert_close(post.marginal("pi").concentration, alpha + counts, rtol=0, atol=1e-9)
    a0, n = float(alpha.sum()), float(counts.sum())
    log_z = gammaln(a0) - gammaln(a0 + n) + float((torch.lgamma(alpha + counts) - torch.lgamma(alpha)).sum())
    assert post.elbo == pytest.approx(log_z, abs=1e-9)
    assert post.diagnostics["factors"] == {"pi": "Dirichlet"}


@ppl.model
def normal_wishart(x, m0, beta0, nu0, W0):
    prec = ppl.sample("prec", dist.Wishart(torch.tensor(nu0, dtype=F64), covariance_matrix=W0))
    mu = ppl.sample("mu", dist.MultivariateNormal(m0, precision_matrix=beta0 * prec))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.MultivariateNormal(mu, precision_matrix=prec), obs=x)


def test_normal_wishart_is_exact_and_the_elbo_is_the_log_evidence():
    """One (μ, Λ) pair: the Normal-Wishart factor is the posterior (Bishop 2006, eq. 2.157
    updates) and the ELBO is the log evidence π^{-ND/2} Γ_D(ν_N/2)/Γ_D(ν_0/2)
    |W_N|^{ν_N/2}/|W_0|^{ν_0/2} (β0/β_N)^{D/2}."""
    gen = torch.Generator().manual_seed(3)
    D, N = 3, 25
    x = torch.randn(N, D, generator=gen, dtype=F64) @ torch.tensor([[1.0, 0.3, 0], [0, 0.8, 0.2], [0, 0, 0.5]],
                                                                  dtype=F64) + 1.0
    m0, beta0, nu0 = torch.zeros(D, dtype=F64), 0.7, 5.0
    W0 = torch.eye(D, dtype=F64) * 0.5
    post = ppl.infer(normal_wishart, {"x": x, "m0": m0, "beta0": beta0, "nu0": nu0, "W0": W0}, method="cavi",
                     tol=1e-14)
    xbar = x.mean(0)
    S = (x - xbar).T @ (x - xbar)
    betaN, nuN = beta0 + N, nu0 + N
    mN = (beta0 * m0 + N * xbar) / betaN
    WN = torch.linalg.inv(torch.linalg.inv(W0) + S + beta0 * N / betaN * torch.outer(xbar - m0, xbar - m0))
    q_prec = post.marginal("prec")
    assert float(q_prec.df) == pytest.approx(nuN, abs=1e-9)
    torch.testing.assert_close(q_prec.covariance_matrix, WN, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(post.mean("mu"), mN, rtol=1e-8, atol=1e-10)
    log_z = (-N * D / 2 * math.log(math.pi) + multigammaln(nuN / 2, D) - multigammaln(nu0 / 2, D)
             + nuN / 2 * float(torch.logdet(WN)) - nu0 / 2 * float(torch.logdet(W0))
             + D / 2 * math.log(beta0 / betaN))
    assert post.elbo == pytest.approx(log_z, abs=1e-8)
    draws = post.sample(20000, seed=0)
    assert draws["mu"].shape == (20000, D) and draws["prec"].shape == (20000, D, D)
    torch.testing.assert_close(draws["prec"].mean(0), nuN * WN, rtol=0.03, atol=0.03)
    torch.testing.assert_close(draws["mu"].mean(0), mN, rtol=0, atol=0.02)


@ppl.model
def gaussian_mean(x, m0, S0, S):
    mu = ppl.sample("mu", dist.MultivariateNormal(m0, covariance_matrix=S0))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.MultivariateNormal(mu, covariance_matrix=S), obs=x)


def test_multivariate_normal_mean_is_exact():
    """A MultivariateNormal mean under a Gaussian likelihood of known covariance: the factor is
    the posterior N((S0⁻¹ + N S⁻¹)⁻¹(S0⁻¹ m0 + S⁻¹ Σx), (S0⁻¹ + N S⁻¹)⁻¹) and the ELBO is the log
    evidence, the density of the stacked data under N(1 ⊗ m0, I ⊗ S + 11ᵀ ⊗ S0)."""
    gen = torch.Generator().manual_seed(5)
    D, N = 3, 6
    A = torch.randn(D, D, generator=gen, dtype=F64)
    S0, S = A @ A.T + torch.eye(D, dtype=F64), torch.tensor([[1.0, 0.4, 0.0], [0.4, 0.8, 0.1], [0.0, 0.1, 0.5]],
                                                            dtype=F64)
    m0 = torch.tensor([0.5, -1.0, 0.0], dtype=F64)
    x = torch.randn(N, D, generator=gen, dtype=F64) + 1.0
    post = ppl.infer(gaussian_mean, {"x": x, "m0": m0, "S0": S0, "S": S}, method="cavi", tol=1e-14)
    assert post.diagnostics["factors"] == {"mu": "MultivariateNormal"}
    prec = torch.linalg.inv(S0) + N * torch.linalg.inv(S)
    cov = torch.linalg.inv(prec)
    mean = cov @ (torch.linalg.solve(S0, m0) + torch.linalg.solve(S, x.sum(0)))
    q = post.marginal("mu")
    torch.testing.assert_close(q.mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(q.covariance_matrix, cov, rtol=1e-9, atol=1e-10)
    big = torch.kron(torch.eye(N, dtype=F64), S) + torch.kron(torch.ones(N, N, dtype=F64), S0)
    log_z = torch.distributions.MultivariateNormal(m0.repeat(N), covariance_matrix=big).log_prob(x.reshape(-1))
    assert post.elbo == pytest.approx(float(log_z), abs=1e-9)


@ppl.model
def gmm_known_cov(x, K, S0, S):
    D = x.shape[1]
    weights = ppl.sample("weights", dist.Dirichlet(torch.ones(K, dtype=F64)))
    with ppl.plate("components", K):
        loc = ppl.sample("loc", dist.MultivariateNormal(torch.zeros(D, dtype=F64), covariance_matrix=S0))
    with ppl.plate("data", x.shape[0]):
        z = ppl.sample("z", dist.Categorical(weights))
        ppl.sample("x", dist.MultivariateNormal(loc[z], covariance_matrix=S), obs=x)


def test_mixture_with_known_covariance_reaches_the_closed_form_fixed_point():
    """MultivariateNormal component means with a Dirichlet and categorical z: q(μ_k) = N(m_k, S_k)
    with S_k⁻¹ = S0⁻¹ + N_k S⁻¹, m_k = S_k S⁻¹ Σ_n r_nk x_n, and r_nk ∝ exp(E ln π_k -
    ½ tr(S⁻¹ S_k) - ½ (x_n - m_k)ᵀ S⁻¹ (x_n - m_k)) (Bishop 2006, §10.2 with Λ known)."""
    X = _standardised("iris")
    D, K = 4, 3
    S0, S = 4.0 * torch.eye(D, dtype=F64), 0.3 * torch.eye(D, dtype=F64) + 0.1
    post = ppl.infer(gmm_known_cov, {"x": X, "K": K, "S0": S0, "S": S}, method="cavi", seed=0, tol=1e-13,
                     max_iter=2000)
    assert post.converged and post.diagnostics["decreases"] == 0
    r = post.probs("z")
    nk = r.sum(0)
    Sinv = torch.linalg.inv(S)
    q_loc = post.marginal("loc")
    Sk = torch.linalg.inv(torch.linalg.inv(S0) + nk[:, None, None] * Sinv)
    mk = torch.einsum("kij,jl,kl->ki", Sk, Sinv, r.T @ X)
    torch.testing.assert_close(q_loc.covariance_matrix, Sk, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(q_loc.mean, mk, rtol=1e-5, atol=1e-6)
    alpha = post.marginal("weights").concentration
    torch.testing.assert_close(alpha, 1.0 + nk, rtol=1e-6, atol=1e-6)
    e_log_pi = torch.special.digamma(alpha) - torch.special.digamma(alpha.sum())
    diff = X[:, None, :] - q_loc.mean[None]        # the E-step from the factors CAVI returned
    logits = (e_log_pi - 0.5 * torch.einsum("ij,kji->k", Sinv, q_loc.covariance_matrix)
              - 0.5 * torch.einsum("nki,ij,nkj->nk", diff, Sinv, diff))
    torch.testing.assert_close(torch.softmax(logits, -1), r, rtol=0, atol=1e-8)


# ------------------------------------------------------------------ mixed discrete + continuous: the Bayesian GMM
def _standardised(name):
    from sklearn import datasets

    data = getattr(datasets, f"load_{name}")().data
    return torch.as_tensor((data - data.mean(0)) / data.std(0), dtype=F64)


def _ours_as_oracle_q(post, D):
    prec = post.marginal("prec")
    loc = post.marginal("loc")
    nu, W = prec.df.numpy(), prec.covariance_matrix.numpy()
    df_t = nu - D + 1
    cov_t = (loc.scale_tril @ loc.scale_tril.transpose(-1, -2)).numpy()
    beta = np.trace(np.linalg.inv(W), axis1=1, axis2=2) / (df_t * np.trace(cov_t, axis1=1, axis2=2))
    return {"resp": post.probs("z").numpy(), "alpha": post.marginal("weights").concentration.numpy(),
            "beta": beta, "m": loc.loc.numpy(), "W": W, "nu": nu}


@pytest.mark.parametrize("name,K", [("iris", 3), ("wine", 3)])
def test_bayesian_gmm_reaches_sklearns_fixed_point_and_elbo(name, K):
    """Same priors and the same starting responsibilities (scikit-learn's k-means labels):
    CAVI's ELBO equals Bishop's eq. 10.70 at its q, its q is a fixed point of Bishop's E- and
    M-steps, and it reaches the ELBO of scikit-learn's ``BayesianGaussianMixture`` (both
    evaluated by the same oracle: scikit-learn's ``lower_bound_`` drops q-independent
    constants; its ``reg_covar`` is set to 0, since the default adds 1e-6 I to every
    covariance in its M-step, a slightly different model)."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import BayesianGaussianMixture

    X = _standardised(name)
    N, D = X.shape
    data = bgmm_priors(X, K)
    prior = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in data.items() if k != "x"}
    sk = BayesianGaussianMixture(n_components=K, weight_concentration_prior_type="dirichlet_distribution",
                                 weight_concentration_prior=prior["alpha0"], mean_precision_prior=prior["beta0"],
                                 mean_prior=prior["m0"], degrees_of_freedom_prior=prior["nu0"],
                                 covariance_prior=np.linalg.inv(prior["W0"]), tol=1e-12, max_iter=5000,
                                 reg_covar=0.0, random_state=0).fit(X.numpy())
    labels = KMeans(n_clusters=K, n_init=1, random_state=np.random.RandomState(0)).fit(X.numpy()).labels_
    start = torch.nn.functional.one_hot(torch.as_tensor(labels.astype(np.int64)), K).to(F64)
    post = ppl.infer(bayesian_gmm, data, method="cavi", init={"z": start}, tol=1e-13, max_iter=3000)
    assert post.converged and post.diagnostics["decreases"] == 0
    assert post.diagnostics["factors"] == {"loc & prec": "NormalWishart", "weights": "Dirichlet"}
    Xn = X.numpy()
    q = _ours_as_oracle_q(post, D)
    assert post.elbo == pytest.approx(bgmm_oracle.elbo(Xn, q, prior), rel=1e-10)
    np.testing.assert_allclose(bgmm_oracle.e_step(Xn, q), q["resp"], atol=1e-9)
    m = bgmm_oracle.m_step(Xn, q["resp"], prior)
    for key in ("alpha", "beta", "nu", "m", "W"):
        np.testing.assert_allclose(m[key], q[key], rtol=1e-5, atol=1e-7)
    q_sk = {"resp": sk.predict_proba(Xn), "alpha": sk.weight_concentration_, "beta": sk.mean_precision_,
            "m": sk.means_, "nu": sk.degrees_of_freedom_,
            "W": np.linalg.inv(sk.covariances_ * sk.degrees_of_freedom_[:, None, None])}
    elbo_sk = bgmm_oracle.elbo(Xn, q_sk, prior)
    assert post.elbo == pytest.approx(elbo_sk, rel=1e-10)
    np.testing.assert_allclose(np.sort(q["m"], axis=0), np.sort(sk.means_, axis=0), atol=1e-4)


def test_moment_shortcut_equals_the_sigma_point_average():
    """The expected tables read from the mean parameters (VMP's messages: the Gaussian
    likelihood's from the Normal-Wishart block, the assignment's from the Dirichlet) equal the
    averages over the blocks' sigma points, entry by entry."""
    from ppl.backends.cavi.conjugate import ConjugateModel, find_blocks

    X = _standardised("iris")
    an = ppl.analyze(bayesian_gmm, bgmm_priors(X, 3))
    graph = an.graph
    blocks = find_blocks(graph, graph.continuous_latent())
    cm = ConjugateModel(graph, an.moral, blocks, F64, torch.device("cpu"))
    assert len(cm.moments) == 2          # x: Normal-Wishart moments; z: the Dirichlet's E[ln π]
    gen = torch.Generator().manual_seed(0)
    qc = [b.rule.perturbed(q, gen) for b, q in zip(blocks, cm.initial("random"))]
    fast = cm.factor_tables(qc)
    cm.moments = {}
    slow = cm.factor_tables(qc)
    for name in ("x", "z"):
        torch.testing.assert_close(fast[name].table, slow[name].table, rtol=1e-10, atol=1e-10)


def test_bayesian_gmm_parallel_schedule_and_sampling():
    X = _standardised("iris")
    post = ppl.infer(bayesian_gmm, bgmm_priors(X, 3), method="cavi", schedule="parallel", damping=0.7, seed=1,
                     tol=1e-10, max_iter=2000)
    seq = ppl.infer(bayesian_gmm, bgmm_priors(X, 3), method="cavi", seed=1, tol=1e-10, max_iter=2000)
    assert post.converged
    assert post.elbo == pytest.approx(seq.elbo, rel=1e-5) or post.elbo < seq.elbo + 1e-6
    draws = post.sample(50, seed=0)
    assert draws["z"].shape == (50, 150) and draws["loc"].shape == (50, 3, 4) and draws["prec"].shape == (50, 3, 4, 4)
    assert draws["weights"].shape == (50, 3)
    torch.testing.assert_close(post.probs("z").sum(-1), torch.ones(150, dtype=F64))
    assert post.map()["z"].shape == (150,)


def test_non_conjugate_uses_of_the_new_families_are_refused():
    @ppl.model
    def dirichlet_as_mean(x):
        pi = ppl.sample("pi", dist.Dirichlet(torch.ones(3, dtype=F64)))
        ppl.sample("x", dist.Normal(pi, 1.0).to_event(1), obs=x)

    with pytest.raises(ppl.UnsupportedModelError, match=r"not linear in the sufficient statistics of latent 'pi'"):
        ppl.infer(dirichlet_as_mean, {"x": torch.tensor([0.2, 0.3, 0.5], dtype=F64)}, method="cavi")

    @ppl.model
    def shared_rate(x):  # a factor over two plate copies of a Gamma: not one copy per table entry
        with ppl.plate("rates", 2):
            r = ppl.sample("r", dist.Gamma(torch.tensor(2.0, dtype=F64), 1.0))
        ppl.sample("x", dist.Poisson(r.sum()), obs=x)

    with pytest.raises(ppl.UnsupportedModelError, match="'r'"):
        ppl.infer(shared_rate, {"x": torch.tensor(3.0, dtype=F64)}, method="cavi")


@ppl.model
def noisy_mean(y):
    sigma = ppl.param("sigma", torch.tensor(1.0, dtype=F64), constraint=dist.constraints.positive)
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(mu, sigma), obs=y)


def test_variational_em_with_a_continuous_latent_reaches_the_em_fixed_point():
    """learn_params=True with a Normal latent: q(μ) holds the exact posterior given σ, so
    variational EM is EM, whose fixed point is s² = (1/100 + N/σ²)⁻¹, m = s² Σy / σ²,
    σ² = (Σ(y - m)² + N s²) / N (iterated here in plain Python), and the ELBO equals the log
    evidence log N(y; 0, σ² I + 100 · 11ᵀ) at the learned σ."""
    import pyro

    pyro.clear_param_store()
    y = torch.tensor([1.3, 2.9, 0.4, 2.2, 1.8, 3.5, 0.9], dtype=F64)
    post = ppl.infer(noisy_mean, {"y": y}, method="cavi", learn_params=True, tol=1e-14, max_iter=500)
    n, sig2 = len(y), 1.0
    for _ in range(5000):
        s2 = 1.0 / (1.0 / 100.0 + n / sig2)
        m = s2 * float(y.sum()) / sig2
        sig2 = (float(((y - m) ** 2).sum()) + n * s2) / n
    sigma = float(post.params["sigma"])
    assert sigma == pytest.approx(math.sqrt(sig2), rel=1e-6)
    assert float(post.mean("mu")) == pytest.approx(m, rel=1e-6)
    cov = sigma ** 2 * torch.eye(n, dtype=F64) + 100.0 * torch.ones(n, n, dtype=F64)
    log_z = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=F64), covariance_matrix=cov).log_prob(y)
    assert post.elbo == pytest.approx(float(log_z), abs=1e-7)
    hist = np.array(post.history)
    assert np.all(np.diff(hist) >= -1e-9 * np.abs(hist[:-1]))
    assert "sigma" not in pyro.get_param_store()      # learned values are in post.params only


def test_bgmm_priors_refuses_bad_data_naming_it():
    with pytest.raises(ppl.DataError, match=r"bgmm_priors: x must be a floating \(N, D\) tensor"):
        bgmm_priors(torch.ones(5), 2)
    with pytest.raises(ppl.DataError, match="covariance is singular"):
        bgmm_priors(torch.ones(10, 2, dtype=F64), 2)
