"""The memory check a sampling backend makes before it allocates its draws: ``num_draws``,
``num_samples × num_chains`` or ``num_paths × num_draws`` rows of the model's unconstrained
coordinates, refused over the ``memory_budget`` option with an
:class:`~ppl.errors.IntractableError` (not an allocator's ``RuntimeError`` or the OS killing
the process), as ``post.sample(n)`` refuses its draws."""

from __future__ import annotations

from ...posterior.checks import check_memory

__all__ = ["check_draws", "WORKING_COPIES"]

#: Copies of the draws a backend holds at once (the draws, their transforms, the weighted
#: or resampled copies, the constrained values), for the estimate of their bytes.
WORKING_COPIES = 4


def check_draws(dim: int, options, *, method: str, itemsize: int = 8, **counts: int) -> None:
    """Refuse the product of ``counts`` draws of ``dim`` coordinates over
    ``options.memory_budget``.

    Parameters
    ----------
    dim : int
        Unconstrained coordinates per draw (``Potential.dim``; at least 1 is counted).
    options : Settings
        The run's options (``memory_budget``: bytes or None for the default budget).
    method : str
        The method, for the message.
    itemsize : int
        Bytes per coordinate.
    **counts : int
        The options whose product is the number of draws held, by name
        (``num_chains=4, num_samples=1000``).

    Raises
    ------
    IntractableError
        Naming the options, with the bytes, the budget and the most draws that fit.
    """
    count = 1
    for n in counts.values():
        count *= int(n)
    d = max(int(dim), 1)
    check_memory(count, d * int(itemsize) * WORKING_COPIES, getattr(options, "memory_budget", None),
                 what=f"method='{method}' with " + ", ".join(f"{k}={int(v):,}" for k, v in counts.items()),
                 detail=f"{d} coordinates × {WORKING_COPIES} working copies × {itemsize} bytes",
                 fix="lower " + " or ".join(counts), raise_budget="memory_budget=<bytes>")
