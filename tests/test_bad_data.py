"""Data that does not fit a model, and models that misuse their data (issue 17, "no
silent wrong answers", the data part): each case raises a typed ppl error whose message
names the key or site, or gives the right number; the user's objects stay unchanged.

Expected numbers are hand-derived (conjugate Normal means, Bayes' rule on two-node
networks); the errors are triggered where the data are bound, so they are the same for
every method, which each case checks with a model the method accepts.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl import cli
from ppl.compiler import compile as compile_graph
from ppl.compiler.observations import CheckObservations
from ppl.distributions import constraints

F = torch.float64
CONTINUOUS = ("laplace", "svi", "nuts", "map", "pathfinder", "cavi")
DISCRETE = ("exact", "em")
METHODS = CONTINUOUS + DISCRETE
TINY = {  # the errors come before any iteration; these keep the cases that get further fast
    "nuts": dict(num_chains=1, warmup_steps=10, num_samples=10),
    "svi": dict(num_steps=5),
    "em": dict(max_iter=2),
}


def infer(model, data, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.infer(model, data, method=method, **TINY.get(method, {}))


@ppl.model
def gauss(x):
    """``mu ~ N(0, 10)``, ``x_n | mu ~ N(mu, 1)``: every continuous method takes it."""
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Normal(mu, 1.0), obs=x)


@ppl.model
def coins(x):
    """``c ~ Bernoulli(p)`` (``p`` a param), flips ``x_n | c ~ Bernoulli(0.2 + 0.5 c)``:
    exact and EM take it."""
    p = ppl.param("p", torch.tensor(0.3, dtype=F), constraint=constraints.unit_interval)
    c = ppl.sample("c", dist.Bernoulli(p))
    with ppl.plate("flips", len(x)):
        ppl.sample("x", dist.Bernoulli(0.2 + 0.5 * c), obs=x)


def model_for(method, continuous, discrete):
    return discrete if method in DISCRETE else continuous


def unchanged(before, after):
    if isinstance(before, torch.Tensor):
        return before.dtype == after.dtype and torch.allclose(before, after, rtol=0, atol=0, equal_nan=True)
    if isinstance(before, np.ma.MaskedArray):
        return np.array_equal(before.data, after.data) and np.array_equal(np.ma.getmaskarray(before),
                                                                          np.ma.getmaskarray(after))
    return np.array_equal(before, after, equal_nan=np.asarray(before).dtype.kind == "f")


def copy_of(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ma.MaskedArray):
        return value.copy()
    return np.array(value, copy=True)


def assert_raises_unchanged(error, fragments, model, data, method):
    """``ppl.infer`` raises ``error`` with every fragment in its message, and leaves the
    values of ``data`` as they were."""
    before = {k: copy_of(v) for k, v in data.items()}
    with pytest.raises(error) as info:
        infer(model, data, method)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    for k, v in data.items():
        assert unchanged(before[k], v), k
    return message


# ------------------------------------------------------------- 1. a key that fights obs=
@ppl.model
def with_obs(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
    ppl.sample("x", dist.Normal(mu, 1.0), obs=x)
    ppl.sample("y", dist.Normal(mu, 1.0), obs=torch.tensor(2.0, dtype=F))


@ppl.model
def coins_with_obs(x):
    p = ppl.param("p", torch.tensor(0.3, dtype=F), constraint=constraints.unit_interval)
    c = ppl.sample("c", dist.Bernoulli(p))
    with ppl.plate("flips", len(x)):
        ppl.sample("x", dist.Bernoulli(0.2 + 0.5 * c), obs=x)
    ppl.sample("y", dist.Bernoulli(0.2 + 0.5 * c), obs=torch.tensor(1.0, dtype=F))


@pytest.mark.parametrize("method", METHODS)
def test_data_key_naming_a_site_observed_in_the_code(method):
    model = model_for(method, with_obs, coins_with_obs)
    x = torch.tensor(0.0, dtype=F) if model is with_obs else torch.tensor([1.0, 0.0], dtype=F)
    data = {"x": x, "y": torch.tensor(5.0 if model is with_obs else 0.0, dtype=F)}
    assert_raises_unchanged(ppl.DataError, ["data key 'y'", "sample site 'y'", "already observes", "obs="],
                            model, data, method)


def test_argument_feeding_obs_is_not_a_conflict():
    # mu ~ N(0, 1), x = 0 and y = 2 each ~ N(mu, 1): posterior N((0 + 2) / 3, 1 / 3) (CAVI is exact here)
    x = torch.tensor(0.0, dtype=F)
    q = ppl.infer(with_obs, {"x": x}, method="cavi", tol=1e-14).marginal("mu")
    assert float(q.loc) == pytest.approx(2.0 / 3.0, abs=1e-9)
    assert float(q.scale) == pytest.approx(math.sqrt(1.0 / 3.0), abs=1e-9)
    assert x.item() == 0.0


# ------------------------------------------------------------------ 2. masked arrays, NaN
@pytest.mark.parametrize("method", METHODS)
def test_masked_array_argument_is_refused(method):
    model = model_for(method, gauss, coins)
    x = np.ma.masked_array([1.0, 0.0, 1.0, 100.0], mask=[0, 0, 0, 1])
    assert_raises_unchanged(ppl.DataError, ["data['x']", "masked array", "1 masked entry", "index (3,)",
                                            "not supported for argument 'x'"], model, {"x": x}, method)


def test_masked_observation_and_masked_tensor_are_refused():
    bn = small_bn()
    b = np.ma.masked_array(np.array(["yes", "no"]), mask=[False, True])
    with pytest.raises(ppl.DataError, match=r"data\['b'\].*masked.*observed site 'b'"):
        ppl.compile(bn, {"b": b[1:]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.masked is a prototype
        x = torch.masked.masked_tensor(torch.tensor([1.0, 2.0], dtype=F), torch.tensor([True, False]))
    with pytest.raises(ppl.DataError, match=r"data\['x'\].*1 masked entry.*index \(1,\)"):
        ppl.compile(gauss, {"x": x})


def test_masked_array_without_masked_entries_is_its_data():
    # mu ~ N(0, 10^2), x_n ~ N(mu, 1): posterior mean sum(x) / (N + 1/100)
    x = np.ma.masked_array([1.0, 2.0, 3.0, 100.0], mask=False)
    post = infer(gauss, {"x": x}, "map")  # the mode of a Gaussian posterior is its mean
    assert float(post.mean("mu")) == pytest.approx(106.0 / 4.01, abs=1e-6)


def test_masked_entries_are_missing_where_the_model_takes_missing_values():
    def network():
        m = ppl.models.learnable_bayesian_network({"rain": [], "wet": ["rain"]}, {"rain": 2, "wet": 2}, seed=0)
        m.missing_values = {"rain": -1, "wet": -1}
        return m

    rain = np.ma.masked_array([0, 1, 0, 1, 1], mask=[0, 0, 1, 0, 0])
    wet = np.ma.masked_array([0, 1, 1, 0, 1], mask=[0, 0, 0, 1, 0])
    masked = infer(network(), {"rain": rain, "wet": wet}, "em")
    coded = infer(network(), {"rain": [0, 1, -1, 1, 1], "wet": [0, 1, 1, -1, 1]}, "em")
    for name in ("cpt_rain", "cpt_wet"):
        assert torch.allclose(masked.params[name], coded.params[name], atol=0)
    assert rain.data.tolist() == [0, 1, 0, 1, 1] and wet.mask.tolist() == [False, False, False, True, False]
    # a model that takes missing entries in some arguments names them when another is masked
    m = network()
    m.missing_values = {"rain": -1}
    with pytest.raises(ppl.DataError, match=r"data\['wet'\].*only in argument\(s\) \['rain'\]"):
        ppl.compile(m, {"rain": rain, "wet": wet})


@pytest.mark.parametrize("method", METHODS)
def test_nan_is_refused_by_every_method(method):
    model = model_for(method, gauss, coins)
    x = torch.tensor([1.0, float("nan"), 0.0], dtype=F)
    assert_raises_unchanged(ppl.DataError, ["data['x']", "NaN", "index (1,)"], model, {"x": x}, method)


# ------------------------------------------------------------ 3. booleans for named states
def small_bn(states_b=("no", "yes")):
    return ppl.models.bayesian_network(
        {"a": ([], [0.2, 0.3, 0.5]), "b": (["a"], [[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]])},
        state_names={"a": ["lo", "mid", "hi"], "b": list(states_b)},
        name="small",
    )


@pytest.mark.parametrize("method", ("exact", "cavi", "map", "svi"))
@pytest.mark.parametrize("value", [True, False, np.bool_(True), [True, False], np.array([True]),
                                   torch.tensor([False, True]), ["yes", True]])
def test_boolean_for_named_states_is_refused(method, value):
    with pytest.raises(ppl.DataError, match=r"data\['b'\] = (True|False) is a boolean.*\['no', 'yes'\]"):
        infer(small_bn(), {"b": value}, method)


def named_bool_model(states):
    def fn():
        a = ppl.sample("a", dist.Categorical(torch.tensor([0.2, 0.3, 0.5], dtype=F)))
        ppl.sample("b", dist.Categorical(torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]], dtype=F)[a]))

    return ppl.model(fn, name="boolstates", state_names={"a": ["lo", "mid", "hi"], "b": states})


@pytest.mark.parametrize("states", [[False, True], [True, False]])
def test_boolean_states_take_booleans_by_value(states):
    # p(a | b = state 1) by hand: prior * P(b = 1 | a); True is state states.index(True)
    post = infer(named_bool_model(states), {"b": True}, "exact")
    k = states.index(True)
    joint = torch.tensor([0.2, 0.3, 0.5], dtype=F) * torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]], dtype=F)[:, k]
    assert torch.allclose(post.probs("a"), joint / joint.sum(), atol=1e-12)


# --------------------------------------------------------- 4. a model that changes its data
@ppl.model
def sub_in_place(x):
    x -= 1
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Normal(mu, 1.0), obs=x)


@ppl.model
def add_in_place(x):
    x.add_(1)
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Normal(mu, 1.0), obs=x)


@ppl.model
def set_item(x):
    x[0] = 5
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Normal(mu, 1.0), obs=x)


@ppl.model
def coins_in_place(x):
    x[0] = 1 - x[0]
    p = ppl.param("p", torch.tensor(0.3, dtype=F), constraint=constraints.unit_interval)
    c = ppl.sample("c", dist.Bernoulli(p))
    with ppl.plate("flips", len(x)):
        ppl.sample("x", dist.Bernoulli(0.2 + 0.5 * c), obs=x)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", [sub_in_place, add_in_place, set_item], ids=lambda m: m.name)
def test_model_writing_into_its_argument_is_refused(method, model):
    model = model_for(method, model, coins_in_place)
    for x in (torch.ones(5, dtype=F), np.ones(5)):
        assert_raises_unchanged(ppl.ModelError, [f"model '{model.name}' modified its argument 'x' in place"],
                                model, {"x": x}, method)


def test_model_writing_into_an_observed_value_or_a_dict_argument_is_refused():
    @ppl.model
    def bump_observed():
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
        with ppl.plate("d", 3):
            y = ppl.sample("y", dist.Normal(mu, 1.0))
        y.add_(1.0)

    y = torch.zeros(3, dtype=F)
    with pytest.raises(ppl.ModelError, match="modified the observed value of site 'y' in place"):
        infer(bump_observed, {"y": y}, "laplace")
    assert torch.equal(y, torch.zeros(3, dtype=F))

    @ppl.model
    def bump_dict(d):
        d["x"] -= 1
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
        with ppl.plate("n", len(d["x"])):
            ppl.sample("x", dist.Normal(mu, 1.0), obs=d["x"])

    d = {"x": torch.ones(4, dtype=F)}
    with pytest.raises(ppl.ModelError, match=r"modified its argument 'd' in place \(the tensor d\['x'\]\)"):
        infer(bump_dict, {"d": d}, "laplace")
    assert torch.equal(d["x"], torch.ones(4, dtype=F))


def test_model_computing_on_a_copy_is_fine():
    @ppl.model
    def shifted(x):
        x = x - 1
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
        with ppl.plate("d", len(x)):
            ppl.sample("x", dist.Normal(mu, 1.0), obs=x)

    x = torch.full((5,), 3.0, dtype=F)
    post = infer(shifted, {"x": x}, "map")
    assert float(post.mean("mu")) == pytest.approx(10.0 / 5.01, abs=1e-6)  # sum(x - 1) / (N + 1/100)
    assert torch.equal(x, torch.full((5,), 3.0, dtype=F))


# ------------------------------------------------------------------------ 5. empty data
@pytest.mark.parametrize("method", METHODS)
def test_empty_data_is_refused(method):
    model = model_for(method, gauss, coins)
    for x in (torch.zeros(0, dtype=F), np.zeros(0), []):
        message = assert_raises_unchanged(ppl.DataError, ["data['x'] is empty", "shape (0,)"],
                                          model, {"x": x}, method)
        assert "ZeroDivisionError" not in message


def test_empty_observation_and_empty_matrix_are_refused():
    @ppl.model
    def rows(x):
        mu = ppl.sample("mu", dist.Normal(torch.zeros(2, dtype=F), 1.0).to_event(1))
        with ppl.plate("n", x.shape[0]):
            ppl.sample("obs", dist.Normal(mu, 1.0).to_event(1), obs=x)

    with pytest.raises(ppl.DataError, match=r"data\['x'\] is empty \(shape \(3, 0\)\)"):
        ppl.compile(rows, {"x": torch.zeros(3, 0, dtype=F)})

    @ppl.model
    def site_only():
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
        with ppl.plate("n", 0 + 2):
            ppl.sample("y", dist.Normal(mu, 1.0))

    with pytest.raises(ppl.DataError, match=r"data\['y'\] is empty"):
        ppl.compile(site_only, {"y": torch.zeros(0, dtype=F)})


# ----------------------------------------------------------------- 6. CSV with empty cells
@pytest.mark.parametrize("text, fragments", [
    ("x\n1.0\n\n2.0\n", ["data['x']", "NaN", "column 'x'", "data row 2", "line 3", "empty"]),    # one column
    ("x\n1.0\n2.0\n\n\n", None),                                                                  # trailing blanks
    ("x\n1.0\nNA\n2.0\n", ["data['x']", "column 'x'", "data row 2", "'NA'"]),
    ("a,b\n1,2.5\n3,\n4,1.0\n", ["data['b']", "column 'b'", "data row 2", "line 3"]),
    ("a,b\n1,2.5\n,\n4,1.0\n", ["data['a']", "column 'a'", "data row 2", "1 more missing cell"]),  # an empty row
    ("a,b\n1,yes\n2,\n", ["data['b']", "column 'b'", "data row 2", "empty"]),                    # text column
])
def test_csv_empty_cells(tmp_path, text, fragments):
    path = tmp_path / "d.csv"
    path.write_text(text)
    if fragments is None:
        assert cli.load_data([str(path)])["x"].tolist() == [1.0, 2.0]
        return
    with pytest.raises(ppl.DataError) as info:
        cli.load_data([str(path)])
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_csv_reader_keeps_nan_and_set_replaces_a_column(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("x\n1.0\n\n2.0\n")
    x = cli.read_csv(path)["x"]
    assert x.shape == (3,) and torch.isnan(x[1])
    assert cli.load_data([str(path)], sets={"x": [1.0]})["x"] == [1.0]


def test_csv_matrix_and_command_line(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("1.0,2.0\n3.0,\n")
    with pytest.raises(ppl.DataError, match=r"data\['X'\] holds NaN.*column 2, data row 2 \(index 1, line 2\)"):
        cli.load_data([str(tmp_path / "m.csv")], matrices=["X"])
    (tmp_path / "model.py").write_text(
        "import torch, ppl\nimport ppl.distributions as dist\n"
        "@ppl.model\ndef g(x):\n"
        "    mu = ppl.sample('mu', dist.Normal(torch.tensor(0., dtype=torch.float64), 10.))\n"
        "    with ppl.plate('d', len(x)):\n        ppl.sample('x', dist.Normal(mu, 1.), obs=x)\n")
    (tmp_path / "x.csv").write_text("x\n1.0\n\n2.0\n")
    code = cli.main(["infer", str(tmp_path / "model.py:g"), "--data", str(tmp_path / "x.csv"),
                     "--method", "laplace"])
    err = capsys.readouterr().err
    assert code == 1 and "data['x'] holds NaN" in err and "column 'x'" in err and "line 3" in err


# ------------------------------------------------------- 7. sites that change from run to run
@ppl.model
def random_structure():
    for i in range(1 + int(torch.randint(0, 1000, ()))):
        ppl.sample(f"a{i}", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
    ppl.sample("y", dist.Normal(torch.tensor(0.0, dtype=F), 1.0), obs=torch.tensor(0.5, dtype=F))


@ppl.model
def random_discrete_structure():
    p = ppl.param("p", torch.tensor(0.3, dtype=F), constraint=constraints.unit_interval)
    for i in range(1 + int(torch.randint(0, 1000, ()))):
        ppl.sample(f"a{i}", dist.Bernoulli(p))
    ppl.sample("y", dist.Bernoulli(torch.tensor(0.5, dtype=F)), obs=torch.tensor(1.0, dtype=F))


@ppl.model
def latent_structure():
    z = ppl.sample("z", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
    for i in range(1 + int(abs(float(z)) * 1000)):
        ppl.sample(f"b{i}", dist.Normal(z, 1.0))


@pytest.mark.parametrize("method", METHODS)
def test_structure_from_random_numbers_is_a_model_error(method):
    model = model_for(method, random_structure, random_discrete_structure)
    with pytest.raises(ppl.ModelError, match=r"sample sites changed between runs.*'a\d+'.*random numbers"):
        infer(model, {}, method)


@pytest.mark.parametrize("method", CONTINUOUS)
def test_structure_from_latent_values_is_a_model_error(method):
    with pytest.raises(ppl.ModelError, match=r"sample sites changed between runs.*'b\d+'.*latent sites"):
        infer(latent_structure, {}, method)


def counting_model():
    """Run k visits sites a0 .. a(k-1): its structure changes on every run, deterministically."""
    runs = [0]

    def fn():
        runs[0] += 1
        p = ppl.param("p", torch.tensor(0.3, dtype=F), constraint=constraints.unit_interval)
        for i in range(runs[0]):
            ppl.sample(f"a{i}", dist.Bernoulli(p))
        ppl.sample("y", dist.Bernoulli(torch.tensor(0.5, dtype=F)), obs=torch.tensor(1.0, dtype=F))

    return ppl.model(fn, name="counting")


def test_compile_checks_the_structure_with_a_second_run():
    with pytest.raises(ppl.ModelError, match=r"model 'counting'.*two runs.*\['a1'\] appear only in the second"):
        compile_graph(counting_model())


@pytest.mark.parametrize("method", DISCRETE)
def test_table_runs_check_the_structure_against_the_graph(method):
    graph = compile_graph(counting_model(), check_structure=False)
    with pytest.raises(ppl.ModelError, match=r"model 'counting'.*sample sites changed between runs.*'a\d+'"):
        infer(graph, None, method)


def test_check_observations_with_sites_checks_every_run():
    import pyro.poutine as poutine

    def run(names):
        def fn():
            for n in names:
                ppl.sample(n, dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
        check = CheckObservations(ppl.model(fn, name="m"), {}, validate=False, sites=["a", "b"])
        return poutine.trace(check(fn)).get_trace()

    assert [n for n, site in run(["a", "b"]).nodes.items() if site["type"] == "sample"] == ["a", "b"]
    with pytest.raises(ppl.ModelError, match=r"model 'm'.*\['b'\] of the first run are missing"):
        run(["a"])
    with pytest.raises(ppl.ModelError, match=r"model 'm'.*\['c'\] appear only in the second"):
        run(["a", "b", "c"])


@pytest.mark.parametrize("method", ("laplace", "map", "pathfinder", "svi"))
def test_backend_runs_check_the_structure_against_the_graph(method):
    runs = [0]

    def fn():  # the first run (the compiled one) has sites a0, a1; every later run only a0
        runs[0] += 1
        for i in range(2 if runs[0] == 1 else 1):
            ppl.sample(f"a{i}", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))

    graph = compile_graph(ppl.model(fn, name="shrinking"), check_structure=False)
    with pytest.raises(ppl.ModelError, match=r"model 'shrinking'.*sample sites changed between runs.*\['a1'\]"):
        infer(graph, None, method)
