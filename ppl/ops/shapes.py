"""Shape arithmetic in plain Python.

``torch.broadcast_shapes`` goes through ``torch._refs``, whose first use in a process
imports SymPy and ``torch.fx``'s symbolic shapes (about 0.6 s here), and costs ~0.2 ms a
call after that; the shapes ppl broadcasts are short tuples of ints.
"""

from __future__ import annotations

__all__ = ["broadcast_shapes", "unexpand"]


def broadcast_shapes(*shapes) -> tuple:
    """The shape NumPy/PyTorch broadcasting gives ``shapes`` (each a tuple or
    ``torch.Size`` of non-negative ints), as ``torch.broadcast_shapes`` does.

    Returns
    -------
    tuple[int, ...]

    Raises
    ------
    RuntimeError
        If two shapes disagree at a dim where neither is 1 (as torch raises).
    """
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for s in shapes:
        offset = rank - len(s)
        for i, n in enumerate(s):
            n = int(n)
            cur = out[offset + i]
            if cur == 1:
                out[offset + i] = n
            elif n != 1 and n != cur:
                raise RuntimeError(f"shapes {[tuple(x) for x in shapes]} cannot be broadcast together "
                                   f"(dim {offset + i - rank}: {cur} vs {n})")
    return tuple(out)


def unexpand(t):
    """``t`` with every dim it was expanded along (stride 0, size > 1) narrowed to size 1: a
    view holding each distinct value once (``torch.Tensor.expand`` makes such dims; Pyro's
    plates expand a distribution's parameters to the plate size that way).  Elementwise
    checks on it answer for all the copies at the cost of one."""
    for dim in range(t.dim()):
        if t.shape[dim] > 1 and t.stride(dim) == 0:
            t = t.narrow(dim, 0, 1)
    return t
