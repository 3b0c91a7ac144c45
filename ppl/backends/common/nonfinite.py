"""Where a diverged model/guide pair stops being finite: the diagnosis behind a
:class:`~ppl.errors.NumericalError` that names the site (used by SVI; any method with a
Pyro guide can call it)."""

from __future__ import annotations

import pyro
import torch

__all__ = ["nonfinite_sites", "nonfinite_sample_sites", "nonfinite_names"]


def nonfinite_sample_sites(trace) -> list:
    """The sample sites of a Pyro ``trace`` (internal ``_``-named ones left out) whose log
    density at their value has a NaN or infinite entry, in trace order."""
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not name.startswith("_")
            and not bool(torch.isfinite(site["fn"].log_prob(site["value"])).all())]


def nonfinite_names(trace) -> str:
    """:func:`nonfinite_sample_sites` of a ``trace`` for a message, observed sites first:
    ``"observed site 'y', latent site 'a'"`` (``""`` when there are none)."""
    bad = sorted((not trace.nodes[n]["is_observed"], n) for n in nonfinite_sample_sites(trace))
    return ", ".join(f"{'latent' if latent else 'observed'} site '{n}'" for latent, n in bad)


def nonfinite_sites(model, guide, kwargs) -> list:
    """Where a diverged SVI run is not finite: the guide's params with a NaN/inf entry, and
    the sample sites whose log density is NaN/inf at one fresh draw of the guide (replayed
    in the model).  Best effort: ``[]`` when a trace itself fails.

    Returns
    -------
    list[str]
        ``"model site 'name'"``, ``"param 'name'"``, ``"guide site 'name'"`` entries, in
        that order."""
    from pyro import poutine

    bad = []
    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            g = poutine.trace(guide).get_trace(**kwargs)
            m = poutine.trace(poutine.replay(model, trace=g)).get_trace(**kwargs)
            for who, tr in (("guide", g), ("model", m)):
                bad.extend(f"param '{name}'" for name, site in tr.nodes.items() if site["type"] == "param"
                           and torch.is_tensor(site["value"]) and not bool(torch.isfinite(site["value"]).all()))
                bad.extend(f"{who} site '{name}'" for name in nonfinite_sample_sites(tr))
    except Exception:  # noqa: BLE001 - a diagnosis only: a failing trace names nothing
        return []
    order = {"model": 0, "param": 1, "guide": 2}
    return sorted(dict.fromkeys(bad), key=lambda b: order[b.split(" ")[0]])
