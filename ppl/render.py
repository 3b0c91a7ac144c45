"""Draw a model's factor graph, with its plates and the largest elimination clique,
as an image file: :func:`render`.

Two engines produce the image:

- ``"dot"``: Graphviz's ``dot`` executable (run through :mod:`subprocess`; the
  ``graphviz`` Python package is not needed), plates as nested clusters;
- ``"matplotlib"``: a layered layout (a site's row is its depth in the model, plates
  get disjoint column bands so that a plate box holds its members and nothing else),
  drawn with the Agg backend (no display needed); both live in
  :mod:`ppl.render_matplotlib`.

What is drawn does not depend on the engine: :func:`drawing` computes it (nodes with
their kind, label, plates and highlight, edges, plate boxes, caption) as plain data, and
both engines draw that.

Note: ``ppl.render`` is the function; import the helpers of this module with
``from ppl.render import drawing, to_dot``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .analysis.elimination import HEURISTICS
from .analysis.report import format_bytes
from .api import analyze
from .api import compile as _compile
from .compiler.factor_graph import FACTOR_PREFIX, FactorGraph
from .errors import DataError, OptionError
from .posterior.figures import checked_path, written
from .render_matplotlib import FILL, HIGHLIGHT, compute_layout, draw_matplotlib

_layout = compute_layout  # the layout's former name here, which tests/test_render.py reads

__all__ = ["render", "drawing", "to_dot", "Drawing", "DrawNode", "PlateBox", "ENGINES", "FORMATS", "LAYOUTS"]

#: Values of ``engine=``.
ENGINES = ("auto", "dot", "matplotlib")
#: Image formats, chosen by the path's suffix.
FORMATS = ("png", "svg", "pdf")
#: Values of ``layout=``: rows top to bottom (``"TB"``) or columns left to right (``"LR"``).
LAYOUTS = ("TB", "LR")

# FILL (fill colours by kind) and HIGHLIGHT (the largest clique's outline), used by both
# engines, are defined in ppl.render_matplotlib and imported above.


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
class Rendering:
    """A drawn factor graph held in memory: displays inline in Jupyter (``_repr_png_`` /
    ``_repr_svg_``) and is written to a file only by :meth:`save`.  Returned by
    :func:`render` when no ``path`` is given.

    Attributes
    ----------
    data : bytes
        The image (PNG bytes, or SVG text encoded as UTF-8).
    format : str
        ``"png"`` or ``"svg"``.
    drawing : Drawing
        What was drawn (:func:`drawing`).
    """

    def __init__(self, data: bytes, fmt: str, drawing_: "Drawing"):
        self.data = data
        self.format = fmt
        self.drawing = drawing_

    def _repr_png_(self):
        return self.data if self.format == "png" else None

    def _repr_svg_(self):
        return self.data.decode("utf-8") if self.format == "svg" else None

    def save(self, path) -> Path:
        """Write the image to ``path`` (its suffix must match :attr:`format`).

        Raises
        ------
        OptionError
            A suffix other than ``"." + format``.
        FileNotFoundError
            The folder of ``path`` does not exist.
        """
        path = Path(path)
        if path.suffix.lower().lstrip(".") != self.format:
            raise OptionError(f"path {str(path)!r}: this rendering is {self.format.upper()}; give a "
                              f"'.{self.format}' path, or call ppl.render(..., path=...) for another format")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
        path.write_bytes(self.data)
        return path

    def __repr__(self):
        return f"<ppl.render.Rendering {self.format.upper()}, {len(self.data):,} bytes of {self.drawing.title}>"


def render(model, data=None, path=None, *, largest_clique: bool = True, layout: str = "TB",
           engine: str = "auto", heuristic: str = "min_fill", format: str = "png"):
    """Draw a model's factor graph: to an image file when given ``path``, else to a
    :class:`Rendering` that displays inline in a notebook.

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
    path : str or os.PathLike, optional
        Where to write; the suffix picks the format: ``.png``, ``.svg`` or ``.pdf``.
        The folder must exist; an existing file is overwritten.  ``None`` (default):
        nothing is written; a :class:`Rendering` is returned.
    format : {"png", "svg"}
        The image format of a :class:`Rendering` (without ``path``).
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
    pathlib.Path or Rendering
        The file written (``path``), or, without ``path``, the image in memory.

    Raises
    ------
    OptionError
        Unknown ``engine``, ``layout`` or ``heuristic``; a ``path`` that is not a str or
        an ``os.PathLike``, or that cannot be written (naming it); a suffix other than
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
    >>> ppl.render(gmm, {"x": X})                       # doctest: +SKIP  (shows in Jupyter)
    <ppl.render.Rendering PNG, 41,230 bytes of model 'gmm'>
    """
    if engine not in ENGINES:
        raise OptionError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if layout not in LAYOUTS:
        raise OptionError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if path is None:
        if format not in ("png", "svg"):
            raise OptionError(f"format must be 'png' or 'svg', got {format!r}")
        import tempfile as _tempfile

        with _tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / f"model.{format}"
            d = _draw(model, data, target, format, largest_clique, layout, engine, heuristic)
            return Rendering(target.read_bytes(), format, d)
    path = Path(checked_path(path, call="render()"))
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        got = repr(path.suffix) if path.suffix else "no suffix"
        raise OptionError(f"path {str(path)!r}: the suffix picks the image format, one of "
                          f"{['.' + f for f in FORMATS]}; got {got}")
    if engine == "dot" and shutil.which("dot") is None:
        _draw(model, data, path, fmt, largest_clique, layout, engine, heuristic)  # raises the OptionError
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
    written(lambda: _probe(path), path, call="render()", what="the drawing")  # before the work of drawing
    written(lambda: _draw(model, data, path, fmt, largest_clique, layout, engine, heuristic), path,
            call="render()", what="the drawing")
    return path


def _probe(path: Path) -> None:
    """Open ``path`` for writing (an ``OSError`` where it cannot be written), leaving no
    file behind that was not there."""
    existed = path.exists()
    with open(path, "ab"):
        pass
    if not existed:
        path.unlink()


def _draw(model, data, path: Path, fmt: str, largest_clique, layout, engine, heuristic) -> Drawing:
    """Compute the drawing and write it to ``path`` with the chosen engine (checked by
    :func:`render`, except Graphviz's presence for ``engine="dot"``)."""
    dot = shutil.which("dot")
    if engine == "dot" and dot is None:
        raise OptionError("engine='dot' needs Graphviz's `dot` executable on PATH, and none was found: install "
                          "Graphviz (e.g. `apt-get install graphviz`, `brew install graphviz` or "
                          "`conda install graphviz`) or use engine='matplotlib'")
    d = drawing(model, data, largest_clique=largest_clique, heuristic=heuristic)
    if engine == "dot" or (engine == "auto" and dot is not None):
        _draw_dot(d, path, fmt, layout, dot)
    else:
        draw_matplotlib(d, path, fmt, layout)
    return d
