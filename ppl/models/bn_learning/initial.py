"""Starting CPTs θ_0 of a learnable Bayesian network (random, uniform or given)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ...dsl import Model
from ...errors import ModelError
from ...ops.expfam import uniform_simplex
from ..bn import short_list
from .structure import structure_of

__all__ = ["make_init"]

#: Tolerance on ``|sum of a CPT row - 1|`` for tables given as ``init``.
_ROW_SUM_ATOL = 1e-6


def make_init(
    model: Model,
    init: str | Mapping[str, Any] = "random",
    *,
    seed: int | None = None,
) -> dict[str, torch.Tensor]:
    """Initial CPTs θ_0 of a learnable network, as ``{param name: tensor}`` for
    ``ppl.infer(model, data, method="em", init=...)``.

    EM converges to a local maximum of the likelihood, which depends on θ_0; running
    from several random starts and keeping the highest final log-likelihood is the
    usual remedy (Koller & Friedman 2009, §19.2.2.4).  ``ppl.infer``'s ``n_init`` does
    not redraw CPTs (it re-seeds only Normal locations), so draw the starts here::

        best = max((ppl.infer(m, data, method="em", init=make_init(m, seed=s)) for s in range(5)),
                   key=lambda post: post.log_evidence)

    Parameters
    ----------
    model : Model
        A model from :func:`learnable_bayesian_network` or :func:`learnable_from_network`.
    init : {"random", "uniform"} or mapping, default "random"
        ``"random"``: every CPT row drawn uniformly from the probability simplex
        (Dirichlet(1, ..., 1), as normalised standard exponentials).  ``"uniform"``:
        every entry ``1 / card(node)``.  A mapping node -> table, or node ->
        ``(parents, table)`` (a network's ``.cpds``): those tables, copied and rows
        normalised; nodes left out are uniform.
    seed : int, optional
        Seed of a ``torch.Generator`` for ``"random"``; ``None`` means 0.

    Returns
    -------
    dict of str to torch.Tensor
        Param name -> float64 tensor of shape ``(card(parent_1), ..., card(node))``, rows
        on the simplex.

    Raises
    ------
    TypeError
        If ``model`` is not a learnable network (no ``param_names``).
    ModelError
        If ``init`` is an unknown string or not a mapping; names an unknown node; a table
        has the wrong shape, non-finite or negative entries, or a row that does not sum
        to 1 (absolute tolerance 1e-6); or the parents given with a table differ from
        the model's.  Messages name the node.
    """
    param_names = getattr(model, "param_names", None)
    if not isinstance(param_names, Mapping):
        raise TypeError(
            f"make_init: expected a model from learnable_bayesian_network, got {type(model).__name__}"
        )
    nodes, parents_of, cards = structure_of(model, "make_init")
    shapes = {n: tuple(cards[p] for p in parents_of[n]) + (cards[n],) for n in nodes}
    if isinstance(init, str):
        if init == "uniform":
            return {param_names[n]: torch.full(shapes[n], 1.0 / cards[n], dtype=torch.float64) for n in nodes}
        if init == "random":
            gen = torch.Generator().manual_seed(int(seed) if seed is not None else 0)
            return {param_names[n]: uniform_simplex(shapes[n], gen) for n in nodes}
        raise ModelError(f"init must be 'random', 'uniform' or a mapping node -> table, got {init!r}")
    if not isinstance(init, Mapping):
        raise ModelError(f"init must be 'random', 'uniform' or a mapping node -> table, got {type(init).__name__}")
    unknown = [k for k in init if k not in shapes]
    if unknown:
        raise ModelError(f"init: unknown node(s) {unknown}; nodes: {short_list(nodes)}")
    out = {}
    for n in nodes:
        if n not in init:
            out[param_names[n]] = torch.full(shapes[n], 1.0 / cards[n], dtype=torch.float64)
            continue
        entry = init[n]
        if (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], (tuple, list))
                and all(isinstance(p, str) for p in entry[0])):  # (parents, table), as in a network's .cpds
            given_parents, entry = entry
            if tuple(given_parents) != tuple(parents_of[n]):
                raise ModelError(
                    f"init['{n}']: the table is given for parents {list(given_parents)}, but the node's parents "
                    f"are {list(parents_of[n])}"
                )
        out[param_names[n]] = _init_table(n, entry, shapes[n])
    return out


def _init_table(node, table, shape) -> torch.Tensor:
    try:
        t = (table.detach().to("cpu", torch.float64).clone() if isinstance(table, torch.Tensor)
             else torch.from_numpy(np.array(table, dtype=np.float64)))
    except (TypeError, ValueError) as e:
        raise ModelError(f"init['{node}']: the table is not a numeric array ({e})") from None
    if tuple(t.shape) != shape:
        raise ModelError(
            f"init['{node}']: table of shape {tuple(t.shape)}; expected {shape} (parents' states, then the node's)"
        )
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ModelError(f"init['{node}']: the table holds negative or non-finite entries; expected probabilities")
    sums = t.sum(-1)
    bad = ((sums - 1).abs() > _ROW_SUM_ATOL).reshape(-1)
    if bool(bad.any()):
        raise ModelError(f"init['{node}']: a row sums to {float(sums.reshape(-1)[bad][0]):.10g}; "
                         f"expected every row (last axis) to sum to 1 (atol {_ROW_SUM_ATOL:g})")
    return t / sums.unsqueeze(-1)
