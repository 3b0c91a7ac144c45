"""ppl.render: what is drawn (ppl.render.drawing, asserted node by node), the matplotlib
layout's geometry (boxes hold their members and nothing else), the image files of both
engines, and the option errors.  The dot engine is exercised with a stand-in ``dot``
script everywhere, and with Graphviz's own when it is installed."""

from __future__ import annotations

import importlib
import os
import shutil
import stat
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from pyro.ops.indexing import Vindex

import ppl
import ppl.distributions as dist
from torch.distributions import constraints

R = importlib.import_module("ppl.render")  # the module (ppl.render is the function)
F64 = torch.float64
HAS_DOT = shutil.which("dot") is not None


# ------------------------------------------------------------------ models
@ppl.model
def mixture(x):
    """A discrete mixture: a global switch, one assignment per data point."""
    a = ppl.sample("a", dist.Bernoulli(torch.tensor(0.4, dtype=F64)))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(Vindex(torch.tensor([[0.3, 0.7], [0.6, 0.4]], dtype=F64))[a.long()]))
        ppl.sample("obs", dist.Categorical(Vindex(torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5]], dtype=F64))[z]),
                   obs=x)


MIX_DATA = {"x": torch.tensor([0, 2, 1, 2])}


@ppl.model
def with_params(x):
    weights = ppl.param("weights", torch.tensor([0.5, 0.5], dtype=F64), constraint=constraints.simplex)
    loc = ppl.param("loc", torch.tensor([-1.0, 1.0], dtype=F64))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(weights))
        ppl.sample("obs", dist.Normal(loc[z], 1.0), obs=x)


PARAM_DATA = {"x": torch.tensor([-1.2, 0.3, 0.9], dtype=F64)}


@ppl.model
def nested(y):
    G, I = y.shape
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    with ppl.plate("groups", G, dim=-2):
        g = ppl.sample("g", dist.Categorical(torch.ones(3, dtype=F64) / 3))
        with ppl.plate("items", I, dim=-1):
            c = ppl.sample("c", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
            ppl.sample("y", dist.Normal(mu + g + c, 1.0), obs=y)
    with ppl.plate("others", I, dim=-1):
        ppl.sample("h", dist.Bernoulli(torch.tensor(0.5, dtype=F64)))
    ppl.factor("penalty", -(mu**2))


NESTED_DATA = {"y": torch.zeros(4, 5, dtype=F64)}


@ppl.model
def diamond():
    """a -> b, a -> c, (b, c) -> d -> e observed: eliminating d joins a, b, c."""
    a = ppl.sample("a", dist.Bernoulli(torch.tensor(0.5, dtype=F64)))
    b = ppl.sample("b", dist.Categorical(torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=F64)[a.long()]))
    c = ppl.sample("c", dist.Bernoulli(torch.tensor([0.1, 0.9], dtype=F64)[a.long()]))
    table = torch.tensor([[0.1, 0.9], [0.3, 0.3], [0.5, 0.5]], dtype=F64)
    d = ppl.sample("d", dist.Bernoulli(table[b.long(), c.long()]))
    ppl.sample("e", dist.Bernoulli(0.2 + 0.5 * d), obs=torch.tensor(1.0, dtype=F64))


@ppl.model
def continuous():
    m = ppl.sample("m", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    ppl.sample("x", dist.Normal(m, 1.0), obs=torch.tensor(0.5, dtype=F64))


# ------------------------------------------------------------------ what is drawn
def test_mixture_nodes_styles_and_plates():
    d = R.drawing(mixture, MIX_DATA)
    analysis = ppl.analyze(mixture, MIX_DATA)
    assert d.title == "model 'mixture'"
    assert set(d.of_kind("latent")) == {"a", "z"}
    assert d.of_kind("observed") == ["obs"]
    assert d.of_kind("param") == []
    assert set(d.of_kind("factor")) == {"f:a", "f:z", "f:obs"}
    assert d.nodes["z"].label == "z\nCategorical"
    assert d.nodes["obs"].label == "obs\nCategorical"
    assert d.nodes["f:z"].label == ""  # the variable below it carries the name
    # edges: factor -- each variable of its scope
    assert set(d.edges) == {("f:a", "a"), ("f:z", "a"), ("f:z", "z"), ("f:obs", "z"), ("f:obs", "obs")}
    assert d.parents["z"] == ("a",) and set(d.parents["obs"]) == {"z"}
    assert [d.nodes[s].depth for s in ("a", "z", "obs")] == [0, 1, 2]
    # the one plate box holds z, obs and their factors, not a
    assert [b.path for b in d.boxes] == [("data",)]
    box = d.box("data")
    assert box.label == "data (N=4)" and box.size == 4
    assert box.members == {"z", "obs", "f:z", "f:obs"}
    # highlighted: exactly the analysis' largest clique, which holds the latent z
    assert d.clique == tuple(analysis.largest_clique)
    assert "z" in d.clique
    assert {n.id for n in d.nodes.values() if n.highlighted} == set(analysis.largest_clique)
    assert not d.nodes["obs"].highlighted and not any(d.nodes[f].highlighted for f in d.of_kind("factor"))
    assert f"{analysis.clique_states} joint states" in d.caption
    assert f"= {analysis.cost.peak_entries} entries" in d.caption


def test_params_are_drawn_as_params_joined_to_their_factors():
    d = R.drawing(with_params, PARAM_DATA)
    assert set(d.of_kind("param")) == {"weights", "loc"}
    assert d.nodes["weights"].label == "weights" and d.nodes["weights"].plates == ()
    assert ("f:z", "weights") in d.edges and ("f:obs", "loc") in d.edges
    assert d.nodes["obs"].kind == "observed" and d.nodes["obs"].label == "obs\nNormal"
    assert d.box("data").members == {"z", "obs", "f:z", "f:obs"}
    assert d.clique == ("z",) and d.nodes["z"].highlighted
    assert not d.nodes["weights"].highlighted


def test_nested_plates_nest_and_separate_plates_do_not():
    d = R.drawing(nested, NESTED_DATA)
    paths = [b.path for b in d.boxes]
    assert set(paths) == {("groups",), ("groups", "items"), ("others",)}
    assert paths.index(("groups",)) < paths.index(("groups", "items"))  # outer before inner
    outer, inner, other = d.box("groups"), d.box("groups", "items"), d.box("others")
    assert inner.parent == ("groups",) and outer.parent == ()
    assert inner.members == {"c", "f:c", "y", "f:y"}
    assert outer.members == inner.members | {"g", "f:g"}
    assert other.members == {"h", "f:h"} and not (other.members & outer.members)
    assert (outer.label, inner.label, other.label) == ("groups (N=4)", "items (N=5)", "others (N=5)")
    # a ppl.factor term is a factor with no variable: it carries its own name
    assert d.nodes["f:penalty"].kind == "factor" and d.nodes["f:penalty"].label == "penalty"
    assert "penalty" not in d.nodes
    assert set(d.clique) == {"g", "c"}
    assert "plates groups (4) x items (5) = 120 entries" in d.caption


def test_largest_clique_of_a_loop_and_turning_it_off():
    d = R.drawing(diamond)  # no data: the model takes no arguments
    assert set(d.clique) == {"a", "b", "c"}
    assert {n.id for n in d.nodes.values() if n.highlighted} == {"a", "b", "c"}
    assert "3 variables, 12 joint states" in d.caption and "96 B" in d.caption
    off = R.drawing(diamond, largest_clique=False)
    assert off.clique == () and off.caption == "" and not any(n.highlighted for n in off.nodes.values())


def test_no_discrete_latent_no_clique():
    d = R.drawing(continuous)
    assert d.clique == () and "no discrete latents" in d.caption
    assert d.of_kind("latent") == ["m"] and d.nodes["m"].label == "m\nNormal"


def test_compiled_graph_is_accepted():
    graph = ppl.compile(mixture, MIX_DATA)
    assert R.drawing(graph).nodes.keys() == R.drawing(mixture, MIX_DATA).nodes.keys()
    with pytest.raises(ppl.DataError):
        R.drawing(graph, MIX_DATA)


@pytest.mark.parametrize("layout", ["TB", "LR"])
def test_layout_boxes_hold_their_members_and_nothing_else(layout):
    d = R.drawing(nested, NESTED_DATA)
    pos, rects = R._layout(d, layout)
    assert set(pos) == set(d.nodes)
    assert len({(round(x, 6), round(y, 6)) for x, y in pos.values()}) == len(pos)  # no two nodes on one spot
    for b in d.boxes:
        x0, y0, x1, y1 = rects[b.path]
        for node, (x, y) in pos.items():
            inside = x0 < x < x1 and y0 < y < y1
            assert inside == (node in b.members), (b.path, node)
        if b.parent:
            px0, py0, px1, py1 = rects[b.parent]
            assert px0 < x0 and py0 < y0 and x1 < px1 and y1 < py1
    # sibling boxes do not overlap
    ax0, ay0, ax1, ay1 = rects[("groups",)]
    bx0, by0, bx1, by1 = rects[("others",)]
    assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0


def test_to_dot_clusters_nest_and_styles():
    src = R.to_dot(R.drawing(nested, NESTED_DATA))
    assert src.startswith("digraph {") and src.rstrip().endswith("}")
    lines = src.splitlines()
    start = {label: i for i, line in enumerate(lines) for label in ("groups (N=4)", "items (N=5)", "others (N=5)")
             if f'label="{label}"' in line}
    assert len(start) == 3 and src.count("subgraph cluster_") == 3
    indent = {k: len(lines[i]) - len(lines[i].lstrip()) for k, i in start.items()}
    assert indent["items (N=5)"] > indent["groups (N=4)"] == indent["others (N=5)"]
    assert '"y" [shape="ellipse", style="filled", fillcolor="#b3b3b3", label="y\\nNormal"' in src
    assert '"g" [' in src and 'color="#d62728"' in src.split('"g" [')[1].splitlines()[0]
    assert '"f:y" [shape="box"' in src
    assert '"mu" -> "f:y";' in src and '"f:y" -> "y";' in src


# ------------------------------------------------------------------ image files
def _image(path: Path) -> np.ndarray:
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 300, img.shape
    return img[..., :3]


def _has_colour(img, rgb, tol=0.06):
    return bool((np.abs(img - np.asarray(rgb)) < tol).all(-1).sum() > 50)


def test_render_mixture_png(tmp_path):
    out = ppl.render(mixture, MIX_DATA, tmp_path / "mix.png", engine="matplotlib")
    assert out == tmp_path / "mix.png" and isinstance(out, Path)
    img = _image(out)
    assert _has_colour(img, (214 / 255, 39 / 255, 40 / 255))  # the clique's red outline
    assert _has_colour(img, (179 / 255,) * 3)  # the observed site's grey
    plain = _image(ppl.render(mixture, MIX_DATA, tmp_path / "plain.png", engine="matplotlib", largest_clique=False))
    assert not _has_colour(plain, (214 / 255, 39 / 255, 40 / 255))


def test_render_params_model_png_and_path_as_string(tmp_path):
    target = str(tmp_path / "params.PNG")
    out = ppl.render(with_params, PARAM_DATA, target, engine="matplotlib", layout="LR")
    assert out == Path(target)
    _image(out)


@pytest.mark.parametrize("suffix, magic", [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_render_vector_formats(tmp_path, suffix, magic):
    out = ppl.render(ppl.compile(nested, NESTED_DATA), path=tmp_path / f"n.{suffix}", engine="matplotlib")
    assert out.read_bytes().startswith(magic)


def test_auto_uses_matplotlib_without_dot(tmp_path, monkeypatch):
    monkeypatch.setattr(R.shutil, "which", lambda name: None)
    out = ppl.render(diamond, path=tmp_path / "d.png")  # engine="auto"
    _image(out)


def _fake_dot(tmp_path, code=0):
    """A stand-in ``dot`` that copies its DOT input to the output file."""
    script = tmp_path / "dot"
    script.write_text(f'#!/bin/sh\necho "$1" > "$4.args"\ncp "$2" "$4"\necho oops >&2\nexit {code}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.skipif(os.name != "posix", reason="the stand-in dot is a shell script")
def test_auto_prefers_dot_and_runs_it(tmp_path, monkeypatch):
    fake = _fake_dot(tmp_path)
    monkeypatch.setattr(R.shutil, "which", lambda name: fake if name == "dot" else None)
    out = ppl.render(mixture, MIX_DATA, tmp_path / "m.svg")
    assert Path(str(out) + ".args").read_text().strip() == "-Tsvg"
    source = out.read_text()
    assert 'label="data (N=4)"' in source and "subgraph cluster_" in source
    bad = tmp_path / "bad"
    bad.mkdir()
    fake_bad = _fake_dot(bad, code=3)
    monkeypatch.setattr(R.shutil, "which", lambda name: fake_bad)
    with pytest.raises(RuntimeError, match="oops"):
        ppl.render(mixture, MIX_DATA, tmp_path / "m.png", engine="dot")


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_render_with_graphviz(tmp_path, suffix):
    out = ppl.render(nested, NESTED_DATA, tmp_path / f"n.{suffix}", engine="dot")
    if suffix == "png":
        img = _image(out)
        assert _has_colour(img, (214 / 255, 39 / 255, 40 / 255))
    else:
        text = out.read_text()
        assert "groups (N=4)" in text and "items (N=5)" in text


# ------------------------------------------------------------------ errors
def test_option_errors(tmp_path, monkeypatch):
    with pytest.raises(ppl.OptionError, match="engine must be one of"):
        ppl.render(mixture, MIX_DATA, tmp_path / "m.png", engine="tikz")
    with pytest.raises(ValueError, match="layout must be one of"):  # OptionError is a ValueError
        ppl.render(mixture, MIX_DATA, tmp_path / "m.png", layout="BT")
    with pytest.raises(ppl.OptionError, match=r"\.png.*got '\.jpg'"):
        ppl.render(mixture, MIX_DATA, tmp_path / "m.jpg")
    with pytest.raises(ppl.OptionError, match="no suffix"):
        ppl.render(mixture, MIX_DATA, tmp_path / "m")
    with pytest.raises(ppl.OptionError, match="heuristic"):
        ppl.render(mixture, MIX_DATA, tmp_path / "m.png", heuristic="greedy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ppl.render(mixture, MIX_DATA, tmp_path / "missing" / "m.png", engine="matplotlib")
    with pytest.raises(ppl.DataError):
        ppl.render(ppl.compile(mixture, MIX_DATA), MIX_DATA, tmp_path / "m.png", engine="matplotlib")
    monkeypatch.setattr(R.shutil, "which", lambda name: None)
    with pytest.raises(ppl.OptionError, match="install Graphviz.*engine='matplotlib'"):
        ppl.render(mixture, MIX_DATA, tmp_path / "m.png", engine="dot")
    assert not any(tmp_path.iterdir())  # nothing was written


def test_render_without_a_path_writes_nothing_and_displays_inline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shown = ppl.render(mixture, MIX_DATA, engine="matplotlib")
    assert list(tmp_path.iterdir()) == []                       # no file written
    png = shown._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and shown._repr_svg_() is None
    written = ppl.render(mixture, MIX_DATA, tmp_path / "same.png", engine="matplotlib")
    assert _image(written).shape == _image(shown.save(tmp_path / "saved.png")).shape
    svg = ppl.render(mixture, MIX_DATA, engine="matplotlib", format="svg")
    assert svg._repr_svg_().lstrip().startswith("<?xml") and svg._repr_png_() is None
    with pytest.raises(ppl.OptionError, match="format"):
        ppl.render(mixture, MIX_DATA, format="pdf")
    with pytest.raises(ppl.OptionError, match=".png"):
        shown.save(tmp_path / "x.svg")
