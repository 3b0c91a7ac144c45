"""Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman, Yao & Gabry 2024, JMLR 25,
"Pareto smoothed importance sampling"), through ArviZ's ``psislw``, and its reading for
variational approximations (Yao, Vehtari, Simpson & Gelman 2018, "Yes, but did it work?").

For draws ``h_s ~ q`` with log weights ``log w_s = log p(h_s, v) - log q(h_s)``, k̂ is the
shape of a generalised Pareto fit to the upper tail of the weights: the importance
estimates are reliable when ``k̂ < min(1 - 1/log10(S), 0.7)`` (Vehtari et al. 2024, §3),
and q itself is close to p when ``k̂ < 0.5`` (Yao et al. 2018, §2.2).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PSISResult", "psis", "khat_threshold", "khat_reading", "KHAT_GOOD", "draws_tail_khat",
           "second_moment_khat"]

#: Below this k̂ the proposal itself is a good approximation (Yao et al. 2018, §2.2).
KHAT_GOOD = 0.5


def khat_threshold(num_draws: int) -> float:
    """The sample-size dependent k̂ threshold ``min(1 - 1/log10(S), 0.7)`` (Vehtari et al.
    2024, eq. 13): above it, S draws cannot give a reliable importance estimate."""
    if num_draws < 11:
        return 0.0
    return min(1.0 - 1.0 / math.log10(num_draws), 0.7)


def khat_reading(k: float) -> str:
    """The usual reading of a PSIS k̂ of an approximation q (Yao et al. 2018, §2.2)."""
    if math.isnan(k):
        return "all importance weights equal: q matches the posterior of the guided sites"
    if k < 0.5:
        return "k < 0.5: the guide is a good approximation; importance sampling with it is reliable"
    if k <= 0.7:
        return "0.5 <= k <= 0.7: the guide is usable but misses some posterior mass"
    return "k > 0.7: the guide is unreliable (posterior mass where q has little); try a richer guide"


@dataclass
class PSISResult:
    """Pareto-smoothed log weights and their diagnostics.

    Attributes
    ----------
    log_weights : torch.Tensor, shape (S,)
        Smoothed, normalised log weights (``logsumexp = 0``).
    khat : float
        The Pareto shape estimate (``nan`` when all weights are equal: q = p).
    ess : float
        Effective sample size of the smoothed weights, ``1 / Σ w_s²``.
    threshold : float
        :func:`khat_threshold` of S.
    log_mean_weight : float
        ``log (1/S) Σ_s w_s`` of the raw weights: an estimate of ``log p(v)`` when ``q``
        is normalised (the importance-weighted bound, Burda et al. 2016).
    """

    log_weights: torch.Tensor
    khat: float
    ess: float
    threshold: float
    log_mean_weight: float

    @property
    def reliable(self) -> bool:
        """k̂ below the threshold (or all weights equal)."""
        return math.isnan(self.khat) or self.khat < self.threshold

    def weights(self) -> torch.Tensor:
        """Normalised weights, shape (S,)."""
        return self.log_weights.exp()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Self-normalised importance estimate of ``E_p[values]`` over the draws' dim 0."""
        w = self.weights().to(values.dtype).reshape((-1,) + (1,) * (values.dim() - 1))
        return (w * values).sum(0)

    def resample(self, n: int, generator=None) -> torch.Tensor:
        """Indices of ``n`` draws resampled by the smoothed weights (with replacement)."""
        return torch.multinomial(self.weights(), n, replacement=True, generator=generator)


def psis(log_weights: torch.Tensor) -> PSISResult:
    """Pareto-smooth ``log_weights`` (shape (S,)) with ArviZ's ``psislw``.

    Returns
    -------
    PSISResult

    Raises
    ------
    ValueError
        If a log weight is NaN or +inf (the density is not finite at a draw).
    """
    lw = log_weights.detach().double().cpu().reshape(-1)
    if bool(torch.isnan(lw).any()) or bool((lw == math.inf).any()):
        raise ValueError("importance log weights contain NaN or +inf")
    s = lw.numel()
    raw_lse = float(torch.logsumexp(lw, 0))
    log_mean = raw_lse - math.log(s)
    finite = torch.isfinite(lw)
    if not bool(finite.any()):
        return PSISResult(torch.full_like(lw, -math.log(s)), math.inf, 0.0, khat_threshold(s), -math.inf)
    if float(lw[finite].max() - lw[finite].min()) < 1e-12 * (1 + abs(float(lw[finite].mean()))):
        # p/q constant where p > 0 (zero elsewhere): q is the posterior, perhaps on a wider support
        n = int(finite.sum())
        flat = torch.where(finite, torch.full_like(lw, -math.log(n)), torch.full_like(lw, -math.inf))
        return PSISResult(flat, float("nan"), float(n), khat_threshold(s), log_mean)
    from ..peers import import_arviz

    az = import_arviz()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns for large k̂; the verdict reports it
        smoothed, k = az.psislw(lw.numpy().copy())
    smoothed = torch.as_tensor(np.asarray(smoothed), dtype=torch.float64)
    smoothed = smoothed - torch.logsumexp(smoothed, 0)
    k = float(np.asarray(k))
    if math.isnan(k):
        k = math.inf   # too few draws for the tail fit: nothing shows the weights are tame
    ess = float(1.0 / smoothed.exp().pow(2).sum())
    return PSISResult(smoothed, k, ess, khat_threshold(s), log_mean)


def draws_tail_khat(draws: np.ndarray, reff: float = 1.0) -> np.ndarray:
    """Pareto k̂ of the heavier tail of each row of draws: whether its mean and variance
    can be estimated from them (Vehtari et al. 2024, §3, apply k̂ to any Monte Carlo
    estimate of ``E[h]``; for plain draws the weights are ``|θ - median|``).

    The draws of a distribution with Pareto-like tails of shape ``k`` have ``1/k`` finite
    moments: at ``k̂ ≥ 0.5`` their variance does not exist, at ``k̂ ≥ 1`` their mean (a
    Cauchy's k̂ is about 1; a normal's about 0, a Student-t with 3 degrees of freedom about
    0.33, a log-normal with σ = 1.5 about 0.4 from a few thousand draws).

    Parameters
    ----------
    draws : numpy.ndarray, shape (N, S)
        ``N`` quantities, ``S`` draws each (chains concatenated).
    reff : float
        Relative efficiency ``ESS / S`` of Markov chain draws (1 for independent draws): the
        tail fitted has ``3 sqrt(S / reff)`` draws (Vehtari et al. 2024, §3), so correlated
        draws of a heavy tail are judged on more of it.

    Returns
    -------
    numpy.ndarray, shape (N,)
        The larger of the upper and lower tails' k̂; NaN for a row with fewer than 20 draws
        or whose draws are constant.
    """
    x = np.sort(np.asarray(draws, dtype=float), axis=-1)
    n, s = x.shape
    out = np.full(n, np.nan)
    half = s // 2
    if half < 10:
        return out
    med = np.median(x, axis=-1, keepdims=True)
    upper = x[:, s - half:] - med
    lower = med - x[:, :half]
    ok = np.isfinite(x).all(-1) & (x[:, -1] > x[:, 0])
    if not ok.any():
        return out
    from ..peers import import_arviz

    az = import_arviz()

    tiny = np.finfo(float).tiny
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        r = float(min(max(reff, 1e-3), 1.0)) if math.isfinite(reff) else 1.0
        _, k_up = az.psislw(np.log(np.maximum(upper[ok], tiny)), r)
        _, k_lo = az.psislw(np.log(np.maximum(lower[ok], tiny)), r)
    out[ok] = np.maximum(np.asarray(k_up, dtype=float), np.asarray(k_lo, dtype=float))
    return out


def second_moment_khat(log_weights: torch.Tensor, draws: torch.Tensor, mean: torch.Tensor) -> np.ndarray:
    """PSIS k̂ of the importance estimate of each coordinate's variance: the Pareto shape of
    ``h_d · r`` with ``h_d = (θ_d - mean_d)²`` and ``r = p / q`` (Vehtari et al. 2024, §3:
    the estimate of ``E_p[h]`` for an unbounded ``h`` needs the tail of ``h · r``, not only
    of ``r``).  A q whose tails are lighter than the posterior's can pass ``k̂(r)`` while
    ``k̂(h · r)`` shows that its sds are too small; where ``q = p`` (``r`` constant) and
    ``θ`` is Gaussian, ``h`` is chi-square and ``k̂ ≈ 0``.

    Parameters
    ----------
    log_weights : torch.Tensor, shape (S,)
        ``log p - log q`` of the draws (``-inf`` where p = 0).
    draws : torch.Tensor, shape (S, D)
        The draws (unconstrained space).
    mean : torch.Tensor, shape (D,)
        The importance estimate of ``E_p[θ]``.

    Returns
    -------
    numpy.ndarray, shape (D,)
        k̂ per coordinate (``nan`` where a coordinate is constant or the weights are
        not finite anywhere).
    """
    lw = log_weights.detach().double().cpu().reshape(-1, 1)
    z = draws.detach().double().cpu()
    h = (z - mean.detach().double().cpu().reshape(1, -1)).pow(2)
    out = np.full(z.shape[1], np.nan)
    if z.shape[1] == 0 or not bool(torch.isfinite(lw).any()):
        return out
    tiny = float(np.finfo(float).tiny)
    rows = (lw + h.clamp_min(tiny).log()).T                    # (D, S)
    rows = torch.where(torch.isfinite(rows), rows, torch.full_like(rows, -math.inf))
    ok = (h.max(0).values > 0).numpy()
    if not ok.any():
        return out
    from ..peers import import_arviz

    az = import_arviz()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        _, k = az.psislw(rows[torch.as_tensor(ok)].numpy().copy())
    out[ok] = np.asarray(k, dtype=float)
    return out
