"""The user-facing API: ppl.infer / analyze / compare / compile, the backend registry,
and the Posterior's members.

References: a brute-force enumeration backend written here (over ``tests/oracles.py``,
which imports nothing from ppl) and registered through the public ``register_backend``;
posterior marginals derived by hand for the small models below.
"""

from __future__ import annotations

import math

import pytest
import torch
from pyro.ops.indexing import Vindex

import ppl
import ppl.distributions as dist
from ppl.backends import Applicability
from ppl.backends import registry as _registry
from oracles import brute_force

F64 = torch.float64
PA = 0.4  # p(a = 1)
T = torch.tensor([[0.3, 0.7], [0.6, 0.4]], dtype=F64)  # p(z | a)
E = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5]], dtype=F64)  # p(obs | z)
X = torch.tensor([0, 2, 1, 2])
DATA = {"x": X}


@ppl.model
def mix(x):
    a = ppl.sample("a", dist.Bernoulli(torch.tensor(PA, dtype=F64)))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(Vindex(T)[a.long()]))
        ppl.sample("obs", dist.Categorical(Vindex(E)[z]), obs=x)


def hand_posterior():
    """p(a | x), p(z_n | x) and log p(x) of ``mix`` by hand."""
    prior_a = torch.tensor([1 - PA, PA], dtype=F64)
    # lik[a, n, z] = p(z | a) p(x_n | z)
    lik = T[:, None, :] * E[:, X].T[None, :, :]
    per_a = prior_a * lik.sum(-1).prod(-1)  # p(a, x)
    evidence = per_a.sum()
    post_a = per_a / evidence
    post_z_given_a = lik / lik.sum(-1, keepdim=True)
    post_z = (post_a[:, None, None] * post_z_given_a).sum(0)  # (N, K)
    return post_a, post_z, math.log(float(evidence))


@ppl.model
def crossing(x):
    """Exact (plated variable elimination) does not apply: 'total' depends on every z_n (and its
    mean is quartic in z, so CAVI's binary path for quadratic log joints does not apply either)."""
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
    ppl.sample("total", dist.Normal(z.sum(-1) ** 2, 1.0), obs=x.sum())


CROSS_DATA = {"x": torch.tensor([1.0, 1.0, 0.0], dtype=F64)}


@ppl.model
def crossing_quadratic(x):
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
    ppl.sample("total", dist.Normal(z.sum(-1), 1.0), obs=x.sum())


# ----------------------------------------------------------------- a custom backend
class BrutePosterior(ppl.Posterior):
    def __init__(self, oracle, **kw):
        super().__init__("brute", **kw)
        self.oracle = oracle

    @property
    def sites(self):
        return list(self.oracle.marginals)

    def probs(self, site):
        if site not in self.oracle.marginals:
            raise self._unknown(site)
        return self.oracle.marginals[site]

    def marginal(self, site):
        return torch.distributions.Categorical(probs=self.probs(site))

    def map(self):
        return dict(self.oracle.map_assignment)


class BruteForceBackend(ppl.Backend):
    """Enumerates every joint state of the discrete latents (plates unrolled)."""

    name = "brute"
    summary = "brute-force enumeration (test backend)"
    options = {"max_log10_states": "refuse above this many joint states (log10)"}

    def check(self, analysis):
        if analysis.continuous:
            return Applicability(False, f"continuous latents {analysis.continuous}")
        if analysis.log10_states > 4:
            return Applicability(False, f"10^{analysis.log10_states:.1f} joint states")
        return Applicability(True, f"10^{analysis.log10_states:.1f} joint states to enumerate")

    def run(self, graph, analysis, max_log10_states=4):
        oracle = brute_force(graph.model.fn, graph.bound.kwargs, graph.bound.observations)
        return BrutePosterior(oracle, graph=graph, elbo=oracle.log_evidence, log_evidence=oracle.log_evidence)


@pytest.fixture
def registry(monkeypatch):
    """A registry whose registrations vanish after the test."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    return _registry


@pytest.fixture
def brute(registry):
    backend = BruteForceBackend()
    ppl.register_backend(backend)
    return backend


# ----------------------------------------------------------------- method names and options
def test_unknown_method(brute):
    with pytest.raises(ppl.BackendNotFoundError) as info:
        ppl.infer(mix, DATA, method="nope")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ppl.PPLError)
    msg = str(info.value)
    assert "nope" in msg and "exact" in msg and "brute" in msg
    with pytest.raises(KeyError):
        ppl.get_backend("nope")


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="bogus_option"):
        ppl.infer(mix, DATA, method="exact", bogus_option=1)


def test_auto_picks_exact_on_a_discrete_model():
    post = ppl.infer(mix, DATA)
    assert post.method == "exact"
    routing = post.diagnostics["routing"]
    assert routing["method"] == "exact"
    assert isinstance(routing["reason"], str) and routing["reason"]
    post_a, _, log_z = hand_posterior()
    assert post.log_evidence == pytest.approx(log_z, abs=1e-12)
    explicit = ppl.infer(mix, DATA, method="exact")
    assert explicit.diagnostics["routing"]["method"] == "exact"


def test_auto_routes_past_exact_when_it_does_not_apply(brute):
    post = ppl.infer(crossing, CROSS_DATA, method="auto")
    assert post.method == "brute"
    routing = post.diagnostics["routing"]
    assert routing["method"] == "brute"
    assert "exact" in routing["passed_over"] and routing["passed_over"]["exact"]
    # log p(total = 2) by hand: sum over the number of ones m ~ Binomial(3, 0.3)
    lz = math.log(sum(math.comb(3, m) * 0.3**m * 0.7 ** (3 - m) * math.exp(-0.5 * (2 - m * m) ** 2)
                      / math.sqrt(2 * math.pi) for m in range(4)))
    assert post.log_evidence == pytest.approx(lz, abs=1e-9)


def test_auto_with_memory_budget_routes_to_another_backend(brute):
    post = ppl.infer(mix, DATA, method="auto", memory_budget=8)
    assert post.method == "brute"
    assert "exact" in post.diagnostics["routing"]["passed_over"]


def test_auto_with_nothing_applicable():
    @ppl.model
    def undeclared():  # discrete latents with batch dims no plate declares: neither enumerable nor guided by name
        z = ppl.sample("z", dist.Bernoulli(0.5 * torch.ones(3)))
        ppl.sample("x", dist.Normal(z, 1.0), obs=torch.zeros(3))

    with pytest.raises(ppl.UnsupportedModelError, match="z"):
        ppl.infer(undeclared, method="auto")


def test_auto_routes_continuous_models_to_cavi_when_gaussian_else_laplace_then_svi():
    @ppl.model
    def gaussian(x):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.sample("x", dist.Normal(mu, 1.0), obs=x)

    a = ppl.analyze(gaussian, {"x": torch.tensor(0.3)})
    assert not a.backends["exact"][0] and a.backends["svi"][0] and a.backends["cavi"][0]
    assert ppl.api._choose_auto(a)[0] == "cavi"

    @ppl.model
    def poisson(x):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.sample("x", dist.Poisson(mu.exp()), obs=x)

    a = ppl.analyze(poisson, {"x": torch.tensor(3.0)})
    assert not a.backends["cavi"][0] and "not a quadratic form" in a.backends["cavi"][1]
    # no closed form: a Gaussian at the mode (checked by PSIS) is tried first, stochastic VI later
    route = ppl.api.auto_route(a)
    assert route["method"] == "laplace"
    assert route["plan"].index("laplace") < route["plan"].index("svi")


# ----------------------------------------------------------------- registry
def test_register_backend(brute):
    assert ppl.registered_backends()["brute"] is brute
    assert ppl.get_backend("brute") is brute
    post = ppl.infer(mix, DATA, method="brute")
    assert post.method == "brute"
    post_a, post_z, log_z = hand_posterior()
    assert post.log_evidence == pytest.approx(log_z, abs=1e-12)
    assert torch.allclose(post.probs("a"), post_a, atol=1e-12)
    assert torch.allclose(post.probs("z"), post_z, atol=1e-12)
    # visible in the analysis verdicts, with its own reason
    a = ppl.analyze(mix, DATA)
    assert a.backends["brute"] == (True, "10^1.5 joint states to enumerate")
    assert "brute" in str(a)
    a = ppl.analyze(crossing, CROSS_DATA)
    assert a.backends["brute"][0] is True and a.backends["exact"][0] is False
    # options of the custom backend are validated too
    with pytest.raises(TypeError, match="heuristicz"):
        ppl.infer(mix, DATA, method="brute", heuristicz=1)


def test_register_backend_errors(brute):
    with pytest.raises(ValueError, match="brute"):
        ppl.register_backend(BruteForceBackend())
    other = BruteForceBackend()
    assert ppl.register_backend(other, overwrite=True) is other
    assert ppl.get_backend("brute") is other
    with pytest.raises(ValueError, match="auto"):
        ppl.register_backend(BruteForceBackend(), name="auto")

    class NoRun:
        name = "norun"

        def check(self, analysis):
            return Applicability(True, "")

    with pytest.raises(TypeError):
        ppl.register_backend(NoRun())
    assert "norun" not in ppl.registered_backends()


def test_registry_fixture_isolates_registrations():
    assert "brute" not in ppl.registered_backends()
    assert "exact" in ppl.registered_backends()


# ----------------------------------------------------------------- compare
def test_compare_exact_with_two_heuristics():
    table = ppl.compare(mix, DATA, methods=["exact", ("exact", {"heuristic": "min_degree"})])
    assert len(table) == 2
    alone_fill = ppl.infer(mix, DATA, method="exact")
    alone_degree = ppl.infer(mix, DATA, method="exact", heuristic="min_degree")
    labels = table.column("method")
    assert labels[0] == "exact" and "min_degree" in labels[1]
    assert table.column("log_evidence") == [alone_fill.log_evidence, alone_degree.log_evidence]
    assert table.column("elbo") == [alone_fill.elbo, alone_degree.elbo]
    assert table.column("status") == ["ok", "ok"]
    for err in table.column("max_marginal_error"):
        assert err is not None and err < 1e-12
    assert all(s >= 0 for s in table.column("seconds"))
    df = table.to_pandas()
    assert list(df["method"]) == labels
    assert {"log_evidence", "elbo", "max_marginal_error", "seconds", "status"} <= set(df.columns)
    text = str(table)
    assert "exact" in text and "min_degree" in text and "log_evidence" in text
    assert set(table.posteriors) == set(labels)


def test_compare_against_brute_force(brute):
    table = ppl.compare(mix, DATA, methods=["exact", "brute"])
    le = table.column("log_evidence")
    assert le[0] == pytest.approx(le[1], abs=1e-12)
    assert table.column("max_marginal_error")[1] < 1e-12


def test_compare_all_runs_every_applicable_method(brute):
    table = ppl.compare(mix, DATA, methods="all")
    assert table.column("method") == ["exact", "svi", "map", "cavi", "brute"]  # svi: nothing to guide, both summed out
    assert table.column("status") == ["ok", "ok", "ok", "ok", "ok"]
    # map's max-product point is exact's MAP assignment, with the same log joint
    assert table.rows[2]["map_log_joint"] == pytest.approx(table.rows[0]["map_log_joint"], abs=1e-9)
    assert table.rows[2]["elbo"] is None and table.rows[2]["log_evidence"] is None
    # with nothing left to guide, SVI's ELBO is the exact log evidence and its marginals are exact
    assert table.rows[1]["elbo"] == pytest.approx(table.rows[0]["log_evidence"], abs=1e-5)
    assert table.rows[1]["max_marginal_error"] < 1e-6
    table = ppl.compare(crossing, CROSS_DATA, methods="all")
    assert table.column("method") == ["brute"]  # exact, cavi: no per-copy tables for a factor over every z_n
    square = ppl.compare(crossing_quadratic, CROSS_DATA, methods="all")  # cavi's binary path takes the quadratic one
    assert "cavi" in square.column("method")


def test_compare_reports_methods_that_do_not_run(brute):
    table = ppl.compare(crossing, CROSS_DATA, methods=["exact", "brute"])
    status = dict(zip(table.column("method"), table.column("status")))
    assert status["exact"].startswith("not run") and "z" in status["exact"]
    assert status["brute"] == "ok"
    assert isinstance(table.posteriors["exact"], ppl.UnsupportedModelError)
    assert table.rows[0]["log_evidence"] is None
    text = str(table)
    assert "not run" in text


# ----------------------------------------------------------------- FactorGraph input
def test_infer_on_a_compiled_graph():
    g = ppl.compile(mix, DATA)
    from_graph = ppl.infer(g, method="exact")
    from_model = ppl.infer(mix, DATA, method="exact")
    assert from_graph.log_evidence == from_model.log_evidence
    for site in ("a", "z"):
        assert torch.equal(from_graph.probs(site), from_model.probs(site))
    assert ppl.analyze(g).treewidth == ppl.analyze(mix, DATA).treewidth
    with pytest.raises(ppl.DataError, match="compile"):
        ppl.infer(g, DATA, method="exact")
    with pytest.raises(ppl.DataError):
        ppl.analyze(g, DATA)


# ----------------------------------------------------------------- Posterior members
@pytest.fixture(scope="module")
def post():
    return ppl.infer(mix, DATA, method="exact", seed=11)


def test_posterior_marginals_match_hand_derivation(post):
    post_a, post_z, log_z = hand_posterior()
    assert post.method == "exact"
    assert post.log_evidence == pytest.approx(log_z, abs=1e-12)
    assert post.elbo == post.log_evidence  # q = p: the bound is tight
    assert torch.allclose(post.probs("a"), post_a, atol=1e-12)
    assert torch.allclose(post.probs("z"), post_z, atol=1e-12)
    ma = post.marginal("a")
    assert isinstance(ma, torch.distributions.Bernoulli)
    assert float(ma.probs) == pytest.approx(float(post_a[1]), abs=1e-12)
    mz = post.marginal("z")
    assert mz.batch_shape == (4,)
    assert torch.allclose(mz.probs, post_z, atol=1e-12)
    assert torch.allclose(post.mean("z"), post_z[:, 1], atol=1e-12)
    assert post.params == {} and post.history == [] and post.converged is None
    assert post.elapsed > 0
    assert "exact" in repr(post)


def test_summary_rows(post):
    table = post.summary()
    rows = {r["site"]: r for r in table.rows}
    assert set(rows) == {"a", "z[0]", "z[1]", "z[2]", "z[3]"}
    p = float(post.probs("a")[1])
    assert rows["a"]["mean"] == pytest.approx(p, abs=1e-12)
    assert rows["a"]["sd"] == pytest.approx(math.sqrt(p * (1 - p)), abs=1e-12)
    # quantiles of a 0/1 variable: the q-quantile is 1 exactly when P(0) = 1 - p < q
    for q in (0.05, 0.5, 0.95):
        assert rows["a"][f"{q:.0%}"] == (1.0 if 1 - p < q else 0.0)
    pz = post.probs("z")
    for n in range(4):
        r = rows[f"z[{n}]"]
        pn = float(pz[n, 1])
        assert r["mean"] == pytest.approx(pn, abs=1e-12)
        assert r["sd"] == pytest.approx(math.sqrt(pn * (1 - pn)), abs=1e-12)
    text = str(table)
    assert "mean" in text and "sd" in text and "z[3]" in text
    assert list(table.to_pandas()["site"]) == ["a", "z[0]", "z[1]", "z[2]", "z[3]"]


def test_sample_and_map_shapes(post):
    draws = post.sample(13)
    assert set(draws) == {"a", "z"}
    assert draws["a"].shape == (13,) and draws["z"].shape == (13, 4)
    assert set(draws["a"].unique().tolist()) <= {0.0, 1.0}
    assert set(draws["z"].unique().tolist()) <= {0, 1}
    with pytest.raises(ValueError):
        post.sample(0)
    best = post.map()
    assert best["a"].shape == () and best["z"].shape == (4,)
    # the MAP is a joint argmax: check it against brute force
    oracle = brute_force(mix.fn, {"x": X}, {})
    key = oracle.key(best)
    best_lj = max(lj for (asg, lj), k in zip(oracle.joint, oracle.index_tuples) if k == key)
    assert best_lj == pytest.approx(oracle.map_log_joint, abs=1e-12)
    assert post.diagnostics["map_log_joint"] == pytest.approx(oracle.map_log_joint, abs=1e-12)


def test_event_shaped_latent_sample_and_map_shapes():
    prior = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    emit = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]], dtype=F64)

    @ppl.model
    def onehot(x):
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.OneHotCategorical(prior))
            ppl.sample("obs", dist.Categorical(z @ emit), obs=x)

    x = torch.tensor([0, 2])
    p = ppl.infer(onehot, {"x": x}, method="exact")
    expect = prior[:, None] * emit[:, x]
    expect = (expect / expect.sum(0)).T  # (N, K), by hand
    assert torch.allclose(p.probs("z"), expect, atol=1e-12)
    assert isinstance(p.marginal("z"), torch.distributions.OneHotCategorical)
    assert p.marginal("z").batch_shape == (2,) and p.marginal("z").event_shape == (3,)
    assert torch.allclose(p.mean("z"), expect, atol=1e-12)
    draws = p.sample(9)["z"]
    assert draws.shape == (9, 2, 3)
    assert torch.equal(draws.sum(-1), torch.ones(9, 2, dtype=draws.dtype))
    best = p.map()["z"]
    assert best.shape == (2, 3)
    assert best.argmax(-1).tolist() == expect.argmax(-1).tolist()


def test_unknown_site(post):
    with pytest.raises(ppl.DataError, match="unknown"):
        post.marginal("unknown")
    with pytest.raises(ppl.DataError, match="'a'"):
        post.probs("obs")  # observed, not latent: the message lists the latent sites


def test_seed_makes_samples_reproducible():
    p1 = ppl.infer(mix, DATA, method="exact", seed=5)
    p2 = ppl.infer(mix, DATA, method="exact", seed=5)
    d1, d2 = p1.sample(200), p2.sample(200)
    assert all(torch.equal(d1[k], d2[k]) for k in d1)
    d3 = p1.sample(200)
    assert all(torch.equal(d1[k], d3[k]) for k in d1)
    p3 = ppl.infer(mix, DATA, method="exact", seed=6)
    d4 = p3.sample(200)
    assert not all(torch.equal(d1[k], d4[k]) for k in d1)
    # an explicit seed wins
    assert torch.equal(p1.sample(50, seed=1)["z"], p3.sample(50, seed=1)["z"])


def test_sample_frequencies_match_marginals(post):
    draws = post.sample(20_000, seed=0)
    post_a, post_z, _ = hand_posterior()
    # 5 sigma of a binomial proportion with n = 20000 is below 0.018
    assert float(draws["a"].double().mean()) == pytest.approx(float(post_a[1]), abs=0.018)
    assert torch.allclose(draws["z"].double().mean(0), post_z[:, 1], atol=0.018)


def test_impossible_evidence_is_a_data_error():
    bn = ppl.models.bayesian_network({
        "a": ([], [0.5, 0.5]),
        "b": (["a"], [[1.0, 0.0], [1.0, 0.0]]),  # b = 1 is impossible
        "c": (["a"], [[0.3, 0.7], [0.6, 0.4]]),
    })
    with pytest.raises(ppl.DataError, match="probability zero|impossible"):
        ppl.infer(bn, {"b": 1}, method="exact")
    # a possible value still works and is p(a | b = 0) = prior
    post = ppl.infer(bn, {"b": 0}, method="exact")
    assert torch.allclose(post.probs("a"), torch.tensor([0.5, 0.5], dtype=F64), atol=1e-12)
    assert post.log_evidence == pytest.approx(0.0, abs=1e-12)


def test_device_cpu():
    post = ppl.infer(mix, DATA, method="exact", device="cpu")
    _, _, log_z = hand_posterior()
    assert post.log_evidence == pytest.approx(log_z, abs=1e-12)
    assert post.probs("z").device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_cuda_matches_cpu():
    cpu = ppl.infer(mix, DATA, method="exact", device="cpu")
    gpu = ppl.infer(mix, DATA, method="exact", device="cuda")
    assert gpu.log_evidence == pytest.approx(cpu.log_evidence, abs=1e-10)
    for site in ("a", "z"):
        assert gpu.probs(site).device.type == "cuda"
        assert torch.allclose(gpu.probs(site).cpu(), cpu.probs(site), atol=1e-10)
    assert {k: v.cpu().tolist() for k, v in gpu.map().items()} == {k: v.tolist() for k, v in cpu.map().items()}
    assert gpu.sample(7, seed=0)["z"].shape == (7, 4)


def test_auto_skips_a_variant_projected_past_the_time_budget():
    from ppl.auto import _over_budget

    class Sampler:
        def auto_cost(self, options):
            return float(options.get("num_chains", 4) * (options["warmup_steps"] + options["num_samples"]))

    short = {"num_samples": 400, "warmup_steps": 300}
    long = {"num_samples": 1000, "warmup_steps": 1000}
    attempts = [{"method": "laplace", "options": {}, "seconds": 5.0},
                {"method": "nuts", "options": short, "seconds": 35.0}]
    # 35 s for 4 x 700 iterations -> 100 s for 4 x 2000: past a 120 s budget with 45 s spent
    why = _over_budget(Sampler(), "nuts", long, {}, attempts, 45.0, 120.0)
    assert why is not None and "about 100 s" in why and "75 s left" in why
    assert _over_budget(Sampler(), "nuts", long, {}, attempts, 10.0, 120.0) is None      # fits
    assert _over_budget(Sampler(), "nuts", long, {}, attempts, 45.0, None) is None       # no budget
    assert _over_budget(Sampler(), "svi", long, {}, attempts, 45.0, 120.0) is None       # no earlier run of it
    # the user's own options win over the variant's in both runs: equal cost, 35 s, fits
    assert _over_budget(Sampler(), "nuts", long, {"num_samples": 10, "warmup_steps": 10}, attempts, 45.0,
                        120.0) is None


def test_auto_skips_costlier_methods_once_a_run_did_not_fit_the_time_budget(monkeypatch):
    import time as _time
    import warnings as _warnings

    import ppl.auto as auto
    from ppl.trust import UNRELIABLE, Trust

    class Fake:
        options: dict = {}

        def __init__(self, name):
            self.name = name

        def auto_variants(self, analysis):
            return [{"iters": 1}, {"iters": 10}]

        def auto_cost(self, options):
            return float(options.get("iters", 1))

    class Post:
        def __init__(self, name):
            self.method, self.diagnostics = name, {}
            self.trust = Trust(UNRELIABLE, ["chains disagree"], {"divergences": 0})

    ran = []

    def run_method(name, options):
        ran.append((name, options["iters"]))
        _time.sleep(0.3)
        return Post(name)

    fakes = {"cheap": Fake("cheap"), "costly": Fake("costly")}
    monkeypatch.setattr(auto, "ranked_backends", lambda: fakes)
    monkeypatch.setattr(auto, "auto_route", lambda a: {"method": "cheap", "reason": "-", "plan": ["cheap", "costly"]})
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        post = auto.escalate(None, None, {"time_budget": 1.0}, run_method)
    # cheap's 10x variant is projected to ~3 s > 1 s: skipped; costly ranks after it, so it is skipped too
    assert ran == [("cheap", 1)]
    left = [a["left_because"] for a in post.diagnostics["routing"]["attempts"]]
    assert "past the time budget" in left[1]
    assert all("a cheap run did not fit the time budget" in why for why in left[2:]) and len(left) == 4


def test_auto_gives_a_sampler_what_is_left_of_the_time_budget(monkeypatch):
    import warnings as _warnings

    import ppl.auto as auto
    from ppl.trust import UNRELIABLE, Trust

    class Fake:
        def __init__(self, name, options):
            self.name, self.options = name, options

        def auto_cost(self, options):
            return 1.0

    class Post:
        def __init__(self, name):
            self.method, self.diagnostics = name, {}
            self.trust = Trust(UNRELIABLE, ["no"], {})

    got = {}

    def run_method(name, options):
        got[name] = dict(options)
        return Post(name)

    fakes = {"plain": Fake("plain", {}), "sampler": Fake("sampler", {"max_seconds": None})}
    monkeypatch.setattr(auto, "ranked_backends", lambda: fakes)
    monkeypatch.setattr(auto, "auto_route", lambda a: {"method": "plain", "reason": "-", "plan": ["plain", "sampler"]})
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        auto.escalate(None, None, {"time_budget": 50.0}, run_method)
    assert "max_seconds" not in got["plain"]             # only a method that takes the option gets it
    assert 45.0 < got["sampler"]["max_seconds"] <= 50.0  # the budget less what the first method spent
