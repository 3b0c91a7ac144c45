"""ppl's exact backend against pgmpy on the bnlearn networks bundled with pgmpy.

For each network a fixed, seeded evidence set (a few nodes, states drawn by forward
sampling from pgmpy's own CPDs, so the evidence has positive probability):

* every non-evidence node's posterior marginal against pgmpy's
  ``VariableElimination.query``;
* the log evidence against ``log P(evidence)`` from pgmpy (the joint of the evidence
  variables, queried without evidence);
* the MAP assignment's log joint (scored with pgmpy's CPDs) against the maximum log
  joint computed by max-product variable elimination over pgmpy's ``DiscreteFactor``
  objects (pgmpy's ``map_query`` builds the joint of all query variables, which only
  fits asia: there it is compared directly).  Log joints are compared, so ties between
  MAP assignments do not matter.

The ppl side is loaded with ppl's own BIF reader (``example_network``), the pgmpy side
with pgmpy's ``BIFReader`` (``load_pgmpy_example``), so a parsing bug on either side
shows up too.
"""

from __future__ import annotations

import functools
import math
import warnings

import networkx as nx
import numpy as np
import pytest

import ppl

with warnings.catch_warnings():  # pgmpy 1.1 warns about its own deprecated modules on import
    warnings.simplefilter("ignore", FutureWarning)
    pgmpy = pytest.importorskip("pgmpy")
    from pgmpy.inference import VariableElimination  # noqa: E402
from pgmpy.readwrite import BIFReader  # noqa: E402

SEED = 20240
N_EVIDENCE = 4
TOL = 1e-6

# insurance and hepar2 cost about 1-2 s each on top of the fixed cost (importing pgmpy,
# building its BIF grammar once): cheap enough for the default run
NETWORKS = ["asia", "alarm", "child", "insurance", "hepar2"]


@pytest.fixture(scope="module", autouse=True)
def _fast_bif_grammar():
    """pgmpy's BIFReader rebuilds the same pyparsing grammar (about 2 s) for every file;
    build it once for this module.  The grammar objects are pgmpy's own."""
    build_var, build_prob = BIFReader.get_variable_grammar, BIFReader.get_probability_grammar
    var_grammar = functools.lru_cache(None)(lambda: build_var(None))  # neither method reads self
    prob_grammar = functools.lru_cache(None)(lambda: build_prob(None))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BIFReader, "get_variable_grammar", lambda self: var_grammar())
        mp.setattr(BIFReader, "get_probability_grammar", lambda self: prob_grammar())
        yield


def forward_sample(net, rng) -> dict:
    """One joint sample (node -> state name) by ancestral sampling from pgmpy's CPDs."""
    dag = nx.DiGraph(list(net.edges()))
    dag.add_nodes_from(net.nodes())
    values = {}
    order = list(nx.lexicographical_topological_sort(dag))  # deterministic
    for node in order:
        cpd = net.get_cpds(node)
        states = cpd.state_names[node]
        parents = {p: values[p] for p in cpd.variables[1:]}
        p = np.array([cpd.get_value(**{node: s}, **parents) for s in states], dtype=float)
        values[node] = states[rng.choice(len(states), p=p / p.sum())]
    return values


class Case:
    """One network: the ppl model, the pgmpy network, the evidence and both answers."""

    def __init__(self, name):
        self.name = name
        self.model = ppl.models.example_network(name)
        self.net = ppl.models.load_pgmpy_example(name)
        rng = np.random.default_rng(SEED)
        sample = forward_sample(self.net, rng)
        nodes = sorted(self.net.nodes())
        chosen = rng.choice(len(nodes), size=N_EVIDENCE, replace=False)
        self.evidence = {nodes[i]: sample[nodes[i]] for i in sorted(chosen)}  # state names
        self.ve = VariableElimination(self.net)
        # ppl takes the state names directly (its models carry state_names)
        self.post = ppl.infer(self.model, dict(self.evidence), method="exact")

    def ppl_index(self, node, state):
        return self.model.state_names[node].index(state)


@functools.lru_cache(maxsize=None)
def _case(name):
    return Case(name)


@pytest.fixture(scope="module")
def cases():
    return _case


def log_joint_pgmpy(net, assignment) -> float:
    """log prod_i P(x_i | pa_i) with pgmpy's CPDs, each normalised (bnlearn rounds rows)."""
    total = 0.0
    for cpd in net.get_cpds():
        p = float(cpd.normalize(inplace=False).get_value(**{v: assignment[v] for v in cpd.variables}))
        total += math.log(p) if p > 0 else -math.inf
    return total


def max_log_joint_pgmpy(net, evidence) -> float:
    """max over the non-evidence nodes of log P(x, evidence): max-product variable
    elimination with pgmpy's DiscreteFactor product / maximize, greedy min-size order."""
    log_const = 0.0
    factors = []
    for cpd in net.get_cpds():
        f = cpd.normalize(inplace=False).to_factor()
        ev = [(v, evidence[v]) for v in f.variables if v in evidence]
        if ev:
            f = f.reduce(ev, inplace=False)
        if not f.variables:
            log_const += math.log(float(f.values))
        else:
            factors.append(f)
    remaining = set(net.nodes()) - set(evidence)
    card = {v: len(net.get_cpds(v).state_names[v]) for v in net.nodes()}

    def size(v):
        scope = set().union(*(set(f.variables) for f in factors if v in f.variables))
        return math.prod(card[u] for u in scope)

    while remaining:
        v = min(sorted(remaining), key=size)
        bucket = [f for f in factors if v in f.variables]
        factors = [f for f in factors if v not in f.variables]
        prod = bucket[0]
        for f in bucket[1:]:
            prod = prod.product(f, inplace=False)
        if prod.variables == [v]:
            m = float(np.max(prod.values))
            log_const += math.log(m) if m > 0 else -math.inf
        else:
            factors.append(prod.maximize([v], inplace=False))
        remaining.remove(v)
    assert not factors
    return log_const


# ----------------------------------------------------------------- the tests
@pytest.mark.parametrize("name", NETWORKS)
def test_marginals_match_pgmpy(cases, name):
    case = cases(name)
    hidden = [n for n in case.model.nodes if n not in case.evidence]
    assert sorted(case.post.sites) == sorted(hidden)
    worst = 0.0
    for node in hidden:
        q = case.ve.query([node], evidence=case.evidence, show_progress=False)
        ref = np.zeros(len(case.model.state_names[node]))
        for i, state in enumerate(q.state_names[node]):
            ref[case.ppl_index(node, state)] = q.values[i]
        ours = case.post.probs(node).numpy()
        assert ours.shape == ref.shape
        worst = max(worst, float(np.abs(ours - ref).max()))
        assert np.allclose(ours, ref, atol=TOL, rtol=0), (node, ours, ref)
    assert worst < TOL


@pytest.mark.parametrize("name", NETWORKS)
def test_log_evidence_matches_pgmpy(cases, name):
    case = cases(name)
    joint = case.ve.query(list(case.evidence), joint=True, show_progress=False)
    p = float(joint.get_value(**case.evidence))
    assert p > 0
    assert case.post.log_evidence == pytest.approx(math.log(p), abs=TOL)


@pytest.mark.parametrize("name", NETWORKS)
def test_map_log_joint_matches_pgmpy(cases, name):
    case = cases(name)
    best = case.post.map()
    assert set(best) == set(case.model.nodes) - set(case.evidence)
    assignment = dict(case.evidence)
    for node, idx in best.items():
        assert idx.shape == ()
        assignment[node] = case.model.state_names[node][int(idx)]
    ours = log_joint_pgmpy(case.net, assignment)
    reference = max_log_joint_pgmpy(case.net, case.evidence)
    assert ours == pytest.approx(reference, abs=TOL)
    assert case.post.diagnostics["map_log_joint"] == pytest.approx(reference, abs=TOL)


def test_asia_map_query(cases):
    """On asia (8 nodes) pgmpy's own map_query fits: compare log joints of the two MAPs."""
    case = cases("asia")
    hidden = [n for n in case.model.nodes if n not in case.evidence]
    theirs = case.ve.map_query(hidden, evidence=case.evidence, show_progress=False)
    ours = {n: case.model.state_names[n][int(v)] for n, v in case.post.map().items()}
    lj_theirs = log_joint_pgmpy(case.net, {**case.evidence, **theirs})
    lj_ours = log_joint_pgmpy(case.net, {**case.evidence, **ours})
    assert lj_ours == pytest.approx(lj_theirs, abs=TOL)


def test_evidence_is_a_few_sampled_nodes(cases):
    case = cases("alarm")
    assert len(case.evidence) == N_EVIDENCE
    for node, state in case.evidence.items():
        assert state in case.model.state_names[node]
