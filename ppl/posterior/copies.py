"""What a Posterior hands out is the caller's own: copies, never views of its state.

A posterior keeps its answers as tensors (tables, draws, points, distribution
parameters) and its queries often return them, or views of them, directly.  A careless
in-place edit of a returned value (``m = post.mean("mu"); m -= 1``, ``post.params["w"].add_(1)``,
``post.marginal("z").probs /= 2``) would then change every later answer of the posterior.
:class:`ReturnsCopies`, a base of :class:`~ppl.posterior.base.Posterior`, wraps the
:data:`RETURNING` methods of every subclass that defines them so that the outermost call
returns :func:`copied` values; calls a posterior makes to its own queries (``mean``
reading ``marginal``) copy nothing, so the cost is one copy of what the caller receives.
``Posterior.params`` returns a copied dict in the same way.
"""

from __future__ import annotations

import copy
import functools
import threading

import torch

__all__ = ["ReturnsCopies", "RETURNING", "copied"]

#: The Posterior methods whose results are copied at the public boundary.
RETURNING = ("marginal", "mean", "variance", "quantile", "probs", "draws", "sample", "map")

_DEPTH = threading.local()


def copied(value, memo: dict | None = None):
    """``value`` with every tensor in it replaced by a detached copy: tensors, dicts, lists
    and tuples of them, and torch distributions and transforms (their attributes, nested
    distributions such as ``base_dist`` included).  A tensor met twice is copied once.
    Anything else (a ``torch.nn.Module`` among a flow's transforms included) is returned
    as it is."""
    memo = {} if memo is None else memo
    key = id(value)
    if key in memo:
        return memo[key]
    if isinstance(value, torch.nn.Module):  # a learned transform (a flow's network): its own, as it is
        return value
    if isinstance(value, torch.Tensor):
        out = value.detach().clone()
    elif type(value) is dict:
        out = {k: copied(v, memo) for k, v in value.items()}
    elif type(value) in (list, tuple):
        out = type(value)(copied(v, memo) for v in value)
    elif isinstance(value, (torch.distributions.Distribution, torch.distributions.Transform)) \
            and hasattr(value, "__dict__"):
        out = copy.copy(value)
        memo[key] = out
        out.__dict__.update({k: copied(v, memo) for k, v in vars(value).items()})
    else:
        return value
    memo[key] = out
    return out


def _returning_copies(fn):
    @functools.wraps(fn)
    def query(self, *args, **kwargs):
        depth = getattr(_DEPTH, "n", 0)
        _DEPTH.n = depth + 1
        try:
            out = fn(self, *args, **kwargs)
        finally:
            _DEPTH.n = depth
        return copied(out) if depth == 0 else out

    query.returns_copies = True
    return query


class ReturnsCopies:
    """A mixin: every subclass's :data:`RETURNING` methods (its own or a mixin's) return
    copies at the outermost call (wrapped once, when the class is defined)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in RETURNING:
            fn = getattr(cls, name, None)
            if callable(fn) and not getattr(fn, "returns_copies", False):
                setattr(cls, name, _returning_copies(fn))

    @property
    def params(self) -> dict:
        """Learned ``ppl.param`` values and ``pyro.module`` weights, name -> tensor: a new
        dict of copies on every read (the posterior's own are in its ``__dict__``, where
        its saved state keeps them)."""
        return copied(dict(vars(self).get("params") or {}))

    @params.setter
    def params(self, value) -> None:
        self.__dict__["params"] = dict(value or {})
