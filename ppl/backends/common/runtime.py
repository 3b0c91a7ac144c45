"""Where and how a backend's tensors live during a run: the default device and dtype for
the tensors the model creates, seeded random streams, and placing data."""

from __future__ import annotations

import contextlib
import math

import pyro
import torch

__all__ = ["run_context", "seeded_generator", "place", "count_observations"]


@contextlib.contextmanager
def run_context(device: torch.device, dtype: torch.dtype, seed=None):
    """Default device and dtype for tensors the model creates, and an optional seed.

    The caller's torch default dtype is restored afterwards, and with a ``seed`` the
    global torch RNG (and the CUDA one when ``device`` is CUDA) is forked, so the
    caller's random state is left as it was found.

    Parameters
    ----------
    device : torch.device
    dtype : torch.dtype
        A floating dtype, set as torch's default inside the block.
    seed : int, optional
        Seeds Pyro's RNG (torch, numpy, random) inside the block.
    """
    old_dtype = torch.get_default_dtype()
    rng = contextlib.nullcontext()
    if seed is not None:
        devices = [device] if device.type == "cuda" else []
        rng = torch.random.fork_rng(devices=devices)
    with rng:
        if seed is not None:
            pyro.set_rng_seed(int(seed))
        torch.set_default_dtype(dtype)
        try:
            # torch.device as a context manager routes every torch call through a Python
            # TorchFunctionMode: worth it only to put the model's own tensors on an accelerator
            with device if device.type != "cpu" else contextlib.nullcontext():
                yield
        finally:
            torch.set_default_dtype(old_dtype)


def seeded_generator(seed, device: torch.device) -> torch.Generator:
    """A torch Generator on ``device`` seeded with ``seed`` (fresh entropy when None)."""
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    return gen


def place(value, device: torch.device, dtype: torch.dtype):
    """``value`` on ``device``, floating tensors cast to ``dtype`` (other values as they are)."""
    if isinstance(value, torch.Tensor):
        value = value.to(device)
        if value.is_floating_point():
            value = value.to(dtype)
    return value


def count_observations(graph) -> int:
    """Observed values: the batch elements of every observed site (at least 1); the scale
    of per-observation convergence tolerances."""
    n = 0
    for v in graph.observed():
        var = graph.variables[v]
        n += int(math.prod(var.batch_shape)) if var.batch_shape else 1
    return max(n, 1)
