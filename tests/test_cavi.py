"""method="cavi" on discrete models, against references that share no code with ppl.

* Random discrete models (tests/random_models.py): the brute-force joint table of
  tests/oracles.py gives, for any factorised q, the exact ELBO
  ``Σ_h q(h) log p(h, v) + Σ_u H(q_u)`` and the exact coordinate update
  ``log q_u*(k) = E_{q_-u}[log p(h, v) | h_u = k] + const`` of every unit (one per plate
  copy of each site).  CAVI's answer must be a fixed point of all of them (the mean-field
  optimum it reached), its ELBO must equal the brute-force ELBO of its q and lie below the
  exact log evidence.
* Binary sparse coding (Goodfellow et al. 2016, eq. 19.19-19.20): one sequential sweep
  equals the fixed-point update of eq. 19.44 evaluated by hand in numpy.
* Schedules: sequential sweeps never lower the ELBO; parallel sweeps on a strongly coupled
  pair oscillate, and damping (§19.4.1) makes them converge to the sequential optimum.
"""

import math
import warnings

import numpy as np
import pytest
import torch

import ppl
import ppl.distributions as dist
from oracles import brute_force, split_data
from random_models import FAMILIES


def _units(oracle, post):
    """q of every unit (site element) as rows, in the oracle's index-tuple order."""
    rows = []
    for name, site in oracle.sites.items():
        p = post.probs(name).reshape(-1, site.cardinality)
        assert p.shape[0] == site.numel
        rows.extend(p[i] for i in range(p.shape[0]))
    return rows


def _brute_mean_field(oracle, q_units):
    """(ELBO, per-unit optimal q*) of a factorised q, from the full joint table."""
    idx = torch.tensor(oracle.index_tuples, dtype=torch.long)          # (E, U)
    # zero-probability configurations: log 0 is taken as -1e250 (as documented for CAVI), so
    # that a vanishing weight on an impossible configuration costs a vanishing amount
    L = oracle.log_joints.clamp_min(-1e250)                            # (E,)
    U = idx.shape[1]
    Q = torch.stack([q_units[u][idx[:, u]] for u in range(U)], 1)      # (E, U): q_u(x_u(e))
    weight = Q.prod(1)

    def expect(w, values):
        return torch.where(w > 0, w * values, torch.zeros_like(values)).sum()

    entropy = -sum(float(torch.where(q > 0, q * q.log(), torch.zeros_like(q)).sum()) for q in q_units)
    elbo = float(expect(weight, L)) + entropy
    optima = []
    for u in range(U):
        others = torch.cat([Q[:, :u], Q[:, u + 1:]], 1).prod(1)        # Π_{u' != u} q(x_u')
        K = q_units[u].shape[0]
        a = torch.stack([expect(others * (idx[:, u] == k), L) for k in range(K)])
        optima.append(torch.softmax(a, 0))
    return elbo, optima


CASES = [(family, seed) for family in ("chain", "tree", "dag", "mixture", "global_local", "nested_plates",
                                       "bernoulli", "zeros_dag") for seed in (0, 1)]


@pytest.mark.parametrize("family,seed", CASES)
def test_cavi_reaches_a_mean_field_fixed_point_below_log_evidence(family, seed):
    model_fn, data = FAMILIES[family](seed)
    kwargs, observations = split_data(model_fn, data)
    oracle = brute_force(model_fn, kwargs, observations)
    post = ppl.infer(ppl.model(model_fn), data, method="cavi", seed=seed, tol=1e-13, max_iter=2000)
    q = _units(oracle, post)
    elbo, optima = _brute_mean_field(oracle, q)
    assert post.elbo == pytest.approx(elbo, abs=1e-8 * (1 + abs(elbo)))
    assert post.elbo <= oracle.log_evidence + 1e-9
    for have, want in zip(q, optima):
        torch.testing.assert_close(have, want, atol=1e-6, rtol=0)
    hist = np.array(post.history)
    assert np.all(np.diff(hist) >= -1e-9 * (1 + np.abs(hist[:-1]))), "sequential CAVI lowered the ELBO"
    assert post.converged


# ------------------------------------------------------------------ binary sparse coding
@ppl.model
def binary_sparse_coding(v, W, b, beta):
    """Eq. 19.19-19.20: p(h_i = 1) = σ(b_i), p(v | h) = N(v; W h, β⁻¹ I)."""
    N, m = v.shape[0], W.shape[1]
    with ppl.plate("data", N):
        hs = [ppl.sample(f"h{i}", dist.Bernoulli(torch.sigmoid(b[i]))) for i in range(m)]
        h = torch.stack(torch.broadcast_tensors(*hs), -1)
        ppl.sample("v", dist.Normal(h @ W.T, beta ** -0.5).to_event(1), obs=v)


def _eq_19_44_sweep(v, W, b, beta, hhat):
    """One sequential sweep of eq. 19.44: ĥ_i = σ(b_i + vᵀβW_:,i − ½ W_:,iᵀβW_:,i − Σ_{j≠i} W_:,jᵀβW_:,i ĥ_j)."""
    hhat = hhat.copy()
    m = W.shape[1]
    for i in range(m):
        wi = W[:, i]
        cross = sum(beta * (W[:, j] @ wi) * hhat[:, j] for j in range(m) if j != i)
        z = b[i] + beta * (v @ wi) - 0.5 * beta * (wi @ wi) - cross
        hhat[:, i] = 1.0 / (1.0 + np.exp(-z))
    return hhat


def test_binary_sparse_coding_sweep_equals_eq_19_44():
    rng = np.random.default_rng(0)
    N, D, m = 6, 5, 4
    W = rng.normal(size=(D, m))
    b = rng.normal(size=m) - 0.5
    beta = 2.0
    v = rng.normal(size=(N, D))
    h0 = rng.uniform(0.1, 0.9, size=(N, m))
    data = {"v": v, "W": torch.tensor(W), "b": torch.tensor(b), "beta": beta}
    init = {f"h{i}": np.stack([1 - h0[:, i], h0[:, i]], -1) for i in range(m)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        post = ppl.infer(binary_sparse_coding, data, method="cavi", init=init, max_iter=1)
    want = _eq_19_44_sweep(v, W, b, beta, h0)
    have = np.stack([post.probs(f"h{i}")[..., 1].numpy() for i in range(m)], -1)
    np.testing.assert_allclose(have, want, atol=1e-12)
    # run to convergence: a fixed point of eq. 19.44 itself
    post = ppl.infer(binary_sparse_coding, data, method="cavi", seed=1, tol=1e-14, max_iter=500)
    hhat = np.stack([post.probs(f"h{i}")[..., 1].numpy() for i in range(m)], -1)
    np.testing.assert_allclose(_eq_19_44_sweep(v, W, b, beta, hhat), hhat, atol=1e-9)
    # the mean-field bound sits below the exact log evidence (explaining away is lost)
    exact = ppl.infer(binary_sparse_coding, data, method="exact")
    assert post.elbo < exact.log_evidence


# ------------------------------------------------------------------ schedules and damping
@ppl.model
def coupled_pair():
    """Two binary latents that want to agree strongly, each pulled the other way alone:
    parallel mean-field updates flip both at once and oscillate."""
    a = ppl.sample("a", dist.Bernoulli(0.5))
    c = ppl.sample("c", dist.Bernoulli(0.5))
    ppl.factor("agree", 4.0 * (2 * a - 1) * (2 * c - 1))


def test_parallel_updates_oscillate_and_damping_fixes_them():
    init = {"a": [0.9, 0.1], "c": [0.2, 0.8]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        wild = ppl.infer(coupled_pair, method="cavi", schedule="parallel", init=init, max_iter=20)
    assert not wild.converged
    assert wild.diagnostics["decreases"] == 0 or np.ptp(wild.history[-4:]) < 1e-12  # a 2-cycle: stuck, not rising
    seq = ppl.infer(coupled_pair, method="cavi", schedule="sequential", init=init)
    damped = ppl.infer(coupled_pair, method="cavi", schedule="parallel", damping=0.5, init=init, max_iter=500)
    assert damped.converged and seq.converged
    assert damped.elbo == pytest.approx(seq.elbo, abs=1e-7)
    assert damped.elbo > wild.history[-1] + 1.0


def test_damped_sequential_updates_still_never_decrease():
    model_fn, data = FAMILIES["dag"](3)
    post = ppl.infer(ppl.model(model_fn), data, method="cavi", damping=0.3, seed=0, max_iter=2000)
    hist = np.array(post.history)
    assert np.all(np.diff(hist) >= -1e-9 * (1 + np.abs(hist[:-1])))
    assert post.diagnostics["decreases"] == 0


# ------------------------------------------------------------------ posterior and errors
def test_mean_field_posterior_members():
    model_fn, data = FAMILIES["mixture"](0)
    post = ppl.infer(ppl.model(model_fn), data, method="cavi", seed=0)
    assert isinstance(post, ppl.posterior.MeanFieldPosterior) and post.log_evidence is None
    z = post.probs("z")
    draws = post.sample(4000, seed=3)
    assert draws["z"].shape == (4000,) + tuple(z.shape[:-1])
    freq = torch.stack([(draws["z"] == k).double().mean(0) for k in range(z.shape[-1])], -1)
    torch.testing.assert_close(freq, z, atol=0.04, rtol=0)
    torch.testing.assert_close(post.map()["z"], z.argmax(-1))
    assert post.history[0] < post.elbo


def test_unsupported_continuous_families_are_refused_with_their_family():
    @ppl.model
    def lognormal(x):
        s = ppl.sample("s", dist.LogNormal(0.0, 1.0))
        ppl.sample("x", dist.Normal(0.0, s), obs=x)

    with pytest.raises(ppl.UnsupportedModelError, match=r"'s' \(LogNormal\).*svi"):
        ppl.infer(lognormal, {"x": torch.tensor(1.0)}, method="cavi")

    @ppl.model
    def gamma_as_mean(x):  # a Gamma latent used as a Normal mean: not linear in (log λ, λ)
        lam = ppl.sample("lam", dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 1.0))
        ppl.sample("x", dist.Normal(lam, 1.0), obs=x)

    with pytest.raises(ppl.UnsupportedModelError, match=r"not linear in the sufficient statistics of latent 'lam'"):
        ppl.infer(gamma_as_mean, {"x": torch.tensor(3.0, dtype=torch.float64)}, method="cavi")

    @ppl.model
    def log_linear(x):  # Normal latent, but a Poisson likelihood: not a quadratic log joint
        w = ppl.sample("w", dist.Normal(0.0, 1.0))
        ppl.sample("x", dist.Poisson(w.exp()), obs=x)

    with pytest.raises(ppl.UnsupportedModelError, match="not a quadratic form"):
        ppl.infer(log_linear, {"x": torch.tensor(3.0)}, method="cavi")


# ------------------------------------------------------------------ Gaussian latents
@ppl.model
def correlated_pair(a=0.5, c=-1.0, k=1.5, s1=1.0, s2=0.5):
    """z1 ~ N(a, s1²), z2 | z1 ~ N(c + k z1, s2²): a correlated 2-D Gaussian (the slides'
    "Factorized Gaussian")."""
    z1 = ppl.sample("z1", dist.Normal(torch.tensor(a, dtype=torch.float64), s1))
    ppl.sample("z2", dist.Normal(c + k * z1, s2))


def test_factorised_gaussian_matches_the_slides_closed_form():
    a, c, k, s1, s2 = 0.5, -1.0, 1.5, 1.0, 0.5
    lam11, lam22, lam12 = 1 / s1 ** 2 + k ** 2 / s2 ** 2, 1 / s2 ** 2, -k / s2 ** 2
    mu1, mu2 = a, c + k * a
    m2_init = 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        one = ppl.infer(correlated_pair, method="cavi", init={"z1": 0.0, "z2": m2_init}, max_iter=1)
    # slides: m1 = μ1 - Λ11⁻¹ Λ12 (E[z2] - μ2), then m2 = μ2 - Λ22⁻¹ Λ21 (E[z1] - μ2's partner)
    m1 = mu1 - lam12 / lam11 * (m2_init - mu2)
    m2 = mu2 - lam12 / lam22 * (m1 - mu1)
    assert float(one.mean("z1")) == pytest.approx(m1, abs=1e-10)
    assert float(one.mean("z2")) == pytest.approx(m2, abs=1e-10)
    post = ppl.infer(correlated_pair, method="cavi", init={"z1": 0.0, "z2": m2_init}, tol=1e-14, max_iter=500)
    assert float(post.mean("z1")) == pytest.approx(mu1, abs=1e-6)
    assert float(post.mean("z2")) == pytest.approx(mu2, abs=1e-6)
    assert float(post.variance("z1")) == pytest.approx(1 / lam11, abs=1e-12)
    assert float(post.variance("z2")) == pytest.approx(1 / lam22, abs=1e-12)
    # the exact marginal variance of z1 is s1² = 1 > 1/Λ11: mean field is over-confident
    assert 1 / lam11 < s1 ** 2
    # ELBO = log Z - KL; here log Z = 0 (no data): the ELBO is -KL(q‖p) < 0
    assert post.elbo < 0
    hist = np.array(post.history)
    assert np.all(np.diff(hist) >= -1e-12)


@ppl.model
def linreg(X, y, prior_sd=1.0, noise=0.5):
    with ppl.plate("features", X.shape[1]):
        w = ppl.sample("w", dist.Normal(torch.zeros((), dtype=X.dtype), prior_sd))
    with ppl.plate("data", X.shape[0]):
        ppl.sample("y", dist.Normal(X @ w, noise), obs=y)


def test_bayesian_linear_regression_means_exact_variances_too_small():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(50, 4, generator=g, dtype=torch.float64)
    X[:, 1] = X[:, 0] + 0.3 * X[:, 1]                      # correlated features
    y = X @ torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=torch.float64) + 0.5 * torch.randn(50, generator=g,
                                                                                          dtype=torch.float64)
    post = ppl.infer(linreg, {"X": X, "y": y}, method="cavi", tol=1e-14, max_iter=5000, seed=0)
    lam = X.T @ X / 0.25 + torch.eye(4, dtype=torch.float64)
    cov = torch.linalg.inv(lam)
    torch.testing.assert_close(post.mean("w"), cov @ X.T @ y / 0.25, atol=1e-6, rtol=0)
    torch.testing.assert_close(post.variance("w"), 1 / torch.diagonal(lam), atol=1e-12, rtol=0)
    assert bool((post.variance("w") < torch.diagonal(cov)).all())
    # ELBO below the exact log evidence N(y; 0, σ²I + XXᵀ)
    log_z = torch.distributions.MultivariateNormal(torch.zeros(50, dtype=torch.float64),
                                                   0.25 * torch.eye(50, dtype=torch.float64) + X @ X.T).log_prob(y)
    assert post.elbo < float(log_z)
    hist = np.array(post.history)
    assert np.all(np.diff(hist) >= -1e-9 * (1 + np.abs(hist[:-1]))) and post.converged
    draws = post.sample(20000, seed=1)["w"]
    assert draws.shape == (20000, 4)
    torch.testing.assert_close(draws.var(0), post.variance("w"), atol=0.01, rtol=0.05)
    # parallel (Jacobi) updates with damping reach the same means
    par = ppl.infer(linreg, {"X": X, "y": y}, method="cavi", schedule="parallel", damping=0.5, tol=1e-14,
                    max_iter=20000, seed=0)
    torch.testing.assert_close(par.mean("w"), post.mean("w"), atol=1e-6, rtol=0)


def test_bad_options():
    with pytest.raises(ppl.OptionError, match="schedule"):
        ppl.infer(coupled_pair, method="cavi", schedule="random")
    with pytest.raises(ppl.OptionError, match="damping"):
        ppl.infer(coupled_pair, method="cavi", damping=0.0)
    with pytest.raises(ppl.OptionError, match=r"init\['a'\] has shape"):
        ppl.infer(coupled_pair, method="cavi", init={"a": [0.2, 0.3, 0.5]})
    with pytest.raises(ppl.OptionError, match="summing to 1"):
        ppl.infer(coupled_pair, method="cavi", init={"a": [0.2, 0.3]})
    with pytest.raises(ppl.OptionError, match="not discrete latent"):
        ppl.infer(coupled_pair, method="cavi", init={"b": [0.5, 0.5]})


def test_elbo_is_the_log_evidence_when_the_posterior_factorises():
    """Independent latents: the mean field contains the posterior, KL = 0 (eq. 19.1)."""
    @ppl.model
    def independent(x):
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)))
            ppl.sample("x", dist.Normal(torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)[z], 1.0), obs=x)

    data = {"x": torch.tensor([0.3, -1.2, 2.5], dtype=torch.float64)}
    post = ppl.infer(independent, data, method="cavi", seed=0)
    exact = ppl.infer(independent, data, method="exact")
    assert post.elbo == pytest.approx(exact.log_evidence, abs=1e-10)
    torch.testing.assert_close(post.probs("z"), exact.probs("z"), atol=1e-10, rtol=0)
    assert math.isfinite(post.elbo)


# ------------------------------------------------------------------ variational EM
@ppl.model
def gmm_params(x):
    weights = ppl.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64), constraint=dist.constraints.simplex)
    locs = ppl.param("locs", torch.tensor([-0.5, 0.5], dtype=torch.float64))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(weights))
        ppl.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def _gmm_data():
    g = torch.Generator().manual_seed(11)
    return {"x": torch.cat([torch.randn(40, generator=g) - 2.0, torch.randn(60, generator=g) + 1.5]).double()}


def test_variational_em_is_em_when_the_posterior_factorises():
    """Given θ, z_n are independent a posteriori: the mean field is exact, so variational
    EM follows exact EM (method="em", itself checked against scikit-learn) to its fixed point."""
    import pyro

    data = _gmm_data()
    pyro.clear_param_store()
    em = ppl.infer(gmm_params, data, method="em", tol=1e-12, max_iter=2000)
    pyro.clear_param_store()
    vem = ppl.infer(gmm_params, data, method="cavi", learn_params=True, tol=1e-12, max_iter=2000, seed=0)
    for name in ("weights", "locs"):
        torch.testing.assert_close(vem.params[name], em.params[name].double(), atol=1e-6, rtol=0)
    hist = np.array(vem.history)
    assert np.all(np.diff(hist) >= -1e-9 * (1 + np.abs(hist[:-1])))
    # at the fixed point the ELBO is the log likelihood (KL = 0)
    assert vem.elbo == pytest.approx(em.history[-1], abs=1e-6)


@ppl.model
def shared_shift(x):
    """A global binary latent couples every z_n: the mean field is no longer exact."""
    locs = ppl.param("locs", torch.tensor([-1.0, 1.0], dtype=torch.float64))
    s = ppl.sample("s", dist.Bernoulli(torch.tensor(0.5, dtype=torch.float64)))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=torch.float64)))
        ppl.sample("x", dist.Normal(locs[z] + s, 1.0), obs=x)


def test_variational_em_raises_a_lower_bound_on_the_likelihood():
    import pyro

    data = _gmm_data()
    pyro.clear_param_store()
    vem = ppl.infer(shared_shift, data, method="cavi", learn_params=True, seed=0, max_iter=500)
    hist = np.array(vem.history)
    assert np.all(np.diff(hist) >= -1e-9 * (1 + np.abs(hist[:-1])))
    assert hist[-1] > hist[0]
    # warm-started at the learned params, the exact log likelihood there bounds the ELBO
    exact = ppl.infer(shared_shift, data, method="exact", init=vem)
    assert vem.elbo <= exact.log_evidence + 1e-9
    # and the call without init starts again from the declared params (a pure call)
    declared = ppl.infer(shared_shift, data, method="exact")
    assert declared.log_evidence != pytest.approx(exact.log_evidence)
    assert "locs" not in pyro.get_param_store()


def test_undamped_parallel_gaussian_updates_diverge_with_a_clear_error():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(40, 1, generator=g, dtype=torch.float64)
    X = base + 0.05 * torch.randn(40, 4, generator=g, dtype=torch.float64)   # four nearly equal features
    y = X.sum(1) + 0.5 * torch.randn(40, generator=g, dtype=torch.float64)
    with pytest.raises(ppl.NumericalError, match=r"parallel, damping 1\) diverged.*lower damping"):
        ppl.infer(linreg, {"X": X, "y": y}, method="cavi", schedule="parallel", max_iter=2000)


def test_gaussian_update_natural_parameters_equal_finite_differences_of_the_expected_log_joint():
    """The BayesPy check: the natural parameters of each factor's update, (Λ_jj m_j*, -Λ_jj / 2),
    equal the gradient of E_q[ln p(v, h)] with respect to that factor's mean parameters
    (E[h_j], E[h_j²]) (Autoconj's rule).  E_q[ln p] is computed from the model alone, exactly,
    on sigma points (m ± σ per dimension, weights ½: exact for a log joint linear in (h, h²)
    per dimension); the gradient by central differences."""
    import itertools

    a, c, k, s1, s2 = 0.5, -1.0, 1.5, 1.0, 0.5
    model = correlated_pair

    def log_joint(z1, z2):
        tr = pyro_trace(model, {"z1": torch.tensor(z1, dtype=torch.float64), "z2": torch.tensor(z2, dtype=torch.float64)})
        return float(tr.log_prob_sum())

    def expected(mu):  # mu = [(E z1, E z1²), (E z2, E z2²)]
        points = [((m - math.sqrt(v - m * m)), (m + math.sqrt(v - m * m))) for m, v in mu]
        return sum(0.25 * log_joint(p1, p2) for p1, p2 in itertools.product(*points))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        q0 = {"z1": 0.2, "z2": 1.7}
        one = ppl.infer(model, method="cavi", init=q0, max_iter=1)
    var1 = float(one.variance("z1"))
    # state just before z1's update: q1 at any mean (its own stats do not enter its update), q2 at its init
    mu = [(0.2, 0.2 ** 2 + var1), (1.7, 1.7 ** 2 + float(one.variance("z2")))]
    eps = 1e-4
    grads = []
    for t in range(2):
        up = [list(p) for p in mu]
        down = [list(p) for p in mu]
        up[0][t] += eps
        down[0][t] -= eps
        grads.append((expected(up) - expected(down)) / (2 * eps))
    lam11 = 1 / var1
    m1 = float(one.mean("z1"))
    assert grads[1] == pytest.approx(-0.5 * lam11, rel=1e-6)        # coefficient of E[z1²]
    assert grads[0] == pytest.approx(lam11 * m1, rel=1e-6)          # coefficient of E[z1]


def pyro_trace(model, values):
    from pyro import poutine

    return poutine.trace(poutine.condition(model.fn, data=values)).get_trace()


# ------------------------------------------------------------------ conjugate-exponential latents
@ppl.model
def gamma_poisson(x):
    rate = ppl.sample("rate", dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 0.5))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Poisson(rate), obs=x)


def test_gamma_poisson_is_exact_and_the_elbo_is_the_log_evidence():
    """One latent: the mean field contains the posterior Gamma(a + Σx, b + N) (KL = 0), so the
    ELBO equals the negative-binomial log evidence."""
    x = torch.tensor([3.0, 0.0, 5.0, 2.0, 4.0], dtype=torch.float64)
    post = ppl.infer(gamma_poisson, {"x": x}, method="cavi", seed=0, tol=1e-14)
    q = post.marginal("rate")
    assert float(q.concentration) == pytest.approx(2.0 + 14.0, abs=1e-9)
    assert float(q.rate) == pytest.approx(0.5 + 5.0, abs=1e-9)
    a, b = 2.0, 0.5
    log_z = (a * math.log(b) - math.lgamma(a) + math.lgamma(a + 14.0) - (a + 14.0) * math.log(b + 5.0)
             - sum(math.lgamma(v + 1.0) for v in x.tolist()))
    assert post.elbo == pytest.approx(log_z, abs=1e-9)
    assert post.diagnostics["path"] == "sigma points"


@ppl.model
def normal_gamma(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 3.0))
    tau = ppl.sample("tau", dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 1.0))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Normal(mu, tau ** -0.5), obs=x)


def test_normal_with_gamma_precision_reaches_the_closed_form_fixed_point():
    """Bishop (2006) §10.1.3 with independent priors: q(μ) = N(m, s²), q(τ) = Gamma(a, b) with
    a = a0 + N/2, b = b0 + ½ Σ[(x_n - m)² + s²], 1/s² = 1/9 + N E[τ], m = s² E[τ] Σx."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(30, generator=g) * 0.7 + 1.5).double()
    post = ppl.infer(normal_gamma, {"x": x}, method="cavi", seed=0, tol=1e-15, max_iter=1000)
    m, s2 = post.mean("mu"), post.variance("mu")
    tau = post.marginal("tau")
    N = len(x)
    a = 2.0 + N / 2
    b = 1.0 + 0.5 * float(((x - m) ** 2).sum() + N * s2)
    e_tau = a / b
    assert float(tau.concentration) == pytest.approx(a, abs=1e-9)
    assert float(tau.rate) == pytest.approx(b, abs=1e-8)
    assert float(s2) == pytest.approx(1.0 / (1.0 / 9.0 + N * e_tau), rel=1e-8)
    assert float(m) == pytest.approx(float(s2) * e_tau * float(x.sum()), rel=1e-8)
    hist = np.array(post.history)
    assert np.all(np.diff(hist) >= -1e-9 * (1 + np.abs(hist[:-1]))) and post.converged
    draws = post.sample(5000, seed=0)
    assert draws["tau"].shape == (5000,) and bool((draws["tau"] > 0).all())
    assert float(post.map()["tau"]) == pytest.approx((a - 1) / b, rel=1e-8)
