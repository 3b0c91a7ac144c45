"""The learnable Bayesian network: a model whose CPTs are ``ppl.param`` sites (simplex
constraint) and whose data are one integer column per node (see the package docstring)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import pyro
import pyro.distributions as dist
from pyro.distributions import constraints

from ...dsl import Model, Vindex
from ...dsl import model as _make_model
from ...errors import ModelError
from ..bn import check_state_names, topological_order
from .columns import ROWS_PLATE, check_columns
from .initial import make_init
from .structure import check_cardinalities, check_structure, network_parts

__all__ = ["learnable_bayesian_network", "learnable_from_network"]


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

    **Initial values and Pyro's param store.**  Every ``ppl.infer`` call starts the CPTs
    at ``init`` (the model's declared ``ppl.param`` values) in a private param store,
    whatever Pyro's global store holds, and leaves the global store alone; the learned
    CPTs are in ``post.params``, and ``ppl.infer(..., init=post)`` continues a fit
    (:func:`make_init` gives other starts).  The builder does not touch the global store
    either.  Run by Pyro directly (outside ppl), the model reads the global store: a
    stored value of the wrong shape raises :class:`~ppl.errors.ModelError`, and two models
    whose param names coincide share values (give them different ``param_prefix``es).

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

    parents_of = check_structure(structure)
    order = topological_order(parents_of)
    cards = check_cardinalities(cardinalities, parents_of)
    names = check_state_names(state_names, cards)
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
    cpds, cards = network_parts(network, "learnable_from_network")
    if isinstance(init, str) and init == "network":
        init = cpds
    structure = {node: list(parents) for node, (parents, _) in cpds.items()}
    return learnable_bayesian_network(
        structure, cards, init=init, seed=seed, state_names=getattr(network, "state_names", None) or None,
        param_prefix=param_prefix, name=name if name is not None else f"learnable_{network.name}",
    )


def _make_model_function(order, parents_of, cards, param_names, initial):
    def learnable_bayesian_network_model(**columns):
        n, observed = check_columns(columns, order, cards)
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
