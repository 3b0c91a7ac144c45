"""Loading a model from ``FILE.py:MODEL`` and data from ``.csv`` / ``.npz`` files for the command line."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import inspect
import io
import re
import sys
import types
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from ..dsl import Model
from ..errors import DataError

from .output import one_line
from .values import UsageError


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
        raise UsageError(f"importing {str(path)!r} failed: {type(e).__name__}: {one_line(e)}") from e
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
            raise UsageError(f"importing module {target!r} failed: {type(e).__name__}: {one_line(e)}") from e
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
        raise UsageError(f"cannot read data file {str(path)!r}: {one_line(e)} (save plain numeric arrays, "
                         "np.savez(path, x=..., y=...))") from e
    except Exception as e:
        raise UsageError(f"cannot read data file {str(path)!r} as .npz: {type(e).__name__}: {one_line(e)}") from e
    if not arrays:
        raise UsageError(f"data file {str(path)!r} holds no arrays")
    return {k: _as_data(k, a, float32, str(path)) for k, a in arrays.items()}


_MISSING = {"", "na", "nan", "n/a", "null", "none"}
#: Cells that ``float`` reads as NaN: missing cells of a column; NaN, not missing, in a matrix.
_NAN_TEXT = {"nan", "+nan", "-nan"}
#: pandas' message for a row with more fields than the rows above it.
_WIDER_ROW = re.compile(r"Expected \d+ fields in line \d+, saw (\d+)")
_LINE_BREAK = r"\r\n|\r|\n"


class _Table(NamedTuple):
    """A CSV file read by :func:`_csv_table`, from its first to its last non-blank row."""

    cells: pd.DataFrame   #: the text of each cell, stripped; "" past the end of a short row
    fields: np.ndarray    #: how many fields each row has (0 for an empty line)
    lines: np.ndarray     #: the line of the file each row ends on (1-based)
    filled: np.ndarray    #: whether a row has a non-blank cell


def _parse_csv(path, text: str) -> pd.DataFrame:
    """``pandas.read_csv`` of ``text``: every cell as its text, NaN past the end of a short
    row, one row per blank line.

    The python engine pads a short row with NaN (the C engine pads it with empty text, so a
    row with too few fields could not be told from one with empty cells). A row with more
    fields than those above it stops pandas; the file is then read again that wide.

    Raises
    ------
    UsageError
        Text that is not valid CSV (a quote left open, text after a closing quote).
    """
    names = None
    while True:
        try:
            return pd.read_csv(io.StringIO(text, newline=""), header=None, names=names, dtype=object,
                               na_filter=False, skip_blank_lines=False, engine="python")
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
        except (pd.errors.ParserError, csv.Error) as e:
            wider = _WIDER_ROW.search(str(e))
            if wider is None or int(wider.group(1)) <= len(names or ()):
                raise UsageError(f"cannot read data file {str(path)!r}: {one_line(e)}") from e
            names = list(range(int(wider.group(1))))


def _csv_table(path) -> _Table:
    """Read a CSV file with ``pandas.read_csv``: its rows from the first to the last
    non-blank one, a blank line between them kept as a row of no cells (one empty cell in
    a one-column file: a missing value, not nothing), and the file line of each row.

    A row ends as many lines below the one it starts on as its quoted cells hold line
    breaks, so the lines are counted from the breaks in the cells.

    Raises
    ------
    UsageError
        A file that cannot be read, is not UTF-8 text or not valid CSV, or holds no
        non-blank cell.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"cannot read data file {str(path)!r}: not UTF-8 text ({e.reason})") from e
    except OSError as e:
        raise UsageError(f"cannot read data file {str(path)!r}: {one_line(e)}") from e
    frame = _parse_csv(path, text)
    fields = frame.notna().sum(axis=1).to_numpy()
    raw = frame.astype(object).fillna("")
    breaks = raw.apply(lambda col: col.str.count(_LINE_BREAK)).sum(axis=1).to_numpy(dtype=np.int64)
    cells = raw.apply(lambda col: col.str.strip())
    filled = (cells != "").any(axis=1).to_numpy()
    if not filled.any():
        raise UsageError(f"data file {str(path)!r} is empty")
    first, last = np.flatnonzero(filled)[[0, -1]]
    keep = slice(first, last + 1)
    cells = cells.iloc[keep].reset_index(drop=True)
    cells.columns = range(cells.shape[1])
    return _Table(cells, fields[keep], np.cumsum(1 + breaks)[keep], filled[keep])


def _numbers(cells: pd.Series):
    """The numbers in stripped CSV cells: ``pandas.to_numeric`` tells which cells are
    numbers and whether all are integers.

    The values of a float column are Python's ``float`` of the text, correctly rounded:
    the float parser of older pandas (1.5) can be one unit in the last place off.

    Returns
    -------
    (numbers, not_numbers)
        ``numbers``: integers when every cell is an integer, else float64, with NaN
        for a missing cell (``_MISSING``, in any case), ``nan`` and a cell that is no
        number; ``not_numbers``: a mask of the cells that are neither a number nor missing.
    """
    text = cells.to_numpy(dtype=object)
    blank = cells.str.lower().isin(_MISSING | _NAN_TEXT).to_numpy(dtype=bool)
    numbers = pd.to_numeric(np.where(blank, None, text), errors="coerce")
    not_numbers = np.isnan(numbers.astype(np.float64)) & ~blank
    if numbers.dtype.kind != "i" and not not_numbers.any():
        with np.errstate(over="ignore"):   # 1e999 is inf
            numbers = np.where(blank, np.nan, text).astype(np.float64)
    return numbers, not_numbers


def _column(cells: pd.Series):
    """One CSV column of stripped cells, typed.

    Returns
    -------
    (values, missing)
        ``values``: int64 when every cell is an integer, float64 when every cell is a
        number or missing (NaN there; an integer too large for int64 too), else the text;
        ``missing``: a mask of the missing cells (NaN in a number column, an empty cell in
        a text column).
    """
    if cells.empty:
        return np.zeros(0), np.zeros(0, dtype=bool)
    numbers, text = _numbers(cells)
    if text.any():
        return cells.to_numpy(dtype=str), (cells == "").to_numpy(dtype=bool)
    if numbers.dtype.kind == "i":
        return numbers.astype(np.int64), np.zeros(len(numbers), dtype=bool)
    numbers = numbers.astype(np.float64)
    return numbers, np.isnan(numbers)


def read_csv(path, *, float32: bool = False) -> dict:
    """Read a ``.csv`` file with a header line: column name -> column vector.

    The file is parsed by ``pandas.read_csv``. Integer columns become int64 tensors,
    numeric ones float64 (float32 with ``float32=True``; empty, ``NA``, ``nan``, ``N/A``,
    ``null`` and ``none`` cells, in any case, become NaN, which :func:`load_data` then
    reports), other columns stay arrays of text (state names). Cells are stripped of
    surrounding spaces. A blank line between data rows is a row of empty cells (in a
    one-column file, one missing value); blank lines before the header and after the last
    row are ignored.

    Raises
    ------
    UsageError
        Unreadable file (not UTF-8, broken quoting), empty or duplicate header names, rows
        of the wrong length.
    """
    return _read_csv(path, float32=float32)[0]


def _read_csv(path, *, float32: bool = False):
    """:func:`read_csv`, and its missing cells: ``[(column, data row, line, cell text)]``
    in file order.

    Raises
    ------
    UsageError
        As :func:`read_csv`.
    """
    table = _csv_table(path)
    header = list(table.cells.iloc[0, :table.fields[0]])
    names = pd.Series(header, dtype=object)
    if not _numbers(names)[1].any() and not names.str.lower().isin(_MISSING - _NAN_TEXT).any():
        raise UsageError(f"data file {str(path)!r}: the first line holds numbers, not column names; "
                         "add a header line, or bind the whole table with --data-matrix NAME")
    for i, h in enumerate(header):
        if not h:
            raise UsageError(f"data file {str(path)!r}: column {i + 1} of the header has no name")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise UsageError(f"data file {str(path)!r}: duplicate column name(s) {dupes}")
    fields, lines = table.fields[1:], table.lines[1:]
    wrong = np.flatnonzero(table.filled[1:] & (fields != len(header)))   # a blank row: every cell missing
    if wrong.size:
        raise UsageError(f"data file {str(path)!r}: line {lines[wrong[0]]} has {fields[wrong[0]]} fields, the "
                         f"header {len(header)}")
    body = table.cells.iloc[1:, :len(header)].reset_index(drop=True)
    data, gaps = {}, []
    for j, h in enumerate(header):
        column, gap = _column(body[j])
        data[h] = _as_data(h, column, float32, str(path))
        gaps.append(gap)
    rows, cols = np.nonzero(np.column_stack(gaps)) if len(body) else ((), ())   # row by row: file order
    missing = [(header[j], int(i), int(lines[i]), body.iat[i, j]) for i, j in zip(rows, cols)]
    return data, missing


def read_csv_matrix(path, *, float32: bool = False) -> torch.Tensor:
    """Read a numeric ``.csv`` file as one ``(N, D)`` float tensor; a first line that is not
    all numbers (a header) is skipped. The file is parsed by ``pandas.read_csv``.

    Raises
    ------
    UsageError
        Unreadable file (not UTF-8, broken quoting), rows of different lengths, or a cell
        that is not a number (empty and ``NA`` cells are NaN, which :func:`load_data`
        then reports).
    """
    return _read_csv_matrix(path, float32=float32)[0]


def _read_csv_matrix(path, *, float32: bool = False):
    """:func:`read_csv_matrix`, and its missing cells ``[(column number, data row, line,
    cell text)]`` in file order.

    Raises
    ------
    UsageError
        As :func:`read_csv_matrix`.
    """
    table = _csv_table(path)
    start = int(_numbers(table.cells.iloc[0, :table.fields[0]])[1].any())   # 1: skip a header
    if start == len(table.cells):
        raise UsageError(f"data file {str(path)!r} has a header but no rows")
    fields, lines = table.fields[start:], table.lines[start:]
    width = fields[0]
    cells = table.cells.iloc[start:, :width]
    numbers, text = _numbers(pd.Series(cells.to_numpy(dtype=object).ravel(), dtype=object))
    text = text.reshape(len(cells), width)
    wrong = table.filled[start:] & (fields != width)   # a blank row: every cell missing
    bad = np.flatnonzero(wrong | text.any(axis=1))
    if bad.size and wrong[bad[0]]:
        raise UsageError(f"data file {str(path)!r}: rows have different lengths ({width} and "
                         f"{fields[bad[0]]}, line {lines[bad[0]]})")
    if bad.size:
        cell = cells.iat[bad[0], int(np.argmax(text[bad[0]]))]
        raise UsageError(f"data file {str(path)!r}: {cell!r} is not a number (data row {bad[0] + 1}); "
                         "--data-matrix needs an all-numeric table")
    gaps = cells.apply(lambda col: col.str.lower().isin(_MISSING)).to_numpy(dtype=bool)
    missing = [(int(j) + 1, int(i), int(lines[i]), cells.iat[i, j]) for i, j in zip(*np.nonzero(gaps))]
    values = numbers.astype(np.float64).reshape(len(cells), width).astype(_float_dtype(float32))
    return torch.from_numpy(values), missing


def _missing_error(key: str, path, missing: list, where: str, numeric: bool = True) -> DataError:
    """The :class:`DataError` for the missing cells of a CSV file: the first one's column,
    row and line, and how many there are."""
    first, more = missing[0], len(missing) - 1
    _, row, line, text = first
    cell = "empty" if not text else f"{text!r}"
    holds = "holds NaN" if numeric else "has a missing value"
    return DataError(
        f"data['{key}'] {holds}: data file {str(path)!r}, {where}, data row {row + 1} (index {row}, line {line}) is "
        f"{cell}" + (f" ({more} more missing cell{'s' if more > 1 else ''} in the file)" if more else "")
        + "; ppl takes no missing values here: drop or impute those rows (a learnable Bayesian network takes -1 "
        "for a missing entry)"
    )


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
    DataError
        A CSV file with a missing cell (an empty, ``NA`` or ``nan`` cell in a number
        column, or an empty cell in a text column); the message names the column, the
        data row and the line of the first, and counts the others.
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
    missing = []   # (key, path, cells, where) of the CSV files with missing cells
    for p in list(paths) + [p for p in as_matrix if p not in paths]:
        if p in as_matrix:
            matrix, cells = _read_csv_matrix(p, float32=float32)
            for name in as_matrix[p]:
                put(name, matrix, f"{p} (--data-matrix)")
            if cells:
                missing.append((as_matrix[p][0], p, cells, f"column {cells[0][0]}", True))
        elif Path(p).suffix.lower() == ".npz":
            for k, v in read_npz(p, float32=float32).items():
                put(k, v, p)
        else:
            columns, cells = _read_csv(p, float32=float32)
            for k, v in columns.items():
                put(k, v, p)
            cells = [c for c in cells if c[0] not in (sets or {})]   # --set replaces a column
            if cells:
                key = cells[0][0]
                numeric = isinstance(columns[key], torch.Tensor)
                missing.append((key, p, cells, f"column '{key}'", numeric))
    data.update(sets or {})
    for key, p, cells, where, numeric in missing:
        if key not in (sets or {}):
            raise _missing_error(key, p, cells, where, numeric)
    return data
