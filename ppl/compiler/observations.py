"""Checking observed values against their sites while the model runs.

The messenger and the check live in
:mod:`ppl.compiler.handlers.check_observations_messenger` (the compiler's messengers are
gathered in :mod:`ppl.compiler.handlers`); this module keeps their import path.
"""

from .handlers.check_observations_messenger import (
    STRUCTURE_CHANGED,
    CheckObservations,
    check_observation,
    structure_change_message,
)

__all__ = ["CheckObservations", "check_observation", "structure_change_message", "STRUCTURE_CHANGED"]
