"""One traced run of a model with provenance tracking.

Every sample value and param value is wrapped in a tensor that remembers the site it
came from (:mod:`ppl.compiler.provenance`);
tensor operations propagate the union of provenances.  The provenance of
``site.fn.log_prob(site.value)`` is then exactly the set of sites that site's factor
depends on: its *scope*.  This is the mechanism of ``pyro.infer.inspect.get_dependencies``
(Webb et al. 2018) but with one ``log_prob`` per site instead of one per pair, so it is
linear in the number of sites.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.poutine.util import site_is_subsample

from ..dsl import BoundData, Model, is_deterministic, is_factor, trace_model
from ..errors import DataError, ModelError
from ..rng import kept_global_rngs
from . import families
from .handlers import CheckObservations, TrackProvenance
from .handlers.check_observations_messenger import structure_change_message
from .parameters import CheckParameters, check_parameters
from .internals import no_torch_function
from .mutation import restoring_classes
from .provenance import provenance_of, strip
from .zeros import exact_log_prob

__all__ = ["PlateInfo", "SiteRecord", "trace_with_provenance", "check_structure"]


@dataclass(frozen=True)
class PlateInfo:
    """A vectorised plate: ``size`` i.i.d. copies along tensor dimension ``dim`` (< 0).

    ``subsample_size`` is set (to ``size``) when the model subsamples the plate
    (Pyro's ``plate(name, full_size, subsample_size=...)``): the traced run then holds
    ``size`` of its ``full_size`` copies, a random minibatch that only SVI can use."""

    name: str
    size: int
    dim: int
    subsample_size: int | None = None
    full_size: int | None = None


@dataclass
class SiteRecord:
    """What one traced run says about one site.

    Attributes
    ----------
    name : str
    kind : str
        ``"sample"``, ``"param"``, ``"factor"`` (``ppl.factor``) or ``"deterministic"``.
    is_observed : bool
    fn : Distribution or None
        The site's distribution (``None`` for params).
    value : torch.Tensor
        The traced value, provenance stripped.
    plates : tuple[PlateInfo, ...]
        Vectorised plates enclosing the site, outermost first.
    scope : tuple[str, ...]
        Names of the sample/param sites the site's log density depends on (its own name
        included for sample sites), in trace order.
    """

    name: str
    kind: str
    is_observed: bool
    fn: object
    value: torch.Tensor
    plates: tuple = ()
    scope: tuple = ()
    infer: dict = field(default_factory=dict)


def _plate_info(frame) -> PlateInfo:
    """The :class:`PlateInfo` of one frame of a site's ``cond_indep_stack``."""
    size, full = int(frame.size), getattr(frame, "full_size", None)
    if full is None or int(full) == size:
        return PlateInfo(frame.name, size, int(frame.dim))
    return PlateInfo(frame.name, size, int(frame.dim), size, int(full))


def trace_with_provenance(model: Model, bound: BoundData) -> list[SiteRecord]:
    """Run ``model`` once with ``bound`` and return a :class:`SiteRecord` per site, in
    execution order.

    Observed values are validated against their site: NaN/inf, shape (must broadcast to
    the distribution's ``batch_shape + event_shape``) and support.

    Raises
    ------
    ModelError
        If the model raises while running, repeats a site name, or changes one of its
        argument tensors (or an observed value) in place: torch's version counter of the
        bound tensors is compared before and after the run.
    DataError
        If an observed value does not fit its site (the message names the site, the
        expected and the actual).
    """
    # restoring_classes: a tensor the model wrote a site's value into became Tracked for
    # this run (and the scopes below); it is a plain tensor again afterwards
    with pyro.validation_enabled(False), warnings.catch_warnings(), restoring_classes():  # the scopes' log_prob too
        # the latents' prior draws only trace the structure: torch's Wishart warns when a draw at
        # small degrees of freedom is numerically singular, which does not matter here
        warnings.filterwarnings("ignore", message="Singular sample detected", category=UserWarning)
        versions = _data_versions(bound)
        trace = trace_model(model, bound, TrackProvenance(), CheckObservations(model, bound.observations),
                            CheckParameters())
        _check_versions(model, versions)
        records: list[SiteRecord] = []
        for name, site in trace.nodes.items():
            if site["type"] == "param":
                value = strip(site["value"])
                constraint = (site.get("kwargs") or {}).get("constraint", torch.distributions.constraints.real)
                records.append(SiteRecord(name, "param", False, None, value, (), (name,),
                                          {"constraint": constraint}))  # the declared constraint, for params.py
                continue
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if is_deterministic(site):
                kind = "deterministic"
            elif is_factor(site):
                kind = "factor"
            else:
                kind = "sample"
            fn = site["fn"]
            if kind == "sample":
                check_parameters(name, fn)
            raw_value = site["value"]
            value = strip(raw_value)
            plates = tuple(_plate_info(f) for f in reversed(site["cond_indep_stack"])
                           if f.vectorized and f.dim is not None)
            scope: tuple = ()
            if kind in ("sample", "factor"):
                try:
                    log_prob = fn.log_prob(raw_value)
                except Exception as e:
                    raise ModelError(
                        f"site '{name}': log_prob of its {families.family_name(fn)} distribution at the traced value "
                        f"failed ({type(e).__name__}: {e})"
                    ) from e
                # the traced value is stored before TrackProvenance wraps it, so a site's own
                # name is added explicitly: a sample site's density always depends on its value
                scope = tuple(provenance_of(log_prob) | ({name} if kind == "sample" else set()))
                if kind == "sample" and site["is_observed"] and set(scope) <= {name}:
                    _check_possible(name, fn, raw_value, log_prob, site.get("mask"), model)
                if kind == "factor":
                    _check_factor(name, log_prob, scope, model)
            records.append(
                SiteRecord(name, kind, bool(site["is_observed"]), fn, value, plates, scope, dict(site.get("infer") or {}))
            )
    _order_scopes(records)
    _check_plates(model, records)
    return records


def _check_factor(name, log_factor, scope, model) -> None:
    """A ``ppl.factor`` whose log value is NaN at the traced run: no method can use a NaN
    log density (MAP's and SVI's distributions refuse it, samplers find no start).

    Raises
    ------
    ModelError
        Naming the site and the latents it depends on."""
    with no_torch_function():
        nan = bool(torch.isnan(strip(log_factor)).any()) if isinstance(log_factor, torch.Tensor) else False
    if nan:
        given = sorted(scope)
        at = f"at the traced run's value(s) of {', '.join(given)}" if given else "(it depends on no latent)"
        raise ModelError(f"ppl.factor site '{name}' of model '{model.name}' is NaN {at}: a log factor must be a "
                         "number or -inf; write impossible values as -inf (e.g. torch.where(x > 0, x.log(), "
                         "-torch.inf))")


def _check_possible(name, fn, value, log_prob, mask, model) -> None:
    """An observed site whose density depends on no latent and no param gives its value
    probability zero (``log p = -inf``, with torch's clamped ``log 0`` undone by
    :func:`~ppl.compiler.zeros.exact_log_prob`): the evidence is impossible whatever the
    latents are, so no method can give a number (a continuous posterior would otherwise be
    the prior, judged reliable).

    Raises
    ------
    DataError
        With ``log_evidence = -inf``, naming the site."""
    with no_torch_function():
        lp = exact_log_prob(fn, strip(value), strip(log_prob), mask if mask is None else strip(mask))
        impossible = bool(torch.isneginf(lp).any()) if isinstance(lp, torch.Tensor) else False
    if impossible:
        raise DataError(f"observed site '{name}' of model '{model.name}': its value has probability zero under its "
                        f"{families.family_name(fn)} distribution, which depends on no latent, so the evidence is "
                        "impossible (log evidence = -inf); check the data or the distribution's parameters",
                        log_evidence=-math.inf)


def check_structure(model: Model, bound: BoundData, records: list[SiteRecord]) -> None:
    """Run ``model`` a second time with ``bound``, from another random-number stream, and
    raise if it visits other sample sites than ``records`` (the compiled run) holds.

    ppl compiles a model's structure from one run; a model whose set of sites depends on
    unseeded random numbers (``torch.randint``, ``np.random``) or on a latent's value
    would otherwise be compiled with whichever structure its first run happened to
    take, and later runs would not match the graph.  The second run is a plain traced
    run (no provenance, no checks) with fresh prior draws of the latents; torch's global
    random state is restored afterwards, as after every traced run.  A second run that
    raises (an unlucky prior draw) says nothing about the structure and is ignored; two
    runs that agree do not prove the structure fixed (the backends check their own runs
    too, :class:`~ppl.compiler.handlers.CheckObservations` with ``sites=``).

    Raises
    ------
    ModelError
        If the second run's sample sites (``factor`` and ``deterministic`` sites
        included, params and plates not) differ from the first run's; the message names
        the sites that differ.
    """
    first = [r.name for r in records if r.kind != "param"]
    try:
        with kept_global_rngs(), pyro.validation_enabled(False), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = int(torch.randint(0, 2**32 - 1, ()))  # another stream for torch, numpy and random alike
            torch.default_generator.manual_seed(other)  # CPU only: CUDA seeds queue lazily
            np.random.seed(other)
            random.seed(other)
            trace = trace_model(model, bound)
    except Exception:  # noqa: BLE001 - see the docstring
        return
    second = [name for name, site in trace.nodes.items() if site["type"] == "sample" and not site_is_subsample(site)]
    if set(first) != set(second):
        seen = set(second)
        missing = [n for n in first if n not in seen]
        known = set(first)
        extra = [n for n in second if n not in known]
        raise ModelError(structure_change_message(model.name, missing=missing, extra=extra,
                                                  runs="two runs with the same data, while compiling it"))


def _tensors_in(value, label: str, depth: int = 0):
    """``(label, tensor)`` for a tensor, and for the tensors in a dict / list / tuple of
    them (two levels deep)."""
    if isinstance(value, torch.Tensor):
        yield label, value
    elif depth < 2 and isinstance(value, Mapping):
        for k, v in value.items():
            yield from _tensors_in(v, f"{label}[{k!r}]", depth + 1)
    elif depth < 2 and isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors_in(v, f"{label}[{i}]", depth + 1)


def _data_versions(bound: BoundData) -> list:
    """``(what, label, tensor, version)`` of every bound tensor: torch's version counter
    goes up on each in-place change (``x -= 1``, ``x.add_(1)``, ``x[0] = 5``)."""
    out = []
    for kind, items in (("argument", bound.kwargs.items()), ("observed value of site", bound.observations.items())):
        for key, value in items:
            for label, t in _tensors_in(value, key):
                try:
                    out.append((kind, key, label, t, t._version))
                except RuntimeError:  # inference-mode tensors keep no version counter
                    pass
    return out


def _check_versions(model: Model, versions: list) -> None:
    for kind, key, label, t, version in versions:
        if t._version != version:
            what = f"its argument '{key}'" if kind == "argument" else f"the observed value of site '{key}'"
            inner = f" (the tensor {label})" if label != key else ""
            raise ModelError(
                f"model '{model.name}' modified {what} in place{inner} (an in-place operation such as "
                f"{key} -= 1, {key}.add_(1) or {key}[0] = 5); ppl runs a model many times on the same data, so every "
                f"run would see data the previous runs shifted. Compute on a new tensor instead "
                f"({key} = {key} - 1, or {key} = {key}.clone() first)"
            )


def _order_scopes(records):
    order = {r.name: i for i, r in enumerate(records)}
    for r in records:
        r.scope = tuple(sorted((s for s in r.scope if s in order), key=order.__getitem__))


def _check_plates(model, records):
    seen: dict[str, PlateInfo] = {}
    for r in records:
        for p in r.plates:
            q = seen.setdefault(p.name, p)
            if (q.size, q.dim) != (p.size, p.dim):
                raise ModelError(
                    f"model '{model.name}': plate '{p.name}' is used with size {q.size} at dim {q.dim} and with "
                    f"size {p.size} at dim {p.dim} (site '{r.name}'); a plate name must keep its size and dim"
                )
