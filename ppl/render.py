"""Draw a model's factor graph, with its plates and the largest elimination clique,
as an image file: :func:`render`.

Two engines produce the image:

- ``"dot"``: Graphviz's ``dot`` executable (run through :mod:`subprocess`; the
  ``graphviz`` Python package is not needed), plates as nested clusters;
- ``"matplotlib"``: a layered layout computed here (a site's row is its depth in the
  model, plates get disjoint column bands so that a plate box holds its members and
  nothing else), drawn with the Agg backend (no display needed).

What is drawn does not depend on the engine: :func:`drawing` computes it (nodes with
their kind, label, plates and highlight, edges, plate boxes, caption) as plain data, and
both engines draw that.

Note: ``ppl.render`` is the function; import the helpers of this module with
``from ppl.render import drawing, to_dot``.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .analysis.elimination import HEURISTICS
from .analysis.report import format_bytes
from .api import analyze
from .compiler.factor_graph import FACTOR_PREFIX, FactorGraph
from .compiler.factor_graph import compile as _compile
from .errors import DataError, OptionError

__all__ = ["render", "drawing", "to_dot", "Drawing", "DrawNode", "PlateBox", "ENGINES", "FORMATS", "LAYOUTS"]

#: Values of ``engine=``.
ENGINES = ("auto", "dot", "matplotlib")
#: Image formats, chosen by the path's suffix.
FORMATS = ("png", "svg", "pdf")
#: Values of ``layout=``: rows top to bottom (``"TB"``) or columns left to right (``"LR"``).
LAYOUTS = ("TB", "LR")

#: Fill colours by kind (both engines).
FILL = {"latent": "white", "observed": "#b3b3b3", "param": "white", "factor": "black"}
HIGHLIGHT = "#d62728"  # the largest clique's outline


# ------------------------------------------------------------------ what is drawn
@dataclass(frozen=True)
class DrawNode:
    """One node of the drawing.

    Attributes
    ----------
    id : str
        The node's key in ``FactorGraph.to_networkx()``: the site name for a variable,
        ``"f:" + site`` for a factor.
    site : str
        The site name.
    kind : str
        ``"latent"``, ``"observed"``, ``"param"`` or ``"factor"``.
    label : str
        Text drawn with the node: ``"z\\nCategorical"`` for a sample site, the name for
        a param, empty for a factor whose variable is drawn (its name is the
        variable's), the site name for a ``ppl.factor`` term.
    family : str
        Distribution family (``"param"``, ``"factor"`` for ``ppl.factor`` terms).
    plates : tuple[str, ...]
        Enclosing plates, outermost first (nesting order of the drawing).
    depth : int
        Layer of the site in the model: 0 for params and sites with no parents, else one
        more than the deepest variable its density depends on.
    highlighted : bool
        True for the variables of the largest elimination clique.
    """

    id: str
    site: str
    kind: str
    label: str
    family: str
    plates: tuple
    depth: int
    highlighted: bool = False


@dataclass(frozen=True)
class PlateBox:
    """A plate drawn as a box.

    A set of sites that share the plates ``path`` is drawn inside one box per plate of
    the path, nested.  Plates that cross (sites in ``a`` only, in ``b`` only and in
    both) cannot be drawn as nested boxes: such a plate is drawn once per distinct path
    it appears in (as Pyro's ``render_model`` does).

    Attributes
    ----------
    path : tuple[str, ...]
        The plates from the outermost to this one; ``path[-1]`` is this box's plate.
    name : str
        The plate's name.
    size : int
        The plate's size.
    label : str
        ``"data (N=150)"``.
    members : frozenset[str]
        Ids of the nodes inside the box, nested boxes' included.
    """

    path: tuple
    name: str
    size: int
    label: str
    members: frozenset

    @property
    def parent(self) -> tuple:
        """Path of the enclosing box (``()`` at top level)."""
        return self.path[:-1]


@dataclass
class Drawing:
    """Everything :func:`render` draws, engine-independent.

    Attributes
    ----------
    title : str
        ``"model 'gmm'"``.
    nodes : dict[str, DrawNode]
        By id, variables in trace order then factors in trace order.
    edges : list[tuple[str, str]]
        ``(factor id, variable id)``, one per variable of each factor's scope.
    parents : dict[str, tuple[str, ...]]
        Site -> the other variables its factor depends on (the direction the layout uses).
    boxes : list[PlateBox]
        Outer boxes before the boxes they contain.
    clique : tuple[str, ...]
        The highlighted variables (the largest clique of the elimination), or ``()``.
    caption : str
        What the highlight means: the clique, its size and its table's size.
    """

    title: str
    nodes: dict
    edges: list
    parents: dict
    boxes: list
    clique: tuple
    caption: str

    def box(self, *path) -> PlateBox:
        """The box with the given plate path, e.g. ``d.box("data")``."""
        for b in self.boxes:
            if b.path == tuple(path):
                return b
        raise KeyError(f"no plate box with path {tuple(path)}; boxes: {[b.path for b in self.boxes]}")

    def of_kind(self, kind: str) -> list:
        """Ids of the nodes of one kind."""
        return [n.id for n in self.nodes.values() if n.kind == kind]


def _clique_caption(analysis, clique: tuple) -> str:
    """Two lines: the clique and its joint states; its table's entries and bytes."""
    cost = analysis.cost
    if not analysis.discrete:
        return "no discrete latents: nothing is eliminated exactly, no clique to highlight"
    names = ", ".join(clique[:8]) + (", ..." if len(clique) > 8 else "")
    n = len(clique)
    per_copy = " per plate copy" if cost.clique_plates else ""
    text = (f"largest clique ({analysis.heuristic.replace('_', '-')} elimination order), in red: {{{names}}}: "
            f"{n} variable{'s' if n != 1 else ''}, {cost.clique_states:,} joint states{per_copy}")
    table = f"{cost.clique_states:,} states"
    if cost.clique_plates:
        sizes = {p.name: p.size for p in analysis.graph.plates.values()}
        word = "plates" if len(cost.clique_plates) > 1 else "plate"
        table += f" x {word} " + " x ".join(f"{p} ({sizes.get(p, '?')})" for p in cost.clique_plates)
        table += f" = {cost.peak_entries:,} entries"
    text += f"\nits table: {table}, {format_bytes(analysis.clique_bytes)} at {analysis.itemsize} bytes/entry"
    if cost.intractable:
        text += f"\n(plates: {cost.intractable})"
    return text


def drawing(model, data=None, *, largest_clique: bool = True, heuristic: str = "min_fill") -> Drawing:
    """Compute what :func:`render` draws, without drawing it.

    Parameters
    ----------
    model : Model, callable or FactorGraph
    data : mapping, optional
        As :func:`ppl.analyze`; must be None when ``model`` is a FactorGraph.
    largest_clique : bool
        Highlight the variables of the largest table of exact elimination (from
        ``ppl.analyze``: ``Analysis.largest_clique``).
    heuristic : {"min_fill", "min_degree"}
        Elimination-order heuristic of the analysis.

    Returns
    -------
    Drawing

    Raises
    ------
    OptionError
        Unknown ``heuristic``.
    DataError, ModelError
        As :func:`ppl.compile`.
    """
    if heuristic not in HEURISTICS:
        raise OptionError(f"heuristic must be one of {list(HEURISTICS)}, got {heuristic!r}")
    if isinstance(model, FactorGraph):
        if data is not None:
            raise DataError("pass data to ppl.compile, not with an already compiled FactorGraph")
        graph = model
    else:
        graph = _compile(model, data)
    analysis = analyze(graph, heuristic=heuristic)  # cached on the graph

    # members of each plate, to order a node's plates outermost first: a plate whose
    # members include another's encloses it
    members: dict = {p: set() for p in graph.plates}
    for v in graph.variables.values():
        for p in v.plates:
            members[p].add(v.name)
    for f in graph.factors.values():
        for p in f.plates:
            members[p].add(FACTOR_PREFIX + f.name)
    rank = {p: i for i, p in enumerate(graph.plate_order)}

    def nest(plates) -> tuple:
        return tuple(sorted(plates, key=lambda p: (-len(members[p]), rank.get(p, 0), p)))

    # depth of each site: params and roots 0, else 1 + deepest parent
    parents: dict = {}
    depth: dict = {}
    for name, v in graph.variables.items():
        if v.role == "param":
            depth[name] = 0
            parents[name] = ()
    for f in graph.factors.values():
        ps = tuple(s for s in f.scope if s != f.name)
        parents[f.name] = ps
        depth[f.name] = 1 + max((depth.get(p, 0) for p in ps), default=-1)
    for name in graph.variables:  # a variable without a factor (should not happen)
        depth.setdefault(name, 0)
        parents.setdefault(name, ())

    clique = tuple(analysis.largest_clique) if largest_clique and analysis.discrete else ()
    highlighted = set(clique)
    nodes: dict = {}
    for name, v in graph.variables.items():
        label = name if v.role == "param" else f"{name}\n{v.family}"
        nodes[name] = DrawNode(name, name, v.role, label, v.family, nest(v.plates), depth[name], name in highlighted)
    for f in graph.factors.values():
        fid = FACTOR_PREFIX + f.name
        label = "" if f.name in graph.variables else f.name
        nodes[fid] = DrawNode(fid, f.name, "factor", label, f.family, nest(f.plates), depth[f.name])
    edges = [(FACTOR_PREFIX + f.name, s) for f in graph.factors.values() for s in f.scope]

    paths = sorted({n.plates[:i] for n in nodes.values() for i in range(1, len(n.plates) + 1)},
                   key=lambda path: (len(path), path))
    boxes = []
    for path in paths:
        plate = graph.plates[path[-1]]
        inside = frozenset(n.id for n in nodes.values() if n.plates[:len(path)] == path)
        boxes.append(PlateBox(path, plate.name, plate.size, f"{plate.name} (N={plate.size})", inside))

    if largest_clique:
        caption = _clique_caption(analysis, clique)
    else:
        caption = ""
    return Drawing(f"model '{graph.model.name}'", nodes, edges, parents, boxes, clique, caption)


# ------------------------------------------------------------------ matplotlib layout
#: Half width and half height of each kind's shape in the matplotlib drawing (data units).
_HALF = {"latent": (0.75, 0.38), "observed": (0.75, 0.38), "param": (0.25, 0.25), "factor": (0.12, 0.12)}


def _layout(d: Drawing, layout: str = "TB") -> tuple[dict, dict]:
    """Node positions and plate-box rectangles in data units (matplotlib engine).

    Each site (a variable and its factor) takes one slot at its depth; the factor sits
    just before its variable along the depth axis (above it with ``"TB"``, left of it
    with ``"LR"``).  Every plate path gets its own band across the depth axis, nested
    paths sub-bands of their parent's band, each band padded for its box: a box drawn
    around its members contains no other node and sibling boxes do not overlap.

    Returns ``(pos, rects)``: ``pos[id] = (x, y)``, ``rects[path] = (x0, y0, x1, y1)``.
    """
    tb = layout == "TB"
    margin, label_h, gap = 0.22, 0.42, 0.3
    # u: across the depth axis (x for TB, -y for LR); v: along it (-y for TB, x for LR)
    slot = 2.0 if tb else 1.15
    fac_to_var, var_to_fac = (0.75, 0.6) if tb else (1.15, 0.9)
    half_v = (lambda n: _HALF[n.kind][1]) if tb else (lambda n: _HALF[n.kind][0])
    var_extent = _HALF["latent"][1 if tb else 0]

    sites: dict = {}  # site -> (plates path, depth), in trace order
    for n in d.nodes.values():
        sites.setdefault(n.site, (n.plates, n.depth))
    children: dict = {}
    for b in d.boxes:
        children.setdefault(b.parent, []).append(b.path)
    own: dict = {}
    for site, (path, dep) in sites.items():
        own.setdefault(path, {}).setdefault(dep, []).append(site)

    # u: bands placed side by side, widths in data units including box padding
    u_of: dict = {}
    span: dict = {}

    def place(path, u0) -> float:
        pad0 = margin if path else 0.0
        pad1 = (margin + (0.0 if tb else label_h)) if path else 0.0
        u = u0 + pad0
        by_depth = own.get(path, {})
        k = max((len(s) for s in by_depth.values()), default=0)
        for dep in sorted(by_depth):
            ss = by_depth[dep]
            # fewer crossings: order a depth's sites by the mean position of their placed parents
            placed = [[u_of[p] for p in d.parents.get(s, ()) if p in u_of] for s in ss]
            ss = [s for _, _, s in sorted(
                (sum(ps) / len(ps) if ps else math.inf, i, s) for i, (s, ps) in enumerate(zip(ss, placed)))]
            offset = (k - len(ss)) / 2
            for i, s in enumerate(ss):
                u_of[s] = u + (offset + i + 0.5) * slot
        u += k * slot
        for j, child in enumerate(children.get(path, [])):
            if j or k:
                u += gap
            u = place(child, u)
        span[path] = (u0, u + pad1)
        return u + pad1

    place((), 0.0)

    # v: depth k puts the site's factor at v_fac(k) and its variable fac_to_var further
    step = fac_to_var + var_extent + var_to_fac + _HALF["factor"][0]
    pos_uv = {}
    for n in d.nodes.values():
        v = n.depth * step + (0.0 if n.kind == "factor" else fac_to_var)
        pos_uv[n.id] = (u_of[n.site], v)

    rects_uv: dict = {}
    for b in sorted(d.boxes, key=lambda b: -len(b.path)):  # innermost first
        lo, hi = [], []
        for m in b.members:
            n = d.nodes[m]
            if n.plates == b.path:
                lo.append(pos_uv[m][1] - half_v(n))
                hi.append(pos_uv[m][1] + half_v(n))
        for c in children.get(b.path, []):
            lo.append(rects_uv[c][1][0])
            hi.append(rects_uv[c][1][1])
        v0, v1 = min(lo) - margin, max(hi) + margin + (label_h if tb else 0.0)
        rects_uv[b.path] = (span[b.path], (v0, v1))

    if tb:
        pos = {k: (u, -v) for k, (u, v) in pos_uv.items()}
        rects = {p: (u0, -v1, u1, -v0) for p, ((u0, u1), (v0, v1)) in rects_uv.items()}
    else:
        pos = {k: (v, -u) for k, (u, v) in pos_uv.items()}
        rects = {p: (v0, -u1, v1, -u0) for p, ((u0, u1), (v0, v1)) in rects_uv.items()}
    return pos, rects


def _draw_matplotlib(d: Drawing, path: Path, fmt: str, layout: str) -> None:
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - matplotlib is in the dev extras
        raise ImportError("ppl.render needs matplotlib when Graphviz's `dot` is not installed: "
                          "pip install matplotlib (or ppl[plots]), or install Graphviz") from e
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse, FancyBboxPatch, Rectangle, RegularPolygon

    del matplotlib
    pos, rects = _layout(d, layout)
    xs = [p[0] for p in pos.values()] + [r[0] for r in rects.values()] + [r[2] for r in rects.values()] or [0.0]
    ys = [p[1] for p in pos.values()] + [r[1] for r in rects.values()] + [r[3] for r in rects.values()] or [0.0]
    x0, x1 = min(xs) - 1.0, max(xs) + 1.0
    y0, y1 = min(ys) - 0.7, max(ys) + 0.7
    inch = 0.85  # inches per data unit
    caption_lines = d.caption.count("\n") + 1 if d.caption else 0
    w = max(7.5, (x1 - x0) * inch)
    legend_h, caption_h = 0.5, 0.3 * caption_lines + 0.15
    h = (y1 - y0) * inch + legend_h + caption_h + 0.4
    scale = min(1.0, 60.0 / max(w, h))  # cap huge figures (fonts shrink with them)
    fig = Figure(figsize=(w * scale, h * scale))
    FigureCanvasAgg(fig)
    top = 1 - (0.4 + legend_h) / h
    bottom = caption_h / h
    ax = fig.add_axes((0.0, bottom, 1.0, top - bottom))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")
    ax.axis("off")
    fs = 9 * scale

    for b in d.boxes:  # outer first
        bx0, by0, bx1, by1 = rects[b.path]
        ax.add_patch(FancyBboxPatch((bx0, by0), bx1 - bx0, by1 - by0, boxstyle="round,pad=0,rounding_size=0.2",
                                    fill=False, edgecolor="#555555", linewidth=1.0, zorder=1))
        ax.text(bx1 - 0.12, by0 + 0.1, b.label, ha="right", va="bottom", fontsize=fs * 0.9, color="#333333",
                zorder=2.5, bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    for f, v in d.edges:
        (fx, fy), (vx, vy) = pos[f], pos[v]
        ax.plot([fx, vx], [fy, vy], color="#444444", linewidth=0.9, zorder=2)
    for n in d.nodes.values():
        x, y = pos[n.id]
        edge = HIGHLIGHT if n.highlighted else "black"
        lw = 2.6 if n.highlighted else 1.0
        if n.kind == "factor":
            hw, hh = _HALF["factor"]
            ax.add_patch(Rectangle((x - hw, y - hh), 2 * hw, 2 * hh, facecolor="black", edgecolor="black", zorder=3))
            if n.label:
                ax.text(x + hw + 0.1, y - hh - 0.05, n.label, ha="left", va="top", fontsize=fs * 0.85, zorder=4)
        elif n.kind == "param":
            hw, _ = _HALF["param"]
            ax.add_patch(RegularPolygon((x, y), 4, radius=hw, facecolor="white", edgecolor=edge, linewidth=lw,
                                        zorder=3))
            ax.text(x + hw + 0.08, y + 0.08, n.label, ha="left", va="bottom", fontsize=fs, zorder=4)
        else:
            hw, hh = _HALF[n.kind]
            ax.add_patch(Ellipse((x, y), 2 * hw, 2 * hh, facecolor=FILL[n.kind], edgecolor=edge, linewidth=lw,
                                 zorder=3))
            ax.text(x, y, n.label, ha="center", va="center", fontsize=fs, zorder=4, linespacing=1.1)

    def key(label, marker, size, face, edge="black", width=1.0):
        return Line2D([], [], marker=marker, linestyle="", markersize=size, markerfacecolor=face,
                      markeredgecolor=edge, markeredgewidth=width, label=label)

    handles = [key("latent", "o", 10, "white"), key("observed", "o", 10, FILL["observed"]),
               key("param", "D", 7, "white"), key("factor", "s", 6, "black")]
    if d.clique:
        handles.append(key("largest clique", "o", 10, "white", HIGHLIGHT, 2.2))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False, fontsize=fs,
               bbox_to_anchor=(0.5, 1 - 0.35 / h), title=d.title, title_fontsize=fs * 1.1)
    if d.caption:
        fig.text(0.5, 0.08 / h, d.caption, ha="center", va="bottom", fontsize=fs * 0.9, wrap=True)
    fig.savefig(path, format=fmt, dpi=120)


# ------------------------------------------------------------------ Graphviz
def _q(s: str) -> str:
    """A DOT double-quoted string; ``\\n`` in ``s`` becomes a centred line break."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(d: Drawing, layout: str = "TB") -> str:
    """The DOT source of a :class:`Drawing`: plates as nested ``cluster`` subgraphs
    (rounded boxes), variables as ellipses (observed filled grey, params small
    diamonds), factors as small black squares, the largest clique outlined red, the
    caption as the graph label.  Edges run parent -> factor -> variable so that ``dot``
    layers the model top down; arrowheads are off."""
    key = "ellipses: latent (white), observed (grey); diamonds: params; black squares: factors"
    label = "\n".join([d.title, key] + ([d.caption] if d.caption else []))
    lines = ["digraph {", f"  graph [rankdir={layout}, labelloc=b, fontsize=11, fontname=\"Helvetica\", nodesep=0.3, "
             f"ranksep=0.35, label={_q(label)}];",
             '  node [fontsize=11, fontname="Helvetica"];', '  edge [dir=none, color="#444444"];']

    def node_line(n: DrawNode) -> str:
        attrs = {}
        if n.kind == "factor":
            attrs.update(shape="box", style="filled", fillcolor="black", width="0.14", height="0.14",
                         fixedsize="true", label="", tooltip=n.site)
            if n.label:
                attrs["xlabel"] = n.label
        elif n.kind == "param":
            attrs.update(shape="diamond", style="filled", fillcolor="white", label=n.label, fontsize="9",
                         width="0.3", height="0.3", margin="0.02")
        else:
            attrs.update(shape="ellipse", style="filled", fillcolor=FILL[n.kind], label=n.label)
        if n.highlighted:
            attrs.update(color=HIGHLIGHT, penwidth="2.5")
        return f"{_q(n.id)} [" + ", ".join(f"{k}={_q(v)}" for k, v in attrs.items()) + "];"

    children: dict = {}
    for b in d.boxes:
        children.setdefault(b.parent, []).append(b)
    counter = iter(range(10**9))

    def emit(path, indent):
        pad = "  " * indent
        for n in d.nodes.values():
            if n.plates == path:
                lines.append(pad + node_line(n))
        for b in children.get(path, []):
            lines.append(f"{pad}subgraph cluster_{next(counter)} {{")
            lines.append(f'{pad}  label={_q(b.label)}; labeljust=r; labelloc=b; style=rounded; color="#555555"; '
                         'fontsize=10; fontname="Helvetica";')
            emit(b.path, indent + 1)
            lines.append(pad + "}")

    emit((), 1)
    for n in d.nodes.values():
        if n.kind != "factor":
            continue
        for p in d.parents.get(n.site, ()):
            lines.append(f"  {_q(p)} -> {_q(n.id)};")
        if n.site in d.nodes:
            lines.append(f"  {_q(n.id)} -> {_q(n.site)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _draw_dot(d: Drawing, path: Path, fmt: str, layout: str, dot: str) -> None:
    source = to_dot(d, layout)
    with tempfile.NamedTemporaryFile("w", suffix=".dot", delete=False) as fh:
        fh.write(source)
        src = fh.name
    try:
        proc = subprocess.run([dot, f"-T{fmt}", src, "-o", str(path)], capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(src)
    if proc.returncode != 0:
        raise RuntimeError(f"Graphviz `dot -T{fmt}` failed (exit {proc.returncode}): {proc.stderr.strip()}")


# ------------------------------------------------------------------ entry point
def render(model, data=None, path="model.png", *, largest_clique: bool = True, layout: str = "TB",
           engine: str = "auto", heuristic: str = "min_fill") -> Path:
    """Draw a model's factor graph as an image file.

    What is drawn: variables as ellipses labelled with the site name and family
    (``"z / Categorical"``), latent ones white, observed ones filled grey, params as
    small diamonds; factors (one per sample site's log density and per ``ppl.factor``
    term) as small black squares, joined by an edge to every variable of their scope;
    plates as rounded boxes labelled ``"data (N=150)"`` around the variables and
    factors inside them, nested plates nested; the largest clique of exact elimination
    (``ppl.analyze(...).largest_clique``: the variables of the largest table) outlined
    in red, and a caption giving its variables, its joint states, the plates its table
    is replicated over and its bytes.  The content is computed by :func:`drawing`.

    Parameters
    ----------
    model : Model, callable or FactorGraph
    data : mapping, optional
        As :func:`ppl.analyze`; must be None when ``model`` is a FactorGraph.
    path : str or os.PathLike
        Where to write; the suffix picks the format: ``.png``, ``.svg`` or ``.pdf``.
        The folder must exist; an existing file is overwritten.
    largest_clique : bool
        Highlight the largest elimination clique and caption its size (default True).
    layout : {"TB", "LR"}
        Model depth running top to bottom (default) or left to right.
    engine : {"auto", "dot", "matplotlib"}
        ``"dot"`` runs Graphviz's ``dot`` executable (plates as clusters);
        ``"matplotlib"`` draws a layered layout with matplotlib (Agg, no display);
        ``"auto"`` (default) uses ``dot`` when it is on ``PATH``, else matplotlib.
    heuristic : {"min_fill", "min_degree"}
        Elimination-order heuristic of the analysis that finds the clique.

    Returns
    -------
    pathlib.Path
        The file written (``path``).

    Raises
    ------
    OptionError
        Unknown ``engine``, ``layout`` or ``heuristic``; a suffix other than
        ``.png``/``.svg``/``.pdf``; ``engine="dot"`` when Graphviz's ``dot`` is not
        installed (install Graphviz, or use ``engine="matplotlib"``).
    FileNotFoundError
        The folder of ``path`` does not exist.
    DataError, ModelError
        As :func:`ppl.compile`.
    RuntimeError
        ``dot`` ran and failed (its message is included).

    Examples
    --------
    >>> ppl.render(gmm, {"x": X}, "gmm.png")            # doctest: +SKIP
    PosixPath('gmm.png')
    """
    if engine not in ENGINES:
        raise OptionError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if layout not in LAYOUTS:
        raise OptionError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        got = repr(path.suffix) if path.suffix else "no suffix"
        raise OptionError(f"path {str(path)!r}: the suffix picks the image format, one of "
                          f"{['.' + f for f in FORMATS]}; got {got}")
    dot = shutil.which("dot")
    if engine == "dot" and dot is None:
        raise OptionError("engine='dot' needs Graphviz's `dot` executable on PATH, and none was found: install "
                          "Graphviz (e.g. `apt-get install graphviz`, `brew install graphviz` or "
                          "`conda install graphviz`) or use engine='matplotlib'")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
    d = drawing(model, data, largest_clique=largest_clique, heuristic=heuristic)
    if engine == "dot" or (engine == "auto" and dot is not None):
        _draw_dot(d, path, fmt, layout, dot)
    else:
        _draw_matplotlib(d, path, fmt, layout)
    return path
