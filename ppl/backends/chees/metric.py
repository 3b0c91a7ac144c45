"""The metric of ChEES-HMC as a linear change of coordinates ``z = x Lᵀ``.

HMC with mass matrix ``M = (L Lᵀ)⁻¹`` on ``z`` is plain HMC with the identity mass on
``x = z L⁻ᵀ`` (Neal 2011, "MCMC using Hamiltonian dynamics", §4.1: a linear transformation
of the coordinates is the same as a change of mass matrix), so the sampler runs in ``x``
and a new metric is a new ``L``.  ``L`` is a vector (a diagonal metric) or a
lower-triangular matrix (a dense one).  Each warmup window is estimated in the current
``x`` (where the target is already roughly isotropic) and composed onto the previous map.

The estimate minimises the Fisher divergence of a Gaussian fit to the draws and their
gradients (Seyboldt, Carlson & Carpenter 2023, "Preconditioning Hamiltonian Monte Carlo
by minimizing Fisher divergence", the adaptation of nutpie): for a diagonal metric
``sqrt(var(x) / var(∇ log p))`` per coordinate, for a dense one the geometric mean of
``Cov(x)`` and ``Cov(∇ log p)⁻¹`` (their Theorem: ``Σ = A⁻½ (A½ B A½)½ A⁻½`` with
``A = Cov(∇)``, ``B = Cov(x)``), which is the posterior covariance for a Gaussian target
whether or not the chains have reached it.  It is used only with at least
:data:`ROWS_PER_DIM` rows per coordinate, and not shrunk towards its diagonal: on a
posterior whose coordinates correlate at 0.999 (a regression on a predictor in the
hundreds) even 5% of the diagonal multiplies the variance of the narrow direction fiftyfold
and the step size falls with it; the eigenvalues are floored instead.  Measured on the
reference models (tests/reference_models.py, 16 chains, seed 0): half the gradient
evaluations of the diagonal metric on the regression and the AR(2) series, about the same
on eight schools and the logistic regression.
"""

from __future__ import annotations

import torch

__all__ = ["Metric", "DENSE_MAX_DIM", "ROWS_PER_DIM", "dense_estimate"]

#: ``metric="auto"`` is dense up to this many unconstrained coordinates (Stan and Pyro's
#: ``full_mass`` are dense at any size; beyond ~100 the ``D²`` estimate needs more draws
#: than a warmup window of a few hundred iterations gives).  NUTS' own limit
#: (:data:`ppl.backends.nuts.sampler.DENSE_MAX_DIM`, 50) is lower: its one chain's window
#: has a sixteenth of the rows that ChEES' lockstep chains give.
DENSE_MAX_DIM = 100

#: A dense window estimate needs this many rows (chains × iterations) per coordinate;
#: with fewer the window's update is diagonal.
ROWS_PER_DIM = 10


class Metric:
    """``z = x Lᵀ``: ``factor`` is ``L``, shape ``(D,)`` (diagonal) or ``(D, D)`` (lower
    triangular, dense).  The inverse mass matrix on ``z`` is ``L Lᵀ``."""

    def __init__(self, factor: torch.Tensor):
        self.factor = factor

    @property
    def dense(self) -> bool:
        return self.factor.dim() == 2

    def to_z(self, x: torch.Tensor) -> torch.Tensor:
        """Rows ``x`` ``(..., D)`` -> ``z`` ``(..., D)``."""
        return x @ self.factor.T if self.dense else x * self.factor

    def to_x(self, z: torch.Tensor) -> torch.Tensor:
        """Rows ``z`` ``(..., D)`` -> ``x`` ``(..., D)`` (a triangular solve when dense)."""
        if not self.dense:
            return z / self.factor
        flat = z.reshape(-1, z.shape[-1])
        return torch.linalg.solve_triangular(self.factor, flat.T, upper=False).T.reshape(z.shape)

    def grad_x(self, grad_z: torch.Tensor) -> torch.Tensor:
        """The gradient in ``x`` of a function whose gradient in ``z`` is ``grad_z`` (rows)."""
        return grad_z @ self.factor if self.dense else grad_z * self.factor

    def compose(self, inner: "Metric") -> "Metric":
        """The map ``z = (x' Cᵀ) Lᵀ`` of ``inner`` (``C``, estimated in this metric's ``x``) then this one."""
        if not self.dense and not inner.dense:
            return Metric(self.factor * inner.factor)
        return Metric(_matrix(self.factor) @ _matrix(inner.factor))

    def inverse_mass(self) -> torch.Tensor:
        """The diagonal of the inverse mass matrix ``L Lᵀ`` (the posterior variances it
        assumes), shape ``(D,)``."""
        return self.factor.pow(2).sum(-1) if self.dense else self.factor.pow(2)


def _matrix(factor: torch.Tensor) -> torch.Tensor:
    return factor if factor.dim() == 2 else torch.diag(factor)


def _sym_power(a: torch.Tensor, power: float, floor: float) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(a)
    vals = vals.clamp_min(floor * vals.max().clamp_min(floor))
    return (vecs * vals.pow(power)) @ vecs.T


def dense_estimate(x: torch.Tensor, g: torch.Tensor, diag_var: torch.Tensor) -> torch.Tensor | None:
    """A lower-triangular ``C`` with ``C Cᵀ`` the Fisher-divergence covariance estimate (see
    the module docstring) from rows ``x`` and their gradients ``g`` (both ``(n, D)``);
    ``diag_var`` ``(D,)`` is the window's diagonal estimate, which scales the problem
    first.  None where the rows are too few or the estimate is not positive definite."""
    n, d = x.shape
    if n < ROWS_PER_DIM * d or d < 2:
        return None
    s = diag_var.sqrt()
    cx, cg = torch.cov((x / s).T), torch.cov((g * s).T)
    if not (torch.isfinite(cx).all() and torch.isfinite(cg).all()) or float(torch.diagonal(cg).min()) <= 0:
        return None
    half = _sym_power(cg, 0.5, 1e-10)
    inv_half = _sym_power(cg, -0.5, 1e-10)
    sigma = inv_half @ _sym_power(half @ cx @ half, 0.5, 1e-12) @ inv_half
    sigma = 0.5 * (sigma + sigma.T) * s[:, None] * s[None, :]
    chol, info = torch.linalg.cholesky_ex(sigma)
    return chol if int(info) == 0 and bool(torch.isfinite(chol).all()) else None
