"""The user-facing entry points: :func:`compile`, :func:`analyze`, :func:`infer`,
:func:`compare`.

Each takes either a model and its ``data`` or an already compiled
:class:`~ppl.compiler.FactorGraph` (``ppl.compile(model, data)``), so a model traced
once can be analysed and queried many times.
"""

from __future__ import annotations

import torch

from .analysis.report import Analysis, analyze_graph
from .backends.base import Applicability
from .backends.registry import get_backend, registered_backends
from .comparison import Comparison, run_comparison
from .compiler import FactorGraph
from .compiler import compile as _compile
from .errors import DataError, PPLError, UnsupportedModelError

__all__ = ["compile", "analyze", "infer", "compare", "Comparison", "AUTO_PREFERENCE", "auto_route"]

compile = _compile

#: Ranking ``method="auto"`` applies to the registered backends; the first that applies
#: wins (backends not listed rank after these, in registration order):
#:
#: 1. ``em`` — the model has ``ppl.param`` values to learn and EM's exact E-step is
#:    tractable.  EM applies *only* then (it refuses a model without params or with a
#:    continuous latent), so this rule never fires for a param-free model; for a model
#:    with params it ranks above ``exact``, which would hold the params fixed.
#: 2. ``exact`` — every latent is discrete and the largest clique fits the memory budget.
#: 3. ``cavi`` — every latent has a closed-form mean-field update.
#: 4. ``svi`` — otherwise (stochastic VI with a guide).
#: 5. ``map`` — the last resort: a point estimate.
AUTO_PREFERENCE = ("em", "exact", "cavi", "svi", "map")

#: Why a backend that applies still ranks below the one ``auto`` chose (for
#: ``diagnostics["routing"]["passed_over"]``).
_RANK_NOTES = {
    "em": "EM ranks first only for a model with ppl.params to learn",
    "exact": "exact ranks below EM when there are ppl.params to learn: it holds them at their current values",
    "cavi": "a mean-field approximation ranks below exact inference and EM",
    "svi": "a stochastic bound from gradient steps ranks below the closed-form methods",
    "map": "a point estimate without uncertainty is the last resort",
}

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
            try:
                verdict = backend.check(analysis)
            except PPLError as e:  # one backend's failing check must not block the others
                verdict = Applicability(False, f"its applicability check failed: {type(e).__name__}: {e}", type(e))
            analysis.backends[name] = (verdict.ok, verdict.reason)
            graph.cache[("verdict", key, name)] = verdict
        try:
            analysis.auto = auto_route(analysis)
        except UnsupportedModelError as e:
            analysis.auto = {"method": None, "reason": str(e), "passed_over": {}}
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
        ``print(analysis)`` gives a readable report, ending with the line
        ``auto would choose: X, because ...`` (``analysis.auto`` holds the same routing
        dict as :func:`auto_route`).

    Raises
    ------
    DataError, ModelError
        As :func:`ppl.compile`.
    ValueError
        For an unknown heuristic.
    """
    return _analysis(_graph(model, data), heuristic, memory_budget, dtype)


def _names(names, limit=4) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _deciding_fact(name, analysis, verdicts, params) -> str:
    """The sentence saying why ``name`` is auto's choice, naming the deciding fact."""
    ok, why = verdicts[name]
    not_ok = {n: w for n, (o, w) in verdicts.items() if not o}
    held = ""
    if params and name not in ("em", "svi"):
        em_why = not_ok.get("em", "not registered")
        held = (f"; the model's {len(params)} ppl.param(s) ({_names(params)}) are held at their current values, since "
                f"em does not apply ({em_why})")
    if name == "em":
        return (f"the model has {len(params)} ppl.param(s) to learn ({_names(params)}) and EM's E-step is tractable, "
                f"so EM learns them (exact would hold them fixed): {why}")
    if name == "exact":
        if not analysis.discrete and not analysis.continuous:
            return f"the model has no latent variables, so the log likelihood is exact: {why}{held}"
        return (f"every latent is discrete and the largest clique fits the memory budget, so the posterior is "
                f"computed exactly: {why}{held}")
    if name == "cavi":
        return (f"exact does not apply ({not_ok.get('exact', 'not registered')}) and every latent has a closed-form "
                f"CAVI update: {why}{held}")
    if name == "svi":
        return (f"no closed-form method applies (exact: {not_ok.get('exact', 'not registered')}; cavi: "
                f"{not_ok.get('cavi', 'not registered')}), so stochastic VI fits a guide: {why}")
    failed = "; ".join(f"{n}: {w}" for n, w in not_ok.items() if n in AUTO_PREFERENCE)
    if name == "map":
        return f"last resort, a point estimate: no method giving a distribution applies ({failed}): {why}{held}"
    return f"the first registered method that applies, after the built-in ones ({failed}): {why}{held}"


def auto_route(analysis) -> dict:
    """What ``method="auto"`` chooses for an analysed model, and why.

    The registered backends are ranked by :data:`AUTO_PREFERENCE` (unlisted ones after,
    in registration order) and the first whose ``check`` applies is chosen.

    Parameters
    ----------
    analysis : Analysis
        From :func:`analyze` (its ``backends`` verdicts must be filled).

    Returns
    -------
    dict
        ``{"method": name, "reason": str, "passed_over": {other: str}, "order": [names],
        "auto": True}``: ``reason`` names the deciding fact (e.g. *every latent is
        discrete and the largest clique fits the memory budget*); ``passed_over`` has an
        entry for every other registered backend: ``"does not apply: ..."`` or
        ``"applies, but ranks below <method> (...): ..."``.

    Raises
    ------
    UnsupportedModelError
        If no registered backend applies (every reason is listed).
    """
    registered = registered_backends()
    order = [n for n in AUTO_PREFERENCE if n in registered] + [n for n in registered if n not in AUTO_PREFERENCE]
    verdicts = {n: analysis.backends[n] for n in order if n in analysis.backends}
    chosen = next((n for n in order if n in verdicts and verdicts[n][0]), None)
    if chosen is None:
        reasons = "; ".join(f"{n}: {w}" for n, (_, w) in verdicts.items())
        raise UnsupportedModelError(f"no registered method applies to model '{analysis.graph.model.name}' ({reasons})")
    params = list(analysis.graph.params())
    passed = {}
    for n in order:
        if n == chosen or n not in verdicts:
            continue
        ok, why = verdicts[n]
        if ok:
            note = _RANK_NOTES.get(n, "backends outside AUTO_PREFERENCE rank after the built-in ones")
            passed[n] = f"applies, but ranks below {chosen} ({note}): {why}"
        else:
            passed[n] = f"does not apply: {why}"
    return {"method": chosen, "reason": _deciding_fact(chosen, analysis, verdicts, params), "passed_over": passed,
            "order": order, "auto": True}


def _choose_auto(analysis):
    """``(method, reason, passed_over)`` of :func:`auto_route` (kept for callers of the
    old private helper)."""
    route = auto_route(analysis)
    return route["method"], route["reason"], route["passed_over"]


def infer(model, data=None, method: str = "auto", **options):
    """Run inference with the backend named ``method`` and return its Posterior.

    Parameters
    ----------
    model : Model, callable or FactorGraph
    data : mapping, optional
        See :func:`ppl.compile`.
    method : str
        A registered backend (``"exact"``, ...) or ``"auto"`` (default): the first
        backend of :data:`AUTO_PREFERENCE` that applies (EM for a model with
        ``ppl.param``s and a tractable E-step, else exact when every latent is discrete
        and the largest clique fits the memory budget, else CAVI when every latent has a
        closed-form update, else SVI, else MAP); the choice, the deciding fact and why
        every other backend was passed over go in ``posterior.diagnostics["routing"]``
        (see :func:`auto_route`).
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
        routing = auto_route(analysis)
        method = routing["method"]
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
    posterior.diagnostics["routing"] = routing or {"method": method, "reason": verdict.reason, "passed_over": {},
                                                   "auto": False}
    return posterior


def compare(model, data=None, methods=("exact",), *, reference=None, **options) -> Comparison:
    """Run several backends on one model and data and lay their results side by side.

    Every method starts from the same state: Pyro's param store is restored to what it
    was when ``compare`` was called before each method runs, and again at the end (a
    learned ``ppl.param`` is in ``table.posteriors[label].params``, not left in the
    store).  With the same ``seed`` options, each row equals ``ppl.infer`` run alone.

    Parameters
    ----------
    model : Model, callable or FactorGraph
    data : mapping, optional
        See :func:`ppl.compile`; must be None when ``model`` is a FactorGraph.
    methods : sequence of str or (str, dict), or "all"
        Backend names, or ``(name, options)`` pairs to run one backend with several
        settings; ``"all"`` runs every registered backend that applies.
    reference : str, optional
        Label of the row the errors are measured against.  Default: the row labelled
        ``"exact"`` if it ran, else any exact row, else the row with the highest ELBO
        among those that do not learn ``ppl.param`` values (see ``docs/compare.md``).
    **options
        Options given to every method (e.g. ``device``, ``seed``); per-method options win.

    Returns
    -------
    Comparison
        One row per method with columns ``method``, ``log_evidence`` (nats, exact
        methods), ``elbo`` (nats), ``kl_gap`` (nats: exact log evidence − ELBO =
        KL(q‖p), eq. 19.1, when an exact reference ran), ``map_log_joint`` (nats),
        ``max_marginal_error`` / ``mean_marginal_error`` (discrete sites: |p − p_ref| over
        all marginal probabilities), ``max_mean_error`` / ``mean_mean_error``
        (continuous sites: |E[h] − E_ref[h]| over all elements), ``seconds`` (wall
        time), ``iterations``, ``converged``, ``status`` (``"ok"`` or ``"not run: why"``);
        ``print()`` it, ``.to_pandas()``, ``.plot(path_prefix)``.  A field that does not
        apply is ``None``.

    Raises
    ------
    BackendNotFoundError
        If a method name is not registered (before anything runs).
    TypeError
        A malformed ``methods`` entry, or an option a backend does not take.
    ValueError
        ``reference`` that names no row.
    DataError, ModelError
        As :func:`ppl.compile`.
    """
    graph = _graph(model, data)
    if methods == "all":
        analysis = _analysis(graph)
        methods = [n for n, (ok, _) in analysis.backends.items() if ok]
    return run_comparison(graph, methods, options, infer=infer, reference=reference)
