"""Discrete Bayesian networks from conditional probability tables.

A Bayesian network over discrete variables ``X_1, ..., X_n`` is a DAG together with one
conditional probability table (CPT) per node; its joint distribution factorises as

    P(X_1, ..., X_n) = prod_i P(X_i | Pa(X_i))

(Koller & Friedman 2009, *Probabilistic Graphical Models*, §3.2.3, the chain rule for
Bayesian networks).  :func:`bayesian_network` turns such a specification into an
ordinary :class:`ppl.dsl.Model`: one ``pyro.sample`` site per node, sampled in
topological order from a ``Categorical`` whose probabilities are the CPT row selected by
the parents' values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx
import numpy as np
import pyro
import pyro.distributions as dist
import torch

from ..dsl import Model, Vindex
from ..dsl import model as _make_model
from ..errors import ModelError

__all__ = ["bayesian_network"]

#: Tolerance on ``|sum of a CPT row - 1|``.
ROW_SUM_ATOL = 1e-6


def bayesian_network(
    cpds: Mapping[str, tuple[Any, Any]],
    state_names: Mapping[str, Any] | None = None,
    name: str = "bayesian_network",
) -> Model:
    """Build a :class:`~ppl.dsl.Model` of a discrete Bayesian network from its CPTs.

    The model's joint distribution is the Bayesian-network factorisation
    ``P(X) = prod_i P(X_i | Pa(X_i))`` (Koller & Friedman 2009, §3.2).  The model
    function takes no arguments; it samples every node in topological order (ties broken
    by the order of ``cpds``) as

    ``pyro.sample(node, Categorical(logits=Vindex(log_table)[parent_1_value, ..., parent_k_value]))``

    so each site is named exactly as its node and category ``i`` of a node is its
    ``i``-th state.  ``Vindex`` (``pyro.ops.indexing``) broadcasts parent values that
    carry extra batch dimensions, as under Pyro's parallel enumeration (a parent's value
    may be a long tensor of shape ``(K, 1, ..., 1)``).

    The Categorical is built from ``logits = log(table)``, not ``probs = table``:
    ``Categorical(probs=p)`` clamps ``p`` to ``[eps, 1 - eps]`` before taking logs, so a
    zero entry would get log-probability ``log(2.2e-16) = -36.04`` instead of ``-inf``
    (deterministic CPTs, such as asia's ``either = lung OR tub``, are common: 953 of
    munin's 1041 tables hold zeros).  With logits, ``log_prob`` is exactly
    ``log table[..., i]`` to rounding (``-inf`` for impossible states) and ``fn.probs`` is the
    table row.

    Rows are validated to sum to 1 within ``1e-6`` and then divided by their sums, so
    the stored tables are exactly the conditional distributions the model samples from
    (a Categorical normalises its row anyway; the bnlearn files round to 1e-7).

    Parameters
    ----------
    cpds : mapping of str to (parents, table)
        Node name -> ``(parents, table)``.  ``parents`` is a list (or tuple) of node
        names, possibly empty.  ``table`` is array-like (numpy array, torch tensor,
        nested lists) of shape ``(card(parent_1), ..., card(parent_k), card(node))``
        holding ``P(node | parents)``: ``table[j_1, ..., j_k, i] = P(node = i | parent_1
        = j_1, ..., parent_k = j_k)``; the last axis sums to 1.  A root node's table has
        shape ``(card(node),)``.  A node's cardinality is the length of the last axis of
        its own table.  The user's arrays are copied, never modified.
    state_names : mapping of str to list, optional
        Node -> names of its states (``state_names[node][i]`` names state ``i``); lets
        ``data={node: "state name"}`` be used.  Nodes may be left out.
    name : str, default "bayesian_network"
        Display name of the model.

    Returns
    -------
    Model
        A ppl model (a valid Pyro model) with extra attributes:

        - ``cpds``: dict node -> ``(parents tuple, table)``, the table a float64
          ``torch.Tensor`` of shape ``(card(parent_1), ..., card(parent_k), card(node))``,
          rows normalised (a description of the model: modifying it does not change
          the model);
        - ``nodes``: list of node names in the topological order the model samples them;
        - ``cardinalities``: dict node -> number of states (int);
        - ``state_names``: dict node -> list of state names (nodes given in
          ``state_names`` only).

        Calling the model returns a dict node -> sampled value (long tensor).

    Raises
    ------
    TypeError
        If ``cpds`` or ``state_names`` is not a mapping, or ``name`` not a string.
    ModelError
        If ``cpds`` is empty; a node name is not a string; an entry is not a
        ``(parents, table)`` pair; a parent is unknown or repeated; the parents form a
        cycle (the message names the cycle); a table is not numeric, has the wrong shape
        for its parents' cardinalities, holds NaN/inf or negative entries, or has a row
        that does not sum to 1 (absolute tolerance 1e-6); ``state_names`` names an
        unknown node, has the wrong number of names, or repeats a name.  Every message
        names the node at fault.

    References
    ----------
    D. Koller and N. Friedman, *Probabilistic Graphical Models: Principles and
    Techniques*, MIT Press, 2009, §3.2 (Bayesian networks; factorisation
    ``P(X) = prod_i P(X_i | Pa(X_i))``).

    Examples
    --------
    >>> import ppl.models
    >>> bn = ppl.models.bayesian_network({
    ...     "rain": ([], [0.8, 0.2]),
    ...     "wet": (["rain"], [[0.9, 0.1], [0.2, 0.8]]),
    ... }, state_names={"rain": ["no", "yes"], "wet": ["no", "yes"]})
    >>> bn.nodes, bn.cardinalities
    (['rain', 'wet'], {'rain': 2, 'wet': 2})
    """
    if not isinstance(cpds, Mapping):
        raise TypeError(f"bayesian_network: cpds must be a mapping node -> (parents, table), got {type(cpds).__name__}")
    if len(cpds) == 0:
        raise ModelError("bayesian_network: cpds is empty; expected at least one node -> (parents, table)")
    if not isinstance(name, str):
        raise TypeError(f"bayesian_network: name must be a string, got {type(name).__name__}")
    if state_names is not None and not isinstance(state_names, Mapping):
        raise TypeError(
            f"bayesian_network: state_names must be a mapping node -> list of names, got {type(state_names).__name__}"
        )

    parents_of, tables = _split_entries(cpds)
    order = topological_order(parents_of)
    cardinalities = {node: int(tables[node].shape[-1]) for node in parents_of}
    for node in order:
        _check_table(node, parents_of[node], tables[node], cardinalities)
    names = check_state_names(state_names, cardinalities)

    stored = {}
    for node in order:
        table = tables[node] / tables[node].sum(-1, keepdims=True)
        stored[node] = (parents_of[node], torch.from_numpy(table))
    fn = _make_model_function(order, stored)
    fn.__name__ = name if name.isidentifier() else "bayesian_network"
    fn.__doc__ = f"Bayesian network '{name}' over {len(order)} discrete nodes (no arguments)."

    bn = _make_model(fn, name=name, state_names=names)
    bn.cpds = stored
    bn.nodes = list(order)
    bn.cardinalities = {node: cardinalities[node] for node in order}
    return bn


# ------------------------------------------------------------------ the model function
def _make_model_function(order, stored):
    """The Pyro model: one Categorical site per node, in topological order.

    Uses its own log tables (``log 0 = -inf``), so later edits of ``model.cpds`` do not
    reach it.
    """
    plan = [(node, stored[node][0], torch.log(stored[node][1])) for node in order]

    def bayesian_network_model():
        values = {}
        for node, parents, log_table in plan:
            if parents:
                logits = Vindex(log_table)[tuple(_as_index(values[p]) for p in parents)]
            else:
                logits = log_table
            values[node] = pyro.sample(node, dist.Categorical(logits=logits))
        return values

    return bayesian_network_model


def _as_index(value):
    """A parent's value as something that can index a table (long tensor or int)."""
    if isinstance(value, torch.Tensor):
        return value if value.dtype == torch.long else value.long()
    return torch.as_tensor(value).long()


# ------------------------------------------------------------------------- validation
def _split_entries(cpds):
    """node -> parents tuple, node -> float64 numpy copy of the table."""
    parents_of: dict[str, tuple] = {}
    tables: dict[str, np.ndarray] = {}
    for node, entry in cpds.items():
        if not isinstance(node, str):
            raise ModelError(f"bayesian_network: node names must be strings, got {node!r} ({type(node).__name__})")
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise ModelError(
                f"node '{node}': expected a (parents, table) pair, got {type(entry).__name__}"
                + (f" of length {len(entry)}" if isinstance(entry, (tuple, list)) else "")
            )
        parents, table = entry
        parents_of[node] = check_parents(node, parents, cpds, "cpds")
        tables[node] = _copy_table(node, table)
    return parents_of, tables


def check_parents(node, parents, known, where: str) -> tuple:
    """``parents`` of ``node`` as a tuple of known node names.

    Parameters
    ----------
    node : str
    parents : list or tuple of str
    known : collection of str
        Every node of the network.
    where : str
        The argument the nodes come from (``"cpds"``, ``"structure"``), for messages.

    Raises
    ------
    ModelError
        If ``parents`` is not a list/tuple (a bare string gets a did-you-mean hint), names
        an unknown node, or repeats one; the message names ``node``.
    """
    if isinstance(parents, str) or not isinstance(parents, (list, tuple)):
        raise ModelError(
            f"node '{node}': parents must be a list of node names, got {parents!r}"
            + (f"; did you mean ['{parents}']?" if isinstance(parents, str) else "")
        )
    parents = tuple(parents)
    for p in parents:
        if p not in known:
            raise ModelError(
                f"node '{node}': unknown parent {p!r}; every parent needs its own entry in {where} "
                f"(known nodes: {short_list(list(known))})"
            )
    if len(set(parents)) != len(parents):
        dup = sorted({p for p in parents if parents.count(p) > 1})
        raise ModelError(f"node '{node}': parent(s) {dup} listed more than once in {list(parents)}")
    return parents


def _copy_table(node, table) -> np.ndarray:
    if isinstance(table, torch.Tensor):
        arr = table.detach().cpu().to(torch.float64).numpy().copy()
    else:
        try:
            arr = np.array(table, dtype=np.float64)  # always a copy
        except (TypeError, ValueError) as e:
            raise ModelError(f"node '{node}': table is not a numeric array ({e})") from None
    if arr.ndim == 0:
        raise ModelError(
            f"node '{node}': table is a scalar; expected an array of shape (card(parent_1), ..., card(node))"
        )
    if arr.shape[-1] == 0:
        raise ModelError(f"node '{node}': table has shape {arr.shape}; a node needs at least one state")
    return arr


def topological_order(parents_of) -> list:
    """The nodes in a topological order (every parent before its children), ties broken
    by the order of ``parents_of``.

    Parameters
    ----------
    parents_of : mapping of str to tuple of str
        Node -> its parents (all nodes of the network, in the order to keep on ties).

    Returns
    -------
    list of str

    Raises
    ------
    ModelError
        If the parents form a cycle; the message names the cycle.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(parents_of)
    graph.add_edges_from((p, node) for node, ps in parents_of.items() for p in ps)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = [u for u, _ in nx.find_cycle(graph)]
        path = " -> ".join(cycle + [cycle[0]])
        raise ModelError(
            f"node '{cycle[-1]}': the parents form a cycle {path}; a Bayesian network's graph must be acyclic"
        )
    position = {node: i for i, node in enumerate(parents_of)}
    return list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))


def _check_table(node, parents, arr, cardinalities):
    expected = tuple(cardinalities[p] for p in parents) + (cardinalities[node],)
    if arr.shape != expected:
        layout = ", ".join([f"card({p})={cardinalities[p]}" for p in parents] + [f"card({node})={expected[-1]}"])
        raise ModelError(
            f"node '{node}': table has shape {arr.shape}; expected {expected} = ({layout}) "
            f"for parents {list(parents)} (the node's own states on the last axis)"
        )
    if not np.isfinite(arr).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ModelError(f"node '{node}': table holds {arr[idx]} at index {idx}; expected finite probabilities")
    if (arr < 0).any():
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise ModelError(
            f"node '{node}': table holds a negative entry {arr[idx]} at index {idx}; expected probabilities >= 0"
        )
    sums = arr.sum(-1)
    bad = np.abs(sums - 1.0) > ROW_SUM_ATOL
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0]) if sums.ndim else ()
        where = (
            "row for " + ", ".join(f"{p}={j}" for p, j in zip(parents, idx)) if parents else "its distribution"
        )
        raise ModelError(
            f"node '{node}': probabilities in {where} sum to {float(sums[idx]):.10g}; expected every row "
            f"(last axis) of P({node} | parents) to sum to 1 (atol {ROW_SUM_ATOL:g}); {int(bad.sum())} bad row(s)"
        )


def check_state_names(state_names, cardinalities) -> dict:
    """Validate ``state_names`` against the nodes' cardinalities.

    Parameters
    ----------
    state_names : mapping of str to list, or None
        Node -> names of its states (``state_names[node][i]`` names state ``i``).
    cardinalities : mapping of str to int
        Every node -> its number of states.

    Returns
    -------
    dict of str to list
        Node -> list of names (a copy; only the nodes given).

    Raises
    ------
    ModelError
        If a node is unknown, its names are not a list (a bare string), their number
        differs from its cardinality, or a name is repeated; the message names the node.
    """
    names: dict[str, list] = {}
    for node, states in (state_names or {}).items():
        if node not in cardinalities:
            raise ModelError(
                f"state_names: unknown node {node!r}; known nodes: {short_list(list(cardinalities))}"
            )
        if isinstance(states, str) or not hasattr(states, "__iter__"):
            raise ModelError(f"node '{node}': state_names must be a list of names, got {states!r}")
        states = list(states)
        if len(states) != cardinalities[node]:
            raise ModelError(
                f"node '{node}': {len(states)} state names {states} for a node with {cardinalities[node]} states"
            )
        if len(set(states)) != len(states):
            dup = [s for i, s in enumerate(states) if s in states[:i]]
            raise ModelError(f"node '{node}': duplicate state name(s) {dup} in {states}; state names must be unique")
        names[node] = states
    return names


def short_list(items, limit=20) -> str:
    """``str(items)`` for messages, cut after ``limit`` items with a count of all.

    Parameters
    ----------
    items : list
    limit : int, default 20

    Returns
    -------
    str
        ``"['a', 'b', ... (57 in all)]"`` for a long list.
    """
    if len(items) <= limit:
        return str(items)
    return str(items[:limit])[:-1] + f", ... ({len(items)} in all)]"
