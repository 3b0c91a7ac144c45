"""Reading one factor of the probe run: which distribution it rebuilds, and whether
each of its arguments is a gather of θ, a constant, or some other function of θ.

:func:`build_template` turns one site of the probe run (every ``ppl.param`` a
:class:`~ppl.compiler.probe.Probe`) into a :class:`FactorTemplate`: *fast* when the
site's distribution, seen through its wrappers (a mask above ``Independent``,
``Independent``, ``expand``), is a family of :data:`FAMILY_SLOTS` whose arguments are
gathers of θ or constants; otherwise *slow*, with the reason in ``FactorTemplate.slow``.
"""

from __future__ import annotations

import math

import torch

from .. import families
from ..internals import constructor_argument, given_parameter, mask_of
from ..probe import plain, positions_of, scale_of
from .groups import FactorTemplate

__all__ = ["FAMILY_SLOTS", "slot_event_rank", "build_template"]

#: Distribution families rebuilt from their constructor arguments (slots).
FAMILY_SLOTS = {
    "Normal": ("loc", "scale"),
    "Laplace": ("loc", "scale"),
    "Cauchy": ("loc", "scale"),
    "StudentT": ("df", "loc", "scale"),
    "Gamma": ("concentration", "rate"),
    "Exponential": ("rate",),
    "Poisson": ("rate",),
    "Categorical": None,  # probs or logits
    "Bernoulli": None,  # probs or logits
    "MultivariateNormal": None,  # loc and one of covariance_matrix / scale_tril / precision_matrix
}
_MVN_SCALES = ("covariance_matrix", "scale_tril", "precision_matrix")


def slot_event_rank(family: str, slot: str) -> int:
    """Trailing dims of a distribution parameter beyond the batch shape.

    Parameters
    ----------
    family : str
        A key of :data:`FAMILY_SLOTS`.
    slot : str
        The argument (``"loc"``, ``"probs"``, ``"scale_tril"``...).

    Returns
    -------
    int
        1 for a Categorical's ``probs``/``logits`` (K states) and a MultivariateNormal's
        ``loc`` (D), 2 for its D x D scale argument, else 0.
    """
    if family == "Categorical":
        return 1
    if family == "MultivariateNormal":
        return 1 if slot == "loc" else 2
    return 0


def _compact(x: torch.Tensor) -> torch.Tensor:
    """Shrink broadcast (stride 0) dims to size 1."""
    for d in range(x.dim()):
        if x.shape[d] > 1 and x.stride(d) == 0:
            x = x.narrow(d, 0, 1)
    return x


def _compact_equal(x: torch.Tensor) -> torch.Tensor:
    """Shrink every dim along which ``x`` is constant to size 1."""
    x = _compact(x)
    for d in range(x.dim()):
        if x.shape[d] > 1:
            first = x.narrow(d, 0, 1)
            if torch.equal(x, first.expand_as(x)):
                x = first
    return x


def build_template(name: str, site: dict, layout, lp_deps, escaped, *, dtype, latent: bool = False,
                   cardinality: int | None = None) -> FactorTemplate:
    """The :class:`FactorTemplate` of factor ``name`` from its site in the probe run.

    Parameters
    ----------
    name : str
    site : dict
        The factor's site in the probe run's trace.
    layout : FactorLayout
        Of the factor (:func:`ppl.compiler.tables.factor_layout`).
    lp_deps : frozenset[str]
        The params (and substituted latents) in the factor's scope.
    escaped : set[str]
        Params whose values left torch during the probe run
        (:func:`ppl.compiler.probe.escaped_params`).
    dtype : torch.dtype
        Of the constant slots and floating values.
    latent : bool
        ``name`` is a substituted latent (its value is a gather of θ).
    cardinality : int, optional
        The number of states of ``name`` when it is an enumerated discrete latent (its
        masked-out copies then get the log table entry ``-log K``).

    Returns
    -------
    FactorTemplate
        ``slow`` is None for a fast factor, else the reason it is not (its other fields
        then hold what had been read when the reason was found).
    """
    fn = site["fn"]
    t = FactorTemplate(name, families.family_name(fn), plates=layout.plates, vars=layout.vars,
                       sizes=layout.sizes, deps=frozenset(lp_deps))
    if lp_deps & escaped:
        t.slow = f"param(s) {sorted(lp_deps & escaped)} leave torch (float()/item()/numpy) in the model"
        return t
    mask = site.get("mask")
    if mask is True:
        mask = None
    elif isinstance(mask, torch.Tensor):
        mask = plain(mask)
    scale = site.get("scale", 1.0)
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            t.slow = "a tensor-valued poutine.scale"
            return t
        scale = float(scale)
    t.scale = float(scale)
    fn, n_re, mask = _unwrap(fn, mask)
    family = type(fn).__name__
    if mask is False:
        t.slow = "a site masked out entirely"
        return t
    if family not in FAMILY_SLOTS:
        t.slow = f"family {family} is re-evaluated by a model run"
        return t
    names = _slot_names(fn, family)
    t.cls, t.n_re = type(fn), n_re
    slot_deps = _read_slots(t, fn, family, names, layout, dtype)
    if slot_deps is None:
        return t
    if latent:
        slot_deps.add(name)  # its value
    if set(t.deps) - slot_deps:
        t.slow = f"depends on param(s) {sorted(set(t.deps) - slot_deps)} outside its distribution's arguments"
        return t
    tail = n_re + len(fn.event_shape)
    if latent:  # a substituted latent's own factor: its value is θ itself
        pos, _ = positions_of(site["value"])
        if pos is None:
            t.slow = "the value of a substituted latent is not its own probe"
            return t
        t.value_gather = True
        t.value = _compact(layout.canonical(_compact(pos), tail))
        t.deps = t.deps | {name}
        return t
    _read_value(t, site, layout, tail, mask, dtype, cardinality)
    return t


def _unwrap(fn, mask):
    """Look through the wrappers of a site's distribution: a mask above ``Independent``
    (its mask joins ``mask``), ``Independent`` (counted) and ``expand``.

    Returns
    -------
    fn : Distribution
        The distribution inside.
    n_re : int
        Batch dims reinterpreted as event dims.
    mask : torch.BoolTensor, bool or None
        ``mask`` and the masks found.
    """
    n_re = 0
    while True:
        kind = type(fn).__name__
        if kind == "MaskedDistribution" and n_re == 0:
            m = plain(mask_of(fn))
            mask = m if mask is None or isinstance(mask, bool) else (mask & m)
            fn = fn.base_dist
        elif kind == "Independent":
            n_re += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        elif kind == "ExpandedDistribution":
            fn = fn.base_dist
        else:
            break
    return fn, n_re, mask


def _slot_names(fn, family: str) -> tuple:
    """The constructor arguments that rebuild ``fn`` (a family of :data:`FAMILY_SLOTS`):
    the family's fixed ones, or the parametrisation it was built with (``probs`` or
    ``logits``; a MultivariateNormal's ``loc`` and its scale argument, None if absent)."""
    names = FAMILY_SLOTS[family]
    if names is None:
        if family == "MultivariateNormal":
            scale_slot = next((s for s in _MVN_SCALES if constructor_argument(fn, s) is not None), None)
            names = ("loc", scale_slot)
        else:
            names = (given_parameter(fn),)
    return names


def _read_slots(t: FactorTemplate, fn, family: str, names: tuple, layout, dtype):
    """Fill ``t.slots`` (and ``t.scales`` for scaled gathers) from ``fn``'s arguments
    ``names``, in the factor layout.

    Returns
    -------
    set[str] or None
        The params the arguments depend on; None when an argument is missing or a
        function of θ that is not a gather (``t.slow`` then says which).
    """
    slot_deps = set()
    for s in names:
        x = constructor_argument(fn, s)
        if x is None:
            t.slow = f"{family} without its '{s}' argument"
            return None
        tail = t.n_re + slot_event_rank(family, s)
        pos, deps = positions_of(x)
        if deps and pos is None:
            t.slow = f"{family} {s} is computed from param(s) {sorted(deps)} (not a plain selection)"
            return None
        slot_deps |= deps
        src = pos if pos is not None else plain(x).detach().to(dtype)
        src = layout.canonical(_compact(src), tail)
        t.slots[s] = ("gather", _compact_equal(src)) if pos is not None else ("const", _compact(src))
        factor = scale_of(x)
        if factor is not None and pos is not None:
            t.scales[s] = _compact_equal(layout.canonical(_compact(factor.to(dtype)), tail))
    return slot_deps


def _read_value(t: FactorTemplate, site: dict, layout, tail: int, mask, dtype, cardinality) -> None:
    """Fill ``t.value`` with the site's (constant) value and ``t.mask`` with its mask, in
    the factor layout (``tail`` trailing event dims)."""
    value = plain(site["value"]).detach()
    if value.is_floating_point():
        value = value.to(dtype)
    t.value = _compact(layout.canonical(_compact(value), tail))
    if mask is not None and not isinstance(mask, bool):
        t.mask = _compact(layout.canonical(_compact(mask.bool()), 0))
        if cardinality is not None:
            t.masked_fill = -math.log(cardinality)
