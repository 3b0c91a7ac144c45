"""Learning the conditional probability tables of a discrete Bayesian network from data
with hidden or missing values, by EM.

Given the graph of a Bayesian network (each node's parents) and the number of states of
each node, :func:`learnable_bayesian_network` builds a :class:`ppl.dsl.Model` whose
conditional probability tables (CPTs) are ``ppl.param`` sites with a ``simplex``
constraint, one per node, and whose data are one integer column per node, ``-1``
marking a missing entry.  ``ppl.infer(model, columns, method="em")`` then returns the
maximum-likelihood CPTs (Koller & Friedman 2009, §19.2.2):

- the E-step is exact inference: for every row, the posterior of the row's missing
  entries given its observed ones, at the current CPTs;
- the M-step sets every CPT row to its normalised *expected* family counts,
  ``θ[u, x] ∝ Σ_rows p(X = x, Pa(X) = u | row's observed values; θ_old)``,
  the complete-data maximum-likelihood estimate (Koller & Friedman 2009, §17.2.3,
  normalised counts) with the counts replaced by their expectations.

A node with no column at all is latent (hidden) in every row.  With no missing values, the
first M-step gives the count-based estimate at once (:func:`count_cpts`).

The other functions produce data and read results: :func:`sample_network_data` draws a
complete data set from a known network, :func:`hide_at_random` removes entries at random,
:func:`encode_data` turns state names and NaN/None into the integer columns the model
takes, :func:`make_init` draws starting CPTs (for restarts), :func:`count_cpts` is the
count-based estimate of the CPTs from the rows in which a node and its parents are all
observed, and :func:`learned_network` turns the learned params into a
:func:`~ppl.models.bayesian_network` for exact queries.

References
----------
D. Koller and N. Friedman, *Probabilistic Graphical Models: Principles and Techniques*,
MIT Press, 2009: §17.2 (maximum-likelihood estimation of a Bayesian network's CPTs from
complete data: normalised counts), §19.1 (missing data, MAR), §19.2.2 (EM for Bayesian
networks: expected sufficient statistics), §19.5 (hidden variables; non-identifiability).
A. P. Dempster, N. M. Laird and D. B. Rubin, "Maximum likelihood from incomplete data via
the EM algorithm", *J. R. Stat. Soc. B* 39 (1977).
"""

from __future__ import annotations

import inspect
import keyword
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from ..dsl import Model, Vindex
from ..dsl import model as _make_model
from ..errors import DataError, ModelError
from ..ops.expfam import uniform_simplex
from .bn import _check_state_names, _short_list, _topological_order, bayesian_network, check_parents

__all__ = [
    "learnable_bayesian_network",
    "learnable_from_network",
    "make_init",
    "sample_network_data",
    "hide_at_random",
    "encode_data",
    "count_cpts",
    "learned_network",
]

#: Integer code of a missing entry in a data column.
MISSING = -1
#: Name of the plate over the data rows.
ROWS_PLATE = "rows"
#: Tolerance on ``|sum of a CPT row - 1|`` for tables given as ``init``.
_ROW_SUM_ATOL = 1e-6


# ----------------------------------------------------------------------- the builder
def learnable_bayesian_network(
    structure: Mapping[str, Any],
    cardinalities: Mapping[str, int],
    *,
    init: str | Mapping[str, Any] = "random",
    seed: int | None = None,
    state_names: Mapping[str, Any] | None = None,
    param_prefix: str = "cpt_",
    name: str = "learnable_bayesian_network",
) -> Model:
    """A Bayesian network whose CPTs are ``ppl.param`` sites, to be learned from data with
    hidden or missing values by ``ppl.infer(model, data, method="em")``.

    The model's joint distribution is the Bayesian-network factorisation
    ``P(X) = prod_i P(X_i | Pa(X_i); θ_i)`` (Koller & Friedman 2009, §3.2), with every
    row of data an independent draw, so the log-likelihood of ``N`` rows is
    ``Σ_n log Σ_{missing entries of row n} P(row n)``.  Each CPT ``θ_i`` is a
    ``ppl.param`` named ``param_prefix + node`` (``"cpt_lung"``) of shape
    ``(card(parent_1), ..., card(parent_k), card(node))`` with a ``simplex``
    constraint: ``θ_i[j_1, ..., j_k, x] = P(X_i = x | parent_1 = j_1, ...)``, the layout
    of :func:`~ppl.models.bayesian_network`'s tables.  All rows sit in one plate named
    ``"rows"``; node ``X`` of the rows is the site

    ``ppl.sample(X, Categorical(Vindex(θ_X)[parent values]), obs=col.clamp_min(0), obs_mask=col >= 0)``

    so EM's E-step sums out each row's missing entries exactly and its M-step sets each
    CPT row to the normalised expected family counts, in closed form (Koller & Friedman
    2009, §19.2.2; docs/em.md).

    **Data.**  The model takes one keyword argument per node, named as the node: an
    integer array-like of shape ``(N,)`` (torch tensor, numpy array or list) with values
    in ``0 .. card(node) - 1``, and ``-1`` where the entry is missing::

        post = ppl.infer(model, {"smoke": s, "lung": l, ...}, method="em")

    A node left out of the data is hidden in every row (a latent variable).  A column
    without ``-1`` is observed as is; a column with ``-1`` is observed where it is
    ``>= 0`` (Pyro's ``obs_mask``: the missing entries become a latent site named
    ``f"{node}_unobserved"``).  At least one column is needed (it sets ``N``).  Use
    :func:`encode_data` for columns of state names, or with NaN / None for missing
    entries (a pandas DataFrame, say).  Treating the missing entries as latent is right
    when they are missing at random (MAR: whether an entry is missing does not depend on
    its own value given the observed ones; Koller & Friedman 2009, §19.1.2).

    **Initial values and Pyro's param store.**  ppl's params live in Pyro's global param
    store, where the EM backend reads its starting θ_0 unless ``init`` is passed to
    ``ppl.infer``.  The builder therefore *removes this model's param names* (and only
    those) from the store when it is called, so that the first fit starts from
    ``init``.  After a fit, the store holds the learned CPTs (EM writes them back), so a
    second ``ppl.infer`` continues from them; to start again from ``init``, pass
    ``ppl.infer(..., init=model.initial_params)`` (this works whatever the store holds),
    or :func:`make_init` for another start.  Two models whose param names coincide share
    the store's values: give them different ``param_prefix``es to fit them side by side.
    A stored value of the wrong shape raises :class:`~ppl.errors.ModelError` when the
    model runs.

    Parameters
    ----------
    structure : mapping of str to list of str
        Node -> its parents (a list or tuple of node names, possibly empty).  Every
        parent must be a node of ``structure``; the graph must be acyclic.  Ties in the
        topological order follow the order of ``structure``.
    cardinalities : mapping of str to int
        Node -> number of states (an integer >= 1), for every node of ``structure``.
    init : {"random", "uniform"} or mapping, default "random"
        Initial CPTs θ_0.  ``"random"``: every row drawn uniformly from the simplex
        (a Dirichlet(1, ..., 1) draw, seeded by ``seed``).  ``"uniform"``: every row
        ``1 / card(node)``.  A mapping node -> table (array-like of the CPT's shape) or
        node -> ``(parents, table)`` (so a network's ``.cpds`` works); nodes left out
        start uniform.  A uniform start is symmetric in the states of a hidden node, and
        EM never breaks such a symmetry (every state gets the same expected counts):
        start from ``"random"`` when a node is hidden or mostly missing.
    seed : int, optional
        Seed of the ``"random"`` start (a ``torch.Generator``); ``None`` means 0, so a
        build is reproducible.
    state_names : mapping of str to list, optional
        Node -> names of its states (``state_names[node][i]`` names state ``i``); used by
        :func:`encode_data` and kept by :func:`learned_network`.
    param_prefix : str, default "cpt_"
        The CPT of node ``X`` is the param ``param_prefix + X``.
    name : str, default "learnable_bayesian_network"
        Display name of the model.

    Returns
    -------
    Model
        A ppl model (a valid Pyro model) with extra attributes:

        - ``nodes``: node names in topological order;
        - ``parents``: dict node -> tuple of parents;
        - ``cardinalities``: dict node -> number of states;
        - ``state_names``: dict node -> list of state names (nodes given only);
        - ``param_names``: dict node -> name of its CPT param;
        - ``initial_params``: dict param name -> float64 tensor, θ_0 as given by
          ``init`` (pass it as ``ppl.infer(..., init=model.initial_params)``).

        Calling the model returns a dict node -> value of the node in every row (long
        tensor of shape ``(N,)``, the observed value where there is one).

    Raises
    ------
    TypeError
        If ``structure``, ``cardinalities`` or ``state_names`` is not a mapping, or
        ``name`` / ``param_prefix`` is not a string.
    ModelError
        If ``structure`` is empty; a node name is not a string usable as a Python
        keyword argument (an identifier, not a keyword) or is ``"rows"`` (the plate's
        name); a parent is unknown or repeated; the parents form a cycle; a node has no
        cardinality or one that is not an integer >= 1; ``cardinalities`` names an
        unknown node; ``init`` is an unknown string, names an unknown node, or holds a
        table of the wrong shape, with negative or non-finite entries, or with a row
        that does not sum to 1; ``state_names`` is malformed.  Messages name the node.

    The model itself raises :class:`~ppl.errors.DataError` (through ``ppl.infer``,
    ``ppl.compile``, ...) for an unknown column name, a column that is not 1-D, not
    integer, of another length than the others, or with values ``< -1`` or
    ``>= card(node)``, and when no column is given; the message names the node.

    References
    ----------
    D. Koller and N. Friedman, *Probabilistic Graphical Models*, MIT Press, 2009:
    §17.2 (maximum likelihood for Bayesian networks), §19.1–19.2 (missing data; EM for
    Bayesian networks), §19.5 (hidden variables).

    Examples
    --------
    >>> import ppl, ppl.models
    >>> m = ppl.models.learnable_bayesian_network(
    ...     {"rain": [], "wet": ["rain"]}, {"rain": 2, "wet": 2}, seed=0)
    >>> m.nodes, m.param_names["wet"]
    (['rain', 'wet'], 'cpt_wet')
    >>> post = ppl.infer(m, {"rain": [0, 1, -1, 1], "wet": [0, 1, 1, -1]}, method="em",
    ...                  init=m.initial_params)
    >>> post.params["cpt_wet"].shape
    torch.Size([2, 2])
    """
    if not isinstance(structure, Mapping):
        raise TypeError(
            f"learnable_bayesian_network: structure must be a mapping node -> list of parents, "
            f"got {type(structure).__name__}"
        )
    if not isinstance(cardinalities, Mapping):
        raise TypeError(
            f"learnable_bayesian_network: cardinalities must be a mapping node -> number of states, "
            f"got {type(cardinalities).__name__}"
        )
    if state_names is not None and not isinstance(state_names, Mapping):
        raise TypeError(
            f"learnable_bayesian_network: state_names must be a mapping node -> list of names, "
            f"got {type(state_names).__name__}"
        )
    for label, value in (("name", name), ("param_prefix", param_prefix)):
        if not isinstance(value, str):
            raise TypeError(f"learnable_bayesian_network: {label} must be a string, got {type(value).__name__}")
    if len(structure) == 0:
        raise ModelError("learnable_bayesian_network: structure is empty; expected at least one node -> parents")

    parents_of = _check_structure(structure)
    order = _topological_order(parents_of)
    cards = _check_cardinalities(cardinalities, parents_of)
    names = _check_state_names(state_names, cards)
    param_names = {node: f"{param_prefix}{node}" for node in order}

    initial: dict = {}  # filled below by make_init; the model's ppl.param sites start from it
    fn = _make_model_function(order, parents_of, cards, param_names, initial)
    fn.__name__ = name if name.isidentifier() else "learnable_bayesian_network"
    fn.__doc__ = (f"Bayesian network '{name}' over {len(order)} discrete nodes with learnable CPTs; "
                  "data: one integer column per node (-1 = missing), a left-out node is hidden.")
    # one keyword argument per node, so that data={node: column} binds each column by name
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(node, inspect.Parameter.KEYWORD_ONLY, default=None) for node in order]
    )

    bn = _make_model(fn, name=name, state_names=names)
    bn.nodes = list(order)
    bn.parents = {node: parents_of[node] for node in order}
    bn.cardinalities = {node: cards[node] for node in order}
    bn.param_names = param_names
    bn.initial_params = make_init(bn, init, seed=seed)
    initial.update({k: v.clone() for k, v in bn.initial_params.items()})
    store = pyro.get_param_store()
    for pname in param_names.values():  # stale values of these names would override init
        if pname in store:
            del store[pname]
    return bn


def learnable_from_network(
    network: Model,
    *,
    init: str | Mapping[str, Any] = "random",
    seed: int | None = None,
    param_prefix: str = "cpt_",
    name: str | None = None,
) -> Model:
    """:func:`learnable_bayesian_network` with the graph, cardinalities and state names of
    an existing network.

    Parameters
    ----------
    network : Model
        A Bayesian network with ``cpds`` (node -> ``(parents, table)``),
        ``cardinalities`` and ``state_names`` attributes, as returned by
        :func:`~ppl.models.bayesian_network`, :func:`~ppl.models.read_bif`,
        :func:`~ppl.models.from_pgmpy` or :func:`~ppl.models.example_network`.  Its
        tables are not used, except as ``init="network"``.
    init : {"random", "uniform", "network"} or mapping, default "random"
        As for :func:`learnable_bayesian_network`; ``"network"`` starts from the
        network's own CPTs.
    seed : int, optional
        Seed of the ``"random"`` start (``None`` means 0).
    param_prefix : str, default "cpt_"
        The CPT of node ``X`` is the param ``param_prefix + X``.
    name : str, optional
        Display name; defaults to ``"learnable_" + network.name``.

    Returns
    -------
    Model
        As :func:`learnable_bayesian_network` returns, with the network's node order.

    Raises
    ------
    TypeError
        If ``network`` lacks the ``cpds`` / ``cardinalities`` attributes.
    ModelError
        As :func:`learnable_bayesian_network`.

    Examples
    --------
    >>> import ppl.models
    >>> asia = ppl.models.example_network("asia")
    >>> m = ppl.models.learnable_from_network(asia, seed=1)
    >>> m.parents["either"]
    ('lung', 'tub')
    """
    cpds, cards = _network_parts(network, "learnable_from_network")
    if isinstance(init, str) and init == "network":
        init = cpds
    structure = {node: list(parents) for node, (parents, _) in cpds.items()}
    return learnable_bayesian_network(
        structure, cards, init=init, seed=seed, state_names=getattr(network, "state_names", None) or None,
        param_prefix=param_prefix, name=name if name is not None else f"learnable_{network.name}",
    )


# ----------------------------------------------------------------------- the model function
def _make_model_function(order, parents_of, cards, param_names, initial):
    def learnable_bayesian_network_model(**columns):
        n, observed = _check_columns(columns, order, cards)
        cpts = {node: _cpt_param(node, param_names[node], parents_of[node], cards, initial) for node in order}
        values = {}
        with pyro.plate(ROWS_PLATE, n):
            for node in order:
                parents = parents_of[node]
                cpt = cpts[node]
                probs = Vindex(cpt)[tuple(values[p] for p in parents)] if parents else cpt
                fn = dist.Categorical(probs)
                col = observed.get(node)
                if col is None:
                    values[node] = pyro.sample(node, fn)
                else:
                    column, mask = col
                    if mask is None:
                        values[node] = pyro.sample(node, fn, obs=column)
                    else:
                        values[node] = pyro.sample(node, fn, obs=column.clamp_min(0), obs_mask=mask)
        return values

    return learnable_bayesian_network_model


def _cpt_param(node, pname, parents, cards, initial):
    shape = tuple(cards[p] for p in parents) + (cards[node],)
    value = pyro.param(pname, lambda: initial[pname].clone(), constraint=constraints.simplex)
    if tuple(value.shape) != shape:
        raise ModelError(
            f"node '{node}': Pyro's param store holds '{pname}' with shape {tuple(value.shape)}, but its CPT has "
            f"shape {shape}; a param of another model has this name: call pyro.clear_param_store(), "
            f"or build the model with another param_prefix"
        )
    return value


def _check_columns(columns, order, cards):
    """Validate the data columns: N, and node -> (long column, mask or None)."""
    unknown = [k for k in columns if k not in cards]
    if unknown:
        raise DataError(f"data column(s) {unknown} name no node of the network; nodes: {_short_list(list(order))}")
    observed, n, first = {}, None, None
    for node in order:
        value = columns.get(node)
        if value is None:
            continue
        col = _as_column(node, value)
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
            f"nodes: {_short_list(list(order))}"
        )
    return n, observed


def _as_column(node, value) -> torch.Tensor:
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


# ------------------------------------------------------------------ structure checks
def _check_structure(structure) -> dict:
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


def _check_cardinalities(cardinalities, parents_of) -> dict:
    unknown = [k for k in cardinalities if k not in parents_of]
    if unknown:
        raise ModelError(
            f"cardinalities: unknown node(s) {unknown}; nodes of the structure: {_short_list(list(parents_of))}"
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


def _network_parts(network, caller):
    cpds = getattr(network, "cpds", None)
    cards = getattr(network, "cardinalities", None)
    if not isinstance(cpds, Mapping) or not isinstance(cards, Mapping):
        raise TypeError(
            f"{caller}: expected a Bayesian network model with 'cpds' and 'cardinalities' attributes "
            f"(ppl.models.bayesian_network / read_bif / example_network), got {type(network).__name__}"
        )
    return cpds, cards


def _structure_of(model, caller):
    """(nodes in topological order, node -> parents, node -> cardinality) of a learnable
    model or of a network with ``cpds``."""
    parents = getattr(model, "parents", None)
    cards = getattr(model, "cardinalities", None)
    nodes = getattr(model, "nodes", None)
    if isinstance(parents, Mapping) and isinstance(cards, Mapping) and nodes is not None:
        return list(nodes), dict(parents), dict(cards)
    cpds, cards = _network_parts(model, caller)
    nodes = getattr(model, "nodes", None) or list(cpds)
    return list(nodes), {n: tuple(cpds[n][0]) for n in nodes}, dict(cards)


# ------------------------------------------------------------------------------ init
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
    nodes, parents_of, cards = _structure_of(model, "make_init")
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
        raise ModelError(f"init: unknown node(s) {unknown}; nodes: {_short_list(nodes)}")
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


# ------------------------------------------------------------------------ data helpers
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
    ValueError
        If ``n`` is not an integer >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"sample_network_data: n must be an integer >= 1, got {n!r}")
    nodes, parents_of, _ = _structure_of(network, "sample_network_data")
    cpds, _ = _network_parts(network, "sample_network_data")
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
    ValueError
        If ``fraction`` is not in ``[0, 1]``.
    DataError
        If ``nodes`` names a column that ``data`` lacks, or a column is not 1-D integer.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"hide_at_random: fraction must be a number in [0, 1], got {fraction!r}")
    chosen = list(data) if nodes is None else list(nodes)
    unknown = [k for k in chosen if k not in data]
    if unknown:
        raise DataError(f"hide_at_random: column(s) {unknown} not in data; columns: {_short_list(list(data))}")
    gen = torch.Generator().manual_seed(int(seed) if seed is not None else 0)
    out = {}
    for key, value in data.items():
        col = _as_column(key, value).clone()
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
        raise DataError(f"data column(s) {unknown} name no node of the network; nodes: {_short_list(list(cards))}")
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


# ----------------------------------------------------------------------- estimates
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
    ValueError
        If ``pseudo_count`` is negative or not finite.
    DataError
        As the model does for bad columns (unknown node, length, values); messages name
        the node.
    """
    if isinstance(pseudo_count, bool) or not isinstance(pseudo_count, (int, float)) \
            or not math.isfinite(pseudo_count) or pseudo_count < 0:
        raise ValueError(f"count_cpts: pseudo_count must be a finite number >= 0, got {pseudo_count!r}")
    nodes, parents_of, cards = _structure_of(model, "count_cpts")
    n, observed = _check_columns(dict(data), nodes, cards)
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
    nodes, parents_of, cards = _structure_of(model, "learned_network")
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
