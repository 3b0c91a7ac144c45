"""Batched evidence: many cases (rows of evidence) answered in one call, as a plate.

``ppl.infer_cases(model, cases)`` is the diagnosis table of a Bayesian network: each row
of ``cases`` gives the evidence of one case (a patient, a fault report), and the answer
holds every node's posterior marginal for every case.  The cases are i.i.d. copies of the
model, so they are a plate (Koller & Friedman 2009, §6.4.1: plate models; Obermeyer et
al. 2019 for plated variable elimination).  Each case's evidence enters as an *indicator*
factor on the node (0 at the observed state, -inf at the others, 0 where the case does not
observe the node: Darwiche 2003's evidence indicators λ), so the nodes stay latent and one
traced run and one plated exact pass answer every case, whatever subset of nodes each case
observes.  Columns that are not finite discrete sites fall back to one plated pass per
group of cases observing the same nodes (tiny groups: one prepared query per case).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyro.poutine as poutine
import torch

from .dsl import Model, Vindex, as_model, factor, plate
from .errors import DataError
from .table import Table

__all__ = ["Cases", "infer_cases"]

CASE_PLATE = "cases"
#: Suffix of the indicator factor that enters a node's evidence (``"BP:evidence"``).
EVIDENCE_SUFFIX = ":evidence"
#: Groups of at most this many cases (rows observing the same nodes) are answered case by
#: case, through the prepared model of ``ppl.infer`` (:mod:`ppl.prepared`), not as a plate.
SMALL_GROUP = 4


def _rows(cases) -> list:
    """``cases`` as a list of dicts ``node -> value`` (missing entries dropped)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(cases, pd.DataFrame):
        records = cases.to_dict(orient="records")
    elif isinstance(cases, Mapping):  # columns: node -> one value per case
        lengths = {k: len(v) if isinstance(v, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(v, str)
                   else None for k, v in cases.items()}
        if not cases or None in lengths.values() or len(set(lengths.values())) != 1:
            raise DataError(f"cases given as a dict must map each node to a list of states of one length (one per "
                            f"case); got lengths {lengths}")
        n = next(iter(lengths.values()))
        records = [{k: v[i] for k, v in cases.items()} for i in range(n)]
    elif isinstance(cases, Sequence) and not isinstance(cases, (str, bytes)):
        records = list(cases)
    else:
        raise DataError(f"cases must be a pandas DataFrame, a list of dicts node -> state or a dict node -> list of "
                        f"states, got {type(cases).__name__}")
    if not records:
        raise DataError("cases is empty: give at least one row of evidence")
    rows = []
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise DataError(f"cases[{i}] is a {type(r).__name__}; expected a dict node -> state")
        rows.append({k: v for k, v in r.items() if not _missing(v)})
    return rows


def _missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(isinstance(value, float) and math.isnan(value)) or value is getattr(np, "nan", None)
    except TypeError:
        return False


def _plate_dim(model: Model, arguments: dict) -> int:
    """The dim of the cases plate: left of every plate the model declares."""
    from .api import compile as compile_graph

    graph = compile_graph(model, dict(arguments))
    return -1 - max((-p.dim for p in graph.plates.values()), default=0), graph


def _batched(model: Model, n: int, dim: int) -> Model:
    """``model`` run inside ``ppl.plate("cases", n, dim=dim)`` (same arguments and state names)."""
    fn = model.fn
    signed = model.function.forward if isinstance(model.function, torch.nn.Module) else model.function

    @functools.wraps(signed)  # the same signature: data keys bind as for the model itself
    def in_cases(*args, **kwargs):
        with plate(CASE_PLATE, n, dim=dim):
            return fn(*args, **kwargs)

    return Model(in_cases, name=f"{model.name}[{n} cases]", state_names=model.state_names)


def _indicators(model, graph, rows: list, dim: int) -> dict | None:
    """Per node observed in some case: the log evidence indicator ``(n_cases, K)``: 0 at the
    observed state, ``-inf`` at the others, 0 everywhere in cases that do not observe it
    (Darwiche 2003's evidence indicators λ); ``None`` when a column is not a finite
    discrete site (then the cases are answered in groups)."""
    nodes = []
    for r in rows:
        nodes.extend(k for k in r if k not in nodes)
    out = {}
    for node in nodes:
        idx = [i for i, r in enumerate(rows) if node in r]
        value = _values(model, graph, [rows[i][node] for i in idx], node, -1).reshape(-1)
        card = graph.variables[node].cardinality
        if card is None or value.is_floating_point() and not bool((value == value.round()).all()):
            return None
        states = value.long()
        if bool(((states < 0) | (states >= card)).any()):
            return None  # out of support: the grouped path raises the usual DataError
        lam = torch.zeros(len(rows), card, dtype=torch.float64)
        lam[torch.as_tensor(idx)] = -math.inf
        lam[torch.as_tensor(idx), states] = 0.0
        out[node] = lam
    return out


def _with_indicators(model: Model, n: int, dim: int, indicators: dict) -> Model:
    """``model`` inside the cases plate, every case's evidence entered as an indicator
    factor on the node's value (the nodes stay latent: one plan serves every case)."""
    fn = model.fn
    signed = model.function.forward if isinstance(model.function, torch.nn.Module) else model.function
    rows = torch.arange(n).reshape((n,) + (1,) * (-1 - dim))

    @functools.wraps(signed)
    def in_cases(*args, **kwargs):
        with plate(CASE_PLATE, n, dim=dim):
            trace = poutine.trace(fn).get_trace(*args, **kwargs)
            for node, lam in indicators.items():
                value = trace.nodes[node]["value"]
                factor(f"{node}{EVIDENCE_SUFFIX}", Vindex(lam.to(value.device))[rows.to(value.device), value.long()])
        return None

    return Model(in_cases, name=f"{model.name}[{n} cases]", state_names=model.state_names)


def _values(model, graph, column: list, node: str, dim: int) -> torch.Tensor:
    """One node's evidence over a group of cases, laid out along the cases dim."""
    from .compiler import binding

    var = graph.variables.get(node)
    if var is None or var.role == "param":
        raise DataError(f"cases column '{node}' names no sample site of model '{model.name}'; "
                        f"its sites: {[n for n, v in graph.variables.items() if v.role != 'param']}")
    if var.plates or tuple(var.event_shape) or tuple(var.batch_shape):
        raise DataError(f"cases column '{node}': site '{node}' is not a scalar site outside every plate (plates "
                        f"{list(var.plates)}, batch shape {tuple(var.batch_shape)}); infer_cases takes one value per "
                        "case for such sites only")
    value = binding.convert_observation(node, list(column), model.state_names.get(node))
    return value.reshape((len(column),) + (1,) * (-1 - dim))


class Cases:
    """The answers of :func:`infer_cases`: every case's posterior marginals.

    Attributes
    ----------
    rows : list[dict]
        The evidence of each case (missing entries dropped), in the order given.
    groups : list[(list[int], Posterior)]
        The row indices each posterior answers and the posterior of the batched model
        (its sites have the cases plate as their leftmost batch dim): one pair for every
        case at once (indicator evidence), or one per group of cases observing the same
        nodes (the fallback).
    log_evidence : float
        ``Σ_i log p(e_i)`` over all cases, in nats (exact methods).
    """

    def __init__(self, model, rows, groups, cards, dim, call=None):
        self._call = call  # (arguments, method, options, graph, indicator pass?) for case_log_evidence
        self.model = model
        self.rows = rows
        self.groups = groups
        self._cards = cards
        self._dim = dim
        values = [p.log_evidence for _, p in groups]
        self.log_evidence = None if any(v is None for v in values) else float(sum(values))

    def __len__(self) -> int:
        return len(self.rows)

    def case_log_evidence(self) -> torch.Tensor:
        """``log p(e_i)`` of every case, in nats, shape ``(n_cases,)``, computed on first use.

        By the chain rule over the observed nodes in the model's order,
        ``log p(e_i) = Σ_j log p(e_ij | e_i1, ..., e_i(j-1))``: one more plated pass per
        observed node, each with the evidence of the nodes before it, reading the next
        node's marginal at the case's state (Koller & Friedman 2009, §9.3 for evidence
        probabilities by elimination).  ``k`` observed nodes cost ``k`` passes; cases
        that are answered in groups (non-discrete columns) are queried one by one.
        Their sum is :attr:`log_evidence`.
        """
        if getattr(self, "_case_log_evidence", None) is None:
            self._case_log_evidence = _case_log_evidence(self)
        return self._case_log_evidence.clone()

    @property
    def nodes(self) -> list:
        """The discrete sites that have a marginal in every case (observed or not)."""
        return list(self._cards)

    def probs(self, node: str) -> torch.Tensor:
        """Posterior probabilities of ``node`` per case, shape ``(n_cases, K)``; in a case
        that observes ``node`` its row is the observed state's indicator.

        Raises
        ------
        DataError
            If ``node`` is not a scalar discrete site of the model.
        """
        if node not in self._cards:
            raise DataError(f"'{node}' has no per-case marginal; nodes: {self.nodes}")
        out = torch.zeros(len(self.rows), self._cards[node], dtype=torch.float64)
        for index, post in self.groups:
            ix = torch.as_tensor(index)
            if node in post.sites:
                p = post.probs(node).detach().to("cpu", torch.float64)
                out[ix] = p.reshape(len(index), -1)
            else:  # observed in these cases
                state = post.graph.bound.observations[node].reshape(-1).long().cpu()
                out[ix, state] = 1.0
        return out

    def to_pandas(self):
        """A ``pandas.DataFrame``: one row per case, columns ``(node, state)``."""
        import pandas as pd

        frames = {}
        for node in self.nodes:
            names = self.model.state_names.get(node) or list(range(self._cards[node]))
            p = self.probs(node).numpy()
            for k, s in enumerate(names):
                frames[(node, s)] = p[:, k]
        return pd.DataFrame(frames)

    def table(self, node: str) -> Table:
        """``node``'s marginals per case as a printable :class:`~ppl.table.Table`."""
        names = self.model.state_names.get(node) or list(range(self._cards[node]))
        p = self.probs(node)
        rows = [{"case": i, **{str(s): float(p[i, k]) for k, s in enumerate(names)}} for i in range(len(self.rows))]
        return Table(rows, title=f"P({node} | evidence) per case")

    def __repr__(self) -> str:
        passes = f"{len(self.groups)} plated pass" + ("es" if len(self.groups) > 1 else "")
        return f"<Cases of model '{self.model.name}': {len(self.rows)} cases, {passes}, log evidence {self.log_evidence}>"

    def _repr_html_(self) -> str:
        return self.to_pandas()._repr_html_()


def infer_cases(model, cases, method: str = "exact", *, data: Mapping | None = None, **options) -> Cases:
    """Answer many cases of evidence in one batched call (see the module docstring).

    Parameters
    ----------
    model : Model or callable
        Its observed nodes must be scalar sites outside every plate (a Bayesian network's
        nodes); it may have plates of its own (the cases plate goes left of them).
    cases : pandas.DataFrame, list of dict, or dict of lists
        One row per case: node -> state (name or index); a missing entry (NaN, None, or
        a key left out) means the node is not observed in that case.  A dict maps each
        node to its column (one state per case, all columns of one length).
    method : str
        Passed to :func:`ppl.infer` (default ``"exact"``).
    data : mapping, optional
        Model arguments shared by every case.
    **options
        Passed to :func:`ppl.infer`.

    Returns
    -------
    Cases
        ``probs(node)`` of shape ``(n_cases, K)``, ``to_pandas()``, ``log_evidence``.

    Raises
    ------
    DataError
        ``cases`` empty or not rows of evidence; a column naming no scalar sample site; a
        state that is not one of the node's states; evidence of probability zero in some
        case (the group's log evidence is then ``-inf``).
    UnsupportedModelError, IntractableError, OptionError
        As :func:`ppl.infer`.
    """
    from .api import infer

    model = as_model(model)
    rows = _rows(cases)
    arguments = dict(data or {})
    dim, graph = _plate_dim(model, arguments)
    indicators = _indicators(model, graph, rows, dim)
    if indicators is not None:  # one plated pass for every case, whatever it observes
        try:
            post = infer(_with_indicators(model, len(rows), dim, indicators), arguments, method=method, **options)
        except DataError as e:
            _impossible_case(model, rows, arguments, e)
            raise
        return Cases(model, rows, [(list(range(len(rows))), post)], _cards(graph), dim,
                     (arguments, method, options, graph, True))
    groups: dict = {}
    for i, r in enumerate(rows):
        groups.setdefault(tuple(sorted(r)), []).append(i)
    answered = []
    for observed, index in groups.items():
        values = {node: _values(model, graph, [rows[i][node] for i in index], node, dim) for node in observed}
        if len(index) <= SMALL_GROUP:  # a plated compile per tiny group costs more than a rebound query per case
            answered.extend(([i], infer(model, {**arguments, **{k: v[j] for k, v in values.items()}},
                                        method=method, **options)) for j, i in enumerate(index))
            continue
        batched = _batched(model, len(index), dim)
        answered.append((index, infer(batched, {**arguments, **values}, method=method, **options)))
    return Cases(model, rows, answered, _cards(graph), dim, (arguments, method, options, graph, False))


def _impossible_case(model, rows, arguments, error) -> None:
    """After the plated pass found the evidence impossible: the first case whose own
    evidence has probability zero, named in a :class:`DataError` (each case queried alone,
    through the prepared model of :func:`ppl.infer`); returns if none is (the caller
    re-raises the plated pass's error)."""
    from .api import infer

    if "probability zero" not in str(error):
        return
    for i, row in enumerate(rows):
        try:
            infer(model, {**arguments, **row}, method="exact", map=False, marginals=False)
        except DataError as e:
            if "probability zero" in str(e):
                err = DataError(f"case {i} of {len(rows)} ({row}) has evidence of probability zero under model "
                                f"'{model.name}' (log evidence = -inf); remove or correct it", log_evidence=-math.inf)
                err.case = i  # the row's index in the cases given
                raise err from None
            return


def _case_log_evidence(cases) -> torch.Tensor:
    """See :meth:`Cases.case_log_evidence`."""
    from .api import infer

    model, rows, (arguments, method, options, graph, indicator) = cases.model, cases.rows, cases._call
    out = torch.zeros(len(rows), dtype=torch.float64)
    if not indicator:  # the grouped fallback (non-discrete columns): one query per case
        for i, row in enumerate(rows):
            out[i] = infer(model, {**arguments, **row}, method=method, **options).log_evidence
        return out
    order = [n for n in graph.variables if any(n in r for r in rows)]
    for j, node in enumerate(order):
        before = [{k: v for k, v in r.items() if k in order[:j]} for r in rows]
        lam = _indicators(model, graph, before, cases._dim) if j else {}
        post = infer(_with_indicators(model, len(rows), cases._dim, lam), arguments, method=method, **options)
        probs = post.probs(node).detach().to("cpu", torch.float64).reshape(len(rows), -1)
        idx = [i for i, r in enumerate(rows) if node in r]
        states = _values(model, graph, [rows[i][node] for i in idx], node, -1).reshape(-1).long()
        out[torch.as_tensor(idx)] += torch.log(probs[torch.as_tensor(idx), states])
    return out


def _cards(graph) -> dict:
    return {n: v.cardinality for n, v in graph.variables.items()
            if v.role != "param" and v.cardinality is not None and not v.plates and not tuple(v.batch_shape)}
