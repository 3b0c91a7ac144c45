"""Proximal gradient minimisation of ``F(x) = f(x) + g(x)``, ``f`` smooth, ``g`` with a cheap prox.

:func:`fista` is FISTA with backtracking (Beck & Teboulle 2009, "A Fast Iterative
Shrinkage-Thresholding Algorithm for Linear Inverse Problems", SIAM J. Imaging Sci. 2(1),
§4, "FISTA with backtracking"), made monotone (their MFISTA, Beck & Teboulle 2009b) by
adaptive restart (O'Donoghue & Candès 2015, "Adaptive Restart for Accelerated Gradient
Schemes", function scheme): when a step would raise ``F`` the momentum is dropped and the
step is redone from the last iterate, where a backtracked prox-gradient step cannot raise
``F``.  Restarting also gives linear convergence near a strongly convex minimum, which the
sparse-coding tests' 1e-5 KKT tolerance needs.

The variable is a list of tensors (blocks); ``f`` is evaluated by the caller (autograd
gives its gradient), and ``prox(blocks, step)`` returns ``argmin_z g(z) + ||z - x||²/(2 step)``
blockwise.  Blocks can be large batches (20 000 codes of a sparse-coding model are one
``(20000, 64)`` block): every operation is a whole-tensor operation.

:func:`soft_threshold` is the prox of ``λ|x - μ|`` (the Laplace prior's negative log
density, Goodfellow et al. 2016, eq. 19.14-19.16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = ["soft_threshold", "ProxResult", "fista", "DivergedError"]

#: With a quadratic ``f``, the carried value and gradient are recomputed exactly every
#: this many iterations.
REFRESH = 50


class DivergedError(FloatingPointError):
    """The smooth part became non-finite at every step size tried (the caller names the
    variable responsible)."""

    def __init__(self, message, blocks):
        super().__init__(message)
        self.blocks = blocks


def soft_threshold(x: torch.Tensor, threshold: torch.Tensor, center=0.0) -> torch.Tensor:
    """``prox`` of ``threshold · |x - center|``: ``center + sign(d) · max(|d| - threshold, 0)``
    with ``d = x - center``, elementwise (broadcasting).  Gives exact zeros of ``d``."""
    d = x - center
    return center + d.sign() * (d.abs() - threshold).clamp_min(0.0)


@dataclass
class ProxResult:
    """Outcome of :func:`fista`.

    Attributes
    ----------
    x : list[torch.Tensor]
        The final iterate (detached), block shapes as given.
    value : float
        ``F(x) = f(x) + g(x)``.
    n_iter : int
    converged : bool
        The prox-gradient residual fell below ``tol``.
    residual : float
        ``max |x - prox(x - s ∇f(x))| / s`` at the last iterate's extrapolation point
        (0 exactly at a minimiser: the composite optimality condition).
    step : float
        The last accepted step size ``s = 1/L``.
    history : list[float]
        ``F`` after each iteration (non-increasing).
    n_eval : int
        Evaluations of ``f``.
    """

    x: list
    value: float
    n_iter: int
    converged: bool
    residual: float
    step: float
    history: list = field(default_factory=list)
    n_eval: int = 0


def _dot(a: list, b: list) -> torch.Tensor:
    if len(a) == 1:
        return torch.dot(a[0].reshape(-1), b[0].reshape(-1))
    return sum((x * y).sum() for x, y in zip(a, b))


def _secant_lipschitz(value_and_grad, x: list, grad: list) -> float:
    """``||∇f(x + δ) - ∇f(x)|| / ||δ||`` along ``δ = -ε ∇f(x)``: a local estimate of the
    gradient's Lipschitz constant (exact for a quadratic along that direction)."""
    gnorm = math.sqrt(float(_dot(grad, grad)))
    if gnorm == 0.0 or not math.isfinite(gnorm):
        return 1.0
    xnorm = math.sqrt(float(_dot(x, x)))
    eps = 1e-3 * max(xnorm, 1.0) / gnorm
    f2, g2 = value_and_grad([a - eps * g for a, g in zip(x, grad)])
    if not bool(torch.isfinite(f2)):
        return 1.0 / eps
    d = [a - b for a, b in zip(g2, grad)]
    L = math.sqrt(float(_dot(d, d))) / (eps * gnorm)
    return L if L > 0 and math.isfinite(L) else 1.0


def fista(smooth: Callable, x0: list, prox: Callable, penalty: Callable, *, step: float | None = None,
          max_iter: int = 1000, tol: float = 1e-6, ftol: float = 0.0, backtrack: float = 0.5,
          grow: float = 1.0, callback: Callable | None = None) -> ProxResult:
    """Minimise ``smooth(x) + penalty(x)`` by monotone FISTA with backtracking (see module docstring).

    Parameters
    ----------
    smooth : callable(list[Tensor]) -> Tensor
        ``f``: a differentiable scalar (built from the blocks with autograd enabled).
        If it has a ``value_and_grad(blocks) -> (Tensor, list[Tensor])`` method, that is
        used instead of autograd; if it has ``hessian_product(d: list) -> list`` (``f``
        quadratic), values and gradients at new points are carried by affinity, one
        Hessian product per iteration.
    x0 : list[torch.Tensor]
        Starting blocks (not modified).
    prox : callable(list[Tensor], float) -> list[Tensor]
        Prox of ``step · g``.
    penalty : callable(list[Tensor]) -> float
        ``g`` (0 for blocks without a non-smooth term).
    step : float, optional
        Initial step size ``1/L`` (default: the inverse of a secant estimate of the
        gradient's Lipschitz constant at ``x0``); backtracking shrinks it by ``backtrack``
        until the quadratic upper bound of Beck & Teboulle's eq. (4.2)-(4.3) holds.
    grow : float
        Each iteration first tries the step enlarged by this factor (default 1: never),
        which lets a too-small step recover at the price of more backtracking.
    max_iter : int
    tol : float
        Stop when the prox-gradient residual (``ProxResult.residual``) is at most ``tol``.
    ftol : float
        Also stop when ``F`` falls by less than ``ftol · (1 + |F|)`` in one step (0: off).
    callback : callable(int, float), optional
        Called with the iteration and ``F`` after each accepted step.

    Returns
    -------
    ProxResult

    Raises
    ------
    DivergedError
        If ``f`` is non-finite at the start, or at every step size down to ``1e-30`` times
        the initial one.
    """
    x = [b.detach().clone() for b in x0]
    dtype = x[0].dtype if x else torch.get_default_dtype()
    slack = 16 * torch.finfo(dtype).eps
    oracle = _Oracle(smooth)
    # a quadratic f (``smooth.hessian_product``) has an affine gradient: f and ∇f at every
    # new point follow from one Hessian product per iteration, no evaluation of f itself
    hess = getattr(smooth, "hessian_product", None)
    f_y, grad_y = oracle.value_and_grad(x)
    if not bool(torch.isfinite(f_y)):
        raise DivergedError(f"the objective is {float(f_y)} at the starting point", x)
    f_x, grad_x = f_y, grad_y
    F_x = float(f_y) + float(penalty(x))
    y, t = x, 1.0
    L = 1.0 / step if step is not None else _secant_lipschitz(oracle.value_and_grad, x, grad_y)
    history: list = []
    converged, residual, n_iter = False, math.inf, 0
    for n_iter in range(1, max_iter + 1):
        p, d, f_p, hd, L = _backtracking_step(oracle, prox, hess, y, f_y, grad_y, L / grow, backtrack, slack)
        residual = max((float(torch.linalg.vector_norm(b, math.inf)) for b in d if b.numel()), default=0.0) * L
        F_p = float(f_p) + float(penalty(p))
        if F_p > F_x and t > 1.0:
            # momentum overshot: restart from the last iterate (O'Donoghue & Candès 2015)
            y, t = x, 1.0
            if hess is not None:
                f_y, grad_y = f_x, grad_x
            else:
                f_y, grad_y = oracle.value_and_grad(y)
            continue
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_next
        F_prev = F_x
        if hess is not None:
            f_next, grad_next, grad_p = _carry_quadratic(f_p, grad_y, hd, p, x, grad_x, beta)
            grad_x, f_x = grad_p, f_p
        y = [torch.lerp(b, a, 1.0 + beta) for a, b in zip(p, x)] if beta > 0 else p  # p + β (p - x)
        x, F_x, t = p, F_p, t_next
        history.append(F_x)
        if callback is not None:
            callback(n_iter, F_x)
        if residual <= tol or (ftol > 0 and F_prev - F_x <= ftol * (1.0 + abs(F_x))):
            converged = True
            break
        if hess is not None and n_iter % REFRESH != 0:
            f_y, grad_y = f_next, grad_next
            continue
        f_y, grad_y = oracle.value_and_grad(y)
        if hess is not None:  # refresh the carried gradient at x too (round-off does not build up)
            f_x, grad_x = oracle.value_and_grad(x)
        if not bool(torch.isfinite(f_y)):  # extrapolated outside the domain: restart
            y, t = x, 1.0
            f_y, grad_y = oracle.value_and_grad(y)
    return ProxResult(x=[b.detach() for b in x], value=F_x, n_iter=n_iter, converged=converged,
                      residual=residual, step=1.0 / L, history=history, n_eval=oracle.n_eval)


class _Oracle:
    """Evaluations of the smooth part ``f`` for :func:`fista`, counted in ``n_eval``.

    ``smooth.value_and_grad`` is used when ``smooth`` has one, else autograd."""

    def __init__(self, smooth: Callable):
        self.smooth = smooth
        self.explicit = getattr(smooth, "value_and_grad", None)
        self.n_eval = 0

    def value_and_grad(self, blocks: list):
        """``(f(blocks), ∇f(blocks))``: a detached scalar and one gradient per block
        (zeros for a block ``f`` does not use)."""
        self.n_eval += 1
        if self.explicit is not None:
            f, grads = self.explicit(blocks)
            return f.detach(), list(grads)
        leaves = [b.detach().requires_grad_(True) for b in blocks]
        with torch.enable_grad():
            f = self.smooth(leaves)
            grads = torch.autograd.grad(f, leaves, allow_unused=True)
        grads = [torch.zeros_like(b) if g is None else g for b, g in zip(blocks, grads)]
        return f.detach(), grads

    def value(self, blocks: list) -> torch.Tensor:
        """``f(blocks)``, detached, without gradient."""
        self.n_eval += 1
        with torch.no_grad():
            return self.smooth(blocks).detach()


def _backtracking_step(oracle: _Oracle, prox: Callable, hess, y: list, f_y, grad_y: list, L: float,
                       backtrack: float, slack: float):
    """One prox-gradient step from ``y``, ``p = prox(y - ∇f(y)/L, 1/L)``, with ``L`` raised
    by ``1/backtrack`` until ``f(p) <= f(y) + ⟨∇f(y), p - y⟩ + (L/2)||p - y||²`` (Beck &
    Teboulle 2009, eq. 4.2-4.3), to a relative round-off ``slack``.

    Returns
    -------
    p : list[torch.Tensor]
    d : list[torch.Tensor]
        ``p - y``.
    f_p : torch.Tensor
        ``f(p)``, by the Taylor expansion when ``hess`` (``f`` quadratic) is given.
    hd : list[torch.Tensor] or None
        ``H d`` (``hess`` only).
    L : float
        The accepted Lipschitz estimate.

    Raises
    ------
    DivergedError
        If no ``L`` up to ``1e30`` times the first one satisfies the bound.
    """
    L_start = L
    while True:
        s = 1.0 / L
        p = prox([torch.add(b, g, alpha=-s) for b, g in zip(y, grad_y)], s)
        d = [a - b for a, b in zip(p, y)]
        hd = None
        if hess is not None:
            hd = hess(d)
            f_p = f_y + _dot(grad_y, d) + 0.5 * _dot(hd, d)
        else:
            f_p = oracle.value(p)
        bound = f_y + _dot(grad_y, d) + 0.5 * L * _dot(d, d)
        if bool(torch.isfinite(f_p)) and float(f_p) <= float(bound) + slack * (1.0 + abs(float(f_y))):
            return p, d, f_p, hd, L
        L = L / backtrack
        if L > 1e30 * L_start:
            raise DivergedError("the objective stays non-finite or above its quadratic bound at every step size", y)


def _carry_quadratic(f_p, grad_y: list, hd: list, p: list, x: list, grad_x: list, beta: float):
    """For a quadratic ``f``, the value and gradient at ``p`` and at the next extrapolation
    point ``p + β (p - x)``, by affinity of the gradient: ``∇f(p) = ∇f(y) + H (p - y)``
    and ``f(p + βe) = f(p) + β⟨∇f(p), e⟩ + (β²/2)⟨He, e⟩`` with ``e = p - x``,
    ``He = ∇f(p) - ∇f(x)``.

    Returns
    -------
    f_next : torch.Tensor
    grad_next : list[torch.Tensor]
    grad_p : list[torch.Tensor]
    """
    grad_p = [g + h for g, h in zip(grad_y, hd)]
    e = [a - b for a, b in zip(p, x)]
    he = [a - b for a, b in zip(grad_p, grad_x)]      # H (p - x), by affinity
    f_next = f_p + beta * _dot(grad_p, e) + 0.5 * beta * beta * _dot(he, e)
    grad_next = [torch.add(g, h, alpha=beta) for g, h in zip(grad_p, he)] if beta > 0 else grad_p
    return f_next, grad_next, grad_p
