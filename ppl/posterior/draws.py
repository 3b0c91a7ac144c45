"""A posterior held as draws: chains of a sampler (NUTS), or draws of an approximation
resampled by Pareto-smoothed importance weights (Laplace, Pathfinder); discrete latents
that were summed out are read from their exact conditionals averaged over the draws."""

from __future__ import annotations

import torch

from ..errors import DataError
from .base import Posterior
from .quantiles import sample_quantile
from .tables import DiscreteTables

__all__ = ["DrawsPosterior"]


class DrawsPosterior(DiscreteTables, Posterior):
    """Posterior draws of the continuous latents, ``(chains, draws) + shape`` per site, and
    the marginals of the discrete latents that were summed out.

    Parameters
    ----------
    draws : dict[str, torch.Tensor]
        Site -> draws, shape ``(C, S) + batch_shape + event_shape`` (``C`` chains of ``S``
        draws; independent draws of an approximation are laid out as ``C`` chains too).
    point : dict[str, torch.Tensor], optional
        A point returned by :meth:`map` (Laplace: the mode found), site -> value.
    discrete : callable() -> dict, optional
        Computes, on first use, site -> ``p(z | v)`` (``batch_shape + (K,)``) of the summed-out
        discrete latents (:meth:`~ppl.backends.common.potential.Potential.discrete_marginals`).
    supports, families : dict, optional
        Site -> support values ``(K,) + event_shape`` / distribution family, for those sites.
    """

    def __init__(self, method, *, draws: dict, point=None, discrete=None, supports=None, families=None, **kw):
        super().__init__(method, **kw)
        self._draws = {k: v.detach() for k, v in draws.items()}
        self._point = point
        self._flat = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in self._draws.items()}
        self._empirical: dict = {}
        self._discrete_fn = discrete
        self._marginals = None
        self._supports = dict(supports or {})
        self._families = dict(families or {})

    _transient = ("_flat", "_empirical")  # caches, rebuilt by _restored() after unpickling

    @property
    def sites(self) -> list:
        return list(self._draws) + list(self._supports)

    def _portable_state(self) -> dict:
        """The base's, plus the summed-out discrete sites' marginals computed now (the lazy
        callable needs the model)."""
        out = super()._portable_state()
        if self._marginals is None:
            self._marginals = self._discrete_fn() if self._discrete_fn is not None else {}
        out.update(_marginals=self._marginals, _discrete_fn=None)
        return out

    def _restored(self) -> None:
        self._flat = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in self._draws.items()}
        self._empirical = {}

    def _discrete_probs(self, site: str) -> torch.Tensor:
        if self._marginals is None:
            self._marginals = self._discrete_fn() if self._discrete_fn is not None else {}
        if site not in self._marginals:
            raise DataError(f"the marginal of discrete site '{site}' could not be computed (the evidence is "
                            "impossible at the posterior draws)")
        return self._marginals[site]

    def probs(self, site: str) -> torch.Tensor:
        """``p(z | v)`` of a summed-out discrete site, shape ``batch_shape + (K,)``: the exact
        conditionals ``p(z | h, v)`` averaged over the draws ``h`` of the continuous latents.

        Raises
        ------
        DataError
            If ``site`` is not a summed-out discrete latent site."""
        if site not in self._supports:
            raise self._unknown(site) if site not in self._draws else DataError(
                f"'{site}' is a continuous site: use marginal('{site}'), mean('{site}') or draws('{site}')")
        return self._discrete_probs(site)

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
        shape = the site's batch shape; a summed-out discrete site: Categorical/Bernoulli of
        :meth:`probs`.

        Raises
        ------
        DataError
            If ``site`` is not a latent site of this posterior."""
        if site in self._supports:
            return self._discrete_marginal(site)
        if site not in self._empirical:
            import pyro.distributions as pdist

            values = self._all(site)
            batch = values.dim() - 1 - self._event_dim(site)
            moved = values.movedim(0, batch)
            self._empirical[site] = pdist.Empirical(moved, torch.zeros(moved.shape[: batch + 1], dtype=values.dtype,
                                                                       device=values.device))
        return self._empirical[site]

    def mean(self, site: str) -> torch.Tensor:
        """Mean of the draws, shape ``batch_shape + event_shape`` (discrete sites: of :meth:`probs`)."""
        if site in self._supports:
            return self._discrete_moment(site, 1)
        return self._all(site).mean(0)

    def variance(self, site: str) -> torch.Tensor:
        """Variance of the draws (elementwise; discrete sites: of :meth:`probs`)."""
        if site in self._supports:
            return self._discrete_variance(site)
        return self._all(site).var(0)

    def _quantile(self, site: str, q: float) -> torch.Tensor:
        """Elementwise ``q``-quantile of the draws (linear interpolation between order
        statistics); discrete sites: of :meth:`probs` (a support value)."""
        if site in self._supports:
            return super()._quantile(site, q)
        return sample_quantile(self._all(site), q, dim=0)

    def _sampler(self, n, seed=None):
        """``n`` draws picked uniformly with replacement from all chains' draws (a private
        generator seeded with ``seed``; torch's global RNG when None)."""
        gen = None
        if seed is not None:
            gen = torch.Generator()
            gen.manual_seed(int(seed))
        total = self.num_draws
        idx = torch.randint(total, (n,), generator=gen)
        return {k: v[idx.to(v.device)] for k, v in self._flat.items()}

    def _draw_layout(self) -> dict:
        return {k: (tuple(v.shape[1:]), v.element_size()) for k, v in self._flat.items()}

    def _no_map_hint(self) -> str:
        return ("it holds draws, not a mode: use mean() or quantile(), or run ppl.infer(..., method='map') "
                "(or method='laplace') for a mode")

    def map(self) -> dict:
        """The point the method found (Laplace: the mode in unconstrained space, mapped to
        the constrained one), site -> value."""
        if self._point is None:
            return super().map()
        return dict(self._point)

    @property
    def real_chains(self) -> bool:
        """Whether the draws are a sampler's chains (NUTS: ``diagnostics["num_chains"]`` is
        set), so that :meth:`~ppl.posterior.base.Posterior.to_arviz` keeps them and
        :meth:`summary` reports ESS and R-hat across them; ``False`` for the independent
        draws of an approximation (Laplace, Pathfinder), which
        :meth:`~ppl.posterior.base.Posterior.to_arviz` draws anew as independent chains."""
        return self.diagnostics.get("num_chains") is not None

    def _chain_draws(self, chains: int, per_chain: int, seed) -> dict:
        """A sampler's chains as they are, ``(C, S) + shape`` (the layout asked for is not
        used); the base's independent draws otherwise."""
        if self.real_chains:
            return dict(self._draws)
        return super()._chain_draws(chains, per_chain, seed)

    def _summary_draws(self, site: str):
        """The stored draws of a continuous site (with :attr:`real_chains`): summarised by
        ``arviz.summary``; ``None`` for a summed-out discrete site (exact from :meth:`probs`)."""
        if site in self._draws:
            return self._draws[site], self.real_chains
        return None
