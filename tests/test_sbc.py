"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018): for
parameters drawn from the prior and data simulated from them, the rank of the true value
among posterior draws is uniform when the posterior is right.  A reference that shares no
code with the methods: the prior and the simulator are the test's own.

Slow (many fits): ``pytest -m slow tests/test_sbc.py``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import ppl
import ppl.distributions as dist

F64 = torch.float64
N_OBS = 8


@ppl.model
def gamma_poisson(x):
    rate = ppl.sample("rate", dist.Gamma(torch.tensor(3.0, dtype=F64), 1.0))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Poisson(rate), obs=x)


@ppl.model
def normal_scale(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 2.0))
    sigma = ppl.sample("sigma", dist.LogNormal(torch.tensor(0.0, dtype=F64), 0.5))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Normal(mu, sigma), obs=x)


def _simulate(name, rng):
    if name == "gamma_poisson":
        rate = rng.gamma(3.0, 1.0)
        return {"rate": torch.tensor(rate, dtype=F64)}, {"x": torch.tensor(rng.poisson(rate, N_OBS), dtype=F64)}
    mu, sigma = 2.0 * rng.normal(), math.exp(0.5 * rng.normal())
    x = mu + sigma * rng.normal(size=N_OBS)
    return {"mu": torch.tensor(mu, dtype=F64), "sigma": torch.tensor(sigma, dtype=F64)}, {"x": torch.tensor(x)}


MODELS = {"gamma_poisson": gamma_poisson, "normal_scale": normal_scale}


def _ranks(name, method, reps, draws, **options):
    rng = np.random.default_rng(1234)
    ranks = {}
    for r in range(reps):
        truth, data = _simulate(name, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post = ppl.infer(MODELS[name], data, method=method, seed=r, **options)
        sample = post.sample(draws, seed=r)
        for site, value in truth.items():
            ranks.setdefault(site, []).append(int((sample[site].reshape(-1) < value).sum()))
    return ranks


def _uniform(ranks, draws, bins=5, alpha=1e-3):
    """Chi-square test of the ranks' uniformity over ``bins`` equal bins of 0..draws."""
    counts = np.histogram(ranks, bins=bins, range=(0, draws + 1))[0]
    expected = len(ranks) / bins
    stat = float(((counts - expected) ** 2 / expected).sum())
    from scipy.stats import chi2

    return chi2.sf(stat, bins - 1) > alpha, counts


CASES = [
    ("gamma_poisson", "laplace", {}),
    ("gamma_poisson", "pathfinder", {"num_paths": 2, "num_draws": 200}),
    ("gamma_poisson", "svi", {"num_steps": 1500, "lr": 0.05}),
    ("normal_scale", "laplace", {}),
    ("normal_scale", "pathfinder", {"num_paths": 2, "num_draws": 200}),
    ("gamma_poisson", "cavi", {}),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,method,options", CASES, ids=[f"{n}-{m}" for n, m, _ in CASES])
def test_ranks_are_uniform(name, method, options):
    draws = 49
    ranks = _ranks(name, method, reps=100, draws=draws, **options)
    for site, r in ranks.items():
        ok, counts = _uniform(r, draws)
        assert ok, f"{method} on {name}: ranks of {site} not uniform: {counts.tolist()}"


def test_the_uniformity_test_can_fail():
    """A posterior that is too narrow (draws from the truth's neighbourhood at a tenth of the
    spread) gives U-shaped ranks, which the test rejects: it has the power it needs."""
    rng = np.random.default_rng(0)
    ranks = []
    for _ in range(100):
        truth = rng.normal()
        draws = rng.normal(truth + rng.normal() * 1.0, 0.1, size=49)
        ranks.append(int((draws < truth).sum()))
    assert not _uniform(ranks, 49)[0]
    assert math.isfinite(float(np.mean(ranks)))
