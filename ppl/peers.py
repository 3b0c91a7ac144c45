"""Peer libraries ppl uses for what they do best, imported in one place: ArviZ (PSIS, R-hat and
ESS, InferenceData, summaries and plots), quietly (some versions announce a refactor with a
FutureWarning on import) and with a clear message when it is missing."""

from __future__ import annotations

import warnings

__all__ = ["import_arviz"]


def import_arviz(call: str | None = None):
    """ArviZ, imported without its import-time FutureWarning.

    Parameters
    ----------
    call : str, optional
        The calling function, for the message (``"to_arviz"``).

    Returns
    -------
    module
        ``arviz``.

    Raises
    ------
    ImportError
        If ArviZ is not installed (``pip install arviz``).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import arviz as az
    except ImportError as e:
        who = f"{call}() needs" if call else "ppl needs"
        raise ImportError(f"{who} ArviZ: pip install arviz") from e
    return az
