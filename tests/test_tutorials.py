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
    """``make docs``: the pages' pictures are drawn into docs/images/
    (ppl_examples/docs_images.py), then mkdocs builds the site from docs/ with no warnings (a
    page missing from the navigation, a broken nav entry, a missing picture); every page
    that shows a picture holds it, and the pictures are in the built site."""
    pytest.importorskip("mkdocs")
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    images = subprocess.run([sys.executable, "ppl_examples/docs_images.py"], cwd=root, capture_output=True,
                            text=True, timeout=300, env=env)
    assert images.returncode == 0, images.stdout + images.stderr
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path / "site")],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    check_pictures(tmp_path / "site")
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "tutorials" / "01-elbo" / "index.html").exists()
    # the API reference is generated from the docstrings, and nothing is fetched from a CDN
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "Run inference with the backend named" in api          # ppl.infer's docstring
    assert "BackendNotFoundError" in api and "Posterior" in api
    # the docstrings' Sphinx roles are links or code (docs/griffe_sphinx_roles.py), never raw text
    import re
    raw = re.findall(r":(?:py:)?[a-z]+:(?:`|<code>)[^<`]{0,40}", api)
    assert not raw, raw[:10]
    assert '<a class="autorefs autorefs-internal"' in api and 'href="#ppl.errors.TrustWarning"><code>TrustWarning</code></a>' in api
    for page in (tmp_path / "site").rglob("*.html"):
        text = page.read_text()
        assert "cdnjs" not in text and "cdn.jsdelivr" not in text, page


def check_pictures(site: Path) -> None:
    """Each page of ``docs_images.IMAGES`` shows its pictures (an ``<img>`` with alt text),
    every ``<img>`` of the site opens a PNG of real size, and the notebook is downloadable."""
    import struct
    import sys
    from html.parser import HTMLParser

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ppl_examples"))
    from docs_images import IMAGES

    class Images(HTMLParser):
        def __init__(self):
            super().__init__()
            self.found = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.found.append(dict(attrs))

    def images_of(page: Path) -> list:
        parser = Images()
        parser.feed(page.read_text(encoding="utf-8"))
        return parser.found

    for source, names in IMAGES.items():
        page = site / source.removesuffix(".md") / "index.html"
        shown = {Path(img["src"]).name: img for img in images_of(page)}
        for name in names:
            assert name in shown, f"{source} does not show {name}"
            assert len(shown[name].get("alt", "")) > 20, f"{source}: {name} has no alt text"
    pictures = 0
    for page in site.rglob("*.html"):
        for img in images_of(page):
            if img["src"].startswith(("http:", "https:", "data:")):
                continue
            target = (page.parent / img["src"]).resolve()
            assert target.is_file(), f"{page.relative_to(site)}: picture {img['src']} is not in the site"
            head = target.read_bytes()[:24]
            assert head[:8] == b"\x89PNG\r\n\x1a\n", target
            width, height = struct.unpack(">II", head[16:24])
            assert width >= 300 and height >= 200, (target, width, height)
            pictures += 1
    assert pictures >= sum(len(names) for names in IMAGES.values())
    tutorial = (site / "tutorials" / "07-keep-predict-plot" / "index.html").read_text(encoding="utf-8")
    assert "07-keep-predict-plot.ipynb" in tutorial
    assert (site / "tutorials" / "07-keep-predict-plot.ipynb").is_file()
