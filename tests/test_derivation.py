"""Functions of θ that a model computes before selecting from them
(``locs = stack([loc0, loc0 + gap])``, a transition matrix built from ``p_stay``) are
recorded once and replayed (:mod:`ppl.compiler.derivation`), so a model with discrete
latents summed out needs no model run per log-density evaluation.

References that cannot share the replay's bug: a forward algorithm written here with
torch.distributions (for the HMM), and the model run itself at other θ."""

import math

import pytest
import torch
import pyro.distributions as dist

import ppl
from ppl.backends.common.potential import Potential
from reference_models import REFERENCE

F = torch.float64


# the reference set's HMM with unknown parameters (locs and the transition matrix computed)
hmm = REFERENCE["hmm"][0]


def _forward(y, p_stay, loc0, gap):
    """log p(y, p_stay, loc0, gap) by the forward algorithm (Rabiner 1989, eq. 19-21)."""
    trans = torch.stack([torch.stack([p_stay[0], 1 - p_stay[0]]), torch.stack([1 - p_stay[1], p_stay[1]])])
    locs = torch.stack([loc0, loc0 + gap])
    alpha = torch.log(torch.full((2,), 0.5, dtype=F)) + dist.Normal(locs, 1.0).log_prob(y[0])
    for t in range(1, len(y)):
        alpha = torch.logsumexp(alpha[:, None] + trans.log(), 0) + dist.Normal(locs, 1.0).log_prob(y[t])
    prior = (dist.Beta(torch.full((2,), 5.0, dtype=F), 2.0).log_prob(p_stay).sum()
             + dist.Normal(torch.tensor(0.0, dtype=F), 5.0).log_prob(loc0)
             + dist.HalfNormal(torch.tensor(5.0, dtype=F)).log_prob(gap))
    return torch.logsumexp(alpha, 0) + prior


@pytest.fixture(scope="module")
def potential():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(40, generator=g, dtype=F) + 3.0 * (torch.rand(40, generator=g, dtype=F) < 0.4)
    a = ppl.analyze(hmm, {"y": y})
    return y, Potential(a.graph, torch.device("cpu"), F, a)


def test_hmm_factors_are_replayed_not_rerun(potential):
    _, pot = potential
    pt = pot.enumerated.pt
    assert set(pt.slow) <= {"p_stay", "loc0", "gap"}  # only the priors' own factors ...
    assert set(pt.slow) <= set(pt.direct)  # ... and those without a model run
    assert pt.derivation is not None and len(pt.derivation.ops) <= 5  # unused row sums pruned


@pytest.mark.parametrize("point", [(0.8, 0.7, -1.0, 2.5), (0.55, 0.95, 1.5, 0.3), (0.99, 0.2, 0.0, 6.0)])
def test_enumerated_density_matches_a_forward_pass(potential, point):
    y, pot = potential
    p0, p1, loc0, gap = point
    values = {"p_stay": torch.tensor([p0, p1], dtype=F), "loc0": torch.tensor(loc0, dtype=F),
              "gap": torch.tensor(gap, dtype=F)}
    got = pot.enumerated(values)
    want = _forward(y, values["p_stay"], values["loc0"], values["gap"])
    assert float(got) == pytest.approx(float(want), rel=1e-10, abs=1e-9)


def test_gradient_through_the_replay_matches_autograd_of_the_forward_pass(potential):
    y, pot = potential
    vals = {"p_stay": torch.tensor([0.7, 0.85], dtype=F, requires_grad=True),
            "loc0": torch.tensor(0.3, dtype=F, requires_grad=True), "gap": torch.tensor(2.0, dtype=F, requires_grad=True)}
    with torch.enable_grad():
        got = torch.autograd.grad(pot.enumerated(vals), list(vals.values()))
        want = torch.autograd.grad(_forward(y, *vals.values()), list(vals.values()))
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


@ppl.model
def normalised(x):
    # theta sums to 1 at its prior mean (the probe point), so a rebuilt table that gathers
    # theta where the model uses theta / theta.sum() agrees there and nowhere else
    theta = ppl.sample("theta", dist.Gamma(torch.full((2,), 0.5, dtype=F), 1.0).to_event(1))
    w = theta / theta.sum(-1, keepdim=True)
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F)))
        ppl.sample("x", dist.Normal(w[z], 0.5), obs=x)


def test_a_table_that_only_agrees_at_the_probe_point_is_rerun():
    x = torch.tensor([0.2, 2.9, 1.1, -0.4, 2.2], dtype=F)
    a = ppl.analyze(normalised, {"x": x})
    pot = Potential(a.graph, torch.device("cpu"), F, a)
    theta = torch.tensor([0.3, 2.0], dtype=F)
    w = theta / theta.sum()
    comp = dist.Normal(w, 0.5).log_prob(x[:, None]) + math.log(0.5)
    want = torch.logsumexp(comp, -1).sum() + dist.Gamma(torch.full((2,), 0.5, dtype=F), 1.0).log_prob(theta).sum()
    assert float(pot.enumerated({"theta": theta})) == pytest.approx(float(want), rel=1e-10)


# ------------------------------------------------------------------ continuous models: summed tables
@ppl.model
def varying_intercepts(county, floor, y, J):
    mu_a = ppl.sample("mu_a", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
    sigma_a = ppl.sample("sigma_a", dist.HalfCauchy(torch.tensor(5.0, dtype=F)))
    b = ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
    sigma_y = ppl.sample("sigma_y", dist.HalfCauchy(torch.tensor(5.0, dtype=F)))
    with ppl.plate("counties", J):
        a = ppl.sample("a", dist.Normal(mu_a, sigma_a))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(a[county] + b * floor, sigma_y), obs=y)


@pytest.fixture(scope="module")
def intercepts():
    g = torch.Generator().manual_seed(5)
    county = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 5, 5, 5, 6, 7, 7])
    floor = (torch.rand(len(county), generator=g) < 0.3).to(F)
    y = 1.5 + 0.3 * torch.randn(8, generator=g, dtype=F)[county] - 0.6 * floor \
        + 0.7 * torch.randn(len(county), generator=g, dtype=F)
    data = {"county": county, "floor": floor, "y": y, "J": 8}
    return data, Potential(ppl.analyze(varying_intercepts, data).graph, torch.device("cpu"), F)


def _intercepts_density(data, z):
    """log p(h(z), v) + log|det ∂h/∂z| written out (z = [mu_a, log sigma_a, b, log sigma_y, a])."""
    mu_a, ls_a, b, ls_y, a = z[0], z[1], z[2], z[3], z[4:]
    t = lambda v: torch.tensor(v, dtype=F)  # noqa: E731
    lp = (dist.Normal(t(0.0), 10.0).log_prob(mu_a) + dist.HalfCauchy(t(5.0)).log_prob(ls_a.exp()) + ls_a
          + dist.Normal(t(0.0), 10.0).log_prob(b) + dist.HalfCauchy(t(5.0)).log_prob(ls_y.exp()) + ls_y
          + dist.Normal(mu_a, ls_a.exp()).log_prob(a).sum())
    return lp + dist.Normal(a[data["county"]] + b * data["floor"], ls_y.exp()).log_prob(data["y"]).sum()


def test_continuous_density_runs_from_tables(intercepts):
    data, pot = intercepts
    assert pot.tabled is not None and set(pot.tabled.pt.slow) <= set(pot.tabled.pt.direct)
    assert pot.sites == ["mu_a", "sigma_a", "b", "sigma_y", "a"]
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(6, pot.dim, generator=g, dtype=F)
    for z in zs:
        value, grad = pot.log_density_and_grad(z)
        zr = z.clone().requires_grad_(True)
        with torch.enable_grad():
            want = _intercepts_density(data, zr)
            (want_grad,) = torch.autograd.grad(want, zr)
        assert float(value) == pytest.approx(float(want), rel=1e-10)
        assert torch.allclose(grad, want_grad, rtol=1e-8, atol=1e-10)
    rows = pot.log_density_rows(zs)  # vmapped over the rows
    assert torch.allclose(rows, torch.stack([_intercepts_density(data, z) for z in zs]), rtol=1e-10)


@ppl.model
def with_factor(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
    ppl.factor("soft", -0.5 * mu ** 2)  # a Unit factor: no table to rebuild, the model is run
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Normal(mu, 1.0), obs=x)


def test_a_factor_the_tables_cannot_rebuild_keeps_the_model_run():
    x = torch.tensor([0.5, 1.5, 1.0], dtype=F)
    pot = Potential(ppl.analyze(with_factor, {"x": x}).graph, torch.device("cpu"), F)
    assert pot.tabled is None
    mu = torch.tensor(0.7, dtype=F)
    want = dist.Normal(torch.tensor(0.0, dtype=F), 1.0).log_prob(mu) - 0.5 * mu ** 2 \
        + dist.Normal(mu, 1.0).log_prob(x).sum()
    assert float(pot.log_density(mu.reshape(1))) == pytest.approx(float(want), rel=1e-12)


@ppl.model
def volatility(r):
    omega = ppl.sample("omega", dist.LogNormal(torch.tensor(-2.0, dtype=F), 1.0))
    beta = ppl.sample("beta", dist.Beta(torch.tensor(2.0, dtype=F), 2.0))
    torch.exp(-omega)  # computed and never used: recorded, then pruned before the stack below
    var = [r.var()]
    for t in range(1, len(r)):
        var.append(omega + 0.1 * r[t - 1] ** 2 + beta * var[-1])
    with ppl.plate("time", len(r)):
        ppl.sample("r", dist.Normal(torch.tensor(0.0, dtype=F), torch.stack(var).sqrt()), obs=r)


def test_a_recursion_stacked_with_a_constant_replays_after_pruning():
    g = torch.Generator().manual_seed(2)
    r = 0.5 * torch.randn(30, generator=g, dtype=F)
    pot = Potential(ppl.analyze(volatility, {"r": r}).graph, torch.device("cpu"), F)
    assert pot.tabled is not None
    omega, beta = torch.tensor(0.07, dtype=F), torch.tensor(0.6, dtype=F)
    var = [r.var()]
    for t in range(1, len(r)):
        var.append(omega + 0.1 * r[t - 1] ** 2 + beta * var[-1])
    want = dist.LogNormal(torch.tensor(-2.0, dtype=F), 1.0).log_prob(omega) \
        + dist.Beta(torch.tensor(2.0, dtype=F), 2.0).log_prob(beta) \
        + dist.Normal(torch.tensor(0.0, dtype=F), torch.stack(var).sqrt()).log_prob(r).sum()
    got = pot.tabled({"omega": omega, "beta": beta})
    assert float(got) == pytest.approx(float(want), rel=1e-11)


# ------------------------------------------------------------------ a shared latent scale in a loop
@ppl.model
def hmm_shared_scale(y):
    theta = ppl.sample("theta", dist.Dirichlet(torch.ones(3, 3, dtype=F) + 2 * torch.eye(3, dtype=F)).to_event(1))
    mu = ppl.sample("mu", dist.Normal(torch.tensor([-3.0, 0.0, 3.0], dtype=F), 1.0).to_event(1))
    sigma = ppl.sample("sigma", dist.HalfNormal(torch.tensor(2.0, dtype=F)))
    z = 0
    for t in ppl.markov(range(len(y))):
        z = ppl.sample(f"z_{t}", dist.Categorical(theta[z] if t else torch.full((3,), 1 / 3, dtype=F)))
        ppl.sample(f"y_{t}", dist.Normal(mu[z], sigma), obs=y[t])


def test_a_shared_latent_scale_does_not_join_the_chain():
    # a scale shared by every y_t used to collect every z_t in its provenance (an op that
    # returned its input unioned the sites into it), so each y_t's factor held all z's:
    # treewidth T - 1 and "intractable" for any HMM with a latent emission scale
    y = torch.tensor([-3.1, -2.7, 0.2, 0.1, 2.9, 3.3, 3.0, -0.3, -2.8, -3.2], dtype=F)
    a = ppl.analyze(hmm_shared_scale, {"y": y})
    assert a.treewidth == 1
    assert set(a.graph.factors["y_4"].scope) == {"mu", "sigma", "z_4", "y_4"}
    pot = Potential(a.graph, torch.device("cpu"), F, a)
    zs = pot.median + 0.3 * torch.randn(3, pot.dim, generator=torch.Generator().manual_seed(0), dtype=F)
    assert pot._vmaps(zs)  # the chain's log-domain products branch on no value under vmap
    with torch.no_grad():
        rows = pot.log_density_rows(zs)
        one = torch.stack([pot.log_density(z) for z in zs])
    assert torch.allclose(rows, one, rtol=1e-12)
    values = pot.constrain(zs[0])
    theta, mu, sigma = values["theta"], values["mu"], values["sigma"]
    alpha = torch.log(torch.full((3,), 1 / 3, dtype=F)) + dist.Normal(mu, sigma).log_prob(y[0])
    for t in range(1, len(y)):
        alpha = torch.logsumexp(alpha[:, None] + theta.log(), 0) + dist.Normal(mu, sigma).log_prob(y[t])
    prior = (dist.Dirichlet(torch.ones(3, 3, dtype=F) + 2 * torch.eye(3, dtype=F)).log_prob(theta).sum()
             + dist.Normal(torch.tensor([-3.0, 0.0, 3.0], dtype=F), 1.0).log_prob(mu).sum()
             + dist.HalfNormal(torch.tensor(2.0, dtype=F)).log_prob(sigma))
    assert float(pot.enumerated(values)) == pytest.approx(float(torch.logsumexp(alpha, 0) + prior), rel=1e-10)


def test_recorded_tables_that_cannot_be_checked_at_a_second_point_are_not_used(monkeypatch):
    # the second-point check needs a model run at a moved θ; where the model refuses it
    # (a support that depends on another latent), tables that gather recorded functions
    # of θ were checked at the probe point only: they go back to model runs
    from ppl.compiler.parametric import evaluator

    real_run, real_moved = evaluator.ParametricTables._run, evaluator._moved

    class Moved(dict):
        pass

    def run(self, values, names, grad):
        if isinstance(values, Moved):  # only the check's runs at a moved θ are refused
            raise ValueError("the model refuses this θ")
        return real_run(self, values, names, grad)

    monkeypatch.setattr(evaluator.ParametricTables, "_run", run)
    monkeypatch.setattr(evaluator, "_moved", lambda *a: Moved(real_moved(*a)))
    g = torch.Generator().manual_seed(4)
    y = torch.randn(12, generator=g, dtype=F) + 3.0 * (torch.rand(12, generator=g, dtype=F) < 0.4)
    a = ppl.analyze(hmm, {"y": y})
    pot = Potential(a.graph, torch.device("cpu"), F, a)
    pt = pot.enumerated.pt
    assert {f"y_{t}" for t in range(12)} <= set(pt.slow)  # Normal(locs[z], 1): locs is recorded
    assert "rebuilt" not in pt.templates["y_3"].slow and "second" in pt.templates["y_3"].slow
    values = {"p_stay": torch.tensor([0.8, 0.6], dtype=F), "loc0": torch.tensor(0.2, dtype=F),
              "gap": torch.tensor(2.5, dtype=F)}
    want = _forward(y, values["p_stay"], values["loc0"], values["gap"])
    assert float(pot.enumerated(values)) == pytest.approx(float(want), rel=1e-10)
