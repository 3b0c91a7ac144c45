"""The ``ppl.param`` values a learning backend starts from and leaves behind."""

from __future__ import annotations

import pyro
import torch

__all__ = ["current_params", "param_constraint", "store_params", "store_snapshot", "store_restore", "params_in_dtype"]


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


def store_snapshot() -> tuple:
    """Pyro's param store as it is now: each entry's tensor (the same object: ``pyro.module``
    trains a module's weights only while the store holds the module's own tensors) with a
    copy of its value, and the constraints (read through the public ``get_state``)."""
    state = pyro.get_param_store().get_state()
    return {k: (v, v.detach().clone()) for k, v in state["params"].items()}, dict(state["constraints"])


def store_restore(snapshot) -> None:
    """Pyro's param store as :func:`store_snapshot` found it: the same tensors, with their
    values, and nothing else."""
    params, constraints = snapshot
    store = pyro.get_param_store()
    store.clear()
    with torch.no_grad():
        for tensor, value in params.values():
            if tensor.shape == value.shape:
                tensor.copy_(value)
    store.set_state({"params": {k: tensor for k, (tensor, _) in params.items()}, "constraints": dict(constraints)})


def params_in_dtype(graph, dtype) -> None:
    """Cast the model's ``ppl.param`` values in Pyro's param store to the run's ``dtype`` (a
    param the model initialises is created by the compile trace in torch's default dtype);
    they are learned, and stay, in it.  ``pyro.module`` weights (``name$$$...``) are the
    module's own tensors and are left alone."""
    store = pyro.get_param_store()
    with torch.no_grad():
        for n in graph.params():
            if "$$$" in n or n not in store:
                continue
            value = store[n]
            if value.is_floating_point() and value.dtype != dtype:
                store[n] = value.detach().to(dtype)
