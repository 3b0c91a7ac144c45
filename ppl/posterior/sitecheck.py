"""The check that a Posterior query names its site with a string.

Every query that takes a site (``marginal``, ``mean``, ``variance``, ``quantile``,
``probs``, ``draws``, ``plot``) looks the name up in a dict; a list, a number or ``None``
given by mistake would otherwise raise a raw ``TypeError: unhashable type`` or a lookup
error deep inside a subclass.  :class:`SiteQueries`, a base of
:class:`~ppl.posterior.base.Posterior`, wraps those methods of every subclass that defines
them, so that a site that is not a string is a :class:`~ppl.errors.DataError` naming the
query, the value and the latent sites, as an unknown name is.
"""

from __future__ import annotations

import functools

from ..errors import DataError

__all__ = ["SiteQueries", "SITE_QUERIES"]

#: The Posterior methods whose first argument is a site name.
SITE_QUERIES = ("marginal", "mean", "variance", "quantile", "probs", "draws", "plot")


def _checked(fn):
    @functools.wraps(fn)
    def query(self, site, *args, **kwargs):
        if not isinstance(site, str):
            shown = repr(site) if len(repr(site)) <= 60 else repr(site)[:57] + "..."
            raise DataError(f"{fn.__name__}(): site must be the name of a latent site (a str), got {shown} "
                            f"({type(site).__name__}); ask for one site per call; latent sites: "
                            f"{getattr(self, 'sites', [])}")
        return fn(self, site, *args, **kwargs)

    query.site_checked = True
    return query


class SiteQueries:
    """A mixin: every subclass's :data:`SITE_QUERIES` methods (its own, or a mixin's that
    comes before the base in its MRO) refuse a site that is not a string with a
    :class:`~ppl.errors.DataError` (wrapped once, when the class is defined)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in SITE_QUERIES:
            fn = getattr(cls, name, None)
            if callable(fn) and not getattr(fn, "site_checked", False):
                setattr(cls, name, _checked(fn))
