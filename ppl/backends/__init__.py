"""Inference backends, registered by name.  Importing this package registers the built-in ones."""

from .base import Applicability, Backend
from .cavi import CAVIBackend
from .em import EMBackend
from .exact import ExactBackend
from .map import MAPBackend
from .registry import get_backend, register_backend, registered_backends
from .svi import SVIBackend

register_backend(ExactBackend(), overwrite=True)
register_backend(EMBackend(), overwrite=True)
register_backend(SVIBackend(), overwrite=True)
register_backend(MAPBackend(), overwrite=True)
register_backend(CAVIBackend(), overwrite=True)

__all__ = ["Applicability", "Backend", "CAVIBackend", "EMBackend", "ExactBackend", "MAPBackend", "SVIBackend", "get_backend", "register_backend", "registered_backends"]
