"""``method="exact"``: variable elimination over the discrete latents.

Gives the exact log evidence ``log p(v)``, the posterior marginal of every latent
site, the joint MAP assignment (max-product) and exact joint posterior samples
(Koller & Friedman 2009, ch. 9 and §13.2-13.3; plates as in Obermeyer et al. 2019).
Since q = p exactly, the ELBO equals the log evidence (Goodfellow et al. 2016,
eq. 19.1 with KL(q‖p) = 0).
"""

from __future__ import annotations

import time

import torch

from ..errors import DataError, UnsupportedModelError
from .base import Applicability, Backend
from .discrete import discrete_applicability, discrete_plan, table_posterior

__all__ = ["ExactBackend"]


class ExactBackend(Backend):
    """Exact inference by log-space variable elimination (see module docstring).

    Options
    -------
    dtype : torch.dtype
        Table precision (default ``torch.float64``).
    device : str or torch.device
        Where the contraction runs (``"cpu"``, ``"cuda"``); default CPU.
    memory_budget : int
        Bytes the largest table may take (default 2 GiB); checked before allocating.
    heuristic : {"min_fill", "min_degree"}
        Elimination-order heuristic.
    seed : int
        Seed of ``sample()`` when no seed is passed to it.
    marginals, map : bool
        Compute marginals / the MAP assignment (default both True).
    """

    name = "exact"
    summary = "variable elimination over discrete latents: log evidence, marginals, MAP, samples"
    options = {
        "dtype": "table precision, default torch.float64",
        "device": "'cpu' or 'cuda', default cpu",
        "memory_budget": "bytes for the largest table, default 2 GiB",
        "heuristic": "'min_fill' (default) or 'min_degree'",
        "seed": "seed for sample()",
        "marginals": "compute marginals (default True)",
        "map": "compute the MAP assignment (default True)",
    }

    def check(self, analysis) -> Applicability:
        """Exact applies when every latent is discrete and enumerable (batch dims declared
        by plates), the plates nest, and the largest table of the elimination plan fits
        ``analysis.memory_budget``; otherwise says which of these fails, naming the sites,
        with ``UnsupportedModelError`` or (over budget) ``IntractableError``."""
        if analysis.continuous:
            shown = ", ".join(analysis.continuous[:6]) + (" ..." if len(analysis.continuous) > 6 else "")
            return Applicability(False, f"continuous latent(s) {shown} cannot be enumerated", UnsupportedModelError)
        return discrete_applicability(analysis)

    def run(self, graph, analysis, *, dtype=torch.float64, device=None, memory_budget=None, heuristic=None,
            seed=None, marginals=True, map=True):
        """Run exact inference; see the class docstring for options.

        Returns
        -------
        TablePosterior

        Raises
        ------
        DataError
            If the evidence has probability zero under the model.
        """
        del memory_budget, heuristic  # consumed by the analysis
        start = time.perf_counter()
        device = torch.device(device) if device is not None else torch.device("cpu")
        plan = discrete_plan(graph, analysis, dtype=dtype, device=device)
        build = time.perf_counter() - start
        log_z, probs = plan.log_partition(marginals=marginals)
        if not torch.isfinite(log_z):
            raise DataError(
                f"the evidence on {graph.observed()} has probability zero under model '{graph.model.name}' "
                "(log evidence = -inf): some observed value is impossible given the others"
            )
        diagnostics = {"plan_seconds": build, "treewidth": analysis.treewidth,
                       "largest_clique_bytes": analysis.clique_bytes, "elimination_order": plan.order,
                       "chains": plan.chains, "device": str(device)}
        value = float(log_z)
        return table_posterior(self.name, graph, plan, probs, seed=seed, map=map, elbo=value, log_evidence=value,
                               converged=None, start=start, diagnostics=diagnostics)
