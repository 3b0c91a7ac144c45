"""Every tutorial in docs/tutorials/ runs as written: its ```python blocks are executed in
order in one namespace (the ``assert`` statements in them check the numbers the text
quotes against closed forms), so the pages cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

TUTORIALS = sorted((Path(__file__).resolve().parent.parent / "docs" / "tutorials").glob("*.md"))
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def code_blocks(path: Path) -> list:
    """The ```python blocks of a Markdown page, in order."""
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(page, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)           # plots a page writes land in a scratch directory
    blocks = code_blocks(page)
    assert blocks, f"{page.name} has no python code"
    namespace = {"__name__": f"tutorial_{page.stem}"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)              # the pages' ops are tiny: one thread, no fight with the other worker
    try:
        for i, block in enumerate(blocks):
            try:
                exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
            except Exception as e:  # noqa: BLE001 - report which block of which page failed
                raise AssertionError(f"{page.name}, code block {i} failed: {type(e).__name__}: {e}") from e
    finally:
        torch.set_num_threads(threads)


def test_docs_site_builds(tmp_path):
    """``make docs``: mkdocs builds the site from docs/ with no warnings (a page missing from
    the navigation, a broken nav entry)."""
    pytest.importorskip("mkdocs")
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path / "site")],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "tutorials" / "01-elbo" / "index.html").exists()
    # the API reference is generated from the docstrings, and nothing is fetched from a CDN
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "Run inference with the backend named" in api          # ppl.infer's docstring
    assert "BackendNotFoundError" in api and "Posterior" in api
    for page in (tmp_path / "site").rglob("*.html"):
        text = page.read_text()
        assert "cdnjs" not in text and "cdn.jsdelivr" not in text, page
