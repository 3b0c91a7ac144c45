"""numpy data (float64) with priors built from Python numbers (``dist.Normal(0., 3.)``,
float32 under torch's default) used to fail at tracing wherever the two meet in an op that
does not promote (``x @ w``: "addmv input tensors must have the same dtype"). The compile
trace runs under float64 when every floating tensor of the data is float64, as every
backend's run does; reference: the same model written with float64 priors."""

import warnings

import numpy as np
import pytest
import torch

import ppl
import ppl.distributions as dist

F64 = torch.float64


def _logistic(dtype):
    @ppl.model
    def logistic(x, y):
        zero = torch.tensor(0.0, dtype=dtype) if dtype is not None else 0.0
        w = ppl.sample("w", dist.Normal(zero, 3.0).expand([3]).to_event(1))
        with ppl.plate("n", len(y)):
            ppl.sample("y", dist.Bernoulli(logits=x @ w), obs=y)
    return logistic


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    return {"x": x, "y": (x @ np.array([1.0, -1.0, 0.5]) + rng.normal(size=60) > 0).astype(float)}


@pytest.mark.parametrize("method", ["laplace", "map"])
def test_numpy_data_with_python_number_priors_runs_as_float64(data, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.TrustWarning)
        got = ppl.infer(_logistic(None), data, method=method, seed=0)
        ref = ppl.infer(_logistic(F64), data, method=method, seed=0)
    a = got.mean("w") if method != "map" else got.map()["w"]
    b = ref.mean("w") if method != "map" else ref.map()["w"]
    assert a.dtype == F64 and torch.allclose(a, b, atol=1e-10)
    assert torch.get_default_dtype() == torch.float32          # left as found


def test_float32_data_keeps_the_float32_trace():
    x = torch.randn(20, 3)
    g = ppl.compile(_logistic(None), {"x": x, "y": (x.sum(-1) > 0).float()})
    assert g.sites["w"].value.dtype == torch.float32
