"""A small printable table (rows of dicts) shared by ``compare`` and ``Posterior.summary``.

Prints as aligned plain text drawn by `rich <https://rich.readthedocs.io>`_ (no colour, no
markup, ASCII rules: the same in a terminal, a log file or a doctest), displays as HTML in a
notebook (``_repr_html_``), converts to a pandas DataFrame when pandas is installed.
"""

from __future__ import annotations

import html
import io
import math

from rich.box import Box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

__all__ = ["Table", "format_value", "html_table", "text_table", "PLAIN_BOX"]

#: The box of the text tables: rich's ``SIMPLE_HEAD`` in ASCII (a dashed rule under each
#: header, columns three spaces apart, no other lines).
PLAIN_BOX = Box("    \n    \n -  \n    \n    \n -  \n    \n    \n", ascii=True)
_PLACEHOLDERS = ("-", "")


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
        """The table as plain text (:func:`text_table`): the title, the header, one line per
        row, the notes."""
        return text_table(self.columns, [[format_value(r.get(c)) for c in self.columns] for r in self.rows],
                          title=self.title, notes=self.notes)

    __repr__ = __str__

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))

    def _repr_html_(self) -> str:
        """The table as HTML (Jupyter's rich display): the title as a caption, cells as
        :func:`format_value` writes them, the notes under it."""
        return html_table(self.columns, [[format_value(r.get(c)) for c in self.columns] for r in self.rows],
                          title=self.title, notes=self.notes)


def html_table(columns, cells, *, title=None, notes=(), row_classes=None) -> str:
    """An HTML table of text cells (every string escaped): numbers right-aligned.

    Parameters
    ----------
    columns : list[str]
        Header cells.
    cells : list[list[str]]
        One list of cell texts per row, in ``columns`` order.
    title : str, optional
        The caption.
    notes : sequence of str
        Lines shown under the table.
    row_classes : list[str or None], optional
        A CSS class per row (e.g. ``"ppl-unreliable"``).

    Returns
    -------
    str
        A ``<div class="ppl-table">`` holding the table and the notes.
    """
    esc = html.escape
    out = ['<div class="ppl-table">', '<table>']
    if title:
        out.append(f"<caption style=\"text-align:left;font-weight:bold\">{esc(str(title))}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(str(c))}</th>" for c in columns) + "</tr></thead><tbody>")
    for i, row in enumerate(cells):
        cls = row_classes[i] if row_classes and row_classes[i] else None
        attr = f' class="{esc(cls)}"' if cls else ""
        tds = "".join(f'<td style="text-align:{"right" if _numeric(v) else "left"}">{esc(v)}</td>' for v in row)
        out.append(f"<tr{attr}>{tds}</tr>")
    out.append("</tbody></table>")
    for note in notes:
        out.append(f'<p style="margin:0.2em 0;font-size:90%">{esc(str(note))}</p>')
    out.append("</div>")
    return "\n".join(out)


def text_table(columns, cells, *, title=None, notes=()) -> str:
    """A plain-text table of text cells, drawn by rich with :data:`PLAIN_BOX`.

    A column whose cells are all numbers (or ``"-"``) is right-aligned, header included;
    in other columns numbers are right-aligned and text left-aligned. Cell text is printed
    as given: no markup, no emoji codes, no colour, never wrapped or cut; trailing spaces
    are stripped.

    Parameters
    ----------
    columns : list[str]
        Header cells.
    cells : list[list[str]]
        One list of cell texts per row, in ``columns`` order.
    title : str, optional
        A line above the table.
    notes : sequence of str
        Lines under the table.

    Returns
    -------
    str
        The lines joined by newlines (no final newline).
    """
    out = [str(title)] if title else []
    if columns:
        rows = [[str(v) for v in row] for row in cells]
        table = RichTable(box=PLAIN_BOX, show_edge=False, pad_edge=False, header_style=None)
        widths = []
        for i, name in enumerate(columns):
            texts = [row[i] for row in rows]
            numeric = any(_numeric(v) for v in texts) and all(_numeric(v) or v in _PLACEHOLDERS for v in texts)
            table.add_column(Text(str(name)), justify="right" if numeric else "left", no_wrap=True)
            widths.append(max([cell_len(str(name))] + [cell_len(v) for v in texts]))
        for row in rows:
            table.add_row(*[Text(v, justify="right" if _numeric(v) else None) for v in row])
        buf = io.StringIO()  # wide enough never to wrap; never Jupyter's display (it would bypass buf)
        console = Console(file=buf, width=sum(widths) + 3 * len(widths) + 8, color_system=None, force_terminal=False,
                          force_jupyter=False, legacy_windows=False, markup=False, emoji=False, highlight=False,
                          soft_wrap=False)
        console.print(table)
        out.extend(line.rstrip() for line in buf.getvalue().splitlines())
    out.extend(str(n) for n in notes)
    return "\n".join(out)


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
