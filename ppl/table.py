"""A small printable table (rows of dicts) shared by ``compare`` and ``Posterior.summary``.

Prints as aligned text, converts to a pandas DataFrame when pandas is installed.
"""

from __future__ import annotations

import math

__all__ = ["Table", "format_value"]


class Table:
    """Rows of named values, printable and convertible to pandas.

    Parameters
    ----------
    rows : list[dict]
        One dict per row; keys are column names.
    columns : list[str], optional
        Column order (default: keys of the first row, then any new keys in order seen).
    title : str, optional
    notes : list[str], optional
        Lines printed under the table.
    """

    def __init__(self, rows, columns=None, title=None, notes=None):
        self.rows = [dict(r) for r in rows]
        if columns is None:
            columns = []
            for r in self.rows:
                columns.extend(k for k in r if k not in columns)
        self.columns = list(columns)
        self.title = title
        self.notes = list(notes or [])

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def column(self, name) -> list:
        """Values of one column, in row order (``None`` where a row lacks it)."""
        return [r.get(name) for r in self.rows]

    def to_pandas(self):
        """The table as a :class:`pandas.DataFrame`.

        Raises
        ------
        ImportError
            If pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError as e:  # pragma: no cover - pandas is a test extra
            raise ImportError("to_pandas() needs pandas: pip install pandas") from e
        return pd.DataFrame(self.rows, columns=self.columns)

    to_dataframe = to_pandas

    def __str__(self):
        cells = [[format_value(r.get(c)) for c in self.columns] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]
        out = []
        if self.title:
            out.append(self.title)
        out.append("  ".join(c.ljust(w) for c, w in zip(self.columns, widths)).rstrip())
        out.append("  ".join("-" * w for w in widths))
        for row in cells:
            out.append("  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths)).rstrip())
        out.extend(self.notes)
        return "\n".join(out)

    __repr__ = __str__

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def format_value(v) -> str:
    """A cell's text: ``"-"`` for None, ``"yes"``/``"no"`` for booleans, thousands
    separators for integers from 10 000, floats with 4 decimals (``"0"`` for zero,
    scientific notation at or above 1e5 or below 1e-3, ``"nan"``, ``"inf"``, ``"-inf"``),
    ``str`` of anything else.

    Parameters
    ----------
    v : object

    Returns
    -------
    str
    """
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "-inf" if v < 0 else "inf"
        if v == 0:
            return "0"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(v)
