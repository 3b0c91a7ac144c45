"""The tutorial notebook (docs/tutorials/07-keep-predict-plot.ipynb) is generated from its
page and runs: its code cells, in order, as one script in a fresh process, print what the
page says they print (numbers to within rounding), and leave no file behind; and in a
Jupyter kernel (nbclient), where its three figures display inline as PNGs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "tutorials" / "07-keep-predict-plot.md"
NOTEBOOK = PAGE.with_suffix(".ipynb")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")

sys.path.insert(0, str(ROOT / "ppl_examples"))
import tutorial_notebook  # noqa: E402


def page_outputs() -> str:
    """What the page shows the cells print: its output blocks, joined."""
    return "".join(text for kind, text in tutorial_notebook.blocks(PAGE.read_text(encoding="utf-8"))
                   if kind == "output")


def same_up_to_rounding(got: str, expected: str, rel: float = 0.02) -> list:
    """The lines where ``got`` and ``expected`` differ in their words, or in a number by more
    than ``rel`` relative (or 0.05 absolute, for values near 0)."""
    got_lines, expected_lines = got.strip().splitlines(), expected.strip().splitlines()
    bad = [] if len(got_lines) == len(expected_lines) else [f"{len(got_lines)} lines, expected {len(expected_lines)}"]
    for g, e in zip(got_lines, expected_lines):
        if _NUMBER.sub("#", g).split() != _NUMBER.sub("#", e).split():
            bad.append(f"got {g!r}, expected {e!r}")
            continue
        for a, b in zip(map(float, _NUMBER.findall(g)), map(float, _NUMBER.findall(e))):
            if abs(a - b) > max(rel * abs(b), 0.05):
                bad.append(f"got {g!r}, expected {e!r}")
                break
    return bad


def test_notebook_is_generated_from_its_page():
    """The notebook is what ppl_examples/tutorial_notebook.py makes of the page: one code
    cell per ```python block, the prose as Markdown, no outputs."""
    text = PAGE.read_text(encoding="utf-8")
    assert NOTEBOOK.read_text(encoding="utf-8") == tutorial_notebook.dumps(tutorial_notebook.notebook(text)), \
        "the notebook is out of date: run python ppl_examples/tutorial_notebook.py"
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert (nb["nbformat"], nb["nbformat_minor"]) == (4, 5)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)    # as tests/test_tutorials.py reads them
    assert [("".join(c["source"])).rstrip("\n") for c in code] == [b.rstrip("\n") for b in blocks]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert markdown.startswith("# Keep, predict, plot")
    assert "![" not in markdown and "PSIS k̂ = " not in markdown           # figures and outputs left out
    assert "alpha ~ Normal(150, 100)" in markdown                          # a formula block stays
    assert len({c["id"] for c in nb["cells"]}) == len(nb["cells"])
    assert tutorial_notebook.main([str(PAGE), "--check"]) == 0


def test_notebook_generator_sorts_blocks():
    page = ("# T\n\nText.\n\n```\nformula\n```\n\n```python\nprint(1)\n```\n```\n1\n```\n\n"
            "![a figure](x.png)\n\nMore text.\n\n```python\nx = 2\n```\n\n![another](y.png)\n")
    kinds = [k for k, _ in tutorial_notebook.blocks(page)]
    assert kinds == ["markdown", "markdown", "python", "output", "image", "markdown", "python", "image"]
    nb = tutorial_notebook.notebook(page)
    assert [c["cell_type"] for c in nb["cells"]] == ["markdown", "code", "markdown", "code"]
    assert "".join(nb["cells"][0]["source"]) == "# T\n\nText.\n\n```\nformula\n```"
    assert tutorial_notebook.code_cells(nb) == ["print(1)", "x = 2"]


def test_notebook_runs_as_a_script(tmp_path):
    """Fit, verdict, save, load (the loaded means equal the original's), predict, plot: the
    cells run in a fresh process and print the page's output; nothing is written to the
    working directory (plots and the drawing stay in memory, the saved file goes to a
    temporary directory)."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    script = tmp_path / "script" / "notebook.py"
    script.parent.mkdir()
    script.write_text("\n\n".join(tutorial_notebook.code_cells(nb)) + "\n", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    run = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True, text=True, timeout=600,
                         env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "laplace reliable\n" in out
    assert "laplace reliable None\n" in out                     # loaded: same verdict, no model
    assert "loaded means equal the original's: True" in out
    assert "UnsupportedModelError : predictive(): this posterior (method 'laplace') has no model" in out
    lines = out.splitlines()
    assert lines.count("beta   mean [28.78, 12.49, 25.68] sd [3.13, 3.02, 3.05]") == 2    # original and loaded
    assert "png | no discrete latents" in out
    assert same_up_to_rounding(out, page_outputs()) == []
    assert list(work.iterdir()) == []


def test_same_up_to_rounding_can_fail():
    assert same_up_to_rounding("a 1.00 b\n", "a 1.01 b\n") == []
    assert same_up_to_rounding("a 1.5 b\n", "a 1.0 b\n")
    assert same_up_to_rounding("a 1.0 c\n", "a 1.0 b\n")
    assert same_up_to_rounding("a 1.0 b\nextra\n", "a 1.0 b\n")


def test_notebook_runs_in_a_kernel(tmp_path):
    """With nbclient and ipykernel (in the dev extra), the notebook runs in a
    Jupyter kernel too, and the figures and the drawing display as PNGs."""
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import nbformat

    nb = nbformat.reads(NOTEBOOK.read_text(encoding="utf-8"), as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    printed = "".join(o.get("text", "") for c in code for o in c.outputs
                      if o.output_type == "stream" and o.name == "stdout")
    assert same_up_to_rounding(printed, page_outputs()) == []
    shown = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert len(shown) == 3                   # post.plot("beta"), the predictive check, ppl.render
