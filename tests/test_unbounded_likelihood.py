"""A learned scale whose likelihood has no maximum is never "reliable" (issue 15).

References that cannot share the bug, in closed form: with one data point the Normal
log-likelihood ``log N(x | μ, s) = -log s - (x - μ)²/(2s²) - log √(2π)`` has no maximum
over (μ, s) (at μ = x it grows like ``-log s`` as s -> 0); with n distinct points the ML
estimate is μ = x̄, s = the sample sd (divide by n), a proper maximum however small it is.
A mixture component sitting on one data point is the same singularity (Bishop 2006, PRML
§9.2.1).  The probes of ``ppl.backends.common.existence`` decide from the log-likelihood
along rays toward s = 0; EM's variance floor (``reg_covar``) and SVI's iterates only decide
where to look.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.distributions import constraints

import ppl
import ppl.distributions as dist
from ppl.backends.common.existence import profile_edges, unbounded_params

F64 = torch.float64


@ppl.model
def normal(x):
    mu = ppl.param("mu", torch.tensor(0.0, dtype=F64))
    s = ppl.param("s", torch.tensor(1.0, dtype=F64), constraint=constraints.positive)
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu, s), obs=x)


@ppl.model
def mixture(x, K=3):
    w = ppl.param("w", torch.ones(K, dtype=F64) / K, constraint=constraints.simplex)
    locs = ppl.param("locs", torch.linspace(-1.0, 1.0, K, dtype=F64))
    s = ppl.param("s", torch.ones(K, dtype=F64), constraint=constraints.positive)
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.Normal(locs[z], s[z]), obs=x)


def _infer(model, data, method, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = ppl.infer(model, data, method=method, **kw)
    trust = [w for w in caught if issubclass(w.category, ppl.errors.TrustWarning)]
    return post, trust


def _loglik(x):
    """The closed-form Normal log-likelihood of ``x`` at (mu, s)."""
    def f(v):
        mu, s = v["mu"], v["s"]
        return (-torch.log(s) - (x - mu) ** 2 / (2 * s ** 2) - 0.5 * math.log(2 * math.pi)).sum()
    return f


def _assert_unbounded(post, trust, name="s"):
    assert post.trust.verdict == "unreliable"
    reason = post.trust.reasons[0]
    assert f"param '{name}'" in reason and "unbounded" in reason
    assert "prior" in reason and "add data" in reason
    assert "PRML §9.2.1" in reason and "fewer components" in reason
    assert trust and "unbounded" in str(trust[0].message)


# ----------------------------------------------------------- the probes, on closed forms
def test_probe_one_point_is_unbounded_and_many_points_are_not():
    one = torch.tensor([0.3], dtype=F64)
    at = {"mu": torch.tensor(0.3, dtype=F64), "s": torch.tensor(1e-3, dtype=F64)}
    edges = unbounded_params(_loglik(one), at, {"mu": None, "s": constraints.positive})
    assert [e.name for e in edges] == ["s"] and edges[0].direction == -1
    assert edges[0].growth == pytest.approx(4.0, rel=1e-6)  # -log s over 4 free units toward 0
    g = torch.Generator().manual_seed(0)
    many = 0.01 * torch.randn(200, generator=g, dtype=F64)
    ml = {"mu": many.mean(), "s": many.std(unbiased=False)}
    assert unbounded_params(_loglik(many), ml, {"mu": None, "s": constraints.positive}) == []
    assert profile_edges(_loglik(many), ml, {"mu": None, "s": constraints.positive}) == []


def test_profile_follows_a_location_that_is_off_the_point():
    """A stopped optimiser leaves μ near x, not on it: along s alone the log-likelihood then
    falls (−(x−μ)²/2s² wins), but re-fitting μ at each s shows the growth −log s."""
    one = torch.tensor([0.3], dtype=F64)
    at = {"mu": torch.tensor(0.2999, dtype=F64), "s": torch.tensor(4e-4, dtype=F64)}
    cons = {"mu": None, "s": constraints.positive}
    assert unbounded_params(_loglik(one), at, cons) == []
    edges = profile_edges(_loglik(one), at, cons)
    assert [e.name for e in edges] == ["s"]
    assert edges[0].growth == pytest.approx(4.0, rel=1e-3)  # the profile -log s + c over 4 free units


# ------------------------------------------------------------------------------ EM
def test_em_one_data_point_is_unreliable():
    post, trust = _infer(normal, {"x": torch.tensor([0.3], dtype=F64)}, "em")
    # before the fix: s = 0.001 (sqrt(reg_covar)), log evidence 5.99, "reliable"
    assert float(post.params["s"]) == pytest.approx(1e-3, rel=1e-6)
    _assert_unbounded(post, trust)


def test_em_collapsed_mixture_component_is_unreliable():
    """N = 20, K = 3: one point far from the rest takes a component of its own, whose
    variance falls to the floor (Bishop 2006, PRML §9.2.1)."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(10, generator=g, dtype=F64) - 3, torch.randn(9, generator=g, dtype=F64) + 3,
                   torch.tensor([10.0], dtype=F64)])
    post, trust = _infer(mixture, {"x": x}, "em")
    s, locs = post.params["s"], post.params["locs"]
    k = int(s.argmin())
    assert float(s[k]) == pytest.approx(1e-3, rel=1e-6) and float(locs[k]) == 10.0
    _assert_unbounded(post, trust)
    assert f"(element {k})" in post.trust.reasons[0]


@ppl.model
def mixture2(x, K=3):
    w = ppl.param("w", torch.ones(K, dtype=F64) / K, constraint=constraints.simplex)
    locs = ppl.param("locs", torch.zeros(K, 2, dtype=F64))
    cov = ppl.param("cov", torch.eye(2, dtype=F64).repeat(K, 1, 1), constraint=constraints.positive_definite)
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.MultivariateNormal(locs[z], covariance_matrix=cov[z]), obs=x)


def test_em_collapsed_full_covariance_component_is_unreliable():
    """The same singularity in 2-D: a component on one point, its covariance reg_covar·I."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(10, 2, generator=g, dtype=F64) - 3, torch.randn(9, 2, generator=g, dtype=F64) + 3,
                   torch.tensor([[10.0, 10.0]], dtype=F64)])
    init = {"locs": torch.tensor([[-3.0, -3.0], [3.0, 3.0], [9.0, 9.0]], dtype=F64)}
    post, trust = _infer(mixture2, {"x": x}, "em", init=init)
    assert torch.equal(post.params["locs"][2], torch.tensor([10.0, 10.0], dtype=F64))
    assert torch.allclose(post.params["cov"][2], 1e-6 * torch.eye(2, dtype=F64))
    _assert_unbounded(post, trust, name="cov")


@pytest.mark.parametrize("sd", [0.01, 0.0007])
def test_em_small_scale_with_a_maximum_stays_reliable(sd):
    """200 points: the ML s is the sample sd (plus reg_covar in the variance); sd = 0.0007
    puts s² below twice the floor, so the probe runs and finds the maximum proper."""
    g = torch.Generator().manual_seed(1)
    x = sd * torch.randn(200, generator=g, dtype=F64)
    post, trust = _infer(normal, {"x": x}, "em")
    expected = math.sqrt(float(x.var(unbiased=False)) + 1e-6)
    assert float(post.params["s"]) == pytest.approx(expected, rel=1e-6)
    assert post.trust.verdict == "reliable" and not trust
    assert post.diagnostics["unbounded"] == []


# ----------------------------------------------------------------------------- SVI
def test_svi_one_data_point_is_unreliable_for_the_right_reason():
    post, trust = _infer(normal, {"x": torch.tensor([0.3], dtype=F64)}, "svi", num_steps=300, seed=0)
    assert float(post.params["s"]) < 0.5  # still shrinking
    _assert_unbounded(post, trust)


def test_svi_small_scale_with_a_maximum_stays_reliable():
    g = torch.Generator().manual_seed(2)
    x = 0.01 * torch.randn(200, generator=g, dtype=F64)
    post, trust = _infer(normal, {"x": x}, "svi", seed=0)
    assert post.trust.verdict == "reliable" and not trust
    assert post.diagnostics["unbounded"] == []
    assert float(post.params["s"]) == pytest.approx(float(x.std(unbiased=False)), rel=0.02)


def test_svi_mixture_on_one_data_point_is_a_typed_error_not_pyros_key_error():
    # Pyro's TraceEnum_ELBO.compute_marginals loses a plate of size 1 (KeyError inside pyro.ops.rings)
    with pytest.raises(ppl.UnsupportedModelError, match=r"compute_marginals failed on \['z'\].*method='em'"):
        ppl.infer(mixture, {"x": torch.tensor([0.3], dtype=F64)}, method="svi", num_steps=50, seed=0)
