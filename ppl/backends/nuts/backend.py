"""``method="nuts"``: Pyro's No-U-Turn Sampler, several chains, R-hat and ESS.

Hamiltonian Monte Carlo with the path length chosen by the no-U-turn criterion and the
step size by dual averaging during warmup (Hoffman & Gelman 2014, "The No-U-Turn Sampler",
JMLR 15, Algorithms 3 and 6), through ``pyro.infer.MCMC``, on the continuous latents in
unconstrained space; discrete latents are summed out exactly in ppl's own potential
(:class:`~ppl.backends.common.potential.Potential`, by variable elimination with the
exact engine's plan, :class:`~ppl.backends.common.discrete.DiscretePlan`, not Pyro's
enumeration), so they are not sampled.  Chains run in parallel processes where possible
(:mod:`ppl.backends.nuts.sampler`); their draws are checked with the rank-normalised R-hat
and bulk / tail ESS of Vehtari et al. (2021, Bayesian Analysis 16) and the count of
divergent transitions (Betancourt 2017, arXiv:1701.02434) — see
:mod:`ppl.backends.common.chains`.  The reference sampler when nothing exact exists:
accurate in the limit, and the slowest method here.
"""

from __future__ import annotations

import time

from ...posterior import DrawsPosterior
from ..base import Applicability, Backend, list_names
from ..common.drawbudget import check_draws
from ..common.importance import discrete_sites
from ..common.potential import Potential
from ..common.unconstrained import noncentrable_sites
from ..common.routing import not_ok
from ..common.runtime import run_context
from ..options import COMMON, Boolean, Integer, NoneValue, OneOf, Option, Real, option_table
from ..common.chains import chain_diagnostics, chain_trust, cut_short, sampler_applicability
from .sampler import INIT_STRATEGIES, ChainSettings, preserved_state, run_chains

__all__ = ["NUTSBackend"]


class NUTSBackend(Backend):
    """The No-U-Turn Sampler (see the module docstring); options in :attr:`options`
    (``ppl.methods("nuts")`` lists them)."""

    name = "nuts"
    summary = "Pyro's NUTS, several chains, R-hat and ESS: the reference sampler (discrete latents summed out)"
    options = option_table(
        Option("num_samples", Integer(1), 1000, "draws kept per chain, after warmup"),
        Option("warmup_steps", Integer(1), 1000, "adaptation steps per chain (step size, mass matrix), discarded"),
        Option("num_chains", Integer(1), 4, "chains (>= 2 to check convergence)"),
        Option("parallel", Boolean(), True,
               "run the chains in forked worker processes, one per CPU core (Linux, CPU only; else in turn); "
               "the draws are the same either way"),
        Option("target_accept_prob", Real(0.0, 1.0, low_open=True, high_open=True), 0.8,
               "acceptance probability the step size adapts to (higher: smaller steps, fewer divergences)"),
        Option("max_tree_depth", Integer(1), 10, "at most 2**max_tree_depth leapfrog steps per draw"),
        Option("full_mass", Boolean() | NoneValue(), None,
               "adapt a dense mass matrix (correlated posteriors); None: dense up to 50 dimensions, else diagonal"),
        Option("jit_compile", Boolean() | NoneValue(), None,
               "trace the potential with torch.jit (None: wherever the traced potential matches the model's at "
               "three points; True notes a fallback)"),
        Option("init", OneOf(*INIT_STRATEGIES), "uniform",
               "where chains start: 'uniform' (in (-2, 2) unconstrained, as Stan), 'median', 'mean' or "
               "'sample' of the prior"),
        COMMON["noncentred"], COMMON["max_seconds"],
        COMMON["seed"].but(doc="chain c is seeded seed + c (None: the global RNG's state)"),
        COMMON["dtype"], COMMON["device"], COMMON["progress"], COMMON["memory_budget"], COMMON["heuristic"],
    )
    rank = 80
    rank_note = "the reference sampler: accurate but the slowest; tried last before a point estimate"
    #: ``ppl.compare`` measures other rows against a reliable run of it when no exact row ran.
    reference_sampler = True

    # ------------------------------------------------------------------ applicability
    def check(self, analysis) -> Applicability:
        """NUTS applies when the model has at least one continuous latent and its discrete
        latents, if any, can be summed out exactly by the potential's variable elimination
        (:func:`~ppl.backends.common.potential.enumeration_problem`: plates declared, the
        largest table within the memory budget); otherwise it names the sites and the
        reason (``UnsupportedModelError``)."""
        verdict = sampler_applicability(analysis, "NUTS chains")
        if not verdict.ok:
            return verdict
        reason = verdict.reason
        params = list(analysis.graph.params())
        if params:
            reason += f"; ppl.param(s) {list_names(params)} held at their current values"
        return Applicability(True, reason)

    def deciding_fact(self, analysis, verdicts) -> str:
        """No closed-form or faster method applies, so the posterior is sampled."""
        failed = not_ok(verdicts)
        before = [n for n in verdicts if n != self.name and n in failed]
        shown = "; ".join(f"{n}: {failed[n]}" for n in before[:4]) or "none is registered"
        return (f"no closed-form or faster method applies ({shown}), so NUTS samples the posterior, the reference "
                f"when nothing exact exists: {verdicts[self.name][1]}")

    def auto_variants(self, analysis) -> list:
        """Under ``method="auto"``: first 4 chains of 300 warmup steps and 400 draws at
        ``target_accept_prob=0.9`` (enough for ESS >= 100 per chain on a well-behaved
        posterior; the higher target avoids divergences of hierarchical models); if their
        diagnostics fail, 4 chains of 1000 + 1000 at 0.95.  Where a Normal latent has
        another latent as its scale, both runs are non-centred (``noncentred=True``: NUTS
        runs after ChEES has tried both forms, and the funnel of a centred hierarchy is what
        defeats a sampler, Betancourt & Girolami 2015)."""
        nc = {"noncentred": True} if noncentrable_sites(analysis.graph) else {}
        return [{"num_samples": 400, "warmup_steps": 300, "target_accept_prob": 0.9, **nc},
                {"num_samples": 1000, "warmup_steps": 1000, "target_accept_prob": 0.95, **nc}]

    def auto_cost(self, options: dict) -> float:
        """NUTS iterations of a run: ``num_chains · (warmup_steps + num_samples)`` (declared
        defaults for the options not given)."""
        get = lambda k: options.get(k, self.options[k].default)  # noqa: E731
        return float(get("num_chains") * (get("warmup_steps") + get("num_samples")))

    def assess(self, posterior, graph, analysis):
        """``"reliable"`` when >= 2 chains, R-hat < 1.01, bulk and tail ESS >= 100 per chain
        (Vehtari et al. 2021) and no divergent transition (Betancourt 2017); see
        :func:`~ppl.backends.common.chains.chain_trust`."""
        return cut_short(chain_trust(posterior.diagnostics), posterior.diagnostics.get("stopped"))

    # ------------------------------------------------------------------------- run
    def run(self, graph, analysis, **options):
        """Run ``num_chains`` NUTS chains with ``options`` (see :attr:`options`).

        Returns
        -------
        DrawsPosterior
            Draws of every continuous latent, ``(num_chains, num_samples) + shape`` per
            site (constrained); ``elbo``, ``log_evidence`` and ``converged`` are None (a
            sampler has no bound and does not converge in an optimiser's sense);
            ``diagnostics``: ``rhat``, ``ess_bulk``, ``ess_tail`` (site -> worst element),
            ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail``, ``divergences`` (post-warmup,
            all chains) and ``divergences_per_chain``, ``acceptance_rate`` and ``step_size``
            per chain, ``seconds`` (wall clock, all chains), ``seconds_per_chain``,
            ``parallel`` (whether the chains ran in worker processes),
            ``steps_per_second`` (NUTS iterations, warmup included, per second),
            ``jit_compile`` (as run), ``notes``, ``enumerated`` (discrete sites summed out
            in the potential, not sampled).

        Raises
        ------
        ModelError
            When Pyro cannot run NUTS on the model (no initial point with a finite density).
        """
        o = self.settings(options)
        start = time.perf_counter()
        s = ChainSettings(num_samples=o.num_samples, warmup_steps=o.warmup_steps, num_chains=o.num_chains,
                          target_accept_prob=o.target_accept_prob, max_tree_depth=o.max_tree_depth,
                          full_mass=o.full_mass,
                          jit_compile=o.jit_compile, init=o.init, seed=o.seed, progress=o.progress,
                          parallel=o.parallel, max_seconds=o.max_seconds)
        with preserved_state(), run_context(o.device, o.dtype, o.seed):
            noncentred = noncentrable_sites(graph) if o.noncentred else []
            potential = Potential(graph, o.device, o.dtype, analysis, noncentred=noncentred)
            check_draws(potential.dim, o, method=self.name, num_chains=o.num_chains, num_samples=o.num_samples)
            chains = run_chains(potential, s, graph.model.name)
        order = [n for n in graph.continuous_latent() if n in chains.draws]
        draws = {n: chains.draws[n] for n in order + [n for n in chains.draws if n not in order]}
        diagnostics = chain_diagnostics(draws)
        seconds = chains.wall_seconds
        diagnostics.update(
            num_chains=s.num_chains, num_samples=s.num_samples, warmup_steps=s.warmup_steps,
            target_accept_prob=s.target_accept_prob, max_tree_depth=s.max_tree_depth, init=s.init,
            full_mass=chains.full_mass,
            divergences=sum(chains.divergences), divergences_per_chain=list(chains.divergences),
            acceptance_rate=list(chains.acceptance_rate), step_size=list(chains.step_size),
            seconds=seconds, seconds_per_chain=list(chains.seconds), parallel=chains.parallel,
            steps_per_second=(s.warmup_steps + s.num_samples) * s.num_chains / seconds if seconds > 0 else None,
            jit_compile=chains.jit_compile, notes=list(chains.notes), enumerated=list(analysis.discrete),
            device=str(o.device), stopped=chains.stopped, noncentred=noncentred)
        return DrawsPosterior(self.name, draws=draws, graph=graph, elbo=None, log_evidence=None, converged=None,
                              elapsed=time.perf_counter() - start, diagnostics=diagnostics,
                              **discrete_sites(potential, draws))
