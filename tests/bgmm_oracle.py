"""Closed-form variational Bayesian Gaussian mixture (Bishop 2006, §10.2), in numpy/scipy.

A reference that shares no code with ``ppl``: the E-step (eq. 10.46, 10.64-10.66), the
M-step (eq. 10.51-10.53, 10.58, 10.60-10.63) and the ELBO (eq. 10.70-10.77) of the model

    π ~ Dir(α0 1),  Λ_k ~ W(W0, ν0),  μ_k | Λ_k ~ N(m0, (β0 Λ_k)⁻¹),
    z_n ~ Cat(π),   x_n | z_n ~ N(μ_{z_n}, Λ_{z_n}⁻¹)

under ``q(z) q(π) Π_k q(μ_k, Λ_k)``.  ``q`` is a dict: ``resp (N, K)``, ``alpha (K,)``,
``beta (K,)``, ``m (K, D)``, ``W (K, D, D)`` (Wishart scale), ``nu (K,)``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, gammaln, multigammaln, softmax


def _log_lambda(W, nu):
    d = W.shape[-1]
    i = np.arange(d)
    return digamma((nu[:, None] - i) / 2.0).sum(1) + d * np.log(2.0) + np.linalg.slogdet(W)[1]


def _log_pi(alpha):
    return digamma(alpha) - digamma(alpha.sum())


def _log_b(W, nu):
    """ln B(W, ν) of the Wishart normaliser (eq. B.79)."""
    d = W.shape[-1]
    return -0.5 * nu * np.linalg.slogdet(W)[1] - 0.5 * nu * d * np.log(2.0) - multigammaln(0.5 * nu, d)


def _stats(X, resp):
    nk = resp.sum(0) + 1e-300
    xbar = resp.T @ X / nk[:, None]
    diff = X[None] - xbar[:, None]
    S = np.einsum("nk,kni,knj->kij", resp, diff, diff) / nk[:, None, None]
    return nk, xbar, S


def e_step(X, q):
    """Responsibilities ``(N, K)`` from the other factors (eq. 10.46, 10.64-10.66)."""
    d = X.shape[1]
    diff = X[None] - q["m"][:, None]
    maha = np.einsum("kni,kij,knj->kn", diff, q["W"], diff).T
    log_rho = (_log_pi(q["alpha"]) + 0.5 * _log_lambda(q["W"], q["nu"]) - 0.5 * d / q["beta"]
               - 0.5 * q["nu"] * maha - 0.5 * d * np.log(2 * np.pi))
    return softmax(log_rho, axis=1)


def m_step(X, resp, prior):
    """The continuous factors from the responsibilities (eq. 10.58, 10.60-10.63)."""
    nk, xbar, S = _stats(X, resp)
    beta = prior["beta0"] + nk
    m = (prior["beta0"] * prior["m0"] + nk[:, None] * xbar) / beta[:, None]
    dm = xbar - prior["m0"]
    winv = (np.linalg.inv(prior["W0"]) + nk[:, None, None] * S
            + (prior["beta0"] * nk / (prior["beta0"] + nk))[:, None, None] * dm[:, :, None] * dm[:, None, :])
    return {"alpha": prior["alpha0"] + nk, "beta": beta, "m": m, "W": np.linalg.inv(winv),
            "nu": prior["nu0"] + nk}


def elbo(X, q, prior):
    """The ELBO of eq. 10.70-10.77 in nats."""
    N, d = X.shape
    K = len(q["alpha"])
    resp = q["resp"]
    nk, xbar, S = _stats(X, resp)
    ll = _log_lambda(q["W"], q["nu"])
    lp = _log_pi(q["alpha"])
    W, nu, beta, m = q["W"], q["nu"], q["beta"], q["m"]
    a0, b0, m0, W0, nu0 = prior["alpha0"], prior["beta0"], prior["m0"], prior["W0"], prior["nu0"]
    dx = xbar - m
    e_x = 0.5 * np.sum(nk * (ll - d / beta - nu * np.einsum("kij,kji->k", S, W)
                             - nu * np.einsum("ki,kij,kj->k", dx, W, dx) - d * np.log(2 * np.pi)))
    e_z = np.sum(resp * lp)
    log_c0 = gammaln(K * a0) - K * gammaln(a0)
    e_pi = log_c0 + (a0 - 1) * lp.sum()
    dm = m - m0
    e_mu_lam = (0.5 * np.sum(d * np.log(b0 / (2 * np.pi)) + ll - d * b0 / beta
                             - b0 * nu * np.einsum("ki,kij,kj->k", dm, W, dm))
                + K * _log_b(W0, nu0) + 0.5 * (nu0 - d - 1) * ll.sum()
                - 0.5 * np.sum(nu * np.einsum("ij,kji->k", np.linalg.inv(W0), W)))
    safe = np.where(resp > 0, resp, 1.0)
    q_z = np.sum(resp * np.log(safe))
    q_pi = np.sum((q["alpha"] - 1) * lp) + gammaln(q["alpha"].sum()) - gammaln(q["alpha"]).sum()
    h_lam = -_log_b(W, nu) - 0.5 * (nu - d - 1) * ll + 0.5 * nu * d
    q_mu_lam = np.sum(0.5 * ll + 0.5 * d * np.log(beta / (2 * np.pi)) - 0.5 * d - h_lam)
    return e_x + e_z + e_pi + e_mu_lam - q_z - q_pi - q_mu_lam
