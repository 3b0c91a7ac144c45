"""``method="pathfinder"``: single- and multi-path Pathfinder (Zhang, Carpenter, Gelman &
Vehtari 2022, "Pathfinder: Parallel quasi-Newton variational inference", JMLR 23(306)).

Each of ``num_paths`` independent paths starts at a uniform point in ``(-2, 2)^D`` of the
unconstrained space (as Stan does), runs L-BFGS on ``-log p``
(:mod:`~ppl.backends.pathfinder.lbfgs`), turns every iterate's diagonal-plus-low-rank
inverse-Hessian estimate into a normal approximation
(:mod:`~ppl.backends.pathfinder.approximations`), keeps the one with the highest ELBO
estimate and draws ``num_draws`` from it (Algorithm 1, :mod:`~ppl.backends.pathfinder.paths`).
Multi-path Pathfinder (Algorithm 5) pools the paths' draws and resamples ``num_draws`` of
them by Pareto-smoothed importance weights (Vehtari et al. 2024); PSIS k̂ of those weights
is the verdict's evidence (:func:`~ppl.backends.common.importance.psis_trust`).

One departure from the paper, which weighs each draw by ``p / q_r`` of its own path: here
every draw is weighed by ``p / q̄``, ``q̄ = (1/R) Σ_r q_r`` the equal-weight mixture of the
``R`` paths' approximations, of which the pooled draws are a stratified sample (the balance
heuristic of multiple importance sampling; Veach & Guibas 1995).  Both are consistent; on a
Gaussian posterior where every approximation is within a few percent of exact, own-path
weights of paths of unequal width gave k̂ = 1.3 and 1.9 (an "unreliable" verdict) on 2 of 8
seeds and 0.70 on a third, the mixture's weights k̂ < 0.25 on all 8.  With one path the two
coincide.  Discrete latents are summed out in the density
(:class:`~ppl.backends.common.potential.Potential`).
"""

from __future__ import annotations

import math
import time

import torch

from ...errors import NumericalError, UnsupportedModelError
from ...posterior import DrawsPosterior
from ...rng import kept_global_rngs
from ...trust import UNRELIABLE, Trust
from ..base import Applicability, Backend
from ..common.drawbudget import check_draws
from ..common.importance import discrete_sites, draws_by_site, psis_trust, weigh
from ..common.potential import Potential, enumeration_problem
from ..common.processes import map_jobs
from ..common.routing import not_ok
from ..common.runtime import run_context, seeded_generator
from ..options import COMMON, Boolean, Integer, Option, Real, option_table
from ..template import progress_bar
from .approximations import mixture_log_prob
from .paths import PathSettings, single_path

__all__ = ["PathfinderBackend"]


class PathfinderBackend(Backend):
    """Pathfinder variational inference (see the module docstring); options in
    :attr:`options` (``ppl.methods("pathfinder")`` lists them)."""

    name = "pathfinder"
    summary = ("the best normal approximation along L-BFGS paths in unconstrained space (Zhang et al. 2022), "
               "PSIS-checked and resampled across paths")
    options = option_table(
        Option("num_paths", Integer(1), 4, "independent L-BFGS paths; their draws are pooled and PSIS-resampled"),
        Option("max_iter", Integer(1), 1000, "L-BFGS iterations per path"),
        Option("history_size", Integer(1), 6, "(s, y) pairs of the L-BFGS inverse-Hessian estimate (J)"),
        Option("num_elbo_draws", Integer(1), 25, "draws per ELBO estimate of each approximation along a path (K)"),
        Option("num_draws", Integer(2), 1000, "draws returned; each path also draws this many from its chosen "
                                              "approximation before they are pooled (M)"),
        Option("tol", Real(0.0), 1e-13, "relative tolerance at which L-BFGS stops (Zhang et al. 2022's 1e-13): "
                                        "change of log p, or Newton decrement g'Hg, over max(|log p|, 1)"),
        Option("init_radius", Real(0.0, low_open=True), 2.0,
               "initial points uniform in (-r, r) in unconstrained space"),
        Option("importance", Boolean(), True, "PSIS-resample the pooled draws by p/q (else the raw approximations)"),
        COMMON["seed"].but(doc="seed of the initial points, every draw and the resampling"),
        COMMON["dtype"], COMMON["device"], COMMON["progress"], COMMON["memory_budget"], COMMON["heuristic"],
    )
    rank = 36
    gaussian_approximation = True
    rank_note = ("a normal approximation along a quasi-Newton path, checked by PSIS: after the closed-form methods "
                 "and Laplace")

    # ------------------------------------------------------------------ applicability
    def check(self, analysis) -> Applicability:
        """Pathfinder applies when there is a continuous latent and the discrete ones, if
        any, can be summed out exactly (:func:`~ppl.backends.common.potential.enumeration_problem`)."""
        if not analysis.continuous:
            return Applicability(False, "no continuous latent for a normal approximation to cover: use "
                                        "method='exact' or 'em'", UnsupportedModelError)
        problem = enumeration_problem(analysis)
        if problem:
            return Applicability(False, problem, UnsupportedModelError)
        dim = sum(analysis.graph.sites[s].value.numel() for s in analysis.continuous)
        summed = f", {len(analysis.discrete)} discrete latent(s) summed out" if analysis.discrete else ""
        return Applicability(True, f"normal approximations along L-BFGS paths over {dim} continuous dimension(s)"
                                   f"{summed}, checked by PSIS")

    def deciding_fact(self, analysis, verdicts) -> str:
        """No exact or closed-form method (and no Laplace) applies."""
        failed = not_ok(verdicts)
        return (f"no exact or closed-form method applies (cavi: {failed.get('cavi', 'not registered')}; laplace: "
                f"{failed.get('laplace', 'not registered')}), so the best normal approximation along quasi-Newton "
                f"paths is tried and checked by PSIS: {verdicts[self.name][1]}")

    def auto_variants(self, analysis) -> list:
        """Under ``method="auto"``: at most 200 L-BFGS iterations per path.  A path that has
        not converged by then is on a posterior that is badly conditioned or has no mode
        (a funnel's log density grows without bound toward its neck): its approximations
        will not pass PSIS, and the remaining 800 iterations of the default would cost
        minutes before NUTS is tried."""
        return [{"max_iter": 200}]

    # ------------------------------------------------------------------------- run
    def run(self, graph, analysis, **options):
        """Run multi-path Pathfinder with ``options`` (see :attr:`options`).

        Returns
        -------
        DrawsPosterior
            ``num_draws`` draws per site, shape ``(1, num_draws) + shape`` (PSIS-resampled
            from the pooled ``num_paths × num_draws`` draws when ``importance``, else a
            uniform subset of them); ``elbo`` = the best path's ELBO (nats, estimated
            with its ``num_draws`` draws); ``history`` = the best path's ELBO estimate at
            each L-BFGS iterate; ``converged`` = whether that path's L-BFGS met ``tol``;
            ``map()`` = its last iterate, constrained; ``diagnostics``: ``psis_khat``,
            ``psis_ess``, ``khat_threshold``, ``mixture_elbo`` (the ELBO of the paths'
            equal-weight mixture, nats), ``paths`` (per path: ELBO, the chosen
            iteration, L-BFGS iterations, gradient evaluations, why it stopped),
            ``path_elbos``, ``best_iterations``, ``lbfgs_iterations``,
            ``gradient_evaluations`` and ``density_evaluations`` (totals),
            ``dropped_paths``, ``seconds``.

        Raises
        ------
        NumericalError
            Every path failed (each one's reason is given), or an importance weight is
            NaN or +inf.
        ModelError
            The model cannot be set up for a log density in unconstrained space.
        """
        o = self.settings(options)
        start = time.perf_counter()
        settings = PathSettings(o.max_iter, o.history_size, o.tol, o.num_elbo_draws, o.num_draws, o.init_radius)
        with kept_global_rngs([o.device] if o.device.type == "cuda" else []), run_context(o.device, o.dtype, o.seed):
            potential = Potential(graph, o.device, o.dtype, analysis)
            check_draws(potential.dim, o, method=self.name, num_paths=o.num_paths, num_draws=o.num_draws)
            check_draws(potential.dim, o, method=self.name, num_elbo_draws=o.num_elbo_draws)
            gen = seeded_generator(o.seed, torch.device("cpu"))
            paths = self._paths(potential, settings, o, gen)
            kept = [p for p in paths if p.failure is None]
            if not kept:
                reasons = "; ".join(f"path {p.index}: {p.failure}" for p in paths)
                raise NumericalError(f"Pathfinder: every one of the {len(paths)} path(s) on model "
                                     f"'{graph.model.name}' failed ({reasons}); the log density may be non-finite "
                                     "almost everywhere or unbounded; try method='nuts'")
            # shuffled, so that the draws a slow model has time for represent every path
            perm = torch.randperm(sum(p.z.shape[0] for p in kept), generator=gen)
            pooled = torch.cat([p.z for p in kept])[perm]
            labels = torch.cat([torch.full((p.z.shape[0],), i) for i, p in enumerate(kept)])[perm]
            own = torch.cat([p.log_q for p in kept]).double().cpu()[perm]
            weighted = weigh(potential, pooled, mixture_log_prob([p.approximation for p in kept], pooled))
            if o.importance:
                final = weighted.resample(o.num_draws, gen)
            else:
                final = weighted.z[torch.randperm(weighted.z.shape[0], generator=gen)[: o.num_draws]]
            draws = draws_by_site(potential, final)
            elbos = self._path_elbos(weighted, labels, own, len(kept))
            best_at = max(range(len(kept)), key=lambda i: (elbos[i], kept[i].selection_elbo))
            best = kept[best_at]
            point = {s: v.detach() for s, v in potential.constrain(best.lbfgs.z[-1]).items()}
        diagnostics = self._diagnostics(paths, kept, elbos, best, weighted, o, start)
        post = DrawsPosterior(self.name, graph=graph, draws=draws, point=point, elbo=elbos[best_at],
                              log_evidence=None, history=best.elbos, converged=best.lbfgs.converged,
                              elapsed=time.perf_counter() - start, diagnostics=diagnostics,
                              **discrete_sites(potential, draws))
        post.weighted_draws = weighted
        post.importance = o.importance
        return post

    def _paths(self, potential, settings, o, gen):
        """Run the ``num_paths`` single paths, in forked worker processes (one per core)
        where :func:`~ppl.backends.common.processes.map_jobs` can, else one after another;
        path ``i`` draws only from its own generator, seeded from ``gen`` and ``i``, so the
        paths are the same either way."""
        base = int(torch.randint(2**62, (), generator=gen))
        bar = progress_bar(o.num_paths, "pathfinder paths", o.progress)

        def job(i):
            path = single_path(potential, i, settings, torch.Generator().manual_seed(base + i))
            if bar is not None:
                bar.update(1)
            return path

        try:
            paths, _ = map_jobs(job, list(range(o.num_paths)), potential.device)
        finally:
            if bar is not None:
                bar.close()
        return paths

    @staticmethod
    def _path_elbos(weighted, labels, own, paths):
        """Each kept path's ELBO estimate from its final draws that were weighed and its own
        ``log q`` (nats); ``labels`` and ``own`` follow the (shuffled) pooled draws."""
        n = weighted.log_p.shape[0]
        lw = weighted.log_p - own[:n]
        out = []
        for i in range(paths):
            mine = lw[labels[:n] == i]
            v = float(mine.mean()) if mine.numel() else -math.inf
            out.append(v if math.isfinite(v) else -math.inf)
        return out

    @staticmethod
    def _diagnostics(paths, kept, elbos, best, weighted, o, start) -> dict:
        final = dict(zip([p.index for p in kept], elbos))
        rows = [{"path": p.index, "elbo": final.get(p.index), "selection_elbo": p.selection_elbo if p.failure is None
                 else None, "best_iteration": p.best_iteration or None,
                 "lbfgs_iterations": p.lbfgs.num_iter if p.lbfgs else 0,
                 "gradient_evaluations": p.lbfgs.evaluations if p.lbfgs else p.init_tries,
                 "converged": p.lbfgs.converged if p.lbfgs else False,
                 "stopped": p.lbfgs.message if p.lbfgs else "no initial point", "dropped": p.failure}
                for p in paths]
        r = weighted.result
        return {
            "psis_khat": r.khat, "psis_ess": r.ess, "khat_threshold": r.threshold, "mixture_elbo": weighted.elbo,
            "paths": rows,
            "best_path": best.index, "path_elbos": [row["elbo"] for row in rows],
            "best_iterations": [row["best_iteration"] for row in rows],
            "lbfgs_iterations": [row["lbfgs_iterations"] for row in rows],
            "gradient_evaluations": sum(row["gradient_evaluations"] for row in rows),
            "density_evaluations": sum(p.density_evaluations for p in paths) + int(weighted.z.shape[0]),
            "dropped_paths": [{"path": p.index, "reason": p.failure} for p in paths if p.failure is not None],
            "num_paths": o.num_paths, "num_draws": o.num_draws, "importance": o.importance,
            "dimension": int(weighted.z.shape[1]), "seconds": time.perf_counter() - start,
            "device": str(o.device), "dtype": str(o.dtype),
        }

    # ----------------------------------------------------------------------- trust
    def assess(self, posterior, graph, analysis) -> Trust:
        """PSIS of the pooled draws' weights ``p / q̄`` (see
        :func:`~ppl.backends.common.importance.psis_trust`): reliable when k̂ is below the
        sample-size threshold (below 0.5 for the raw approximations, ``importance=False``)
        with enough importance ESS; dropped paths are reported alongside."""
        weighted = getattr(posterior, "weighted_draws", None)
        if weighted is None:
            return Trust(UNRELIABLE, ["the Pathfinder result carries no importance weights to check it with"],
                         next_method="nuts")
        trust = psis_trust(weighted, what="the Pathfinder approximation", next_method="nuts",
                           corrected=getattr(posterior, "importance", True))
        dropped = posterior.diagnostics.get("dropped_paths") or []
        if dropped:
            trust.reasons.append(f"{len(dropped)} of {posterior.diagnostics['num_paths']} path(s) were dropped: "
                                 + "; ".join(f"path {d['path']}: {d['reason']}" for d in dropped))
            trust.numbers["dropped_paths"] = len(dropped)
        return trust
