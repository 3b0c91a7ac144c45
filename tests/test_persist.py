"""Keeping a result (issue 16): every Posterior pickles, ``post.save(path)`` / ``ppl.load(path)``
round-trip, and a loaded posterior answers its queries in a fresh process where the model's
module cannot be imported.

References: the original, in-memory posterior (its closures, graph and model) — a loaded one
must give exactly its numbers; where a loaded posterior samples from stored draws (exact,
EM, SVI, CAVI's Normal-Wishart pair), its ``sample(n, seed)`` must be whole rows of the
original's own ``sample(4000, seed=run seed)``, picked uniformly by a generator seeded with
``seed`` (the documented contract).
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.errors import DataError, OptionError, UnsupportedModelError
from ppl.posterior import TablePosterior
from ppl.posterior.persist import FORMAT, STORED_DRAWS, VERSION, portable_state

F64 = torch.float64
SEED = 1


@ppl.model
def bn(wet):
    """A small Bayesian network: weather (3 states) -> rain -> sprinkler; wet observed."""
    weather = ppl.sample("weather", dist.Categorical(torch.tensor([0.5, 0.3, 0.2], dtype=F64)))
    rain = ppl.sample("rain", dist.Bernoulli(torch.tensor([0.1, 0.6, 0.9], dtype=F64)[weather]))
    sprinkler = ppl.sample("sprinkler", dist.Bernoulli(0.5 - 0.4 * rain))
    ppl.sample("wet", dist.Bernoulli(0.05 + 0.5 * rain + 0.4 * sprinkler), obs=wet)


@ppl.model
def coin(x):
    """A hidden coin z with a learnable prior p (EM learns p)."""
    p = ppl.param("p", torch.tensor(0.5, dtype=F64), constraint=dist.constraints.unit_interval)
    z = ppl.sample("z", dist.Bernoulli(p))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Bernoulli(0.2 + 0.6 * z), obs=x)


@ppl.model
def mixture(x):
    """A shared location and a per-point discrete shift (enumerated by SVI, summed out by
    Laplace, Pathfinder and NUTS)."""
    loc = ppl.sample("loc", dist.Normal(torch.tensor(0.0, dtype=F64), 3.0))
    with ppl.plate("d", len(x)):
        z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
        ppl.sample("x", dist.Normal(loc + 3.0 * z, 1.0), obs=x)


@ppl.model
def scale_model(x):
    """A mean and a positive scale (SVI's marginal of s is a transformed Normal)."""
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0))
    s = ppl.sample("s", dist.Gamma(torch.tensor(2.0, dtype=F64), 1.0))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Normal(mu, s), obs=x)


@ppl.model
def normal_wishart(x):
    """A Normal-Wishart pair: CAVI keeps one joint factor over (mu, prec)."""
    prec = ppl.sample("prec", dist.Wishart(torch.tensor(5.0, dtype=F64), covariance_matrix=torch.eye(2, dtype=F64)))
    mu = ppl.sample("mu", dist.MultivariateNormal(torch.zeros(2, dtype=F64), precision_matrix=0.7 * prec))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.MultivariateNormal(mu, precision_matrix=prec), obs=x)


WET = {"wet": torch.tensor(1.0, dtype=F64)}
X_BIN = {"x": torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64)}
X_REAL = {"x": torch.tensor([0.3, 1.9, 1.1, 2.4, 0.8, 1.5, 3.9, 4.2], dtype=F64)}
X_VEC = {"x": torch.tensor([[0.3, 1.0], [1.2, 0.4], [0.8, 0.9], [1.5, 1.1]], dtype=F64)}

# (id, method, model, data, options, sample() of a loaded one comes from stored draws)
RUNS = [
    ("exact", "exact", bn, WET, {}, True),
    ("em", "em", coin, X_BIN, {"max_iter": 20}, True),
    ("map", "map", scale_model, X_REAL, {}, False),
    ("cavi-discrete", "cavi", coin, X_BIN, {}, False),
    ("cavi-conjugate", "cavi", normal_wishart, X_VEC, {}, True),
    ("svi", "svi", mixture, X_REAL, {"num_steps": 60}, True),
    ("svi-positive", "svi", scale_model, X_REAL, {"num_steps": 60}, True),
    ("laplace", "laplace", mixture, X_REAL, {}, False),
    ("pathfinder", "pathfinder", mixture, X_REAL, {"num_paths": 2}, False),
    ("nuts", "nuts", mixture, X_REAL, {"num_chains": 2, "warmup_steps": 30, "num_samples": 30}, False),
    ("chees", "chees", scale_model, X_REAL, {"num_chains": 4, "warmup_steps": 30, "num_samples": 30}, False),
    ("auto", "auto", bn, WET, {}, True),
]
IDS = [r[0] for r in RUNS]
STORED = {r[0]: r[5] for r in RUNS}
pytestmark = pytest.mark.filterwarnings("ignore:Singular sample detected")  # torch's Wishart sampler


def numbers(post) -> dict:
    """Everything a loaded posterior must answer, as JSON-able values (run here and, by its
    source, in the fresh process)."""
    from ppl.errors import DataError, UnsupportedModelError

    def plain(value):
        return value.tolist() if isinstance(value, torch.Tensor) else value

    out = {"class": type(post).__name__, "method": post.method, "sites": list(post.sites), "elbo": post.elbo,
           "log_evidence": post.log_evidence, "converged": post.converged, "elapsed": post.elapsed,
           "seed": post.seed, "memory_budget": post.memory_budget, "history": [float(h) for h in post.history],
           "params": {k: plain(v) for k, v in post.params.items()},
           "trust": [post.trust.verdict, list(post.trust.reasons), post.trust.next_method,
                     {k: v for k, v in post.trust.numbers.items() if isinstance(v, (int, float, str, bool))}],
           "diagnostics": {k: v for k, v in post.diagnostics.items() if isinstance(v, (int, float, str, bool))},
           "summary": post.summary().rows}
    for s in post.sites:
        m = post.marginal(s)
        out[f"marginal {s}"] = [type(m).__name__, list(m.batch_shape), list(m.event_shape)]
        out[f"mean {s}"] = plain(post.mean(s))
        out[f"variance {s}"] = plain(post.variance(s))
        out[f"quantiles {s}"] = [plain(post.quantile(s, q)) for q in (0.1, 0.5, 0.9)]
        if hasattr(post, "probs"):
            try:
                out[f"probs {s}"] = plain(post.probs(s))
            except DataError:  # a continuous site
                pass
    try:
        out["map"] = {k: plain(v) for k, v in post.map().items()}
    except UnsupportedModelError:
        out["map"] = None
    out["sample"] = {k: plain(v) for k, v in post.sample(50, seed=5).items()}
    out["arviz"] = {k: list(v.shape) for k, v in post.to_arviz(100).posterior.data_vars.items()}
    return out


CHILD = """
import importlib.util, json, sys, warnings
warnings.simplefilter("ignore")
import torch, ppl
assert importlib.util.find_spec({module!r}) is None, "the models' module must not be importable here"
{numbers}
out = {{}}
for name in sys.argv[2:]:
    post = ppl.load(sys.argv[1] + "/" + name + ".pt")
    out[name] = numbers(post)
    out[name]["model"] = [post.model is None, post.model_path, post.graph is None]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fitted(one_torch_thread):
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, method, model, data, kw, _ in RUNS:
            out[name] = ppl.infer(model, data, method=method, seed=SEED, **kw)
    return out


def run_elsewhere(code: str, folder, *args, path=()):
    """Run ``code`` in a fresh Python (one thread, in ``folder``, ``sys.argv[1:]`` =
    ``(folder, *args)``, ``PYTHONPATH`` = ``path``: nothing of the tests is importable unless
    named there) and return the JSON it printed last."""
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    done = subprocess.run([sys.executable, "-c", code, str(folder), *map(str, args)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def loaded_elsewhere(fitted, tmp_path_factory):
    """Save every posterior, load them all in one fresh Python whose sys.path lacks this test
    module, and return what it printed (id -> numbers)."""
    folder = tmp_path_factory.mktemp("saved")
    for name, post in fitted.items():
        assert post.save(folder / f"{name}.pt") == str(folder / f"{name}.pt")
    return run_elsewhere(CHILD.format(module=__name__, numbers=inspect.getsource(numbers)), folder, *fitted)


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN equals NaN here


@pytest.mark.parametrize("name", IDS)
def test_a_loaded_posterior_answers_as_the_original_in_a_fresh_process(name, fitted, loaded_elsewhere):
    post, stored = fitted[name], STORED[name]
    want = json.loads(json.dumps(numbers(post)))
    got = loaded_elsewhere[name]
    assert got.pop("model") == [True, f"{__name__}:{post.model.name}", True]  # path kept, not importable there
    sample_got, sample_want = got.pop("sample"), want.pop("sample")
    assert set(got) == set(want)
    for key in want:
        assert _same(got[key], want[key]), f"{name}: {key} differs after loading"
    if not stored:
        assert _same(sample_got, sample_want)
        return
    # the stored draws are the original sampler's own under the run's seed; sample(50, seed=5)
    # picks whole rows of them uniformly with replacement, by a generator seeded with 5
    reference = post.sample(STORED_DRAWS, seed=SEED)
    picked = torch.randint(STORED_DRAWS, (50,), generator=torch.Generator().manual_seed(5))
    assert _same(sample_got, {k: v[picked].tolist() for k, v in reference.items()})


@pytest.mark.parametrize("name", IDS)
def test_plain_pickle_round_trip_keeps_numbers_and_reimports_the_model(name, fitted):
    post = fitted[name]
    state = torch.get_rng_state()
    loaded = pickle.loads(pickle.dumps(post))
    assert torch.equal(state, torch.get_rng_state()), "saving drew from the global RNG"
    assert type(loaded) is type(post) and loaded.graph is None
    assert loaded.model is post.model  # importable in this process: re-imported by path
    want, got = numbers(post), numbers(loaded)
    if STORED[name]:
        want.pop("sample"), got.pop("sample")
    assert _same(got, want)
    again = pickle.loads(pickle.dumps(loaded))  # a loaded posterior pickles again, unchanged
    assert _same(numbers(again), numbers(loaded))


def test_a_model_without_an_import_path_is_not_kept(fitted):
    @ppl.model
    def local_coin(x):
        z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.4, dtype=F64)))
        with ppl.plate("d", len(x)):
            ppl.sample("x", dist.Bernoulli(0.2 + 0.6 * z), obs=x)

    post = ppl.infer(local_coin, X_BIN, method="exact")
    assert post.model is local_coin and post.model_path is None
    loaded = pickle.loads(pickle.dumps(post))
    assert loaded.model is None and loaded.model_path is None
    # p(z=1 | x) by hand: 0.4·0.8³·0.2 / (0.4·0.8³·0.2 + 0.6·0.2³·0.8)
    assert float(loaded.probs("z")[1]) == pytest.approx(0.04096 / (0.04096 + 0.00384), rel=1e-12)
    assert fitted["exact"].model_path == f"{__name__}:bn"


def test_what_cannot_travel_is_dropped_or_named(fitted):
    post = pickle.loads(pickle.dumps(fitted["laplace"]))  # a copy whose attributes we may change

    class Local:
        pass

    post.diagnostics["callback"] = lambda: 1
    post.diagnostics["nested"] = {"ok": 2.5, "obj": Local(), "t": torch.ones(2, requires_grad=True)}
    post.extra = Local()
    loaded = pickle.loads(pickle.dumps(post))
    assert loaded.diagnostics["callback"] == "<not saved: function>"
    assert loaded.diagnostics["nested"]["ok"] == 2.5 and loaded.diagnostics["nested"]["obj"] == "<not saved: Local>"
    assert not loaded.diagnostics["nested"]["t"].requires_grad
    assert loaded.extra is None
    assert post.diagnostics["nested"]["t"].requires_grad  # the original is untouched


def test_trust_verdict_and_reasons_survive(fitted):
    for name in ("exact", "svi", "nuts"):
        post = fitted[name]
        loaded = pickle.loads(pickle.dumps(post))
        assert loaded.trust == post.trust and loaded.trust.verdict == post.trust.verdict
    assert {fitted[n].trust.verdict for n in ("exact", "nuts")} == {"exact", "unreliable"}


def test_save_and_load_errors(fitted, tmp_path):
    post = fitted["exact"]
    path = post.save(tmp_path / "sub" / "p.pt")
    payload = torch.load(path, weights_only=False)
    assert payload["format"] == FORMAT and payload["version"] == VERSION
    payload["version"] = VERSION + 1
    torch.save(payload, tmp_path / "newer.pt")
    with pytest.raises(DataError, match=f"format version {VERSION + 1}"):
        ppl.load(tmp_path / "newer.pt")
    torch.save({"weights": torch.ones(3)}, tmp_path / "weights.pt")
    with pytest.raises(DataError, match="not a saved ppl posterior"):
        ppl.load(tmp_path / "weights.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DataError, match="not a saved ppl posterior"):
        ppl.load(tmp_path / "text.pt")
    with pytest.raises(DataError, match="cannot read"):
        ppl.load(tmp_path / "missing.pt")
    with pytest.raises(OptionError, match="path"):
        ppl.load(123)
    with pytest.raises(OptionError, match="path"):
        post.save(None)
    with pytest.raises(OptionError, match="map_location"):
        ppl.load(path, map_location=3)
    state = portable_state(post)
    with pytest.raises(DataError, match="format version 7"):
        TablePosterior.__new__(TablePosterior).__setstate__({**state, "version": 7})
    with pytest.raises(DataError, match="not a saved ppl posterior"):
        TablePosterior.__new__(TablePosterior).__setstate__({"attributes": {}})
    assert ppl.load(path, map_location="cpu").log_evidence == post.log_evidence


def test_a_loaded_posterior_without_draws_of_its_joint_cannot_sample(fitted):
    post = pickle.loads(pickle.dumps(fitted["cavi-conjugate"]))
    post._joint = {("mu", "prec"): None}  # as saved when one joint draw exceeded the budget
    with pytest.raises(UnsupportedModelError, match="not saved"):
        post.sample(3)
    assert post.mean("mu").shape == (2,)


def test_a_loaded_posterior_plots_without_its_model(fitted, tmp_path):
    pytest.importorskip("matplotlib")
    loaded = pickle.loads(pickle.dumps(fitted["pathfinder"]))
    assert (tmp_path / "loc.png").exists() is False
    loaded.plot("loc", tmp_path / "loc.png", num_samples=200)
    loaded.plot("z", tmp_path / "z.png")
    assert (tmp_path / "loc.png").stat().st_size > 0 and (tmp_path / "z.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["exact", "svi", "cavi-conjugate", "nuts"])
def test_copies_share_the_graph_and_keep_the_numbers(name, fitted):
    import copy

    post = fitted[name]
    deep, shallow = copy.deepcopy(post), copy.copy(post)
    assert deep.graph is post.graph and shallow.graph is post.graph
    assert deep.diagnostics is not post.diagnostics
    for s in post.sites:
        assert torch.equal(deep.mean(s), post.mean(s)) and torch.equal(deep.variance(s), post.variance(s))
