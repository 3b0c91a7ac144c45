"""The model and data of a loaded posterior: what ``save`` keeps of the run besides the
posterior (the data the model was called with, and the fitted model's name and sites), and the
model compiled again on that data, so that a loaded posterior predicts: ``predictive``,
``ppl.predict`` and the ``observed_data`` / ``posterior_predictive`` / ``log_likelihood`` /
``prior`` groups of ``to_arviz``.

What is kept (:func:`kept_data`): the data of the run as the model was bound to it (the
``data`` mapping after conversion: arrays as tensors, state names as indices; the arguments
and the observed values, ``graph.bound``), when every value is a tensor, a numpy array of
numbers, strings or booleans, a number, a string, bytes, ``None``, or a list, tuple or dict of
those, and they take at most the cap in bytes (:data:`ppl.posterior.persist.DATA_BYTES`).
Otherwise nothing of the data is kept, and the reason is kept instead (``_data_note``, shown
in the messages).  The model's name and, per site, its role, family and shapes
(:func:`fitted_sites`) are always kept.

Which model runs (:func:`current_model`): the posterior's own while it holds its graph; on a
loaded posterior, the model attached by ``ppl.load(path, model=fn)``, else the model
re-imported from its import path.  Compiled again on the saved data (:func:`model_graph`,
once per object, in a private Pyro param store and a forked RNG), it must have the fitted
model's name and the same sites (sample and ``ppl.param``) with the same roles, families and
shapes, or :class:`~ppl.errors.ModelError` names what differs.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from ..backends.common.params import param_scope
from ..errors import DataError, ModelError, OptionError, UnsupportedModelError
from .checks import isolated_rng

__all__ = ["TRANSIENT", "kept_data", "fitted_sites", "imported_model", "current_model", "model_graph", "attach"]

#: Attributes of a loaded posterior that are never saved: the model attached by
#: ``ppl.load(path, model=...)`` and the graph compiled again on the saved data.
ATTACHED, REBUILT = "_attached_model", "_rebuilt_graph"
TRANSIENT = (ATTACHED, REBUILT)
#: The seed of the forked RNG the model is compiled again in (the global RNGs are left as they were).
_COMPILE_SEED = 0


# ---------------------------------------------------------------------- at save time
class _NotKept(Exception):
    """A value of the data that :func:`kept_data` does not keep (the message says why)."""


def _kept_value(value, where: str):
    """``(value, bytes)``: ``value`` as kept (tensors detached, plain ``torch.Tensor``), or
    :class:`_NotKept`."""
    if value is None or isinstance(value, (bool, int, float, complex, np.generic)):
        return value, 8
    if isinstance(value, (str, bytes)):
        return value, len(value)
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            raise _NotKept(f"{where} is a {value.layout} tensor")
        value = value.detach()
        value = value if type(value) is torch.Tensor else value.as_subclass(torch.Tensor)
        return value, value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufcUSM":
            raise _NotKept(f"{where} is a numpy array of dtype {value.dtype}")
        return value, int(value.nbytes)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _NotKept(f"{where} is a dict with keys that are not strings")
        pairs = {k: _kept_value(v, f"{where}[{k!r}]") for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, sum(b for _, b in pairs.values())
    if type(value) in (list, tuple):
        items = [_kept_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return type(value)(v for v, _ in items), sum(b for _, b in items)
    raise _NotKept(f"{where} is a {type(value).__name__}")


def kept_data(graph, cap: int) -> tuple:
    """The data of ``graph``'s run as it will be saved: ``(data, None)``, or ``(None, why)``
    when it is not kept.

    Parameters
    ----------
    graph : FactorGraph
        The compiled model the posterior was fitted on.
    cap : int
        Bytes the kept data may take at most (tensor and array elements, string lengths).

    Returns
    -------
    tuple
        ``data``: name -> value, the model's arguments and observed values as bound
        (``{**graph.bound.kwargs, **graph.bound.observations}``), tensors detached; ``why``:
        the first value that is not kept and what it is, or the size over ``cap``.
    """
    merged = {**graph.bound.kwargs, **graph.bound.observations}
    try:
        pairs = {k: _kept_value(v, f"data[{k!r}]") for k, v in merged.items()}
    except _NotKept as e:
        return None, (f"{e}; kept are tensors, numpy arrays, numbers, strings, and lists, tuples and dicts of "
                      "them")
    size = sum(b for _, b in pairs.values())
    if size > int(cap):
        return None, (f"the data take {size:,} bytes, over the cap of {int(cap):,} "
                      "(ppl.posterior.persist.DATA_BYTES)")
    return {k: v for k, (v, _) in pairs.items()}, None


def fitted_sites(graph) -> dict:
    """What a model compiled again must match: ``{"name": model name, "arguments": [...],
    "sites": {site: [role, family, batch_shape, event_shape]}}`` of every site of ``graph``
    (sample sites, and ``ppl.param`` sites with role and family ``"param"``)."""
    return {"name": str(graph.model.name), "arguments": list(graph.model.argument_names),
            "sites": {n: [v.role, v.family, list(v.batch_shape), list(v.event_shape)]
                      for n, v in graph.variables.items()}}


# ---------------------------------------------------------------------- the model
def imported_model(path: str | None) -> tuple:
    """``(model, None)``: the model at ``path`` (``"module:qualname"``) as a ``ppl.Model``,
    its module imported; or ``(None, why)`` when ``path`` is None or does not import (the
    error, ``"ModuleNotFoundError: ..."``)."""
    if not path:
        return None, "no import path"
    from ..dsl import as_model

    module, _, qualname = str(path).partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return as_model(obj), None
    except Exception as e:  # noqa: BLE001 (any failure to import means: not available here)
        return None, f"{type(e).__name__}: {e}"


def current_model(post):
    """The model ``post`` runs (:attr:`~ppl.posterior.base.Posterior.model`): its graph's;
    else the model attached by ``ppl.load(path, model=...)``; else the model re-imported
    from its import path; else ``None``."""
    graph = getattr(post, "graph", None)
    if graph is not None:
        return graph.model
    attached = vars(post).get(ATTACHED)
    if attached is not None:
        return attached
    return imported_model(getattr(post, "_model_path", None))[0]


def _no_model(post, call: str) -> UnsupportedModelError:
    """Why ``post`` has no model to run, and what to do."""
    fitted = getattr(post, "_fitted", None) or {}
    name, path = fitted.get("name"), getattr(post, "_model_path", None)
    head = f"{call}(): this posterior (method '{post.method}') has no model to run"
    if path:
        why = (f": its model is kept as '{path}', which does not import here "
               f"({imported_model(path)[1]}); put that module on sys.path, or attach the model with "
               "ppl.load(path, model=...)")
    elif name:
        why = (f": it was loaded, and its model '{name}' was defined where it cannot be imported again (in "
               "__main__, i.e. a script or a notebook, or inside a function), so the file keeps no import path "
               "for it. Define the model in an importable module (a .py file on sys.path) before fitting, or "
               f"attach it: ppl.load(path, model={name})")
    else:
        why = " (loaded without it?); predictive draws need the model: attach it with ppl.load(path, model=...)"
    return UnsupportedModelError(head + why)


def _differences(fitted: dict, graph, shapes: bool) -> list:
    """How the sites of ``graph`` differ from the fitted ones (empty when they match)."""
    saved = fitted.get("sites") or {}
    now = fitted_sites(graph)["sites"]
    out = []
    if fitted.get("name") != graph.model.name:
        out.append(f"it is named '{graph.model.name}', the fitted model '{fitted.get('name')}' (if it is the same "
                   f"model, name it so: ppl.model(fn, name='{fitted.get('name')}'))")
    gone, new = [s for s in saved if s not in now], [s for s in now if s not in saved]
    if gone:
        out.append(f"site(s) {gone} of the fitted model are not sites of it")
    if new:
        out.append(f"its site(s) {new} are not sites of the fitted model")
    for s in (s for s in saved if s in now):
        (role, family, batch, event), (role2, family2, batch2, event2) = saved[s], now[s]
        if role != role2:
            hint = " (give its values in data: they mark it observed, and are not used)" if role == "observed" else ""
            out.append(f"site '{s}' is {role2} in it, {role} in the fitted model{hint}")
        elif family != family2:
            out.append(f"site '{s}' is a {family2} in it, a {family} in the fitted model")
        elif shapes and (list(batch), list(event)) != (list(batch2), list(event2)):
            out.append(f"site '{s}' has batch shape {tuple(batch2)} and event shape {tuple(event2)} in it, "
                       f"{tuple(batch)} and {tuple(event)} in the fitted model")
    return out


def _compiled(post, model, data, call: str, saved: bool):
    """``model`` compiled on ``data`` (the saved data, or new data when none was saved),
    checked against the fitted sites."""
    from ..compiler import compile as compile_graph

    which = "saved" if saved else "given"
    source = ("attached with ppl.load(path, model=...)" if vars(post).get(ATTACHED) is not None
              else f"re-imported from '{getattr(post, '_model_path', None)}'")
    try:
        with param_scope(), isolated_rng(_COMPILE_SEED):
            graph = compile_graph(model, data)
    except (DataError, ModelError) as e:
        raise type(e)(f"{call}(): the model '{model.name}' {source} does not compile on the {which} data: "
                      f"{e}") from e
    fitted = getattr(post, "_fitted", None)
    problems = _differences(fitted, graph, shapes=saved) if fitted else []
    if problems:
        raise ModelError(f"{call}(): the model '{model.name}' {source} is not the model this posterior was "
                         f"fitted with: {'; '.join(problems)}")
    return graph


def model_graph(post, call: str, data=None):
    """The compiled model that ``post``'s predictions run: its own graph while it holds
    one; on a loaded posterior, :func:`current_model` compiled again on the saved data (once:
    kept on the object, never saved), or, when no data was saved, on ``data`` (each call).

    Parameters
    ----------
    post : Posterior
    call : str
        The calling function, for messages.
    data : mapping or None
        The new data of the call (used only when no data was saved).

    Returns
    -------
    FactorGraph

    Raises
    ------
    UnsupportedModelError
        No model (none attached, no import path, or it does not import here: the message
        says which and what to do), or no saved data and ``data`` None (the message says
        why the data were not saved).
    ModelError
        The model does not match the fitted one (name, sites, their roles, families or
        shapes: the message names them), or raises when compiled.
    DataError
        The data do not fit the model (as :func:`ppl.compile`).
    """
    graph = getattr(post, "graph", None)
    if graph is not None:
        if getattr(graph, "model", None) is None:
            raise _no_model(post, call)
        return graph
    rebuilt = vars(post).get(REBUILT)
    if rebuilt is not None:
        return rebuilt
    model = current_model(post)
    if model is None:
        raise _no_model(post, call)
    saved = getattr(post, "_data", None)
    if saved is None:
        if data is None:
            note = getattr(post, "_data_note", None) or "they were not kept"
            raise UnsupportedModelError(
                f"{call}(): the data this posterior was fitted on were not saved with it ({note}); pass them, or new "
                f"data, as data=: every argument of model '{model.name}', observed values included (they mark their "
                "sites observed, and are not used: those sites are drawn)")
        return _compiled(post, model, data, call, saved=False)
    rebuilt = _compiled(post, model, saved, call, saved=True)
    vars(post)[REBUILT] = rebuilt
    return rebuilt


def attach(post, model, call: str = "ppl.load") -> None:
    """Give the loaded posterior ``post`` the model ``model`` to run (``ppl.load(path,
    model=...)``): checked at once against the fitted model's name and, when the data were
    saved, compiled on them and checked site by site (:func:`model_graph`).

    Raises
    ------
    OptionError
        ``model`` is not callable.
    ModelError, DataError
        As :func:`model_graph`: the model's name or sites differ from the fitted ones (the
        message names them), or it does not compile on the saved data.
    """
    from ..dsl import as_model

    if not callable(model):
        raise OptionError(f"{call}(): model must be a ppl.model or a callable model function, got "
                          f"{type(model).__name__}")
    model = as_model(model)
    fitted = getattr(post, "_fitted", None) or {}
    if fitted.get("name") not in (None, model.name):
        raise ModelError(f"{call}(): the model given, '{model.name}', is not the model this posterior was fitted "
                         f"with, '{fitted['name']}' (if it is the same model, name it so: "
                         f"ppl.model(fn, name='{fitted['name']}'))")
    vars(post)[ATTACHED] = model
    vars(post).pop(REBUILT, None)
    if getattr(post, "_data", None) is None:
        return
    try:
        model_graph(post, call)
    except Exception:
        vars(post).pop(ATTACHED, None)
        raise
