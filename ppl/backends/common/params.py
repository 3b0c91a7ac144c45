"""The ``ppl.param`` values a learning backend starts from and leaves behind."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import pyro
import torch

from ...errors import PPLError
from ...paramstore import store_restore, store_snapshot
from .modules import ModuleWeights, is_module_param

__all__ = ["current_params", "param_constraint", "store_params", "store_snapshot", "store_restore", "params_in_dtype",
           "declared_constraints", "param_scope", "warm_start_values"]


def current_params(graph, names, dtype: torch.dtype, device: torch.device) -> dict:
    """The current constrained values of the ``ppl.param`` sites ``names``: Pyro's param store
    where it holds them, else the values traced when ``graph`` was compiled; detached copies
    in ``dtype`` on ``device``.  The starting θ of every learning backend (EM, MAP, CAVI)."""
    store = pyro.get_param_store()
    return {n: (store[n] if n in store else graph.sites[n].value).detach().to(dtype=dtype, device=device).clone()
            for n in names}


def param_constraint(name: str):
    """The constraint ``ppl.param`` site ``name`` was declared with (``real`` if none), read
    through the param store's public ``get_state()``."""
    return pyro.get_param_store().get_state()["constraints"].get(name, torch.distributions.constraints.real)


def store_params(params: dict) -> None:
    """Leave learned ``ppl.param`` values (name -> constrained value) in Pyro's param store,
    in each param's own dtype and device, so the model run afterwards (another method,
    ``Predictive``) uses them."""
    store = pyro.get_param_store()
    with torch.no_grad():
        for k, v in params.items():
            old = store[k] if k in store else None
            store[k] = (v.to(dtype=old.dtype, device=old.device) if old is not None else v).detach().clone()


def params_in_dtype(graph, dtype) -> None:
    """Cast the model's ``ppl.param`` values in Pyro's param store to the run's ``dtype`` (a
    param the model initialises is created by the compile trace in torch's default dtype);
    they are learned, and stay, in it.  ``pyro.module`` weights (``name$$$...``) are the
    module's own tensors and are left alone."""
    store = pyro.get_param_store()
    with torch.no_grad():
        for n in graph.params():
            if is_module_param(n) or n not in store:
                continue
            value = store[n]
            if value.is_floating_point() and value.dtype != dtype:
                store[n] = value.detach().to(dtype)


def declared_constraints(graph) -> dict:
    """``ppl.param`` name -> the constraint the model declares for it (``real`` where none),
    read from one run of the model in a private param store (so no value left in Pyro's
    global store by another model of the same param names can leak in).  Computed once per
    graph; ``pyro.module`` weights (``name$$$...``) are left out."""
    def build():
        from ...dsl import trace_model

        names = [n for n in graph.params() if not is_module_param(n)]
        if not names:
            return {}
        recorded = {n: getattr(graph.sites.get(n), "infer", {}).get("constraint") for n in names}
        if all(c is not None for c in recorded.values()):  # kept by the compile trace: no model run
            return recorded
        with param_scope():
            try:
                trace_model(graph.model, graph.bound)
            except PPLError:
                return {}
            found = pyro.get_param_store().get_state()["constraints"]
        return {n: found.get(n, torch.distributions.constraints.real) for n in graph.params() if not is_module_param(n)}

    return graph.memo("params", "declared_constraints", build)


@contextlib.contextmanager
def param_scope(graph=None, values: dict | None = None):
    """Run a ppl call in a private Pyro param store, leaving the global one, and every
    ``pyro.module`` network, exactly as found.

    Inside, the store starts empty; with ``graph``, each of its ``ppl.param`` sites is
    created at ``values[name]`` where given (a warm start, ``init=``), else at the value the
    model declared when it was compiled (its ``ppl.param`` init), with its declared
    constraint.  Every ``pyro.module`` weight registered inside (``"name$$$p"``, the
    network's own tensor) runs with ``values[name]`` where given (a posterior's learned
    weights) and gets its value and ``.grad`` back on exit
    (:class:`~ppl.backends.common.modules.ModuleWeights`).  On exit, normal or by an
    exception, the global store gets back its own tensors, values and constraints, and
    nothing else: learned values live in ``Posterior.params``.

    Parameters
    ----------
    graph : FactorGraph, optional
    values : dict, optional
        ``ppl.param`` name -> constrained start value (shape of the declared value), and
        ``"name$$$p"`` -> a network weight (the parameter's shape).

    Yields
    ------
    ModuleWeights
        Its ``tensors``: ``"name$$$p"`` -> the network tensor of every module weight
        registered inside.

    Raises
    ------
    ModelError
        A ``"name$$$p"`` value whose shape is not its network parameter's (raised where the
        weight is registered, or on entry for the compiled model's own networks).
    """
    saved = store_snapshot()
    store = pyro.get_param_store()
    store.clear()
    given = values or {}
    known = {n: graph.sites[n].value for n in graph.params() if is_module_param(n)} if graph is not None else {}
    try:
        with ModuleWeights(given, known) as weights:
            if graph is not None:
                constraints = declared_constraints(graph)
                for n, constraint in constraints.items():
                    v = given[n] if n in given else graph.sites[n].value
                    pyro.param(n, torch.as_tensor(v).detach().clone(), constraint=constraint)
            yield weights
    finally:
        store_restore(saved)


def warm_start_values(init, graph) -> dict:
    """``init=`` of ``ppl.infer`` as start values of the ``ppl.param`` sites and of the
    ``pyro.module`` weights: a Posterior (its ``params``) or a mapping name -> value.  From
    a Posterior, every learned network weight (``"name$$$p"``, the model's and a guide's)
    is kept, and other names that are not ``ppl.param`` sites of the model (e.g. autoguide
    parameters) are ignored; a mapping may name ``ppl.param`` sites and the model's own
    network weights, nothing else.

    Returns
    -------
    dict[str, torch.Tensor]
        Name -> detached value: a ``ppl.param`` in its declared shape and dtype, a network
        weight of the model in its parameter's shape and dtype (a guide's as given).

    Raises
    ------
    OptionError
        A mapping with a name that is no ``ppl.param`` or network weight of the model, a
        value that is not a finite tensor of the declared (or the parameter's) shape, or a
        value outside the declared constraint.
    """
    from ...errors import OptionError

    names = [n for n in graph.params() if not is_module_param(n)]
    weights = [n for n in graph.params() if is_module_param(n)]
    if not isinstance(init, Mapping):  # a Posterior
        learned = dict(init.params or {})
        given = {k: v for k, v in learned.items() if k in names or is_module_param(k)}
    else:
        unknown = [k for k in init if k not in names and k not in weights]
        if unknown:
            also = f"; its pyro.module weights: {weights}" if weights else ""
            raise OptionError(f"init: {unknown} are not ppl.param sites of model '{graph.model.name}' "
                              f"(its params: {names or 'none'}{also})")
        given = dict(init)
    constraints = declared_constraints(graph) if given else {}
    out = {}
    for k, v in given.items():
        if k not in graph.sites:  # a guide's network weight: checked where the guide registers it
            out[k] = v.detach() if isinstance(v, torch.Tensor) else torch.as_tensor(v)
            continue
        try:
            declared = graph.sites[k].value
            t = v.detach() if isinstance(v, torch.Tensor) else \
                torch.as_tensor(v, dtype=declared.dtype if declared.is_floating_point() else None)
        except (TypeError, ValueError, RuntimeError) as e:
            raise OptionError(f"init['{k}']: expected a tensor or number, got {type(v).__name__} ({e})") from None
        want = tuple(graph.sites[k].value.shape)
        what = "pyro.module weight" if is_module_param(k) else "ppl.param"
        if tuple(t.shape) != want:
            raise OptionError(f"init['{k}']: shape {tuple(t.shape)}, but {what} '{k}' has shape {want}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise OptionError(f"init['{k}']: has NaN or infinite entries")
        c = constraints.get(k)
        if c is not None and not bool(torch.as_tensor(c.check(t.to(graph.sites[k].value.dtype))).all()):
            raise OptionError(f"init['{k}']: value outside ppl.param '{k}''s constraint {c}")
        out[k] = t.to(graph.sites[k].value.dtype)
    return out
