"""CAVI's mean field of continuous (and, in mixed models, discrete) factors:
:class:`FactorPosterior`."""

from __future__ import annotations

import torch

from ..errors import UnsupportedModelError
from .base import Posterior
from .checks import FIXED_SEED
from .tables import DiscreteTables, sample_tables, support_values

__all__ = ["FactorPosterior"]


class FactorPosterior(DiscreteTables, Posterior):
    """A mean field ``q(h) = Π_j q_j(h_j)`` (``method="cavi"``) of continuous factors —
    Gaussian factors (``Normal``, or ``MultivariateNormal`` over a site's event dims) or the
    sites' own conjugate families (Normal, Gamma, Beta, Dirichlet, Wishart, Normal-Wishart) —
    and, in a mixed model, discrete factors held as probability tables.

    ``marginal(site)`` is ``q_site`` (a torch distribution with the site's plate batch shape;
    for the mean of a Normal-Wishart pair its Student-t marginal), ``probs(site)`` a discrete
    factor's table ``batch_shape + (K,)``, ``mean``/``variance`` moments under ``q``,
    ``sample(n)`` draws from ``q`` (a Normal-Wishart pair jointly, every other factor
    independently), ``map()`` each factor's mode.

    Parameters
    ----------
    factors : dict[str, torch.distributions.Distribution]
        Continuous site -> its factor (or marginal).
    marginals, supports, families : dict, optional
        Discrete sites, as for :class:`TablePosterior`.
    joint : dict[tuple[str, ...], callable(n) -> tuple], optional
        Samplers of factors that cover several sites.
    """

    def __init__(self, method, *, factors, marginals=None, supports=None, families=None, joint=None, **kw):
        super().__init__(method, **kw)
        self._factors = dict(factors)
        self._marginals = dict(marginals or {})
        self._supports = dict(supports or {})
        self._families = dict(families or {})
        self._joint = dict(joint or {})

    @property
    def sites(self) -> list:
        return list(self._factors) + list(self._supports)

    def probs(self, site: str) -> torch.Tensor:
        """A discrete factor's probabilities, ``batch_shape + (K,)`` (state ``k`` is the
        ``k``-th support value)."""
        if site not in self._supports:
            raise self._unknown(site)
        return self._discrete_probs(site)

    def marginal(self, site: str):
        if site in self._supports:
            return self._discrete_marginal(site)
        if site not in self._factors:
            raise self._unknown(site)
        return self._factors[site]

    def mean(self, site: str) -> torch.Tensor:
        if site in self._supports:
            return self._discrete_moment(site, 1)
        return self.marginal(site).mean

    def variance(self, site: str) -> torch.Tensor:
        if site in self._supports:
            return self._discrete_variance(site)
        return super().variance(site)

    def map(self) -> dict:
        """Each factor's mode, site -> ``batch_shape + event_shape`` (Normal, MultivariateNormal:
        the mean; Gamma: ``(a - 1) / b``, 0 when ``a < 1``; discrete: the most probable
        state)."""
        out = {}
        for s, d in self._factors.items():
            if isinstance(d, torch.distributions.Gamma):
                out[s] = ((d.concentration - 1).clamp_min(0) / d.rate).clone()
            else:
                out[s] = d.mean.clone()
        for s, p in self._marginals.items():
            out[s] = support_values(self._supports[s], p.argmax(-1))
        return out

    def _sampler(self, n, seed=None):
        """``n`` draws of every factor from torch's global RNG (:meth:`sample` seeds it, in a
        forked state, when a seed is given or known); a factor over several sites of a loaded
        posterior from its stored joint draws (:mod:`ppl.posterior.persist`)."""
        del seed
        with torch.no_grad():
            out = {}
            for sites, draw in self._joint.items():
                if draw is None:
                    raise UnsupportedModelError(f"sample(): the joint draws of {list(sites)} were not saved with "
                                                "this posterior (one draw exceeded its memory budget)")
                out.update(zip(sites, draw(n)))
            for s, d in self._factors.items():
                if s not in out:
                    out[s] = d.sample((n,))
            out.update(sample_tables(self._marginals, self._supports, n))
            return out

    def _portable_state(self) -> dict:
        """The base's, and the samplers of factors over several sites (closures) replaced by
        stored joint draws made with the run's seed (:func:`~ppl.posterior.persist.stored_joint`)."""
        from .persist import DROPPED, portable, stored_joint

        out = super()._portable_state()
        seed = FIXED_SEED if self.seed is None else int(self.seed)
        out["_joint"] = {sites: draw if draw is None or portable(draw) is not DROPPED else
                         stored_joint(draw, sites, seed, self.budget) for sites, draw in self._joint.items()}
        return out

    def _draw_layout(self) -> dict:
        out = {s: (tuple(d.batch_shape) + tuple(d.event_shape), 8) for s, d in self._factors.items()}
        for s, p in self._marginals.items():
            out[s] = (tuple(p.shape[:-1]) + tuple(self._supports[s].shape[1:]), 8)
        return out
