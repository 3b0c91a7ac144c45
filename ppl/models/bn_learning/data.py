"""Data for a learnable Bayesian network: complete rows drawn from a network, entries
hidden at random, and tables of state names / NaN turned into integer columns."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ...dsl import Model
from ...errors import DataError, OptionError
from ..bn import short_list
from .columns import MISSING, as_column
from .structure import network_parts, structure_of

__all__ = ["sample_network_data", "hide_at_random", "encode_data"]


def sample_network_data(network: Model, n: int, *, seed: int | None = None) -> dict[str, torch.Tensor]:
    """Draw ``n`` complete rows from a Bayesian network by ancestral sampling.

    Each node is drawn in topological order from its CPT row selected by its parents'
    values, by inverting the row's cumulative distribution at a uniform draw of a seeded
    ``torch.Generator``: the same ``seed`` gives the same rows on any machine.

    Parameters
    ----------
    network : Model
        A network with ``cpds`` and ``cardinalities`` (:func:`~ppl.models.bayesian_network`,
        :func:`~ppl.models.example_network`, :func:`learned_network`, ...).
    n : int
        Number of rows, >= 1.
    seed : int, optional
        Seed of the generator; ``None`` means 0.

    Returns
    -------
    dict of str to torch.Tensor
        Node -> long tensor of shape ``(n,)`` with values ``0 .. card(node) - 1``, in
        the network's node order: the data argument of a learnable model of the same
        network.

    Raises
    ------
    TypeError
        If ``network`` has no ``cpds`` / ``cardinalities``.
    OptionError (a ValueError)
        If ``n`` is not an integer >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise OptionError(f"sample_network_data: n must be an integer >= 1, got {n!r}")
    nodes, parents_of, _ = structure_of(network, "sample_network_data")
    cpds, _ = network_parts(network, "sample_network_data")
    gen = torch.Generator().manual_seed(int(seed) if seed is not None else 0)
    values: dict[str, torch.Tensor] = {}
    for node in nodes:
        table = torch.as_tensor(cpds[node][1], dtype=torch.float64)
        rows = table[tuple(values[p] for p in parents_of[node])] if parents_of[node] else table.expand(int(n), -1)
        cdf = rows.cumsum(-1)
        u = torch.rand(int(n), 1, generator=gen, dtype=torch.float64) * cdf[:, -1:]
        values[node] = (cdf <= u).sum(-1).clamp_max(table.shape[-1] - 1)
    return values


def hide_at_random(
    data: Mapping[str, Any],
    fraction: float,
    *,
    nodes=None,
    seed: int | None = None,
) -> dict[str, torch.Tensor]:
    """Remove entries of data columns completely at random: each entry of the chosen
    columns is set to ``-1`` (missing), independently, with probability ``fraction``.

    Missing completely at random (MCAR) is a special case of missing at random, under
    which EM's treatment of the missing entries as latent gives the maximum-likelihood
    estimate (Koller & Friedman 2009, §19.1.2).

    Parameters
    ----------
    data : mapping of str to array-like
        Node -> integer column of shape ``(N,)`` (``-1`` = already missing).
    fraction : float
        Probability in ``[0, 1]`` that an entry is removed.
    nodes : iterable of str, optional
        The columns to thin; the others are copied unchanged.  Default: all.
    seed : int, optional
        Seed of a ``torch.Generator``; ``None`` means 0.

    Returns
    -------
    dict of str to torch.Tensor
        A new mapping node -> long tensor (copies; ``data`` is not modified).

    Raises
    ------
    OptionError (a ValueError)
        If ``fraction`` is not in ``[0, 1]``.
    DataError
        If ``nodes`` names a column that ``data`` lacks, or a column is not 1-D integer.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise OptionError(f"hide_at_random: fraction must be a number in [0, 1], got {fraction!r}")
    chosen = list(data) if nodes is None else list(nodes)
    unknown = [k for k in chosen if k not in data]
    if unknown:
        raise DataError(f"hide_at_random: column(s) {unknown} not in data; columns: {short_list(list(data))}")
    gen = torch.Generator().manual_seed(int(seed) if seed is not None else 0)
    out = {}
    for key, value in data.items():
        col = as_column(key, value).clone()
        if key in chosen:
            drop = torch.rand(col.shape, generator=gen, dtype=torch.float64) < fraction
            col[drop] = MISSING
        out[key] = col
    return out


def encode_data(model: Model, data) -> dict[str, torch.Tensor]:
    """Turn a table of observations into the integer columns a learnable network takes.

    Parameters
    ----------
    model : Model
        A learnable network (or any network with ``cardinalities`` and ``state_names``).
    data : mapping of str to sequence, or pandas.DataFrame
        Node -> column.  An entry is a state index (an integer, or an integral float), a
        state name (``model.state_names[node]``), or missing: ``None``, NaN, pandas'
        ``NA`` or ``-1``.  Nodes left out stay hidden.

    Returns
    -------
    dict of str to torch.Tensor
        Node -> long tensor of shape ``(N,)``, ``-1`` where missing.

    Raises
    ------
    DataError
        If a column names no node, has another length than the others, or holds an
        unknown state name, a non-integral number, or an index outside
        ``-1 .. card(node) - 1``; the message names the node.
    """
    cards = getattr(model, "cardinalities", None)
    if not isinstance(cards, Mapping):
        raise TypeError(f"encode_data: expected a Bayesian network model, got {type(model).__name__}")
    names = getattr(model, "state_names", None) or {}
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame
        data = {str(c): list(data[c]) for c in data.columns}
    if not isinstance(data, Mapping):
        raise DataError(f"encode_data: data must be a mapping node -> column or a DataFrame, got {type(data).__name__}")
    unknown = [k for k in data if k not in cards]
    if unknown:
        raise DataError(f"data column(s) {unknown} name no node of the network; nodes: {short_list(list(cards))}")
    out, n, first = {}, None, None
    for node, column in data.items():
        states = names.get(node)
        lookup = {s: i for i, s in enumerate(states)} if states is not None else {}
        codes = []
        for i, v in enumerate(np.asarray(column, dtype=object).reshape(-1) if not isinstance(column, torch.Tensor)
                              else column.reshape(-1).tolist()):
            codes.append(_encode_entry(node, i, v, lookup, states))
        col = torch.tensor(codes, dtype=torch.long)
        if n is None:
            n, first = col.shape[0], node
        elif col.shape[0] != n:
            raise DataError(f"data column '{node}' has {col.shape[0]} rows, but column '{first}' has {n}")
        bad = (col < MISSING) | (col >= cards[node])
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise DataError(
                f"data column '{node}' holds {int(col[i])} at row {i}; expected a state 0 .. {cards[node] - 1} or -1"
            )
        out[node] = col
    return out


def _encode_entry(node, i, v, lookup, states):
    if v is None:
        return MISSING
    if isinstance(v, str):
        if v in lookup:
            return lookup[v]
        raise DataError(
            f"data column '{node}' row {i}: {v!r} is not a state of '{node}'"
            + (f"; states: {states}" if states is not None else " (the node has no state names)")
        )
    if isinstance(v, (bool, np.bool_)):
        raise DataError(f"data column '{node}' row {i}: boolean {v!r}; expected a state index or name")
    try:
        f = float(v)
    except (TypeError, ValueError):
        if type(v).__name__ in ("NAType", "NaTType"):
            return MISSING
        raise DataError(f"data column '{node}' row {i}: cannot read {v!r} as a state") from None
    if math.isnan(f):
        return MISSING
    if not math.isfinite(f) or f != round(f):
        raise DataError(f"data column '{node}' row {i}: {v!r} is not an integer state index")
    return int(round(f))
