"""CAVI for Normal latents under a quadratic log joint (Bayesian linear regression, the
slides' factorised Gaussian; Goodfellow et al. 2016, eq. 19.57-19.67).  The precision
``Λ`` and linear term ``b`` of ``ln p(v, h) = c + bᵀh - ½ hᵀΛh`` are found from the model
by autograd and verified, and each factor's update is
``q_B = N(Λ_BB⁻¹ (b_B - Λ_B,¬B m_¬B), Λ_BB⁻¹)`` (eq. 19.56 for a Gaussian: the means
converge to the exact posterior means; q's variances ``(Λ_BB⁻¹)_ii``, with one block ``B``
per event of each plate copy, are too small where blocks are correlated).  The exact
posterior ``N(Λ⁻¹b, Λ⁻¹)`` and ``log p(v) = c + ½ bᵀΛ⁻¹b + (D/2) log 2π - ½ log det Λ``
give the verdict its sd ratios and KL gap (:mod:`~ppl.backends.cavi.assess`)."""

from __future__ import annotations

import math
import time

import torch

from ...errors import UnsupportedModelError
from ...ops.quadratic import dense_quadratic
from ...posterior import FactorPosterior
from ..common.logjoint import LogJoint
from ..common.runtime import run_context
from .loop import coordinate_ascent

__all__ = ["MAX_GAUSSIAN_DIM", "run_gaussian"]

#: Most latent dimensions the Gaussian path takes (it builds the dense precision ``Λ``).
MAX_GAUSSIAN_DIM = 4096


class _Quadratic:
    """``ln p(v, h) = c + bᵀh - ½ hᵀΛh`` of the Normal latents, found by autograd at a
    starting point ``x0`` and verified (:func:`~ppl.ops.quadratic.dense_quadratic`), with
    the mean-field blocks (one per event of each plate copy) and their precisions'
    Cholesky factors.

    Raises
    ------
    UnsupportedModelError
        The log joint is not a quadratic form, or not concave in some block."""

    def __init__(self, graph, o):
        self.sites = sites = graph.continuous_latent()
        with run_context(o.device, o.dtype, o.seed):
            lj = LogJoint(graph, o.device, o.dtype)
            if isinstance(o.init, dict):
                start_values = lj.initial_values(sites, o.init)
            else:
                start_values = lj.initial_values(sites, "sample" if o.init == "random" else "mean")
            self.shapes = {s: tuple(start_values[s].shape) for s in sites}
            self.sizes = [math.prod(self.shapes[s]) for s in sites]
            x0 = torch.cat([start_values[s].reshape(-1) for s in sites])
            quad = dense_quadratic(lambda x: lj(self.unflatten(x)), x0, max_dim=MAX_GAUSSIAN_DIM)
        if quad is None:
            raise UnsupportedModelError(
                f"model '{graph.model.name}': the log joint is not a quadratic form in the Normal latents {sites} (a "
                "non-Gaussian likelihood, a latent scale, or a mean that is not linear in the latents), so their "
                "mean-field factors are not Gaussian in closed form; use method='svi' (guide='normal') or 'map'")
        self.x0 = x0
        self.f0, self.g0, self.H = quad
        self.lam = -self.H
        self.b = self.g0 + self.lam @ x0                   # ln p = c + bᵀx - ½ xᵀΛx
        self.blocks, offset = [], 0
        for s in sites:
            e = math.prod(graph.variables[s].event_shape) if graph.variables[s].event_shape else 1
            for i in range(math.prod(self.shapes[s]) // e):
                self.blocks.append(torch.arange(offset + i * e, offset + (i + 1) * e, device=o.device))
            offset += math.prod(self.shapes[s])
        self.precisions = [self.lam[idx][:, idx] for idx in self.blocks]
        self.chols = []
        for idx, p in zip(self.blocks, self.precisions):
            chol, info = torch.linalg.cholesky_ex(p)
            if int(info) != 0:
                raise UnsupportedModelError(f"model '{graph.model.name}': the log joint is not concave in latent "
                                            f"dimension(s) {idx.tolist()} (an improper posterior): no Gaussian factor")
            self.chols.append(chol)
        log_det = sum(2.0 * float(torch.log(torch.diagonal(c)).sum()) for c in self.chols)
        self.entropy = 0.5 * len(x0) * math.log(2 * math.pi * math.e) - 0.5 * log_det
        # c of ln p = c + bᵀx - ½ xᵀΛx, from the value f0 at x0
        self.c = float(self.f0 - self.b @ x0 + 0.5 * x0 @ (self.lam @ x0))

    def unflatten(self, x) -> dict:
        """Site -> its slice of the flat vector ``x``, in the site's shape."""
        parts = torch.split(x, self.sizes)
        return {s: p.reshape(self.shapes[s]) for s, p in zip(self.sites, parts)}

    def elbo(self, m) -> float:
        """``E_q[ln p] + H[q]``; ``E_q[ln p] = ln p(m) - ½ Σ_B tr(Λ_BB Σ_B) = ln p(m) - n/2``
        since ``Σ_B = Λ_BB⁻¹``."""
        d = m - self.x0
        return float(self.f0 + self.g0 @ d + 0.5 * d @ (self.H @ d)) - 0.5 * len(self.x0) + self.entropy

    def block_optimum(self, m, k):
        """The optimal mean of block ``k`` given the others' means ``m`` (eq. 19.56)."""
        idx = self.blocks[k]
        r = self.b[idx] - self.lam[idx] @ m + self.precisions[k] @ m[idx]    # b_B - Λ_B,¬B m_¬B
        return torch.cholesky_solve(r.unsqueeze(-1), self.chols[k]).squeeze(-1)

    def block_covariances(self) -> list:
        """``Λ_BB⁻¹`` of every block, in the order of ``blocks`` (q's covariances)."""
        return [torch.cholesky_inverse(chol) for chol in self.chols]

    def exact(self):
        """``(q's sd / the exact sd per coordinate, log p(v))``: q's variance of coordinate
        ``i`` of block ``B`` is ``(Λ_BB⁻¹)_ii``, the exact one ``(Λ⁻¹)_ii``; ``log p(v) =
        c + ½ bᵀΛ⁻¹b + (D/2) log 2π - ½ log det Λ``.  UnsupportedModelError if ``Λ`` is not
        positive definite (an improper posterior)."""
        chol, info = torch.linalg.cholesky_ex(self.lam)
        if int(info) != 0:
            raise UnsupportedModelError("the log joint is not jointly concave in the Normal latents: improper posterior")
        q_var = torch.empty_like(self.x0)
        for idx, cov in zip(self.blocks, self.block_covariances()):
            q_var[idx] = torch.diagonal(cov)
        ratio = (q_var / torch.diagonal(torch.cholesky_inverse(chol))).sqrt()
        mean = torch.cholesky_solve(self.b.unsqueeze(-1), chol).squeeze(-1)
        half_log_det = float(torch.log(torch.diagonal(chol)).sum())
        return ratio, self.c + 0.5 * float(self.b @ mean) + 0.5 * len(self.x0) * math.log(2 * math.pi) - half_log_det

    def factors(self, graph, m) -> dict:
        """Site -> its Gaussian factor (Normal, or MultivariateNormal per event) at means ``m``."""
        means, factors, k, covs = self.unflatten(m), {}, 0, self.block_covariances()
        for s in self.sites:
            var = graph.variables[s]
            e = math.prod(var.event_shape) if var.event_shape else 1
            n_blocks = math.prod(self.shapes[s]) // e
            cov = torch.stack(covs[k:k + n_blocks])
            batch = tuple(self.shapes[s][:len(self.shapes[s]) - len(var.event_shape)])
            cov = cov.reshape(batch + (e, e))
            factors[s] = (torch.distributions.Normal(means[s], cov[..., 0, 0].sqrt()) if not var.event_shape
                          else torch.distributions.MultivariateNormal(means[s], covariance_matrix=cov))
            k += n_blocks
        return factors


def run_gaussian(method, graph, o, start):
    """CAVI for Normal latents under a quadratic log joint (see the module docstring);
    ``o`` holds the validated options of :class:`~ppl.backends.cavi.backend.CAVIBackend`.

    Returns
    -------
    FactorPosterior
        Normal / MultivariateNormal factors with the sites' shapes, ``elbo`` in nats.

    Raises
    ------
    UnsupportedModelError
        The log joint is not a quadratic form or not concave in some block.
    """
    quad = _Quadratic(graph, o)
    blocks, damping = quad.blocks, o.damping

    def sweep(m):
        m = m.clone()
        if o.schedule == "sequential":
            for k, idx in enumerate(blocks):
                m[idx] = (1.0 - damping) * m[idx] + damping * quad.block_optimum(m, k)
        else:
            new = torch.cat([quad.block_optimum(m, k) for k in range(len(blocks))])
            order = torch.cat(blocks)
            m[order] = (1.0 - damping) * m[order] + damping * new
        return m

    def moved(new, old):
        return float((new - old).abs().max()) / (1.0 + float(new.abs().max())) if len(new) else 0.0

    result = coordinate_ascent(lambda restart: quad.x0.clone(), sweep, quad.elbo, moved, graph=graph,
                               schedule=o.schedule, damping=damping, max_iter=o.max_iter, tol=o.tol,
                               progress=o.progress)  # one optimum: restarts would find it again
    sd_ratio, log_evidence = quad.exact()   # q's sds against the exact posterior's; log p(v) for the KL gap
    diagnostics = {"schedule": o.schedule, "damping": damping, "sweeps": result.n_iter, **result.diagnostics(),
                   "dimensions": len(quad.x0), "path": "gaussian", "device": str(o.device),
                   "sd_ratio_min": float(sd_ratio.min()) if len(sd_ratio) else 1.0,
                   "exact_log_evidence": log_evidence}
    return FactorPosterior(method, graph=graph, factors=quad.factors(graph, result.state), elbo=result.history[-1],
                           history=result.history, converged=result.converged,
                           elapsed=time.perf_counter() - start, diagnostics=diagnostics)
