"""A chain's factors summed into one stacked ``plates + (L, K, K)`` log table, the input of
the parallel scan (:func:`ppl.ops.scan.chain_reduce`).

A markov loop of ``T`` steps has ``T`` emission factors and ``T - 1`` transition factors,
each its own table.  Where the tables come from :class:`~ppl.compiler.parametric.ParametricTables`
they are rows of a few stacked group tensors already (``(G,) + sizes``, one per group of
factors with the same shape); :func:`stack_chain` then takes the rows it needs from each
group tensor in one ``index_select`` instead of one op per factor, so building the stack,
and its backward pass, cost a few ops whatever ``T`` (Särkkä & García-Fernández 2021,
"Temporal parallelization of Bayesian smoothers", need the stack as one tensor; building it
per step would undo the scan's saving).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["chain_slot", "ChainLayout", "stack_chain"]


def chain_slot(chain, vars_) -> tuple:
    """Where a factor over chain variables ``vars_`` goes in the chain's stacked
    ``(L, K, K)`` table: ``("unary", t - 1)`` for a factor on ``x_t`` (added to the step
    into ``x_t``), ``("pair", i)`` for ``(x_i, x_{i+1})``, ``("pairT", i)`` for
    ``(x_{i+1}, x_i)`` (transposed)."""
    pos = chain.position
    if len(vars_) == 1:
        return "unary", pos[vars_[0]] - 1
    i, j = pos[vars_[0]], pos[vars_[1]]
    return ("pair", i) if j == i + 1 else ("pairT", j)


@dataclass
class ChainLayout:
    """Where each factor of a chain goes (structural, computed once per plan).

    Attributes
    ----------
    batch : tuple[int, ...]
        The chain's plate sizes.
    length, cardinality : int
        ``L`` steps and ``K`` states.
    parts : list[tuple[str, int, bool, tuple]]
        Per factor, ``(kind, slot, transposed, extra)``: ``"unary"`` or ``"pair"``, the
        step it is added to, whether its table is ``(x_{i+1}, x_i)``, and the plate dims
        of the table that the chain does not have (summed out: the product over plate
        copies that only touch this chain variable).
    plans : dict
        :func:`stack_chain`'s grouping of the parts per signature of group rows
        (computed at its first use: the rows a ParametricTables gives do not change).
    """

    batch: tuple
    length: int
    cardinality: int
    parts: list
    plans: dict = field(default_factory=dict)

    @staticmethod
    def of(chain, batch: tuple, factors: list) -> "ChainLayout":
        """The layout of ``factors`` (LogFactors, or anything with ``plates`` and ``vars``)."""
        length = len(chain.vars) - 1
        parts = []
        for f in factors:
            extra = tuple(i for i, p in enumerate(f.plates) if p not in chain.plates)
            kind, slot = chain_slot(chain, f.vars)
            parts.append(("pair" if kind == "pairT" else kind, slot % length, kind == "pairT", extra))
        return ChainLayout(tuple(batch), length, chain.cardinality, parts)

    def plan(self, rows: tuple, device) -> tuple:
        """``(grouped, loose)`` for ``rows`` (per part, ``(group, row)`` or None):
        ``grouped`` lists ``(kind, transposed, extra, group, index or None, slots)`` for
        the parts taken from one group tensor together (``index``: the rows to select,
        None when they are the whole tensor in order), ``loose`` the other parts."""
        key = (rows, str(device))
        if key not in self.plans:
            grouped: dict = {}
            loose = []
            for n, (kind, slot, transposed, extra) in enumerate(self.parts):
                if rows[n] is None:
                    loose.append(n)
                    continue
                g, r = rows[n]
                entry = grouped.setdefault((kind, transposed, extra, g), ([], []))
                entry[0].append(r)
                entry[1].append(slot)
            self.plans[key] = ([(kind, transposed, extra, g, torch.tensor(picked, dtype=torch.long, device=device),
                                 torch.tensor(slots, dtype=torch.long, device=device))
                                for (kind, transposed, extra, g), (picked, slots) in grouped.items()], loose)
        return self.plans[key]


def stack_chain(layout: ChainLayout, tables: list, rows: list | None = None, stacks: list | None = None, *,
                dtype, device) -> torch.Tensor:
    """Sum a chain's unary and pairwise log tables into ``batch + (L, K, K)``.

    Parameters
    ----------
    layout : ChainLayout
    tables : list[torch.Tensor]
        Each factor's log table (its layout: plates then variables), in ``layout.parts`` order.
    rows, stacks : list, optional
        Per factor, ``(g, i)`` when its table is row ``i`` of the group tensor
        ``stacks[g]`` ``(G,) + sizes`` (:class:`TableMap <ppl.compiler.parametric.evaluator.TableMap>`'s
        ``rows`` and ``stacks``), else None: rows of one group tensor that go the same way
        are taken in one ``index_select``.

    Returns
    -------
    torch.Tensor, shape ``batch + (L, K, K)``
        ``out[..., t, i, j]``: the pairwise table of step ``t`` plus the unary table of
        ``x_{t+1}`` (broadcast over ``i``).
    """
    k, nb = layout.cardinality, len(layout.batch)
    tails = {"unary": (k,), "pair": (k, k)}
    grouped, loose = layout.plan(tuple(rows) if rows is not None else (None,) * len(layout.parts), device)
    slots: dict = {"unary": [], "pair": []}
    stacked_parts: dict = {"unary": [], "pair": []}
    loose_slots: dict = {"unary": [], "pair": []}
    for n in loose:
        kind, slot, transposed, extra = layout.parts[n]
        table = tables[n].sum(dim=extra) if extra else tables[n]
        table = table.transpose(-1, -2) if transposed else table
        loose_slots[kind].append(slot)
        stacked_parts[kind].append(table.expand(layout.batch + tails[kind]).unsqueeze(nb))
    for kind, where in loose_slots.items():
        if where:
            slots[kind].append(torch.tensor(where, dtype=torch.long, device=device))
    for kind, transposed, extra, g, index, where in grouped:
        t = stacks[g]
        if index.numel() != t.shape[0] or not _identity(index):
            t = t.index_select(0, index.to(t.device))
        if extra:
            t = t.sum(dim=tuple(e + 1 for e in extra))
        if transposed:
            t = t.transpose(-1, -2)
        slots[kind].append(where)
        stacked_parts[kind].append(t.expand((index.numel(),) + layout.batch + tails[kind]).movedim(0, nb))
    out = {}
    for kind, tail in tails.items():
        zero = torch.zeros(layout.batch + (layout.length,) + tail, dtype=dtype, device=device)
        if slots[kind]:
            zero = zero.index_add(nb, torch.cat(slots[kind]), torch.cat(stacked_parts[kind], nb).to(dtype))
        out[kind] = zero
    return out["pair"] + out["unary"].unsqueeze(-2)


def _identity(index: torch.Tensor) -> bool:
    """Whether ``index`` is ``0, 1, ..., n-1`` (then no select is needed); cached on the tensor."""
    cached = getattr(index, "_ppl_identity", None)
    if cached is None:
        cached = bool((index == torch.arange(index.numel(), device=index.device)).all())
        index._ppl_identity = cached
    return cached
