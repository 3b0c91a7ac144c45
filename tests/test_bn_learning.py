"""Learning Bayesian-network CPTs by EM with hidden and missing values
(``ppl.models.bn_learning``), against numpy references: normalised counts for complete
data, and a brute-force EM that enumerates every joint state of a small network."""

import math

import numpy as np
import pyro
import pytest
import torch

import ppl
from ppl.models import (
    count_cpts,
    encode_data,
    example_network,
    hide_at_random,
    learnable_bayesian_network,
    learnable_from_network,
    learned_network,
    make_init,
    sample_network_data,
)

from em_helpers import em

# a small network whose CPTs all have different shapes: A(2) -> B(3); A, B -> C(2); C -> D(4)
STRUCTURE = {"A": [], "B": ["A"], "C": ["A", "B"], "D": ["C"]}
CARDS = {"A": 2, "B": 3, "C": 2, "D": 4}
NODES = list(STRUCTURE)


def _true_cpds(seed=0):
    rng = np.random.default_rng(seed)
    cpds = {}
    for n, ps in STRUCTURE.items():
        shape = tuple(CARDS[p] for p in ps) + (CARDS[n],)
        cpds[n] = (ps, rng.dirichlet(np.full(CARDS[n], 2.0), size=shape[:-1]).reshape(shape))
    return cpds


def _truth():
    return ppl.models.bayesian_network(_true_cpds())


def _np_counts(cols, n_rows):
    """Normalised family counts, by a Python loop over the rows (complete data)."""
    out = {}
    for n, ps in STRUCTURE.items():
        c = np.zeros(tuple(CARDS[p] for p in ps) + (CARDS[n],))
        for r in range(n_rows):
            c[tuple(int(cols[p][r]) for p in ps) + (int(cols[n][r]),)] += 1
        out[n] = c / c.sum(-1, keepdims=True)
    return out


def _np_joint(tables):
    """p(A, B, C, D) as a (2, 3, 2, 4) array."""
    a, b, c, d = (tables[n] for n in NODES)
    return a[:, None, None, None] * b[:, :, None, None] * c[:, :, :, None] * d[None, None, :, :]


def _np_em_step(cols, tables):
    """log p(observed; θ) and θ after one EM step, by enumerating all 48 joint states per
    row (a missing entry, -1, or a left-out column sums over the node's states)."""
    joint = _np_joint(tables)
    n_rows = len(next(iter(cols.values())))
    ll = 0.0
    expected = np.zeros_like(joint)
    for r in range(n_rows):
        keep = np.ones_like(joint)
        for axis, n in enumerate(NODES):
            if n in cols and cols[n][r] >= 0:
                ind = np.zeros(CARDS[n])
                ind[cols[n][r]] = 1.0
                shape = [1] * 4
                shape[axis] = CARDS[n]
                keep = keep * ind.reshape(shape)
        w = joint * keep
        z = w.sum()
        ll += math.log(z)
        expected += w / z
    fam = {  # expected family counts: sum the posterior joint over the other nodes
        "A": expected.sum((1, 2, 3)),
        "B": expected.sum((2, 3)),
        "C": expected.sum(3),
        "D": expected.sum((0, 1)),
    }
    return ll, {n: c / c.sum(-1, keepdims=True) for n, c in fam.items()}


# ------------------------------------------------------------------ (a) complete data
def test_one_em_step_on_complete_data_is_the_count_mle():
    data = sample_network_data(_truth(), 3000, seed=1)
    cols = {k: v.numpy() for k, v in data.items()}
    ref = _np_counts(cols, 3000)
    assert all((c > 0).all() for c in ref.values())  # every parent configuration occurs
    m = learnable_bayesian_network(STRUCTURE, CARDS, seed=3)
    post = em(m, data, init=m.initial_params, max_iter=1, tol=0.0)
    assert len(post.history) == 2
    assert all(v.startswith("closed form") for v in post.diagnostics["m_step"].values()), post.diagnostics["m_step"]
    for n in NODES:
        np.testing.assert_allclose(post.params[m.param_names[n]].numpy(), ref[n], rtol=1e-12, atol=0)
        np.testing.assert_allclose(count_cpts(m, data)[n][1].numpy(), ref[n], rtol=1e-12, atol=0)
    # the MLE is a fixed point: a second step changes nothing and the log-likelihood is the counts' one
    loglik = sum(np.log(ref[n][tuple(cols[p] for p in STRUCTURE[n]) + (cols[n],)]).sum() for n in NODES)
    assert post.log_evidence == pytest.approx(loglik, rel=1e-12)


def test_asia_complete_data_one_step_is_the_count_mle_in_closed_form():
    asia = example_network("asia")
    data = sample_network_data(asia, 2000, seed=0)
    m = learnable_from_network(asia, init="uniform")
    post = em(m, data, init=m.initial_params, max_iter=1, tol=0.0)
    ref = count_cpts(m, data)
    for n in asia.nodes:
        np.testing.assert_allclose(post.params[m.param_names[n]].numpy(), ref[n][1].numpy(), rtol=1e-12, atol=1e-15)
    assert all(v.startswith("closed form") for v in post.diagnostics["m_step"].values()), post.diagnostics["m_step"]


# ------------------------------------------------------------------ (b) missing values
def test_em_history_matches_brute_force_numpy_em_with_hidden_and_missing_values():
    data = sample_network_data(_truth(), 400, seed=2)
    cols = {k: v.clone() for k, v in data.items() if k != "C"}  # C hidden in every row
    cols = hide_at_random(cols, 0.3, seed=5)
    cols["A"][:3] = -1
    cols["B"][:3] = -1
    cols["D"][:3] = -1  # rows with nothing observed
    np_cols = {k: v.numpy() for k, v in cols.items()}
    m = learnable_bayesian_network(STRUCTURE, CARDS, seed=7)
    init = make_init(m, "random", seed=11)
    n_iter = 6
    post = em(m, cols, init=init, max_iter=n_iter, tol=0.0)
    assert all(v.startswith("closed form") for v in post.diagnostics["m_step"].values())

    tables = {n: init[m.param_names[n]].numpy() for n in NODES}
    ref = []
    for i in range(n_iter + 1):
        ll, new = _np_em_step(np_cols, tables)
        ref.append(ll)
        if i < n_iter:
            tables = new
    np.testing.assert_allclose(post.history, ref, rtol=1e-10, atol=0)
    assert np.all(np.diff(ref) > 0)  # EM moved (the check is not between two constant sequences)
    for n in NODES:
        np.testing.assert_allclose(post.params[m.param_names[n]].numpy(), tables[n], rtol=1e-9, atol=1e-12)


def test_left_out_column_equals_an_all_missing_column():
    data = sample_network_data(_truth(), 200, seed=3)
    m = learnable_bayesian_network(STRUCTURE, CARDS)
    without = {k: v for k, v in data.items() if k != "B"}
    with_missing = dict(without, B=torch.full((200,), -1))
    a = em(m, without, init=m.initial_params, max_iter=3, tol=0.0)
    pyro.clear_param_store()
    b = em(m, with_missing, init=m.initial_params, max_iter=3, tol=0.0)
    np.testing.assert_allclose(a.history, b.history, rtol=1e-12)
    for k in a.params:
        np.testing.assert_allclose(a.params[k].numpy(), b.params[k].numpy(), rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------ (c) the example setting
def test_example_setting_recovers_the_asia_cpts():
    from ppl_examples import em_bn_missing as ex
    from ppl_examples._threads import limit_threads

    truth, complete, observed = ex.make_data(2000, ["either"], 0.25, seed=0)
    model = learnable_from_network(truth)
    with limit_threads(1):  # many small tensor ops: a second thread only adds contention
        post, rows, graph = ex.fit(model, observed, starts=1, seed=0, max_iter=300, tol=1e-5)
    assert post.converged
    h = np.asarray(post.history)
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:]))
    # maximum likelihood: at least as likely as the true CPTs on the same incomplete data
    assert post.log_evidence >= ex.log_likelihood(graph, model, truth.cpds) - 1e-6
    nodes = truth.nodes
    parents = {n: tuple(truth.cpds[n][0]) for n in nodes}
    true_t = ex.tables_of(truth.cpds)
    learned, perm = ex.align_hidden(ex.tables_of(learned_network(model, post.params).cpds), true_t, parents,
                                    ["either"])
    mle = ex.tables_of(count_cpts(model, complete))
    p = ex.joint(true_t, parents, nodes)
    # per CPT, the error of each row weighted by how often its parent configuration occurs
    # (rare rows, such as tub | asia = yes, are estimated from a few dozen rows whatever the method)
    for n in nodes:
        keep = tuple(nodes.index(q) for q in parents[n])
        weight = p.sum(tuple(j for j in range(len(nodes)) if j not in keep))  # P(parents), axes in node order
        weight = np.transpose(weight, np.argsort(np.argsort(keep))) if keep else weight  # parents' order
        err_em = float((weight * np.abs(learned[n] - true_t[n]).max(-1)).sum())
        err_mle = float((weight * np.abs(mle[n] - true_t[n]).max(-1)).sum())
        assert err_em < 0.03 and err_em < 2 * err_mle + 0.01, (n, err_em, err_mle)
    # the hidden node's CPT (lung OR tub) and its children's, after undoing label switching
    assert np.abs(learned["either"] - true_t["either"]).max() < 0.02
    assert np.abs(learned["xray"] - true_t["xray"]).max() < 0.03
    # the whole joint: about as close to the truth as the complete-data MLE from the same rows
    tv_em = ex.total_variation(ex.joint(learned, parents, nodes), p)
    tv_mle = ex.total_variation(ex.joint(mle, parents, nodes), p)
    assert tv_em < 0.04 and tv_em < 1.5 * tv_mle + 0.01, (tv_em, tv_mle)
    # the other labelling of 'either' is the same distribution of the observed nodes
    swapped = ex.relabel(learned, parents, "either", (1, 0))
    either_axis = nodes.index("either")
    assert ex.total_variation(ex.joint(swapped, parents, nodes).sum(either_axis),
                              ex.joint(learned, parents, nodes).sum(either_axis)) < 1e-12


# ------------------------------------------------------------------ (d) bad data
@pytest.fixture
def small():
    return learnable_bayesian_network(STRUCTURE, CARDS)


@pytest.mark.parametrize("columns, match", [
    ({"A": [0, 1, 0], "B": [0, 1]}, r"column 'B' has 2 rows, but column 'A' has 3"),
    ({"A": [0, 1, 2]}, r"column 'A' holds 2 at row 2; expected a state 0 \.\. 1"),
    ({"A": [0, 1], "D": [3, -2]}, r"column 'D' holds -2 at row 1"),
    ({"A": [0, 1], "B": [0.0, 1.5]}, r"column 'B' holds non-integer values"),
    ({"A": [[0, 1]]}, r"column 'A' has shape \(1, 2\); expected a 1-D column"),
    ({"A": [0, 1], "E": [0, 1]}, r"\['E'\]"),
    ({}, r"no data column given"),
])
def test_bad_columns_raise_data_error_naming_the_node(small, columns, match):
    with pytest.raises(ppl.DataError, match=match):
        ppl.infer(small, columns, method="em", init=small.initial_params, max_iter=1)


def test_bad_columns_raise_data_error_when_the_model_is_called_directly(small):
    with pytest.raises(ppl.DataError, match=r"column\(s\) \['E'\] name no node"):
        small(A=torch.tensor([0, 1]), E=torch.tensor([0, 1]))
    with pytest.raises(ppl.DataError, match="column 'C' holds 5"):
        count_cpts(small, {"C": [0, 5]})


@pytest.mark.parametrize("structure, cards, match", [
    ({"A": ["B"], "B": ["A"]}, {"A": 2, "B": 2}, "cycle"),
    ({"A": ["Z"]}, {"A": 2}, "node 'A': unknown parent 'Z'"),
    ({"A": [], "B": "A"}, {"A": 2, "B": 2}, r"did you mean \['A'\]"),
    ({"A": []}, {}, "node 'A': no entry in cardinalities"),
    ({"A": []}, {"A": 0}, "node 'A': cardinality 0"),
    ({"A": []}, {"A": 2, "Q": 2}, r"unknown node\(s\) \['Q'\]"),
    ({"rows": []}, {"rows": 2}, "plate"),
    ({"x-ray": []}, {"x-ray": 2}, "identifiers"),
])
def test_bad_structure_raises_model_error(structure, cards, match):
    with pytest.raises(ppl.ModelError, match=match):
        learnable_bayesian_network(structure, cards)


def test_bad_init_raises_model_error():
    with pytest.raises(ppl.ModelError, match=r"init\['B'\]: table of shape \(3, 2\); expected \(2, 3\)"):
        learnable_bayesian_network(STRUCTURE, CARDS, init={"B": np.full((3, 2), 0.5)})
    with pytest.raises(ppl.ModelError, match=r"init\['A'\]: a row sums to 0.9"):
        learnable_bayesian_network(STRUCTURE, CARDS, init={"A": [0.5, 0.4]})
    with pytest.raises(ppl.ModelError, match=r"unknown node\(s\) \['Z'\]"):
        learnable_bayesian_network(STRUCTURE, CARDS, init={"Z": [1.0]})
    with pytest.raises(ppl.ModelError, match="init must be"):
        learnable_bayesian_network(STRUCTURE, CARDS, init="kmeans++")


# ------------------------------------------------------------------ builder, init and helpers
def test_builder_attributes_init_and_param_store():
    cpds = _true_cpds()
    store = pyro.get_param_store()
    store["cpt_B"] = torch.ones(5, 5)  # a stale value of another model: the builder leaves the store alone
    m = learnable_bayesian_network(STRUCTURE, CARDS, init=cpds, name="small")
    assert tuple(store["cpt_B"].shape) == (5, 5)
    assert m.nodes == NODES and m.parents["C"] == ("A", "B") and m.cardinalities == CARDS
    assert m.argument_names == NODES
    for n in NODES:
        np.testing.assert_allclose(m.initial_params[f"cpt_{n}"].numpy(), cpds[n][1], rtol=1e-12)
    uniform = make_init(m, "uniform")
    assert torch.equal(uniform["cpt_D"], torch.full((2, 4), 0.25, dtype=torch.float64))
    r1, r2, r3 = make_init(m, seed=1), make_init(m, seed=1), make_init(m, seed=2)
    assert all(torch.equal(r1[k], r2[k]) for k in r1) and not torch.equal(r1["cpt_D"], r3["cpt_D"])
    assert all(torch.allclose(v.sum(-1), torch.ones((), dtype=torch.float64)) for v in r1.values())
    # partial dict: the rest uniform; (parents, table) pairs accepted
    part = make_init(m, {"C": cpds["C"]})
    np.testing.assert_allclose(part["cpt_C"].numpy(), cpds["C"][1])
    assert torch.equal(part["cpt_A"], torch.full((2,), 0.5, dtype=torch.float64))
    # the model's own start is used, whatever the global store holds
    data = sample_network_data(_truth(), 50, seed=0)
    post = em(m, data, max_iter=0)
    np.testing.assert_allclose(post.params["cpt_B"].numpy(), cpds["B"][1], rtol=1e-12)
    # a value another model left in Pyro's global store under the same name is not used:
    # every call starts from the model's declared values, and the global store is kept
    store["cpt_B"] = torch.ones(5, 5)
    again = em(m, data, max_iter=0)
    np.testing.assert_allclose(again.params["cpt_B"].numpy(), cpds["B"][1], rtol=1e-12)
    assert tuple(store["cpt_B"].shape) == (5, 5)
    del store["cpt_B"]
    prefixed = learnable_bayesian_network(STRUCTURE, CARDS, param_prefix="other_")
    assert prefixed.param_names["A"] == "other_A"


def test_sample_network_data_is_seeded_and_follows_the_cpts():
    truth = _truth()
    a, b = sample_network_data(truth, 20000, seed=4), sample_network_data(truth, 20000, seed=4)
    assert all(torch.equal(a[n], b[n]) for n in NODES)
    assert not torch.equal(a["D"], sample_network_data(truth, 20000, seed=5)["D"])
    est = count_cpts(truth, a)
    for n, (_, table) in _true_cpds().items():
        assert np.abs(est[n][1].numpy() - table).max() < 0.05
    assert all(v.dtype == torch.long and v.shape == (20000,) for v in a.values())


def test_hide_at_random_and_count_cpts_available_cases():
    data = sample_network_data(_truth(), 5000, seed=0)
    holes = hide_at_random(data, 0.3, nodes=["B", "D"], seed=1)
    assert torch.equal(holes["A"], data["A"]) and (data["B"] >= 0).all()  # input untouched
    frac = float((holes["B"] < 0).float().mean())
    assert 0.27 < frac < 0.33
    kept = (holes["B"] >= 0) & (holes["A"] >= 0)
    counts = np.zeros((2, 3))
    np.add.at(counts, (holes["A"][kept].numpy(), holes["B"][kept].numpy()), 1)
    np.testing.assert_allclose(count_cpts(_truth(), holes)["B"][1].numpy(),
                               counts / counts.sum(-1, keepdims=True), rtol=1e-12)
    smooth = count_cpts(_truth(), {"A": [0, 0, 1]}, pseudo_count=1.0)["A"][1].numpy()
    np.testing.assert_allclose(smooth, [3 / 5, 2 / 5])
    assert torch.equal(count_cpts(_truth(), {"A": [0, 1]})["D"][1], torch.full((2, 4), 0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="pseudo_count"):
        count_cpts(_truth(), data, pseudo_count=-1)


def test_encode_data_state_names_and_missing_markers():
    asia = example_network("asia")
    m = learnable_from_network(asia)
    cols = encode_data(m, {"smoke": ["yes", None, "no", float("nan")], "lung": [0, 1, -1, 1.0]})
    assert cols["smoke"].tolist() == [0, -1, 1, -1] and cols["lung"].tolist() == [0, 1, -1, 1]
    with pytest.raises(ppl.DataError, match="'maybe' is not a state of 'smoke'"):
        encode_data(m, {"smoke": ["yes", "maybe"]})
    with pytest.raises(ppl.DataError, match=r"column 'lung' holds 2"):
        encode_data(m, {"lung": [2]})
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"smoke": ["yes", None], "xray": pd.array([pd.NA, "no"], dtype="string")})
    assert {k: v.tolist() for k, v in encode_data(m, frame).items()} == {"smoke": [0, -1], "xray": [-1, 1]}


def test_learned_network_and_from_network():
    asia = example_network("asia")
    m = learnable_from_network(asia, init="network")
    assert m.name == "learnable_asia" and m.state_names == asia.state_names
    net = learned_network(m, m.initial_params)
    for n in asia.nodes:
        assert torch.allclose(net.cpds[n][1], asia.cpds[n][1], atol=1e-12)
        assert net.cpds[n][0] == asia.cpds[n][0]
    # exact queries on the learned network work as on any network
    post = ppl.infer(net, {"xray": "yes"}, method="exact")
    ref = ppl.infer(asia, {"xray": "yes"}, method="exact")
    assert post.log_evidence == pytest.approx(ref.log_evidence, rel=1e-12)
    with pytest.raises(ppl.ModelError, match="node 'asia': params has no 'cpt_asia'"):
        learned_network(m, {})
