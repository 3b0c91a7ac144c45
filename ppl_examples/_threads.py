"""Thread limits shared by the examples that time ppl against a peer library."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def limit_threads(n):
    """``n`` threads for torch and for the BLAS/OpenMP pools (through threadpoolctl) while
    the block runs, then the previous settings; ``n <= 0`` leaves the defaults."""
    if n <= 0:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # threadpoolctl comes with scikit-learn
            yield
        else:
            with threadpool_limits(n):
                yield
    finally:
        torch.set_num_threads(old)
