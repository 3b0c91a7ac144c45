"""Convergence of stochastic optimisation judged on the iterates, not on the noisy ELBO:
the variational parameters' last ``window`` iterates are split into four segments and
their potential scale reduction R̂ (Gelman & Rubin 1992) is computed per coordinate; the
optimisation has reached its stationary phase when every R̂ is below 1.1 (Dhaka, Catalina,
Andersen, Magnusson, Huggins & Vehtari 2020, "Robust, accurate stochastic optimization for
variational inference", §3; Welandawe, Andersen, Vehtari & Huggins 2024, "A framework for
improving the reliability of black-box variational inference").  Iterates that still drift
have segment means that differ by more than their spread within segments, so R̂ stays
large.  Once stationary, the iterates of the window are averaged (Polyak & Juditsky 1992),
which removes most of the remaining optimisation noise (Dhaka et al. 2020, §4).

Adam's iterates are autocorrelated over about ``1 / lr`` steps, so at small learning rates
the segments' R̂ stays high long after the drift has stopped.  The second test looks at the
stochastic gradients instead, which are nearly independent from step to step (fresh draws
each step): at a stationary point their mean is zero, so each coordinate's mean over the
window divided by its standard error, ``t = ḡ / (s_g / √W)``, is about N(0, 1); a drift
shows as a mean gradient the noise cannot explain.  Stationary when every ``|t|`` is below
the Bonferroni bound ``Φ⁻¹(1 - α / 2P)`` for P coordinates (α = 1%) — the gradient test of
stationarity of Pflug (1990), "Non-asymptotic confidence bounds for stochastic
approximation algorithms with constant step size", and Chee & Toulis (2018, AISTATS).
Either test passing means no drift is visible."""

from __future__ import annotations

import math

import pyro
import torch

__all__ = ["IterateMonitor", "RHAT_STATIONARY", "GRADIENT_ALPHA", "split_rhat", "gradient_t", "t_bound"]

#: Stationary when every coordinate's R̂ over the window's segments is below this.
RHAT_STATIONARY = 1.1

#: Family-wise false-alarm rate of the gradient test (over every tracked coordinate).
GRADIENT_ALPHA = 0.01

#: Coordinates tracked at most (a fixed random subset for large guides).
MAX_COORDINATES = 2000


def split_rhat(iterates: torch.Tensor, segments: int = 4) -> torch.Tensor:
    """Potential scale reduction of each coordinate of ``iterates`` ``(T, P)`` with the T
    iterates cut into ``segments`` consecutive pieces treated as chains; shape ``(P,)``.
    A coordinate constant over the window has R̂ = 1."""
    t = iterates.shape[0] // segments * segments
    x = iterates[-t:].double().reshape(segments, t // segments, -1)
    n = x.shape[1]
    means = x.mean(1)
    within = x.var(1, unbiased=True).mean(0)
    between = n * means.var(0, unbiased=True)
    pooled = (n - 1) / n * within + between / n
    scale = 1e-12 * (1.0 + x.abs().amax((0, 1))) ** 2
    rhat = (pooled / within.clamp_min(1e-300)).sqrt()
    return torch.where(within <= scale, torch.where(between <= scale, torch.ones_like(rhat),
                                                    torch.full_like(rhat, math.inf)), rhat)


def gradient_t(grads: torch.Tensor) -> torch.Tensor:
    """``|ḡ| / (s_g / √W)`` per coordinate of the stochastic gradients ``grads`` ``(W, P)``;
    shape ``(P,)``.  A coordinate whose gradient is exactly zero throughout has t = 0; one
    with a constant non-zero gradient (no noise) has t = inf."""
    w = grads.shape[0]
    g = grads.double()
    mean, sd = g.mean(0), g.std(0, unbiased=True)
    scale = 1e-12 * (1.0 + g.abs().amax(0))
    t = mean.abs() / (sd / math.sqrt(w)).clamp_min(1e-300)
    return torch.where(sd <= scale, torch.where(mean.abs() <= scale, torch.zeros_like(t),
                                                torch.full_like(t, math.inf)), t)


def t_bound(coordinates: int, alpha: float = GRADIENT_ALPHA) -> float:
    """The Bonferroni bound ``Φ⁻¹(1 - α / 2P)`` on the largest of P standard normal |t|."""
    p = max(int(coordinates), 1)
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1.0 - alpha / (2 * p), dtype=torch.float64)))


class IterateMonitor:
    """The last ``window`` iterates of the variational parameters named ``names`` (their
    unconstrained values in Pyro's param store).

    Parameters
    ----------
    names : list[str]
        Param-store names of the parameters being optimised.
    window : int
    seed : int
        Picks the tracked coordinates of a large guide.
    reduce : callable, optional
        Applied to each step's flat gradient before it is kept (a distributed run: the
        weighted mean over ranks, so the gradient test decides alike on every rank).
    """

    def __init__(self, names, window: int, seed: int = 0, reduce=None):
        self.reduce = reduce
        store = pyro.get_param_store()
        self.names = [n for n in names if n in store]
        self.window = window
        self.tensors = [store.get_param(n).unconstrained() for n in self.names]
        sizes = [t.numel() for t in self.tensors]
        total = sum(sizes)
        gen = torch.Generator().manual_seed(seed)
        self.index = None if total <= MAX_COORDINATES else torch.randperm(total, generator=gen)[:MAX_COORDINATES]
        self.trace: list = []
        self.full: list = []
        self.grads: list = []
        self._grad = [None] * len(self.tensors)
        self._hooks = [t.register_hook(self._keeper(i)) for i, t in enumerate(self.tensors) if t.requires_grad]

    def _keeper(self, i):
        def keep(grad):   # summed over the backward passes of one step (wake-sleep has two)
            g = grad.detach()
            self._grad[i] = g.clone() if self._grad[i] is None else self._grad[i] + g
        return keep

    def close(self) -> None:
        """Remove the gradient hooks from the parameters (they stay in Pyro's param store)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _flat(self) -> torch.Tensor:
        if not self.tensors:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([t.detach().reshape(-1) for t in self.tensors]).double().cpu()

    def record(self) -> None:
        """Keep the current iterate (the tracked coordinates, and every coordinate for the
        average); only the last ``window`` are kept."""
        flat = self._flat()
        self.full.append(flat)
        self.trace.append(flat if self.index is None else flat[self.index])
        if self._hooks:
            parts = [torch.zeros(t.numel(), dtype=torch.float64) if g is None else g.reshape(-1).double().cpu()
                     for t, g in zip(self.tensors, self._grad)]
            grad = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
            grad = grad if self.reduce is None else self.reduce(grad)
            self.grads.append(grad if self.index is None else grad[self.index])
            self._grad = [None] * len(self.tensors)
        if len(self.full) > self.window:
            self.full.pop(0)
            self.trace.pop(0)
        if len(self.grads) > self.window:
            self.grads.pop(0)

    def rhat(self) -> float:
        """The largest R̂ over the tracked coordinates (``inf`` before a full window)."""
        if len(self.trace) < self.window or self.window < 8:
            return math.inf
        if self.trace[0].numel() == 0:
            return 1.0
        return float(split_rhat(torch.stack(self.trace)).max())

    def gradient_t(self) -> float:
        """The largest gradient ``|t|`` over the tracked coordinates (``inf`` before a full
        window or without gradients)."""
        if len(self.grads) < self.window or self.window < 8:
            return math.inf
        if self.grads[0].numel() == 0:
            return 0.0
        return float(gradient_t(torch.stack(self.grads)).max())

    def t_bound(self) -> float:
        """:func:`t_bound` for the tracked coordinates."""
        return t_bound(self.grads[0].numel() if self.grads else 1)

    def stationary(self) -> bool:
        """R̂ below :data:`RHAT_STATIONARY`, or every gradient |t| below its bound."""
        return self.rhat() < RHAT_STATIONARY or self.gradient_t() < self.t_bound()

    def average(self) -> None:
        """Replace the parameters by the mean of the window's iterates (in place, so
        modules that hold them keep the same tensors)."""
        if not self.full or not self.tensors:
            return
        mean = torch.stack(self.full).mean(0)
        offset = 0
        with torch.no_grad():
            for t in self.tensors:
                n = t.numel()
                t.copy_(mean[offset:offset + n].reshape(t.shape).to(t.dtype))
                offset += n
