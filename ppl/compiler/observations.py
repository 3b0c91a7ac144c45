"""Checking observed values against their sites while the model runs.

The messenger and the check live in
:mod:`ppl.compiler.handlers.check_observations_messenger` (the compiler's messengers are
gathered in :mod:`ppl.compiler.handlers`); this module keeps their import path.
"""

from .handlers.check_observations_messenger import CheckObservations, check_observation

__all__ = ["CheckObservations", "check_observation"]
