"""L-BFGS on ``f(z) = -log p(z)`` in unconstrained space, keeping the whole optimisation
path: the first step of Pathfinder (Zhang, Carpenter, Gelman & Vehtari 2022, Algorithm 1,
line 1), whose iterates ``θ^(0:L)`` and gradients ``∇log p(θ^(0:L))`` define the normal
approximations of :mod:`ppl.backends.pathfinder.approximations`.

The search direction is the two-loop recursion over the last ``J`` accepted pairs
``s = θ^(l) - θ^(l-1)``, ``y = ∇f(θ^(l)) - ∇f(θ^(l-1))`` with ``H₀ = (sᵀy / yᵀy) I``
(Nocedal & Wright 2006, Algorithm 7.4); a pair enters the history only when it meets the
curvature condition ``sᵀy > ε ‖y‖²`` (as in Zhang et al. 2022's inverse-Hessian estimate),
which keeps the estimate positive definite.  Step lengths come from a line search for the strong Wolfe conditions
(Nocedal & Wright 2006, Algorithms 3.5 and 3.6, with safeguarded cubic interpolation); a
trial point where the density or its gradient is not finite counts as a step too long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["CURVATURE_EPS", "Objective", "LBFGSPath", "curvature_ok", "two_loop_direction",
           "wolfe_line_search", "lbfgs_path"]

#: ε of the curvature condition ``sᵀy > ε ‖y‖²`` (float64 machine epsilon).
CURVATURE_EPS = 2.2e-16


def curvature_ok(s: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether the pair ``(s, y)`` (each shape ``(D,)``) meets ``sᵀy > ε ‖y‖²``, ε =
    :data:`CURVATURE_EPS` (pairs that fail it are skipped, as in Zhang et al. 2022)."""
    sy = float(s @ y)
    return math.isfinite(sy) and sy > CURVATURE_EPS * float(y @ y)


class Objective:
    """``f(z) = -log p(z)`` and its gradient from a ``(log p, ∇log p)`` function,
    counting the evaluations.

    Parameters
    ----------
    log_density_and_grad : callable
        ``z`` ``(D,)`` -> ``(log p(z), ∇log p(z))`` (a scalar and a ``(D,)`` tensor), e.g.
        :meth:`Potential.log_density_and_grad <ppl.backends.common.potential.Potential.log_density_and_grad>`.

    Attributes
    ----------
    evaluations : int
        Gradient evaluations so far.
    """

    def __init__(self, log_density_and_grad):
        self.fn = log_density_and_grad
        self.evaluations = 0

    def __call__(self, z: torch.Tensor):
        """``(f, ∇f)`` at ``z`` ``(D,)``: a float and a ``(D,)`` tensor; ``(inf, None)``
        where the density or its gradient is not finite or the model fails to evaluate."""
        self.evaluations += 1
        try:
            value, grad = self.fn(z)
        except (ValueError, RuntimeError, ZeroDivisionError, OverflowError):
            return math.inf, None
        f = -float(value)
        if not math.isfinite(f) or not bool(torch.isfinite(grad).all()):
            return math.inf, None
        return f, -grad


@dataclass
class _Trial:
    a: float
    f: float
    g: torch.Tensor | None
    dphi: float

    @property
    def finite(self) -> bool:
        return self.g is not None and math.isfinite(self.f) and math.isfinite(self.dphi)


def _trial(objective, z, d, a) -> _Trial:
    f, g = objective(z + a * d)
    return _Trial(a, f, g, float(g @ d) if g is not None else math.nan)


def _interpolate(lo: _Trial, hi: _Trial) -> float:
    """The minimiser of the cubic through ``lo`` and ``hi`` (values and slopes; Nocedal &
    Wright 2006, eq. 3.59), bisection when it is undefined or within 10% of an end."""
    mid = 0.5 * (lo.a + hi.a)
    if not (lo.finite and hi.finite) or lo.a == hi.a:
        return mid
    d1 = lo.dphi + hi.dphi - 3.0 * (lo.f - hi.f) / (lo.a - hi.a)
    disc = d1 * d1 - lo.dphi * hi.dphi
    if disc < 0:
        return mid
    d2 = math.copysign(math.sqrt(disc), hi.a - lo.a)
    denom = hi.dphi - lo.dphi + 2.0 * d2
    if denom == 0:
        return mid
    a = hi.a - (hi.a - lo.a) * (hi.dphi + d2 - d1) / denom
    left, right = min(lo.a, hi.a), max(lo.a, hi.a)
    margin = 0.1 * (right - left)
    return a if math.isfinite(a) and left + margin <= a <= right - margin else mid


def _zoom(objective, z, d, f0, dphi0, lo, hi, c1, c2, budget):
    """Nocedal & Wright 2006, Algorithm 3.6: shrink ``[lo, hi]`` (``lo`` meets the
    sufficient-decrease condition) to a strong-Wolfe step."""
    for _ in range(budget):
        t = _trial(objective, z, d, _interpolate(lo, hi))
        if not t.finite or t.f > f0 + c1 * t.a * dphi0 or t.f >= lo.f:
            hi = t
        else:
            if abs(t.dphi) <= -c2 * dphi0:
                return t
            if t.dphi * (hi.a - lo.a) >= 0:
                hi = lo
            lo = t
        if abs(hi.a - lo.a) <= 1e-14 * max(1.0, abs(lo.a)):
            break
    return lo if lo.a > 0 else None


def wolfe_line_search(objective, z, f0, g0, d, step, *, c1=1e-4, c2=0.9, max_evals=40):
    """A step length along ``d`` meeting the strong Wolfe conditions

        f(z + a d) <= f(z) + c₁ a ∇f(z)ᵀd,   |∇f(z + a d)ᵀd| <= c₂ |∇f(z)ᵀd|

    (Nocedal & Wright 2006, Algorithm 3.5: the trial step doubles until a bracket is found,
    then :func:`_zoom`).

    Parameters
    ----------
    objective : Objective
    z, g0, d : torch.Tensor, shape (D,)
        The point, ``∇f(z)`` and a descent direction (``g0ᵀd < 0``).
    f0 : float
        ``f(z)``.
    step : float
        The first trial step length.
    c1, c2 : float
        The Wolfe constants, ``0 < c1 < c2 < 1``.
    max_evals : int
        Most evaluations of ``f``.

    Returns
    -------
    tuple or None
        ``(a, f(z + a d), ∇f(z + a d))``; when the budget runs out, the best step found
        that meets the sufficient-decrease condition; ``None`` when there is none.
    """
    dphi0 = float(g0 @ d)
    prev = _Trial(0.0, f0, g0, dphi0)
    a = step
    for i in range(max_evals):
        t = _trial(objective, z, d, a)
        if not t.finite or t.f > f0 + c1 * a * dphi0 or (i > 0 and t.f >= prev.f):
            found = _zoom(objective, z, d, f0, dphi0, prev, t, c1, c2, max_evals - i - 1)
            break
        if abs(t.dphi) <= -c2 * dphi0:
            found = t
            break
        if t.dphi >= 0:
            found = _zoom(objective, z, d, f0, dphi0, t, prev, c1, c2, max_evals - i - 1)
            break
        prev, a = t, 2.0 * a
    else:
        found = prev if prev.a > 0 else None
    return None if found is None else (found.a, found.f, found.g)


def two_loop_direction(g: torch.Tensor, s_hist: list, y_hist: list) -> torch.Tensor:
    """``-H g`` for the L-BFGS inverse Hessian ``H`` of the pairs ``(s_hist, y_hist)``
    (oldest first, each ``(D,)``) with ``H₀ = (sᵀy / yᵀy) I`` from the newest pair
    (Nocedal & Wright 2006, Algorithm 7.4); ``-g`` with no pairs.  Shape ``(D,)``."""
    q = g.clone()
    rhos = [1.0 / float(s @ y) for s, y in zip(s_hist, y_hist)]
    alphas = []
    for s, y, rho in reversed(list(zip(s_hist, y_hist, rhos))):
        a = rho * float(s @ q)
        alphas.append(a)
        q = q - a * y
    if s_hist:
        s, y = s_hist[-1], y_hist[-1]
        q = q * (float(s @ y) / float(y @ y))
    for (s, y, rho), a in zip(zip(s_hist, y_hist, rhos), reversed(alphas)):
        b = rho * float(y @ q)
        q = q + (a - b) * s
    return -q


@dataclass
class LBFGSPath:
    """The optimisation path of one L-BFGS run (maximising ``log p``).

    Attributes
    ----------
    z : torch.Tensor, shape (L + 1, D)
        The iterates ``θ^(0:L)``, unconstrained.
    grad : torch.Tensor, shape (L + 1, D)
        ``∇log p`` at each iterate.
    log_p : torch.Tensor, shape (L + 1,)
        ``log p`` at each iterate (nats).
    converged : bool
        Whether a tolerance was met (rather than ``max_iter`` or a failed line search).
    message : str
        Why it stopped.
    evaluations : int
        Gradient evaluations, initial point and line searches included.
    """

    z: torch.Tensor
    grad: torch.Tensor
    log_p: torch.Tensor
    converged: bool
    message: str
    evaluations: int

    @property
    def num_iter(self) -> int:
        """``L``: iterations taken."""
        return int(self.z.shape[0]) - 1


def lbfgs_path(objective: Objective, z0: torch.Tensor, f0: float, g0: torch.Tensor, *, max_iter: int,
               history_size: int, tol: float) -> LBFGSPath:
    """Minimise ``f = -log p`` by L-BFGS from ``z0`` and keep every iterate.

    It stops when the relative decrease ``|f_l - f_(l-1)| / max(|f_l|, |f_(l-1)|, 1)`` or
    the relative Newton decrement ``gᵀHg / max(|f|, 1)`` falls below ``tol`` (converged),
    after ``max_iter`` iterations, or when the line search finds no step that lowers ``f``.

    Parameters
    ----------
    objective : Objective
    z0 : torch.Tensor, shape (D,)
        The initial point; ``f0`` and ``g0`` (shape ``(D,)``) are ``f`` and ``∇f`` there,
        both finite.
    max_iter : int
        ``L``, the most iterations.
    history_size : int
        ``J``, the most ``(s, y)`` pairs kept.
    tol : float
        Relative tolerance (see above); 0 runs ``max_iter`` iterations unless the gradient
        vanishes.

    Returns
    -------
    LBFGSPath
    """
    zs, gs, fs = [z0], [g0], [f0]
    s_hist, y_hist = [], []
    z, f, g = z0, f0, g0
    converged, message = False, f"reached max_iter={max_iter}"
    for _ in range(max_iter):
        d = two_loop_direction(g, s_hist, y_hist)
        slope = float(g @ d)
        if not (slope < 0 and math.isfinite(slope)):  # the estimate lost positive definiteness: restart
            s_hist, y_hist = [], []
            d, slope = -g, -float(g @ g)
        if slope == 0 or -slope / max(abs(f), 1.0) < tol:
            converged, message = True, f"relative Newton decrement g'Hg/max(|f|,1) = {-slope / max(abs(f), 1.0):.3g}"
            break
        step = 1.0 if s_hist else min(1.0, 1.0 / math.sqrt(float(g @ g)))
        found = wolfe_line_search(objective, z, f, g, d, step)
        if found is None:
            message = "the line search found no step that lowers -log p"
            break
        a, f_new, g_new = found
        z_new = z + a * d
        s, y = z_new - z, g_new - g
        if curvature_ok(s, y):
            s_hist, y_hist = (s_hist + [s])[-history_size:], (y_hist + [y])[-history_size:]
        change = abs(f - f_new) / max(abs(f), abs(f_new), 1.0)
        z, f, g = z_new, f_new, g_new
        zs.append(z)
        gs.append(g)
        fs.append(f)
        if change < tol:
            converged, message = True, f"relative change of log p {change:.3g} below tol"
            break
    log_p = -torch.tensor(fs, dtype=torch.float64)
    return LBFGSPath(torch.stack(zs), -torch.stack(gs), log_p, converged, message, objective.evaluations)
