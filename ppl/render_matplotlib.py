"""The matplotlib engine of :func:`ppl.render`: a layered layout of a
:class:`~ppl.render.Drawing` (a site's row is its depth in the model, plates get disjoint
column bands so that a plate box holds its members and nothing else) and its drawing on an
Agg canvas (no display needed).

The drawing's colours, :data:`FILL` and :data:`HIGHLIGHT`, are shared with the Graphviz
engine (:func:`ppl.render.to_dot`).
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["compute_layout", "draw_matplotlib", "FILL", "HIGHLIGHT", "HALF"]

#: Fill colours by kind (both engines).
FILL = {"latent": "white", "observed": "#b3b3b3", "param": "white", "factor": "black"}
HIGHLIGHT = "#d62728"  # the largest clique's outline

#: Half width and half height of each kind's shape in the matplotlib drawing (data units).
HALF = {"latent": (0.75, 0.38), "observed": (0.75, 0.38), "param": (0.25, 0.25), "factor": (0.12, 0.12)}


def compute_layout(d, layout: str = "TB") -> tuple[dict, dict]:
    """Node positions and plate-box rectangles in data units (matplotlib engine).

    Each site (a variable and its factor) takes one slot at its depth; the factor sits
    just before its variable along the depth axis (above it with ``"TB"``, left of it
    with ``"LR"``).  Every plate path gets its own band across the depth axis, nested
    paths sub-bands of their parent's band, each band padded for its box: a box drawn
    around its members contains no other node and sibling boxes do not overlap.

    Parameters
    ----------
    d : Drawing
        What is drawn (:func:`ppl.render.drawing`).
    layout : {"TB", "LR"}
        Depth running top to bottom or left to right.

    Returns
    -------
    pos : dict[str, tuple[float, float]]
        Node id -> ``(x, y)``.
    rects : dict[tuple[str, ...], tuple[float, float, float, float]]
        Plate path -> ``(x0, y0, x1, y1)``.
    """
    tb = layout == "TB"
    margin, label_h, gap = 0.22, 0.42, 0.3
    # u: across the depth axis (x for TB, -y for LR); v: along it (-y for TB, x for LR)
    slot = 2.0 if tb else 1.15
    fac_to_var, var_to_fac = (0.75, 0.6) if tb else (1.15, 0.9)
    half_v = (lambda n: HALF[n.kind][1]) if tb else (lambda n: HALF[n.kind][0])
    var_extent = HALF["latent"][1 if tb else 0]

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
    step = fac_to_var + var_extent + var_to_fac + HALF["factor"][0]
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


def draw_matplotlib(d, path: Path, fmt: str, layout: str) -> None:
    """Draw ``d`` with matplotlib on an Agg canvas (no display, pyplot untouched) at the
    positions of :func:`compute_layout`, and write it to ``path``.

    Parameters
    ----------
    d : Drawing
        What is drawn (:func:`ppl.render.drawing`).
    path : pathlib.Path
        The file to write.
    fmt : {"png", "svg", "pdf"}
        Image format.
    layout : {"TB", "LR"}
        Depth running top to bottom or left to right.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
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
    pos, rects = compute_layout(d, layout)
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
            hw, hh = HALF["factor"]
            ax.add_patch(Rectangle((x - hw, y - hh), 2 * hw, 2 * hh, facecolor="black", edgecolor="black", zorder=3))
            if n.label:
                ax.text(x + hw + 0.1, y - hh - 0.05, n.label, ha="left", va="top", fontsize=fs * 0.85, zorder=4)
        elif n.kind == "param":
            hw, _ = HALF["param"]
            ax.add_patch(RegularPolygon((x, y), 4, radius=hw, facecolor="white", edgecolor=edge, linewidth=lw,
                                        zorder=3))
            ax.text(x + hw + 0.08, y + 0.08, n.label, ha="left", va="bottom", fontsize=fs, zorder=4)
        else:
            hw, hh = HALF[n.kind]
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
