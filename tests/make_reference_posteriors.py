"""Write ``tests/fixtures/reference_posteriors.json``: reference posterior means and sds of
every model of :mod:`reference_models`.

* Models that are linear-Gaussian given one scale (the regression, the AR(2) series, eight
  schools) are done by quadrature: the coefficients are Gaussian given the scale, in closed
  form (Bishop 2006, eq. 3.53-3.54; Gelman et al., BDA3 §5.4 for eight schools), and the
  scale's posterior is tabulated on a fine grid — a reference that shares no code with ppl.
* The others by long NUTS runs (Pyro's kernel, ``pyro.infer.MCMC``, on ppl's unconstrained
  log density, which ``tests/test_potential.py`` checks against Pyro's own potential and
  against a hand-written density), 4 chains, dense mass matrix.

    python tests/make_reference_posteriors.py [NAME ...]
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from reference_models import REFERENCE  # noqa: E402

OUT = pathlib.Path(__file__).parent / "fixtures" / "reference_posteriors.json"


def linear_gaussian_posterior(X, y, prior_sd, scale_log_prior, grid):
    """Posterior moments of ``β`` (``y = Xβ + ε``, ``β ~ N(0, diag(prior_sd²))``,
    ``ε ~ N(0, σ² I)``) and ``σ`` (log prior ``scale_log_prior``), on ``grid`` of σ."""
    X, y = X.double(), y.double()
    s0 = torch.diag(prior_sd.double() ** 2)
    logw, means, covs = [], [], []
    for sig in grid:
        cov_y = sig ** 2 * torch.eye(len(y), dtype=torch.float64) + X @ s0 @ X.T
        lml = torch.distributions.MultivariateNormal(torch.zeros(len(y), dtype=torch.float64), cov_y).log_prob(y)
        prec = torch.linalg.inv(s0) + X.T @ X / sig ** 2
        cov = torch.linalg.inv(prec)
        means.append(cov @ (X.T @ y) / sig ** 2)
        covs.append(cov)
        logw.append(float(lml) + float(scale_log_prior(sig)))
    return _mix(grid, torch.tensor(logw), means, covs)


def _mix(grid, logw, means, covs):
    """Moments of a mixture over a 1-D grid (trapezoid weights) of Gaussians."""
    g = torch.as_tensor(grid, dtype=torch.float64)
    trap = torch.zeros_like(g)
    trap[1:] += (g[1:] - g[:-1]) / 2
    trap[:-1] += (g[1:] - g[:-1]) / 2
    w = (logw + trap.log()).softmax(0)
    m = torch.stack(means)
    mean = (w[:, None] * m).sum(0)
    second = (w[:, None, None] * (torch.stack(covs) + m[:, :, None] * m[:, None, :])).sum(0)
    var = torch.diagonal(second) - mean ** 2
    s_mean = float((w * g).sum())
    s_sd = float(((w * g ** 2).sum() - s_mean ** 2) ** 0.5)
    return mean, var.sqrt(), s_mean, s_sd


def _entry(mean, sd):
    mean, sd = np.atleast_1d(np.asarray(mean, dtype=float)), np.atleast_1d(np.asarray(sd, dtype=float))
    return {"shape": [] if mean.size == 1 else [mean.size], "mean": mean.tolist(), "sd": sd.tolist(),
            "mcse_mean": [0.0] * mean.size, "rhat": [1.0] * mean.size, "ess": [float("inf")] * mean.size}


def quadrature(name):
    """The reference of a model that is linear-Gaussian given one scale."""
    from reference_models import ar2_data, eight_schools_data, regression_data

    grid = torch.exp(torch.linspace(-6.0, 7.0, 4000, dtype=torch.float64))
    if name == "regression":
        d = regression_data()
        X = torch.stack([torch.ones_like(d["x"]), d["x"]], -1)
        half = torch.distributions.HalfNormal(torch.tensor(50.0, dtype=torch.float64))
        mean, sd, s_mean, s_sd = linear_gaussian_posterior(X, d["y"], torch.tensor([100.0, 10.0]), half.log_prob,
                                                           grid)
        sites = {"alpha": _entry(mean[0], sd[0]), "beta": _entry(mean[1], sd[1]), "sigma": _entry(s_mean, s_sd)}
    elif name == "ar2":
        y = ar2_data()["y"]
        X = torch.stack([torch.ones(len(y) - 2, dtype=torch.float64), y[1:-1], y[:-2]], -1)
        half = torch.distributions.HalfNormal(torch.tensor(10.0, dtype=torch.float64))
        mean, sd, s_mean, s_sd = linear_gaussian_posterior(X, y[2:], torch.tensor([10.0, 1.0, 1.0]),
                                                           half.log_prob, grid)
        sites = {"c": _entry(mean[0], sd[0]), "phi": _entry(mean[1:], sd[1:]), "sigma": _entry(s_mean, s_sd)}
    else:  # eight schools: y_j ~ N(mu, sigma_j² + tau²), mu ~ N(0, 5²), tau ~ HalfCauchy(5)
        d = eight_schools_data()
        y, s2 = d["y"], d["sigma"] ** 2
        cauchy = torch.distributions.HalfCauchy(torch.tensor(5.0, dtype=torch.float64))
        logw, means, covs = [], [], []
        for tau in grid:
            v = s2 + tau ** 2
            cov_y = torch.diag(v) + 25.0
            logw.append(float(torch.distributions.MultivariateNormal(torch.zeros(8, dtype=torch.float64),
                                                                     cov_y).log_prob(y)) + float(cauchy.log_prob(tau)))
            prec = 1 / 25.0 + (1 / v).sum()
            means.append(((y / v).sum() / prec).reshape(1))
            covs.append((1 / prec).reshape(1, 1))
        mean, sd, s_mean, s_sd = _mix(grid, torch.tensor(logw), means, covs)
        sites = {"mu": _entry(mean[0], sd[0]), "tau": _entry(s_mean, s_sd)}
    return {"sites": sites, "method": "quadrature"}


def run(name, chains=4, warmup=1000, draws=2000):
    if name in ("regression", "ar2", "eight_schools"):
        return quadrature(name)
    import ppl

    model, make_data, sites = REFERENCE[name]
    t0 = time.time()
    post = ppl.infer(model, make_data(), method="nuts", num_chains=chains, warmup_steps=warmup, num_samples=draws,
                     target_accept_prob=0.9, full_mass=True, seed=0, progress=False)
    d = post.diagnostics
    out = {}
    for s in sites:
        x = post.draws(s).double().numpy()             # (chains, draws, ...)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        import arviz as az

        idata = az.from_dict(posterior={s: flat})
        rhat = np.asarray(az.rhat(idata)[s]).reshape(-1)
        ess = np.asarray(az.ess(idata)[s]).reshape(-1)
        mean = flat.mean((0, 1))
        sd = flat.std((0, 1), ddof=1)
        out[s] = {"shape": list(x.shape[2:]), "mean": mean.tolist(), "sd": sd.tolist(),
                  "mcse_mean": (sd / np.sqrt(ess)).tolist(), "rhat": rhat.tolist(), "ess": ess.tolist()}
    return {"sites": out, "seconds": time.time() - t0, "chains": chains, "warmup": warmup, "draws": draws,
            "divergences": d["divergences"], "verdict": post.trust.verdict, "method": "nuts"}


#: Smaller runs for the models whose log density is a Python loop over time (slow per step).
RUNS = {"garch": dict(warmup=300, draws=500), "hmm": dict(warmup=300, draws=500)}


def main(names):
    torch.set_default_dtype(torch.float64)
    existing = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in names or list(REFERENCE):
        print(f"{name} ...", flush=True)
        existing[name] = run(name, **RUNS.get(name, {}))
        print(f"  {existing[name].get('seconds', 0):.0f} s, max R-hat "
              f"{max(max(v['rhat']) for v in existing[name]['sites'].values()):.4f}", flush=True)
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(existing, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
