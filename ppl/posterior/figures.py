"""The figures of a Posterior: one site's marginal (``post.plot``: matplotlib on its own Agg
canvas, pyplot untouched) and ArviZ's plots of ``post.to_arviz()`` (``post.plot_arviz``:
``az.plot_posterior``, ``az.plot_forest``, ``az.plot_ppc``, which draw through pyplot)."""

from __future__ import annotations

import os

from ..errors import OptionError, UnsupportedModelError
from .checks import check_count, check_memory, check_seed, numel
from .plotting import figure, plot_continuous_marginal, plot_table_marginal, safe_name

__all__ = ["ARVIZ_PLOTS", "marginal_figure", "arviz_plot", "write_figure", "checked_path", "written"]

#: ``kind`` of :func:`arviz_plot` -> the ArviZ function that draws it.
ARVIZ_PLOTS = {"posterior": "plot_posterior", "forest": "plot_forest", "ppc": "plot_ppc"}


def marginal_figure(post, site: str, path=None, copies: int = 4, num_samples: int = 2000, seed=0):
    """The figure of :meth:`ppl.posterior.base.Posterior.plot` (see it for the parameters,
    what is drawn and what it raises).

    Returns
    -------
    str or matplotlib.figure.Figure
        The path of the file written when ``path`` is given (:func:`write_figure`: inside
        ``path`` as ``<site>.png`` when it is a directory; ``.png`` added when it has no
        extension); else the Figure (nothing written; Jupyter displays it inline).

    Raises
    ------
    OptionError
        Also for a ``path`` with an extension matplotlib cannot write, or one that cannot
        be written (see :func:`write_figure`).
    """
    num_samples = check_count(num_samples, call="plot")
    seed = check_seed(seed, call="plot")
    if site not in post.sites:
        raise post._unknown(site)
    checked_path(path, call="plot()")
    discrete = site in getattr(post, "_supports", {}) and hasattr(post, "probs")
    marg = None
    if not discrete:
        marg = post.marginal(site)
        shape = tuple(marg.batch_shape) + tuple(marg.event_shape)
        check_memory(num_samples, numel(shape) * 8, post.budget, what=f"plot('{site}', num_samples={num_samples})",
                     detail=f"{numel(shape):,} elements × 8 bytes")
    fig = figure()
    if discrete:
        table = post.probs(site).detach().cpu().double()
        n = plot_table_marginal(fig, table, post._supports[site], site, copies)
    else:
        n = plot_continuous_marginal(fig, marg, site, copies, num_samples, seed)
    shown = min(copies, n)
    more = f" (first {shown} of {n})" if n > shown else ""
    fig.suptitle(f"posterior marginal of '{site}' ({post.method}){more}", fontsize=10)
    fig.tight_layout()
    if path is None:
        return fig
    return write_figure(fig, path, default_name=safe_name(site), call="plot()")


def write_figure(fig, path, *, default_name: str, call: str) -> str:
    """Write ``fig`` to ``path`` and return the path of the file written: into a directory
    (an existing one, or a path ending in a separator) as ``<default_name>.png``; a path
    without an extension gets ``.png`` (matplotlib's default); other extensions pick the
    format (``.pdf``, ``.svg``...).  Parent directories are created.

    Raises
    ------
    OptionError
        If the extension is not a format matplotlib writes (the message lists them), or
        the file cannot be written (an ``OSError``: the message names the path).
    """
    path = os.fspath(path)
    if os.path.isdir(path) or path.endswith((os.sep, "/")):
        path = os.path.join(path, f"{default_name}.png")
    ext = os.path.splitext(path)[1][1:].lower()
    if not ext:
        path, ext = path + ".png", "png"
    formats = fig.canvas.get_supported_filetypes()
    if ext not in formats:
        raise OptionError(f"{call}: path {path!r} has the extension '.{ext}', which is not an image format "
                          f"matplotlib writes; use one of {sorted('.' + f for f in formats)} (e.g. '.png')")

    def write():
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        fig.savefig(path, dpi=100, format=ext)

    written(write, path, call=call)
    return path


def checked_path(path, *, call: str):
    """``path`` as given when it is None, a str or an ``os.PathLike``.

    Raises
    ------
    OptionError
        Naming ``path`` and ``call``, for any other type."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise OptionError(f"{call}: path must be None, a str or an os.PathLike, got {type(path).__name__}")
    return path


def written(write, path, *, call: str, what: str = "the figure") -> None:
    """Run ``write()``, which writes ``what`` to ``path``.

    Raises
    ------
    OptionError
        Naming ``call`` and ``path``, when ``write`` raises an ``OSError`` (a folder that
        cannot be written, a path that is a device or a directory, a full disk)."""
    try:
        write()
    except OSError as e:
        raise OptionError(f"{call}: cannot write {what} to {str(path)!r}: {type(e).__name__}: {e}") from e


def arviz_plot(post, kind: str = "posterior", num_samples: int = 1000, seed=None, **kw):
    """The plot of :meth:`ppl.posterior.base.Posterior.plot_arviz` (see it for the
    parameters and what it raises).

    Returns
    -------
    matplotlib.axes.Axes or numpy.ndarray of Axes
        What the ArviZ function returns.
    """
    from ..peers import import_arviz

    if kind not in ARVIZ_PLOTS:
        raise OptionError(f"plot_arviz(): kind must be one of {sorted(ARVIZ_PLOTS)}, got {kind!r}")
    ppc = kind == "ppc"
    idata = post.to_arviz(num_samples, seed=seed, predictive=ppc, log_likelihood=False)
    if ppc and "posterior_predictive" not in idata.groups():
        raise UnsupportedModelError(f"plot_arviz(kind='ppc'): the posterior of method '{post.method}' gives no "
                                    f"posterior predictive draws ({idata.posterior.attrs.get('ppl_notes', '')})")
    az = import_arviz("plot_arviz")
    return getattr(az, ARVIZ_PLOTS[kind])(idata, **kw)
