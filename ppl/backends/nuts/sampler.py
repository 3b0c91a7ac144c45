"""Chains of Pyro's NUTS run one after another, each seeded on its own, with the caller's
random state and param store left as they were found.

The No-U-Turn Sampler (Hoffman & Gelman 2014, "The No-U-Turn Sampler: adaptively setting
path lengths in Hamiltonian Monte Carlo", JMLR 15) through ``pyro.infer.MCMC`` with one
chain per call: nothing is parallelised across processes, and chain ``c`` of a run with
``seed`` is seeded ``seed + c``, so a seeded run is reproducible chain by chain.  Discrete
latents are summed out in the potential (Pyro's enumeration; Obermeyer et al. 2019).
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
from pyro.infer import MCMC, NUTS, config_enumerate
from pyro.infer.autoguide import initialization as init_strategies

from ...errors import ModelError, PPLError

__all__ = ["INIT_STRATEGIES", "ChainSettings", "ChainsResult", "preserved_state", "run_chains"]

#: ``init=`` names -> Pyro init strategies (where in its support each chain starts).
INIT_STRATEGIES = {
    "uniform": init_strategies.init_to_uniform,
    "median": init_strategies.init_to_median,
    "mean": init_strategies.init_to_mean,
    "sample": init_strategies.init_to_sample,
}

#: Errors a JIT trace of the potential may raise; the run then goes on without JIT.
_JIT_ERRORS = (RuntimeError, TypeError, ValueError, NotImplementedError, AssertionError, AttributeError)


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
    jit_compile : bool
        Trace the potential with ``torch.jit`` (falls back to none if tracing fails).
    init : str
        A key of :data:`INIT_STRATEGIES`.
    seed : int or None
        Chain ``c`` is seeded ``seed + c``; None: the global RNG's current state.
    progress : bool or None
        Pyro's progress bar (None: only when stderr is a terminal).
    """

    num_samples: int
    warmup_steps: int
    num_chains: int
    target_accept_prob: float
    max_tree_depth: int
    jit_compile: bool
    init: str
    seed: int | None
    progress: bool | None


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
    jit_compile : bool
        Whether the chains ran with a JIT-compiled potential.
    notes : list[str]
        What happened that the user should know (a JIT trace that failed).
    """

    draws: dict
    divergences: list = field(default_factory=list)
    acceptance_rate: list = field(default_factory=list)
    step_size: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    jit_compile: bool = False
    notes: list = field(default_factory=list)


@contextlib.contextmanager
def preserved_state():
    """Restore Python's and numpy's global RNG states and Pyro's param store on exit.

    ``pyro.set_rng_seed`` seeds ``random`` and ``numpy`` besides torch, and a model's
    ``ppl.param`` statements add missing params to the store; the caller sees neither.
    (Torch's RNG is forked by :func:`~ppl.backends.common.runtime.run_context`.)"""
    py_state, np_state = random.getstate(), np.random.get_state()
    store = pyro.get_param_store()
    saved = store.get_state()
    saved = {"params": dict(saved["params"]), "constraints": dict(saved["constraints"])}
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        store.clear()
        store.set_state(saved)


def _kernel(model, s: ChainSettings, max_plate_nesting: int, jit: bool) -> NUTS:
    return NUTS(config_enumerate(model, default="parallel"), target_accept_prob=s.target_accept_prob,
                max_tree_depth=s.max_tree_depth, jit_compile=jit, ignore_jit_warnings=True,
                max_plate_nesting=max_plate_nesting, init_strategy=INIT_STRATEGIES[s.init])


def _one_chain(model, kwargs: dict, s: ChainSettings, mpn: int, jit: bool, chain: int) -> MCMC:
    if s.seed is not None:
        pyro.set_rng_seed((s.seed + chain) % 2**32)
    show = s.progress if s.progress is not None else sys.stderr.isatty()
    kernel = _kernel(model, s, mpn, jit)
    mcmc = MCMC(kernel, num_samples=s.num_samples, warmup_steps=s.warmup_steps, num_chains=1,
                disable_progbar=not show)
    mcmc.run(**kwargs)
    return mcmc


def _run_one(model, kwargs, s: ChainSettings, mpn: int, chain: int, result: ChainsResult, label: str) -> MCMC:
    """One chain; with JIT, a failed trace is noted and the chain rerun without it."""
    try:
        return _one_chain(model, kwargs, s, mpn, result.jit_compile, chain)
    except PPLError:
        raise
    except _JIT_ERRORS as e:
        if not result.jit_compile:
            hint = "; try another init ('median', 'sample') or check the model" if "initial" in str(e) else ""
            raise ModelError(f"NUTS could not run model '{label}' (chain {chain}): {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else e!r}{hint}") from e
        result.jit_compile = False
        result.notes.append(f"jit_compile=True: tracing the potential failed ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else e!r}); ran without JIT")
        return _run_one(model, kwargs, s, mpn, chain, result, label)


def run_chains(model, kwargs: dict, s: ChainSettings, max_plate_nesting: int, label: str = "model") -> ChainsResult:
    """Run ``s.num_chains`` NUTS chains of ``model`` one after another.

    Parameters
    ----------
    model : callable
        A Pyro model already conditioned on the data; its discrete latents are
        enumerated (``config_enumerate``) and summed out.
    kwargs : dict
        The model's keyword arguments.
    s : ChainSettings
    max_plate_nesting : int
        Plates nested at most this deep (enumeration dims go to their left).
    label : str
        The model's name, for messages.

    Returns
    -------
    ChainsResult

    Raises
    ------
    ModelError
        When Pyro cannot run NUTS on the model (no valid initial point, a model that fails).
    """
    result = ChainsResult(draws={}, jit_compile=s.jit_compile)
    per_chain = []
    for chain in range(s.num_chains):
        start = time.perf_counter()
        mcmc = _run_one(model, kwargs, s, max_plate_nesting, chain, result, label)
        result.seconds.append(time.perf_counter() - start)
        per_chain.append({k: v.detach() for k, v in mcmc.get_samples(group_by_chain=True).items()})
        facts = mcmc.diagnostics()
        result.divergences.append(len(facts.get("divergences", {}).get("chain 0", [])))
        result.acceptance_rate.append(float(facts.get("acceptance rate", {}).get("chain 0", float("nan"))))
        result.step_size.append(float(mcmc.kernel.step_size))
    result.draws = {k: torch.cat([c[k] for c in per_chain], dim=0) for k in per_chain[0]}
    return result
