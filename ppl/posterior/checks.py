"""Argument checks, the memory budget and RNG isolation shared by every Posterior.

* :func:`check_level`, :func:`check_count`, :func:`check_seed`: the arguments of the query
  methods (``quantile(site, q)``, ``sample(num_samples, seed)``, ``to_arviz(num_samples)``,
  ``plot(..., num_samples)``), refused with an :class:`~ppl.errors.OptionError` that names the
  argument, the value given and what is accepted;
* :func:`check_memory`: the one check, made *before* allocating, that a batch of draws or a
  table fits the memory budget (:class:`~ppl.errors.IntractableError` otherwise);
* :func:`isolated_rng`: a seeded block that leaves the global RNGs of torch, numpy and
  Python's ``random`` as they were.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import random

import torch

from ..errors import IntractableError, OptionError
from ..rng import kept_global_rngs

__all__ = ["FIXED_SEED", "check_level", "check_count", "check_seed", "check_budget", "default_budget", "check_memory",
           "isolated_rng", "numel"]

#: Seed of the draws behind moments and quantiles that have no closed form (a fixed seed, so
#: that they are the same on every call and in every identical run).
FIXED_SEED = 0

_SEED_MAX = 2**32 - 1  # numpy's range, as the ``seed`` option of ppl.infer


def _show(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def check_level(q, *, name: str = "q", call: str = "quantile") -> float:
    """``q`` as a float if it is a probability level: a real number (bools refused) in
    ``[0, 1]``.

    Raises
    ------
    OptionError
        Naming ``name``, the value and ``[0, 1]``; a tensor, list or NaN is refused too
        (ask for one level per call)."""
    if isinstance(q, bool) or not isinstance(q, numbers.Real):
        raise OptionError(f"{call}(): {name} must be a single number in [0, 1] (a float or int), got {_show(q)}; "
                          "ask for one level per call")
    value = float(q)
    if not (0.0 <= value <= 1.0):  # NaN fails too
        raise OptionError(f"{call}(): {name} must be in [0, 1], got {q!r}")
    return value


def check_count(n, *, name: str = "num_samples", call: str = "sample") -> int:
    """``n`` as an int if it is a positive integer (bools, floats, tensors refused).

    Raises
    ------
    OptionError
        Naming ``name``, the value and "a positive integer"."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise OptionError(f"{call}(): {name} must be a positive integer, got {_show(n)}")
    return int(n)


def check_seed(seed, *, call: str = "sample"):
    """``seed`` as an int (or ``None``) if it is ``None`` or an integer in ``[0, 2**32 - 1]``.

    Raises
    ------
    OptionError
        Naming ``seed``, the value and the range accepted."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= _SEED_MAX:
        raise OptionError(f"{call}(): seed must be None or an integer in [0, 2**32 - 1], got {_show(seed)}")
    return int(seed)


def default_budget() -> int:
    """The default memory budget in bytes: ppl's ``DEFAULT_MEMORY_BUDGET`` (2 GiB), the
    budget of ``ppl.infer(..., memory_budget=None)``."""
    from ..analysis.report import DEFAULT_MEMORY_BUDGET

    return int(DEFAULT_MEMORY_BUDGET)


def check_budget(budget) -> int:
    """A Posterior's memory budget in bytes: ``budget`` if it is a positive number of bytes
    (an int, or a whole float such as ``2**31`` or ``1e9``), :func:`default_budget` if ``None``.

    Raises
    ------
    OptionError
        Naming ``memory_budget``, the value and what is accepted (as the ``memory_budget``
        option of ``ppl.infer``)."""
    if budget is None:
        return default_budget()
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not math.isfinite(budget) \
            or budget <= 0 or budget != int(budget):
        raise OptionError(f"post.memory_budget must be a positive number of bytes (e.g. 2**31) or None, "
                          f"got {_show(budget)}")
    return int(budget)


def check_memory(count: int, item_bytes: int, budget: int | None, *, what: str, unit: str = "draws",
                 detail: str = "", fix: str = "ask for fewer draws",
                 raise_budget: str = "post.memory_budget = <bytes>") -> None:
    """Refuse, before allocating, ``count`` items of ``item_bytes`` bytes each over ``budget``.

    Parameters
    ----------
    count : int
        Items to allocate (draws, table rows).
    item_bytes : int
        Bytes per item (elements of every site × element size).
    budget : int or None
        Bytes allowed (``None``: :func:`default_budget`).
    what : str
        The call that allocates, e.g. ``"sample(num_samples=10**9)"``.
    unit, detail, fix : str
        Name of the items, what an item holds, what to do instead (for the message).
    raise_budget : str
        How to raise the budget where the call is made (for the message).

    Raises
    ------
    IntractableError
        With ``bytes`` (what would be allocated) and ``budget`` set; the message gives both,
        the largest ``count`` that fits and how to raise the budget (``post.memory_budget``).
    """
    from ..analysis.report import format_bytes

    budget = default_budget() if budget is None else int(budget)
    total = int(count) * int(item_bytes)
    if total <= budget:
        return
    fits = budget // max(int(item_bytes), 1)
    detail = f" × {detail}" if detail else ""
    raise IntractableError(
        f"{what} would allocate {format_bytes(total)} ({count:,} {unit}{detail}), over the memory budget of "
        f"{format_bytes(budget)}; {fix} (at most {fits:,} fit) or raise the budget ({raise_budget})",
        bytes=total, budget=budget)


@contextlib.contextmanager
def isolated_rng(seed: int):
    """Seed torch's (CPU, and every initialised CUDA device's), numpy's and Python's global
    RNGs with ``seed`` inside the block and restore all three afterwards, so the draws made
    inside are reproducible and the caller's random state is untouched."""
    import numpy as np

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with kept_global_rngs(devices):
        torch.manual_seed(int(seed))
        random.seed(int(seed))
        np.random.seed(int(seed) % 2**32)
        yield


def numel(shape) -> int:
    """Elements of a tensor of ``shape``."""
    return int(math.prod(int(s) for s in shape))
