"""``method="auto"``: plan from the analysis, then escalate until the answer can be trusted.

The registered backends that apply are tried in rank order (each backend's ``rank``:
cheapest and most exact first), each result's trust verdict is checked, and the first
``"exact"`` or ``"reliable"`` one is returned; a backend may ask to be tried with several
option sets (``Backend.auto_variants``, e.g. a richer guide).  Every attempt, its cost and
why it was left is recorded in ``posterior.diagnostics["routing"]``.  When no attempt is
reliable within ``time_budget`` seconds, the last result is returned with its
"unreliable" verdict and a :class:`~ppl.errors.TrustWarning` (a sampler whose chains
disagree gives way to an earlier Gaussian approximation whose k̂ is below 1:
:func:`_least_unreliable`).  Point estimates (rank 90 and
above) are tried only when nothing else applies.  A sampler that takes a warm start
(``Backend.warm_starts``: ChEES) begins from the draws and covariance of the Gaussian
approximation with the lowest PSIS k̂ that an earlier attempt left unreliable (Zhang et al.
2022, §5: Pathfinder as MCMC's initialisation); the attempt's record says so
(``warm_start``).
"""

from __future__ import annotations

import math
import time
import warnings

from .backends.options import Boolean, NoneValue, Option, Real, option_table, validate_options
from .backends.common.importance import gaussian_misfit
from .backends.common.warmstart import start_khat
from .backends.registry import methods_taking, ranked_backends
from .errors import (DataError, NumericalError, OptionError, PPLError, TrustWarning, UnknownOptionError,
                     UnsupportedModelError)

__all__ = ["AUTO_OPTIONS", "LAST_RESORT_RANK", "auto_route", "plan", "static_skips", "option_refusals", "escalate"]

#: Options of ``method="auto"`` itself (not passed to the backends).
AUTO_OPTIONS = option_table(
    Option("time_budget", Real(0.0, low_open=True) | NoneValue(), 120.0,
           "seconds auto may spend trying methods before it returns the best unreliable answer (None: no limit)"),
    Option("escalate", Boolean(), True,
           "try the next method when a result's verdict is unreliable (False: the first method that applies)"),
)

#: Backends ranked at or above this are point estimates: tried only when nothing else applies.
LAST_RESORT_RANK = 90.0


def _rank(backend) -> float:
    return float(getattr(backend, "rank", 100.0))


def auto_route(analysis) -> dict:
    """What ``method="auto"`` tries first for an analysed model, why, and its whole plan.

    Parameters
    ----------
    analysis : Analysis
        From ``ppl.analyze`` (its ``backends`` verdicts must be filled).

    Returns
    -------
    dict
        ``{"method": name, "reason": str, "passed_over": {other: str}, "order": [names],
        "plan": [names], "auto": True}``: ``reason`` names the deciding fact (the
        backend's own ``deciding_fact``); ``passed_over`` has an entry for every other
        registered backend (``"does not apply: ..."`` or ``"applies, but ranks below
        ..."``); ``plan`` lists the methods auto would try, in order, until one is
        reliable.

    Raises
    ------
    UnsupportedModelError
        If no registered backend applies (every reason is listed).
    """
    ranked = ranked_backends()
    order = list(ranked)
    verdicts = {n: analysis.backends[n] for n in order if n in analysis.backends}
    skipped = static_skips(analysis)
    steps = plan(analysis, skipped)
    chosen = steps[0] if steps else next((n for n in order if n in verdicts and verdicts[n][0]), None)
    if chosen is None:
        reasons = "; ".join(f"{n}: {w}" for n, (_, w) in verdicts.items())
        raise UnsupportedModelError(f"no registered method applies to model '{analysis.graph.model.name}' ({reasons})")
    passed = {}
    for n in order:
        if n == chosen or n not in verdicts:
            continue
        ok, why = verdicts[n]
        if n in skipped:
            passed[n] = f"applies, but auto passes it over: {skipped[n]}"
        elif ok:
            note = getattr(ranked[n], "rank_note", "")
            passed[n] = f"applies, but ranks below {chosen}{f' ({note})' if note else ''}: {why}"
        else:
            passed[n] = f"does not apply: {why}"
    backend = ranked[chosen]
    own = getattr(backend, "name", chosen)
    named = verdicts if own in verdicts else {**verdicts, own: verdicts[chosen]}
    try:
        reason = backend.deciding_fact(analysis, named)
    except (AttributeError, KeyError, TypeError):  # a duck-typed backend without deciding_fact
        reason = f"the first registered method that applies, in rank order: {verdicts[chosen][1]}"
    return {"method": chosen, "reason": reason, "passed_over": passed, "order": order,
            "plan": steps, "auto": True}


def plan(analysis, skipped: dict | None = None) -> list:
    """The methods auto tries, in rank order: those that apply and that auto does not pass
    over for the model alone (:func:`static_skips`), point estimates only when nothing else
    does."""
    ranked = ranked_backends()
    skipped = static_skips(analysis) if skipped is None else skipped
    ok = [n for n, b in ranked.items() if analysis.backends.get(n, (False, ""))[0] and n not in skipped]
    main = [n for n in ok if _rank(ranked[n]) < LAST_RESORT_RANK]
    return main or ok


def static_skips(analysis) -> dict:
    """``{method: reason}`` for the methods that apply but that auto passes over whatever
    earlier attempts showed: the backend's ``auto_skip`` with its default options and no
    attempts (no built-in backend declines from the model alone today; one registered from
    outside may)."""
    out = {}
    for name, backend in ranked_backends().items():
        if analysis.backends.get(name, (False, ""))[0] and hasattr(backend, "auto_skip"):
            why = backend.auto_skip(analysis, {}, [])
            if why:
                out[name] = why
    return out


def _split_options(options: dict, candidates: list) -> tuple:
    """``(auto's own options, options for the backends)``; an option no candidate declares
    (and auto does not take) is an :class:`~ppl.errors.UnknownOptionError`, and
    ``distributed`` an :class:`~ppl.errors.OptionError` (a method that ignored it would
    answer for this rank's shard alone)."""
    if options.get("distributed"):
        raise OptionError(f"option distributed={options['distributed']!r} of method 'auto' is not accepted: auto may "
                          "try methods that run on one process only, each answering for this rank's shard alone; "
                          f"choose a method that runs data-parallel: {', '.join(methods_taking('distributed'))}")
    own = {k: v for k, v in options.items() if k in AUTO_OPTIONS}
    rest = {k: v for k, v in options.items() if k not in AUTO_OPTIONS}
    ranked = ranked_backends()
    takers = {k for n in candidates for k in getattr(ranked[n], "options", {})}
    unknown = [k for k in rest if k not in takers and k not in ("heuristic", "memory_budget", "dtype")]
    if unknown:
        raise UnknownOptionError(f"method 'auto' got option(s) {unknown} that none of the methods it would try "
                                 f"({', '.join(candidates)}) takes; auto itself takes: {', '.join(AUTO_OPTIONS)}")
    return validate_options("auto", AUTO_OPTIONS, own), rest


def escalate(graph, analysis, options: dict, run_method):
    """Run auto's plan on ``graph`` until a result is exact or reliable.

    Parameters
    ----------
    graph : FactorGraph
    analysis : Analysis
    options : dict
        The user's options: auto's own (:data:`AUTO_OPTIONS`) and any backend's (each
        backend gets those it declares).  A backend that declares ``max_seconds`` and was
        not given it gets what is left of ``time_budget`` (seconds).
    run_method : callable(name, options) -> Posterior
        Runs one backend and attaches its trust verdict (``ppl.api``'s single-method path).

    Returns
    -------
    Posterior
        With ``diagnostics["routing"]``: the first choice, the plan and ``attempts`` (per
        method: options, seconds, verdict, and why it was left).

    Raises
    ------
    UnsupportedModelError
        If no method applies; the last error when every attempt failed.
    """
    route = auto_route(analysis)
    candidates = route["plan"]
    own, rest = _split_options(options, candidates)
    refused = option_refusals(candidates, rest)
    ranked = ranked_backends()
    start, attempts, last, last_error = time.perf_counter(), [], None, None
    unfit = None  # the first run projected past the budget: later (costlier) methods do not fit either
    approx = None  # the best Gaussian approximation so far: a warm start for the samplers after it
    for name in candidates:
        backend = ranked[name]
        declared = getattr(backend, "options", {})
        given = {k: v for k, v in rest.items() if k in declared}
        variants = getattr(backend, "auto_variants", lambda a: [{}])(analysis) or [{}]
        for extra in variants:
            spent = time.perf_counter() - start
            if own["time_budget"] is not None and attempts and spent > own["time_budget"]:
                attempts.append({"method": name, "options": extra, "seconds": 0.0, "verdict": None,
                                 "left_because": f"not tried: the time budget ({own['time_budget']:g} s) is spent"})
                continue
            skip = refused.get(name) or _over_budget(backend, name, extra, given, attempts, spent, own["time_budget"])
            if skip and not refused.get(name) and unfit is None:
                unfit = name
            elif not skip and unfit is not None and unfit != name:
                skip = (f"a {unfit} run did not fit the time budget ({own['time_budget']:g} s), and {name} ranks "
                        "after it (it costs more); raise time_budget to allow it")
            if not skip and hasattr(backend, "auto_skip"):
                skip = backend.auto_skip(analysis, extra, attempts)
            if skip:
                attempts.append({"method": name, "options": extra, "seconds": 0.0, "verdict": None,
                                 "left_because": f"not tried: {skip}"})
                continue
            t0 = time.perf_counter()
            chosen = {**given, **{k: v for k, v in extra.items() if k not in given}}
            if getattr(backend, "warm_starts", False) and "init" not in given and approx is not None:
                chosen["init"] = approx   # the chains start in the approximation's region, with its covariance
            if own["time_budget"] is not None and "max_seconds" in declared and "max_seconds" not in chosen:
                chosen["max_seconds"] = max(own["time_budget"] - spent, 1.0)  # a sampler stops at the budget
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TrustWarning)
                    post = run_method(name, chosen)
            except Exception as e:  # noqa: BLE001 - one method's failure must not stop auto trying the next
                if isinstance(e, DataError) and e.log_evidence == -math.inf:
                    raise  # impossible evidence: no other method can give a number
                last_error = e
                kind = "failed" if isinstance(e, PPLError) else "failed (an internal error: please report it)"
                attempts.append({"method": name, "options": extra, "seconds": time.perf_counter() - t0,
                                 "verdict": None, "left_because": f"{kind}: {type(e).__name__}: {str(e)[:300]}",
                                 "gaussian_approximation": getattr(backend, "gaussian_approximation", False),
                                 "numerical_failure": isinstance(e, NumericalError)})
                continue
            trust = post.trust
            record = {"method": name, "options": extra, "seconds": time.perf_counter() - t0,
                      "verdict": trust.verdict, "left_because": None, "psis_khat": trust.numbers.get("psis_khat"),
                      "gaussian_misfit": _misfit(backend, trust),
                      "gaussian_approximation": getattr(backend, "gaussian_approximation", False),
                      "ignored_options": sorted(k for k in rest if k not in declared),  # the method does not take them
                      "divergences": trust.numbers.get("divergences")}  # a sampler's: decides a longer run's use
            if "init" in chosen and not isinstance(chosen["init"], str) and "init" not in given:
                record["warm_start"] = chosen["init"].method
            attempts.append(record)
            last = post
            if getattr(backend, "gaussian_approximation", False) and start_khat(post) < start_khat(approx):
                approx = post
            if trust.ok or not own["escalate"]:
                post = _finish(post, route, attempts, name, trust.ok)
                post.trust.warn(post.method, stacklevel=4)
                return post
            record["left_because"] = f"unreliable: {'; '.join(trust.reasons)[:300]}"
    if last is None:
        if isinstance(last_error, PPLError):
            raise last_error
        failures = "; ".join(f"{a['method']}: {a['left_because']}" for a in attempts)
        raise NumericalError(f"every method auto tried on model '{graph.model.name}' failed ({failures})") \
            from last_error
    last = _least_unreliable(last, approx)
    post = _finish(last, route, attempts, last.method, False)
    post.trust.warn(post.method, stacklevel=4)
    return post


#: At or above this R-hat a sampler's chains are in different places (Gelman & Rubin 1992's
#: threshold): its pooled draws are a mixture of where each chain got stuck.
CHAINS_DISAGREE_RHAT = 1.1


def _misfit(backend, trust) -> str | None:
    """Why an unreliable Gaussian approximation says the posterior is not Gaussian
    (:func:`~ppl.backends.common.importance.gaussian_misfit`), else None."""
    if trust.ok or not getattr(backend, "gaussian_approximation", False):
        return None
    return gaussian_misfit(trust.numbers)


def _least_unreliable(last, approx):
    """Which unreliable result auto returns when none is reliable: the last one (the most
    thorough method tried), unless it is a sampler whose chains disagree (R-hat >=
    :data:`CHAINS_DISAGREE_RHAT`) while a Gaussian approximation tried earlier has PSIS
    k̂ < 1, so its importance-weighted means exist (Vehtari et al. 2024, §3): then that
    approximation, with a reason saying why."""
    rhat = last.trust.numbers.get("rhat")
    khat = start_khat(approx)
    if approx is None or approx is last or rhat is None or not rhat >= CHAINS_DISAGREE_RHAT or not khat < 1.0:
        return last
    approx.trust.reasons.append(
        f"auto returns this unreliable {approx.method} result rather than {last.method}'s, the last it tried: "
        f"{last.method}'s chains disagree (R-hat {rhat:.2f} >= {CHAINS_DISAGREE_RHAT}), so its draws mix where "
        f"each chain got stuck, while this approximation's PSIS k̂ is {khat:.2f} < 1 (its importance-weighted "
        "means exist); the verdict stays unreliable")
    return approx


def option_refusals(candidates: list, given: dict) -> dict:
    """``{method: why}`` for the candidates that take an option the user gave but refuse its
    value (``init={"mu": 1.0}`` is a dict of starting values for SVI but not one of
    Laplace's start names): auto passes over them.

    Raises
    ------
    OptionError
        When every candidate that takes an option refuses its value: the user's value is
        wrong for auto as a whole, and auto must not answer as if it had not been given.
    """
    ranked, out = ranked_backends(), {}
    for key, value in given.items():
        takers = [n for n in candidates if key in getattr(ranked[n], "options", {})]
        errors = {}
        for n in takers:
            try:
                validate_options(n, ranked[n].options, {key: value}, fill=False)
            except OptionError as e:
                errors[n] = str(e)
        if takers and len(errors) == len(takers):
            raise OptionError(f"option {key}={value!r:.80} of method 'auto' is accepted by none of the methods that "
                              f"take it ({', '.join(takers)}): " + "; ".join(f"{n}: {w}" for n, w in errors.items()))
        for n, why in errors.items():
            out.setdefault(n, f"it refuses the option given: {why}")
    return out


def _over_budget(backend, name, extra, given, attempts, spent, budget) -> str | None:
    """Why the variant ``extra`` (the user's options ``given`` win) would run past
    ``budget`` seconds: the backend's last attempt's seconds scaled by the ratio of the two
    runs' :meth:`~ppl.backends.base.Backend.auto_cost`; None when it fits or nothing can be
    projected."""
    if budget is None:
        return None
    earlier = [a for a in attempts if a["method"] == name and a.get("seconds")]
    cost = getattr(backend, "auto_cost", lambda o: None)
    if not earlier:
        return None
    now, before = cost({**extra, **given}), cost({**earlier[-1]["options"], **given})
    if now is None or not before:
        return None
    projected = earlier[-1]["seconds"] * now / before
    if spent + projected <= budget:
        return None
    return (f"the {name} run before it took {earlier[-1]['seconds']:.0f} s, so this one would take about "
            f"{projected:.0f} s, past the time budget ({budget:g} s, {max(budget - spent, 0):.0f} s left); "
            "raise time_budget to allow it")


def _finish(post, route, attempts, chosen, trusted):
    route = dict(route)
    if chosen != route["method"]:
        tried = ", ".join(f"{a['method']} ({a['verdict'] or 'failed'})" for a in attempts[:-1])
        route["reason"] = (f"escalated after {tried}: {post.trust.line()}" if trusted else
                           f"no method gave a reliable answer (tried {tried}); returning {chosen}'s: "
                           f"{post.trust.line()}")
        route["first_choice"] = route["method"]
        route["method"] = chosen
    route["attempts"] = attempts
    post.diagnostics["routing"] = route
    return post
