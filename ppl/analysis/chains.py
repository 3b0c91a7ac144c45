"""Detection of long chains of latent variables (HMM-style ``markov`` loops).

A chain is a path ``a - u_1 - ... - u_m - b`` in the moral graph whose interior
variables ``u_i`` have exactly two neighbours, the same cardinality and plates as
their neighbours, and only unary or consecutive-pairwise factors.  Such a chain is
contracted by a parallel scan (:mod:`ppl.ops.scan`) instead of ``m`` Python-level
elimination steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import networkx as nx

__all__ = ["Chain", "find_chains"]

MIN_CHAIN_INTERIOR = 8


@dataclass(frozen=True)
class Chain:
    """A detected chain: ``vars[0]`` and ``vars[-1]`` are its ends, the rest its interior.

    Attributes
    ----------
    vars : tuple[str, ...]
    cardinality : int
    plates : tuple[str, ...]
    """

    vars: tuple
    cardinality: int
    plates: tuple

    @property
    def interior(self) -> tuple:
        return self.vars[1:-1]

    @cached_property
    def position(self) -> dict:
        """Variable -> its index ``t`` along the chain."""
        return {v: t for t, v in enumerate(self.vars)}


def find_chains(moral: nx.Graph, scopes: dict, min_interior: int = MIN_CHAIN_INTERIOR) -> list:
    """Find maximal chains with at least ``min_interior`` interior variables.

    Parameters
    ----------
    moral : networkx.Graph
        Moral graph of the discrete latents (node attributes ``cardinality``, ``plates``).
    scopes : dict[str, tuple[str, ...]]
        Factor -> discrete latent variables in its scope.
    min_interior : int

    Returns
    -------
    list[Chain]
    """
    factor_ok = {}
    for scope in scopes.values():
        for v in scope:
            factor_ok[v] = factor_ok.get(v, True) and len(scope) <= 2
    attrs = moral.nodes

    def eligible(v):
        if moral.degree(v) != 2 or not factor_ok.get(v, True):
            return False
        card, plates = attrs[v]["cardinality"], attrs[v]["plates"]
        return all(attrs[u]["cardinality"] == card and attrs[u]["plates"] == plates for u in moral[v])

    rank = {v: i for i, v in enumerate(moral.nodes)}  # trace order: results independent of hashing
    interior = [v for v in moral.nodes if eligible(v)]
    sub = moral.subgraph(interior)
    chains = []
    for comp in sorted(nx.connected_components(sub), key=lambda c: min(rank[v] for v in c)):
        if len(comp) < min_interior:
            continue
        ends = sorted((v for v in comp if sub.degree(v) <= 1), key=rank.__getitem__)
        if len(ends) != 2 and len(comp) > 1:
            continue  # a cycle
        start = ends[0] if ends else next(iter(comp))
        path = [start]
        prev = None
        while True:
            nxt = [u for u in sub[path[-1]] if u != prev]
            if not nxt:
                break
            prev = path[-1]
            path.append(nxt[0])
        a = [u for u in moral[path[0]] if u not in comp]
        b = [u for u in moral[path[-1]] if u not in comp]
        if len(path) == 1:  # one interior variable: its two neighbours are the ends
            around = sorted(moral[path[0]], key=rank.__getitem__)
            a, b = around[:1], around[1:]
        if len(a) != 1 or len(b) != 1 or a[0] == b[0]:
            continue
        node = path[0]
        chains.append(Chain((a[0], *path, b[0]), attrs[node]["cardinality"], tuple(attrs[node]["plates"])))
    return chains
