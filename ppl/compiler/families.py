"""Facts about the distribution at a site: its family name, whether it is discrete and
enumerable, its cardinality and support.

These facts are read off the torch/Pyro distribution object; wrappers that do not
change the family (``Independent``/``.to_event``, ``.expand``, masking) are looked
through.
"""

from __future__ import annotations

import torch
from torch.distributions import constraints

__all__ = ["base_distribution", "family_name", "is_enumerable", "cardinality", "support_repr", "is_discrete",
           "is_unit_uniform"]

_WRAPPERS = ("Independent", "ExpandedDistribution", "MaskedDistribution", "ScaledDistribution")


def base_distribution(fn):
    """Strip wrappers (Independent, expand, mask) that do not change the family.

    Parameters
    ----------
    fn : torch.distributions.Distribution

    Returns
    -------
    torch.distributions.Distribution
        The innermost distribution.
    """
    while type(fn).__name__ in _WRAPPERS and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def family_name(fn) -> str:
    """The family of a site's distribution, e.g. ``"Categorical"``, ``"Normal"``;
    ``"factor"`` for ``ppl.factor`` sites and ``"Delta"`` for deterministic ones."""
    base = base_distribution(fn)
    name = type(base).__name__
    if name == "Unit":
        return "factor"
    return name


def is_unit_uniform(fn) -> bool:
    """Whether ``fn`` is ``Uniform(0, 1)`` in every element (wrappers looked through): the
    ``Beta(1, 1)`` it equals, so a conjugate method may treat it as that Beta.

    Parameters
    ----------
    fn : torch.distributions.Distribution

    Returns
    -------
    bool
        False for any other family, and for ``Uniform(a, b)`` on another interval (a
        scaled Beta, not a Beta).
    """
    base = base_distribution(fn)
    if type(base).__name__ != "Uniform":
        return False
    return bool((torch.as_tensor(base.low) == 0).all()) and bool((torch.as_tensor(base.high) == 1).all())


def is_enumerable(fn) -> bool:
    """True if the distribution has a finite support that torch can enumerate."""
    return bool(getattr(fn, "has_enumerate_support", False))


def is_discrete(fn) -> bool:
    """True for distributions over integer-valued (or one-hot) supports."""
    if is_enumerable(fn):
        return True
    support = getattr(fn, "support", None)
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return bool(getattr(support, "is_discrete", False))


def cardinality(fn) -> int | None:
    """Number of values in the support of an enumerable distribution, else ``None``."""
    if not is_enumerable(fn):
        return None
    try:
        return int(fn.enumerate_support(expand=False).shape[0])
    except (NotImplementedError, ValueError, RuntimeError):
        return None


def support_repr(fn) -> str:
    """A short readable form of the support constraint, e.g. ``"integer_interval(0, 3)"``."""
    support = getattr(fn, "support", None)
    if support is None:
        return "?"
    return repr(support).replace("torch.distributions.constraints.", "")


def enumerate_values(fn, dtype=None) -> torch.Tensor:
    """The support of an enumerable distribution as a tensor of shape
    ``(cardinality,) + event_shape`` (batch dims dropped).

    Raises
    ------
    ValueError
        If the support varies across the batch (e.g. Binomial with batched total_count).
    """
    values = fn.enumerate_support(expand=False)
    card = values.shape[0]
    event_shape = fn.event_shape
    # values has shape (card,) + (1,)*len(batch_shape) + event_shape
    return values.reshape((card,) + tuple(event_shape))
