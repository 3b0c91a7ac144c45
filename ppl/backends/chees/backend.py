"""``method="chees"``: ChEES-HMC, many Hamiltonian Monte Carlo chains in lockstep.

Hoffman, Radul & Sountsov (2021), "An Adaptive-MCMC Scheme for Setting Trajectory Lengths
in Hamiltonian Monte Carlo", AISTATS: C chains share the step size, the (jittered)
trajectory length and a diagonal mass matrix, so each leapfrog step is one evaluation of
the model on a ``(C, D)`` batch (:mod:`ppl.backends.chees.sampler`).  On a model of a few
dozen parameters 16 chains cost about what one NUTS chain does, which makes it the sampler
``method="auto"`` tries before NUTS.  The draws are judged exactly as NUTS' are
(:func:`~ppl.backends.common.chains.chain_trust`: rank-normalised R-hat, bulk and tail
ESS, divergent transitions, heavy tails) plus the E-BFMI of each chain (Betancourt 2016),
with the ESS needed over all chains (Vehtari et al. 2021, §4: 400) since the chains are
many and short.  Discrete latents are summed out by the potential's variable elimination.
"""

from __future__ import annotations

import time

from ...errors import ModelError, PPLError
from ...posterior import DrawsPosterior, Posterior
from ..base import Applicability, Backend
from ..common.chains import chain_diagnostics, chain_trust, cut_short, e_bfmi, sampler_applicability
from ..common.drawbudget import check_draws
from ..common.importance import discrete_sites
from ..common.jit import JIT_ERRORS
from ..common.potential import Potential
from ..common.unconstrained import noncentrable_sites
from ..common.runtime import run_context
from ..options import COMMON, Boolean, InstanceOf, Integer, NoneValue, OneOf, Option, Real, option_table
from .sampler import CheesSettings, run_lockstep

__all__ = ["CheesBackend", "ESS_TOTAL", "LONGER", "FEW_DIVERGENCES"]

#: Bulk and tail ESS every site needs over all chains (Vehtari et al. 2021, §4).
ESS_TOTAL = 400

#: auto's longer ChEES run, after one whose chains disagreed with few divergent transitions:
#: twice the defaults' iterations (300 + 400), the extra warmup for the step size and mass
#: matrix, and smaller steps (Stan's advice for a few divergences: a higher target acceptance).
LONGER = {"warmup_steps": 600, "num_samples": 800, "target_accept_prob": 0.9}

#: The longer run follows a run with at most this fraction of its transitions divergent.
FEW_DIVERGENCES = 0.005


class CheesBackend(Backend):
    """ChEES-HMC (see the module docstring); options in :attr:`options`
    (``ppl.methods("chees")`` lists them)."""

    name = "chees"
    summary = ("ChEES-HMC: many HMC chains in lockstep, one batched gradient per leapfrog step; R-hat and ESS as "
               "for NUTS (discrete latents summed out)")
    options = option_table(
        Option("num_chains", Integer(2), 16, "chains run in lockstep (each step evaluates the model on all at once)"),
        Option("num_samples", Integer(1), 400, "draws kept per chain, after warmup"),
        Option("warmup_steps", Integer(1), 300,
               "adaptation iterations (step size, trajectory length, diagonal mass matrix), discarded"),
        Option("target_accept_prob", Real(0.0, 1.0, low_open=True, high_open=True), 0.651,
               "the harmonic mean of the chains' acceptance probabilities the step size adapts to (0.651: optimal "
               "for HMC, Beskos et al. 2013; higher: smaller steps, fewer divergences)"),
        Option("max_leapfrog", Integer(1), 1024, "at most this many leapfrog steps per iteration"),
        Option("jit_compile", Boolean() | NoneValue(), None,
               "trace the batched log density with torch.jit (None: wherever the trace matches the model at two "
               "points; True notes a fallback)"),
        Option("init", OneOf("uniform", "median", "sample") | InstanceOf(Posterior, "a Posterior of the model"),
               "uniform",
               "where chains start: 'uniform' (in (-2, 2) unconstrained, as Stan), 'median' of the prior, "
               "'sample' (the median plus a standard normal draw), or an earlier result of the model (its draws "
               "start half the chains, the rest uniform; their covariance is the first metric; auto passes its "
               "Laplace or Pathfinder fit)"),
        Option("metric", OneOf("auto", "diag", "dense"), "auto",
               "the mass matrix adapted in warmup: 'diag', 'dense' (from the draws and their gradients, Seyboldt et "
               "al. 2023) or 'auto' (dense up to 100 unconstrained coordinates)"),
        COMMON["noncentred"], COMMON["max_seconds"],
        COMMON["seed"].but(doc="seeds every draw of the run (None: the global RNG's state)"),
        COMMON["dtype"], COMMON["device"], COMMON["progress"], COMMON["memory_budget"], COMMON["heuristic"],
    )
    rank = 70
    warm_starts = True
    rank_note = "a sampler: many chains at about the cost of one NUTS chain; tried before NUTS"

    def check(self, analysis) -> Applicability:
        """ChEES applies where NUTS does: at least one continuous latent, and the discrete
        latents, if any, summable exactly by the potential's variable elimination."""
        return sampler_applicability(analysis, "lockstep HMC chains")

    def auto_skip(self, analysis, options: dict, attempts: list) -> str | None:
        """Under ``method="auto"`` (:meth:`auto_variants`): the non-centred runs need a
        Normal latent whose scale is another latent (:func:`noncentrable_sites`), and where
        there is one the longer run is the non-centred one.  The longer run follows only a
        run whose chains disagreed (R-hat, ESS) with at most :data:`FEW_DIVERGENCES` of its
        transitions divergent: many divergences mark a region HMC cannot enter (a funnel's
        neck), which a longer run does not cure (Betancourt 2017, §6.2), so NUTS is next.
        Models with discrete latents are sampled as the others, on the density with them
        summed out (right and reliable on the reference mixture and HMM,
        tests/test_trust_reference.py; Pyro's NUTS took 2 s per iteration on that HMM)."""
        hierarchy = bool(noncentrable_sites(analysis.graph))
        if options.get("noncentred") and not hierarchy:
            return "no Normal latent has another latent as its scale: nothing to non-centre"
        if options.get("warmup_steps") != LONGER["warmup_steps"]:
            return None
        if hierarchy and not options.get("noncentred"):
            return "the longer run is the non-centred one"
        last = next((a for a in reversed(attempts) if a["method"] == self.name and a.get("verdict")), None)
        if last is None:
            return "the shorter run gave no result to improve on"
        get = lambda k: last["options"].get(k, self.options[k].default)  # noqa: E731
        if (last.get("divergences") or 0) > FEW_DIVERGENCES * get("num_chains") * get("num_samples"):
            return (f"the shorter run had {last['divergences']} divergent transitions, which a longer run does not "
                    "cure")
        return None

    def auto_variants(self, analysis) -> list:
        """Under ``method="auto"``: the defaults with at most 128 leapfrog steps per
        iteration, so a posterior that would need longer trajectories at its adapted step
        (a funnel's neck) costs little before NUTS takes over (a capped trajectory is still
        a valid HMC step, and the chains' diagnostics judge the mixing); then the same with
        the hierarchy non-centred (``noncentred=True``, where a Normal latent has a latent
        scale: the funnel of a population sd and its group effects, Papaspiliopoulos et al.
        2007); then, where the chains disagreed with few divergences (:meth:`auto_skip`), a
        run twice as long with smaller steps (:data:`LONGER`: a slowly mixing scale in a
        hierarchical model), non-centred where the model has a hierarchy."""
        cap = {"max_leapfrog": 128}
        return [cap, {**cap, "noncentred": True}, {**cap, **LONGER}, {**cap, **LONGER, "noncentred": True}]

    def auto_cost(self, options: dict) -> float:
        """Iterations of a run, ``warmup_steps + num_samples`` (the chains run together)."""
        get = lambda k: options.get(k, self.options[k].default)  # noqa: E731
        return float(get("warmup_steps") + get("num_samples"))

    def assess(self, posterior, graph, analysis):
        """``"reliable"`` when >= 2 chains, R-hat < 1.01, bulk and tail ESS >= 400 over all
        chains (Vehtari et al. 2021, §4), no divergent transition, E-BFMI >= 0.3 in every
        chain and no heavy-tailed site (:func:`~ppl.backends.common.chains.chain_trust`);
        otherwise ``next_method="nuts"``."""
        trust = chain_trust(posterior.diagnostics, ess_total=ESS_TOTAL)
        if not trust.ok:
            trust.next_method = "nuts"   # per-chain step sizes and path lengths, a dense mass matrix
        return cut_short(trust, posterior.diagnostics.get("stopped"))

    def run(self, graph, analysis, **options):
        """Run ``num_chains`` ChEES-HMC chains in lockstep with ``options`` (see :attr:`options`).

        Returns
        -------
        DrawsPosterior
            Draws of every continuous latent, ``(num_chains, num_samples) + shape`` per
            site (constrained); ``elbo``, ``log_evidence`` and ``converged`` are None;
            ``diagnostics``: those of NUTS (``rhat``, ``ess_bulk``, ``ess_tail``,
            ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail``, ``tail_khat``,
            ``divergences``, ``divergences_per_chain``, ``acceptance_rate`` per chain)
            plus ``e_bfmi`` (per chain), ``step_size``, ``trajectory_length``,
            ``dense_metric``, ``mean_leapfrog`` (steps per iteration after warmup), ``grad_evals`` (batched
            gradient evaluations), ``warmup_divergences``, ``jit_compile``, ``vectorized``
            (all chains in one model run), ``seconds``, ``notes``, ``enumerated``.

        Raises
        ------
        ModelError
            When no starting point has a finite log density, or the model fails while the
            chains run (the message names the model and the error).
        """
        o = self.settings(options)
        start = time.perf_counter()
        s = CheesSettings(num_chains=o.num_chains, num_samples=o.num_samples, warmup_steps=o.warmup_steps,
                          target_accept_prob=o.target_accept_prob, max_leapfrog=o.max_leapfrog,
                          jit_compile=o.jit_compile, init=o.init, seed=o.seed, progress=o.progress,
                          max_seconds=o.max_seconds, metric=o.metric)
        with run_context(o.device, o.dtype, o.seed):
            noncentred = noncentrable_sites(graph) if o.noncentred else []
            potential = Potential(graph, o.device, o.dtype, analysis, noncentred=noncentred)
            check_draws(potential.dim, o, method=self.name, num_chains=o.num_chains, num_samples=o.num_samples)
            try:
                r = run_lockstep(potential, s)
            except PPLError:
                raise
            except JIT_ERRORS as e:
                raise ModelError(f"ChEES-HMC could not run model '{graph.model.name}': {type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else e!r}") from e
            c, n = r.z.shape[:2]
            flat = potential.constrain(r.z.reshape(c * n, -1))
        draws = {k: v.reshape((c, n) + tuple(v.shape[1:])) for k, v in flat.items()}
        order = [k for k in graph.continuous_latent() if k in draws]
        draws = {k: draws[k] for k in order + [k for k in draws if k not in order]}
        diagnostics = chain_diagnostics(draws)
        diagnostics.update(
            num_chains=c, num_samples=n, warmup_steps=s.warmup_steps, target_accept_prob=s.target_accept_prob,
            init=s.init if isinstance(s.init, str) else f"the draws of a {s.init.method} result",
            divergences=int(r.diverged.sum()),
            divergences_per_chain=[int(x) for x in r.diverged.sum(1)],
            acceptance_rate=[float(x) for x in r.accept_prob.mean(1)],
            e_bfmi=[float(x) for x in e_bfmi(r.energy)], step_size=r.step_size,
            trajectory_length=r.trajectory_length, dense_metric=r.dense_metric,
            mean_leapfrog=sum(r.leapfrog_steps) / max(len(r.leapfrog_steps), 1),
            grad_evals=r.grad_evals, warmup_divergences=r.warmup_divergences, jit_compile=r.jit_compile,
            vectorized=r.vectorized, seconds=r.seconds, notes=list(r.notes), enumerated=list(analysis.discrete),
            stopped=r.stopped, noncentred=noncentred,
            device=str(o.device))
        return DrawsPosterior(self.name, draws=draws, graph=graph, elbo=None, log_evidence=None, converged=None,
                              elapsed=time.perf_counter() - start, diagnostics=diagnostics,
                              **discrete_sites(potential, draws))
