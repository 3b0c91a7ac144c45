"""MAP backend (method="map") on continuous latents, sparse coding and MAP learning.

References that cannot share our bugs: closed-form posterior modes of conjugate models,
the lasso optimality (KKT) conditions and scikit-learn's ``sparse_encode``, numpy
alternating least squares for learning.  Discrete MAP is in test_map_discrete.py.
"""

import math

import numpy as np
import pyro
import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.ops.proximal import fista, soft_threshold
from ppl.ops.quadratic import shared_quadratic


# ----------------------------------------------------------------------------- closed forms
@ppl.model
def normal_normal(x, prior_sd=2.0, noise=1.5):
    mu = ppl.sample("mu", dist.Normal(0.5, prior_sd))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Normal(mu, noise), obs=x)


def test_normal_normal_mode_is_posterior_mean():
    x = torch.tensor([1.0, 2.0, 3.5, -0.3], dtype=torch.float64)
    post = ppl.infer(normal_normal, {"x": x}, method="map")
    prec = 1 / 2.0 ** 2 + len(x) / 1.5 ** 2
    mean = (0.5 / 2.0 ** 2 + float(x.sum()) / 1.5 ** 2) / prec
    assert float(post.map()["mu"]) == pytest.approx(mean, abs=1e-8)
    # log joint at the mode, by hand
    def log_normal(v, m, s):
        return -0.5 * ((v - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)

    lj = log_normal(mean, 0.5, 2.0) + sum(log_normal(float(v), mean, 1.5) for v in x)
    assert post.log_joint == pytest.approx(lj, abs=1e-9)
    assert post.elbo is None and post.log_evidence is None and post.converged


def test_adam_reaches_the_closed_form_mode():
    x = torch.tensor([1.0, 2.0, 3.5, -0.3], dtype=torch.float64)
    b = ppl.infer(normal_normal, {"x": x}, method="map", optimizer="adam", lr=0.05, max_iter=5000, tol=1e-7)
    prec = 1 / 2.0 ** 2 + len(x) / 1.5 ** 2
    mean = (0.5 / 2.0 ** 2 + float(x.sum()) / 1.5 ** 2) / prec
    assert float(b.map()["mu"]) == pytest.approx(mean, abs=1e-5)


@ppl.model
def gamma_poisson(y):
    lam = ppl.sample("lam", dist.Gamma(3.0, 2.0))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Poisson(lam), obs=y)


def test_gamma_poisson_mode_in_constrained_space():
    """The mode of Gamma(a + Σy, b + n) is (a + Σy - 1) / (b + n): the optimiser works in
    log space but maximises the density of λ itself (no Jacobian term)."""
    y = torch.tensor([3.0, 5.0, 4.0, 0.0, 2.0])
    post = ppl.infer(gamma_poisson, {"y": y}, method="map")
    assert float(post.map()["lam"]) == pytest.approx((3 + 14 - 1) / (2 + 5), abs=1e-8)


@ppl.model
def beta_bernoulli(y):
    p = ppl.sample("p", dist.Beta(2.0, 5.0))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Bernoulli(p), obs=y)


def test_beta_bernoulli_mode():
    y = torch.tensor([1.0, 0, 1, 1, 0, 1, 1])
    post = ppl.infer(beta_bernoulli, {"y": y}, method="map")
    a, b = 2 + 5, 5 + 2
    assert float(post.map()["p"]) == pytest.approx((a - 1) / (a + b - 2), abs=1e-8)


@ppl.model
def bayes_linreg(X, y):
    w = ppl.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), 2.0).to_event(1))
    with ppl.plate("data", X.shape[0]):
        ppl.sample("y", dist.Normal(X @ w, 0.5), obs=y)


def test_plated_vector_mode_is_ridge_solution():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.5 * torch.randn(40, generator=g,
                                                                                       dtype=torch.float64)
    post = ppl.infer(bayes_linreg, {"X": X, "y": y}, method="map")
    ridge = torch.linalg.solve(X.T @ X / 0.25 + torch.eye(3, dtype=torch.float64) / 4.0, X.T @ y / 0.25)
    torch.testing.assert_close(post.map()["w"], ridge, atol=1e-7, rtol=0)


@ppl.model
def hierarchical(x):
    """Per-group means under a shared Normal: MAP of group locations shrinks them."""
    tau = ppl.sample("tau", dist.LogNormal(0.0, 0.5))
    with ppl.plate("groups", x.shape[0]):
        m = ppl.sample("m", dist.Normal(0.0, tau))
        with ppl.plate("obs", x.shape[1]):
            ppl.sample("x", dist.Normal(m, 1.0), obs=x.T)


def test_joint_map_is_a_stationary_point_of_the_log_joint():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64) + torch.arange(5, dtype=torch.float64)[:, None]
    post = ppl.infer(hierarchical, {"x": x}, method="map")
    tau = post.map()["tau"].clone().requires_grad_(True)
    m = post.map()["m"].clone().requires_grad_(True)
    lj = (dist.LogNormal(0.0, 0.5).log_prob(tau) + dist.Normal(0.0, tau).log_prob(m).sum()
          + dist.Normal(m[:, None], 1.0).log_prob(x).sum())
    gt, gm = torch.autograd.grad(lj, [tau, m])
    assert float(gt.abs()) < 1e-5 and float(gm.abs().max()) < 1e-5
    assert post.log_joint == pytest.approx(float(lj.detach()), abs=1e-8)


# ----------------------------------------------------------------------------- sparse coding
@ppl.model
def sparse_coding(x, W, alpha=0.1):
    N, D = x.shape
    with ppl.plate("patches", N):
        h = ppl.sample("h", dist.Laplace(W.new_zeros(W.shape[1]), 1.0 / alpha).to_event(1))
        ppl.sample("x", dist.Normal(h @ W.T, 1.0).to_event(1), obs=x)


def _patches(n, seed=0):
    sk = pytest.importorskip("sklearn")
    del sk
    from sklearn.datasets import load_sample_images
    from sklearn.feature_extraction.image import extract_patches_2d

    rng = np.random.RandomState(seed)
    out = []
    for img in load_sample_images().images:
        grey = img.mean(axis=2) / 255.0
        out.append(extract_patches_2d(grey, (8, 8), max_patches=n // 2, random_state=rng).reshape(-1, 64))
    X = np.concatenate(out)
    X -= X.mean(1, keepdims=True)
    X /= X.std(1, keepdims=True) + 1e-8
    D = X[rng.choice(len(X), 32, replace=False)].copy()
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    return X, D


def _lasso_objective(X, H, D, alpha):
    return 0.5 * ((X - H @ D) ** 2).sum() + alpha * np.abs(H).sum()


def test_sparse_codes_satisfy_kkt_and_match_sklearn():
    pytest.importorskip("sklearn")
    import warnings

    from sklearn.decomposition import sparse_encode

    X, D = _patches(300)
    alpha = 0.1
    post = ppl.infer(sparse_coding, {"x": X, "W": D.T, "alpha": alpha}, method="map", tol=1e-7, max_iter=20000)
    H = post.map()["h"].numpy()
    # KKT of min 0.5||x - hD||² + α|h|_1, checked here in numpy
    G = (H @ D - X) @ D.T
    active = H != 0
    assert np.abs(G + alpha * np.sign(H))[active].max() < 1e-5
    assert np.abs(G)[~active].max() <= alpha + 1e-5
    assert post.diagnostics["kkt_residual"]["h"] < 1e-5
    assert (H == 0).mean() > 0.3, "a proximal method gives exact zeros"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        C = sparse_encode(X, D, algorithm="lasso_cd", alpha=alpha, max_iter=5000)
    ours, theirs = _lasso_objective(X, H, D, alpha), _lasso_objective(X, C, D, alpha)
    assert abs(ours - theirs) / theirs < 1e-4 and ours <= theirs * (1 + 1e-9)
    assert post.diagnostics["inner"][-1]["method"] == "fista (shared quadratic)"


def test_laplace_prior_in_a_nonquadratic_model_uses_generic_fista():
    """Poisson likelihood: no shared quadratic, FISTA evaluates the model; KKT still holds."""
    @ppl.model
    def sparse_poisson(y, X):
        w = ppl.sample("w", dist.Laplace(X.new_zeros(X.shape[1]), 0.5).to_event(1))
        with ppl.plate("data", X.shape[0]):
            ppl.sample("y", dist.Poisson((X @ w).exp()), obs=y)

    g = torch.Generator().manual_seed(3)
    X = torch.randn(60, 6, generator=g, dtype=torch.float64) * 0.5
    y = torch.poisson((X @ torch.tensor([1.0, 0, 0, -0.8, 0, 0], dtype=torch.float64)).exp(), generator=g)
    post = ppl.infer(sparse_poisson, {"y": y, "X": X}, method="map", tol=1e-9, max_iter=20000)
    assert post.diagnostics["inner"][-1]["method"] == "fista"
    w = post.map()["w"].clone().requires_grad_(True)
    f = -dist.Poisson((X @ w).exp()).log_prob(y).sum()
    (g_,) = torch.autograd.grad(f, w)
    w = w.detach()
    lam = 1 / 0.5
    viol = torch.where(w != 0, (g_ + lam * w.sign()).abs(), (g_.abs() - lam).clamp_min(0))
    assert float(viol.max()) < 1e-6
    assert int((w == 0).sum()) >= 1


# ----------------------------------------------------------------------------- learning
@ppl.model
def dictionary(x, W0, alpha=0.1):
    N, D = x.shape
    W = ppl.param("W", W0, constraint=ppl.constraints.unit_norm_columns)
    with ppl.plate("patches", N):
        h = ppl.sample("h", dist.Laplace(W.new_zeros(W.shape[1]), 1.0 / alpha).to_event(1))
        ppl.sample("x", dist.Normal(h @ W.T, 1.0).to_event(1), obs=x)


def test_dictionary_learning_keeps_unit_norm_atoms_and_raises_the_log_joint():
    pytest.importorskip("sklearn")
    X, D = _patches(400, seed=2)
    pyro.clear_param_store()
    with pytest.warns(ppl.ConvergenceWarning, match="4 round"):  # rtol=0: all 4 rounds run
        post = ppl.infer(dictionary, {"x": X, "W0": torch.as_tensor(D.T).clone()}, method="map", learn_params=True,
                         max_rounds=4, tol=1e-3, rtol=0.0)
    W = post.params["W"]
    torch.testing.assert_close(W.norm(dim=0), torch.ones(W.shape[1], dtype=W.dtype), atol=1e-10, rtol=0)
    hist = np.array(post.history)
    assert len(hist) == 4 and np.all(np.diff(hist) >= -1e-6 * np.abs(hist[:-1]))
    H = post.map()["h"].numpy()
    # learned dictionary beats the initial one on the same objective
    start = ppl.infer(sparse_coding, {"x": X, "W": D.T}, method="map", tol=1e-4)
    ours = _lasso_objective(X, H, W.numpy().T, 0.1)
    before = _lasso_objective(X, start.map()["h"].numpy(), D, 0.1)
    assert ours < 0.95 * before
    # the learned W is in post.params, not left in Pyro's param store
    torch.testing.assert_close(post.params["W"].detach(), W)
    assert "W" not in pyro.get_param_store()


def test_inexact_rounds_still_raise_the_log_joint_and_end_at_a_kkt_point():
    """round_iter caps the inner iterations inside learning rounds (inexact block ascent);
    each capped FISTA run is monotone, and the last codes are re-solved to tol."""
    pytest.importorskip("sklearn")
    X, D = _patches(300, seed=4)
    pyro.clear_param_store()
    with pytest.warns(ppl.ConvergenceWarning):
        post = ppl.infer(dictionary, {"x": X, "W0": torch.as_tensor(D.T).clone()}, method="map", learn_params=True,
                         max_rounds=5, round_iter=3, tol=1e-6, max_iter=20000, rtol=0.0)
    hist = np.array(post.history)
    assert np.all(np.diff(hist) >= -1e-9 * np.abs(hist[:-1]))
    inner = [s for s in post.diagnostics["inner"] if s["step"] == "latents"]
    assert all(s["iterations"] <= 3 for s in inner[:-1]) and inner[-1]["converged"]
    assert post.diagnostics["kkt_residual"]["h"] < 1e-5
    # the reported log joint is that of the returned point
    W = post.params["W"].numpy()
    H = post.map()["h"].numpy()
    const = 0.5 * math.log(2 * math.pi) * X.size + math.log(2 / 0.1) * H.size
    assert post.log_joint == pytest.approx(-_lasso_objective(X, H, W.T, 0.1) - const, rel=1e-10)


@ppl.model
def scaled_obs(x):
    s = ppl.param("s", torch.tensor(1.0), constraint=ppl.constraints.positive)
    loc = ppl.param("loc", torch.tensor(0.0))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Normal(loc, s), obs=x)


def test_learn_params_without_latents_is_maximum_likelihood():
    x = torch.tensor([0.3, 1.9, 2.2, -0.4, 1.0], dtype=torch.float64)
    pyro.clear_param_store()
    post = ppl.infer(scaled_obs, {"x": x}, method="map", learn_params=True)
    assert float(post.params["loc"]) == pytest.approx(float(x.mean()), abs=1e-7)
    assert float(post.params["s"]) == pytest.approx(float(x.std(unbiased=False)), abs=1e-7)


# ----------------------------------------------------------------------------- errors
@ppl.model
def no_mode(x):
    mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
    s = ppl.sample("s", dist.HalfCauchy(1.0))
    ppl.sample("x", dist.Normal(mu, s), obs=x)


def test_unbounded_log_joint_names_the_site():
    with pytest.raises(ppl.NumericalError, match=r"site 's'.*edge of its support"):
        ppl.infer(no_mode, {"x": torch.tensor(1.0)}, method="map")


def test_bad_options_are_option_errors():
    x = torch.tensor([1.0, 2.0])
    with pytest.raises(ppl.OptionError, match="optimizer"):
        ppl.infer(normal_normal, {"x": x}, method="map", optimizer="newton")
    with pytest.raises(ppl.OptionError, match="max_iter"):
        ppl.infer(normal_normal, {"x": x}, method="map", max_iter=0)
    with pytest.raises(ppl.OptionError, match="init"):
        ppl.infer(normal_normal, {"x": x}, method="map", init="zeros")
    with pytest.raises(ppl.OptionError, match="no ppl.param"):
        ppl.infer(normal_normal, {"x": x}, method="map", learn_params=True)
    with pytest.raises(ppl.OptionError, match="init\\['mu'\\] has shape"):
        ppl.infer(normal_normal, {"x": x}, method="map", init={"mu": torch.zeros(3)})


def test_user_data_is_not_modified():
    x = torch.tensor([1.0, 2.0, 3.5])
    before = x.clone()
    ppl.infer(normal_normal, {"x": x}, method="map")
    assert torch.equal(x, before)


# ----------------------------------------------------------------------------- posterior
def test_point_posterior_members():
    x = torch.tensor([1.0, 2.0, 3.5, -0.3], dtype=torch.float64)
    post = ppl.infer(normal_normal, {"x": x}, method="map")
    mu = post.map()["mu"]
    assert post.sites == ["mu"]
    assert torch.equal(post.mean("mu"), mu) and float(post.variance("mu")) == 0.0
    assert float(post.marginal("mu").log_prob(mu)) == 0.0
    draws = post.sample(5)
    assert draws["mu"].shape == (5,) and bool((draws["mu"] == mu).all())
    assert "mu" in str(post.summary())
    with pytest.raises(ppl.DataError, match="not a latent site"):
        post.marginal("nope")
    assert post.diagnostics["log_joint"] == post.log_joint == post.history[-1]


def test_vector_site_marginal_keeps_event_dims():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(10, 3, generator=g, dtype=torch.float64)
    post = ppl.infer(bayes_linreg, {"X": X, "y": X.sum(1)}, method="map")
    marg = post.marginal("w")
    assert marg.event_shape == (3,) and marg.batch_shape == ()


# ----------------------------------------------------------------------------- ops
def test_soft_threshold_is_the_l1_prox():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5], dtype=torch.float64)
    out = soft_threshold(x, torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([-1.5, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    # brute-force prox on a grid
    grid = torch.linspace(-3, 3, 60001, dtype=torch.float64)
    for xi, oi in zip(x, out):
        obj = 0.5 * (grid - xi) ** 2 + 0.5 * grid.abs()
        assert float(grid[obj.argmin()]) == pytest.approx(float(oi), abs=1e-4)


def test_fista_never_increases_the_objective_and_reaches_the_lasso_optimum():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(30, 10, generator=g, dtype=torch.float64)
    b = torch.randn(30, generator=g, dtype=torch.float64)
    lam = 0.7
    res = fista(lambda xs: 0.5 * ((A @ xs[0] - b) ** 2).sum(), [torch.zeros(10, dtype=torch.float64)],
                lambda xs, s: [soft_threshold(xs[0], lam * s)], lambda xs: lam * float(xs[0].abs().sum()),
                tol=1e-10, max_iter=100000)
    assert res.converged
    assert np.all(np.diff(res.history) <= 1e-12 * np.abs(res.history[:-1]))
    x = res.x[0]
    grad = A.T @ (A @ x - b)
    viol = torch.where(x != 0, (grad + lam * x.sign()).abs(), (grad.abs() - lam).clamp_min(0))
    assert float(viol.max()) < 1e-8


def test_shared_quadratic_is_found_and_refused_correctly():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64)
    A = A @ A.T + torch.eye(4, dtype=torch.float64)
    B = torch.randn(50, 4, generator=g, dtype=torch.float64)
    quad = shared_quadratic(lambda x: 0.5 * ((x @ A) * x).sum() - (B * x).sum(), torch.zeros(50, 4,
                                                                                            dtype=torch.float64), 4)
    assert quad is not None
    torch.testing.assert_close(quad.A, A, atol=1e-9, rtol=1e-9)
    assert quad.lipschitz == pytest.approx(float(torch.linalg.eigvalsh(A).max()), rel=1e-9)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    assert quad.agrees(lambda x: 0.5 * ((x @ A) * x).sum() - (B * x).sum(), x)
    assert not quad.agrees(lambda x: 0.5 * ((x @ A) * x).sum() - (B * x).sum() + (x ** 4).sum(), x)
    # rows with different Hessians, or a non-quadratic function: refused
    scales = torch.linspace(1, 2, 50, dtype=torch.float64)[:, None]
    assert shared_quadratic(lambda x: 0.5 * ((x @ A) * x * scales).sum(), torch.zeros(50, 4, dtype=torch.float64),
                            4) is None
    assert shared_quadratic(lambda x: (x ** 4).sum() + (x ** 2).sum(), torch.ones(50, 4, dtype=torch.float64),
                            4) is None


def test_unit_norm_columns_constraint_in_plain_pyro():
    pyro.clear_param_store()
    W = pyro.param("W_plain", torch.randn(5, 3) * 4, constraint=ppl.constraints.unit_norm_columns)
    torch.testing.assert_close(W.norm(dim=0), torch.ones(3))
    assert bool(ppl.constraints.unit_norm_columns.check(W.detach()))
    P = ppl.constraints.project(ppl.constraints.unit_norm_columns, torch.zeros(4, 2))
    torch.testing.assert_close(P.norm(dim=0), torch.ones(2))
    assert math.isclose(float(ppl.constraints.unit_norm_rows.project(torch.ones(2, 4)).norm(dim=1)[0]), 1.0)


@ppl.model
def hard_gmm(x):
    locs = ppl.param("locs", torch.tensor([-1.0, 1.0], dtype=torch.float64))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=torch.float64)))
        ppl.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def test_map_learning_with_discrete_latents_is_hard_em():
    """learn_params with a discrete latent alternates max-product and the param step
    (hard / Viterbi EM): at the end z is each point's nearest loc and each loc the mean of
    its points (checked in numpy)."""
    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(30, generator=g) - 2.5, torch.randn(20, generator=g) + 2.0]).double()
    pyro.clear_param_store()
    post = ppl.infer(hard_gmm, {"x": x}, method="map", learn_params=True)
    locs = post.params["locs"].numpy()
    z = post.map()["z"].numpy()
    xn = x.numpy()
    np.testing.assert_array_equal(z, np.abs(xn[:, None] - locs[None, :]).argmin(1))
    for k in range(2):
        assert locs[k] == pytest.approx(xn[z == k].mean(), abs=1e-6)
    hist = np.array(post.history)
    assert np.all(np.diff(hist) >= -1e-9 * np.abs(hist[:-1])) and post.converged
