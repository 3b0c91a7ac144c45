"""The command line: ``python -m ppl analyze|infer|compare|methods``.

Runs :func:`ppl.analyze`, :func:`ppl.infer` and :func:`ppl.compare` on a model defined
in a Python file and data read from ``.csv`` / ``.npz`` files, and prints what they
return.  See ``docs/cli.md`` and ``python -m ppl --help``.

Conventions
-----------
* ``FILE.py:MODEL`` imports ``FILE.py`` as a module and takes its attribute ``MODEL``: a
  ``@ppl.model`` or a plain model function.  Without ``:MODEL`` the file must hold exactly
  one ``@ppl.model``.  ``package.module:MODEL`` imports an installed module instead.
* ``--data FILE.npz``: every array is a data entry under its key; ``--data FILE.csv``:
  every column is one, under its header name.  ``--data-matrix NAME`` binds a whole
  numeric CSV as one ``(N, D)`` tensor instead.  ``--set key=value`` adds scalars.
  Floating values become float64 tensors (float32 with ``--float32``), integers int64,
  text columns stay text (state names of Bayesian-network sites), 0-d arrays become
  Python numbers.
* Exit status: 0 on success, 2 for a usage error (arguments, files, model lookup, an
  unknown method or option name), 1 when ppl refuses or fails (a :class:`ppl.PPLError`
  such as ``DataError`` or ``UnsupportedModelError``, or an unexpected exception).  The
  message is one line on stderr; ``--traceback`` re-raises instead.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .api import ANALYSIS_OPTIONS, AUTO_PREFERENCE, analyze, compare, compile, infer
from .backends.registry import get_backend, registered_backends
from .dsl import Model
from .errors import BackendNotFoundError, DataError, PPLError
from .table import Table

__all__ = [
    "main",
    "build_parser",
    "UsageError",
    "load_model",
    "find_models",
    "load_data",
    "read_csv",
    "read_csv_matrix",
    "read_npz",
    "parse_value",
    "parse_assignments",
    "parse_option_value",
    "parse_bytes",
    "summary_table",
    "format_posterior",
]

PROG = "python -m ppl"

#: Exit status of a usage error (argparse's own convention) and of an inference error.
EXIT_USAGE, EXIT_FAILURE = 2, 1


class UsageError(Exception):
    """A mistake in the command line, the model file or the data files; the CLI prints
    ``error: <message>`` and exits with status 2."""


# ------------------------------------------------------------------- values
_INT = re.compile(r"[+-]?\d+\Z")


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
    if _INT.match(s):
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


# -------------------------------------------------------------------- model
def _is_model_candidate(obj) -> bool:
    return callable(obj) and not isinstance(obj, (type, types.ModuleType))


def find_models(module) -> dict:
    """The ``@ppl.model`` objects bound to public names of ``module``: name -> Model
    (an object bound to two names is listed once, under its first name)."""
    found, seen = {}, set()
    for name, obj in vars(module).items():
        if isinstance(obj, Model) and not name.startswith("_") and id(obj) not in seen:
            seen.add(id(obj))
            found[name] = obj
    return found


def _import_file(path: Path):
    if not path.exists():
        raise UsageError(f"model file {str(path)!r} does not exist")
    if path.is_dir():
        raise UsageError(f"model file {str(path)!r} is a directory; give a .py file, e.g. {path}/model.py:NAME")
    if path.suffix != ".py":
        raise UsageError(f"model file {str(path)!r} is not a .py file; write the model in a Python file")
    name = "ppl_cli_model_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - .py files always have a loader
        raise UsageError(f"cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and Pyro look modules up by name
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # lets the file import its neighbours
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        if isinstance(e, SystemExit):
            raise UsageError(f"importing {str(path)!r} called sys.exit({e.code!r}); guard script code with "
                             "if __name__ == '__main__':") from e
        raise UsageError(f"importing {str(path)!r} failed: {type(e).__name__}: {_one_line(e)}") from e
    return module


def load_model(spec: str):
    """Load the model named by ``spec``.

    Parameters
    ----------
    spec : str
        ``FILE.py:MODEL`` (the file is imported as a module, ``MODEL`` is an attribute,
        dotted names allowed), ``FILE.py`` (the file's only ``@ppl.model``) or
        ``package.module:MODEL`` (an importable module).

    Returns
    -------
    (model, label)
        ``model`` is a :class:`ppl.Model` or a plain callable (``ppl`` wraps it);
        ``label`` says where it came from, for printing.

    Raises
    ------
    UsageError
        Missing file, a file that fails to import (with the exception's type and
        message), an unknown name (listing the models the file defines), a name that is
        no model function, or no / several models when ``MODEL`` is omitted.
    """
    target, attr = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and tail and all(part.isidentifier() for part in tail.split(".")):
        target, attr = head, tail
    elif sep and not tail:
        raise UsageError(f"model {spec!r}: nothing after ':'; write FILE.py:MODEL")
    path = Path(target).expanduser()
    dotted = all(part.isidentifier() for part in target.split("."))
    if not target.endswith(".py") and not path.exists() and dotted:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise UsageError(f"no model file or module {target!r} (give FILE.py:MODEL): {e}") from e
        except Exception as e:
            raise UsageError(f"importing module {target!r} failed: {type(e).__name__}: {_one_line(e)}") from e
    else:
        module = _import_file(path)
    models = find_models(module)
    if attr is None:
        if len(models) == 1:
            (name, model), = models.items()
            return model, f"{name} ({target})"
        if not models:
            funcs = _functions(module)
            hint = f"; functions in it: {funcs}" if funcs else ""
            raise UsageError(f"{target!r} defines no @ppl.model; decorate the model function with @ppl.model or "
                             f"name it: {target}:NAME{hint}")
        raise UsageError(f"{target!r} defines {len(models)} models {list(models)}; choose one: {target}:NAME")
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            listed = f"models in it: {list(models)}" if models else f"it defines no @ppl.model; functions in it: " \
                                                                    f"{_functions(module)}"
            raise UsageError(f"{target!r} has no model named {attr!r}; {listed}")
        obj = getattr(obj, part)
    if not _is_model_candidate(obj):
        raise UsageError(f"{target}:{attr} is a {type(obj).__name__}, not a model function; models in "
                         f"{target!r}: {list(models)}")
    return obj, f"{attr} ({target})"


def _functions(module) -> list:
    return [n for n, o in vars(module).items()
            if inspect.isfunction(o) and not n.startswith("_") and o.__module__ == module.__name__]


# --------------------------------------------------------------------- data
def _float_dtype(float32: bool):
    return np.float32 if float32 else np.float64


def _as_data(key: str, arr: np.ndarray, float32: bool, source: str):
    """numpy array -> the value put in ``data``: tensors for numbers, text arrays kept,
    0-d arrays as Python scalars."""
    kind = arr.dtype.kind
    if kind in "US":
        return arr.item() if arr.ndim == 0 else arr.astype(str)
    if kind == "O":
        raise UsageError(f"{source}: '{key}' holds Python objects; save plain numeric arrays")
    if kind == "c":
        raise UsageError(f"{source}: '{key}' holds complex numbers; ppl takes real data")
    if kind not in "biuf":
        raise UsageError(f"{source}: '{key}' has unsupported dtype {arr.dtype}")
    if arr.ndim == 0:
        return arr.item()
    if kind == "f":
        arr = arr.astype(_float_dtype(float32))
    elif kind in "iu":
        arr = arr.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(arr))


def read_npz(path, *, float32: bool = False) -> dict:
    """Read a ``.npz`` file: key -> value (see :func:`load_data` for the conversions).

    Raises
    ------
    UsageError
        If the file cannot be read or holds object arrays.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except ValueError as e:
        raise UsageError(f"cannot read data file {str(path)!r}: {_one_line(e)} (save plain numeric arrays, "
                         "np.savez(path, x=..., y=...))") from e
    except Exception as e:
        raise UsageError(f"cannot read data file {str(path)!r} as .npz: {type(e).__name__}: {_one_line(e)}") from e
    if not arrays:
        raise UsageError(f"data file {str(path)!r} holds no arrays")
    return {k: _as_data(k, a, float32, str(path)) for k, a in arrays.items()}


_MISSING = {"", "na", "nan", "n/a", "null", "none"}


def _csv_rows(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    except UnicodeDecodeError as e:
        raise UsageError(f"cannot read data file {str(path)!r}: not UTF-8 text ({e.reason})") from e
    except (OSError, csv.Error) as e:
        raise UsageError(f"cannot read data file {str(path)!r}: {_one_line(e)}") from e
    if not rows:
        raise UsageError(f"data file {str(path)!r} is empty")
    return rows


def _float_cell(text: str) -> float:
    s = text.strip()
    return math.nan if s.lower() in _MISSING else float(s)


def _column(values: list):
    """Strings of one CSV column -> int64, float64 (empty / NA cells -> NaN) or text array."""
    stripped = [v.strip() for v in values]
    if all(_INT.match(v) for v in stripped):
        return np.array([int(v) for v in stripped], dtype=np.int64)
    try:
        return np.array([_float_cell(v) for v in stripped], dtype=np.float64)
    except ValueError:
        return np.array(stripped, dtype=str)


def read_csv(path, *, float32: bool = False) -> dict:
    """Read a ``.csv`` file with a header line: column name -> column vector.

    Integer columns become int64 tensors, numeric ones float64 (float32 with
    ``float32=True``; empty, ``NA`` and ``nan`` cells become NaN, which ppl then
    reports), other columns stay arrays of text (state names).

    Raises
    ------
    UsageError
        Unreadable file, empty or duplicate header names, rows of the wrong length.
    """
    rows = _csv_rows(path)
    header = [h.strip() for h in rows[0]]
    if all(_is_number(h) for h in header):
        raise UsageError(f"data file {str(path)!r}: the first line holds numbers, not column names; "
                         "add a header line, or bind the whole table with --data-matrix NAME")
    for i, h in enumerate(header):
        if not h:
            raise UsageError(f"data file {str(path)!r}: column {i + 1} of the header has no name")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise UsageError(f"data file {str(path)!r}: duplicate column name(s) {dupes}")
    body = rows[1:]
    for n, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise UsageError(f"data file {str(path)!r}: a row has {len(row)} fields, the header {len(header)} "
                             f"(row {n} of the non-blank lines)")
    columns = zip(*body) if body else [()] * len(header)
    return {h: _as_data(h, _column(list(col)) if col else np.zeros(0), float32, str(path))
            for h, col in zip(header, columns)}


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_csv_matrix(path, *, float32: bool = False) -> torch.Tensor:
    """Read a numeric ``.csv`` file as one ``(N, D)`` float tensor; a first line that is not
    all numbers (a header) is skipped.

    Raises
    ------
    UsageError
        Unreadable file, rows of different lengths, or a cell that is not a number (empty
        and ``NA`` cells are NaN, which ppl then reports).
    """
    rows = _csv_rows(path)
    if not all(_is_number(c) or c.strip().lower() in _MISSING for c in rows[0]):
        rows = rows[1:]
    if not rows:
        raise UsageError(f"data file {str(path)!r} has a header but no rows")
    width = len(rows[0])
    values = []
    for n, row in enumerate(rows, start=1):
        if len(row) != width:
            raise UsageError(f"data file {str(path)!r}: rows have different lengths ({width} and {len(row)})")
        try:
            values.append([_float_cell(c) for c in row])
        except ValueError:
            bad = next(c for c in row if not (_is_number(c) or c.strip().lower() in _MISSING))
            raise UsageError(f"data file {str(path)!r}: {bad.strip()!r} is not a number (data row {n}); "
                             "--data-matrix needs an all-numeric table") from None
    return torch.tensor(values, dtype=torch.float32 if float32 else torch.float64)


def load_data(paths=(), *, matrices=(), sets=None, float32: bool = False) -> dict:
    """Build the ``data`` mapping of the command line.

    Parameters
    ----------
    paths : sequence of str
        ``--data`` files: ``.npz`` (key -> array) or ``.csv`` (column -> vector).
    matrices : sequence of str
        ``--data-matrix`` entries: ``NAME`` binds the one ``.csv`` among ``paths`` as an
        ``(N, D)`` float tensor named ``NAME`` (that file is then not read by columns);
        ``NAME=FILE.csv`` binds that file.
    sets : dict, optional
        ``--set`` values, added last (they win over file entries of the same name).
    float32 : bool
        Floating data as float32 instead of float64.

    Returns
    -------
    dict
        Name -> value for :func:`ppl.infer`; integers as int64 tensors, floats as
        float64 (or float32) tensors, text columns as numpy string arrays, 0-d arrays
        as Python numbers.

    Raises
    ------
    UsageError
        A missing or unreadable file, an unsupported extension, a name given twice.
    """
    data, origin = {}, {}

    def put(key, value, source):
        if key in data:
            raise UsageError(f"data entry {key!r} comes from both {origin[key]} and {source}")
        data[key], origin[key] = value, source

    for p in list(paths) + [m.partition("=")[2] for m in matrices if "=" in m]:
        path = Path(p).expanduser()
        if not path.exists():
            raise UsageError(f"data file {p!r} does not exist")
        if not path.is_file():
            raise UsageError(f"data file {p!r} is not a file")
        if path.suffix.lower() not in (".csv", ".npz"):
            raise UsageError(f"data file {p!r}: unsupported extension {path.suffix!r}; use .csv or .npz")
    csv_paths = [p for p in paths if Path(p).suffix.lower() == ".csv"]
    as_matrix = {}
    for m in matrices:
        name, sep, p = m.partition("=")
        name = name.strip()
        if not name.isidentifier():
            raise UsageError(f"--data-matrix {m!r}: {name!r} is not a valid name")
        if sep:
            if Path(p).suffix.lower() != ".csv":
                raise UsageError(f"--data-matrix {m!r}: the file must be a .csv")
            as_matrix.setdefault(p, []).append(name)
        else:
            if len(csv_paths) != 1:
                raise UsageError(f"--data-matrix {name}: give exactly one .csv with --data (got {len(csv_paths)}), "
                                 f"or name the file: --data-matrix {name}=FILE.csv")
            as_matrix.setdefault(csv_paths[0], []).append(name)
    for p in list(paths) + [p for p in as_matrix if p not in paths]:
        if p in as_matrix:
            matrix = read_csv_matrix(p, float32=float32)
            for name in as_matrix[p]:
                put(name, matrix, f"{p} (--data-matrix)")
        elif Path(p).suffix.lower() == ".npz":
            for k, v in read_npz(p, float32=float32).items():
                put(k, v, p)
        else:
            for k, v in read_csv(p, float32=float32).items():
                put(k, v, p)
    data.update(sets or {})
    return data


# ------------------------------------------------------------------ output
def _fmt_number(v, digits: int = 6) -> str:
    if v is None:
        return "-"
    if isinstance(v, torch.Tensor):
        v = v.item()
    return f"{float(v):.{digits}f}"


def _fmt_tensor(t, limit: int = 8) -> str:
    if not isinstance(t, torch.Tensor):
        return repr(t)
    flat = t.detach().reshape(-1).cpu()
    shown = ", ".join(f"{float(x):.4g}" for x in flat[:limit])
    shape = "x".join(str(s) for s in t.shape) or "scalar"
    more = f", ... ({flat.numel() - limit} more)" if flat.numel() > limit else ""
    return f"[{shown}{more}]  ({shape})"


def summary_table(post, sites=None, max_rows: int = 10):
    """``post.summary()`` restricted to ``sites`` (all when None), at most ``max_rows``
    rows (elements) per site; a note says what was left out.

    Returns
    -------
    ppl.table.Table
    """
    table = post.summary()
    wanted = list(sites) if sites else list(post.sites)
    rows, notes = [], list(table.notes)
    for site in wanted:
        mine = [r for r in table.rows if r.get("site") == site or str(r.get("site", "")).startswith(site + "[")]
        try:
            total = int(post.mean(site).numel())
        except Exception:  # noqa: BLE001 - only for the note
            total = len(mine)
        rows.extend(mine[:max_rows])
        if total > min(len(mine), max_rows):
            notes.append(f"{site}: {min(len(mine), max_rows)} of {total} elements shown "
                         f"(--max-rows sets how many, --sites which sites)")
    return Table(rows, columns=table.columns, title=table.title, notes=notes)


def format_posterior(post, label: str = "", sites=None, max_rows: int = 10, diagnostics: bool = False) -> str:
    """The report ``python -m ppl infer`` prints: method, routing, ELBO / log evidence,
    convergence, time, learned params and the summary table of ``post``."""
    lines = []
    if label:
        lines.append(f"model:         {label}")
    lines.append(f"method:        {post.method}")
    routing = post.diagnostics.get("routing") or {}
    if routing:
        lines.append(f"routing:       {routing.get('reason')}")
        passed = routing.get("passed_over") or {}
        if diagnostics:
            for name, why in passed.items():
                lines.append(f"  passed over {name}: {why}")
        elif passed:
            lines.append(f"passed over:   {', '.join(passed)} (--diagnostics says why)")
    lines.append(f"log evidence:  {_fmt_number(post.log_evidence)}" + (" nats" if post.log_evidence is not None
                                                                       else "  (not given by this method)"))
    lines.append(f"ELBO:          {_fmt_number(post.elbo)}" + (" nats" if post.elbo is not None else ""))
    if post.converged is None:
        lines.append("converged:     n/a (not iterative)")
    else:
        lines.append(f"converged:     {'yes' if post.converged else 'no'}")
    if post.history:
        lines.append(f"iterations:    {len(post.history)}")
    lines.append(f"elapsed:       {post.elapsed:.4f} s")
    if post.params:
        lines.append("learned params:")
        for name, value in post.params.items():
            lines.append(f"  {name}: {_fmt_tensor(value)}")
    if diagnostics:
        lines.append("diagnostics:")
        for key, value in post.diagnostics.items():
            if key != "routing":
                text = _fmt_tensor(value) if isinstance(value, torch.Tensor) else _one_line(repr(value))
                lines.append(f"  {key}: {text[:200]}")
    if max_rows > 0:
        lines.append("")
        try:
            lines.append(str(summary_table(post, sites, max_rows)))
        except (PPLError, TypeError, ValueError, NotImplementedError) as e:
            lines.append(f"summary: not available ({_one_line(e)})")
    return "\n".join(lines)


def _one_line(e) -> str:
    text = str(e) if not isinstance(e, str) else e
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# ----------------------------------------------------------------- commands
def _bind(args):
    model, label = load_model(args.model)
    data = load_data(args.data or (), matrices=args.data_matrix or (), float32=args.float32,
                     sets=parse_assignments(args.set, "--set"))
    return model, label, data


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} tensor {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"text array {value.shape}"
    return repr(value)


def _compile(model, data):
    """``ppl.compile``; a DataError also lists the data entries the command line read."""
    try:
        return compile(model, data)
    except DataError as e:
        read = "; ".join(f"{k}: {_describe(v)}" for k, v in data.items()) or "nothing"
        raise DataError(f"{_one_line(e)} [data read: {read}]") from e


def _methods_arg(text: str) -> list:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise UsageError("--methods is empty; give e.g. exact,cavi,svi or all")
    return names


def _check_options(method: str, options: dict):
    backend = get_backend(method)
    unknown = [k for k in options if k not in backend.options and k not in ANALYSIS_OPTIONS]
    if unknown:
        raise UsageError(f"method '{method}' takes no option(s) {unknown}; its options: {sorted(backend.options)} "
                         f"(python -m ppl methods {method} describes them)")


def _seed(args):
    if args.seed is not None:
        import pyro

        pyro.set_rng_seed(args.seed)


def cmd_analyze(args) -> int:
    """``python -m ppl analyze``: print :func:`ppl.analyze` of the model and data."""
    model, label, data = _bind(args)
    graph = _compile(model, data)
    kwargs = {"heuristic": args.heuristic}
    if args.memory_budget is not None:
        kwargs["memory_budget"] = parse_bytes(args.memory_budget)
    if args.graph:
        print(graph)
        print()
    print(analyze(graph, **kwargs))
    return 0


def cmd_infer(args) -> int:
    """``python -m ppl infer``: run :func:`ppl.infer` and print the posterior's report."""
    options = parse_assignments(args.option, "--option", parse_option_value)
    method = args.method
    if method != "auto":
        get_backend(method)  # unknown method: BackendNotFoundError before any work
        _check_options(method, options)
    if args.max_rows < 0:
        raise UsageError("--max-rows must be >= 0")
    model, label, data = _bind(args)
    _seed(args)
    if args.seed is not None and "seed" not in options:
        takers = [get_backend(method)] if method != "auto" else list(registered_backends().values())
        if all("seed" in b.options for b in takers):
            options["seed"] = args.seed
    graph = _compile(model, data)
    sites = [s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None
    if sites:
        unknown = [s for s in sites if s not in graph.latent()]
        if unknown:
            raise UsageError(f"--sites {unknown}: not latent sites of the model; latent sites: {graph.latent()}")
    try:
        post = infer(graph, method=method, **options)
    except TypeError as e:
        if "unknown option" in str(e):
            raise UsageError(_one_line(e)) from e
        raise
    if sites:
        missing = [s for s in sites if s not in post.sites]
        if missing:
            print(f"note: {missing} not described by this posterior; it describes {post.sites}", file=sys.stderr)
            sites = [s for s in sites if s in post.sites]
    print(format_posterior(post, label, sites, args.max_rows, args.diagnostics))
    return 0


def cmd_compare(args) -> int:
    """``python -m ppl compare``: run :func:`ppl.compare` and print its table."""
    raw = parse_assignments(args.option, "--option", lambda k, v: (k, v))
    common, scoped = {}, {}
    for key, (_, text) in raw.items():
        method, dot, name = key.rpartition(".")
        if dot:
            scoped.setdefault(method, {})[name] = parse_option_value(name, text)
        else:
            common[key] = parse_option_value(key, text)
    methods = "all" if args.methods.strip() == "all" else _methods_arg(args.methods)
    if methods != "all":
        for m in methods:
            get_backend(m)
    for m in scoped:
        get_backend(m)
    model, label, data = _bind(args)
    _seed(args)
    graph = _compile(model, data)
    if methods == "all" and (common or scoped or args.seed is not None):
        methods = [n for n, (ok, _) in analyze(graph).backends.items() if ok]
    if methods != "all":
        for m in scoped:
            if m not in methods:
                raise UsageError(f"--option {m}.KEY=...: method '{m}' is not among the methods compared {methods}")
        if args.seed is not None and "seed" not in common and all("seed" in get_backend(m).options for m in methods):
            common["seed"] = args.seed
        for m in methods:
            _check_options(m, {**common, **scoped.get(m, {})})
        methods = [(m, scoped[m]) if scoped.get(m) else m for m in methods]
    kwargs = {"reference": args.reference} if args.reference else {}
    try:
        table = compare(graph, methods=methods, **kwargs, **common)
    except TypeError as e:
        if "unknown option" in str(e):
            raise UsageError(_one_line(e)) from e
        raise
    except ValueError as e:
        if args.reference and not isinstance(e, PPLError):
            raise UsageError(f"--reference {args.reference}: {_one_line(e)}") from e
        raise
    print(f"model: {label}")
    print(table)
    return 0


def cmd_methods(args) -> int:
    """``python -m ppl methods [NAME]``: list the registered methods and their options."""
    backends = registered_backends()
    names = [args.name] if args.name else list(backends)
    for i, name in enumerate(names):
        backend = get_backend(name)
        if i:
            print()
        print(f"{name}: {backend.summary}")
        if backend.options:
            print("  options (--option KEY=VALUE):")
            width = max(len(k) for k in backend.options)
            for key, doc in backend.options.items():
                print(f"    {key:<{width}}  {doc}")
    if not args.name:
        order = [n for n in AUTO_PREFERENCE if n in backends] + [n for n in backends if n not in AUTO_PREFERENCE]
        print(f"\nauto: the first that applies, in the order {', '.join(order)} "
              "(python -m ppl analyze MODEL says which apply and why)")
    return 0


# ------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (plus the help hint) and status 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


_FORMATTER = argparse.RawDescriptionHelpFormatter

_TOP_EPILOG = """\
a model file, e.g. model.py:
  import torch, ppl
  import ppl.distributions as dist

  @ppl.model
  def mixture(x, K=2):
      weights = ppl.param("weights", torch.ones(K) / K, constraint=dist.constraints.simplex)
      locs = ppl.param("locs", torch.linspace(-2.0, 2.0, K))
      with ppl.plate("data", len(x)):
          z = ppl.sample("z", dist.Categorical(weights))
          ppl.sample("obs", dist.Normal(locs[z], 1.0), obs=x)

and data.csv with a column named x (a model argument) - column, .npz key and --set names
are the model's argument names or the names of sample sites to observe.

examples:
  python -m ppl analyze model.py:mixture --data data.csv
  python -m ppl infer   model.py:mixture --data data.csv --method exact
  python -m ppl infer   model.py:mixture --data data.csv --method em --option max_iter=50
  python -m ppl compare model.py:mixture --data data.csv --methods exact,cavi,em
  python -m ppl methods                    # registered methods and their options

exit status: 0 ok, 2 usage error (arguments, files, model name, unknown method/option),
1 ppl refused or failed (DataError, UnsupportedModelError, ...). Full guide: docs/cli.md
"""

_DATA_HELP = """\
data conventions:
  .csv: one entry per column, named by its header line; .npz: one entry per array, named by
  its key (np.savez("data.npz", x=..., y=...)); --set adds scalars. Each name is an argument
  of the model function or a sample site to observe. Floats become float64 tensors (float32
  with --float32), integers int64, text columns stay text (state names); empty / NA cells
  are NaN, which ppl reports as a DataError. --data-matrix NAME reads the whole numeric CSV
  as one (N, D) tensor NAME instead (e.g. a mixture's x).
"""


def _common(parser):
    parser.add_argument("model", metavar="FILE.py[:MODEL]",
                        help="the model: a @ppl.model (or plain model function) MODEL defined in FILE.py; "
                             "MODEL may be left out when the file defines exactly one @ppl.model")
    g = parser.add_argument_group("data")
    g.add_argument("--data", action="append", metavar="FILE", help=".csv or .npz data file (repeatable)")
    g.add_argument("--data-matrix", action="append", metavar="NAME[=FILE.csv]",
                   help="bind a whole numeric CSV as one (N, D) float tensor NAME (header line skipped)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra data entry, e.g. --set K=3 (repeatable)")
    g.add_argument("--float32", action="store_true", help="floating data as float32 (default float64)")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error (debugging)")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ppl`` argument parser (subcommands analyze, infer, compare, methods)."""
    parser = _Parser(
        prog=PROG, formatter_class=_FORMATTER, epilog=_TOP_EPILOG,
        description="ppl from the shell: analyse a probabilistic model, run inference on it, or compare "
                    "inference methods,\non a model written in a Python file and data from .csv / .npz files.")
    parser.add_argument("--version", action="version", version=f"ppl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "analyze", help="structure, treewidth, memory, and which methods apply and why",
        formatter_class=_FORMATTER,
        description="Print ppl.analyze(model, data): variables, plates, the moral graph, an elimination order, "
                    "the treewidth bound,\nthe largest table and its memory, and for every method whether it "
                    "applies and why.",
        epilog=_DATA_HELP + "\nexamples:\n"
               "  python -m ppl analyze model.py:mixture --data data.csv\n"
               "  python -m ppl analyze gmm.py:gmm --data points.csv --data-matrix x --set K=3 --graph\n")
    _common(p)
    p.add_argument("--heuristic", choices=["min_fill", "min_degree"], default="min_fill",
                   help="elimination-order heuristic (default min_fill)")
    p.add_argument("--memory-budget", metavar="BYTES", help="largest exact table allowed, e.g. 2GiB (default 2 GiB)")
    p.add_argument("--graph", action="store_true", help="also print the factor graph (variables and factors)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "infer", help="run one inference method and summarise the posterior",
        formatter_class=_FORMATTER,
        description="Run ppl.infer(model, data, method=...) and print the method, why it was chosen, the ELBO / "
                    "log evidence,\nconvergence, time, learned params and a table of posterior mean, sd and "
                    "quantiles per latent site.",
        epilog=_DATA_HELP + "\noptions of a method (python -m ppl methods NAME lists them):\n"
               "  --option KEY=VALUE      int, float, true/false, none, a JSON list/object, or text;\n"
               "                          dtype=float32|float64, memory_budget=2GiB\n"
               "\nexamples:\n"
               "  python -m ppl infer model.py:mixture --data data.csv --method exact\n"
               "  python -m ppl infer model.py:mixture --data data.csv          # method auto\n"
               "  python -m ppl infer coin.py:coin --data flips.npz --method svi --option num_steps=500 --seed 0\n"
               "  python -m ppl infer model.py:mixture --data data.csv --sites z --max-rows 5\n")
    _common(p)
    p.add_argument("--method", "-m", default="auto", metavar="METHOD",
                   help=f"{', '.join(registered_backends())}, or auto (default): the first that applies")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="option of the method (repeatable)")
    p.add_argument("--seed", type=int, help="random seed (Pyro/torch/numpy, and the method's seed option)")
    p.add_argument("--sites", metavar="A,B", help="latent sites to summarise (default all)")
    p.add_argument("--max-rows", type=int, default=10, metavar="N",
                   help="summary rows per site (elements of a plated site; default 10, 0: no table)")
    p.add_argument("--diagnostics", action="store_true",
                   help="also print why other methods were passed over, and the method's diagnostics")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser(
        "compare", help="run several methods and tabulate bound, log evidence, error and time",
        formatter_class=_FORMATTER,
        description="Print ppl.compare(model, data, methods=...): one row per method with the log evidence, the "
                    "ELBO,\nthe MAP log joint, the largest marginal error against exact, seconds and convergence.",
        epilog=_DATA_HELP + "\noptions:\n"
               "  --option KEY=VALUE         given to every method (each must take it)\n"
               "  --option METHOD.KEY=VALUE  given to one method, e.g. --option svi.num_steps=500\n"
               "\nexamples:\n"
               "  python -m ppl compare model.py:mixture --data data.csv --methods exact,cavi,em\n"
               "  python -m ppl compare model.py:mixture --data data.csv --methods all --option svi.num_steps=300\n")
    _common(p)
    p.add_argument("--methods", default="all", metavar="A,B,...|all",
                   help="comma-separated methods, or all (default): every method that applies")
    p.add_argument("--option", "-o", action="append", metavar="[METHOD.]KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--seed", type=int, help="random seed (Pyro/torch/numpy, and each method's seed option)")
    p.add_argument("--reference", metavar="LABEL",
                   help="row the errors are measured against (default: exact if it ran)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("methods", help="list the registered inference methods and their options",
                       formatter_class=_FORMATTER, description="List the registered methods and their options.",
                       epilog="examples:\n  python -m ppl methods\n  python -m ppl methods svi\n")
    p.add_argument("name", nargs="?", metavar="METHOD", help="only this method")
    p.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_methods)
    return parser


# -------------------------------------------------------------------- main
def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {category.__name__}: {_one_line(message)}", file=file or sys.stderr)


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit
    status (0 ok, 1 ppl refused or failed, 2 usage error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, argparse's usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except (UsageError, BackendNotFoundError) as e:
            if args.traceback:
                raise
            _error(_one_line(e))
            return EXIT_USAGE
        except PPLError as e:
            if args.traceback:
                raise
            _error(_one_line(e))
            return EXIT_FAILURE
        except KeyboardInterrupt:
            if args.traceback:
                raise
            _error("interrupted")
            return 130
        except BrokenPipeError:  # e.g. piped into head: the reader has gone
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_FAILURE
        except Exception as e:  # noqa: BLE001 - a readable line; --traceback shows the rest
            if args.traceback:
                raise
            _error(f"{type(e).__name__}: {_one_line(e)} (unexpected; rerun with --traceback for details)")
            return EXIT_FAILURE


def _error(message: str):
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
