"""ppl.compile: variables (role, family, support, cardinality, shapes, plates), factor
scopes found by provenance, and the networkx view.

Expected structures are written down by hand from the model code in each test; on the
ALARM network they are the CPDs' own (node, parents) lists from the BIF file.
"""

from __future__ import annotations

import re

import networkx as nx
import pyro
import torch
from pyro.ops.indexing import Vindex

import ppl
import ppl.distributions as dist

F64 = torch.float64




def sprinkler():
    """cloudy -> sprinkler, cloudy -> rain, (sprinkler, rain) -> wet; season (3 states) -> rain."""
    return ppl.models.bayesian_network(
        {
            "cloudy": ([], [0.4, 0.6]),
            "season": ([], [0.2, 0.5, 0.3]),
            "sprinkler": (["cloudy"], [[0.5, 0.5], [0.9, 0.1]]),
            "rain": (["cloudy", "season"], [[[0.8, 0.2], [0.7, 0.3], [0.6, 0.4]],
                                            [[0.2, 0.8], [0.3, 0.7], [0.1, 0.9]]]),
            "wet": (["sprinkler", "rain"], [[[0.9, 0.1], [0.1, 0.9]], [[0.1, 0.9], [0.01, 0.99]]]),
        },
        name="sprinkler",
    )


SPRINKLER_SCOPES = {
    "cloudy": {"cloudy"},
    "season": {"season"},
    "sprinkler": {"cloudy", "sprinkler"},
    "rain": {"cloudy", "season", "rain"},
    "wet": {"sprinkler", "rain", "wet"},
}


def integer_bounds(support: str):
    return [int(n) for n in re.findall(r"-?\d+", support)]


# ----------------------------------------------------------------- small BN
def test_small_bn_variables_and_scopes():
    g = ppl.compile(sprinkler(), {"wet": 1})
    assert isinstance(g, ppl.FactorGraph)
    assert g.latent() == ["cloudy", "season", "sprinkler", "rain"]
    assert g.observed() == ["wet"]
    assert g.params() == []
    assert g.plates == {}
    cards = {"cloudy": 2, "season": 3, "sprinkler": 2, "rain": 2, "wet": 2}
    for name, card in cards.items():
        v = g.variables[name]
        assert v.cardinality == card
        assert v.discrete
        assert v.family == "Categorical"
        assert integer_bounds(v.support) == [0, card - 1], v.support
        assert v.event_shape == () and v.batch_shape == () and v.plates == ()
    assert g.variables["wet"].role == "observed"
    assert {n: set(f.scope) for n, f in g.factors.items()} == SPRINKLER_SCOPES
    for f in g.factors.values():
        assert f.family == "Categorical" and f.plates == ()
    assert g.discrete_latent() == g.latent() and g.continuous_latent() == []


def test_to_networkx_is_a_plain_bipartite_graph():
    g = ppl.compile(sprinkler(), {"wet": 1})
    G = g.to_networkx()
    assert type(G) is nx.Graph
    assert nx.is_bipartite(G)
    var_nodes = {n for n, d in G.nodes(data=True) if d["bipartite"] == 0}
    fac_nodes = {n for n, d in G.nodes(data=True) if d["bipartite"] == 1}
    assert var_nodes == set(SPRINKLER_SCOPES)
    assert fac_nodes == {"f:" + n for n in SPRINKLER_SCOPES}
    assert nx.bipartite.is_bipartite_node_set(G, var_nodes)
    for n in var_nodes:
        d = G.nodes[n]
        assert d["kind"] == "variable"
        assert d["role"] == ("observed" if n == "wet" else "latent")
        assert d["cardinality"] == (3 if n == "season" else 2)
    for n in fac_nodes:
        assert G.nodes[n]["kind"] == "factor"
        assert set(G.nodes[n]["scope"]) == SPRINKLER_SCOPES[n[2:]]
    expected_edges = {frozenset(("f:" + f, v)) for f, scope in SPRINKLER_SCOPES.items() for v in scope}
    assert {frozenset(e) for e in G.edges()} == expected_edges
    # a copy: editing it leaves the compiled graph alone
    G.remove_node("wet")
    assert "wet" in g.to_networkx()


def test_str_and_repr_name_the_sites():
    g = ppl.compile(sprinkler(), {"wet": 1})
    text = str(g)
    for name in SPRINKLER_SCOPES:
        assert name in text
    assert "latent" in text and "observed" in text
    assert "sprinkler" in repr(g)


# ----------------------------------------------------------------- mixture with plates
@ppl.model
def gmm(x, K=3):
    N, D = x.shape
    weights = ppl.sample("weights", dist.Dirichlet(torch.ones(K, dtype=F64)))
    with ppl.plate("components", K):
        loc = ppl.sample("loc", dist.Normal(torch.zeros(D, dtype=F64), 10.0).to_event(1))
    with ppl.plate("data", N):
        z = ppl.sample("z", dist.Categorical(weights))
        ppl.sample("obs", dist.Normal(loc[z], 1.0).to_event(1), obs=x)


def test_mixture_with_plates():
    N, D, K = 6, 2, 3
    g = ppl.compile(gmm, {"x": torch.randn(N, D, dtype=F64), "K": K})
    assert set(g.plates) == {"components", "data"}
    assert g.plates["components"].size == K and g.plates["data"].size == N
    assert g.plates["components"].dim == -1 and g.plates["data"].dim == -1

    w, loc, z, obs = (g.variables[n] for n in ("weights", "loc", "z", "obs"))
    assert (w.role, w.family, w.event_shape, w.plates, w.cardinality, w.discrete) == (
        "latent", "Dirichlet", (K,), (), None, False)
    assert "simplex" in w.support.lower()
    assert (loc.role, loc.family, loc.event_shape, loc.batch_shape, loc.plates) == (
        "latent", "Normal", (D,), (K,), ("components",))
    assert "real" in loc.support.lower()
    assert (z.role, z.family, z.cardinality, z.discrete, z.batch_shape, z.plates) == (
        "latent", "Categorical", K, True, (N,), ("data",))
    assert integer_bounds(z.support) == [0, K - 1]
    assert (obs.role, obs.event_shape, obs.batch_shape, obs.plates) == ("observed", (D,), (N,), ("data",))

    scopes = {n: set(f.scope) for n, f in g.factors.items()}
    assert scopes == {
        "weights": {"weights"},
        "loc": {"loc"},
        "z": {"weights", "z"},
        "obs": {"loc", "z", "obs"},
    }
    assert g.factors["z"].plates == ("data",) and g.factors["obs"].plates == ("data",)
    assert g.factors["loc"].plates == ("components",)
    assert g.discrete_latent() == ["z"]
    assert g.continuous_latent() == ["weights", "loc"]
    # the plated sites are single nodes (templates), not N copies
    assert g.to_networkx().number_of_nodes() == 4 + 4


def test_nested_plates_keep_their_order():
    @ppl.model
    def nested():
        with ppl.plate("groups", 2, dim=-1):
            g_ = ppl.sample("g", dist.Categorical(torch.tensor([0.5, 0.5])))
            with ppl.plate("items", 3, dim=-2):
                ppl.sample("u", dist.Categorical(Vindex(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))[g_]))

    g = ppl.compile(nested)
    assert g.variables["g"].plates == ("groups",)
    assert set(g.variables["u"].plates) == {"groups", "items"}
    assert g.variables["u"].batch_shape == (3, 2)
    assert g.plates["items"].dim == -2 and g.plates["items"].size == 3
    assert set(g.factors["u"].scope) == {"g", "u"}


# ----------------------------------------------------------------- param, deterministic, factor
@ppl.model
def mixed(x):
    theta = ppl.param("theta", torch.tensor([0.2, 0.8], dtype=F64), constraint=dist.constraints.simplex)
    a = ppl.sample("a", dist.Categorical(theta))
    s = ppl.deterministic("s", a * 2 + 1)  # b depends on a only through s
    table = torch.tensor([[0.5, 0.5], [0.1, 0.9], [0.3, 0.7], [0.2, 0.8]], dtype=F64)
    b = ppl.sample("b", dist.Categorical(Vindex(table)[s]))
    c = ppl.sample("c", dist.Bernoulli(torch.tensor(0.4, dtype=F64)))
    ppl.factor("f", torch.where(b > 0, 0.0, -1.0).to(F64) + c)
    m = ppl.sample("m", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(b.to(F64) + m * c, 1.0), obs=x)


def test_param_deterministic_and_factor_sites():
    g = ppl.compile(mixed, {"x": torch.zeros(3, dtype=F64)})
    assert g.params() == ["theta"]
    assert g.variables["theta"].role == "param"
    assert set(g.latent()) == {"a", "b", "c", "m"}
    assert g.observed() == ["obs"]
    assert g.continuous_latent() == ["m"]
    # factor scopes, hand-read from the code
    assert set(g.factors["a"].scope) == {"theta", "a"}
    assert set(g.factors["b"].scope) - {"s"} == {"a", "b"}  # through the deterministic site
    assert set(g.factors["c"].scope) == {"c"}
    assert set(g.factors["f"].scope) == {"b", "c"}
    assert set(g.factors["obs"].scope) == {"b", "m", "c", "obs"}
    assert g.factors["f"].family == "factor"
    assert "f" not in g.variables  # a ppl.factor term is a factor, not a variable
    assert g.factors["obs"].plates == ("data",)
    # every factor node of the networkx view is joined exactly to its scope
    G = g.to_networkx()
    assert nx.is_bipartite(G)
    for name, f in g.factors.items():
        assert set(G["f:" + name]) == set(f.scope)


def test_provenance_ignores_values_that_do_not_flow():
    @ppl.model
    def m():
        a = ppl.sample("a", dist.Bernoulli(0.5))
        b = ppl.sample("b", dist.Bernoulli(0.5))
        _unused = a + b  # computed, but feeds no distribution
        ppl.sample("c", dist.Bernoulli(0.25 + 0.5 * a))

    g = ppl.compile(m)
    assert set(g.factors["c"].scope) == {"a", "c"}
    assert set(g.factors["b"].scope) == {"b"}


def test_compile_accepts_a_plain_pyro_function():
    def plain():
        a = pyro.sample("a", dist.Bernoulli(0.5))
        pyro.sample("b", dist.Bernoulli(0.2 + 0.6 * a))

    g = ppl.compile(plain, {"b": 1.0})
    assert g.latent() == ["a"] and g.observed() == ["b"]
    assert set(g.factors["b"].scope) == {"a", "b"}


# ----------------------------------------------------------------- ALARM
def test_alarm_scopes_are_node_and_parents():
    bn = ppl.models.example_network("alarm")
    g = ppl.compile(bn)
    assert set(g.factors) == set(bn.nodes) == set(g.variables)
    assert len(bn.nodes) == 37
    for node, (parents, table) in bn.cpds.items():
        assert set(g.factors[node].scope) == {node, *parents}, node
        assert g.variables[node].cardinality == bn.cardinalities[node] == table.shape[-1]
        assert g.variables[node].role == "latent"
    G = g.to_networkx()
    assert nx.is_bipartite(G)
    assert G.number_of_edges() == sum(1 + len(p) for p, _ in bn.cpds.values())
    text = str(g)
    assert "HYPOVOLEMIA" in text and "37 latent" in text
