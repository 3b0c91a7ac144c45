"""Small random discrete models, written as plain Pyro model functions.

Every generator takes a ``seed`` (plus size options) and returns ``(model_fn, data)``:
``model_fn`` is an ordinary Pyro function (no ``ppl`` import here), ``data`` a dict whose
keys are either parameters of ``model_fn`` (passed as arguments) or names of sample
sites (observed).  Probability tables are float64, drawn from a seeded
``torch.Generator``; CPT lookups use :class:`pyro.ops.indexing.Vindex` so that parent
values carrying extra (enumeration) dims broadcast.  Observed values are drawn by
ancestral sampling from the model itself, so the evidence always has positive
probability, also in the models whose tables hold exact zeros.

Each ``model_fn`` carries the tables it was built from as ``model_fn.tables`` (a dict),
for references that do not run the model (the numpy forward-backward of the chain test).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

__all__ = [
    "random_probs",
    "chain_model",
    "tree_model",
    "dag_model",
    "mixture_model",
    "global_local_model",
    "nested_plates_model",
    "bernoulli_model",
    "zeros_dag_model",
    "zeros_chain_model",
    "FAMILIES",
]

DTYPE = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _randint(g, low, high) -> int:
    """Uniform integer in ``[low, high)``."""
    return int(torch.randint(low, high, (), generator=g))


def random_probs(g: torch.Generator, shape, alpha: float = 1.0, zeros: float = 0.0) -> torch.Tensor:
    """Rows (last dim) drawn from a symmetric Dirichlet(``alpha``), ``alpha`` in {0.5, 1}.

    Dirichlet(1) is normalised Exp(1) draws; Dirichlet(1/2) normalised ``Z**2/2`` with
    ``Z ~ N(0, 1)`` (Gamma(1/2) draws).  With ``zeros > 0`` each entry is set to exactly
    zero with that probability, keeping at least one positive entry per row.
    """
    shape = tuple(shape)
    if alpha == 1.0:
        u = torch.rand(shape, generator=g, dtype=DTYPE).clamp_min(1e-300)
        w = -torch.log(u)
    elif alpha == 0.5:
        w = 0.5 * torch.randn(shape, generator=g, dtype=DTYPE) ** 2
    else:
        raise ValueError("alpha must be 0.5 or 1")
    w = w + 1e-12  # never an accidental zero
    if zeros > 0:
        drop = torch.rand(shape, generator=g, dtype=DTYPE) < zeros
        keep = torch.rand(shape, generator=g, dtype=DTYPE).argmax(-1, keepdim=True)
        drop.scatter_(-1, keep, False)
        w = w.masked_fill(drop, 0.0)
    return w / w.sum(-1, keepdim=True)


def _draw(g, probs: torch.Tensor) -> torch.Tensor:
    """One categorical draw per row of ``probs`` (shape ``batch + (K,)``) -> long ``batch``."""
    flat = probs.reshape(-1, probs.shape[-1])
    out = torch.multinomial(flat, 1, generator=g).reshape(probs.shape[:-1])
    return out


def _bern(g, p: torch.Tensor) -> torch.Tensor:
    return (torch.rand(p.shape, generator=g, dtype=DTYPE) < p).to(DTYPE)


# --------------------------------------------------------------------------- chain
def chain_model(seed: int, T: int = 6, K: int = 3, V: int = 3, zeros: float = 0.0, left_to_right: bool = False):
    """HMM: ``x_t ~ Cat(trans[x_{t-1}])`` (``x_0 ~ Cat(init)``), ``y_t ~ Cat(emit[x_t])`` observed.

    Latent sites ``x_0 .. x_{T-1}`` (scalars, ``K`` states), observed ``y_t`` through the
    argument ``ys`` (long, shape ``(T,)``), inside a ``pyro.markov`` loop.
    ``left_to_right`` makes ``trans`` upper triangular (exact zeros below the diagonal).
    """
    g = _gen(seed)
    init = random_probs(g, (K,), zeros=zeros)
    trans = random_probs(g, (K, K), zeros=zeros)
    if left_to_right:
        trans = torch.triu(trans) + 1e-3 * torch.eye(K, dtype=DTYPE)
        trans = trans / trans.sum(-1, keepdim=True)
    emit = random_probs(g, (K, V), alpha=0.5, zeros=zeros)
    xs, ys = [], []
    x = _draw(g, init)
    for t in range(T):
        if t:
            x = _draw(g, trans[x])
        xs.append(x)
        ys.append(_draw(g, emit[x]))
    ys = torch.stack(ys)

    if zeros > 0:
        # torch's Categorical(probs=...) clamps zero probabilities to eps (log_prob
        # about -36, not -inf); logits=log(probs) keeps the zeros exact.
        linit, ltrans, lemit = init.log(), trans.log(), emit.log()

        def chain(ys):
            x = None
            for t in pyro.markov(range(len(ys))):
                logits = linit if t == 0 else Vindex(ltrans)[x]
                x = pyro.sample(f"x_{t}", dist.Categorical(logits=logits))
                pyro.sample(f"y_{t}", dist.Categorical(logits=Vindex(lemit)[x]), obs=ys[t])

    else:

        def chain(ys):
            x = None
            for t in pyro.markov(range(len(ys))):
                probs = init if t == 0 else Vindex(trans)[x]
                x = pyro.sample(f"x_{t}", dist.Categorical(probs))
                pyro.sample(f"y_{t}", dist.Categorical(Vindex(emit)[x]), obs=ys[t])

    chain.tables = {"init": init, "trans": trans, "emit": emit}
    return chain, {"ys": ys}


def zeros_chain_model(seed: int, T: int = 6, K: int = 3, V: int = 3):
    """A left-to-right HMM whose tables hold exact zeros (see :func:`chain_model`)."""
    return chain_model(seed, T=T, K=K, V=V, zeros=0.35, left_to_right=True)


# --------------------------------------------------------------------------- trees / DAGs
def _network(seed, parents, cards, n_obs, zeros=0.0, obs_pool=None):
    """A Bayesian network over sites ``n0 .. n{n-1}`` in topological order; ``n_obs`` of
    them (drawn from ``obs_pool``) observed by site name with ancestrally drawn values."""
    g = _gen(seed)
    n = len(parents)
    cpts = [
        random_probs(g, tuple(cards[p] for p in parents[i]) + (cards[i],), alpha=0.5 if i % 2 else 1.0, zeros=zeros)
        for i in range(n)
    ]
    values = []
    for i in range(n):
        probs = cpts[i][tuple(values[p] for p in parents[i])] if parents[i] else cpts[i]
        values.append(_draw(g, probs))
    pool = list(range(n)) if obs_pool is None else list(obs_pool)
    perm = torch.randperm(len(pool), generator=g).tolist()
    observed = sorted(pool[j] for j in perm[:n_obs])

    def network():
        vals = []
        for i in range(n):
            probs = Vindex(cpts[i])[tuple(vals[p] for p in parents[i])] if parents[i] else cpts[i]
            vals.append(pyro.sample(f"n{i}", dist.Categorical(probs)))

    network.tables = {"cpts": cpts, "parents": parents, "cards": cards}
    return network, {f"n{i}": values[i] for i in observed}


def tree_model(seed: int, n: int = 7, n_obs: int = 2, max_card: int = 3):
    """A random tree: node ``i > 0`` has one parent drawn uniformly from ``0 .. i-1``."""
    g = _gen(10_000 + seed)
    parents = [()] + [(_randint(g, 0, i),) for i in range(1, n)]
    cards = [_randint(g, 2, max_card + 1) for _ in range(n)]
    return _network(seed, parents, cards, n_obs)


def dag_model(seed: int, n: int = 7, n_obs: int = 2, max_parents: int = 3, max_card: int = 3):
    """A random loopy DAG: ``n1 <- n0``, ``n2 <- {n0, n1}`` (a loop for sure), every later
    node gets 1..``max_parents`` parents drawn from the earlier nodes."""
    g = _gen(20_000 + seed)
    parents = [(), (0,), (0, 1)]
    for i in range(3, n):
        m = _randint(g, 1, min(max_parents, i) + 1)
        parents.append(tuple(sorted(torch.randperm(i, generator=g)[:m].tolist())))
    cards = [_randint(g, 2, max_card + 1) for _ in range(n)]
    return _network(seed, parents, cards, n_obs)


def zeros_dag_model(seed: int, N: int = 2):
    """Exact zeros and a deterministic node, with a plate.

    ``a`` (3 states), ``b | a`` (3, sparse CPT), ``c = (a + b) mod 3`` (a 0/1 CPT),
    ``d | c`` (sparse, observed), ``e | b, d`` (sparse, observed); in ``plate("p", N)``:
    ``z | a`` (sparse, latent) and ``obs | z`` (sparse, observed, argument ``x``).  Many
    joint configurations have probability exactly zero (log density ``-inf``).
    """
    g = _gen(30_000 + seed)
    pa = random_probs(g, (3,), zeros=0.3)
    pb = random_probs(g, (3, 3), zeros=0.5)
    pc = torch.zeros(3, 3, 3, dtype=DTYPE)
    for i in range(3):
        for j in range(3):
            pc[i, j, (i + j) % 3] = 1.0
    pd = random_probs(g, (3, 2), zeros=0.4)
    pe = random_probs(g, (3, 2, 3), zeros=0.5)
    pz = random_probs(g, (3, 3), zeros=0.5)
    po = random_probs(g, (3, 4), zeros=0.5)
    a = _draw(g, pa)
    b = _draw(g, pb[a])
    c = _draw(g, pc[a, b])
    d = _draw(g, pd[c])
    e = _draw(g, pe[b, d])
    z = _draw(g, pz[a].expand(N, 3))
    x = _draw(g, po[z])

    # logits=log(probs): exact -inf log densities (Categorical(probs=...) would clamp
    # zeros to eps)
    la, lb, lc, ld, le, lz, lo = (t.log() for t in (pa, pb, pc, pd, pe, pz, po))

    def zeros_dag(x):
        a = pyro.sample("a", dist.Categorical(logits=la))
        b = pyro.sample("b", dist.Categorical(logits=Vindex(lb)[a]))
        c = pyro.sample("c", dist.Categorical(logits=Vindex(lc)[a, b]))
        d = pyro.sample("d", dist.Categorical(logits=Vindex(ld)[c]))
        pyro.sample("e", dist.Categorical(logits=Vindex(le)[b, d]))
        with pyro.plate("p", len(x)):
            z = pyro.sample("z", dist.Categorical(logits=Vindex(lz)[a]))
            pyro.sample("obs", dist.Categorical(logits=Vindex(lo)[z]), obs=x)

    zeros_dag.tables = {"pa": pa, "pb": pb, "pc": pc, "pd": pd, "pe": pe, "pz": pz, "po": po}
    return zeros_dag, {"x": x, "d": d, "e": e}


# --------------------------------------------------------------------------- plates
def mixture_model(seed: int, N: int = 5, K: int = 3, V: int = 4):
    """Plated mixture: in ``plate("data", N)``, ``z ~ Cat(w)``, ``obs ~ Cat(emission[z])``
    observed through the argument ``x`` (long, shape ``(N,)``)."""
    g = _gen(40_000 + seed)
    w = random_probs(g, (K,))
    emission = random_probs(g, (K, V), alpha=0.5)
    x = _draw(g, emission[_draw(g, w.expand(N, K))])

    def mixture(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Categorical(w))
            pyro.sample("obs", dist.Categorical(Vindex(emission)[z]), obs=x)

    mixture.tables = {"w": w, "emission": emission}
    return mixture, {"x": x}


def global_local_model(seed: int, N: int = 4, C: int = 2, K: int = 3, V: int = 3):
    """A global latent ``c`` and plated locals: ``z_n | c ~ Cat(pz[c])``,
    ``obs_n | c, z_n ~ Cat(emission[c, z_n])`` observed through ``x``."""
    g = _gen(50_000 + seed)
    pc = random_probs(g, (C,))
    pz = random_probs(g, (C, K), alpha=0.5)
    emission = random_probs(g, (C, K, V), alpha=0.5)
    c = _draw(g, pc)
    z = _draw(g, pz[c].expand(N, K))
    x = _draw(g, emission[c, z])

    def global_local(x):
        c = pyro.sample("c", dist.Categorical(pc))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Categorical(Vindex(pz)[c]))
            pyro.sample("obs", dist.Categorical(Vindex(emission)[c, z]), obs=x)

    global_local.tables = {"pc": pc, "pz": pz, "emission": emission}
    return global_local, {"x": x}


def nested_plates_model(seed: int, G: int = 2, I: int = 3, K: int = 2, V: int = 3):
    """Nested plates: ``plate("groups", G, dim=-1)`` holds ``g ~ Cat(pg)``; inside it
    ``plate("items", I, dim=-2)`` holds ``u | g ~ Cat(pu[g])`` and ``obs | u`` (shape
    ``(I, G)``), observed by site name."""
    g_ = _gen(60_000 + seed)
    pg = random_probs(g_, (K,))
    pu = random_probs(g_, (K, K), alpha=0.5)
    pe = random_probs(g_, (K, V), alpha=0.5)
    grp = _draw(g_, pg.expand(G, K))
    u = _draw(g_, pu[grp].expand(I, G, K))
    x = _draw(g_, pe[u])

    def nested():
        with pyro.plate("groups", G, dim=-1):
            g = pyro.sample("g", dist.Categorical(pg))
            with pyro.plate("items", I, dim=-2):
                u = pyro.sample("u", dist.Categorical(Vindex(pu)[g]))
                pyro.sample("obs", dist.Categorical(Vindex(pe)[u]))

    nested.tables = {"pg": pg, "pu": pu, "pe": pe}
    return nested, {"obs": x}


def bernoulli_model(seed: int, N: int = 3):
    """Bernoulli latents mixed with a Categorical: ``a ~ Bern``, ``b | a ~ Bern``,
    ``c | a, b ~ Cat(3)``, and in ``plate("p", N)`` ``h | c, b ~ Bern`` (per-element
    tables) and ``obs | h ~ Bern`` observed through ``x`` (float 0/1)."""
    g = _gen(70_000 + seed)
    pa = torch.rand((), generator=g, dtype=DTYPE) * 0.8 + 0.1
    pb = torch.rand((2,), generator=g, dtype=DTYPE) * 0.8 + 0.1
    pc = random_probs(g, (2, 2, 3))
    ph = torch.rand((N, 3, 2), generator=g, dtype=DTYPE) * 0.9 + 0.05
    po = torch.rand((N, 2), generator=g, dtype=DTYPE) * 0.9 + 0.05
    a = _bern(g, pa)
    b = _bern(g, pb[a.long()])
    c = _draw(g, pc[a.long(), b.long()])
    h = _bern(g, ph[torch.arange(N), c, b.long()])
    x = _bern(g, po[torch.arange(N), h.long()])

    def bernoulli(x):
        a = pyro.sample("a", dist.Bernoulli(pa))
        b = pyro.sample("b", dist.Bernoulli(Vindex(pb)[a.long()]))
        c = pyro.sample("c", dist.Categorical(Vindex(pc)[a.long(), b.long()]))
        with pyro.plate("p", len(x)):
            h = pyro.sample("h", dist.Bernoulli(Vindex(ph)[..., c, b.long()]))
            pyro.sample("obs", dist.Bernoulli(Vindex(po)[..., h.long()]), obs=x)

    bernoulli.tables = {"pa": pa, "pb": pb, "pc": pc, "ph": ph, "po": po}
    return bernoulli, {"x": x}


# --------------------------------------------------------------------------- registry
def _sized(fn, **sizes):
    def make(seed):
        kw = {k: (v(seed) if callable(v) else v) for k, v in sizes.items()}
        return fn(seed, **kw)

    make.__name__ = fn.__name__
    return make


FAMILIES = {
    "chain": _sized(chain_model, T=lambda s: 5 if s % 3 == 1 else 6, K=lambda s: 3 if s % 3 == 1 else 2, V=3),
    "tree": _sized(tree_model, n=lambda s: 7 + s % 2, n_obs=lambda s: 2 + s % 2),
    "dag": _sized(dag_model, n=lambda s: 6 + s % 3, n_obs=lambda s: 1 + s % 3),
    "mixture": _sized(mixture_model, N=lambda s: 4 + s % 2),
    "global_local": _sized(global_local_model, N=4),
    "nested_plates": _sized(nested_plates_model),
    "bernoulli": _sized(bernoulli_model),
    "zeros_dag": _sized(zeros_dag_model),
    "zeros_chain": _sized(zeros_chain_model, T=5),
}
"""name -> ``make(seed) -> (model_fn, data)`` with the sizes the oracle tests use."""
