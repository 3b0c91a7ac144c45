"""Non-centred hierarchies (``noncentred=True`` in ChEES, auto's second ChEES run): a Normal
latent whose scale is another latent is sampled as ``loc + scale · z``
(``ppl.backends.common.unconstrained``).  References: the change-of-variables density
written out with scipy, and eight schools' posterior from the reference file (a long NUTS
run of the hand-written non-centred model, tests/make_reference_posteriors.py)."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import ppl
import pyro.distributions as dist
from ppl.backends.common.potential import Potential
from ppl.backends.common.unconstrained import noncentrable_sites

F = torch.float64
FIXTURES = Path(__file__).parent / "fixtures"
Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=F)
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=F)


@ppl.model
def schools_centred(y, sigma):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=F)))
    with ppl.plate("schools", len(y)):
        theta = ppl.sample("theta", dist.Normal(mu, tau))
        ppl.sample("y", dist.Normal(theta, sigma), obs=y)


@ppl.model
def fixed_scale(y):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 5.0))
    with ppl.plate("g", len(y)):
        theta = ppl.sample("theta", dist.Normal(mu, 2.0))
        ppl.sample("y", dist.Normal(theta, 1.0), obs=y)


@ppl.model
def discrete_scale(y):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
    z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.5, dtype=F)))
    with ppl.plate("g", len(y)):
        theta = ppl.sample("theta", dist.Normal(mu, torch.tensor([0.5, 2.0], dtype=F)[z.long()]))
        ppl.sample("y", dist.Normal(theta, 1.0), obs=y)


def test_the_sites_to_non_centre_are_normals_with_a_latent_scale():
    assert noncentrable_sites(ppl.compile(schools_centred, {"y": Y, "sigma": SIGMA})) == ["theta"]
    assert noncentrable_sites(ppl.compile(fixed_scale, {"y": Y})) == []
    # a scale chosen by a summed-out discrete latent stays centred (one value per point, not per state)
    assert noncentrable_sites(ppl.compile(discrete_scale, {"y": Y[:3]})) == []


def test_the_non_centred_density_is_the_change_of_variables():
    """At z = (mu, log tau, u_1..u_8): log N(mu; 0, 5) + log HalfCauchy(tau; 5) + log tau
    + Σ log N(u; 0, 1) + Σ log N(y; mu + tau u, sigma), written with scipy."""
    graph = ppl.compile(schools_centred, {"y": Y, "sigma": SIGMA})
    pot = Potential(graph, torch.device("cpu"), F, ppl.analyze(schools_centred, {"y": Y, "sigma": SIGMA}),
                    noncentred=["theta"])
    g = np.random.default_rng(0)
    for _ in range(3):
        mu, log_tau, u = g.normal(0, 3), g.normal(1, 1), g.normal(0, 1, 8)
        z = torch.tensor(np.concatenate([[mu, log_tau], u]), dtype=F)
        tau = np.exp(log_tau)
        expected = (stats.norm.logpdf(mu, 0, 5) + stats.halfcauchy.logpdf(tau, scale=5) + log_tau
                    + stats.norm.logpdf(u).sum() + stats.norm.logpdf(Y.numpy(), mu + tau * u, SIGMA.numpy()).sum())
        assert float(pot.log_density(z)) == pytest.approx(expected, rel=1e-10)
        values = pot.constrain(z)
        assert torch.allclose(values["theta"], torch.tensor(mu + tau * u, dtype=F))
        assert torch.allclose(pot.unconstrain(values), z)


def test_chees_non_centred_on_centred_eight_schools_matches_the_reference():
    ref = json.loads((FIXTURES / "reference_posteriors.json").read_text())["eight_schools"]["sites"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(schools_centred, {"y": Y, "sigma": SIGMA}, method="chees", noncentred=True, seed=0)
    assert post.diagnostics["noncentred"] == ["theta"]
    assert post.draws("theta").shape[-1] == 8       # the draws are of the model's own site
    for site in ("mu", "tau"):
        m, s = float(post.mean(site)), float(post.variance(site)) ** 0.5
        assert abs(m - ref[site]["mean"][0]) / ref[site]["sd"][0] < 0.1
        assert 0.9 < s / ref[site]["sd"][0] < 1.1
    assert post.diagnostics["divergences"] == 0


@pytest.mark.slow
def test_nuts_non_centred_on_centred_eight_schools_matches_the_reference():
    ref = json.loads((FIXTURES / "reference_posteriors.json").read_text())["eight_schools"]["sites"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(schools_centred, {"y": Y, "sigma": SIGMA}, method="nuts", noncentred=True, seed=0,
                         num_chains=2, warmup_steps=300, num_samples=500, target_accept_prob=0.9)
    assert post.diagnostics["noncentred"] == ["theta"]
    for site in ("mu", "tau"):
        m, s = float(post.mean(site)), float(post.variance(site)) ** 0.5
        assert abs(m - ref[site]["mean"][0]) / ref[site]["sd"][0] < 0.15
        assert 0.85 < s / ref[site]["sd"][0] < 1.15


def test_auto_plans_non_centred_runs_only_for_a_hierarchy():
    from ppl.backends.registry import get_backend

    hier = ppl.analyze(schools_centred, {"y": Y, "sigma": SIGMA})
    flat = ppl.analyze(fixed_scale, {"y": Y})
    assert all(v.get("noncentred") for v in get_backend("nuts").auto_variants(hier))
    assert not any(v.get("noncentred") for v in get_backend("nuts").auto_variants(flat))


@pytest.mark.slow
def test_auto_on_the_smoking_meta_analysis_is_right_and_reliable():
    """statsmodels' china_smoking data, the model as a user writes it (centred): auto's
    centred ChEES run had 19 divergences and R-hat 1.06 for tau; the non-centred run is
    reliable.  Reference: tests/make_smoking_reference.py (plain Pyro NUTS, non-centred)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from make_smoking_reference import smoking_data

    @ppl.model
    def smoking(n1, k1, n0, k0):
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 2.0))
        tau = ppl.sample("tau", dist.HalfNormal(torch.tensor(1.0, dtype=F)))
        with ppl.plate("city", n1.shape[0]):
            base = ppl.sample("base", dist.Normal(torch.tensor(0.0, dtype=F), 2.0))
            lor = ppl.sample("lor", dist.Normal(mu, tau))
            ppl.sample("k1", dist.Binomial(n1, logits=base + lor), obs=k1)
            ppl.sample("k0", dist.Binomial(n0, logits=base), obs=k0)

    ref = json.loads((FIXTURES / "smoking_reference.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(smoking, smoking_data(), seed=0)
    assert post.method == "chees" and post.trust.verdict == "reliable"
    assert post.diagnostics["noncentred"] == ["lor"]
    for site, (mean, sd) in ref.items():
        got = np.atleast_1d(post.mean(site).numpy())
        got_sd = np.sqrt(np.atleast_1d(post.variance(site).numpy()))
        assert np.all(np.abs(got - np.array(mean)) / np.array(sd) < 0.15), site
        assert np.all(np.abs(got_sd / np.array(sd) - 1) < 0.1), site


def test_finding_the_sites_leaves_global_state_as_it_was():
    """The two prior runs behind noncentrable_sites must not leave a ppl.param in Pyro's
    global store nor move the global RNGs (they ran the model with the global store)."""
    import random

    import pyro

    @ppl.model
    def with_param(y):
        s0 = ppl.param("s0_nc", torch.tensor(2.0, dtype=F), constraint=dist.constraints.positive)
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), s0))
        tau = ppl.sample("tau", dist.HalfNormal(torch.tensor(1.0, dtype=F)))
        with ppl.plate("g", len(y)):
            theta = ppl.sample("theta", dist.Normal(mu, tau))
            ppl.sample("y", dist.Normal(theta, 1.0), obs=y)

    graph = ppl.compile(with_param, {"y": Y[:4]})
    before = (torch.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate())
    assert noncentrable_sites(graph) == ["theta"]
    assert "s0_nc" not in pyro.get_param_store()
    assert torch.equal(before[0], torch.get_rng_state()) and (before[1] == np.random.get_state()[1]).all()
    assert before[2] == random.getstate()
