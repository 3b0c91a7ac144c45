"""Inference backends, registered by name.  Importing this package registers the built-in
ones; each lives in its own package (``exact/``, ``em/``, ``map/``, ``cavi/``, ``svi/``)
over the shared pieces below them (``base``, ``options``, ``template``, ``common/``)."""

from .base import Applicability, Backend
from .cavi import CAVIBackend
from .em import EMBackend
from .exact import ExactBackend
from .map import MAPBackend
from .options import Option
from .registry import get_backend, register_backend, registered_backends
from .svi import SVIBackend

for _backend in (ExactBackend(), EMBackend(), SVIBackend(), MAPBackend(), CAVIBackend()):
    register_backend(_backend, overwrite=True)

__all__ = ["Applicability", "Backend", "Option", "CAVIBackend", "EMBackend", "ExactBackend", "MAPBackend",
           "SVIBackend", "get_backend", "register_backend", "registered_backends"]
