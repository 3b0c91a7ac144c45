"""Unit tests of the contraction engine: ``ppl.ops.contract``, ``ppl.ops.scan`` and
``ppl.ops.semiring``.

References used here: ``naive_contract`` (the whole joint table), and, to not depend on
the engine's own reductions, plain enumeration with ``itertools`` and
``torch.logsumexp`` / ``max`` over the list of joint log values.  Plated factors are
checked against the same factors unrolled by hand into one variable per plate copy;
chains against the same pairwise factors given as ordinary ``LogFactor`` s.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch

from ppl.ops.contract import ChainFactor, LogFactor, contract, naive_contract
from ppl.ops.scan import chain_backtrace, chain_reduce
from ppl.ops.semiring import log_matmul, reduce, safe_logsumexp

try:  # the fast executor (probability domain, rescaled); optional in the engine's API
    from ppl.ops.contract import plan_elimination
    from ppl.ops.scaled import contract_scaled, scaled_gradients, to_scaled
except ImportError:  # pragma: no cover
    contract_scaled = None

needs_scaled = pytest.mark.skipif(contract_scaled is None, reason="no contract_scaled in ppl.ops.contract")

DT = torch.float64
NEG = -math.inf


# =========================================================================== helpers
def _gen(seed):
    return torch.Generator().manual_seed(seed)


def rand_table(g, shape, ninf=0.0, scale=1.5):
    t = scale * torch.randn(tuple(shape), generator=g, dtype=DT)
    if ninf:
        t = t.masked_fill(torch.rand(tuple(shape), generator=g, dtype=DT) < ninf, NEG)
    return t


def random_factor_set(seed, n_vars=6, n_factors=9, max_arity=3, ninf=0.0):
    """A random (usually loopy) set of unplated factors over ``v0..v{n-1}``."""
    g = _gen(seed)
    cards = {f"v{i}": int(torch.randint(2, 4, (), generator=g)) for i in range(n_vars)}
    names = list(cards)
    factors = []
    for i in range(n_vars):  # a unary on every variable, so all are covered
        factors.append(LogFactor(rand_table(g, (cards[names[i]],), ninf), (), (names[i],)))
    for _ in range(n_factors):
        arity = int(torch.randint(2, max_arity + 1, (), generator=g))
        scope = tuple(names[j] for j in torch.randperm(n_vars, generator=g)[:arity].tolist())
        factors.append(LogFactor(rand_table(g, [cards[v] for v in scope], ninf), (), scope))
    factors.append(LogFactor(rand_table(g, ()), (), ()))  # a constant
    return factors, cards


def random_orders(seed, names, n):
    g = _gen(1000 + seed)
    return [[names[i] for i in torch.randperm(len(names), generator=g).tolist()] for _ in range(n)]


def value_of(factors, assignment):
    """Total log value of an unplated assignment (dict var -> int)."""
    total = 0.0
    for f in factors:
        total += float(f.table[tuple(int(assignment[v]) for v in f.vars)])
    return total


def enumerate_values(factors, cards):
    """All (assignment, log value) pairs, by itertools."""
    names = list(cards)
    out = []
    for combo in itertools.product(*(range(cards[n]) for n in names)):
        a = dict(zip(names, combo))
        out.append((a, value_of(factors, a)))
    return out


def brute_total(factors, cards, semiring):
    vals = torch.tensor([v for _, v in enumerate_values(factors, cards)], dtype=DT)
    return float(torch.logsumexp(vals, 0)) if semiring == "sum" else float(vals.max())


def close(a, b, tol=1e-10):
    a = float(a.detach()) if isinstance(a, torch.Tensor) else float(a)
    b = float(b.detach()) if isinstance(b, torch.Tensor) else float(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tol * max(1.0, abs(b))


def unroll(factors, var_plates, plate_sizes):
    """Plated factors (LogFactor / ChainFactor) -> unplated LogFactors over one variable per
    plate copy, named ``v[i,j]`` (indices over the variable's plates, in factor plate order)."""

    def uname(v, pos):
        idx = [str(pos[p]) for p in sorted(var_plates.get(v, ()), key=list(plate_sizes).index)]
        return f"{v}[{','.join(idx)}]"

    out, cards = [], {}
    for f in factors:
        n = len(f.plates)
        for idx in itertools.product(*(range(plate_sizes[p]) for p in f.plates)):
            pos = dict(zip(f.plates, idx))
            t = f.table[idx] if n else f.table
            if isinstance(f, ChainFactor):
                for s in range(t.shape[0]):
                    names = (uname(f.vars[s], pos), uname(f.vars[s + 1], pos))
                    out.append(LogFactor(t[s], (), names))
                    cards.update({nm: t.shape[-1] for nm in names})
            else:
                names = tuple(uname(v, pos) for v in f.vars)
                out.append(LogFactor(t, (), names))
                cards.update({nm: int(k) for nm, k in zip(names, t.shape)})
    return out, cards, uname


def unrolled_assignment(values, sample, var_plates, plate_sizes, plate_order, uname):
    """Backtraced values (var -> (S,) + global plate layout) -> dict unrolled name -> int."""
    out = {}
    for v, val in values.items():
        plates = [p for p in plate_order if p in var_plates.get(v, ())]
        for idx in itertools.product(*(range(plate_sizes[p]) for p in plates)):
            pos = dict(zip(plates, idx))
            gidx = tuple(pos.get(p, 0) for p in plate_order)
            out[uname(v, pos)] = int(val[(sample,) + gidx])
    return out


def chi_square_pvalue(counts, probs, n):
    counts, probs = np.asarray(counts, float), np.asarray(probs, float)
    assert counts[probs == 0].sum() == 0, "a draw of probability zero"
    expected = probs * n
    big = expected >= 5
    small = (~big) & (probs > 0)
    obs_b, exp_b = list(counts[big]), list(expected[big])
    if small.any():
        obs_b.append(counts[small].sum())
        exp_b.append(expected[small].sum())
    assert len(exp_b) >= 3
    exp_b = np.array(exp_b) * n / np.sum(exp_b)
    return scipy.stats.chisquare(np.array(obs_b), exp_b).pvalue


# =========================================================================== semiring.py
class TestSemiring:
    def test_safe_logsumexp_matches_torch(self):
        g = _gen(0)
        x = rand_table(g, (3, 4, 5))
        for dims in [0, 1, 2, (0, 2), (1, 2), (0, 1, 2)]:
            got = safe_logsumexp(x, dims)
            want = torch.logsumexp(x, dim=dims)
            assert torch.allclose(got, want, atol=1e-12, rtol=0), dims

    def test_safe_logsumexp_partial_neg_inf(self):
        g = _gen(1)
        x = rand_table(g, (6, 5), ninf=0.4)
        x[0, 1] = 0.3  # at least one finite entry per row
        x[:, 0] = 0.1
        x = x.requires_grad_()
        got = safe_logsumexp(x, 1)
        want = torch.logsumexp(x.detach(), dim=1)
        assert torch.allclose(got, want, atol=1e-12, rtol=0)
        (grad,) = torch.autograd.grad(got.sum(), x)
        assert torch.isfinite(grad).all()
        assert torch.allclose(grad, torch.softmax(x.detach(), 1), atol=1e-12)
        assert (grad[torch.isinf(x.detach())] == 0).all()

    def test_safe_logsumexp_all_neg_inf_slice(self):
        x = torch.tensor([[NEG, NEG, NEG], [0.0, NEG, 1.0]], dtype=DT, requires_grad=True)
        out = safe_logsumexp(x, 1)
        assert out[0] == NEG
        assert out[1].item() == pytest.approx(math.log(1 + math.e), abs=1e-12)
        (grad,) = torch.autograd.grad(torch.where(torch.isfinite(out), out, 0.0).sum(), x)
        assert torch.isfinite(grad).all()
        assert (grad[0] == 0).all()
        # torch.logsumexp gives NaN gradients here; the safe version must not
        y = x.detach().clone().requires_grad_()
        (g2,) = torch.autograd.grad(safe_logsumexp(y, (0, 1)), y)
        assert torch.isfinite(g2).all() and g2.sum().item() == pytest.approx(1.0)
        z = torch.full((2, 3), NEG, dtype=DT, requires_grad=True)
        out = safe_logsumexp(z, (0, 1))
        assert out.item() == NEG
        (g3,) = torch.autograd.grad(out, z)
        assert torch.equal(g3, torch.zeros_like(g3))

    def test_reduce(self):
        g = _gen(2)
        x = rand_table(g, (3, 4))
        assert torch.allclose(reduce(x, 1, "sum"), torch.logsumexp(x, 1))
        assert torch.equal(reduce(x, (0, 1), "max"), x.max())
        assert torch.equal(reduce(x, (), "sum"), x)
        with pytest.raises(ValueError):
            reduce(x, 0, "product")

    @staticmethod
    def _brute_matmul(a, b, semiring):
        s = a.unsqueeze(-1) + b.unsqueeze(-3)  # (..., I, J, K)
        return torch.logsumexp(s, -2) if semiring == "sum" else s.amax(-2)

    @pytest.mark.parametrize("semiring", ["sum", "max"])
    def test_log_matmul_brute_force(self, semiring):
        g = _gen(3)
        a = rand_table(g, (2, 3, 4, 5), scale=4.0)
        b = rand_table(g, (3, 5, 6), scale=4.0)
        got = log_matmul(a, b, semiring)
        assert got.shape == (2, 3, 4, 6)
        assert torch.allclose(got, self._brute_matmul(a, b, semiring), atol=1e-11, rtol=1e-12)

    @pytest.mark.parametrize("semiring", ["sum", "max"])
    def test_log_matmul_neg_inf(self, semiring):
        g = _gen(4)
        a = rand_table(g, (4, 5), ninf=0.5)
        b = rand_table(g, (5, 3), ninf=0.5)
        a[0] = NEG  # an all -inf row
        b[:, 1] = NEG  # an all -inf column
        a = a.requires_grad_()
        b = b.requires_grad_()
        got = log_matmul(a, b, semiring)
        want = self._brute_matmul(a.detach(), b.detach(), semiring)
        fin = torch.isfinite(want)
        assert torch.equal(torch.isfinite(got), fin)
        assert torch.allclose(got[fin], want[fin], atol=1e-12, rtol=0)
        assert (got[~fin] == NEG).all()
        ga, gb = torch.autograd.grad(got.masked_fill(~fin, 0.0).sum(), (a, b))
        assert torch.isfinite(ga).all() and torch.isfinite(gb).all()
        if semiring == "sum":
            assert (ga[0] == 0).all()
            # d/da of sum_ik log sum_j exp(a_ij + b_jk): sum over finite k of the posterior of j
            s = a.detach().unsqueeze(-1) + b.detach().unsqueeze(-3)  # (I, J, K)
            post = torch.exp(s - want.masked_fill(~fin, 0.0).unsqueeze(-2))
            post = post.masked_fill(~fin.unsqueeze(-2), 0.0)
            assert torch.allclose(ga, post.sum(-1), atol=1e-12)
            assert torch.allclose(gb, post.sum(-3), atol=1e-12)

    def test_log_matmul_large_dynamic_range(self):
        """Row and column shifts at different j underflow; those entries are recomputed exactly."""
        a = torch.tensor([[0.0, -800.0]], dtype=DT)
        b = torch.tensor([[-800.0], [0.0]], dtype=DT)
        got = log_matmul(a, b, "sum")
        assert got.item() == pytest.approx(-800 + math.log(2), abs=1e-9)


# =========================================================================== contract: unplated
@pytest.mark.parametrize("semiring", ["sum", "max"])
@pytest.mark.parametrize("seed", range(6))
def test_contract_matches_naive(seed, semiring):
    factors, cards = random_factor_set(seed)
    want = naive_contract(factors, cards, semiring)
    assert close(want, brute_total(factors, cards, semiring))
    for order in random_orders(seed, list(cards), 3):
        got, tape = contract(factors, order=order, var_plates={}, semiring=semiring)
        assert tape is None
        assert got.dim() == 0
        assert close(got, want), (order, float(got), float(want))


@pytest.mark.parametrize("semiring", ["sum", "max"])
@pytest.mark.parametrize("seed", range(4))
def test_contract_with_neg_inf(seed, semiring):
    for attempt in range(20):
        factors, cards = random_factor_set(100 * seed + attempt, n_factors=7, ninf=0.3)
        want = brute_total(factors, cards, semiring)
        if math.isfinite(want):
            break
    assert math.isfinite(want)
    assert close(naive_contract(factors, cards, semiring), want)
    for order in random_orders(seed, list(cards), 3):
        got, _ = contract(factors, order=order, var_plates={}, semiring=semiring)
        assert close(got, want), (order, float(got), want)


@pytest.mark.parametrize("seed", range(4))
def test_contract_gradients_are_marginals(seed):
    """d log Z / d log f(x_f) = p(x_f): finite, 0 at -inf entries, sums to 1 per factor,
    equal to the marginals by enumeration."""
    for attempt in range(20):
        factors, cards = random_factor_set(200 * seed + attempt, n_factors=6, ninf=0.3)
        if math.isfinite(brute_total(factors, cards, "sum")):
            break
    leaves = [f.table.clone().requires_grad_() for f in factors]
    fs = [LogFactor(t, (), f.vars) for t, f in zip(leaves, factors)]
    order = random_orders(seed, list(cards), 1)[0]
    total, _ = contract(fs, order=order, var_plates={}, semiring="sum")
    grads = torch.autograd.grad(total, leaves)
    joint = enumerate_values(factors, cards)
    log_z = torch.logsumexp(torch.tensor([v for _, v in joint], dtype=DT), 0).item()
    for f, gr in zip(factors, grads):
        assert torch.isfinite(gr).all()
        assert gr.sum().item() == pytest.approx(1.0, abs=1e-10)
        assert (gr[torch.isinf(f.table)] == 0).all()
        marg = torch.zeros_like(f.table)
        for a, v in joint:
            if math.isfinite(v):
                marg[tuple(a[u] for u in f.vars)] += math.exp(v - log_z)
        assert torch.allclose(gr, marg, atol=1e-10)


@pytest.mark.parametrize("semiring", ["sum", "max"])
def test_contract_all_impossible(semiring):
    """Every configuration has weight 0: the total is -inf, gradients finite (zero)."""
    g = _gen(7)
    a = rand_table(g, (2, 3))
    a[0, :] = NEG
    b = rand_table(g, (2,))
    b[1] = NEG
    ta, tb = a.requires_grad_(), b.requires_grad_()
    fs = [LogFactor(ta, (), ("x", "y")), LogFactor(tb, (), ("x",))]
    cards = {"x": 2, "y": 3}
    assert naive_contract(fs, cards, semiring).item() == NEG
    total, _ = contract(fs, order=["y", "x"], var_plates={}, semiring=semiring)
    assert total.item() == NEG
    if semiring == "sum":
        ga, gb = torch.autograd.grad(total, (ta, tb))
        assert torch.isfinite(ga).all() and torch.isfinite(gb).all()


def test_missing_variable_raises():
    fs = [LogFactor(torch.zeros(2, 3, dtype=DT), (), ("x", "y"))]
    with pytest.raises(ValueError, match="y"):
        contract(fs, order=["x"], var_plates={})


def test_only_constants():
    fs = [LogFactor(torch.tensor(1.5, dtype=DT), (), ()), LogFactor(torch.tensor(-0.25, dtype=DT), (), ())]
    for semiring in ["sum", "max"]:
        got, _ = contract(fs, order=[], var_plates={}, semiring=semiring)
        assert got.item() == pytest.approx(1.25)


# =========================================================================== backtrace (unplated)
@pytest.mark.parametrize("seed", range(5))
def test_backtrace_max_is_argmax(seed):
    for attempt in range(20):
        factors, cards = random_factor_set(300 + 20 * seed + attempt, ninf=0.2 if seed % 2 else 0.0)
        want = brute_total(factors, cards, "max")
        if math.isfinite(want):
            break
    assert math.isfinite(want)
    for order in random_orders(seed, list(cards), 3):
        best, tape = contract(factors, order=order, var_plates={}, semiring="max", tape=True)
        assert close(best, want)
        values = tape.backtrace(1)
        assert set(values) == set(cards)
        assignment = {v: int(values[v].reshape(-1)[0]) for v in cards}
        assert all(0 <= assignment[v] < cards[v] for v in cards)
        assert close(value_of(factors, assignment), want), (order, assignment)


def test_backtrace_sample_frequencies():
    """Tiny loopy model with impossible configurations: 20000 joint draws vs enumeration."""
    factors, cards = None, None
    for attempt in range(50):
        factors, cards = random_factor_set(400 + attempt, n_vars=4, n_factors=4, ninf=0.15)
        if math.isfinite(brute_total(factors, cards, "sum")):
            break
    joint = enumerate_values(factors, cards)
    vals = torch.tensor([v for _, v in joint], dtype=DT)
    probs = torch.exp(vals - torch.logsumexp(vals, 0)).numpy()
    names = list(cards)
    index = {tuple(a[n] for n in names): i for i, (a, _) in enumerate(joint)}
    n = 20_000
    for order in random_orders(5, names, 2):
        _, tape = contract(factors, order=order, var_plates={}, semiring="sum", tape=True)
        values = tape.backtrace(n, generator=_gen(11))
        for v in names:
            assert values[v].shape == (n,)
        counts = np.zeros(len(joint))
        stacked = torch.stack([values[v] for v in names], 1).tolist()
        for row in stacked:
            counts[index[tuple(row)]] += 1
        assert chi_square_pvalue(counts, probs, n) > 1e-4


# =========================================================================== plates
PLATE_ORDER = ("p", "q", "r")
PLATE_SIZES = {"p": 3, "q": 2, "r": 2}
VAR_PLATES = {
    "a": frozenset(),
    "e": frozenset(),
    "b": frozenset({"p"}),
    "c": frozenset({"p", "q"}),
    "d": frozenset({"r"}),
}


def plated_factors(seed, ninf=0.0, sizes=PLATE_SIZES, cards=None):
    """Global a, e; b in plate p; c in nested plates (p, q); d in sibling plate r.
    Scopes: (a) (a,e) | p: (a,b) (b) () (e) | p,q: (b,c) (a,c) (c) | r: (a,d) (e,d)."""
    g = _gen(seed)
    k = cards or {"a": 2, "e": 2, "b": 3, "c": 2, "d": 3}
    P, Q, R = sizes["p"], sizes["q"], sizes["r"]
    spec = [
        ((), ("a",)),
        ((), ("a", "e")),
        (("p",), ("a", "b")),
        (("p",), ("b",)),
        (("p",), ()),
        (("p",), ("e",)),
        (("p", "q"), ("b", "c")),
        (("p", "q"), ("a", "c")),
        (("p", "q"), ("c",)),
        (("r",), ("a", "d")),
        (("r",), ("e", "d")),
    ]
    size = {"p": P, "q": Q, "r": R}
    out = []
    for plates, vars_ in spec:
        shape = [size[p] for p in plates] + [k[v] for v in vars_]
        out.append(LogFactor(rand_table(g, shape, ninf), plates, vars_))
    return out


@pytest.mark.parametrize("semiring", ["sum", "max"])
@pytest.mark.parametrize("seed", range(3))
def test_plated_vs_unrolled(seed, semiring):
    factors = plated_factors(seed, ninf=0.1 if seed == 2 else 0.0)
    flat, cards, _ = unroll(factors, VAR_PLATES, PLATE_SIZES)
    assert len(cards) == 2 + 3 + 6 + 2
    want = naive_contract(flat, cards, semiring)
    for order in random_orders(seed, list(VAR_PLATES), 3):
        got, _ = contract(factors, order=order, var_plates=VAR_PLATES, plate_order=PLATE_ORDER, semiring=semiring)
        assert close(got, want), (order, float(got), float(want))


def test_plated_gradients():
    """Per plate copy, the gradient of log Z w.r.t. a plated table is a distribution."""
    factors = plated_factors(5, ninf=0.1)
    leaves = [f.table.clone().requires_grad_() for f in factors]
    fs = [LogFactor(t, f.plates, f.vars) for t, f in zip(leaves, factors)]
    total, _ = contract(fs, order=["c", "b", "d", "a", "e"], var_plates=VAR_PLATES, plate_order=PLATE_ORDER)
    assert torch.isfinite(total)
    grads = torch.autograd.grad(total, leaves)
    for f, gr in zip(factors, grads):
        assert torch.isfinite(gr).all(), f.vars
        n = len(f.plates)
        per_copy = gr.sum(dim=tuple(range(n, gr.dim()))) if gr.dim() > n else gr
        assert torch.allclose(per_copy, torch.ones_like(per_copy), atol=1e-10), (f.plates, f.vars)
        assert (gr[torch.isinf(f.table)] == 0).all()


@pytest.mark.parametrize("seed", range(3))
def test_plated_backtrace_max(seed):
    factors = plated_factors(10 + seed)
    flat, cards, uname = unroll(factors, VAR_PLATES, PLATE_SIZES)
    want = naive_contract(flat, cards, "max")
    best, tape = contract(factors, order=["c", "b", "d", "e", "a"], var_plates=VAR_PLATES,
                          plate_order=PLATE_ORDER, semiring="max", tape=True)
    assert close(best, want)
    values = tape.backtrace(1)
    for v, plates in VAR_PLATES.items():
        layout = tuple(PLATE_SIZES[p] if p in plates else 1 for p in PLATE_ORDER)
        assert tuple(values[v].shape) == (1,) + layout, (v, tuple(values[v].shape))
    assignment = unrolled_assignment(values, 0, VAR_PLATES, PLATE_SIZES, PLATE_ORDER, uname)
    assert set(assignment) == set(cards)
    assert close(value_of(flat, assignment), want)


def test_plated_backtrace_sample_frequencies():
    sizes = {"p": 2, "q": 2, "r": 1}
    cards = {"a": 2, "e": 2, "b": 2, "c": 2, "d": 2}
    factors = plated_factors(21, sizes=sizes, cards=cards)
    flat, ucards, uname = unroll(factors, VAR_PLATES, sizes)
    joint = enumerate_values(flat, ucards)
    assert len(joint) == 2 * 2 * 4 * 16 * 2
    vals = torch.tensor([v for _, v in joint], dtype=DT)
    probs = torch.exp(vals - torch.logsumexp(vals, 0)).numpy()
    names = list(ucards)
    index = {tuple(a[m] for m in names): i for i, (a, _) in enumerate(joint)}
    n = 20_000
    _, tape = contract(factors, order=["b", "c", "a", "d", "e"], var_plates=VAR_PLATES, plate_order=PLATE_ORDER,
                       semiring="sum", tape=True)
    values = tape.backtrace(n, generator=_gen(3))
    counts = np.zeros(len(joint))
    for s in range(n):
        a = unrolled_assignment(values, s, VAR_PLATES, sizes, PLATE_ORDER, uname)
        counts[index[tuple(a[m] for m in names)]] += 1
    assert chi_square_pvalue(counts, probs, n) > 1e-4


def test_intractable_plates_raise():
    """A factor coupling variables of two sibling plates cannot be eliminated plate-wise."""
    fs = [
        LogFactor(torch.zeros(2, 3, 2, 2, dtype=DT), ("p", "r"), ("x", "y")),
    ]
    with pytest.raises(ValueError):
        contract(fs, order=["x", "y"], var_plates={"x": frozenset({"p"}), "y": frozenset({"r"})},
                 plate_order=("p", "r"))


# =========================================================================== chains
def chain_problem(seed, length, k=3, plates=(), ninf=0.0, loop=True):
    """ChainFactor x0..xL plus unaries on the ends and (``loop``) a factor (x0, xL); with
    ``plates=("p",)`` also a global g coupled to x0."""
    g = _gen(seed)
    batch = (2,) * len(plates)
    names = tuple(f"x{t}" for t in range(length + 1))
    table = rand_table(g, batch + (length, k, k), ninf)
    chain = ChainFactor(table, plates, names)
    others = [
        LogFactor(rand_table(g, batch + (k,)), plates, (names[0],)),
        LogFactor(rand_table(g, batch + (k,)), plates, (names[-1],)),
    ]
    if loop:
        others.append(LogFactor(rand_table(g, batch + (k, k)), plates, (names[0], names[-1])))
    var_plates = {v: frozenset(plates) for v in names}
    if plates:
        others.append(LogFactor(rand_table(g, (3,)), (), ("g",)))
        others.append(LogFactor(rand_table(g, batch + (3, k)), plates, ("g", names[0])))
        var_plates["g"] = frozenset()
    pairwise = [LogFactor(table[..., t, :, :], plates, (names[t], names[t + 1])) for t in range(length)]
    return chain, others, pairwise, var_plates


def chain_order(chain, var_plates):
    ends = [chain.vars[0], chain.vars[-1]]
    return ends + (["g"] if "g" in var_plates else [])


@pytest.mark.parametrize("semiring", ["sum", "max"])
@pytest.mark.parametrize("length", [1, 2, 7, 64])
@pytest.mark.parametrize("plated", [False, True])
def test_chain_vs_pairwise(length, semiring, plated):
    plates = ("p",) if plated else ()
    chain, others, pairwise, var_plates = chain_problem(length, length, plates=plates)
    got, _ = contract([chain] + others, order=chain_order(chain, var_plates), var_plates=var_plates,
                      plate_order=plates, semiring=semiring)
    # reference 1: the same pairwise factors as LogFactors, eliminated along the chain
    seq = list(chain.vars[1:-1]) + chain_order(chain, var_plates)
    ref, _ = contract(pairwise + others, order=seq, var_plates=var_plates, plate_order=plates, semiring=semiring)
    assert close(got, ref), (float(got), float(ref))
    # reference 2: the whole joint, for short chains
    if length <= 7 and not (plated and length == 7):
        flat, cards, _ = unroll(pairwise + others, var_plates, {"p": 2})
        assert close(got, naive_contract(flat, cards, semiring))


@pytest.mark.parametrize("semiring", ["sum", "max"])
@pytest.mark.parametrize("length", [2, 7, 64])
def test_chain_with_neg_inf(length, semiring):
    for attempt in range(30):
        chain, others, pairwise, var_plates = chain_problem(50 + attempt, length, ninf=0.3)
        seq = list(chain.vars[1:-1]) + chain_order(chain, var_plates)
        ref, _ = contract(pairwise + others, order=seq, var_plates=var_plates, semiring=semiring)
        if torch.isfinite(ref):
            break
    assert torch.isfinite(ref)
    got, _ = contract([chain] + others, order=chain_order(chain, var_plates), var_plates=var_plates,
                      semiring=semiring)
    assert close(got, ref)
    if semiring == "sum":
        leaf = chain.table.clone().requires_grad_()
        total, _ = contract([ChainFactor(leaf, (), chain.vars)] + others, order=chain_order(chain, var_plates),
                            var_plates=var_plates)
        (gr,) = torch.autograd.grad(total, leaf)
        assert torch.isfinite(gr).all()
        # each link's gradient is the pairwise marginal of (x_t, x_t+1)
        assert torch.allclose(gr.sum((-1, -2)), torch.ones(length, dtype=DT), atol=1e-10)
        assert (gr[torch.isinf(chain.table)] == 0).all()


@pytest.mark.parametrize("length", [1, 2, 7, 64])
@pytest.mark.parametrize("plated", [False, True])
def test_chain_backtrace_max(length, plated):
    plates = ("p",) if plated else ()
    chain, others, pairwise, var_plates = chain_problem(70 + length, length, plates=plates)
    best, tape = contract([chain] + others, order=chain_order(chain, var_plates), var_plates=var_plates,
                          plate_order=plates, semiring="max", tape=True)
    values = tape.backtrace(1)
    assert set(chain.vars) <= set(values)
    sizes = {"p": 2}
    flat, cards, uname = unroll(pairwise + others, var_plates, sizes)
    assignment = unrolled_assignment(values, 0, var_plates, sizes, plates, uname)
    assert close(value_of(flat, assignment), best), (value_of(flat, assignment), float(best))


@pytest.mark.parametrize("plated", [False, True])
def test_chain_backtrace_sample_frequencies(plated):
    plates = ("p",) if plated else ()
    length = 5 if not plated else 3
    for attempt in range(30):
        chain, others, pairwise, var_plates = chain_problem(90 + attempt, length, k=2, plates=plates, ninf=0.15)
        sizes = {"p": 2}
        flat, cards, uname = unroll(pairwise + others, var_plates, sizes)
        joint = enumerate_values(flat, cards)
        vals = torch.tensor([v for _, v in joint], dtype=DT)
        if torch.isfinite(torch.logsumexp(vals, 0)):
            break
    probs = torch.exp(vals - torch.logsumexp(vals, 0)).numpy()
    names = list(cards)
    index = {tuple(a[m] for m in names): i for i, (a, _) in enumerate(joint)}
    n = 20_000
    _, tape = contract([chain] + others, order=chain_order(chain, var_plates), var_plates=var_plates,
                       plate_order=plates, semiring="sum", tape=True)
    values = tape.backtrace(n, generator=_gen(5))
    counts = np.zeros(len(joint))
    for s in range(n):
        a = unrolled_assignment(values, s, var_plates, sizes, plates, uname)
        counts[index[tuple(a[m] for m in names)]] += 1
    assert chi_square_pvalue(counts, probs, n) > 1e-4


@pytest.mark.parametrize("length", [1, 3, 8, 13])
def test_scan_chain_reduce_and_viterbi(length):
    """chain_reduce against a sequential semiring product; chain_backtrace (argmax) against
    a sequential Viterbi given the ends."""
    g = _gen(length)
    m = rand_table(g, (2, length, 3, 3), ninf=0.1)
    for semiring in ["sum", "max"]:
        end, levels = chain_reduce(m, semiring, keep_levels=True)
        ref = m[:, 0]
        for t in range(1, length):
            ref = TestSemiring._brute_matmul(ref, m[:, t], semiring)
        fin = torch.isfinite(ref)
        assert torch.equal(torch.isfinite(end), fin)
        assert torch.allclose(end[fin], ref[fin], atol=1e-10)
        assert len(levels) == math.ceil(math.log2(length)) if length > 1 else levels == []
    end, levels = chain_reduce(m, "max", keep_levels=True)
    for first in range(3):
        for last in range(3):
            if not torch.isfinite(end[:, first, last]).all():
                continue
            f = torch.full((1, 2), first)
            l_ = torch.full((1, 2), last)
            path = chain_backtrace(levels, f, l_, "argmax")
            assert path.shape == (1, 2, length + 1)
            for b in range(2):
                p = path[0, b].tolist()
                assert p[0] == first and p[-1] == last
                score = sum(float(m[b, t, p[t], p[t + 1]]) for t in range(length))
                assert close(score, end[b, first, last])


# =========================================================================== scaled executor
def _scaled_inputs(factors):
    return [f if isinstance(f, ChainFactor) else to_scaled(f.table, len(f.plates)) for f in factors]


def _cards(factors):
    cards = {}
    for f in factors:
        if isinstance(f, ChainFactor):
            cards.update({v: int(f.table.shape[-1]) for v in f.vars})
        else:
            cards.update(zip(f.vars, (int(k) for k in f.table.shape[len(f.plates):])))
    return cards


def _plan(factors, order, var_plates, plate_order=()):
    return plan_elimination([(f.vars, f.plates, isinstance(f, ChainFactor)) for f in factors], order, var_plates,
                            plate_order, cards=_cards(factors))


@needs_scaled
@pytest.mark.parametrize("seed", range(4))
def test_scaled_matches_naive(seed):
    factors, cards = random_factor_set(500 + seed, ninf=0.2 if seed % 2 else 0.0)
    want = naive_contract(factors, cards, "sum")
    for order in random_orders(seed, list(cards), 2):
        got = contract_scaled(_plan(factors, order, {}), _scaled_inputs(factors))
        assert close(got, want), (float(got), float(want))


@needs_scaled
@pytest.mark.parametrize("seed", range(2))
def test_scaled_plated_and_chain(seed):
    factors = plated_factors(600 + seed, ninf=0.1)
    flat, cards, _ = unroll(factors, VAR_PLATES, PLATE_SIZES)
    want = naive_contract(flat, cards, "sum")
    got = contract_scaled(_plan(factors, ["c", "b", "d", "a", "e"], VAR_PLATES, PLATE_ORDER), _scaled_inputs(factors))
    assert close(got, want)
    chain, others, pairwise, var_plates = chain_problem(610 + seed, 9, plates=("p",))
    order = chain_order(chain, var_plates)
    ref, _ = contract([chain] + others, order=order, var_plates=var_plates, plate_order=("p",))
    got = contract_scaled(_plan([chain] + others, order, var_plates, ("p",)), _scaled_inputs([chain] + others))
    assert close(got, ref)


@needs_scaled
def test_scaled_gradients_are_marginals():
    """Through to_scaled, d log Z / d log table equals the log-domain executor's gradient."""
    order = ["c", "b", "d", "a", "e"]
    for seed in range(700, 750):
        factors = plated_factors(seed, ninf=0.1)
        if torch.isfinite(contract(factors, order=order, var_plates=VAR_PLATES, plate_order=PLATE_ORDER)[0]):
            break
    assert any(torch.isinf(f.table).any() for f in factors)
    leaves = [f.table.clone().requires_grad_() for f in factors]
    fs = [LogFactor(t, f.plates, f.vars) for t, f in zip(leaves, factors)]
    total = contract_scaled(_plan(fs, order, VAR_PLATES, PLATE_ORDER), _scaled_inputs(fs))
    grads = torch.autograd.grad(total, leaves)
    leaves2 = [f.table.clone().requires_grad_() for f in factors]
    fs2 = [LogFactor(t, f.plates, f.vars) for t, f in zip(leaves2, factors)]
    ref, _ = contract(fs2, order=order, var_plates=VAR_PLATES, plate_order=PLATE_ORDER)
    ref_grads = torch.autograd.grad(ref, leaves2)
    assert close(total, ref)
    for gr, rg in zip(grads, ref_grads):
        assert torch.isfinite(gr).all()
        assert torch.allclose(gr, rg, atol=1e-10)


@needs_scaled
def test_scaled_all_impossible():
    a = torch.tensor([[NEG, NEG], [NEG, NEG]], dtype=DT)
    fs = [LogFactor(a, (), ("x", "y")), LogFactor(torch.zeros(2, dtype=DT), (), ("x",))]
    got = contract_scaled(_plan(fs, ["x", "y"], {}), _scaled_inputs(fs))
    assert got.item() == NEG


@needs_scaled
def test_scaled_large_dynamic_range():
    """contract_scaled rescales each input to max 1 on its own, so factors whose maxima sit
    800 nats apart underflow to an all-zero product.  Its contract: it then returns -inf,
    never a wrong finite value, and DiscretePlan reruns the log-domain executor (tested
    through ppl.infer in test_exact_oracle.test_conflicting_plates_dynamic_range)."""
    fs = [
        LogFactor(torch.tensor([0.0, -800.0], dtype=DT), (), ("c",)),
        LogFactor(torch.tensor([-800.0, 0.0], dtype=DT), (), ("c",)),
    ]
    ref, _ = contract(fs, order=["c"], var_plates={})
    assert ref.item() == pytest.approx(-800 + math.log(2), abs=1e-9)
    got = contract_scaled(_plan(fs, ["c"], {}), _scaled_inputs(fs))
    assert got.item() == -math.inf


def test_log_domain_contract_large_dynamic_range():
    """The log-domain executor (bucket broadcast + logsumexp) has no such underflow."""
    fs = [
        LogFactor(torch.tensor([0.0, -800.0], dtype=DT), (), ("c",)),
        LogFactor(torch.tensor([-800.0, 0.0], dtype=DT), (), ("c",)),
    ]
    ref, _ = contract(fs, order=["c"], var_plates={})
    assert ref.item() == pytest.approx(-800 + math.log(2), abs=1e-9)


def _sweep_vs_autograd(factors, order, var_plates, plate_order=()):
    """scaled_gradients' reverse sweep against autograd through contract_scaled."""
    plan = _plan(factors, order, var_plates, plate_order)
    inputs = []
    leaves = []
    for f in factors:
        if isinstance(f, ChainFactor):
            t = f.table.clone().requires_grad_()
            inputs.append(ChainFactor(t, f.plates, f.vars))
        else:
            p, s = to_scaled(f.table, len(f.plates))
            t = p.clone().requires_grad_()
            inputs.append((t, s))
        leaves.append(t)
    want_z = contract_scaled(plan, inputs)
    if not torch.isfinite(want_z):  # no configuration has weight: no gradients to compare
        got_z, got = scaled_gradients(plan, [(x[0].detach(), x[1]) if isinstance(x, tuple) else x for x in inputs])
        assert got_z.item() == -math.inf and all(g is None for g in got)
        return
    want = torch.autograd.grad(want_z, leaves, allow_unused=True)
    detached = [ChainFactor(x.table.detach().requires_grad_(), x.plates, x.vars) if isinstance(x, ChainFactor)
                else (x[0].detach(), x[1]) for x in inputs]
    got_z, got = scaled_gradients(plan, detached)
    assert close(got_z, want_z)
    for g, w in zip(got, want):
        w = torch.zeros_like(g) if w is None else w
        assert torch.allclose(g, w, atol=1e-10, rtol=1e-9)


@needs_scaled
@pytest.mark.parametrize("seed", range(6))
def test_scaled_gradients_sweep_equals_autograd(seed):
    factors, cards = random_factor_set(800 + seed, ninf=0.2 if seed % 2 else 0.0)
    _sweep_vs_autograd(factors, random_orders(seed, list(cards), 1)[0], {})
    plated = plated_factors(820 + seed, ninf=0.1 if seed % 2 else 0.0)
    _sweep_vs_autograd(plated, ["c", "b", "d", "a", "e"], VAR_PLATES, PLATE_ORDER)
    chain, others, _, var_plates = chain_problem(840 + seed, 9, plates=("p",))
    _sweep_vs_autograd([chain] + others, chain_order(chain, var_plates), var_plates, ("p",))
