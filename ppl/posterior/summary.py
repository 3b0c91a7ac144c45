"""The summary table of a Posterior (``post.summary()``) and its notebook display
(``post._repr_html_()``).

A site held as draws (NUTS chains, Laplace and Pathfinder draws: a
:class:`~ppl.posterior.draws.DrawsPosterior`) is summarised by ``arviz.summary``: mean, sd and
the highest-density interval of the draws, and, across a sampler's chains (two or more), the
Monte Carlo standard errors, bulk and tail ESS and rank-normalised split R-hat (Vehtari et al.
2021, "Rank-normalization, folding, and localization", Bayesian Analysis 16(2)).  Every other
site keeps its exact numbers: moments and quantiles of its marginal (a probability table,
a closed-form family), no Monte Carlo.  The quantile columns are
:meth:`~ppl.posterior.base.Posterior.quantile` in both cases (of draws: the sample quantile).
"""

from __future__ import annotations

import html
import math

import torch

from ..errors import OptionError, PPLError
from ..table import Table, format_value, html_table
from ..peers import import_arviz
from .checks import check_level

__all__ = ["ROWS_PER_SITE", "check_levels", "summary_table", "posterior_html"]

#: Rows of one site shown (its first elements, row-major).
ROWS_PER_SITE = 20

_COLUMN_ORDER = ("site", "mean", "sd")


def check_levels(quantiles) -> list:
    """The quantile levels of ``summary(quantiles=...)`` as floats.

    Parameters
    ----------
    quantiles : sequence of float
        Levels in ``[0, 1]``.

    Returns
    -------
    list[float]

    Raises
    ------
    OptionError
        If ``quantiles`` is not a sequence, or holds a level that is not a number in
        ``[0, 1]`` (the message names ``quantiles``).
    """
    try:
        levels = list(quantiles)
    except TypeError:
        raise OptionError(f"summary(): quantiles must be a sequence of numbers in [0, 1], got {quantiles!r}") \
            from None
    return [check_level(q, name="quantiles", call="summary") for q in levels]


def _label(site: str, i: int, n: int) -> str:
    return site if n == 1 else f"{site}[{i}]"


def _exact_rows(post, site: str, levels: list) -> list:
    """Rows of a site from its marginal: mean, sd and quantiles, no Monte Carlo."""
    mean = post.mean(site).reshape(-1)
    var = post.variance(site).reshape(-1)
    qs = [post.quantile(site, q).reshape(-1) for q in levels]
    rows = []
    for i in range(min(mean.numel(), ROWS_PER_SITE)):
        row = {"site": _label(site, i, mean.numel()), "mean": float(mean[i]), "sd": float(var[i].clamp_min(0).sqrt())}
        row.update({f"{q:.0%}": float(qv[i]) for q, qv in zip(levels, qs)})
        rows.append(row)
    return rows


def _draw_rows(post, site: str, draws: torch.Tensor, real: bool, levels: list) -> list:
    """Rows of a site held as draws ``(C, S) + shape``: ``arviz.summary`` of its first
    elements (diagnostics across real chains, two or more), quantiles of the draws."""
    az = import_arviz("summary")
    chains, per = int(draws.shape[0]), int(draws.shape[1])
    flat = draws.detach().to("cpu", torch.float64).reshape(chains, per, -1)
    n = flat.shape[-1]
    shown = flat[:, :, :ROWS_PER_SITE].numpy()
    kind = "all" if real and chains >= 2 else "stats"
    frame = az.summary({"v": shown}, kind=kind, round_to="none")
    qs = [post.quantile(site, q).reshape(-1) for q in levels]
    rows = []
    for i, (_, stats) in enumerate(frame.iterrows()):
        row = {"site": _label(site, i, n), "mean": float(stats["mean"]), "sd": float(stats["sd"])}
        row.update({f"{q:.0%}": float(qv[i]) for q, qv in zip(levels, qs)})
        row.update({k: float(v) for k, v in stats.items() if k not in ("mean", "sd")})
        rows.append(row)
    return rows


def summary_table(post, quantiles=(0.05, 0.5, 0.95)) -> Table:
    """The table of :meth:`ppl.posterior.base.Posterior.summary` (see it for the columns).

    Parameters
    ----------
    post : Posterior
    quantiles : sequence of float
        Levels in ``[0, 1]``, one column each (``"5%"``...).

    Returns
    -------
    ppl.table.Table
        One row per site (per element of a plated site, the first :data:`ROWS_PER_SITE`);
        the trust line, and how the draws were summarised, as notes.

    Raises
    ------
    OptionError
        If ``quantiles`` is not a sequence of numbers in ``[0, 1]``.
    DataError
        If a site's marginal is not available (e.g. ``marginals=False``).
    ImportError
        If a site is held as draws and ArviZ is not installed.
    """
    levels = check_levels(quantiles)
    rows, layouts = [], set()
    for site in post.sites:
        held = post._summary_draws(site)
        if held is None:
            rows.extend(_exact_rows(post, site, levels))
        else:
            draws, real = held
            rows.extend(_draw_rows(post, site, draws, real, levels))
            layouts.add((int(draws.shape[0]), int(draws.shape[1]), bool(real)))
    columns = list(_COLUMN_ORDER) + [f"{q:.0%}" for q in levels]
    for row in rows:  # then the columns arviz.summary adds, in its order
        columns.extend(k for k in row if k not in columns)
    notes = [str(post.trust)] if post.trust is not None else []
    for chains, per, real in sorted(layouts):
        what = f"{chains} chain(s) of a sampler" if real else "independent draws"
        diag = "; mcse, ess and r_hat across the chains" if real and chains >= 2 else ""
        notes.append(f"mean, sd, hdi: arviz.summary of {chains * per:,} draws ({what}){diag}")
    return Table(rows, columns=columns, title=f"posterior summary ({post.method})", notes=notes)


def posterior_html(post) -> str:
    """A Posterior as HTML (Jupyter's display): method, trust verdict and its first reason,
    ELBO / log evidence, time, then the summary table (every string escaped).

    Parameters
    ----------
    post : Posterior

    Returns
    -------
    str
        ``<div>`` blocks made by :func:`ppl.table.html_table`; a summary that cannot be
        computed is replaced by its error message.
    """
    trust = getattr(post, "trust", None)
    pairs = [("method", str(post.method)),
             ("trust", trust.line() if trust is not None else "not assessed")]
    if post.log_evidence is not None:
        pairs.append(("log evidence (nats)", format_value(float(post.log_evidence))))
    if post.elbo is not None and (post.log_evidence is None or not math.isclose(post.elbo, post.log_evidence)):
        pairs.append(("ELBO (nats)", format_value(float(post.elbo))))
    pairs.append(("elapsed (s)", format_value(float(post.elapsed))))
    head = html_table(["quantity", "value"], [list(p) for p in pairs], title=f"Posterior ({post.method})")
    try:
        body = post.summary()._repr_html_()
    except (PPLError, ImportError) as e:
        body = f"<p>summary not available: {html.escape(str(e))}</p>"
    return head + "\n" + body
