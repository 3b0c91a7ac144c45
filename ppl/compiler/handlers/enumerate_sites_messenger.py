"""The messenger of the enumerated run: each discrete latent takes its whole support."""

from __future__ import annotations

from pyro.poutine.messenger import Messenger

from .. import families

__all__ = ["EnumerateSites"]


class EnumerateSites(Messenger):
    """Set each named latent site's value to its support laid out along its own dim, as
    Pyro's parallel enumeration does (Obermeyer et al. 2019), but at dims chosen by the
    caller (:func:`ppl.compiler.tables.enumeration_dims`) instead of by ``markov``
    annotations.

    Parameters
    ----------
    dims : dict[str, int]
        Site name -> its (negative) enumeration dim.  Observed sites and sites not named
        are left alone.

    Notes
    -----
    A site's value becomes :func:`ppl.compiler.families.enumerate_values` of its
    distribution, of shape ``(K,) + (1,) * (-dim - 1) + event_shape``; the site is marked
    done and ``infer["_enumerate_dim"]`` records the dim, as Pyro's ``EnumMessenger``
    records it for tools that read enumerated traces.
    """

    def __init__(self, dims: dict):
        super().__init__()
        self.dims = dims

    def _pyro_sample(self, msg):
        name = msg["name"]
        if name not in self.dims or msg["is_observed"]:
            return
        fn = msg["fn"]
        values = families.enumerate_values(fn)
        dim = self.dims[name]
        shape = (values.shape[0],) + (1,) * (-dim - 1) + tuple(fn.event_shape)
        msg["value"] = values.reshape(shape)
        msg["done"] = True
        msg["infer"] = dict(msg.get("infer") or {}, _enumerate_dim=dim)
