"""Distribution parameters checked against their constraints when a model is compiled.

Pyro's argument validation is off while ppl traces a model (the scopes it records must
not be cut short), so a ``Normal(mu, 0.0)`` or a ``Bernoulli(1.3)`` would otherwise reach
each backend as a raw torch ``ValueError`` or a silent non-finite density.
:func:`check_parameters` tests every parameter a site's distribution was built with
against the distribution's ``arg_constraints`` (torch's own declaration of each
parameter's support) and raises a :class:`~ppl.errors.ModelError` naming the site, the
parameter, the offending value and the constraint.
"""

from __future__ import annotations

import numbers

import pyro
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import constraints

from ..dsl import is_deterministic
from ..errors import ModelError
from ..ops.shapes import unexpand
from .families import base_distribution
from .provenance import provenance_of, strip

__all__ = ["check_parameters", "check_param_init", "check_plate_size", "CheckParameters"]


class CheckParameters(Messenger):
    """The compile trace's check of what a site is built from, *before* the site runs: a
    latent site's distribution parameters (:func:`check_parameters`; torch would otherwise
    fail inside its sampler, e.g. ``Categorical`` probabilities with a negative or an
    all-zero row, with no site named), a plate's size (:func:`check_plate_size`) and a new
    ``ppl.param``'s declared initial value
    (:func:`check_param_init`; Pyro would otherwise store ``log(-1) = nan`` for a
    positive param initialised at -1, and the error would surface at a later site)."""

    def _pyro_sample(self, msg):
        if site_is_subsample(msg):
            check_plate_size(msg["name"], getattr(msg["fn"], "size", None))
            return
        if msg["is_observed"] or msg["value"] is not None or is_deterministic(msg):
            return
        check_parameters(msg["name"], msg["fn"])

    def _pyro_param(self, msg):
        args = msg["args"]
        if len(args) >= 2 and args[0] not in pyro.get_param_store():  # a stored param ignores its init
            check_param_init(args[0], args[1], (msg["kwargs"] or {}).get("constraint", constraints.real))


def check_plate_size(name: str, size) -> None:
    """Raise :class:`ModelError` when plate ``name`` was given a size that is not a whole
    number: Pyro's plate would run ``ceil(size)`` copies and scale every log density inside
    it by ``size / ceil(size)``, a silently wrong likelihood (e.g. ``ppl.plate("d", 2.5)``
    over three data points counts them as 2.5).

    Raises
    ------
    ModelError
        ``plate 'd': size 2.5 is not a whole number ...``."""
    if size is None or isinstance(size, numbers.Integral):
        return
    if isinstance(size, torch.Tensor) and size.numel() == 1:
        size = size.item()
    if isinstance(size, numbers.Real) and float(size).is_integer():
        return
    raise ModelError(f"plate '{name}': size {size!r} is not a whole number; a plate holds size i.i.d. copies, so pass "
                     "an integer (e.g. ppl.plate(name, len(x)) or int(n)); Pyro would otherwise scale the log "
                     "densities inside it by size / ceil(size)")


def check_param_init(name: str, init, constraint) -> None:
    """Raise :class:`ModelError` when the initial value a model declares for ``ppl.param``
    ``name`` is not finite or lies outside the param's ``constraint`` (a lazy callable init
    and dependent constraints are not checked).

    Parameters
    ----------
    name : str
        The param's name.
    init : torch.Tensor, number or callable
        The ``init_tensor`` given to ``ppl.param``.
    constraint : torch.distributions.constraints.Constraint
        The declared constraint.

    Raises
    ------
    ModelError
        ``ppl.param 's': initial value -1 is outside its constraint GreaterThan(lower_bound=0.0)``.
    """
    if not isinstance(init, (torch.Tensor, numbers.Number)) or isinstance(init, bool):
        return
    value = strip(torch.as_tensor(init)).detach()
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        shown = float(value[~torch.isfinite(value)].reshape(-1)[0])
        raise ModelError(f"ppl.param '{name}': its initial value holds {shown:g} (expected finite numbers); "
                         f"give the model a finite initial value, or warm-start it with init={{'{name}': value}}")
    if constraints.is_dependent(constraint) or constraint is constraints.real:
        return
    try:
        ok = torch.as_tensor(constraint.check(value))
    except (NotImplementedError, RuntimeError, ValueError, TypeError):
        return
    if not bool(ok.all()):
        raise ModelError(f"ppl.param '{name}': initial value {_first_bad(value, ok)} is outside its constraint "
                         f"{constraint}; Pyro would store the unconstrained image of that value (NaN or another "
                         "point), so give an initial value inside the constraint")


def check_parameters(name: str, fn) -> None:
    """Raise :class:`ModelError` when a parameter of site ``name``'s distribution ``fn`` (as
    given to its constructor: ``fn.__dict__``, so derived ones such as logits from probs are
    not recomputed) lies outside its ``arg_constraints`` entry; dependent constraints (e.g.
    ``Uniform``'s ``low < high``) and distributions without a declaration are skipped.

    Raises
    ------
    ModelError
        ``site 'mu': Normal parameter 'scale' = 0.0 is outside its support GreaterThan(lower_bound=0.0)``.
    """
    fn = base_distribution(fn)
    try:
        declared = dict(getattr(fn, "arg_constraints", {}) or {})
    except (NotImplementedError, AttributeError, TypeError):
        return
    for param, constraint in declared.items():
        value = fn.__dict__.get(param)
        if not isinstance(value, torch.Tensor) or constraints.is_dependent(constraint):
            continue
        constant = not provenance_of(value)  # depends on no latent and no param: written in the model
        value = unexpand(strip(value).detach())  # a plate's expanded copies checked once
        if not value.is_floating_point() or value.numel() == 0:
            continue
        try:
            ok = _positive_definite(value) if _is_positive_definite(constraint) else constraint.check(value)
        except (NotImplementedError, RuntimeError, ValueError, TypeError):
            continue
        ok = torch.as_tensor(ok)
        if bool(ok.all()):
            if constant and param != "logits" and bool(torch.isinf(value).any()):  # -inf logits exclude a state
                raise ModelError(f"site '{name}': {type(fn).__name__} parameter '{param}' = "
                                 f"{value[torch.isinf(value)].reshape(-1)[0].item():g} is not finite, so every value "
                                 "has density 0 (or the density is undefined); for a flat prior give a wide finite "
                                 "scale, or use dist.ImproperUniform")
            continue
        raise ModelError(f"site '{name}': {type(fn).__name__} parameter '{param}' = {_first_bad(value, ok)} is outside "
                         f"its support {constraint} (e.g. a zero or negative scale, a probability outside [0, 1], "
                         "probabilities with a negative entry or all zero, which normalise to NaN); "
                         "fix the value the model passes there")


def _first_bad(value: torch.Tensor, ok: torch.Tensor) -> str:
    """The first value a constraint's ``check`` refused, for a message: an element under an
    elementwise constraint, the first bad event (a row, a matrix) under an event one
    (``ok`` has fewer dims: a simplex, a positive definite matrix)."""
    if ok.shape == value.shape:
        return f"{value[~ok].reshape(-1)[0].item():g}"
    event = value[~ok][0] if ok.dim() and ok.shape == value.shape[:ok.dim()] else value
    return "[" + ", ".join(f"{v:g}" for v in event.reshape(-1).tolist()[:8]) + (", ...]" if event.numel() > 8 else "]")


def _is_positive_definite(constraint) -> bool:
    return type(constraint) is type(constraints.positive_definite)


def _positive_definite(value: torch.Tensor) -> torch.Tensor:
    """``constraints.positive_definite.check``'s answer per matrix, cheaper on many matrices
    (a GMM's covariance gathered per data point): symmetry as the largest ``|A - Aᵀ|``
    against ``1e-6 · max |A|`` per matrix, instead of ``torch.isclose`` on every entry
    (1.5 s of a 300 000-point compile), and a Cholesky factorisation's ``info == 0``."""
    scale = value.abs().amax(dim=(-2, -1)).clamp_min(1e-300)
    symmetric = (value - value.mT).abs().amax(dim=(-2, -1)) <= 1e-6 * scale
    return symmetric & (torch.linalg.cholesky_ex(value).info == 0)
