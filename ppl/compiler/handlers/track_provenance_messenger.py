"""The messenger of the compiler's traced run: every site's value names its site."""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ...dsl import is_deterministic
from ..provenance import Tracked, strip

__all__ = ["TrackProvenance"]


class TrackProvenance(Messenger):
    """Wrap every sample and param value in a :class:`~ppl.compiler.provenance.Tracked`
    tensor naming its site (after the site has its value: ``_pyro_post_*``).

    Deterministic sites are left alone, so provenance flows *through* them to the sites
    that use their values.  Subsample sites of plates are left alone too.

    This is the nonstandard interpretation of Wingate et al. (2011) that
    ``pyro.infer.inspect.get_dependencies`` also uses, with the cheaper tensor class of
    :mod:`ppl.compiler.provenance`.
    """

    def _pyro_post_sample(self, msg):
        if site_is_subsample(msg) or is_deterministic(msg):
            return
        value = msg["value"]
        if isinstance(value, torch.Tensor):
            msg["value"] = Tracked.wrap(strip(value), frozenset({msg["name"]}))

    def _pyro_post_param(self, msg):
        value = msg["value"]
        if isinstance(value, torch.Tensor):
            msg["value"] = Tracked.wrap(strip(value), frozenset({msg["name"]}))
