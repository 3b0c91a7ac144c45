"""``--plot DIR``: write the PNGs of an ``infer`` or ``compare`` run into a directory.

One job: name the files and call the plotting that already exists
(:meth:`ppl.Posterior.plot`, :meth:`ppl.comparison.Comparison.plot`).
"""

from __future__ import annotations

import os

from ..posterior.plotting import safe_name
from .values import UsageError

__all__ = ["check_directory", "plot_posterior", "plot_comparison"]


def check_directory(directory) -> str:
    """Check ``--plot DIR`` before any work is done: a directory, or nothing yet.

    Parameters
    ----------
    directory : str or os.PathLike

    Returns
    -------
    str
        ``directory`` as a string.

    Raises
    ------
    UsageError
        If ``directory`` exists and is not a directory, or cannot be created.
    """
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"--plot {directory}: exists and is not a directory")
    try:  # created now, so that a directory that cannot be made fails before any work is done
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--plot {directory}: cannot create the directory ({e.strerror or e})") from None
    return directory


def _needs_matplotlib(e: ImportError) -> UsageError:
    return UsageError(f"--plot needs matplotlib ({e}): pip install matplotlib")


def plot_posterior(post, directory, sites=None) -> list:
    """Write ``post.plot(site, DIR/SITE.png)`` for each latent site.

    Parameters
    ----------
    post : ppl.Posterior
    directory : str or os.PathLike
        Where the PNGs go; created (with its parents) if missing.
    sites : list[str], optional
        Latent sites to plot (default all of ``post.sites``).

    Returns
    -------
    list[str]
        The paths written, ``DIR/<site>.png`` (the site name made file-safe), in site order.

    Raises
    ------
    UsageError
        If ``directory`` is an existing file, or matplotlib is not installed.
    PPLError
        What :meth:`ppl.Posterior.plot` raises (e.g. ``IntractableError`` when the draws
        behind a continuous site's histogram would exceed the memory budget).
    """
    directory = check_directory(directory)
    try:
        return [post.plot(site, os.path.join(directory, f"{safe_name(site)}.png")) for site in (sites or post.sites)]
    except ImportError as e:
        raise _needs_matplotlib(e) from e


def plot_comparison(table, directory) -> list:
    """Write :meth:`ppl.comparison.Comparison.plot` with the prefix ``DIR/compare``.

    Parameters
    ----------
    table : ppl.comparison.Comparison
    directory : str or os.PathLike
        Where the PNGs go; created (with its parents) if missing.

    Returns
    -------
    list[str]
        ``DIR/compare_bound.png`` (every method's bound per iteration), then
        ``DIR/compare_<site>.png`` per site (the methods' marginals overlaid, the first
        three latent sites of the reference).

    Raises
    ------
    UsageError
        If ``directory`` is an existing file, or matplotlib is not installed.
    """
    directory = check_directory(directory)
    try:
        return table.plot(os.path.join(directory, "compare"))
    except ImportError as e:
        raise _needs_matplotlib(e) from e
