"""A reference set of public models for the trust verdicts: each model with its data
(bundled with scikit-learn / statsmodels, or generated with a fixed seed), written in the
ppl DSL (so they are plain Pyro models too).  ``tests/fixtures/reference_posteriors.json``
holds long runs of Pyro's own NUTS on each (``python tests/make_reference_posteriors.py``):
a reference that shares no code with ppl's backends.

Each entry: ``name -> (model, data, sites)``; ``sites`` are the parameters whose posterior
means and sds are compared (|Δμ|/σ < 0.25, sd ratio in [0.67, 1.5]).
"""

from __future__ import annotations

import math

import torch

import ppl
import ppl.distributions as dist

F64 = torch.float64


def _t(x):
    import numpy as np

    return x.to(F64) if isinstance(x, torch.Tensor) else torch.tensor(np.array(x), dtype=F64)


# ------------------------------------------------------------------ regression on unscaled data
@ppl.model
def regression(x, y):
    """Outcome in the tens, a predictor in the hundreds, an unknown noise scale."""
    alpha = ppl.sample("alpha", dist.Normal(_t(0.0), 100.0))
    beta = ppl.sample("beta", dist.Normal(_t(0.0), 10.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(_t(50.0)))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def regression_data():
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    x = _t(d.data[:80, 3])          # blood pressure, mm Hg (about 60-130)
    y = _t(d.target[:80]) / 10.0    # disease progression / 10 (tens)
    return {"x": x, "y": y}


# ------------------------------------------------------------------ eight schools (non-centred)
@ppl.model
def eight_schools(y, sigma):
    mu = ppl.sample("mu", dist.Normal(_t(0.0), 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(_t(5.0)))
    with ppl.plate("schools", len(y)):
        eta = ppl.sample("eta", dist.Normal(_t(0.0), 1.0))
        ppl.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)


def eight_schools_data():
    return {"y": _t([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
            "sigma": _t([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])}


# ------------------------------------------------------------------ logistic regression
@ppl.model
def logistic(X, y):
    w = ppl.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=F64), 2.0).to_event(1))
    b = ppl.sample("b", dist.Normal(_t(0.0), 5.0))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Bernoulli(logits=X @ w + b), obs=y)


def logistic_data():
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    X = _t(d.data[:, [0, 1, 4]])                 # radius, texture, smoothness
    X = (X - X.mean(0)) / X.std(0)
    return {"X": X[:200], "y": _t(d.target[:200])}


# ------------------------------------------------------------------ AR(2) on sunspots
@ppl.model
def ar2(y):
    c = ppl.sample("c", dist.Normal(_t(0.0), 10.0))
    phi = ppl.sample("phi", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
    sigma = ppl.sample("sigma", dist.HalfNormal(_t(10.0)))
    mean = c + phi[0] * y[1:-1] + phi[1] * y[:-2]
    with ppl.plate("time", len(y) - 2):
        ppl.sample("obs", dist.Normal(mean, sigma), obs=y[2:])


def ar2_data():
    import statsmodels.api as sm

    s = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    return {"y": _t(s[-120:]) / 10.0}


# ------------------------------------------------------------------ GARCH(1, 1)
@ppl.model
def garch(r):
    omega = ppl.sample("omega", dist.LogNormal(_t(-2.0), 1.0))
    alpha = ppl.sample("alpha", dist.Uniform(_t(0.0), 1.0))
    beta = ppl.sample("beta", dist.Uniform(_t(0.0), 1.0 - alpha))      # a support that depends on alpha
    var = [r.var()]
    for t in range(1, len(r)):
        var.append(omega + alpha * r[t - 1] ** 2 + beta * var[-1])
    with ppl.plate("time", len(r)):
        ppl.sample("r", dist.Normal(_t(0.0), torch.stack(var).sqrt()), obs=r)


def garch_data(n=150, seed=3):
    g = torch.Generator().manual_seed(seed)
    omega, alpha, beta = 0.1, 0.2, 0.7
    r, v = [], omega / (1 - alpha - beta)
    for _ in range(n):
        x = math.sqrt(v) * float(torch.randn((), generator=g, dtype=F64))
        r.append(x)
        v = omega + alpha * x * x + beta * v
    return {"r": _t(r)}


# ------------------------------------------------------------------ two-component mixture, ordered means
@ppl.model
def mixture(x):
    w = ppl.sample("w", dist.Beta(_t(2.0), 2.0))
    mu0 = ppl.sample("mu0", dist.Normal(_t(0.0), 10.0))
    gap = ppl.sample("gap", dist.HalfNormal(_t(10.0)))
    sigma = ppl.sample("sigma", dist.HalfNormal(_t(5.0)))
    locs = torch.stack([mu0, mu0 + gap])
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(torch.stack([1 - w, w])))
        ppl.sample("x", dist.Normal(locs[z], sigma), obs=x)


def mixture_data(n=120, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, generator=g, dtype=F64) < 0.35
    return {"x": torch.where(z, 4.0, -1.0) + 1.2 * torch.randn(n, generator=g, dtype=F64)}


# ------------------------------------------------------------------ Gaussian HMM with unknown parameters
@ppl.model
def hmm(y):
    p_stay = ppl.sample("p_stay", dist.Beta(torch.full((2,), 5.0, dtype=F64), 2.0).to_event(1))
    loc0 = ppl.sample("loc0", dist.Normal(_t(0.0), 5.0))
    gap = ppl.sample("gap", dist.HalfNormal(_t(5.0)))
    locs = torch.stack([loc0, loc0 + gap])
    trans = torch.stack([torch.stack([p_stay[0], 1 - p_stay[0]]), torch.stack([1 - p_stay[1], p_stay[1]])])
    z = 0
    for t in ppl.markov(range(len(y))):
        z = ppl.sample(f"z_{t}", dist.Categorical(trans[z] if t else torch.full((2,), 0.5, dtype=F64)))
        ppl.sample(f"y_{t}", dist.Normal(locs[z], 1.0), obs=y[t])


def hmm_data(n=60, seed=2):
    g = torch.Generator().manual_seed(seed)
    z, ys = 0, []
    for _ in range(n):
        z = z if float(torch.rand((), generator=g, dtype=F64)) < 0.85 else 1 - z
        ys.append((0.0, 3.0)[z] + float(torch.randn((), generator=g, dtype=F64)))
    return {"y": _t(ys)}


REFERENCE = {
    "regression": (regression, regression_data, ["alpha", "beta", "sigma"]),
    "eight_schools": (eight_schools, eight_schools_data, ["mu", "tau"]),
    "logistic": (logistic, logistic_data, ["w", "b"]),
    "ar2": (ar2, ar2_data, ["c", "phi", "sigma"]),
    "garch": (garch, garch_data, ["omega", "alpha", "beta"]),
    "mixture": (mixture, mixture_data, ["w", "mu0", "gap", "sigma"]),
    "hmm": (hmm, hmm_data, ["p_stay", "loc0", "gap"]),
}
