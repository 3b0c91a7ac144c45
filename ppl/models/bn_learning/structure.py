"""The graph of a learnable Bayesian network: checks of the builder's arguments, and the
structure (nodes, parents, cardinalities) read back from a learnable model or a network."""

from __future__ import annotations

import keyword
from collections.abc import Mapping

import numpy as np

from ...errors import ModelError
from ..bn import check_parents, short_list
from .columns import ROWS_PLATE

__all__ = ["check_structure", "check_cardinalities", "network_parts", "structure_of"]


def check_structure(structure) -> dict:
    """Node -> parents tuple of a learnable network's ``structure``.

    Parameters
    ----------
    structure : mapping of str to list of str
        Node -> its parents.

    Returns
    -------
    dict of str to tuple of str

    Raises
    ------
    ModelError
        If a node name is not a string, not a Python identifier (or a keyword), or is
        the plate's name ``"rows"``; or parents are malformed
        (:func:`~ppl.models.bn.check_parents`).
    """
    parents_of: dict[str, tuple] = {}
    for node, parents in structure.items():
        if not isinstance(node, str):
            raise ModelError(f"learnable_bayesian_network: node names must be strings, got {node!r}")
        if not node.isidentifier() or keyword.iskeyword(node):
            raise ModelError(
                f"node '{node}': node names must be Python identifiers (the model takes one keyword argument "
                "per node); rename the node"
            )
        if node == ROWS_PLATE:
            raise ModelError(f"node '{node}': the name '{ROWS_PLATE}' is taken by the plate over the data rows")
        parents_of[node] = check_parents(node, parents, structure, "structure")
    return parents_of


def check_cardinalities(cardinalities, parents_of) -> dict:
    """Node -> number of states, for every node of ``parents_of``.

    Parameters
    ----------
    cardinalities : mapping of str to int
    parents_of : mapping of str to tuple of str
        The checked structure (:func:`check_structure`).

    Returns
    -------
    dict of str to int
        In the order of ``parents_of``.

    Raises
    ------
    ModelError
        If ``cardinalities`` names an unknown node, misses one, or gives one a value
        that is not an integer >= 1.
    """
    unknown = [k for k in cardinalities if k not in parents_of]
    if unknown:
        raise ModelError(
            f"cardinalities: unknown node(s) {unknown}; nodes of the structure: {short_list(list(parents_of))}"
        )
    cards = {}
    for node in parents_of:
        if node not in cardinalities:
            raise ModelError(f"node '{node}': no entry in cardinalities; give its number of states")
        c = cardinalities[node]
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
            raise ModelError(f"node '{node}': cardinality {c!r}; expected an integer >= 1")
        cards[node] = int(c)
    return cards


def network_parts(network, caller):
    """``(network.cpds, network.cardinalities)`` of a Bayesian network model.

    Parameters
    ----------
    network : Model
        A network from :func:`~ppl.models.bayesian_network` (or ``read_bif``, ...).
    caller : str
        The public function asking, for messages.

    Returns
    -------
    cpds : mapping of str to (parents, table)
    cards : mapping of str to int

    Raises
    ------
    TypeError
        If either attribute is missing or not a mapping.
    """
    cpds = getattr(network, "cpds", None)
    cards = getattr(network, "cardinalities", None)
    if not isinstance(cpds, Mapping) or not isinstance(cards, Mapping):
        raise TypeError(
            f"{caller}: expected a Bayesian network model with 'cpds' and 'cardinalities' attributes "
            f"(ppl.models.bayesian_network / read_bif / example_network), got {type(network).__name__}"
        )
    return cpds, cards


def structure_of(model, caller):
    """The graph of a learnable model or of a network with ``cpds``.

    Parameters
    ----------
    model : Model
        A learnable network (``nodes``, ``parents``, ``cardinalities``) or a network
        with ``cpds`` and ``cardinalities``.
    caller : str
        The public function asking, for messages.

    Returns
    -------
    nodes : list of str
        In topological order.
    parents : dict of str to tuple of str
    cards : dict of str to int

    Raises
    ------
    TypeError
        As :func:`network_parts`, for a model that is neither.
    """
    parents = getattr(model, "parents", None)
    cards = getattr(model, "cardinalities", None)
    nodes = getattr(model, "nodes", None)
    if isinstance(parents, Mapping) and isinstance(cards, Mapping) and nodes is not None:
        return list(nodes), dict(parents), dict(cards)
    cpds, cards = network_parts(model, caller)
    nodes = getattr(model, "nodes", None) or list(cpds)
    return list(nodes), {n: tuple(cpds[n][0]) for n in nodes}, dict(cards)
