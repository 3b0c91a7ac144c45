"""Inference backends, registered by name.  Importing this package registers the nine
built-in ones; each lives in its own package (``exact/``, ``em/``, ``map/``, ``cavi/``,
``svi/``, ``laplace/``, ``pathfinder/``, ``chees/``, ``nuts/``) over the shared pieces below them
(``base``, ``options``, ``registry``, ``template``, ``common/``)."""

from .base import Applicability, Backend
from .cavi import CAVIBackend
from .chees import CheesBackend
from .em import EMBackend
from .exact import ExactBackend
from .laplace import LaplaceBackend
from .map import MAPBackend
from .nuts import NUTSBackend
from .options import Option
from .pathfinder import PathfinderBackend
from .registry import get_backend, register_backend, registered_backends
from .svi import SVIBackend

for _backend in (ExactBackend(), EMBackend(), SVIBackend(), MAPBackend(), CAVIBackend(), LaplaceBackend(),
                 NUTSBackend(), PathfinderBackend(), CheesBackend()):
    register_backend(_backend, overwrite=True)

__all__ = ["Applicability", "Backend", "Option", "CAVIBackend", "CheesBackend", "EMBackend", "ExactBackend", "LaplaceBackend",
           "MAPBackend", "NUTSBackend", "PathfinderBackend", "SVIBackend", "get_backend", "register_backend",
           "registered_backends"]
