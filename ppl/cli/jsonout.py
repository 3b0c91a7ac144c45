"""``--json``: what the command line's commands return, as one JSON document.

One job: turn an :class:`~ppl.analysis.Analysis`, a :class:`~ppl.posterior.Posterior`, a
:class:`~ppl.comparison.Comparison` or the method table of :func:`ppl.methods` into plain
JSON values, and serialise them.

JSON-safe values (:func:`jsonable`)
-----------------------------------
* tensors and numpy arrays become nested lists (a 0-d one a number); numpy scalars their
  Python value; tuples and sets lists (sets sorted); mapping keys strings; dataclasses
  (plates, variables, the elimination cost) objects of their fields; a torch dtype or any
  other object its ``str``.
* non-finite numbers, everywhere the same way: NaN becomes ``null``, +inf the string
  ``"inf"`` and -inf the string ``"-inf"``.  The output is strict JSON (no ``NaN`` or
  ``Infinity`` tokens), so every JSON reader takes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping

import numpy as np
import torch

from ..errors import PPLError
from .output import one_line

__all__ = ["QUANTILES", "jsonable", "dumps", "analysis_json", "posterior_json", "comparison_json", "methods_json"]

#: Quantile levels of each latent site in :func:`posterior_json` (those of ``Posterior.summary``).
QUANTILES = (0.05, 0.5, 0.95)


def jsonable(value):
    """``value`` with every part made JSON-safe (see the module docstring for the rules).

    Parameters
    ----------
    value : object
        Numbers, strings, None, tensors, numpy arrays and scalars, mappings, sequences,
        sets, dataclasses, or anything else (which becomes its ``str``).

    Returns
    -------
    object
        Built of dict, list, str, int, float (finite), bool and None only.

    Raises
    ------
    RecursionError
        If ``value`` contains itself.
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, (np.ndarray, np.generic)):
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=str)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)


def dumps(document) -> str:
    """The JSON text of ``document`` (made safe by :func:`jsonable`), indented by 2.

    Parameters
    ----------
    document : object

    Returns
    -------
    str
        Strict JSON (``allow_nan=False``): NaN and infinities were replaced first.
    """
    return json.dumps(jsonable(document), indent=2, allow_nan=False)


# ------------------------------------------------------------------- analyze
def analysis_json(analysis, label: str = "", graph: bool = False) -> dict:
    """The key numbers of ``ppl.analyze``'s result, as ``python -m ppl analyze --json`` prints them.

    Parameters
    ----------
    analysis : ppl.analysis.Analysis
    label : str
        How the command line named the model (``FILE.py:MODEL``).
    graph : bool
        Also give the factor graph's variables and factors (``--graph``).

    Returns
    -------
    dict
        ``model``, ``label``, the variables by role, ``plates``, the moral graph
        (``nodes``, ``edges``, ``components``), ``log10_states`` (the brute-force joint state
        space, plates unrolled), ``heuristic``, ``elimination_order``, ``treewidth``,
        ``largest_clique`` (variables, states, plates, bytes), ``itemsize``,
        ``memory_budget``, ``exact_fits``, ``intractable``, ``work_entries``, ``chains``,
        ``undeclared_batch``, ``methods`` (per method: ``applies``, ``reason``) and ``auto``
        (its choice, reason, plan and the methods passed over).
    """
    g = analysis.graph
    cost = analysis.cost
    doc = {
        "command": "analyze",
        "model": g.model.name,
        "label": label,
        "variables": {"discrete_latent": analysis.discrete, "continuous_latent": analysis.continuous,
                      "observed": g.observed(), "params": g.params()},
        "factors": len(g.factors),
        "plates": [{"name": p.name, "size": p.size, "dim": p.dim} for p in g.plates.values()],
        "moral_graph": {"nodes": list(analysis.moral.nodes), "edges": [list(e) for e in analysis.moral.edges],
                        "components": [sorted(c) for c in analysis.components]},
        "log10_states": analysis.log10_states if analysis.discrete else None,
        "heuristic": analysis.heuristic,
        "elimination_order": analysis.order,
        "treewidth": analysis.treewidth,
        "largest_clique": {"variables": list(analysis.largest_clique), "states": analysis.clique_states,
                           "plates": list(cost.clique_plates), "bytes": analysis.clique_bytes},
        "itemsize": analysis.itemsize,
        "memory_budget": analysis.memory_budget,
        "exact_fits": analysis.exact_fits,
        "intractable": cost.intractable,
        "work_entries": cost.total_entries,
        "chains": [{"vars": list(ch.vars), "cardinality": ch.cardinality, "plates": list(ch.plates)}
                   for ch in analysis.chains],
        "undeclared_batch": analysis.undeclared_batch,
        "methods": {name: {"applies": ok, "reason": why} for name, (ok, why) in analysis.backends.items()},
        "auto": analysis.auto,
    }
    if graph:
        doc["factor_graph"] = {"variables": list(g.variables.values()), "factors": list(g.factors.values())}
    return doc


# --------------------------------------------------------------------- infer
def _site_json(post, site: str) -> dict:
    """Shape, mean, sd, quantiles (and discrete probabilities) of one site; ``error`` instead
    when the posterior cannot give them."""
    try:
        mean = post.mean(site)
        out = {"shape": list(mean.shape), "mean": mean,
               "sd": post.variance(site).detach().double().clamp_min(0).sqrt(),
               "quantiles": {f"{q:.0%}": post.quantile(site, q) for q in QUANTILES}}
        if site in (getattr(post, "_supports", None) or {}) and hasattr(post, "probs"):
            out["support"] = post._supports[site]
            out["probs"] = post.probs(site)
        return out
    except (PPLError, TypeError, ValueError, NotImplementedError) as e:
        return {"error": one_line(e)}


def posterior_json(post, label: str = "", sites=None, diagnostics: bool = False) -> dict:
    """The result of ``ppl.infer``, as ``python -m ppl infer --json`` prints it.

    Parameters
    ----------
    post : ppl.Posterior
    label : str
        How the command line named the model.
    sites : list[str], optional
        Latent sites to describe (default all of ``post.sites``).
    diagnostics : bool
        Also give ``post.diagnostics`` (all but ``routing``, which is always given).

    Returns
    -------
    dict
        ``method``, ``routing`` (``post.diagnostics["routing"]``: reason, methods passed
        over and, for auto, every ``attempts``), ``log_evidence``, ``elbo``, ``converged``,
        ``iterations``, ``history``, ``elapsed``, ``trust`` (``verdict``, ``reasons``,
        ``numbers``, ``next_method``; None without a verdict), ``params`` (nested lists)
        and ``sites``: per latent site its ``shape``, ``mean``, ``sd`` and ``quantiles``
        (``"5%"``, ``"50%"``, ``"95%"``), whole tensors of shape ``shape``; a discrete site
        with probability tables also its ``support`` and ``probs`` (``shape + [states]``);
        a site whose numbers are not available has ``error`` instead.
    """
    trust = post.trust
    doc = {
        "command": "infer",
        "label": label,
        "method": post.method,
        "routing": post.diagnostics.get("routing"),
        "log_evidence": post.log_evidence,
        "elbo": post.elbo,
        "converged": post.converged,
        "iterations": len(post.history) or None,
        "history": post.history,
        "elapsed": post.elapsed,
        "trust": None if trust is None else {"verdict": trust.verdict, "reasons": trust.reasons,
                                             "numbers": trust.numbers, "next_method": trust.next_method},
        "params": post.params,
        "sites": {site: _site_json(post, site) for site in (sites or post.sites)},
    }
    if diagnostics:
        doc["diagnostics"] = {k: v for k, v in post.diagnostics.items() if k != "routing"}
    return doc


# ------------------------------------------------------------------- compare
def comparison_json(table, label: str = "") -> dict:
    """``ppl.compare``'s table, as ``python -m ppl compare --json`` prints it.

    Parameters
    ----------
    table : ppl.comparison.Comparison
    label : str
        How the command line named the model.

    Returns
    -------
    dict
        ``title``, ``columns`` (:data:`ppl.comparison.COLUMNS`), ``rows`` (one object per
        method with every column, ``null`` where a value does not apply, a failed method's
        ``status`` being ``"not run: why"``), ``reference`` (the label errors are measured
        against, or None), ``reference_kind`` and ``notes``.
    """
    return {
        "command": "compare",
        "label": label,
        "title": table.title,
        "columns": table.columns,
        "rows": [{c: r.get(c) for c in table.columns} for r in table.rows],
        "reference": table.reference,
        "reference_kind": table.reference_kind,
        "notes": table.notes,
    }


# ------------------------------------------------------------------- methods
def methods_json(table: dict) -> dict:
    """:func:`ppl.methods`' table, as ``python -m ppl methods --json`` prints it.

    Parameters
    ----------
    table : dict
        Method name -> ``{"summary", "rank", "options": [(name, default, accepted, doc), ...]}``.

    Returns
    -------
    dict
        ``methods``: method name -> ``summary``, ``rank`` and ``options`` (one object per
        option: ``name``, ``default`` (as text, ``"required"`` when it has none),
        ``accepted``, ``doc``).
    """
    return {"command": "methods", "methods": {
        name: {"summary": info["summary"], "rank": info["rank"],
               "options": [dict(zip(("name", "default", "accepted", "doc"), row)) for row in info["options"]]}
        for name, info in table.items()}}
