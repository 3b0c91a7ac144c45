"""Pyro's global param store, saved and given back: what every ppl call that runs a model
uses to leave the store as it found it (:func:`private_param_store`; the backends' fuller
:func:`~ppl.backends.common.params.param_scope` builds on :func:`store_snapshot` and
:func:`store_restore`).  Depends on nothing of ppl, so the model layer (:mod:`ppl.dsl`) can
use it too."""

from __future__ import annotations

import contextlib

import pyro
import torch

__all__ = ["store_snapshot", "store_restore", "private_param_store"]


def store_snapshot() -> tuple:
    """Pyro's param store as it is now: each entry's tensor (the same object: ``pyro.module``
    trains a module's weights only while the store holds the module's own tensors) with a
    copy of its value, and the constraints (read through the public ``get_state``)."""
    state = pyro.get_param_store().get_state()
    return {k: (v, v.detach().clone()) for k, v in state["params"].items()}, dict(state["constraints"])


def store_restore(snapshot) -> None:
    """Pyro's param store as :func:`store_snapshot` found it: the same tensors, with their
    values, and nothing else.  A tensor whose value is bit for bit the saved one is not
    written (its version counter stays as it is)."""
    params, constraints = snapshot
    store = pyro.get_param_store()
    store.clear()
    with torch.no_grad():
        for tensor, value in params.values():
            if tensor.shape == value.shape and not _same_bits(tensor, value):
                tensor.copy_(value)
    store.set_state({"params": {k: tensor for k, (tensor, _) in params.items()}, "constraints": dict(constraints)})


def _same_bits(tensor, value) -> bool:
    """Whether two tensors of one shape hold the same dtype and the same bytes."""
    if tensor.dtype != value.dtype or tensor.device != value.device:
        return False
    try:
        a, b = tensor.detach().reshape(-1).contiguous(), value.detach().reshape(-1).contiguous()
        return bool(torch.equal(a.view(torch.uint8), b.view(torch.uint8)))
    except (RuntimeError, TypeError):  # a layout without plain bytes (sparse, quantized): write it
        return False


@contextlib.contextmanager
def private_param_store():
    """Run a block in an empty Pyro param store, then give the global one back as it was
    (:func:`store_snapshot` / :func:`store_restore`), also when the block raises."""
    saved = store_snapshot()
    pyro.get_param_store().clear()
    try:
        yield
    finally:
        store_restore(saved)
