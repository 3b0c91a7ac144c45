"""The messenger that checks observed values against their sites while the model runs.

The check runs as a Pyro messenger right after ``condition`` has put the observed value
into the site, *before* the model reads it back: a value outside the support raises a
:class:`~ppl.errors.DataError` naming the site even when the model would first use it to
index a table (a Bayesian-network parent), instead of an IndexError deep in the model.
"""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ...dsl import is_deterministic
from ...errors import DataError
from .. import families

__all__ = ["CheckObservations", "check_observation"]

# Families whose values index tables in model code and must stay integer.
_INDEX_FAMILIES = ("Categorical", "OneHotCategorical")


class CheckObservations(Messenger):
    """Validate each observed value, whether bound from ``data`` or given with ``obs=``, and
    cast it to what its family computes with: integer/bool data on float-valued families
    (Bernoulli, Poisson, ...) to the family's float dtype, lower-precision floats up to it,
    integral floats on Categorical sites to int64 (model code indexes tables with them).  Values are replaced, never
    modified in place.

    Parameters
    ----------
    model : ppl.dsl.Model
        For messages (name, state names).
    observations : dict[str, torch.Tensor]
        The bound observations (unused: every observed site is checked, whether its value
        came from ``data`` or from ``obs=`` in the model; kept for messages).
    validate : bool
        Check values (default).  ``False`` only casts: for the repeated runs of a model
        whose data were checked when it was compiled.

    Raises
    ------
    DataError
        An observed value with NaN/inf, a shape that does not fit the site's
        ``batch_shape + event_shape`` (it may be smaller and broadcast, never larger),
        or a value outside the support; the message names the site, expected and actual.
    """

    def __init__(self, model, observations: dict, validate: bool = True):
        super().__init__()
        self.model = model
        self.observations = observations
        self.validate = validate

    def _pyro_sample(self, msg):
        if not msg["is_observed"] or site_is_subsample(msg) or is_deterministic(msg):
            return
        fn = msg["fn"]
        family = families.family_name(fn)
        if family == "factor":
            return
        name = msg["name"]
        value = msg["value"]
        if not isinstance(value, torch.Tensor):  # obs= given a Python number or list
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):
                raise DataError(f"observed site '{name}': cannot read its value {value!r} as numbers") from None
        if family in _INDEX_FAMILIES:
            if value.is_floating_point() and bool(torch.isfinite(value).all()) and bool((value == value.round()).all()):
                value = value.long()  # integral floats index tables in model code
        elif not value.is_floating_point():
            value = value.to(_float_dtype(fn))  # int/bool data on a float-valued family (Bernoulli, Poisson...)
        else:
            dtype = _float_dtype(fn)
            if torch.finfo(dtype).bits > torch.finfo(value.dtype).bits:
                value = value.to(dtype)  # lossless: float32 data must not pull a float64 density down
        msg["value"] = value
        if self.validate:
            check_observation(self.model, name, fn, value)


def _float_dtype(fn) -> torch.dtype:
    try:
        mean = fn.mean
        if mean.is_floating_point():
            return mean.dtype
    except (NotImplementedError, AttributeError):
        pass
    return torch.get_default_dtype()


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    """True if ``shape`` broadcasts to exactly ``target`` (no added or enlarged dims).
    Plain Python: ``torch.broadcast_shapes`` costs ~0.2 ms a call, once per observed site."""
    if len(shape) > len(target):
        return False
    return all(s == t or s == 1 for s, t in zip(reversed(shape), reversed(target)))


def check_observation(model, name: str, fn, value: torch.Tensor) -> None:
    """Raise :class:`DataError` if ``value`` does not fit site ``name`` with distribution ``fn``.

    Parameters
    ----------
    model : ppl.dsl.Model
        For messages (its ``state_names`` name the states of the site).
    name : str
    fn : Distribution
    value : torch.Tensor
        The observed value, already cast (:class:`CheckObservations`).

    Raises
    ------
    DataError
        If ``value`` holds NaN/inf, has a shape that does not broadcast to exactly
        ``fn.batch_shape + fn.event_shape``, or lies outside ``fn.support`` (the
        message shows the first offending value).
    """
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise DataError(f"observed site '{name}' has NaN or inf values; expected finite values in its support")
    expected = tuple(fn.batch_shape) + tuple(fn.event_shape)
    if not _broadcasts_to(tuple(value.shape), expected):
        raise DataError(
            f"observed site '{name}': value of shape {tuple(value.shape)} does not fit the site's "
            f"batch_shape + event_shape {expected} ({families.family_name(fn)}); it may broadcast to that "
            "shape but not add or enlarge dimensions (declare repeated observations with ppl.plate)"
        )
    try:
        ok = torch.as_tensor(fn.support.check(value))
    except Exception:  # a support whose check does not apply to this value type
        return
    if not bool(ok.all()):
        bad = (~ok).nonzero()
        idx = tuple(bad[0].tolist()) if bad.numel() else ()
        offending = value[idx] if idx and value.dim() >= len(idx) else value
        names = model.state_names.get(name)
        hint = f" (states: {names})" if names else ""
        raise DataError(
            f"observed site '{name}': value {offending.tolist()} is outside the support "
            f"{families.support_repr(fn)} of its {families.family_name(fn)} distribution{hint}"
        )
