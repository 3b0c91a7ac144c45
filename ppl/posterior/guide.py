"""The posterior of a fitted variational guide (SVI): :class:`GuidePosterior`."""

from __future__ import annotations

import torch

from ..errors import DataError
from .base import Posterior
from .checks import FIXED_SEED, check_memory, isolated_rng, numel
from .tables import DiscreteTables

__all__ = ["GuidePosterior"]


class GuidePosterior(DiscreteTables, Posterior):
    """Posterior represented by a fitted guide q (SVI): continuous sites from q, discrete
    sites that were enumerated from their exact conditional marginals.

    Parameters
    ----------
    continuous : list[str]
        Latent sites the guide samples.
    marginal_fn : callable(site) -> Distribution or None
        The guide's exact per-site marginal (batch shape = the site's plate batch shape,
        event shape = the site's event shape) where the guide's form gives one (AutoNormal,
        AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoDelta), else ``None``:
        the marginal is then the empirical distribution of ``posterior_samples`` draws.
    sampler : callable(n, seed, discrete=True) -> dict
        Joint draws: site -> tensor ``(n,) + batch_shape + event_shape`` (continuous sites
        from q, enumerated discrete sites from p(z | continuous draw, data) unless
        ``discrete=False``).
    marginals, supports, families : dict
        As :class:`TablePosterior`, for the enumerated discrete sites: probabilities
        ``batch_shape + (K,)`` averaged over guide draws (a Rao-Blackwellised estimate of
        p(z | data); exact when the guide has no continuous sites).
    posterior_samples : int
        Draws behind sample-based marginals and moments, made once under a fixed seed
        (:data:`~ppl.posterior.checks.FIXED_SEED`), so those moments are the same on every
        call and in every identical run.
    point : dict, optional
        For a point-mass guide (AutoDelta): site -> value, returned by :meth:`map`.
    guide : callable, optional
        The fitted guide, kept as :attr:`guide` (usable with Pyro, e.g. ``Predictive``);
        ``None`` on a loaded posterior.  Called directly it runs its ``pyro.module``
        networks with their current weights (ppl's call left them as it found them): call
        :meth:`~ppl.posterior.base.Posterior.load_module_weights` first to run it with the learned ones.

    Notes
    -----
    Saved or pickled (:mod:`ppl.posterior.persist`), it keeps every continuous site's marginal
    and the ``posterior_samples`` draws (its means, variances, quantiles are unchanged) and
    :data:`~ppl.posterior.persist.STORED_DRAWS` joint draws made with the run's seed: a loaded
    posterior's :meth:`sample` picks from those, uniformly with replacement.
    """

    def __init__(self, method, *, continuous, marginal_fn, sampler, marginals, supports, families,
                 posterior_samples=1000, point=None, guide=None, **kw):
        super().__init__(method, **kw)
        self.guide = guide
        self._continuous = list(continuous)
        self._marginal_fn = marginal_fn
        self._sampler = sampler
        self._marginals = marginals
        self._supports = supports
        self._families = families
        self._n_draws = int(posterior_samples)
        self._point = point
        self._cache: dict = {}
        self._draws = None

    @property
    def sites(self) -> list:
        return self._continuous + list(self._supports)

    def probs(self, site: str) -> torch.Tensor:
        """Posterior probabilities of an enumerated discrete site, shape ``batch_shape + (K,)``.

        Raises
        ------
        DataError
            If ``site`` is not an enumerated discrete latent site."""
        if site not in self._supports:
            raise self._unknown(site) if site not in self._continuous else DataError(
                f"'{site}' is a continuous site: use marginal('{site}'), mean('{site}') or sample()")
        return self._discrete_probs(site)

    def _samples(self, site):
        if self._draws is None:
            layout = {s: v for s, v in self._draw_layout().items() if s in self._continuous}
            size = sum(numel(shape) * itemsize for shape, itemsize in layout.values())
            check_memory(self._n_draws, size, self.budget, what=f"the {self._n_draws:,} guide draws behind "
                         f"sample-based moments (posterior_samples={self._n_draws})",
                         detail=f"{size:,} bytes per draw", fix="run with a smaller posterior_samples")
            with isolated_rng(FIXED_SEED):
                self._draws = self._sampler(self._n_draws, FIXED_SEED, discrete=False)
        return self._draws[site]

    def marginal(self, site: str):
        """q's marginal of ``site`` (exact for Gaussian and point-mass guides, else an
        ``Empirical`` over ``posterior_samples`` guide draws); enumerated discrete sites:
        Categorical/Bernoulli of :meth:`probs`.

        Raises
        ------
        DataError
            If ``site`` is not a latent site."""
        if site in self._supports:
            return self._discrete_marginal(site)
        if site not in self._continuous:
            raise self._unknown(site)
        if site not in self._cache:
            marg = self._marginal_fn(site) if self._marginal_fn is not None else None
            if marg is None:
                import pyro.distributions as pdist

                draws = self._samples(site)
                batch = draws.dim() - 1 - self._event_dim(site)
                values = draws.movedim(0, batch)
                marg = pdist.Empirical(values, torch.zeros(values.shape[: batch + 1], dtype=values.dtype,
                                                           device=values.device))
            self._cache[site] = marg
        return self._cache[site]

    def mean(self, site: str) -> torch.Tensor:
        """Mean of q's marginal (closed form where the family has one, else the mean of
        ``posterior_samples`` draws), shape ``batch_shape + event_shape``."""
        if site in self._supports:
            return self._discrete_moment(site, 1)
        try:
            return self.marginal(site).mean
        except NotImplementedError:
            return self._samples(site).mean(0)

    def variance(self, site: str) -> torch.Tensor:
        """Elementwise variance of q's marginal (closed form or from draws)."""
        if site in self._supports:
            return self._discrete_variance(site)
        try:
            return self.marginal(site).variance
        except NotImplementedError:
            return self._samples(site).var(0)

    def map(self) -> dict:
        """The point of a point-mass guide (``guide="delta"``: the MAP estimate, §19.3).

        Raises
        ------
        UnsupportedModelError
            If the guide is not a point mass."""
        if self._point is None:
            return super().map()
        return dict(self._point)

    def _portable_state(self) -> dict:
        """The base's (the joint sampler becomes stored draws), plus every continuous site's
        marginal and the fixed-seed draws behind sample-based moments, computed now, so a
        loaded posterior's marginals and moments are the original's; the guide (a module
        holding the model) is not kept."""
        from .persist import DROPPED, portable

        out = super()._portable_state()
        for site in self._continuous:
            self.marginal(site)
        if self._continuous:
            self._samples(self._continuous[0])
        out["_cache"] = {site: marg for site, marg in self._cache.items() if portable(marg) is not DROPPED}
        out.update(_draws=self._draws, _marginal_fn=None, guide=None)
        return out

    def _no_map_hint(self) -> str:
        return "only a point-mass guide has one: run with guide='delta', or ppl.infer(..., method='map')"
