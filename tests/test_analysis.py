"""ppl.analyze: moral graph, components, elimination order and treewidth, plate-aware
cost, memory budget, chains, and the per-backend verdicts.

References: networkx's own ``moral_graph`` of the network's DAG and its treewidth
heuristics, treewidth lower bounds computed here (clique number, degeneracy,
minor-min-width), hand-derived table sizes, and brute-force answers.
"""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch
from networkx.algorithms.approximation import treewidth_min_degree, treewidth_min_fill_in
from pyro.ops.indexing import Vindex

import ppl
import ppl.distributions as dist
from ppl.backends import registry as _registry
from oracles import brute_force
from random_models import chain_model, dag_model

F64 = torch.float64


# ----------------------------------------------------------------- helpers
def bn_dag(bn) -> nx.DiGraph:
    d = nx.DiGraph()
    d.add_nodes_from(bn.nodes)
    for node, (parents, _) in bn.cpds.items():
        d.add_edges_from((p, node) for p in parents)
    return d


def edge_set(g):
    return {frozenset(e) for e in g.edges()}


def minor_min_width(g: nx.Graph) -> int:
    """Treewidth lower bound (Gogate & Dechter 2004): repeatedly contract a min-degree
    vertex into its min-degree neighbour; the largest min degree seen bounds treewidth."""
    g = nx.Graph(g)
    lb = 0
    while g.number_of_nodes() > 1:
        v = min(g.nodes, key=g.degree)
        d = g.degree(v)
        lb = max(lb, d)
        if d == 0:
            g.remove_node(v)
            continue
        u = min(g[v], key=g.degree)
        g = nx.contracted_nodes(g, u, v, self_loops=False)
    return lb


def treewidth_lower_bounds(g: nx.Graph) -> dict:
    return {
        "clique_number_minus_1": max(len(c) for c in nx.find_cliques(g)) - 1,
        "degeneracy": max(nx.core_number(g).values()),
        "minor_min_width": minor_min_width(g),
    }


@pytest.fixture(scope="module")
def alarm():
    return ppl.models.example_network("alarm")


@pytest.fixture(scope="module")
def asia():
    return ppl.models.example_network("asia")


ALARM_EVIDENCE = {"HR": 0, "BP": 1, "CO": 2, "SAO2": 1}
ASIA_EVIDENCE = {"xray": 0, "dysp": 1}


class BruteForceBackend(ppl.Backend):
    """Applies to everything: a stand-in for "another method" in messages."""

    name = "test_other"
    summary = "test stand-in"
    options = {}

    def check(self, analysis):
        from ppl.backends.base import Applicability

        return Applicability(True, "always (test stand-in)")

    def run(self, graph, analysis, **options):  # pragma: no cover - never run here
        raise NotImplementedError


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made in a test vanish after it."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))


# ----------------------------------------------------------------- moral graph
@pytest.mark.parametrize("name,evidence", [("asia", {}), ("asia", ASIA_EVIDENCE),
                                           ("alarm", {}), ("alarm", ALARM_EVIDENCE)])
def test_moral_graph_equals_networkx_moralisation(name, evidence, alarm, asia):
    bn = {"asia": asia, "alarm": alarm}[name]
    a = ppl.analyze(bn, evidence)
    reference = nx.moral_graph(bn_dag(bn))
    reference.remove_nodes_from(evidence)
    assert set(a.moral.nodes) == set(reference.nodes)
    assert edge_set(a.moral) == edge_set(reference)
    assert sorted(a.discrete) == sorted(reference.nodes) and a.continuous == []


def test_connected_components():
    @ppl.model
    def two_parts():
        a = ppl.sample("a", dist.Bernoulli(0.5))
        ppl.sample("b", dist.Bernoulli(0.2 + 0.6 * a))
        c = ppl.sample("c", dist.Bernoulli(0.3))
        d = ppl.sample("d", dist.Bernoulli(0.1 + 0.8 * c))
        ppl.sample("e", dist.Bernoulli(0.4 + 0.2 * d), obs=torch.tensor(1.0))
        ppl.sample("f", dist.Bernoulli(0.5))

    a = ppl.analyze(two_parts)
    expected = nx.Graph([("a", "b"), ("c", "d")])
    expected.add_node("f")
    assert sorted(map(sorted, a.components)) == sorted(map(sorted, nx.connected_components(expected)))
    assert edge_set(a.moral) == edge_set(expected)
    assert "3 connected component" in str(a)


def test_observed_child_marries_its_parents():
    @ppl.model
    def v_structure():
        a = ppl.sample("a", dist.Bernoulli(0.5))
        b = ppl.sample("b", dist.Bernoulli(0.5))
        ppl.sample("c", dist.Bernoulli(0.1 + 0.4 * a + 0.4 * b))

    assert edge_set(ppl.analyze(v_structure).moral) == {frozenset("ac"), frozenset("bc"), frozenset("ab")}
    assert edge_set(ppl.analyze(v_structure, {"c": 1.0}).moral) == {frozenset("ab")}


# ----------------------------------------------------------------- treewidth
def test_alarm_treewidth_bounds(alarm):
    a = ppl.analyze(alarm)
    moral = nx.moral_graph(bn_dag(alarm))
    lower = treewidth_lower_bounds(moral)
    assert all(a.treewidth >= lb for lb in lower.values()), (a.treewidth, lower)
    # the lower bounds meet the upper bound: ALARM's moral graph has treewidth exactly 4
    assert a.treewidth == max(lower.values()) == 4
    nx_width, _ = treewidth_min_fill_in(moral)
    assert a.treewidth == nx_width
    # largest_clique is the largest table by entries (documented), not necessarily the widest bucket
    assert len(a.largest_clique) - 1 <= a.treewidth
    assert a.clique_states == math.prod(alarm.cardinalities[v] for v in a.largest_clique)
    assert a.clique_bytes == a.clique_states * 8
    assert set(a.order) == set(alarm.nodes) and len(a.order) == len(alarm.nodes)
    md = ppl.analyze(alarm, heuristic="min_degree")
    assert md.heuristic == "min_degree"
    assert md.treewidth == treewidth_min_degree(moral)[0]
    assert md.treewidth >= max(lower.values())


def test_unknown_heuristic(asia):
    with pytest.raises(ValueError, match="min_fill"):
        ppl.analyze(asia, heuristic="nope")


@pytest.mark.parametrize("seed", [0, 1])
def test_min_degree_and_min_fill_give_the_same_answers(seed):
    model_fn, data = dag_model(seed, n=8, n_obs=2)
    m = ppl.model(model_fn)
    fill = ppl.infer(m, data, method="exact", heuristic="min_fill")
    degree = ppl.infer(m, data, method="exact", heuristic="min_degree")
    oracle = brute_force(model_fn, {}, data)
    assert fill.log_evidence == pytest.approx(oracle.log_evidence, abs=1e-10)
    assert degree.log_evidence == pytest.approx(oracle.log_evidence, abs=1e-10)
    for site in fill.sites:
        assert torch.allclose(fill.probs(site), degree.probs(site), atol=1e-12)


def test_min_degree_and_min_fill_on_alarm(alarm):
    fill = ppl.infer(alarm, ALARM_EVIDENCE, method="exact")
    degree = ppl.infer(alarm, ALARM_EVIDENCE, method="exact", heuristic="min_degree")
    assert fill.log_evidence == pytest.approx(degree.log_evidence, abs=1e-12)


# ----------------------------------------------------------------- plate-aware cost
W2 = torch.tensor([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]], dtype=F64)  # p(z | c), C=3, K=2
E2 = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5]], dtype=F64)  # p(obs | z)


@ppl.model
def global_local(x):
    c = ppl.sample("c", dist.Categorical(torch.ones(3, dtype=F64) / 3))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(Vindex(W2)[c]))
        ppl.sample("obs", dist.Categorical(Vindex(E2)[z]), obs=x)


def test_plate_aware_cost_scales_with_copies():
    small = ppl.analyze(global_local, {"x": torch.zeros(5, dtype=torch.long)})
    large = ppl.analyze(global_local, {"x": torch.zeros(10, dtype=torch.long)})
    # one copy of the largest table: (c, z) = 3 x 2 states, whatever N is
    assert small.clique_states == large.clique_states == 6
    assert set(small.largest_clique) == {"c", "z"}
    assert small.cost.clique_plates == ("data",)
    assert large.clique_bytes == 2 * small.clique_bytes
    assert small.clique_bytes == 5 * 6 * 8  # N copies x states x float64
    assert small.treewidth == large.treewidth == 1
    # the brute-force state space is plate-unrolled: 3 * 2^N
    assert small.log10_states == pytest.approx(math.log10(3 * 2**5))
    assert large.log10_states == pytest.approx(math.log10(3 * 2**10))
    f32 = ppl.analyze(global_local, {"x": torch.zeros(5, dtype=torch.long)}, dtype=torch.float32)
    assert f32.clique_bytes * 2 == small.clique_bytes


def test_memory_budget_raises_intractable(isolated_registry):
    ppl.register_backend(BruteForceBackend())
    data = {"x": torch.zeros(5, dtype=torch.long)}
    a = ppl.analyze(global_local, data)
    budget = a.clique_bytes - 1
    with pytest.raises(ppl.IntractableError) as info:
        ppl.infer(global_local, data, method="exact", memory_budget=budget)
    err = info.value
    assert isinstance(err, ppl.PPLError)
    assert err.treewidth == a.treewidth == 1
    assert err.clique_states == a.clique_states == 6
    assert err.bytes == a.clique_bytes == 240
    assert err.budget == budget
    assert "test_other" in str(err)  # the method that does apply is listed
    assert ppl.analyze(global_local, data, memory_budget=budget).backends["exact"][0] is False
    # exactly at the budget it runs
    post = ppl.infer(global_local, data, method="exact", memory_budget=a.clique_bytes)
    assert post.log_evidence is not None


def test_exact_on_continuous_latent():
    @ppl.model
    def cont(x):
        mu = ppl.sample("mu_site", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
        c = ppl.sample("c", dist.Bernoulli(torch.tensor(0.5, dtype=F64)))
        ppl.sample("obs", dist.Normal(mu + c, 1.0), obs=x)

    data = {"x": torch.tensor(0.3, dtype=F64)}
    with pytest.raises(ppl.UnsupportedModelError, match="mu_site"):
        ppl.infer(cont, data, method="exact")
    a = ppl.analyze(cont, data)
    assert a.continuous == ["mu_site"] and a.discrete == ["c"]
    ok, why = a.backends["exact"]
    assert ok is False and "mu_site" in why


def test_plate_crossing_model_is_unsupported_for_exact():
    @ppl.model
    def crossing(x):
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
        # outside the plate, depending on every copy of z
        ppl.sample("total", dist.Normal(z.sum(-1), 1.0), obs=x.sum())

    data = {"x": torch.ones(4, dtype=F64)}
    a = ppl.analyze(crossing, data)
    assert a.backends["exact"][0] is False
    assert not a.exact_fits
    with pytest.raises(ppl.UnsupportedModelError, match="'z'"):
        ppl.infer(crossing, data, method="exact")


# ----------------------------------------------------------------- chains
def test_markov_chain_is_detected():
    model_fn, data = chain_model(0, T=30, K=3, V=3)
    a = ppl.analyze(ppl.model(model_fn), data)
    assert len(a.chains) == 1
    chain = a.chains[0]
    names = [f"x_{t}" for t in range(30)]
    assert list(chain.vars) in (names, names[::-1])
    assert chain.cardinality == 3 and chain.plates == ()
    assert a.treewidth == 1
    assert "chain" in str(a)


# ----------------------------------------------------------------- the printed report
def test_printed_report(alarm, capsys):
    a = ppl.analyze(alarm, ALARM_EVIDENCE)
    print(a)
    out = capsys.readouterr().out
    assert "treewidth" in out
    assert "exact" in out and "applies" in out
    assert "alarm" in out
    assert str(a.treewidth) in out
    # every registered backend has a verdict
    assert set(a.backends) == set(ppl.registered_backends())
    for name, (ok, why) in a.backends.items():
        assert isinstance(ok, bool) and isinstance(why, str) and why
