"""ppl's log density in unconstrained space (``ppl.backends.common.potential``), checked
against references that share none of its code: Pyro's own potential
(``pyro.infer.mcmc.util.initialize_model``: its transforms and its ``TraceEinsumEvaluator``
summing the discrete latents out) on every reference model whose supports are fixed, and
a hand-written density where a support depends on another latent (GARCH's
``beta ~ Uniform(0, 1 - alpha)``), which Pyro's potential gets wrong (it fixes each
transform at its first trace).
"""

from __future__ import annotations

import math
import pathlib
import sys
import warnings

import pytest
import torch
from pyro.infer.mcmc.util import initialize_model

import ppl
from ppl.backends.common.potential import Potential, conditioned_model

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from reference_models import REFERENCE, garch_data  # noqa: E402

F64 = torch.float64


@pytest.mark.parametrize("name", ["regression", "eight_schools", "logistic", "ar2", "mixture", "hmm"])
def test_equals_pyro_potential(name):
    model, make_data, _ = REFERENCE[name]
    graph = ppl.compile(model, make_data())
    potential = Potential(graph, torch.device("cpu"), F64, ppl.analyze(graph))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init, pyro_potential, _, _ = initialize_model(conditioned_model(graph, graph.bound.observations),
                                                      model_kwargs=graph.bound.kwargs, max_plate_nesting=1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        z = potential.median + 0.5 * torch.randn(potential.dim, generator=gen, dtype=F64)
        ours, grad = potential.log_density_and_grad(z)
        zd = {k: v.clone().requires_grad_(True) for k, v in potential.unflat(z).items()}
        theirs = -pyro_potential({k: zd[k] for k in init})
        theirs_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(theirs, [zd[k] for k in potential.sites])])
        assert float(ours) == pytest.approx(float(theirs.detach()), rel=1e-10, abs=1e-8)
        torch.testing.assert_close(grad, theirs_grad, rtol=1e-8, atol=1e-8)


def _garch_by_hand(z, r):
    """log p(h(z), r) + log|dh/dz| for omega = exp(z0), alpha = sigmoid(z1),
    beta = (1 - alpha) sigmoid(z2)."""
    omega = math.exp(z[0])
    alpha = 1 / (1 + math.exp(-z[1]))
    s2 = 1 / (1 + math.exp(-z[2]))
    beta = (1 - alpha) * s2
    lp = torch.distributions.LogNormal(-2.0, 1.0).log_prob(torch.tensor(omega, dtype=F64)).item() + z[0]
    lp += 0.0 + math.log(alpha * (1 - alpha))                        # Uniform(0, 1) and its logit Jacobian
    lp += -math.log(1 - alpha) + math.log((1 - alpha) * s2 * (1 - s2))  # Uniform(0, 1 - alpha) and its Jacobian
    var = float(r.var())
    for t in range(len(r)):
        if t:
            var = omega + alpha * float(r[t - 1]) ** 2 + beta * var
        lp += -0.5 * math.log(2 * math.pi * var) - 0.5 * float(r[t]) ** 2 / var
    return lp


def test_a_support_that_depends_on_another_latent_follows_it():
    model, make_data, _ = REFERENCE["garch"]
    data = garch_data()
    graph = ppl.compile(model, data)
    potential = Potential(graph, torch.device("cpu"), F64)
    assert potential.sites == ["omega", "alpha", "beta"]
    for z in ([-2.0, -1.0, 0.5], [-1.0, 0.3, 1.2], [-3.0, -2.5, -0.4]):
        zt = torch.tensor(z, dtype=F64)
        assert float(potential.log_density(zt)) == pytest.approx(_garch_by_hand(z, data["r"]), rel=1e-10)
        h = potential.constrain(zt)
        assert float(h["beta"]) < 1 - float(h["alpha"])
        torch.testing.assert_close(potential.unconstrain(h), zt)


@pytest.mark.parametrize("name", ["regression", "eight_schools", "mixture", "garch"])
def test_constraining_many_draws_at_once_equals_pyro_transforms_row_by_row(name):
    """``constrain`` of an ``(S, D)`` batch (all rows through the static transforms, or row by
    row where a support depends on another latent, GARCH) against Pyro's transforms of
    ``initialize_model`` (fixed supports) or the model run at each row (GARCH)."""
    model, make_data, _ = REFERENCE[name]
    graph = ppl.compile(model, make_data())
    potential = Potential(graph, torch.device("cpu"), F64, ppl.analyze(graph))
    gen = torch.Generator().manual_seed(1)
    zs = potential.median + torch.randn(5, potential.dim, generator=gen, dtype=F64)
    batch = potential.constrain(zs)
    if name == "garch":
        rows = [potential.constrain(z) for z in zs]
        assert all(float(r["beta"]) < 1 - float(r["alpha"]) for r in rows)
        for s in potential.sites:
            torch.testing.assert_close(batch[s], torch.stack([r[s] for r in rows]))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, transforms, _ = initialize_model(conditioned_model(graph, graph.bound.observations),
                                               model_kwargs=graph.bound.kwargs, max_plate_nesting=1)
    for s, u in potential.unflat(zs).items():
        theirs = torch.stack([transforms[s].inv(row) for row in u]) if s in transforms else u
        torch.testing.assert_close(batch[s], theirs, rtol=1e-12, atol=1e-12)


@ppl.model
def _shifted(y):
    z = ppl.sample("z", ppl.distributions.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    ppl.sample("y", ppl.distributions.Uniform(z - 1.0, z + 1.0), obs=y)


def test_the_start_moves_off_a_prior_median_where_the_model_has_no_density():
    """y ~ Uniform(z - 1, z + 1) at y = 2: the prior median z = 0 gives y no density (the
    model refused to be evaluated there: a ModelError for every method); the start is now
    the first seeded uniform(-2, 2) point with a finite density, z in (1, 3)."""
    graph = ppl.compile(_shifted, {"y": torch.tensor(2.0, dtype=F64)})
    potential = Potential(graph, torch.device("cpu"), F64, ppl.analyze(graph))
    z = float(potential.median[0])
    assert 1.0 < z < 2.0 and math.isfinite(float(potential.log_density(potential.median)))
    again = Potential(graph, torch.device("cpu"), F64, ppl.analyze(graph))
    assert float(again.median[0]) == z                                     # seeded: the same start
    inside = ppl.compile(_shifted, {"y": torch.tensor(0.8, dtype=F64)})    # the median works: kept
    assert float(Potential(inside, torch.device("cpu"), F64, ppl.analyze(inside)).median[0]) == 0.0
