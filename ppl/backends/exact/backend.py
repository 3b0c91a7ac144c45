"""``method="exact"``: variable elimination over the discrete latents.

Gives the exact log evidence ``log p(v)``, the posterior marginal of every latent
site, the joint MAP assignment (max-product) and exact joint posterior samples
(Koller & Friedman 2009, ch. 9 and §13.2-13.3; plates as in Obermeyer et al. 2019).
Since q = p exactly, the ELBO equals the log evidence (Goodfellow et al. 2016,
eq. 19.1 with KL(q‖p) = 0).
"""

from __future__ import annotations

import math
import time

import torch

from ...errors import DataError, UnsupportedModelError
from ...trust import Trust
from ..base import Applicability, Backend
from ..common.discrete import discrete_plan
from ..common.elimination import discrete_applicability, table_posterior
from ..common.routing import held_params_note
from ..options import COMMON, option_table

__all__ = ["ExactBackend"]


class ExactBackend(Backend):
    """Exact inference by log-space variable elimination (see module docstring); options
    in :attr:`options` (``ppl.methods("exact")`` lists them)."""

    name = "exact"
    summary = "variable elimination over discrete latents: log evidence, marginals, MAP, samples"
    options = option_table(
        COMMON["dtype"], COMMON["device"], COMMON["memory_budget"], COMMON["heuristic"], COMMON["seed"],
        COMMON["marginals"], COMMON["map"],
    )
    rank = 20
    reuses_prepared = True  # reads evidence only through discrete_plan's tables (ppl.prepared)
    rank_note = "exact ranks below EM when there are ppl.params to learn: it holds them at their current values"

    def check(self, analysis) -> Applicability:
        """Exact applies when every latent is discrete and enumerable (batch dims declared
        by plates), the plates nest, and the largest table of the elimination plan fits
        ``analysis.memory_budget``; otherwise says which of these fails, naming the sites,
        with ``UnsupportedModelError`` or (over budget) ``IntractableError``."""
        if analysis.continuous:
            shown = ", ".join(analysis.continuous[:6]) + (" ..." if len(analysis.continuous) > 6 else "")
            return Applicability(False, f"continuous latent(s) {shown} cannot be enumerated", UnsupportedModelError)
        return discrete_applicability(analysis)

    def deciding_fact(self, analysis, verdicts) -> str:
        """Every latent discrete and the largest clique within budget (or no latents)."""
        why = verdicts[self.name][1]
        held = held_params_note(analysis, verdicts)
        if not analysis.discrete and not analysis.continuous:
            return f"the model has no latent variables, so the log likelihood is exact: {why}{held}"
        return (f"every latent is discrete and the largest clique fits the memory budget, so the posterior is "
                f"computed exactly: {why}{held}")

    def assess(self, posterior, graph, analysis):
        """Exact: every number is computed exactly (to floating-point round-off)."""
        return Trust.exact("variable elimination: the log evidence, every marginal, the MAP and the samples are "
                           "exact (to round-off)")

    def run(self, graph, analysis, **options):
        """Run exact inference with ``options`` (see :attr:`options`).

        Returns
        -------
        TablePosterior

        Raises
        ------
        DataError
            If the evidence has probability zero under the model.
        """
        o = self.settings(options)  # memory_budget and heuristic were consumed by the analysis
        start = time.perf_counter()
        plan = discrete_plan(graph, analysis, dtype=o.dtype, device=o.device)
        build = time.perf_counter() - start
        log_z, probs = plan.log_partition(marginals=o.marginals)
        if not torch.isfinite(log_z):
            raise DataError(
                f"the evidence on {graph.observed()} has probability zero under model '{graph.model.name}' "
                "(log evidence = -inf): some observed value is impossible given the others",
                log_evidence=-math.inf)
        diagnostics = {"plan_seconds": build, "treewidth": analysis.treewidth,
                       "largest_clique_bytes": analysis.clique_bytes, "elimination_order": plan.order,
                       "chains": plan.chains, "device": str(o.device)}
        value = float(log_z)
        return table_posterior(self.name, graph, plan, probs, seed=o.seed, map=o.map, elbo=value, log_evidence=value,
                               converged=None, start=start, diagnostics=diagnostics)
