"""Log-space variable elimination over plated factor graphs, in two semirings.

One engine serves log evidence and marginals (sum-product) and the MAP assignment
(max-product) by swapping the semiring, and exact joint samples / the argmax by
replaying the elimination backwards (a "tape" of bucket tables).

Plates follow tensor variable elimination (Obermeyer et al. 2019, "Tensor Variable
Elimination for Plated Factor Graphs", Alg. 1): factors are grouped by the set of plates
they live in; the deepest group eliminates the variables local to it, then takes the
product over the plates its remaining variables do not live in (a ``sum`` of log
values along those plate dims) and hands the result to the enclosing group.  A plate of
N i.i.d. copies thus costs N times one copy, never K**N.

Within a group, variables are eliminated in the order the analysis gives (min-fill by
default): each step combines the tables that mention the variable (broadcast ``+``)
and reduces it out (``logsumexp`` or ``max``); the largest table ever built is the
largest clique of that order, which is what the analysis budgets for.

Chains handed in as :class:`ChainFactor` are first contracted to their two ends by a
parallel scan (:mod:`ppl.ops.scan`).

:func:`naive_contract` is the slow, obviously right reference: it builds the whole
joint table.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from .scan import _choose, chain_backtrace, chain_reduce
from .semiring import reduce

__all__ = ["LogFactor", "ChainFactor", "Tape", "contract", "naive_contract"]


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


@dataclass
class _Step:
    var: str | None            # eliminated variable (None for a chain step)
    table: torch.Tensor         # bucket table: plates (global layout, size-1 if absent) + cards of vars
    vars: tuple                # variables of the bucket table, last one is `var`
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
    var_plates: dict
    semiring: str

    def backtrace(self, num_samples: int = 1, generator: torch.Generator | None = None) -> dict:
        """Values of every eliminated variable, drawn jointly (sum) or at the argmax (max).

        Variables are visited in reverse elimination order; each one is drawn from (or
        maximised over) its bucket table with the variables eliminated after it already
        fixed — forward filtering, backward sampling generalised to any elimination
        order (Koller & Friedman 2009, §9.6 and §13.3).

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
        for step in reversed(self.steps):
            if step.chain is not None:
                chain = step.chain
                first = _to_global(values[chain.vars[0]], ())
                last = _to_global(values[chain.vars[-1]], ())
                levels = [self._chain_level_global(lv, chain.plates) for lv in step.levels]
                if not levels:  # chain of one segment: nothing interior
                    continue
                decoded = chain_backtrace(levels, first, last, mode, generator)
                for t, name in enumerate(chain.vars[1:-1], start=1):
                    values[name] = decoded[..., t]
                continue
            table = step.table.unsqueeze(0)  # (1, G..., cards)
            ndim_plates = len(self.plate_order)
            for u in step.vars[:-1]:
                idx = values[u]  # (S, G...)
                pos = 1 + ndim_plates  # the first remaining card dim is always u's
                index = idx.reshape(idx.shape + (1,) * (table.dim() - idx.dim()))
                table = torch.take_along_dim(table, index, dim=pos).squeeze(pos)
            table = table.expand((num_samples,) + table.shape[1:]) if table.shape[0] == 1 else table
            values[step.var] = _choose(table, mode, generator)
        return values

    def _chain_level_global(self, level, plates):
        shape = tuple(self.plate_sizes[p] if p in plates else 1 for p in self.plate_order)
        return level.reshape(shape + level.shape[len(plates):])


def _to_global(x, _):
    return x


def _global_view(table: torch.Tensor, plates: tuple, plate_order: tuple) -> torch.Tensor:
    """Reshape a factor table whose leading dims follow ``plates`` (a subsequence of
    ``plate_order``) to the global plate layout (size 1 for absent plates)."""
    if plates == plate_order:
        return table
    n = len(plates)
    sizes = dict(zip(plates, table.shape[:n]))
    shape = tuple(sizes.get(p, 1) for p in plate_order)
    return table.reshape(shape + table.shape[n:])


def _combine(tables_vars, var_cards, out_vars, plate_order):
    """Broadcast-sum global-layout tables into one table over ``out_vars``."""
    nplate = len(plate_order)
    total = None
    for table, vars_ in tables_vars:
        # permute the var dims of `table` into out_vars order, inserting size-1 dims
        perm = [out_vars.index(v) for v in vars_]
        order = sorted(range(len(vars_)), key=lambda i: perm[i])
        t = table.permute(tuple(range(nplate)) + tuple(nplate + i for i in order))
        sorted_vars = [vars_[i] for i in order]
        shape = list(t.shape[:nplate])
        j = 0
        for v in out_vars:
            if j < len(sorted_vars) and sorted_vars[j] == v:
                shape.append(var_cards[v])
                j += 1
            else:
                shape.append(1)
        t = t.reshape(shape)
        total = t if total is None else total + t
    return total


def contract(factors, *, order, var_plates, plate_order=(), semiring="sum", tape=False):
    """Eliminate every variable of ``factors`` and return the semiring total.

    Parameters
    ----------
    factors : list[LogFactor | ChainFactor]
        Log tables; every table's leading dims follow its ``plates``.
    order : sequence[str]
        Elimination order; must contain every variable of the factors.
    var_plates : dict[str, frozenset[str]]
        The plates each variable lives in.  A factor's plates must include the plates
        of each of its variables.
    plate_order : tuple[str, ...]
        Global order of plate names (defines the layout of backtraced values).
    semiring : {"sum", "max"}
    tape : bool
        Record the bucket tables for :meth:`Tape.backtrace`.

    Returns
    -------
    total : torch.Tensor, scalar
        ``log Σ_x Π_f f(x)`` (sum) or ``log max_x Π_f f(x)`` (max), plates multiplied
        out.
    tape : Tape or None

    Raises
    ------
    ValueError
        If the plate structure is not tractable for plated elimination (a factor
        couples variables of two plates neither of which contains the other), or a
        variable is missing from ``order``.
    """
    plate_order = tuple(plate_order)
    rank = {v: i for i, v in enumerate(order)}
    var_cards: dict[str, int] = {}
    plate_sizes: dict[str, int] = {}
    groups: dict[frozenset, list] = {}
    for f in factors:
        n = len(f.plates)
        for p, s in zip(f.plates, f.table.shape[:n]):
            plate_sizes[p] = int(s)
        if isinstance(f, ChainFactor):
            k = f.table.shape[-1]
            for v in f.vars:
                var_cards[v] = int(k)
        else:
            for v, k in zip(f.vars, f.table.shape[n:]):
                var_cards[v] = int(k)
        groups.setdefault(frozenset(f.plates), []).append(f)
    missing = [v for v in var_cards if v not in rank]
    if missing:
        raise ValueError(f"variables {missing} are not in the elimination order")

    steps: list[_Step] = []
    total = None
    while groups:
        leaf = max(groups, key=len)
        terms = groups.pop(leaf)
        leaf_plates = tuple(p for p in plate_order if p in leaf)
        # 1. chains first: contract each to a pairwise factor between its ends
        flat = []
        for f in terms:
            if isinstance(f, ChainFactor):
                end, levels = chain_reduce(f.table, semiring, keep_levels=tape)
                flat.append((_global_view(end, f.plates, plate_order), (f.vars[0], f.vars[-1])))
                if tape:
                    steps.append(_Step(None, None, f.vars, chain=f, levels=levels))
            else:
                flat.append((_global_view(f.table, f.plates, plate_order), tuple(f.vars)))
        # 2. eliminate the variables local to this plate set, in the given order
        local = sorted({v for _, vs in flat for v in vs if var_plates.get(v, frozenset()) == leaf}, key=rank.__getitem__)
        for v in local:
            bucket = [tv for tv in flat if v in tv[1]]
            flat = [tv for tv in flat if v not in tv[1]]
            out_vars = tuple(sorted({u for _, vs in bucket for u in vs if u != v}, key=rank.__getitem__, reverse=True)) + (v,)
            joint = _combine(bucket, var_cards, out_vars, plate_order)
            if tape:
                steps.append(_Step(v, joint, out_vars))
            flat.append((reduce(joint, joint.dim() - 1, semiring), out_vars[:-1]))
        # 3. multiply out plates the remaining variables do not live in; pass to parent
        for table, vs in flat:
            parent = frozenset().union(*(var_plates.get(v, frozenset()) for v in vs)) if vs else frozenset()
            if not parent <= leaf or (parent == leaf and vs):
                raise ValueError(
                    f"plated elimination is intractable here: variables {list(vs)} remain in plates "
                    f"{sorted(leaf)} after eliminating the variables local to them"
                )
            drop = tuple(i for i, p in enumerate(plate_order) if p in leaf and p not in parent)
            if drop:
                table = table.sum(dim=drop, keepdim=True)
            if not vs and not parent:
                s = table.sum()
                total = s if total is None else total + s
            else:
                par = tuple(p for p in plate_order if p in parent)
                idx = tuple(i for i, p in enumerate(plate_order) if p in parent)
                squeezed = table.reshape(tuple(table.shape[i] for i in idx) + table.shape[len(plate_order):])
                groups.setdefault(parent, []).append(LogFactor(squeezed, par, vs))
    if total is None:
        total = torch.zeros((), dtype=torch.get_default_dtype())
    rec = Tape(steps, plate_order, plate_sizes, dict(var_plates), semiring) if tape else None
    return total, rec


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


def brute_force_assignments(var_cards: dict):
    """All joint assignments of ``var_cards`` (dict var -> cardinality), as dicts.  For tests."""
    names = list(var_cards)
    for values in itertools.product(*(range(var_cards[n]) for n in names)):
        yield dict(zip(names, values))
