"""Single-path Pathfinder (Zhang, Carpenter, Gelman & Vehtari 2022, Algorithm 1): from a
random initial point, L-BFGS; at every iterate a normal approximation; each one's ELBO
estimated with ``K`` draws; the one with the highest ELBO kept and ``M`` draws taken from it.

    ELBO(q^(l)) ≈ (1/K) Σ_k [log p(φ_k) - log q^(l)(φ_k)],   φ_k ~ q^(l)
    l* = argmax_l ELBO(q^(l))

(maximising the ELBO minimises KL(q‖p); Goodfellow et al. 2016, eq. 19.1).  The density is
:class:`~ppl.backends.common.potential.Potential`'s: unconstrained, Jacobian included,
discrete latents summed out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ...errors import NumericalError
from .approximations import NormalApproximation, inverse_hessian_history
from .lbfgs import LBFGSPath, Objective, lbfgs_path

__all__ = ["PathSettings", "PathResult", "initial_point", "elbo_along_path", "single_path"]

#: Random initial points tried per path before it is dropped.
MAX_INIT_TRIES = 20


@dataclass(frozen=True)
class PathSettings:
    """What one path runs with (the backend's options of the same names).

    Attributes
    ----------
    max_iter : int
        ``L``: L-BFGS iterations.
    history_size : int
        ``J``: ``(s, y)`` pairs kept.
    tol : float
        Relative tolerance of L-BFGS.
    num_elbo_draws : int
        ``K``: draws per ELBO estimate.
    num_draws : int
        ``M``: draws from the chosen approximation.
    init_radius : float
        Initial points are uniform in ``(-init_radius, init_radius)^D``.
    """

    max_iter: int
    history_size: int
    tol: float
    num_elbo_draws: int
    num_draws: int
    init_radius: float


@dataclass
class PathResult:
    """One path's outcome.

    Attributes
    ----------
    index : int
    failure : str or None
        Why the path was dropped (None: it was kept).
    lbfgs : LBFGSPath or None
        The optimisation path.
    elbos : list[float]
        The ELBO estimate (nats) of the approximation at iterates ``1 .. L``; ``-inf``
        where it could not be formed or put a draw where the density is not finite.
    best_iteration : int
        ``l*`` (1-based: iterate ``θ^(l*)``); 0 when dropped.
    z : torch.Tensor, shape (M, D)
        Draws from ``q^(l*)``.
    log_q : torch.Tensor, shape (M,)
        ``log q^(l*)`` at them (nats).
    density_evaluations : int
        Log-density evaluations without gradient (ELBO draws).
    init_tries : int
        Initial points drawn.
    approximation : NormalApproximation or None
        ``q^(l*)`` (None when dropped).
    """

    index: int
    failure: str | None = None
    lbfgs: LBFGSPath | None = None
    elbos: list = field(default_factory=list)
    best_iteration: int = 0
    z: torch.Tensor | None = None
    log_q: torch.Tensor | None = None
    density_evaluations: int = 0
    init_tries: int = 0
    approximation: NormalApproximation | None = None

    @property
    def selection_elbo(self) -> float:
        """The ELBO estimate that chose ``l*`` (nats; ``-inf`` when dropped)."""
        return self.elbos[self.best_iteration - 1] if self.best_iteration else -math.inf


def initial_point(objective: Objective, dim: int, radius: float, generator, dtype, device):
    """A uniform draw in ``(-radius, radius)^dim`` where ``log p`` and its gradient are
    finite, trying up to :data:`MAX_INIT_TRIES` draws.

    Returns
    -------
    tuple
        ``(z (D,), f, ∇f, tries)`` with ``f = -log p(z)``, or ``(None, None, None, tries)``
        when no draw had a finite density and gradient.
    """
    for tries in range(1, MAX_INIT_TRIES + 1):
        u = torch.rand(dim, generator=generator, dtype=torch.float64)
        z = ((2.0 * u - 1.0) * radius).to(dtype=dtype, device=device)
        f, g = objective(z)
        if g is not None:
            return z, f, g, tries
    return None, None, None, MAX_INIT_TRIES


def elbo_along_path(potential, path: LBFGSPath, history_size: int, num_elbo_draws: int, generator):
    """The ELBO estimate of the normal approximation at every iterate ``l = 1 .. L``.

    Returns
    -------
    tuple
        ``(elbos, best)``: the list of estimates (nats, ``-inf`` where the approximation
        cannot be formed or a draw has no finite density) and the best approximation
        (``(l*, NormalApproximation)``, or ``None`` when no estimate is finite).
    """
    elbos, best = [], None
    factors = inverse_hessian_history(path.z, path.grad, history_size)
    for l, (alpha, s_mat, y_mat) in enumerate(factors, start=1):
        try:
            q = NormalApproximation(path.z[l], path.grad[l], alpha, s_mat, y_mat)
        except (NumericalError, RuntimeError):
            elbos.append(-math.inf)
            continue
        phi, log_q = q.sample(num_elbo_draws, generator)
        log_p = potential.log_density_batch(phi)
        value = float((log_p - log_q.double().cpu()).mean())
        value = value if math.isfinite(value) else -math.inf  # NaN or +inf: no usable estimate
        elbos.append(value)
        if math.isfinite(value) and (best is None or value > elbos[best[0] - 1]):
            best = (l, q)
    return elbos, best


def single_path(potential, index: int, settings: PathSettings, generator) -> PathResult:
    """Single-path Pathfinder (Zhang et al. 2022, Algorithm 1) on ``potential``.

    Parameters
    ----------
    potential : Potential
        The log density in unconstrained space (``D = potential.dim``).
    index : int
        The path's number, for messages.
    settings : PathSettings
    generator : torch.Generator
        A CPU generator for the initial point and every draw.

    Returns
    -------
    PathResult
        ``failure`` says why when the path is dropped: no finite initial point, no
        L-BFGS step, or no approximation with a finite ELBO.
    """
    result = PathResult(index)
    objective = Objective(potential.log_density_and_grad)
    z0, f0, g0, result.init_tries = initial_point(objective, potential.dim, settings.init_radius, generator,
                                                  potential.dtype, potential.device)
    if z0 is None:
        result.failure = (f"no initial point in (-{settings.init_radius:g}, {settings.init_radius:g})^D with a finite "
                          f"log density and gradient in {MAX_INIT_TRIES} tries")
        return result
    path = lbfgs_path(objective, z0, f0, g0, max_iter=settings.max_iter, history_size=settings.history_size,
                      tol=settings.tol)
    result.lbfgs = path
    if path.num_iter == 0:
        result.failure = f"L-BFGS took no step ({path.message})"
        return result
    result.elbos, best = elbo_along_path(potential, path, settings.history_size, settings.num_elbo_draws, generator)
    result.density_evaluations = path.num_iter * settings.num_elbo_draws
    if best is None:
        result.failure = (f"none of the {path.num_iter} normal approximations along the path has a finite ELBO "
                          "(non-finite log density at their draws, or an indefinite inverse-Hessian estimate)")
        return result
    result.best_iteration, q = best
    result.approximation = q
    result.z, result.log_q = q.sample(settings.num_draws, generator)
    return result
