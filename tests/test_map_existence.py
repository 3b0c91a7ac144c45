"""Whether a MAP exists is decided from the log joint along rays toward the support's
edges (``ppl.backends.common.existence``), not from how far an iterate travelled.

References: densities whose behaviour at the edge is known in closed form — a Gamma(a)
density grows like h^(a-1) at 0 (unbounded for a < 1), a Bernoulli likelihood on all-ones
data tends to its supremum 1 as p -> 1 (bounded), a real coefficient has no edge at all.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.distributions import constraints

import ppl
import ppl.distributions as dist
from ppl.backends.common.existence import PROBE_STEPS, _grows

F64 = torch.float64


def _map(model, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.errors.TrustWarning)
        return ppl.infer(model, data, method="map", **kw)


@ppl.model
def coin(x):
    p = ppl.param("p", torch.tensor(0.5, dtype=F64), constraint=constraints.unit_interval)
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Bernoulli(p), obs=x)


def test_a_bounded_edge_is_the_maximum():
    """All-ones data: the likelihood's supremum is at p = 1 and is finite (log 1 = 0)."""
    post = _map(coin, {"x": torch.ones(10, dtype=F64)}, learn_params=True)
    assert float(post.params["p"]) > 1 - 1e-6
    assert post.log_joint == pytest.approx(0.0, abs=1e-5)


@ppl.model
def regression(x, y):
    b = ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), 1e4))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(b * x, 1.0), obs=y)


def test_a_large_real_coefficient_is_no_edge():
    x = torch.linspace(0, 1, 20, dtype=F64)
    y = -700 * x + torch.sin(torch.arange(20, dtype=F64))
    post = _map(regression, {"x": x, "y": y})
    # the closed-form posterior mode of a Normal-Normal regression
    expected = float((x * y).sum() / ((x * x).sum() + 1e-8))
    assert float(post.map()["b"]) == pytest.approx(expected, rel=1e-6)


@ppl.model
def gamma_layer(x, shape):
    h = ppl.sample("h", dist.Gamma(shape, torch.tensor(1.0, dtype=F64)))
    ppl.sample("x", dist.Normal(h, 0.1), obs=x)


def test_an_unbounded_edge_behind_a_local_maximum_is_found():
    """Gamma(0.5) prior: p(h) ∝ h^-0.5 → ∞ at 0, while the likelihood at h = 0 is finite
    (e^-50): the interior peak near h = 1 is only a local maximum; there is no MAP."""
    with pytest.raises(ppl.NumericalError, match=r"grows without bound.*'h'.*local maximum"):
        _map(gamma_layer, {"x": torch.tensor(1.0, dtype=F64), "shape": torch.tensor(0.5, dtype=F64)})
    # with shape 2 the density vanishes at 0: the interior maximum is the MAP
    post = _map(gamma_layer, {"x": torch.tensor(1.0, dtype=F64), "shape": torch.tensor(2.0, dtype=F64)})
    # d/dh [log h - h - 50 (h - 1)^2] = 0  ->  1/h - 1 - 100 (h - 1) = 0
    h = float(post.map()["h"])
    assert 1 / h - 1 - 100 * (h - 1) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("f,unbounded", [
    (lambda t: 3.0 - math.exp(-t), False),          # exponential approach to a supremum
    (lambda t: 3.0 - 1.0 / (1.0 + t), False),       # polynomial approach
    (lambda t: 0.5 * t, True),                      # h^(a-1) at 0: linear in the free value
    (lambda t: math.log(1.0 + t), True),            # logarithmic growth is unbounded too
    (lambda t: -t, False),                          # falling away from the edge
])
def test_the_growth_rule(f, unbounded):
    values = [(f(t), 0.0) for t in PROBE_STEPS]
    assert (_grows(values) is not None) is unbounded


@ppl.model
def bimodal(x):
    m = ppl.sample("m", dist.Normal(torch.tensor(0.0, dtype=F64), 5.0))
    ppl.sample("x", dist.Normal(m ** 2, 0.5), obs=x)


def test_restarts_leave_a_stationary_point_that_is_not_the_mode():
    """x ~ N(m², 0.5) with x = 4: the prior mean m = 0 is a stationary point (a minimum
    along m), the modes are near m = ±2; restarts from prior draws find one."""
    stuck = _map(bimodal, {"x": torch.tensor(4.0, dtype=F64)}, seed=0)
    found = _map(bimodal, {"x": torch.tensor(4.0, dtype=F64)}, seed=0, n_init=6)
    m = abs(float(found.map()["m"]))
    # log p = -m²/50 - 2 (4 - m²)² + const: the mode solves -m/25 + 8 m (4 - m²) = 0 (Newton)
    def grad(v):
        return -v / 25.0 + 8.0 * v * (4.0 - v * v)
    root = 2.0
    for _ in range(50):
        root -= grad(root) / (-1 / 25.0 + 8.0 * (4.0 - 3 * root * root))
    assert m == pytest.approx(root, rel=1e-6)
    assert found.log_joint > stuck.log_joint + 10
    assert found.diagnostics["best_restart"] > 0 and len(found.diagnostics["restarts"]) == 6


@ppl.model
def beta_shape(y):
    a = ppl.sample("a", dist.Gamma(torch.tensor(2.0, dtype=F64), 1.0))
    with ppl.plate("n", len(y)):
        ppl.sample("y", dist.Beta(a, 2.0), obs=y)


def test_an_impossible_observation_is_named_not_a_support_edge():
    """Beta(a, 2) at y = 1 has density (1 - y) = 0 for every a: MAP used to say 'a' runs to
    the edge of its support; the error names the observation."""
    with pytest.raises(ppl.NumericalError, match="not finite at the optimiser's start, at observed site 'y'") as e:
        _map(beta_shape, {"y": torch.tensor([0.2, 0.5, 1.0], dtype=F64)})
    assert "edge of its support" not in str(e.value)
    # the possible data still has a mode
    assert math.isfinite(_map(beta_shape, {"y": torch.tensor([0.2, 0.5, 0.9], dtype=F64)}).log_joint)
