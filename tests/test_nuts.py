"""method="nuts" against references that cannot share its bugs: closed-form conjugate
posteriors (Normal mean with known noise, Gamma-Poisson rate), numpy grid quadrature of a
two-component mixture's location posterior (the assignments summed out by hand), and
synthetic chains whose R-hat and ESS are known by construction.  Plus the trust verdict
(Vehtari et al. 2021 thresholds; divergences, Betancourt 2017), seeding and the caller's
random state, and the applicability check."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pyro
import pytest
import torch
from scipy import special

import ppl
import ppl.distributions as dist
from ppl.backends.common.chains import chain_diagnostics, chain_trust

QUIET = dict(progress=False)
# Pyro's jit_compile calls torch.jit.trace, which torch 2.13 marks deprecated
# one intra-op thread: NUTS works on tiny tensors, and on a shared 2-core machine two OpenMP
# threads made a mixture's chain ~5x slower (thread contention, not work)
pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


def nuts(model, data, **kw):
    """ppl.infer(method="nuts") with the TrustWarning of an unreliable verdict silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.errors.TrustWarning)
        return ppl.infer(model, data, method="nuts", **{**QUIET, **kw})


def mcse_bound(draws: torch.Tensor, k: float = 4.0) -> float:
    """``k`` Monte Carlo standard errors of the mean of ``draws`` ``(C, S)`` (ESS by ArviZ)."""
    import arviz as az

    ess = float(az.ess(az.from_dict(posterior={"x": draws.double().numpy()}))["x"])
    return k * float(draws.double().std()) / math.sqrt(ess)


# ------------------------------------------------------------------ Normal mean, known noise
X_NN = torch.tensor(np.random.default_rng(0).normal(1.5, 1.0, 40))
PRIOR_SD = 3.0


@ppl.model
def normal_mean(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), PRIOR_SD))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu, 1.0), obs=x)


def normal_mean_exact():
    """Posterior N(mean, sd²): precision 1/τ² + n, mean Σx / precision (unit noise)."""
    prec = 1.0 / PRIOR_SD**2 + len(X_NN)
    return float(X_NN.sum()) / prec, 1.0 / math.sqrt(prec)


def test_normal_mean_matches_the_closed_form_and_is_reliable():
    post = nuts(normal_mean, {"x": X_NN}, num_chains=4, warmup_steps=200, num_samples=500, seed=1,
                jit_compile=True)
    mean, sd = normal_mean_exact()
    draws = post.draws("mu")
    assert draws.shape == (4, 500) and draws.dtype == torch.float64
    assert abs(float(post.mean("mu")) - mean) < mcse_bound(draws)
    assert float(post.variance("mu").sqrt()) == pytest.approx(sd, rel=0.1)
    assert post.trust.verdict == "reliable", str(post.trust)
    assert "R-hat" in post.trust.reasons[0] and "Vehtari" in post.trust.reasons[0]
    n = post.trust.numbers
    assert set(n) >= {"rhat", "ess_bulk", "ess_tail", "divergences", "num_chains", "num_samples"}
    assert n["rhat"] < 1.01 and n["ess_bulk"] >= 400 and n["ess_tail"] >= 400 and n["divergences"] == 0
    d = post.diagnostics
    assert d["rhat"]["mu"] == n["rhat"] and d["num_chains"] == 4 and d["steps_per_second"] > 0
    assert post.elbo is None and post.log_evidence is None and post.converged is None
    assert post.diagnostics["routing"]["method"] == "nuts"


# ------------------------------------------------------------------ Gamma-Poisson rate
COUNTS = torch.tensor([2.0, 4.0, 3.0, 5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 3.0], dtype=torch.float64)
A0, B0 = 2.0, 0.5


@ppl.model
def gamma_poisson(x):
    rate = ppl.sample("rate", dist.Gamma(torch.tensor(A0, dtype=torch.float64), B0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Poisson(rate), obs=x)


def test_gamma_poisson_rate_in_float64():
    post = nuts(gamma_poisson, {"x": COUNTS}, num_chains=2, warmup_steps=200, num_samples=400, seed=3,
                dtype=torch.float64)
    a, b = A0 + float(COUNTS.sum()), B0 + len(COUNTS)  # Gamma(a, b) posterior (rate b)
    draws = post.draws("rate")
    assert draws.dtype == torch.float64 and bool((draws > 0).all())
    assert abs(float(post.mean("rate")) - a / b) < mcse_bound(draws)
    assert float(post.variance("rate").sqrt()) == pytest.approx(math.sqrt(a) / b, rel=0.15)


# ------------------------------------------------------------------ mixture, assignments enumerated
Y_MIX = torch.tensor(np.concatenate([np.random.default_rng(5).normal(-2.5, 1.0, 25),
                                     np.random.default_rng(6).normal(2.5, 1.0, 25)]))
PRIOR_LOC = torch.tensor([-2.5, 2.5], dtype=torch.float64)


@ppl.model
def mixture(y):
    loc = ppl.sample("loc", dist.Normal(PRIOR_LOC, 1.0).to_event(1))  # separated: keeps the labels apart
    with ppl.plate("data", len(y)):
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=torch.float64)))
        ppl.sample("obs", dist.Normal(loc[z], 1.0), obs=y)


def mixture_grid_means(points: int = 301):
    """Posterior means of both locations by quadrature on a grid, the assignments summed
    out by hand: ``p(l0, l1 | y) ∝ N(l|m0, I) Π_i (½ N(y_i|l0, 1) + ½ N(y_i|l1, 1))``."""
    y = Y_MIX.numpy()
    g0 = np.linspace(-7.0, 3.0, points)
    g1 = np.linspace(-3.0, 7.0, points)
    ll0 = -0.5 * (y[None, :] - g0[:, None]) ** 2  # (G, N); constants cancel
    ll1 = -0.5 * (y[None, :] - g1[:, None]) ** 2
    log_lik = np.logaddexp(ll0[:, None, :], ll1[None, :, :]).sum(-1)  # (G0, G1)
    log_prior = -0.5 * ((g0[:, None] + 2.5) ** 2 + (g1[None, :] - 2.5) ** 2)
    w = np.exp(log_lik + log_prior - (log_lik + log_prior).max())
    w /= w.sum()
    return float((w.sum(1) * g0).sum()), float((w.sum(0) * g1).sum())


def test_mixture_locations_with_the_assignments_summed_out():
    # init="median": the prior median puts every chain in the labelled mode (from init="uniform" a chain
    # can start in the label-swapped one, e^-25 less probable, and stay: R-hat then flags the run)
    post = nuts(mixture, {"y": Y_MIX}, num_chains=2, warmup_steps=200, num_samples=300, seed=0, init="median",
                jit_compile=True)
    assert post.sites == ["loc", "z"] and post.draws("loc").shape == (2, 300, 2)
    # the summed-out assignments: p(z | x), rows summing to 1 (checked against brute force in
    # tests/test_draws_discrete.py)
    assert torch.allclose(post.probs("z").sum(-1), torch.ones(post.probs("z").shape[:-1], dtype=torch.float64))
    assert post.diagnostics["enumerated"] == ["z"]
    ref = mixture_grid_means()
    mean = post.mean("loc")
    for k in range(2):
        assert abs(float(mean[k]) - ref[k]) < mcse_bound(post.draws("loc")[..., k])
    # near the clusters' sample means (shrunk a little toward the prior centres ±2)
    assert float(mean[0]) == pytest.approx(float(Y_MIX[:25].mean()), abs=0.4)
    assert float(mean[1]) == pytest.approx(float(Y_MIX[25:].mean()), abs=0.4)


# ------------------------------------------------------------------ verdicts
def test_a_run_too_short_is_unreliable_and_infer_warns():
    with pytest.warns(ppl.errors.TrustWarning, match=r"method 'nuts' is unreliable: .*(R-hat|ESS)"):
        post = ppl.infer(normal_mean, {"x": X_NN}, method="nuts", warmup_steps=5, num_samples=10, num_chains=2,
                         seed=0, **QUIET)
    assert post.trust.verdict == "unreliable"
    text = " ".join(post.trust.reasons)
    assert "ESS of 'mu'" in text and "num_samples=" in text
    assert len({r.rsplit("num_samples=", 1)[1] for r in post.trust.reasons if "ESS of" in r}) == 1  # one advice
    assert post.trust.numbers["num_samples"] == 10 and post.trust.numbers["num_chains"] == 2


def test_one_chain_cannot_be_checked():
    post = nuts(normal_mean, {"x": X_NN}, num_chains=1, warmup_steps=50, num_samples=50, seed=0)
    assert post.draws("mu").shape == (1, 50)
    assert post.trust.verdict == "unreliable"
    assert post.trust.reasons[0].startswith("one chain: convergence cannot be checked")
    assert "num_chains >= 2" in post.trust.reasons[0]


def _diag(rhat=1.001, bulk=900.0, tail=800.0, divergences=0, chains=4, samples=1000, target=0.8):
    return {"rhat": {"a": 1.0, "b": rhat}, "ess_bulk": {"a": 5000.0, "b": bulk}, "ess_tail": {"a": 5000.0, "b": tail},
            "max_rhat": max(1.0, rhat), "min_ess_bulk": bulk, "min_ess_tail": tail, "num_chains": chains,
            "num_samples": samples, "warmup_steps": 1000, "divergences": divergences, "target_accept_prob": target}


def test_verdict_rules_on_given_numbers():
    assert chain_trust(_diag()).verdict == "reliable"
    t = chain_trust(_diag(rhat=1.02))
    assert t.verdict == "unreliable" and "R-hat of 'b' is 1.020 >= 1.01" in t.reasons[0]
    assert "warmup_steps=2000, num_samples=2000" in t.reasons[0] and "reparameterise" in t.reasons[0]
    t = chain_trust(_diag(bulk=399.0))
    assert t.verdict == "unreliable" and "bulk ESS of 'b' is 399 < 400" in t.reasons[0]
    t = chain_trust(_diag(tail=100.0))
    assert "tail ESS of 'b' is 100 < 400" in t.reasons[0] and "quantiles" in t.reasons[0]
    t = chain_trust(_diag(divergences=3))
    assert "3 divergent transition(s)" in t.reasons[0] and "target_accept_prob=0.95" in t.reasons[0]
    assert "target_accept_prob=0.99" in chain_trust(_diag(divergences=1, target=0.95)).reasons[0]
    assert chain_trust(_diag(rhat=float("nan"))).verdict == "unreliable"
    assert chain_trust(_diag(chains=2, bulk=250.0, tail=250.0)).verdict == "reliable"  # 100 per chain


def test_chain_diagnostics_on_synthetic_chains():
    rng = np.random.default_rng(0)
    iid = torch.tensor(rng.normal(size=(4, 500, 3)))
    d = chain_diagnostics({"x": iid})
    assert d["max_rhat"] < 1.01 and d["min_ess_bulk"] > 1200 and d["min_ess_tail"] > 1000
    apart = iid + torch.tensor([0.0, 0.0, 0.0, 3.0]).reshape(4, 1, 1)  # one chain elsewhere
    d = chain_diagnostics({"x": iid[..., 0], "chain": apart})  # a site named like ArviZ's dims
    assert d["rhat"]["x"] < 1.01 and d["rhat"]["chain"] > 1.3 and d["max_rhat"] == d["rhat"]["chain"]


# ------------------------------------------------------------------ seeding and the caller's state
@ppl.model
def with_param(x):
    scale = ppl.param("scale", torch.tensor(1.0, dtype=torch.float64), constraint=dist.constraints.positive)
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 3.0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu, scale), obs=x)


def test_same_seed_same_draws_and_the_callers_state_is_kept():
    graph = ppl.compile(with_param, {"x": X_NN})
    ppl.analyze(graph)  # the analysis is cached on the graph (its own seeded probes are not under test here)
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    store = pyro.get_param_store()
    params = {k: store[k].detach().clone() for k in store.keys()}  # compiling traced ppl.param "scale"
    run = dict(num_chains=2, warmup_steps=20, num_samples=15, seed=7)
    a = nuts(graph, None, **run)
    b = nuts(graph, None, **run)
    assert torch.equal(a.draws("mu"), b.draws("mu"))
    assert not torch.equal(a.draws("mu")[0], a.draws("mu")[1])  # chains seeded apart
    assert random.getstate() == before[0]
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    assert set(store.keys()) == set(params) and all(torch.equal(store[k], v) for k, v in params.items())
    pyro.clear_param_store()
    nuts(graph, None, num_chains=1, warmup_steps=5, num_samples=5)
    assert not list(store.keys())  # the run's ppl.param("scale") is not left behind
    assert "held at their current values" in a.diagnostics["routing"]["reason"]


def test_jit_that_fails_to_trace_falls_back_with_a_note(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("tracing refused by the test")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    post = nuts(normal_mean, {"x": X_NN}, num_chains=2, warmup_steps=10, num_samples=10, seed=0, jit_compile=True)
    assert post.diagnostics["jit_compile"] is False
    assert "tracing the potential failed" in post.diagnostics["notes"][0]
    assert post.draws("mu").shape == (2, 10)


@ppl.model
def walled(x):
    s = ppl.sample("s", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    ppl.factor("wall", torch.where(s > 100.0, torch.tensor(0.0, dtype=torch.float64),
                                   torch.tensor(-math.inf, dtype=torch.float64)))  # no density where s can start
    ppl.sample("obs", dist.Normal(s, 1.0), obs=x)


def test_a_model_without_a_starting_point_is_a_model_error():
    with pytest.raises(ppl.ModelError, match=r"NUTS could not run model 'walled' \(chain 0\).*initial.*init"):
        ppl.infer(walled, {"x": torch.tensor(0.0, dtype=torch.float64)}, method="nuts", num_chains=1,
                  warmup_steps=5, num_samples=5, **QUIET)


def test_chains_in_worker_processes_give_the_draws_of_chains_in_turn():
    from ppl.backends.common.processes import fork_problem

    run = dict(num_chains=2, warmup_steps=30, num_samples=20, seed=5)
    a = nuts(normal_mean, {"x": X_NN}, parallel=True, **run)
    b = nuts(normal_mean, {"x": X_NN}, parallel=False, **run)
    assert a.diagnostics["parallel"] is (fork_problem(torch.device("cpu"), 2) is None)
    assert b.diagnostics["parallel"] is False
    assert torch.equal(a.draws("mu"), b.draws("mu"))
    assert a.diagnostics["step_size"] == b.diagnostics["step_size"]


def test_a_failing_chain_in_a_worker_process_is_the_same_model_error():
    with pytest.raises(ppl.ModelError, match=r"NUTS could not run model 'walled' \(chain 0\).*initial.*init"):
        ppl.infer(walled, {"x": torch.tensor(0.0, dtype=torch.float64)}, method="nuts", num_chains=2,
                  warmup_steps=5, num_samples=5, parallel=True, **QUIET)


# ------------------------------------------------------------------ applicability and options
@ppl.model
def coins(x):
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.3, dtype=torch.float64)))
        ppl.sample("obs", dist.Normal(z * 2.0, 1.0), obs=x)


def test_check_refuses_an_all_discrete_model():
    a = ppl.analyze(coins, {"x": X_NN[:5]})
    ok, why = a.backends["nuts"]
    assert not ok and why == "no continuous latent to sample: use method='exact'"
    with pytest.raises(ppl.UnsupportedModelError, match="no continuous latent to sample"):
        ppl.infer(coins, {"x": X_NN[:5]}, method="nuts")


def test_analyze_shows_the_nuts_verdict_line():
    a = ppl.analyze(mixture, {"y": Y_MIX})
    ok, why = a.backends["nuts"]
    assert ok and "1 continuous latent(s) (loc)" in why and "1 discrete latent(s) summed out" in why
    assert any(line.split()[:2] == ["nuts", "applies"] for line in str(a).splitlines())
    table = ppl.methods("nuts")["nuts"]
    assert table["rank"] == 80
    assert [r[0] for r in table["options"]][:9] == ["num_samples", "warmup_steps", "num_chains", "parallel",
                                                    "target_accept_prob", "max_tree_depth", "full_mass",
                                                    "jit_compile", "init"]


@pytest.mark.parametrize("option,value", [("target_accept_prob", 1.0), ("target_accept_prob", 0), ("num_chains", 0),
                                          ("init", "feasible"), ("jit_compile", 1), ("max_tree_depth", 2.5)])
def test_option_values_refused(option, value):
    with pytest.raises(ppl.OptionError, match=rf"option {option}="):
        ppl.infer(normal_mean, {"x": X_NN}, method="nuts", **{option: value})


@pytest.mark.slow
def test_default_run_is_reliable_on_the_gamma_poisson_rate():
    post = ppl.infer(gamma_poisson, {"x": COUNTS}, method="nuts", seed=0, **QUIET)
    a, b = A0 + float(COUNTS.sum()), B0 + len(COUNTS)
    assert post.trust.verdict == "reliable", str(post.trust)
    assert post.draws("rate").shape == (4, 1000)
    assert abs(float(post.mean("rate")) - a / b) < mcse_bound(post.draws("rate"))
    assert float(special.gammaincc(a, b * float(post.quantile("rate", 0.5)))) == pytest.approx(0.5, abs=0.03)


# ------------------------------------------------------------------ the time limit
def test_a_run_cut_at_max_seconds_keeps_its_draws_and_is_unreliable():
    post = nuts(normal_mean, {"x": X_NN}, num_chains=2, warmup_steps=50, num_samples=200_000, seed=3,
                max_seconds=4.0, parallel=False, jit_compile=False)
    draws = post.draws("mu")
    assert draws.shape[0] == 2 and 4 <= draws.shape[1] < 200_000  # both chains cut to the same length
    assert post.trust.verdict == "unreliable" and "time limit" in post.trust.reasons[0]
    assert "max_seconds=4" in post.diagnostics["stopped"]
    mean, sd = normal_mean_exact()
    assert abs(float(post.mean("mu")) - mean) < 6 * sd / math.sqrt(draws.shape[1])  # the draws kept are draws


def test_a_run_cut_in_its_warmup_is_a_numerical_error():
    with pytest.raises(ppl.errors.NumericalError, match="time limit .* in its warmup"):
        nuts(normal_mean, {"x": X_NN}, num_chains=2, warmup_steps=100_000, num_samples=10, seed=3,
             max_seconds=1.0, parallel=False, jit_compile=False)
