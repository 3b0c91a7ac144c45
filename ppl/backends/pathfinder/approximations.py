"""The normal approximations along an L-BFGS path (Zhang, Carpenter, Gelman & Vehtari
2022: the diagonal-plus-low-rank inverse-Hessian estimate and BFGS-Sample).

At iterate ``θ = θ^(l)`` with gradient ``g = ∇log p(θ)``, the L-BFGS estimate of the
inverse Hessian of ``-log p`` from the last ``m <= J`` accepted pairs ``S = [s ...]``,
``Y = [y ...]`` (columns oldest first, ``y`` the change of ``∇(-log p)``) is, in the compact
form of Byrd, Nocedal & Schnabel (1994),

    Σ = diag(α) + β γ βᵀ,        β = [diag(α) Y, S]                          (D × 2m)
    γ = [[0, -R⁻¹], [-R⁻ᵀ, R⁻ᵀ (E + Yᵀ diag(α) Y) R⁻¹]]                       (2m × 2m)

with ``R`` the upper triangle of ``SᵀY`` and ``E`` its diagonal; the diagonal ``α`` starts
at 1 and takes every accepted pair through the diagonal BFGS update of Gilbert &
Lemaréchal (1989, eq. 4.9),

    α ← (yᵀs) / (a/α + y² - (a/c)(s/α)²),     a = yᵀ diag(α) y,  c = sᵀ diag(α)⁻¹ s

(elementwise).  The approximation is ``q = N(μ, Σ)`` with ``μ = θ + Σ g`` (a quasi-Newton
step from θ).  Draws use a thin QR of ``diag(α)^(-1/2) β = Q R̃`` and the Cholesky factor
``L L ᵀ = I + R̃ γ R̃ᵀ``:

    φ = μ + diag(α)^(1/2) (Q (L - I) Qᵀ u + u),   u ~ N(0, I_D)
    log q(φ) = -½ (log det Σ + uᵀu + D log 2π),   log det Σ = Σ log α + 2 Σ log diag L

so a draw and its density cost ``O(D m)`` and no ``D × D`` matrix is formed.
"""

from __future__ import annotations

import math

import torch

from ...errors import NumericalError
from .lbfgs import curvature_ok

__all__ = ["diagonal_update", "inverse_hessian_history", "NormalApproximation", "mixture_log_prob"]


def diagonal_update(alpha: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The diagonal inverse-Hessian estimate after the pair ``(s, y)`` (Gilbert &
    Lemaréchal 1989, eq. 4.9, as in Zhang et al. 2022): the inverse of the diagonal of the
    BFGS update of ``(a/b) diag(α)⁻¹`` (see the module docstring); positive when
    ``yᵀs > 0``.  All shapes ``(D,)``."""
    a = float((y * alpha * y).sum())
    b = float(y @ s)
    c = float((s * s / alpha).sum())
    return b / (a / alpha + y * y - (a / c) * (s / alpha) ** 2)


def inverse_hessian_history(z: torch.Tensor, grad: torch.Tensor, history_size: int):
    """The factors of the inverse-Hessian estimate at each iterate of an L-BFGS path.

    Parameters
    ----------
    z, grad : torch.Tensor, shape (L + 1, D)
        The iterates ``θ^(0:L)`` and ``∇log p`` at each.
    history_size : int
        ``J``: the most pairs kept.

    Yields
    ------
    tuple
        For ``l = 1 .. L``: ``(alpha (D,), S (D, m), Y (D, m))`` with the ``m <= J``
        newest pairs that met the curvature condition, oldest first; ``y`` is the change
        of ``∇(-log p)``.  Pairs that fail it leave the estimate as it was.
    """
    alpha = torch.ones_like(z[0])
    s_hist, y_hist = [], []
    for l in range(1, z.shape[0]):
        s = z[l] - z[l - 1]
        y = grad[l - 1] - grad[l]
        if curvature_ok(s, y):
            s_hist, y_hist = (s_hist + [s])[-history_size:], (y_hist + [y])[-history_size:]
            new = diagonal_update(alpha, s, y)
            if bool(torch.isfinite(new).all()) and bool((new > 0).all()):
                alpha = new
        empty = z.new_zeros((z.shape[1], 0))
        yield (alpha, torch.stack(s_hist, 1) if s_hist else empty, torch.stack(y_hist, 1) if y_hist else empty)


class NormalApproximation:
    """``q = N(μ, Σ)`` at one iterate of the path (see the module docstring).

    Parameters
    ----------
    theta : torch.Tensor, shape (D,)
        The iterate ``θ``.
    grad : torch.Tensor, shape (D,)
        ``∇log p(θ)``.
    alpha : torch.Tensor, shape (D,)
        The positive diagonal of the estimate.
    S, Y : torch.Tensor, shape (D, m)
        The accepted pairs, oldest first (``m`` may be 0: then ``Σ = diag(α)``).

    Attributes
    ----------
    mean : torch.Tensor, shape (D,)
        ``μ = θ + Σ ∇log p(θ)``.
    log_det : float
        ``log det Σ``.

    Raises
    ------
    NumericalError
        When ``I + R̃ γ R̃ᵀ`` is not positive definite in floating point, or ``μ`` is not
        finite.
    """

    def __init__(self, theta, grad, alpha, S, Y):
        self.alpha, self.dim = alpha, int(theta.shape[0])
        self.sqrt_alpha = alpha.sqrt()
        m = S.shape[1]
        if m:
            sy = S.T @ Y
            r_inv = torch.linalg.solve_triangular(torch.triu(sy), torch.eye(m, dtype=sy.dtype, device=sy.device),
                                                  upper=True)
            ay = alpha[:, None] * Y
            middle = r_inv.T @ (torch.diag(torch.diagonal(sy)) + Y.T @ ay) @ r_inv
            zero = torch.zeros_like(r_inv)
            self.beta = torch.cat([ay, S], 1)
            self.gamma = torch.cat([torch.cat([zero, -r_inv], 1), torch.cat([-r_inv.T, middle], 1)], 0)
            self.q, r_tilde = torch.linalg.qr(self.beta / self.sqrt_alpha[:, None], mode="reduced")
            inner = torch.eye(r_tilde.shape[0], dtype=sy.dtype, device=sy.device) + r_tilde @ self.gamma @ r_tilde.T
            self.chol, info = torch.linalg.cholesky_ex(0.5 * (inner + inner.T))
            if int(info) != 0 or not bool(torch.isfinite(self.chol).all()):
                raise NumericalError("the inverse-Hessian estimate is not positive definite in floating point")
        else:
            self.beta = self.gamma = self.q = self.chol = None
        self.mean = theta + self.apply(grad)
        if not bool(torch.isfinite(self.mean).all()):
            raise NumericalError("the mean of the normal approximation is not finite")
        chol_part = 2.0 * float(torch.log(torch.diagonal(self.chol)).sum()) if m else 0.0
        self.log_det = float(torch.log(alpha).sum()) + chol_part

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``Σ v`` for ``v`` ``(D,)`` (or ``(n, D)`` rows)."""
        out = self.alpha * v
        if self.beta is not None:
            out = out + ((v @ self.beta) @ self.gamma.T) @ self.beta.T
        return out

    def covariance(self) -> torch.Tensor:
        """The dense ``Σ``, shape ``(D, D)`` (for checks on small problems)."""
        return self.apply(torch.eye(self.dim, dtype=self.alpha.dtype, device=self.alpha.device))

    def _scale(self, u: torch.Tensor) -> torch.Tensor:
        """``C u`` row-wise for ``u`` ``(n, D)``, where ``C Cᵀ = Σ``."""
        out = u
        if self.q is not None:
            eye = torch.eye(self.chol.shape[0], dtype=u.dtype, device=u.device)
            out = u + ((u @ self.q) @ (self.chol - eye).T) @ self.q.T
        return self.sqrt_alpha * out

    def _log_q(self, u: torch.Tensor) -> torch.Tensor:
        return -0.5 * (self.log_det + (u * u).sum(-1) + self.dim * math.log(2 * math.pi))

    def sample(self, n: int, generator: torch.Generator):
        """``n`` draws and their log densities (BFGS-Sample, Zhang et al. 2022).

        Parameters
        ----------
        n : int
        generator : torch.Generator
            A CPU generator: the standard normals are drawn on the CPU and moved to the
            approximation's device.

        Returns
        -------
        tuple
            ``(z (n, D), log q(z) (n,))``, ``log q`` in nats.
        """
        u = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        u = u.to(dtype=self.alpha.dtype, device=self.alpha.device)
        return self.mean + self._scale(u), self._log_q(u)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log q(z)`` for rows ``z`` ``(n, D)``, shape ``(n,)`` (nats): ``u = C⁻¹(z - μ)``
        with ``C⁻¹ = (I - QQᵀ + Q L⁻¹ Qᵀ) diag(α)^(-1/2)``."""
        w = (z - self.mean) / self.sqrt_alpha
        if self.q is not None:
            qw = w @ self.q
            solved = torch.linalg.solve_triangular(self.chol, qw.T, upper=False).T
            w = w - qw @ self.q.T + solved @ self.q.T
        return self._log_q(w)


def mixture_log_prob(approximations: list, z: torch.Tensor) -> torch.Tensor:
    """``log q̄(z)`` of the equal-weight mixture ``q̄ = (1/R) Σ_r q_r`` of ``R``
    approximations, for rows ``z`` ``(n, D)``; shape ``(n,)``, nats.

    Multi-path Pathfinder draws ``M`` from each path's chosen ``q_r``: a stratified draw
    of ``q̄``.  Weighing every draw by ``p / q̄`` (the balance heuristic of multiple
    importance sampling; Veach & Guibas 1995, Owen & Zhou 2000) rather than by ``p / q_r``
    of its own path keeps the weights bounded by ``R p / q_r`` and their Pareto tail
    honest when the paths' approximations differ in width.
    """
    logs = torch.stack([q.log_prob(z) for q in approximations])
    return torch.logsumexp(logs, 0) - math.log(len(approximations))
