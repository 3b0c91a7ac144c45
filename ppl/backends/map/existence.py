"""Does a maximum exist?  Decided from the log joint itself along rays toward the edges of
each site's support, not from how far an optimiser's iterate travelled.

For a coordinate with a support edge (a positive scale at 0, a probability at 0 or 1), its
free value ``u`` (the value mapped by ``biject_to(support).inv``) runs to ``±∞`` at the
edge.  Along ``u + t·d`` with the other coordinates fixed, the log joint ``f(t)``

* approaches a finite supremum when the edge is harmless (a Bernoulli probability that
  tends to 1 on all-ones data: the increments of ``f`` over doubling steps shrink
  geometrically, ``f(t) → C``), and
* grows without bound when the density explodes there (a Gamma(a < 1) value at 0:
  ``f(t) ≈ (1 - a)|t|``, the increments double; a log growth ``c·log|t|`` keeps them
  constant).

So the edge is unbounded when the increment over ``t ∈ [16, 32]`` is positive and at
least 0.9 of the one over ``[8, 16]`` (bounded approaches shrink it by at least half, for
any ``f = C - O(1/t)`` or faster).  The steps stop at ``|t| = 32`` in free units
(``e^-32 ≈ 1e-14`` from the edge), within float64's reach for every transform.
"""

from __future__ import annotations

import math

import torch

__all__ = ["Edge", "unbounded_edges", "PROBE_STEPS"]

#: Free-space steps of the probe (doubling).
PROBE_STEPS = (0.0, 8.0, 16.0, 32.0)

#: Elements of a block probed at most (a fixed subset of larger blocks).
MAX_ELEMENTS = 50


class Edge:
    """An edge of a site's support where the log joint grows without bound.

    Attributes
    ----------
    name : str
        The site or param.
    index : int
        The element (flat index into the block's free value).
    direction : int
        +1 or -1: the free value's direction toward the edge.
    value : float
        The model-side value reached by the probe (nats grow as it approaches the edge).
    growth : float
        The log joint's increase over the last probe step (nats).
    """

    def __init__(self, name, index, direction, value, growth):
        self.name, self.index, self.direction, self.value, self.growth = name, index, direction, value, growth

    def __repr__(self):
        return f"Edge({self.name}[{self.index}], direction={self.direction:+d}, growth={self.growth:.3g})"


def _ray(objective, blocks, block, k, direction) -> list:
    base = {b.name: b.value() for b in blocks}
    out = []
    for t in PROBE_STEPS:
        free = block.free.detach().clone().reshape(-1)
        free[k] = free[k] + direction * t
        vals = dict(base)
        with torch.no_grad():
            vals[block.name] = block.to_value(free.reshape(block.free.shape))
            try:
                f = float(objective(vals))
            except (ValueError, RuntimeError):
                f = math.nan
        out.append((f, vals[block.name].reshape(-1)[k].item() if vals[block.name].numel() else math.nan))
    return out


def _grows(values) -> float | None:
    """The last increment when ``f`` grows without bound along the probe, else None."""
    f = [v for v, _ in values]
    if not all(math.isfinite(x) for x in f):
        return None
    inc1, inc2 = f[2] - f[1], f[3] - f[2]
    if inc2 > 1e-6 and inc1 > 0 and inc2 >= 0.9 * inc1:
        return inc2
    return None


def unbounded_edges(objective, blocks, elements=None, seed: int = 0) -> list:
    """The support edges toward which ``objective`` (a log joint of the blocks' model-side
    values, nats) grows without bound, probing each transformed block's elements (at most
    :data:`MAX_ELEMENTS` per block, or those in ``elements``: block name -> flat indices)
    in both directions.

    Returns
    -------
    list[Edge]
        Empty when every probed edge is bounded.
    """
    found = []
    gen = torch.Generator().manual_seed(seed)
    for block in blocks:
        if not block.transformed or block.free.numel() == 0:
            continue
        n = block.free.numel()
        if elements is not None:
            idx = list(elements.get(block.name, []))
        elif n <= MAX_ELEMENTS:
            idx = list(range(n))
        else:
            idx = torch.randperm(n, generator=gen)[:MAX_ELEMENTS].tolist()
        for k in idx:
            for direction in (1, -1):
                values = _ray(objective, blocks, block, k, direction)
                growth = _grows(values)
                if growth is not None:
                    found.append(Edge(block.name, k, direction, values[-1][1], growth))
                    break
    return found
