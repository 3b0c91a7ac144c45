"""Pyro's distributions, re-exported so that model code reads ``import ppl.distributions as dist``.

Everything here *is* ``pyro.distributions``: a model written with these stays a valid
Pyro model.  See https://docs.pyro.ai/en/stable/distributions.html for the reference.
"""

from pyro.distributions import *  # noqa: F401,F403
from pyro.distributions import __all__ as _pyro_all
from pyro.distributions import constraints  # noqa: F401

__all__ = list(_pyro_all) + ["constraints"]
