"""The data of a learnable Bayesian network: one integer column per node, ``-1`` where
an entry is missing, all rows in one plate."""

from __future__ import annotations

import numpy as np
import torch

from ...errors import DataError
from ..bn import short_list

__all__ = ["MISSING", "ROWS_PLATE", "check_columns", "as_column"]

#: Integer code of a missing entry in a data column.
MISSING = -1
#: Name of the plate over the data rows.
ROWS_PLATE = "rows"


def check_columns(columns, order, cards):
    """Validate the data columns of a learnable network.

    Parameters
    ----------
    columns : mapping of str to array-like or None
        Node -> column of shape ``(N,)`` (``-1`` = missing); ``None`` or absent: hidden.
    order : sequence of str
        The network's nodes (columns are read in this order).
    cards : mapping of str to int
        Node -> number of states.

    Returns
    -------
    n : int
        The number of rows ``N``.
    observed : dict of str to (torch.LongTensor, torch.BoolTensor or None)
        Node -> ``(column, mask)``: the column of shape ``(N,)``, and the mask of its
        observed entries (``None`` when none is missing).

    Raises
    ------
    DataError
        If a column names no node, is not a 1-D integer column (:func:`as_column`), has
        another length than the first, or holds a value outside ``-1 .. card - 1``; or
        if no column is given.  Messages name the node.
    """
    unknown = [k for k in columns if k not in cards]
    if unknown:
        raise DataError(f"data column(s) {unknown} name no node of the network; nodes: {short_list(list(order))}")
    observed, n, first = {}, None, None
    for node in order:
        value = columns.get(node)
        if value is None:
            continue
        col = as_column(node, value)
        if n is None:
            n, first = col.shape[0], node
        elif col.shape[0] != n:
            raise DataError(
                f"data column '{node}' has {col.shape[0]} rows, but column '{first}' has {n}; "
                "every column needs one entry per row (-1 where missing)"
            )
        card = cards[node]
        bad = (col < MISSING) | (col >= card)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise DataError(
                f"data column '{node}' holds {int(col[i])} at row {i}; expected a state 0 .. {card - 1} of '{node}' "
                f"({card} states) or {MISSING} for a missing entry ({int(bad.sum())} bad entries)"
            )
        missing = col == MISSING
        observed[node] = (col, ~missing if bool(missing.any()) else None)
    if n is None:
        raise DataError(
            f"no data column given; pass at least one column, data={{node: integer array (-1 = missing)}}, "
            f"nodes: {short_list(list(order))}"
        )
    return n, observed


def as_column(node, value) -> torch.Tensor:
    """One data column as a long tensor (a copy of numpy/list data; a detached tensor).

    Parameters
    ----------
    node : str
        For messages.
    value : array-like
        Integer state indices of shape ``(N,)``; integral floats are accepted.

    Returns
    -------
    torch.LongTensor, shape (N,)

    Raises
    ------
    DataError
        If ``value`` is not 1-D, or holds strings, objects, booleans, complex numbers,
        non-integral or non-finite floats.
    """
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        try:
            arr = np.asarray(value)
        except Exception as e:  # pragma: no cover - numpy accepts nearly everything
            raise DataError(f"data column '{node}': cannot convert {type(value).__name__} to an array ({e})") from None
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise DataError(
                f"data column '{node}' holds values of dtype {arr.dtype}; expected integer state indices "
                "(-1 = missing); ppl.models.encode_data converts state names, NaN and None"
            )
        t = torch.from_numpy(np.array(arr))
    if t.dim() != 1:
        raise DataError(f"data column '{node}' has shape {tuple(t.shape)}; expected a 1-D column of shape (N,)")
    if t.dtype == torch.bool:
        raise DataError(f"data column '{node}' is boolean; expected integer state indices (-1 = missing)")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise DataError(
                f"data column '{node}' holds non-integer values; expected integer state indices (-1 = missing); "
                "ppl.models.encode_data converts NaN and None to -1"
            )
    elif t.is_complex():
        raise DataError(f"data column '{node}' is complex; expected integer state indices (-1 = missing)")
    return t.long()
