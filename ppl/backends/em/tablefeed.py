"""Feeding re-evaluated factor tables into a compiled :class:`~ppl.backends.common.discrete.DiscretePlan`
and reading each factor's posterior weights back, without a Python loop over factors.

:class:`~ppl.compiler.parametric.ParametricTables` evaluates factors in stacked groups
(the ``T`` emission factors of an HMM are one tensor); a DiscretePlan wants the factors
outside chains one by one and each chain as one ``plates + (L, K, K)`` table.  A
:class:`TableFeed` precomputes, once, where every group row goes (a factor slot, or a
position of a chain: pairwise, transposed pairwise, or unary) and moves whole groups with
``index_add`` / ``index_select``.  The reverse direction turns the plan's factor and
chain marginals into one weight tensor per group: ``W_f(x_f) = p(x_f | v)``, the
responsibilities of the E-step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..common.chainstack import chain_slot

__all__ = ["TableFeed"]


@dataclass
class _Piece:
    """Rows of one source that go to one chain in the same way."""

    source: object  # group index (int) or factor name (str)
    rows: torch.Tensor  # rows of the group (LongTensor), or None for a named factor
    slots: torch.Tensor  # chain position of each row (LongTensor)
    kind: str  # "pair", "pairT" or "unary"
    extra: tuple  # dims (of a member table) of plates outside the chain, summed out
    extra_sizes: tuple


class TableFeed:
    """See the module docstring.

    Parameters
    ----------
    plan : DiscretePlan
    pt : ParametricTables
        Its factors are the plan's.
    """

    def __init__(self, plan, pt):
        self.plan = plan
        self.pt = pt
        self.member_of = {n: (gi, i) for gi, g in enumerate(pt.groups) for i, n in enumerate(g.members)}
        self.standalone = list(plan.factors)
        # standalone rows per group, to write group weights in one go
        self.group_rows: dict = {}
        for k, n in enumerate(self.standalone):
            if n in self.member_of:
                gi, i = self.member_of[n]
                self.group_rows.setdefault(gi, ([], []))
                self.group_rows[gi][0].append(i)
                self.group_rows[gi][1].append(k)
        self.chain_pieces = [self._pieces(c) for c in range(len(plan.chains))]

    def _pieces(self, c) -> list:
        plan = self.plan
        chain = plan.chains[c]
        cplates = plan.chain_plates[c]
        buckets: dict = {}
        for n in plan.chain_members[c]:
            plates, vars_ = self.pt.layouts[n]
            kind, slot = chain_slot(chain, vars_)
            extra = tuple(d for d, p in enumerate(plates) if p not in cplates)
            sizes = tuple(plan.graph.plates[plates[d]].size for d in extra)
            gi, row = self.member_of.get(n, (n, None))
            key = (gi, kind, extra, sizes)
            rows, slots = buckets.setdefault(key, ([], []))
            rows.append(row)
            slots.append(slot)
        dev = plan.device
        return [_Piece(gi, None if isinstance(gi, str) else torch.tensor(rows, device=dev),
                       torch.tensor(slots, device=dev), kind, extra, sizes)
                for (gi, kind, extra, sizes), (rows, slots) in buckets.items()]

    # ------------------------------------------------------------ forward
    def assemble(self, group_tables: list, other: dict):
        """Plan inputs from group tables (``(G,) + sizes`` each) and the other factors'
        tables (name -> table).

        Returns
        -------
        tables : list[torch.Tensor]
            In the order of ``plan.factors``.
        chain_tables : list[torch.Tensor]
            Per chain, ``plates + (L, K, K)``.
        """
        tables = []
        for n in self.standalone:
            if n in self.member_of:
                gi, i = self.member_of[n]
                tables.append(group_tables[gi][i])
            else:
                tables.append(other[n])
        return tables, [self._chain_table(c, group_tables, other) for c in range(len(self.plan.chains))]

    def _rows(self, piece, group_tables, other):
        if isinstance(piece.source, str):
            return other[piece.source].unsqueeze(0)
        return group_tables[piece.source].index_select(0, piece.rows)

    def _chain_table(self, c, group_tables, other):
        plan = self.plan
        chain = plan.chains[c]
        nb = len(plan.chain_plates[c])
        batch = tuple(plan.graph.plates[p].size for p in plan.chain_plates[c])
        length, k = len(chain.vars) - 1, chain.cardinality
        dtype = plan.dtype
        pair = torch.zeros(batch + (length, k, k), dtype=dtype, device=plan.device)
        unary = torch.zeros(batch + (length, k), dtype=dtype, device=plan.device)
        for piece in self.chain_pieces[c]:
            t = self._rows(piece, group_tables, other)  # (R,) + plates + vars
            if piece.extra:
                t = t.sum(dim=tuple(1 + d for d in piece.extra))
            t = t.movedim(0, nb)  # chain plates, R, vars
            if piece.kind == "unary":
                unary.index_add_(nb, piece.slots, t)
            else:
                pair.index_add_(nb, piece.slots, t.transpose(-1, -2) if piece.kind == "pairT" else t)
        return pair + unary.unsqueeze(-2)

    # ------------------------------------------------------------ backward
    def weights(self, factor_marginals: list, chain_marginals: list):
        """Posterior weights of every factor, grouped like the tables.

        Returns
        -------
        group_weights : list[torch.Tensor]
            Per group, ``(G,) + sizes``: ``p(x_f | v)`` of each member, broadcast over
            plate copies the member has beyond its variables' plates.
        other : dict[str, torch.Tensor]
            The same for factors outside groups.
        """
        plan = self.plan
        out = [None if len(g.members) == 1 and gi in self.group_rows else
               torch.zeros((len(g.members),) + g.template.sizes, dtype=plan.dtype, device=plan.device)
               for gi, g in enumerate(self.pt.groups)]
        other = {}
        for gi, (rows, ks) in self.group_rows.items():
            if len(self.pt.groups[gi].members) == 1:  # no copy: the group is this one factor
                out[gi] = factor_marginals[ks[0]].expand(self.pt.groups[gi].template.sizes).unsqueeze(0)
                continue
            out[gi].index_copy_(0, torch.tensor(rows, device=plan.device),
                                torch.stack([factor_marginals[k] for k in ks]))
        for k, n in enumerate(self.standalone):
            if n not in self.member_of:
                other[n] = factor_marginals[k]
        for c, pieces in enumerate(self.chain_pieces):
            m = chain_marginals[c]  # chain plates + (L, K, K)
            nb = len(plan.chain_plates[c])
            for piece in pieces:
                w = m.index_select(nb, piece.slots)
                if piece.kind == "unary":
                    w = w.sum(-2)
                elif piece.kind == "pairT":
                    w = w.transpose(-1, -2)
                w = w.movedim(nb, 0)  # (R,) + chain plates + vars
                for d, size in zip(piece.extra, piece.extra_sizes):
                    w = w.unsqueeze(1 + d)
                    shape = list(w.shape)
                    shape[1 + d] = size
                    w = w.expand(shape)
                if isinstance(piece.source, str):
                    other[piece.source] = w[0]
                else:
                    out[piece.source].index_copy_(0, piece.rows, w)
        return out, other
