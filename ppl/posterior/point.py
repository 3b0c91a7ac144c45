"""The posterior of MAP inference, a point mass: :class:`PointPosterior`."""

from __future__ import annotations

import torch

from .base import Posterior

__all__ = ["PointPosterior"]


class PointPosterior(Posterior):
    """A point mass at the joint MAP ``ĥ = argmax_h log p(h, v)`` (``method="map"``).

    MAP inference is variational inference with a Dirac ``q(h) = δ(h - ĥ)``
    (Goodfellow et al. 2016, §19.3, eq. 19.9-19.11): every marginal is a ``Delta``, the
    mean is ĥ, the variance 0 and draws repeat ĥ.  Its ELBO is ``-∞`` (a Dirac has
    differential entropy ``-∞`` for continuous latents), so
    :attr:`~ppl.posterior.base.Posterior.elbo` is ``None``; the
    objective MAP maximises, ``log p(ĥ, v)``, is :attr:`log_joint`.

    Attributes
    ----------
    log_joint : float
        ``log p(ĥ, v; θ)`` in nats (densities for continuous latents, with respect to
        Lebesgue measure in the space the site is declared in).
    """

    def __init__(self, method, *, values, event_dims, log_joint, **kw):
        kw.setdefault("elbo", None)
        super().__init__(method, **kw)
        self._values = dict(values)
        self._event_dims = dict(event_dims)
        self.log_joint = float(log_joint)

    @property
    def sites(self) -> list:
        return list(self._values)

    def _value(self, site):
        if site not in self._values:
            raise self._unknown(site)
        return self._values[site]

    def marginal(self, site: str):
        """``Delta(ĥ_site)`` with the site's batch shape (event dims as the site's)."""
        import pyro.distributions as pdist

        value = self._value(site)
        return pdist.Delta(value if value.is_floating_point() else value.double(),
                           event_dim=self._event_dims.get(site, 0))

    def mean(self, site: str) -> torch.Tensor:
        return self._value(site).clone()

    def variance(self, site: str) -> torch.Tensor:
        value = self._value(site)
        return torch.zeros(value.shape, dtype=value.dtype if value.is_floating_point() else torch.float64,
                           device=value.device)

    def _quantile(self, site: str, q: float) -> torch.Tensor:
        return self.mean(site)  # every quantile of a point mass is its point

    def _draw_layout(self) -> dict:
        return {k: (tuple(v.shape), v.element_size()) for k, v in self._values.items()}

    def map(self) -> dict:
        """Site -> ĥ (``batch_shape + event_shape``)."""
        return {k: v.clone() for k, v in self._values.items()}

    def _sampler(self, n, seed=None):
        """``n`` copies of the point (a point mass has nothing random)."""
        del seed
        return {k: v.unsqueeze(0).expand((n,) + tuple(v.shape)).clone() for k, v in self._values.items()}

    def __repr__(self):
        return f"<Posterior method='{self.method}' log_joint={self.log_joint:.6g} elapsed={self.elapsed:.3g}s>"
