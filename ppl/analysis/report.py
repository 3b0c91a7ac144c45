"""The :class:`Analysis` of a compiled model: what is latent, how the latents interact,
what exact inference would cost, and which backends apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx

from .chains import find_chains
from .elimination import EliminationCost, elimination_cost, elimination_order
from .moral import latent_scopes, moral_graph

__all__ = ["Analysis", "analyze_graph", "DEFAULT_MEMORY_BUDGET", "format_bytes"]

DEFAULT_MEMORY_BUDGET = 2 * 1024**3  # bytes for the largest table of exact inference


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


@dataclass
class Analysis:
    """Structure and cost report of a model bound to data (``ppl.analyze``).

    Attributes
    ----------
    graph : ppl.compiler.FactorGraph
    moral : networkx.Graph
        Moral graph of all latent variables given the evidence.
    components : list[set[str]]
        Connected components of ``moral`` (independent sub-posteriors).
    discrete, continuous : list[str]
        Latent variables with an enumerable support / the others.
    heuristic : str
        ``"min_fill"`` or ``"min_degree"``.
    order : list[str]
        Elimination order of the discrete latents outside chains.
    chains : list[Chain]
        Long chains contracted by parallel scan.
    cost : EliminationCost
        Plate-aware tables of eliminating the discrete latents in ``order``.
    itemsize : int
        Bytes per table entry assumed (8 = float64).
    memory_budget : int
        Bytes the largest exact table may take.
    log10_states : float
        log10 of the number of joint states of all discrete latents (plates unrolled):
        what brute-force enumeration would face.
    undeclared_batch : dict[str, list[int]]
        Sites whose density involves a discrete latent and that have batch dims (listed,
        negative) not declared by a ``ppl.plate``: such a model cannot be enumerated.
    backends : dict[str, tuple[bool, str]]
        Registered backend -> (applies, why); filled by :func:`ppl.analyze`.
    auto : dict or None
        What ``method="auto"`` would choose (``{"method", "reason", "passed_over", ...}``,
        see :func:`ppl.api.auto_route`; ``method`` is None when nothing applies); filled
        by :func:`ppl.analyze`.
    """

    graph: object
    moral: nx.Graph
    components: list
    discrete: list
    continuous: list
    heuristic: str
    order: list
    chains: list
    cost: EliminationCost
    itemsize: int
    memory_budget: int
    log10_states: float
    undeclared_batch: dict = field(default_factory=dict)
    backends: dict = field(default_factory=dict)
    auto: dict | None = None

    # ----------------------------------------------------------- derived facts
    @property
    def treewidth(self) -> int:
        """Upper bound on the treewidth of the discrete latents' moral graph (plates as templates)."""
        return self.cost.width

    @property
    def largest_clique(self) -> tuple:
        return self.cost.largest_clique

    @property
    def clique_states(self) -> int:
        """Joint states of the largest clique (one plate copy)."""
        return self.cost.clique_states

    @property
    def clique_bytes(self) -> int:
        """Bytes of the largest table exact inference allocates (plate copies included)."""
        return self.cost.bytes(self.itemsize)

    @property
    def exact_fits(self) -> bool:
        """True when the largest exact table fits ``memory_budget`` and plates nest."""
        return self.cost.intractable is None and self.clique_bytes <= self.memory_budget

    def var_plates(self) -> dict:
        """Latent variable -> frozenset of its plates."""
        return {n: frozenset(self.graph.variables[n].plates) for n in self.discrete + self.continuous}

    # ----------------------------------------------------------------- report
    def __str__(self) -> str:
        g = self.graph
        lines = [f"Analysis of model '{g.model.name}'"]
        lines.append(
            f"  variables: {len(self.discrete)} discrete latent, {len(self.continuous)} continuous latent, "
            f"{len(g.observed())} observed, {len(g.params())} param; {len(g.factors)} factors"
        )
        if g.plates:
            lines.append("  plates: " + ", ".join(f"{p.name} (size {p.size}, dim {p.dim})" for p in g.plates.values()))
        lines.append(
            f"  moral graph of the latents given the evidence: {self.moral.number_of_nodes()} nodes, "
            f"{self.moral.number_of_edges()} edges, {len(self.components)} connected component(s)"
        )
        if self.discrete:
            lines.append(
                f"  brute-force joint state space: 10^{self.log10_states:.1f} states"
                + (" (plates unrolled)" if any(g.variables[v].plates for v in self.discrete) else "")
            )
            lines.append(f"  elimination order ({self.heuristic.replace('_', '-')}): treewidth <= {self.treewidth}")
            plates = f" x {len(self.cost.clique_plates)} plate(s) {list(self.cost.clique_plates)}" if self.cost.clique_plates else ""
            clique = ", ".join(self.largest_clique[:8]) + (" ..." if len(self.largest_clique) > 8 else "")
            lines.append(
                f"  largest clique: {len(self.largest_clique)} variables {{{clique}}}, "
                f"{self.clique_states:,} joint states{plates}, {format_bytes(self.clique_bytes)} "
                f"at {self.itemsize} bytes/entry (budget {format_bytes(self.memory_budget)})"
            )
            lines.append(f"  work of one elimination pass: {self.cost.total_entries:,} table entries")
            if self.cost.intractable:
                lines.append(f"  plates: {self.cost.intractable}")
            for site, dims in self.undeclared_batch.items():
                lines.append(f"  site '{site}' has batch dims {dims} that no ppl.plate declares")
        for ch in self.chains:
            lines.append(
                f"  chain: {ch.vars[0]} .. {ch.vars[-1]} ({len(ch.interior)} interior variables, "
                f"{ch.cardinality} states) contracted by parallel scan"
            )
        if self.continuous:
            shown = ", ".join(self.continuous[:10]) + (" ..." if len(self.continuous) > 10 else "")
            lines.append(f"  continuous latents: {shown}")
        if self.backends:
            lines.append("  methods:")
            width = max(len(n) for n in self.backends)
            for name, (ok, why) in self.backends.items():
                lines.append(f"    {name:<{width}}  {'applies' if ok else 'no     '}  {why}")
        if self.auto:
            if self.auto.get("method"):
                lines.append(f"  auto would choose: {self.auto['method']}, because {self.auto['reason']}")
                rest = [m for m in self.auto.get("plan", []) if m != self.auto["method"]]
                if rest:
                    lines.append(f"  and, if its answer is unreliable, try in turn: {', '.join(rest)}")
                lines += [f"  auto passes over {n}: {w.split(': ', 1)[1]}"
                          for n, w in self.auto.get("passed_over", {}).items()
                          if w.startswith("applies, but auto passes it over: ")]
            else:
                lines.append("  auto would choose: nothing, no registered method applies")
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))

    def key_numbers(self) -> list:
        """``(name, value)`` pairs of the numbers that decide the methods: the latents, the
        treewidth, the state space, the largest table against the budget, and auto's
        choice (what the notebook display shows first)."""
        from ..table import format_value

        g = self.graph
        pairs = [("model", g.model.name),
                 ("latents", f"{len(self.discrete)} discrete, {len(self.continuous)} continuous"),
                 ("observed", ", ".join(g.observed()[:8]) + (" ..." if len(g.observed()) > 8 else "") or "-")]
        if self.discrete:
            pairs += [("treewidth (upper bound)", str(self.treewidth)),
                      ("joint state space", f"10^{self.log10_states:.1f}"),
                      ("largest table", f"{format_bytes(self.clique_bytes)} (budget {format_bytes(self.memory_budget)})"),
                      ("exact fits", format_value(self.exact_fits))]
        if self.auto:
            pairs.append(("auto would choose", str(self.auto.get("method") or "nothing")))
        return pairs

    def _repr_html_(self) -> str:
        """The analysis as HTML (Jupyter's rich display): :meth:`key_numbers` as a table,
        then the full report as preformatted text."""
        import html

        from ..table import html_table

        head = html_table(["quantity", "value"], [[k, v] for k, v in self.key_numbers()],
                          title=f"Analysis of model '{self.graph.model.name}'")
        return head + f"\n<pre>{html.escape(str(self))}</pre>"


def analyze_graph(graph, heuristic: str = "min_fill", memory_budget: int | None = None, itemsize: int = 8) -> Analysis:
    """Analyse a :class:`~ppl.compiler.FactorGraph` (see :func:`ppl.analyze`).

    Parameters
    ----------
    graph : FactorGraph
    heuristic : {"min_fill", "min_degree"}
        Elimination-order heuristic.
    memory_budget : int, optional
        Bytes allowed for the largest exact table; default 2 GiB.
    itemsize : int
        Bytes per table entry (8 for float64, 4 for float32).

    Returns
    -------
    Analysis
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    moral = moral_graph(graph)
    components = [set(c) for c in nx.connected_components(moral)]
    discrete = graph.discrete_latent()
    continuous = graph.continuous_latent()
    dset = set(discrete)
    scopes_all = latent_scopes(graph)
    scopes = {f: tuple(v for v in s if v in dset) for f, s in scopes_all.items()}
    dmoral = moral.subgraph(discrete).copy()
    chains = find_chains(dmoral, scopes)
    interior = {v for ch in chains for v in ch.interior}
    reduced = dmoral.copy()
    reduced.remove_nodes_from(interior)
    reduced.add_edges_from((ch.vars[0], ch.vars[-1]) for ch in chains)
    order = elimination_order(reduced, heuristic)
    var_plates = {n: frozenset(graph.variables[n].plates) for n in discrete}
    cards = {n: graph.variables[n].cardinality for n in discrete}
    plate_sizes = {p.name: p.size for p in graph.plates.values()}
    factor_scopes = [
        (frozenset(s), frozenset(graph.factors[f].plates))
        for f, s in scopes.items()
        if s and not (set(s) & interior)
    ]
    cost = elimination_cost(factor_scopes, var_plates, cards, plate_sizes, order, chains, graph.plate_order)
    log10_states = sum(
        math.log10(cards[n]) * math.prod(plate_sizes[p] for p in var_plates[n]) for n in discrete
    )
    return Analysis(graph, moral, components, discrete, continuous, heuristic, order, chains, cost,
                    itemsize, budget, log10_states, _undeclared_batch(graph, dset, scopes))


def _undeclared_batch(graph, discrete: set, scopes: dict) -> dict:
    """Sites touching a discrete latent whose batch shape has dims no plate declares."""
    out = {}
    for name, record in graph.sites.items():
        if record.fn is None or record.kind not in ("sample", "factor"):
            continue
        if not (set(scopes.get(name, ())) & discrete) and name not in discrete:
            continue
        shape = tuple(record.fn.batch_shape)
        declared = {p.dim for p in record.plates}
        bad = [i - len(shape) for i, size in enumerate(shape) if size != 1 and (i - len(shape)) not in declared]
        if bad:
            out[name] = bad
    return out
