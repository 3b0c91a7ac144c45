"""Heavy tails that PSIS k̂ cannot see: a Gaussian approximation whose draws never reach
the posterior's tail (the probe :func:`ppl.backends.common.importance.tail_mass`), and
sampler draws whose variance does not exist (:func:`ppl.trust.psis.draws_tail_khat`).

References that cannot share our bug: the tail shape of a distribution is known in closed
form (a Cauchy's Pareto shape is 1, a normal's 0), and the share of a Cauchy's mass beyond
a point is ``1 - 2 atan(x) / π``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.backends.common.importance import TAIL_MASS_LIMIT, VARIANCE_SHARE_LIMIT, tail_mass
from ppl.trust.psis import draws_tail_khat

F64 = torch.float64


@ppl.model
def cauchy():
    ppl.sample("x", dist.Cauchy(torch.tensor(0.0, dtype=F64), 1.0))


@ppl.model
def normal_mean(y):
    m = ppl.sample("m", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with ppl.plate("n", len(y)):
        ppl.sample("y", dist.Normal(m, 1.0), obs=y)


def test_draws_tail_khat_reads_known_tail_shapes():
    rng = np.random.default_rng(0)
    draws = np.stack([rng.standard_cauchy(4000), rng.normal(size=4000), rng.standard_t(3, 4000),
                      np.full(4000, 2.0)])
    k = draws_tail_khat(draws)
    assert k[0] > 0.7            # true shape 1
    assert abs(k[1]) < 0.2       # true shape 0
    assert 0.1 < k[2] < 0.6      # true shape 1/3
    assert math.isnan(k[3])      # constant draws: no tail


class _Line:
    """A stand-in potential: a 1-D log density evaluated row by row."""

    def __init__(self, log_density):
        self.f = log_density

    def log_density_batch(self, z, max_seconds=None):
        return self.f(z[:, 0].double())


def test_tail_mass_of_a_matched_gaussian_is_the_gaussian_share():
    z = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    mass, axis, sd, spread = tail_mass(_Line(lambda x: -0.5 * x ** 2), z)
    assert mass < 2e-4 and axis == 0 and abs(sd - 1) < 0.05   # 2 Φ(-4) = 6.3e-5 (grid and sd noise aside)
    # the variance beyond 4 sds: 2 (4 φ(4) + Φ(-4)) = 1.1e-3 of it (less on the probe's grid,
    # whose first point beyond 4 sds is 4.5)
    assert 0 < spread < 2.5e-3


def test_tail_mass_of_a_cauchy_under_a_unit_gaussian():
    z = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    mass, _, sd, spread = tail_mass(_Line(lambda x: -torch.log1p(x ** 2)), z)
    assert spread > 0.5 > VARIANCE_SHARE_LIMIT   # a truncated Cauchy's variance lies mostly in its tails
    # the Cauchy's share beyond 4 sd, counted up to 30 sd (the probe's grid); the trapezoid
    # rule gives the cell from 4 to 4.5 sd to the inside, so the share lies between these two
    def share(cut):
        return (math.atan(30 * sd) - math.atan(cut * sd)) / math.atan(30 * sd)

    assert share(4.5) * 0.95 < mass < share(4.0) * 1.05
    assert mass > TAIL_MASS_LIMIT


@pytest.mark.parametrize("method", ["laplace", "pathfinder"])
@pytest.mark.parametrize("seed", range(4))
def test_a_gaussian_approximation_of_a_cauchy_is_never_reliable(method, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(cauchy, {}, method=method, seed=seed)
    assert post.trust.verdict == "unreliable"
    assert post.trust.numbers["tail_mass"] > TAIL_MASS_LIMIT


def test_a_gaussian_posterior_passes_the_tail_probe():
    y = torch.tensor([0.3, -1.2, 0.8, 2.0], dtype=F64)
    for method in ("laplace", "pathfinder"):
        post = ppl.infer(normal_mean, {"y": y}, method=method, seed=0)
        assert post.trust.verdict == "reliable"
        assert post.trust.numbers["tail_mass"] < 1e-3
        # closed form: N(Σy / (n + 1), 1 / (n + 1))
        assert float(post.mean("m")) == pytest.approx(float(y.sum()) / 5, abs=0.05)


@pytest.mark.slow  # 35 s; the tail k-hat itself: test_draws_tail_khat_reads_known_tail_shapes
def test_nuts_on_a_cauchy_says_the_sd_does_not_settle():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(cauchy, {}, method="nuts", seed=0, num_samples=500, warmup_steps=300)
    assert post.trust.verdict == "unreliable"
    assert post.diagnostics["tail_khat"]["x"] >= 0.5
    assert any("tail so heavy" in r for r in post.trust.reasons)
    # its median is still estimated: the Cauchy's is 0
    assert abs(float(post.quantile("x", 0.5))) < 0.2


def test_nuts_on_a_normal_posterior_has_a_light_tail():
    y = torch.tensor([0.3, -1.2, 0.8, 2.0], dtype=F64)
    post = ppl.infer(normal_mean, {"y": y}, method="nuts", seed=0, num_samples=500, warmup_steps=300)
    assert post.diagnostics["tail_khat"]["m"] < 0.3
    assert not any("tail so heavy" in r for r in post.trust.reasons)
