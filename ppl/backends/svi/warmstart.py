"""SVI's warm start: the guide begins at the Laplace fit of the posterior, and its
location steps are measured in the fit's posterior standard deviations.

Stochastic gradient steps move a Gaussian guide's location by about ``lr`` per step in the
units of the unconstrained latents (Adam normalises the gradient; Kingma & Ba 2015, §2.1),
so a fixed ``lr`` is too large where a posterior sd is 1e-3 (a coefficient of a predictor
in the thousands) and too small where it is 1e3.  Starting at the mode ``z*`` with the
Laplace covariance ``H⁻¹`` (``H = -∇² log p(z*)``; Bishop 2006, §4.4) puts the guide in
the right place and scale whatever units the data are in, and reading each optimised
location ``u`` as ``c + sd ⊙ (u - c)`` (``sd``: the fit's posterior sds, ``c``: the start;
:data:`~ppl.backends.svi.guides.STANDARDIZED`) makes ``lr`` a fraction of a posterior sd
per step, element by element.  This is the "initialise from a Laplace fit" of the stochastic-VI literature
(Zhang et al. 2022, Pathfinder, §1; Welandawe et al. 2024, §5 on step sizes in the units of
the posterior).

The mean-field guide starts at the sds that minimise ``KL(q ‖ N(z*, H⁻¹))`` over diagonal
Gaussians, ``1 / sqrt(H_ii)`` (Bishop 2006, eq. 10.14 for a Gaussian target); the
full-rank guide at ``H⁻¹`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import torch
from pyro import poutine
from pyro.infer import autoguide
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn import PyroParam

from ...errors import ModelError, NumericalError
from ..common.mode import find_mode
from ..common.potential import Potential, enumeration_problem
from .guides import packed_layout

__all__ = ["WarmStart", "MAX_DIM", "WARM_GUIDES", "laplace_start", "apply_warm_start"]

#: Most unconstrained dimensions for the warm start (a dense Hessian: D gradient passes).
MAX_DIM = 500
#: Guides by name that take the warm start (Gaussian or point-mass autoguides).
WARM_GUIDES = ("normal", "diagonal", "mvn", "lowrank", "delta")


@dataclass
class WarmStart:
    """The Laplace fit the guide starts from.

    Attributes
    ----------
    values : dict[str, Tensor]
        Site -> the mode, constrained (the guide's initial location).
    sd : dict[str, Tensor]
        Site -> the Laplace marginal sds ``sqrt(diag H⁻¹)`` (unconstrained, the site's
        unconstrained shape).
    mean_field_sd : dict[str, Tensor]
        Site -> ``1 / sqrt(diag H)``: the mean-field guide's start.
    covariance : Tensor, shape (D, D)
        ``H⁻¹`` in the order of :attr:`sites`.
    sites : list[str]
    sizes : list[int]
    converged : bool
        Whether the mode passed its Newton-decrement test.
    """

    values: dict
    sd: dict
    mean_field_sd: dict
    covariance: torch.Tensor
    sites: list
    sizes: list
    converged: bool


def laplace_start(graph, analysis, kind: str, device, dtype, subsampled: bool, restart: int = 0):
    """The :class:`WarmStart` of the model, or ``(None, why)`` where it does not apply.
    The mode search starts at the prior mean (``restart = 0``) or, for a restart, at a
    uniform(-2, 2) draw in unconstrained space (as ``method="laplace"``'s ``n_init``).

    Returns
    -------
    (WarmStart or None, str)
        The second item says what was done, or why there is no warm start (a guide that is
        not a Gaussian autoguide, minibatches, more than :data:`MAX_DIM` dimensions,
        discrete latents that cannot be summed out, no mode with a positive definite
        Hessian).
    """
    if kind not in WARM_GUIDES:
        return None, f"the guide '{kind}' is not a Gaussian autoguide"
    if subsampled:
        return None, "subsample_size is set (the Laplace fit would need the full data)"
    if analysis.discrete and enumeration_problem(analysis):
        return None, "its discrete latents cannot be summed out"
    dim = sum(graph.sites[s].value.numel() for s in graph.continuous_latent())
    if dim > MAX_DIM:
        return None, f"{dim} unconstrained dimensions (the dense Hessian is used up to {MAX_DIM})"
    try:
        potential = Potential(graph, device, dtype, analysis)
        z0 = potential.median.clone() if restart == 0 else potential.random_start()
        mode = find_mode(potential, z0.to(potential.median))
    except (ModelError, NumericalError, FloatingPointError, ValueError, RuntimeError) as e:
        return None, f"no Laplace fit ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    covariance = torch.cholesky_inverse(mode.chol)
    sd = potential.unflat(covariance.diagonal().clamp_min(0).sqrt())
    mean_field_sd = potential.unflat(mode.precision.diagonal().clamp_min(1e-300).rsqrt())
    values = {s: v.detach() for s, v in potential.constrain(mode.z).items()}
    warm = WarmStart(values, sd, mean_field_sd, covariance, list(potential.sites), list(potential.sizes),
                     mode.converged)
    return warm, (f"the guide starts at the Laplace fit (mode found in {mode.iterations} iterations, Newton "
                  f"decrement {mode.decrement:.2g}); locations standardized by its posterior sds")


def apply_warm_start(guide, kind: str, warm: WarmStart, kwargs: dict) -> None:
    """Set the guide's initial scales from ``warm`` (its locations come from ``init``) and
    standardize its locations by the fit's sds (a :data:`~ppl.backends.svi.guides.STANDARDIZED`
    guide): per-element scales for ``"normal"`` and ``"diagonal"``, the Cholesky factor of
    ``H⁻¹`` for ``"mvn"``, the diagonal part for ``"lowrank"``; a point mass starts at the
    mode and is left as it is.  The guide is run once (blocked) to build its parameters.  A
    site whose shape in the guide differs from the fit's keeps the defaults."""
    if kind == "delta":
        return
    with torch.no_grad(), poutine.block():
        guide(**kwargs)
    if kind == "normal":
        guide.standardize(warm.sd)
        for site, sd in warm.mean_field_sd.items():
            old = attrgetter(site)(guide.scales)
            if tuple(old.shape) == tuple(sd.shape):
                deep_setattr(guide.scales, site,
                             PyroParam(sd.to(old), guide.scale_constraint, guide._event_dims[site]))
        return
    order = _packed_order(guide, warm)
    if order is None:
        return
    loc = guide.loc
    scale, sd = torch.empty_like(loc), torch.empty_like(loc)
    scale[order] = torch.cat([warm.mean_field_sd[s].reshape(-1) for s in warm.sites]).to(loc)
    sd[order] = torch.cat([warm.sd[s].reshape(-1) for s in warm.sites]).to(loc)
    guide.standardize(sd)
    if kind == "mvn":
        cov = torch.empty(len(order), len(order), dtype=loc.dtype, device=loc.device)
        cov[order[:, None], order[None, :]] = warm.covariance.to(loc)
        chol = torch.linalg.cholesky(cov)
        scale = chol.diagonal().clone()
        guide.scale_tril = PyroParam(chol / scale[:, None], guide.scale_tril_constraint)
    elif kind == "lowrank":
        scale = scale * 0.5 ** 0.5   # Pyro's split of the start between the diagonal and the factor
    guide.scale = PyroParam(scale, guide.scale_constraint)


def _packed_order(guide, warm: WarmStart):
    """Positions, in the guide's packed vector, of the fit's flat elements (``(D,)`` long),
    or None when the layouts differ."""
    if not isinstance(guide, autoguide.AutoContinuous):
        return None
    layout = packed_layout(guide)
    parts = []
    for site, size in zip(warm.sites, warm.sizes):
        entry = layout.get(site)
        if entry is None:
            return None
        _, pos, shape, _ = entry
        n = 1
        for s in shape:
            n *= s
        if n != size:
            return None
        parts.append(torch.arange(pos, pos + size))
    order = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    if len(order) != guide.latent_dim:
        return None
    return order.to(guide.loc.device)
