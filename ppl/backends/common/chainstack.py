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

from dataclasses import dataclass

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
    """

    batch: tuple
    length: int
    cardinality: int
    parts: list

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


def stack_chain(layout: ChainLayout, tables: list, sources: list | None = None, *, dtype, device) -> torch.Tensor:
    """Sum a chain's unary and pairwise log tables into ``batch + (L, K, K)``.

    Parameters
    ----------
    layout : ChainLayout
    tables : list[torch.Tensor]
        Each factor's log table (its layout: plates then variables), in ``layout.parts`` order.
    sources : list, optional
        Per factor, ``(stacked, i)`` when its table is row ``i`` of a group tensor
        ``stacked`` ``(G,) + sizes`` (:attr:`TableMap.sources
        <ppl.compiler.parametric.evaluator.TableMap>`), else None: rows of one group
        tensor that go the same way are taken in one ``index_select``.

    Returns
    -------
    torch.Tensor, shape ``batch + (L, K, K)``
        ``out[..., t, i, j]``: the pairwise table of step ``t`` plus the unary table of
        ``x_{t+1}`` (broadcast over ``i``).
    """
    k, nb = layout.cardinality, len(layout.batch)
    tails = {"unary": (k,), "pair": (k, k)}
    slots: dict = {"unary": [], "pair": []}
    stacks: dict = {"unary": [], "pair": []}
    grouped: dict = {}
    for n, (kind, slot, transposed, extra) in enumerate(layout.parts):
        src = sources[n] if sources is not None else None
        if src is not None:
            entry = grouped.setdefault((kind, transposed, extra, id(src[0])), (src[0], [], []))
            entry[1].append(src[1])
            entry[2].append(slot)
            continue
        table = tables[n].sum(dim=extra) if extra else tables[n]
        table = table.transpose(-1, -2) if transposed else table
        slots[kind].append(slot)
        stacks[kind].append(table.expand(layout.batch + tails[kind]).unsqueeze(nb))
    for (kind, transposed, extra, _), (stacked, rows, where) in grouped.items():
        if rows != list(range(stacked.shape[0])):
            stacked = stacked.index_select(0, torch.tensor(rows, dtype=torch.long, device=stacked.device))
        if extra:
            stacked = stacked.sum(dim=tuple(e + 1 for e in extra))
        if transposed:
            stacked = stacked.transpose(-1, -2)
        slots[kind].extend(where)
        stacks[kind].append(stacked.expand((len(rows),) + layout.batch + tails[kind]).movedim(0, nb))
    out = {}
    for kind, tail in tails.items():
        zero = torch.zeros(layout.batch + (layout.length,) + tail, dtype=dtype, device=device)
        if slots[kind]:
            index = torch.tensor(slots[kind], dtype=torch.long, device=device)
            zero = zero.index_add(nb, index, torch.cat(stacks[kind], nb).to(dtype))
        out[kind] = zero
    return out["pair"] + out["unary"].unsqueeze(-2)
