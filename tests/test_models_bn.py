"""Tests of ppl.models: bayesian_network, read_bif, from_pgmpy, example_network."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

from ppl.errors import ModelError
from ppl.models import (
    available_examples,
    bayesian_network,
    example_network,
    from_pgmpy,
    load_pgmpy_example,
    read_bif,
)
from ppl.models.pgmpy_io import _example_path, _parse_bif

# A small hand-written network (a variant of the sprinkler network):
#   cloudy -> sprinkler, cloudy -> rain, (sprinkler, rain) -> wet; season (3 states) -> rain too.
P_CLOUDY = [0.4, 0.6]
P_SEASON = [0.2, 0.5, 0.3]
P_SPRINKLER = [[0.5, 0.5], [0.9, 0.1]]  # [cloudy, sprinkler]
P_RAIN = [  # [cloudy, season, rain]
    [[0.8, 0.2], [0.7, 0.3], [0.6, 0.4]],
    [[0.2, 0.8], [0.3, 0.7], [0.1, 0.9]],
]
P_WET = [  # [sprinkler, rain, wet]
    [[1.0, 0.0], [0.1, 0.9]],
    [[0.1, 0.9], [0.01, 0.99]],
]


def small_cpds():
    # listed in a non-topological order on purpose
    return {
        "wet": (["sprinkler", "rain"], np.array(P_WET)),
        "rain": (["cloudy", "season"], np.array(P_RAIN)),
        "cloudy": ([], np.array(P_CLOUDY)),
        "season": ([], P_SEASON),
        "sprinkler": (["cloudy"], torch.tensor(P_SPRINKLER, dtype=torch.float64)),
    }


def log_joint(model, assignment):
    data = {k: torch.tensor(v) for k, v in assignment.items()}
    return poutine.trace(poutine.condition(model, data=data)).get_trace().log_prob_sum().item()


# --------------------------------------------------------------- bayesian_network
def test_structure_and_metadata():
    bn = bayesian_network(small_cpds(), state_names={"cloudy": ["no", "yes"]}, name="sprinkler")
    assert bn.name == "sprinkler"
    assert bn.nodes == ["cloudy", "season", "rain", "sprinkler", "wet"]  # ties follow the cpds order
    assert bn.cardinalities == {"cloudy": 2, "season": 3, "rain": 2, "sprinkler": 2, "wet": 2}
    parents, table = bn.cpds["rain"]
    assert parents == ("cloudy", "season")
    assert table.dtype == torch.float64 and table.shape == (2, 3, 2)
    assert bn.state_names == {"cloudy": ["no", "yes"]}
    trace = poutine.trace(bn).get_trace()
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
    assert sites == bn.nodes
    for n in sites:
        assert type(trace.nodes[n]["fn"]).__name__ == "Categorical"


def test_log_joint_equals_product_of_cpt_entries():
    bn = bayesian_network(small_cpds())
    rng = np.random.default_rng(0)
    for _ in range(6):
        c, s = int(rng.integers(2)), int(rng.integers(3))
        sp, r, w = (int(x) for x in rng.integers(2, size=3))
        if (sp, r, w) == (0, 0, 1):  # probability zero; covered below
            w = 0
        expected = P_CLOUDY[c] * P_SEASON[s] * P_SPRINKLER[c][sp] * P_RAIN[c][s][r] * P_WET[sp][r][w]
        got = log_joint(bn, {"cloudy": c, "season": s, "sprinkler": sp, "rain": r, "wet": w})
        assert got == pytest.approx(math.log(expected), abs=1e-12)
    # a zero CPT entry gives log-probability -inf (not Pyro's clamped log(eps) = -36)
    assert log_joint(bn, {"cloudy": 0, "season": 0, "sprinkler": 0, "rain": 0, "wet": 1}) == -math.inf


def test_rows_are_normalised():
    bn = bayesian_network({"a": ([], [0.3, 0.7 + 5e-7])})  # within the 1e-6 tolerance
    table = bn.cpds["a"][1]
    assert table.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert log_joint(bn, {"a": 0}) == pytest.approx(math.log(0.3 / (1 + 5e-7)), abs=1e-14)


def test_enumerated_parents_broadcast_through_vindex():
    # Pyro's parallel enumeration hands each parent's values as a (K, 1, ..., 1) tensor
    bn = bayesian_network(small_cpds())
    model = config_enumerate(poutine.condition(bn, data={"wet": torch.tensor(1)}))
    log_evidence = -TraceEnum_ELBO(max_plate_nesting=0).loss(model, lambda: None)
    brute = 0.0
    for c in range(2):
        for s in range(3):
            for sp in range(2):
                for r in range(2):
                    brute += P_CLOUDY[c] * P_SEASON[s] * P_SPRINKLER[c][sp] * P_RAIN[c][s][r] * P_WET[sp][r][1]
    assert log_evidence == pytest.approx(math.log(brute), abs=1e-12)


def test_state_names_bind_data():
    bn = bayesian_network(small_cpds(), state_names={"wet": ["dry", "wet"]})
    bound = bn.bind({"wet": "wet", "cloudy": 1})
    assert bound.observations["wet"].item() == 1 and bound.observations["cloudy"].item() == 1


def test_user_arrays_are_not_modified_or_shared():
    wet = np.array(P_WET)
    rain = np.array(P_RAIN)
    sprinkler = torch.tensor(P_SPRINKLER, dtype=torch.float64)
    before = (wet.copy(), rain.copy(), sprinkler.clone())
    cpds = {
        "cloudy": ([], P_CLOUDY),
        "season": ([], P_SEASON),
        "sprinkler": (["cloudy"], sprinkler),
        "rain": (["cloudy", "season"], rain),
        "wet": (["sprinkler", "rain"], wet),
    }
    bn = bayesian_network(cpds)
    assignment = {"cloudy": 1, "season": 2, "sprinkler": 0, "rain": 1, "wet": 1}
    before_lp = log_joint(bn, assignment)
    for _, table in bn.cpds.values():
        table.mul_(0.5)  # mutating the model's tables must not reach the user's objects
    assert log_joint(bn, assignment) == before_lp  # nor the model itself
    np.testing.assert_array_equal(wet, before[0])
    np.testing.assert_array_equal(rain, before[1])
    assert torch.equal(sprinkler, before[2])
    assert not np.shares_memory(bn.cpds["wet"][1].numpy(), wet)


@pytest.mark.parametrize(
    "cpds, match",
    [
        ({"a": ([], [0.5, 0.5]), "b": (["c"], [[0.5, 0.5], [0.5, 0.5]])}, r"node 'b': unknown parent 'c'"),
        (
            {
                "a": (["c"], [[0.5, 0.5], [0.5, 0.5]]),
                "b": (["a"], [[0.5, 0.5], [0.5, 0.5]]),
                "c": (["b"], [[0.5, 0.5], [0.5, 0.5]]),
            },
            r"cycle a -> b -> c -> a",
        ),
        ({"a": (["a"], [[0.5, 0.5], [0.5, 0.5]])}, r"cycle a -> a"),
        (
            {"a": ([], [0.5, 0.5]), "b": (["a"], [[0.2, 0.3, 0.5]])},
            r"node 'b': table has shape \(1, 3\); expected \(2, 3\)",
        ),
        (
            {"a": ([], [0.5, 0.5]), "b": ([], [[0.5, 0.5], [0.5, 0.5]])},
            r"node 'b': table has shape \(2, 2\); expected \(2,\)",
        ),
        ({"a": ([], [1.5, -0.5])}, r"node 'a': table holds a negative entry -0.5"),
        (
            {"a": ([], [0.5, 0.5]), "b": (["a"], [[0.5, 0.5], [0.5, 0.4]])},
            r"node 'b': probabilities in row for a=1 sum to 0.9",
        ),
        ({"a": ([], [0.5, 0.5 + 1e-5])}, r"node 'a': .* sum to 1"),
        ({"a": ([], [0.5, float("nan")])}, r"node 'a': table holds nan"),
        (
            {"a": ([], [0.5, 0.5]), "b": (["a", "a"], np.full((2, 2, 2), 0.5))},
            r"node 'b': parent\(s\) \['a'\] listed more",
        ),
        ({"a": ("b", [0.5, 0.5]), "b": ([], [0.5, 0.5])}, r"node 'a': parents must be a list"),
        ({"a": [[0.5, 0.5]]}, r"node 'a': expected a \(parents, table\) pair"),
        ({"a": ([], [["x", "y"]])}, r"node 'a': table is not a numeric array"),
        ({}, r"cpds is empty"),
    ],
)
def test_model_errors(cpds, match):
    with pytest.raises(ModelError, match=match):
        bayesian_network(cpds)


def test_state_name_errors():
    cpds = {"a": ([], [0.5, 0.5])}
    with pytest.raises(ModelError, match=r"node 'a': duplicate state name\(s\) \['x'\]"):
        bayesian_network(cpds, state_names={"a": ["x", "x"]})
    with pytest.raises(ModelError, match=r"node 'a': 3 state names"):
        bayesian_network(cpds, state_names={"a": ["x", "y", "z"]})
    with pytest.raises(ModelError, match=r"state_names: unknown node 'b'"):
        bayesian_network(cpds, state_names={"b": ["x", "y"]})
    with pytest.raises(TypeError, match="cpds must be a mapping"):
        bayesian_network([("a", ([], [1.0]))])


# ------------------------------------------------------------------------ read_bif
BIF_TEXT = """
// a comment
network "toy" {
}
variable A {
  type discrete [ 2 ] { a0, a1 };
  property position = (0, 0);
}
variable "B" {
  type discrete [ 3 ] { b0 b1 b2 };
}
variable C {
  type discrete [ 2 ] { c0, c1 };
}
/* block
   comment */
probability ( A ) {
  table 0.3, 0.7;
}
probability ( B | A ) {
  table 0.1 0.2  0.3 0.4  0.6 0.4;
}
probability ( C | A, B ) {
  (a0, b0) 0.9, 0.1;
  (A1, b2) 0.25, 0.75;
  default 0.5, 0.5;
}
"""


def test_read_bif_text_forms(tmp_path):
    bn = read_bif(BIF_TEXT)
    assert bn.name == "toy"
    assert bn.nodes == ["A", "B", "C"]
    assert bn.state_names == {"A": ["a0", "a1"], "B": ["b0", "b1", "b2"], "C": ["c0", "c1"]}
    # "table" with parents: the variable's state varies slowest
    np.testing.assert_allclose(bn.cpds["B"][1].numpy(), [[0.1, 0.3, 0.6], [0.2, 0.4, 0.4]])
    c = bn.cpds["C"][1].numpy()
    np.testing.assert_allclose(c[0, 0], [0.9, 0.1])
    np.testing.assert_allclose(c[1, 2], [0.25, 0.75])  # state names matched case-insensitively
    np.testing.assert_allclose(c[0, 1], [0.5, 0.5])  # default row
    path = tmp_path / "toy.bif.gz"
    path.write_bytes(gzip.compress(BIF_TEXT.replace("network \"toy\"", "network unknown").encode()))
    from_file = read_bif(path)
    assert from_file.name == "toy"  # the file's stem when the network is "unknown"
    for node in bn.nodes:
        assert torch.equal(from_file.cpds[node][1], bn.cpds[node][1])


def test_read_bif_errors():
    with pytest.raises(ModelError, match=r"'C': no row for parent states \(a0, b1\) and no 'default'"):
        read_bif(BIF_TEXT.replace("  default 0.5, 0.5;\n", ""))
    with pytest.raises(ModelError, match=r"'x' is not a state of parent 'A'"):
        read_bif(BIF_TEXT.replace("(a0, b0)", "(x, b0)"))
    with pytest.raises(ModelError, match=r"'A': table has 3 value\(s\); expected 2"):
        read_bif(BIF_TEXT.replace("table 0.3, 0.7;", "table 0.3, 0.6, 0.1;"))
    with pytest.raises(ModelError, match=r"node 'A': probabilities .* sum to 0.9"):
        read_bif(BIF_TEXT.replace("table 0.3, 0.7;", "table 0.3, 0.6;"))
    with pytest.raises(ModelError, match=r"declares \[ 2 \] states but lists 3"):
        read_bif(BIF_TEXT.replace("{ a0, a1 }", "{ a0, a1, a2 }"))


def test_example_network_fast_and_names():
    names = available_examples()
    assert {"asia", "alarm", "child", "munin", "andes"} <= set(names)
    asia = example_network("asia")
    assert asia.name == "asia" and asia.nodes[0] == "asia" and asia.state_names["asia"] == ["yes", "no"]
    with pytest.raises(ValueError, match=r"unknown example network 'nope'; available: \[.*'alarm'"):
        example_network("nope")


def test_missing_pgmpy_raises_import_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pgmpy.readwrite", None)  # "from pgmpy.readwrite import" fails
    with pytest.raises(ImportError, match=r"pgmpy is needed for load_pgmpy_example: pip install 'ppl\[pgmpy\]'"):
        load_pgmpy_example("asia")
    monkeypatch.setitem(sys.modules, "pgmpy", None)  # pgmpy not installed
    with pytest.raises(ImportError, match=r"pgmpy is needed for .*: pip install 'ppl\[pgmpy\]'"):
        example_network("asia")


# --------------------------------------------------------------------- vs pgmpy
@pytest.fixture(scope="module")
def pgmpy_networks():
    pytest.importorskip("pgmpy")
    return {name: load_pgmpy_example(name) for name in ("asia", "alarm", "child")}


def pgmpy_log_joint(network, assignment):
    """log prod_i P(x_i | pa_i) from pgmpy's CPDs, each normalised with pgmpy's own
    ``TabularCPD.normalize`` (bnlearn tables round to 1e-7; a Categorical normalises)."""
    total = 0.0
    for cpd in network.get_cpds():
        raw = float(cpd.get_value(**{v: assignment[v] for v in cpd.variables}))
        p = float(cpd.normalize(inplace=False).get_value(**{v: assignment[v] for v in cpd.variables}))
        assert abs(p - raw) <= 1e-6 * max(raw, 1e-300)  # normalising moves an entry by < 1e-6 relative
        total += math.log(p) if p > 0 else -math.inf
    return total


@pytest.mark.parametrize("name", ["asia", "alarm"])
def test_from_pgmpy_log_joint_matches_pgmpy(pgmpy_networks, name):
    network = pgmpy_networks[name]
    bn = from_pgmpy(network)
    assert bn.name == "bayesian_network"  # pgmpy names BIF networks "unknown"
    assert set(bn.nodes) == set(network.nodes())
    for cpd in network.get_cpds():
        assert bn.state_names[cpd.variable] == list(cpd.state_names[cpd.variable])
        assert list(bn.cpds[cpd.variable][0]) == list(cpd.variables[1:])
    pyro.set_rng_seed(0)
    for _ in range(5):  # random full assignments of positive probability (ancestral samples)
        sample = {k: int(v) for k, v in bn().items()}
        names = {k: bn.state_names[k][i] for k, i in sample.items()}
        assert log_joint(bn, sample) == pytest.approx(pgmpy_log_joint(network, names), abs=1e-10)
    rng = np.random.default_rng(1)
    for _ in range(5):  # uniform random assignments (asia's are often impossible: log p = -inf)
        sample = {k: int(rng.integers(bn.cardinalities[k])) for k in bn.nodes}
        names = {k: bn.state_names[k][i] for k, i in sample.items()}
        expected = pgmpy_log_joint(network, names)
        got = log_joint(bn, sample)
        if expected == -math.inf:
            assert got == -math.inf
        else:
            assert got == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("name", ["asia", "alarm", "child"])
def test_read_bif_matches_pgmpy_reader(pgmpy_networks, name):
    network = pgmpy_networks[name]
    ours = example_network(name)
    _, _, raw_states, raw_blocks = _parse_bif(_example_path(name))
    assert ours.nodes == list(from_pgmpy(network).nodes)
    for cpd in network.get_cpds():
        var = cpd.variable
        parents, table = ours.cpds[var]
        assert list(parents) == list(cpd.variables[1:]) == raw_blocks[var][0]
        assert ours.state_names[var] == list(cpd.state_names[var]) == raw_states[var]
        cards = [int(c) for c in cpd.cardinality]
        theirs = np.moveaxis(np.asarray(cpd.get_values(), dtype=np.float64).reshape(cards), 0, -1)
        np.testing.assert_allclose(raw_blocks[var][1], theirs, rtol=0, atol=1e-12)  # as parsed
        normalised = cpd.normalize(inplace=False).get_values().reshape(cards)
        np.testing.assert_allclose(table.numpy(), np.moveaxis(normalised, 0, -1), rtol=0, atol=1e-12)


def test_from_pgmpy_hand_built_network():
    pytest.importorskip("pgmpy")
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.models import DiscreteBayesianNetwork

    net = DiscreteBayesianNetwork([("rain", "wet")])
    net.add_cpds(
        TabularCPD("rain", 2, [[0.8], [0.2]], state_names={"rain": ["no", "yes"]}),
        TabularCPD(
            "wet", 3, [[0.7, 0.1], [0.2, 0.2], [0.1, 0.7]], evidence=["rain"], evidence_card=[2],
            state_names={"wet": ["dry", "damp", "soaked"], "rain": ["no", "yes"]},
        ),
    )
    bn = from_pgmpy(net, name="rainy")
    assert bn.name == "rainy" and bn.nodes == ["rain", "wet"]
    assert bn.state_names == {"rain": ["no", "yes"], "wet": ["dry", "damp", "soaked"]}
    np.testing.assert_allclose(bn.cpds["wet"][1].numpy(), [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])


class _FakeCPD:
    """Duck-typed TabularCPD (values of shape (card(variable), prod(card(evidence))))."""

    def __init__(self, variable, values, evidence=(), state_names=None):
        self.variable = variable
        self.variables = [variable, *evidence]
        values = np.asarray(values, dtype=float)
        self.cardinality = np.array([values.shape[0]] + [len(state_names[e]) for e in evidence])
        self._values = values
        self.state_names = state_names

    def get_values(self):
        return self._values


class _FakeNetwork:
    def __init__(self, cpds):
        self._cpds = cpds

    def nodes(self):
        return [c.variable for c in self._cpds]

    def get_cpds(self):
        return list(self._cpds)


def test_from_pgmpy_duck_typed_and_permuted_parent_states():
    # the child's CPD lists its parent's states in the other order: the axis is permuted
    a = _FakeCPD("a", [[0.3], [0.7]], state_names={"a": ["x", "y"]})
    b = _FakeCPD("b", [[0.9, 0.2], [0.1, 0.8]], evidence=["a"], state_names={"b": ["u", "v"], "a": ["y", "x"]})
    bn = from_pgmpy(_FakeNetwork([a, b]))
    np.testing.assert_allclose(bn.cpds["b"][1].numpy(), [[0.2, 0.8], [0.9, 0.1]])  # rows now a=x, a=y
    with pytest.raises(ModelError, match=r"node\(s\) \['b'\] have no CPD"):
        from_pgmpy(type("N", (), {"nodes": lambda self: ["a", "b"], "get_cpds": lambda self: [a]})())
    with pytest.raises(TypeError, match="expected a pgmpy DiscreteBayesianNetwork"):
        from_pgmpy(object())
