"""Numerical detection of a smooth objective that is a quadratic form shared by rows.

Many MAP problems have a smooth part ``f(X) = c + Σ_r (½ x_r A x_rᵀ - b_r x_rᵀ)`` over the
rows ``x_r`` of a ``(R, K)`` block with one ``K × K`` matrix ``A`` for every row: a
Gaussian likelihood whose mean is linear in the block (sparse codes given a dictionary,
eq. 19.14-19.16 of Goodfellow et al. 2016; the dictionary's rows given the codes).
:func:`shared_quadratic` finds ``A`` from Hessian-vector products at random directions
(``H V = V A`` for every row when the form is shared), then *verifies* the model exactly:
value and gradient at a random far point must match the quadratic to round-off.  Only then
is the returned function used in place of the model; otherwise ``None`` and the caller
keeps evaluating the model.

The quadratic evaluates with two ``(R, K) × (K, K)`` products instead of a run of the
model, and its gradient's Lipschitz constant is exactly ``λ_max(A)``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["SharedQuadratic", "shared_quadratic", "dense_quadratic"]

#: At most this many Hessian-vector products are spent on finding ``A``.
MAX_PRODUCTS = 8


class SharedQuadratic:
    """``f(x) = f0 + <g0, d> + ½ <d A, d>`` with ``d = x - x0`` (a verified model of the
    objective; see module docstring).

    Attributes
    ----------
    A : torch.Tensor, shape (K, K)
        Symmetric; the Hessian of every row.
    lipschitz : float
        ``λ_max(A)`` (0 if ``A`` is negative semi-definite: then ``f`` is concave along some
        direction and the caller should not use it).
    """

    def __init__(self, x0: torch.Tensor, f0: torch.Tensor, g0: torch.Tensor, A: torch.Tensor):
        self.shape = x0.shape
        self.x0 = x0.reshape(-1, A.shape[0])
        self.f0 = f0
        self.g0 = g0.reshape(-1, A.shape[0])
        self.A = A
        self.lipschitz = float(torch.linalg.eigvalsh(A).max().clamp_min(0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        d = x.reshape(self.x0.shape) - self.x0
        return self.f0 + (d * (self.g0 + 0.5 * (d @ self.A))).sum()

    def agrees(self, fun: Callable, x: torch.Tensor) -> bool:
        """Whether ``fun(x)`` equals the quadratic's value at ``x`` to round-off (the
        a-posteriori check of an unverified model)."""
        with torch.no_grad():
            f, q = fun(x), self(x)
        d = (x.reshape(self.x0.shape) - self.x0)
        spread = float(f.abs()) + float(self.f0.abs()) + float((self.g0 * d).abs().sum()) + 1.0
        return bool(torch.isfinite(f)) and abs(float(f - q)) <= math.sqrt(torch.finfo(x.dtype).eps) * spread

    def rows(self, sl: slice) -> "SharedQuadratic":
        """The quadratic of rows ``sl`` alone (up to a constant: ``f0`` is 0), shape ``(n, K)``."""
        part = SharedQuadratic.__new__(SharedQuadratic)
        part.x0, part.g0, part.A, part.lipschitz = self.x0[sl], self.g0[sl], self.A, self.lipschitz
        part.f0 = torch.zeros((), dtype=self.A.dtype, device=self.A.device)
        part.shape = part.x0.shape
        return part

    def hessian_product(self, d: torch.Tensor) -> torch.Tensor:
        """``d A`` row by row, shape of ``d``."""
        return (d.reshape(self.x0.shape) @ self.A).reshape(d.shape)

    def value_and_grad(self, x: torch.Tensor):
        """``(f(x), ∇f(x))`` with one ``(R, K) × (K, K)`` product (no autograd)."""
        d = x.reshape(self.x0.shape) - self.x0
        dA = d @ self.A
        grad = self.g0 + dA
        return self.f0 + (d * (grad - 0.5 * dA)).sum(), grad.reshape(self.shape)


def shared_quadratic(fun: Callable, x0: torch.Tensor, k: int, generator=None,
                     verify: bool = True) -> SharedQuadratic | None:
    """A verified :class:`SharedQuadratic` model of ``fun`` around ``x0``, or ``None``.

    Parameters
    ----------
    fun : callable(Tensor) -> scalar Tensor
        Differentiable twice (autograd).
    x0 : torch.Tensor
        A block whose numel is a multiple of ``k``; rows are ``x0.reshape(-1, k)``.
    k : int
        Row length ``K``.
    generator : torch.Generator, optional
        For the random directions.
    verify : bool
        Check value and gradient at a random far point (default).  A caller that has
        verified the same function structure before (the same block of the same model,
        other values of the rest) may skip it and check :meth:`SharedQuadratic.agrees`
        at its answer instead.

    Returns
    -------
    SharedQuadratic or None
        ``None`` when ``fun`` is not (to round-off) a shared quadratic, when it is not
        convex, or when finding ``A`` would take more than :data:`MAX_PRODUCTS` products.
    """
    rows = x0.numel() // k
    if rows * k != x0.numel() or k < 1:
        return None
    n_products = math.ceil(k / rows)
    if n_products > MAX_PRODUCTS:
        return None
    x = x0.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        f0 = fun(x)
        (g0,) = torch.autograd.grad(f0, x, create_graph=True)
        vs, hvs = [], []
        for i in range(n_products):
            v = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
            (hv,) = torch.autograd.grad(g0, x, grad_outputs=v, retain_graph=i < n_products - 1, allow_unused=True)
            if hv is None:
                return None
            vs.append(v.reshape(-1, k))
            hvs.append(hv.detach().reshape(-1, k))
    V, HV = torch.cat(vs), torch.cat(hvs)
    try:
        A = torch.linalg.lstsq(V, HV).solution
    except RuntimeError:
        return None
    A = 0.5 * (A + A.T)
    f0, g0 = f0.detach(), g0.detach()
    model = SharedQuadratic(x0.detach(), f0, g0, A)
    if model.lipschitz <= 0:
        return None
    if not verify:
        return model
    # verification at a random point far from x0: value and gradient must match
    scale = float(x0.detach().abs().max().clamp_min(1.0))
    x1 = (x0.detach() + scale * torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator))
    x1 = x1.requires_grad_(True)
    with torch.enable_grad():
        f1 = fun(x1)
        (g1,) = torch.autograd.grad(f1, x1)
        q1 = model(x1)
        (gq,) = torch.autograd.grad(q1, x1)
    rtol = math.sqrt(torch.finfo(x0.dtype).eps)
    spread = float(f1.detach().abs()) + float(f0.abs()) + float((g0 * (x1.detach() - x0)).abs().sum()) + 1.0
    if not bool(torch.isfinite(f1)) or abs(float(f1.detach() - q1.detach())) > rtol * spread:
        return None
    if float((g1 - gq).norm()) > rtol * (float(g1.norm()) + float(gq.norm()) + 1.0):
        return None
    return model



def dense_quadratic(fun: Callable, x0: torch.Tensor, max_dim: int = 4096, generator=None):
    """``f(x) = f0 + g0ᵀ(x - x0) + ½ (x - x0)ᵀ H (x - x0)`` for a vector ``x0`` of at most
    ``max_dim`` entries: ``(f0, g0, H)`` from one gradient and ``n`` Hessian-vector products
    (columns of ``H``), verified at a random far point like :func:`shared_quadratic`;
    ``None`` if ``fun`` is not a quadratic to round-off or ``x0`` is too long.

    Returns
    -------
    (f0, g0, H) : (Tensor (), Tensor (n,), Tensor (n, n)) or None
    """
    n = x0.numel()
    if x0.dim() != 1 or n > max_dim:
        return None
    x = x0.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        f0 = fun(x)
        (g0,) = torch.autograd.grad(f0, x, create_graph=True)
        if not g0.requires_grad:  # linear: zero Hessian
            H = torch.zeros(n, n, dtype=x0.dtype, device=x0.device)
        else:
            eye = torch.eye(n, dtype=x0.dtype, device=x0.device)
            cols = [torch.autograd.grad(g0, x, grad_outputs=eye[i], retain_graph=i < n - 1, allow_unused=True)[0]
                    for i in range(n)]
            H = torch.stack([torch.zeros(n, dtype=x0.dtype, device=x0.device) if c is None else c for c in cols], 1)
    f0, g0, H = f0.detach(), g0.detach(), 0.5 * (H.detach() + H.detach().T)
    scale = float(x0.detach().abs().max().clamp_min(1.0))
    d = scale * torch.randn(n, dtype=x0.dtype, device=x0.device, generator=generator)
    x1 = (x0.detach() + d).requires_grad_(True)
    with torch.enable_grad():
        f1 = fun(x1)
        (g1,) = torch.autograd.grad(f1, x1)
    q1 = f0 + g0 @ d + 0.5 * d @ (H @ d)
    gq = g0 + H @ d
    rtol = math.sqrt(torch.finfo(x0.dtype).eps)
    spread = float(f1.detach().abs()) + float(f0.abs()) + float((g0 * d).abs().sum()) + 1.0
    if not bool(torch.isfinite(f1)) or abs(float(f1.detach() - q1)) > rtol * spread:
        return None
    if float((g1 - gq).norm()) > rtol * (float(g1.norm()) + float(gq.norm()) + 1.0):
        return None
    return f0, g0, H
