"""The caller's global random state, kept: one context manager that every seeded piece of ppl
(a backend's run, a posterior's draws, Pathfinder's set-up) enters, so a seeded call leaves
torch's, numpy's and Python's global RNGs as it found them."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

__all__ = ["kept_global_rngs", "seeded_globals"]


@contextlib.contextmanager
def kept_global_rngs(devices=()):
    """Restore torch's CPU RNG (and those of the CUDA ``devices``), numpy's and Python's
    ``random`` global states on exit, whatever the block seeds or draws.

    Parameters
    ----------
    devices : sequence of CUDA devices or indices
        CUDA RNGs to restore too (``torch.random.fork_rng``'s ``devices``)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(devices)):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def seeded_globals(seed=None, devices=()):
    """With a ``seed``: seed torch's, numpy's and Python's global RNGs (as
    ``pyro.set_rng_seed``) inside the block and restore the caller's states on exit, so that
    random numbers a model draws from the global streams itself (``torch.rand``,
    ``np.random`` inside the model) are the same in every run with that seed.  With
    ``seed=None`` the block runs as it is.

    Parameters
    ----------
    seed : int or None
    devices : sequence of CUDA devices or indices
        CUDA RNGs to seed and restore too."""
    if seed is None:
        yield
        return
    with kept_global_rngs(devices):
        random.seed(int(seed))
        np.random.seed(int(seed))
        torch.manual_seed(int(seed))
        yield
