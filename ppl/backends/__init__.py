"""Inference backends, registered by name.  Importing this package registers the built-in ones."""

from .base import Applicability, Backend
from .em import EMBackend
from .exact import ExactBackend
from .registry import get_backend, register_backend, registered_backends
from .svi import SVIBackend

register_backend(ExactBackend(), overwrite=True)
register_backend(EMBackend(), overwrite=True)
register_backend(SVIBackend(), overwrite=True)

__all__ = ["Applicability", "Backend", "EMBackend", "ExactBackend", "SVIBackend", "get_backend", "register_backend", "registered_backends"]
