"""CPT estimates outside EM: normalised counts of the complete rows, and the learned
params as a fixed network."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pyro
import torch

from ...dsl import Model
from ...errors import ModelError, OptionError
from ..bn import bayesian_network
from .columns import check_columns
from .structure import structure_of

__all__ = ["count_cpts", "learned_network"]


def count_cpts(
    model: Model,
    data: Mapping[str, Any],
    *,
    pseudo_count: float = 0.0,
) -> dict[str, tuple[tuple, torch.Tensor]]:
    """CPTs estimated by counting: for every node, the normalised counts of (parents'
    states, node's state) over the rows in which the node and all its parents are
    observed.

    With complete data this is the maximum-likelihood estimate (Koller & Friedman 2009,
    §17.2.3, eq. 17.9: θ[x | u] = M[u, x] / M[u]); with ``pseudo_count = α > 0`` it is the
    posterior mean under a symmetric Dirichlet(α) prior on every row (§17.4, additive
    smoothing).  With missing values it is the *available-case* estimate, which throws
    away the rows where the family is incomplete; it is not the maximum-likelihood
    estimate (EM is), and it is biased when the values are missing at random but not
    completely at random.

    Parameters
    ----------
    model : Model
        A learnable network or a network with ``cpds`` (only the graph and
        cardinalities are used).
    data : mapping of str to array-like
        Node -> integer column of shape ``(N,)``, ``-1`` = missing.  A node left out
        counts as missing in every row.
    pseudo_count : float, default 0
        α >= 0 added to every count.

    Returns
    -------
    dict of str to (tuple, torch.Tensor)
        Node -> ``(parents, table)``, the layout of a network's ``.cpds`` (so
        ``ppl.models.bayesian_network(count_cpts(m, data))`` is the fitted network);
        ``table`` is float64 of shape ``(card(parent_1), ..., card(node))``.  A
        parent configuration with no count (and α = 0) gets the uniform row.

    Raises
    ------
    OptionError (a ValueError)
        If ``pseudo_count`` is negative or not finite.
    DataError
        As the model does for bad columns (unknown node, length, values); messages name
        the node.
    """
    if isinstance(pseudo_count, bool) or not isinstance(pseudo_count, (int, float)) \
            or not math.isfinite(pseudo_count) or pseudo_count < 0:
        raise OptionError(f"count_cpts: pseudo_count must be a finite number >= 0, got {pseudo_count!r}")
    nodes, parents_of, cards = structure_of(model, "count_cpts")
    n, observed = check_columns(dict(data), nodes, cards)
    cols = {k: v[0] for k, v in observed.items()}
    out = {}
    for node in nodes:
        family = parents_of[node] + (node,)
        shape = tuple(cards[v] for v in family)
        counts = torch.zeros(shape, dtype=torch.float64)
        if all(v in cols for v in family):
            keep = torch.ones(n, dtype=torch.bool)
            for v in family:
                keep &= cols[v] >= 0
            flat = torch.zeros(int(keep.sum()), dtype=torch.long)
            for v in family:
                flat = flat * cards[v] + cols[v][keep]
            counts = torch.bincount(flat, minlength=math.prod(shape)).to(torch.float64).reshape(shape)
        counts = counts + pseudo_count
        total = counts.sum(-1, keepdim=True)
        table = torch.where(total > 0, counts / total.clamp_min(1e-300), torch.full_like(counts, 1.0 / cards[node]))
        out[node] = (parents_of[node], table)
    return out


def learned_network(model: Model, params: Mapping[str, Any] | None = None, *, name: str | None = None) -> Model:
    """The learned CPTs as a fixed :func:`~ppl.models.bayesian_network`, for exact queries,
    sampling, or comparison with another network's ``cpds``.

    Parameters
    ----------
    model : Model
        A learnable network.
    params : mapping of str to tensor, optional
        Param name -> CPT, e.g. ``post.params`` of ``ppl.infer(model, data,
        method="em")``.  Default: the values in Pyro's param store (where EM leaves
        them), falling back to ``model.initial_params`` for a param not in the store.
    name : str, optional
        Display name; defaults to ``model.name + "_learned"``.

    Returns
    -------
    Model
        ``bayesian_network({node: (parents, table)}, state_names=model.state_names)``;
        ``.cpds[node][1]`` is the learned table of ``node``.

    Raises
    ------
    TypeError
        If ``model`` is not a learnable network.
    ModelError
        If ``params`` lacks a CPT or holds one of the wrong shape (names the node).
    """
    param_names = getattr(model, "param_names", None)
    if not isinstance(param_names, Mapping):
        raise TypeError(
            f"learned_network: expected a model from learnable_bayesian_network, got {type(model).__name__}"
        )
    nodes, parents_of, cards = structure_of(model, "learned_network")
    if params is None:
        store = pyro.get_param_store()
        params = {p: (store[p] if p in store else model.initial_params[p]) for p in param_names.values()}
    cpds = {}
    for node in nodes:
        pname = param_names[node]
        if pname not in params:
            raise ModelError(f"node '{node}': params has no '{pname}'; expected post.params of an EM fit of this model")
        table = torch.as_tensor(params[pname]).detach().to("cpu", torch.float64)
        shape = tuple(cards[p] for p in parents_of[node]) + (cards[node],)
        if tuple(table.shape) != shape:
            raise ModelError(f"node '{node}': params['{pname}'] has shape {tuple(table.shape)}; expected {shape}")
        cpds[node] = (list(parents_of[node]), table)
    return bayesian_network(cpds, state_names=model.state_names or None,
                            name=name if name is not None else f"{model.name}_learned")
