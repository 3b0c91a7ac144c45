"""Convergence of stochastic optimisation judged on the iterates, not on the noisy ELBO:
the variational parameters' last ``window`` iterates are split into four segments and
their potential scale reduction R̂ (Gelman & Rubin 1992) is computed per coordinate; the
optimisation has reached its stationary phase when every R̂ is below 1.1 (Dhaka, Catalina,
Andersen, Magnusson, Huggins & Vehtari 2020, "Robust, accurate stochastic optimization for
variational inference", §3; Welandawe, Andersen, Vehtari & Huggins 2024, "A framework for
improving the reliability of black-box variational inference").  Iterates that still drift
have segment means that differ by more than their spread within segments, so R̂ stays
large.  Once stationary, the iterates of the window are averaged (Polyak & Juditsky 1992),
which removes most of the remaining optimisation noise (Dhaka et al. 2020, §4)."""

from __future__ import annotations

import math

import pyro
import torch

__all__ = ["IterateMonitor", "RHAT_STATIONARY", "split_rhat"]

#: Stationary when every coordinate's R̂ over the window's segments is below this.
RHAT_STATIONARY = 1.1

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
    """

    def __init__(self, names, window: int, seed: int = 0):
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
        if len(self.full) > self.window:
            self.full.pop(0)
            self.trace.pop(0)

    def rhat(self) -> float:
        """The largest R̂ over the tracked coordinates (``inf`` before a full window)."""
        if len(self.trace) < self.window or self.window < 8:
            return math.inf
        if self.trace[0].numel() == 0:
            return 1.0
        return float(split_rhat(torch.stack(self.trace)).max())

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
