"""method="chees": ChEES-HMC chains in lockstep.

References that cannot share the sampler's bug: closed-form conjugate posteriors (a normal
mean, a Beta-Bernoulli coin, Bayesian linear regression with known noise on data whose
coefficients differ by seven orders of magnitude), the exact dynamics of a harmonic
oscillator for the ChEES gradient, torch's own variance for the mass-matrix window, and
the quadrature reference posterior of eight schools (tests/fixtures).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch

import ppl
from ppl.backends.chees.adapt import DualAveraging, VarianceWindow, chees_gradient, halton
from ppl.backends.chees.metric import Metric, dense_estimate
from ppl.backends.registry import get_backend

F = torch.float64
FIXTURES = Path(__file__).parent / "fixtures"


def _t(x):
    return torch.as_tensor(x, dtype=F)


@ppl.model
def normal_mean(x):
    mu = ppl.sample("mu", dist.Normal(_t(0.0), 10.0))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Normal(mu, 2.0), obs=x)


@ppl.model
def coin(x):
    th = ppl.sample("th", dist.Beta(_t(2.0), 2.0))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Bernoulli(th), obs=x)


@ppl.model
def linreg(X, y):
    w = ppl.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=F), 1e4).to_event(1))
    with ppl.plate("d", len(y)):
        ppl.sample("y", dist.Normal(X @ w, 0.5), obs=y)   # X @ w: no particles plate broadcasting


def _run(model, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.infer(model, data, method="chees", **kw)


def _within_mc_error(post, site, mean, sd, z=4.0):
    """The draws' mean within z Monte Carlo standard errors (sd / sqrt(bulk ESS)) and
    their sd within 10% of the closed form."""
    ess = post.diagnostics["min_ess_bulk"]
    m, s = post.mean(site).reshape(-1), post.variance(site).reshape(-1).sqrt()
    mean, sd = _t(mean).reshape(-1), _t(sd).reshape(-1)
    assert torch.all((m - mean).abs() < z * sd / math.sqrt(ess)), (m, mean, sd, ess)
    assert torch.all((s / sd - 1).abs() < 0.1), (s, sd)


# ------------------------------------------------------------------ adaptation pieces
def test_halton_is_the_base_two_van_der_corput_sequence():
    assert [halton(i) for i in range(1, 8)] == [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]


def test_mass_matrix_from_positions_and_gradients_is_the_variance_of_a_gaussian():
    # z ~ N(0, diag(s^2)) has gradient -z / s^2, so sqrt(var z / var grad) = s^2 exactly, from any
    # spread of points (here 7 batches, over torch's own variance); then the relative shrinkage
    scales = _t([1.0, 10.0, 1e-5])
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(16, 3, generator=g, dtype=F) * 3.0 for _ in range(7)]
    w = VarianceWindow(3, F, torch.device("cpu"))
    for r in rows:
        w.add(r, -r / scales ** 2)
    allrows = torch.cat(rows)
    n = len(allrows)
    est = (allrows.var(0) / (allrows / scales ** 2).var(0)).sqrt()
    assert torch.allclose(est, scales ** 2, rtol=1e-12)
    log = est.log()
    expected = ((n / (n + 5.0)) * log + (5.0 / (n + 5.0)) * log.mean()).exp()
    assert torch.allclose(w.variance(), expected, rtol=1e-10)
    plain = VarianceWindow(3, F, torch.device("cpu"))   # without gradients: the positions' variance
    for r in rows:
        plain.add(r * scales)
    v = (allrows * scales).var(0).log()
    assert torch.allclose(plain.variance(), ((n / (n + 5.0)) * v + (5.0 / (n + 5.0)) * v.mean()).exp(), rtol=1e-10)


def _covariance(d, rho, scales):
    corr = torch.full((d, d), rho, dtype=F) + (1 - rho) * torch.eye(d, dtype=F)
    return corr * scales[:, None] * scales[None, :]


def test_dense_estimate_recovers_a_gaussian_covariance_from_draws_that_have_not_reached_it():
    # target N(0, S): the gradient at x is -S^-1 x, so Cov(grad) = S^-1 A S^-1 for draws of any
    # covariance A, and the geometric mean of A and Cov(grad)^-1 is S itself (Seyboldt et al. 2023):
    # standard normal draws (not the target's) give the target's covariance, up to sampling noise
    scales = _t([1.0, 3.0, 0.5, 2.0])
    cov = _covariance(4, 0.9, scales)
    x = torch.randn(200_000, 4, generator=torch.Generator().manual_seed(3), dtype=F)
    window = VarianceWindow(4, F, torch.device("cpu"), dense=True)
    for rows in x.split(1000):
        window.add(rows, -rows @ torch.linalg.inv(cov))
    metric = window.metric()
    assert metric.dense
    est = metric.factor @ metric.factor.T
    rel = (est - cov) / (scales[:, None] * scales[None, :])
    assert rel.abs().max() < 0.01, est
    grad = -x[:30] @ torch.linalg.inv(cov)
    assert dense_estimate(x[:30], grad, torch.ones(4, dtype=F)) is None     # under 10 rows per coordinate


def test_metric_maps_between_the_chains_coordinates_and_the_models():
    g = torch.Generator().manual_seed(4)
    lower = torch.tril(torch.randn(3, 3, generator=g, dtype=F)) + 3 * torch.eye(3, dtype=F)
    z = torch.randn(5, 3, generator=g, dtype=F)
    for m in (Metric(_t([2.0, 0.5, 7.0])), Metric(lower)):
        assert torch.allclose(m.to_z(m.to_x(z)), z, atol=1e-12)
        full = m.factor if m.dense else torch.diag(m.factor)
        assert torch.allclose(m.inverse_mass(), (full @ full.T).diagonal())
        # the chain rule for z = x L^T: d f / d x = (d f / d z) L
        x = m.to_x(z).requires_grad_(True)
        (gx,) = torch.autograd.grad((m.to_z(x) ** 3).sum(), x)
        assert torch.allclose(m.grad_x(3 * m.to_z(x).detach() ** 2), gx)
    both = Metric(_t([2.0, 0.5, 7.0])).compose(Metric(lower))
    assert torch.allclose(both.to_z(z), (z @ lower.T) * _t([2.0, 0.5, 7.0]))


def test_chees_gradient_is_positive_before_a_quarter_period_and_negative_after():
    # standard normal target, exact Hamiltonian flow: z(t) = z cos t + p sin t, p(t) = p cos t - z sin t;
    # ChEES(t) = 1/4 E[(|z(t)|^2 - |z|^2)^2] is largest at t = pi/2 (Hoffman et al. 2021, §3)
    g = torch.Generator().manual_seed(1)
    z0, p0 = torch.randn(4000, 5, generator=g, dtype=F), torch.randn(4000, 5, generator=g, dtype=F)
    accept = torch.ones(4000, dtype=F)
    grads = {}
    for t in (0.6, 2.4):
        z1, p1 = z0 * math.cos(t) + p0 * math.sin(t), p0 * math.cos(t) - z0 * math.sin(t)
        grads[t] = chees_gradient(z0, z1, p1, accept, 1.0)
    assert grads[0.6] > 0 > grads[2.4]


def test_dual_averaging_reaches_the_target_acceptance():
    # acceptance exp(-eps^2): the target 0.651 is met at eps = sqrt(-log 0.651)
    da = DualAveraging(1.0, 0.651)
    for _ in range(2000):
        da.update(math.exp(-da.step_size ** 2))
    assert da.final == pytest.approx(math.sqrt(-math.log(0.651)), rel=0.02)


# ------------------------------------------------------------------ closed-form posteriors
def test_normal_mean_matches_the_conjugate_posterior():
    x = torch.randn(30, generator=torch.Generator().manual_seed(2), dtype=F) * 2.0 + 3.0
    prec = 1 / 100.0 + len(x) / 4.0
    post = _run(normal_mean, {"x": x}, seed=0)
    assert post.trust.verdict == "reliable", post.trust.reasons
    _within_mc_error(post, "mu", (x.sum() / 4.0) / prec, prec ** -0.5)
    draws = post.sample(100, seed=0)["mu"]
    assert draws.shape == (100,)


def test_beta_bernoulli_on_the_constrained_support():
    x = _t([1, 0, 1, 1, 1, 0, 1, 1, 0, 1])
    a, b = 2 + float(x.sum()), 2 + float(len(x) - x.sum())
    post = _run(coin, {"x": x}, seed=3)
    assert post.trust.verdict == "reliable", post.trust.reasons
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    _within_mc_error(post, "th", mean, var ** 0.5)
    assert float(post.sample(500, seed=1)["th"].min()) > 0


def test_regression_whose_coefficients_differ_by_seven_orders_of_magnitude():
    # the mass matrix adapts to the scales; the model computes X @ w, which does not
    # broadcast over a particles plate, so the chains go through torch.func.vmap
    g = torch.Generator().manual_seed(4)
    X = torch.randn(40, 3, generator=g, dtype=F) * _t([1e-3, 1.0, 1e4])
    w_true = _t([2e3, -1.0, 3e-4])
    y = X @ w_true + 0.5 * torch.randn(40, generator=g, dtype=F)
    post = _run(linreg, {"X": X, "y": y}, seed=5)
    prec = X.T @ X / 0.25 + torch.eye(3, dtype=F) / 1e8
    cov = torch.linalg.inv(prec)
    mean = cov @ (X.T @ y / 0.25)
    assert post.trust.verdict == "reliable", post.trust.reasons
    _within_mc_error(post, "w", mean, cov.diagonal().sqrt())


@ppl.model
def correlated(y):
    # y_i ~ N(a + b t_i, 1) with t_i in the hundreds: a and b correlate at about -0.999
    a = ppl.sample("a", dist.Normal(_t(0.0), 100.0))
    b = ppl.sample("b", dist.Normal(_t(0.0), 100.0))
    t = torch.arange(len(y), dtype=F) + 300.0
    with ppl.plate("d", len(y)):
        ppl.sample("y", dist.Normal(a + b * t, 1.0), obs=y)


def test_a_dense_metric_samples_a_correlated_posterior_in_fewer_gradients():
    y = 2.0 + 0.1 * (torch.arange(20, dtype=F) + 300.0) + torch.randn(20, generator=torch.Generator().manual_seed(6),
                                                                       dtype=F)
    t = torch.arange(20, dtype=F) + 300.0
    X = torch.stack([torch.ones(20, dtype=F), t], 1)
    cov = torch.linalg.inv(X.T @ X + torch.eye(2, dtype=F) / 1e4)
    mean = cov @ (X.T @ y)
    dense = _run(correlated, {"y": y}, seed=1, metric="auto")
    diag = _run(correlated, {"y": y}, seed=1, metric="diag")
    assert dense.diagnostics["dense_metric"] and not diag.diagnostics["dense_metric"]
    assert dense.trust.verdict == "reliable", dense.trust.reasons
    _within_mc_error(dense, "a", mean[0], cov[0, 0].sqrt())
    _within_mc_error(dense, "b", mean[1], cov[1, 1].sqrt())
    assert dense.diagnostics["grad_evals"] < 0.5 * diag.diagnostics["grad_evals"]


# ------------------------------------------------------------------ seeds and verdicts
def test_a_seed_reproduces_every_draw_and_another_seed_does_not():
    x = _t([0.3, 1.2, -0.4, 2.2])
    a, b = (_run(normal_mean, {"x": x}, seed=s, num_chains=4, warmup_steps=40, num_samples=20) for s in (7, 7))
    c = _run(normal_mean, {"x": x}, seed=8, num_chains=4, warmup_steps=40, num_samples=20)
    assert torch.equal(a.mean("mu"), b.mean("mu")) and a.diagnostics["step_size"] == b.diagnostics["step_size"]
    assert torch.equal(a.sample(80, seed=1)["mu"], b.sample(80, seed=1)["mu"])
    assert a.to_arviz(predictive=False, log_likelihood=False).posterior["mu"].shape == (4, 20)
    assert not torch.equal(a.mean("mu"), c.mean("mu"))


def test_too_short_a_run_is_unreliable_and_says_why():
    x = _t([0.3, 1.2, -0.4, 2.2])
    post = _run(normal_mean, {"x": x}, seed=0, num_chains=4, warmup_steps=5, num_samples=10)
    assert post.trust.verdict == "unreliable"
    assert any("ESS" in r for r in post.trust.reasons), post.trust.reasons


@ppl.model
def funnel():
    v = ppl.sample("v", dist.Normal(_t(0.0), 3.0))
    ppl.sample("x", dist.Normal(torch.zeros(9, dtype=F), torch.exp(v / 2)).to_event(1))


def test_neals_funnel_is_not_called_reliable():
    # Neal (2003): the scale of x varies by orders of magnitude with v, so no one step size
    # and diagonal mass serve the whole posterior; the sampler must say so
    post = _run(funnel, {}, seed=0, num_chains=8, warmup_steps=100, num_samples=100, max_leapfrog=64)
    assert post.trust.verdict == "unreliable", post.trust.reasons
    assert post.trust.next_method == "nuts"
    assert post.trust.reasons


def test_auto_samples_summed_out_discrete_latents_with_chees_before_nuts():
    @ppl.model
    def mix(x):
        loc = ppl.sample("loc", dist.Normal(_t(0.0), 5.0))
        with ppl.plate("d", len(x)):
            z = ppl.sample("z", dist.Bernoulli(_t(0.5)))
            ppl.sample("x", dist.Normal(loc * z, 1.0), obs=x)

    analysis = ppl.analyze(mix, {"x": _t([0.1, 2.0, 2.5])})
    assert analysis.backends["chees"][0]
    assert get_backend("chees").auto_skip(analysis, {}, []) is None
    # the plan printed by ppl.analyze agrees with what auto runs: chees, then nuts
    plan = analysis.auto["plan"]
    assert "chees" in plan and "nuts" in plan and plan.index("chees") < plan.index("nuts")


def test_auto_runs_the_longer_chees_only_after_chains_that_disagreed_with_few_divergences():
    from ppl.backends.chees.backend import FEW_DIVERGENCES, LONGER

    analysis = ppl.analyze(normal_mean, {"x": _t([0.1, 0.4])})
    chees = get_backend("chees")
    short, centred_nc, longer, longer_nc = chees.auto_variants(analysis)
    assert longer == {**short, **LONGER} and chees.auto_skip(analysis, short, []) is None
    assert "nothing to non-centre" in chees.auto_skip(analysis, centred_nc, [])   # no hierarchy here
    assert "nothing to non-centre" in chees.auto_skip(analysis, longer_nc, [])
    slow = [{"method": "chees", "options": short, "verdict": "unreliable", "divergences": 0}]
    many = int(FEW_DIVERGENCES * 16 * 400) + 1    # the defaults' 16 chains x 400 draws
    assert chees.auto_skip(analysis, longer, slow) is None
    assert chees.auto_skip(analysis, longer, [{**slow[0], "divergences": many - 1}]) is None
    assert "divergent" in chees.auto_skip(analysis, longer, [{**slow[0], "divergences": many}])
    assert "no result" in chees.auto_skip(analysis, longer, [{**slow[0], "verdict": None}])


# ------------------------------------------------------------------ auto on eight schools
def test_auto_escalates_to_chees_on_eight_schools_and_matches_the_reference():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from reference_models import eight_schools, eight_schools_data

    ref = json.loads((FIXTURES / "reference_posteriors.json").read_text())["eight_schools"]["sites"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(eight_schools, eight_schools_data(), seed=0)
    assert post.method == "chees", post.diagnostics["routing"]["reason"]
    tried = [a["method"] for a in post.diagnostics["routing"]["attempts"]]
    assert tried[-1] == "chees" and "nuts" not in tried
    assert post.trust.verdict == "reliable"
    for site in ("mu", "tau"):
        m, s = float(post.mean(site)), float(post.variance(site)) ** 0.5
        assert abs(m - ref[site]["mean"][0]) / ref[site]["sd"][0] < 0.1
        assert 0.9 < s / ref[site]["sd"][0] < 1.1


def test_a_run_cut_at_max_seconds_keeps_its_draws_and_is_unreliable():
    x = _t([1.0, 2.5, 0.5, 1.8])
    post = _run(normal_mean, {"x": x}, seed=0, warmup_steps=50, num_samples=1_000_000, max_seconds=3.0)
    draws = post.draws("mu")
    assert draws.shape[0] == 16 and 4 <= draws.shape[1] < 1_000_000
    assert post.trust.verdict == "unreliable" and "time limit" in post.trust.reasons[0]
    assert "max_seconds=3" in post.diagnostics["stopped"]


def test_a_run_cut_in_its_warmup_is_a_numerical_error():
    with pytest.raises(ppl.errors.NumericalError, match="time limit .* in its warmup"):
        _run(normal_mean, {"x": _t([1.0, 2.5])}, seed=0, warmup_steps=10_000_000, max_seconds=1.0)
