"""One rank of the data-parallel checks of ``tests/test_distributed.py``.

Run as a script with torch.distributed's environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``: what ``torchrun`` sets, and what the test sets for its two
subprocesses); it joins a gloo group, runs every case on this rank's shard of each data set
with ``distributed=True`` and saves what it got to ``<out>/rank<r>.pt``:
``{"results": case -> {name: tensor}, "where": case -> diagnostics["distributed"],
"trust": case -> (verdict, numbers), "errors": case -> "Type: message"}``.  The test
module imports the models, data sets and :func:`run_case` from here to compute the
one-process references on all the data.
"""

from __future__ import annotations

import datetime
import os
import sys
import warnings

import torch
from torch.distributions import constraints

import ppl
import ppl.distributions as dist
from ppl.models.mixtures import bayesian_gmm, bgmm_priors

F64 = torch.float64

#: Where each data set is cut between rank 0 and rank 1 (uneven shards, except "even").
CUTS = {"gmm": 90, "iris": 97, "normal": 17, "normal_even": 15, "mixture": 41}


# ------------------------------------------------------------------------------ models
@ppl.model
def gmm(x, K=3):
    """A GMM with full covariances and a global observation ``anchor`` of the first
    location (a factor outside the data plate that the M-step uses)."""
    N, D = x.shape
    w = ppl.param("weights", torch.full((K,), 1.0 / K, dtype=F64), constraint=constraints.simplex)
    loc = ppl.param("loc", torch.tensor([[-2.0, 0.0], [0.0, 2.0], [2.0, -1.0]], dtype=F64))
    cov = ppl.param("cov", torch.eye(D, dtype=F64).repeat(K, 1, 1), constraint=constraints.positive_definite)
    ppl.sample("anchor", dist.Normal(loc[0, 0], 1.0), obs=torch.tensor(-2.5, dtype=F64))
    with ppl.plate("data", N):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.MultivariateNormal(loc[z], covariance_matrix=cov[z]), obs=x)


@ppl.model
def normal_gamma(x):
    """Bishop (2006) §10.1.3 with independent priors (as in tests/test_cavi.py)."""
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 3.0))
    tau = ppl.sample("tau", dist.Gamma(torch.tensor(2.0, dtype=F64), 1.0))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Normal(mu, tau ** -0.5), obs=x)


@ppl.model
def fixed_mixture(x):
    """Every latent discrete (CAVI's discrete-tables path), and a global observation."""
    ppl.sample("y", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0), obs=torch.tensor(0.5, dtype=F64))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.3, 0.7], dtype=F64)))
        ppl.sample("x", dist.Normal(torch.tensor([-1.0, 2.0], dtype=F64)[z], 1.0), obs=x)


@ppl.model
def normal_model(x):
    """Global latents only: the guide's draws are the same with any number of points."""
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0))
    sigma = ppl.sample("sigma", dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu, sigma), obs=x)


@ppl.model
def svi_mixture(x):
    """Global continuous latents, a local discrete latent summed out (TraceEnum_ELBO)."""
    loc = ppl.sample("loc", dist.Normal(torch.zeros(2, dtype=F64), 5.0).to_event(1))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F64)))
        ppl.sample("obs", dist.Normal(loc[z], 1.0), obs=x)


@ppl.model
def no_plate(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    ppl.sample("obs", dist.Normal(mu, 1.0).expand([len(x)]).to_event(1), obs=x)


@ppl.model
def global_switch(x):
    p = ppl.param("p", torch.tensor(0.5, dtype=F64), constraint=constraints.unit_interval)
    c = ppl.sample("c", dist.Bernoulli(p))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(2.0 * c - 1.0, 1.0), obs=x)


@ppl.model
def local_normal(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with ppl.plate("data", len(x)):
        h = ppl.sample("h", dist.Normal(mu, 1.0))
        ppl.sample("obs", dist.Normal(h, 1.0), obs=x)


@ppl.model
def maybe_extra(x, extra=False):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    if extra:
        ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu, 1.0), obs=x)


# ------------------------------------------------------------------------------ data
def datasets() -> dict:
    """The full data sets (the same on every rank)."""
    g = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(60, 2, generator=g, dtype=F64) + torch.tensor([-2.0, 0.0], dtype=F64),
                       torch.randn(50, 2, generator=g, dtype=F64) + torch.tensor([0.0, 2.5], dtype=F64),
                       torch.randn(40, 2, generator=g, dtype=F64) + torch.tensor([2.5, -1.0], dtype=F64)])
    blobs = blobs[torch.randperm(150, generator=g)]
    from sklearn.datasets import load_iris

    iris = torch.tensor(load_iris().data, dtype=F64)
    iris = ((iris - iris.mean(0)) / iris.std(0))[torch.randperm(150, generator=g)]
    normal = 1.5 + 0.7 * torch.randn(30, generator=g, dtype=F64)
    mixture = torch.cat([torch.randn(25, generator=g, dtype=F64) - 1.0, torch.randn(45, generator=g, dtype=F64) + 2.0])
    mixture = mixture[torch.randperm(70, generator=g)]
    two = torch.cat([torch.randn(40, generator=g, dtype=F64) - 2.0, torch.randn(30, generator=g, dtype=F64) + 2.0])
    return {"gmm": blobs, "iris": iris, "normal": normal, "normal_even": normal, "mixture": mixture,
            "two": two[torch.randperm(70, generator=g)]}


def shard(x: torch.Tensor, name: str, rank: int) -> torch.Tensor:
    """Rank ``rank``'s shard (of two) of data set ``name``."""
    cut = CUTS.get(name, len(x) // 2)
    return x[:cut] if rank == 0 else x[cut:]


# ------------------------------------------------------------------------------ cases
def run_case(name: str, data: dict, **extra):
    """Case ``name`` on ``data`` (full or a shard): ``({quantity: tensor}, its
    diagnostics["distributed"], (trust verdict, trust numbers))``.  ``extra``:
    ``distributed=...`` for the ranks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name in ("em", "em_gradient"):
            opts = dict(tol=0.0, max_iter=25) if name == "em" else dict(tol=0.0, max_iter=4, m_step="gradient")
            post = ppl.infer(gmm, {"x": data["gmm"]}, method="em", **opts, **extra)
            out = {k: v.detach().clone() for k, v in post.params.items()}
            out["log_likelihood"] = torch.tensor(post.log_evidence, dtype=F64)
        elif name == "em_converged":
            post = ppl.infer(gmm, {"x": data["gmm"]}, method="em", **extra)
            out = {k: v.detach().clone() for k, v in post.params.items()}
            out["n_iter"] = torch.tensor(float(post.diagnostics["n_iter"]), dtype=F64)
        elif name == "cavi_bgmm":
            priors = bgmm_priors(data["iris_full"], 3)
            post = ppl.infer(bayesian_gmm, {**priors, "x": data["iris"]}, method="cavi", seed=3, **extra)
            out = {"loc": post.mean("loc"), "prec": post.mean("prec"), "weights": post.mean("weights")}
        elif name in ("cavi_normal_gamma", "cavi_normal_even"):
            x = data["normal"] if name == "cavi_normal_gamma" else data["normal_even"]
            post = ppl.infer(normal_gamma, {"x": x}, method="cavi", seed=0, tol=1e-12, max_iter=1000, **extra)
            q = post.marginal("tau")
            out = {"mu": post.mean("mu"), "mu_var": post.variance("mu"), "tau_a": q.concentration, "tau_b": q.rate}
        elif name == "cavi_discrete":
            post = ppl.infer(fixed_mixture, {"x": data["mixture"]}, method="cavi", seed=1, **extra)
            out = {"z": post.probs("z")}
        elif name == "svi":
            post = ppl.infer(normal_model, {"x": data["normal"]}, method="svi", seed=1, num_steps=200, tol=0.0,
                             init="median", lr=0.05, elbo_particles=200, **extra)
            out = {k: v.detach().clone() for k, v in post.params.items()}
            out["khat"] = torch.tensor(post.diagnostics["psis_khat"], dtype=F64)
        elif name == "svi_enumerated":
            post = ppl.infer(svi_mixture, {"x": data["two"]}, method="svi", seed=2, num_steps=200, tol=0.0,
                             init={"loc": torch.tensor([-1.0, 1.0], dtype=F64)}, lr=0.05, elbo_particles=50,
                             **extra)
            out = {k: v.detach().clone() for k, v in post.params.items()}
        else:
            raise KeyError(name)
    out["elbo"] = torch.tensor(post.elbo if post.elbo is not None else float("nan"), dtype=F64)
    out["converged"] = torch.tensor(float(post.converged), dtype=F64)
    return out, post.diagnostics.get("distributed"), (post.trust.verdict, dict(post.trust.numbers))


CASES = ("em", "em_gradient", "em_converged", "cavi_bgmm", "cavi_normal_gamma", "cavi_normal_even", "cavi_discrete",
         "svi", "svi_enumerated")


def _error(fn) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except Exception as e:  # noqa: BLE001 - the test reads the error's type and message
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return None


def error_cases(data: dict, rank: int) -> dict:
    """``case -> "Type: message"`` of the runs every rank must refuse alike (no hang)."""
    x = shard(data["normal"], "normal", rank)
    iris = shard(data["iris"], "iris", rank)
    return {
        "different_sites": _error(lambda: ppl.infer(maybe_extra, {"x": x, "extra": rank == 1}, method="svi",
                                                    distributed=True, num_steps=5)),
        "different_priors": _error(lambda: ppl.infer(bayesian_gmm, bgmm_priors(iris, 3), method="cavi",
                                                     distributed=True)),
        "no_plate": _error(lambda: ppl.infer(no_plate, {"x": x}, method="svi", distributed=True, num_steps=5)),
        "global_latent_em": _error(lambda: ppl.infer(global_switch, {"x": x}, method="em", distributed=True)),
        "local_latent_svi": _error(lambda: ppl.infer(local_normal, {"x": x}, method="svi", distributed=True,
                                                     num_steps=5)),
        "unknown_plate": _error(lambda: ppl.infer(normal_model, {"x": x}, method="svi", distributed="rows",
                                                  num_steps=5)),
        "exact": _error(lambda: ppl.infer(fixed_mixture, {"x": x}, method="exact", distributed=True)),
        "auto": _error(lambda: ppl.infer(normal_model, {"x": x}, distributed=True)),
    }


def main(out: str) -> None:
    """This rank's cases (see the module docstring)."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank = torch.distributed.get_rank()
    full = datasets()
    data = {k: shard(v, k, rank) for k, v in full.items()}
    data["iris_full"] = full["iris"]
    results, where, trust = {}, {}, {}
    for case in CASES:
        plate = {"cavi_discrete": "data"}.get(case, True)  # one case names the plate
        results[case], where[case], trust[case] = run_case(case, data, distributed=plate)
    errors = error_cases(full, rank)
    torch.save({"results": results, "where": where, "trust": trust, "errors": errors},
               os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
