"""Optimisers for point estimates: maximise a log density over blocks of tensors.

A :class:`Block` is one site's free variable: for a latent with a smooth prior, its value
mapped to unconstrained space by ``biject_to(support)`` (no Jacobian term: the MAP of a
density is unchanged by a reparametrisation of the search space, unlike its value);
for a Laplace prior, the value itself, with the prior's ``|h - μ| / b`` handled by a prox;
for a param with a projection constraint (``unit_norm_columns``), the constrained value,
with the projection as its prox.

:func:`maximise` picks the method: with any prox, monotone FISTA with backtracking
(:func:`ppl.ops.proximal.fista`) — on a single block whose smooth part is a verified
shared quadratic (:func:`ppl.ops.quadratic.shared_quadratic`) the iterations use the
quadratic, two small matrix products each, with the exact step ``1/λ_max(A)``; otherwise L-BFGS with a strong-Wolfe line search
(Nocedal & Wright 2006, Alg. 7.5 and §3.5; torch's implementation) or Adam (Kingma & Ba
2015).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.distributions import biject_to, transform_to

from ...constraints import has_projection, project
from ...ops.proximal import DivergedError, ProxResult, fista
from ...ops.quadratic import shared_quadratic

__all__ = ["Block", "latent_block", "param_block", "maximise", "maximise_params", "Maximum", "DivergedError",
           "OPTIMIZERS"]

#: ``optimizer=`` names for smooth problems.
OPTIMIZERS = ("lbfgs", "adam")


@dataclass
class Block:
    """One site's free variable (see module docstring).

    Attributes
    ----------
    name : str
    free : torch.Tensor
        Current free value (detached).
    to_value : callable
        Free value -> the value the model sees (differentiable).
    prox : callable(Tensor, float) -> Tensor or None
        Prox of ``step ·`` the block's non-smooth term.
    penalty : callable(Tensor) -> Tensor or None
        The non-smooth term (a negative log density, nats).
    transformed : bool
        Whether ``to_value`` is a non-identity transform (values near the edge of the
        support show up as large free values).
    row : int
        Length of the block's rows for :func:`~ppl.ops.quadratic.shared_quadratic`
        (a latent's event size; a param's last dim).
    """

    name: str
    free: torch.Tensor
    to_value: Callable
    prox: Callable | None = None
    penalty: Callable | None = None
    transformed: bool = False
    row: int = 1
    l1: object = None

    def value(self) -> torch.Tensor:
        with torch.no_grad():
            return self.to_value(self.free).detach()


def _identity(x):
    return x


def latent_block(name: str, value: torch.Tensor, support, l1=None, event_numel: int = 1) -> Block:
    """The block of a latent site with current ``value``; ``l1`` an
    :class:`~ppl.backends.common.logjoint.L1Term` for a Laplace prior."""
    if l1 is not None:
        return Block(name, value.detach().clone(), _identity, prox=l1.prox, penalty=l1.penalty,
                     row=event_numel, l1=l1)
    t = biject_to(support)
    return Block(name, t.inv(value.detach()).clone(), t, transformed=not _is_identity(t), row=event_numel)


def param_block(name: str, value: torch.Tensor, constraint) -> Block:
    """The block of a ``ppl.param`` with constrained ``value`` and its ``constraint``."""
    row = int(value.shape[-1]) if value.dim() else 1
    if has_projection(constraint):
        return Block(name, project(constraint, value.detach()).clone(), _identity,
                     prox=lambda x, s: project(constraint, x), row=row)
    t = transform_to(constraint)
    return Block(name, t.inv(value.detach()).clone(), t, transformed=not _is_identity(t), row=row)


def _is_identity(t) -> bool:
    return type(t).__name__ in ("_IdentityTransform", "IdentityTransform") or (
        type(t).__name__ == "ComposeTransform" and not t.parts)


@dataclass
class Maximum:
    """Outcome of :func:`maximise`: the blocks hold the optimum; ``value`` is the
    maximised objective (log density, nats, non-smooth terms included)."""

    value: float
    n_iter: int
    converged: bool
    residual: float
    method: str


def maximise(objective: Callable, blocks: list, *, optimizer: str = "lbfgs", max_iter: int = 1000,
             tol: float = 1e-6, lr: float = 0.05, memo: dict | None = None) -> Maximum:
    """Maximise ``objective(values) - Σ penalties`` over ``blocks`` (updated in place).

    Parameters
    ----------
    objective : callable(dict[str, Tensor]) -> Tensor
        The smooth part of the log density, given each block's model-side value.
    blocks : list[Block]
    optimizer : {"lbfgs", "adam"}
        Used when no block has a prox (otherwise FISTA).
    max_iter : int
    tol : float
        Converged when the max-abs (prox-)gradient of the free variables is at most ``tol``.
    lr : float
        Adam's learning rate.
    memo : dict, optional
        Kept by the caller across calls on the same model (MAP's rounds): a block found to
        be a shared quadratic once is then re-fitted without the random-point
        verification, and checked at the answer instead (falling back to the model if the
        check fails).

    Raises
    ------
    DivergedError
        The objective became non-finite (``.blocks`` holds the last finite free values).
    """
    names = [b.name for b in blocks]
    maps = [b.to_value for b in blocks]

    def negative(frees):
        try:
            return -objective({n: m(x) for n, m, x in zip(names, maps, frees)})
        except ValueError as e:  # distribution validation refusing a non-finite parameter
            if "to satisfy the constraint" not in str(e):
                raise
            return torch.tensor(float("nan"), dtype=frees[0].dtype if frees else None)

    if any(b.prox is not None for b in blocks):
        proxes = [b.prox or (lambda x, s: x) for b in blocks]
        pens = [b.penalty for b in blocks]

        def prox(frees, s):
            return [p(x, s) for p, x in zip(proxes, frees)]

        def penalty(frees):
            return sum((float(p(x)) for p, x in zip(pens, frees) if p is not None), 0.0)

        frees = [b.free for b in blocks]
        quad = None
        key = ("shared_quadratic", blocks[0].name)
        trusted = memo is not None and memo.get(key, False)
        if len(blocks) == 1 and blocks[0].to_value is _identity:
            quad = shared_quadratic(lambda x: negative([x]), blocks[0].free, blocks[0].row, verify=not trusted)
            if memo is not None and quad is not None:
                memo[key] = True
        if quad is None:
            res = fista(negative, frees, prox, penalty, max_iter=max_iter, tol=tol, grow=1.1)
            n_iter, method = res.n_iter, "fista"
        elif blocks[0].l1 is not None:  # rows are independent problems: solve them in chunks
            res = _fista_by_rows(quad, blocks[0], max_iter, tol)
            n_iter, method = res.n_iter, "fista (shared quadratic)"
        else:
            res = fista(_BlockQuadratic(quad), frees, prox, penalty, max_iter=max_iter, tol=tol,
                        step=1.0 / quad.lipschitz, grow=1.1)
            n_iter, method = res.n_iter, "fista (shared quadratic)"
        if quad is not None and trusted and not quad.agrees(lambda x: negative([x]), res.x[0]):
            memo[key] = False  # the structure changed: solve on the model itself
            res = fista(negative, res.x, prox, penalty, max_iter=max_iter, tol=tol, grow=1.1)
            quad, method = None, "fista"
        for b, x in zip(blocks, res.x):
            b.free = x
        value = -res.value
        if quad is not None:  # report the model's own value, not the quadratic's
            with torch.no_grad():
                value = float(objective({blocks[0].name: res.x[0]})) - penalty(res.x)
        return Maximum(value, n_iter, res.converged, res.residual, method)
    if optimizer == "lbfgs":
        return _lbfgs(negative, blocks, max_iter, tol, memo)
    return _adam(negative, blocks, max_iter, tol, lr)


#: Rows per chunk of a row-separable problem: about this many entries, so the working
#: arrays stay in cache and each chunk stops as soon as its own rows have converged.
CHUNK_ENTRIES = 65536


def _fista_by_rows(quad, block, max_iter, tol) -> ProxResult:
    """FISTA on a shared quadratic plus an elementwise L1 term, chunk of rows by chunk of
    rows.  The rows are independent problems (block-diagonal Hessian, elementwise prox), so
    this is the same minimiser; the residual and iteration count reported are the worst
    chunk's, the history that of the last chunk."""
    k = block.row
    x = block.free.reshape(-1, k)
    out = torch.empty_like(x)
    step = 1.0 / quad.lipschitz
    chunk = max(1, CHUNK_ENTRIES // k)
    n_iter, residual, converged, value, n_eval, res = 0, 0.0, True, 0.0, 0, None
    for lo in range(0, x.shape[0], chunk):
        sl = slice(lo, lo + chunk)
        l1 = block.l1.rows(k, sl)
        res = fista(_BlockQuadratic(quad.rows(sl)), [x[sl]], lambda xs, s, t=l1: [t.prox(xs[0], s)],
                    lambda xs, t=l1: float(t.penalty(xs[0])), max_iter=max_iter, tol=tol, step=step, grow=1.1)
        out[sl] = res.x[0]
        n_iter, residual = max(n_iter, res.n_iter), max(residual, res.residual)
        converged, value, n_eval = converged and res.converged, value + res.value, n_eval + res.n_eval
    return ProxResult(x=[out.reshape(block.free.shape)], value=value, n_iter=n_iter, converged=converged,
                      residual=residual, step=step, history=res.history if res else [], n_eval=n_eval)


class _BlockQuadratic:
    """A :class:`~ppl.ops.quadratic.SharedQuadratic` of one block as FISTA's smooth part."""

    def __init__(self, quad):
        self.quad = quad

    def __call__(self, xs):
        return self.quad(xs[0])

    def value_and_grad(self, xs):
        f, g = self.quad.value_and_grad(xs[0])
        return f, [g]

    def hessian_product(self, ds):
        return [self.quad.hessian_product(ds[0])]


#: After L-BFGS stops, a Newton step along the gradient (exact curvature ``gᵀHg``) may
#: predict at most this decrease of the objective (nats) for the result to stand; a larger
#: one restarts L-BFGS from that step (at most :data:`RESTARTS` times).
PREDICTED_DECREASE = 1e-9
RESTARTS = 4


def _lbfgs(negative, blocks, max_iter, tol, memo: dict | None = None) -> Maximum:
    """L-BFGS to a max-abs gradient of ``tol``, then the scale check of :func:`_cauchy`:
    an absolute gradient tolerance is met at once where the data's units make the curvature
    tiny (data ~1e8: gradient 3e-9 at a start 0.17 posterior sds from the mode, 0.015 nats
    below it), so the decrease a curvature-scaled step predicts decides.  With a ``memo``
    (MAP's rounds), blocks whose check once passed without a restart are not checked again:
    later rounds start at values already at their own scale (the check costs a Hessian)."""
    leaves = [b.free.clone().requires_grad_(True) for b in blocks]
    last = [x.detach().clone() for x in leaves]
    key = ("scale_checked", tuple(b.name for b in blocks))
    checked = memo is not None and memo.get(key, False)
    n_iter = 0
    for restart in range(RESTARTS + 1):
        n_iter += _lbfgs_run(negative, leaves, last, max_iter, tol)
        if not all(bool(torch.isfinite(x).all()) for x in leaves):
            raise DivergedError("the iterate left the finite range", last)
        step = _cauchy(negative, leaves) if restart < RESTARTS and not checked else None
        if step is None:
            if memo is not None and restart == 0:
                memo[key] = True
            break
        with torch.no_grad():
            for x, v in zip(leaves, step):
                x.copy_(v)
    for b, x in zip(blocks, leaves):
        b.free = x.detach().clone()
    grads = _grads(negative, blocks)
    residual = max((float(g.abs().max()) for g in grads if g.numel()), default=0.0)
    value = -float(negative([b.free for b in blocks]))
    # stopped by the line search's tolerance on changes: converged only if the gradient is small too
    return Maximum(value, n_iter, residual <= tol or (n_iter < max_iter and residual <= 100 * tol), residual, "lbfgs")


def _lbfgs_run(negative, leaves, last, max_iter, tol) -> int:
    """One torch L-BFGS run on ``leaves`` (in place); its iterations."""
    opt = torch.optim.LBFGS(leaves, lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.5) + 10,
                            tolerance_grad=tol, tolerance_change=1e-14, history_size=50,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        with torch.enable_grad():
            loss = negative(leaves)
        if not bool(torch.isfinite(loss)):
            if float(loss.detach()) == float("inf"):  # left the domain on a trial step: the line search backs off
                return loss.detach()
            raise DivergedError("the objective is unbounded or undefined", last)
        loss.backward()
        for dst, src in zip(last, leaves):
            dst.copy_(src.detach())
        return loss

    opt.step(closure)
    return int(opt.state[opt.param_groups[0]["params"][0]].get("n_iter", 0))


#: Up to this many free coordinates the scale check takes a full Newton step (the exact
#: Hessian: one backward pass per coordinate); beyond, a Newton step along the gradient.
NEWTON_MAX_DIM = 64


def _cauchy(negative, leaves) -> list | None:
    """A Newton step from ``leaves`` when it predicts a decrease above
    :data:`PREDICTED_DECREASE` nats and the objective there is lower; else None (converged
    at every coordinate's own scale, no positive curvature, or an objective autograd cannot
    differentiate twice).  Up to :data:`NEWTON_MAX_DIM` coordinates the step is
    ``H⁻¹g`` (the decrease ``gᵀH⁻¹g / 2``, Boyd & Vandenberghe 2004, §9.5.1: the Newton
    decrement, invariant to each coordinate's units; where ``H`` is not positive definite,
    its positive diagonal), beyond it ``(gᵀg / gᵀHg) g`` (one Hessian-vector product;
    Nocedal & Wright 2006, §4.1, the Cauchy point)."""
    xs = [x.detach().clone() for x in leaves]
    sizes = [x.numel() for x in xs]
    flat0 = torch.cat([x.reshape(-1) for x in xs])

    def f(flat):
        parts = torch.split(flat, sizes)
        return negative([p.reshape(x.shape) for p, x in zip(parts, xs)])

    z = flat0.clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            loss = f(z)
            (g,) = torch.autograd.grad(loss, z, create_graph=True)
            if not g.requires_grad:
                return None
            direction = _newton_direction(g, z) if z.numel() <= NEWTON_MAX_DIM else _gradient_direction(g, z)
    except RuntimeError:
        return None
    if direction is None:
        return None
    decrease = 0.5 * float(g.detach() @ direction)
    if not (decrease > PREDICTED_DECREASE and math.isfinite(decrease)):
        return None
    new = (flat0 - direction).detach()
    with torch.no_grad():
        if not float(f(new)) < float(loss):
            return None
    return [p.reshape(x.shape) for p, x in zip(torch.split(new, sizes), xs)]


def _newton_direction(g, z):
    """``H⁻¹g`` from the exact Hessian of the gradient ``g`` (built with a graph) at ``z``;
    the positive diagonal's where ``H`` is not positive definite; None without curvature."""
    rows = [torch.autograd.grad(g[i], z, retain_graph=True, allow_unused=True)[0] for i in range(z.numel())]
    hess = torch.stack([torch.zeros_like(z) if r is None else r for r in rows]).detach()
    hess = 0.5 * (hess + hess.T)
    gd = g.detach()
    chol, info = torch.linalg.cholesky_ex(hess)
    if int(info) == 0 and bool(torch.isfinite(chol).all()):
        return torch.cholesky_solve(gd[:, None], chol)[:, 0]
    diag = torch.diagonal(hess)
    if not bool((diag > 0).any()):
        return None
    return torch.where(diag > 0, gd / diag.clamp_min(torch.finfo(diag.dtype).tiny), torch.zeros_like(gd))


def _gradient_direction(g, z):
    """``(gᵀg / gᵀHg) g`` (one Hessian-vector product); None without positive curvature."""
    gg = (g * g).sum()
    (hg2,) = torch.autograd.grad(gg, z, allow_unused=True)   # 2 H g
    if hg2 is None:
        return None
    gd = g.detach()
    curv = 0.5 * float(gd @ hg2)
    if not (curv > 0 and math.isfinite(curv)):
        return None
    return (float(gg) / curv) * gd


def _adam(negative, blocks, max_iter, tol, lr) -> Maximum:
    leaves = [b.free.clone().requires_grad_(True) for b in blocks]
    opt = torch.optim.Adam(leaves, lr=lr)
    residual, n_iter = float("inf"), 0
    for n_iter in range(1, max_iter + 1):
        opt.zero_grad()
        with torch.enable_grad():
            loss = negative(leaves)
        if not bool(torch.isfinite(loss)):
            raise DivergedError("the objective is unbounded or undefined", [x.detach() for x in leaves])
        loss.backward()
        residual = max((float(x.grad.abs().max()) for x in leaves if x.numel()), default=0.0)
        if residual <= tol:
            break
        opt.step()
    for b, x in zip(blocks, leaves):
        b.free = x.detach().clone()
    value = -float(negative([b.free for b in blocks]))
    return Maximum(value, n_iter, residual <= tol, residual, "adam")


def _grads(negative, blocks) -> list:
    leaves = [b.free.clone().requires_grad_(True) for b in blocks]
    with torch.enable_grad():
        loss = negative(leaves)
        return list(torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True))


def maximise_params(objective, blocks, *, method: str, **kwargs) -> "Maximum":
    """:func:`maximise` over ``ppl.param`` blocks for a backend's M-step (variational EM:
    ``method="cavi"`` with ``learn_params=True``): a :class:`DivergedError` (the objective
    unbounded or undefined along the params, e.g. a scale param going to 0 at one data
    point) becomes a :class:`~ppl.errors.NumericalError` naming the params.

    Parameters
    ----------
    objective, blocks, **kwargs
        As :func:`maximise`.
    method : str
        The backend, for the message.

    Raises
    ------
    NumericalError
        Naming the params and what to change."""
    from ...errors import NumericalError

    try:
        return maximise(objective, blocks, **kwargs)
    except DivergedError:
        names = [b.name for b in blocks]
        raise NumericalError(
            f"method '{method}' with learn_params=True: the objective of the M-step over the ppl.param(s) {names} "
            "is unbounded or undefined: their maximum-likelihood value does not exist here (e.g. a scale going to 0 "
            "where one data point sits on a mean); give them priors (make them sample sites), keep them fixed, or "
            "add data") from None
