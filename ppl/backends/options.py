"""Backend options declared once, as data.

Every backend lists its options as :class:`Option` values (name, constraint, default,
one-line doc) in its ``options`` table.  One generic validator, :func:`validate_options`,
checks what a user passes against that table, fills in the defaults and returns the
values the backend runs with; a bad value raises :class:`~ppl.errors.OptionError` naming
the option, the value given and what is accepted; an option name the backend does not
take raises :class:`~ppl.errors.UnknownOptionError` (also a ``TypeError``).  The same
table generates the docs' option tables, ``ppl.methods()`` and the command line's option
parsing (:meth:`Constraint.parse` reads a command-line string).

The model is scikit-learn's ``_parameter_constraints`` (``Interval``, ``StrOptions``,
validated before ``fit``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import torch

from ..errors import OptionError, UnknownOptionError

__all__ = ["Constraint", "Integer", "Real", "OneOf", "Boolean", "Dtype", "Device", "Seed", "Bytes", "MappingOf",
           "CallableValue", "InstanceOf", "AnyOf", "NoneValue", "Anything", "Option", "REQUIRED", "option_table",
           "validate_options", "settings", "parse_text", "option_rows", "COMMON", "STREAM", "set_declarers"]


class _Required:
    def __repr__(self):
        return "<required>"


#: Default of an option without a default (the user must give it).
REQUIRED = _Required()


class Constraint:
    """What values an option accepts.  Subclasses implement :meth:`convert` (return the
    value to run with, or raise ``ValueError``/``TypeError`` with the reason) and
    :meth:`describe` (the accepted values, in words, for messages and docs)."""

    def convert(self, value):
        raise NotImplementedError  # abstract: every constraint below overrides it

    def describe(self) -> str:
        raise NotImplementedError  # abstract: every constraint below overrides it

    def parse(self, text: str):
        """The value of a command-line string (``--option key=TEXT``), before :meth:`convert`."""
        return text

    def __or__(self, other):
        return AnyOf(self, other)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def parse_text(text: str):
    """A command-line value read generically: an ``int``, a ``float``, ``true``/``false``,
    ``none``/``null``, a JSON list or object, else the string (quotes removed).

    Raises
    ------
    ValueError
        Text that starts like JSON (``[`` or ``{``) but is not JSON."""
    import json

    s = text.strip()
    number = _parse_number(s)
    if number is not s:
        return number
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if s[:1] in "[{":
        return json.loads(s)
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def _parse_number(text: str):
    """An int or float read from ``text``, else ``text`` itself (the same object)."""
    s = text.strip()
    if re.fullmatch(r"[+-]?\d+", s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        return text


@dataclass(frozen=True)
class Integer(Constraint):
    """An integer (bools refused) in ``[low, high]`` (a bound left ``None`` is open)."""

    low: int | None = None
    high: int | None = None

    def convert(self, value):
        if not _is_int(value):
            raise TypeError("not an integer")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError("out of range")
        return int(value)

    def describe(self) -> str:
        if self.low == 1 and self.high is None:
            return "a positive integer"
        if self.low is not None and self.high is not None:
            return f"an integer in [{self.low}, {self.high}]"
        if self.low is not None:
            return f"an integer >= {self.low}"
        return "an integer" if self.high is None else f"an integer <= {self.high}"

    def parse(self, text):
        return _parse_number(text)


@dataclass(frozen=True)
class Real(Constraint):
    """A finite real number (ints accepted, bools refused) between ``low`` and ``high``;
    ``low_open`` / ``high_open`` exclude the bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def convert(self, value):
        if not _is_real(value) or not math.isfinite(float(value)):
            raise TypeError("not a finite number")
        v = float(value)
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            raise ValueError("out of range")
        if self.high is not None and (v >= self.high if self.high_open else v > self.high):
            raise ValueError("out of range")
        return v

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return "a finite number"
        if self.low is not None and self.high is not None:
            return (f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"a number {'>' if self.low_open else '>='} {self.low:g}"
        return f"a number {'<' if self.high_open else '<='} {self.high:g}"

    def parse(self, text):
        return _parse_number(text)


class OneOf(Constraint):
    """One of the given values (names, compared with ``==``)."""

    def __init__(self, *values):
        self.values = tuple(values)

    def convert(self, value):
        try:
            ok = isinstance(value, (str, bool, type(None), numbers.Number)) and value in self.values
        except TypeError:
            ok = False
        if not ok:
            raise ValueError("not one of the names")
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


class Boolean(Constraint):
    """``True`` or ``False`` (numpy bools too; 0/1 refused)."""

    def convert(self, value):
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool(value)
        raise TypeError("not a bool")

    def describe(self) -> str:
        return "True or False"

    def parse(self, text):
        low = text.strip().lower()
        return {"true": True, "false": False, "1": True, "0": False}.get(low, text)


class NoneValue(Constraint):
    """``None``."""

    def convert(self, value):
        if value is None:
            return None
        raise TypeError("not None")

    def describe(self) -> str:
        return "None"

    def parse(self, text):
        return None if text.strip().lower() in ("none", "null") else text


class Dtype(Constraint):
    """A floating ``torch.dtype``: ``torch.float32`` or ``torch.float64`` (half precision is
    refused); a string is refused in Python (the command line reads ``float32`` / ``float64``)."""

    def convert(self, value):
        if value in (torch.float32, torch.float64):
            return value
        if isinstance(value, torch.dtype) and value.is_floating_point:  # float16, bfloat16: sums of log
            # densities overflow past 65504 (impossible evidence where there is none), no Cholesky
            raise TypeError(f"{value} is too coarse for log densities and has no Cholesky factorisation in torch")
        if isinstance(value, str):
            raise TypeError(f"a string; pass torch.{value.strip().removeprefix('torch.')}")
        raise TypeError("not a floating torch.dtype")

    def describe(self) -> str:
        return "a floating torch.dtype (torch.float64, torch.float32)"

    def parse(self, text):
        dtype = getattr(torch, text.strip().removeprefix("torch."), None)
        return dtype if isinstance(dtype, torch.dtype) else text


class Device(Constraint):
    """A torch device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``; CUDA
    only where this machine has it."""

    def convert(self, value):
        if not isinstance(value, (str, torch.device)):
            raise TypeError("not a device")
        try:
            device = torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError("not a device name") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device type '{device.type}' is not supported")
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("CUDA is not available on this machine")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise ValueError(f"this machine has {torch.cuda.device_count()} CUDA device(s)")
        return device

    def describe(self) -> str:
        return "'cpu', 'cuda', 'cuda:N' or a torch.device (CUDA where available)"


class Seed(Constraint):
    """A random seed: an integer in ``[0, 2**32 - 1]`` (numpy's range)."""

    def convert(self, value):
        return Integer(0, 2**32 - 1).convert(value)

    def describe(self) -> str:
        return "an integer in [0, 2**32 - 1]"

    def parse(self, text):
        return _parse_number(text)


_BYTES = re.compile(r"\s*([0-9.eE+-]+)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*\Z")
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40, "ki": 2**10, "mi": 2**20,
          "gi": 2**30, "ti": 2**40}


class Bytes(Constraint):
    """A memory size in bytes: a positive number (ints or floats like ``2e9``); strings
    such as ``"1GiB"`` are read only on the command line."""

    def convert(self, value):
        if not _is_real(value) or not math.isfinite(float(value)):
            raise TypeError("not a number of bytes")
        if value <= 0:
            raise ValueError("not positive")
        return int(value)

    def describe(self) -> str:
        return "a positive number of bytes (e.g. 2**31)"

    def parse(self, text):
        m = _BYTES.match(text)
        if m:
            try:
                return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
            except (ValueError, KeyError):
                pass
        return text


class MappingOf(Constraint):
    """A mapping (``dict``-like); ``what`` says what its keys and values are."""

    def __init__(self, what: str = "a dict"):
        self.what = what

    def convert(self, value):
        if not isinstance(value, Mapping):
            raise TypeError("not a mapping")
        return value

    def describe(self) -> str:
        return self.what

    def parse(self, text):
        import json

        try:
            return json.loads(text)
        except ValueError:
            return text


class CallableValue(Constraint):
    """A callable (a function, a class, an ``nn.Module``)."""

    def __init__(self, what: str = "a callable"):
        self.what = what

    def convert(self, value):
        if not callable(value) or isinstance(value, str):
            raise TypeError("not callable")
        return value

    def describe(self) -> str:
        return self.what


class InstanceOf(Constraint):
    """An instance of ``types``, described as ``what``."""

    def __init__(self, types, what: str):
        self.types, self.what = types, what

    def convert(self, value):
        if not isinstance(value, self.types):
            raise TypeError("wrong type")
        return value

    def describe(self) -> str:
        return self.what


class AnyOf(Constraint):
    """Any one of several constraints (the first that accepts the value converts it)."""

    def __init__(self, *constraints):
        flat = []
        for c in constraints:
            flat.extend(c.constraints if isinstance(c, AnyOf) else [c])
        self.constraints = tuple(flat)

    def convert(self, value):
        for c in self.constraints:
            try:
                return c.convert(value)
            except (TypeError, ValueError):
                continue
        raise ValueError("no alternative accepts it")

    def describe(self) -> str:
        return " or ".join(c.describe() for c in self.constraints)

    def parse(self, text):
        if text.strip().lower() in ("none", "null") and any(isinstance(c, NoneValue) for c in self.constraints):
            return None
        for c in self.constraints:
            value = c.parse(text)
            if value is not text:
                try:
                    return c.convert(value)
                except (TypeError, ValueError):
                    continue
        return text


class Anything(Constraint):
    """Any value (an option declared only by its doc, as third-party backends may)."""

    def convert(self, value):
        return value

    def describe(self) -> str:
        return "any value"

    def parse(self, text):
        return parse_text(text)


@dataclass(frozen=True)
class Option:
    """One option of a backend.

    Attributes
    ----------
    name : str
        The keyword of ``ppl.infer(..., name=value)``.
    constraint : Constraint
        What values it accepts.
    default : object
        Its value when not given (:data:`REQUIRED`: must be given).
    doc : str
        One line: what it does, with units.
    """

    name: str
    constraint: Constraint
    default: Any
    doc: str

    def but(self, **changes) -> "Option":
        """A copy with some fields changed (e.g. another default for one backend)."""
        return replace(self, **changes)

    def check(self, value, method: str = ""):
        """``value`` converted by the constraint.

        Raises
        ------
        OptionError
            Naming the option, the value and what is accepted."""
        try:
            return self.constraint.convert(value)
        except (TypeError, ValueError) as e:
            where = f" of method '{method}'" if method else ""
            why = f" ({e})" if str(e) and str(e) not in ("out of range", "no alternative accepts it") else ""
            raise OptionError(f"option {self.name}={_show(value)}{where} is not accepted{why}: {self.name} must be "
                              f"{self.constraint.describe()}") from None


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def option_table(*options: Option) -> dict:
    """Name -> :class:`Option`, in the order given (a backend's ``options`` attribute)."""
    return {o.name: o for o in options}


def _as_option(name, entry) -> Option:
    if isinstance(entry, Option):
        return entry
    return Option(name, Anything(), REQUIRED, str(entry))  # a third-party backend's doc-only declaration


#: Callable option name -> the methods that take it (set by the registry, :func:`set_declarers`),
#: so that an option a method does not take names the methods that do.
DECLARERS = [lambda name: []]


def set_declarers(fn) -> None:
    """Use ``fn(option name) -> list of method names`` in :func:`validate_options`'s message
    for an option a method does not take."""
    DECLARERS[0] = fn


def validate_options(method: str, declared: Mapping, given: Mapping, *, fill: bool = True):
    """Check ``given`` option values against a backend's ``declared`` table.

    Parameters
    ----------
    method : str
        The backend's name (for messages).
    declared : mapping
        Name -> :class:`Option` (or, for third-party backends, name -> one-line doc:
        any value is accepted).
    given : mapping
        Name -> value, as passed to ``ppl.infer``.
    fill : bool
        Add the defaults of declared options not given (those without a default, and
        doc-only ones, are left out).

    Returns
    -------
    dict
        Name -> converted value (e.g. ``device="cuda"`` -> ``torch.device("cuda")``).

    Raises
    ------
    UnknownOptionError (a TypeError and an OptionError)
        A name not declared: lists the declared names, and the registered methods that
        take it (:func:`set_declarers`).
    OptionError
        A value its constraint refuses: names the option, the value and what is accepted.
    """
    unknown = [k for k in given if k not in declared]
    if unknown:
        valid = ", ".join(declared) or "none"
        takers = {k: DECLARERS[0](k) for k in unknown}
        elsewhere = "; ".join(f"{k} is taken by {', '.join(takers[k])}" for k in unknown if takers[k])
        raise UnknownOptionError(f"method '{method}' got unknown option(s) {unknown}; it takes: {valid}"
                                 + (f" ({elsewhere})" if elsewhere else ""))
    out = {}
    for name, entry in declared.items():
        option = _as_option(name, entry)
        if name in given:
            out[name] = option.check(given[name], method)
        elif fill and option.default is not REQUIRED:
            out[name] = option.default
    return out


def settings(method: str, declared: Mapping, given: Mapping) -> SimpleNamespace:
    """:func:`validate_options` (defaults filled) as attributes: ``o.max_iter``."""
    return SimpleNamespace(**validate_options(method, declared, given))


def option_rows(declared: Mapping) -> list:
    """``(name, default, accepted, doc)`` strings per option: the docs' and the CLI's
    option tables."""
    rows = []
    for name, entry in declared.items():
        o = _as_option(name, entry)
        default = "required" if o.default is REQUIRED else repr(o.default)
        if isinstance(o.default, (torch.dtype, torch.device)):
            default = repr(str(o.default)) if isinstance(o.default, torch.device) else str(o.default)
        rows.append((name, default, o.constraint.describe(), o.doc))
    return rows


# ------------------------------------------------------------------ options many backends share
_FLOAT = Dtype()

#: Options several backends take, declared once; a backend takes ``COMMON["dtype"]`` or a
#: variant with ``.but(default=...)``.
COMMON = option_table(
    Option("dtype", _FLOAT, torch.float64, "floating precision of tables and parameters"),
    Option("device", Device(), torch.device("cpu"), "where tensors live: 'cpu' or 'cuda'"),
    Option("seed", Seed() | NoneValue(), None, "seed of the run's random draws and of sample()"),
    Option("progress", Boolean() | NoneValue(), None, "tqdm progress bar (None: only on a terminal)"),
    Option("memory_budget", Bytes() | NoneValue(), None,
           "bytes the largest exact table may take (None: 2 GiB)"),
    Option("heuristic", OneOf("min_fill", "min_degree"), "min_fill", "elimination-order heuristic"),
    Option("max_seconds", Real(0.0, low_open=True) | NoneValue(), None,
           "wall-clock limit of a sampler's run: chains still running then stop with the draws they have (the "
           "verdict is then unreliable); None: no limit (method='auto' passes what is left of time_budget)"),
    Option("noncentred", Boolean(), False,
           "sample each Normal latent whose scale is another latent as loc + scale * z (a non-centred "
           "hierarchy: the funnel's neck becomes a round Gaussian); the draws are of the model's own sites"),
    Option("marginals", Boolean(), True, "compute every latent's marginal"),
    Option("map", Boolean(), True, "compute the joint MAP assignment (max-product)"),
    Option("distributed", Boolean() | InstanceOf(str, "a plate name"), False,
           "data-parallel run in an initialised torch.distributed group: this rank's data is its shard of the data "
           "plate (True: the plate found from the data; or the plate's name); see docs/distributed.md"),
)

#: The options of a streamed fit (``method="em"`` and ``"cavi"``; docs/streaming.md): the
#: stream, the passes over it, the Robbins-Monro step size ``(k + step_offset) ** -step_power``
#: (Cappé & Moulines 2009; Hoffman et al. 2013, eq. 26: delay τ, forgetting rate κ), the
#: global size N and the movement below which the run counts as converged.
STREAM = option_table(
    Option("stream", CallableValue("a callable returning a fresh iterator of data dicts (minibatches of the data "
                                   "plate)") | NoneValue(), None,
           "minibatches of the data plate: a callable returning a fresh iterator of dicts (see docs/streaming.md)"),
    Option("epochs", Integer(1), 10, "stream: passes over the stream"),
    Option("step_offset", Real(0.0), 1.0, "stream: delay τ (or k0) of the step size (k + τ)^-κ, k = 1, 2, ..."),
    Option("step_power", Real(0.5, 1.0, low_open=True), 0.7,
           "stream: forgetting rate κ in (0.5, 1] of the step size (k + τ)^-κ (Robbins-Monro)"),
    Option("num_points", Integer(1) | NoneValue(), None,
           "stream: the global size N of the data plate (None: the stream's num_points, else a counting pass)"),
    Option("stream_tol", Real(0.0), 1e-3,
           "stream: converged when no global parameter moved more than this (relative) over the last epoch"),
)
