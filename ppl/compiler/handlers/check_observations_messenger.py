"""The messenger that checks observed values against their sites while the model runs.

The check runs as a Pyro messenger right after ``condition`` has put the observed value
into the site, *before* the model reads it back: a value outside the support raises a
:class:`~ppl.errors.DataError` naming the site even when the model would first use it to
index a table (a Bayesian-network parent), instead of an IndexError deep in the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ...dsl import is_deterministic
from ...errors import DataError, ModelError
from .. import families

__all__ = ["CheckObservations", "check_observation", "structure_change_message", "STRUCTURE_CHANGED"]

#: The words every "sites changed between runs" ModelError holds (see :func:`structure_change_message`).
STRUCTURE_CHANGED = "sample sites changed between runs"

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
    sites : mapping of str to SiteRecord, or iterable of str, optional
        The sample sites of the compiled model (``graph.sites``: its params are left out;
        or the names of its sample, ``factor`` and ``deterministic`` sites).  When given,
        every run is checked against them: a run that reaches a sample site the compiled
        model does not have, or that returns without visiting one it has, raises
        :class:`~ppl.errors.ModelError` (a model whose structure depends on random numbers
        or on latent values), instead of a ``KeyError`` where a backend looks the site up.

    Raises
    ------
    DataError
        An observed value with NaN/inf, a shape that does not fit the site's
        ``batch_shape + event_shape`` (it may be smaller and broadcast, never larger),
        or a value outside the support; the message names the site, expected and actual.
    ModelError
        With ``sites``: a run whose sample sites differ from them.
    """

    def __init__(self, model, observations: dict, validate: bool = True, sites=None):
        super().__init__()
        self.model = model
        self.observations = observations
        self.validate = validate
        self.sites = None if sites is None else _sample_site_names(sites)
        self._seen: set = set()

    def __enter__(self):
        self._seen = set()
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        out = super().__exit__(exc_type, exc_value, traceback)
        if exc_type is None and self.sites is not None:
            missing = [s for s in self.sites if s not in self._seen]
            if missing:
                raise ModelError(structure_change_message(
                    getattr(self.model, "name", "model"), missing=missing, extra=[]))
        return out

    def _pyro_sample(self, msg):
        if self.sites is not None and not site_is_subsample(msg):
            name = msg["name"]
            if name not in self.sites:
                raise ModelError(structure_change_message(
                    getattr(self.model, "name", "model"), missing=[], extra=[name]))
            self._seen.add(name)
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
                value = torch.as_tensor(_numbers_of(value))
            except (TypeError, ValueError, RuntimeError):
                shown = " ".join(repr(value).split())
                shown = shown if len(shown) <= 80 else shown[:77] + "..."
                raise DataError(f"observed site '{name}': cannot read its value {shown} ({type(value).__name__}) "
                                "as numbers") from None
        if value.is_complex():  # a cast to a real dtype would drop the imaginary part silently
            raise DataError(f"observed site '{name}': its value is complex ({value.dtype}); expected real numbers "
                            f"for its {family} distribution (pass x.real or x.abs() if that is what you mean)")
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


def _numbers_of(value):
    """An ``obs=`` value as torch reads it: a pandas Series (a model argument reaches the
    model unchanged, so ``obs=x`` gets the Series itself) or another array-like with a
    ``to_numpy()`` (a DataFrame, a polars Series) as its numpy array (a copy where it
    must be one); anything else as it is."""
    to_numpy = getattr(value, "to_numpy", None)
    if callable(to_numpy) and not isinstance(value, np.ndarray):
        return np.array(to_numpy())
    return value


def _sample_site_names(sites) -> dict:
    """``sites`` (``graph.sites``, or names) as an insertion-ordered dict of names (a set
    that keeps the compiled order for messages); params are left out."""
    if isinstance(sites, Mapping):
        return {name: None for name, record in sites.items() if getattr(record, "kind", "sample") != "param"}
    if isinstance(sites, Iterable) and not isinstance(sites, str):
        return {name: None for name in sites}
    raise TypeError(f"CheckObservations: sites must be a mapping or names of sites, got {type(sites).__name__}")


def structure_change_message(model_name: str, *, missing, extra, runs: str | None = None) -> str:
    """The message of the :class:`~ppl.errors.ModelError` for a model whose sample sites
    changed between runs.

    Parameters
    ----------
    model_name : str
    missing : list of str
        Sites of the first (compiled) run that a later run did not visit.
    extra : list of str
        Sites a later run visited that the first did not have.
    runs : str, optional
        What the two runs were (default: the compiled run and a later run).
    """
    runs = runs or "the run it was compiled from and a later run"
    parts = []
    if missing:
        parts.append(f"site(s) {_short(missing)} of the first run are missing from the second")
    if extra:
        parts.append(f"site(s) {_short(extra)} appear only in the second")
    return (f"model '{model_name}': its {STRUCTURE_CHANGED} ({runs}): {'; '.join(parts)}. "
            "ppl compiles a model's structure once, so the set of sites must not depend on random numbers "
            "(torch.randint, np.random, random) or on the values of latent sites: pass loop counts and branch "
            "choices as data (model arguments), or keep every site and switch its effect off with poutine.mask")


def _short(names, limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"


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
