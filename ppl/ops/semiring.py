"""Log-space reductions for the two semirings the contraction engine uses.

* ``"sum"``: (logsumexp, +), the sum-product semiring in log space; gives log Z and,
  through autograd, marginals (the adjoint trick, Darwiche 2003; Eisner 2016).
* ``"max"``: (max, +), the max-product (Viterbi) semiring; gives the log probability
  of the most probable joint assignment.

The reductions are *safe* for tables holding ``-inf`` (zero probabilities, common in
Bayesian-network CPTs): a slice that is all ``-inf`` reduces to ``-inf`` with a zero
gradient, never NaN.
"""

from __future__ import annotations

import torch

from .shapes import broadcast_shapes

__all__ = ["SEMIRINGS", "safe_log", "safe_logsumexp", "reduce", "log_matmul"]

SEMIRINGS = ("sum", "max")


def safe_log(x: torch.Tensor) -> torch.Tensor:
    """``log(x)`` for ``x >= 0`` whose gradient is 0 (not NaN) where ``x == 0``."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).log(), -torch.inf)


def safe_logsumexp(x: torch.Tensor, dims) -> torch.Tensor:
    """``log(sum(exp(x)))`` over ``dims`` with finite gradients when a slice is all ``-inf``.

    Parameters
    ----------
    x : torch.Tensor
        Log values, any shape; ``+inf`` is not allowed.
    dims : int or tuple[int, ...]
        Dimensions to reduce.

    Returns
    -------
    torch.Tensor
        ``x`` with ``dims`` removed.
    """
    if isinstance(dims, int):
        dims = (dims,)
    dims = tuple(dims)
    if not dims:
        return x
    shift = x.detach().amax(dim=dims, keepdim=True)
    shift = shift.masked_fill(~torch.isfinite(shift), 0.0)
    total = (x - shift).exp().sum(dim=dims)
    return safe_log(total) + shift.squeeze(dims)


def reduce(x: torch.Tensor, dims, semiring: str) -> torch.Tensor:
    """Semiring-sum of log table ``x`` over ``dims`` (logsumexp for ``"sum"``, max for ``"max"``)."""
    if isinstance(dims, int):
        dims = (dims,)
    dims = tuple(dims)
    if not dims:
        return x
    if semiring == "sum":
        return safe_logsumexp(x, dims)
    if semiring == "max":
        return x.amax(dim=dims)
    raise ValueError(f"semiring must be one of {SEMIRINGS}, got {semiring!r}")


def _batched(x: torch.Tensor) -> bool:
    """Whether ``x`` is a tensor inside ``torch.func.vmap``, where a value cannot decide a
    branch (``bool()`` of it raises); checked on one element, before any work."""
    try:
        bool(x.detach().reshape(-1)[:1].isnan().any())
    except RuntimeError:
        return True
    return False


def log_matmul(a: torch.Tensor, b: torch.Tensor, semiring: str) -> torch.Tensor:
    """Semiring matrix product of log matrices: ``out[..., i, k] = ⊕_j a[..., i, j] + b[..., j, k]``.

    For ``"sum"`` this is a shifted ``exp`` / BLAS matmul / ``log`` (no ``I·J·K``
    intermediate).  Shifting rows of ``a`` and columns of ``b`` separately can
    underflow when their maxima sit at different ``j`` (values more than ~745 nats
    apart); entries whose product came out 0 are recomputed exactly in the log domain,
    so the result is right over the whole float64 range (under ``torch.func.vmap``,
    which cannot branch on values, every entry is computed in the log domain, an
    ``I·J·K`` intermediate).  For ``"max"`` it broadcasts.

    Parameters
    ----------
    a : torch.Tensor, shape (..., I, J)
    b : torch.Tensor, shape (..., J, K)

    Returns
    -------
    torch.Tensor, shape (..., I, K)
    """
    if semiring == "max":
        return (a.unsqueeze(-1) + b.unsqueeze(-3)).amax(dim=-2)
    if _batched(a) or _batched(b):  # under torch.func.vmap (no data-dependent branch): all in the log domain
        return safe_logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), -2)
    sa = a.detach().amax(dim=-1, keepdim=True)
    sa = sa.masked_fill(~torch.isfinite(sa), 0.0)
    sb = b.detach().amax(dim=-2, keepdim=True)
    sb = sb.masked_fill(~torch.isfinite(sb), 0.0)
    prod = torch.matmul((a - sa).exp(), (b - sb).exp())
    out = safe_log(prod) + sa + sb
    zero = prod == 0
    if bool(zero.any()):  # true zeros or underflow: recompute those entries exactly
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a_e = a.expand(batch + a.shape[-2:])
        b_e = b.expand(batch + b.shape[-2:])
        idx = zero.expand(batch + zero.shape[-2:]).nonzero(as_tuple=True)
        rows = a_e[idx[:-1]]                                  # (n, J)
        cols = b_e.transpose(-1, -2)[idx[:-2] + (idx[-1],)]   # (n, J)
        exact = safe_logsumexp(rows + cols, -1)
        out = torch.index_put(out.expand(batch + out.shape[-2:]), idx, exact)
    return out
