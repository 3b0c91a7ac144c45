"""Results people keep predict (issue 16): a saved posterior keeps the data its model was
called with, and a loaded posterior whose model can be imported (or is attached with
``ppl.load(path, model=fn)``) answers ``predictive``, ``ppl.predict`` and every group of
``to_arviz`` by compiling the model again on that data.

References: the original, in-memory posterior's own ``predictive`` and ``to_arviz`` — equal
draw for draw where the loaded posterior draws its latents as the original does (CAVI, Laplace,
NUTS), and equal in distribution (moments within 5 Monte Carlo standard errors) where it
draws them from stored draws (exact, SVI); and closed forms: the posterior predictive of a
Gaussian linear regression with known noise (Bishop 2006, *Pattern Recognition and Machine
Learning*, eqs. 3.53-3.54 and 3.58-3.59: ``m_N = S_N (S_0^-1 m_0 + Φᵀ y / σ²)``,
``S_N^-1 = S_0^-1 + ΦᵀΦ / σ²``, ``p(y* | y) = N(φ*ᵀ m_N, σ² + φ*ᵀ S_N φ*)``; Laplace is exact for
it) and of a two-coin mixture (``P(x* = 1 | x) = Σ_c p(c | x) θ_c`` by enumeration).
"""

from __future__ import annotations

import json
import math
import pickle
import warnings
from pathlib import Path

import arviz as az
import pytest
import torch

import ppl
import ppl.distributions as dist
import ppl.posterior.persist as persist
from ppl.errors import DataError, ModelError, OptionError, UnsupportedModelError
from test_persist import run_elsewhere

F64 = torch.float64
SEED = 3
N = 2000          # predictive draws compared
PRIOR_SD, NOISE = 2.0, 0.5
THETA = torch.tensor([0.2, 0.8], dtype=F64)


@ppl.model
def line(X, y=None):
    """Gaussian linear regression with known noise: w, b ~ N(0, 2²), y_i ~ N(b + w x_i, 0.5²)."""
    w = ppl.sample("w", dist.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SD))
    b = ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SD))
    with ppl.plate("d", len(X)):
        ppl.sample("y", dist.Normal(b + w * X, NOISE), obs=y)


@ppl.model
def noisy_line(X, y=None):
    """The regression with a learnable noise scale ``s`` (SVI learns it)."""
    w = ppl.sample("w", dist.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SD))
    b = ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SD))
    s = ppl.param("s", torch.tensor(1.0, dtype=F64), constraint=dist.constraints.positive)
    with ppl.plate("d", len(X)):
        ppl.sample("y", dist.Normal(b + w * X, s), obs=y)


@ppl.model
def coins(x):
    """Which of two coins (heads with 0.2 or 0.8) made the flips ``x``."""
    c = ppl.sample("c", dist.Categorical(torch.tensor([0.5, 0.5], dtype=F64)))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Bernoulli(THETA[c]), obs=x)


@ppl.model
def shifts(x):
    """A shared location and a per-point discrete shift (summed out of Laplace's draws)."""
    loc = ppl.sample("loc", dist.Normal(torch.tensor(0.0, dtype=F64), 3.0))
    with ppl.plate("d", len(x)):
        z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
        ppl.sample("x", dist.Normal(loc + 3.0 * z, 1.0), obs=x)


@ppl.model(name="line")
def line_renamed_site(X, y=None):
    """Named 'line', but its slope is the site 'slope'."""
    w = ppl.sample("slope", dist.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SD))
    b = ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SD))
    with ppl.plate("d", len(X)):
        ppl.sample("y", dist.Normal(b + w * X, NOISE), obs=y)


@ppl.model(name="line")
def line_student(X, y=None):
    """Named 'line', with a Student-t prior on the slope."""
    w = ppl.sample("w", dist.StudentT(3.0, torch.tensor(0.0, dtype=F64), PRIOR_SD))
    b = ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SD))
    with ppl.plate("d", len(X)):
        ppl.sample("y", dist.Normal(b + w * X, NOISE), obs=y)


@ppl.model(name="line")
def line_two_slopes(X, y=None):
    """Named 'line', with a slope of shape (2,) (a model changed since the fit)."""
    w = ppl.sample("w", dist.Normal(torch.zeros(2, dtype=F64), PRIOR_SD).to_event(1))
    b = ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SD))
    with ppl.plate("d", len(X)):
        ppl.sample("y", dist.Normal(b + w.sum(-1, keepdim=True) * X, NOISE), obs=y)


def linked(X, link, y=None):
    """A model with a function among its arguments (not kept in the file)."""
    w = ppl.sample("w", dist.Normal(torch.tensor(0.0, dtype=F64), PRIOR_SD))
    with ppl.plate("d", len(X)):
        ppl.sample("y", dist.Normal(link(w * X), NOISE), obs=y)


X = torch.linspace(-1.0, 1.0, 7, dtype=F64)
Y = 0.3 + 1.2 * X + 0.2 * torch.sin(9.0 * X)
LINE = {"X": X, "y": Y}
X_NEW = torch.tensor([-2.0, 0.0, 0.5, 3.0], dtype=F64)  # new covariates, a new plate size
FLIPS = {"x": torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0], dtype=F64)}

# (id, method, model, data, options, new data, the loaded posterior draws its latents as the original does)
RUNS = [
    ("exact", "exact", coins, FLIPS, {}, {"x": torch.zeros(9, dtype=F64)}, False),
    ("cavi", "cavi", coins, FLIPS, {}, {"x": torch.zeros(9, dtype=F64)}, True),
    ("laplace", "laplace", line, LINE, {}, {"X": X_NEW}, True),
    ("nuts", "nuts", line, LINE, {"num_samples": 50, "warmup_steps": 50, "num_chains": 2, "parallel": False},
     {"X": X_NEW}, True),
    ("svi", "svi", noisy_line, LINE, {"num_steps": 1000}, {"X": X_NEW}, False),
]
IDS = [r[0] for r in RUNS]
BY_ID = {r[0]: r for r in RUNS}


def answers(post, name: str) -> dict:
    """What a loaded posterior must answer like the original, as JSON-able values (run here on
    the original and, in a fresh process, on the loaded one)."""
    new = BY_ID[name][5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = post.to_arviz(400, seed=SEED)
        loo = az.loo(idata)
    observed = list(idata.observed_data.data_vars)
    return {"predictive": {k: v.tolist() for k, v in post.predictive(N, seed=SEED).items()},
            "new": {k: v.tolist() for k, v in post.predictive(N, data=new, seed=SEED).items()},
            "predict is predictive": all(torch.equal(a, b) for a, b in zip(
                ppl.predict(post, 20, seed=1).values(), post.predictive(20, seed=1).values())),
            "groups": sorted(idata.groups()), "loo": float(loo.elpd_loo),
            "observed_data": {k: idata.observed_data[k].values.tolist() for k in observed},
            "log_likelihood": {k: list(idata.log_likelihood[k].shape) for k in observed},
            "log_likelihood moments": {k: [idata.log_likelihood[k].mean(("chain", "draw")).values.tolist(),
                                           idata.log_likelihood[k].std(("chain", "draw")).values.tolist()]
                                       for k in observed},
            "params": {k: v.tolist() for k, v in post.params.items()},
            "model": [post.model_path, post.graph is None]}


CHILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
import ppl
import test_persist_predictive as t
out = {}
for name in sys.argv[2:]:
    out[name] = t.answers(ppl.load(sys.argv[1] + "/" + name + ".pt"), name)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fitted(one_torch_thread):
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, method, model, data, kw, _, _ in RUNS:
            out[name] = ppl.infer(model, data, method=method, seed=SEED, **kw)
    return out


@pytest.fixture(scope="module")
def loaded_elsewhere(fitted, tmp_path_factory):
    """Save every posterior here, load them in one fresh Python that imports this module (the
    models' module) and return its answers (id -> :func:`answers`)."""
    folder = tmp_path_factory.mktemp("saved")
    for name, post in fitted.items():
        post.save(folder / f"{name}.pt")
    return run_elsewhere(CHILD, folder, *fitted, path=[Path(__file__).parent])


def _moments(draws):
    t = torch.tensor(draws, dtype=F64)
    return t.mean(0), t.var(0)


def _same_distribution(got: dict, want: dict) -> None:
    """Means within 5 Monte Carlo standard errors of their difference, variances within 5
    of theirs (a Gaussian's: sd of a sample variance ≈ var·√(2/N))."""
    assert set(got) == set(want)
    for site in want:
        (m1, v1), (m2, v2) = _moments(got[site]), _moments(want[site])
        assert m1.shape == m2.shape
        assert torch.all((m1 - m2).abs() <= 5 * ((v1 + v2) / N).sqrt() + 1e-12), site
        assert torch.all((v1 - v2).abs() <= 5 * math.sqrt(2 / N) * (v1 + v2) / 2 * 1.5 + 1e-12), site


@pytest.mark.parametrize("name", IDS)
def test_a_loaded_posterior_predicts_as_the_original_in_a_fresh_process(name, fitted, loaded_elsewhere):
    post, same_draws = fitted[name], BY_ID[name][6]
    want, got = json.loads(json.dumps(answers(post, name))), loaded_elsewhere[name]
    assert got["model"] == [f"{__name__}:{post.model.name}", True]  # re-imported there, no graph kept
    assert got["groups"] == want["groups"] == ["log_likelihood", "observed_data", "posterior",
                                               "posterior_predictive"]
    for key in ("observed_data", "log_likelihood", "params", "predict is predictive"):
        assert got[key] == want[key], key
    assert got["predict is predictive"] is True
    new_size = len(next(iter(BY_ID[name][5].values())))
    assert [len(v[0]) for v in got["new"].values()] == [new_size]   # the new plate size
    if same_draws:  # the same latent draws, the same noise stream: the same numbers
        assert got["predictive"] == want["predictive"] and got["new"] == want["new"]
        assert got["loo"] == want["loo"]
        return
    _same_distribution(got["predictive"], want["predictive"])
    _same_distribution(got["new"], want["new"])
    # the pointwise log-likelihood: its mean over 400 draws within 5 Monte Carlo se (PSIS-LOO itself is too
    # noisy to compare here: Pareto k > 0.7 for this small, overfitted regression)
    assert math.isfinite(got["loo"])
    for site, (mean, sd) in want["log_likelihood moments"].items():
        mean2, sd2 = got["log_likelihood moments"][site]
        for m1, s1, m2, s2 in zip(mean, sd, mean2, sd2):
            assert abs(m1 - m2) <= 5 * math.sqrt((s1**2 + s2**2) / 400), site


def _line_posterior():
    """Mean and covariance of (w, b) given LINE, in closed form (Bishop eqs. 3.53-3.54)."""
    phi = torch.stack([X, torch.ones_like(X)], -1)
    precision = torch.eye(2, dtype=F64) / PRIOR_SD**2 + phi.T @ phi / NOISE**2
    cov = torch.linalg.inv(precision)
    return cov @ (phi.T @ Y) / NOISE**2, cov


def test_loaded_predictive_has_the_closed_form_mean_and_variance(loaded_elsewhere):
    mean, cov = _line_posterior()
    phi = torch.stack([X_NEW, torch.ones_like(X_NEW)], -1)
    want_mean, want_var = phi @ mean, NOISE**2 + (phi @ cov * phi).sum(-1)
    m, v = _moments(loaded_elsewhere["laplace"]["new"]["y"])
    assert torch.all((m - want_mean).abs() <= 5 * (want_var / N).sqrt())
    assert torch.all((v / want_var - 1).abs() <= 5 * math.sqrt(2 / N))
    # two coins: P(c | x) by enumeration, then P(x* = 1) = Σ_c P(c | x) θ_c, variance m (1 - m)
    heads = FLIPS["x"]
    like = torch.stack([(t**heads * (1 - t) ** (1 - heads)).prod() for t in THETA])
    m_want = float((like / like.sum() * THETA).sum())
    for name in ("exact", "cavi"):
        m, v = _moments(loaded_elsewhere[name]["new"]["x"])
        assert m.shape == (9,)
        assert torch.all((m - m_want).abs() <= 5 * math.sqrt(m_want * (1 - m_want) / N))


def test_learned_params_are_used(fitted, loaded_elsewhere):
    post = fitted["svi"]
    s = float(post.params["s"])
    assert s < 0.3  # learned far from its declared 1.0
    assert loaded_elsewhere["svi"]["params"]["s"] == s
    # Var(y*) = Var(b + w x*) over the posterior + s² (the loaded latents are the stored draws)
    draws = pickle.loads(pickle.dumps(post)).sample(N, seed=SEED)
    spread = (draws["b"][:, None] + draws["w"][:, None] * X_NEW).var(0) + s**2
    _, v = _moments(loaded_elsewhere["svi"]["new"]["y"])
    assert torch.all((v / spread - 1).abs() <= 5 * math.sqrt(2 / N))


MAIN_CHILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
import torch, ppl, ppl.distributions as dist
F = torch.float64

@ppl.model
def line(X, y=None):
    w = ppl.sample("w", dist.Normal(torch.tensor(0.0, dtype=F), 2.0))
    b = ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=F), 2.0))
    with ppl.plate("d", len(X)):
        ppl.sample("y", dist.Normal(b + w * X, 0.5), obs=y)

X = torch.linspace(-1.0, 1.0, 7, dtype=F)
post = ppl.infer(line, {"X": X, "y": 0.3 + 1.2 * X + 0.2 * torch.sin(9.0 * X)}, method="laplace", seed=3)
post.save(sys.argv[1] + "/main.pt")
torch.save(post.predictive(500, seed=4), sys.argv[1] + "/predicted.pt")
print(json.dumps(post.model_path is None))
"""


def test_a_model_defined_in_main_gives_a_clear_error_and_can_be_attached(tmp_path):
    assert run_elsewhere(MAIN_CHILD, tmp_path) is True
    loaded = ppl.load(tmp_path / "main.pt")
    assert loaded.model is None and loaded.model_path is None
    for call in (lambda: loaded.predictive(10), lambda: ppl.predict(loaded, 10)):
        with pytest.raises(UnsupportedModelError, match=r"its model 'line' was defined where it cannot be imported "
                           r"again \(in __main__.*Define the model in an importable module.*"
                           r"ppl.load\(path, model=line\)"):
            call()
    idata = loaded.to_arviz(100, seed=1)
    assert idata.groups() == ["posterior"] and "Define the model" in idata.posterior.attrs["ppl_notes"]
    # the same model, defined here: attached, it predicts exactly as the original did there
    attached = ppl.load(tmp_path / "main.pt", model=line)
    assert attached.model is line and attached.graph is None
    want = torch.load(tmp_path / "predicted.pt")
    assert torch.equal(attached.predictive(500, seed=4)["y"], want["y"])
    idata = attached.to_arviz(200, seed=1)
    assert {"observed_data", "posterior_predictive", "log_likelihood"} <= set(idata.groups())
    assert math.isfinite(float(az.loo(idata).elpd_loo))


def test_attaching_another_model_names_the_mismatch(fitted, tmp_path):
    path = fitted["laplace"].save(tmp_path / "line.pt")
    with pytest.raises(ModelError, match=r"the model given, 'coins', is not the model this posterior was fitted "
                                         r"with, 'line'"):
        ppl.load(path, model=coins)
    with pytest.raises(ModelError, match=r"site\(s\) \['w'\] of the fitted model are not sites of it; its "
                                         r"site\(s\) \['slope'\] are not sites of the fitted model"):
        ppl.load(path, model=line_renamed_site)
    with pytest.raises(ModelError, match="site 'w' is a StudentT in it, a Normal in the fitted model"):
        ppl.load(path, model=line_student)
    with pytest.raises(ModelError, match=r"site 'w' has batch shape \(\) and event shape \(2,\) in it, \(\) and "
                                         r"\(\) in the fitted model"):
        ppl.load(path, model=line_two_slopes)
    with pytest.raises(OptionError, match="model must be a ppl.model or a callable"):
        ppl.load(path, model="line")
    # a model re-imported by path that no longer matches is refused when it is run
    loaded = ppl.load(path)
    loaded._model_path = f"{__name__}:line_student"
    with pytest.raises(ModelError, match=r"re-imported from 'test_persist_predictive:line_student' is not the "
                                         r"model this posterior was fitted with: site 'w' is a StudentT"):
        loaded.predictive(10)
    assert "site 'w' is a StudentT" in loaded.to_arviz(100).posterior.attrs["ppl_notes"]


def test_a_model_path_that_does_not_import_here_says_so(fitted):
    loaded = pickle.loads(pickle.dumps(fitted["laplace"]))
    loaded._model_path = "no_such_module_here:line"  # as in a process without the models' module
    with pytest.raises(UnsupportedModelError, match=r"its model is kept as 'no_such_module_here:line', which does not "
                                                    r"import here \(ModuleNotFoundError: No module named "
                                                    r"'no_such_module_here'\); put that module on sys.path, or "
                                                    r"attach the model with ppl.load\(path, model=...\)"):
        loaded.predictive(5)


def test_data_over_the_cap_are_not_kept_and_new_data_still_predict(fitted, tmp_path, monkeypatch):
    post = fitted["laplace"]
    monkeypatch.setattr(persist, "DATA_BYTES", 100)  # the fitted data take 112 bytes
    loaded = ppl.load(post.save(tmp_path / "line.pt"))
    assert loaded._data is None and "112 bytes, over the cap of 100" in loaded._data_note
    with pytest.raises(UnsupportedModelError, match=r"the data this posterior was fitted on were not saved with it "
                                                    r"\(the data take 112 bytes, over the cap of 100"):
        loaded.predictive(10)
    assert loaded.to_arviz(100).groups() == ["posterior"]
    # given again (the fitted data, or new data), they predict as the original does
    assert torch.equal(loaded.predictive(300, data=LINE, seed=2)["y"], post.predictive(300, seed=2)["y"])
    with pytest.raises(ModelError, match=r"site 'y' is latent in it, observed in the fitted model \(give its values"):
        loaded.predictive(10, data={"X": X_NEW})  # y=None: without the fitted data, nothing says y is observed
    got = loaded.predictive(300, data={"X": X_NEW, "y": torch.zeros(4, dtype=F64)}, seed=2)["y"]
    assert torch.equal(got, post.predictive(300, data={"X": X_NEW}, seed=2)["y"])


def test_data_that_would_not_load_elsewhere_are_not_kept(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(linked, {"X": X, "link": torch.tanh, "y": Y}, method="laplace", seed=1)
    loaded = ppl.load(post.save(tmp_path / "linked.pt"))
    assert loaded._data is None
    assert loaded._data_note.startswith("data['link'] is a builtin_function_or_method; kept are tensors")
    assert "data['link'] is a builtin_function_or_method" in loaded.to_arviz(50).posterior.attrs["ppl_notes"]
    got = loaded.predictive(200, data={"X": X, "link": torch.tanh, "y": Y}, seed=5)["y"]
    assert torch.equal(got, post.predictive(200, seed=5)["y"])


def test_kept_data_are_the_bound_values_and_survive_saving_again(fitted, tmp_path):
    post = fitted["laplace"]
    loaded = ppl.load(post.save(tmp_path / "once.pt"))
    assert set(loaded._data) == {"X", "y"} and torch.equal(loaded._data["X"], X) and loaded._data_note is None
    assert loaded._fitted == {"name": "line", "arguments": ["X", "y"],
                              "sites": {"w": ["latent", "Normal", [], []], "b": ["latent", "Normal", [], []],
                                        "y": ["observed", "Normal", [7], []]}}
    again = ppl.load(loaded.save(tmp_path / "twice.pt"))  # a loaded posterior saved again keeps them
    assert torch.equal(again._data["y"], Y)
    assert torch.equal(again.predictive(100, seed=1)["y"], post.predictive(100, seed=1)["y"])


class _Version1:
    """Pickles as ``post`` did under format version 1 (no data, no fitted sites)."""

    def __init__(self, post):
        self.post = post

    def __reduce__(self):
        state = persist.portable_state(self.post)
        for key in ("_data", "_data_note", "_fitted"):
            del state["attributes"][key]
        return persist.rebuild, (type(self.post),), {**state, "version": 1}


def test_a_file_of_format_version_1_still_loads_and_predicts_with_data(fitted, tmp_path):
    post = fitted["laplace"]
    torch.save({"format": persist.FORMAT, "version": 1, "ppl_version": "0", "posterior": _Version1(post)},
               tmp_path / "v1.pt")
    loaded = ppl.load(tmp_path / "v1.pt")
    assert torch.equal(loaded.mean("w"), post.mean("w")) and loaded.model is line
    with pytest.raises(UnsupportedModelError, match="saved in format version 1, which kept no data"):
        loaded.predictive(10)
    assert torch.equal(loaded.predictive(100, data=LINE, seed=1)["y"], post.predictive(100, seed=1)["y"])
    with pytest.raises(DataError, match="needs argument"):
        loaded.predictive(10, data={"y": Y})


def test_summed_out_discrete_latents_are_drawn_as_by_the_original_and_copies_share_the_graph():
    import copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(shifts, {"x": torch.tensor([0.3, 3.4, 1.1, 4.2, -0.5], dtype=F64)}, method="laplace",
                         seed=2)
    loaded = pickle.loads(pickle.dumps(post))
    got, want = loaded.predictive(300, seed=4, sites=["x", "z"]), post.predictive(300, seed=4, sites=["x", "z"])
    assert set(got) == {"x", "z"} and all(torch.equal(got[k], want[k]) for k in want)  # z from p(z | loc, x)
    twin = copy.deepcopy(loaded)
    assert twin._rebuilt_graph is loaded._rebuilt_graph and twin.model is loaded.model
    assert torch.equal(twin.predictive(50, seed=1)["x"], post.predictive(50, seed=1)["x"])
