"""Errors and warnings raised by ppl.

Every error derives from :class:`PPLError`; the ones that correspond to a builtin
category also derive from that builtin, so ``except ValueError`` keeps working in
user code.  Messages always name the site or argument at fault and say what was
expected and what was found.
"""

from __future__ import annotations

__all__ = [
    "PPLError",
    "ModelError",
    "DataError",
    "UnsupportedModelError",
    "IntractableError",
    "BackendNotFoundError",
    "OptionError",
    "UnknownOptionError",
    "NumericalError",
    "ConvergenceWarning",
    "BoundDecreaseWarning",
    "TrustWarning",
]


class PPLError(Exception):
    """Base class of every error ppl raises on purpose."""


class ModelError(PPLError):
    """The model itself is malformed: a duplicate site name, a bad plate, a model that
    raises while being traced.  Raised by :func:`ppl.compile` and everything that
    traces a model."""


class DataError(PPLError, ValueError):
    """The ``data`` mapping does not fit the model: an unknown key, a value of the
    wrong shape or dtype, NaN/inf, or a value outside the support of the site it
    observes.  The message names the key/site, the expected and the actual value.

    Attributes
    ----------
    log_evidence : float or None
        ``-inf`` when the error says the evidence has probability zero under the model
        (``method="auto"`` then stops: no other method can give a number); else None.
    """

    def __init__(self, message: str = "", *, log_evidence: float | None = None):
        super().__init__(message)
        self.log_evidence = log_evidence

    def __reduce__(self):  # pickles with its keyword (worker processes send errors back)
        return (_rebuild_data_error, (self.args[0] if self.args else "", self.log_evidence))


def _rebuild_data_error(message, log_evidence):
    return DataError(message, log_evidence=log_evidence)


class UnsupportedModelError(PPLError):
    """A backend cannot handle this model.  The message names the site(s), the
    reason, and the methods that do apply."""


class IntractableError(PPLError, MemoryError):
    """Exact inference would need more memory than the budget allows.

    Attributes
    ----------
    treewidth : int
        Upper bound on the treewidth of the moral graph (widest elimination bucket − 1).
    clique_states : int
        Number of joint states of the largest intermediate table (one plate copy).
    bytes : int
        Memory the largest intermediate table would take, in bytes.
    budget : int
        The memory budget in bytes that was exceeded.
    """

    def __init__(self, message: str, *, treewidth=None, clique_states=None, bytes=None, budget=None):
        super().__init__(message)
        self.treewidth = treewidth
        self.clique_states = clique_states
        self.bytes = bytes
        self.budget = budget


class BackendNotFoundError(PPLError, KeyError):
    """``method=`` names no registered backend.  The message lists the registered names."""

    def __str__(self):  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class OptionError(PPLError, ValueError):
    """An option of ``ppl.infer`` has a value the backend cannot use: an unknown guide,
    loss or optimiser name, a number out of range, options that exclude each other.  The
    message names the option, the value given and the values accepted.  (An option
    *name* the backend does not take is an :class:`UnknownOptionError`, also a
    ``TypeError``.)"""


class UnknownOptionError(OptionError, TypeError):
    """``ppl.infer`` was given an option name the backend does not declare; the message
    lists the options it takes.  A ``TypeError`` too, as Python raises for an unexpected
    keyword argument."""


class NumericalError(PPLError, FloatingPointError):
    """An objective or a parameter became NaN or infinite during an iterative method
    (e.g. an SVI loss at some step).  The message gives the step and what usually fixes it
    (a smaller learning rate, a better initialisation, float64)."""


class ConvergenceWarning(UserWarning):
    """An iterative backend stopped at its iteration limit before meeting ``tol``."""


class BoundDecreaseWarning(UserWarning):
    """A bound that theory says cannot decrease (EM log-likelihood, sequential CAVI
    ELBO) decreased by more than round-off; the message gives the iteration."""


class TrustWarning(UserWarning):
    """A result whose trust verdict is ``"unreliable"``: the message names the diagnostic
    that failed and what to try next (``post.trust`` holds the details)."""
