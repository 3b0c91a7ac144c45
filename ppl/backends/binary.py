"""CAVI for binary latents under a quadratic log joint: binary sparse coding and its kin.

When every latent is Bernoulli and ``ln p(v, h)`` is a quadratic polynomial in the values
``h ∈ {0, 1}^n`` (Bernoulli priors are linear in h; a Gaussian likelihood whose mean is
linear in h is quadratic: Goodfellow et al. 2016, eq. 19.19-19.20), write

    ln p(v, h) = c + bᵀh - ½ hᵀΛh.

Under ``q(h) = Π_j Bernoulli(h_j; ĥ_j)`` the expectation needs only ``E[h] = ĥ`` and
``E[h hᵀ] = ĥĥᵀ + diag(ĥ(1 - ĥ))``, so the ELBO (eq. 19.30) is exact at any size,

    L = c + bᵀĥ - ½ ĥᵀΛĥ - ½ Σ_j Λ_jj ĥ_j(1 - ĥ_j) + Σ_j H(ĥ_j),

and the coordinate update (eq. 19.56, here eq. 19.44 for binary sparse coding) is

    logit ĥ_j = b_j - ½ Λ_jj - Σ_{i≠j} Λ_ji ĥ_i,

with no table over the ``2^n`` joint states.  ``Λ`` and ``b`` come from the model by
autograd (:func:`~ppl.ops.quadratic.shared_quadratic`: one ``K × K`` block shared by the
plate copies, found from a few Hessian-vector products and verified at a random point;
:func:`~ppl.ops.quadratic.dense_quadratic` when the copies do not share one).
"""

from __future__ import annotations

import math
import time

import pyro
import torch

from ..errors import OptionError, UnsupportedModelError
from ..ops.quadratic import dense_quadratic, shared_quadratic
from .base import run_context, seeded_generator
from .discrete import batch_layout
from .logjoint import LogJoint
from .meanfield import coordinate_ascent

__all__ = ["binary_problem", "run_binary", "MAX_DENSE"]

#: Most latent dimensions for a dense ``Λ`` when the plate copies do not share one block.
MAX_DENSE = 4096


def binary_problem(graph, sites) -> str | None:
    """Why the binary quadratic path does not apply, or None (cached per graph)."""
    key = ("cavi_binary_problem", tuple(sites))
    if key not in graph.cache:
        graph.cache[key] = _problem(graph, sites)
    return graph.cache[key]


def _problem(graph, sites):
    from .cavi import _third_difference_problem

    if not sites:
        return "no discrete latents"
    other = [s for s in sites if graph.variables[s].family != "Bernoulli" or graph.variables[s].event_shape]
    if other:
        return f"latent '{other[0]}' ({graph.variables[other[0]].family}) is not a scalar Bernoulli"
    problem = _third_difference_problem(graph, sites, "Bernoulli")
    if problem is None:
        layout = _layout(graph, sites)
        if layout is None and sum(graph.sites[s].value.numel() for s in sites) > MAX_DENSE:
            return f"the latents' copies differ in shape and number more than {MAX_DENSE} (dense Λ)"
    return problem


def _layout(graph, sites):
    """The common value shape of every site (rows = its copies), or None."""
    shapes = {tuple(graph.sites[s].value.shape) for s in sites}
    return next(iter(shapes)) if len(shapes) == 1 else None


class _Quadratic:
    """``ln p = c + Σ_r (b_r x_r - ½ x_r Λ_r x_rᵀ)`` over rows ``x_r`` of an ``(R, K)`` block."""

    def __init__(self, graph, sites, device, dtype):
        self.sites = sites
        with run_context(device, dtype, 0):
            self.lj = LogJoint(graph, device, dtype)
        self.shape = _layout(graph, sites)
        gen = torch.Generator(device=device).manual_seed(0)
        self.sizes = [graph.sites[s].value.numel() for s in sites]
        if self.shape is not None:
            rows = math.prod(self.shape)
            x0 = torch.full((rows, len(sites)), 0.5, dtype=dtype, device=device)
            with run_context(device, dtype, None):
                quad = shared_quadratic(lambda x: -self._log_joint(x), x0, len(sites), generator=gen)
            if quad is not None:
                lam = quad.A                                   # Hessian of -ln p
                g = -quad.g0                                   # gradient of ln p at x0
                self.lam = lam
                self.b = g + x0 @ lam
                self.c = float(-quad.f0) - float((g * x0).sum()) - 0.5 * float((x0 * (x0 @ lam)).sum())
                return
        n = sum(self.sizes)
        x0 = torch.full((n,), 0.5, dtype=dtype, device=device)
        self.shape = None
        with run_context(device, dtype, None):
            quad = dense_quadratic(lambda x: self._log_joint(x.reshape(1, -1)), x0, max_dim=MAX_DENSE, generator=gen)
        if quad is None:
            raise UnsupportedModelError(
                f"model '{graph.model.name}': the log joint is not a quadratic form in the binary latents {sites}; "
                "use method='exact' when the tables fit, or 'svi'")
        f0, g0, H = quad
        self.lam = -H
        self.b = (g0 - H @ x0).reshape(1, -1)
        self.c = float(f0) - float(g0 @ x0) + 0.5 * float(x0 @ (H @ x0))

    def _log_joint(self, x):
        with pyro.validation_enabled(False):  # the log pmf's polynomial extension to real h
            return self._log_joint_values(x)

    def _log_joint_values(self, x):
        if self.shape is not None:
            values = {s: x[:, i].reshape(self.shape) for i, s in enumerate(self.sites)}
        else:
            parts = torch.split(x.reshape(-1), self.sizes)
            values = {s: p.reshape(self.lj.graph.sites[s].value.shape) for s, p in zip(self.sites, parts)}
        return self.lj(values)

    def rows(self, values: dict) -> torch.Tensor:
        """Site -> tensor (site shape) as the ``(R, K)`` block."""
        if self.shape is not None:
            return torch.stack([values[s].reshape(-1) for s in self.sites], -1)
        return torch.cat([values[s].reshape(-1) for s in self.sites]).reshape(1, -1)

    def split(self, x: torch.Tensor) -> dict:
        if self.shape is not None:
            return {s: x[:, i].reshape(self.shape) for i, s in enumerate(self.sites)}
        parts = torch.split(x.reshape(-1), self.sizes)
        return {s: p.reshape(self.lj.graph.sites[s].value.shape) for s, p in zip(self.sites, parts)}


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1.0 - p, 1.0 - p)).sum()


def run_binary(method, graph, *, max_iter, tol, damping, schedule, init, seed, dtype, device, progress, start):
    """CAVI sweeps of eq. 19.44 (see the module docstring); options as
    :class:`~ppl.backends.cavi.CAVIBackend`.

    Returns
    -------
    MeanFieldPosterior
        ``probs(site)``: ``batch_shape + (2,)``; ``elbo`` in nats (exact for the q found);
        ``diagnostics["path"] == "binary quadratic"``.

    Raises
    ------
    OptionError
        An unknown ``init``, or an init table of the wrong shape or outside [0, 1].
    UnsupportedModelError
        The log joint is not a quadratic form in the latents (found when building ``Λ``).
    """
    from ..posterior import MeanFieldPosterior

    sites = graph.discrete_latent()
    qd = _Quadratic(graph, sites, device, dtype)
    lam, b, c = qd.lam, qd.b, qd.c
    diag = torch.diagonal(lam)
    shapes = {s: tuple(graph.sites[s].value.shape) for s in sites}
    if isinstance(init, dict):
        unknown = [k for k in init if k not in shapes]
        if unknown:
            raise OptionError(f"init names {unknown}, which are not discrete latent sites; those are {sites}")
        values = {s: torch.full(shapes[s], 0.5, dtype=dtype, device=device) for s in sites}
        for s, p in init.items():
            p = torch.as_tensor(p, dtype=dtype, device=device)
            if tuple(p.shape) == shapes[s] + (2,):
                p = p[..., 1]
            if tuple(p.shape) != shapes[s] or not bool(((p >= 0) & (p <= 1)).all()):
                raise OptionError(f"init['{s}'] must be probabilities of shape {shapes[s]} or {shapes[s] + (2,)}")
            values[s] = p
        h = qd.rows(values)
    elif init == "uniform":
        h = torch.full_like(b, 0.5)
    elif init == "random":
        gen = seeded_generator(seed, device)
        h = torch.rand(b.shape, generator=gen, dtype=dtype, device=device)
    else:
        raise OptionError(f"init must be 'random', 'uniform' or a dict site -> probabilities, got {init!r}")
    h = h.clamp(1e-12, 1 - 1e-12)

    def elbo(h) -> float:
        quad = (h * (h @ lam)).sum() + (diag * h * (1.0 - h)).sum()
        return float(c + (b * h).sum() - 0.5 * quad + _entropy(h))

    def logits(h):
        return b - 0.5 * diag - (h @ lam - h * diag)

    def damped(old, new_logit):
        if damping == 1.0:
            return torch.sigmoid(new_logit)
        return torch.sigmoid((1.0 - damping) * torch.logit(old) + damping * new_logit)

    def sweep(h):
        h = h.clone()
        if schedule == "sequential":
            for j in range(h.shape[1]):
                lj = b[:, j] - 0.5 * diag[j] - (h @ lam[:, j] - h[:, j] * diag[j])
                h[:, j] = damped(h[:, j], lj)
        else:
            h = damped(h, logits(h))
        return h.clamp(1e-15, 1 - 1e-15)

    def moved(new, old):
        return float((new - old).abs().max())

    with run_context(device, dtype, None):
        h, history, converged, decreases = coordinate_ascent(
            h, sweep, elbo, moved, graph=graph, schedule=schedule, damping=damping, max_iter=max_iter, tol=tol,
            progress=progress)
    means = qd.split(h)
    probs = {s: torch.stack([1.0 - means[s], means[s]], -1).reshape(batch_layout(graph, graph.variables[s].plates)
                                                                      + (2,)) for s in sites}
    support = torch.tensor([0.0, 1.0], dtype=dtype, device=device)
    supports = {s: support for s in sites}
    diagnostics = {"schedule": schedule, "damping": damping, "sweeps": len(history) - 1, "decreases": decreases,
                   "device": str(device), "path": "binary quadratic",
                   "precision": "shared by the plate copies" if qd.shape is not None else "dense"}
    return MeanFieldPosterior(method, graph=graph, marginals=probs, supports=supports,
                              families={s: "Bernoulli" for s in sites}, seed=seed, elbo=history[-1], history=history,
                              converged=converged,
                              elapsed=time.perf_counter() - start, diagnostics=diagnostics)
