"""A ``torch.jit.trace`` of a log density, kept only where it checks out against the eager one.

Hamiltonian samplers evaluate the gradient of the same function thousands of times; a
traced graph skips Python and Pyro's handlers on each call (about 2.5x on small models).
A trace records one path through the model's Python, so a model whose control flow
depends on the latent values would be traced wrongly: the trace is compared with the
eager function, value and gradient, at several points before it is used.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["JIT_ERRORS", "checked_trace", "value_and_grad"]

#: Errors a JIT trace of a model may raise; the caller then goes on without JIT.
JIT_ERRORS = (RuntimeError, TypeError, ValueError, NotImplementedError, AssertionError, AttributeError)


def value_and_grad(f, z: torch.Tensor):
    """``(f(z), ∂ Σ f(z) / ∂z)``, both detached; ``f`` maps ``z`` to a scalar or to one value
    per row of ``z``."""
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        v = f(z)
        (g,) = torch.autograd.grad(v.sum(), z)
    return v.detach(), g.detach()


def checked_trace(f, points: list, jit: bool | None):
    """``(function, traced, why)``: ``f`` traced with ``torch.jit.trace`` at ``points[0]``
    and kept when its value and gradient equal the eager ones at every point (values to
    1e-9, gradients to 1e-7 relative); else ``f`` itself with ``why`` saying what failed.

    Parameters
    ----------
    f : callable
        ``z`` (a tensor of the shape of ``points[0]``) -> a scalar or one value per row.
    points : list of torch.Tensor
        Where to compare (at least one; the trace's example is the first).
    jit : bool or None
        False: do not trace (``why`` is None); True or None: trace and check.

    Returns
    -------
    tuple
        ``(callable, bool, str or None)``.
    """
    if jit is False:
        return f, False, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(f, (points[0].detach().clone().requires_grad_(True),), check_trace=False)
        for z in points:
            a, ga = value_and_grad(f, z)
            b, gb = value_and_grad(traced, z)
            finite = torch.isfinite(a)
            if not (torch.equal(finite, torch.isfinite(b))
                    and torch.allclose(a[finite], b[finite], rtol=1e-9, atol=1e-9)
                    and torch.allclose(ga.nan_to_num(), gb.nan_to_num(), rtol=1e-7, atol=1e-9)):
                return f, False, "the traced potential differs from the model's at a test point"
    except JIT_ERRORS as e:
        return f, False, (f"tracing the potential failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else e!r})")
    return traced, True, None
