"""Convergence diagnostics of several Markov chains and the trust verdict they give.

R-hat and the bulk and tail effective sample sizes are the rank-normalised, folded,
split-chain versions of Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-
normalization, folding, and localization: an improved R-hat for assessing convergence of
MCMC", Bayesian Analysis 16(2), computed by ArviZ (``az.rhat``, ``az.ess``).  Their
recommendation (§4): use the draws only when R-hat < 1.01 and the bulk and tail ESS are at
least 100 per chain (400 with four chains).  A divergent transition of Hamiltonian Monte
Carlo marks a region of high curvature the integrator could not follow, where the draws
are biased (Betancourt 2017, "A conceptual introduction to Hamiltonian Monte Carlo",
arXiv:1701.02434, §6.2): a reliable run has none.  Draws whose tail is so heavy that
their variance may not exist (Pareto k̂ of the draws >= 0.5, Vehtari et al. 2024, §3) give
sds (and means) that cannot be trusted however well the chains mix (a Cauchy posterior).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ...analysis.report import format_bytes
from ...errors import NumericalError, UnsupportedModelError
from ...peers import import_arviz
from ...trust import RELIABLE, UNRELIABLE, Trust
from ..base import Applicability, list_names
from .potential import enumeration_problem

__all__ = ["sampler_applicability", "cut_short", "MIN_DRAWS", "stopped_note", "time_limit_error", "RHAT_MAX",
           "ESS_PER_CHAIN", "TAIL_KHAT_MAX", "BFMI_MIN", "chain_diagnostics", "chain_trust", "e_bfmi"]

#: R-hat at or above this means the chains have not mixed (Vehtari et al. 2021, §4).
RHAT_MAX = 1.01
#: Bulk and tail ESS below this many per chain are too few (Vehtari et al. 2021, §4).
ESS_PER_CHAIN = 100

#: Below this energy Bayesian fraction of missing information, HMC explores the energy levels badly
#: (Betancourt 2016, arXiv:1604.00695, §6; Stan's warning threshold).
BFMI_MIN = 0.3

#: At or above this Pareto k̂ of a site's draws their variance does not exist, so their sd does not settle
#: (a tail of shape k has 1/k finite moments; Vehtari et al. 2024, §3).
TAIL_KHAT_MAX = 0.5

_CITE = "Vehtari et al. 2021"


#: Draws per chain below which a run cut at its time limit is an error, not a result.
MIN_DRAWS = 4


def stopped_note(max_seconds: float, kept: int, asked: int) -> str:
    """The note of a sampler whose chains stopped at ``max_seconds`` (seconds) with ``kept``
    of ``asked`` draws each (``diagnostics["stopped"]``; :func:`cut_short` reads it)."""
    return f"the chains stopped at the time limit (max_seconds={max_seconds:g}) after {kept} of {asked} draws each"


def time_limit_error(who: str, max_seconds: float, where: str) -> NumericalError:
    """The error of a sampler (``who``) that reached ``max_seconds`` ``where`` (its
    warmup, or after fewer than :data:`MIN_DRAWS` draws): nothing to judge."""
    return NumericalError(f"{who} reached its time limit (max_seconds={max_seconds:g}) in {where}, too few draws to "
                          f"judge (at least {MIN_DRAWS} per chain); raise max_seconds (under method='auto': "
                          "time_budget) or use fewer warmup_steps")


def cut_short(trust: Trust, stopped: str | None) -> Trust:
    """``trust`` of a run that ``stopped`` at its time limit (``max_seconds``; None: it
    ran its schedule): unreliable whatever the diagnostics say, since the chains are
    shorter than asked and a sampler's own facts (divergences) cover only what ran; the
    failed diagnostics' reasons are kept after the time limit's."""
    if not stopped:
        return trust
    why = f"{stopped}: a run cut short is not trusted (raise max_seconds, or time_budget under method='auto')"
    return Trust(UNRELIABLE, [why] + ([] if trust.ok else list(trust.reasons)), trust.numbers,
                 next_method=None if trust.ok else trust.next_method)


def sampler_applicability(analysis, chains: str) -> Applicability:
    """Whether a sampler of the continuous latents applies (NUTS, ChEES): at least one
    continuous latent, and the discrete latents, if any, summable exactly by the
    potential's variable elimination (:func:`~ppl.backends.common.potential.enumeration_problem`);
    the reason starts with ``chains`` (e.g. ``"NUTS chains"``) and names the sites, or says
    what is missing (``UnsupportedModelError``)."""
    cont = list(analysis.continuous)
    if not cont:
        what = "no continuous latent to sample: use method='exact'" if analysis.discrete else \
            "no latent variables to sample"
        return Applicability(False, what, UnsupportedModelError)
    why = enumeration_problem(analysis)
    if why:
        return Applicability(False, why, UnsupportedModelError)
    reason = f"{chains} over {len(cont)} continuous latent(s) ({list_names(cont)})"
    if analysis.discrete:
        reason += (f"; {len(analysis.discrete)} discrete latent(s) summed out exactly (largest table "
                   f"{format_bytes(analysis.clique_bytes)})")
    return Applicability(True, reason)


def _extreme(dataset, key: str, worst) -> float:
    """``worst`` (np.max or np.min) of one variable of an ArviZ result; NaN stays NaN."""
    values = np.asarray(dataset[key].values, dtype=float)
    return float(worst(values)) if values.size else math.nan


def chain_diagnostics(draws: dict) -> dict:
    """R-hat and bulk / tail ESS of every site's draws, worst element per site.

    Parameters
    ----------
    draws : dict[str, torch.Tensor]
        Site -> draws, shape ``(C, S) + shape`` (``C`` chains of ``S`` draws).

    Returns
    -------
    dict
        ``rhat``, ``ess_bulk``, ``ess_tail``: site -> the largest R-hat and the smallest
        ESS over the site's elements (draws; NaN where ArviZ cannot compute one, e.g. R-hat
        of one chain or of constant draws); ``tail_khat``: site -> the largest Pareto k̂ of
        an element's draws (:func:`~ppl.trust.psis.draws_tail_khat` with the site's
        relative efficiency, bulk ESS / draws; NaN when constant);
        ``max_rhat``, ``min_ess_bulk``, ``min_ess_tail``, ``max_tail_khat``: the same over
        every site (NaN when some site's is NaN; ``max_tail_khat`` ignores NaN).
    """
    from ...trust.psis import draws_tail_khat

    az = import_arviz()
    keys = {f"v{i}": site for i, site in enumerate(draws)}  # names ArviZ cannot clash with ("chain", "draw")
    idata = az.from_dict(posterior={k: draws[s].detach().to("cpu", torch.float64).numpy() for k, s in keys.items()})
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # one chain, constant draws: ArviZ warns and returns NaN
        rhat = az.rhat(idata)
        bulk = az.ess(idata, method="bulk")
        tail = az.ess(idata, method="tail")
    out = {"rhat": {s: _extreme(rhat, k, np.max) for k, s in keys.items()},
           "ess_bulk": {s: _extreme(bulk, k, np.min) for k, s in keys.items()},
           "ess_tail": {s: _extreme(tail, k, np.min) for k, s in keys.items()}}
    out["tail_khat"] = {}
    for s, v in draws.items():
        flat = v.detach().to("cpu", torch.float64).reshape(v.shape[0] * v.shape[1], -1).T.numpy()
        k = draws_tail_khat(flat, reff=out["ess_bulk"][s] / flat.shape[1])
        out["tail_khat"][s] = float(np.nanmax(k)) if np.isfinite(k).any() else math.nan
    out["max_rhat"] = _overall(out["rhat"].values(), max)
    out["min_ess_bulk"] = _overall(out["ess_bulk"].values(), min)
    out["min_ess_tail"] = _overall(out["ess_tail"].values(), min)
    finite = [k for k in out["tail_khat"].values() if not math.isnan(k)]
    out["max_tail_khat"] = max(finite) if finite else math.nan
    return out


def _overall(values, worst) -> float:
    values = list(values)
    if not values:
        return math.nan
    if any(math.isnan(v) for v in values):
        return math.nan
    return float(worst(values))


def _worst_site(per_site: dict, high: bool):
    """``(site, value)`` with the largest (``high``) or smallest value, NaN first."""
    for site, v in per_site.items():
        if math.isnan(v):
            return site, v
    pick = max if high else min
    site = pick(per_site, key=per_site.get)
    return site, per_site[site]


def _longer(diag: dict, have: float, need: float) -> int:
    """Draws per chain that would bring ESS ``have`` to ``need`` with a 20% margin (ESS
    grows about linearly in the draws), at least twice the run's, rounded up to a hundred."""
    s = int(diag.get("num_samples", 1000))
    factor = need / have if have > 0 and math.isfinite(have) else 4.0
    return int(math.ceil(s * min(max(factor * 1.2, 2.0), 20.0) / 100.0) * 100)


def _rhat_reason(diag: dict) -> str | None:
    site, r = _worst_site(diag["rhat"], high=True)
    w, s = diag.get("warmup_steps", 1000), diag.get("num_samples", 1000)
    longer = f"warmup_steps={max(2 * w, 1000)}, num_samples={max(2 * s, 1000)}"
    if math.isnan(r):
        return (f"R-hat of '{site}' could not be computed (its draws are constant or not finite): the chains are "
                f"stuck; check the model, then run longer ({longer}) or reparameterise it")
    if r >= RHAT_MAX:
        return (f"R-hat of '{site}' is {r:.3f} >= {RHAT_MAX} ({_CITE}): the chains disagree, so they have not "
                f"converged to one distribution; run longer ({longer}) or reparameterise the model (e.g. "
                "non-centred scales); chains stuck in different modes need a better init or a model that "
                "separates them")
    return None


def _ess_reasons(diag: dict, need: float, rule: str) -> list:
    failing = []
    for key, what, use in (("ess_bulk", "bulk ESS", "means and medians"),
                           ("ess_tail", "tail ESS", "quantiles and intervals")):
        site, e = _worst_site(diag[key], high=False)
        if math.isnan(e) or e < need:
            failing.append((what, site, e, use))
    if not failing:
        return []
    more = max(_longer(diag, e, need) for _, _, e, _ in failing)
    return [f"{what} of '{site}' {'could not be computed' if math.isnan(e) else f'is {e:.0f}'} < {need:.0f} "
            f"({rule}, {_CITE}): too few effective draws for {use}; raise num_samples={more}"
            for what, site, e, use in failing]


def _divergence_reason(diag: dict) -> str | None:
    n = int(diag.get("divergences", 0))
    if not n:
        return None
    target = float(diag.get("target_accept_prob", 0.8))
    higher = 0.95 if target < 0.95 else 0.99
    return (f"{n} divergent transition(s) after warmup (Betancourt 2017): the sampler could not follow the "
            f"posterior's curvature somewhere, so the draws can be biased; use target_accept_prob={higher} "
            "or reparameterise the model (e.g. a non-centred hierarchy)")


def e_bfmi(energy: torch.Tensor) -> torch.Tensor:
    """The energy Bayesian fraction of missing information of each chain (Betancourt 2016,
    "Diagnosing suboptimal cotangent disintegrations in Hamiltonian Monte Carlo",
    arXiv:1604.00695, eq. 7 estimate): ``Σ_n (E_n - E_{n-1})² / Σ_n (E_n - Ē)²``.

    Parameters
    ----------
    energy : torch.Tensor, shape (C, S)
        The Hamiltonian at the start of each HMC iteration (after the momentum draw), per
        chain, after warmup.

    Returns
    -------
    torch.Tensor, shape (C,)
        NaN for a chain whose energy is constant.
    """
    e = energy.double()
    num = (e[:, 1:] - e[:, :-1]).pow(2).sum(-1)
    den = (e - e.mean(-1, keepdim=True)).pow(2).sum(-1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, math.nan))


def _bfmi_reason(diag: dict) -> str | None:
    values = [float(v) for v in diag.get("e_bfmi", []) if not math.isnan(float(v))]
    if not values or min(values) >= BFMI_MIN:
        return None
    return (f"E-BFMI {min(values):.2f} < {BFMI_MIN} in some chain (Betancourt 2016): the momentum draws cannot move "
            "the chains across the posterior's energy levels (typical of heavy tails and funnels), so the draws "
            "can miss part of it; reparameterise the model (e.g. a non-centred hierarchy) or use method='nuts'")


def _tail_reason(diag: dict) -> str | None:
    per_site = {s: k for s, k in diag.get("tail_khat", {}).items() if not math.isnan(k)}
    if not per_site:
        return None
    site = max(per_site, key=per_site.get)
    k = per_site[site]
    if k < TAIL_KHAT_MAX:
        return None
    return (f"the draws of '{site}' have a tail so heavy (Pareto k̂ = {k:.2f} >= {TAIL_KHAT_MAX}, Vehtari et al. "
            "2024) that their sd does not settle: the posterior's variance (or mean) may not exist, so the sd and "
            "mean from the draws can be far off; report its median and quantiles (post.quantile), or use a prior "
            "with lighter tails")


def chain_trust(diag: dict, ess_total: float | None = None) -> Trust:
    """The verdict of a sampler's chains from :func:`chain_diagnostics` plus run facts.

    ``"reliable"`` only when there are at least two chains, R-hat < 1.01 for every
    element of every site, bulk and tail ESS >= 100 per chain (Vehtari et al. 2021, §4;
    or ``ess_total``), no divergent transition (Betancourt 2017, §6.2), E-BFMI >= 0.3 in
    every chain where it is given (Betancourt 2016) and no site whose draws' Pareto k̂ is
    at least :data:`TAIL_KHAT_MAX` (Vehtari et al. 2024, §3); otherwise ``"unreliable"`` with one
    reason per failed check, naming the worst site, its number and what to change.

    Parameters
    ----------
    diag : dict
        :func:`chain_diagnostics`' keys plus ``num_chains``, ``num_samples`` (per chain),
        ``warmup_steps``, ``divergences`` (post-warmup, all chains) and
        ``target_accept_prob``; optionally ``e_bfmi`` (per chain, see :func:`e_bfmi`).
    ess_total : float, optional
        The bulk and tail ESS every site needs over all chains; default 100 per chain.
        Samplers of many short chains pass Vehtari et al.'s total of 400 (§4: "ESS > 400",
        100 per chain with their four chains).

    Returns
    -------
    Trust
        ``numbers``: ``rhat`` (max), ``ess_bulk``, ``ess_tail`` (min), ``divergences``,
        ``num_chains``, ``num_samples`` (per chain), ``tail_khat`` (max over sites, when
        computed).
    """
    chains = int(diag["num_chains"])
    need = float(ess_total) if ess_total is not None else float(ESS_PER_CHAIN * chains)
    rule = f"{ESS_PER_CHAIN} per chain" if ess_total is None else f"{need:.0f} over all {chains} chains"
    numbers = {"rhat": diag["max_rhat"], "ess_bulk": diag["min_ess_bulk"], "ess_tail": diag["min_ess_tail"],
               "divergences": int(diag.get("divergences", 0)), "num_chains": chains,
               "num_samples": int(diag["num_samples"])}
    if "max_tail_khat" in diag:
        numbers["tail_khat"] = diag["max_tail_khat"]
    if diag.get("e_bfmi"):
        numbers["e_bfmi"] = float(min(diag["e_bfmi"]))
    reasons = []
    if chains < 2:
        reasons.append("one chain: convergence cannot be checked, since R-hat compares chains started apart "
                       f"({_CITE}); use num_chains >= 2 (4 is usual)")
    else:
        reasons.append(_rhat_reason(diag))
    reasons += _ess_reasons(diag, need, rule)
    reasons.append(_divergence_reason(diag))
    reasons.append(_bfmi_reason(diag))
    reasons.append(_tail_reason(diag))
    reasons = [r for r in reasons if r]
    if reasons:
        return Trust(UNRELIABLE, reasons, numbers)
    return Trust(RELIABLE, [f"{chains} chains of {numbers['num_samples']} draws agree: R-hat <= {numbers['rhat']:.3f} "
                            f"< {RHAT_MAX}, bulk ESS >= {numbers['ess_bulk']:.0f} and tail ESS >= "
                            f"{numbers['ess_tail']:.0f} (at least {need:.0f}), no divergent transitions "
                            f"({_CITE}; Betancourt 2017)"], numbers)
