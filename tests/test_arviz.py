"""ArviZ export, summary via ArviZ, notebook display and figures of a Posterior (issue 16).

References that cannot share ppl's bugs: the Normal log density written out by hand
(``-½ log 2π - log σ - (y - μ)² / 2σ²``) at the posterior draws read back from the
InferenceData; Bayes' rule by hand for a two-component mixture with known components;
numpy's mean / sd / quantile and a brute-force narrowest interval over the stored draws;
``az.rhat`` / ``az.ess`` / ``az.loo`` on arrays built here with numpy.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import warnings

import numpy as np
import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.errors import IntractableError, OptionError
from ppl.trust import Trust

az = pytest.importorskip("arviz")
F = torch.float64
LOG_2PI = math.log(2 * math.pi)

Y = torch.randn(20, dtype=F, generator=torch.Generator().manual_seed(0)) * 1.0 + 1.0


@ppl.model
def normal(y, sigma=1.0):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(mu, sigma), obs=y)


W, LOCS = [0.3, 0.7], [-2.0, 2.0]
YM = torch.tensor([-2.1, 1.5, 2.2, 0.1], dtype=F)


@ppl.model
def mixture(y):
    with ppl.plate("data", len(y)):
        z = ppl.sample("z", dist.Categorical(torch.tensor(W, dtype=F)))
        ppl.sample("y", dist.Normal(torch.tensor(LOCS, dtype=F)[z], 1.0), obs=y)


def fit(model, data, method, **kw):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ppl.infer(model, data, method=method, seed=0, **kw)
    finally:
        torch.set_num_threads(threads)


def export(post, *args, **kw):
    """``post.to_arviz`` with every warning an error (ArviZ's shape checks included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return post.to_arviz(*args, **kw)


@pytest.fixture(scope="module")
def laplace():
    return fit(normal, {"y": Y}, "laplace", num_draws=500)


@pytest.fixture(scope="module")
def nuts():
    return fit(normal, {"y": Y}, "nuts", num_chains=2, warmup_steps=60, num_samples=60, parallel=False)


@pytest.fixture(scope="module")
def exact():
    return fit(mixture, {"y": YM}, "exact")


def normal_loglik(y, mu, sigma):
    """log N(y | mu, sigma²) written out, broadcast: mu (C, S, 1), y (N,) -> (C, S, N)."""
    return -0.5 * LOG_2PI - math.log(sigma) - (y - mu) ** 2 / (2 * sigma**2)


# ---------------------------------------------------------------- groups and shapes


def test_laplace_groups_are_independent_chains(laplace):
    idata = export(laplace, 400, seed=1)
    assert set(idata.groups()) == {"posterior", "observed_data", "posterior_predictive", "log_likelihood"}
    assert idata.posterior["mu"].dims == ("chain", "draw") and idata.posterior["mu"].shape == (4, 100)
    assert idata.observed_data["y"].dims == ("data",)
    np.testing.assert_array_equal(idata.observed_data["y"].values, Y.numpy())
    for group in ("posterior_predictive", "log_likelihood"):
        assert idata[group]["y"].dims == ("chain", "draw", "data") and idata[group]["y"].shape == (4, 100, 20)
    # the posterior group is sample(400, seed) laid out as 4 chains: the draws the other groups used
    flat = laplace.sample(400, seed=1)["mu"].numpy()
    np.testing.assert_array_equal(idata.posterior["mu"].values.reshape(-1), flat)
    assert "prior" not in idata.groups()


def test_nuts_keeps_its_chains(nuts):
    idata = export(nuts, seed=2)
    draws = nuts.draws("mu")
    assert idata.posterior["mu"].shape == tuple(draws.shape) == (2, 60)
    np.testing.assert_array_equal(idata.posterior["mu"].values, draws.numpy())
    assert idata.posterior_predictive["y"].shape == idata.log_likelihood["y"].shape == (2, 60, 20)


def test_exact_discrete_groups(exact):
    idata = export(exact, 100, seed=3, prior=True)
    assert idata.posterior["z"].dims == ("chain", "draw", "data") and idata.posterior["z"].shape == (4, 25, 4)
    assert set(np.unique(idata.posterior["z"].values)) <= {0, 1}
    assert idata.prior["z"].shape == (4, 25, 4) and idata.prior_predictive["y"].shape == (4, 25, 4)
    # log p(y_i | z_i) at the exact joint draws, by hand
    z = idata.posterior["z"].values
    want = normal_loglik(YM.numpy(), np.asarray(LOCS)[z], 1.0)
    np.testing.assert_allclose(idata.log_likelihood["y"].values, want, rtol=1e-12)


def test_prior_draws_follow_the_prior(laplace):
    idata = export(laplace, 4000, seed=4, prior=True, predictive=False, log_likelihood=False)
    mu = idata.prior["mu"].values.reshape(-1)
    assert abs(mu.mean()) < 4 * 10 / math.sqrt(mu.size) and mu.std() == pytest.approx(10, rel=0.06)
    assert "posterior_predictive" not in idata.groups() and "log_likelihood" not in idata.groups()


def test_small_num_samples_never_gives_more_chains_than_draws(laplace):
    assert export(laplace, 10, seed=0).posterior["mu"].shape == (3, 3)
    assert export(laplace, 50, seed=0, chains=2).posterior["mu"].shape == (2, 25)
    assert export(laplace, 1, seed=0).posterior["mu"].shape == (1, 1)


# ---------------------------------------------------------------- log likelihood, loo, compare


@pytest.mark.parametrize("which", ["laplace", "nuts"])
def test_log_likelihood_is_the_normal_density_at_the_draws(which, laplace, nuts):
    post = {"laplace": laplace, "nuts": nuts}[which]
    idata = export(post, 200, seed=5, predictive=False)
    mu = idata.posterior["mu"].values[..., None]
    np.testing.assert_allclose(idata.log_likelihood["y"].values, normal_loglik(Y.numpy(), mu, 1.0), rtol=1e-12)


def test_loo_and_compare_rank_the_right_model(laplace):
    bad = fit(normal, {"y": Y, "sigma": 0.25}, "laplace", num_draws=500)  # noise far too small: misspecified
    good_id, bad_id = export(laplace, 400, seed=6), export(bad, 400, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k of the misspecified model
        loo = az.loo(good_id)
        mu = good_id.posterior["mu"].values[..., None]
        by_hand = az.loo(az.from_dict(posterior={"mu": mu[..., 0]},
                                      log_likelihood={"y": normal_loglik(Y.numpy(), mu, 1.0)}))
        table = az.compare({"good": good_id, "bad": bad_id})
    assert loo.elpd_loo == pytest.approx(by_hand.elpd_loo, rel=1e-10)
    assert list(table.index) == ["good", "bad"] and table.loc["bad", "elpd_diff"] > 10


# ---------------------------------------------------------------- reproducible, pure, checked


def test_seeded_export_is_reproducible_and_pure(laplace):
    before = torch.get_rng_state().clone(), np.random.get_state()[1].copy()
    a, b, c = export(laplace, 100, seed=7), export(laplace, 100, seed=7), export(laplace, 100, seed=8)
    assert torch.equal(torch.get_rng_state(), before[0]) and (np.random.get_state()[1] == before[1]).all()
    for group in ("posterior", "posterior_predictive", "log_likelihood"):
        name = "mu" if group == "posterior" else "y"
        np.testing.assert_array_equal(a[group][name].values, b[group][name].values)
    assert not np.array_equal(a.posterior_predictive["y"].values, c.posterior_predictive["y"].values)


def test_loaded_posterior_gives_every_group_with_its_model_and_the_posterior_group_without(laplace):
    loaded = pickle.loads(pickle.dumps(laplace))
    assert loaded.graph is None and loaded.model is laplace.model  # re-imported by path
    idata, want = export(loaded, 100, seed=1), export(laplace, 100, seed=1)
    assert sorted(idata.groups()) == sorted(want.groups())
    for group in want.groups():  # the same draws, the model compiled again on the saved data
        for name, value in want[group].data_vars.items():
            np.testing.assert_array_equal(idata[group][name].values, value.values)
    loaded = pickle.loads(pickle.dumps(laplace))
    loaded._model_path = None  # as saved from __main__: no model to run
    idata = export(loaded, 100, seed=1)
    assert idata.groups() == ["posterior"] and idata.posterior["mu"].shape == (4, 25)
    assert "no model" in idata.posterior.attrs["ppl_notes"]


@pytest.mark.parametrize("kw, match", [({"chains": 0}, "chains must be a positive integer"),
                                       ({"predictive": "yes"}, "predictive must be True or False"),
                                       ({"prior": 1}, "prior must be True or False"),
                                       ({"seed": -1}, "seed must be None or an integer")])
def test_bad_options_are_refused(laplace, kw, match):
    with pytest.raises(OptionError, match=match):
        laplace.to_arviz(10, **kw)


def test_predictive_groups_checked_against_the_budget(laplace):
    post = copy.copy(laplace)
    post.memory_budget = 4000  # 400 draws of mu fit (3,200 B); mu and y (21 floats) per draw do not
    with pytest.raises(IntractableError, match=r"to_arviz\(num_samples=400\) would allocate"):
        post.to_arviz(400, seed=0)


# ---------------------------------------------------------------- summary


def narrowest_interval(x, prob):
    """Brute force: the shortest interval [x_(i), x_(i + k)], k = floor(prob * n)."""
    x = np.sort(x)
    k = int(math.floor(prob * len(x)))
    i = min(range(len(x) - k), key=lambda j: x[j + k] - x[j])
    return x[i], x[i + k]


def test_draws_summary_agrees_with_numpy(laplace):
    table = laplace.summary()
    row = table.rows[0]
    x = laplace.draws("mu").numpy().reshape(-1)
    assert row["site"] == "mu"
    assert row["mean"] == pytest.approx(x.mean(), rel=1e-12) and row["sd"] == pytest.approx(x.std(ddof=1), rel=1e-12)
    for q in (0.05, 0.5, 0.95):
        assert row[f"{q:.0%}"] == pytest.approx(np.quantile(x, q), rel=1e-12)
    lo, hi = narrowest_interval(x, 0.94)
    assert (row["hdi_3%"], row["hdi_97%"]) == (pytest.approx(lo), pytest.approx(hi))
    assert "r_hat" not in table.columns and "ess_bulk" not in table.columns  # independent draws: no chains
    assert str(laplace.trust) in table.notes


def test_nuts_summary_has_chain_diagnostics(nuts):
    row = nuts.summary().rows[0]
    draws = nuts.draws("mu").numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = az.from_dict(posterior={"x": draws})
        rhat, ess = float(az.rhat(want)["x"]), float(az.ess(want, method="bulk")["x"])
    assert row["r_hat"] == pytest.approx(rhat, rel=1e-12) and row["ess_bulk"] == pytest.approx(ess, rel=1e-12)
    assert row["mean"] == pytest.approx(draws.mean(), rel=1e-12)


def test_exact_summary_is_the_exact_marginals(exact):
    table = exact.summary()
    for i, y in enumerate(YM.tolist()):
        like = [w * math.exp(-0.5 * (y - m) ** 2) for w, m in zip(W, LOCS)]
        p = like[1] / sum(like)  # P(z_i = 1 | y_i), Bayes' rule
        row = table.rows[i]
        assert row["site"] == f"z[{i}]"
        assert row["mean"] == pytest.approx(p, rel=1e-10) and row["sd"] == pytest.approx(math.sqrt(p * (1 - p)))
        assert row["50%"] == (1.0 if p > 0.5 else 0.0)
        assert "hdi_3%" not in row  # no Monte Carlo


# ---------------------------------------------------------------- notebook display and figures


def test_repr_html_shows_verdict_and_numbers(exact, laplace):
    page = exact._repr_html_()
    assert "exact" in page and exact.trust.reasons[0] in page
    assert f"{exact.log_evidence:.4f}" in page
    assert f"{exact.summary().rows[0]['sd']:.4f}" in page
    post = copy.copy(laplace)
    post.trust = Trust("unreliable", ["k > 0.7 & <script>alert(1)</script>"])
    page = post._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page and "unreliable" in page
    assert f"{laplace.elbo:.4f}" in page and f"{laplace.summary().rows[0]['mean']:.4f}" in page


def test_plot_without_path_returns_a_figure_and_writes_nothing(laplace, exact, tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    plt = pytest.importorskip("matplotlib.pyplot")

    monkeypatch.chdir(tmp_path)
    before = plt.get_fignums()
    figures = [laplace.plot("mu"), exact.plot("z")]
    assert all(isinstance(f, Figure) for f in figures)
    assert os.listdir(tmp_path) == [] and plt.get_fignums() == before
    assert laplace.plot("mu", "mu.png") == "mu.png" and os.listdir(tmp_path) == ["mu.png"]


# ArviZ 0.23's own call into matplotlib >= 3.11 (normalize_kwargs), not ppl's
@pytest.mark.filterwarnings("ignore:Passing a dict or None as alias_mapping")
@pytest.mark.parametrize("kind, kw", [("posterior", {}), ("forest", {}), ("ppc", {"num_pp_samples": 10})])
def test_plot_arviz_returns_arviz_axes(laplace, kind, kw):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = set(plt.get_fignums())
    axes = laplace.plot_arviz(kind, num_samples=100, seed=0, **kw)
    try:
        ax = np.ravel(axes)[0]
        assert ax.figure.number in set(plt.get_fignums()) - before
        assert ax.has_data()
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


def test_plot_arviz_kind_checked(laplace):
    with pytest.raises(OptionError, match="kind must be one of"):
        laplace.plot_arviz("trace")
