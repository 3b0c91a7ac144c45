"""Posteriors held as probability tables of discrete latents.

:class:`DiscreteTables` reads marginals, moments and probabilities from such tables (a
mixin shared with the guide and factor posteriors, which hold some discrete sites too);
:class:`TablePosterior` is the exact posterior (``exact``, ``em``); :class:`MeanFieldPosterior`
is CAVI's mean field over discrete latents; :func:`sample_tables` draws from independent
discrete factors and :func:`support_values` maps state indices to values.
"""

from __future__ import annotations

import torch

from ..errors import DataError
from .base import Posterior

__all__ = ["DiscreteTables", "TablePosterior", "MeanFieldPosterior", "sample_tables", "support_values"]


class DiscreteTables:
    """Marginal tables of discrete sites: ``probs``/``marginal``/``mean``/``variance`` from
    ``self._marginals`` (site -> probabilities ``batch_shape + (K,)``), ``self._supports``
    (site -> values ``(K,) + event_shape``) and ``self._families`` (site -> family).
    Shared by every posterior that holds discrete marginals (exact, EM, SVI with
    enumerated sites, CAVI); a mixin, listed before :class:`~ppl.posterior.base.Posterior`
    in a subclass's bases."""

    def _discrete_probs(self, site: str) -> torch.Tensor:
        if site not in self._marginals:
            raise DataError(f"marginals were not computed for this posterior (it was run with marginals=False); "
                            f"run ppl.infer(..., marginals=True) to get '{site}'")
        return self._marginals[site]

    def _discrete_marginal(self, site: str):
        p = self._discrete_probs(site)
        family = self._families.get(site)
        if family == "Bernoulli":
            return torch.distributions.Bernoulli(probs=p[..., 1], validate_args=False)
        if family == "OneHotCategorical":
            return torch.distributions.OneHotCategorical(probs=p, validate_args=False)
        return torch.distributions.Categorical(probs=p, validate_args=False)

    def _discrete_moment(self, site: str, power: int) -> torch.Tensor:
        p = self._discrete_probs(site)
        values = self._supports[site].to(device=p.device, dtype=p.dtype)
        event = values.shape[1:]
        p = p.reshape(p.shape + (1,) * len(event))
        return (p * values**power).sum(dim=-1 - len(event))

    def _discrete_variance(self, site: str) -> torch.Tensor:
        return (self._discrete_moment(site, 2) - self._discrete_moment(site, 1) ** 2).clamp_min(0)


class TablePosterior(DiscreteTables, Posterior):
    """Exact posterior over discrete latents, held as marginal tables.

    Parameters
    ----------
    marginals : dict[str, torch.Tensor]
        Site -> probabilities, shape ``batch_shape + (K,)``.
    supports : dict[str, torch.Tensor]
        Site -> support values, shape ``(K,) + event_shape``.
    families : dict[str, str]
        Site -> distribution family (``"Bernoulli"`` marginals are returned as Bernoulli).
    sampler : callable(n, seed) -> dict, optional
        Exact joint sampler.
    map_assignment : dict[str, torch.Tensor], optional

    Notes
    -----
    Saved or pickled (:mod:`ppl.posterior.persist`), the tables and the MAP are kept as they
    are; a sampler that needs the model (exact, EM) is replaced by
    :data:`~ppl.posterior.persist.STORED_DRAWS` exact joint draws made with the run's seed, and
    a loaded posterior's :meth:`sample` picks from those, uniformly with replacement.
    """

    def __init__(self, method, *, marginals, supports, families, sampler=None, map_assignment=None, **kw):
        super().__init__(method, **kw)
        self._marginals = marginals  # empty when the backend was asked not to compute them
        self._supports = supports
        self._families = families
        if sampler is not None:  # else the class's own (MeanFieldPosterior) or none
            self._sampler = sampler
        self._map = map_assignment

    @property
    def sites(self) -> list:
        return list(self._supports)

    def probs(self, site: str) -> torch.Tensor:
        """Marginal probabilities of ``site``, shape ``batch_shape + (K,)``; state ``k`` is
        the site's ``k``-th support value.

        Raises
        ------
        DataError
            If ``site`` is not a latent site, or marginals were not computed
            (``marginals=False``)."""
        if site not in self._supports:
            raise self._unknown(site)
        return self._discrete_probs(site)

    def marginal(self, site: str):
        """Exact posterior marginal: ``Bernoulli`` for Bernoulli sites, ``OneHotCategorical``
        for one-hot sites, else ``Categorical`` over the support's indices; batch shape =
        the site's plate batch shape."""
        self.probs(site)
        return self._discrete_marginal(site)

    def mean(self, site: str) -> torch.Tensor:
        """``E[site]`` under the exact posterior: Σ_k p_k · value_k."""
        self.probs(site)
        return self._discrete_moment(site, 1)

    def variance(self, site: str) -> torch.Tensor:
        """``Var[site]`` under the exact posterior: E[value²] − E[value]²."""
        self.probs(site)
        return self._discrete_variance(site)

    def map(self) -> dict:
        """The joint MAP assignment (max-product), site -> value with the site's batch shape.

        Raises
        ------
        UnsupportedModelError
            If it was not computed (``map=False``)."""
        if callable(self._map):  # found by max-product on first use (exact's table_posterior)
            self._map = self._map()
        if self._map is None:
            return super().map()
        return dict(self._map)

    def _portable_state(self) -> dict:
        """As :meth:`Posterior._portable_state`, with a MAP not yet found found first (a
        saved posterior keeps it)."""
        if callable(self._map):
            self._map = self._map()
        return super()._portable_state()

    def _no_map_hint(self) -> str:
        return "it was not computed: run ppl.infer(..., map=True) (the default)"

    def _draw_layout(self) -> dict:
        out = {}
        for site, support in self._supports.items():
            p = self._marginals.get(site)
            var = (getattr(self.graph, "variables", None) or {}).get(site)
            batch = tuple(p.shape[:-1]) if p is not None else (tuple(var.batch_shape) if var is not None else ())
            out[site] = (batch + tuple(support.shape[1:]), max(support.element_size(), 8))
        return out


class MeanFieldPosterior(TablePosterior):
    """A mean-field ``q(h) = Π_j q_j(h_j)`` over discrete latents (``method="cavi"``).

    Same members as :class:`TablePosterior`, read as the variational factors, not the
    exact posterior: ``probs(site)`` / ``marginal(site)`` is ``q_site`` (plate batch shape +
    states), ``mean``/``variance`` are moments under it, ``sample(n)`` draws every site
    independently (the mean-field family has no dependence between sites), ``map()`` is
    each ``q_site``'s mode, and ``elbo`` is ``L(q) = log p(v) - KL(q‖p(h|v))``
    (Goodfellow et al. 2016, eq. 19.1, 19.30), a lower bound on the log evidence.
    """

    def __init__(self, method, *, marginals, supports, families, seed=None, **kw):
        modes = {v: support_values(supports[v], p.argmax(-1)) for v, p in marginals.items()}
        super().__init__(method, marginals=marginals, supports=supports, families=families, map_assignment=modes,
                         seed=seed, **kw)

    def _sampler(self, n, sample_seed=None):
        """``n`` independent draws of every factor (:func:`sample_tables`); :meth:`sample`
        passes the run's seed (:attr:`~ppl.posterior.base.Posterior.seed`) when called without one."""
        return sample_tables(self._marginals, self._supports, n, sample_seed)

    def map(self) -> dict:
        """Each factor's mode, site -> value with the site's batch shape (the mode of
        ``q``, which need not be the joint MAP of the posterior)."""
        return super().map()


def sample_tables(marginals: dict, supports: dict, n: int, seed=None) -> dict:
    """``n`` independent draws from each discrete factor: site -> values of shape
    ``(n,) + batch_shape + event_shape``.

    Parameters
    ----------
    marginals : dict[str, torch.Tensor]
        Site -> probabilities ``batch_shape + (K,)``.
    supports : dict[str, torch.Tensor]
        Site -> support values ``(K,) + event_shape``.
    n : int
        Draws per site.
    seed : int, optional
        Seed of a private generator (torch's global RNG when None).

    Returns
    -------
    dict[str, torch.Tensor]
        Site -> values ``(n,) + batch_shape + event_shape``.
    """
    out = {}
    gen = None
    for site, p in marginals.items():
        if seed is not None and gen is None:
            gen = torch.Generator(device=p.device)
            gen.manual_seed(int(seed))
        idx = torch.multinomial(p.reshape(-1, p.shape[-1]), n, replacement=True, generator=gen)
        out[site] = support_values(supports[site].to(p.device), idx.T.reshape((n,) + tuple(p.shape[:-1])))
    return out


def support_values(support: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``support[idx]`` with the support's event dims kept: ``idx.shape + event_shape``
    (state indices ``idx`` of a discrete site to its values; ``support`` is ``(K,) + event``).

    Parameters
    ----------
    support : torch.Tensor
        Support values, shape ``(K,) + event_shape``.
    idx : torch.Tensor
        State indices in ``[0, K)``, any shape.

    Returns
    -------
    torch.Tensor
        Shape ``idx.shape + event_shape``.
    """
    return support[idx.reshape(-1)].reshape(tuple(idx.shape) + tuple(support.shape[1:]))
