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

from ...errors import OptionError, UnsupportedModelError
from ...ops.quadratic import dense_quadratic, shared_quadratic
from ...posterior import MeanFieldPosterior
from ..common.discrete import batch_layout
from ..common.logjoint import LogJoint
from ..common.runtime import run_context, seeded_generator
from ..common.quadratic import third_difference_problem
from .loop import coordinate_ascent

__all__ = ["binary_problem", "run_binary", "MAX_DENSE"]

#: Most latent dimensions for a dense ``Λ`` when the plate copies do not share one block.
MAX_DENSE = 4096


def binary_problem(graph, sites) -> str | None:
    """Why the binary quadratic path does not apply, or None (cached per graph)."""
    return graph.memo("cavi", ("binary_problem", tuple(sites)), lambda: _problem(graph, sites))


def _problem(graph, sites):
    if not sites:
        return "no discrete latents"
    other = [s for s in sites if graph.variables[s].family != "Bernoulli" or graph.variables[s].event_shape]
    if other:
        return f"latent '{other[0]}' ({graph.variables[other[0]].family}) is not a scalar Bernoulli"
    problem = third_difference_problem(graph, sites, "Bernoulli")
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


def _initial_means(qd, sites, o, init, seed):
    """Starting ``E[h]`` rows of ``qd``'s layout from ``init`` (a name or a dict site ->
    probabilities of shape ``site shape`` or ``site shape + (2,)``).

    Raises
    ------
    OptionError
        A dict naming a non-latent site, or values of the wrong shape or outside [0, 1]."""
    b, dtype, device = qd.b, o.dtype, o.device
    shapes = {s: tuple(qd.lj.graph.sites[s].value.shape) for s in sites}
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
    else:
        h = torch.rand(b.shape, generator=seeded_generator(seed, device), dtype=dtype, device=device)
    return h.clamp(1e-12, 1 - 1e-12)


def run_binary(method, graph, o, start):
    """CAVI sweeps of eq. 19.44 (see the module docstring); ``o`` holds the validated
    options of :class:`~ppl.backends.cavi.backend.CAVIBackend`.

    Returns
    -------
    MeanFieldPosterior
        ``probs(site)``: ``batch_shape + (2,)``; ``elbo`` in nats (exact for the q found);
        ``diagnostics["path"] == "binary quadratic"``.

    Raises
    ------
    OptionError
        An init table of the wrong shape or outside [0, 1].
    UnsupportedModelError
        The log joint is not a quadratic form in the latents (found when building ``Λ``).
    """
    sites = graph.discrete_latent()
    qd = _Quadratic(graph, sites, o.device, o.dtype)
    lam, b, c = qd.lam, qd.b, qd.c
    diag = torch.diagonal(lam)
    damping = o.damping

    def initial(restart):
        if restart == 0:
            return _initial_means(qd, sites, o, o.init, o.seed)
        return _initial_means(qd, sites, o, "random", None if o.seed is None else o.seed + restart)

    def elbo(h) -> float:
        quad = (h * (h @ lam)).sum() + (diag * h * (1.0 - h)).sum()
        return float(c + (b * h).sum() - 0.5 * quad + _entropy(h))

    def damped(old, new_logit):
        if damping == 1.0:
            return torch.sigmoid(new_logit)
        return torch.sigmoid((1.0 - damping) * torch.logit(old) + damping * new_logit)

    def sweep(h):
        h = h.clone()
        if o.schedule == "sequential":
            for j in range(h.shape[1]):
                lj = b[:, j] - 0.5 * diag[j] - (h @ lam[:, j] - h[:, j] * diag[j])
                h[:, j] = damped(h[:, j], lj)
        else:
            h = damped(h, b - 0.5 * diag - (h @ lam - h * diag))
        return h.clamp(1e-15, 1 - 1e-15)

    with run_context(o.device, o.dtype, None):
        result = coordinate_ascent(initial, sweep, elbo, lambda new, old: float((new - old).abs().max()),
                                   graph=graph, schedule=o.schedule, damping=damping, max_iter=o.max_iter, tol=o.tol,
                                   progress=o.progress, n_init=o.n_init)
    means = qd.split(result.state)
    probs = {s: torch.stack([1.0 - means[s], means[s]], -1).reshape(batch_layout(graph, graph.variables[s].plates)
                                                                      + (2,)) for s in sites}
    support = torch.tensor([0.0, 1.0], dtype=o.dtype, device=o.device)
    diagnostics = {"schedule": o.schedule, "damping": damping, "sweeps": result.n_iter, **result.diagnostics(),
                   "device": str(o.device), "path": "binary quadratic",
                   "precision": "shared by the plate copies" if qd.shape is not None else "dense"}
    return MeanFieldPosterior(method, graph=graph, marginals=probs, supports={s: support for s in sites},
                              families={s: "Bernoulli" for s in sites}, seed=o.seed, elbo=result.history[-1],
                              history=result.history, converged=result.converged,
                              elapsed=time.perf_counter() - start, diagnostics=diagnostics)
