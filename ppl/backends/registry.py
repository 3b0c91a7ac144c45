"""The backend registry: ``method=`` names -> :class:`~ppl.backends.base.Backend` instances."""

from __future__ import annotations

from ..errors import BackendNotFoundError, OptionError
from .base import Backend
from .options import set_declarers

__all__ = ["register_backend", "get_backend", "registered_backends", "ranked_backends", "methods_taking"]

_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend, *, name: str | None = None, overwrite: bool = False) -> Backend:
    """Register ``backend`` under ``name`` (default ``backend.name``) for ``ppl.infer(method=name)``.

    Raises
    ------
    TypeError
        If ``backend`` lacks ``check``/``run``.
    OptionError (a ValueError)
        If the name is taken and ``overwrite`` is False, or the name is ``"auto"``.
    """
    name = name or getattr(backend, "name", None)
    if not name or not isinstance(name, str):
        raise OptionError("a backend needs a non-empty string name")
    if name == "auto":
        raise OptionError("'auto' is reserved for automatic routing")
    if not callable(getattr(backend, "check", None)) or not callable(getattr(backend, "run", None)):
        raise TypeError(f"backend '{name}' must define check(analysis) and run(graph, analysis, **options)")
    if name in _REGISTRY and not overwrite:
        raise OptionError(f"a backend named '{name}' is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = backend
    return backend


def methods_taking(option: str) -> list:
    """Names of the registered methods that declare ``option``, in registration order."""
    return [n for n, b in _REGISTRY.items() if option in (getattr(b, "options", None) or {})]


set_declarers(methods_taking)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``.

    Raises
    ------
    BackendNotFoundError
        Listing the registered names.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise BackendNotFoundError(
            f"no inference method named {name!r}; registered methods: {sorted(_REGISTRY)} (or 'auto')"
        ) from None


def registered_backends() -> dict:
    """Name -> backend, in registration order."""
    return dict(_REGISTRY)


def ranked_backends() -> dict:
    """Name -> backend in the order ``method="auto"`` tries them: by each backend's
    ``rank`` (lower first; 100 when it declares none), ties in registration order."""
    order = list(_REGISTRY)
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (float(getattr(kv[1], "rank", 100.0)), order.index(kv[0]))))
