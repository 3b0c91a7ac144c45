"""Models that write latent- or param-dependent values into a tensor in place
(``locs[1] = mu + gap``, ``locs[1] += gap``) must give the same answer as the same model
written with ``torch.stack``: the write carries the dependence (the factor graph's edge,
the factor tables' θ) instead of silently freezing the values of the first run.

Reference: the ``torch.stack`` twin of each model (no in-place op), whose answers the
rest of the suite checks against closed forms and peers."""

import warnings

import pytest
import torch
import pyro.distributions as dist
from torch.distributions import constraints

import ppl

F = torch.float64


def _locs(a, b, style):
    if style == "stack":
        return torch.stack([a, a + b])
    if style == "setitem":
        locs = torch.zeros(2, dtype=F)
        locs[0] = a
        locs[1] = a + b
        return locs
    locs = torch.stack([a, a])  # "iadd": a write into a view of a stacked tensor
    locs[1] += b
    return locs


def _em_model(style):
    @ppl.model
    def mix(x):
        m = ppl.param("m", torch.tensor(-1.0, dtype=F))
        d = ppl.param("d", torch.tensor(0.5, dtype=F), constraint=constraints.positive)
        locs = _locs(m, d, style)
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F)))
            ppl.sample("x", dist.Normal(locs[z], 1.0), obs=x)
    return mix


def _latent_model(style):
    @ppl.model
    def mix(x):
        mu0 = ppl.sample("mu0", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
        gap = ppl.sample("gap", dist.HalfNormal(torch.tensor(10.0, dtype=F)))
        locs = _locs(mu0, gap, style)
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F)))
            ppl.sample("x", dist.Normal(locs[z], 1.0), obs=x)
    return mix


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return {"x": torch.cat([torch.randn(40, generator=g, dtype=F) - 2, torch.randn(40, generator=g, dtype=F) + 3])}


@pytest.mark.parametrize("style", ["setitem", "iadd"])
def test_em_follows_an_in_place_write(style, data):
    # before: EM saw constant tables, stayed at its initial values and said converged
    ref = ppl.infer(_em_model("stack"), data, method="em", seed=0)
    post = ppl.infer(_em_model(style), data, method="em", seed=0)
    assert abs(float(ref.params["m"]) + 2.09) < 0.05  # the stack twin moved from -1
    for k in ("m", "d"):
        assert torch.allclose(post.params[k], ref.params[k], atol=1e-6), k
    assert post.log_evidence == pytest.approx(ref.log_evidence, abs=1e-6)


@pytest.mark.parametrize("style", ["setitem", "iadd"])
def test_graph_has_the_written_edge(style, data):
    a = ppl.analyze(_latent_model(style), data)
    ref = ppl.analyze(_latent_model("stack"), data)
    edges = {frozenset(e) for e in a.graph.to_networkx().edges}
    assert edges == {frozenset(e) for e in ref.graph.to_networkx().edges}
    assert frozenset({"f:x", "gap"}) in edges or any("gap" in e and "f:x" in e for e in edges)


def test_laplace_follows_an_in_place_write(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the same num_draws for both: by default it follows how the density is evaluated
        # (the stack twin runs batched, the written tensor row by row)
        ref = ppl.infer(_latent_model("stack"), data, method="laplace", seed=0, num_draws=1000)
        post = ppl.infer(_latent_model("setitem"), data, method="laplace", seed=0, num_draws=1000)
    for k in ("mu0", "gap"):
        assert float(post.mean(k)) == pytest.approx(float(ref.mean(k)), abs=1e-3), k
    assert post.trust.verdict == ref.trust.verdict


BUFFER = torch.zeros(2, dtype=F)  # a module-level tensor the model below writes into


@ppl.model
def _writes_a_global(x):
    mu0 = ppl.sample("mu0", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
    BUFFER[0] = mu0
    BUFFER[1] = mu0 + 1.0
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F)))
        ppl.sample("x", dist.Normal(BUFFER[z], 1.0), obs=x)


def test_a_written_tensor_gets_its_class_back(data):
    a = ppl.analyze(_writes_a_global, data)  # the traced run (Tracked)
    from ppl.backends.common.potential import Potential
    with torch.no_grad():
        Potential(a.graph, torch.device("cpu"), F, a)  # the probe run (Probe)
    assert type(BUFFER) is torch.Tensor  # not left a Tracked or Probe for later runs
