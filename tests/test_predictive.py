"""Posterior and prior predictive draws (``post.predictive``, ``ppl.predict``,
``ppl.prior_predictive``) against closed forms and brute-force enumeration.

References that cannot share ppl's code: the conjugate Normal-Normal and Bayesian linear
regression posteriors and predictives in closed form (Bishop 2006, eq. 2.141-2.142 and
3.49-3.59), and the posterior predictive of a small Bayesian network by enumerating every
latent assignment with itertools over its conditional probability tables.  Tolerances
are a few Monte Carlo standard errors of the number of draws behind each estimate.
"""

import copy
import itertools
import random
import warnings

import numpy as np
import pyro
import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.posterior import DrawsPosterior

F = torch.float64
Z = 5.0  # standard errors allowed

# --------------------------------------------------------------------- Normal-Normal
PRIOR_SD, NOISE_SD = 2.0, 1.0
Y = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=F)


@ppl.model
def normal_normal(y):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), PRIOR_SD))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(mu, NOISE_SD), obs=y)


def normal_normal_posterior():
    """Closed-form posterior mean and variance of mu (known noise)."""
    precision = 1 / PRIOR_SD**2 + len(Y) / NOISE_SD**2
    return float(Y.sum() / NOISE_SD**2 / precision), 1 / precision


def assert_moments(draws, mean, var, cov, n_eff, slack=0.0):
    """Mean and variance of ``draws[:, 0]`` and the covariance of its first two columns
    within ``Z`` standard errors of ``n_eff`` draws (plus ``slack`` for an approximation)."""
    d0, d1 = draws[:, 0], draws[:, 1]
    assert abs(float(d0.mean()) - mean) < Z * (var / n_eff) ** 0.5 + slack
    assert abs(float(d0.var()) - var) < Z * var * (2 / n_eff) ** 0.5 + slack
    c = float(((d0 - d0.mean()) * (d1 - d1.mean())).mean())
    assert abs(c - cov) < Z * ((var**2 + cov**2) / n_eff) ** 0.5 + slack


METHODS = [
    # method, options, effective draws behind the latents, slack for the approximation
    ("cavi", {"seed": 0}, 20000, 0.0),
    ("laplace", {"num_draws": 4000, "seed": 0}, 1000, 0.0),
    ("svi", {"num_steps": 300, "seed": 0}, 20000, 0.05),
    pytest.param("nuts", {"num_samples": 300, "warmup_steps": 200, "num_chains": 1, "seed": 0}, 60, 0.0,
                 id="nuts"),
]


@pytest.mark.parametrize("method, options, n_eff, slack", METHODS)
def test_normal_normal_posterior_predictive(method, options, n_eff, slack):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(normal_normal, {"y": Y}, method=method, **options)
    n = 20000
    out = post.predictive(n, seed=1, sites=["mu", "y"])
    assert set(out) == {"mu", "y"} and out["y"].shape == (n, 4) and out["mu"].shape == (n,)
    # the latents are the posterior's joint draws; each replicate is mu + N(0, noise²) noise
    assert torch.equal(out["mu"], post.sample(n, seed=1)["mu"].to(out["mu"].dtype))
    noise = out["y"] - out["mu"][:, None]
    assert abs(float(noise.mean())) < Z / (4 * n) ** 0.5
    assert abs(float(noise.var()) - NOISE_SD**2) < Z * (2 / (4 * n)) ** 0.5
    assert abs(float(torch.corrcoef(torch.stack([out["mu"], noise[:, 0]]))[0, 1])) < Z / n**0.5
    # closed form: mean = posterior mean, variance = posterior variance + noise variance,
    # two replicates share mu: covariance = posterior variance
    pm, pv = normal_normal_posterior()
    assert_moments(out["y"], pm, pv + NOISE_SD**2, pv, n_eff, slack)


# ------------------------------------------------------------- Bayesian linear regression
X = torch.tensor([-1.0, -0.2, 0.3, 0.9, 1.4, 2.0], dtype=F)  # not centred: the weights correlate
YX = 0.3 + 1.2 * X + torch.tensor([0.1, -0.2, 0.05, 0.15, -0.1, 0.0], dtype=F)
X_NEW = torch.tensor([-2.0, 0.0, 3.0], dtype=F)
NOISE = 0.5


@ppl.model
def regression(x, y=None):
    w = ppl.sample("w", dist.Normal(torch.zeros(2, dtype=F), 1.0).to_event(1))
    with ppl.plate("data", x.shape[0]):
        line = ppl.deterministic("line", w[..., 0] + w[..., 1] * x)
        ppl.sample("y", dist.Normal(line, NOISE), obs=y)


@ppl.model
def regression_unbatched(x, y=None):  # w[0]: indexes the draws, not the weights, in a batch of draws
    w = ppl.sample("w", dist.Normal(torch.zeros(2, dtype=F), 1.0).to_event(1))
    with ppl.plate("data", x.shape[0]):
        ppl.sample("y", dist.Normal(w[0] + w[1] * x, NOISE), obs=y)


def regression_predictive(x_new):
    """Closed-form posterior predictive mean and covariance at ``x_new`` (prior w ~ N(0, I))."""
    design = torch.stack([torch.ones_like(X), X], -1)
    cov = torch.linalg.inv(torch.eye(2, dtype=F) + design.T @ design / NOISE**2)
    mean = cov @ design.T @ YX / NOISE**2
    new = torch.stack([torch.ones_like(x_new), x_new], -1)
    return new @ mean, new @ cov @ new.T + NOISE**2 * torch.eye(len(x_new), dtype=F)


def assert_matches_gaussian(draws, mean, cov):
    """Per-point means, variances and one covariance within ``Z`` standard errors."""
    n = draws.shape[0]
    var = cov.diagonal()
    assert torch.all((draws.mean(0) - mean).abs() < Z * (var / n).sqrt())
    assert torch.all((draws.var(0) - var).abs() < Z * var * (2 / n) ** 0.5)
    emp = torch.cov(draws.T)
    assert abs(float(emp[0, 2] - cov[0, 2])) < Z * float((var[0] * var[2] + cov[0, 2] ** 2) / n) ** 0.5


@pytest.mark.parametrize("model", [regression, regression_unbatched], ids=["vectorised", "one-draw-loop"])
def test_regression_predictive_at_new_covariates(model):
    post = ppl.infer(model, {"x": X, "y": YX}, method="cavi", seed=0)
    x_new = X_NEW.clone()
    n = 20000 if model is regression else 2000  # one draw at a time is slow
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ppl.predict(post, n, data={"x": x_new}, seed=2)
        fitted = post.predictive(n, seed=3)["y"]  # data=None: at the fitted covariates
    slow = [w for w in caught if "one at a time" in str(w.message)]
    assert bool(slow) == (model is regression_unbatched)
    assert set(out) == {"y"} and out["y"].shape == (n, 3)
    assert torch.equal(x_new, X_NEW)  # the user's tensor is not modified
    assert_matches_gaussian(out["y"], *regression_predictive(X_NEW))
    assert fitted.shape == (n, len(X))
    assert_matches_gaussian(fitted[:, :3], *regression_predictive(X[:3]))
    if model is regression:  # a deterministic site, returned with the latents it is computed from
        both = post.predictive(50, data={"x": X_NEW}, seed=4, sites=["w", "line"])
        assert torch.allclose(both["line"], both["w"][:, :1] + both["w"][:, 1:] * X_NEW)


def test_vectorised_run_checked_against_one_draw_runs():
    """A model that broadcasts without error but mixes the draws (``mu.sum()`` over the batch
    of draws) is caught by the check against one-draw runs and drawn one at a time."""
    @ppl.model
    def summed(y):
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), PRIOR_SD))
        with ppl.plate("data", len(y)):
            ppl.sample("y", dist.Normal(mu.sum(), NOISE_SD), obs=y)

    post = ppl.infer(summed, {"y": Y}, method="cavi", seed=0)
    with pytest.warns(UserWarning, match="other densities than one-draw runs"):
        out = post.predictive(4000, seed=0)["y"]
    pm, pv = normal_normal_posterior()
    assert_moments(out, pm, pv + NOISE_SD**2, pv, 4000)


# ------------------------------------------------------------------- local latents
@ppl.model
def local_latents(y):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 2.0))
    with ppl.plate("data", len(y)):
        z = ppl.sample("z", dist.Normal(mu, 1.0))
        ppl.sample("y", dist.Normal(z, 0.5), obs=y)


def test_new_plate_size_for_local_latents_is_a_data_error():
    post = ppl.infer(local_latents, {"y": torch.tensor([1.0, 2.0, 3.0], dtype=F)}, method="cavi", seed=0)
    assert post.predictive(5, seed=0)["y"].shape == (5, 3)
    assert post.predictive(5, data={"y": torch.zeros(3, dtype=F)}, seed=0)["y"].shape == (5, 3)
    with pytest.raises(ppl.DataError, match=r"latent site 'z'.*plate\(s\) \['data'\]"):
        post.predictive(5, data={"y": torch.zeros(5, dtype=F)}, seed=0)


# ----------------------------------------------------------------- Bayesian network
PA = torch.tensor(0.3, dtype=F)                                            # P(a = 1)
PB = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=F)            # b | a
PC = torch.tensor([0.1, 0.5, 0.9], dtype=F)                               # P(c = 1 | b)
PD = torch.tensor([[0.2, 0.6, 0.3], [0.9, 0.4, 0.7]], dtype=F)            # P(d = 1 | a, b)


@ppl.model
def network(c, d):
    a = ppl.sample("a", dist.Bernoulli(PA))
    b = ppl.sample("b", dist.Categorical(ppl.Vindex(PB)[a.long()]))
    ppl.sample("c", dist.Bernoulli(ppl.Vindex(PC)[b]), obs=c)
    ppl.sample("d", dist.Bernoulli(ppl.Vindex(PD)[a.long(), b]), obs=d)


def bernoulli(p, v):
    return float(p if v == 1 else 1 - p)


def network_predictive(c, d, latents="posterior"):
    """P(c', d' | c, d) by enumerating (a, b), a 2x2 table; ``latents="prior"``: under the
    prior; ``"independent"``: a and b drawn independently from their posterior marginals."""
    weight = torch.zeros(2, 3, dtype=F)
    for a, b in itertools.product(range(2), range(3)):
        weight[a, b] = bernoulli(PA, a) * float(PB[a, b])
        if latents != "prior":
            weight[a, b] *= bernoulli(PC[b], c) * bernoulli(PD[a, b], d)
    weight /= weight.sum()
    if latents == "independent":
        weight = weight.sum(1, keepdim=True) * weight.sum(0, keepdim=True)
    table = torch.zeros(2, 2, dtype=F)
    for a, b, c2, d2 in itertools.product(range(2), range(3), range(2), range(2)):
        table[c2, d2] += weight[a, b] * bernoulli(PC[b], c2) * bernoulli(PD[a, b], d2)
    return table


def test_exact_network_predictive_against_enumeration():
    evidence = {"c": torch.tensor(1.0, dtype=F), "d": torch.tensor(0.0, dtype=F)}
    post = ppl.infer(network, evidence, method="exact")
    n = 20000
    out = post.predictive(n, seed=0, sites=["c", "d", "a", "b"])
    counts = torch.zeros(2, 2, dtype=F)
    counts.index_put_((out["c"].long(), out["d"].long()), torch.ones(n, dtype=F), accumulate=True)
    want = network_predictive(1, 0)
    tol = Z * (want * (1 - want) / n).sqrt()
    assert torch.all((counts / n - want).abs() < tol)
    # the reference separates the right answer from the prior predictive and from
    # independent (mean-field) draws of a and b
    for wrong in ("prior", "independent"):
        assert (network_predictive(1, 0, wrong) - want).abs().max() > 2 * tol.max(), wrong
    # the latents are the exact joint posterior draws
    joint = post.sample(n, seed=0)
    assert torch.equal(out["a"], joint["a"]) and torch.equal(out["b"], joint["b"])


# ------------------------------------------------------------------ prior predictive
def test_prior_predictive_against_closed_form():
    n = 20000
    out = ppl.prior_predictive(normal_normal, {"y": Y}, num_samples=n, seed=0)
    assert set(out) == {"y"} and out["y"].shape == (n, 4)
    var, cov = PRIOR_SD**2 + NOISE_SD**2, PRIOR_SD**2
    assert_moments(out["y"], 0.0, var, cov, n)
    # nothing observed (y=None): every sample site; the regression's prior predictive at x
    reg = ppl.prior_predictive(regression, {"x": X_NEW}, num_samples=n, seed=1)
    assert set(reg) == {"w", "y"} and reg["w"].shape == (n, 2)
    design = torch.stack([torch.ones_like(X_NEW), X_NEW], -1)
    assert_matches_gaussian(reg["y"], torch.zeros(3, dtype=F), design @ design.T + NOISE**2 * torch.eye(3, dtype=F))
    # a compiled graph works as the model; sites= picks latents
    graph = ppl.compile(normal_normal, {"y": Y})
    mu = ppl.prior_predictive(graph, num_samples=n, seed=2, sites="mu")["mu"]
    assert abs(float(mu.var()) - PRIOR_SD**2) < Z * PRIOR_SD**2 * (2 / n) ** 0.5


# ------------------------------------------------------------- purity, seeds, errors
@ppl.model
def shifted(y):
    b = ppl.param("b", torch.tensor(0.0, dtype=F))
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 1.0))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(mu + b, 1.0), obs=y)


def rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_learned_params_seeds_and_purity():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(shifted, {"y": torch.tensor([3.0, 4.0, 5.0], dtype=F)}, method="svi", num_steps=300, seed=0)
    b = float(post.params["b"])
    pyro.get_param_store().clear()
    pyro.param("b", torch.tensor(100.0))  # another model's value under the same name
    before = rng_states()
    out = post.predictive(4000, seed=5)
    after = rng_states()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
    assert pyro.param("b").item() == 100.0 and list(pyro.get_param_store().keys()) == ["b"]
    # the learned b from post.params, not the store's: E[y] = E[mu | y] + b
    assert abs(float(out["y"].mean()) - (float(post.mean("mu")) + b)) < Z * (1.3 / 4000) ** 0.5
    # seeded: identical run to run; another seed differs; no seed: the run's seed
    assert torch.equal(out["y"], post.predictive(4000, seed=5)["y"])
    assert not torch.equal(out["y"], post.predictive(4000, seed=6)["y"])
    assert torch.equal(post.predictive(10)["y"], post.predictive(10, seed=post.seed)["y"])
    prior = ppl.prior_predictive(shifted, {"y": [1.0, 2.0]}, num_samples=50, seed=3)
    assert torch.equal(prior["y"], ppl.prior_predictive(shifted, {"y": [1.0, 2.0]}, num_samples=50, seed=3)["y"])
    assert rng_states()[2] == before[2] and pyro.param("b").item() == 100.0
    pyro.get_param_store().clear()


def test_bad_arguments_raise_typed_errors():
    post = ppl.infer(normal_normal, {"y": Y}, method="cavi", seed=0)
    for bad in (0, -3, 1.5, True, "10", None):
        with pytest.raises(ppl.OptionError, match="num_samples"):
            post.predictive(bad)
    for bad in (-1, 2**32, 1.0, "0"):
        with pytest.raises(ppl.OptionError, match="seed"):
            post.predictive(10, seed=bad)
    with pytest.raises(ppl.OptionError, match=r"\['nope'\]"):
        post.predictive(10, sites=["y", "nope"])
    with pytest.raises(ppl.OptionError, match="sites"):
        post.predictive(10, sites=3)
    with pytest.raises(ppl.DataError, match="mapping"):
        post.predictive(10, data=[1.0, 2.0])
    with pytest.raises(ppl.DataError, match="'bogus'"):
        post.predictive(10, data={"bogus": 1.0})
    with pytest.raises(ppl.DataError, match="latent site 'mu'"):
        post.predictive(10, data={"mu": 1.0})
    with pytest.raises(ppl.DataError, match="NaN"):
        post.predictive(10, data={"y": [1.0, float("nan")]})
    with pytest.raises(ppl.OptionError, match="posterior"):
        ppl.predict(object())
    with pytest.raises(ppl.OptionError, match="model"):
        ppl.prior_predictive(42)
    with pytest.raises(ppl.DataError, match="'bogus'"):
        ppl.prior_predictive(normal_normal, {"y": Y, "bogus": 1})
    with pytest.raises(ppl.OptionError, match="num_samples"):
        ppl.prior_predictive(normal_normal, {"y": Y}, num_samples=0)
    post.memory_budget = 10_000
    with pytest.raises(ppl.IntractableError, match="predictive"):
        post.predictive(10**6)
    loaded = copy.copy(post)
    loaded.graph = None
    with pytest.raises(ppl.UnsupportedModelError, match="no model"):
        loaded.predictive(10)


# ------------------------------------------------ discrete latents summed out of draws
Y_MIX = torch.tensor([-2.0, 0.1, 2.5], dtype=F)
LOCS = torch.tensor([[-2.0, 2.0], [-1.0, 3.0]], dtype=F)  # the two posterior draws of loc


@ppl.model
def mixture(y):
    loc = ppl.sample("loc", dist.Normal(torch.zeros(2, dtype=F), 3.0).to_event(1))
    with ppl.plate("data", len(y)):
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F)))
        ppl.sample("y", dist.Normal(ppl.Vindex(loc)[..., z], 1.0), obs=y)


@ppl.model
def mixture_unbatched(y):  # loc[..., z] does not broadcast over enumerated z or a batch of draws
    loc = ppl.sample("loc", dist.Normal(torch.zeros(2, dtype=F), 3.0).to_event(1))
    with ppl.plate("data", len(y)):
        z = ppl.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F)))
        ppl.sample("y", dist.Normal(loc[..., z], 1.0), obs=y)


@pytest.mark.parametrize("model, n", [(mixture, 20000), (mixture_unbatched, 150)], ids=["vectorised", "one-draw-loop"])
def test_summed_out_discrete_latents_drawn_from_their_conditionals(model, n):
    """Draws of loc only (as Laplace, Pathfinder and NUTS hold them): z is drawn from
    p(z | loc, y) = softmax_k N(y; loc_k, 1) (equal weights) given each draw of loc."""
    graph = ppl.compile(model, {"y": Y_MIX})
    post = DrawsPosterior("laplace", graph=graph, draws={"loc": LOCS[None]}, supports={"z": torch.arange(2)},
                          families={"z": "Categorical"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one-draw loop warns that it is slow
        out = post.predictive(n, seed=0, sites=["loc", "z", "y"])
    for loc in LOCS:
        rows = (out["loc"] == loc).all(-1)
        logits = torch.distributions.Normal(loc, 1.0).log_prob(Y_MIX[:, None])
        want = torch.softmax(logits, -1)[:, 1]
        got = out["z"][rows].double().mean(0)
        m = int(rows.sum())
        assert torch.all((got - want).abs() < Z * (want * (1 - want) / m).sqrt() + 1e-9)
    noise = out["y"] - torch.gather(out["loc"], 1, out["z"])
    assert abs(float(noise.mean())) < Z / (3 * n) ** 0.5 and abs(float(noise.var()) - 1) < Z * (2 / (3 * n)) ** 0.5


def test_latents_without_draws_are_refused():
    graph = ppl.compile(mixture, {"y": Y_MIX})
    post = DrawsPosterior("laplace", graph=graph, draws={}, supports={"z": torch.arange(2)},
                          families={"z": "Categorical"})
    with pytest.raises(ppl.UnsupportedModelError, match="'loc'"):
        post.predictive(10, seed=0)
