"""Notebook display: ``_repr_html_`` of Table, Analysis and Comparison carries the key
numbers (as the text printout has them), escaped HTML, and marks unreliable rows."""

from __future__ import annotations

import html
import warnings

import torch

import ppl
import ppl.distributions as dist
from ppl.table import Table, format_value

F64 = torch.float64


@ppl.model
def sprinkler(wet):
    rain = ppl.sample("rain", dist.Bernoulli(torch.tensor(0.2, dtype=F64)))
    sprinkler_on = ppl.sample("sprinkler", dist.Bernoulli(0.4 - 0.39 * rain))
    p_wet = 0.01 + 0.8 * rain + 0.9 * sprinkler_on - 0.72 * rain * sprinkler_on
    ppl.sample("wet", dist.Bernoulli(p_wet), obs=wet)


DATA = {"wet": torch.tensor(1.0, dtype=F64)}


def test_table_html_escapes_and_keeps_every_cell():
    t = Table([{"site": "a<b", "mean": 1.5}, {"site": "c&d", "mean": None}], title="<t>", notes=["x > y"])
    out = t._repr_html_()
    assert "a&lt;b" in out and "c&amp;d" in out and "&lt;t&gt;" in out and "x &gt; y" in out
    assert "<b" not in out.replace("<body", "")  # no raw user text became markup
    assert out.count("<tr") == 3 and ">1.5000<" in out and ">-<" in out


def test_table_prints_plain_text_through_rich(monkeypatch):
    """str(Table): rich's table with ASCII rules, numbers right-aligned and text left, cell
    text verbatim (no markup, no emoji codes), never wrapped or cut, and the same in Jupyter
    (rich must not send it to the notebook's display)."""
    import rich.console

    status = "not run: [bold]x[/bold] :smile: " + "why " * 40
    t = Table([{"method": "exact", "log_evidence": -9.5474, "seconds": 12345, "trust": "exact", "status": "ok"},
               {"method": "cavi(seed=0)", "log_evidence": None, "seconds": 0.25, "trust": "reliable",
                "status": status}], title="ppl.compare on model 'm'", notes=["in nats"])
    text = str(t)
    assert text.splitlines() == [
        "ppl.compare on model 'm'",
        "method         log_evidence   seconds   trust      status",
        "------------- -------------- --------- ---------- " + "-" * (len(status) + 1),
        "exact               -9.5474    12,345   exact      ok",
        "cavi(seed=0)              -    0.2500   reliable   " + status.rstrip(),
        "in nats",
    ]
    assert text.isascii() and "\x1b" not in text
    monkeypatch.setattr(rich.console, "_is_jupyter", lambda: True)
    assert str(t) == text
    assert str(Table([], columns=[], title="empty", notes=["n"])) == "empty\nn"


def test_analysis_html_shows_the_deciding_numbers():
    a = ppl.analyze(sprinkler, DATA)
    out = a._repr_html_()
    assert f">{a.treewidth}<" in out
    assert "auto would choose" in out and f">{a.auto['method']}<" in out
    assert html.escape(str(a)) in out          # the full report too


def test_comparison_html_has_every_row_and_marks_unreliable_ones():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = ppl.compare(sprinkler, DATA, methods=["exact", "cavi", "map"])
    out = c._repr_html_()
    exact = c.posteriors["exact"]
    assert f">{format_value(exact.log_evidence)}<" in out
    for row in c.rows:
        assert f">{row['method']}<" in out
    unreliable = [r for r in c.rows if r.get("trust") == "unreliable" and str(r.get("status")).startswith("ok")]
    assert out.count('class="ppl-unreliable"') == len(unreliable) >= 1   # map is a point: never reliable


def test_figures_display_as_png_without_pyplot():
    post = ppl.infer(sprinkler, DATA, method="exact")
    png = post.plot("rain")._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figures = ppl.compare(sprinkler, DATA, methods=["exact", "cavi"]).plot()
    assert figures["bound"]._repr_png_()[:4] == b"\x89PNG"
