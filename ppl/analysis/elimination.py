"""Elimination orders and the cost of plated variable elimination.

The order comes from networkx's treewidth heuristics (min-fill-in by default,
min-degree as an option; Bodlaender & Koster 2010): the tree decomposition they return
is peeled leaf by leaf into a perfect elimination order whose largest bucket is the
largest bag.  :func:`elimination_cost` then replays the plated elimination of
:func:`ppl.ops.contract.contract` symbolically (sets, not tensors) to give the largest
table it will allocate, plate-aware: a table replicated over a plate of N copies costs
N times one copy (Obermeyer et al. 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
from networkx.algorithms.approximation import treewidth_min_degree, treewidth_min_fill_in

__all__ = ["HEURISTICS", "elimination_order", "EliminationCost", "elimination_cost"]

HEURISTICS = ("min_fill", "min_degree")


def elimination_order(graph: nx.Graph, heuristic: str = "min_fill") -> list:
    """An elimination order of ``graph``'s nodes from a treewidth heuristic.

    Parameters
    ----------
    graph : networkx.Graph
        Interaction (moral) graph.
    heuristic : {"min_fill", "min_degree"}

    Returns
    -------
    list
        Every node of ``graph`` once.

    Raises
    ------
    ValueError
        For an unknown heuristic.
    """
    if heuristic not in HEURISTICS:
        raise ValueError(f"heuristic must be one of {HEURISTICS}, got {heuristic!r}")
    order: list = []
    for comp in nx.connected_components(graph):
        sub = graph.subgraph(comp)
        if len(comp) <= 2:
            order.extend(sorted(comp, key=str))
            continue
        decompose = treewidth_min_fill_in if heuristic == "min_fill" else treewidth_min_degree
        _, tree = decompose(sub)
        order.extend(_order_from_decomposition(tree))
    return order


def _order_from_decomposition(tree: nx.Graph) -> list:
    """Peel a tree decomposition (bags are frozensets) from the leaves: each bag
    eliminates the variables it does not share with its parent."""
    if tree.number_of_nodes() == 0:
        return []
    root = max(tree.nodes, key=len)
    parent = dict(nx.bfs_predecessors(tree, root))
    order, done = [], set()
    for bag in nx.dfs_postorder_nodes(tree, root):
        keep = parent.get(bag, frozenset())
        for v in sorted(bag - keep - done, key=str):
            order.append(v)
            done.add(v)
    return order


@dataclass
class EliminationCost:
    """What plated elimination in a given order will allocate.

    Attributes
    ----------
    width : int
        Largest bucket size − 1 (an upper bound on the treewidth of the template graph).
    largest_clique : tuple[str, ...]
        Variables of the largest table (by entries, plates included).
    clique_states : int
        Joint states of the largest clique's variables (one plate copy).
    clique_plates : tuple[str, ...]
        Plates that table is replicated over.
    peak_entries : int
        Entries of the largest table: ``clique_states`` × product of its plate sizes.
    total_entries : int
        Sum of the entries of every bucket table (≈ flops of one pass; the memory
        autograd holds when marginals are computed).
    intractable : str or None
        Why plated elimination cannot proceed (plates that cross), else ``None``.
    """

    width: int = 0
    largest_clique: tuple = ()
    clique_states: int = 1
    clique_plates: tuple = ()
    peak_entries: int = 1
    total_entries: int = 0
    intractable: str | None = None
    steps: list = field(default_factory=list, repr=False)

    def bytes(self, itemsize: int = 8) -> int:
        """Bytes of the largest table at ``itemsize`` bytes per entry (8: float64)."""
        return self.peak_entries * itemsize


def elimination_cost(scopes, var_plates: dict, cards: dict, plate_sizes: dict, order, chains=()) -> EliminationCost:
    """Replay plated elimination on scopes (no tensors) and measure its tables.

    Mirrors :func:`ppl.ops.contract.contract` step for step.

    Parameters
    ----------
    scopes : iterable of (frozenset[str], frozenset[str])
        ``(variables, plates)`` of every factor (chain interiors excluded).
    var_plates : dict[str, frozenset[str]]
    cards : dict[str, int]
    plate_sizes : dict[str, int]
    order : sequence[str]
        Elimination order of every variable in ``scopes``.
    chains : iterable of ppl.analysis.chains.Chain
        Chains contracted by scan first; each adds a factor over its two ends.

    Returns
    -------
    EliminationCost
    """
    rank = {v: i for i, v in enumerate(order)}
    cost = EliminationCost()
    groups: dict[frozenset, list] = {}
    for vs, ps in scopes:
        groups.setdefault(frozenset(ps), []).append(frozenset(vs))
    for ch in chains:
        ps = frozenset(ch.plates)
        groups.setdefault(ps, []).append(frozenset((ch.vars[0], ch.vars[-1])))
        reps = math.prod(plate_sizes[p] for p in ps)
        cost.total_entries += len(ch.vars) * ch.cardinality ** 2 * reps

    def record(vs, plates):
        states = math.prod(cards[v] for v in vs)
        entries = states * math.prod(plate_sizes[p] for p in plates)
        cost.total_entries += entries
        cost.width = max(cost.width, len(vs) - 1)
        if entries > cost.peak_entries or not cost.largest_clique:
            cost.peak_entries, cost.clique_states = entries, states
            cost.largest_clique = tuple(sorted(vs, key=lambda v: rank.get(v, -1)))
            cost.clique_plates = tuple(sorted(plates))

    while groups:
        leaf = max(groups, key=len)
        terms = groups.pop(leaf)
        local = sorted({v for t in terms for v in t if var_plates.get(v, frozenset()) == leaf}, key=rank.__getitem__)
        for v in local:
            bucket = [t for t in terms if v in t]
            terms = [t for t in terms if v not in t]
            joint = frozenset().union(*bucket)
            record(joint, leaf)
            cost.steps.append((v, joint, leaf))
            terms.append(joint - {v})
        for t in terms:
            parent = frozenset().union(*(var_plates.get(v, frozenset()) for v in t)) if t else frozenset()
            if not parent <= leaf or (parent == leaf and t):
                cost.intractable = (
                    f"variables {sorted(t)} stay coupled inside plates {sorted(leaf)}: a factor joins variables "
                    f"of plates that do not nest, or depends on every copy of a plated variable"
                )
                return cost
            if t:
                groups.setdefault(parent, []).append(t)
    return cost
