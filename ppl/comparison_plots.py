"""The plots of a :class:`~ppl.comparison.Comparison` (``Comparison.plot``): every
method's bound per iteration on one axis, and the methods' marginals of a site overlaid.

Matplotlib on an Agg canvas (:func:`ppl.posterior.plotting.figure`): no display needed,
pyplot's state untouched.
"""

from __future__ import annotations

import math
import os

import torch

from .errors import DataError, PPLError
from .posterior.figures import write_figure
from .posterior.plotting import figure, safe_name

__all__ = ["write_plots", "comparison_figures", "bound_figure"]


def write_plots(posteriors, path_prefix, **kw) -> list:
    """Write the PNGs of :meth:`ppl.comparison.Comparison.plot` (see it for what each shows):
    ``{path_prefix}_bound.png``, then ``{path_prefix}_{site}.png`` per site.

    Parameters
    ----------
    posteriors : dict[str, Posterior or Exception]
        Row label -> the method's Posterior, or the error that stopped it (skipped).
    path_prefix : str or os.PathLike
        Directory and file stem (directories are created).
    **kw
        As :func:`comparison_figures`.

    Returns
    -------
    list[str]
        The paths written, bound plot first.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    DataError
        A site in ``sites`` that no posterior describes.
    OptionError
        A file that cannot be written (:func:`~ppl.posterior.figures.write_figure`).
    """
    path_prefix = os.fspath(path_prefix)
    figures = comparison_figures(posteriors, **kw)   # checks the sites before anything is written
    paths = []
    for i, (name, fig) in enumerate(figures.items()):
        path = f"{path_prefix}_bound.png" if i == 0 else f"{path_prefix}_{safe_name(name)}.png"
        paths.append(write_figure(fig, path, default_name=safe_name(name), call="plot()"))
    return paths


def comparison_figures(posteriors, *, graph=None, reference=None, title=None, sites=None, copies: int = 3,
                       max_sites: int = 3) -> dict:
    """The figures of :meth:`ppl.comparison.Comparison.plot`, not written anywhere.

    Parameters
    ----------
    posteriors : dict[str, Posterior or Exception]
        Row label -> the method's Posterior, or the error that stopped it (skipped).
    graph : FactorGraph, optional
        The compiled model: tells discrete sites (bar charts) from continuous ones
        (mean ± sd); without it every site is drawn as continuous.
    reference : str, optional
        Label of the reference row: its sites are the default ``sites``, its log
        evidence is drawn black.
    title : str, optional
        Title of the bound plot (default ``"ppl.compare"``).
    sites : list[str], optional
        Latent sites to plot (default: the first ``max_sites`` latent sites of the
        reference, else of the first posterior).
    copies : int
        Plate copies / elements per site shown.
    max_sites : int
        How many sites the default picks.

    Returns
    -------
    dict[str, matplotlib.figure.Figure]
        ``"bound"`` first, then one figure per site (keyed by the site name; a site named
        ``"bound"`` as ``"bound (site)"``); each on its own Agg canvas, displayed inline by
        Jupyter.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    DataError
        A site in ``sites`` that no posterior describes.
    """
    ok = {label: p for label, p in posteriors.items() if not isinstance(p, Exception)}
    if sites is None:
        first = ok.get(reference) or next(iter(ok.values()), None)
        sites = list(first.sites)[:max_sites] if first is not None else []
    known = {s for p in ok.values() for s in p.sites}
    for site in sites:
        if site not in known:
            raise DataError(f"'{site}' is not a latent site of any posterior in this comparison; "
                            f"latent sites: {sorted(known)}")
    figures = {"bound": bound_figure(ok, reference=reference, title=title)}
    for site in sites:
        discrete = graph is not None and site in graph.discrete_latent()
        fig = figure()
        if discrete:
            _plot_discrete_overlay(fig, site, ok, copies)
        else:
            _plot_continuous_overlay(fig, site, ok, copies)
        figures[site if site != "bound" else "bound (site)"] = fig
    return figures


def bound_figure(ok, *, reference=None, title=None):
    """The bound plot: the objective per iteration (``history``) of every method that
    gives a bound, exact log evidence (methods without history) as dashed lines.

    Parameters
    ----------
    ok : dict[str, Posterior]
        Row label -> posterior, the methods that ran.
    reference : str, optional
        Label whose log-evidence line is drawn black.
    title : str, optional
        Axes title (default ``"ppl.compare"``).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    fig = figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    curves = {label: [float(v) for v in p.history] for label, p in ok.items()
              if p.elbo is not None and len(p.history) > 0}
    lengths = [len(h) for h in curves.values() if len(h) > 1]
    log_x = bool(lengths) and max(lengths) >= 20 * min(lengths)
    lows, highs = [], []
    for j, (label, hist) in enumerate(curves.items()):
        finite = [v for v in hist if math.isfinite(v)]
        if not finite:
            continue
        x = list(range(1, len(hist) + 1) if log_x else range(len(hist)))
        color = f"C{j % 10}"
        if len(hist) > 30:  # a noisy stochastic estimate per step: faint, with its running mean
            window = max(5, len(hist) // 20)
            smooth = _running_mean(hist, window)
            ax.plot(x, hist, lw=0.6, alpha=0.25, color=color)
            ax.plot(x, smooth, lw=1.6, color=color, label=f"{label} (running mean of {window})")
            shown = [v for v in smooth[len(smooth) // 10:] if math.isfinite(v)] or finite
        else:
            ax.plot(x, hist, lw=1.2, color=color, marker="o", ms=3, label=label)
            shown = finite
        lows.append(min(shown))
        highs.append(max(shown))
    for label, p in ok.items():
        if p.log_evidence is not None and not p.history:
            ax.axhline(p.log_evidence, ls="--", lw=1.2, color="black" if label == reference else None,
                       label=f"{label}: log p(x)")
            lows.append(p.log_evidence)
            highs.append(p.log_evidence)
    if lows:
        lo, hi = min(lows), max(highs)
        pad = 0.05 * (hi - lo) if hi > lo else max(1.0, 0.01 * abs(hi))
        ax.set_ylim(lo - pad, hi + pad)
    else:
        ax.text(0.5, 0.5, "no method reported a bound", ha="center", va="center", transform=ax.transAxes)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("iteration (sweep / step; 1-based on a log axis)" if log_x else "iteration (sweep / step)")
    ax.set_ylabel("bound / log evidence (nats)")
    ax.set_title(title or "ppl.compare", fontsize=10)
    if curves or lows:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _running_mean(values, window):
    """Trailing running mean of ``values`` over ``window`` entries (fewer at the start;
    non-finite entries skipped)."""
    v = torch.tensor(values, dtype=torch.float64)
    ok = torch.isfinite(v)
    sums = torch.cumsum(torch.where(ok, v, 0.0), 0)
    counts = torch.cumsum(ok.double(), 0)
    pad = torch.zeros(window, dtype=torch.float64)
    sums = sums - torch.cat([pad, sums])[: len(v)]
    counts = counts - torch.cat([pad, counts])[: len(v)]
    return (sums / counts).tolist()


def _plot_discrete_overlay(fig, site, posteriors, copies):
    """Grouped bars of ``probs(site)`` per method, one panel per plate copy."""
    tables = {}
    for label, p in posteriors.items():
        if site in p.sites and hasattr(p, "probs"):
            try:
                tables[label] = p.probs(site).detach().cpu().double()
            except (PPLError, TypeError):
                continue
    if not tables:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, f"no method gives probabilities of '{site}'", ha="center", va="center",
                transform=ax.transAxes)
        return
    first = next(iter(tables.values()))
    k = first.shape[-1]
    n_copies = max(1, math.prod(first.shape[:-1]))
    shown = min(copies, n_copies)
    axes = [fig.add_subplot(1, shown, i + 1) for i in range(shown)]
    width = 0.8 / len(tables)
    for j, (label, probs) in enumerate(tables.items()):
        flat = probs.reshape(-1, probs.shape[-1])
        for i, ax in enumerate(axes):
            ax.bar([s + (j - (len(tables) - 1) / 2) * width for s in range(k)], flat[i].tolist(), width=width,
                   label=label if i == 0 else None)
    for i, ax in enumerate(axes):
        ax.set_xticks(range(k))
        ax.set_xlabel("state")
        ax.set_ylim(0, 1.05)
        ax.set_title(site if n_copies == 1 else f"{site}[{i}]", fontsize=9)
    axes[0].set_ylabel("posterior probability")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"marginals of '{site}'" + (f" (first {shown} of {n_copies} copies)" if n_copies > shown else ""),
                 fontsize=10)
    fig.tight_layout()


def _plot_continuous_overlay(fig, site, posteriors, copies):
    """Mean ± sd per method for the first ``copies`` elements of a continuous site."""
    ax = fig.add_subplot(1, 1, 1)
    stats = {}
    for label, p in posteriors.items():
        if site not in p.sites:
            continue
        try:
            mean = p.mean(site).detach().cpu().double().reshape(-1)
            sd = p.variance(site).detach().cpu().double().reshape(-1).clamp_min(0).sqrt()
        except (PPLError, TypeError, NotImplementedError, RuntimeError):
            continue
        stats[label] = (mean, torch.nan_to_num(sd, nan=0.0))
    if not stats:
        ax.text(0.5, 0.5, f"no method gives moments of '{site}'", ha="center", va="center", transform=ax.transAxes)
        return
    n = max(m.numel() for m, _ in stats.values())
    shown = min(copies, n)
    width = 0.6 / max(len(stats) - 1, 1)
    for j, (label, (mean, sd)) in enumerate(stats.items()):
        xs = [i + (j - (len(stats) - 1) / 2) * width for i in range(min(shown, mean.numel()))]
        ax.errorbar(xs, mean[: len(xs)].tolist(), yerr=sd[: len(xs)].tolist(), fmt="o", capsize=3, label=label)
    ax.set_xlim(-0.5, shown - 0.5)
    ax.set_xticks(range(shown))
    ax.set_xticklabels([site if n == 1 else f"{site}[{i}]" for i in range(shown)], fontsize=8)
    ax.set_ylabel("posterior mean ± sd")
    ax.set_title(f"marginals of '{site}'" + (f" (first {shown} of {n} elements)" if n > shown else ""), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
