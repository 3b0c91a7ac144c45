"""Models that call ``torch.nn.Module`` networks of another dtype: :func:`module_dtype_boundary`
casts at each module's boundary, and every :class:`~ppl.dsl.Model` runs its function in it
(through :class:`ModuleBoundary`)."""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable

import torch

__all__ = ["ModuleBoundary", "module_dtype_boundary"]


class ModuleBoundary:
    """A model function run inside :func:`module_dtype_boundary` (picklable when the function is)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args, **kwargs):
        with module_dtype_boundary():
            return self.fn(*args, **kwargs)


_BOUNDARY_LOCK = threading.Lock()
_BOUNDARY = {"depth": 0, "handles": (), "pending": {}}


@contextlib.contextmanager
def module_dtype_boundary():
    """Inside this block, a ``torch.nn.Module`` whose parameters (or buffers) have another
    floating dtype than its positional floating inputs gets its inputs cast to its own
    dtype, and its floating outputs cast back to the inputs' dtype.

    A float64 run of a model that calls a float32 network (``pyro.module("decoder",
    net)``, weights float32) thus computes the network in float32 and everything else in
    float64; gradients flow through both casts.  A module whose dtype its inputs already
    have, a module without floating parameters (a ``PyroModule`` whose weights are
    ``PyroSample`` latents) and code outside modules are untouched, so models without
    modules run exactly as before.  Every :class:`Model` runs its function inside this
    block; it nests (the hooks are installed once).

    Yields
    ------
    None

    Notes
    -----
    Implemented with torch's global module hooks
    (``torch.nn.modules.module.register_module_forward_pre_hook`` and
    ``register_module_forward_hook(always_call=True)``), installed while the outermost
    block is open and removed when it closes.  Only positional inputs are cast (torch's
    global pre-hooks do not see keyword arguments); a module's dtype is that of its first
    floating parameter, else buffer.
    """
    with _BOUNDARY_LOCK:
        if _BOUNDARY["depth"] == 0:
            _BOUNDARY["pending"] = {}
            _BOUNDARY["handles"] = (
                torch.nn.modules.module.register_module_forward_pre_hook(_cast_inputs),
                torch.nn.modules.module.register_module_forward_hook(_cast_outputs, always_call=True))
        _BOUNDARY["depth"] += 1
    try:
        yield
    finally:
        with _BOUNDARY_LOCK:
            _BOUNDARY["depth"] -= 1
            if _BOUNDARY["depth"] == 0:
                for handle in _BOUNDARY["handles"]:
                    handle.remove()
                _BOUNDARY["handles"], _BOUNDARY["pending"] = (), {}


def _module_dtype(module) -> torch.dtype | None:
    """The dtype of a module's first floating parameter or buffer (None if it has none)."""
    for tensor in module.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    for tensor in module.buffers():
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def _cast_inputs(module, args):
    own = _module_dtype(module)
    cast_from = None
    if own is not None:
        for a in args:
            if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype != own:
                cast_from = a.dtype
                break
    _BOUNDARY["pending"].setdefault(id(module), []).append(cast_from)
    if cast_from is None:
        return None
    return tuple(a.to(own) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _cast_outputs(module, args, output):
    stack = _BOUNDARY["pending"].get(id(module))
    cast_from = stack.pop() if stack else None
    if cast_from is None:
        return None
    return _cast_tree(output, cast_from)


def _cast_tree(value, dtype):
    """Floating tensors in ``value`` (a tensor, or tuples / lists / dicts of them) cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_tree(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast_tree(v, dtype) for k, v in value.items()}
    return value
