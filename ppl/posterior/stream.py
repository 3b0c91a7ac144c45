"""Posteriors of streamed fits (``stream=``, docs/streaming.md): global quantities only.

A stream keeps no per-point posteriors: the local latents of the data plate (a mixture's
``z``) are computed batch by batch and dropped, so memory stays bounded by the batch.
:class:`StreamPosterior` (online EM) holds the learned params; :class:`StreamFactorPosterior`
(SVI) the global mean-field factors.  Asking either for a local latent raises a
:class:`~ppl.errors.DataError` that says so and how to get it.
"""

from __future__ import annotations

from ..errors import DataError
from .base import Posterior
from .factors import FactorPosterior

__all__ = ["StreamPosterior", "StreamFactorPosterior", "not_kept"]


def not_kept(site: str, plate: str, sites) -> DataError:
    """The error for a query of a local latent ``site`` of a streamed fit.

    Returns
    -------
    DataError
        Naming the site, the data plate and what to do instead."""
    return DataError(f"'{site}' is a per-point latent of the data plate '{plate}', and a streamed fit (stream=) keeps "
                     "no per-point posteriors (memory is bounded by the batch); run ppl.infer(model, "
                     "{<the rows you want>}, method='exact', init=post) for p(z | x; θ) of chosen rows, or fit them "
                     "in memory; the global sites of this posterior: "
                     f"{list(sites) if sites else 'none (the learned values are in post.params)'}")


class _StreamSites:
    """The data plate and its local latents; :meth:`_unknown` names them."""

    def _set_stream(self, plate, local):
        self.stream_plate = plate
        self.stream_local = list(local)

    def _unknown(self, site):
        if site in getattr(self, "stream_local", ()):
            return not_kept(site, self.stream_plate, self.sites)
        return super()._unknown(site)


class StreamPosterior(_StreamSites, Posterior):
    """Online EM's result: ``params`` (θ), ``log_evidence`` (exact at the final θ, from an
    evaluation pass over the stream), ``history`` (per epoch), no latent sites.

    Parameters
    ----------
    plate : str
        The data plate.
    local : list[str]
        Its latents (queries of them raise :func:`not_kept`'s DataError).
    """

    def __init__(self, method, *, plate, local, **kw):
        super().__init__(method, **kw)
        self._set_stream(plate, local)


class StreamFactorPosterior(_StreamSites, FactorPosterior):
    """SVI's result: the global mean-field factors (``marginal``, ``mean``, ``sample`` of the
    global sites, as :class:`FactorPosterior`), ``elbo`` from an evaluation pass."""

    def __init__(self, method, *, plate, local, **kw):
        super().__init__(method, **kw)
        self._set_stream(plate, local)
