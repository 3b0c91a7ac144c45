"""ChEES-HMC: many Hamiltonian Monte Carlo chains in lockstep, one batched gradient per step.

Hoffman, Radul & Sountsov (2021), "An Adaptive-MCMC Scheme for Setting Trajectory Lengths
in Hamiltonian Monte Carlo", AISTATS (Algorithm 1).  Every chain takes the same number of
leapfrog steps (Neal 2011, "MCMC using Hamiltonian dynamics", §5.2.3.3) with the same step
size and mass matrix, so one evaluation of the model on a ``(C, D)`` batch of
points gives every chain's gradient: on a small model the batch costs about what one point
does, and C chains run for the price of one.  The trajectory length is jittered by the
Halton sequence and adapted during warmup to maximise the ChEES criterion; the step size
by dual averaging of the harmonic-mean acceptance probability; the mass matrix (diagonal,
or dense on small models) from the chains' positions and gradients
(:mod:`ppl.backends.chees.adapt`, :mod:`ppl.backends.chees.metric`: the chains move in
coordinates where it is the identity).  A transition is a plain
Metropolis-corrected HMC step (Neal 2011, Fig. 2), so the draws are exact in the limit
for any fixed settings.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch

from ...errors import ModelError
from ..common.chains import MIN_DRAWS, stopped_note, time_limit_error
from ..common.jit import checked_trace
from ..common.warmstart import warm_start
from .adapt import DualAveraging, LogAdam, VarianceWindow, chees_gradient, halton
from .metric import DENSE_MAX_DIM, Metric

__all__ = ["CheesSettings", "CheesResult", "run_lockstep"]

#: An energy error above this (nats) marks a divergent transition (Stan's and Pyro's threshold).
DIVERGENCE_ENERGY = 1000.0

#: Fractions of warmup at whose ends the mass matrix is re-estimated from the window since the last one.
MASS_UPDATES = (0.15, 0.3, 0.5, 0.75)


@dataclass
class CheesSettings:
    """What the lockstep chains run with (validated options of the backend).

    Attributes
    ----------
    num_chains, num_samples, warmup_steps : int
        Chains; draws kept per chain; adaptation iterations (discarded).
    target_accept_prob : float
        Dual averaging's target for the harmonic mean of the chains' acceptance probabilities.
    max_leapfrog : int
        At most this many leapfrog steps per iteration.
    jit_compile : bool or None
        Trace the batched log density (None: where it checks out).
    init : str or Posterior
        ``"uniform"`` (in (-2, 2) per unconstrained coordinate), ``"median"`` or
        ``"sample"`` (the prior median plus a standard normal draw); or an earlier result
        of the model, whose draws start half the chains (the other half uniform) and whose
        covariance is the first metric (:mod:`ppl.backends.common.warmstart`).
    seed : int or None
    progress : bool or None
        A tqdm bar over the iterations (None: only when stderr is a terminal).
    max_seconds : float or None
        Wall-clock limit: past it the chains stop with the draws they have (at least 4; in
        the warmup a NumericalError); None: no limit.
    metric : str
        ``"diag"``, ``"dense"`` (windows long enough for a dense estimate give one) or
        ``"auto"`` (dense up to :data:`~ppl.backends.chees.metric.DENSE_MAX_DIM` coordinates).
    """

    num_chains: int
    num_samples: int
    warmup_steps: int
    target_accept_prob: float
    max_leapfrog: int
    jit_compile: bool | None
    init: object
    seed: int | None
    progress: bool | None
    max_seconds: float | None = None
    metric: str = "auto"


@dataclass
class CheesResult:
    """Draws and facts of :func:`run_lockstep`.

    Attributes
    ----------
    z : torch.Tensor, shape (C, S, D)
        Unconstrained draws after warmup.
    accept_prob : torch.Tensor, shape (C, S)
        Metropolis acceptance probability of each iteration.
    diverged : torch.Tensor, shape (C, S), bool
        Divergent transitions (energy error above 1000 nats, or not finite).
    energy : torch.Tensor, shape (C, S)
        The Hamiltonian after each momentum draw (for E-BFMI).
    step_size, trajectory_length : float
        Adapted leapfrog step and (maximum) trajectory length, unconstrained units.
    inverse_mass : torch.Tensor, shape (D,)
        The diagonal of the adapted inverse mass matrix (the posterior variances it assumes).
    dense_metric : bool
        Whether the adapted metric is dense (:mod:`ppl.backends.chees.metric`).
    leapfrog_steps : list[int]
        Leapfrog steps of each sampling iteration (every chain takes the same).
    grad_evals : int
        Batched gradient evaluations, warmup included (each covers all C chains).
    warmup_divergences : int
    jit_compile, vectorized : bool
        Whether the log density was traced; whether it ran on all chains in one model run.
    seconds : float
    notes : list[str]
    stopped : str or None
        Why the draws end before ``num_samples`` (``max_seconds``), else None.
    """

    z: torch.Tensor
    accept_prob: torch.Tensor
    diverged: torch.Tensor
    energy: torch.Tensor
    step_size: float
    trajectory_length: float
    inverse_mass: torch.Tensor
    dense_metric: bool = False
    leapfrog_steps: list = field(default_factory=list)
    grad_evals: int = 0
    warmup_divergences: int = 0
    jit_compile: bool = False
    vectorized: bool = False
    seconds: float = 0.0
    notes: list = field(default_factory=list)
    stopped: str | None = None


class _Gradient:
    """Value and gradient of the log density at ``C`` points ``(C, D)`` in one call."""

    def __init__(self, potential, z0: torch.Tensor, jit, gen, notes: list):
        self.potential = potential
        self.vectorized = potential.vectorizes(z0)
        noise = torch.randn(z0.shape, generator=gen, dtype=torch.float64).to(z0)
        self.f, self.jitted, why = checked_trace(potential.log_density_rows, [z0, z0 + noise], jit)
        if why is not None and jit is True:
            notes.append(f"jit_compile=True: {why}; ran without JIT")
        self.evals = 0

    def __call__(self, z: torch.Tensor):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            lp = self.f(z)
            (g,) = torch.autograd.grad(lp.sum(), z)
        self.evals += 1
        lp = lp.detach()
        return torch.where(torch.isnan(lp), torch.full_like(lp, -math.inf), lp), g.detach()


def _normal(gen, shape, like):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(like)


def _starts(potential, s: CheesSettings, gen) -> torch.Tensor:
    """Starting points ``(C, D)``: each chain redrawn (up to 100 times) until its log density is finite."""
    c, d = s.num_chains, potential.dim
    median = potential.median.to(torch.float64).cpu()

    def draw(n):
        if s.init == "uniform":
            return torch.rand((n, d), generator=gen, dtype=torch.float64) * 4 - 2
        if s.init == "sample":
            return median + torch.randn((n, d), generator=gen, dtype=torch.float64)
        return median.expand(n, d).clone()

    z = draw(c).to(potential.median)
    for _ in range(100):
        with torch.no_grad():
            bad = ~torch.isfinite(potential.log_density_rows(z))
        if not bool(bad.any()):
            return z
        z[bad] = draw(int(bad.sum())).to(z)
    raise ModelError(f"no starting point with a finite log density in 100 tries (init='{s.init}')"
                     f"{potential.nonfinite_sites(potential.median)}; try another "
                     "init ('median', 'sample', 'uniform') or check the model")


def _transition(grad, state, eps: float, steps: int, gen):
    """One lockstep HMC iteration (identity mass, in the metric's coordinates ``x``) from
    ``state = (x, log p, ∇ log p)``: returns the new state, the acceptance probabilities
    ``(C,)``, divergences ``(C,)``, the initial energies ``(C,)`` and the proposals' ``(x, p)``."""
    z, lp, g = state
    p = _normal(gen, z.shape, z)
    h0 = -lp + 0.5 * (p * p).sum(-1)
    z1, p1 = z, p + 0.5 * eps * g
    lost = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    for i in range(steps):
        z1 = z1 + eps * p1
        lost |= ~torch.isfinite(z1).all(-1)
        z1 = torch.where(lost[:, None], z, z1)   # a chain whose trajectory left the numbers waits at its start
        lp1, g1 = grad(z1)
        lost |= ~torch.isfinite(g1).all(-1) | ~torch.isfinite(lp1)
        p1 = p1 + (eps if i + 1 < steps else 0.5 * eps) * torch.where(lost[:, None], torch.zeros_like(g1), g1)
    h1 = -lp1 + 0.5 * (p1 * p1).sum(-1)
    delta = h1 - h0
    finite = torch.isfinite(delta) & ~lost
    log_alpha = torch.where(finite, (-delta).clamp(max=0.0), torch.full_like(delta, -math.inf))
    diverged = ~finite | (delta > DIVERGENCE_ENERGY)
    u = torch.rand(z.shape[0], generator=gen, dtype=torch.float64).to(log_alpha)
    take = (u.log() < log_alpha) & ~diverged
    new = (torch.where(take[:, None], z1, z), torch.where(take, lp1, lp), torch.where(take[:, None], g1, g))
    return new, log_alpha.exp(), diverged, h0, (z1, p1)


def _harmonic_mean(alpha: torch.Tensor) -> float:
    if bool((alpha <= 0).any()):
        return 0.0
    return float(alpha.numel() / (1.0 / alpha).sum())


def _initial_step(grad, state, eps: float, gen) -> float:
    """Hoffman & Gelman's (2014, Algorithm 4) heuristic: double or halve ``eps`` until one
    leapfrog step's mean acceptance probability crosses 1/2."""
    up = None
    for _ in range(60):
        _, alpha, _, _, _ = _transition(grad, state, eps, 1, gen)
        a = float(alpha.mean())
        if up is None:
            up = a > 0.5
        if up != (a > 0.5):
            return eps
        eps = eps * 2.0 if up else eps / 2.0
    return eps


def _steps(eps: float, length: float, jitter: float, cap: int) -> int:
    return int(min(max(math.ceil(jitter * length / eps), 1), cap))


class _Preconditioned:
    """The log density and its gradient in the metric's coordinates ``x`` (``z = x Lᵀ``; the
    constant log Jacobian is left out), for the current :class:`Metric`."""

    def __init__(self, grad, metric: Metric):
        self.grad, self.metric = grad, metric

    def __call__(self, x: torch.Tensor):
        lp, g = self.grad(self.metric.to_z(x))
        return lp, self.metric.grad_x(g)


class _Adaptation:
    """Warmup's state: step size, trajectory length, metric and their schedules.  The
    chains' state is kept in the metric's coordinates ``x``."""

    def __init__(self, grad, z: torch.Tensor, s: CheesSettings, gen, dense: bool, initial: Metric | None = None):
        self.s, self.gen, self.dense = s, gen, dense
        self.grad = _Preconditioned(grad, Metric(torch.ones_like(z[0])))
        state = (z,) + self.grad(z)
        if initial is None:
            start = VarianceWindow(z.shape[1], z.dtype, z.device)
            start.add(state[0], state[2])   # the starting points already tell each coordinate's scale
            initial = start.metric()
        self.eps = 1.0
        self.state = self._new_metric(state, initial)
        w = s.warmup_steps
        self.updates = sorted({int(w * f) for f in MASS_UPDATES if 0 < int(w * f) < w})

    @property
    def metric(self) -> Metric:
        return self.grad.metric

    def _new_metric(self, state, inner: Metric):
        """Compose ``inner`` (estimated in the current ``x``) onto the metric, move the
        chains' state into the new coordinates, then a new initial step size, dual
        averaging afresh, and the trajectory back to one leapfrog step, below ChEES' first
        maximum (the criterion is periodic in T for near-Gaussian targets, so a T grown
        under the old metric could sit in one of its later, flatter maxima)."""
        z = self.metric.to_z(state[0])
        self.grad.metric = self.metric.compose(inner)
        x = self.metric.to_x(z)
        state = (x,) + self.grad(x)
        self.eps = _initial_step(self.grad, state, self.eps, self.gen)
        self.dual = DualAveraging(self.eps, self.s.target_accept_prob)
        self.length = self.eps
        self.adam = LogAdam(self.length)
        self.window = VarianceWindow(x.shape[1], x.dtype, x.device, dense=self.dense)
        self.log_lengths: list = []
        return state

    def step(self, t: int, state):
        """Warmup iteration ``t`` (0-based): one transition, then every adaptation; returns
        the new state and its divergences."""
        h = halton(t + 1)
        new, alpha, diverged, _, (z1, p1) = _transition(self.grad, state, self.eps,
                                                        _steps(self.eps, self.length, h, self.s.max_leapfrog),
                                                        self.gen)
        alpha = torch.where(diverged, torch.zeros_like(alpha), alpha)
        g = chees_gradient(state[0], z1, p1, alpha, h)
        self.eps = self.dual.update(_harmonic_mean(alpha))
        self.length = self.adam.update(g * self.length, self.eps, self.eps * self.s.max_leapfrog)
        self.log_lengths.append(math.log(self.length))
        self.window.add(new[0], new[2])
        if t + 1 in self.updates:
            new = self._new_metric(new, self.window.metric())
        return new, diverged

    def final(self):
        """``(step size, trajectory length)`` for sampling: the dual average, and the mean
        log length since the last mass-matrix update."""
        eps = self.dual.final
        tail = self.log_lengths[len(self.log_lengths) // 2:] or [math.log(self.length)]
        return eps, max(eps, math.exp(sum(tail) / len(tail)))


def run_lockstep(potential, s: CheesSettings) -> CheesResult:
    """Run ``s.num_chains`` ChEES-HMC chains in lockstep on ``potential``.

    Parameters
    ----------
    potential : Potential
        The model's log density in unconstrained space (``D`` coordinates).
    s : CheesSettings

    Returns
    -------
    CheesResult
        ``z`` ``(C, S, D)`` unconstrained draws and the run's facts.

    Raises
    ------
    ModelError
        When no starting point has a finite density.
    """
    start = time.perf_counter()
    seed = int(s.seed) if s.seed is not None else int(torch.randint(2**62, ()))
    gen = torch.Generator().manual_seed(seed % 2**63)
    notes: list = []
    dense = s.metric == "dense" or (s.metric == "auto" and potential.dim <= DENSE_MAX_DIM)
    initial = None
    if isinstance(s.init, str):
        z = _starts(potential, s, gen)
    else:
        warm = warm_start(s.init, potential, s.num_chains, gen, dense)
        z, initial = warm.starts, Metric(warm.factor.to(warm.starts))
        own = s.num_chains // 2   # the other half from uniform(-2, 2): dispersed starts keep R-hat's power
        z[:own] = _starts(potential, CheesSettings(**{**vars(s), "init": "uniform", "num_chains": own}), gen)
    grad = _Gradient(potential, z, s.jit_compile, gen, notes)
    adapt = _Adaptation(grad, z, s, gen, dense, initial)
    state = adapt.state
    bar = _progress(s)
    warm_div = 0
    deadline = None if s.max_seconds is None else time.monotonic() + s.max_seconds
    for t in range(s.warmup_steps):
        if deadline is not None and time.monotonic() > deadline:
            bar.close()
            raise time_limit_error("ChEES-HMC", s.max_seconds, f"its warmup ({t} of {s.warmup_steps} steps)")
        state, diverged = adapt.step(t, state)
        warm_div += int(diverged.sum())
        bar.update(1)
    eps, length = adapt.final()
    zs, alphas, divs, energies, steps = [], [], [], [], []
    stopped = None
    for i in range(s.num_samples):
        if deadline is not None and i >= MIN_DRAWS and time.monotonic() > deadline:
            stopped = stopped_note(s.max_seconds, i, s.num_samples)
            notes.append(stopped)
            break
        n = _steps(eps, length, halton(s.warmup_steps + i + 1), s.max_leapfrog)
        state, alpha, diverged, h0, _ = _transition(adapt.grad, state, eps, n, gen)
        zs.append(adapt.metric.to_z(state[0]))
        alphas.append(alpha)
        divs.append(diverged)
        energies.append(h0)
        steps.append(n)
        bar.update(1)
    bar.close()
    if length >= eps * s.max_leapfrog:
        notes.append(f"the trajectory length reached max_leapfrog={s.max_leapfrog} steps of the adapted step size")
    return CheesResult(z=torch.stack(zs, 1), accept_prob=torch.stack(alphas, 1), diverged=torch.stack(divs, 1),
                       energy=torch.stack(energies, 1), step_size=eps, trajectory_length=length,
                       inverse_mass=adapt.metric.inverse_mass(), dense_metric=adapt.metric.dense,
                       leapfrog_steps=steps, grad_evals=grad.evals,
                       warmup_divergences=warm_div, jit_compile=grad.jitted, vectorized=grad.vectorized,
                       seconds=time.perf_counter() - start, notes=notes, stopped=stopped)


def _progress(s: CheesSettings):
    from tqdm.auto import tqdm

    show = s.progress if s.progress is not None else sys.stderr.isatty()
    return tqdm(total=s.warmup_steps + s.num_samples, desc="ChEES-HMC", disable=not show, leave=False)
