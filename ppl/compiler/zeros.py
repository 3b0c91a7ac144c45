"""Exact zeros of discrete probability tables: ``log 0 = -inf``, not torch's clamped value.

torch's ``Bernoulli(probs=...)`` and ``Categorical(probs=...)`` turn probabilities into
logits through ``clamp_probs``, so a probability of exactly 0 scores ``log(eps)``
(about -36.04 in float64, -15.9 in float32) instead of ``-inf``: evidence that is
impossible under the model would get a finite log evidence.  :func:`exact_log_prob`
puts ``-inf`` back wherever the value's probability is exactly 0, and is applied to every
factor table ppl builds (exact inference, EM, MAP, CAVI), so impossible evidence gives
``log p(v) = -inf`` and the backends' ``DataError`` ("probability zero").  A
``Bernoulli(logits=±inf)``, for which torch scores the certain value NaN, is scored
exactly too (0 and -inf).
"""

from __future__ import annotations

import torch
from torch.distributions import Bernoulli, Categorical, Independent

from .families import base_distribution
from ..ops.shapes import broadcast_shapes

__all__ = ["exact_log_prob", "has_exact_zero"]


def _zero_mask(fn, value):
    """Bool tensor (broadcast shape of ``fn.log_prob(value)``) where ``value`` has probability
    exactly 0 under ``fn``, or None where ``fn`` is no probs-parameterised Bernoulli or
    Categorical (possibly inside ``Independent`` or Pyro's masked / expanded wrappers) or
    has no exact zero."""
    if isinstance(fn, Independent):
        inner = _zero_mask(fn.base_dist, value)
        if inner is None:
            return None
        n = fn.reinterpreted_batch_ndims
        return inner.flatten(-n).any(-1) if n else inner
    base = getattr(fn, "base_dist", None)
    mask = getattr(fn, "_mask", None)
    if base is not None and type(fn).__name__ in ("MaskedDistribution", "ExpandedDistribution"):
        inner = _zero_mask(base, value)
        if inner is None:
            return None
        if type(fn).__name__ == "ExpandedDistribution":
            return inner.expand(broadcast_shapes(inner.shape, tuple(fn.batch_shape)))
        if isinstance(mask, torch.Tensor):
            return inner & mask
        return inner if mask is not False else torch.zeros_like(inner)
    if "probs" not in fn.__dict__:  # given as logits: -inf logits already score -inf
        return None
    probs = fn.__dict__["probs"]
    if isinstance(fn, Bernoulli):
        if not bool(((probs == 0) | (probs == 1)).any()):
            return None
        return torch.where(value.to(probs.dtype) == 1, probs == 0, probs == 1)
    if isinstance(fn, Categorical):
        if not bool((probs == 0).any()):
            return None
        index = value.long().unsqueeze(-1)
        index, table = torch.broadcast_tensors(index, probs)
        return table.gather(-1, index[..., :1]).squeeze(-1) == 0
    return None


def _infinite_logits(fn, value):
    """The exact log probability of ``value`` under a logits-parameterised Bernoulli with
    some infinite logit (possibly inside ``Independent`` or Pyro's masked / expanded
    wrappers), where torch gives NaN (``logits · x - softplus(logits)`` is ``inf - inf`` at
    the certain value); None for any other ``fn``.  ``log σ(l)`` for 1 and ``log σ(-l)``
    for 0 are exact at ``l = ±inf`` (0 and -inf)."""
    if isinstance(fn, Independent):
        inner = _infinite_logits(fn.base_dist, value)
        n = fn.reinterpreted_batch_ndims
        return None if inner is None else (inner.flatten(-n).sum(-1) if n else inner)
    base = getattr(fn, "base_dist", None)
    if base is not None and type(fn).__name__ in ("MaskedDistribution", "ExpandedDistribution"):
        inner = _infinite_logits(base, value)
        if inner is None or type(fn).__name__ == "ExpandedDistribution":
            return inner if inner is None else inner.expand(broadcast_shapes(inner.shape, tuple(fn.batch_shape)))
        mask = getattr(fn, "_mask", None)
        if isinstance(mask, torch.Tensor) or mask is False:
            return torch.where(torch.as_tensor(mask, device=inner.device), inner, torch.zeros_like(inner))
        return inner
    logits = fn.__dict__.get("logits") if isinstance(fn, Bernoulli) else None
    if not isinstance(logits, torch.Tensor) or not bool(torch.isinf(logits).any()):
        return None
    one = value.to(logits.dtype) == 1
    return torch.where(one, torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits))


def exact_log_prob(fn, value, log_prob: torch.Tensor, mask=None) -> torch.Tensor:
    """``log_prob`` (= ``fn.log_prob(value)``) with ``-inf`` wherever ``value`` has
    probability exactly 0 under a probs-parameterised Bernoulli or Categorical ``fn``
    (torch's clamping would give ``log(eps)``), and exact where a logits-parameterised
    Bernoulli has an infinite logit (torch: NaN); other distributions unchanged.

    Parameters
    ----------
    fn : torch.distributions.Distribution
    value : torch.Tensor
        The value scored, shape broadcastable with ``fn``'s batch shape.
    log_prob : torch.Tensor
        ``fn.log_prob(value)``, in nats.
    mask : bool or torch.Tensor, optional
        The site's ``poutine.mask`` (False entries score 0 and stay 0).

    Returns
    -------
    torch.Tensor
        Same shape as ``log_prob``.
    """
    try:
        exact = _infinite_logits(fn, value)
        if exact is not None and exact.shape == log_prob.shape:
            if mask is False:
                return torch.zeros_like(log_prob)
            return exact if mask is None else torch.where(mask.bool(), exact, torch.zeros_like(exact))
        zero = _zero_mask(fn, value)
    except (RuntimeError, ValueError, IndexError):
        return log_prob
    if zero is None or mask is False:
        return log_prob
    if isinstance(mask, torch.Tensor):
        zero = zero & mask.bool()
    try:
        zero = zero.expand(log_prob.shape) if zero.shape != log_prob.shape else zero
    except RuntimeError:
        return log_prob
    return torch.where(zero, torch.full_like(log_prob, float("-inf")), log_prob)


def has_exact_zero(fn) -> bool:
    """Whether ``fn`` (a probs-parameterised Bernoulli or Categorical, possibly wrapped)
    gives some value probability exactly 0: its log density then has ``-inf`` entries
    that a method working with finite logits (CAVI's binary quadratic path) cannot hold."""
    fn = base_distribution(fn)
    probs = fn.__dict__.get("probs") if hasattr(fn, "__dict__") else None
    if not isinstance(probs, torch.Tensor):
        return False
    if isinstance(fn, Bernoulli):
        return bool(((probs == 0) | (probs == 1)).any())
    if isinstance(fn, Categorical):
        return bool((probs == 0).any())
    return False
