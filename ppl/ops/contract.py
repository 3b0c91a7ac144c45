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

The plan, and how plates and chains are eliminated, is :mod:`ppl.ops.plan` (tensor
variable elimination, Obermeyer et al. 2019, Alg. 1); its names are re-exported here.

:func:`naive_contract` is the slow, obviously right reference: it builds the whole joint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .plan import (BucketStep, ChainStep, EliminationPlan, IntractablePlatesError, PlateStep, Slot,
                   plan_elimination, union)
from .scan import chain_backtrace, chain_reduce, choose
from .semiring import reduce

__all__ = [
    "LogFactor", "ChainFactor", "EliminationPlan", "plan_elimination", "Tape", "align_table",
    "contract", "naive_contract", "IntractablePlatesError",
    # the plan's parts, defined in ppl.ops.plan
    "Slot", "ChainStep", "BucketStep", "PlateStep", "union",
]


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
def _plan_for(factors, order, var_plates, plate_order):
    """The :class:`EliminationPlan` of ``factors`` (:func:`plan_elimination` of their scopes)."""
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
            values[rec.var] = choose(table, mode, generator)
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
