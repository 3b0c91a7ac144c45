"""SVI's optimisation loop as hooks of :func:`ppl.backends.template.run_iterations`: one Pyro ``SVI.step``
per iteration (on a minibatch with ``subsample_size``), stopped by a rule that accounts for the ELBO's noise."""

from __future__ import annotations

import math
import time

import pyro
import torch
from pyro import poutine

from ..template import IterativeFit
from ..common.distributed import NO_SHARD
from ..common.stationarity import RHAT_STATIONARY, IterateMonitor
from .losses import svi_step

__all__ = ["SVIFit", "windowed_flat"]


def windowed_flat(history, window: int, tol: float) -> bool:
    """Stopping rule: the mean ELBO of the last ``window`` steps differs from the mean of
    the ``window`` before by less than ``tol · max(1, |mean|)``, or (``tol > 0``) by less
    than half the standard error of that difference (no change the noise of the
    estimates can show).  ``tol = 0`` runs every step."""
    prev = torch.tensor(history[-2 * window:-window], dtype=torch.float64)
    cur = torch.tensor(history[-window:], dtype=torch.float64)
    change = abs(float(cur.mean() - prev.mean()))
    se = math.sqrt(float(prev.var() + cur.var()) / window) if window > 1 else 0.0
    return change <= tol * max(1.0, abs(float(prev.mean()))) or (tol > 0 and change <= 0.5 * se)


class SVIFit(IterativeFit):
    """The SVI loop.  The state is the number of steps taken; the parameters live in
    Pyro's param store (where ``SVI`` keeps them) and the last step's ELBO estimate in
    :attr:`last`.

    Parameters
    ----------
    problem : SVIProblem
        The conditioned model, the guide and the minibatcher.
    svi : pyro.infer.SVI
    optimizer : pyro.optim.PyroOptim
        Stepped once per iteration when it is a learning-rate scheduler.
    window : int
        Steps per window of the stopping rule: converged when the variational parameters
        over the last window are stationary (iterate R̂ < 1.1, or no mean gradient beyond
        its noise; see :mod:`ppl.backends.common.stationarity`) and the windowed mean ELBO is flat
        (:func:`windowed_flat`); the stationary window's iterates are then averaged.
    tol : float
    lr : float
        For messages.
    shard : Shard, optional
        Distributed: each step starts from rank 0's RNG state and the gradient test reads the
        gradients averaged over ranks, so every rank draws and stops alike.
    """

    what = "ELBO"
    label = "SVI"
    monotone = False
    records_start = False

    def __init__(self, problem, svi, optimizer, *, window: int, tol: float, lr: float, num_steps: int, shard=NO_SHARD):
        self.problem, self.svi, self.optimizer, self.shard = problem, svi, optimizer, shard
        self.window, self.tol, self.lr, self.num_steps = window, tol, lr, num_steps
        self.scheduled = isinstance(optimizer, pyro.optim.lr_scheduler.PyroLRScheduler)
        self.last = math.nan
        self.param_names: list = []
        self.first_step_seconds = 0.0
        self.train_start = 0.0
        self.iterates = None
        self.last_rhat = self.last_t = self.t_bound = math.inf
        self.elbo_flat = False

    def initialize(self, restart):
        self.train_start = time.perf_counter()
        return 0

    def step(self, state):
        p = self.problem
        kwargs = p.kwargs
        if p.batcher is not None:
            kwargs, p.state["obs"] = p.batcher.draw()
        self.shard.sync_rng()  # distributed: every rank draws the global latents alike
        if state == 0:
            if p.batcher is not None:
                with poutine.block():
                    p.batcher.check(p.model_fn, kwargs)
                    if p.kind == "custom":
                        p.batcher.check(p.guide, kwargs, what="guide")
            with poutine.trace(param_only=True) as cap:
                value = svi_step(self.svi, kwargs, state, self.lr)
            self.param_names = [n for n, s in cap.trace.nodes.items() if s["type"] == "param"]
            self.iterates = IterateMonitor(self.param_names, self.window, reduce=self.shard.weighted_mean)
            self.first_step_seconds = time.perf_counter() - self.train_start
            self.train_start = time.perf_counter()
        else:
            value = svi_step(self.svi, kwargs, state, self.lr)
        if self.scheduled:
            self.optimizer.step()
        self.iterates.record()
        self.last = -value
        return state + 1

    def bound(self, state):
        return self.last

    def check_step(self, value, first, iteration):
        """Non-finite losses are refused by :func:`~ppl.backends.svi.losses.svi_step`; a
        noisy estimate may swing far below its start, which is no divergence."""

    def stop(self, history, rule, change) -> bool:
        """Checked at the end of every window (``tol > 0``) and after the last step (also
        with ``tol = 0``, which runs every step and then says whether they ended
        stationary)."""
        n = len(history)
        last = n >= self.num_steps
        if n < 2 * self.window or not (last or (self.tol > 0 and n % self.window == 0)):
            return False
        self._read(history)
        return self.elbo_flat and self.iterates.stationary()

    def _read(self, history) -> None:
        self.last_rhat, self.last_t = self.iterates.rhat(), self.iterates.gradient_t()
        self.t_bound = self.iterates.t_bound()
        self.elbo_flat = len(history) >= 2 * self.window and (
            self.tol == 0 or windowed_flat(history, self.window, self.tol))

    def drift(self) -> str:
        """What still moved in the last window (for messages)."""
        parts = []
        if self.last_rhat >= RHAT_STATIONARY and self.last_t >= self.t_bound:
            parts.append(f"the parameters drift (iterate R-hat {self.last_rhat:.3g} >= {RHAT_STATIONARY} and largest "
                         f"mean-gradient |t| {self.last_t:.3g} >= {self.t_bound:.3g} over the last {self.window} "
                         "steps)")
        if not self.elbo_flat:
            parts.append(f"the windowed mean ELBO still changes by more than tol={self.tol} relative"
                         if self.tol > 0 else f"fewer than {2 * self.window} steps")
        return " and ".join(parts) or "the last window was not checked"

    def finish(self, converged: bool, history=()) -> None:
        """After the loop: average the stationary window's iterates (Polyak & Juditsky 1992)."""
        if self.iterates is None:
            return
        self.iterates.close()
        if converged:
            self.iterates.average()
        else:
            self._read(list(history))

    def not_converged(self, result, max_iter, tol):
        return f"SVI did not converge in {max_iter} steps ({self.drift()}); raise num_steps"

    @property
    def train_seconds(self) -> float:
        """Seconds of every step after the first."""
        return time.perf_counter() - self.train_start
