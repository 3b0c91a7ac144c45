"""The check of a dict ``init={site: value}`` of starting values for continuous latents
(``method="map"``, ``"cavi"``, ``"svi"``), made before the model runs on them: a value the
model cannot use would otherwise surface as a raw torch error from inside the model, or
(an unknown name) be ignored without a word."""

from __future__ import annotations

import torch
from torch.distributions import constraints

from ...errors import OptionError

__all__ = ["checked_init_values"]


def checked_init_values(graph, init: dict, sites) -> dict:
    """The values of a dict ``init`` as tensors (integers and booleans as
    ``torch.get_default_dtype()``), each checked against its site of ``graph``.

    Parameters
    ----------
    graph : FactorGraph
        The compiled model (each site's traced value gives the shape, its distribution
        the support).
    init : dict
        Site name -> starting value (tensor, array, list or number).
    sites : sequence of str
        The sites a value may be given for (the continuous latents).

    Returns
    -------
    dict[str, torch.Tensor]
        Copies: nothing written into them reaches the caller's values.

    Raises
    ------
    OptionError
        A name that is not one of ``sites``, a value that is not numbers, of another shape
        than the site's, not finite, or outside the site's support (where the support does
        not depend on other sites); the message names the entry.
    """
    sites = list(sites)
    out = {}
    for k, v in init.items():
        if k not in sites:
            raise OptionError(f"init names '{k}', which is not a continuous latent site; those are {sites}")
        try:
            t = torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v)
        except (TypeError, ValueError, RuntimeError) as e:
            raise OptionError(f"init['{k}']: expected a tensor or number, got {type(v).__name__} ({e})") from None
        if not t.is_floating_point() and not t.is_complex():
            t = t.to(torch.get_default_dtype())
        expected = tuple(graph.sites[k].value.shape)
        if tuple(t.shape) != expected:
            raise OptionError(f"init['{k}'] has shape {tuple(t.shape)}; the site expects {expected}")
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise OptionError(f"init['{k}'] must hold finite real numbers, got {v!r:.60}")
        support = getattr(graph.sites[k].fn, "support", None)
        if support is not None and not constraints.is_dependent(support):
            try:
                ok = bool(torch.as_tensor(support.check(t.to(graph.sites[k].value.dtype))).all())
            except (RuntimeError, ValueError, TypeError, NotImplementedError):
                ok = True  # a support that cannot check this value: the model's own run will tell
            if not ok:
                raise OptionError(f"init['{k}'] lies outside the support of site '{k}' ({support})")
        out[k] = t.clone()   # a copy: a guide's parameter initialised from it must not write into the user's tensor
    return out
