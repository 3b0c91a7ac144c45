"""The ``ppl.param`` values θ as one flat vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ParamSpace"]


@dataclass
class ParamSpace:
    """The ``ppl.param`` values θ as one flat vector.

    Attributes
    ----------
    names : tuple[str, ...]
    shapes : dict[str, torch.Size]
    constraints : dict[str, Constraint]
    offsets : dict[str, int]
        Position of each param's first element in the flat vector.
    size : int
    """

    names: tuple
    shapes: dict
    constraints: dict
    offsets: dict
    size: int

    @staticmethod
    def build(values: dict, constraints: dict) -> "ParamSpace":
        """The space of ``values`` (name -> constrained tensor, in this order) with their
        ``constraints`` (name -> Constraint or None)."""
        offsets, n = {}, 0
        for k, v in values.items():
            offsets[k] = n
            n += v.numel()
        return ParamSpace(tuple(values), {k: v.shape for k, v in values.items()}, dict(constraints), offsets, n)

    def flat(self, values: dict) -> torch.Tensor:
        """θ as one vector of length :attr:`size`."""
        return torch.cat([values[k].reshape(-1) for k in self.names]) if self.names else torch.zeros(0)

    def unflat(self, flat: torch.Tensor) -> dict:
        """Name -> view of ``flat`` with the param's shape."""
        return {k: flat[o:o + self.shapes[k].numel()].reshape(self.shapes[k]) for k, o in self.offsets.items()}

    def owners(self, positions: torch.Tensor) -> set:
        """Names of the params holding the flat elements ``positions``."""
        if not self.names or positions.numel() == 0:
            return set()
        starts = torch.tensor([self.offsets[k] for k in self.names], device=positions.device)
        which = torch.searchsorted(starts, positions.reshape(-1).unique(), right=True) - 1
        return {self.names[i] for i in which.unique().tolist()}
