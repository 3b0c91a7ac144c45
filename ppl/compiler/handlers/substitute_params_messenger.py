"""The messenger that gives ``ppl.param`` sites the values of a probe run, recording
their constraints."""

from __future__ import annotations

from pyro.poutine.messenger import Messenger

__all__ = ["SubstituteParams"]


class SubstituteParams(Messenger):
    """Give every ``ppl.param`` site named in ``values`` that value, and record the
    constraint it is declared with.

    This is ``pyro.poutine.substitute(fn, data=values)`` with two differences, which is
    why the probe run of :class:`~ppl.compiler.parametric.ParametricTables` uses it:

    * it records each substituted param's ``constraint`` (the one of its last
      ``pyro.param`` statement) in :attr:`constraints`, from which the
      :class:`~ppl.compiler.parametric.ParamSpace` of θ is built; Pyro's records nothing;
    * it looks ``values`` up by the site's full name, the name the factor graph and θ use.
      Pyro's looks a param up by ``pyro.params.user_param_name(name)``, which drops the
      ``module$$$`` prefix of the params ``pyro.module`` registers, so a module param
      ``"net$$$weight"`` keyed by its site name would be left unsubstituted.

    Values are used as given: no detaching, no dtype or device change, no constraint
    applied (as Pyro's); a param met twice gets the same value both times.

    Parameters
    ----------
    values : dict[str, torch.Tensor]
        Param site name -> its constrained value.

    Attributes
    ----------
    constraints : dict[str, Constraint or None]
        Name -> the ``constraint`` keyword of the substituted param sites met so far.
    """

    def __init__(self, values: dict):
        super().__init__()
        self.values = values
        self.constraints: dict = {}

    def _pyro_param(self, msg):
        name = msg["name"]
        if name in self.values:
            msg["value"] = self.values[name]
            self.constraints[name] = msg["kwargs"].get("constraint")
