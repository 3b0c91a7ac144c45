"""Elimination orders and the cost of plated variable elimination.

The order comes from networkx's treewidth heuristics (min-fill-in by default,
min-degree as an option; Bodlaender & Koster 2010): the tree decomposition they return
is peeled leaf by leaf into a perfect elimination order whose largest bucket is the
largest bag.  :func:`elimination_cost` measures the tables of the symbolic plan
(:func:`ppl.ops.contract.plan_elimination`) that the exact backend will run,
plate-aware: a table replicated over a plate of N copies costs N times one copy
(Obermeyer et al. 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
from networkx.algorithms.approximation import treewidth_min_degree, treewidth_min_fill_in

from ..ops.contract import IntractablePlatesError, plan_elimination

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
    # networkx breaks ties by set iteration order; integer labels (in the graph's node
    # order, i.e. trace order) make that, and so the order, independent of PYTHONHASHSEED
    names = list(graph.nodes)
    index = {v: i for i, v in enumerate(names)}
    relabelled = nx.relabel_nodes(graph, index, copy=True)
    order: list = []
    for comp in sorted(nx.connected_components(relabelled), key=min):
        sub = relabelled.subgraph(comp)
        if len(comp) <= 2:
            order.extend(sorted(comp))
            continue
        decompose = treewidth_min_fill_in if heuristic == "min_fill" else treewidth_min_degree
        _, tree = decompose(sub)
        order.extend(_order_from_decomposition(tree))
    return [names[i] for i in order]


def _order_from_decomposition(tree: nx.Graph) -> list:
    """Peel a tree decomposition (bags are frozensets) from the leaves: each bag
    eliminates the variables it does not share with its parent."""
    if tree.number_of_nodes() == 0:
        return []
    root = max(tree.nodes, key=lambda bag: (len(bag), sorted(bag)))
    parent = dict(nx.bfs_predecessors(tree, root))
    order, done = [], set()
    for bag in nx.dfs_postorder_nodes(tree, root):
        keep = parent.get(bag, frozenset())
        for v in sorted(bag - keep - done):
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
    plan: object = field(default=None, repr=False)

    def bytes(self, itemsize: int = 8) -> int:
        """Bytes of the largest table at ``itemsize`` bytes per entry (8: float64)."""
        return self.peak_entries * itemsize


def elimination_cost(scopes, var_plates: dict, cards: dict, plate_sizes: dict, order, chains=(),
                     plate_order=None) -> EliminationCost:
    """Plan plated elimination (:func:`ppl.ops.contract.plan_elimination`, the plan the
    exact backend runs) and measure its tables.

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
    plate_order : tuple[str, ...], optional
        Defaults to sorted plate names.

    Returns
    -------
    EliminationCost
    """
    plate_order = tuple(sorted(plate_sizes)) if plate_order is None else tuple(plate_order)
    inputs = [(tuple(vs), tuple(p for p in plate_order if p in ps), False) for vs, ps in scopes]
    inputs += [(tuple(ch.vars), tuple(p for p in plate_order if p in ch.plates), True) for ch in chains]
    cost = EliminationCost()
    for ch in chains:
        reps = math.prod(plate_sizes[p] for p in ch.plates)
        cost.total_entries += (len(ch.vars) - 1) * ch.cardinality ** 2 * reps
    try:
        plan = plan_elimination(inputs, order, var_plates, plate_order, cards)
    except IntractablePlatesError as e:
        cost.intractable = str(e)
        return cost
    rank = {v: i for i, v in enumerate(order)}
    for step in plan.buckets():
        states = math.prod(cards[v] for v in step.joint_vars)
        entries = states * math.prod(plate_sizes[p] for p in step.plates)
        cost.total_entries += entries
        cost.width = max(cost.width, len(step.joint_vars) - 1)
        if entries > cost.peak_entries or not cost.largest_clique:
            cost.peak_entries, cost.clique_states = entries, states
            cost.largest_clique = tuple(sorted(step.joint_vars, key=lambda v: rank.get(v, -1)))
            cost.clique_plates = tuple(step.plates)
    cost.plan = plan
    return cost
