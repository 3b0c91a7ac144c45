"""Log densities of large observed sites, evaluated in chunks along a plate.

With a discrete latent enumerated, an observed site's log density is a table over the
latent's states *and* every data point: for a mixture of K components over N points of
dimension D, ``Normal(loc[z], s).to_event(1).log_prob(x)`` builds ``(K, N, D)``
temporaries before summing out D, K·D times the data.  Evaluated chunk by chunk along the
data plate, the temporaries stay within :data:`CHUNK_ELEMENTS` and only the ``(K, N)``
result is the size of the output.  The numbers are the same: a log density of i.i.d.
points is evaluated point by point, and chunks only group them.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions.util import scale_and_mask

from ..ops.shapes import broadcast_shapes

__all__ = ["CHUNK_ELEMENTS", "chunked_log_prob", "precompute_log_probs"]

#: Elements a chunk's widest temporary may hold (float64: 32 MiB).
CHUNK_ELEMENTS = 1 << 22


def _chunk_dim(fn, value):
    """The batch dim (negative, counted from the right of the batch shape) to chunk along:
    the widest batch dim of the log density, or ``None``."""
    event = len(fn.event_shape)
    vbatch = tuple(value.shape[: value.dim() - event])
    try:
        batch = broadcast_shapes(tuple(fn.batch_shape), vbatch)
    except RuntimeError:
        return None
    if not batch:
        return None
    size = max(batch)
    return -list(reversed(batch)).index(size) - 1 if size > 1 else None


def _slice_dist(fn, dim: int, start: int, length: int):
    """``fn`` restricted to ``[start, start + length)`` along batch dim ``dim`` (negative),
    rebuilt from its parameters: ``Independent`` wrappers are kept, the base must be a
    torch distribution whose parameters (``arg_constraints``) are all set; ``None`` for
    anything else (then the site is evaluated whole)."""
    reinterpreted = []
    base = fn
    while isinstance(base, torch.distributions.Independent):
        reinterpreted.append(base.reinterpreted_batch_ndims)
        base = base.base_dist
    if type(base).__module__.split(".")[0] not in ("torch", "pyro"):
        return None
    inner = dim - sum(reinterpreted)  # the dim in the base distribution's batch shape
    nbatch = len(base.batch_shape)
    if -inner > nbatch:
        return None
    params = {}
    for name in getattr(base, "arg_constraints", {}):
        if name not in base.__dict__:
            continue  # a lazily derived alternative (probs <-> logits)
        t = base.__dict__[name]
        if not isinstance(t, torch.Tensor):
            return None
        if t.dim() < nbatch:
            return None
        axis = nbatch + inner  # parameters hold the batch dims first, then their own
        if t.shape[axis] == 1:
            params[name] = t
        elif t.stride(axis) == 0:  # expanded along the dim (a plate over constant parameters): one copy
            params[name] = t.narrow(axis, 0, 1)
        else:
            params[name] = t.narrow(axis, start, length)
    if not params:
        return None
    try:
        out = type(base)(**params, validate_args=False)
    except Exception:  # noqa: BLE001 - a constructor that does not take its parameters back
        return None
    for n in reversed(reinterpreted):
        out = torch.distributions.Independent(out, n, validate_args=False)
    return out


def _chunked(fn, value, dim: int, rows: int):
    event = len(fn.event_shape)
    vdim = dim - event  # the same dim, counted from the right of the value
    vbatch = value.dim() - event
    n = max(tuple(fn.batch_shape)[dim] if -dim <= len(fn.batch_shape) else 1,
            value.shape[vdim] if -dim <= vbatch else 1)
    parts = []
    for start in range(0, n, rows):
        length = min(rows, n - start)
        part_fn = fn if -dim > len(fn.batch_shape) or fn.batch_shape[dim] == 1 else _slice_dist(fn, dim, start, length)
        if part_fn is None:
            return None
        v = value.narrow(vdim, start, length) if -dim <= vbatch and value.shape[vdim] != 1 else value
        part = part_fn.log_prob(v)
        if part.dim() < -dim or part.shape[dim] != length:
            return None
        parts.append(part)
    return torch.cat(parts, dim=dim)


def chunked_log_prob(fn, value: torch.Tensor, whole: bool = True):
    """``fn.log_prob(value)``, evaluated in chunks along the widest batch dim when the
    elementwise temporaries would exceed :data:`CHUNK_ELEMENTS` (the same numbers).

    Parameters
    ----------
    fn : torch Distribution
    value : torch.Tensor
    whole : bool
        What to do when chunking does not apply (small, or a distribution that cannot be
        rebuilt from its parameters): evaluate it whole (default), or return ``None``.

    Returns
    -------
    torch.Tensor or None
        Shape ``broadcast(fn.batch_shape, value's batch shape)``.
    """
    try:
        shape = broadcast_shapes(tuple(fn.batch_shape) + tuple(fn.event_shape), tuple(value.shape))
    except RuntimeError:
        shape = None
    dim = _chunk_dim(fn, value) if shape is not None else None
    if shape is not None and dim is not None and math.prod(shape) > CHUNK_ELEMENTS:
        n = broadcast_shapes(tuple(fn.batch_shape), tuple(value.shape[: value.dim() - len(fn.event_shape)]))[dim]
        out = _chunked(fn, value, dim, max(1, CHUNK_ELEMENTS // max(1, math.prod(shape) // n)))
        if out is not None:
            return out
    return fn.log_prob(value) if whole else None


def precompute_log_probs(trace) -> None:
    """Fill ``log_prob`` of every large observed sample site of ``trace`` chunk by chunk
    (as Pyro's ``Trace.compute_log_prob`` would, same keys: ``unscaled_log_prob``,
    ``log_prob`` with scale and mask applied, ``log_prob_sum``), where the full
    evaluation's temporaries would exceed :data:`CHUNK_ELEMENTS`; other sites are left to
    ``compute_log_prob``."""
    for site in trace.nodes.values():
        if site["type"] != "sample" or not site.get("is_observed") or "log_prob" in site:
            continue
        fn, value = site["fn"], site["value"]
        if (not isinstance(value, torch.Tensor) or site["args"] or site["kwargs"]
                or not hasattr(fn, "batch_shape") or not hasattr(fn, "event_shape")):  # e.g. a plate's subsample site
            continue
        log_p = chunked_log_prob(fn, value, whole=False)
        if log_p is None:
            continue
        site["unscaled_log_prob"] = log_p
        log_p = scale_and_mask(log_p, site["scale"], site["mask"])
        site["log_prob"] = log_p
        site["log_prob_sum"] = log_p.sum()
