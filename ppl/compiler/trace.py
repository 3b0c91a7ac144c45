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

import warnings

from dataclasses import dataclass, field

import pyro
import torch
from pyro.poutine.util import site_is_subsample

from ..dsl import BoundData, Model, is_deterministic, is_factor, trace_model
from ..errors import ModelError
from . import families
from .handlers import CheckObservations, TrackProvenance
from .provenance import provenance_of, strip

__all__ = ["PlateInfo", "SiteRecord", "trace_with_provenance"]


@dataclass(frozen=True)
class PlateInfo:
    """A vectorised plate: ``size`` i.i.d. copies along tensor dimension ``dim`` (< 0)."""

    name: str
    size: int
    dim: int
    subsample_size: int | None = None


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


def trace_with_provenance(model: Model, bound: BoundData) -> list[SiteRecord]:
    """Run ``model`` once with ``bound`` and return a :class:`SiteRecord` per site, in
    execution order.

    Observed values are validated against their site: NaN/inf, shape (must broadcast to
    the distribution's ``batch_shape + event_shape``) and support.

    Raises
    ------
    ModelError
        If the model raises while running or repeats a site name.
    DataError
        If an observed value does not fit its site (the message names the site, the
        expected and the actual).
    """
    with pyro.validation_enabled(False), warnings.catch_warnings():  # the scopes' log_prob calls below too
        # the latents' prior draws only trace the structure: torch's Wishart warns when a draw at
        # small degrees of freedom is numerically singular, which does not matter here
        warnings.filterwarnings("ignore", message="Singular sample detected", category=UserWarning)
        trace = trace_model(model, bound, TrackProvenance(), CheckObservations(model, bound.observations))
        records: list[SiteRecord] = []
        for name, site in trace.nodes.items():
            if site["type"] == "param":
                value = strip(site["value"])
                records.append(SiteRecord(name, "param", False, None, value, (), (name,)))
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
            raw_value = site["value"]
            value = strip(raw_value)
            plates = tuple(
                PlateInfo(f.name, int(f.size), int(f.dim), None)
                for f in reversed(site["cond_indep_stack"])
                if f.vectorized and f.dim is not None
            )
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
            records.append(
                SiteRecord(name, kind, bool(site["is_observed"]), fn, value, plates, scope, dict(site.get("infer") or {}))
            )
    _order_scopes(records)
    _check_plates(model, records)
    return records


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
