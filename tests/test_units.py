"""Data in any units: a regression with an unknown noise scale whose outcome lives around
1e8 or 1e-8 gets the right posterior, or an "unreliable" verdict, never a confident wrong one.

Reference: quadrature over the noise scale, the coefficients Gaussian given it (closed form;
``tests/make_reference_posteriors.py``), which shares no code with ppl.
"""

from __future__ import annotations

import pathlib
import sys
import warnings

import pytest
import torch

import ppl
import ppl.distributions as dist

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from make_reference_posteriors import linear_gaussian_posterior  # noqa: E402

F64 = torch.float64


def _data(scale: float):
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    x = torch.tensor(d.data[:60, 2], dtype=F64)             # body-mass index, about 18-42 (not centred)
    y = torch.tensor(d.target[:60], dtype=F64) / 100.0 * scale
    return {"x": x, "y": y}


def _model(scale: float):
    @ppl.model
    def regression(x, y):
        alpha = ppl.sample("alpha", dist.Normal(torch.tensor(0.0, dtype=F64), 100.0 * scale))
        beta = ppl.sample("beta", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0 * scale))
        sigma = ppl.sample("sigma", dist.HalfNormal(torch.tensor(50.0 * scale, dtype=F64)))
        with ppl.plate("data", len(y)):
            ppl.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)

    return regression


def _reference(scale: float, data):
    X = torch.stack([torch.ones_like(data["x"]), data["x"]], -1)
    half = torch.distributions.HalfNormal(torch.tensor(50.0 * scale, dtype=F64))
    grid = torch.exp(torch.linspace(-8.0, 6.0, 4000, dtype=F64)) * scale
    mean, sd, s_mean, s_sd = linear_gaussian_posterior(X, data["y"], torch.tensor([100.0, 10.0], dtype=F64) * scale,
                                                       half.log_prob, grid)
    return {"alpha": (float(mean[0]), float(sd[0])), "beta": (float(mean[1]), float(sd[1])), "sigma": (s_mean, s_sd)}


def _errors(post, ref):
    """(worst |Δμ|/σ, sd ratios) against the reference."""
    worst, ratios = 0.0, []
    for site, (m, s) in ref.items():
        worst = max(worst, abs(float(post.mean(site)) - m) / s)
        ratios.append(float(post.variance(site)) ** 0.5 / s)
    return worst, ratios


@pytest.mark.parametrize("scale", [1e8, 1e-8])
@pytest.mark.parametrize("method,options", [("svi", {"guide": "mvn"}), ("svi", {}), ("laplace", {}), ("auto", {})],
                         ids=["svi-mvn", "svi-meanfield", "laplace", "auto"])
def test_any_units_right_or_unreliable(scale, method, options):
    data = _data(scale)
    ref = _reference(scale, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = ppl.infer(_model(scale), data, method=method, seed=0, progress=False, **options)
    worst, ratios = _errors(post, ref)
    right = worst < 0.25 and all(0.67 <= r <= 1.5 for r in ratios)
    if post.trust.verdict in ("exact", "reliable"):
        assert right, (post.trust, worst, ratios)
    else:
        assert post.trust.verdict == "unreliable" and post.trust.reasons
        assert any(issubclass(w.category, ppl.TrustWarning) for w in caught)
    if method == "laplace" or options.get("guide") == "mvn" or method == "auto":
        # the Laplace fit is scale-free (Newton steps), and SVI starts there with steps in its sds
        assert right, (post.trust, worst, ratios)
    if method == "svi":
        assert post.diagnostics["init"] == "laplace"
        assert post.converged, post.diagnostics["drift"]


@pytest.mark.parametrize("scale", [1e-8, 1e8, 1e20])
def test_map_finds_the_mode_in_any_units(scale):
    """Two independent conjugate means, one in the data's units and one in units of 1: the
    modes are closed form.  An absolute gradient tolerance stopped L-BFGS at the start for
    the 1e8 mean (gradient 3e-9, 0.17 posterior sds from the mode) with converged=True."""
    @ppl.model
    def two_means(x, z):
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0 * scale))
        nu = ppl.sample("nu", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0))
        with ppl.plate("d", len(x)):
            ppl.sample("obs", dist.Normal(mu, scale), obs=x)
            ppl.sample("obz", dist.Normal(nu, 1.0), obs=z)

    x = torch.tensor([0.1, 0.5, -0.3], dtype=F64) * scale
    z = torch.tensor([1.1, 1.5, 0.7], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(two_means, {"x": x, "z": z}, method="map", seed=0)
    shrink = 1.0 / (3.0 + 1.0 / 100.0)                      # prior sd 10 × the noise sd
    assert float(post.map()["mu"]) == pytest.approx(float(x.sum()) * shrink, rel=1e-6)
    assert float(post.map()["nu"]) == pytest.approx(float(z.sum()) * shrink, rel=1e-6)
    assert post.converged


class _Overflowing:
    """A stand-in log density whose gradient is NaN (torch.where's other branch, as a
    model's clamps and overflows give): L-BFGS's next iterate is NaN, where the density
    refuses the value (as a model's support check does)."""

    dim = 1

    def log_density(self, z):
        if not bool(torch.isfinite(z).all()):
            raise ValueError("Expected value argument ... but found invalid values:\nnan")
        return -torch.where(z.sum() > 0, z.pow(2).sum(), torch.sqrt(-z).sum())


def test_a_nan_iterate_is_named_as_an_overflow_not_as_the_model_refusing_a_value():
    from ppl.backends.common.mode import _lbfgs

    with pytest.raises(FloatingPointError, match="iterate became NaN or infinite") as e:
        _lbfgs(_Overflowing(), torch.ones(1, dtype=torch.float64), 50, [0])
    assert "invalid values" not in str(e.value)
