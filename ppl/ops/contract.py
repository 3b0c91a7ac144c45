"""Log-space variable elimination over plated factor graphs, in two semirings.

One elimination *plan* (:func:`plan_elimination`, symbolic: sets of names, no tensors)
serves every use by swapping the executor:

* :func:`contract` — log-domain broadcasting executor for the ``"sum"``
  (logsumexp, +) and ``"max"`` (max, +) semirings; with ``tape=True`` it records each
  bucket so that :meth:`Tape.backtrace` gives exact joint samples (sum) or the MAP
  assignment (max).  Also the reference the fast executor is tested against.
* :mod:`ppl.ops.scaled` — the fast sum-product executor: probability domain, one
  kernel per bucket chosen by the planner (a sum, or a batched matrix product after
  broadcast products), each intermediate rescaled to max 1 with its log scale carried
  separately, and an explicit reverse sweep for every marginal (the adjoint trick,
  Darwiche 2003).
* :func:`ppl.analysis.elimination.elimination_cost` — sizes of the plan's tables.

Plates follow tensor variable elimination (Obermeyer et al. 2019, "Tensor Variable
Elimination for Plated Factor Graphs", Alg. 1): factors are grouped by the set of
plates they live in; the deepest group eliminates the variables local to it, then takes
the product over the plates its remaining variables do not live in (a ``sum`` of log
values along those plate dims) and hands the result to the enclosing group.  A plate of
N i.i.d. copies costs N times one copy, never K**N.

Within a group, variables are eliminated in the given order (min-fill by default): each
step combines the tables that mention the variable and sums (or maxes) it out; the
largest table is the largest clique of that order.  Chains handed in as
:class:`ChainFactor` are first contracted to their two ends by a parallel scan
(:mod:`ppl.ops.scan`).

:func:`naive_contract` is the slow, obviously right reference: it builds the whole joint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .scan import _choose, chain_backtrace, chain_reduce
from .semiring import reduce

__all__ = [
    "LogFactor", "ChainFactor", "EliminationPlan", "plan_elimination", "Tape", "align_table",
    "contract", "naive_contract", "IntractablePlatesError",
]


_MAX_LOG_BOUND = 300.0  # nats: tables may grow to e^300 before they must be rescaled


class IntractablePlatesError(ValueError):
    """Plated elimination cannot proceed: variables of plates that do not nest are
    coupled, or a factor depends on every copy of a plated variable."""


@dataclass
class LogFactor:
    """A log potential over some variables, replicated over some plates.

    Attributes
    ----------
    table : torch.Tensor
        Shape ``tuple(plate sizes) + tuple(cardinalities)``: leading dims follow
        ``plates``, trailing dims follow ``vars``.
    plates : tuple[str, ...]
        Plate names, in the engine's global plate order.
    vars : tuple[str, ...]
        Variable names, distinct.
    """

    table: torch.Tensor
    plates: tuple
    vars: tuple


@dataclass
class ChainFactor:
    """Pairwise log factors along a chain ``vars[0] - vars[1] - ... - vars[L]``.

    Attributes
    ----------
    table : torch.Tensor
        Shape ``tuple(plate sizes) + (L, K, K)``; ``table[..., t, i, j]`` is the log
        factor between ``vars[t] = i`` and ``vars[t+1] = j``.
    plates : tuple[str, ...]
    vars : tuple[str, ...]
        The ``L + 1`` chain variables; the interior ones must appear in no other factor.
    """

    table: torch.Tensor
    plates: tuple
    vars: tuple


# ---------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Slot:
    """Symbolic table: the variables and plates of an intermediate result."""

    vars: tuple
    plates: tuple


@dataclass(frozen=True)
class ChainStep:
    """Contract chain input ``src`` to a table over its ends, into ``dst``."""

    src: int
    dst: int


@dataclass(frozen=True)
class BucketStep:
    """Combine ``srcs`` into a table over ``joint_vars`` (eliminated ``var`` last) and
    reduce ``var`` out, into ``dst`` (whose variables are ``joint_vars[:-1]``).

    ``kernel`` says how the scaled executor computes it: ``"sum"`` (one table: sum
    ``var`` out) or ``"matmul"`` (a batched matrix product over ``var``;
    ``"matmul_swapped"``: with the last two tables in the other role, which saves a copy).  With more
    than two tables, ``merges`` lists the pairwise broadcast products done first
    (pairs of positions in the working list, smallest union first) until two remain.
    ``rescale`` is False where the result provably needs no rescaling: a sum over one
    variable of a table whose maximum lies in [1, B] has its maximum in [1, K·B], so it
    can neither underflow nor (for small B) overflow.
    """

    var: str
    srcs: tuple
    joint_vars: tuple
    plates: tuple
    dst: int
    kernel: str = "matmul"
    merges: tuple = ()
    rescale: bool = True


@dataclass(frozen=True)
class PlateStep:
    """Product over the plate copies of ``drop`` (a sum of log values), into ``dst``."""

    src: int
    drop: tuple
    dst: int


@dataclass
class EliminationPlan:
    """A symbolic plated elimination: run it with :func:`contract` or
    :func:`ppl.ops.scaled.contract_scaled`.

    Attributes
    ----------
    slots : list[Slot]
        Inputs first (one per factor, in the order given), then intermediates.
    steps : list[ChainStep | BucketStep | PlateStep]
    totals : list[int]
        Slots left with no variables and no plates; their sum is the result.
    plate_order : tuple[str, ...]
    n_inputs : int
    """

    slots: list
    steps: list
    totals: list
    plate_order: tuple
    n_inputs: int
    cards: dict = field(default_factory=dict)
    _kernels: list | None = field(default=None, repr=False)

    def buckets(self):
        """The bucket steps (one per eliminated variable outside chains)."""
        return [s for s in self.steps if isinstance(s, BucketStep)]

    def chain_inputs(self) -> set:
        """Input slots that are chains (sources of a :class:`ChainStep`)."""
        return {s.src for s in self.steps if isinstance(s, ChainStep)}

    def kernels(self, compile_kernels) -> list:
        """Per step, an executor's compiled kernel, built once by ``compile_kernels(plan)``
        and kept (see :func:`ppl.ops.scaled.compile_kernels`)."""
        if self._kernels is None:
            self._kernels = compile_kernels(self)
        return self._kernels


def plan_elimination(inputs, order, var_plates: dict, plate_order=(), cards=None) -> EliminationPlan:
    """Plan plated variable elimination of every variable of ``inputs``.

    Parameters
    ----------
    inputs : sequence of (vars, plates, is_chain)
        Scope of each input factor; for a chain, ``vars`` are all its variables.
    order : sequence[str]
        Elimination order (must contain every variable outside chain interiors).
    var_plates : dict[str, frozenset[str]]
    plate_order : tuple[str, ...]
    cards : dict[str, int], optional
        Cardinalities (needed by :mod:`ppl.ops.scaled`).

    Returns
    -------
    EliminationPlan

    Raises
    ------
    IntractablePlatesError
        If the plate structure does not allow plated elimination.
    ValueError
        If a variable is missing from ``order``.
    """
    plate_order = tuple(plate_order)
    rank = {v: i for i, v in enumerate(order)}
    slots: list[Slot] = []
    steps: list = []
    totals: list[int] = []
    groups: dict[frozenset, list[int]] = {}

    def new(vars_, plates):
        slots.append(Slot(tuple(vars_), tuple(p for p in plate_order if p in plates)))
        return len(slots) - 1

    log_bound: dict[int, float] = {}  # slot -> log of an upper bound on its max (lower bound: 1)
    for vars_, plates, _ in inputs:
        groups.setdefault(frozenset(plates), []).append(new(vars_, plates))
    chain_inputs = {i for i, (_, _, is_chain) in enumerate(inputs) if is_chain}
    log_bound.update((i, 0.0) for i in range(len(inputs)) if i not in chain_inputs)
    needed = {v for i, s in enumerate(slots) for v in ((s.vars[0], s.vars[-1]) if i in chain_inputs else s.vars)}
    missing = [v for v in needed if v not in rank]
    if missing:
        raise ValueError(f"variables {missing} are not in the elimination order")

    while groups:
        leaf = max(groups, key=len)
        live = []
        for i in groups.pop(leaf):
            if i in chain_inputs:
                s = slots[i]
                j = new((s.vars[0], s.vars[-1]), s.plates)
                steps.append(ChainStep(i, j))
                log_bound[j] = 0.0
                live.append(j)
            else:
                live.append(i)
        local = sorted({v for i in live for v in slots[i].vars if var_plates.get(v, frozenset()) == leaf},
                       key=rank.__getitem__)
        holders: dict = {}  # variable -> live slots that mention it, in creation order
        for i in live:
            for v in slots[i].vars:
                holders.setdefault(v, {})[i] = None
        alive = dict.fromkeys(live)
        for v in local:
            bucket = tuple(holders.pop(v, {}))
            for i in bucket:
                del alive[i]
                for u in slots[i].vars:
                    if u != v:
                        holders[u].pop(i, None)
            kernel, merges, out_vars = _bucket_kernel([slots[i].vars for i in bucket], v)
            j = new(out_vars, leaf)
            rescale = True
            if kernel == "sum" and bucket[0] in log_bound and cards:
                bound = log_bound[bucket[0]] + math.log(cards[v])
                if bound < _MAX_LOG_BOUND:
                    rescale = False
                    log_bound[j] = bound
            if rescale:
                log_bound[j] = 0.0
            steps.append(BucketStep(v, bucket, out_vars + (v,), slots[j].plates, j, kernel, merges, rescale))
            alive[j] = None
            for u in out_vars:
                holders.setdefault(u, {})[j] = None
        live = list(alive)
        for i in live:
            vs = slots[i].vars
            parent = frozenset().union(*(var_plates.get(v, frozenset()) for v in vs)) if vs else frozenset()
            if not parent <= leaf:
                outside = sorted(parent - leaf)
                raise IntractablePlatesError(
                    f"a factor outside plate(s) {outside} depends on variables {sorted(vs)} that live inside them, "
                    "i.e. on every copy of a plated variable at once: exact elimination would need all copies jointly"
                )
            if parent == leaf and vs:
                raise IntractablePlatesError(
                    f"variables {sorted(vs)} stay coupled inside plates {sorted(leaf)}: a factor joins variables "
                    "of plates that do not nest"
                )
            drop = tuple(p for p in slots[i].plates if p not in parent)
            if drop:
                j = new(vs, parent)
                steps.append(PlateStep(i, drop, j))
                log_bound[j] = 0.0
                i = j
            if vs or parent:
                groups.setdefault(parent, []).append(i)
            else:
                totals.append(i)
    return EliminationPlan(slots, steps, totals, plate_order, len(inputs), dict(cards or {}))


def _union(a, b):
    return tuple(a) + tuple(u for u in b if u not in a)


def _bucket_kernel(scopes, v):
    """Choose how a bucket is computed: ``(kernel, merges, result variable order)``."""
    if len(scopes) == 1:
        return "sum", (), tuple(u for u in scopes[0] if u != v)
    work = [tuple(s) for s in scopes]
    merges = []
    while len(work) > 2:
        i, j = min(((i, j) for i in range(len(work)) for j in range(i + 1, len(work))),
                   key=lambda ij: len(set(work[ij[0]]) | set(work[ij[1]])))
        merged = _union(work[i], work[j])
        merges.append((i, j))
        work = [w for k, w in enumerate(work) if k not in (i, j)] + [merged]
    a, b = work
    swap = _permutes(b, a, v) < _permutes(a, b, v)  # fewer permute-copies with the roles swapped
    if swap:
        a, b = b, a
    batch = tuple(u for u in a if u in b and u != v)
    free_a = tuple(u for u in a if u not in b)
    free_b = tuple(u for u in b if u not in a)
    return ("matmul_swapped" if swap else "matmul"), tuple(merges), batch + free_a + free_b


def _permutes(a, b, v) -> int:
    """How many of the two tables a batched matmul ``Σ_v a·b`` must permute (copy) first:
    ``a`` must read (batch, free_a, v) and ``b`` (batch, v, free_b), batch in ``a``'s order."""
    batch = [u for u in a if u in b and u != v]
    want_a = batch + [u for u in a if u not in b] + [v]
    want_b = batch + [v] + [u for u in b if u not in a]
    return int(list(a) != want_a) + int(list(b) != want_b)


def _plan_for(factors, order, var_plates, plate_order):
    inputs = [(f.vars, f.plates, isinstance(f, ChainFactor)) for f in factors]
    return plan_elimination(inputs, order, var_plates, plate_order)


# ------------------------------------------------------------ log-domain executor
@dataclass
class _Record:
    var: str | None
    table: torch.Tensor | None   # bucket joint in global plate layout
    vars: tuple
    chain: ChainFactor | None = None
    levels: list = field(default_factory=list)


@dataclass
class Tape:
    """What :func:`contract` recorded to replay the elimination backwards.

    Use :meth:`backtrace` to get exact joint samples (sum semiring) or the MAP
    assignment (max semiring).
    """

    steps: list
    plate_order: tuple
    plate_sizes: dict
    semiring: str

    def backtrace(self, num_samples: int = 1, generator: torch.Generator | None = None) -> dict:
        """Values of every eliminated variable, drawn jointly (sum) or at the argmax (max).

        Variables are visited in reverse elimination order; each one is drawn from (or
        maximised over) its bucket table with the variables eliminated after it already
        fixed: forward filtering, backward sampling generalised to any elimination order
        (Koller & Friedman 2009, §9.6 and §13.3).

        Parameters
        ----------
        num_samples : int
            Number of joint samples ``S`` (use 1 with the max semiring).
        generator : torch.Generator, optional

        Returns
        -------
        dict[str, torch.LongTensor]
            Variable -> state indices of shape ``(S,) + global plate layout``: one dim
            per plate of ``plate_order``, of the plate's size if the variable lives in it
            and 1 otherwise.
        """
        mode = "argmax" if self.semiring == "max" else "sample"
        values: dict[str, torch.Tensor] = {}
        nplate = len(self.plate_order)
        for rec in reversed(self.steps):
            if rec.chain is not None:
                if not rec.levels:  # one segment: nothing interior
                    continue
                chain = rec.chain
                levels = [_global_view(lv, chain.plates, self.plate_order, tail=3) for lv in rec.levels]
                decoded = chain_backtrace(levels, values[chain.vars[0]], values[chain.vars[-1]], mode, generator)
                for t, name in enumerate(chain.vars[1:-1], start=1):
                    values[name] = decoded[..., t]
                continue
            table = rec.table.unsqueeze(0)  # (1, G..., cards)
            for u in rec.vars[:-1]:
                idx = values[u]  # (S, G...)
                pos = 1 + nplate  # the first remaining card dim is always u's
                index = idx.reshape(idx.shape + (1,) * (table.dim() - idx.dim()))
                table = torch.take_along_dim(table, index, dim=pos).squeeze(pos)
            if table.shape[0] == 1:
                table = table.expand((num_samples,) + table.shape[1:])
            values[rec.var] = _choose(table, mode, generator)
        return values


def _global_view(table: torch.Tensor, plates: tuple, plate_order: tuple, tail: int | None = None) -> torch.Tensor:
    """Reshape a table whose leading dims follow ``plates`` (a subsequence of
    ``plate_order``) to the global plate layout (size 1 for absent plates)."""
    if plates == plate_order:
        return table
    n = len(plates)
    sizes = dict(zip(plates, table.shape[:n]))
    shape = tuple(sizes.get(p, 1) for p in plate_order)
    return table.reshape(shape + table.shape[n:])


def align_table(table, vars_, out_vars, cards, nplate):
    """Permute/reshape a table whose first ``nplate`` dims are plates and whose other dims
    follow ``vars_`` so that it broadcasts against tables over ``out_vars`` (size 1 for
    the variables it lacks).

    Parameters
    ----------
    table : torch.Tensor, shape (plates...) + (cards of vars_)
    vars_, out_vars : sequence[str]
        ``vars_`` must be a subset of ``out_vars``.
    cards : dict[str, int]
    nplate : int

    Returns
    -------
    torch.Tensor, shape (plates...) + (card or 1 for each of out_vars)
    """
    if tuple(vars_) == tuple(out_vars):
        return table
    pos = {v: i for i, v in enumerate(vars_)}
    present = [v for v in out_vars if v in pos]
    t = table.permute(tuple(range(nplate)) + tuple(nplate + pos[v] for v in present))
    shape = list(t.shape[:nplate]) + [cards[v] if v in pos else 1 for v in out_vars]
    return t.reshape(shape)


def contract(factors, *, order, var_plates, plate_order=(), semiring="sum", tape=False, plan=None):
    """Eliminate every variable of ``factors`` in the log domain; return the semiring total.

    Parameters
    ----------
    factors : list[LogFactor | ChainFactor]
        Log tables; every table's leading dims follow its ``plates``.
    order : sequence[str]
        Elimination order; must contain every variable outside chain interiors.
    var_plates : dict[str, frozenset[str]]
        The plates each variable lives in.  A factor's plates must include the plates
        of each of its variables.
    plate_order : tuple[str, ...]
        Global order of plate names (defines the layout of backtraced values).
    semiring : {"sum", "max"}
    tape : bool
        Record the bucket tables for :meth:`Tape.backtrace`.
    plan : EliminationPlan, optional
        A plan made by :func:`plan_elimination` for these factors (else made here).

    Returns
    -------
    total : torch.Tensor, scalar
        ``log Σ_x Π_f f(x)`` (sum) or ``log max_x Π_f f(x)`` (max), plates multiplied out.
    tape : Tape or None

    Raises
    ------
    IntractablePlatesError, ValueError
        As :func:`plan_elimination`.
    """
    plate_order = tuple(plate_order)
    plan = plan or _plan_for(factors, order, var_plates, plate_order)
    nplate = len(plate_order)
    cards: dict[str, int] = {}
    plate_sizes: dict[str, int] = {}
    env: list = [None] * len(plan.slots)
    for i, f in enumerate(factors):
        n = len(f.plates)
        plate_sizes.update(zip(f.plates, (int(s) for s in f.table.shape[:n])))
        if isinstance(f, ChainFactor):
            cards.update((v, int(f.table.shape[-1])) for v in f.vars)
            env[i] = f
        else:
            cards.update(zip(f.vars, (int(s) for s in f.table.shape[n:])))
            env[i] = _global_view(f.table, f.plates, plate_order)
    records: list[_Record] = []
    for step in plan.steps:
        if isinstance(step, ChainStep):
            chain = env[step.src]
            end, levels = chain_reduce(chain.table, semiring, keep_levels=tape)
            env[step.dst] = _global_view(end, chain.plates, plate_order)
            if tape:
                records.append(_Record(None, None, chain.vars, chain=chain, levels=levels))
        elif isinstance(step, BucketStep):
            joint = None
            for i in step.srcs:
                t = align_table(env[i], plan.slots[i].vars, step.joint_vars, cards, nplate)
                joint = t if joint is None else joint + t
            if tape:
                records.append(_Record(step.var, joint, step.joint_vars))
            env[step.dst] = reduce(joint, joint.dim() - 1, semiring)
        else:  # PlateStep
            drop = tuple(i for i, p in enumerate(plate_order) if p in step.drop)
            env[step.dst] = env[step.src].sum(dim=drop, keepdim=True)
    total = None
    for i in plan.totals:
        s = env[i].sum()
        total = s if total is None else total + s
    if total is None:
        total = torch.zeros((), dtype=torch.get_default_dtype())
    return total, (Tape(records, plate_order, plate_sizes, semiring) if tape else None)


# ------------------------------------------------------------------- reference
def naive_contract(factors, var_cards: dict, semiring: str = "sum") -> torch.Tensor:
    """Reference: build the full joint table of all variables and reduce it.

    Plates are not supported (unroll them into separate variables first).  Cost is the
    product of all cardinalities: for tests on small models only.

    Parameters
    ----------
    factors : list[LogFactor]
        Factors with ``plates == ()``.
    var_cards : dict[str, int]
    semiring : {"sum", "max"}

    Returns
    -------
    torch.Tensor, scalar
    """
    names = list(var_cards)
    joint = None
    for f in factors:
        if f.plates:
            raise ValueError("naive_contract does not take plated factors; unroll plates first")
        shape = [1] * len(names)
        perm = sorted(range(len(f.vars)), key=lambda i: names.index(f.vars[i]))
        t = f.table.permute(perm) if f.vars else f.table
        for i in perm:
            shape[names.index(f.vars[i])] = var_cards[f.vars[i]]
        t = t.reshape(shape) if names else t
        joint = t if joint is None else joint + t
    if joint is None:
        return torch.zeros(())
    joint = joint.expand([var_cards[n] for n in names]) if names else joint
    return reduce(joint, tuple(range(joint.dim())), semiring)
