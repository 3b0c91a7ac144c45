"""method="auto" routing (api.auto_route), ppl.compare's columns, printing, pandas and plots,
and Posterior.plot.

References: each backend run alone through ``ppl.infer`` with the same options and seeds
(compare must reproduce its numbers), the Normal-Normal posterior in closed form, and
marginal-error columns recomputed here from the posteriors' own tables.
"""

from __future__ import annotations

import warnings

import pyro
import pytest
import torch
from pyro.ops.indexing import Vindex

import ppl
import ppl.distributions as dist
from ppl.comparison import COLUMNS

F64 = torch.float64
T = torch.tensor([[0.3, 0.7], [0.6, 0.4]], dtype=F64)  # p(z | a)
E = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5]], dtype=F64)  # p(obs | z)
DISCRETE_DATA = {"x": torch.tensor([0, 2, 1, 2])}


@ppl.model
def discrete(x):
    """Every latent discrete, a tiny clique: auto -> exact."""
    a = ppl.sample("a", dist.Bernoulli(torch.tensor(0.4, dtype=F64)))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(Vindex(T)[a.long()]))
        ppl.sample("obs", dist.Categorical(Vindex(E)[z]), obs=x)


@ppl.model
def normal_mean(x):
    """A conjugate continuous latent, no params: auto -> cavi."""
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 2.0))
    with ppl.plate("data", len(x)):
        ppl.sample("x", dist.Normal(mu, 1.0), obs=x)


NORMAL_DATA = {"x": torch.tensor([0.4, 1.1, 0.7, 1.6], dtype=F64)}


@ppl.model
def mixture(x):
    """ppl.params and discrete latents with a tractable E-step: auto -> em."""
    weights = ppl.param("weights", torch.tensor([0.5, 0.5], dtype=F64), constraint=dist.constraints.simplex)
    locs = ppl.param("locs", torch.tensor([-1.0, 1.0], dtype=F64))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(weights))
        ppl.sample("obs", dist.Normal(locs[z], 1.0), obs=x)


MIXTURE_DATA = {"x": torch.tensor([-2.3, -1.8, -2.1, 1.9, 2.4, 2.2, 1.7, -2.0], dtype=F64)}


@ppl.model
def logistic(X, y):
    """A non-conjugate continuous model: auto -> svi."""
    w = ppl.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=F64), 1.0).to_event(1))
    with ppl.plate("data", X.shape[0]):
        ppl.sample("y", dist.Bernoulli(logits=(X * w).sum(-1)), obs=y)


_g = torch.Generator().manual_seed(0)
_X = torch.randn(20, 2, generator=_g, dtype=F64)
LOGISTIC_DATA = {"X": _X, "y": (_X[:, 0] - _X[:, 1] > 0).to(F64)}


def _routing_covers_every_backend(routing):
    others = set(ppl.registered_backends()) - {routing["method"]}
    assert set(routing["passed_over"]) == others
    for name, why in routing["passed_over"].items():
        assert why.startswith(("does not apply: ", "applies, but ranks below ")), (name, why)


# ------------------------------------------------------------------ method="auto"
def test_auto_chooses_exact_when_every_latent_is_discrete_and_the_clique_fits():
    post = ppl.infer(discrete, DISCRETE_DATA)
    routing = post.diagnostics["routing"]
    assert post.method == routing["method"] == "exact" and routing["auto"] is True
    assert "every latent is discrete" in routing["reason"] and "memory budget" in routing["reason"]
    _routing_covers_every_backend(routing)
    assert routing["passed_over"]["em"] == "does not apply: the model has no ppl.param to learn"
    assert routing["passed_over"]["cavi"].startswith("applies, but ranks below exact")
    # with a budget below every table nothing applies, and the error lists each reason
    with pytest.raises(ppl.UnsupportedModelError, match="exact: the largest table .* over the 8 B memory budget"):
        ppl.infer(discrete, DISCRETE_DATA, memory_budget=8)

def test_auto_chooses_cavi_for_conjugate_continuous_latents_without_params():
    a = ppl.analyze(normal_mean, NORMAL_DATA)
    assert not a.backends["em"][0]  # without params EM does not apply at all
    post = ppl.infer(normal_mean, NORMAL_DATA)
    routing = post.diagnostics["routing"]
    assert post.method == "cavi"
    assert "closed-form" in routing["reason"] and "continuous latent(s) mu cannot be enumerated" in routing["reason"]
    _routing_covers_every_backend(routing)
    assert routing["passed_over"]["svi"].startswith("applies, but ranks below cavi")
    # the exact Normal-Normal posterior: precision 1/4 + n, mean sum(x) / precision
    x = NORMAL_DATA["x"]
    precision = 0.25 + len(x)
    assert float(post.mean("mu")) == pytest.approx(float(x.sum()) / precision, abs=1e-9)
    assert float(post.variance("mu")) == pytest.approx(1 / precision, abs=1e-9)


def test_auto_chooses_em_for_params_with_a_tractable_e_step():
    a = ppl.analyze(mixture, MIXTURE_DATA)
    assert a.backends["exact"][0] and a.backends["em"][0]  # both apply: the params decide
    post = ppl.infer(mixture, MIXTURE_DATA, max_iter=50)
    routing = post.diagnostics["routing"]
    assert post.method == "em"
    assert "2 ppl.param(s) to learn" in routing["reason"] and "E-step is tractable" in routing["reason"]
    assert routing["passed_over"]["exact"].startswith("applies, but ranks below em")
    _routing_covers_every_backend(routing)
    assert set(post.params) == {"weights", "locs"}
    assert float(post.params["locs"][0]) < -1.5 and float(post.params["locs"][1]) > 1.5


def test_auto_tries_laplace_before_svi_for_a_non_conjugate_model():
    a = ppl.analyze(logistic, LOGISTIC_DATA)
    assert a.auto["method"] == "laplace"
    reason = a.auto["reason"]
    assert "no exact or closed-form method applies" in reason and "not a quadratic form" in reason
    assert a.auto["plan"].index("laplace") < a.auto["plan"].index("svi")
    post = ppl.infer(logistic, LOGISTIC_DATA, num_steps=30, seed=0)   # num_steps reaches only svi
    assert post.method == "laplace" and post.trust.ok and post.diagnostics["routing"]["reason"] == reason
    _routing_covers_every_backend(post.diagnostics["routing"])
    assert post.diagnostics["routing"]["passed_over"]["map"].startswith("applies, but ranks below laplace")


def test_analyze_prints_the_auto_line():
    text = str(ppl.analyze(discrete, DISCRETE_DATA))
    assert "auto would choose: exact, because every latent is discrete" in text
    assert "auto would choose: em, because the model has 2 ppl.param(s)" in str(ppl.analyze(mixture, MIXTURE_DATA))


def test_explicit_method_routing_is_marked_not_auto():
    post = ppl.infer(discrete, DISCRETE_DATA, method="cavi", seed=0)
    assert post.diagnostics["routing"]["method"] == "cavi" and post.diagnostics["routing"]["auto"] is False


# ------------------------------------------------------------------ compare: numbers
def test_compare_reproduces_each_backend_alone():
    methods = ["exact", ("cavi", {"seed": 3}), ("svi", {"num_steps": 40, "seed": 1}), "map"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        table = ppl.compare(discrete, DISCRETE_DATA, methods=methods)
        alone = [ppl.infer(discrete, DISCRETE_DATA, method="exact"),
                 ppl.infer(discrete, DISCRETE_DATA, method="cavi", seed=3),
                 ppl.infer(discrete, DISCRETE_DATA, method="svi", num_steps=40, seed=1),
                 ppl.infer(discrete, DISCRETE_DATA, method="map")]
    assert table.column("method") == ["exact", "cavi(seed=3)", "svi(num_steps=40, seed=1)", "map"]
    assert table.column("status") == ["ok"] * 4
    for row, post in zip(table.rows, alone):
        assert row["log_evidence"] == post.log_evidence
        assert row["elbo"] == post.elbo
        assert row["converged"] == post.converged
    assert table.rows[3]["map_log_joint"] == alone[3].log_joint
    assert table.rows[1]["iterations"] == alone[1].diagnostics["sweeps"] == len(alone[1].history) - 1
    assert table.rows[2]["iterations"] == 40
    assert table.rows[0]["iterations"] is None
    assert all(s >= 0 for s in table.column("seconds"))


def test_compare_columns_against_the_exact_reference():
    table = ppl.compare(discrete, DISCRETE_DATA, methods=["exact", ("cavi", {"seed": 0})])
    assert table.reference == "exact" and table.reference_kind == "exact"
    exact, cavi = (table.posteriors[k] for k in ("exact", "cavi(seed=0)"))
    rows = {r["method"]: r for r in table.rows}
    assert rows["exact"]["kl_gap"] == 0.0
    gap = rows["cavi(seed=0)"]["kl_gap"]
    assert gap == exact.log_evidence - cavi.elbo and gap >= 0
    assert gap > 1e-3  # a and z are dependent a posteriori: mean field cannot be exact here
    diffs = torch.cat([(cavi.probs(s) - exact.probs(s)).abs().reshape(-1) for s in exact.sites])
    assert rows["cavi(seed=0)"]["max_marginal_error"] == pytest.approx(float(diffs.max()), abs=1e-15)
    assert rows["cavi(seed=0)"]["mean_marginal_error"] == pytest.approx(float(diffs.mean()), abs=1e-15)
    assert rows["exact"]["max_marginal_error"] == 0.0
    assert rows["cavi(seed=0)"]["max_mean_error"] is None  # no continuous sites


def test_compare_without_exact_uses_the_highest_elbo_and_compares_means():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        table = ppl.compare(normal_mean, NORMAL_DATA,
                            methods=["exact", "cavi", ("svi", {"num_steps": 30, "seed": 0}), "map"])
    rows = {r["method"]: r for r in table.rows}
    assert rows["exact"]["status"].startswith("not run") and rows["exact"]["elbo"] is None
    assert table.reference == "cavi" and table.reference_kind == "highest elbo"  # CAVI is exact here: q = p
    assert all(r["kl_gap"] is None for r in table.rows)  # no exact log evidence to measure against
    cavi, svi, mp = (table.posteriors[k] for k in ("cavi", "svi(num_steps=30, seed=0)", "map"))
    assert rows["svi(num_steps=30, seed=0)"]["max_mean_error"] == pytest.approx(
        float((svi.mean("mu") - cavi.mean("mu")).abs()), abs=1e-12)
    # a Gaussian posterior's mode is its mean
    assert rows["map"]["max_mean_error"] == pytest.approx(0.0, abs=1e-6)
    assert rows["map"]["max_marginal_error"] is None
    chosen = ppl.compare(normal_mean, NORMAL_DATA, methods=["cavi", "map"], reference="map")
    assert chosen.reference == "map" and chosen.reference_kind == "chosen"
    with pytest.raises(ValueError, match="nope"):
        ppl.compare(normal_mean, NORMAL_DATA, methods=["cavi"], reference="nope")


def test_compare_starts_every_method_from_the_same_params():
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    table = ppl.compare(mixture, MIXTURE_DATA, methods=[("em", {"max_iter": 30}), "exact"])
    rows = {r["method"]: r for r in table.rows}
    # exact after EM still sees the initial params: as if run alone
    pyro.clear_param_store()
    alone = ppl.infer(mixture, MIXTURE_DATA, method="exact")
    assert rows["exact"]["log_evidence"] == alone.log_evidence
    assert rows["em(max_iter=30)"]["log_evidence"] > alone.log_evidence  # EM learned a better fit
    assert rows["em(max_iter=30)"]["kl_gap"] is None  # it bounds the evidence at other params
    assert any("learned ppl.params" in n for n in table.notes)
    # the store is left as compare found it (compile traced the params' initial values into it)
    store = pyro.get_param_store()
    for k, v in before.items():
        assert torch.equal(store[k].detach(), v)


# ------------------------------------------------------------------ compare: outputs
def test_compare_prints_pandas_and_hides_empty_columns():
    table = ppl.compare(discrete, DISCRETE_DATA, methods=["exact", ("cavi", {"seed": 0})])
    plain = table.to_string("plain")
    assert plain.splitlines()[0] == "ppl.compare on model 'discrete'"
    assert "kl_gap" in plain and "max_mean_error" not in plain.splitlines()[1]
    assert "columns empty in every row" in plain and "max_mean_error" in plain
    assert "│" not in plain
    assert str(table) == plain  # captured stdout is no terminal: plain text
    fancy = table.to_string("rich")
    assert "╭" in fancy and "kl_gap" in fancy and "exact" in fancy
    df = table.to_pandas()
    assert list(df.columns) == list(COLUMNS)
    assert list(df["method"]) == ["exact", "cavi(seed=0)"]
    assert df["kl_gap"].iloc[1] == table.rows[1]["kl_gap"]
    with pytest.raises(ValueError, match="style"):
        table.to_string("fancy")
    twice = ppl.compare(discrete, DISCRETE_DATA, methods=["exact", "exact"])
    assert twice.column("method") == ["exact", "exact #2"] and set(twice.posteriors) == {"exact", "exact #2"}


def test_compare_printing_on_a_terminal_is_rich_and_captured_is_plain(monkeypatch):
    import ppl.comparison as comparison

    table = ppl.compare(discrete, DISCRETE_DATA, methods=["exact"])
    assert str(table) == table.to_string("plain")  # captured stdout is no terminal
    monkeypatch.setattr(comparison, "_stdout_is_terminal", lambda: True)
    assert str(table) == table.to_string("rich") and "╭" in str(table)


def test_compare_long_status_becomes_a_footnote():
    table = ppl.compare(normal_mean, NORMAL_DATA, methods=["exact", "cavi"])
    text = table.to_string("plain")
    assert "not run [1]" in text and "[1] exact: not run: method 'exact' does not apply" in text


def test_compare_plot_writes_pngs(tmp_path):
    mpimg = pytest.importorskip("matplotlib.image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        table = ppl.compare(discrete, DISCRETE_DATA,
                            methods=["exact", ("cavi", {"seed": 0}), ("svi", {"num_steps": 40, "seed": 0}), "map"])
    paths = table.plot(tmp_path / "sub" / "cmp")
    assert paths == [str(tmp_path / "sub" / f"cmp_{s}.png") for s in ("bound", "a", "z")]
    for p in paths:
        image = mpimg.imread(p)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    cont = ppl.compare(normal_mean, NORMAL_DATA, methods=["cavi", "map"])
    (path,) = cont.plot(tmp_path / "n", sites=["mu"])[1:]
    assert path.endswith("n_mu.png") and mpimg.imread(path).ndim == 3
    with pytest.raises(ppl.DataError, match="nope"):
        cont.plot(tmp_path / "n", sites=["nope"])
    # without a path: the figures, nothing written
    before = sorted(tmp_path.rglob("*"))
    figures = table.plot()
    assert list(figures) == ["bound", "a", "z"] and sorted(tmp_path.rglob("*")) == before
    bound = figures["bound"].axes[0]
    assert bound.get_ylabel() == "bound / log evidence (nats)"
    # the exact row's log evidence is a dashed line at its value
    exact = table.posteriors["exact"]
    assert any(abs(line.get_ydata()[0] - exact.log_evidence) < 1e-12 for line in bound.get_lines()
               if line.get_linestyle() == "--")


def test_posterior_plot(tmp_path):
    mpimg = pytest.importorskip("matplotlib.image")
    exact = ppl.infer(discrete, DISCRETE_DATA, method="exact")
    cavi = ppl.infer(normal_mean, NORMAL_DATA, method="cavi")
    point = ppl.infer(normal_mean, NORMAL_DATA, method="map")
    state = torch.get_rng_state()
    paths = [exact.plot("z", tmp_path / "z.png"), cavi.plot("mu", tmp_path / "deep" / "mu.png"),
             point.plot("mu", tmp_path / "mu_map.png")]
    assert torch.equal(torch.get_rng_state(), state)  # the seeded draws leave the global RNG alone
    assert paths == [str(tmp_path / "z.png"), str(tmp_path / "deep" / "mu.png"), str(tmp_path / "mu_map.png")]
    for p in paths:
        assert mpimg.imread(p).ndim == 3
    with pytest.raises(ppl.DataError, match="nope"):
        exact.plot("nope", tmp_path / "x.png")

