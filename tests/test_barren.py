"""Barren-node removal in the sum-product pass, against brute-force enumeration."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

import ppl
from ppl.backends.common.discrete import discrete_plan

from oracles import brute_force

DT = torch.float64
PA = torch.tensor([0.3, 0.7], dtype=DT)
PB = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3]], dtype=DT)        # b | a
PC = torch.tensor([[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]], dtype=DT)        # c | b
PD = torch.tensor([[0.8, 0.2], [0.25, 0.75]], dtype=DT)                  # d | a
PE = torch.tensor([[[0.7, 0.3], [0.4, 0.6]], [[0.2, 0.8], [0.5, 0.5]]], dtype=DT)  # e | a, d


def network(scale_c=1.0):
    a = pyro.sample("a", dist.Categorical(PA))
    b = pyro.sample("b", dist.Categorical(Vindex(PB)[a]))           # barren: only c below, unobserved
    with pyro.poutine.scale(scale=scale_c):
        pyro.sample("c", dist.Categorical(Vindex(PC)[b]))           # barren leaf
    d = pyro.sample("d", dist.Categorical(Vindex(PD)[a]))
    pyro.sample("e", dist.Categorical(Vindex(PE)[a, d]))            # latent parents a and d (d observed below)


def _check(model_fn, evidence):
    oracle = brute_force(model_fn, {}, evidence)
    post = ppl.infer(ppl.model(model_fn), evidence, method="exact")
    assert post.log_evidence == pytest.approx(float(oracle.log_evidence), abs=1e-12)
    for site, probs in oracle.marginals.items():
        assert torch.allclose(post.probs(site), probs.to(DT), atol=1e-12), site
    return post


def test_barren_chain_pruned_and_propagated():
    evidence = {"d": torch.tensor(1)}
    post = _check(network, evidence)
    graph = post.graph
    plan = discrete_plan(graph, ppl.analyze(graph))
    # e's other parent d is observed, so e has one latent parent and is barren too
    assert set(plan.barren) == {("b", "a"), ("c", "b"), ("e", "a")}
    order = [v for v, _ in plan.barren]
    assert order.index("b") < order.index("c")  # forward order: a parent's marginal comes first
    assert "a" not in order  # a has an observed child
    # MAP and samples use the full plan: the MAP log joint is the brute-force max
    oracle = brute_force(network, {}, evidence)
    assert post.diagnostics["map_log_joint"] == pytest.approx(float(oracle.map_log_joint), abs=1e-12)


def test_scaled_leaf_is_not_pruned():
    def scaled():
        network(scale_c=2.0)

    post = _check(scaled, {"d": torch.tensor(0)})
    plan = discrete_plan(post.graph, ppl.analyze(post.graph))
    assert "c" not in {v for v, _ in plan.barren}
