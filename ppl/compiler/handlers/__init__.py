"""The compiler's Pyro messengers (effect handlers), one per module as in
``pyro.poutine`` (``<name>_messenger.py``).

* :class:`CheckObservations` — validate and cast observed values as they enter the model;
* :class:`TrackProvenance` — wrap every value in a tensor naming its site (the traced run);
* :class:`EnumerateSites` — set discrete latents to their whole support (enumerated runs);
* :class:`SubstituteParams` — give ``ppl.param`` sites given values, recording their
  constraints (probe runs; see its docstring for how it differs from
  ``pyro.poutine.substitute``);
* :class:`SubstituteLatents` — fix latent sample sites at given values, keeping them latent.

Each is a :class:`pyro.poutine.messenger.Messenger`: use it as a context manager or call
it on a model function (``CheckObservations(model, obs)(fn)``), as Pyro's handlers.
"""

from .check_observations_messenger import CheckObservations
from .enumerate_sites_messenger import EnumerateSites
from .substitute_latents_messenger import SubstituteLatents
from .substitute_params_messenger import SubstituteParams
from .track_provenance_messenger import TrackProvenance

__all__ = ["CheckObservations", "EnumerateSites", "SubstituteLatents", "SubstituteParams", "TrackProvenance"]
