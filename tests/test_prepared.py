"""Prepared models (ppl.prepared, issue 18): a second ``ppl.infer(model, data)`` with new
evidence values rebinds the compiled graph instead of tracing the model again.

Reference: the same call on a graph compiled afresh (``ppl.compile``), which never reads the
cache, and for the Bayesian network pgmpy's VariableElimination; invalidation is checked by
editing what the model reads and comparing with a fresh compile.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import pyro.distributions as dist

import ppl
from ppl import prepared
from ppl.errors import DataError
from ppl.models import example_network


@pytest.fixture(autouse=True)
def _empty_cache():
    prepared.clear_cache()
    yield
    prepared.clear_cache()


def _fresh(model, data, **options):
    return ppl.infer(ppl.compile(model, data), method="exact", **options)


def _assert_same(post, ref, sites):
    assert post.log_evidence == pytest.approx(ref.log_evidence, rel=1e-12, abs=1e-12)
    for s in sites:
        torch.testing.assert_close(post.probs(s), ref.probs(s), rtol=0, atol=1e-12)
    assert post.diagnostics["map_log_joint"] == pytest.approx(ref.diagnostics["map_log_joint"], abs=1e-12)
    assert {k: int(v) for k, v in post.map().items()} == {k: int(v) for k, v in ref.map().items()}


def _asia_evidence():
    return [{"dysp": "yes", "xray": "no"}, {"dysp": "no", "xray": "yes"}, {"dysp": "yes", "xray": "yes"},
            {"dysp": "no", "xray": "no"}]


def test_rebound_results_equal_a_fresh_compile_and_skip_the_trace():
    model = example_network("asia")
    hidden = [n for n in model.nodes if n not in ("dysp", "xray")]
    posts = [ppl.infer(model, ev, method="exact") for ev in _asia_evidence()]
    assert posts[0].graph.rebound is None  # compiled: nothing to reuse yet
    assert all(p.graph.rebound is not None for p in posts[1:])  # rebound, not traced
    for post, ev in zip(posts, _asia_evidence()):
        ref = _fresh(model, ev)
        _assert_same(post, ref, hidden)
        a, b = post.sample(200, seed=3), ref.sample(200, seed=3)
        assert all(torch.equal(a[s], b[s]) for s in hidden)
        assert post.graph.bound.observations["dysp"].item() == model.state_names["dysp"].index(ev["dysp"])


def test_rebound_marginals_match_pgmpy():
    pgmpy = pytest.importorskip("pgmpy")
    from pgmpy.inference import VariableElimination

    from ppl.models import load_pgmpy_example

    model = example_network("asia")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ve = VariableElimination(load_pgmpy_example("asia"))
    for ev in _asia_evidence():
        post = ppl.infer(model, ev)  # method="auto" routes to exact and reuses the graph
        for node in ("either", "lung", "tub"):
            ref = ve.query([node], evidence=ev, show_progress=False)
            theirs = {s: float(v) for s, v in zip(ref.state_names[node], np.asarray(ref.values).reshape(-1))}
            ours = post.probs(node).numpy()
            for i, s in enumerate(model.state_names[node]):
                assert ours[i] == pytest.approx(theirs[s], abs=1e-9)
    assert pgmpy is not None


def test_auto_and_analyze_reuse_and_other_methods_compile_afresh():
    model = example_network("asia")
    ev1, ev2 = _asia_evidence()[:2]
    ppl.infer(model, ev1)
    post = ppl.infer(model, ev2)
    assert post.graph.rebound is not None and post.trust.verdict == "exact"
    assert ppl.analyze(model, ev2).treewidth == ppl.analyze(ppl.compile(model, ev2)).treewidth
    cavi = ppl.infer(model, ev2, method="cavi", seed=0)
    assert cavi.graph.rebound is None  # a backend that reads traced distributions never gets a rebound graph


def _table_model(table):
    @ppl.model
    def two_nodes():
        a = ppl.sample("a", dist.Categorical(torch.tensor([0.3, 0.7])))
        ppl.sample("b", dist.Categorical(table[a]))
    return two_nodes


def test_an_in_place_edit_of_a_table_the_model_reads_invalidates_the_entry():
    table = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    model = _table_model(table)
    first = ppl.infer(model, {"b": 1}, method="exact")
    again = ppl.infer(model, {"b": 0}, method="exact")
    assert again.graph.rebound is not None
    table[0] = torch.tensor([0.5, 0.5])  # in place: the model's next run reads the new row
    post = ppl.infer(model, {"b": 1}, method="exact")
    assert post.graph.rebound is None  # compiled afresh
    # brute force: p(a=0 | b=1) = 0.3 * 0.5 / (0.3 * 0.5 + 0.7 * 0.8)
    assert float(post.probs("a")[0]) == pytest.approx(0.15 / (0.15 + 0.56), abs=1e-6)  # float32 tables
    assert float(first.probs("a")[0]) == pytest.approx(0.03 / (0.03 + 0.56), abs=1e-6)


PRIOR = 0.3


@ppl.model
def _global_prior():
    a = ppl.sample("a", dist.Bernoulli(torch.tensor(PRIOR)))
    ppl.sample("b", dist.Bernoulli(0.2 + 0.6 * a))


def test_a_changed_global_constant_and_a_changed_param_invalidate_the_entry():
    global PRIOR
    ppl.infer(_global_prior, {"b": 1.0}, method="exact")
    assert ppl.infer(_global_prior, {"b": 0.0}, method="exact").graph.rebound is not None
    try:
        PRIOR = 0.6
        post = ppl.infer(_global_prior, {"b": 1.0}, method="exact")
    finally:
        PRIOR = 0.3
    assert post.graph.rebound is None
    assert float(post.mean("a")) == pytest.approx(0.6 * 0.8 / (0.6 * 0.8 + 0.4 * 0.2), abs=1e-6)

    @ppl.model
    def with_param():
        p = ppl.param("p", torch.tensor(0.3), constraint=dist.constraints.unit_interval)
        a = ppl.sample("a", dist.Bernoulli(p))
        ppl.sample("b", dist.Bernoulli(0.2 + 0.6 * a))

    ppl.infer(with_param, {"b": 1.0}, method="exact")
    warm = ppl.infer(with_param, {"b": 1.0}, method="exact", init={"p": torch.tensor(0.6)})
    assert warm.graph.rebound is None  # a warm start never reuses a prepared model
    assert float(warm.mean("a")) == pytest.approx(0.48 / 0.56, abs=1e-6)
    assert float(ppl.infer(with_param, {"b": 1.0}, method="exact").mean("a")) == pytest.approx(
        0.24 / (0.24 + 0.14), abs=1e-6)


def test_changed_arguments_compile_afresh():
    @ppl.model
    def shifted(w):
        a = ppl.sample("a", dist.Bernoulli(torch.sigmoid(torch.as_tensor(w, dtype=torch.float64))))
        ppl.sample("b", dist.Bernoulli(0.2 + 0.6 * a))

    ppl.infer(shifted, {"w": 0.0, "b": 1.0}, method="exact")
    same = ppl.infer(shifted, {"w": 0.0, "b": 0.0}, method="exact")
    other = ppl.infer(shifted, {"w": 2.0, "b": 0.0}, method="exact")
    assert same.graph.rebound is not None and other.graph.rebound is None
    p = 1 / (1 + math.exp(-2.0))
    assert float(other.mean("a")) == pytest.approx(p * 0.2 / (p * 0.2 + (1 - p) * 0.8), abs=1e-6)


def test_impossible_and_invalid_evidence_on_the_rebound_path():
    @ppl.model
    def gate():
        a = ppl.sample("a", dist.Bernoulli(torch.tensor(0.5)))
        ppl.sample("b", dist.Bernoulli(a))  # b = a exactly
        ppl.sample("c", dist.Bernoulli(torch.tensor(1.0) - a))  # c = not a

    ppl.infer(gate, {"b": 1.0, "c": 0.0}, method="exact")
    with pytest.raises(DataError, match="probability zero") as err:
        ppl.infer(gate, {"b": 1.0, "c": 1.0}, method="exact")
    assert err.value.log_evidence == -math.inf
    with pytest.raises(DataError, match="support"):
        ppl.infer(gate, {"b": 2.0, "c": 0.0}, method="exact")
    model = example_network("asia")
    ppl.infer(model, {"dysp": "yes"}, method="exact")
    with pytest.raises(DataError, match="is not a state of site 'dysp'"):
        ppl.infer(model, {"dysp": "maybe"}, method="exact")


def test_a_model_branching_on_an_observed_value_is_never_rebound():
    @ppl.model
    def branches():
        a = ppl.sample("a", dist.Bernoulli(torch.tensor(0.4)))
        b = ppl.sample("b", dist.Bernoulli(0.1 + 0.8 * a))
        if int(b) == 1:  # structure that depends on b's value: cannot be enumerated over b
            ppl.sample("c", dist.Bernoulli(0.3 + 0.4 * a))
        else:
            ppl.sample("c", dist.Bernoulli(0.9 - 0.8 * a))

    for b, c in ((1.0, 1.0), (0.0, 1.0), (1.0, 0.0)):
        post = ppl.infer(branches, {"b": b, "c": c}, method="exact")
        assert post.graph.rebound is None
        pb1 = [0.1, 0.9] if b == 1.0 else [0.9, 0.1]
        pc = [0.3, 0.7] if b == 1.0 else [0.9, 0.1]
        pc = pc if c == 1.0 else [1 - pc[0], 1 - pc[1]]
        joint = [0.6 * pb1[0] * pc[0], 0.4 * pb1[1] * pc[1]]
        assert float(post.mean("a")) == pytest.approx(joint[1] / sum(joint), abs=1e-6)


def test_a_masked_observation_is_never_clamped():
    @ppl.model
    def masked():
        a = ppl.sample("a", dist.Bernoulli(torch.tensor(0.4)))
        with ppl.plate("one", 1):
            pass
        with pyro_mask(False):
            ppl.sample("b", dist.Bernoulli(0.1 + 0.8 * a))

    import pyro.poutine as poutine

    global pyro_mask
    pyro_mask = lambda m: poutine.mask(mask=torch.tensor(m))  # noqa: E731
    for b in (1.0, 0.0, 0.0):  # the first call's values again would be the same call: not a rebind
        post = ppl.infer(masked, {"b": b}, method="exact")
        assert post.graph.rebound is None
        assert float(post.mean("a")) == pytest.approx(0.4, abs=1e-6)  # the masked factor counts for nothing


def test_the_cache_is_bounded_and_can_be_emptied():
    models = [_table_model(torch.tensor([[0.9, 0.1], [0.2, 0.8]])) for _ in range(prepared.MAX_ENTRIES + 3)]
    for m in models:
        ppl.infer(m, {"b": 1}, method="exact")
    assert len(prepared._CACHE) == prepared.MAX_ENTRIES
    assert ppl.infer(models[-1], {"b": 0}, method="exact").graph.rebound is not None
    assert ppl.infer(models[0], {"b": 0}, method="exact").graph.rebound is None  # evicted first
    prepared.clear_cache()
    assert not prepared._CACHE


def test_a_plain_function_and_a_repeated_call_reuse_the_graph():
    def coin(flips):
        p = ppl.sample("p", dist.Categorical(torch.tensor([0.5, 0.5], dtype=torch.float64)))
        with ppl.plate("n", len(flips)):
            ppl.sample("y", dist.Bernoulli(0.3 + 0.4 * p), obs=flips)

    flips = torch.tensor([1.0, 1.0, 0.0, 1.0])
    first = ppl.infer(coin, {"flips": flips}, method="exact")  # a plain function, wrapped on every call
    again = ppl.infer(coin, {"flips": flips}, method="exact")
    assert again.graph._memo is first.graph._memo  # the very call again: nothing recompiled
    lik = [0.3**3 * 0.7, 0.7**3 * 0.3]
    assert float(again.mean("p")) == pytest.approx(lik[1] / sum(lik), abs=1e-6)
    other = ppl.infer(coin, {"flips": torch.tensor([0.0, 0.0, 0.0, 1.0])}, method="exact")
    assert other.graph._memo is not first.graph._memo
    lik = [0.3 * 0.7**3, 0.7 * 0.3**3]
    assert float(other.mean("p")) == pytest.approx(lik[1] / sum(lik), abs=1e-6)


def test_auto_on_a_continuous_model_called_twice_runs_on_a_fresh_graph():
    @ppl.model
    def normal_mean(x):
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 10.0))
        with ppl.plate("n", len(x)):
            ppl.sample("x", dist.Normal(mu, 1.0), obs=x)

    x = torch.tensor([0.5, 1.5, 1.0, 2.0], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = ppl.infer(normal_mean, {"x": x}, seed=0)
        second = ppl.infer(normal_mean, {"x": x}, seed=0)
    assert second.graph.rebound is None  # the method auto chose cannot run on a prepared graph
    assert float(second.mean("mu")) == float(first.mean("mu"))
    post_mean = x.sum() / (len(x) + 1 / 100)
    assert float(second.mean("mu")) == pytest.approx(float(post_mean), abs=0.05)


def _prior_evidence(model_fn, data, seed):
    """New values of the observed sites of ``data`` (an ancestral draw of the model with
    the arguments of ``data``), so the evidence has positive probability."""
    import pyro
    import pyro.poutine as poutine

    names = set(getattr(model_fn, "__code__").co_varnames[: model_fn.__code__.co_argcount])
    kwargs = {k: v for k, v in data.items() if k in names}
    pyro.set_rng_seed(seed)
    trace = poutine.trace(model_fn).get_trace(**kwargs)
    return {**kwargs, **{k: trace.nodes[k]["value"] for k in data if k not in names}}


@pytest.mark.parametrize("family", ["chain", "tree", "dag", "bernoulli", "zeros_dag", "zeros_chain", "mixture"])
def test_rebound_random_models_equal_a_fresh_compile(family):
    from random_models import FAMILIES

    rebound = 0
    for seed in range(3):
        model_fn, data = FAMILIES[family](seed)
        prepared.clear_cache()
        ppl.infer(model_fn, data, method="exact")
        for draw in range(3):
            new = _prior_evidence(model_fn, data, 100 * seed + draw)
            try:
                ref = ppl.infer(ppl.compile(model_fn, new), method="exact", map=False)
            except DataError:  # evidence of probability zero: the rebound call must say so too
                with pytest.raises(DataError, match="probability zero"):
                    ppl.infer(model_fn, new, method="exact")
                continue
            post = ppl.infer(model_fn, new, method="exact", map=False)
            rebound += post.graph.rebound is not None
            assert post.log_evidence == pytest.approx(ref.log_evidence, rel=1e-12, abs=1e-12)
            for s in ref.sites:
                torch.testing.assert_close(post.probs(s), ref.probs(s), rtol=0, atol=1e-12)
    if family in ("tree", "dag", "zeros_dag"):  # evidence on scalar nodes: clamped, not traced
        assert rebound > 0


def test_a_large_data_set_is_not_kept_in_the_cache(monkeypatch):
    monkeypatch.setattr(prepared, "MAX_DATA_BYTES", 16)
    model = example_network("asia")
    ppl.infer(model, {"dysp": "yes", "xray": "no", "smoke": "yes"}, method="exact")  # 3 x 8 bytes > 16
    assert not prepared._CACHE
    assert ppl.infer(model, {"dysp": "no", "xray": "no", "smoke": "yes"}, method="exact").graph.rebound is None
