"""Elimination plans: plated variable elimination worked out on names alone (no tensors).

:func:`plan_elimination` turns the scopes of the factors (variables and plates) and an
elimination order into an :class:`EliminationPlan`, a list of steps over symbolic tables
(:class:`Slot`), which the executors run: :func:`ppl.ops.contract.contract` (log domain,
sum or max semiring), :func:`ppl.ops.scaled.contract_scaled` (scaled probability domain)
and :func:`ppl.analysis.elimination.elimination_cost` (table sizes only).

Plates follow tensor variable elimination (Obermeyer et al. 2019, "Tensor Variable
Elimination for Plated Factor Graphs", Alg. 1): factors are grouped by the set of
plates they live in; the deepest group eliminates the variables local to it, then takes
the product over the plates its remaining variables do not live in (a ``sum`` of log
values along those plate dims) and hands the result to the enclosing group.  A plate of
N i.i.d. copies costs N times one copy, never K**N.

Within a group, variables are eliminated in the given order (min-fill by default): each
step combines the tables that mention the variable and sums (or maxes) it out; the
largest table is the largest clique of that order.  Chains are first contracted to their
two ends (:class:`ChainStep`, a parallel scan: :mod:`ppl.ops.scan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "IntractablePlatesError", "Slot", "ChainStep", "BucketStep", "PlateStep", "EliminationPlan",
    "plan_elimination", "union",
]

_MAX_LOG_BOUND = 300.0  # nats: tables may grow to e^300 before they must be rescaled


class IntractablePlatesError(ValueError):
    """Plated elimination cannot proceed: variables of plates that do not nest are
    coupled, or a factor depends on every copy of a plated variable."""


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
    b = _PlanBuilder(tuple(plate_order), order, var_plates, cards)
    b.add_inputs(inputs)
    while b.groups:
        leaf = max(b.groups, key=len)  # the deepest plate set left
        live = b.contract_chains(b.groups.pop(leaf))
        live = b.eliminate_local(leaf, live)
        b.hand_up(leaf, live)
    return EliminationPlan(b.slots, b.steps, b.totals, b.plate_order, len(inputs), dict(cards or {}))


class _PlanBuilder:
    """The state of :func:`plan_elimination` while it runs: the slots and steps made so
    far, the live slots of each plate set still to be eliminated (``groups``), and a
    bound on each slot's maximum (``log_bound``: slot -> log of an upper bound; the
    lower bound is 1), which lets a bucket skip rescaling."""

    def __init__(self, plate_order: tuple, order, var_plates: dict, cards):
        self.plate_order = plate_order
        self.rank = {v: i for i, v in enumerate(order)}
        self.var_plates = var_plates
        self.cards = cards
        self.slots: list[Slot] = []
        self.steps: list = []
        self.totals: list[int] = []
        self.groups: dict[frozenset, list[int]] = {}
        self.log_bound: dict[int, float] = {}
        self.chain_inputs: set = set()

    def new(self, vars_, plates) -> int:
        """A new slot over ``vars_`` and ``plates`` (put in global plate order); its index."""
        self.slots.append(Slot(tuple(vars_), tuple(p for p in self.plate_order if p in plates)))
        return len(self.slots) - 1

    def add_inputs(self, inputs) -> None:
        """One slot per input, grouped by plate set.

        Raises
        ------
        ValueError
            If a variable the elimination needs is not in the order.
        """
        for vars_, plates, _ in inputs:
            self.groups.setdefault(frozenset(plates), []).append(self.new(vars_, plates))
        self.chain_inputs = {i for i, (_, _, is_chain) in enumerate(inputs) if is_chain}
        self.log_bound.update((i, 0.0) for i in range(len(inputs)) if i not in self.chain_inputs)
        needed = {v for i, s in enumerate(self.slots)
                  for v in ((s.vars[0], s.vars[-1]) if i in self.chain_inputs else s.vars)}
        missing = [v for v in needed if v not in self.rank]
        if missing:
            raise ValueError(f"variables {missing} are not in the elimination order")

    def contract_chains(self, members: list) -> list:
        """The slots of one group with every chain input replaced by a table over its ends
        (a :class:`ChainStep` each)."""
        live = []
        for i in members:
            if i in self.chain_inputs:
                s = self.slots[i]
                j = self.new((s.vars[0], s.vars[-1]), s.plates)
                self.steps.append(ChainStep(i, j))
                self.log_bound[j] = 0.0
                live.append(j)
            else:
                live.append(i)
        return live

    def eliminate_local(self, leaf: frozenset, live: list) -> list:
        """Eliminate, in order, the variables that live exactly in the plates ``leaf``
        (one :class:`BucketStep` each); the slots left, in creation order."""
        local = sorted({v for i in live for v in self.slots[i].vars
                        if self.var_plates.get(v, frozenset()) == leaf}, key=self.rank.__getitem__)
        holders: dict = {}  # variable -> live slots that mention it, in creation order
        for i in live:
            for v in self.slots[i].vars:
                holders.setdefault(v, {})[i] = None
        alive = dict.fromkeys(live)
        for v in local:
            bucket = tuple(holders.pop(v, {}))
            for i in bucket:
                del alive[i]
                for u in self.slots[i].vars:
                    if u != v:
                        holders[u].pop(i, None)
            j = self.bucket(v, bucket, leaf)
            alive[j] = None
            for u in self.slots[j].vars:
                holders.setdefault(u, {})[j] = None
        return list(alive)

    def bucket(self, v: str, bucket: tuple, leaf: frozenset) -> int:
        """The :class:`BucketStep` that combines the slots ``bucket`` and reduces ``v`` out;
        the index of its result slot.  A one-table sum skips rescaling while the bound on
        its maximum stays below ``e^300`` (see :class:`BucketStep`)."""
        kernel, merges, out_vars = _bucket_kernel([self.slots[i].vars for i in bucket], v)
        j = self.new(out_vars, leaf)
        rescale = True
        if kernel == "sum" and bucket[0] in self.log_bound and self.cards:
            bound = self.log_bound[bucket[0]] + math.log(self.cards[v])
            if bound < _MAX_LOG_BOUND:
                rescale = False
                self.log_bound[j] = bound
        if rescale:
            self.log_bound[j] = 0.0
        self.steps.append(BucketStep(v, bucket, out_vars + (v,), self.slots[j].plates, j, kernel, merges, rescale))
        return j

    def hand_up(self, leaf: frozenset, live: list) -> None:
        """Multiply each remaining slot of group ``leaf`` over the plates its variables do
        not live in (a :class:`PlateStep`) and hand it to the enclosing group, or to the
        totals when it has neither variables nor plates left.

        Raises
        ------
        IntractablePlatesError
            If a slot still depends on variables of plates it is outside of, or couples
            variables of plates that do not nest.
        """
        for i in live:
            vs = self.slots[i].vars
            parent = frozenset().union(*(self.var_plates.get(v, frozenset()) for v in vs)) if vs else frozenset()
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
            drop = tuple(p for p in self.slots[i].plates if p not in parent)
            if drop:
                j = self.new(vs, parent)
                self.steps.append(PlateStep(i, drop, j))
                self.log_bound[j] = 0.0
                i = j
            if vs or parent:
                self.groups.setdefault(parent, []).append(i)
            else:
                self.totals.append(i)


def union(a, b) -> tuple:
    """The variables of ``a`` then those of ``b`` not in ``a``: the variable order of a
    broadcast product of tables over ``a`` and over ``b``.

    Parameters
    ----------
    a, b : sequence[str]

    Returns
    -------
    tuple[str, ...]
    """
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
        merged = union(work[i], work[j])
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
