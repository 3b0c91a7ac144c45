"""The pieces of one SVI optimisation step: the loss (an ELBO estimator), the optimiser
and its learning-rate schedule, and a guarded ``svi.step``."""

from __future__ import annotations

import math

import pyro
import pyro.optim
import torch
from pyro.infer import ReweightedWakeSleep, RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from ...errors import ModelError, NumericalError, OptionError, PPLError
from ..common.nonfinite import nonfinite_sites

__all__ = ["LOSSES", "OPTIMIZERS", "make_optimizer", "make_loss", "check_loss", "svi_step"]

#: ``loss=`` names: ``Trace_ELBO`` (``TraceEnum_ELBO`` with enumerated sites),
#: ``TraceMeanField_ELBO`` (analytic KL terms), ``RenyiELBO`` (Li & Turner 2016),
#: ``ReweightedWakeSleep`` (Bornschein & Bengio 2015).
LOSSES = ("elbo", "meanfield", "renyi", "rws")

#: ``optim=`` names -> torch optimisers (``lr`` is their learning rate; wrapped in Pyro's
#: ``ExponentialLR`` scheduler for ``lr_decay``).
OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "clipped_adam": pyro.optim.clipped_adam.ClippedAdam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def check_loss(loss: str, alpha: float) -> str:
    """``loss`` after the checks that involve another option (``alpha`` of ``"renyi"``).

    Raises
    ------
    OptionError
        ``alpha=1`` with ``loss="renyi"`` (that is the ELBO itself)."""
    if loss == "renyi" and alpha == 1:
        raise OptionError("option alpha=1 with loss='renyi' is the ELBO itself: use loss='elbo' or another alpha")
    return loss


def make_optimizer(optim, lr: float, gamma: float):
    """A Pyro optimiser; names get an exponential learning-rate schedule (factor ``gamma``
    per step), stepped by the training loop.  A ``pyro.optim.PyroOptim`` is used as is."""
    if isinstance(optim, pyro.optim.PyroOptim):
        return optim
    cls = OPTIMIZERS[optim]
    if gamma == 1.0:
        return pyro.optim.PyroOptim(cls, {"lr": float(lr)})
    return pyro.optim.ExponentialLR({"optimizer": cls, "optim_args": {"lr": float(lr)}, "gamma": gamma})


def make_loss(name, enumerated, num_particles, vectorize, mpn, alpha, model_has_params):
    """The Pyro ELBO object of loss ``name`` (see :data:`LOSSES`); ``mpn`` is the model's
    max plate nesting."""
    common = dict(num_particles=num_particles, max_plate_nesting=mpn,
                  vectorize_particles=bool(vectorize) and num_particles > 1)
    if name == "elbo":
        return TraceEnum_ELBO(**common) if enumerated else Trace_ELBO(**common)
    if name == "meanfield":
        return TraceMeanField_ELBO(**common)
    if name == "renyi":
        return RenyiELBO(alpha=float(alpha), **common)
    return ReweightedWakeSleep(model_has_params=model_has_params, **common)


def svi_step(svi, kwargs, step: int, lr) -> float:
    """One ``svi.step``: the loss (negated ELBO estimate, nats).

    Raises
    ------
    NumericalError
        A NaN/inf loss, a NaN raised inside the step, or after step 0 a distribution
        parameter pushed out of its support (diverged parameters).
    ModelError
        Any other failure of the model or guide during the step."""
    try:
        value = svi.step(**kwargs)
    except PPLError:
        raise
    except (ValueError, RuntimeError) as e:
        message = str(e)
        diverged = step > 0 and "to satisfy the constraint" in message  # a parameter pushed out of its support
        if diverged or "nan" in message.lower() or "inf" in message.lower():
            first = message.splitlines()[0].rstrip(":")
            raise NumericalError(f"SVI step {step}: {type(e).__name__}: {first}{_where(svi, kwargs)}"
                                 f"; parameters may have diverged: lower lr (now {lr}) or use float64") from e
        raise ModelError(f"SVI step {step} failed: {type(e).__name__}: {message}") from e
    if isinstance(value, tuple):  # ReweightedWakeSleep: (wake-theta loss, phi loss)
        value = value[0]
    if not math.isfinite(value):
        raise NumericalError(f"the SVI loss is {value} at step {step}: the ELBO estimate is not finite (parameters "
                             f"diverged, or the guide puts mass where the model has none){_where(svi, kwargs)}; "
                             f"lower lr (now {lr}), use init='median', or float64")
    return float(value)


def _where(svi, kwargs) -> str:
    bad = nonfinite_sites(svi.model, svi.guide, kwargs)
    return f"; not finite at {', '.join(bad[:5])}" if bad else ""
