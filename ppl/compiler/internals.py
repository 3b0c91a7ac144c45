"""The Pyro and torch internals the compiler reads, each behind one documented function.

None of these has a public API (checked against Pyro 1.9 and torch 2.13): they are read
here, and only here, so that a Pyro or torch upgrade that changes one of them has a
single place to fix.

* :func:`no_torch_function` — torch's switch that runs an op on a tensor subclass
  without dispatching to the subclass's ``__torch_function__`` (what a subclass's own
  ``__torch_function__`` must do to compute the plain result).  The public alternative,
  ``super().__torch_function__``, converts every result back to the subclass, which
  :class:`~ppl.compiler.probe.Probe` and :class:`~ppl.compiler.provenance.Tracked` must
  not do.
* :func:`mask_of` — the mask of a Pyro ``MaskedDistribution`` (kept in ``_mask``).
* :func:`given_parameter` — whether a ``Categorical`` / ``Bernoulli`` was built from
  ``probs`` or from ``logits`` (torch keeps the one given in ``_param``; the other is a
  lazy property that appears in the instance once read).
* :func:`constructor_argument` — a distribution's constructor argument as stored,
  without computing the lazy properties of the other parametrisations.
"""

from __future__ import annotations

import torch

__all__ = ["no_torch_function", "mask_of", "given_parameter", "constructor_argument"]


def no_torch_function():
    """A context manager inside which torch ops on tensor subclasses run as on plain
    tensors: the subclasses' ``__torch_function__`` is not called, and results are plain
    tensors unless an op returns its input (``torch._C.DisableTorchFunctionSubclass``).

    Returns
    -------
    context manager
    """
    return torch._C.DisableTorchFunctionSubclass()


def mask_of(fn):
    """The mask of a Pyro ``MaskedDistribution`` (``dist.mask(m)``, ``obs_mask``).

    Parameters
    ----------
    fn : pyro.distributions.MaskedDistribution

    Returns
    -------
    torch.BoolTensor or bool
        As Pyro stores it: a bool tensor of the distribution's batch shape, or a Python
        bool (``False`` masks everything out).
    """
    return fn._mask


def given_parameter(fn) -> str:
    """The parametrisation a ``Categorical`` or ``Bernoulli`` was built from.

    Parameters
    ----------
    fn : torch.distributions.Categorical or torch.distributions.Bernoulli

    Returns
    -------
    str
        ``"probs"`` or ``"logits"``: the argument given to the constructor (the other
        one is derived from it on first access).
    """
    return "probs" if fn.__dict__.get("probs") is fn._param else "logits"


def constructor_argument(fn, name: str):
    """A distribution's constructor argument ``name`` as the constructor stored it, or None.

    torch distributions compute their other parametrisations lazily (``probs`` from
    ``logits``, ``precision_matrix`` from ``scale_tril``...); reading the instance's own
    attributes sees only what was given or already computed, and computes nothing.

    Parameters
    ----------
    fn : torch.distributions.Distribution
    name : str
        An argument name (``"loc"``, ``"probs"``, ``"scale_tril"``...).

    Returns
    -------
    torch.Tensor or None
    """
    return fn.__dict__.get(name)
