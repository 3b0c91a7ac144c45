"""What the exact engine's users share beyond the plan itself: whether elimination over
the discrete latents can run (exact inference, EM's E-step, max-product MAP), and the
:class:`~ppl.posterior.TablePosterior` of a plan's tables."""

from __future__ import annotations

import math
import time

import torch

from ...analysis.report import format_bytes
from ...errors import IntractableError, UnsupportedModelError
from ...posterior import TablePosterior
from ...posterior.lazy import LazyDiagnostics
from ..base import Applicability
from .discrete import DiscretePlan

__all__ = ["discrete_applicability", "table_posterior", "largest_factor", "factor_table_refusal"]


def discrete_applicability(analysis):
    """Whether elimination over ``analysis``'s discrete latents can run (exact inference,
    max-product MAP): batch dims declared by plates, nesting plates, and the largest table
    within ``analysis.memory_budget``; says which fails, naming the sites, with
    ``UnsupportedModelError`` or (over budget) ``IntractableError``.

    Returns
    -------
    Applicability
    """
    if analysis.undeclared_batch:
        site, dims = next(iter(analysis.undeclared_batch.items()))
        return Applicability(
            False,
            f"site '{site}' has batch dims {dims} not declared by a plate, so its discrete latents cannot be "
            "enumerated: declare i.i.d. copies with ppl.plate",
            UnsupportedModelError,
        )
    if not analysis.discrete:
        return Applicability(True, "no latent variables: the log likelihood is exact")
    if analysis.cost.intractable:
        return Applicability(False, analysis.cost.intractable, UnsupportedModelError)
    details = dict(treewidth=analysis.treewidth, clique_states=analysis.clique_states,
                   bytes=analysis.clique_bytes, budget=analysis.memory_budget)
    if analysis.clique_bytes > analysis.memory_budget:
        return Applicability(
            False,
            f"the largest table ({len(analysis.largest_clique)} variables, {analysis.clique_states:,} states"
            f"{' per plate copy' if analysis.cost.clique_plates else ''}) needs {format_bytes(analysis.clique_bytes)}, "
            f"over the {format_bytes(analysis.memory_budget)} memory budget (treewidth <= {analysis.treewidth})",
            IntractableError,
            details,
        )
    return Applicability(
        True,
        f"all {len(analysis.discrete)} latents discrete; largest table {format_bytes(analysis.clique_bytes)} "
        f"(treewidth {analysis.treewidth}) within the {format_bytes(analysis.memory_budget)} budget",
        details=details,
    )


def table_posterior(method: str, graph, plan: DiscretePlan, marginals, *, seed=None, map: bool = True,
                    start: float, diagnostics: dict, **fields):
    """The :class:`~ppl.posterior.TablePosterior` of ``plan``'s tables: its marginals, the
    MAP assignment (max-product) if ``map``, and an exact joint sampler.

    Parameters
    ----------
    method : str
    graph : FactorGraph
    plan : DiscretePlan
    marginals : Marginals or None
        From :meth:`DiscretePlan.log_partition`.
    seed : int, optional
        Default seed of ``sample()``.
    map : bool
    start : float
        ``time.perf_counter()`` at the start of the run (for ``elapsed``).
    diagnostics : dict
        Updated with ``"map_log_joint"``.
    **fields
        Posterior fields (``elbo``, ``log_evidence``, ``params``, ``history``, ``converged``).
    """
    map_assignment = None
    if map and plan.cards:  # max-product costs a pass of its own: run when first asked for
        found: dict = {}

        def find_map() -> dict:
            if not found:
                best, idx = plan.argmax()
                found["map"] = {v: plan.values(v, idx[v], 1)[0] for v in plan.cards}
                found["map_log_joint"] = float(best)
            return found

        diagnostics = LazyDiagnostics(diagnostics)
        diagnostics.defer(("map_log_joint",), find_map)
        map_assignment = lambda: find_map()["map"]  # noqa: E731
    device = plan.device

    def sampler(n, sample_seed=None):
        s = seed if sample_seed is None else sample_seed
        gen = None
        if s is not None:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(s))
        idx = plan.sample(n, gen)  # the taped forward pass is built once per plan
        return {v: plan.values(v, idx[v], 1) for v in plan.cards}

    return TablePosterior(method, graph=graph, marginals=marginals if marginals is not None else {},
                          supports=plan.supports, families=plan.families, sampler=sampler,
                          map_assignment=map_assignment, elapsed=time.perf_counter() - start,
                          diagnostics=diagnostics, **fields)


def largest_factor(graph) -> tuple:
    """(name, entries) of the factor with the largest table: Π cards of its discrete
    latents × Π sizes of its plates (CAVI's memory: it keeps factor tables, not cliques)."""
    best = ("", 1)
    discrete = set(graph.discrete_latent())
    for name, f in graph.factors.items():
        size = math.prod(graph.variables[v].cardinality for v in f.scope if v in discrete)
        size *= math.prod(graph.plates[p].size for p in f.plates)
        if size > best[1]:
            best = (name, size)
    return best


def factor_table_refusal(graph, analysis):
    """``(refusal or None, bytes of the largest factor table)`` of a mean field over discrete
    tables (CAVI): a factor over every copy of a plated latent has no per-copy table, and the
    largest table must fit the memory budget.

    Returns
    -------
    tuple[Applicability or None, int]
        The refusal (``UnsupportedModelError`` for an intractable plate structure,
        ``IntractableError`` over the budget) or None, and the largest table's bytes."""
    if analysis.cost.intractable:
        return Applicability(False, analysis.cost.intractable, UnsupportedModelError), 0
    name, size = largest_factor(graph)
    nbytes = size * analysis.itemsize
    if nbytes > analysis.memory_budget:
        return Applicability(False, f"factor '{name}' has a table of {size:,} entries over its discrete latents "
                                    f"({format_bytes(nbytes)}), over the {format_bytes(analysis.memory_budget)} memory "
                                    "budget", IntractableError, dict(bytes=nbytes, budget=analysis.memory_budget)), nbytes
    return None, nbytes
