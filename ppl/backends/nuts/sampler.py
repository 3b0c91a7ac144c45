"""Chains of Pyro's NUTS, each seeded on its own, in parallel worker processes where
possible, with the caller's random state and param store left as they were found.

The No-U-Turn Sampler (Hoffman & Gelman 2014, "The No-U-Turn Sampler: adaptively setting
path lengths in Hamiltonian Monte Carlo", JMLR 15) through ``pyro.infer.MCMC`` with one
chain per call; the chains run in forked processes, one per core
(:func:`~ppl.backends.common.processes.map_jobs`; on Linux and the CPU), or one after
another.  Chain ``c`` of a run with ``seed`` is seeded ``seed + c`` and draws from
nothing else, so a seeded run gives the same draws in parallel or in turn.  The
kernel samples ppl's own potential (:class:`~ppl.backends.common.potential.Potential`:
the log density in unconstrained space, supports taken at each evaluation, discrete
latents summed out by ppl's own variable elimination with the exact engine's plan,
:class:`~ppl.backends.common.discrete.DiscretePlan`, not by Pyro's enumeration), given to
``NUTS(potential_fn=...)``: Pyro sees only a potential of the continuous latents.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from ...errors import ModelError, PPLError
from ..common.chains import MIN_DRAWS, stopped_note, time_limit_error
from ..common.jit import JIT_ERRORS, checked_trace
from ..common.params import store_restore, store_snapshot
from ..common.processes import fork_problem, map_jobs, usable_cores

__all__ = ["INIT_STRATEGIES", "ChainSettings", "ChainsResult", "preserved_state", "run_chains"]

#: ``init=`` names: where each chain starts in unconstrained space (``"uniform"``: uniform
#: in (-2, 2) per coordinate, Stan's default; ``"median"``/``"mean"``: the prior means;
#: ``"sample"``: the prior means plus a standard normal draw).
INIT_STRATEGIES = ("uniform", "median", "mean", "sample")

#: ``full_mass=None`` adapts a dense mass matrix up to this many unconstrained dimensions.
DENSE_MAX_DIM = 50



@dataclass
class ChainSettings:
    """What every chain runs with (validated options of the backend).

    Attributes
    ----------
    num_samples, warmup_steps, num_chains : int
        Draws kept per chain, adaptation steps per chain (discarded), chains.
    target_accept_prob : float
        Step-size adaptation target (dual averaging, Hoffman & Gelman 2014 §3.2).
    max_tree_depth : int
        At most ``2**max_tree_depth`` leapfrog steps per draw.
    full_mass : bool or None
        Adapt a dense mass matrix (the inverse posterior covariance, estimated in warmup:
        strongly correlated posteriors need far fewer leapfrog steps); None: dense up to
        :data:`DENSE_MAX_DIM` dimensions.
    jit_compile : bool or None
        Trace the potential with ``torch.jit``; None: where the traced potential checks
        out against the model's (falls back to none otherwise).
    init : str
        A key of :data:`INIT_STRATEGIES`.
    seed : int or None
        Chain ``c`` is seeded ``seed + c``; None: the global RNG's current state.
    progress : bool or None
        Pyro's progress bar (None: only when stderr is a terminal).
    parallel : bool
        Run chains in forked worker processes, one per core, where that is possible.
    max_seconds : float or None
        Wall-clock limit of the whole run: a chain still running then stops and keeps the
        draws it has (all chains are cut to the shortest); None: no limit.
    """

    num_samples: int
    warmup_steps: int
    num_chains: int
    target_accept_prob: float
    max_tree_depth: int
    jit_compile: bool | None
    full_mass: bool | None
    init: str
    seed: int | None
    progress: bool | None
    parallel: bool = True
    max_seconds: float | None = None


@dataclass
class ChainsResult:
    """The draws and per-chain facts of :func:`run_chains`.

    Attributes
    ----------
    draws : dict[str, torch.Tensor]
        Site -> constrained draws, shape ``(C, S) + shape``.
    divergences : list[int]
        Divergent transitions after warmup, per chain.
    acceptance_rate : list[float]
        Mean acceptance probability after warmup, per chain.
    step_size : list[float]
        Adapted leapfrog step size per chain (unconstrained units).
    seconds : list[float]
        Wall-clock seconds per chain (setup, warmup and sampling).
    wall_seconds : float
        Wall-clock seconds of all chains (less than their sum when they ran in parallel).
    parallel : bool
        Whether the chains ran in forked worker processes.
    jit_compile : bool
        Whether the chains ran with a JIT-compiled potential.
    notes : list[str]
        What happened that the user should know (a JIT trace that failed).
    stopped : str or None
        Why the chains stopped before their schedule's end (``max_seconds``), else None.
    """

    draws: dict
    divergences: list = field(default_factory=list)
    acceptance_rate: list = field(default_factory=list)
    step_size: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    jit_compile: bool = False
    notes: list = field(default_factory=list)
    full_mass: bool = False
    parallel: bool = False
    wall_seconds: float = 0.0
    stopped: str | None = None


class _TimeUp(Exception):
    """Raised inside Pyro's sampling loop when a chain passes its deadline."""


@contextlib.contextmanager
def preserved_state():
    """Restore Python's and numpy's global RNG states and Pyro's param store on exit.

    ``pyro.set_rng_seed`` seeds ``random`` and ``numpy`` besides torch, and a model's
    ``ppl.param`` statements add missing params to the store; the caller sees neither.
    (Torch's RNG is forked by :func:`~ppl.backends.common.runtime.run_context`.)"""
    py_state, np_state = random.getstate(), np.random.get_state()
    saved = store_snapshot()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        store_restore(saved)


def _start(potential, s: ChainSettings, gen: torch.Generator) -> torch.Tensor:
    """A chain's starting point ``(D,)`` by ``s.init``; up to 100 tries for a finite density."""
    for _ in range(100):
        if s.init == "uniform":
            z = potential.random_start(gen)
        elif s.init == "sample":
            z = potential.median.double() + torch.randn(potential.dim, generator=gen, dtype=torch.float64)
        else:
            z = potential.median.double()
        z = z.to(potential.dtype)
        with torch.no_grad():
            if torch.isfinite(potential.log_density(z)):
                return z
    raise ModelError(f"NUTS found no initial point with a finite log density in 100 tries (init='{s.init}')"
                     f"{potential.nonfinite_sites(potential.median)}; try another init "
                     "('median', 'sample', 'uniform') or check the model and data")


def _potential_fn(potential, jit, z0, notes: list, gen):
    """``(potential_fn, jitted)``: the negated log density of ``{"z": ...}``; with ``jit``
    (True, or None: wherever it checks out) traced and kept only if the traced function
    gives the eager value and gradient at three points
    (:func:`~ppl.backends.common.jit.checked_trace`)."""
    points = [z0] + [z0 + torch.randn(z0.shape, generator=gen, dtype=torch.float64).to(z0.dtype) for _ in range(2)]
    f, jitted, why = checked_trace(lambda z: -potential.log_density(z), points, jit)
    if why is not None and jit is True:
        notes.append(f"jit_compile=True: {why}; ran without JIT")
    return (lambda params: f(params["z"])), jitted


def _one_chain(potential, s: ChainSettings, chain: int, base_seed: int, label: str,
               seconds: float | None = None) -> dict:
    """Run chain ``chain`` (its own generator and Pyro's global RNGs seeded
    ``base_seed + chain``: ``seed + chain``, or a draw of the global RNG plus ``chain``) and return its record: constrained draws as numpy ``(S,) + shape``
    per site, divergences, acceptance rate, step size, seconds, JIT use and notes."""
    start = time.perf_counter()
    deadline = None if seconds is None else time.monotonic() + seconds
    gen = torch.Generator().manual_seed((base_seed + chain) % 2**63)
    pyro.set_rng_seed((base_seed + chain) % 2**32)
    show = s.progress if s.progress is not None else sys.stderr.isatty()
    try:
        z0 = _start(potential, s, gen)
    except ModelError as e:
        raise ModelError(f"NUTS could not run model '{label}' (chain {chain}): {e}") from None
    notes: list = []
    fn, jitted = _potential_fn(potential, s.jit_compile, z0, notes, gen)
    dense = s.full_mass if s.full_mass is not None else potential.dim <= DENSE_MAX_DIM
    kernel = NUTS(potential_fn=fn, target_accept_prob=s.target_accept_prob, max_tree_depth=s.max_tree_depth,
                  full_mass=bool(dense))
    kept, at_stop = [], []

    def hook(kernel, params, stage, i):  # keeps the draws so far, so a chain cut by the deadline has them
        if stage.startswith("Sample"):
            kept.append(params["z"].detach().clone())
        if deadline is not None and time.monotonic() > deadline:
            at_stop.append(kernel.diagnostics())
            raise _TimeUp

    mcmc = MCMC(kernel, num_samples=s.num_samples, warmup_steps=s.warmup_steps, num_chains=1,
                initial_params={"z": z0}, disable_progbar=not show, hook_fn=hook)
    try:
        mcmc.run()
    except _TimeUp:
        pass
    except PPLError:
        raise
    except JIT_ERRORS as e:
        raise ModelError(f"NUTS could not run model '{label}' (chain {chain}): {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else e!r}") from e
    z = torch.stack(kept) if kept else z0.new_zeros((0,) + tuple(z0.shape))
    draws = potential.constrain(z) if kept else {}
    facts = {k: {"chain 0": v} for k, v in at_stop[0].items()} if at_stop else _sampler_facts(mcmc)
    return {"draws": {k: v.cpu().numpy() for k, v in draws.items()}, "kept": len(kept),
            "stopped_in_warmup": bool(at_stop) and not kept,
            "divergences": len(facts.get("divergences", {}).get("chain 0", [])),
            "acceptance_rate": float(facts.get("acceptance rate", {}).get("chain 0", float("nan"))),
            "step_size": float(mcmc.kernel.step_size), "jitted": jitted, "notes": notes,
            "seconds": time.perf_counter() - start}


def _sampler_facts(mcmc) -> dict:
    """The kernel's own facts of a one-chain Pyro ``MCMC`` run (``"divergences"``,
    ``"acceptance rate"``, keyed ``"chain 0"``), as ``mcmc.diagnostics()`` gives them, but
    also for runs of fewer than 4 draws, where Pyro's split R-hat inside ``diagnostics()``
    fails an ``assert`` (R-hat and ESS are computed later, by ArviZ, over every chain)."""
    kernel_facts = getattr(mcmc, "_diagnostics", None) or [{}]
    return {name: {"chain 0": value} for name, value in kernel_facts[0].items()}


def run_chains(potential, s: ChainSettings, label: str = "model") -> ChainsResult:
    """Run ``s.num_chains`` NUTS chains on ``potential``: in forked worker processes, one
    per core, where :func:`~ppl.backends.common.processes.fork_problem` allows and
    ``s.parallel``, else one after another; each chain draws only from its own seeded
    generators, so the draws are the same either way.

    Parameters
    ----------
    potential : Potential
        The model's log density in unconstrained space (discrete latents summed out by
        its own variable elimination, not Pyro's enumeration).
    s : ChainSettings
    label : str
        The model's name, for messages.

    Returns
    -------
    ChainsResult
        Draws constrained, ``(C, S) + shape`` per continuous latent.

    Raises
    ------
    ModelError
        When no starting point has a finite density, or the sampler fails on the model.
    """
    dense = s.full_mass if s.full_mass is not None else potential.dim <= DENSE_MAX_DIM
    result = ChainsResult(draws={}, jit_compile=bool(s.jit_compile), full_mass=bool(dense))
    base = int(s.seed) if s.seed is not None else int(torch.randint(2**31, ()))
    start = time.perf_counter()

    # each chain gets its share of max_seconds: all of it when every chain runs at once, a
    # 1/C share when they run in turn (a deadline for the whole run would starve the last ones)
    concurrent = 1
    if s.parallel and fork_problem(potential.device, s.num_chains) is None:
        concurrent = min(s.num_chains, usable_cores())
    share = None if s.max_seconds is None else s.max_seconds * concurrent / s.num_chains

    def job(chain):
        return _one_chain(potential, s, chain, base, label, share)

    chains = list(range(s.num_chains))
    if s.parallel:
        records, why = map_jobs(job, chains, potential.device)
    else:
        records, why = [job(c) for c in chains], "parallel=False"
    result.parallel = why is None
    result.wall_seconds = time.perf_counter() - start
    for r in records:
        result.divergences.append(r["divergences"])
        result.acceptance_rate.append(r["acceptance_rate"])
        result.step_size.append(r["step_size"])
        result.seconds.append(r["seconds"])
        result.notes.extend(n for n in r["notes"] if n not in result.notes)
    result.jit_compile = all(r["jitted"] for r in records)
    n = min(r["kept"] for r in records)
    if n < s.num_samples:
        if n < MIN_DRAWS:
            where = "its warmup" if any(r["stopped_in_warmup"] for r in records) else f"{n} draws per chain"
            raise time_limit_error(f"NUTS on model '{label}'", s.max_seconds, where)
        result.stopped = stopped_note(s.max_seconds, n, s.num_samples)
        result.notes.append(result.stopped)
    result.draws = {k: torch.stack([torch.as_tensor(r["draws"][k][:n]) for r in records], dim=0)
                    .to(potential.device) for k in records[0]["draws"]}
    return result
