"""A careless user's catalogue (issue 17): bad inputs and edge cases across the API, each
answered by the right typed ppl error naming the site or argument, or by the right number.

Every case is small and fast (the file runs in well under 25 s on one core): a
careless-input test needs no converged answer.  The other bad-input tests live in
test_bad_data.py, test_dsl_data.py, test_options.py, test_purity.py and test_fuzz.py;
these are the cases they did not cover.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pyro
import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.cli import main as cli_main

F = torch.float64
X = torch.tensor([0.1, 0.5, -0.3], dtype=F)


@ppl.model
def gauss(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu, 1.0), obs=x)


@ppl.model
def mix(x):
    w = ppl.param("w", torch.tensor([0.5, 0.5], dtype=F), constraint=dist.constraints.simplex)
    loc = ppl.param("loc", torch.tensor([-1.0, 1.0], dtype=F))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.Normal(loc[z], 1.0), obs=x)


@ppl.model
def positive(x):
    s = ppl.sample("s", dist.HalfNormal(torch.tensor(1.0, dtype=F)))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(0.0, s), obs=x)


@ppl.model
def sized(x, n=3):
    z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.5, dtype=F)))
    with ppl.plate("data", n):
        ppl.sample("obs", dist.Normal(z.to(F), 1.0), obs=x)


def _observing(name, make):
    """A model with a Normal latent ``mu`` and one observed site ``y ~ make(mu)``."""

    @ppl.model(name=name)
    def m(y):
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
        ppl.sample("y", make(mu), obs=y)

    return m


def _with_latent(name, make):
    """A model with one latent ``z ~ make()`` and an observation ``x ~ Normal(z, 1)``."""

    @ppl.model(name=name)
    def m(x):
        z = ppl.sample("z", make())
        ppl.sample("x", dist.Normal(z.to(F), 1.0), obs=x)

    return m


def _with_param(name, init, constraint):
    @ppl.model(name=name)
    def m(x):
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
        s = ppl.param("s", init, constraint=constraint)
        ppl.sample("x", dist.Normal(mu, s), obs=x)

    return m


def _raises(call, error, *phrases):
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    text = str(info.value)
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in {text!r}"
    return info.value


# ---------------------------------------------------------------- data values
DATA = [
    ("datetime64", np.array(["2020-01-01"], dtype="datetime64[D]"), ["data['x']", "datetime64"]),
    ("timedelta64", np.array([1, 2], dtype="timedelta64[s]"), ["data['x']", "timedelta64"]),
    ("complex numpy", np.array([1 + 2j, 3.0]), ["data['x']", "complex", "real numbers"]),
    ("complex torch", torch.tensor([1 + 2j]), ["data['x']", "complex"]),
    ("sparse tensor", X.to_sparse(), ["data['x']", "sparse", "to_dense"]),
    ("meta tensor", torch.empty(3, device="meta"), ["data['x']", "meta tensor"]),
    ("object array with None", np.array([1.0, None], dtype=object), ["data['x']", "missing values"]),
    ("decimal objects", [__import__("decimal").Decimal("1.5")], ["data['x']", "dtype object"]),
    ("ragged list", [[1.0], [2.0, 3.0]], ["data['x']", "cannot convert"]),
    ("strings", ["1.0", "nan"], ["data['x']", "expected numbers"]),
    ("float16 inf", np.array([1.0, np.inf], dtype=np.float16), ["data['x']", "NaN or inf"]),
    ("pandas NA", pd.Series([1.0, None, 3.0]), ["observed site 'obs'", "NaN"]),
    ("pandas frame as a value", pd.DataFrame({"a": [0.1, 0.5], "b": [1.0, 2.0]}), ["observed site 'obs'", "does not fit"]),
    ("list holding a tensor that requires grad", [torch.tensor(1.0, requires_grad=True), 2.0],
     ["data['x']", "requires grad"]),
    ("a set", {1.0, 2.0}, ["observed site 'obs'", "as numbers"]),
]


@pytest.mark.parametrize("value, phrases", [pytest.param(v, p, id=i) for i, v, p in DATA])
def test_bad_data_values_are_data_errors(value, phrases):
    _raises(lambda: ppl.infer(gauss, {"x": value}, method="laplace"), ppl.DataError, *phrases)


@pytest.mark.parametrize("data, phrases", [
    pytest.param(pd.DataFrame({"x": [0.1, 0.5]}), ["data must be a mapping", "DataFrame"], id="dataframe as data"),
    pytest.param([X], ["data must be a mapping", "list"], id="list as data"),
    pytest.param({1: X}, ["data keys must be strings"], id="int key"),
])
def test_data_that_is_no_mapping_of_names(data, phrases):
    _raises(lambda: ppl.infer(gauss, data, method="laplace"), ppl.DataError, *phrases)


# ---------------------------------------------------------------- observed values outside the support
SUPPORT = [
    ("binomial over its total", lambda mu: dist.Binomial(3, logits=mu), 5.0, ["site 'y'", "value 5.0", "Binomial"]),
    ("uniform outside its interval", lambda mu: dist.Uniform(torch.tensor(0.0, dtype=F), 1.0), 1.5,
     ["site 'y'", "Interval", "Uniform"]),
    ("lognormal at zero", lambda mu: dist.LogNormal(mu, 1.0), 0.0, ["site 'y'", "LogNormal"]),
    ("poisson almost an integer", lambda mu: dist.Poisson(mu.exp()), 1.0000001, ["site 'y'", "Poisson"]),
    ("geometric negative", lambda mu: dist.Geometric(logits=mu), -1.0, ["site 'y'", "Geometric"]),
    ("one-hot that is not", lambda mu: dist.OneHotCategorical(logits=torch.stack([mu, -mu])), [1.0, 1.0],
     ["site 'y'", "OneHot"]),
]


@pytest.mark.parametrize("method", ["laplace", "svi"])
@pytest.mark.parametrize("make, value, phrases", [pytest.param(m, v, p, id=i) for i, m, v, p in SUPPORT])
def test_observations_outside_their_support(make, value, phrases, method):
    model = _observing("outside", make)
    _raises(lambda: ppl.infer(model, {"y": torch.tensor(value, dtype=F)}, method=method, num_steps=5)
            if method == "svi" else ppl.infer(model, {"y": torch.tensor(value, dtype=F)}, method=method),
            ppl.DataError, "outside the support", *phrases)


# ---------------------------------------------------------------- what the model builds
LATENTS = [
    ("categorical with a negative probability", lambda: dist.Categorical(probs=torch.tensor([0.5, -0.1, 0.6], dtype=F)),
     ["site 'z'", "Categorical parameter 'probs'", "-0.1", "Simplex"]),
    ("categorical with all-zero probabilities", lambda: dist.Categorical(probs=torch.zeros(3, dtype=F)),
     ["site 'z'", "Categorical parameter 'probs'", "nan", "all zero"]),
    ("categorical with all logits -inf", lambda: dist.Categorical(logits=torch.full((3,), -float("inf"), dtype=F)),
     ["site 'z'", "Categorical parameter 'logits'", "nan"]),
    ("a flat prior Normal(0, inf)", lambda: dist.Normal(torch.tensor(0.0, dtype=F), float("inf")),
     ["site 'z'", "Normal parameter 'scale' = inf", "not finite", "wide finite scale"]),
    ("Uniform(0, inf)", lambda: dist.Uniform(torch.tensor(0.0, dtype=F), float("inf")),
     ["site 'z'", "Uniform parameter 'high' = inf"]),
    ("Bernoulli(1.5)", lambda: dist.Bernoulli(torch.tensor(1.5, dtype=F)), ["site 'z'", "'probs' = 1.5"]),
    ("Dirichlet with zero concentration", lambda: dist.Dirichlet(torch.zeros(3, dtype=F)),
     ["site 'z'", "Dirichlet parameter 'concentration'"]),
]


@pytest.mark.parametrize("method", ["exact", "laplace", "svi", "auto"])
@pytest.mark.parametrize("make, phrases", [pytest.param(m, p, id=i) for i, m, p in LATENTS])
def test_invalid_distribution_parameters_name_the_site_in_every_method(make, phrases, method):
    model = _with_latent("bad_params", make)
    _raises(lambda: ppl.infer(model, {"x": torch.tensor(1.0, dtype=F)}, method=method), ppl.ModelError, *phrases)


def test_minus_inf_logits_that_exclude_a_state_are_fine():
    model = _with_latent("excluded", lambda: dist.Categorical(logits=torch.tensor([0.0, -float("inf"), 0.0], dtype=F)))
    post = ppl.infer(model, {"x": torch.tensor(1.0, dtype=F)}, method="exact")
    # x = 1 is as far from z = 0 as from z = 2, and z = 1 is excluded: posterior (1/2, 0, 1/2)
    assert torch.allclose(post.probs("z"), torch.tensor([0.5, 0.0, 0.5], dtype=F), atol=1e-12)


PARAMS = [
    ("negative init of a positive param", torch.tensor(-1.0, dtype=F), dist.constraints.positive,
     ["ppl.param 's'", "initial value -1", "GreaterThan"]),
    ("NaN init", torch.tensor(float("nan"), dtype=F), dist.constraints.positive,
     ["ppl.param 's'", "initial value holds nan", "init={'s': value}"]),
    ("inf init", torch.tensor(float("inf"), dtype=F), dist.constraints.real, ["ppl.param 's'", "holds inf"]),
    ("init of a unit-interval param at 1.5", torch.tensor(1.5, dtype=F), dist.constraints.unit_interval,
     ["ppl.param 's'", "initial value 1.5", "Interval"]),
    ("a simplex init that is not one", torch.tensor([0.9, 0.9], dtype=F), dist.constraints.simplex,
     ["ppl.param 's'", "[0.9, 0.9]", "Simplex"]),
]


@pytest.mark.parametrize("method", ["exact", "map", "laplace", "svi"])
@pytest.mark.parametrize("init, constraint, phrases", [pytest.param(i, c, p, id=n) for n, i, c, p in PARAMS])
def test_param_inits_outside_their_constraint_name_the_param(init, constraint, phrases, method):
    model = _with_param("declared", init, constraint)
    _raises(lambda: ppl.infer(model, {"x": torch.tensor(1.0, dtype=F)}, method=method), ppl.ModelError, *phrases)


@pytest.mark.parametrize("n, error, phrases", [
    pytest.param(2.5, ppl.ModelError, ["plate 'data'", "size 2.5", "whole number"], id="fractional size"),
    pytest.param("3", ppl.ModelError, ["plate 'data'", "size '3'"], id="string size"),
    pytest.param(5, ppl.DataError, ["observed site 'obs'", "(3,)", "(5,)"], id="larger than the data"),
    pytest.param(1, ppl.DataError, ["observed site 'obs'", "(3,)", "(1,)"], id="smaller than the data"),
])
def test_plate_sizes_that_do_not_fit(n, error, phrases):
    _raises(lambda: ppl.infer(sized, {"x": X, "n": n}, method="exact"), error, *phrases)


def test_an_empty_plate_in_the_code_names_the_plate():
    @ppl.model
    def empty():
        with ppl.plate("data", 0):
            ppl.sample("z", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))

    _raises(lambda: ppl.infer(empty, {}, method="laplace"), ppl.ModelError, "model 'empty'", "plate has size 0")


@pytest.mark.parametrize("n", [3, 3.0, np.int64(3), torch.tensor(3)])
def test_whole_plate_sizes_of_any_type_give_the_exact_log_evidence(n):
    x = X.numpy()
    like = [np.prod(np.exp(-0.5 * (x - z) ** 2) / np.sqrt(2 * np.pi)) for z in (0.0, 1.0)]
    post = ppl.infer(sized, {"x": X, "n": n}, method="exact")
    assert post.log_evidence == pytest.approx(np.log(0.5 * like[0] + 0.5 * like[1]), abs=1e-12)


# ---------------------------------------------------------------- what is given as the model
@pytest.mark.parametrize("call", [
    pytest.param(lambda: ppl.infer(3, {"x": X}), id="infer"),
    pytest.param(lambda: ppl.infer("gauss", {"x": X}), id="infer a name"),
    pytest.param(lambda: ppl.analyze(None, {"x": X}), id="analyze"),
    pytest.param(lambda: ppl.compare(3, {"x": X}, methods=["laplace"]), id="compare"),
    pytest.param(lambda: ppl.compile([gauss], {"x": X}), id="compile"),
])
def test_a_model_that_is_not_callable_is_an_option_error(call):
    _raises(call, ppl.OptionError, "model must be a ppl.model or a callable model function")


def test_a_plain_pyro_function_is_a_model():
    def plain(x):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)

    post = ppl.infer(plain, {"x": X}, method="cavi")
    assert float(post.mean("mu")) == pytest.approx(float(X.sum()) / (3 + 1e-2), abs=1e-10)


def test_a_model_without_sites_in_svi():
    @ppl.model
    def nothing(x):
        pass

    post = ppl.infer(nothing, {"x": X}, method="svi", num_steps=5)
    assert post.log_evidence == 0 and post.elbo == 0


# ---------------------------------------------------------------- options
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["exact", "laplace", "nuts"])
def test_half_precision_is_refused_naming_the_method(dtype, method):
    model = mix if method == "exact" else gauss
    _raises(lambda: ppl.infer(model, {"x": X}, method=method, dtype=dtype), ppl.OptionError,
            f"option dtype={dtype} of method '{method}'", "too coarse")


INITS = [
    ({"nope": 1.0}, ["init names 'nope'", "not a continuous latent site", "['s']"]),
    ({"s": float("nan")}, ["init['s']", "finite real numbers"]),
    ({"s": torch.ones(3)}, ["init['s'] has shape (3,)", "expects ()"]),
    ({"s": "one"}, ["init['s']", "expected a tensor or number", "str"]),
    ({"s": -1.0}, ["init['s']", "outside the support of site 's'"]),
]


@pytest.mark.parametrize("method", ["map", "svi"])
@pytest.mark.parametrize("init, phrases", [pytest.param(i, p, id=str(list(i.items()))) for i, p in INITS])
def test_bad_starting_values_of_latents_are_option_errors(init, phrases, method):
    opts = {"num_steps": 5} if method == "svi" else {}
    _raises(lambda: ppl.infer(positive, {"x": X}, method=method, init=init, **opts), ppl.OptionError, *phrases)


def test_starting_values_where_the_model_fails():
    _raises(lambda: ppl.infer(positive, {"x": X}, method="map", init={"s": 0}), ppl.OptionError,
            "init: the model fails at the starting values of ['s']", "scale")


def test_integer_starting_values_are_numbers():
    post = ppl.infer(positive, {"x": X}, method="map", init={"s": 1})
    assert torch.isfinite(post.map()["s"]) and post.map()["s"].dtype == F


def test_bad_starting_values_in_cavi():
    _raises(lambda: ppl.infer(gauss, {"x": X}, method="cavi", init={"mu": float("nan")}), ppl.OptionError,
            "init['mu']", "finite")


@pytest.mark.parametrize("kwargs, error, phrases", [
    pytest.param({"methods": []}, ppl.OptionError, ["methods must be a non-empty list"], id="empty"),
    pytest.param({"methods": [3]}, ppl.OptionError, ["each method must be a name or a (name, options) pair"],
                 id="a number"),
    pytest.param({"methods": [("laplace",)]}, ppl.OptionError, ["(name, options) pair"], id="a one-tuple"),
    pytest.param({"methods": ["laplace"], "seed": "a"}, ppl.OptionError, ["option seed='a' of method 'compare'"],
                 id="seed"),
    pytest.param({"methods": ["laplace"], "dtype": torch.int32}, ppl.OptionError, ["option dtype=torch.int32"],
                 id="dtype"),
])
def test_compare_refuses_bad_arguments_before_running(kwargs, error, phrases):
    _raises(lambda: ppl.compare(gauss, {"x": X}, **kwargs), error, *phrases)


def test_compare_takes_one_name_as_a_list_of_it():
    table = ppl.compare(gauss, {"x": X}, methods="cavi")
    assert [r["method"] for r in table.rows] == ["cavi"] and table.rows[0]["status"] == "ok"


# ---------------------------------------------------------------- iterative methods
def test_a_diverging_svi_optimiser_is_a_numerical_error_naming_the_site():
    _raises(lambda: ppl.infer(gauss, {"x": X}, method="svi", lr=1e6, num_steps=50, seed=0), ppl.NumericalError,
            "SVI step", "guide site 'mu", "lower lr (now 1000000.0)")


def test_nuts_with_fewer_than_four_draws_per_chain_is_judged_not_crashed():
    post = ppl.infer(gauss, {"x": X}, method="nuts", num_chains=1, warmup_steps=5, num_samples=1, seed=0)
    assert post.draws("mu").numel() == 1 and post.trust.verdict == "unreliable"


# ---------------------------------------------------------------- posterior queries
@pytest.fixture(scope="module")
def cavi_post():
    return ppl.infer(gauss, {"x": X}, method="cavi", seed=0)


@pytest.mark.parametrize("query", ["mean", "variance", "marginal", "probs"])
@pytest.mark.parametrize("site", [["mu"], 3, None, ("mu",)])
def test_a_site_that_is_not_a_name_is_a_data_error(cavi_post, query, site):
    _raises(lambda: getattr(cavi_post, query)(site), ppl.DataError, f"{query}(): site must be the name",
            "latent sites: ['mu']")


def test_quantile_and_plot_check_the_site_type_too(cavi_post):
    _raises(lambda: cavi_post.quantile(["mu"], 0.5), ppl.DataError, "quantile(): site must be the name")
    _raises(lambda: cavi_post.plot(0, None), ppl.DataError, "plot(): site must be the name")


@pytest.mark.parametrize("budget", ["1GiB", -1, 0, 1.5, float("nan"), True])
def test_a_bad_memory_budget_on_a_posterior_is_an_option_error(budget):
    post = ppl.infer(gauss, {"x": X}, method="cavi")
    post.memory_budget = budget
    _raises(lambda: post.sample(3), ppl.OptionError, "post.memory_budget must be a positive number of bytes")


def test_a_whole_float_memory_budget_is_bytes():
    post = ppl.infer(gauss, {"x": X}, method="cavi")
    post.memory_budget = 1e3
    assert post.budget == 1000 and post.sample(3)["mu"].shape == (3,)
    _raises(lambda: post.sample(1000), ppl.IntractableError, "over the memory budget of 1000 B")


# ---------------------------------------------------------------- seeds and hidden state
@ppl.model
def noisy(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
    shift = torch.rand(()).to(F) + float(np.random.rand()) + random.random()  # unseeded randomness in the model
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu + shift, 1.0), obs=x)


@pytest.mark.parametrize("method", ["cavi", "map"])
def test_a_model_drawing_global_random_numbers_is_reproducible_with_a_seed(method):
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    a = ppl.infer(noisy, {"x": X}, method=method, seed=3)
    b = ppl.infer(noisy, {"x": X}, method=method, seed=3)
    assert torch.equal(a.mean("mu"), b.mean("mu"))
    assert torch.equal(torch.get_rng_state(), states[0]) and np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]


def test_data_that_requires_grad_gives_the_same_answer_and_stays_as_given():
    x = X.clone().requires_grad_()
    post = ppl.infer(gauss, {"x": x}, method="cavi")
    assert float(post.mean("mu")) == pytest.approx(float(X.sum()) / (3 + 1e-2), abs=1e-12)
    assert x.grad is None and x.requires_grad and torch.equal(x.detach(), X)


@pytest.mark.parametrize("value, total", [
    pytest.param(np.array([1, 2, 3]), 6.0, id="int numpy"),
    pytest.param([True, False, True], 2.0, id="bool list"),
    pytest.param(np.array([1, 2, 255], dtype=np.uint8), 258.0, id="uint8"),
    pytest.param(pd.Series([0.5, 1.5, 1.0]), 3.0, id="pandas series"),
    pytest.param(range(4), 6.0, id="range"),
])
def test_data_of_any_numeric_kind_gives_the_closed_form(value, total):
    n = len(value)
    post = ppl.infer(gauss, {"x": value}, method="cavi")
    assert float(post.mean("mu")) == pytest.approx(total / (n + 1e-2), abs=1e-10)  # N(0, 10²) prior, unit noise
    assert float(post.variance("mu")) == pytest.approx(1 / (n + 1e-2), abs=1e-10)


# ---------------------------------------------------------------- command line
def _model_file(tmp_path):
    (tmp_path / "m.py").write_text(
        "import torch, ppl\nimport ppl.distributions as dist\n\n@ppl.model\ndef gauss(x):\n"
        "    mu = ppl.sample('mu', dist.Normal(torch.tensor(0., dtype=torch.float64), 10.))\n"
        "    with ppl.plate('data', len(x)):\n        ppl.sample('obs', dist.Normal(mu, 1.), obs=x)\n")
    (tmp_path / "x.csv").write_text("x\n0.1\n0.5\n-0.3\n")
    return str(tmp_path / "m.py"), str(tmp_path / "x.csv")


@pytest.mark.parametrize("extra, phrase", [
    (["--seed", "-1"], "--seed -1: the seed must be an integer in [0, 2**32 - 1]"),
    (["--seed", str(2**32)], "the seed must be an integer"),
    (["--plot", "/proc/no/such/dir"], "--plot /proc/no/such/dir: cannot create the directory"),
])
def test_cli_refuses_bad_arguments_as_usage_errors(tmp_path, capsys, extra, phrase):
    model, data = _model_file(tmp_path)
    code = cli_main(["infer", model, "--data", data, "-m", "cavi", *extra])
    err = capsys.readouterr().err
    assert code == 2 and phrase in err and "unexpected" not in err


def test_variational_em_whose_params_run_away_is_a_numerical_error():
    @ppl.model
    def collapse(x):
        s = ppl.param("s", torch.tensor(1.0, dtype=F), constraint=dist.constraints.positive)
        loc = ppl.param("loc", torch.tensor([0.0, 1.0], dtype=F))
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F)))
        ppl.sample("x", dist.Normal(loc[z], s), obs=x)

    _raises(lambda: ppl.infer(collapse, {"x": torch.tensor(0.3, dtype=F)}, method="cavi", learn_params=True,
                              max_iter=3),
            ppl.NumericalError, "learn_params=True", "['s', 'loc']", "unbounded or undefined")


# ------------------------------------------------------------------ auto and the user's options
def test_auto_refuses_an_option_value_that_every_method_taking_it_refuses():
    with pytest.raises(ppl.OptionError, match=r"init=\[1.0\] of method 'auto' is accepted by none"):
        ppl.infer(gauss, {"x": X}, init=[1.0], seed=0)


def test_auto_passes_over_a_method_that_refuses_the_value_and_says_what_it_ignored():
    post = ppl.infer(positive, {"x": X}, init={"s": 0.5}, seed=0, time_budget=60)
    attempts = post.diagnostics["routing"]["attempts"]
    laplace = next(a for a in attempts if a["method"] == "laplace")
    assert laplace["left_because"].startswith("not tried: it refuses the option given") and laplace["seconds"] == 0
    returned = attempts[-1]
    assert returned["method"] == post.method and returned["verdict"] is not None
    if post.method not in ("svi", "chees", "nuts", "cavi"):  # methods that take no init say they ignored it
        assert returned["ignored_options"] == ["init"]


def test_an_error_raised_by_the_models_own_code_names_its_line():
    @ppl.model
    def bad_cov(x):
        mu = ppl.sample("mu", dist.Normal(torch.zeros(2, dtype=F), 1.0).to_event(1))
        cov = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F)  # not positive definite
        ppl.sample("x", dist.MultivariateNormal(mu, cov), obs=x)

    with pytest.raises(ppl.ModelError, match=r"raised while being traced at test_careless_catalogue\.py:\d+ "
                                             r"\(`ppl\.sample\(\"x\", dist\.MultivariateNormal\(mu, cov\)"):
        ppl.infer(bad_cov, {"x": torch.zeros(2, dtype=F)}, method="laplace")


def test_analyze_with_a_methods_option_is_an_unknown_option_error():
    with pytest.raises(ppl.UnknownOptionError, match=r"ppl.analyze got option\(s\) \['num_steps'\]"):
        ppl.analyze(gauss, {"x": X}, num_steps=10)
