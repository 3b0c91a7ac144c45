"""Models users bring, in every backend that applies, each against a reference computed
here that shares no code with ppl:

1. a ``pyro.nn.PyroModule`` as the model (``ppl.model(module)``): a Bayesian linear
   regression with ``PyroSample`` priors, against its closed-form Gaussian posterior;
2. float32 ``torch.nn.Module`` s inside a float64 run (a decoder registered with
   ``pyro.module``): no dtype clash in the analysis, SVI, MAP, Laplace or Pathfinder;
3. Pyro's ``DiscreteHMM`` with latent transition rows (Dirichlet) and emission locations
   (Normal): its log density against a forward algorithm, Laplace and NUTS against 4-D
   quadrature, and ``method="auto"``;
4. ``ImproperUniform`` priors (ordered vector, real line), an ordered prior as a
   ``TransformedDistribution``, and a support that depends on another latent
   (``Uniform(0, 1 - a)``): Laplace, Pathfinder and NUTS against quadrature;
5. ``Uniform(0, 1)`` priors in CAVI: the conjugate ``Beta(1, 1)`` they equal, exactly;
6. CAVI's restarts (``n_init``) reaching the better of two mean-field optima, against a
   grid search of the mean-field ELBO.
"""

from __future__ import annotations

import functools
import math
import warnings

import pyro
import pytest
import torch
from pyro.nn import PyroModule, PyroSample

import ppl
import ppl.distributions as dist
from ppl.backends.common.potential import Potential
from ppl.distributions import constraints
from ppl.dsl import module_dtype_boundary

F64 = torch.float64
CPU = torch.device("cpu")


def _infer(model, data, method, **options):
    """``ppl.infer`` with its trust and convergence warnings silenced (the tests read the numbers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.infer(model, data=data, method=method, **options)


def _mean(post, site) -> torch.Tensor:
    return post.mean(site).detach().to(F64)


NUTS_SHORT = {"num_samples": 200, "warmup_steps": 200, "num_chains": 2, "seed": 0}


# ----------------------------------------------------------------------------- 1. PyroModule
NOISE = 0.5


class BayesianRegression(PyroModule):
    """``y ~ Normal(x w + b, NOISE)`` with ``w ~ Normal(0, I)``, ``b ~ Normal(0, 1)``."""

    def __init__(self, d):
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](d, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, d]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 1.0).expand([1]).to_event(1))

    def forward(self, x, y=None):
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, NOISE), obs=y)
        return mean


def _regression_data(n=30):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=gen)                       # float32, as a user's data often are
    y = x @ torch.tensor([1.0, -2.0]) + 0.3 + NOISE * torch.randn(n, generator=gen)
    return x, y


def _regression_posterior(x, y):
    """The exact Gaussian posterior of (w1, w2, b): mean and sds."""
    features = torch.cat([x.to(F64), torch.ones(len(x), 1, dtype=F64)], 1)
    cov = torch.linalg.inv(torch.eye(3, dtype=F64) + features.T @ features / NOISE ** 2)
    return cov @ features.T @ y.to(F64) / NOISE ** 2, cov.diagonal().sqrt()


def test_a_pyro_module_is_a_model_whose_forward_takes_the_data():
    module = BayesianRegression(2)
    model = ppl.model(module)
    assert model.name == "BayesianRegression" and model.argument_names == ["x", "y"]
    assert model.function is module and ppl.model(module, name="blr").name == "blr"
    x, y = _regression_data()
    trace = pyro.poutine.trace(model).get_trace(x, y)         # still a Pyro model
    assert {"linear.weight", "linear.bias", "obs"} <= set(trace.nodes)
    graph = ppl.compile(model, {"x": x.numpy(), "y": y.numpy()})
    assert set(graph.continuous_latent()) == {"linear.weight", "linear.bias"}
    with pytest.raises(ppl.DataError, match="needs argument"):
        ppl.compile(model, {"y": y})
    with pytest.raises(ppl.DataError, match="valid argument names"):
        ppl.compile(model, {"x": x, "z": y})


def test_a_pyro_module_analysis_names_no_dtype_clash():
    x, y = _regression_data()
    analysis = ppl.analyze(ppl.model(BayesianRegression(2)), data={"x": x, "y": y})
    for name, (ok, reason) in analysis.backends.items():
        assert "dtype" not in reason and "Float" not in reason, (name, reason)
    assert all(analysis.backends[m][0] for m in ("laplace", "svi", "nuts", "pathfinder", "map"))


@pytest.mark.parametrize("method, options, tol", [
    ("laplace", {"seed": 0}, 0.2),
    ("svi", {"guide": "mvn", "num_steps": 1000, "lr": 0.02, "elbo_particles": 200, "seed": 0}, 0.25),
    ("nuts", NUTS_SHORT, 0.35),
])
def test_a_pyro_module_regression_matches_the_closed_form(method, options, tol):
    x, y = _regression_data()
    post = _infer(ppl.model(BayesianRegression(2)), {"x": x, "y": y}, method, **options)
    mean, sd = _regression_posterior(x, y)
    got = torch.cat([_mean(post, "linear.weight").reshape(-1), _mean(post, "linear.bias").reshape(-1)])
    assert ((got - mean).abs() / sd).max() < tol, (got, mean, sd)
    if method == "svi":
        assert post.diagnostics["dtype"] == str(F64) and not post.diagnostics["notes"]


# --------------------------------------------------------------------- 2. float32 modules
def _decoder_model():
    """Per data point a code z ~ N(0, I_2) and x ~ N(net(z), 0.5), the decoder network's
    weights float32 (registered with pyro.module, as a VAE's)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).float()

    @ppl.model
    def decoder(x):
        pyro.module("decoder", net)
        with ppl.plate("data", x.shape[0]):
            z = ppl.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            ppl.sample("obs", dist.Normal(net(z), 0.5).to_event(1), obs=x)

    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    return decoder, net, {"x": x}


def test_module_boundary_casts_only_where_dtypes_differ():
    net = torch.nn.Linear(2, 3).float()
    z = torch.randn(4, 2, dtype=F64, requires_grad=True)
    with pytest.raises(RuntimeError, match="dtype"):
        net(z)
    with module_dtype_boundary():
        out = net(z)
        same = net(z.detach().float())
    assert out.dtype == F64 and same.dtype == torch.float32
    torch.testing.assert_close(out, (z.detach().float() @ net.weight.T + net.bias).to(F64))
    out.sum().backward()                                    # gradients flow through both casts
    assert net.weight.grad.dtype == torch.float32 and z.grad.dtype == F64
    with pytest.raises(RuntimeError, match="dtype"):        # outside the block torch is as it was
        net(z)


def test_float32_module_analysis_shows_no_dtype_error():
    model, _, data = _decoder_model()
    analysis = ppl.analyze(model, data=data)
    for name, (ok, reason) in analysis.backends.items():
        assert "dtype" not in reason and "Double" not in reason, (name, reason)
    assert all(analysis.backends[m][0] for m in ("svi", "map", "laplace", "pathfinder", "nuts"))


@pytest.mark.parametrize("method, options", [
    ("svi", {"num_steps": 300, "seed": 0}),
    ("map", {}),
    ("laplace", {"seed": 0}),
    ("pathfinder", {"seed": 0}),
])
def test_float32_module_runs_in_float64(method, options):
    model, net, data = _decoder_model()
    post = _infer(model, data, method, **options)
    z = post.map()["z"] if method == "map" else post.mean("z")
    assert z.shape == (6, 2) and z.dtype == F64 and bool(torch.isfinite(z).all())
    if method == "svi":
        assert post.diagnostics["dtype"] == str(F64) and not post.diagnostics["notes"]
        assert math.isfinite(post.elbo)
    assert all(p.dtype == torch.float32 and isinstance(p, torch.nn.Parameter) for p in net.parameters())


# ---------------------------------------------------------------------------- 3. DiscreteHMM
K = 2
CONCENTRATION = torch.ones(K, K, dtype=F64) + 3.0 * torch.eye(K, dtype=F64)
LOC_PRIOR = torch.tensor([-1.5, 1.5], dtype=F64)
LOC_SCALE = 0.5          # far enough apart that the label-swapped mode has no mass (e^-29)
INIT_LOGITS = torch.full((K,), -math.log(K), dtype=F64)


@ppl.model
def discrete_hmm(y):
    trans = ppl.sample("trans", dist.Dirichlet(CONCENTRATION).to_event(1))
    locs = ppl.sample("locs", dist.Normal(LOC_PRIOR, LOC_SCALE).to_event(1))
    ppl.sample("y", dist.DiscreteHMM(INIT_LOGITS, trans.log(), dist.Normal(locs, 1.0), duration=y.shape[-1]), obs=y)


def _hmm_data(t=30):
    gen = torch.Generator().manual_seed(3)
    state, ys = 0, []
    for _ in range(t):
        if torch.rand((), generator=gen) < 0.1:
            state = 1 - state
        ys.append((-1.5 if state == 0 else 1.5) + float(torch.randn((), generator=gen)))
    return torch.tensor(ys, dtype=F64)


def _hmm_log_joint(trans, locs, y):
    """log p(trans, locs, y) by the forward algorithm (Pyro's convention: the initial state
    precedes the first transition); trans ``(..., K, K)``, locs ``(..., K)``."""
    log_t = trans.log()
    lp = torch.distributions.Dirichlet(CONCENTRATION).log_prob(trans).sum(-1)
    lp = lp + torch.distributions.Normal(LOC_PRIOR, LOC_SCALE).log_prob(locs).sum(-1)
    alpha = INIT_LOGITS.expand(locs.shape)
    for value in y:
        emit = torch.distributions.Normal(locs, 1.0).log_prob(value)
        alpha = torch.logsumexp(alpha.unsqueeze(-1) + log_t, -2) + emit
    return lp + torch.logsumexp(alpha, -1)


def _grid_moments(log_density, lows, highs, n, support=None):
    """Means and sds of the coordinates under ``exp(log_density)`` on a box (midpoint rule,
    ``n`` points per axis), and the largest density on the box's faces that are not
    faces of the ``support`` box, relative to the maximum (small: the box holds the mass)."""
    axes = [lo + (hi - lo) * (torch.arange(n, dtype=F64) + 0.5) / n for lo, hi in zip(lows, highs)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    lp = log_density(grid)
    w = torch.exp(lp - lp.max())
    w = w / w.sum()
    mean = (w[:, None] * grid).sum(0)
    sd = ((w[:, None] * (grid - mean) ** 2).sum(0)).sqrt()
    shaped = w.reshape((n,) * len(axes))
    support = support or [(-math.inf, math.inf)] * len(axes)
    inner = [(d, i) for d, (lo, hi) in enumerate(zip(lows, highs))
             for i, edge, bound in ((0, lo, support[d][0]), (n - 1, hi, support[d][1])) if edge != bound]
    face = max((float(shaped.select(d, i).max()) for d, i in inner), default=0.0)
    return mean, sd, face / float(w.max())


@functools.lru_cache(maxsize=1)
def _hmm_reference(t=30):
    """Posterior means and sds of (trans[0, 0], trans[1, 1], locs[0], locs[1]) by 4-D
    quadrature: a coarse box, then twice one of ±8 sds around the answer before (clipped to (0, 1))."""
    y = _hmm_data(t)

    def log_density(g):
        p, q = g[:, 0], g[:, 1]
        trans = torch.stack([torch.stack([p, 1 - p], -1), torch.stack([1 - q, q], -1)], -2)
        return _hmm_log_joint(trans, g[:, 2:], y)

    support = [(0.0, 1.0)] * 2 + [(-math.inf, math.inf)] * 2
    mean, sd, _ = _grid_moments(log_density, [0.0, 0.0, -4.0, -4.0], [1.0, 1.0, 4.0, 4.0], 20, support)
    for _ in range(2):
        lows = [max(lo, float(m - 8 * s)) for (lo, _), m, s in zip(support, mean, sd)]
        highs = [min(hi, float(m + 8 * s)) for (_, hi), m, s in zip(support, mean, sd)]
        mean, sd, face = _grid_moments(log_density, lows, highs, 26, support)
    assert face < 1e-4
    return mean, sd


def test_discrete_hmm_log_density_equals_a_forward_algorithm():
    y = _hmm_data()
    graph = ppl.compile(discrete_hmm, {"y": y})
    assert set(graph.continuous_latent()) == {"trans", "locs"}
    potential = Potential(graph, CPU, F64, ppl.analyze(graph))
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        z = potential.median + torch.randn(potential.dim, generator=gen, dtype=F64)
        h = potential.constrain(z)
        want = _hmm_log_joint(h["trans"], h["locs"], y)
        got = potential.log_joint({s: v.unsqueeze(0) for s, v in h.items()})[0]
        assert float(got) == pytest.approx(float(want), rel=1e-10)
        u = potential.unflat(z)["trans"]                      # each row: a stick-breaking simplex
        log_jacobian = torch.distributions.transforms.StickBreakingTransform().log_abs_det_jacobian(
            u, h["trans"]).sum()
        assert float(potential.log_density(z)) == pytest.approx(float(want + log_jacobian), rel=1e-10)


@pytest.mark.parametrize("method, options, tol", [("laplace", {"seed": 0}, 0.3),
                                                  pytest.param("nuts", NUTS_SHORT, 0.35, marks=pytest.mark.slow)])
def test_discrete_hmm_posterior_matches_quadrature(method, options, tol):
    y = _hmm_data()
    post = _infer(discrete_hmm, {"y": y}, method, **options)
    trans = _mean(post, "trans")
    got = torch.stack([trans[0, 0], trans[1, 1], *_mean(post, "locs")])
    mean, sd = _hmm_reference()
    assert ((got - mean).abs() / sd).max() < tol, (got, mean, sd)


def test_discrete_hmm_auto_gives_a_verdict():
    post = _infer(discrete_hmm, {"y": _hmm_data()}, "auto", seed=0, time_budget=60.0)
    assert post.trust.verdict in ("exact", "reliable", "unreliable")
    assert post.diagnostics["routing"]["attempts"]
    assert post.mean("trans").shape == (K, K)


# --------------------------------------------------------------- 4. improper and ordered priors
ORDERED_Y = torch.tensor([[-0.6, 0.1, 0.4], [-0.1, -0.3, 1.1], [0.2, 0.3, 0.5], [-0.9, 0.2, 0.9],
                          [-0.4, -0.2, 0.2], [0.1, 0.4, 0.8], [-0.5, 0.0, 0.7], [-0.2, 0.1, 0.3]], dtype=F64)


@ppl.model
def ordered_flat(y):
    mu = ppl.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (3,)))
    with ppl.plate("data", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)


@ppl.model
def ordered_normal(y):
    base = dist.Normal(torch.zeros(3), 3.0).to_event(1)
    mu = ppl.sample("mu", dist.TransformedDistribution(base, [dist.transforms.OrderedTransform()]))
    with ppl.plate("data", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)


@ppl.model
def flat_mean(y):
    mu = ppl.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    with ppl.plate("data", y.shape[0]):
        ppl.sample("y", dist.Normal(mu, 1.0), obs=y)


ORDERED_PRIORS = {
    "flat": lambda x: x[:, 1:].sum(-1),                           # the Jacobian |dmu/dx| of a flat prior in mu
    "normal": lambda x: torch.distributions.Normal(torch.tensor(0.0, dtype=F64), 3.0).log_prob(x).sum(-1),
}


def _to_ordered(x):
    """OrderedTransform: mu_1 = x_1, mu_k = mu_(k-1) + exp(x_k)."""
    return torch.cumsum(torch.cat([x[..., :1], x[..., 1:].exp()], -1), -1)


def _ordered_reference(prior):
    """Posterior means and sds of mu by 3-D quadrature over x = (mu_1, log(mu_2 - mu_1),
    log(mu_3 - mu_2)), where ``prior`` gives the prior's log density in x."""
    n, ybar = ORDERED_Y.shape[0], ORDERED_Y.mean(0)

    def log_density(x):
        return prior(x) - 0.5 * n * ((_to_ordered(x) - ybar) ** 2).sum(-1)

    x_mean, x_sd, _ = _grid_moments(log_density, [-4.0, -12.0, -12.0], [3.0, 3.0, 3.0], 40)
    lows = [float(m - 7 * s) for m, s in zip(x_mean, x_sd)]
    highs = [float(m + 7 * s) for m, s in zip(x_mean, x_sd)]
    axes_n = 110
    axes = [lo + (hi - lo) * (torch.arange(axes_n, dtype=F64) + 0.5) / axes_n for lo, hi in zip(lows, highs)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    lp = log_density(grid)
    w = torch.exp(lp - lp.max())
    w = w / w.sum()
    mu = _to_ordered(grid)
    mean = (w[:, None] * mu).sum(0)
    return mean, ((w[:, None] * (mu - mean) ** 2).sum(0)).sqrt()


@pytest.mark.parametrize("kind", ["flat", "normal"])
def test_ordered_potential_is_the_density_in_log_differences(kind):
    """The unconstrained coordinates of an ordered vector are x (biject_to(ordered_vector) is
    OrderedTransform), so the potential is the prior's density in x plus the likelihood."""
    model = ordered_flat if kind == "flat" else ordered_normal
    graph = ppl.compile(model, {"y": ORDERED_Y})
    potential = Potential(graph, CPU, F64, ppl.analyze(graph))
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        x = torch.randn(3, generator=gen, dtype=F64)
        mu = _to_ordered(x)
        want = ORDERED_PRIORS[kind](x.unsqueeze(0))[0] + torch.distributions.Normal(mu, 1.0).log_prob(ORDERED_Y).sum()
        assert float(potential.log_density(x)) == pytest.approx(float(want), rel=1e-10)
        torch.testing.assert_close(potential.constrain(x)["mu"], mu)


# Laplace and Pathfinder are Gaussian approximations in x; the normal prior on the log
# differences leaves a tail toward ties that they miss (the mean of mu_3 is 0.5 sd off),
# hence their wider tolerance
@pytest.mark.parametrize("method, options, tol", [
    ("laplace", {"seed": 0}, 0.6), ("pathfinder", {"seed": 0}, 0.6),
    pytest.param("nuts", NUTS_SHORT, 0.35, marks=pytest.mark.slow)])  # 10-20 s each; NUTS is checked elsewhere
@pytest.mark.parametrize("kind", ["flat", "normal"])
def test_ordered_priors_match_quadrature(kind, method, options, tol):
    model = ordered_flat if kind == "flat" else ordered_normal
    post = _infer(model, {"y": ORDERED_Y}, method, **options)
    got = _mean(post, "mu")
    assert bool((got[1:] > got[:-1]).all())
    mean, sd = _ordered_reference(ORDERED_PRIORS[kind])
    assert ((got - mean).abs() / sd).max() < tol, (got, mean, sd)


@pytest.mark.parametrize("method, options", [
    ("laplace", {"seed": 0}), ("pathfinder", {"seed": 0}), ("nuts", NUTS_SHORT)])
def test_improper_flat_prior_matches_the_closed_form(method, options):
    y = ORDERED_Y[:, 0]
    post = _infer(flat_mean, {"y": y}, method, **options)
    sd = 1.0 / math.sqrt(len(y))                                 # posterior N(ybar, 1/n)
    assert abs(float(_mean(post, "mu")) - float(y.mean())) < 0.3 * sd


@ppl.model
def dependent_support(y):
    a = ppl.sample("a", dist.Uniform(0.0, 1.0))
    b = ppl.sample("b", dist.Uniform(0.0, 1.0 - a))
    with ppl.plate("data", y.shape[0]):
        ppl.sample("y", dist.Bernoulli(a + b), obs=y)


DEPENDENT_Y = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], dtype=F64)


def _dependent_reference():
    """Posterior means and sds of (a, b) by 2-D quadrature in (a, u), b = (1 - a) u: the
    prior p(a) p(b | a) |db/du| = 1 there, so the posterior is ∝ s^h (1 - s)^t, s = a + b."""
    h = float(DEPENDENT_Y.sum())
    t = len(DEPENDENT_Y) - h
    n = 600
    axis = (torch.arange(n, dtype=F64) + 0.5) / n
    a, u = torch.meshgrid(axis, axis, indexing="ij")
    b = (1 - a) * u
    s = a + b
    w = torch.exp(h * s.log() + t * (1 - s).log())
    w = w / w.sum()
    mean = torch.stack([(w * a).sum(), (w * b).sum()])
    sd = torch.stack([(w * (a - mean[0]) ** 2).sum(), (w * (b - mean[1]) ** 2).sum()]).sqrt()
    return mean, sd


@pytest.mark.parametrize("method, options, tol", [
    ("laplace", {"seed": 0}, 0.3), ("pathfinder", {"seed": 0}, 0.3), ("nuts", NUTS_SHORT, 0.35)])
def test_dependent_support_matches_quadrature(method, options, tol):
    post = _infer(dependent_support, {"y": DEPENDENT_Y}, method, **options)
    got = torch.stack([_mean(post, "a"), _mean(post, "b")])
    mean, sd = _dependent_reference()
    assert ((got - mean).abs() / sd).max() < tol, (got, mean, sd)


def test_svi_refuses_an_autoguide_on_a_dependent_support_and_auto_goes_on():
    # an autoguide's transform is fixed when it is built: on Uniform(0, 1 - a) its draws of b leave the support
    # once a moves (a raw ValueError inside Pyro before); a typed refusal naming the site instead
    with pytest.raises(ppl.UnsupportedModelError, match=r"\['b'\].*laplace"):
        ppl.infer(dependent_support, {"y": DEPENDENT_Y}, method="svi", seed=0, progress=False)
    assert ppl.analyze(dependent_support, {"y": DEPENDENT_Y}).backends["laplace"][0]
    post = _infer(dependent_support, {"y": DEPENDENT_Y}, "auto", seed=0)
    assert post.method != "svi"


# ------------------------------------------------------------------ 5. Uniform(0, 1) in CAVI
@ppl.model
def coin(y):
    p = ppl.sample("p", dist.Uniform(0.0, 1.0))
    with ppl.plate("flips", y.shape[0]):
        ppl.sample("y", dist.Bernoulli(p), obs=y)


@ppl.model
def coin_binomial(k, n):
    p = ppl.sample("p", dist.Uniform(0.0, 1.0))
    ppl.sample("k", dist.Binomial(n, p), obs=k)


@ppl.model
def coin_wide(y):
    p = ppl.sample("p", dist.Uniform(0.0, 2.0))
    with ppl.plate("flips", y.shape[0]):
        ppl.sample("y", dist.Bernoulli(p / 2), obs=y)


def _log_beta(a, b):
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


@pytest.mark.parametrize("likelihood", ["bernoulli", "binomial"])
def test_uniform_prior_is_the_conjugate_beta_in_cavi(likelihood):
    y = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    heads, tails = int(y.sum()), int(len(y) - y.sum())
    if likelihood == "bernoulli":
        model, data, log_evidence = coin, {"y": y}, _log_beta(1 + heads, 1 + tails)
    else:
        model, data = coin_binomial, {"k": torch.tensor(float(heads)), "n": len(y)}
        log_evidence = _log_beta(1 + heads, 1 + tails) + math.log(math.comb(len(y), heads))
    assert ppl.analyze(model, data=data).backends["cavi"][0]
    post = _infer(model, data, "cavi")
    q = post.marginal("p")
    assert isinstance(q, torch.distributions.Beta)
    assert float(q.concentration1) == pytest.approx(1 + heads, rel=1e-10)
    assert float(q.concentration0) == pytest.approx(1 + tails, rel=1e-10)
    assert post.elbo == pytest.approx(log_evidence, rel=1e-10)   # q is the exact posterior


def test_uniform_on_another_interval_is_not_taken_for_a_beta():
    ok, reason = ppl.analyze(coin_wide, data={"y": torch.tensor([1.0, 0.0, 1.0])}).backends["cavi"]
    assert not ok and "Uniform" in reason


# ------------------------------------------------------------------------ 6. CAVI restarts
EXPLAIN = torch.tensor([[0.01, 0.9], [0.6, 0.01]], dtype=F64)   # p(y = 1 | a, b): two explanations


@ppl.model
def explaining_away():
    a = ppl.sample("a", dist.Bernoulli(0.5))
    b = ppl.sample("b", dist.Bernoulli(0.5))
    ppl.sample("y", dist.Bernoulli(EXPLAIN[a.long(), b.long()]), obs=torch.tensor(1.0))


def _mean_field_elbo(u, w):
    """The mean-field ELBO at q(a = 1) = u, q(b = 1) = w, by enumerating the joint."""
    log_joint = math.log(0.25) + EXPLAIN.log()                     # log p(a, b, y = 1)
    qa, qb = torch.stack([1 - u, u], -1), torch.stack([1 - w, w], -1)
    expected = (qa.unsqueeze(-1) * qb.unsqueeze(-2) * log_joint).sum((-1, -2))

    def entropy(p):
        return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))

    return expected + entropy(u) + entropy(w)


def _best_mean_field_elbo():
    """The highest mean-field ELBO: a 1001 x 1001 grid search, polished by the fixed-point
    equations u = sigmoid(E_w[log p(1, b)] - E_w[log p(0, b)]) (and the same for w)."""
    axis = torch.linspace(0.0, 1.0, 1001, dtype=F64)
    u, w = torch.meshgrid(axis, axis, indexing="ij")
    values = _mean_field_elbo(u, w)
    best = int(values.argmax())
    u, w = u.reshape(-1)[best], w.reshape(-1)[best]
    log_joint = math.log(0.25) + EXPLAIN.log()
    for _ in range(200):
        u = torch.sigmoid((1 - w) * (log_joint[1, 0] - log_joint[0, 0]) + w * (log_joint[1, 1] - log_joint[0, 1]))
        w = torch.sigmoid((1 - u) * (log_joint[0, 1] - log_joint[0, 0]) + u * (log_joint[1, 1] - log_joint[1, 0]))
    return float(_mean_field_elbo(u, w)), float(values.max())


def test_cavi_restarts_reach_the_better_optimum():
    best, on_grid = _best_mean_field_elbo()
    assert best >= on_grid - 1e-12
    log_evidence = float(_infer(explaining_away, {}, "exact").log_evidence)
    assert best < log_evidence                                     # mean field misses one explanation
    bad = {"a": [0.05, 0.95], "b": [0.95, 0.05]}                   # starts at the weaker explanation
    one = _infer(explaining_away, {}, "cavi", init=bad, n_init=1, seed=0)
    five = _infer(explaining_away, {}, "cavi", init=bad, n_init=5, seed=0)
    assert one.elbo < best - 0.3                                   # a worse local optimum
    assert five.elbo == pytest.approx(best, abs=1e-9)
    assert float(five.marginal("b").probs) > 0.9 > 0.1 > float(five.marginal("a").probs)
