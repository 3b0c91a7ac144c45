"""The user-facing entry points: :func:`compile`, :func:`analyze`, :func:`infer`,
:func:`compare`.

Each takes either a model and its ``data`` or an already compiled
:class:`~ppl.compiler.FactorGraph` (``ppl.compile(model, data)``), so a model traced
once can be analysed and queried many times.
"""

from __future__ import annotations

import time

import torch

from .analysis.report import Analysis, analyze_graph
from .backends.registry import get_backend, registered_backends
from .compiler import FactorGraph
from .compiler import compile as _compile
from .errors import DataError, PPLError, UnsupportedModelError
from .table import Table

__all__ = ["compile", "analyze", "infer", "compare", "Comparison", "AUTO_PREFERENCE"]

compile = _compile

#: Order in which ``method="auto"`` tries registered backends: exact where tractable,
#: closed-form methods next, stochastic ones last.
AUTO_PREFERENCE = ("exact", "cavi", "em", "svi", "map")

#: Options of :func:`infer` that shape the analysis (and are passed on only to backends
#: that declare them).
ANALYSIS_OPTIONS = ("heuristic", "memory_budget")


def _graph(model, data) -> FactorGraph:
    if isinstance(model, FactorGraph):
        if data is not None:
            raise DataError("pass data to ppl.compile, not with an already compiled FactorGraph")
        return model
    return _compile(model, data)


def _itemsize(dtype) -> int:
    return dtype.itemsize if dtype is not None else 8


def _analysis_key(heuristic, memory_budget, dtype) -> tuple:
    return ("analysis", heuristic, memory_budget, _itemsize(dtype))


def _analysis(graph, heuristic="min_fill", memory_budget=None, dtype=torch.float64) -> Analysis:
    key = _analysis_key(heuristic, memory_budget, dtype)
    analysis = graph.cache.get(key)
    if analysis is None:
        analysis = analyze_graph(graph, heuristic=heuristic, memory_budget=memory_budget, itemsize=_itemsize(dtype))
        for name, backend in registered_backends().items():
            verdict = backend.check(analysis)
            analysis.backends[name] = (verdict.ok, verdict.reason)
            graph.cache[("verdict", key, name)] = verdict
        graph.cache[key] = analysis
    return analysis


def analyze(model, data=None, *, heuristic: str = "min_fill", memory_budget: int | None = None,
            dtype=torch.float64) -> Analysis:
    """Analyse a model bound to data: variables, moral graph, elimination order,
    treewidth, largest clique and its memory, chains, and for every registered backend
    whether it applies and why.

    Parameters
    ----------
    model : Model, callable or FactorGraph
    data : mapping, optional
        See :func:`ppl.compile`; must be None when ``model`` is a FactorGraph.
    heuristic : {"min_fill", "min_degree"}
        Elimination-order heuristic (networkx treewidth heuristics).
    memory_budget : int, optional
        Bytes the largest exact table may take (default 2 GiB).
    dtype : torch.dtype
        Precision exact tables would use (sets bytes per entry).

    Returns
    -------
    Analysis
        ``print(analysis)`` gives a readable report.

    Raises
    ------
    DataError, ModelError
        As :func:`ppl.compile`.
    ValueError
        For an unknown heuristic.
    """
    return _analysis(_graph(model, data), heuristic, memory_budget, dtype)


def _choose_auto(analysis):
    registered = registered_backends()
    names = [n for n in AUTO_PREFERENCE if n in registered] + [n for n in registered if n not in AUTO_PREFERENCE]
    passed = {}
    for name in names:
        ok, why = analysis.backends[name]
        if ok:
            return name, why, passed
        passed[name] = why
    reasons = "; ".join(f"{n}: {w}" for n, w in passed.items())
    raise UnsupportedModelError(f"no registered method applies to model '{analysis.graph.model.name}' ({reasons})")


def infer(model, data=None, method: str = "auto", **options):
    """Run inference with the backend named ``method`` and return its Posterior.

    Parameters
    ----------
    model : Model, callable or FactorGraph
    data : mapping, optional
        See :func:`ppl.compile`.
    method : str
        A registered backend (``"exact"``, ...) or ``"auto"`` (default): the first
        backend of :data:`AUTO_PREFERENCE` that applies; the choice and the reasons
        the others were passed over go in ``posterior.diagnostics["routing"]``.
    **options
        Passed to the backend (see ``ppl.registered_backends()[method].options``);
        ``heuristic`` and ``memory_budget`` shape the analysis and reach the backend only
        if it declares them.

    Returns
    -------
    Posterior

    Raises
    ------
    BackendNotFoundError
        Unknown ``method`` (lists the registered ones).
    TypeError
        An option the backend does not take.
    UnsupportedModelError, IntractableError
        The backend does not apply; the message says why and which methods do.
    DataError, ModelError
        As :func:`ppl.compile`.
    """
    graph = _graph(model, data)
    shape = (options.get("heuristic", "min_fill"), options.get("memory_budget"), options.get("dtype", torch.float64))
    analysis = _analysis(graph, *shape)
    routing = None
    if method == "auto":
        method, why, passed = _choose_auto(analysis)
        routing = {"method": method, "reason": why, "passed_over": passed}
    backend = get_backend(method)
    # options that only shape the analysis go to the backend only if it declares them
    options = {k: v for k, v in options.items() if k not in ANALYSIS_OPTIONS or k in backend.options}
    backend.validate_options(options)
    verdict = graph.cache.get(("verdict", _analysis_key(*shape), method)) or backend.check(analysis)
    verdict = backend.check_options(analysis, verdict, options)
    if not verdict.ok:
        others = [n for n, (ok, _) in analysis.backends.items() if ok and n != method]
        hint = f"; methods that apply: {others}" if others else "; no registered method applies"
        raise verdict.error(f"method '{method}' does not apply to model '{graph.model.name}': {verdict.reason}{hint}",
                            **(verdict.details or {}))
    posterior = backend.run(graph, analysis, **options)
    posterior.diagnostics["routing"] = routing or {"method": method, "reason": verdict.reason, "passed_over": {}}
    return posterior


class Comparison(Table):
    """The table :func:`compare` returns; ``.posteriors`` maps each row's label to its
    Posterior (or the error it raised)."""

    def __init__(self, rows, posteriors, **kw):
        super().__init__(rows, **kw)
        self.posteriors = posteriors


def _label(entry):
    if isinstance(entry, str):
        return entry, entry, {}
    if isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], dict):
        opts = ", ".join(f"{k}={v}" for k, v in entry[1].items())
        return f"{entry[0]}({opts})" if opts else entry[0], entry[0], dict(entry[1])
    raise TypeError(f"compare: each method must be a name or a (name, options) pair, got {entry!r}")


def _max_marginal_error(post, ref):
    errors = []
    for site in ref.sites:
        if site not in getattr(post, "sites", []):
            continue
        if not hasattr(post, "probs"):
            return None  # a posterior without marginal tables: nothing to compare
        try:
            a, b = post.probs(site), ref.probs(site)
        except PPLError:
            continue
        errors.append(float((a.to(device=b.device, dtype=b.dtype) - b).abs().max()))
    return max(errors) if errors else None


def _map_log_joint(post):
    """``log p(ĥ, v)`` of a posterior's MAP point, if it reports one."""
    value = getattr(post, "log_joint", None)
    if value is None:
        value = post.diagnostics.get("map_log_joint")
    return value


def compare(model, data=None, methods=("exact",), **options) -> Comparison:
    """Run several backends on one model and data and lay their results side by side.

    Parameters
    ----------
    model : Model, callable or FactorGraph
    data : mapping, optional
    methods : sequence of str or (str, dict)
        Backend names, or ``(name, options)`` pairs to run one backend with several
        settings; ``"all"`` runs every registered backend that applies.
    **options
        Options given to every method (e.g. ``device``); per-method options win.

    Raises
    ------
    BackendNotFoundError
        If a method name is not registered (before anything runs).

    Returns
    -------
    Comparison
        A :class:`~ppl.table.Table` with columns ``method``, ``log_evidence`` (nats,
        exact methods), ``elbo`` (nats, a lower bound), ``map_log_joint`` (nats,
        ``log p(ĥ, v)`` at the MAP point of ``map`` and of ``exact``'s max-product),
        ``max_marginal_error``
        (largest absolute difference of a marginal probability against the exact
        run, when ``"exact"`` ran), ``seconds``, ``converged`` and ``status``;
        ``print()`` it or call ``.to_pandas()``.
    """
    graph = _graph(model, data)
    if methods == "all":
        analysis = _analysis(graph)
        methods = [n for n, (ok, _) in analysis.backends.items() if ok]
    entries = [_label(m) for m in methods]
    for _, name, _ in entries:
        get_backend(name)  # a misspelt name is an error, not a "not run" row
    posteriors, rows = {}, []
    for label, name, opts in entries:
        merged = {**options, **opts}
        start = time.perf_counter()
        try:
            post = infer(graph, method=name, **merged)
            status = "ok"
        except PPLError as e:
            post, status = e, f"not run: {e}"
        seconds = time.perf_counter() - start
        posteriors[label] = post
        rows.append({"method": label, "post": post, "seconds": seconds, "status": status})
    # the reference: the plain "exact" row if it ran, else any exact row
    exact_rows = [(lbl != "exact", p) for lbl, p in posteriors.items() if getattr(p, "method", None) == "exact"]
    reference = min(exact_rows, key=lambda row: row[0])[1] if exact_rows else None
    table_rows = []
    for r in rows:
        post = r["post"]
        ok = not isinstance(post, Exception)
        table_rows.append({
            "method": r["method"],
            "log_evidence": post.log_evidence if ok else None,
            "elbo": post.elbo if ok else None,
            "map_log_joint": _map_log_joint(post) if ok else None,
            "max_marginal_error": _max_marginal_error(post, reference) if ok and reference is not None else None,
            "seconds": r["seconds"],
            "converged": post.converged if ok else None,
            "status": r["status"],
        })
    notes = ["log_evidence, elbo in nats; map_log_joint = log p(MAP point, data) in nats (methods that give a MAP "
             "point); max_marginal_error = max |p_method - p_exact| over all marginal probabilities"]
    return Comparison(table_rows, posteriors, title=f"ppl.compare on model '{graph.model.name}'", notes=notes)
