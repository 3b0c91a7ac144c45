"""A chain's stacked table built from ParametricTables' group tensors in one op per group
(:mod:`ppl.backends.common.chainstack`) gives the same summed-out density and gradient as
the same stack built factor by factor, and both match a forward algorithm written here
(Rabiner 1989, eq. 19-21) on sequences in a plate: a reference that shares neither."""

import pyro.distributions as dist
import pytest
import torch

import ppl
from ppl.backends.common.potential import Potential

F = torch.float64
K = 3


@ppl.model
def sequences(y):
    trans = ppl.sample("trans", dist.Dirichlet(torch.ones(K, K, dtype=F) + 2 * torch.eye(K, dtype=F)).to_event(1))
    locs = ppl.sample("locs", dist.Normal(torch.zeros(K, dtype=F), 5.0).to_event(1))
    scale = ppl.sample("scale", dist.HalfNormal(torch.tensor(2.0, dtype=F)))
    with ppl.plate("seq", y.shape[0]):
        z = 0
        for t in ppl.markov(range(y.shape[1])):
            z = ppl.sample(f"z_{t}", dist.Categorical(trans[z] if t else torch.full((K,), 1.0 / K, dtype=F)))
            ppl.sample(f"y_{t}", dist.Normal(locs[z], scale), obs=y[:, t])


def _forward(y, trans, locs, scale):
    """log p(y, θ): a forward pass per sequence, plus the priors."""
    emit = dist.Normal(locs, scale)
    total = 0.0
    for row in y:
        alpha = torch.full((K,), 1.0 / K, dtype=F).log() + emit.log_prob(row[0])
        for t in range(1, len(row)):
            alpha = torch.logsumexp(alpha[:, None] + trans.log(), 0) + emit.log_prob(row[t])
        total = total + torch.logsumexp(alpha, 0)
    prior = (dist.Dirichlet(torch.ones(K, K, dtype=F) + 2 * torch.eye(K, dtype=F)).log_prob(trans).sum()
             + dist.Normal(torch.zeros(K, dtype=F), 5.0).log_prob(locs).sum()
             + dist.HalfNormal(torch.tensor(2.0, dtype=F)).log_prob(scale))
    return total + prior


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(5)
    y = torch.randn(4, 25, generator=g, dtype=F) + 3.0 * torch.randint(0, K, (4, 25), generator=g).to(F)
    a = ppl.analyze(sequences, {"y": y})
    return y, Potential(a.graph, torch.device("cpu"), F, a)


def _values(seed):
    g = torch.Generator().manual_seed(seed)
    return {"trans": dist.Dirichlet(torch.ones(K, K, dtype=F) * 2).sample(),
            "locs": torch.randn(K, generator=g, dtype=F) * 3, "scale": torch.rand((), generator=g, dtype=F) + 0.5}


@pytest.mark.parametrize("seed", [0, 1])
def test_the_stacked_chain_matches_a_forward_pass_and_the_factor_by_factor_stack(setup, seed):
    y, pot = setup
    torch.manual_seed(seed)
    values = {k: v.clone().requires_grad_(True) for k, v in _values(seed).items()}
    enumerated = pot.enumerated
    tables = enumerated.pt.tables(values, grad=True)
    assert tables.rows  # the chain's factors are rows of group tensors
    by_groups = enumerated.plan.log_z(tables)
    by_factor = enumerated.plan.log_z(dict(tables))   # a plain dict: no group rows, one op per factor
    ref = _forward(y, *(values[k] for k in ("trans", "locs", "scale")))
    assert torch.allclose(by_groups, by_factor, rtol=1e-12, atol=1e-9)
    # the summed-out density holds the priors' factors too (they are not chain members)
    assert torch.allclose(by_groups, ref, rtol=1e-10, atol=1e-8), (float(by_groups), float(ref))
    g1 = torch.autograd.grad(by_groups, list(values.values()), retain_graph=True)
    g2 = torch.autograd.grad(by_factor, list(values.values()), retain_graph=True)
    g3 = torch.autograd.grad(ref, list(values.values()))
    for name, a, b, c in zip(values, g1, g2, g3):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-9)
        if name == "trans":   # rows on the simplex: gradients agree along it (Categorical renormalises)
            a, c = a - a.mean(-1, keepdim=True), c - c.mean(-1, keepdim=True)
        assert torch.allclose(a, c, rtol=1e-8, atol=1e-8), name


@ppl.model
def repeated(y):
    # one chain; each step emits M draws in a plate the chain does not have: those factors'
    # plate dims are summed into the step (the product over the copies)
    p_stay = ppl.sample("p_stay", dist.Beta(torch.tensor(4.0, dtype=F), 2.0))
    loc = ppl.sample("loc", dist.Normal(torch.tensor(0.0, dtype=F), 5.0))
    trans = torch.stack([torch.stack([p_stay, 1 - p_stay]), torch.stack([1 - p_stay, p_stay])])
    locs = torch.stack([-loc, loc])
    obs = ppl.plate("obs", y.shape[1])
    z = 0
    for t in ppl.markov(range(y.shape[0])):
        z = ppl.sample(f"z_{t}", dist.Categorical(trans[z] if t else torch.full((2,), 0.5, dtype=F)))
        with obs:
            ppl.sample(f"y_{t}", dist.Normal(locs[z], 1.0), obs=y[t])


def test_emissions_in_a_plate_the_chain_lacks_are_summed_into_the_stack():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(30, 3, generator=g, dtype=F) + 2.0 * (torch.rand(30, 1, generator=g) < 0.5).to(F)
    a = ppl.analyze(repeated, {"y": y})
    pot = Potential(a.graph, torch.device("cpu"), F, a)
    values = {"p_stay": torch.tensor(0.7, dtype=F, requires_grad=True),
              "loc": torch.tensor(1.8, dtype=F, requires_grad=True)}
    tables = pot.enumerated.pt.tables(values, grad=True)
    got = pot.enumerated.plan.log_z(tables)
    p, loc = values["p_stay"], values["loc"]
    trans = torch.stack([torch.stack([p, 1 - p]), torch.stack([1 - p, p])]).log()
    emit = lambda row: dist.Normal(torch.stack([-loc, loc])[:, None], 1.0).log_prob(row).sum(-1)  # noqa: E731
    alpha = torch.full((2,), 0.5, dtype=F).log() + emit(y[0])
    for t in range(1, len(y)):
        alpha = torch.logsumexp(alpha[:, None] + trans, 0) + emit(y[t])
    ref = (torch.logsumexp(alpha, 0) + dist.Beta(torch.tensor(4.0, dtype=F), 2.0).log_prob(p)
           + dist.Normal(torch.tensor(0.0, dtype=F), 5.0).log_prob(loc))
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-8), (float(got), float(ref))
    for a_, b_ in zip(torch.autograd.grad(got, [p, loc]), torch.autograd.grad(ref, [p, loc])):
        assert torch.allclose(a_, b_, rtol=1e-8, atol=1e-8)


def test_stack_chain_places_transposed_pairs_and_unaries_from_group_rows():
    # a chain x_0 .. x_4 (K = 3) whose pairwise tables come in both orders, (x_i, x_{i+1}) and
    # (x_{i+1}, x_i), as rows of one stacked group tensor, and unary tables on x_1 .. x_4; the
    # reference is written out entry by entry: out[t, i, j] = pair_t[i, j] + unary_{t+1}[j]
    from types import SimpleNamespace

    from ppl.backends.common.chainstack import ChainLayout, stack_chain

    k, names = 3, [f"x{t}" for t in range(5)]
    chain = SimpleNamespace(vars=names, position={v: t for t, v in enumerate(names)}, plates=(), cardinality=k)
    g = torch.Generator().manual_seed(0)
    pairs = torch.randn(4, k, k, generator=g, dtype=F)         # pairs[t][i, j]: x_t = i, x_{t+1} = j
    unary = torch.randn(4, k, generator=g, dtype=F)            # unary[t]: on x_{t+1}
    stored = torch.stack([pairs[t] if t % 2 == 0 else pairs[t].T for t in range(4)])   # odd steps transposed
    factors = [SimpleNamespace(plates=(), vars=(names[t], names[t + 1]) if t % 2 == 0 else (names[t + 1], names[t]))
               for t in range(4)]
    factors += [SimpleNamespace(plates=(), vars=(names[t + 1],)) for t in range(4)]
    tables = list(stored) + list(unary)
    layout = ChainLayout.of(chain, (), factors)
    rows = [(0, t) for t in range(4)] + [(1, t) for t in range(4)]
    expected = pairs + unary[:, None, :]
    for src in (None, rows):
        got = stack_chain(layout, tables, src, [stored, unary], dtype=F, device=torch.device("cpu"))
        assert torch.allclose(got, expected, rtol=0, atol=1e-15), src is None
