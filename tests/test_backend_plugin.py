"""A backend written outside the package (here: numerical integration on a grid for one
scalar continuous latent) plugs in with ``ppl.register_backend`` alone: its options are
validated from its declaration, its verdict appears in ``ppl.analyze``, ``method="auto"``
ranks it by its ``rank``, and ``ppl.compare`` runs it beside the built-ins.

References: the Normal-Normal model's closed-form evidence and posterior (conjugate
Gaussian algebra), which the grid must reproduce to quadrature error.
"""

from __future__ import annotations

import math

import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.backends import Applicability, registry
from ppl.backends.options import Integer, Option, Real, option_table


class GridPosterior(ppl.Posterior):
    """A posterior held as weights on a grid of one scalar site."""

    def __init__(self, site, grid, log_w, **kw):
        super().__init__("grid", **kw)
        self.site, self.grid, self.log_w = site, grid, log_w

    @property
    def sites(self):
        return [self.site]

    def marginal(self, site):
        if site != self.site:
            raise self._unknown(site)
        return torch.distributions.Categorical(logits=self.log_w)

    def mean(self, site):
        self.marginal(site)
        return (self.log_w.softmax(0) * self.grid).sum()


class GridBackend(ppl.Backend):
    """Quadrature on an even grid of ``points`` values over ``[-width, width]``."""

    name = "grid"
    summary = "numerical integration on a grid (one scalar real latent)"
    options = option_table(
        Option("points", Integer(3), 4001, "grid points"),
        Option("width", Real(0.0, low_open=True), 20.0, "half-width of the grid"),
    )
    rank = 31  # after cavi (30), before laplace (33)
    rank_note = "quadrature ranks after the closed-form methods"

    def check(self, analysis):
        graph = analysis.graph
        if analysis.discrete or len(analysis.continuous) != 1:
            return Applicability(False, "needs exactly one continuous latent and no discrete ones")
        (site,) = analysis.continuous
        if graph.sites[site].value.numel() != 1:
            return Applicability(False, f"latent '{site}' is not a scalar")
        return Applicability(True, f"one scalar latent '{site}' integrated on a grid")

    def deciding_fact(self, analysis, verdicts):
        return f"one scalar latent: quadrature is as good as exact: {verdicts[self.name][1]}"

    def run(self, graph, analysis, **options):
        o = self.settings(options)
        (site,) = graph.continuous_latent()
        grid = torch.linspace(-o.width, o.width, o.points, dtype=torch.float64)
        log_joint = torch.stack([_log_joint(graph, {site: g}) for g in grid])
        step = float(grid[1] - grid[0])
        log_z = float(torch.logsumexp(log_joint, 0)) + math.log(step)
        return GridPosterior(site, grid, log_joint, graph=graph, elbo=log_z, log_evidence=log_z)


def _log_joint(graph, values):
    from pyro import poutine

    data = {**graph.bound.observations, **values}
    trace = poutine.trace(poutine.condition(graph.model.fn, data=data)).get_trace(**graph.bound.kwargs)
    return trace.log_prob_sum()


@ppl.model
def normal_mean(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 2.0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu, 1.0), obs=x)


@ppl.model
def poisson_rate(x):
    log_rate = ppl.sample("log_rate", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Poisson(log_rate.exp()), obs=x)


X = torch.tensor([1.2, 0.4, 2.1, 1.7], dtype=torch.float64)
COUNTS = torch.tensor([3.0, 1.0, 4.0, 2.0], dtype=torch.float64)


@pytest.fixture
def grid(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    backend = GridBackend()
    ppl.register_backend(backend)
    return backend


def _closed_form(x, prior_sd=2.0):
    n, s = len(x), float(x.sum())
    post_prec = 1 / prior_sd**2 + n
    post_mean = s / post_prec
    cov = torch.eye(n, dtype=torch.float64) + prior_sd**2
    log_z = float(torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov).log_prob(x))
    return post_mean, log_z


def test_runs_by_name_with_validated_options(grid):
    post = ppl.infer(normal_mean, {"x": X}, method="grid", points=8001)
    mean, log_z = _closed_form(X)
    assert post.log_evidence == pytest.approx(log_z, abs=1e-6)
    assert float(post.mean("mu")) == pytest.approx(mean, abs=1e-6)
    with pytest.raises(ppl.OptionError, match=r"option points=2 .*integer >= 3"):
        ppl.infer(normal_mean, {"x": X}, method="grid", points=2)
    with pytest.raises(ppl.UnknownOptionError, match="tol"):
        ppl.infer(normal_mean, {"x": X}, method="grid", tol=1e-3)
    assert [r[0] for r in ppl.methods("grid")["grid"]["options"]] == ["points", "width"]


def test_analyze_shows_its_verdict_and_auto_ranks_it(grid):
    a = ppl.analyze(poisson_rate, {"x": COUNTS})
    assert a.backends["grid"] == (True, "one scalar latent 'log_rate' integrated on a grid")
    assert "grid" in str(a)
    # CAVI has no closed form for a Poisson rate, so the first that applies by rank is grid (31), before laplace (33)
    assert not a.backends["cavi"][0]
    assert ppl.api.auto_order().index("grid") == ppl.api.auto_order().index("cavi") + 1
    assert a.auto["plan"][:2] == ["grid", "laplace"]
    # grid reports no diagnostics (no assess), so its answer is unreliable and auto goes on to laplace
    post = ppl.infer(poisson_rate, {"x": COUNTS}, seed=0)
    routing = post.diagnostics["routing"]
    assert routing["first_choice"] == "grid" and post.method == "laplace"
    assert routing["attempts"][0]["method"] == "grid" and routing["attempts"][0]["verdict"] == "unreliable"
    assert "ranks below grid (a stochastic bound" in routing["passed_over"]["svi"]
    # with escalate=False auto returns the first that applies, whatever its verdict
    with pytest.warns(ppl.errors.TrustWarning, match="no diagnostics"):
        first = ppl.infer(poisson_rate, {"x": COUNTS}, escalate=False)
    assert first.method == "grid"
    assert first.diagnostics["routing"]["reason"].startswith("one scalar latent: quadrature is as good as exact")
    # a Normal-Normal model: cavi (rank 30) applies and wins; grid is passed over with its own note
    route = ppl.api.auto_route(ppl.analyze(normal_mean, {"x": X}))
    assert route["method"] == "cavi"
    assert "quadrature ranks after the closed-form methods" in route["passed_over"]["grid"]


def test_compare_runs_it_beside_the_built_ins(grid):
    table = ppl.compare(normal_mean, {"x": X}, methods=["grid", "cavi"])
    assert table.column("method") == ["grid", "cavi"]
    assert table.column("status") == ["ok", "ok"]
    _, log_z = _closed_form(X)
    # the Normal-Normal posterior is Gaussian, so CAVI's single factor is exact: ELBO = log evidence
    grid_row, cavi_row = table.rows
    assert grid_row["log_evidence"] == pytest.approx(log_z, abs=1e-6)
    assert cavi_row["elbo"] == pytest.approx(log_z, abs=1e-6)


def test_svi_declines_gaussian_guides_after_two_gaussian_approximations_missed_the_shape():
    from ppl.backends.svi.backend import SVIBackend

    svi = SVIBackend()
    # auto's records: gaussian_misfit is importance.gaussian_misfit of the verdict's numbers
    bad = [{"method": "laplace", "verdict": "unreliable", "psis_khat": 0.9, "gaussian_approximation": True,
            "gaussian_misfit": "k̂ 0.90"},
           {"method": "pathfinder", "verdict": "unreliable", "psis_khat": 0.8, "gaussian_approximation": True,
            "gaussian_misfit": "k̂ 0.80"}]
    why = svi.auto_skip(None, {"guide": "mvn"}, bad)
    assert why and "laplace k̂ 0.90" in why and "pathfinder k̂ 0.80" in why
    assert svi.auto_skip(None, {}, bad)                                   # the mean field is Gaussian too
    assert svi.auto_skip(None, {"guide": "mvn"}, bad[:1]) is None          # one is not enough
    assert svi.auto_skip(None, {"guide": "iaf"}, bad) is None              # a flow is not Gaussian
    assert svi.auto_skip(None, {"guide": "mvn"}, [dict(bad[0], psis_khat=0.6, gaussian_misfit=None), bad[1]]) is None
    # heavy tails with k̂ < 0.7 count too (the tail probe, the variance check)
    tails = dict(bad[0], psis_khat=0.6, gaussian_misfit="18% of the mass beyond its draws' reach")
    assert "laplace 18% of the mass beyond its draws' reach" in svi.auto_skip(None, {"guide": "mvn"}, [tails, bad[1]])
    assert svi.auto_skip(None, {"guide": "mvn"}, [dict(b, gaussian_approximation=False) for b in bad]) is None
    # Laplace finding no mode (a NumericalError) counts as a Gaussian approximation that failed
    no_mode = {"method": "laplace", "verdict": None, "gaussian_approximation": True, "numerical_failure": True}
    assert "laplace found no mode" in svi.auto_skip(None, {"guide": "mvn"}, [no_mode, bad[1]])
    assert svi.auto_skip(None, {"guide": "mvn"}, [dict(no_mode, numerical_failure=False), bad[1]]) is None
