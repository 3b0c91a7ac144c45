"""Lightweight provenance tracking for the compiler's one traced run.

Same idea as :class:`pyro.ops.provenance.ProvenanceTensor` (a nonstandard interpretation
of the program, Wingate et al. 2011): a tensor subclass remembers the set of sites its
value came from, and every torch op returns the union of its inputs' sets.  Pyro's class
flattens and rebuilds every argument and result with pytrees, which costs ~150 µs per op
and made compiling a 20 000-step markov loop take a minute.  Here the op runs on the
subclass tensors directly with subclass dispatch disabled, and arguments are only
*scanned* for provenance (one level into lists, tuples and dicts, where torch takes
tensors), so tracking costs a few µs per op.

The messenger that wraps each site's value is
:class:`~ppl.compiler.handlers.TrackProvenance`.
"""

from __future__ import annotations

import torch

from .internals import no_torch_function
from .mutation import adopt, mutated_tensor

__all__ = ["Tracked", "provenance_of", "strip"]

_EMPTY = frozenset()


class Tracked(torch.Tensor):
    """A tensor that carries ``_provenance``, a frozenset of site names."""

    _provenance: frozenset

    @staticmethod
    def wrap(data: torch.Tensor, provenance: frozenset) -> torch.Tensor:
        """Return ``data`` viewed as a :class:`Tracked` with ``provenance`` (or ``data``
        itself when ``provenance`` is empty)."""
        if not provenance:
            return data
        out = data.as_subclass(Tracked)
        out._provenance = provenance
        return out

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with no_torch_function():
            result = func(*args, **kwargs)
        provenance = _scan(args, _EMPTY)
        if kwargs:
            provenance = _scan(kwargs.values(), provenance)
        if not provenance:
            return result
        target = mutated_tensor(getattr(func, "__name__", ""), args, kwargs)
        if target is not None:  # ``x[i] = tracked``: x now holds the value, so it carries its sites
            if type(target) is Tracked:
                target._provenance = target._provenance | provenance
            else:
                adopt(target, Tracked)
                target._provenance = provenance
        return _track(result, provenance)

    def __repr__(self):
        return repr(strip(self))   # users see it in messages (a support's bounds): the plain tensor


def _scan(items, provenance: frozenset) -> frozenset:
    for x in items:
        if type(x) is Tracked:
            provenance = provenance | x._provenance
        elif isinstance(x, (list, tuple)):
            provenance = _scan(x, provenance)
        elif isinstance(x, dict):
            provenance = _scan(x.values(), provenance)
    return provenance


def _track(result, provenance: frozenset):
    if isinstance(result, torch.Tensor):
        if type(result) is Tracked:
            # an op that returned one of its inputs (broadcast_tensors of tensors already of
            # the broadcast shape, .to(its own dtype)): a new view carries the union, the input
            # keeps its own sites (unioning in place gave a shared scale every z_t of a loop)
            if provenance <= result._provenance:
                return result
            return Tracked.wrap(strip(result), result._provenance | provenance)
        return Tracked.wrap(result, provenance)
    if isinstance(result, tuple) and hasattr(type(result), "n_fields"):
        # torch.return_types (max, sort, ...): a struct sequence whose fields (.values,
        # .indices) the caller reads, so it is rebuilt as its own type
        return type(result)([_track(r, provenance) for r in result])
    if isinstance(result, tuple) and not hasattr(result, "_fields"):
        return tuple(_track(r, provenance) for r in result)
    if isinstance(result, list):
        return [_track(r, provenance) for r in result]
    return result


def provenance_of(x) -> frozenset:
    """The provenance of a tensor (empty for plain tensors and non-tensors)."""
    return x._provenance if type(x) is Tracked else _EMPTY


def strip(x):
    """A plain tensor sharing ``x``'s data (``x`` itself if it is not tracked)."""
    if type(x) is Tracked:
        with no_torch_function():
            return x.as_subclass(torch.Tensor)
    return x
