"""The messenger that fixes latent sample sites at given values (CAVI's sigma points)."""

from __future__ import annotations

from pyro.poutine.messenger import Messenger

__all__ = ["SubstituteLatents"]


class SubstituteLatents(Messenger):
    """Give every latent sample site named in ``values`` that value (not observed: its own
    factor is evaluated at it, as for any sampled value).

    Unlike ``pyro.poutine.condition``, the site stays latent (``is_observed`` False), so
    the factor graph's roles do not change; unlike ``pyro.poutine.substitute``, it acts on
    sample sites, not param sites.

    Parameters
    ----------
    values : dict[str, torch.Tensor]
        Site name -> value (a tensor of the site's shape; a
        :class:`~ppl.compiler.probe.Probe` in a probe run).  Observed sites are left
        alone.
    """

    def __init__(self, values: dict):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg):
        if msg["name"] in self.values and not msg["is_observed"]:
            msg["value"] = self.values[msg["name"]]
            msg["done"] = True
