"""Constraints for ``ppl.param``: Pyro's, plus unit-norm columns for dictionary learning.

Everything in ``pyro.distributions.constraints`` is re-exported, so
``ppl.constraints.positive`` is Pyro's ``positive``.  Added here:

* :data:`unit_norm_columns` — every column of a ``(..., D, K)`` matrix has Euclidean norm 1
  (the atoms of a dictionary ``W`` in sparse coding, Goodfellow et al. 2016, §19.3: without
  the constraint the L1 penalty on the codes is defeated by shrinking ``h`` and growing
  ``W``);
* :data:`unit_norm_rows` — the same over the last dim.

A param declared with one of them works in plain Pyro (``transform_to`` maps any matrix
to the constraint set by normalising its columns), and the MAP backend's learning step
keeps it on the set exactly by projection (:func:`project`) after each gradient step
(projected / proximal gradient, Beck & Teboulle 2009).

Example
-------
>>> W = ppl.param("W", torch.randn(64, 32), constraint=ppl.constraints.unit_norm_columns)
"""

from __future__ import annotations

import torch
from pyro.distributions.constraints import *  # noqa: F401,F403
from pyro.distributions.constraints import __all__ as _pyro_all
from torch.distributions import constraints as _tc
from torch.distributions import transforms as _tt
from torch.distributions import transform_to

__all__ = list(_pyro_all) + ["UnitNorm", "unit_norm_columns", "unit_norm_rows", "project", "has_projection"]

_EPS = 1e-12


class UnitNorm(_tc.Constraint):
    """Vectors along ``dim`` have Euclidean norm 1 (to ``1e-6`` relative).

    Parameters
    ----------
    dim : int
        ``-2`` for the columns of a ``(..., D, K)`` matrix, ``-1`` for its rows.
    """

    def __init__(self, dim: int = -2):
        self.dim = int(dim)
        self.event_dim = -self.dim if self.dim < 0 else 1
        super().__init__()

    def check(self, value):
        norm = value.norm(dim=self.dim)
        ok = (norm - 1).abs() <= 1e-6
        # reduce the other event dims so the result has the batch shape
        for _ in range(self.event_dim - 1):
            ok = ok.all(-1)
        return ok

    def project(self, value: torch.Tensor) -> torch.Tensor:
        """The nearest point of the set (Euclidean): each vector divided by its norm; a
        zero vector becomes ``e_1``.  Shape unchanged."""
        norm = value.norm(dim=self.dim, keepdim=True)
        out = value / norm.clamp_min(_EPS)
        zero = norm <= _EPS
        if bool(zero.any()):
            basis = torch.zeros_like(value)
            basis.select(self.dim, 0).fill_(1.0)
            out = torch.where(zero, basis, out)
        return out

    def __repr__(self):
        return "unit_norm_columns" if self.dim == -2 else ("unit_norm_rows" if self.dim == -1 else
                                                            f"UnitNorm(dim={self.dim})")


class _NormaliseTransform(_tt.Transform):
    """``x -> x / ||x||`` along ``dim``: maps any non-zero matrix onto the unit-norm set.
    Not a bijection; its ``inv`` is the identity, exact on the set itself (which is what
    the param store needs to store a projected value)."""

    bijective = False

    def __init__(self, constraint: UnitNorm, cache_size: int = 0):
        super().__init__(cache_size=cache_size)
        self._constraint = constraint
        self.domain = _tc.independent(_tc.real, constraint.event_dim)
        self.codomain = constraint

    def __eq__(self, other):
        return isinstance(other, _NormaliseTransform) and other._constraint.dim == self._constraint.dim

    def _call(self, x):
        return x / x.norm(dim=self._constraint.dim, keepdim=True).clamp_min(_EPS)

    def _inverse(self, y):
        return y

    def with_cache(self, cache_size=1):
        return _NormaliseTransform(self._constraint, cache_size=cache_size)


@transform_to.register(UnitNorm)
def _transform_to_unit_norm(constraint):
    return _NormaliseTransform(constraint)


unit_norm_columns = UnitNorm(-2)
unit_norm_rows = UnitNorm(-1)


def has_projection(constraint) -> bool:
    """True if ``constraint`` is a set that learning keeps values on by projection
    (:class:`UnitNorm`), rather than through an unconstrained parametrisation."""
    return isinstance(constraint, UnitNorm)


def project(constraint, value: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of ``value`` onto ``constraint`` (see :func:`has_projection`).

    Raises
    ------
    TypeError
        If the constraint has no projection.
    """
    if not has_projection(constraint):
        raise TypeError(f"constraint {constraint!r} has no projection")
    return constraint.project(value)
