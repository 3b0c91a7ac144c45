"""The log density of a compiled model in unconstrained space, with its tractable discrete
latents summed out: what Laplace, Pathfinder and NUTS work on, and what importance
weights of any approximation are computed with.

Built on Pyro's ``pyro.infer.mcmc.util.initialize_model``: the model conditioned on the
data, every continuous latent mapped to ℝ^d by ``biject_to(support).inv`` (with the log
Jacobian of the inverse map added), and every discrete latent enumerated in parallel and
summed out by Pyro's ``TraceEinsumEvaluator`` (as ``TraceEnum_ELBO`` does; Obermeyer et al.
2019).  The continuous latents are laid out as one flat vector ``z`` of size ``D``.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import initialization as init_strategies
from pyro.infer.mcmc.util import initialize_model

from ...analysis.report import format_bytes
from ...compiler.observations import CheckObservations
from ...errors import ModelError
from .runtime import place

__all__ = ["Potential", "enumeration_problem", "conditioned_model"]


def enumeration_problem(analysis) -> str | None:
    """Why the discrete latents cannot be summed out exactly (None when they can, or there
    are none): batch dims no plate declares, plates that do not nest, or a table over the
    memory budget."""
    if not analysis.discrete:
        return None
    shown = ", ".join(analysis.discrete[:6]) + (" ..." if len(analysis.discrete) > 6 else "")
    hint = ("pass a guide that samples them (guide=callable, with loss='rws' or 'elbo'), or use method='exact' / "
            "'em' if there are no continuous latents")
    if analysis.undeclared_batch:
        site, dims = next(iter(analysis.undeclared_batch.items()))
        return (f"discrete latent(s) {shown} cannot be enumerated: site '{site}' has batch dims {dims} not "
                f"declared by a plate; declare them with ppl.plate, or {hint}")
    if analysis.cost.intractable:
        return f"discrete latent(s) {shown} cannot be summed out: {analysis.cost.intractable}; {hint}"
    if analysis.clique_bytes > analysis.memory_budget:
        return (f"summing out the discrete latent(s) {shown} needs a table of {format_bytes(analysis.clique_bytes)} "
                f"(treewidth <= {analysis.treewidth}), over the {format_bytes(analysis.memory_budget)} budget; "
                f"{hint}")
    return None


def conditioned_model(graph, observations):
    """The user's model conditioned on ``observations``; ``obs=`` values the model takes as
    Python numbers become tensors of the site's dtype, as in the compiled trace (the data
    were validated at compile time)."""
    cast = CheckObservations(graph.model, observations, validate=False)
    return cast(poutine.condition(graph.model.fn, data=observations) if observations else graph.model.fn)


class Potential:
    """``log p(h, v)`` as a function of the unconstrained flat vector ``z`` (discrete
    latents summed out, Jacobian included), see the module docstring.

    Parameters
    ----------
    graph : FactorGraph
    device : torch.device
    dtype : torch.dtype
        Floating data and the model's own tensors are in this precision.

    Attributes
    ----------
    sites : list[str]
        The continuous latents, in trace order.
    shapes : dict[str, torch.Size]
        Unconstrained shape of each (a simplex of K entries has K - 1).
    dim : int
        ``D``, the length of ``z``.
    transforms : dict
        Site -> the map from its support to ℝ^d (Pyro's ``biject_to(support).inv``).

    Raises
    ------
    ModelError
        When Pyro cannot set the model up (a discrete site it cannot enumerate, a model
        that fails to run).
    """

    def __init__(self, graph, device, dtype):
        self.graph, self.device, self.dtype = graph, device, dtype
        self.kwargs = {k: place(v, device, dtype) for k, v in graph.bound.kwargs.items()}
        self.observations = {k: place(v, device, dtype) for k, v in graph.bound.observations.items()}
        self.model = conditioned_model(graph, self.observations)
        self.mpn = max([-p.dim for p in graph.plates.values()], default=0)
        try:
            init, self._potential, self.transforms, _ = initialize_model(
                self.model, model_kwargs=self.kwargs, max_plate_nesting=self.mpn,
                init_strategy=init_strategies.init_to_median)
        except (RuntimeError, ValueError, NotImplementedError, AssertionError, TypeError) as e:
            raise ModelError(f"model '{graph.model.name}' cannot be set up for a log density in unconstrained "
                             f"space: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r}") from e
        order = graph.continuous_latent()
        self.sites = [s for s in order if s in init] + [s for s in init if s not in order]
        self.shapes = {s: init[s].shape for s in self.sites}
        self.sizes = [int(math.prod(self.shapes[s])) for s in self.sites]
        self.dim = sum(self.sizes)
        self.median = self.flat(init)

    # ------------------------------------------------------------------ layout
    def flat(self, values: dict) -> torch.Tensor:
        """Site -> unconstrained value, as one vector ``(D,)``."""
        if not self.sites:
            return torch.zeros(0, dtype=self.dtype, device=self.device)
        return torch.cat([values[s].reshape(-1).to(self.dtype) for s in self.sites])

    def unflat(self, z: torch.Tensor) -> dict:
        """``z`` ``(..., D)`` -> site -> unconstrained value ``(...,) + shape``."""
        parts = torch.split(z, self.sizes, dim=-1)
        lead = tuple(z.shape[:-1])
        return {s: p.reshape(lead + tuple(self.shapes[s])) for s, p in zip(self.sites, parts)}

    def constrain(self, z: torch.Tensor) -> dict:
        """Site -> constrained value at ``z`` (shape ``(D,)`` or ``(S, D)``)."""
        return {s: self.transforms[s].inv(v) for s, v in self.unflat(z).items()}

    def unconstrain(self, values: dict) -> torch.Tensor:
        """The ``z`` of constrained values (site -> value)."""
        return self.flat({s: self.transforms[s](values[s].to(self.dtype)) for s in self.sites})

    # ----------------------------------------------------------------- density
    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(h(z), v) + log |det ∂h/∂z|`` (nats), a scalar differentiable in ``z`` ``(D,)``."""
        return -self._potential(self.unflat(z))

    def log_density_and_grad(self, z: torch.Tensor):
        """``(log density, its gradient)`` at ``z`` ``(D,)``, both detached."""
        z = z.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = self.log_density(z)
            (grad,) = torch.autograd.grad(value, z)
        return value.detach(), grad.detach()

    def log_density_batch(self, zs: torch.Tensor) -> torch.Tensor:
        """:meth:`log_density` of each row of ``zs`` ``(S, D)``, shape ``(S,)`` (no grad);
        ``-inf`` where the model has no density."""
        out = torch.empty(zs.shape[0], dtype=torch.float64)
        with torch.no_grad(), pyro.validation_enabled(False):
            for i in range(zs.shape[0]):
                try:
                    out[i] = float(self.log_density(zs[i]))
                except (ValueError, RuntimeError):
                    out[i] = -math.inf
        return torch.where(torch.isnan(out), torch.full_like(out, -math.inf), out)

    def log_jacobian(self, values: dict) -> float:
        """``Σ log |det ∂z/∂h|`` at one draw of constrained values (site -> value), so that
        ``log p(h, v) = log_density(z(h)) + log_jacobian(h)``."""
        total = 0.0
        for s in self.sites:
            h = values[s].to(self.dtype)
            t = self.transforms[s]
            total += float(t.log_abs_det_jacobian(h, t(h)).sum())
        return total

    def log_joint(self, draws: dict) -> torch.Tensor:
        """``log p(h, v)`` (discrete latents summed out) at each of S draws of the
        continuous latents (site -> ``(S,) + shape``, constrained), shape ``(S,)``; ``-inf``
        where the model has no density."""
        n = next(iter(draws.values())).shape[0] if draws else 1
        rows = [{s: draws[s][i] for s in self.sites} for i in range(n)]
        with torch.no_grad():
            zs = torch.stack([self.unconstrain(r) for r in rows]) if self.sites else torch.zeros(n, 0)
            jac = torch.tensor([self.log_jacobian(r) for r in rows], dtype=torch.float64)
        return self.log_density_batch(zs) + jac
