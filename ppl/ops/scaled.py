"""The fast sum-product executor of an :class:`~ppl.ops.contract.EliminationPlan`.

Probability domain with rescaling: every input factor is split into ``probs`` with
maximum 1 and a log scale (:func:`to_scaled`); each bucket is one kernel chosen by the
planner — a sum, or a batched matrix product over the eliminated variable after
pairwise broadcast products — and its result is divided by its maximum (per plate
copy), whose log is carried beside it.  No ``exp``/``log`` is taken per table entry,
nothing under- or overflows, and the kernels are BLAS calls.

Two entry points share one forward loop:

* :func:`contract_scaled` — ``log Z``, differentiable with autograd (the reference);
* :func:`scaled_gradients` — ``log Z`` and ``∂ log Z / ∂ probs`` of every input by an
  explicit reverse sweep.  In variable elimination each intermediate table is used
  exactly once and the rescaling maxima are constants, so the adjoint of each kernel is
  a couple of matrix products; this avoids autograd's per-node bookkeeping, which
  dominates on small networks.  ``probs · ∂ log Z / ∂ probs`` is the posterior marginal
  of the factor's scope (the adjoint trick, Darwiche 2003).

If an intermediate underflows entirely (factors disagreeing by more than ~745 nats) the
result is ``-inf``; callers then rerun the log-domain :func:`ppl.ops.contract.contract`,
which is exact over the float64 range.
"""

from __future__ import annotations

import torch

from .contract import ChainFactor
from .plan import BucketStep, ChainStep, EliminationPlan, Slot, union
from .scan import chain_reduce, chain_reduce_scaled
from .semiring import safe_log

__all__ = ["to_scaled", "to_scaled_many", "contract_scaled", "scaled_gradients", "compile_kernels"]


def to_scaled(log_table: torch.Tensor, n_plates: int):
    """Split a log table into ``(exp(x - m), m)`` with ``m`` the max over its variable dims
    (one per plate copy, ``-inf``-safe), so the first part has max 1 where not all zero.

    Parameters
    ----------
    log_table : torch.Tensor, shape (plate sizes...) + (cards...)
    n_plates : int

    Returns
    -------
    probs : torch.Tensor, same shape
    log_scale : torch.Tensor, shape (plate sizes...), detached
    """
    nvar = log_table.dim() - n_plates
    dims = tuple(range(n_plates, log_table.dim()))
    m = log_table.detach().amax(dim=dims) if nvar else log_table.detach()
    m = m.masked_fill(~torch.isfinite(m), 0.0)
    return (log_table - m.reshape(m.shape + (1,) * nvar)).exp(), m


def to_scaled_many(tables: list) -> list:
    """:func:`to_scaled` of many ``(log_table, n_plates)`` pairs, the same numbers in fewer
    kernel launches: tables without plates (a Bayesian network's CPDs, reduced by
    evidence) are scaled together, as one flat tensor with one max per table
    (``torch.segment_reduce``); tables with plates go one by one.

    Returns
    -------
    list of (probs, log_scale)
        In the order of ``tables``; each ``probs`` has its table's shape (a view into a
        shared buffer for the plateless ones), each ``log_scale`` is 0-dim for those.
    """
    out: list = [None] * len(tables)
    flat_ix = [i for i, (t, n) in enumerate(tables) if n == 0 and t.dim() > 0 and not t.requires_grad]
    flat = set(flat_ix)
    for i, (t, n) in enumerate(tables):
        if i not in flat:
            out[i] = to_scaled(t, n)
    if len(flat_ix) < 2:
        for i in flat_ix:
            out[i] = to_scaled(*tables[i])
        return out
    parts = [tables[i][0] for i in flat_ix]
    sizes = [t.numel() for t in parts]
    lengths = torch.tensor(sizes, device=parts[0].device)
    flat = torch.cat([t.reshape(-1) for t in parts])
    m = torch.segment_reduce(flat, "max", lengths=lengths)
    m = m.masked_fill(~torch.isfinite(m), 0.0)
    probs = (flat - m.repeat_interleave(lengths)).exp()
    for i, p, t, s in zip(flat_ix, probs.split(sizes), parts, m.unbind()):
        out[i] = (p.view(t.shape), s)
    return out


# ----------------------------------------------------------------------- kernels
def _prod(values):
    out = 1
    for x in values:
        out *= x
    return out


def _reshape(t: torch.Tensor, shape) -> torch.Tensor:
    """``t.reshape(shape)``, skipping the call (~5 µs here) when it would be a no-op."""
    return t if t.shape == shape else t.reshape(shape)


def _perm_or_none(perm):
    return None if list(perm) == sorted(perm) else tuple(perm)


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


class _Sum:
    """Σ over one variable of one table."""

    def __init__(self, dim):
        self.dim = dim

    def forward(self, t):
        return t.sum(dim=self.dim), t.shape

    def backward(self, saved, g):
        return (g.unsqueeze(self.dim).expand(saved),)


class _Product:
    """Elementwise product over the union of two variable lists (``a``'s order first)."""

    def __init__(self, a_vars, b_vars, n, cards):
        self.out_vars = union(a_vars, b_vars)
        pos = {u: n + i for i, u in enumerate(b_vars)}
        self.perm_b = _perm_or_none(list(range(n)) + [pos[u] for u in self.out_vars if u in pos])
        self.b_tail = tuple(cards[u] if u in pos else 1 for u in self.out_vars)
        self.a_pad = (1,) * (len(self.out_vars) - len(a_vars))
        self.n = n

    def forward(self, a, b):
        bp = b.permute(self.perm_b) if self.perm_b is not None else b
        b2 = _reshape(bp, bp.shape[: self.n] + self.b_tail)
        a2 = a.reshape(a.shape + self.a_pad) if self.a_pad else a
        return a2 * b2, (a.shape, bp.shape, a2, b2)

    def backward(self, saved, g):
        a_shape, bp_shape, a2, b2 = saved
        ga = _reshape((g * b2).sum_to_size(a2.shape), a_shape)
        gb = _reshape((g * a2).sum_to_size(b2.shape), bp_shape)
        if self.perm_b is not None:
            gb = gb.permute(_inverse(self.perm_b))
        return ga, gb


class _Matmul:
    """Σ_v a·b as one batched matrix product; result over ``batch + free_a + free_b``."""

    def __init__(self, a_vars, b_vars, v, n, cards):
        batch = [u for u in a_vars if u in b_vars and u != v]
        free_a = [u for u in a_vars if u not in b_vars]
        free_b = [u for u in b_vars if u not in a_vars]
        pa = {u: n + i for i, u in enumerate(a_vars)}
        pb = {u: n + i for i, u in enumerate(b_vars)}
        lead = list(range(n))
        self.perm_a = _perm_or_none(lead + [pa[u] for u in batch] + [pa[u] for u in free_a] + [pa[v]])
        self.perm_b = _perm_or_none(lead + [pb[u] for u in batch] + [pb[v]] + [pb[u] for u in free_b])
        k = cards[v]
        self.a_mat = (_prod(cards[u] for u in free_a), k)
        self.b_mat = (k, _prod(cards[u] for u in free_b))
        self.out_tail = tuple(cards[u] for u in free_a) + tuple(cards[u] for u in free_b)
        self.nhead = n + len(batch)

    def forward(self, a, b):
        if self.perm_a is not None:
            a = a.permute(self.perm_a)
        if self.perm_b is not None:
            b = b.permute(self.perm_b)
        head = a.shape[: self.nhead]
        am = _reshape(a, head + self.a_mat)
        bm = _reshape(b, head + self.b_mat)
        return _reshape(torch.matmul(am, bm), head + self.out_tail), (a.shape, b.shape, am, bm)

    def backward(self, saved, g):
        a_shape, b_shape, am, bm = saved
        gm = _reshape(g, am.shape[:-1] + (bm.shape[-1],))
        ga = _reshape(torch.matmul(gm, bm.transpose(-1, -2)), a_shape)
        gb = _reshape(torch.matmul(am.transpose(-1, -2), gm), b_shape)
        if self.perm_a is not None:
            ga = ga.permute(_inverse(self.perm_a))
        if self.perm_b is not None:
            gb = gb.permute(_inverse(self.perm_b))
        return ga, gb


class _Bucket:
    """A bucket of several tables: pairwise products (``step.merges``), then a matmul."""

    def __init__(self, step: BucketStep, scopes, cards):
        n = len(step.plates)
        work = list(scopes)
        self.merges = []
        for i, j in step.merges:
            product = _Product(work[i], work[j], n, cards)
            self.merges.append((i, j, product))
            work = [w for k, w in enumerate(work) if k not in (i, j)] + [product.out_vars]
        self.swap = step.kernel == "matmul_swapped"
        first, second = (work[1], work[0]) if self.swap else (work[0], work[1])
        self.final = _Matmul(first, second, step.var, n, cards)

    def forward(self, *tensors):
        work = list(range(len(tensors)))  # positions in `values` of the working list
        values = list(tensors)
        saved = []
        for i, j, product in self.merges:
            out, s = product.forward(values[work[i]], values[work[j]])
            saved.append((work[i], work[j], s))
            values.append(out)
            work = [w for k, w in enumerate(work) if k not in (i, j)] + [len(values) - 1]
        x, y = (work[1], work[0]) if self.swap else (work[0], work[1])
        out, s = self.final.forward(values[x], values[y])
        return out, (saved, work, s, len(values))

    def backward(self, saved, g):
        merged, work, s, count = saved
        grads = [None] * count
        x, y = (work[1], work[0]) if self.swap else (work[0], work[1])
        grads[x], grads[y] = self.final.backward(s, g)
        for (a, b, ps), (_, _, product) in zip(reversed(merged), reversed(self.merges)):
            out_index = count - 1
            count -= 1
            grads[a], grads[b] = product.backward(ps, grads[out_index])
        return tuple(grads[: count])


def compile_kernels(plan: EliminationPlan) -> list:
    """Per step of ``plan``, its kernel (``None`` for chain and plate steps)."""
    kernels = []
    for step in plan.steps:
        if not isinstance(step, BucketStep):
            kernels.append(None)
            continue
        scopes = [plan.slots[i].vars for i in step.srcs]
        if step.kernel == "sum":
            kernels.append(_Sum(len(step.plates) + scopes[0].index(step.var)))
        elif not step.merges and step.kernel == "matmul":
            kernels.append(_Matmul(scopes[0], scopes[1], step.var, len(step.plates), plan.cards))
        else:
            kernels.append(_Bucket(step, scopes, plan.cards))
    return kernels


# ---------------------------------------------------------------------- executor
def _forward(plan: EliminationPlan, inputs, keep: bool):
    """The shared forward loop; with ``keep`` it returns what the reverse sweep needs."""
    kernels = plan.kernels(compile_kernels)
    env: list = [None] * len(plan.slots)
    saved: list = [None] * len(plan.steps) if keep else None
    logs = []     # log-scales of unplated tables, summed once at the end
    maxima = []   # maxima divided out of unplated bucket results
    chain_inputs = plan.chain_inputs()
    for i, item in enumerate(inputs):
        if i in chain_inputs or plan.slots[i].plates:
            env[i] = item
        else:
            env[i] = (item[0], None)
            logs.append(item[1])
    for k, (step, kernel) in enumerate(zip(plan.steps, kernels)):
        if isinstance(step, BucketStep):
            srcs = step.srcs
            out, s = kernel.forward(*[env[i][0] for i in srcs])
            m = None
            if not step.rescale:  # a one-table sum whose max stays in [1, e^300]
                env[step.dst] = (out, env[srcs[0]][1])
            elif step.plates:
                scale = env[srcs[0]][1]
                for i in srcs[1:]:
                    scale = scale + env[i][1]
                nvar = out.dim() - len(step.plates)
                m = out.detach().amax(dim=tuple(range(len(step.plates), out.dim()))) if nvar else out.detach()
                m = torch.where(m > 0, m, torch.ones_like(m))
                m = m.reshape(m.shape + (1,) * nvar)
                env[step.dst] = (out / m, scale + m.reshape(m.shape[: len(step.plates)]).log())
            else:
                m = out.detach().amax()
                maxima.append(m)
                env[step.dst] = (out / m, None)
            if keep:
                saved[k] = (s, m)
        elif isinstance(step, ChainStep):
            chain = env[step.src]
            with torch.set_grad_enabled(keep or torch.is_grad_enabled()):
                if isinstance(chain, ChainFactor):  # log domain
                    end, _ = chain_reduce(chain.table, "sum")
                    scaled = to_scaled(end, len(chain.plates))
                    leaf = chain.table
                else:  # (probs, log scales), see ppl.ops.scan.to_scaled_chain
                    scaled = chain_reduce_scaled(*chain)
                    leaf = chain[0]
            env[step.dst] = _scaled_slot(scaled, plan.slots[step.dst], logs)
            if keep:
                saved[k] = (scaled[0], leaf)
        else:  # PlateStep
            probs, scale = env[step.src]
            src = plan.slots[step.src]
            logt = safe_log(probs) + scale.reshape(scale.shape + (1,) * len(src.vars))
            drop = tuple(i for i, p in enumerate(src.plates) if p in step.drop)
            env[step.dst] = _scaled_slot(to_scaled(logt.sum(dim=drop), len(src.plates) - len(drop)),
                                         plan.slots[step.dst], logs)
            if keep:
                saved[k] = drop
    parts = []
    for i in plan.totals:
        probs, scale = env[i]
        parts.append(safe_log(probs).sum() if scale is None else (safe_log(probs) + scale).sum())
    if logs:
        parts.append(torch.stack(logs).sum())
    if maxima:
        stacked = torch.stack(maxima)
        if not bool((stacked > 0).all()):  # an all-zero intermediate: no configuration has weight
            return torch.full((), -torch.inf, dtype=stacked.dtype, device=stacked.device), env, saved
        parts.append(stacked.log().sum())
    total = parts[0] if parts else torch.zeros(())
    for p in parts[1:]:
        total = total + p
    return total, env, saved


def _scaled_slot(scaled, slot: Slot, logs: list):
    probs, scale = scaled
    if slot.plates:
        return probs, scale
    logs.append(scale)
    return probs, None


def contract_scaled(plan: EliminationPlan, inputs) -> torch.Tensor:
    """Sum-product of ``plan`` in the probability domain with rescaling; differentiable.

    Parameters
    ----------
    plan : EliminationPlan
        Built with ``cards`` (see :func:`ppl.ops.contract.plan_elimination`).
    inputs : list
        Per input slot: ``(probs, log_scale)`` for a factor, with ``probs`` of shape
        ``plate sizes + cards`` and ``log_scale`` of shape ``plate sizes`` (the factor is
        ``probs * exp(log_scale)``); for a chain either ``(probs, log_scales)`` of shapes
        ``plate sizes + (L, K, K)`` and ``plate sizes + (L,)`` (see
        :func:`ppl.ops.scan.to_scaled_chain`) or a :class:`~ppl.ops.contract.ChainFactor`
        (log domain).

    Returns
    -------
    torch.Tensor, scalar
        ``log Σ_x Π_f f(x)``; ``-inf`` if every configuration has zero weight or an
        intermediate underflowed entirely (see the module docstring).
    """
    return _forward(plan, inputs, keep=False)[0]


def scaled_gradients(plan: EliminationPlan, inputs):
    """``log Z`` and its gradient with respect to every input, by an explicit reverse sweep.

    Parameters
    ----------
    plan, inputs
        As :func:`contract_scaled`; the ``probs`` need not require grad.  Chain inputs
        (their probabilities, or a ChainFactor's table) must require grad: their adjoint
        is taken with autograd through the scan.

    Returns
    -------
    log_z : torch.Tensor, scalar
    grads : list
        Per input: ``∂ log Z / ∂ probs`` (same shape as ``probs``); for a ChainFactor,
        ``∂ log Z / ∂ table`` (the pairwise marginals); ``None`` entries if ``log_z`` is
        not finite.
    """
    with torch.no_grad():
        log_z, env, saved = _forward(plan, inputs, keep=True)
    if not torch.isfinite(log_z):
        return log_z, [None] * len(inputs)
    kernels = plan.kernels(compile_kernels)
    g: list = [None] * len(plan.slots)
    for i in plan.totals:
        probs = env[i][0]
        g[i] = 1.0 / probs
    with torch.no_grad():
        for k in range(len(plan.steps) - 1, -1, -1):
            step = plan.steps[k]
            if isinstance(step, BucketStep):
                gd = g[step.dst]
                if gd is None:
                    continue
                s, m = saved[k]
                if m is not None:
                    gd = gd / m
                for i, gi in zip(step.srcs, kernels[k].backward(s, gd)):
                    g[i] = gi
            elif isinstance(step, ChainStep):
                gd = g[step.dst]
                if gd is None:
                    continue
                end, leaf = saved[k]
                with torch.enable_grad():
                    (g[step.src],) = torch.autograd.grad(end, leaf, gd)
            else:  # PlateStep: q = exp(Σ_drop(log p + s) - m)
                gd = g[step.dst]
                if gd is None:
                    continue
                drop = saved[k]
                p = env[step.src][0]
                gy = gd * env[step.dst][0]
                for d in drop:
                    gy = gy.unsqueeze(d)
                gy = gy.expand(p.shape)
                g[step.src] = torch.where(p > 0, gy / torch.where(p > 0, p, torch.ones_like(p)), torch.zeros_like(p))
    return log_z, g[: len(inputs)]
