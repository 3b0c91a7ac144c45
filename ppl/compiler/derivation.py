"""Functions of θ computed by the model, recorded in a probe run and replayed.

A model often computes a distribution's argument from its params or latents before it
selects from it: ``locs = torch.stack([mu0, mu0 + gap])`` then ``Normal(locs[z], 1)``,
or a transition matrix built from ``p_stay`` then indexed by the previous state in every
step of a loop.  :class:`~ppl.compiler.probe.Probe` alone sees ``locs[z]`` as "some
function of θ", so each such factor would need a model run per evaluation.

Inside :class:`record_derived`, each such op applied to gathers of θ is recorded instead
(:meth:`Derivation.add`): its output gets *new* positions, past θ's own, so later
selections from it (``locs[z]``) are plain gathers again, of the extended vector
``[θ, d_1, d_2, ...]``.  :meth:`Derivation.extend` recomputes the ``d_i`` at a new θ by
replaying the recorded ops in order (differentiably), which is a handful of small tensor
ops where a model run is a full Python pass through every site.

This is a trace of the model's tensor program under a nonstandard interpretation
(Wingate, Stuhlmüller, Goodman 2011, "Lightweight implementations of probabilistic
programming languages via transformational compilation", AISTATS), as
:mod:`ppl.compiler.provenance` does for sites, replayed like a recorded tape.

Only ops whose every θ-dependent input is a gather of the extended vector are
recorded; anything else (a value that left torch, an in-place write, a probe nested in
a structure torch does not take) stays unrecorded and its factors are re-evaluated by
model runs, as before.  Callers check the replay against a model run at a second θ
(:class:`~ppl.compiler.parametric.ParametricTables`).
"""

from __future__ import annotations

import bisect

import torch

__all__ = ["Derivation", "record_derived", "recorder"]

#: At most this many ops and this many derived elements are recorded per probe run.
MAX_OPS = 20000
MAX_ELEMENTS = 2 ** 24

_active: list = [None]


class _Ref:
    """An input of a recorded op that is a (scaled) gather of the extended vector."""

    __slots__ = ("positions", "scale", "segment", "local")

    def __init__(self, positions, scale, starts):
        self.positions, self.scale = positions, scale
        lo, hi = int(positions.min()), int(positions.max())
        seg = bisect.bisect_right(starts, lo) - 1
        inside = seg + 1 >= len(starts) or hi < starts[seg + 1]
        self.segment = seg if inside else None
        self.local = positions - starts[seg] if inside else positions

    def value(self, segments, full):
        x = segments[self.segment][self.local] if self.segment is not None else full()[self.local]
        return x if self.scale is None else x * self.scale


class Derivation:
    """The recorded ops of one probe run (see the module docstring).

    Parameters
    ----------
    base : int
        Length of θ's flat vector; derived elements are numbered from here on.

    Attributes
    ----------
    size : int
        Length of the extended vector ``[θ, d_1, ...]``.
    ops : list
        ``(func, args, kwargs)`` with the θ-dependent inputs replaced by references.
    """

    def __init__(self, base: int):
        self.base = self.size = int(base)
        self.ops = []
        self._starts = [0]  # segment starts: θ's own (possibly empty), then each op's output

    def add(self, func, args, kwargs, out, probes, positions_of, scale_of):
        """Record ``out = func(*args, **kwargs)``; return the LongTensor of new positions
        (``out``'s shape), or None when the op cannot be replayed from gathers.

        ``probes`` are the θ-dependent inputs found one level into ``args``/``kwargs``;
        ``positions_of`` / ``scale_of`` read their positions and constant factors."""
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.numel() == 0 \
                or len(self.ops) >= MAX_OPS or self.size - self.base + out.numel() > MAX_ELEMENTS:
            return None
        if _nested(args) or (kwargs and _nested(tuple(kwargs.values()))):
            return None
        refs = {}
        for p in probes:
            pos, _ = positions_of(p)
            if pos is None or pos.numel() == 0:
                return None
            refs[id(p)] = _Ref(pos.reshape(p.shape), scale_of(p), self._starts)
        positions = torch.arange(self.size, self.size + out.numel(), device=out.device).reshape(out.shape)
        self._append(func, args, kwargs or {}, refs, out.numel())
        return positions

    def _append(self, func, args, kwargs, table: dict, n: int) -> None:
        """Record an op whose inputs ``table`` (id -> :class:`_Ref`) replaces, with an
        output of ``n`` elements."""
        self.ops.append((func, tuple(_by_id(a, table) for a in args), {k: _by_id(v, table) for k, v in kwargs.items()}))
        self._starts.append(self.size)
        self.size += n

    def prune(self, used: list) -> torch.Tensor:
        """Drop the ops whose outputs no factor needs (a constructor's row sums...).

        Parameters
        ----------
        used : list[torch.LongTensor]
            Positions the factors gather.

        Returns
        -------
        torch.LongTensor, shape (old size,)
            New position of each old one (-1 for dropped ones); θ's own keep theirs.
        """
        needed = torch.zeros(self.size, dtype=torch.bool)
        for pos in used:
            needed[pos.reshape(-1).cpu()] = True
        spans = list(zip(self._starts[1:], self._starts[2:] + [self.size]))  # each op's output
        keep = [False] * len(self.ops)
        for i in range(len(self.ops) - 1, -1, -1):
            start, end = spans[i]
            if bool(needed[start:end].any()):
                keep[i] = True
                for r in _refs(self.ops[i]):
                    needed[r.positions.reshape(-1).cpu()] = True
        mapping = torch.full((self.size,), -1, dtype=torch.long)
        mapping[:self.base] = torch.arange(self.base)
        ops, self.ops, self._starts, self.size = self.ops, [], [0], self.base
        for (func, targs, tkwargs), (start, end), kept in zip(ops, spans, keep):
            if kept:
                mapping[start:end] = torch.arange(self.size, self.size + end - start)
                table = {id(r): _Ref(mapping.to(r.positions.device)[r.positions], r.scale, self._starts)
                         for r in _refs((func, targs, tkwargs))}
                self._append(func, targs, tkwargs, table, end - start)
        return mapping

    def extend(self, flat: torch.Tensor) -> torch.Tensor:
        """``[θ, d_1(θ), d_2(θ), ...]`` for θ's flat vector ``flat`` ``(base,)``, shape
        ``(size,)``, differentiable in ``flat``."""
        if not self.ops:
            return flat
        segments = [flat]
        cache = {}

        def full():
            n = len(segments)
            if n not in cache:
                cache.clear()
                cache[n] = torch.cat(segments)
            return cache[n]

        for func, targs, tkwargs in self.ops:
            args = tuple(_fill(a, segments, full) for a in targs)
            kwargs = {k: _fill(v, segments, full) for k, v in tkwargs.items()}
            segments.append(func(*args, **kwargs).reshape(-1))
        return torch.cat(segments)


def _nested(items) -> bool:
    """A tensor subclass (a probe) deeper than one level in lists/tuples, or in a dict:
    the recorded op would not see it as an input."""
    for x in items:
        if isinstance(x, dict) and _has_subclass(x.values()):
            return True
        if isinstance(x, (list, tuple)) and any(
                isinstance(y, (list, tuple, dict)) and _has_subclass(y.values() if isinstance(y, dict) else y)
                for y in x):
            return True
    return False


def _has_subclass(items) -> bool:
    for x in items:
        if isinstance(x, torch.Tensor) and type(x) is not torch.Tensor and not isinstance(x, torch.nn.Parameter):
            return True
        if isinstance(x, (list, tuple)) and _has_subclass(x):
            return True
        if isinstance(x, dict) and _has_subclass(x.values()):
            return True
    return False


def _refs(op) -> list:
    """The references among an op's arguments."""
    _, targs, tkwargs = op
    out = []
    for a in list(targs) + list(tkwargs.values()):
        items = a if isinstance(a, (list, tuple)) else (a,)
        out.extend(x for x in items if isinstance(x, _Ref))
    return out


def _by_id(a, table: dict):
    """``a`` (or each item of a list/tuple ``a``) replaced by ``table[id(...)]`` where present."""
    if id(a) in table:
        return table[id(a)]
    if isinstance(a, (list, tuple)):
        return type(a)(table.get(id(x), x) for x in a)
    return a


def _fill(a, segments, full):
    if isinstance(a, _Ref):
        return a.value(segments, full)
    if isinstance(a, (list, tuple)):
        return type(a)(x.value(segments, full) if isinstance(x, _Ref) else x for x in a)
    return a


class record_derived:
    """Context manager: within it, ops of probes that are not gathers are recorded by
    ``derivation`` (a :class:`Derivation`)."""

    def __init__(self, derivation: Derivation):
        self.derivation = derivation

    def __enter__(self):
        self._old = _active[0]
        _active[0] = self.derivation
        return self.derivation

    def __exit__(self, *exc):
        _active[0] = self._old
        return False


def recorder():
    """The active :class:`Derivation`, or None."""
    return _active[0]
