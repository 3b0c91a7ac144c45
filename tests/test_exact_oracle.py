"""ppl's exact backend against references that cannot share its bugs.

* small random discrete models (``tests/random_models.py``) against brute-force
  enumeration with Pyro's own ``trace(condition(model)).log_prob_sum()``
  (``tests/oracles.py``): log evidence, every marginal, the MAP log joint, joint samples;
* a 40-step chain against a forward-backward / Viterbi written here in numpy;
* the oracle itself against Pyro's ``TraceEnum_ELBO`` (so a wrong oracle or a model that
  does not broadcast under enumeration is caught here, not blamed on ppl).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.ops.indexing
import pytest
import scipy.stats
import torch

import ppl
from oracles import brute_force, log_joint, split_data
from random_models import FAMILIES, chain_model, global_local_model, zeros_chain_model

SEEDS = [0, 1, 2]
ATOL = 1e-8
CASES = [(family, seed) for family in FAMILIES for seed in SEEDS]


# --------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def _case(family, seed):
    model_fn, data = FAMILIES[family](seed)
    kwargs, observations = split_data(model_fn, data)
    oracle = brute_force(model_fn, kwargs, observations)
    return model_fn, data, kwargs, observations, oracle


@functools.lru_cache(maxsize=None)
def _posterior(family, seed):
    model_fn, data, *_ = _case(family, seed)
    return ppl.infer(ppl.model(model_fn), data, method="exact", seed=0)


def _marginal_probs(d, k):
    """``(..., K)`` probabilities from a ppl marginal (Categorical-like or Bernoulli)."""
    assert isinstance(d, torch.distributions.Distribution), type(d)
    probs = d.probs
    assert probs.dtype == torch.float64, probs.dtype
    if isinstance(d, torch.distributions.Bernoulli):
        assert k == 2
        return torch.stack([1 - probs, probs], dim=-1)
    return probs


def _as_support_value(site, value):
    """Cast a value returned by ppl to the site's support dtype, checking it lies in the support."""
    value = torch.as_tensor(value)
    assert tuple(value.shape) == tuple(site.batch_shape), (site.name, tuple(value.shape), tuple(site.batch_shape))
    v64 = value.to(torch.float64).reshape(-1)
    sup = site.support.to(torch.float64)
    ok = (v64[:, None] == sup[None, :]).any(-1)
    assert bool(ok.all()), f"{site.name}: values {value.tolist()} outside the support {site.support.tolist()}"
    return value.to(site.support.dtype)


def _float(x):
    """A Python float from a float or a 0-dim tensor (never through float32)."""
    if isinstance(x, torch.Tensor):
        assert x.dim() == 0 and x.dtype == torch.float64, (x.shape, x.dtype)
        return x.item()
    assert isinstance(x, float), type(x)
    return x


# --------------------------------------------------------------------------- the oracle itself
def _pyro_enum_log_evidence(model_fn, kwargs, observations, max_plate_nesting):
    conditioned = pyro.poutine.condition(model_fn, data=observations)
    model = pyro.infer.config_enumerate(conditioned, default="parallel")

    def guide(**kw):
        pass

    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=max_plate_nesting)
    with torch.no_grad():
        return -float(elbo.loss(model, guide, **kwargs))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_oracle_agrees_with_pyro_enumeration(family):
    """brute force == Pyro's TraceEnum_ELBO (exact for an empty guide): checks the oracle
    and that every random model broadcasts under parallel enumeration."""
    model_fn, _, kwargs, observations, oracle = _case(family, 0)
    nesting = max((len(s.batch_shape) for s in oracle.sites.values()), default=0)
    nesting = max(nesting, 2)
    got = _pyro_enum_log_evidence(model_fn, kwargs, observations, nesting)
    assert got == pytest.approx(oracle.log_evidence, abs=1e-8)


def test_oracle_marginals_are_distributions():
    *_, oracle = _case("nested_plates", 0)
    for name, m in oracle.marginals.items():
        assert torch.allclose(m.sum(-1), torch.ones((), dtype=torch.float64))
    assert oracle.marginals["u"].shape == (3, 2, 2)
    assert float(oracle.probs.sum()) == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- ppl vs oracle
@pytest.mark.parametrize("family,seed", CASES)
def test_log_evidence(family, seed):
    *_, oracle = _case(family, seed)
    post = _posterior(family, seed)
    got = _float(post.log_evidence)
    assert abs(got - oracle.log_evidence) <= ATOL, f"{family} seed={seed}: log evidence {got!r} != {oracle.log_evidence!r}"


@pytest.mark.parametrize("family,seed", CASES)
def test_marginals(family, seed):
    *_, oracle = _case(family, seed)
    post = _posterior(family, seed)
    for name, site in oracle.sites.items():
        d = post.marginal(name)
        probs = _marginal_probs(d, site.cardinality)
        expected = oracle.marginals[name]
        assert tuple(probs.shape) == tuple(expected.shape), (name, tuple(probs.shape), tuple(expected.shape))
        err = float((probs - expected).abs().max())
        assert err <= ATOL, f"{family} seed={seed} site {name}: max |marginal error| {err:.3g}\ngot {probs}\nexpected {expected}"


@pytest.mark.parametrize("family,seed", CASES)
def test_map(family, seed):
    model_fn, _, kwargs, observations, oracle = _case(family, seed)
    post = _posterior(family, seed)
    best = post.map()
    assert isinstance(best, dict)
    missing = [n for n in oracle.sites if n not in best]
    assert not missing, f"map() lacks sites {missing}"
    assignment = {n: _as_support_value(site, best[n]) for n, site in oracle.sites.items()}
    lj = log_joint(model_fn, kwargs, observations, assignment, expected_latents=oracle.sites)
    assert abs(lj - oracle.map_log_joint) <= ATOL, (
        f"{family} seed={seed}: log p(x, map) = {lj!r}, the max is {oracle.map_log_joint!r} (assignment {assignment})"
    )
    reported = _float(post.diagnostics["map_log_joint"])
    assert abs(reported - oracle.map_log_joint) <= ATOL, (reported, oracle.map_log_joint)


@pytest.mark.parametrize("family,seed", [(f, 0) for f in FAMILIES])
def test_sample_shapes_and_support(family, seed):
    model_fn, _, kwargs, observations, oracle = _case(family, seed)
    post = _posterior(family, seed)
    n = 7
    draws = post.sample(n)
    for name, site in oracle.sites.items():
        v = torch.as_tensor(draws[name])
        assert tuple(v.shape) == (n,) + tuple(site.batch_shape), (name, tuple(v.shape))
        for i in range(n):
            _as_support_value(site, v[i])
    # every draw has positive posterior probability (matters for the models with zeros)
    for i in range(n):
        assignment = {name: _as_support_value(s, torch.as_tensor(draws[name])[i]) for name, s in oracle.sites.items()}
        lj = log_joint(model_fn, kwargs, observations, assignment)
        assert math.isfinite(lj), f"{family}: sample {i} has probability zero: {assignment}"


# --------------------------------------------------------------------------- sample frequencies
def _frequency_check(family_case, n=20_000):
    model_fn, data, kwargs, observations, oracle = family_case
    post = ppl.infer(ppl.model(model_fn), data, method="exact", seed=0)
    draws = post.sample(n)
    cols = {name: torch.as_tensor(draws[name]).reshape(n, -1).to(torch.float64) for name in oracle.sites}
    # joint frequencies
    index = {t: i for i, t in enumerate(oracle.index_tuples)}
    codes = []
    for name, site in oracle.sites.items():
        sup = site.support.to(torch.float64)
        idx = (cols[name][..., None] == sup).to(torch.long).argmax(-1)  # (n, numel)
        codes.append(idx)
    codes = torch.cat(codes, dim=1).tolist()
    counts = np.zeros(len(oracle.index_tuples))
    for c in codes:
        counts[index[tuple(c)]] += 1
    probs = oracle.probs.numpy()
    impossible = probs == 0
    assert counts[impossible].sum() == 0, "samples hit assignments of probability zero"
    expected = probs * n
    # pool the possible bins with expected count < 5 into one
    big = expected >= 5
    small = ~big & ~impossible
    obs_b, exp_b = list(counts[big]), list(expected[big])
    if small.any():
        obs_b.append(counts[small].sum())
        exp_b.append(expected[small].sum())
    assert len(exp_b) >= 3, "degenerate test model: too few bins"
    exp_b = np.array(exp_b)
    exp_b *= n / exp_b.sum()
    stat = scipy.stats.chisquare(np.array(obs_b), exp_b)
    assert stat.pvalue > 1e-4, f"joint frequencies differ from the oracle: chi2={stat.statistic:.1f}, p={stat.pvalue:.2g}"
    # single-site frequencies within 4 standard errors
    for name, site in oracle.sites.items():
        p = oracle.marginals[name].reshape(-1, site.cardinality)
        for k in range(site.cardinality):
            freq = (cols[name] == site.support[k].to(torch.float64)).to(torch.float64).mean(0)
            se = torch.sqrt(p[:, k] * (1 - p[:, k]) / n)
            assert bool(((freq - p[:, k]).abs() <= 4 * se + 1e-12).all()), (name, k, freq, p[:, k])


def test_sample_frequencies_plated():
    """Global latent + plate of locals: 2 * 3**3 = 54 joint states."""
    model_fn, data = global_local_model(3, N=3, C=2, K=3, V=3)
    kwargs, observations = split_data(model_fn, data)
    oracle = brute_force(model_fn, kwargs, observations)
    _frequency_check((model_fn, data, kwargs, observations, oracle))


def test_sample_frequencies_chain():
    """A 5-step 2-state chain with exact zeros: 32 joint states, some impossible."""
    model_fn, data = zeros_chain_model(4, T=5, K=2, V=3)
    kwargs, observations = split_data(model_fn, data)
    oracle = brute_force(model_fn, kwargs, observations)
    _frequency_check((model_fn, data, kwargs, observations, oracle))


# --------------------------------------------------------------------------- long chain
def _forward_backward(init, trans, emit, ys):
    """Scaled forward-backward in numpy: (log evidence, (T, K) posterior marginals)."""
    T, K = len(ys), len(init)
    alpha = np.zeros((T, K))
    scale = np.zeros(T)
    a = init * emit[:, ys[0]]
    scale[0] = a.sum()
    alpha[0] = a / scale[0]
    for t in range(1, T):
        a = (alpha[t - 1] @ trans) * emit[:, ys[t]]
        scale[t] = a.sum()
        alpha[t] = a / scale[t]
    beta = np.ones((T, K))
    for t in range(T - 2, -1, -1):
        beta[t] = trans @ (emit[:, ys[t + 1]] * beta[t + 1]) / scale[t + 1]
    post = alpha * beta
    return float(np.log(scale).sum()), post / post.sum(1, keepdims=True)


def _two_slice(init, trans, emit, ys):
    """(T-1, K, K) posterior pair marginals p(x_t, x_t+1 | y), by brute products in numpy."""
    T = len(ys)
    alpha = np.zeros((T, len(init)))
    a = init * emit[:, ys[0]]
    alpha[0] = a / a.sum()
    for t in range(1, T):
        a = (alpha[t - 1] @ trans) * emit[:, ys[t]]
        alpha[t] = a / a.sum()
    beta = np.ones((T, len(init)))
    for t in range(T - 2, -1, -1):
        b = trans @ (emit[:, ys[t + 1]] * beta[t + 1])
        beta[t] = b / b.sum()
    xi = alpha[:-1, :, None] * trans[None] * (emit[:, ys[1:]].T * beta[1:])[:, None, :]
    return xi / xi.sum((1, 2), keepdims=True)


def _viterbi(init, trans, emit, ys):
    """Max log joint over paths, numpy (log space)."""
    with np.errstate(divide="ignore"):
        li, lt, le = np.log(init), np.log(trans), np.log(emit)
    delta = li + le[:, ys[0]]
    for t in range(1, len(ys)):
        delta = (delta[:, None] + lt).max(0) + le[:, ys[t]]
    return float(delta.max())


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: chain_model(s, T=40, K=2, V=3), id="T40-K2"),
        pytest.param(lambda s: zeros_chain_model(s, T=40, K=3, V=3), id="T40-K3-zeros"),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_long_chain_forward_backward(make, seed):
    model_fn, data = make(seed)
    tabs = {k: v.numpy() for k, v in model_fn.tables.items()}
    ys = data["ys"].numpy()
    log_z, marg = _forward_backward(tabs["init"], tabs["trans"], tabs["emit"], ys)
    post = ppl.infer(ppl.model(model_fn), data, method="exact", seed=0)
    assert abs(_float(post.log_evidence) - log_z) <= ATOL, (_float(post.log_evidence), log_z)
    got = torch.stack([_marginal_probs(post.marginal(f"x_{t}"), marg.shape[1]) for t in range(len(ys))])
    err = float((got - torch.from_numpy(marg)).abs().max())
    assert err <= ATOL, f"max marginal error {err:.3g}"
    # MAP: log joint of ppl's assignment equals numpy Viterbi's max
    best = post.map()
    assignment = {f"x_{t}": torch.as_tensor(best[f"x_{t}"]).long() for t in range(len(ys))}
    lj = log_joint(model_fn, {"ys": data["ys"]}, {}, assignment)
    vit = _viterbi(tabs["init"], tabs["trans"], tabs["emit"], ys)
    assert abs(lj - vit) <= ATOL, (lj, vit)
    assert abs(_float(post.diagnostics["map_log_joint"]) - vit) <= ATOL
    # joint samples (decoded through the chain): single-site and adjacent-pair frequencies
    n = 20_000
    draws = post.sample(n)
    x = torch.stack([torch.as_tensor(draws[f"x_{t}"]).long() for t in range(len(ys))], 1).numpy()  # (n, T)
    assert x.shape == (n, len(ys))
    k = marg.shape[1]
    freq = np.stack([(x == j).mean(0) for j in range(k)], 1)  # (T, K)
    se = np.sqrt(marg * (1 - marg) / n)
    assert np.all(np.abs(freq - marg) <= 4.5 * se + 1e-12), np.abs(freq - marg).max()
    xi = _two_slice(tabs["init"], tabs["trans"], tabs["emit"], ys)
    pair = np.zeros_like(xi)
    np.add.at(pair, (np.arange(len(ys) - 1)[None, :].repeat(n, 0), x[:, :-1], x[:, 1:]), 1.0)
    pair /= n
    assert np.all(pair[xi == 0] == 0), "sampled a transition of probability zero"
    se = np.sqrt(xi * (1 - xi) / n)
    assert np.all(np.abs(pair - xi) <= 4.5 * se + 1e-12), np.abs(pair - xi).max()


# --------------------------------------------------------------------------- dynamic range
_E = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64)
_PC = torch.tensor([0.5, 0.5], dtype=torch.float64)


def _conflict(xa, xb):
    """Two plates whose data pull a global ``c`` in opposite directions."""
    c = pyro.sample("c", dist.Categorical(_PC))
    with pyro.plate("A", len(xa)):
        pyro.sample("a_obs", dist.Categorical(pyro.ops.indexing.Vindex(_E)[c]), obs=xa)
    with pyro.plate("B", len(xb)):
        pyro.sample("b_obs", dist.Categorical(pyro.ops.indexing.Vindex(_E)[c]), obs=xb)


@pytest.mark.parametrize(
    "n",
    [
        100,
        400,  # beyond exp's float64 range: the scaled executor underflows, the log-domain fallback is exact
    ],
)
def test_conflicting_plates_dynamic_range(n):
    """log p(x) = n (log 0.9 + log 0.1), P(c) = (1/2, 1/2): each plate alone favours one
    value of c by n log 9 nats (879 nats for n = 400, beyond exp's float64 range)."""
    data = {"xa": torch.zeros(n, dtype=torch.long), "xb": torch.ones(n, dtype=torch.long)}
    oracle = brute_force(_conflict, data, {})
    assert oracle.log_evidence == pytest.approx(n * math.log(0.09), abs=1e-9)
    post = ppl.infer(ppl.model(_conflict), data, method="exact")
    assert abs(_float(post.log_evidence) - oracle.log_evidence) <= 1e-7
    assert torch.allclose(_marginal_probs(post.marginal("c"), 2), oracle.marginals["c"], atol=ATOL, rtol=0)
