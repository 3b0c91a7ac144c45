"""The adaptation state of ChEES-HMC: step size, trajectory length, mass matrix.

* Step size: Nesterov dual averaging of the acceptance statistic (Hoffman & Gelman 2014,
  JMLR 15, §3.2.1, eq. 6 with γ = 0.05, t0 = 10, κ = 0.75), applied to the *harmonic
  mean* of the chains' acceptance probabilities, so one chain that rejects everything
  pulls the step down (Hoffman, Radul & Sountsov 2021, AISTATS, §4).
* Trajectory length: gradient ascent on the ChEES criterion (Hoffman et al. 2021, eq. 3,
  "Change in the Estimator of the Expected Square"), by Adam on log T (Algorithm 1:
  β1 = 0, β2 = 0.95), with the jittered length ``h_t · T``, ``h_t`` the base-2 Halton
  (van der Corput) sequence.
* Mass matrix: from the chains' positions and gradients over windows of warmup,
  ``sqrt(var(z) / var(∇ log p))`` per coordinate (:class:`VarianceWindow`), first from
  the chains' starting points; dense where the window is long enough
  (:mod:`ppl.backends.chees.metric`).
"""

from __future__ import annotations

import math

import torch

from .metric import Metric, dense_estimate

__all__ = ["DualAveraging", "LogAdam", "halton", "VarianceWindow", "chees_gradient"]


def halton(i: int) -> float:
    """The ``i``-th (``i >= 1``) element of the base-2 van der Corput sequence, in (0, 1)."""
    out, f = 0.0, 0.5
    while i > 0:
        out += f * (i & 1)
        i >>= 1
        f *= 0.5
    return out


class DualAveraging:
    """Step-size adaptation by dual averaging (Hoffman & Gelman 2014, §3.2.1).

    Parameters
    ----------
    step_size : float
        The step the iterates shrink towards (μ = log(10 ε)).
    target : float
        The acceptance statistic aimed at, in (0, 1).
    """

    def __init__(self, step_size: float, target: float, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75):
        self.mu, self.target = math.log(10.0 * step_size), target
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.t, self.h_bar, self.log_bar = 0, 0.0, math.log(step_size)
        self.step_size = step_size

    def update(self, accept_stat: float) -> float:
        """Take one acceptance statistic; returns the next step size."""
        self.t += 1
        w = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - accept_stat)
        log_eps = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        eta = self.t ** (-self.kappa)
        self.log_bar = eta * log_eps + (1 - eta) * self.log_bar
        self.step_size = math.exp(log_eps)
        return self.step_size

    @property
    def final(self) -> float:
        """The averaged step size, used after warmup."""
        return math.exp(self.log_bar)


class LogAdam:
    """Adam ascent on ``log T`` (Kingma & Ba 2015), with ChEES' β1 = 0, β2 = 0.95.

    Parameters
    ----------
    value : float
        The starting ``T`` (> 0).
    lr : float
        Step in ``log T`` per update (about the largest relative change).
    """

    def __init__(self, value: float, lr: float = 0.05, beta2: float = 0.95, eps: float = 1e-8):
        self.log_value, self.lr, self.beta2, self.eps = math.log(value), lr, beta2, eps
        self.v, self.t = 0.0, 0

    def update(self, grad: float, low: float, high: float) -> float:
        """Ascend along ``grad`` (``∂ criterion / ∂ log T``); keep T in [low, high]; returns T."""
        if math.isfinite(grad):
            self.t += 1
            self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
            v_hat = self.v / (1 - self.beta2 ** self.t)
            self.log_value += self.lr * grad / (math.sqrt(v_hat) + self.eps)
        self.log_value = min(max(self.log_value, math.log(low)), math.log(high))
        return math.exp(self.log_value)

    @property
    def value(self) -> float:
        return math.exp(self.log_value)


class VarianceWindow:
    """The chains' positions and gradients over a window of warmup, and the diagonal inverse
    mass matrix they give.

    The estimate is ``sqrt(var(z) / var(∇ log p))`` per coordinate, the diagonal that
    minimises the Fisher divergence of the preconditioned draws' Gaussian fit (the
    adaptation of nutpie, nuts-rs' gradient-based estimate: Seyboldt, Carlson & Carpenter,
    "Preconditioning Hamiltonian Monte Carlo by minimizing Fisher divergence"): for a
    Gaussian target with independent coordinates it is the
    posterior variance whether or not the chains have reached it yet, so coordinates whose
    scales differ by orders of magnitude are preconditioned from the first window on.
    Where the gradients do not vary it falls back to ``var(z)``.
    """

    def __init__(self, dim: int, dtype, device, dense: bool = False):
        self.z = _Welford(dim, dtype, device)
        self.g = _Welford(dim, dtype, device)
        self.rows: list | None = [] if dense else None

    @property
    def n(self) -> int:
        return self.z.n

    def add(self, z: torch.Tensor, grad: torch.Tensor | None = None) -> None:
        """Add every row of ``z`` ``(C, D)`` and of its gradient ``(C, D)`` (rows where
        either is not finite are skipped)."""
        ok = torch.isfinite(z).all(-1)
        if grad is not None:
            ok &= torch.isfinite(grad).all(-1)
            self.g.add(grad[ok])
            if self.rows is not None:
                self.rows.append((z[ok], grad[ok]))
        self.z.add(z[ok])

    def variance(self) -> torch.Tensor:
        """The inverse mass matrix ``(D,)``: the estimate above, shrunk in log scale towards
        the mean of its logs by ``5 / (n + 5)`` (Stan's weight, but relative, so that a
        coordinate of scale 1e-5 keeps it)."""
        vz = self.z.var()
        vg = self.g.var() if self.g.n > 1 else torch.zeros_like(vz)
        est = torch.where(vg > 0, (vz / vg.clamp_min(1e-300)).sqrt(), vz)
        good = torch.isfinite(est) & (est > 0)
        if not bool(good.any()):
            return torch.ones_like(est)
        log = torch.where(good, est.log(), est[good].log().mean())
        w = self.n / (self.n + 5.0)
        return (w * log + (1 - w) * log.mean()).exp()

    def metric(self) -> Metric:
        """The window's metric (:class:`~ppl.backends.chees.metric.Metric`): dense where the
        window kept its rows (``dense=True``) and :func:`~ppl.backends.chees.metric.dense_estimate`
        gives one, else the diagonal of :meth:`variance`."""
        var = self.variance()
        if self.rows:
            chol = dense_estimate(torch.cat([r[0] for r in self.rows]), torch.cat([r[1] for r in self.rows]), var)
            if chol is not None:
                return Metric(chol)
        return Metric(var.sqrt())


class _Welford:
    """Running mean and sum of squares of rows, by Chan et al.'s pairwise combination (1979)."""

    def __init__(self, dim: int, dtype, device):
        self.n = 0
        self.mean = torch.zeros(dim, dtype=dtype, device=device)
        self.m2 = torch.zeros(dim, dtype=dtype, device=device)

    def add(self, z: torch.Tensor) -> None:
        m = z.shape[0]
        if not m:
            return
        mean_b = z.mean(0)
        m2_b = (z - mean_b).pow(2).sum(0)
        n = self.n + m
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (m / n)
        self.m2 = self.m2 + m2_b + delta.pow(2) * (self.n * m / n)
        self.n = n

    def var(self) -> torch.Tensor:
        return self.m2 / max(self.n - 1, 1)


def chees_gradient(z0, z1, p1, accept, jitter: float) -> float:
    """The ChEES gradient estimate ``∂ ChEES / ∂ T`` from one lockstep iteration
    (Hoffman et al. 2021, eq. 4, weighted by the acceptance probabilities).

    Parameters
    ----------
    z0, z1 : torch.Tensor, shape (C, D)
        The chains' positions before and the proposals after the trajectory, both in
        the preconditioned coordinates the kinetic energy is isotropic in.
    p1 : torch.Tensor, shape (C, D)
        The momenta at the proposals (the velocity there, in the same coordinates).
    accept : torch.Tensor, shape (C,)
        Acceptance probabilities (0 for a diverged chain).
    jitter : float
        ``h_t``: the trajectory ran for ``h_t · T``.

    Returns
    -------
    float
        NaN when no chain accepted.
    """
    ok = torch.isfinite(z1).all(-1) & torch.isfinite(p1).all(-1) & (accept > 0)
    if not bool(ok.any()):
        return math.nan
    w = torch.where(ok, accept, torch.zeros_like(accept))
    z1, p1 = torch.where(ok[:, None], z1, z0), torch.where(ok[:, None], p1, torch.zeros_like(p1))
    c0 = z0 - z0.mean(0)
    c1 = z1 - (w[:, None] * z1).sum(0) / w.sum()
    change = c1.pow(2).sum(-1) - c0.pow(2).sum(-1)
    per_chain = change * (c1 * p1).sum(-1) * jitter
    return float((w * per_chain).sum() / w.sum())
