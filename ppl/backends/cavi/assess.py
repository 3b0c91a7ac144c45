"""How far to trust a CAVI result.

* Gaussian path: the exact posterior is the Gaussian ``N(Λ⁻¹b, Λ⁻¹)`` the path found, so
  the mean field's means are exact at convergence and q's variance of coordinate ``i`` of
  event block ``B``, ``(Λ_BB⁻¹)_ii``, can be compared with the exact ``(Λ⁻¹)_ii`` (it is
  never larger: Goodfellow et al. 2016, §19.4.2 and the slides' factorised Gaussian,
  KL(q‖p) is mode-seeking); ``diagnostics["sd_ratio_min"]`` is the smallest sd ratio.  The
  exact log evidence is known in closed form there (``diagnostics["exact_log_evidence"]``),
  so the KL gap is reported.
* Other paths: Pareto-smoothed importance weights of q against the full log joint (Yao,
  Vehtari, Simpson & Gelman 2018): q is close to the posterior only when k̂ < 0.5; where the
  exact log evidence can be computed, the KL gap ``log p(v) - ELBO`` (eq. 19.1) is
  reported too.
* Every latent discrete and the exact tables within the memory budget: the mean field's
  marginals are compared with the exact ones (variable elimination, Koller & Friedman
  2009, ch. 9), and the verdict is reliable only when none is off by more than
  ``MARGINAL_TOL`` (:mod:`ppl.backends.common.exact_check`).  PSIS cannot judge this case: on a finite space the weights p/q are
  bounded, so k̂ stays small even when q's marginals are far off (a mean field of a
  Bayesian network without evidence can be off by 0.2).
"""

from __future__ import annotations

from ...errors import PPLError
from ...trust import RELIABLE, UNRELIABLE, Trust
from ..common.exact_check import exact_trust
from ..common.importance import mean_field_weights, psis_trust

__all__ = ["assess_cavi", "SD_RATIO"]

#: The Gaussian mean field is reliable when every sd is at least this fraction of the exact one.
SD_RATIO = 0.9


def _gaussian(posterior) -> Trust:
    ratio = posterior.diagnostics.get("sd_ratio_min", 0.0)
    numbers = {"sd_ratio_min": ratio}
    if ratio >= SD_RATIO:
        return Trust(RELIABLE, [f"Gaussian mean field under a quadratic log joint: the means are exact at "
                                f"convergence and every sd is at least {ratio:.3f} of the exact posterior's"], numbers)
    return Trust(UNRELIABLE, [f"the mean field underestimates a posterior sd by the factor {ratio:.3f} (correlated "
                              "latents: KL(q||p) is mode-seeking); the posterior is Gaussian here, so "
                              "method='laplace' gives it exactly"], numbers, next_method="laplace")


def _tables_and_factors(posterior):
    tables = {s: (posterior.probs(s), posterior._supports[s]) for s in getattr(posterior, "_supports", {})}
    factors = dict(getattr(posterior, "_factors", {}))
    return tables, factors


def assess_cavi(posterior, graph, analysis, num_draws: int = 1000) -> Trust:
    """The verdict of a CAVI posterior (see the module docstring).

    Returns
    -------
    Trust
    """
    if posterior.diagnostics.get("path") == "gaussian":
        trust = _gaussian(posterior)
    elif getattr(posterior, "_joint", None):
        trust = Trust(UNRELIABLE, ["the factors of jointly drawn blocks (Normal-Wishart) have no density in closed "
                                   "form here, so q could not be checked against the model"],
                      next_method="nuts")
    else:
        trust = exact_trust(posterior, graph, analysis, what="the mean field")
        if trust is None:
            tables, factors = _tables_and_factors(posterior)
            try:
                weighted = mean_field_weights(graph, factors=factors, tables=tables, num_draws=num_draws)
            except PPLError as e:
                return Trust(UNRELIABLE, [f"q could not be checked against the model: {e}"], next_method="nuts")
            trust = psis_trust(weighted, what="the mean-field approximation",
                               next_method="exact" if not analysis.continuous else "laplace", corrected=False)
            if analysis.continuous and not analysis.discrete:
                trust.next_method = "laplace"
    exact = posterior.diagnostics.get("exact_log_evidence")
    if exact is not None and posterior.elbo is not None:
        trust.numbers["kl_gap"] = exact - posterior.elbo
    if posterior.converged is False:
        trust.verdict = UNRELIABLE
        trust.reasons.insert(0, "CAVI stopped at max_iter before converging: raise max_iter")
    return trust
