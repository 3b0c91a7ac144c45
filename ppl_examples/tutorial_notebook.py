"""Write the Jupyter notebook of a tutorial page from its Markdown: the page
(``docs/tutorials/07-keep-predict-plot.md``) is the one source, the notebook
(``docs/tutorials/07-keep-predict-plot.ipynb``) is generated from it.

Each ```python block of the page becomes a code cell, and the prose between the blocks a
Markdown cell. What the page shows as a cell's result is left out of the notebook, which
is stored without outputs: a plain fenced block right after a python block (the printed
output), and an image line (``![...](...)``) that follows one (the figure the cell
displays). Every other fenced block (a formula, say) stays in the Markdown.

Run: ``python ppl_examples/tutorial_notebook.py`` (writes the notebook next to the page);
``--check`` exits with status 1, writing nothing, when the notebook differs from what the
page gives.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "tutorials" / "07-keep-predict-plot.md"

_FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)^```[ \t]*$\n?", re.S | re.M)
_IMAGE = re.compile(r"^!\[[^\]]*\]\([^)]*\)[ \t]*$")


def blocks(markdown: str) -> list:
    """The page as a list of ``(kind, text)``: ``"python"`` (a code block), ``"output"`` (a
    plain fenced block right after a python block), ``"image"`` (an image line right after
    a python block or its output) and ``"markdown"`` (everything else, fenced blocks
    included)."""
    parts, pos, last = [], 0, None
    for m in _FENCE.finditer(markdown):
        _prose(markdown[pos:m.start()], parts)
        lang, body = m.group(1), m.group(2)
        if lang == "python":
            parts.append(("python", body))
        elif lang == "" and parts and parts[-1][0] == "python" and last == m.start():
            parts.append(("output", body))
        else:
            parts.append(("markdown", m.group(0)))
        pos = last = m.end()
    _prose(markdown[pos:], parts)
    return parts


def _prose(text: str, parts: list) -> None:
    """Append the prose between two fenced blocks: image lines that follow a cell's code or
    output (blank lines between them allowed) are that cell's displayed result."""
    lines = text.split("\n")
    while parts and parts[-1][0] in ("python", "output", "image"):
        i = 0
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i < len(lines) and _IMAGE.match(lines[i]):
            parts.append(("image", lines[i]))
            lines = lines[i + 1:]
        else:
            break
    rest = "\n".join(lines).strip("\n")
    if rest.strip():
        parts.append(("markdown", rest))


def _source(text: str) -> list:
    lines = text.rstrip("\n").split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def notebook(markdown: str) -> dict:
    """The notebook (nbformat 4.5, no outputs) of a tutorial page."""
    cells, prose = [], []

    def flush():
        if prose:
            cells.append({"cell_type": "markdown", "id": f"cell-{len(cells)}", "metadata": {},
                          "source": _source("\n\n".join(prose))})
            prose.clear()

    for kind, text in blocks(markdown):
        if kind == "markdown":
            prose.append(text.strip("\n"))
        elif kind == "python":
            flush()
            cells.append({"cell_type": "code", "execution_count": None, "id": f"cell-{len(cells)}",
                          "metadata": {}, "outputs": [], "source": _source(text)})
    flush()
    return {"cells": cells,
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def dumps(nb: dict) -> str:
    """The notebook as Jupyter writes it (one-space indent, UTF-8, final newline)."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def code_cells(nb: dict) -> list:
    """The source of every code cell, in order."""
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", default=str(PAGE), help="the tutorial's Markdown page")
    parser.add_argument("--check", action="store_true", help="only check that the notebook is up to date")
    args = parser.parse_args(argv)
    page = Path(args.page)
    target = page.with_suffix(".ipynb")
    text = dumps(notebook(page.read_text(encoding="utf-8")))
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != text:
            print(f"{target} is out of date: run python ppl_examples/tutorial_notebook.py {page}")
            return 1
        print(f"{target} is up to date")
        return 0
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
