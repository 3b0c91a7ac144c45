"""``method="laplace"``: a Gaussian at the posterior mode in unconstrained space, checked
and corrected by Pareto-smoothed importance sampling.

The continuous latents are mapped to ℝ^D (``biject_to(support).inv``, Jacobian included)
and the discrete ones summed out (:class:`~ppl.backends.common.potential.Potential`); the
mode ``z*`` of ``log p`` is found by L-BFGS and polished by Newton steps, and

    q(z) = N(z*, H⁻¹),   H = -∇² log p(z*)                 (Laplace 1774; Bishop 2006, §4.4)

is pushed through the constraints' transforms.  Draws of q are weighted by ``p / q`` and
Pareto smoothed (Vehtari et al. 2024); the answer is the PSIS-resampled draws, and PSIS k̂
says whether they can be trusted.  With ``n_init`` restarts from random points the mode
holding the most mass (``log p(z*) - ½ log det H``) is kept.
"""

from __future__ import annotations

import time

import torch

from ...errors import NumericalError, UnsupportedModelError
from ...posterior import DrawsPosterior
from ..base import Applicability, Backend
from ..common.drawbudget import check_draws
from ..common.importance import discrete_sites, draws_by_site, psis_trust, weigh
from ..common.potential import Potential, enumeration_problem
from ..common.routing import not_ok
from ..common.runtime import run_context
from ..options import COMMON, Boolean, Integer, NoneValue, OneOf, Option, Real, option_table
from ..common.mode import find_mode
from .defensive import BATCHED_DRAWS, DEFENSIVE_SHARE, defensive_draws, draw_count

__all__ = ["LaplaceBackend", "MAX_DIM"]

#: Most unconstrained dimensions (the Hessian is dense: D gradient passes and a D × D Cholesky).
MAX_DIM = 2000


class LaplaceBackend(Backend):
    """The Laplace approximation with PSIS (see the module docstring); options in
    :attr:`options`."""

    name = "laplace"
    summary = "Gaussian at the mode in unconstrained space (Hessian), PSIS-checked and resampled"
    options = option_table(
        Option("max_iter", Integer(1), 1000, "L-BFGS iterations to the mode"),
        Option("tol", Real(0.0), 1e-8, "Newton decrement g'H^-1 g (nats) at which the mode is accepted"),
        Option("num_draws", Integer(2) | NoneValue(), None,
               "draws of the proposal, weighted and resampled; None: 4000 where the model's density is evaluated in "
               "batches, 1000 where it takes one model run per draw (PSIS fits its tail to 3√S of them: k̂ from 1000 "
               "draws is noisier)"),
        Option("importance", Boolean(), True, "PSIS-resample the draws by p/q (else the raw Gaussian)"),
        Option("init", OneOf("median", "uniform"), "median",
               "start of the first run: 'median' is the prior mean (the compiled value where the mean is not "
               "finite), unconstrained (the name is kept for compatibility); 'uniform': uniform(-2, 2) in "
               "unconstrained space"),
        Option("n_init", Integer(1), 1, "starts (later ones uniform(-2, 2)); the mode with the most mass is kept"),
        COMMON["seed"].but(doc="seed of the starts, the draws and the resampling"),
        COMMON["dtype"], COMMON["device"], COMMON["progress"], COMMON["memory_budget"], COMMON["heuristic"],
    )
    rank = 33
    gaussian_approximation = True
    rank_note = "a Gaussian at the mode, checked by PSIS, ranks after the closed-form methods"

    def check(self, analysis) -> Applicability:
        """Laplace applies when there is a continuous latent, the discrete ones can be
        summed out exactly, and the unconstrained dimension is at most :data:`MAX_DIM`."""
        if not analysis.continuous:
            return Applicability(False, "no continuous latent: use method='exact'", UnsupportedModelError)
        problem = enumeration_problem(analysis)
        if problem:
            return Applicability(False, problem, UnsupportedModelError)
        graph = analysis.graph
        dim = sum(graph.sites[s].value.numel() for s in analysis.continuous)
        if dim > MAX_DIM:
            return Applicability(False, f"{dim} continuous latent dimensions: the dense Hessian needs at most "
                                        f"{MAX_DIM}; use method='pathfinder' or 'svi'", UnsupportedModelError)
        summed = f", {len(analysis.discrete)} discrete latent(s) summed out" if analysis.discrete else ""
        return Applicability(True, f"Gaussian at the mode over {dim} continuous dimension(s){summed}, checked by "
                                   "PSIS")

    def deciding_fact(self, analysis, verdicts) -> str:
        """No exact or closed-form method applies."""
        failed = not_ok(verdicts)
        return (f"no exact or closed-form method applies (cavi: {failed.get('cavi', 'not registered')}), so a "
                f"Gaussian at the mode is tried first and checked by PSIS: {verdicts[self.name][1]}")

    def run(self, graph, analysis, **options):
        """Run Laplace with ``options`` (see :attr:`options`).

        Returns
        -------
        DrawsPosterior
            ``num_draws`` draws per site, shape ``(1, num_draws) + shape`` (PSIS-resampled
            when ``importance``); ``map()`` = the mode, constrained; ``elbo`` = the
            Gaussian's ELBO estimate (nats); ``diagnostics`` with
            ``log_density_at_mode`` (the log density at the mode, unconstrained, nats),
            ``newton_decrement``, ``laplace_log_evidence`` (an approximation of log p(v),
            nats), ``psis_khat``, ``psis_ess``, ``iterations``, ``gradient_evaluations``,
            ``dimension``, ``modes`` (the log mass of each start's mode),
            ``failed_starts``, ``device``.

        Raises
        ------
        NumericalError
            No start reaches a mode with a positive definite Hessian (the density grows
            without bound, or has a ridge), or the log density is not finite.
        """
        o = self.settings(options)
        start = time.perf_counter()
        with run_context(o.device, o.dtype, o.seed):
            potential = Potential(graph, o.device, o.dtype, analysis)
            check_draws(potential.dim, o, method=self.name, num_draws=o.num_draws or BATCHED_DRAWS)
            gen = torch.Generator()
            gen.manual_seed(int(o.seed)) if o.seed is not None else gen.seed()
            modes, failures = self._modes(potential, o, gen)
            best = max(modes, key=lambda m: m.log_mass)
            count = o.num_draws or draw_count(potential, best.z)
            z, log_gauss, log_q = defensive_draws(best.z, best.chol, count, gen, o.dtype,
                                                  share=DEFENSIVE_SHARE if o.importance else 0.0)
            weighted = weigh(potential, z, log_q)
            kept = weighted.resample(count, gen) if o.importance else z
            draws = draws_by_site(potential, kept)
            point = {s: v.detach() for s, v in potential.constrain(best.z).items()}
        diagnostics = {"log_density_at_mode": best.log_density, "newton_decrement": best.decrement,
                       "laplace_log_evidence": best.log_mass, "psis_khat": weighted.result.khat,
                       "psis_ess": weighted.result.ess, "iterations": best.iterations,
                       "gradient_evaluations": sum(m.evaluations for m in modes), "dimension": potential.dim,
                       "modes": [m.log_mass for m in modes], "failed_starts": failures, "device": str(o.device)}
        post = DrawsPosterior(self.name, graph=graph, draws=draws, point=point, elbo=weighted.elbo,
                              converged=best.converged, elapsed=time.perf_counter() - start, diagnostics=diagnostics,
                              **discrete_sites(potential, draws))
        post.weighted_draws = weighted
        post.importance = o.importance
        return post

    def _modes(self, potential, o, gen):
        modes, failures = [], []
        for r in range(o.n_init):
            if r == 0 and o.init == "median":
                z0 = potential.median.clone()
            else:
                z0 = potential.random_start(gen).to(o.dtype)
            try:
                modes.append(find_mode(potential, z0, max_iter=o.max_iter, tol=o.tol))
            except (FloatingPointError, ValueError, RuntimeError) as e:
                failures.append(f"start {r}: {e}")
        if not modes:
            where = potential.nonfinite_sites(potential.median)
            raise NumericalError(f"Laplace found no mode of model '{potential.graph.model.name}' with a positive "
                                 f"definite Hessian ({'; '.join(failures)}{where})"
                                 ": the posterior may be improper or have no interior mode; try method='pathfinder' "
                                 "or 'nuts'")
        return modes, failures

    def assess(self, posterior, graph, analysis):
        """PSIS of the Gaussian's draws (see :func:`~ppl.backends.common.importance.psis_trust`),
        and the mode's convergence."""
        trust = psis_trust(posterior.weighted_draws, what="the Laplace approximation", next_method="pathfinder",
                           corrected=posterior.importance)
        trust.numbers["newton_decrement"] = posterior.diagnostics["newton_decrement"]
        if not posterior.converged and trust.ok:
            trust.verdict = "unreliable"
            trust.reasons.insert(0, f"the mode search stopped with Newton decrement "
                                    f"{posterior.diagnostics['newton_decrement']:.3g} nats (not at a mode): raise max_iter")
            trust.next_method = "pathfinder"
        return trust
