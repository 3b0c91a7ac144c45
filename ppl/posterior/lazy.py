"""Diagnostics whose values are computed when first read.

A ``TablePosterior`` from exact inference finds its joint MAP assignment (max-product,
as costly as the sum-product pass itself) only when someone asks for it: ``post.map()``
or ``post.diagnostics["map_log_joint"]``.  :class:`LazyDiagnostics` is the ``dict`` that
makes the second form work without computing it up front.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["LazyDiagnostics"]


class LazyDiagnostics(dict):
    """A ``dict`` some of whose entries are filled by a function on first access.

    Reading a deferred key (``d[k]``, ``d.get(k)``, ``k in d``) runs its function once and
    stores what it returns; iterating, ``len``, ``items()``, ``copy()``, ``repr`` and
    pickling first fill every deferred entry, so the dict always looks complete.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deferred: dict = {}

    def defer(self, keys, compute: Callable[[], dict]) -> None:
        """Fill ``keys`` from ``compute()`` (a dict holding at least those keys) the first
        time any of them is read."""
        for k in keys:
            self._deferred[k] = compute

    def _fill(self, key) -> None:
        compute = self._deferred.get(key)
        if compute is not None:
            values = compute()
            for k in [k for k, c in self._deferred.items() if c is compute]:
                del self._deferred[k]
                if k in values:
                    super().__setitem__(k, values[k])

    def _fill_all(self) -> None:
        while self._deferred:
            self._fill(next(iter(self._deferred)))

    def __getitem__(self, key):
        self._fill(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._fill(key)
        return super().get(key, default)

    def __contains__(self, key):
        return key in self._deferred or super().__contains__(key)

    def __iter__(self):
        self._fill_all()
        return super().__iter__()

    def __len__(self):
        self._fill_all()
        return super().__len__()

    def keys(self):
        self._fill_all()
        return super().keys()

    def items(self):
        self._fill_all()
        return super().items()

    def values(self):
        self._fill_all()
        return super().values()

    def copy(self):
        self._fill_all()
        return dict(super().items())

    def __eq__(self, other):
        self._fill_all()
        return dict(super().items()) == other

    __hash__ = None

    def __repr__(self):
        self._fill_all()
        return repr(dict(super().items()))

    def __reduce__(self):
        self._fill_all()
        return dict, (dict(super().items()),)
