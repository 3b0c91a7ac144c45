"""Matplotlib helpers of the posteriors' (and ``compare``'s) plots: a figure on its own
Agg canvas, file-name fragments of site names, and the panels of one marginal (bars of a
discrete table, a histogram with density of a continuous marginal).

Nothing here touches pyplot's global state; matplotlib is imported only when a figure is
made.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re

import torch

__all__ = ["figure", "safe_name", "state_label", "plot_table_marginal", "plot_continuous_marginal"]


def figure(figsize=(8.0, 3.5)):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global backend change),
    displayed as a PNG by Jupyter (``_repr_png_``).

    Parameters
    ----------
    figsize : tuple[float, float]
        Width and height in inches.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ImportError
        If matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install matplotlib (or ppl[plots])") from e

    fig = _shown_figure_class(Figure)(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


@functools.lru_cache(maxsize=None)
def _shown_figure_class(figure_class):
    """A Figure subclass that Jupyter displays as a PNG even when pyplot was never imported
    (matplotlib's inline backend registers its display formatter only once pyplot is)."""

    def _repr_png_(self):
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()

    return type("ShownFigure", (figure_class,), {"_repr_png_": _repr_png_, "__module__": __name__})


def safe_name(site: str) -> str:
    """``site`` as a file-name fragment: every run of characters other than letters,
    digits, ``_``, ``.`` and ``-`` becomes ``_`` (``"site"`` if nothing is left).

    Parameters
    ----------
    site : str

    Returns
    -------
    str
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", site) or "site"


def state_label(value) -> str:
    """A support value as a tick label: an integer without decimals, else 3 significant digits.

    Parameters
    ----------
    value : float or 0-d torch.Tensor

    Returns
    -------
    str
    """
    v = float(value)
    return str(int(v)) if v.is_integer() else f"{v:.3g}"


def plot_table_marginal(fig, table: torch.Tensor, support: torch.Tensor, site: str, copies: int) -> int:
    """Bar charts of a discrete marginal's state probabilities, one panel per plate copy.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    table : torch.Tensor
        Probabilities, shape ``batch_shape + (K,)``.
    support : torch.Tensor
        Support values ``(K,) + event_shape`` (tick labels when 1-d, else state indices).
    site : str
        Panel titles.
    copies : int
        Panels drawn: the first ``copies`` plate copies (row-major).

    Returns
    -------
    int
        The number of plate copies of the site.
    """
    flat = table.reshape(-1, table.shape[-1])
    labels = [state_label(v) for v in support] if support.dim() == 1 else [str(k) for k in range(table.shape[-1])]
    shown = min(copies, flat.shape[0])
    for i in range(shown):
        ax = fig.add_subplot(1, shown, i + 1)
        ax.bar(range(len(labels)), flat[i].tolist(), color="C0")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("value")
        ax.set_title(site if flat.shape[0] == 1 else f"{site}[{i}]", fontsize=9)
    fig.axes[0].set_ylabel("posterior probability")
    return flat.shape[0]


def plot_continuous_marginal(fig, marg, site: str, copies: int, num_samples: int, seed) -> int:
    """Histogram (+ density) panels of a continuous marginal, one per element.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    marg : torch.distributions.Distribution
        The marginal; a ``Delta`` (point mass) is drawn as a vertical line, and the
        density is drawn over the histogram where the marginal has a scalar event
        shape and is not ``Empirical``.
    site : str
        Panel titles.
    copies : int
        Panels drawn: the first ``copies`` elements (row-major over ``batch_shape +
        event_shape``).
    num_samples : int
        Draws behind each histogram.
    seed : int or None
        Seed of those draws (the global RNG state is left as it was).

    Returns
    -------
    int
        The number of elements of the site.
    """
    import pyro.distributions as pdist

    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng, torch.no_grad():
        if seed is not None:
            torch.manual_seed(int(seed))
        point = isinstance(marg, pdist.Delta)
        draws = marg.mean.unsqueeze(0) if point else marg.sample((num_samples,))
    draws = draws.detach().cpu().double().reshape(draws.shape[0], -1)
    n = draws.shape[1]
    shown = min(copies, n)
    density = not point and len(marg.event_shape) == 0 and type(marg).__name__ != "Empirical"
    for i in range(shown):
        ax = fig.add_subplot(1, shown, i + 1)
        col = draws[:, i]
        if point:
            ax.axvline(float(col[0]), color="C3", lw=2, label="point mass")
            ax.legend(fontsize=7)
        else:
            finite = col[torch.isfinite(col)]
            ax.hist(finite.tolist(), bins=40, density=True, color="C0", alpha=0.5, label="draws")
            if density and finite.numel() > 1:
                _plot_density(ax, marg, finite, i)
            ax.legend(fontsize=7)
        ax.set_title(site if n == 1 else f"{site}[{i}]", fontsize=9)
        ax.set_xlabel("value")
    fig.axes[0].set_ylabel("density")
    return n


def _plot_density(ax, marg, finite: torch.Tensor, i: int) -> None:
    """The density of element ``i`` of ``marg`` over the range of ``finite`` draws (skipped
    where ``log_prob`` fails)."""
    lo, hi = float(finite.min()), float(finite.max())
    grid = torch.linspace(lo, hi, 200, dtype=torch.float64)
    try:
        shape = (200,) + tuple(marg.batch_shape)
        values = grid.reshape((200,) + (1,) * len(marg.batch_shape)).expand(shape)
        lp = marg.log_prob(values.to(marg.mean.dtype)).detach().cpu().double().reshape(200, -1)[:, i]
        ax.plot(grid.tolist(), lp.exp().tolist(), color="C1", lw=1.5, label="density")
    except (ValueError, RuntimeError, NotImplementedError):
        pass
