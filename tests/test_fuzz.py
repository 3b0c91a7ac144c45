"""Property-based tests (hypothesis, issue 17): random models and random bad data give either
a correct answer or a ``PPLError`` — never another exception, a NaN, or a changed input.

* Random discrete models (the generators of ``random_models.py``: chains, trees, DAGs,
  mixtures, nested plates, tables with exact zeros) at random seeds: ``method="exact"``
  against brute-force enumeration (``oracles.py``, which shares no code with ppl), and
  ``map`` / ``cavi`` must answer with finite numbers or a typed error.
* Random corruptions of good data (NaN, inf, strings, None, wrong shapes, empty arrays,
  values outside the support, booleans, masked arrays, misspelled keys, extra dims) for a
  continuous and a discrete model: a ``PPLError`` or finite numbers, and the caller's
  objects unchanged.
"""

from __future__ import annotations

import copy
import math
import pathlib
import sys
import warnings

import numpy as np
import pytest
import torch

import ppl
import ppl.distributions as dist

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from oracles import brute_force, split_data  # noqa: E402
from random_models import FAMILIES  # noqa: E402

F64 = torch.float64
FUZZ = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FUZZ_DATA = settings(FUZZ, max_examples=120)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------ random models
@FUZZ
@given(family=st.sampled_from(sorted(FAMILIES)), seed=st.integers(0, 10_000))
def test_random_discrete_models_exact_equals_brute_force(family, seed):
    model_fn, data = FAMILIES[family](seed)
    kwargs, observations = split_data(model_fn, data)
    oracle = brute_force(model_fn, kwargs, observations)
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in data.items()}
    post = _quiet(ppl.infer, ppl.model(model_fn), data, method="exact", seed=0)
    assert post.log_evidence == pytest.approx(oracle.log_evidence, abs=1e-8)
    for site, probs in oracle.marginals.items():
        ours = post.probs(site) if hasattr(post, "probs") else None
        if ours is not None and ours.shape == probs.shape:
            torch.testing.assert_close(ours, probs, rtol=0, atol=1e-8)
    for k, v in data.items():
        assert torch.equal(v, before[k]) if isinstance(v, torch.Tensor) else v == before[k]


@FUZZ
@given(family=st.sampled_from(sorted(FAMILIES)), seed=st.integers(0, 10_000),
       method=st.sampled_from(["map", "cavi"]))
def test_random_discrete_models_other_methods_answer_or_refuse(family, seed, method):
    model_fn, data = FAMILIES[family](seed)
    kwargs, observations = split_data(model_fn, data)
    oracle = brute_force(model_fn, kwargs, observations)
    try:
        post = _quiet(ppl.infer, ppl.model(model_fn), data, method=method, seed=0)
    except ppl.PPLError:
        return
    if method == "map":  # max-product is exact: the MAP's log joint is the brute-force maximum
        assert post.log_joint == pytest.approx(oracle.map_log_joint, abs=1e-8)
    else:  # a mean-field ELBO is a lower bound on the exact log evidence (eq. 19.1)
        assert math.isfinite(post.elbo) and post.elbo <= oracle.log_evidence + 1e-8
        for site in post.sites:
            assert bool(torch.isfinite(post.probs(site)).all())


# ------------------------------------------------------------------ random bad data
@ppl.model
def regression(x, y):
    w = ppl.sample("w", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0))
    s = ppl.sample("s", dist.HalfNormal(torch.tensor(5.0, dtype=F64)))
    with ppl.plate("d", len(y)):
        ppl.sample("y", dist.Normal(w * x, s), obs=y)


@ppl.model
def labels(z_prior, obs):
    with ppl.plate("d", len(obs)):
        z = ppl.sample("z", dist.Categorical(z_prior))
        table = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]], dtype=F64)
        ppl.sample("obs", dist.Categorical(table[z]), obs=obs)


def _good(kind):
    if kind == "regression":
        return regression, {"x": np.linspace(-1.0, 1.0, 6), "y": torch.tensor([0.1, -0.4, 0.3, 0.2, 1.1, 0.9],
                                                                                dtype=F64)}, "laplace"
    return labels, {"z_prior": torch.tensor([0.5, 0.3, 0.2], dtype=F64), "obs": torch.tensor([0, 1, 1, 0])}, "exact"


CORRUPTIONS = ["nan", "inf", "string", "none", "extra_dim", "empty", "negative", "fractional", "huge", "bool",
               "masked", "misspelled", "list_of_mixed", "too_long", "object_array", "scalar"]


def _corrupt(data, key, how, rng):
    data = dict(data)
    value = data[key]
    arr = value.detach().numpy().copy() if isinstance(value, torch.Tensor) else np.array(value, copy=True)
    i = int(rng.integers(arr.size)) if arr.size else 0
    if how == "nan":
        arr = arr.astype(float)
        arr.flat[i] = np.nan
    elif how == "inf":
        arr = arr.astype(float)
        arr.flat[i] = np.inf
    elif how == "string":
        arr = "three"
    elif how == "none":
        arr = None
    elif how == "extra_dim":
        arr = np.stack([arr, arr])
    elif how == "empty":
        arr = arr[:0]
    elif how == "negative":
        arr = -np.abs(arr) - 1
    elif how == "fractional":
        arr = arr.astype(float) + 0.5
    elif how == "huge":
        arr = arr.astype(float) * 1e300
    elif how == "bool":
        arr = arr.astype(bool)
    elif how == "masked":
        arr = np.ma.masked_array(arr, mask=np.eye(1, arr.size, i, dtype=bool).reshape(arr.shape))
    elif how == "misspelled":
        data[key + "_"] = data.pop(key)
        return data
    elif how == "list_of_mixed":
        arr = [1.0, "a", None]
    elif how == "too_long":
        arr = np.concatenate([arr, arr[:1]])
    elif how == "object_array":
        arr = np.array([object()] * max(arr.size, 1), dtype=object)
    elif how == "scalar":
        arr = arr.reshape(-1)[:1].reshape(())
    data[key] = arr
    return data


def _snapshot(data):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in data.items()}


def _unchanged(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ma.MaskedArray):
        return np.array_equal(a.mask, b.mask) and np.array_equal(a.data, b.data, equal_nan=a.dtype.kind == "f")
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            return a.shape == b.shape and all(x is y or type(x) is type(y) for x, y in zip(a.flat, b.flat))
        return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return a == b or (a is None and b is None)


@FUZZ_DATA
@given(kind=st.sampled_from(["regression", "labels"]), how=st.sampled_from(CORRUPTIONS),
       which=st.integers(0, 1), seed=st.integers(0, 1000))
def test_bad_data_is_a_ppl_error_or_a_finite_answer_and_inputs_stay(kind, how, which, seed):
    model, good, method = _good(kind)
    key = sorted(good)[which]
    data = _corrupt(good, key, how, np.random.default_rng(seed))
    before = _snapshot(data)
    try:
        post = _quiet(ppl.infer, model, data, method=method, seed=0)
    except ppl.PPLError:
        pass
    else:
        for site in post.sites:
            assert bool(torch.isfinite(post.mean(site)).all()), (how, key, site)
        if post.log_evidence is not None:
            assert not math.isnan(post.log_evidence)
    for k in data:
        assert _unchanged(data[k], before[k]), f"{how}: data['{k}'] was changed"
