"""Discrete latents summed out by Laplace, Pathfinder and NUTS are still answered:
``post.probs(z)`` is p(z | v), the exact conditionals p(z | θ, v) averaged over the draws
of θ.  Reference: brute force over every assignment of z with θ integrated out in closed
form (x = θ z + ε with θ ~ N(0, 1), ε ~ N(0, I) is N(0, I + z zᵀ) given z), which shares
no code with ppl."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

import ppl
import ppl.distributions as dist

F64 = torch.float64
X = torch.tensor([2.1, -0.3, 1.7, 0.2, 2.6, -1.1], dtype=F64)
PRIOR = 0.4


@ppl.model
def spikes(x):
    theta = ppl.sample("theta", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Bernoulli(torch.tensor(PRIOR, dtype=F64)))
        ppl.sample("x", dist.Normal(theta * z, 1.0), obs=x)


def _brute_force():
    n = len(X)
    logw, rows = [], []
    for bits in itertools.product([0.0, 1.0], repeat=n):
        z = torch.tensor(bits, dtype=F64)
        cov = torch.eye(n, dtype=F64) + torch.outer(z, z)
        lp = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=F64), cov).log_prob(X)
        lp = lp + (z * torch.log(torch.tensor(PRIOR, dtype=F64)) + (1 - z) * torch.log(torch.tensor(1 - PRIOR,
                                                                                                dtype=F64))).sum()
        logw.append(lp)
        rows.append(z)
    w = torch.stack(logw).softmax(0)
    return (w[:, None] * torch.stack(rows)).sum(0)          # p(z_i = 1 | x)


@pytest.mark.parametrize("method,options,tol", [
    ("laplace", {}, 0.04),
    ("pathfinder", {}, 0.04),
    ("nuts", {"num_chains": 2, "num_samples": 400, "warmup_steps": 300}, 0.04),
])
def test_summed_out_site_probabilities_match_brute_force(method, options, tol):
    exact = _brute_force()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(spikes, {"x": X}, method=method, seed=0, progress=False, **options)
    assert "z" in post.sites and "theta" in post.sites
    probs = post.probs("z")
    assert probs.shape == (len(X), 2)
    assert torch.allclose(probs.sum(-1), torch.ones(len(X), dtype=probs.dtype))
    assert torch.allclose(probs[:, 1], exact, atol=tol), (probs[:, 1], exact)
    assert torch.allclose(post.mean("z"), exact, atol=tol)
    assert isinstance(post.marginal("z"), torch.distributions.Bernoulli)
    with pytest.raises(ppl.DataError, match="continuous"):
        post.probs("theta")
