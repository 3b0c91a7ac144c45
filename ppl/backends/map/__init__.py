"""``method="map"``: the joint MAP and MAP learning of params."""

from .backend import MAPBackend

__all__ = ["MAPBackend"]
