"""The mode of the log density in unconstrained space and its Hessian: L-BFGS with a
strong-Wolfe line search (Nocedal & Wright 2006, Alg. 7.5; torch's implementation), then
Newton steps with backtracking until the Newton decrement ``gᵀH⁻¹g`` is below ``tol`` — a
stopping rule that does not depend on the units the data are in (Boyd & Vandenberghe 2004,
§9.5.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Mode", "find_mode", "negative_hessian"]


@dataclass
class Mode:
    """A mode ``z*`` of ``log p`` in unconstrained space.

    Attributes
    ----------
    z : torch.Tensor, shape (D,)
    log_density : float
        ``log p(h(z*), v) + log|det ∂h/∂z|`` (nats).
    precision : torch.Tensor, shape (D, D)
        ``-∇² log p`` at ``z*`` (the Laplace approximation's precision).
    chol : torch.Tensor, shape (D, D)
        Its lower Cholesky factor.
    decrement : float
        The Newton decrement ``gᵀH⁻¹g`` at ``z*`` (nats; 0 at an exact mode).
    iterations : int
        L-BFGS iterations plus Newton steps.
    evaluations : int
        Evaluations of the log density and its gradient.
    converged : bool
        ``decrement <= tol``.
    """

    z: torch.Tensor
    log_density: float
    precision: torch.Tensor
    chol: torch.Tensor
    decrement: float
    iterations: int
    evaluations: int
    converged: bool

    @property
    def log_mass(self) -> float:
        """Laplace's estimate of ``log p(v)`` from this mode:
        ``log p(z*) + D/2 log 2π - ½ log det H`` (nats) — how much mass the mode holds."""
        d = self.z.numel()
        return self.log_density + 0.5 * d * math.log(2 * math.pi) - float(torch.log(torch.diagonal(self.chol)).sum())


def negative_hessian(potential, z: torch.Tensor) -> torch.Tensor:
    """``-∇² log p`` at ``z`` ``(D,)``, shape ``(D, D)``, symmetrised (autograd)."""
    z = z.detach().clone()
    with torch.enable_grad():
        h = torch.autograd.functional.hessian(lambda x: -potential.log_density(x), z)
    return 0.5 * (h + h.T)


def _lbfgs(potential, z0, max_iter, counter):
    """L-BFGS with a strong Wolfe line search from ``z0``; where it steps to a point with
    no density (non-finite, or the model refuses the value: an ordered vector whose
    increments overflowed), it is run again from ``z0`` with steps a tenth as long, then
    the failure is raised (FloatingPointError)."""
    failure = None
    for lr in (1.0, 0.1):
        z = z0.detach().clone().requires_grad_(True)
        opt = torch.optim.LBFGS([z], lr=lr, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-12, tolerance_change=1e-14)

        def closure():
            opt.zero_grad()
            counter[0] += 1
            try:
                value = -potential.log_density(z)
            except (ValueError, RuntimeError) as e:
                if not bool(torch.isfinite(z.detach()).all()):   # the iterate itself overflowed: say so
                    raise FloatingPointError(
                        "the optimiser's iterate became NaN or infinite (the log density or its gradient "
                        "overflowed: often a scale running to 0 where the density grows without bound, as in a "
                        "centred hierarchy whose group scale can shrink to 0)") from e
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise FloatingPointError(f"the model has no density at a point the optimiser tried: {first}") from e
            if not torch.isfinite(value):
                raise FloatingPointError("non-finite log density")
            value.backward()
            return value

        try:
            with torch.enable_grad():
                opt.step(closure)
        except FloatingPointError as e:
            failure = e
            continue
        return z.detach(), int(opt.state[z].get("n_iter", 0))
    raise failure


def find_mode(potential, z0: torch.Tensor, *, max_iter: int = 1000, tol: float = 1e-8, newton_steps: int = 20) -> Mode:
    """Maximise ``potential.log_density`` from ``z0`` and take the Hessian there.

    Raises
    ------
    FloatingPointError
        The log density became non-finite along the way.
    ValueError
        ``-∇² log p`` is not positive definite at the point found (a saddle, a ridge, or
        a density that grows without bound: no Laplace approximation there).
    """
    counter = [0]
    z, iters = _lbfgs(potential, z0, max_iter, counter)
    decrement = math.inf
    precision = chol = None
    for step_no in range(newton_steps + 1):
        value, grad = potential.log_density_and_grad(z)
        counter[0] += 1
        precision = negative_hessian(potential, z)
        chol, info = torch.linalg.cholesky_ex(precision)
        if int(info) != 0:
            raise ValueError("the negative Hessian of the log density is not positive definite at the point found")
        step = torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
        decrement = float(grad @ step)
        if decrement <= tol or not math.isfinite(decrement) or step_no == newton_steps:
            break
        t = 1.0
        while t > 1e-10:  # backtracking (Armijo): the step must raise the log density
            new = potential.log_density_and_grad(z + t * step)[0]
            counter[0] += 1
            if torch.isfinite(new) and float(new) >= float(value) + 1e-4 * t * decrement:
                break
            t *= 0.5
        else:
            break  # no ascent along the Newton direction: round-off level
        z = z + t * step
        iters += 1
    return Mode(z, float(value), precision, chol, decrement, iters, counter[0], decrement <= tol)
