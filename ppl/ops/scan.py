"""Parallel-scan contraction of a chain of pairwise log factors.

A chain ``x_0 - x_1 - ... - x_L`` with pairwise log tables ``M[t](x_t, x_{t+1})`` is
contracted to one table over its ends, ``C(x_0, x_L) = ⊕_{x_1..x_{L-1}} Σ_t M[t]``, by a
balanced binary tree of semiring matrix products: ``ceil(log2 L)`` levels, each one
batched tensor operation, so no Python-level work per time step (the associative-scan
idea of Blelloch 1990, as used for HMMs by Särkkä & García-Fernández 2021).

The levels are kept so that the interior can be decoded afterwards, top down, also in
``O(log L)`` batched steps: sampled from the exact conditional (sum semiring) or set
to the argmax (max semiring, i.e. Viterbi).
"""

from __future__ import annotations

import torch

from .semiring import log_matmul
from .shapes import broadcast_shapes

__all__ = ["chain_reduce", "chain_reduce_scaled", "to_scaled_chain", "chain_backtrace"]


def chain_reduce(m: torch.Tensor, semiring: str = "sum", keep_levels: bool = False):
    """Contract a chain of pairwise log factors to a factor over its two ends.

    Parameters
    ----------
    m : torch.Tensor, shape (..., L, K, K)
        ``m[..., t, i, j]`` is the log factor between ``x_t = i`` and ``x_{t+1} = j``;
        leading dims are batch (plates).
    semiring : {"sum", "max"}
    keep_levels : bool
        Keep each level's input for :func:`chain_backtrace`.

    Returns
    -------
    end : torch.Tensor, shape (..., K, K)
        ``end[..., i, j] = ⊕ over interior values of the chain with x_0 = i, x_L = j``.
    levels : list[torch.Tensor]
        The input of every level (first: ``m`` itself), or ``[]``.
    """
    levels = []
    while m.shape[-3] > 1:
        if keep_levels:
            levels.append(m)
        length = m.shape[-3]
        even = length - length % 2
        paired = log_matmul(m[..., 0:even:2, :, :], m[..., 1:even:2, :, :], semiring)
        if length % 2:
            paired = torch.cat([paired, m[..., even:, :, :]], dim=-3)
        m = paired
    return m[..., 0, :, :], levels


def to_scaled_chain(m: torch.Tensor):
    """Split log matrices ``m`` (..., L, K, K) into probabilities with max 1 per matrix and
    their log scales (..., L) (``-inf``-safe)."""
    scale = m.detach().amax(dim=(-1, -2))
    scale = scale.masked_fill(~torch.isfinite(scale), 0.0)
    return (m - scale[..., None, None]).exp(), scale


def chain_reduce_scaled(p: torch.Tensor, scale: torch.Tensor):
    """Sum-product chain contraction in the probability domain with rescaling.

    The same balanced tree as :func:`chain_reduce`, but each level is one batched BLAS
    matrix product of probability matrices followed by division by each product's
    maximum (whose log joins the scale), so there is no ``exp``/``log`` per entry.
    Differentiable.  If a product underflows entirely (matrices disagreeing by more than
    ~745 nats) the result is all zero; callers detect that and use :func:`chain_reduce`.

    Parameters
    ----------
    p : torch.Tensor, shape (..., L, K, K)
        ``exp(m - scale)`` of log matrices ``m`` (see :func:`to_scaled_chain`).
    scale : torch.Tensor, shape (..., L)

    Returns
    -------
    end : torch.Tensor, shape (..., K, K)
        Probabilities with max 1 (or all zero).
    end_scale : torch.Tensor, shape (...)
        ``log Σ exp(...)`` of the chain = ``log(end) + end_scale`` entrywise.
    """
    while p.shape[-3] > 1:
        length = p.shape[-3]
        even = length - length % 2
        c = torch.matmul(p[..., 0:even:2, :, :], p[..., 1:even:2, :, :])
        cs = scale[..., 0:even:2] + scale[..., 1:even:2]
        m = c.detach().amax(dim=(-1, -2))
        m = torch.where(m > 0, m, torch.ones_like(m))
        c = c / m[..., None, None]
        cs = cs + m.log()
        if length % 2:
            c = torch.cat([c, p[..., even:, :, :]], dim=-3)
            cs = torch.cat([cs, scale[..., even:]], dim=-1)
        p, scale = c, cs
    return p[..., 0, :, :], scale[..., 0]


def chain_backtrace(levels, first: torch.Tensor, last: torch.Tensor, mode: str, generator=None) -> torch.Tensor:
    """Decode the interior of a chain given the values at its two ends.

    Parameters
    ----------
    levels : list[torch.Tensor]
        From :func:`chain_reduce` with ``keep_levels=True``; ``levels[0]`` has shape
        ``(..., L, K, K)``.
    first, last : torch.LongTensor, shape (S, ...)
        Values of ``x_0`` and ``x_L`` (``S`` samples; remaining dims broadcast with the
        levels' batch dims).
    mode : {"sample", "argmax"}
        Draw each interior value from its exact conditional given its neighbours at the
        level above, or take the argmax (max-product decoding).
    generator : torch.Generator, optional

    Returns
    -------
    torch.LongTensor, shape (S, ..., L + 1)
        Values of ``x_0 .. x_L``.
    """
    bounds = torch.stack(torch.broadcast_tensors(first, last), dim=-1)  # (S, ..., 2)
    for m in reversed(levels):
        length = m.shape[-3]
        even = length - length % 2
        left = m[..., 0:even:2, :, :]   # (..., P, K, K)
        right = m[..., 1:even:2, :, :]  # (..., P, K, K)
        pairs = even // 2
        a = bounds[..., 0:pairs]                 # left ends, (S, ..., P)
        c = bounds[..., 1:pairs + 1]             # right ends
        # logits over the middle value b: left[a, b] + right[b, c]
        k = m.shape[-1]
        shape = broadcast_shapes(a.shape[:-1], left.shape[:-3])
        left_e = left.expand(shape + left.shape[-3:])
        right_e = right.expand(shape + right.shape[-3:])
        a_e = a.expand(shape + (pairs,))
        c_e = c.expand(shape + (pairs,))
        row = torch.gather(left_e, -2, a_e[..., None, None].expand(shape + (pairs, 1, k))).squeeze(-2)
        col = torch.gather(right_e, -1, c_e[..., None, None].expand(shape + (pairs, k, 1))).squeeze(-1)
        middle = choose(row + col, mode, generator)  # (S, ..., P)
        new = torch.empty(shape + (length + 1,), dtype=torch.long, device=bounds.device)
        new[..., 0:even + 1:2] = bounds[..., : pairs + 1].expand(shape + (pairs + 1,))
        new[..., 1:even:2] = middle
        if length % 2:
            new[..., -1] = bounds[..., -1].expand(shape)
        bounds = new
    return bounds


def choose(logits: torch.Tensor, mode: str, generator=None) -> torch.Tensor:
    """Index along the last dim: argmax, or a draw with probabilities ∝ exp(logits)
    (Gumbel-max trick, exact).

    Parameters
    ----------
    logits : torch.Tensor, shape (..., K)
        Unnormalised log probabilities (``-inf`` allowed, not everywhere).
    mode : {"argmax", "sample"}
    generator : torch.Generator, optional
        Source of the uniforms of the Gumbel noise (``"sample"`` only).

    Returns
    -------
    torch.LongTensor, shape (...)
        ``argmax_k logits[..., k]``, or ``argmax_k logits[..., k] + G_k`` with
        ``G_k = -log(-log U_k)`` standard Gumbel, which is a draw from
        ``softmax(logits)`` (Gumbel 1954; Maddison et al. 2014, §2).
    """
    if mode == "argmax":
        return logits.argmax(dim=-1)
    u = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device, generator=generator)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(logits.dtype).tiny)))
    return (logits + gumbel).argmax(dim=-1)
