"""Parsing of command-line values: numbers, booleans, JSON, byte sizes, ``key=value`` lists; the usage error."""

from __future__ import annotations

import json
import re

import torch


PROG = "python -m ppl"

#: Exit status of a usage error (argparse's own convention) and of an inference error.
EXIT_USAGE, EXIT_FAILURE = 2, 1


class UsageError(Exception):
    """A mistake in the command line, the model file or the data files; the CLI prints
    ``error: <message>`` and exits with status 2."""


# ------------------------------------------------------------------- values
#: A whole decimal integer, optionally signed (``"-3"``, ``"+12"``): ``INT.match(text)``
#: tells :func:`parse_value` and the CSV reader to read ``text`` as ``int``.
INT = re.compile(r"[+-]?\d+\Z")


def parse_value(text: str):
    """Parse a command-line value: ``int``, then ``float``, then ``true``/``false``
    (bool), ``none``/``null`` (None), a JSON list or object (``[1, 2]``,
    ``{"rank": 3}``), else the string itself (quotes around it are removed).

    Examples
    --------
    >>> parse_value("3"), parse_value("1e-3"), parse_value("true"), parse_value("normal")
    (3, 0.001, True, 'normal')
    """
    s = text.strip()
    if INT.match(s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        pass
    low = s.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    if low in ("none", "null"):
        return None
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise UsageError(f"cannot parse {text!r} as JSON: {e}") from None
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


_BYTES = re.compile(r"\s*([0-9.eE+-]+)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*\Z")
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40, "ki": 2**10, "mi": 2**20,
          "gi": 2**30, "ti": 2**40}


def parse_bytes(text) -> int:
    """Parse a memory size: a number of bytes (``2147483648``, ``2e9``) or one with a unit
    (``512MiB``, ``2GiB``, ``4GB``).

    Raises
    ------
    UsageError
        If ``text`` is not a size.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    m = _BYTES.match(str(text))
    if m:
        try:
            return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
        except (ValueError, KeyError):
            pass
    raise UsageError(f"cannot read {text!r} as a memory size; write e.g. 2147483648, 2e9, 512MiB or 2GiB")


def parse_option_value(key: str, text: str):
    """Parse the value of ``--option key=value``: as :func:`parse_value`, except that
    ``dtype`` takes a torch dtype name (``float32``, ``float64``) and ``memory_budget``
    a size (:func:`parse_bytes`)."""
    if key == "dtype":
        name = text.strip().removeprefix("torch.")
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype):
            raise UsageError(f"--option dtype={text}: not a torch dtype; use float32 or float64")
        return dtype
    if key == "memory_budget":
        return parse_bytes(text)
    return parse_value(text)


def parse_assignments(items, flag: str, parse=None) -> dict:
    """Turn ``["a=1", "b=x"]`` into ``{"a": 1, "b": "x"}``.

    Parameters
    ----------
    items : iterable of str
        ``key=value`` strings as given on the command line.
    flag : str
        The flag they came from, for error messages (``"--set"``).
    parse : callable(key, text), optional
        Value parser (default :func:`parse_value` of the text).

    Raises
    ------
    UsageError
        An item without ``=`` or with an empty key.
    """
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{flag} expects key=value, got {item!r}")
        out[key] = parse(key, text) if parse else parse_value(text)
    return out
