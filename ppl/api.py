"""The user-facing entry points: :func:`compile`, :func:`analyze`, :func:`infer`,
:func:`compare`.

Each takes either a model and its ``data`` or an already compiled
:class:`~ppl.compiler.FactorGraph` (``ppl.compile(model, data)``), so a model traced
once can be analysed and queried many times.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .analysis.report import Analysis, analyze_graph
from .auto import auto_route, escalate
from .backends.base import Applicability, applicability
from .backends.common.modules import keep_module_refs
from .backends.common.params import param_scope, warm_start_values
from .backends.common.streaming import first_batch
from .backends.options import COMMON, validate_options
from .backends.registry import get_backend, ranked_backends, registered_backends
from . import prepared
from .comparison import Comparison, run_comparison
from .compiler import FactorGraph
from .compiler import compile as _compile
from .errors import DataError, PPLError, UnknownOptionError, UnsupportedModelError
from .rng import seeded_globals
from .trust import UNRELIABLE, Trust

__all__ = ["compile", "analyze", "infer", "compare", "methods", "Comparison", "auto_route", "auto_order"]



def compile(model, data=None):
    """:func:`ppl.compiler.compile` (see there: parameters, returns, raises) in a private
    Pyro param store, so the compiled ``ppl.param`` values are the ones the model declares
    (its init), never values another model left in Pyro's global store under the same
    names, and the global store is left as it was."""
    with param_scope():
        return _compile(model, data)


compile.__doc__ = (compile.__doc__ or "") + "\n\n" + (_compile.__doc__ or "")

#: Options of :func:`infer` that shape the analysis (and are passed on only to backends
#: that declare them).
ANALYSIS_OPTIONS = ("heuristic", "memory_budget")


def auto_order() -> list:
    """The registered method names in the order ``method="auto"`` tries them: by each
    backend's ``rank`` (lower first), ties in registration order; each backend's
    ``rank_note`` says why it ranks where it does."""
    return list(ranked_backends())


def _graph(model, data) -> FactorGraph:
    if isinstance(model, FactorGraph):
        if data is not None:
            raise DataError("pass data to ppl.compile, not with an already compiled FactorGraph")
        return model
    return compile(model, data)


def _reuses_prepared(method: str) -> bool:
    """Whether ``method`` (``"auto"`` included) may run on a graph :mod:`ppl.prepared`
    rebound to new evidence."""
    return method == "auto" or getattr(get_backend(method), "reuses_prepared", False)


def _prepared_graph(model, data, method: str, options: dict) -> FactorGraph:
    """The graph of ``(model, data)``: rebound from a prepared model of an earlier call
    where :mod:`ppl.prepared` allows it (same structure, new evidence), else compiled and
    kept for later calls."""
    if isinstance(model, FactorGraph) or options.get("init") is not None or not _reuses_prepared(method):
        return _graph(model, data)
    graph = prepared.lookup(model, data)
    if graph is None:
        graph = _graph(model, data)
        prepared.store(model, data, graph)
    return graph


def _graph_for_backend(graph, name: str, shape, compiled: dict):
    """``(graph, analysis)`` to run backend ``name`` on: ``graph`` itself, or for a
    backend that cannot run on a rebound graph, the model compiled afresh with the same
    data (once per call, kept in ``compiled``)."""
    if graph.rebound is None or getattr(get_backend(name), "reuses_prepared", False):
        return graph, None
    if "graph" not in compiled:
        fresh = compile(graph.model, {**graph.bound.kwargs, **graph.bound.observations})
        with param_scope(fresh):
            compiled["graph"], compiled["analysis"] = fresh, _analysis(fresh, *shape)
    return compiled["graph"], compiled["analysis"]


def _shape_options(heuristic, memory_budget, dtype, method: str = "analyze") -> tuple:
    """The analysis-shaping options, checked (``OptionError`` naming a bad one and
    ``method``, the method the caller asked for)."""
    given = {"heuristic": heuristic, "memory_budget": memory_budget, "dtype": dtype}
    given = {k: v for k, v in given.items() if v is not None}
    checked = validate_options(method, {k: COMMON[k] for k in given}, given, fill=False)
    return (checked.get("heuristic", "min_fill"), checked.get("memory_budget"), checked.get("dtype", torch.float64))


def _analysis_key(heuristic, memory_budget, dtype) -> tuple:
    return (heuristic, memory_budget, dtype.itemsize)


def _registry_key() -> tuple:
    """Which backends are registered now (names and objects): analyses are memoised per
    registry state, since every registered backend gives a verdict."""
    return tuple((n, id(b)) for n, b in registered_backends().items())


def _verdicts(graph, analysis, key) -> dict:
    """Name -> :class:`Applicability` of every registered backend on ``analysis`` (a
    backend whose check fails with a ppl error is recorded as not applying)."""
    verdicts = {}
    for name, backend in registered_backends().items():
        try:
            verdict = applicability(backend, analysis)
        except PPLError as e:  # one backend's failing check must not block the others
            verdict = Applicability(False, f"its applicability check failed: {type(e).__name__}: {e}", type(e))
        verdicts[name] = verdict
    return verdicts


def _analysis(graph, heuristic="min_fill", memory_budget=None, dtype=torch.float64) -> Analysis:
    heuristic, memory_budget, dtype = _shape_options(heuristic, memory_budget, dtype)
    key = _analysis_key(heuristic, memory_budget, dtype)

    def build():
        analysis = analyze_graph(graph, heuristic=heuristic, memory_budget=memory_budget, itemsize=dtype.itemsize)
        verdicts = _verdicts(graph, analysis, key)
        analysis.backends.update({n: (v.ok, v.reason) for n, v in verdicts.items()})
        graph.memo("api", ("verdicts", key, _registry_key()), lambda: verdicts)
        try:
            analysis.auto = auto_route(analysis)
        except UnsupportedModelError as e:
            analysis.auto = {"method": None, "reason": str(e), "passed_over": {}}
        return analysis

    return graph.memo("api", ("analysis", key, _registry_key()), build)


def analyze(model, data=None, *, heuristic: str = "min_fill", memory_budget: int | None = None,
            dtype=torch.float64, **unknown) -> Analysis:
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
    OptionError
        For an unknown heuristic, a memory budget that is not a positive number of bytes,
        or a dtype that is not a floating ``torch.dtype``.
    UnknownOptionError (an OptionError and a TypeError)
        For any other keyword (a method's option belongs to :func:`ppl.infer`).
    """
    if unknown:
        raise UnknownOptionError(f"ppl.analyze got option(s) {sorted(unknown)}; it takes heuristic, memory_budget "
                                 "and dtype (a method's options go to ppl.infer)")
    graph = _prepared_graph(model, data, "auto", {})  # the analysis is of the structure: reusable
    with param_scope(graph):
        return _analysis(graph, heuristic, memory_budget, dtype)


def _choose_auto(analysis):
    """``(method, reason, passed_over)`` of :func:`auto_route` (kept for callers of the
    old private helper)."""
    route = auto_route(analysis)
    return route["method"], route["reason"], route["passed_over"]


def methods(name: str | None = None):
    """The registered methods and their declared options.

    Parameters
    ----------
    name : str, optional
        One method; default all, in :func:`auto_order`.

    Returns
    -------
    dict
        Method name -> ``{"summary": str, "rank": float, "options": [(name, default,
        accepted, doc), ...]}``.

    Raises
    ------
    BackendNotFoundError
        For an unknown ``name``.
    """
    from .backends.options import option_rows

    names = [name] if name is not None else auto_order()
    out = {}
    for n in names:
        backend = get_backend(n)
        out[n] = {"summary": getattr(backend, "summary", ""), "rank": float(getattr(backend, "rank", 100.0)),
                  "options": option_rows(getattr(backend, "options", {}))}
    return out


def infer(model, data=None, method: str = "auto", **options):
    """Run inference with the backend named ``method`` and return its Posterior.

    Every call is pure: it runs in a private Pyro param store whose ``ppl.param`` sites
    start at the model's declared values (or ``init``), and leaves Pyro's global param
    store, the global RNGs (torch, numpy, ``random``) and the weights of every network
    registered with ``pyro.module`` (by the model or a guide) as it found them, also when
    it raises; learned values, network weights included (``"name$$$p"`` keys), are in
    ``posterior.params``, which the posterior's later runs of the model and guide use
    (``posterior.load_module_weights()`` writes them into the networks).

    Parameters
    ----------
    model : Model, callable or FactorGraph
    data : mapping, optional
        See :func:`ppl.compile`.
    method : str
        A registered method name (``ppl.methods()`` lists them with their options) or
        ``"auto"`` (default): the backends that apply are tried in :func:`auto_order`
        (each backend's ``rank``: exact and closed-form methods first) until one's trust
        verdict is exact or reliable (:mod:`ppl.auto`); the choice, the deciding fact,
        every attempt and why it was left go in ``posterior.diagnostics["routing"]``.
    **options
        Passed to the backend, checked against its declared options
        (``ppl.methods(method)``); ``heuristic``, ``memory_budget`` and ``dtype`` shape
        the analysis, and the first two reach the backend only if it declares them.  With
        ``method="auto"``: ``time_budget`` (seconds, default 120) and ``escalate``
        (default True), and each backend tried gets the options it declares.
        ``init`` given a Posterior (its ``params``) or a dict ``{param name: value}``
        is a warm start: those ``ppl.param`` sites (and ``pyro.module`` weights, a
        posterior's learned ones or the model's given by ``"name$$$p"`` key) start there
        instead of at the values the model declares (a string ``init`` is the backend's
        own start strategy); a backend whose ``init`` takes a Posterior (``chees``) also
        starts its chains from that Posterior's draws.

    Returns
    -------
    Posterior
        Its ``trust`` holds the verdict; an unreliable one also raises a
        :class:`~ppl.errors.TrustWarning`.

    Raises
    ------
    BackendNotFoundError
        Unknown ``method`` (lists the registered ones).
    UnknownOptionError (an OptionError and a TypeError)
        An option the backend does not take.
    OptionError
        An option value the backend's declaration refuses (names the option, the value
        and what is accepted); an ``init`` mapping naming no ``ppl.param`` of the model,
        or a value of the wrong shape or outside the param's constraint.
    UnsupportedModelError, IntractableError
        The backend does not apply; the message says why and which methods do.
    DataError, ModelError
        As :func:`ppl.compile`.
    """
    shape = _shape_options(options.get("heuristic"), options.get("memory_budget"), options.get("dtype"),
                           method if isinstance(method, str) else "analyze")
    if method != "auto":
        get_backend(method)  # an unknown name fails before the analysis
    if (callable(options.get("stream")) and not isinstance(model, FactorGraph) and method != "auto"
            and "stream" in getattr(get_backend(method), "options", {})):  # any other value: the option check names it
        data = _with_first_batch(data, options["stream"])
    graph = _prepared_graph(model, data, method, options)
    start = _warm_start(graph, options, method)
    with param_scope(graph, start):
        analysis = _analysis(graph, *shape)
    if method == "auto":
        compiled: dict = {}

        def run(name, opts):
            g, a = _graph_for_backend(graph, name, shape, compiled)
            return _run(g, a or analysis, shape, name, opts, start)

        return escalate(graph, analysis, options, run)
    posterior = _run(graph, analysis, shape, method, options, start)
    posterior.trust.warn(method, stacklevel=3)
    return posterior


def _with_first_batch(data, stream):
    """``data`` completed by the stream's first batch (``stream=``, docs/streaming.md): the
    model is compiled on one batch, which fixes the structure; keys in ``data`` win.

    Raises
    ------
    OptionError, DataError
        As :func:`~ppl.backends.common.streaming.first_batch` (calling it gives no
        iterable, an empty stream, a batch that is not a dict of arrays)."""
    if data is not None and not isinstance(data, Mapping):
        return data  # compile names the bad data
    return {**first_batch(stream), **(data or {})}


def _warm_start(graph, options, method) -> dict | None:
    """The ``ppl.param`` start values ``init=`` gives (a Posterior: its ``params``; a
    mapping: its keys that name ``ppl.param`` sites), taken out of ``options``; the
    mapping's other keys (latent sites) stay as the backend's own ``init``."""
    from .posterior import Posterior

    init = options.get("init")
    if isinstance(init, Posterior):
        if method != "auto" and _takes_posterior_init(method, init):
            return warm_start_values(init, graph)  # and the backend starts its latents from its draws
        return warm_start_values(options.pop("init"), graph)
    if not isinstance(init, Mapping):
        return None  # None, a strategy name, or a bad value the backend's validation names
    names = set(graph.params())
    rest = {k: v for k, v in init.items() if k not in names}
    if rest and method != "auto" and "init" not in getattr(get_backend(method), "options", {}):
        warm_start_values(init, graph)  # names the keys that are no ppl.param (OptionError)
    if rest:
        options["init"] = rest
    else:
        options.pop("init")
    given = {k: v for k, v in init.items() if k in names}
    return warm_start_values(given, graph) if given else None


def _takes_posterior_init(method: str, init) -> bool:
    """Whether backend ``method``'s own ``init`` option accepts the Posterior ``init`` (a
    sampler's warm start, :mod:`ppl.backends.common.warmstart`)."""
    option = getattr(get_backend(method), "options", {}).get("init")
    try:
        return option is not None and option.constraint.convert(init) is init
    except (TypeError, ValueError):
        return False


def _run(graph, analysis, shape, method, options, start=None):
    """Run one backend in its own private param store (every ``ppl.param`` at its declared
    value or at ``start``; the ``pyro.module`` networks given back their weights at the
    end): validate its options, check it applies, run it, attach its trust verdict (without
    warning)."""
    with param_scope(graph, start) as weights:
        posterior = _run_scoped(graph, analysis, shape, method, options)
    keep_module_refs(posterior, weights)  # where post.load_module_weights() writes
    return posterior


def _run_scoped(graph, analysis, shape, method, options):
    backend = get_backend(method)
    declared = getattr(backend, "options", {})
    # options that only shape the analysis go to the backend only if it declares them
    options = {k: v for k, v in options.items() if k not in ANALYSIS_OPTIONS or k in declared}
    if hasattr(backend, "validate_options"):
        options = backend.validate_options(options)
    else:
        options = validate_options(method, declared, options, fill=False)
    verdicts = graph.memo("api", ("verdicts", _analysis_key(*shape), _registry_key()), dict)
    verdict = verdicts.get(method) or applicability(backend, analysis)
    if hasattr(backend, "check_options"):
        verdict = backend.check_options(analysis, verdict, options)
    if not verdict.ok:
        others = [n for n, (ok, _) in analysis.backends.items() if ok and n != method]
        hint = f"; methods that apply: {others}" if others else "; no registered method applies"
        raise verdict.error(f"method '{method}' does not apply to model '{graph.model.name}': {verdict.reason}{hint}",
                            **(verdict.details or {}))
    device = options.get("device")
    # seeded: the global RNGs too, for random numbers the model draws itself (torch.rand, np.random)
    with seeded_globals(options.get("seed"), [device] if getattr(device, "type", None) == "cuda" else []):
        posterior = backend.run(graph, analysis, **options)
        if getattr(posterior, "seed", None) is None and options.get("seed") is not None:
            posterior.seed = int(options["seed"])  # the default seed of sample(): seeded runs draw alike
        if getattr(posterior, "memory_budget", None) is None:
            posterior.memory_budget = analysis.memory_budget  # the budget of sample() / to_arviz()
        posterior.diagnostics["routing"] = {"method": method, "reason": verdict.reason, "passed_over": {},
                                            "auto": False}
        _assess(backend, method, posterior, graph, analysis)  # PSIS and other checks run the model too
    return posterior


def _assess(backend, method, posterior, graph, analysis) -> None:
    """Attach the backend's trust verdict to ``posterior`` unless the run set one."""
    if getattr(posterior, "trust", None) is None:
        assess = getattr(backend, "assess", None)
        posterior.trust = assess(posterior, graph, analysis) if assess is not None else \
            Trust(UNRELIABLE, [f"method '{method}' reports no diagnostics, so its answer could not be checked"])


def compare(model, data=None, methods=None, *, reference=None, **options) -> Comparison:
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
    methods : sequence of str or (str, dict), or "all", optional
        Backend names, or ``(name, options)`` pairs to run one backend with several
        settings; ``"all"`` runs every registered backend that applies; ``None``
        (default) runs the one method ``method="auto"`` tries first (the highest-ranked
        backend that applies: exact inference wherever it applies; auto's later
        escalation steps are not run).
    reference : str, optional
        Label of the row the errors are measured against.  Default, by trust verdict: a
        row whose verdict is ``exact`` (with a log evidence), else a ``reliable`` row
        of a reference sampler (a backend with ``reference_sampler = True``: NUTS), else
        the row with the highest ELBO among those that do not learn ``ppl.param`` values
        (see :mod:`ppl.comparison` and ``docs/compare.md``).  ``Comparison.reference_kind``
        says which (``exact``, ``sampler``, ``highest elbo`` or ``chosen``).
    **options
        Options given to every method (e.g. ``device``, ``seed``); per-method options win.

    Returns
    -------
    Comparison
        One row per method with columns ``method``, ``trust`` (the row's verdict:
        ``exact``, ``reliable`` or ``unreliable``), ``log_evidence`` (nats, exact
        methods), ``elbo`` (nats), ``kl_gap`` (nats: exact log evidence − ELBO =
        KL(q‖p), eq. 19.1, when the reference's verdict is exact; not for a method that
        learned ``ppl.param`` values), ``map_log_joint`` (nats), ``max_marginal_error`` /
        ``mean_marginal_error`` (discrete sites: |p − p_ref| over all marginal
        probabilities), ``max_mean_error`` / ``mean_mean_error`` (continuous sites:
        |E[h] − E_ref[h]| over all elements), ``max_mean_error_sd`` (the largest
        |E[h] − E_ref[h]| in reference posterior sds), ``worst_sd_ratio`` (the ratio
        sd / sd_ref farthest from 1 over continuous elements), ``seconds`` (wall time),
        ``iterations``, ``converged``, ``status`` (``"ok"`` or ``"not run: why"``);
        ``print()`` it, ``.to_pandas()``, ``.plot(path_prefix)``.  A field that does not
        apply is ``None`` (the reference row has no ``max_mean_error_sd`` or
        ``worst_sd_ratio``).

    Raises
    ------
    BackendNotFoundError
        If a method name is not registered (before anything runs).
    UnknownOptionError (an OptionError and a TypeError)
        An option a backend does not take.
    OptionError (a ValueError)
        ``methods`` that is empty or not a list (one name is taken as a list of it), a
        malformed entry of it, ``reference`` that names no row, or a bad value of an option
        every method checks alike (``seed``, ``dtype``, ``device``, ``memory_budget``,
        ``heuristic``, ``progress``), before any method runs.
    DataError, ModelError
        As :func:`ppl.compile`.
    """
    shared = {k: v for k, v in options.items() if k in _SHARED_OPTIONS and v is not None}
    validate_options("compare", {k: COMMON[k] for k in shared}, shared, fill=False)  # a bad seed fails every row
    graph = _graph(model, data)
    with param_scope(graph):
        return _compare(graph, methods, reference, options)


#: Options every backend checks alike: ``compare`` refuses a bad value once, before any row runs.
_SHARED_OPTIONS = ("dtype", "device", "seed", "progress", "memory_budget", "heuristic")


def _compare(graph, methods, reference, options) -> Comparison:
    if methods == "all":
        analysis = _analysis(graph)
        methods = [n for n, (ok, _) in analysis.backends.items() if ok]
    elif methods is None:
        methods = [auto_route(_analysis(graph))["method"]]
    return run_comparison(graph, methods, options, infer=infer, reference=reference)
