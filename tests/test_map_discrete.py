"""method="map" on discrete and mixed models, against references that share no code with ppl.

* small random discrete models (``tests/random_models.py``: chains, trees, loopy DAGs,
  plated, nested-plated and Bernoulli models, exact zeros, observed discrete children and
  parents) against brute-force enumeration of the full joint with Pyro's own
  ``trace(condition(model)).log_prob_sum()`` (``tests/oracles.py``): the MAP assignment
  and ``log_joint`` equal the argmax / max of the joint (each case's argmax is checked to
  be unique first, so a tie can never make the comparison ambiguous);
* HMM chains (``ppl.markov`` / ``pyro.markov`` loops, Gaussian and categorical
  emissions, T = 50) against a numpy Viterbi written here (log-space DP + backtrack);
  uniqueness of the path checked with numpy max-marginals;
* a mixed model (a 1-D two-component mixture with continuous ``loc ~ Normal(0, 10)`` and
  discrete ``z``): coordinate ascent never decreases ``log p``, and the returned point is
  a fixed point of both coordinate steps, checked in closed form;
* ``method="map"`` against ``method="exact"``'s ``map()`` on the same models;
* a smoke run of ``ppl_examples/map_viterbi.py --quick``.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pyro.distributions as pdist
import pytest
import torch
from pyro.ops.indexing import Vindex

import ppl
import ppl.distributions as dist
from oracles import brute_force, log_joint, split_data
from random_models import (
    FAMILIES,
    bernoulli_model,
    chain_model,
    dag_model,
    global_local_model,
    mixture_model,
    nested_plates_model,
    tree_model,
    zeros_chain_model,
    zeros_dag_model,
)

F64 = torch.float64
ATOL = 1e-9
LOG_2PI = math.log(2.0 * math.pi)


# =========================================================================== helpers
def _map(model_fn, data, **options):
    return ppl.infer(model_fn if isinstance(model_fn, ppl.Model) else ppl.model(model_fn), data,
                     method="map", **options)


def _unique_argmax_gap(oracle) -> float:
    """Gap (nats) between the best and the second-best joint assignment of the brute force."""
    lj = oracle.log_joints
    top = torch.topk(lj, 2).values
    return float(top[0] - top[1])


def _as_support(site, value):
    """A ppl value as the oracle site's support dtype, checking shape and support."""
    value = torch.as_tensor(value)
    assert tuple(value.shape) == tuple(site.batch_shape), (site.name, tuple(value.shape), tuple(site.batch_shape))
    v = value.to(F64).reshape(-1)
    ok = (v[:, None] == site.support.to(F64)[None, :]).any(-1)
    assert bool(ok.all()), f"{site.name}: {value.tolist()} outside the support {site.support.tolist()}"
    return value.to(site.support.dtype)


def _same(a, b) -> bool:
    return torch.equal(torch.as_tensor(a).to(F64), torch.as_tensor(b).to(F64))


# =========================================================================== (a) brute force
BRUTE_CASES = {
    "chain-T6-K2": lambda: chain_model(0, T=6, K=2, V=3),
    "chain-T5-K3": lambda: chain_model(1, T=5, K=3, V=3),
    "zeros-chain": lambda: zeros_chain_model(0, T=5),
    "tree": lambda: tree_model(0, n=7, n_obs=2),
    "dag-loopy": lambda: dag_model(0, n=7, n_obs=2),
    "dag-observed-3": lambda: dag_model(2, n=8, n_obs=3),
    "mixture-plate": lambda: mixture_model(0, N=5),
    "global-local-plate": lambda: global_local_model(1, N=4),
    "nested-plates": lambda: nested_plates_model(0),
    "bernoulli-plate": lambda: bernoulli_model(0),
    "zeros-dag-plate": lambda: zeros_dag_model(0),
}


@pytest.mark.parametrize("case", list(BRUTE_CASES))
def test_map_equals_brute_force_argmax(case):
    model_fn, data = BRUTE_CASES[case]()
    kwargs, observations = split_data(model_fn, data)
    oracle = brute_force(model_fn, kwargs, observations)
    # the random tables make the argmax unique; a tie would make "the" assignment ambiguous
    assert _unique_argmax_gap(oracle) > 1e-6, f"{case}: the brute-force argmax is tied, pick another seed"

    post = _map(model_fn, data)
    assert post.method == "map"
    assert post.elbo is None
    assert post.converged
    best = post.map()
    assert set(best) == set(oracle.sites), (sorted(best), sorted(oracle.sites))
    assignment = {n: _as_support(site, best[n]) for n, site in oracle.sites.items()}
    for n in oracle.sites:
        assert _same(assignment[n], oracle.map_assignment[n]), (
            f"{case} site {n}: map {assignment[n].tolist()} != argmax {oracle.map_assignment[n].tolist()}")

    # log_joint is max_h log p(h, v), and the log joint of the returned point (Pyro's own trace)
    assert isinstance(post.log_joint, float)
    assert abs(post.log_joint - oracle.map_log_joint) <= ATOL, (post.log_joint, oracle.map_log_joint)
    lj = log_joint(model_fn, kwargs, observations, assignment, expected_latents=oracle.sites)
    assert abs(lj - oracle.map_log_joint) <= ATOL, (lj, oracle.map_log_joint)
    assert post.history and abs(post.history[-1] - post.log_joint) <= ATOL

    # a point mass: Delta marginals, mean = the MAP, draws repeat it
    draws = post.sample(4)
    for n, site in oracle.sites.items():
        m = post.marginal(n)
        assert isinstance(m, pdist.Delta), type(m)
        assert tuple(m.batch_shape) == tuple(site.batch_shape)
        assert _same(m.v, assignment[n])
        assert _same(post.mean(n), assignment[n])
        assert tuple(draws[n].shape) == (4,) + tuple(site.batch_shape)
        assert all(_same(draws[n][i], assignment[n]) for i in range(4))


# ---- a model written with ppl's own DSL: a plate whose latent has a discrete observed child
#      and a discrete observed parent, so the evidence enters from both sides
def _dsl_case(seed=3, N=4):
    g = torch.Generator().manual_seed(seed)

    def probs(*shape):
        w = -torch.log(torch.rand(shape, generator=g, dtype=F64))
        return w / w.sum(-1, keepdim=True)

    pa, pb, pz, po = probs(3), probs(3, 2), probs(2, 3, 3), probs(3, 4)
    b_obs = torch.tensor(1)
    x = torch.multinomial(probs(N, 4), 1, generator=g).reshape(N)

    def dsl(x):
        a = ppl.sample("a", dist.Categorical(pa))
        b = ppl.sample("b", dist.Categorical(Vindex(pb)[a]))            # observed child of a
        with ppl.plate("items", len(x)):
            z = ppl.sample("z", dist.Categorical(Vindex(pz)[b, a]))      # observed parent b
            ppl.sample("obs", dist.Categorical(Vindex(po)[z]), obs=x)

    return dsl, {"x": x, "b": b_obs}


def test_map_dsl_model_equals_brute_force():
    fn, data = _dsl_case()
    kwargs, observations = split_data(fn, data)
    oracle = brute_force(fn, kwargs, observations)
    assert _unique_argmax_gap(oracle) > 1e-6
    post = _map(ppl.model(fn), data)
    best = post.map()
    assert set(best) == {"a", "z"}
    assert tuple(best["z"].shape) == (4,)
    for n in ("a", "z"):
        assert _same(best[n], oracle.map_assignment[n]), (n, best[n], oracle.map_assignment[n])
    assert abs(post.log_joint - oracle.map_log_joint) <= ATOL


# =========================================================================== (b) Viterbi
def np_viterbi(log_init, log_trans, log_emit):
    """Most probable path of an HMM, log space: (path (T,), max log p(x, y)).

    ``log_emit[t, k] = log p(y_t | x_t = k)``; ``log_trans[i, j] = log p(x_t = j | x_{t-1} = i)``.
    """
    T, K = log_emit.shape
    delta = log_init + log_emit[0]
    back = np.zeros((T, K), dtype=np.int64)
    for t in range(1, T):
        scores = delta[:, None] + log_trans          # (from, to)
        back[t] = scores.argmax(0)
        delta = scores.max(0) + log_emit[t]
    path = np.empty(T, dtype=np.int64)
    path[-1] = int(delta.argmax())
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path, float(delta.max())


def np_max_marginals(log_init, log_trans, log_emit):
    """(T, K): ``max over paths with x_t = k`` of log p(x, y) (forward and backward max-product)."""
    T, K = log_emit.shape
    fwd = np.empty((T, K))
    bwd = np.zeros((T, K))
    fwd[0] = log_init + log_emit[0]
    for t in range(1, T):
        fwd[t] = (fwd[t - 1][:, None] + log_trans).max(0) + log_emit[t]
    for t in range(T - 2, -1, -1):
        bwd[t] = (log_trans + (log_emit[t + 1] + bwd[t + 1])[None, :]).max(1)
    return fwd + bwd


def np_path_log_joint(path, log_init, log_trans, log_emit):
    T = len(path)
    return float(log_init[path[0]] + log_trans[path[:-1], path[1:]].sum() + log_emit[np.arange(T), path].sum())


def _gaussian_hmm_case(seed=1, K=4, T=50):
    rng = np.random.default_rng(seed)
    init = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.full(K, 0.5), size=K) + 2.0 * np.eye(K)
    trans /= trans.sum(1, keepdims=True)
    loc = np.linspace(-3.0, 3.0, K)
    scale = rng.uniform(0.5, 1.5, K)
    x = [rng.choice(K, p=init)]
    for _ in range(1, T):
        x.append(rng.choice(K, p=trans[x[-1]]))
    y = loc[x] + scale[x] * rng.normal(size=T)
    ti, tt, tl, ts = (torch.as_tensor(a, dtype=F64) for a in (init, trans, loc, scale))

    @ppl.model
    def gauss_hmm(y):
        x = None
        for t in ppl.markov(range(len(y))):
            x = ppl.sample(f"x_{t}", dist.Categorical(ti if t == 0 else tt[x]))
            ppl.sample(f"y_{t}", dist.Normal(tl[x], ts[x]), obs=y[t])

    log_emit = -0.5 * ((y[:, None] - loc[None, :]) / scale[None, :]) ** 2 - np.log(scale)[None, :] - 0.5 * LOG_2PI
    return gauss_hmm, {"y": torch.as_tensor(y, dtype=F64)}, (np.log(init), np.log(trans), log_emit)


def _categorical_hmm_case(seed=0, K=4, T=50, V=5):
    model_fn, data = chain_model(seed, T=T, K=K, V=V)
    tabs = {k: v.numpy() for k, v in model_fn.tables.items()}
    ys = data["ys"].numpy()
    return ppl.model(model_fn), data, (np.log(tabs["init"]), np.log(tabs["trans"]), np.log(tabs["emit"][:, ys].T))


def _zeros_hmm_case(seed=0, K=4, T=50, V=4):
    model_fn, data = zeros_chain_model(seed, T=T, K=K, V=V)
    tabs = {k: v.numpy() for k, v in model_fn.tables.items()}
    ys = data["ys"].numpy()
    with np.errstate(divide="ignore"):
        logs = (np.log(tabs["init"]), np.log(tabs["trans"]), np.log(tabs["emit"][:, ys].T))
    return ppl.model(model_fn), data, logs


HMM_CASES = {
    "gaussian": _gaussian_hmm_case,
    "categorical": _categorical_hmm_case,
    "zeros": _zeros_hmm_case,
    # seed 2 has two optimal paths (an exact tie, up to round-off): any one of them will do
    "categorical-tied": lambda: _categorical_hmm_case(seed=2),
}


@pytest.mark.parametrize("case", list(HMM_CASES))
def test_hmm_map_is_numpy_viterbi(case):
    model, data, (li, lt, le) = HMM_CASES[case]()
    T, K = le.shape
    assert (T, K) == (50, 4)
    path, best = np_viterbi(li, lt, le)
    assert math.isfinite(best)
    # is the reference path the unique argmax?  (every max-marginal off the path lower)
    mm = np_max_marginals(li, lt, le)
    assert np.allclose(mm.max(1), best, atol=1e-9, rtol=0)
    off = np.where(np.eye(K, dtype=bool)[path], -np.inf, mm)
    gap = float((best - off.max(1)).min())
    tied = case.endswith("tied")
    assert (gap < 1e-9) if tied else (gap > 1e-6), (case, gap)

    post = _map(model, data)
    got = post.map()
    assert set(got) == {f"x_{t}" for t in range(T)}
    ppl_path = np.array([int(got[f"x_{t}"]) for t in range(T)])
    assert all(tuple(got[f"x_{t}"].shape) == () for t in range(T))
    if not tied:
        assert np.array_equal(ppl_path, path), f"paths differ at t = {np.flatnonzero(ppl_path != path).tolist()}"
    assert abs(post.log_joint - best) <= ATOL, (post.log_joint, best)
    assert abs(np_path_log_joint(ppl_path, li, lt, le) - best) <= ATOL


# =========================================================================== (c) mixed model
W = np.array([0.4, 0.6])
PRIOR_SCALE = 10.0


@ppl.model
def gmm_loc_prior(x):
    """1-D two-component mixture: loc_k ~ Normal(0, 10) (plate of 2), z_i ~ Cat(W),
    x_i ~ Normal(loc[z_i], 1)."""
    with ppl.plate("components", 2):
        loc = ppl.sample("loc", dist.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SCALE))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(torch.as_tensor(W, dtype=F64)))
        ppl.sample("obs", dist.Normal(loc[z], 1.0), obs=x)


def _np_gmm_log_joint(x, loc, z):
    lp_loc = -0.5 * (loc / PRIOR_SCALE) ** 2 - math.log(PRIOR_SCALE) - 0.5 * LOG_2PI
    lp_x = np.log(W[z]) - 0.5 * (x - loc[z]) ** 2 - 0.5 * LOG_2PI
    return float(lp_loc.sum() + lp_x.sum())


@pytest.fixture(scope="module")
def gmm_data():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-2.0, 1.0, 30), rng.normal(2.5, 1.0, 40)])


@pytest.mark.parametrize("init", ["mean", "far"])
def test_mixed_gmm_coordinate_ascent(gmm_data, init):
    x = gmm_data
    options = {}
    if init == "far":   # both locations start on the same side: several rounds to separate them
        options["init"] = {"loc": torch.tensor([5.0, 6.0], dtype=F64)}
    post = _map(gmm_loc_prior, {"x": torch.as_tensor(x, dtype=F64)}, **options)
    assert post.elbo is None
    assert post.converged
    best = post.map()
    assert set(best) == {"loc", "z"}
    loc = best["loc"].detach().numpy()
    z = best["z"].numpy()
    assert loc.shape == (2,) and z.shape == (len(x),)
    assert set(np.unique(z)) <= {0, 1}

    # rounds of coordinate ascent: log p never decreases, the last is the best
    h = np.asarray(post.history, dtype=float)
    assert len(h) >= 2, h
    assert np.all(np.isfinite(h))
    assert np.all(np.diff(h) >= -1e-9 * (1.0 + np.abs(h[1:]))), np.diff(h)
    assert np.all(post.log_joint >= h - 1e-9 * (1.0 + np.abs(h))), (post.log_joint, h)
    assert post.log_joint == pytest.approx(h[-1], abs=1e-12)
    assert post.log_joint == pytest.approx(_np_gmm_log_joint(x, loc, z), abs=1e-9)

    # z maximises log p given the returned locs (brute force over k for every point)
    scores = np.log(W)[None, :] - 0.5 * (x[:, None] - loc[None, :]) ** 2      # (N, 2)
    assert np.array_equal(z, scores.argmax(1)), np.flatnonzero(z != scores.argmax(1))
    assert np.all(np.abs(scores[:, 0] - scores[:, 1]) > 1e-9)                  # no point on the fence

    # the locs are the closed-form mode given z: sum_{i in k} x_i / (n_k + sigma^2 / 10^2)
    for k in range(2):
        n_k = int((z == k).sum())
        mode = x[z == k].sum() / (n_k + 1.0 / PRIOR_SCALE ** 2)
        assert abs(loc[k] - mode) <= 1e-6, (k, loc[k], mode)

    # the point found is the one separating the two clusters
    assert loc.min() < -1.0 and loc.max() > 1.0, loc

    # a point mass on both kinds of site
    assert isinstance(post.marginal("loc"), pdist.Delta)
    assert torch.equal(post.mean("loc"), best["loc"])
    assert tuple(post.sample(3)["z"].shape) == (3, len(x))


# =========================================================================== (d) map == exact
def _large_cases():
    return {
        "chain-T60-K4": chain_model(7, T=60, K=4, V=4),
        "zeros-chain-T40": zeros_chain_model(3, T=40, K=3, V=3),
        "mixture-N40": mixture_model(5, N=40, K=3, V=4),
        "global-local-N25": global_local_model(4, N=25),
        "nested-G4-I5": nested_plates_model(2, G=4, I=5),
        "bernoulli-N12": bernoulli_model(6, N=12),
        "zeros-dag-N10": zeros_dag_model(1, N=10),
    }


MATCH_CASES = [(f, s) for f in FAMILIES for s in (0, 1)] + [(name, None) for name in _large_cases()]


@pytest.mark.parametrize("family,seed", MATCH_CASES)
def test_map_backend_equals_exact_map(family, seed):
    model_fn, data = FAMILIES[family](seed) if seed is not None else _large_cases()[family]
    model = ppl.model(model_fn)
    mp = ppl.infer(model, data, method="map")
    ex = ppl.infer(model, data, method="exact")
    a, b = mp.map(), ex.map()
    assert set(a) == set(b), (sorted(a), sorted(b))
    for n in a:
        assert tuple(a[n].shape) == tuple(torch.as_tensor(b[n]).shape), n
        assert _same(a[n], b[n]), (n, a[n], b[n])
    assert abs(mp.log_joint - float(ex.diagnostics["map_log_joint"])) <= ATOL
    # and the reported max is the log joint of the returned point (Pyro's own trace)
    kwargs, observations = split_data(model_fn, data)
    lj = log_joint(model_fn, kwargs, observations, {n: v for n, v in a.items()})
    assert abs(lj - mp.log_joint) <= ATOL * max(1.0, abs(lj)), (lj, mp.log_joint)


# =========================================================================== example smoke test
def test_map_viterbi_example_runs(capsys):
    pytest.importorskip("statsmodels")
    from ppl_examples import map_viterbi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        map_viterbi.main(["--quick"])
    out = capsys.readouterr().out
    lj = re.search(r"log p\(x̂, y; θ\) = (-?[\d.]+)", out)
    assert lj and math.isfinite(float(lj.group(1))) and float(lj.group(1)) < 0, out
    assert re.search(r"\b(\d+) regime switches", out), out
    agree = re.search(r"agreement with numpy Viterbi: ([\d.]+)", out)
    assert agree and float(agree.group(1)) == 1.0, out
    diff = re.search(r"\|Δ log joint\| = ([\d.e+-]+)", out)
    assert diff and float(diff.group(1)) < 1e-8, out
    counts = re.search(r"years per regime: (.*)", out)
    assert counts and sum(int(c) for c in re.findall(r"\d+: (\d+)", counts.group(1))) == 309, out
