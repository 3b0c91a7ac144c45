"""Data binding and model validation (ppl.dsl, DESIGN.md "What a user does" and "Errors").

Every expected value here is hand-derived from the model written in the test, or read
off Pyro itself (``poutine.trace``, ``Predictive``): nothing is computed with ppl's code.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Predictive
from pyro.ops.indexing import Vindex

import ppl
import ppl.distributions as dist

F64 = torch.float64
W = torch.tensor([0.3, 0.7], dtype=F64)  # p(z)
E = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5]], dtype=F64)  # p(obs | z)


@ppl.model
def mixture(x, scale=1.0):
    """``z_n ~ Cat(W)``, ``obs_n | z_n ~ Cat(E[z_n])`` observed through the argument ``x``."""
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(W))
        ppl.sample("obs", dist.Categorical(Vindex(E)[z]), obs=x)


@ppl.model
def coin():
    """``c ~ Bernoulli(0.3)`` and four flips ``y_i | c ~ Bernoulli(0.2 + 0.5 c)`` (``y`` unobserved in the code)."""
    c = ppl.sample("c", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
    with ppl.plate("flips", 4):
        ppl.sample("y", dist.Bernoulli(0.2 + 0.5 * c))


def coin_posterior(ys):
    """p(c = 1 | y) by hand."""
    like = [math.prod((p if y else 1 - p) for y in ys) for p in (0.2, 0.7)]
    return 0.3 * like[1] / (0.7 * like[0] + 0.3 * like[1])


@ppl.model
def gauss(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu, 1.0), obs=x)


def small_bn():
    return ppl.models.bayesian_network(
        {
            "a": ([], [0.2, 0.3, 0.5]),
            "b": (["a"], [[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]]),
        },
        state_names={"a": ["lo", "mid", "hi"], "b": ["no", "yes"]},
        name="small",
    )


# ----------------------------------------------------------------- argument vs site keys
def test_argument_keys_and_site_keys_are_split():
    x = torch.tensor([0, 2, 1])
    bound = mixture.bind({"x": x, "scale": 2.0, "z": [1, 0, 1]})
    assert set(bound.kwargs) == {"x", "scale"}
    assert set(bound.observations) == {"z"}
    assert bound.kwargs["scale"] == 2.0
    g = ppl.compile(mixture, {"x": x, "z": [1, 0, 1]})
    assert g.variables["z"].role == "observed"
    assert g.variables["obs"].role == "observed"
    assert g.latent() == []
    # without the site key z stays latent
    g2 = ppl.compile(mixture, {"x": x})
    assert g2.variables["z"].role == "latent"


def test_observed_site_key_conditions_the_site():
    # coin: observe the flips by site name; p(c=1 | y) by hand
    ys = [1, 1, 0, 1]
    post = ppl.infer(coin, {"y": torch.tensor(ys, dtype=F64)}, method="exact")
    assert float(post.probs("c")[1]) == pytest.approx(coin_posterior(ys), abs=1e-12)


def test_unknown_key_lists_valid_names():
    with pytest.raises(ppl.DataError, match="bogus") as info:
        ppl.compile(mixture, {"x": torch.tensor([0, 1]), "bogus": 1})
    msg = str(info.value)
    for name in ("x", "scale", "z", "obs"):
        assert f"'{name}'" in msg, (name, msg)
    assert isinstance(info.value, ValueError)  # DataError derives from ValueError


def test_plate_name_is_not_a_valid_data_key():
    with pytest.raises(ppl.DataError, match="flips") as info:
        ppl.compile(coin, {"flips": torch.ones(4)})
    # the list of valid sample sites names the sample sites, not the plate
    assert "'flips'" not in str(info.value).split("sample site")[-1]


def test_deterministic_and_factor_sites_cannot_be_observed():
    @ppl.model
    def m():
        a = ppl.sample("a", dist.Bernoulli(0.5))
        ppl.deterministic("d", a * 2)
        ppl.factor("f", a * 0.5)

    for key in ("d", "f"):
        with pytest.raises(ppl.DataError, match=rf"'{key}'.*\['a'\]"):
            ppl.compile(m, {key: 1.0})


def test_missing_required_argument():
    with pytest.raises(ppl.DataError, match="'x'"):
        ppl.compile(mixture, {})
    with pytest.raises(ppl.DataError, match="'x'"):
        ppl.compile(mixture, {"z": [0, 1]})


def test_data_must_be_a_mapping():
    with pytest.raises(ppl.DataError, match="mapping"):
        ppl.compile(mixture, [("x", [0, 1])])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("kind", ["numpy", "tensor", "list"])
def test_nan_inf_in_argument_names_the_key(bad, kind):
    values = [0.5, bad, 1.0]
    x = {"numpy": np.array(values), "tensor": torch.tensor(values), "list": values}[kind]
    with pytest.raises(ppl.DataError, match=r"'x'.*(NaN|nan|inf)"):
        ppl.compile(gauss, {"x": x})


def test_nan_in_observed_site_names_the_key():
    with pytest.raises(ppl.DataError, match="'mu'"):
        ppl.compile(gauss, {"x": [0.0, 1.0], "mu": float("nan")})


def test_non_numeric_observation():
    with pytest.raises(ppl.DataError, match="'mu'"):
        ppl.compile(gauss, {"x": [0.0, 1.0], "mu": "abc"})


# ----------------------------------------------------------------- support and shape
def test_categorical_observed_outside_support():
    # z has 2 states (support {0, 1}); 5 is outside it. z is observed but its value is
    # not used to index anything afterwards here: obs is left out of the model.
    @ppl.model
    def cat():
        ppl.sample("z", dist.Categorical(torch.tensor([0.2, 0.3, 0.5])))

    with pytest.raises(ppl.DataError, match=r"'z'.*5.*support") as info:
        ppl.compile(cat, {"z": 5})
    assert "2" in str(info.value)  # the support's upper bound is named
    with pytest.raises(ppl.DataError, match=r"'z'"):
        ppl.compile(cat, {"z": -1})


def test_bernoulli_observed_outside_support():
    with pytest.raises(ppl.DataError, match=r"'y'.*2.*support") as info:
        ppl.compile(coin, {"y": torch.tensor([0.0, 1.0, 2.0, 0.0])})
    assert "Bernoulli" in str(info.value) or "oolean" in str(info.value)
    with pytest.raises(ppl.DataError, match=r"'y'.*support"):
        ppl.compile(coin, {"y": torch.tensor([0.0, 1.0, 0.5, 0.0])})


def test_bn_parent_observed_outside_support_is_a_data_error():
    with pytest.raises(ppl.DataError, match=r"'a'.*support"):
        ppl.compile(small_bn(), {"a": 5})


def test_bn_leaf_observed_outside_support_lists_states():
    with pytest.raises(ppl.DataError, match=r"'b'.*support.*no.*yes"):
        ppl.compile(small_bn(), {"b": 5})


def test_wrong_shape_observation():
    with pytest.raises(ppl.DataError, match=r"'y'.*\(3,\).*\(4,\)"):
        ppl.compile(coin, {"y": torch.ones(3)})
    with pytest.raises(ppl.DataError, match=r"'y'"):
        ppl.compile(coin, {"y": torch.ones(5)})


def test_observation_with_extra_dims_is_a_data_error():
    ys = torch.ones(2, 4, dtype=F64)
    try:
        post = ppl.infer(coin, {"y": ys}, method="exact")
    except ppl.DataError as e:
        assert "'y'" in str(e)
        return
    # if accepted at all, it must mean 8 observations (as Pyro's log_prob_sum would)
    assert float(post.probs("c")[1]) == pytest.approx(coin_posterior([1] * 8), abs=1e-9)


def test_wrong_shape_argument_surfaces_as_model_or_data_error():
    # x of shape (2, 3) for a 1-d plate: the model itself fails inside its plate
    with pytest.raises((ppl.ModelError, ppl.DataError)):
        ppl.compile(mixture, {"x": torch.zeros(2, 3, dtype=torch.long)})


# ----------------------------------------------------------------- dtypes and copies
def test_dtype_rules():
    b = gauss.bind({"x": np.array([1, 2, 3], dtype=np.int32)})
    assert b.kwargs["x"].dtype == torch.int64
    b = gauss.bind({"x": [1, 2, 3]})
    assert b.kwargs["x"].dtype == torch.int64
    b = gauss.bind({"x": np.array([1.0, 2.0])})
    assert b.kwargs["x"].dtype == torch.float64
    b = gauss.bind({"x": torch.tensor([1.0, 2.0], dtype=F64)})
    assert b.kwargs["x"].dtype == torch.float64
    b = gauss.bind({"x": np.array([True, False])})
    assert b.kwargs["x"].is_floating_point()
    assert b.kwargs["x"].tolist() == [1.0, 0.0]
    b = coin.bind({"y": [True, False, True, True]})
    assert b.observations["y"].is_floating_point()
    assert b.observations["y"].tolist() == [1.0, 0.0, 1.0, 1.0]
    b = mixture.bind({"x": [0, 1], "z": np.array([1, 0], dtype=np.int16)})
    assert b.observations["z"].dtype == torch.int64
    # float64 observations stay float64 and give the hand-derived posterior
    b = gauss.bind({"x": [0.0], "mu": np.float64(0.25)})
    assert b.observations["mu"].dtype == torch.float64


def test_bool_observations_give_the_float_posterior():
    ys = [True, False, True, True]
    post = ppl.infer(coin, {"y": ys}, method="exact")
    # bool data becomes the default float dtype (float32): Bernoulli.log_prob then runs at
    # float32 precision, hence the looser tolerance
    assert float(post.probs("c")[1]) == pytest.approx(coin_posterior(ys), abs=1e-6)


def test_integer_observations_of_a_bernoulli_site():
    ys = [1, 0, 1, 1]
    try:
        post = ppl.infer(coin, {"y": np.array(ys)}, method="exact")
    except ppl.DataError as e:
        assert "'y'" in str(e)
        return
    assert float(post.probs("c")[1]) == pytest.approx(coin_posterior(ys), abs=1e-12)


def test_user_objects_are_never_modified():
    @ppl.model
    def mutating(x, y):
        x[0] = 99.0  # in-place writes on the model's own inputs
        x.mul_(3.0)
        y.add_(1.0)
        mu = ppl.sample("mu", dist.Bernoulli(torch.tensor(0.5, dtype=F64)))
        with ppl.plate("data", len(x)):
            ppl.sample("obs", dist.Normal(mu + 0.0 * x, 1.0), obs=y)

    x_np = np.array([1.0, 2.0, 3.0])
    y_t = torch.tensor([0.5, -0.5, 1.5], dtype=F64)
    x_copy, y_copy = x_np.copy(), y_t.clone()
    # a model that writes into its inputs is refused, and the user's objects stay as they were
    with pytest.raises(ppl.ModelError, match="modified its argument 'x' in place"):
        ppl.compile(mutating, {"x": x_np, "y": y_t})
    with pytest.raises(ppl.ModelError, match="modified its argument 'x' in place"):
        ppl.infer(mutating, {"x": x_np, "y": y_t}, method="exact")
    assert np.array_equal(x_np, x_copy)
    assert torch.equal(y_t, y_copy)

    x_list = [1.0, 2.0, 3.0]
    with pytest.raises(ppl.ModelError, match="modified its argument 'x' in place"):
        ppl.infer(mutating, {"x": x_list, "y": [0.0, 0.0, 0.0]}, method="exact")
    assert x_list == [1.0, 2.0, 3.0]


def test_bound_values_are_copies():
    x_np = np.array([0, 1, 2])
    z_t = torch.tensor([1, 0, 1])
    bound = mixture.bind({"x": x_np, "z": z_t})
    assert not np.shares_memory(bound.kwargs["x"].numpy(), x_np)
    assert bound.observations["z"].data_ptr() != z_t.data_ptr()
    bound.kwargs["x"][0] = 7
    bound.observations["z"][0] = 7
    assert x_np.tolist() == [0, 1, 2] and z_t.tolist() == [1, 0, 1]


def test_observed_values_survive_inference_unchanged():
    x = torch.tensor([0, 2, 1, 2])
    before = x.clone()
    post = ppl.infer(mixture, {"x": x}, method="exact")
    assert torch.equal(x, before)
    # hand-derived posterior of each z_n: W[k] E[k, x_n] / sum_k W[k] E[k, x_n]
    expect = W[:, None] * E[:, x]
    expect = (expect / expect.sum(0)).T
    assert torch.allclose(post.probs("z"), expect, atol=1e-12)


# ----------------------------------------------------------------- state names
def test_state_names_in_data():
    bn = small_bn()
    by_name = ppl.infer(bn, {"b": "yes"}, method="exact")
    by_index = ppl.infer(bn, {"b": 1}, method="exact")
    # p(a | b = yes) by hand: prior * P(yes | a)
    joint = torch.tensor([0.2 * 0.1, 0.3 * 0.5, 0.5 * 0.9], dtype=F64)
    assert torch.allclose(by_name.probs("a"), joint / joint.sum(), atol=1e-12)
    assert torch.allclose(by_name.probs("a"), by_index.probs("a"), atol=0)
    assert by_name.log_evidence == pytest.approx(math.log(float(joint.sum())), abs=1e-12)
    g = ppl.compile(bn, {"a": "hi"})
    assert g.bound.observations["a"].item() == 2


def test_unknown_state_name_lists_states():
    with pytest.raises(ppl.DataError, match=r"'a'.*'huge'.*\['lo', 'mid', 'hi'\]"):
        ppl.compile(small_bn(), {"a": "huge"})
    with pytest.raises(ppl.DataError, match=r"'b'.*\['no', 'yes'\]"):
        ppl.compile(small_bn(), {"b": "Yes"})


# ----------------------------------------------------------------- model errors
def test_duplicate_site_name_is_a_model_error():
    @ppl.model
    def dup():
        ppl.sample("a", dist.Normal(0.0, 1.0))
        ppl.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(ppl.ModelError, match="'a'"):
        ppl.compile(dup)
    with pytest.raises(ppl.ModelError):
        ppl.analyze(dup)
    with pytest.raises(ppl.ModelError):
        ppl.infer(dup, method="exact")


def test_model_raising_is_a_model_error():
    @ppl.model
    def boom(x):
        ppl.sample("a", dist.Bernoulli(0.5))
        raise ZeroDivisionError("custom failure 1234")

    with pytest.raises(ppl.ModelError, match="custom failure 1234") as info:
        ppl.compile(boom, {"x": 1.0})
    assert isinstance(info.value, ppl.PPLError)
    assert "boom" in str(info.value)


def test_inconsistent_plate_sizes_are_model_errors():
    @ppl.model
    def same_name_two_sizes():
        with ppl.plate("p", 3):
            ppl.sample("a", dist.Normal(0.0, 1.0))
        with ppl.plate("p", 4):
            ppl.sample("b", dist.Normal(0.0, 1.0))

    @ppl.model
    def batch_vs_plate():
        with ppl.plate("p", 3):
            ppl.sample("a", dist.Normal(0.0, 1.0).expand([4]))

    with pytest.raises(ppl.ModelError, match="'p'|p"):
        ppl.compile(same_name_two_sizes)
    with pytest.raises(ppl.ModelError, match="3.*4|4.*3"):
        ppl.compile(batch_vs_plate)


# ----------------------------------------------------------------- still a Pyro model
def test_decorated_model_is_a_pyro_model():
    assert isinstance(mixture, ppl.Model)
    assert mixture.__name__ == "mixture" and "observed through" in mixture.__doc__
    x = torch.tensor([0, 2, 1])
    pyro.set_rng_seed(0)
    tr = poutine.trace(mixture).get_trace(x)
    assert tr.nodes["z"]["value"].shape == (3,)
    assert tr.nodes["obs"]["is_observed"]
    lp = tr.log_prob_sum()
    z = tr.nodes["z"]["value"]
    hand = (W[z].log() + E[z, x].log()).sum()
    assert float(lp) == pytest.approx(float(hand), abs=1e-10)

    # conditioning through Pyro's own handler
    tr = poutine.trace(poutine.condition(mixture, data={"z": torch.tensor([1, 1, 0])})).get_trace(x)
    assert tr.nodes["z"]["value"].tolist() == [1, 1, 0]

    pred = Predictive(mixture, num_samples=5)(x)
    assert pred["z"].shape == (5, 3)


def test_calling_the_model_calls_the_function():
    @ppl.model
    def f(a, b=2):
        return a + b

    assert f(1) == 3 and f(1, b=5) == 6
    assert ppl.model(f) is f  # decorating a Model again is a no-op
    named = ppl.model(name="renamed")(lambda: None)
    assert named.name == "renamed"
    with pytest.raises(TypeError):
        ppl.model(42)


def test_a_traced_run_counts_its_sites_on_a_progress_bar(monkeypatch):
    """Long runs (a big unrolled markov loop) show a count of sites on a terminal: the
    bar gets one update per sample site and is closed when the run ends."""
    import tqdm.auto

    import ppl.dsl

    made = []

    class Recorder:
        def __init__(self, **kwargs):
            self.kwargs, self.n, self.closed = kwargs, 0, False
            made.append(self)

        def update(self, k=1):
            self.n += k

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)

    @ppl.model
    def chain(y):
        x = None
        for t in ppl.markov(range(len(y))):
            x = ppl.sample(f"x_{t}", dist.Bernoulli(torch.tensor(0.5) if x is None else 0.2 + 0.6 * x))
            ppl.sample(f"y_{t}", dist.Normal(x, 1.0), obs=y[t])

    ppl.dsl.trace_model(ppl.model(chain), ppl.model(chain).bind({"y": torch.zeros(7)}))
    assert len(made) == 1 and made[0].n == 14 and made[0].closed
    assert made[0].kwargs["delay"] == ppl.dsl.PROGRESS_DELAY and made[0].kwargs["disable"] is None
