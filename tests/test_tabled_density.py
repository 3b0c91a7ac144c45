"""The table-based log density of continuous models (``Potential.tabled``: factor tables
rebuilt from gathers of θ and replayed computed arguments, no model run) against the
model-run density (Pyro's trace of the model, each site's ``log_prob``) on models of many
shapes: plates, nested plates, masks, vector sites, computed arguments, discrete and
count observations, covariates.  The model run is the reference: it shares none of the
table code.  Where a model cannot be tabled, the potential must say so (``tabled`` None)
and keep the model run."""

import pytest
import torch
import pyro.distributions as dist
from torch.distributions import constraints

import ppl
from ppl.backends.common.potential import Potential

F = torch.float64
t = lambda v: torch.tensor(v, dtype=F)  # noqa: E731
G = torch.Generator().manual_seed(11)
X = torch.randn(12, 3, generator=G, dtype=F)
Y = torch.randn(12, generator=G, dtype=F)
COUNTS = torch.poisson(torch.full((12,), 3.0, dtype=F), generator=G)
BITS = (torch.rand(12, generator=G) < 0.4).to(F)
GROUP = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 3])
MASK = torch.tensor([True] * 9 + [False] * 3)


@ppl.model
def linear(x, y):
    w = ppl.sample("w", dist.Normal(torch.zeros(3, dtype=F), 2.0).to_event(1))
    b = ppl.sample("b", dist.StudentT(t(3.0), t(0.0), 5.0))
    s = ppl.sample("s", dist.Gamma(t(2.0), 1.0))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(x @ w + b, s), obs=y)


@ppl.model
def poisson_glm(x, c):
    w = ppl.sample("w", dist.Laplace(torch.zeros(3, dtype=F), 1.0).to_event(1))
    with ppl.plate("data", len(c)):
        ppl.sample("c", dist.Poisson((x @ w).exp()), obs=c)


@ppl.model
def logistic(x, bits):
    w = ppl.sample("w", dist.Normal(torch.zeros(3, dtype=F), 1.0).to_event(1))
    with ppl.plate("data", len(bits)):
        ppl.sample("bits", dist.Bernoulli(logits=x @ w), obs=bits)


@ppl.model
def grouped(group, y):
    mu = ppl.sample("mu", dist.Normal(t(0.0), 5.0))
    tau = ppl.sample("tau", dist.HalfNormal(t(2.0)))
    with ppl.plate("groups", 4):
        eta = ppl.sample("eta", dist.Normal(t(0.0), 1.0))
    theta = mu + tau * eta                                 # non-centred
    sigma = ppl.sample("sigma", dist.Exponential(t(1.0)))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(theta[group], sigma), obs=y)


@ppl.model
def masked(y, mask):
    m = ppl.sample("m", dist.Normal(t(0.0), 3.0))
    s = ppl.sample("s", dist.LogNormal(t(0.0), 1.0))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(m, s).mask(mask), obs=y)


@ppl.model
def nested(y):
    loc = ppl.sample("loc", dist.Normal(t(0.0), 2.0))
    with ppl.plate("rows", 3, dim=-2):
        r = ppl.sample("r", dist.Normal(loc, 1.0))
        with ppl.plate("cols", 4, dim=-1):
            ppl.sample("y", dist.Normal(r, 0.5), obs=y)


@ppl.model
def mvn(y):
    loc = ppl.sample("loc", dist.Normal(torch.zeros(2, dtype=F), 3.0).to_event(1))
    rho = ppl.sample("rho", dist.Uniform(t(-0.9), t(0.9)))
    cov = torch.stack([torch.stack([t(1.0), rho]), torch.stack([rho, t(1.0)])])
    with ppl.plate("data", y.shape[0]):
        ppl.sample("y", dist.MultivariateNormal(loc, covariance_matrix=cov), obs=y)


@ppl.model
def simplex(c):
    p = ppl.sample("p", dist.Dirichlet(torch.ones(3, dtype=F)))
    with ppl.plate("data", len(c)):
        ppl.sample("c", dist.Categorical(p), obs=c)


@ppl.model
def with_param(y):
    s = ppl.param("s", t(0.8), constraint=constraints.positive)
    m = ppl.sample("m", dist.Normal(t(0.0), 1.0))
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(m * 2.0 - 1.0, s), obs=y)


@ppl.model
def branching(y):
    m = ppl.sample("m", dist.Normal(t(0.0), 1.0))
    scale = 1.0 if float(m) > 0 else 2.0                   # a value leaves torch: never tabled
    with ppl.plate("data", len(y)):
        ppl.sample("y", dist.Normal(m, scale), obs=y)


CASES = {
    "linear": (linear, {"x": X, "y": Y}),
    "poisson_glm": (poisson_glm, {"x": X * 0.3, "c": COUNTS}),
    "logistic": (logistic, {"x": X, "bits": BITS}),
    "grouped": (grouped, {"group": GROUP, "y": Y}),
    "masked": (masked, {"y": Y, "mask": MASK}),
    "nested": (nested, {"y": Y.reshape(3, 4)}),
    "mvn": (mvn, {"y": X[:, :2]}),
    "simplex": (simplex, {"c": torch.tensor([0, 1, 2, 2, 1, 2])}),
    "with_param": (with_param, {"y": Y}),
}


def _potentials(model, data):
    graph = ppl.analyze(model, data).graph
    pot = Potential(graph, torch.device("cpu"), F)
    return pot


@pytest.mark.parametrize("name", sorted(CASES))
def test_tables_equal_the_model_run(name):
    model, data = CASES[name]
    pot = _potentials(model, data)
    assert pot.tabled is not None, f"{name}: expected the table path"
    g = torch.Generator().manual_seed(1)
    zs = pot.median + 0.7 * torch.randn(5, pot.dim, generator=g, dtype=F)
    tabled = pot.tabled
    for z in zs:
        value, grad = pot.log_density_and_grad(z)
        pot.tabled = None  # the model-run density
        try:
            ref, ref_grad = pot.log_density_and_grad(z)
        finally:
            pot.tabled = tabled
        assert float(value) == pytest.approx(float(ref), rel=1e-10, abs=1e-10), name
        assert torch.allclose(grad, ref_grad, rtol=1e-7, atol=1e-9), name


def test_a_value_that_leaves_torch_keeps_the_model_run():
    pot = _potentials(branching, {"y": Y})
    assert pot.tabled is None
    for m, scale in ((0.5, 1.0), (-0.5, 2.0)):
        want = dist.Normal(t(0.0), 1.0).log_prob(t(m)) + dist.Normal(t(m), scale).log_prob(Y).sum()
        assert float(pot.log_density(t([m]))) == pytest.approx(float(want), rel=1e-12)


@ppl.model
def independent_softplus(y):
    a = ppl.sample("a", dist.Normal(t(0.0), 1.0))
    loc = ppl.sample("loc", dist.Normal(t(0.0), 1.0))
    s = torch.nn.functional.softplus(a) + 0.1
    ppl.sample("y", dist.Normal(loc.expand(y.shape), s).to_event(1), obs=y)


def test_an_independent_vector_site_with_a_softplus_scale():
    CASES["independent_softplus"] = (independent_softplus, {"y": Y})
    try:
        test_tables_equal_the_model_run("independent_softplus")
    finally:
        del CASES["independent_softplus"]
