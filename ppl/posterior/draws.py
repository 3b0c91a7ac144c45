"""A posterior held as draws: chains of a sampler (NUTS), or draws of an approximation
resampled by Pareto-smoothed importance weights (Laplace, Pathfinder)."""

from __future__ import annotations

import torch

from .base import Posterior

__all__ = ["DrawsPosterior"]


class DrawsPosterior(Posterior):
    """Posterior draws of the continuous latents, ``(chains, draws) + shape`` per site.

    Parameters
    ----------
    draws : dict[str, torch.Tensor]
        Site -> draws, shape ``(C, S) + batch_shape + event_shape`` (``C`` chains of ``S``
        draws; independent draws of an approximation are laid out as ``C`` chains too).
    point : dict[str, torch.Tensor], optional
        A point returned by :meth:`map` (Laplace: the mode found), site -> value.
    """

    def __init__(self, method, *, draws: dict, point=None, **kw):
        super().__init__(method, **kw)
        self._draws = {k: v.detach() for k, v in draws.items()}
        self._point = point
        self._flat = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in self._draws.items()}
        self._marginals: dict = {}

    @property
    def sites(self) -> list:
        return list(self._draws)

    @property
    def num_draws(self) -> int:
        """Draws per site, all chains together."""
        v = next(iter(self._flat.values()), None)
        return 0 if v is None else int(v.shape[0])

    def draws(self, site: str) -> torch.Tensor:
        """The draws of ``site``, shape ``(C, S) + shape``.

        Raises
        ------
        DataError
            If ``site`` is not a latent site of this posterior."""
        if site not in self._draws:
            raise self._unknown(site)
        return self._draws[site]

    def _all(self, site):
        if site not in self._flat:
            raise self._unknown(site)
        return self._flat[site]

    def marginal(self, site: str):
        """The empirical distribution of the draws (``pyro.distributions.Empirical``), batch
        shape = the site's batch shape.

        Raises
        ------
        DataError
            If ``site`` is not a latent site of this posterior."""
        if site not in self._marginals:
            import pyro.distributions as pdist

            values = self._all(site)
            event = len(self.graph.variables[site].event_shape) if self.graph is not None and \
                site in self.graph.variables else 0
            batch = values.dim() - 1 - event
            moved = values.movedim(0, batch)
            self._marginals[site] = pdist.Empirical(moved, torch.zeros(moved.shape[: batch + 1], dtype=values.dtype,
                                                                       device=values.device))
        return self._marginals[site]

    def mean(self, site: str) -> torch.Tensor:
        """Mean of the draws, shape ``batch_shape + event_shape``."""
        return self._all(site).mean(0)

    def variance(self, site: str) -> torch.Tensor:
        """Variance of the draws (elementwise)."""
        return self._all(site).var(0)

    def quantile(self, site: str, q: float) -> torch.Tensor:
        """Elementwise ``q``-quantile of the draws."""
        return self._all(site).quantile(q, dim=0)

    def _sampler(self, n, seed=None):
        gen = torch.Generator()
        if seed is not None:
            gen.manual_seed(int(seed))
        else:
            gen.seed()
        total = self.num_draws
        idx = torch.randint(total, (n,), generator=gen)
        return {k: v[idx.to(v.device)] for k, v in self._flat.items()}

    def map(self) -> dict:
        """The point the method found (Laplace: the mode in unconstrained space, mapped to
        the constrained one), site -> value."""
        if self._point is None:
            return super().map()
        return dict(self._point)

    def to_arviz(self, num_samples: int = 1000):
        """The draws, chains kept, as an ``arviz.InferenceData`` (``num_samples`` is ignored:
        every draw is returned).

        Raises
        ------
        ImportError
            If ArviZ is not installed."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import arviz as az
        return az.from_dict(posterior={k: v.cpu().numpy() for k, v in self._draws.items()})
