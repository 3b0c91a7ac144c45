"""Where and how a backend's tensors live during a run: the default device and dtype for
the tensors the model creates, seeded random streams, and placing data."""

from __future__ import annotations

import contextlib
import math
import re

import pyro
import torch

from ...rng import kept_global_rngs

__all__ = ["run_context", "seeded_generator", "place", "count_observations", "in_dtype_or_default"]


@contextlib.contextmanager
def run_context(device: torch.device, dtype: torch.dtype, seed=None):
    """Default device and dtype for tensors the model creates, and an optional seed.

    The caller's torch default dtype is restored afterwards, and with a ``seed`` the
    global torch RNG (the CUDA one too when ``device`` is CUDA), numpy's and Python's
    ``random`` are restored afterwards, so the caller's random state is left as it was.

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
        rng = kept_global_rngs(devices)
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


def in_dtype_or_default(run, dtype, *, given: bool):
    """``run(dtype, notes)`` in ``dtype`` (None: torch's default dtype).  When the dtype was
    not ``given`` and the run fails at once with torch's complaint about tensors of two
    dtypes (a model that computes with float32 tensors of its own, e.g. an ``nn.Module``'s
    weights, under a float64 run), Pyro's param store is put back and the run repeated in
    torch's default dtype, with a note; if that fails too, the first error is raised.

    Raises
    ------
    ModelError
        From ``run``."""
    from ...errors import ModelError
    from .params import store_restore, store_snapshot

    default = torch.get_default_dtype()
    dtype = dtype or default
    if given or dtype == default:
        return run(dtype, [])
    snapshot = store_snapshot()
    try:
        return run(dtype, [])
    except ModelError as e:
        if not _mixed_dtypes(e):
            raise
        first = e
    store_restore(snapshot)
    line = str(first).splitlines()[0][:160] if str(first) else type(first).__name__
    note = (f"dtype: the run in {_dtype_name(dtype)} failed ({line}): the model computes with tensors of another "
            f"dtype (e.g. an nn.Module's weights), so it ran in torch's default dtype {_dtype_name(default)}; pass "
            "dtype= to choose")
    try:
        return run(default, [note])
    except ModelError:
        raise first from None


def _mixed_dtypes(error) -> bool:
    """Whether ``error`` (or what caused it) is torch's complaint about tensors of two dtypes."""
    text = []
    while error is not None and len(text) < 5:
        text.append(str(error))
        error = error.__cause__ or error.__context__
    return bool(_DTYPE_CLASH.search(" ".join(text)))


_DTYPE_CLASH = re.compile(r"dtype|scalar type|\bDouble\b|\bFloat\b|\bdouble\b|\bfloat\b|\bHalf\b")


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")
