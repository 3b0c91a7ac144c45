"""Pure calls (issue 17): every ``ppl.infer`` / ``ppl.analyze`` / ``ppl.compare`` starts its
``ppl.param`` sites at the values the model declares (or at an explicit ``init=``), leaves
Pyro's global param store and the global RNGs (torch, numpy, ``random``) exactly as it found
them, and with ``seed=`` gives the same numbers twice.  References: the states themselves
(compared before and after), closed-form likelihoods of the declared parameters, and a
second identical call.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pyro
import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.distributions import constraints

F64 = torch.float64
X_BIN = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64)
X_REAL = torch.tensor([0.3, 1.9, 1.1, 2.4, 0.8, 1.5], dtype=F64)


@ppl.model
def coin_with_param(x):
    """One hidden coin z ~ Bernoulli(p); p is a ppl.param (declared 0.5)."""
    p = ppl.param("p", torch.tensor(0.5, dtype=F64), constraint=constraints.unit_interval)
    z = ppl.sample("z", dist.Bernoulli(p))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Bernoulli(0.2 + 0.6 * z), obs=x)


@ppl.model
def bernoulli_param(x):
    """No latent: x_i ~ Bernoulli(p), p a ppl.param of the same name as above."""
    p = ppl.param("p", torch.tensor(0.5, dtype=F64), constraint=constraints.unit_interval)
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Bernoulli(p), obs=x)


@ppl.model
def normal_mean(x):
    """mu ~ Normal(0, 10), x_i ~ Normal(mu, s), s a ppl.param (declared 1)."""
    s = ppl.param("s", torch.tensor(1.0, dtype=F64), constraint=constraints.positive)
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Normal(mu, s), obs=x)


def _coin_evidence(p: float) -> float:
    """log p(x; p) of coin_with_param on X_BIN by hand."""
    ones, zeros = int(X_BIN.sum()), int(len(X_BIN) - X_BIN.sum())
    return math.log((1 - p) * 0.2 ** ones * 0.8 ** zeros + p * 0.8 ** ones * 0.2 ** zeros)


RUNS = [
    ("exact", coin_with_param, X_BIN, {}),
    ("em", coin_with_param, X_BIN, {"max_iter": 20}),
    ("map", coin_with_param, X_BIN, {}),
    ("cavi", coin_with_param, X_BIN, {}),
    ("svi", normal_mean, X_REAL, {"num_steps": 60}),
    ("laplace", normal_mean, X_REAL, {}),
    ("pathfinder", normal_mean, X_REAL, {"num_paths": 2}),
    ("nuts", normal_mean, X_REAL, {"num_chains": 2, "warmup_steps": 30, "num_samples": 30}),
    ("chees", normal_mean, X_REAL, {"num_chains": 4, "warmup_steps": 30, "num_samples": 30}),
]


def _infer(model, x, method, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.infer(model, {"x": x}, method=method, **kw)


def _numbers(post) -> dict:
    out = {"elbo": post.elbo, "log_evidence": post.log_evidence}
    for s in post.sites:
        out[f"mean {s}"] = post.mean(s).tolist()
        out[f"variance {s}"] = post.variance(s).tolist()
    out.update({f"param {k}": torch.as_tensor(v).tolist() for k, v in (post.params or {}).items()})
    return out


def _global_state():
    store = pyro.get_param_store()
    return (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone(),
            {k: store[k].detach().clone() for k in store.keys()})


def _same_state(a, b) -> bool:
    return (a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])
            and set(a[3]) == set(b[3]) and all(torch.equal(a[3][k], b[3][k]) for k in a[3]))


@pytest.mark.parametrize("method,model,x,kw", RUNS, ids=[r[0] for r in RUNS])
def test_a_seeded_call_is_repeatable_and_leaves_every_global_state(method, model, x, kw):
    pyro.clear_param_store()
    pyro.param("p", torch.tensor(0.99, dtype=F64), constraint=constraints.unit_interval)  # a same-named stale value
    pyro.param("s", torch.tensor(7.0, dtype=F64), constraint=constraints.positive)
    pyro.param("unrelated", torch.tensor([1.0, 2.0]))
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    before = _global_state()
    first = _infer(model, x, method, seed=11, **kw)
    assert _same_state(before, _global_state()), f"{method} changed a global RNG or Pyro's param store"
    second = _infer(model, x, method, seed=11, **kw)
    assert _numbers(first) == _numbers(second)
    assert _same_state(before, _global_state())
    pyro.clear_param_store()
    third = _infer(model, x, method, seed=11, **kw)  # the stale store values were never read
    assert _numbers(first) == _numbers(third)
    assert not list(pyro.get_param_store().keys())


def test_a_fit_of_one_model_does_not_change_another_with_the_same_param_name():
    pyro.clear_param_store()
    before = _infer(coin_with_param, X_BIN, "exact").log_evidence
    assert before == pytest.approx(_coin_evidence(0.5), abs=1e-12)
    learned = _infer(bernoulli_param, X_BIN, "em")
    assert float(learned.params["p"]) == pytest.approx(0.75, abs=1e-6)  # the Bernoulli MLE 3/4
    assert _infer(coin_with_param, X_BIN, "exact").log_evidence == before
    # the learned value is used only when asked for
    warm = _infer(coin_with_param, X_BIN, "exact", init=learned)
    assert warm.log_evidence == pytest.approx(_coin_evidence(0.75), abs=1e-6)
    given = _infer(coin_with_param, X_BIN, "exact", init={"p": 0.1})
    assert given.log_evidence == pytest.approx(_coin_evidence(0.1), abs=1e-12)


def _mixture(K):
    @ppl.model
    def mixture(x):
        locs = ppl.param("locs", torch.linspace(-1.0, 1.0, K, dtype=F64))
        with ppl.plate("d", len(x)):
            z = ppl.sample("z", dist.Categorical(torch.full((K,), 1.0 / K, dtype=F64)))
            ppl.sample("x", dist.Normal(locs[z], 0.5), obs=x)

    return mixture


def test_k2_then_k3_gives_a_three_component_fit():
    x = torch.tensor([-3.0, -2.9, 0.1, 0.0, 3.1, 2.9], dtype=F64)
    two = _infer(_mixture(2), x, "em")
    three = _infer(_mixture(3), x, "em")
    assert two.params["locs"].shape == (2,) and three.params["locs"].shape == (3,)
    torch.testing.assert_close(three.params["locs"], torch.tensor([-2.95, 0.05, 3.0], dtype=F64), atol=1e-3,
                               rtol=0)


def test_a_plain_pyro_autonormal_after_svi_starts_from_scratch():
    from pyro.infer.autoguide import AutoNormal

    pyro.clear_param_store()
    _infer(normal_mean, X_REAL, "svi", num_steps=30, seed=0)
    assert not list(pyro.get_param_store().keys())
    guide = AutoNormal(normal_mean.fn)
    guide(X_REAL)
    assert float(pyro.param("AutoNormal.locs.mu")) == 0.0  # init_to_feasible, not the SVI fit (about 1.3)
    pyro.clear_param_store()


def test_seed_does_not_reseed_the_global_streams():
    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), float(np.random.rand()))
    random.seed(5)
    np.random.seed(5)
    _infer(normal_mean, X_REAL, "laplace", seed=0)
    assert (random.random(), float(np.random.rand())) == expected


def test_analyze_and_compare_leave_the_store_alone():
    pyro.clear_param_store()
    pyro.param("p", torch.tensor(0.99, dtype=F64), constraint=constraints.unit_interval)
    before = _global_state()
    ppl.analyze(coin_with_param, {"x": X_BIN})
    table = ppl.compare(coin_with_param, {"x": X_BIN}, methods=["exact", "em"])
    assert _same_state(before, _global_state())
    assert table.posteriors["exact"].log_evidence == pytest.approx(_coin_evidence(0.5), abs=1e-12)
    pyro.clear_param_store()


@pytest.mark.parametrize("init,match", [
    ({"q": 0.3}, r"init: \['q'\] are not ppl.param sites of model 'coin_with_param' \(its params: \['p'\]\)"),
    ({"p": torch.tensor([0.3, 0.4])}, r"init\['p'\]: shape \(2,\), but ppl.param 'p' has shape \(\)"),
    ({"p": 1.5}, r"init\['p'\]: value outside ppl.param 'p''s constraint"),
    ({"p": float("nan")}, r"init\['p'\]: has NaN or infinite entries"),
])
def test_a_bad_warm_start_is_an_option_error(init, match):
    with pytest.raises(ppl.OptionError, match=match):
        ppl.infer(coin_with_param, {"x": X_BIN}, method="exact", init=init)


@ppl.model
def cauchy_and_ordered(x):
    """A latent whose prior has no mean (Cauchy) and an ordered vector (a transformed
    distribution without a mean): their starting points are not prior means."""
    loc = ppl.sample("loc", dist.Cauchy(torch.tensor(0.0, dtype=F64), 1.0))
    base = dist.Normal(torch.zeros(3, dtype=F64), 1.0).to_event(1)
    cuts = ppl.sample("cuts", dist.TransformedDistribution(base, [dist.transforms.OrderedTransform()]))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Normal(loc + cuts.sum(), 1.0), obs=x)


def test_the_compiled_values_do_not_depend_on_what_the_caller_drew_before():
    # ppl.analyze then ppl.infer reuses the compiled graph, whose latent values start the mode
    # searches where a prior has no mean: a graph traced from the caller's random state made
    # the same seeded ppl.infer answer differently after an unseeded call
    torch.manual_seed(1)
    first = ppl.compile(cauchy_and_ordered, {"x": X_REAL})
    torch.manual_seed(2)
    state = torch.get_rng_state()
    second = ppl.compile(cauchy_and_ordered, {"x": X_REAL})
    assert torch.equal(torch.get_rng_state(), state)   # the caller's stream is left as it was
    for site in ("loc", "cuts"):
        assert torch.equal(first.sites[site].value, second.sites[site].value), site


def test_an_ordered_vector_starts_at_its_base_mean_pushed_through_the_transform():
    from ppl.backends.common.unconstrained import start_value

    graph = ppl.compile(cauchy_and_ordered, {"x": X_REAL})
    # OrderedTransform: y_0 = x_0, y_i = y_{i-1} + exp(x_i); the base's mean 0 gives (0, 1, 2)
    start = start_value(graph.sites["cuts"], torch.device("cpu"), F64)
    assert torch.allclose(start, torch.tensor([0.0, 1.0, 2.0], dtype=F64))
    # the Cauchy has no mean: its start is the compiled value, the same in every process
    assert torch.equal(start_value(graph.sites["loc"], torch.device("cpu"), F64), graph.sites["loc"].value)
