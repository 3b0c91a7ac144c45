"""The machinery behind :func:`ppl.compare`: run several backends on one compiled model,
measure each against a reference, and present the result as a :class:`Comparison`
(a printable table, a pandas DataFrame, PNG plots).

Columns (nats for every log quantity; ``None`` where a value does not apply):

==================== =========================================================================
``method``           the row's label: a backend name, or ``name(option=value, ...)``
``log_evidence``     ``log p(x)`` (exact methods; EM: at its learned θ)
``elbo``             the evidence lower bound ``L(q) = log p(x) − KL(q‖p(h|x))``
``kl_gap``           ``log_evidence(exact reference) − elbo`` = ``KL(q‖p)`` (eq. 19.1 of
                     Goodfellow et al. 2016); only with an exact reference, and not for a
                     method that learned ``ppl.param`` values (it bounds another ``log p(x)``)
``map_log_joint``    ``log p(ĥ, x)`` at the method's MAP point (``map``; ``exact``'s max-product)
``max_marginal_error`` / ``mean_marginal_error``
                     largest / average ``|p_method − p_ref|`` over every marginal probability of
                     every discrete latent site both posteriors describe
``max_mean_error`` / ``mean_mean_error``
                     largest / average ``|E_method[h] − E_ref[h]|`` over every element of every
                     continuous latent site (units of the site)
``max_mean_error_sd`` largest ``|E_method[h] − E_ref[h]| / sd_ref[h]`` (in reference posterior sds)
``worst_sd_ratio``   the ratio ``sd_method / sd_ref`` farthest from 1 over continuous elements
``trust``            the row's trust verdict (``exact``, ``reliable``, ``unreliable``)
``seconds``          wall time of the method's ``ppl.infer`` call (compilation excluded)
``iterations``       sweeps (CAVI), EM iterations, SVI steps, MAP rounds; ``None`` if one-shot
``converged``        the backend's verdict (``None`` for non-iterative methods)
``status``           ``"ok"`` or ``"not run: <why>"``
==================== =========================================================================

The reference is a row whose verdict is ``exact``, else a reliable row of a reference
sampler (a backend with ``reference_sampler = True``: NUTS), else the row with the highest
ELBO among the rows that ran and learned no ``ppl.param`` (with one log evidence shared by
all of them, the highest ELBO is the smallest ``KL(q‖p)``: the closest posterior at hand);
``compare(..., reference=label)`` picks one by hand.
"""

from __future__ import annotations

import io
import math
import textwrap
import time

import torch

from .backends.common.params import store_restore, store_snapshot
from .comparison_plots import comparison_figures, write_plots
from .errors import OptionError, PPLError
from .table import Table, format_value

__all__ = ["Comparison", "run_comparison", "COLUMNS"]

#: The columns of a :class:`Comparison`, in order.
COLUMNS = ("method", "log_evidence", "elbo", "kl_gap", "map_log_joint", "max_marginal_error", "mean_marginal_error",
           "max_mean_error", "mean_mean_error", "max_mean_error_sd", "worst_sd_ratio", "seconds", "iterations",
           "converged", "trust", "status")

#: Columns always printed (the others are left out of the printout when empty in every row).
_ALWAYS_SHOWN = ("method", "log_evidence", "elbo", "seconds", "converged", "trust", "status")
_STATUS_WIDTH = 48  # longer statuses are printed as footnotes


class Comparison(Table):
    """The table :func:`ppl.compare` returns: one row per method (see :data:`COLUMNS` and
    the module docstring for their meaning and units).

    Attributes
    ----------
    rows : list[dict]
        One dict per method, keys :data:`COLUMNS`.
    posteriors : dict[str, Posterior or PPLError]
        Row label -> the method's Posterior, or the error that stopped it.
    reference : str or None
        Label of the row errors are measured against (None: no row could serve).
    reference_kind : str or None
        ``"exact"``, ``"sampler"`` (a reliable reference sampler), ``"highest elbo"`` or
        ``"chosen"`` (``reference=`` given).
    graph : FactorGraph
        The compiled model every method ran on.

    ``print(comparison)`` draws the table with `rich`'s box characters when standard output
    is a terminal, as plain aligned text otherwise (piped or captured output stays one row
    per line; :meth:`to_string` picks either); ``rich.print(comparison)`` gives the styled
    table.  Columns empty in every row are left out of the printout (a note
    names them) but not of :meth:`~Comparison.to_pandas`; a status too long for the table is printed
    as a numbered footnote.
    """

    def __init__(self, rows, posteriors, *, graph=None, reference=None, reference_kind=None, title=None,
                 notes=None):
        super().__init__(rows, columns=list(COLUMNS), title=title, notes=notes)
        self.posteriors = posteriors
        self.graph = graph
        self.reference = reference
        self.reference_kind = reference_kind

    # ------------------------------------------------------------------ printing
    def _display(self):
        """Columns, rows (formatted text) and notes of the printout."""
        columns = [c for c in self.columns if c in _ALWAYS_SHOWN or any(r.get(c) is not None for r in self.rows)]
        hidden = [c for c in self.columns if c not in columns]
        rows, footnotes = [], []
        for r in self.rows:
            cells = {c: format_value(r.get(c)) for c in columns}
            label = r.get("method")
            status = str(r.get("status"))
            if len(status) > _STATUS_WIDTH:
                footnotes.append(f"[{len(footnotes) + 1}] {label}: {status}")
                cells["status"] = f"{status.split(':')[0]} [{len(footnotes)}]"
            rows.append(cells)
        notes = list(self.notes) + footnotes
        if hidden:
            notes.append(f"columns empty in every row (not shown; in .to_pandas()): {', '.join(hidden)}")
        return columns, rows, notes

    def to_string(self, style: str = "auto") -> str:
        """The printout: ``style="rich"`` (a box-drawn table), ``"plain"`` (aligned text, one
        row per line: stable to parse) or ``"auto"`` (rich when standard output is a
        terminal, else plain).

        Raises
        ------
        OptionError (a ValueError)
            An unknown ``style``.
        """
        if style not in ("auto", "rich", "plain"):
            raise OptionError(f"style must be 'auto', 'rich' or 'plain', got {style!r}")
        columns, rows, notes = self._display()
        if style == "auto" and not _stdout_is_terminal():
            style = "plain"
        if style != "plain":
            return self._rich_string(columns, rows, notes)
        plain = Table([{c: cells[c] for c in columns} for cells in rows], columns=columns, title=self.title,
                      notes=notes)
        return str(plain)

    def _rich_table(self, columns, rows, styled: bool):
        from rich import box
        from rich.table import Table as RichTable

        table = RichTable(title=self.title, box=box.ROUNDED, header_style="bold" if styled else None,
                          title_style="bold" if styled else None)
        numeric = {c for c in columns if any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                                             for r in self.rows)}
        for c in columns:
            table.add_column(c, justify="right" if c in numeric else "left", no_wrap=c != "status",
                             overflow="fold")
        for raw, cells in zip(self.rows, rows):
            style = None
            if styled and not str(raw.get("status")).startswith("ok"):
                style = "dim"
            table.add_row(*[cells[c] for c in columns], style=style)
        return table

    def _rich_string(self, columns, rows, notes) -> str:
        from rich.console import Console

        buf = io.StringIO()
        console = Console(file=buf, width=1000, color_system=None, force_terminal=False, force_jupyter=False,
                          legacy_windows=False, soft_wrap=False, emoji=False, markup=False, highlight=False)
        console.print(self._rich_table(columns, rows, styled=False))
        lines = [line.rstrip() for line in buf.getvalue().splitlines()]
        width = max([len(line) for line in lines] + [80])
        for note in notes:
            lines.extend(textwrap.wrap(note, width=width, subsequent_indent="  ") or [""])
        return "\n".join(lines)

    def __rich__(self):
        """For ``rich.print(comparison)`` and rich consoles: the styled table and notes."""
        from rich.console import Group
        from rich.text import Text

        columns, rows, notes = self._display()
        return Group(self._rich_table(columns, rows, styled=True), *[Text(n, style="dim") for n in notes])

    def __str__(self):
        """``to_string()``: rich's table on a terminal when rich is installed, else plain text."""
        return self.to_string()

    def _repr_html_(self) -> str:
        """The comparison as HTML (Jupyter's rich display): the columns of the printout,
        rows whose verdict is not exact/reliable or that did not run marked with the CSS
        classes ``ppl-unreliable`` / ``ppl-not-run``, and the notes."""
        from .table import html_table

        columns, rows, notes = self._display()
        classes = []
        for raw in self.rows:
            if not str(raw.get("status")).startswith("ok"):
                classes.append("ppl-not-run")
            elif raw.get("trust") == "unreliable":
                classes.append("ppl-unreliable")
            else:
                classes.append(None)
        return html_table(columns, [[cells[c] for c in columns] for cells in rows], title=self.title, notes=notes,
                          row_classes=classes)

    __repr__ = __str__

    # ------------------------------------------------------------------ plots
    def plot(self, path_prefix=None, sites=None, copies: int = 3, max_sites: int = 3):
        """The comparison's plots (matplotlib, Agg canvas: no display needed, pyplot
        untouched): written as PNGs under ``path_prefix``, or, without it, returned as
        figures (which Jupyter displays inline).

        * ``{path_prefix}_bound.png``: the objective per iteration (``history``) of every
          method that gives a bound on one axis (nats; CAVI's ELBO per sweep, EM's log
          likelihood per iteration, SVI's ELBO estimate per step), exact log evidence as a
          dashed line; a log iteration axis when run lengths differ twenty-fold.
        * ``{path_prefix}_{site}.png`` for each of ``sites``: the methods' posterior
          marginals overlaid — discrete sites: bar charts of the state probabilities per
          method for the first ``copies`` plate copies; continuous sites: mean ± sd per
          method for the first ``copies`` elements.

        Parameters
        ----------
        path_prefix : str or os.PathLike, optional
            Directory and file stem (directories are created); ``None``: nothing is written.
        sites : list[str], optional
            Latent sites to plot (default: the first ``max_sites`` latent sites of the
            reference, else of the first posterior).
        copies : int
            Plate copies / elements per site shown.
        max_sites : int
            How many sites the default picks.

        Returns
        -------
        list[str] or dict[str, matplotlib.figure.Figure]
            The paths written, bound plot first; without ``path_prefix`` the figures,
            ``"bound"`` first, then by site.

        Raises
        ------
        ImportError
            If matplotlib is not installed.
        DataError
            A site in ``sites`` that no posterior of the table describes.
        """
        kw = dict(graph=self.graph, reference=self.reference, title=self.title, sites=sites, copies=copies,
                  max_sites=max_sites)
        if path_prefix is None:
            return comparison_figures(self.posteriors, **kw)
        return write_plots(self.posteriors, path_prefix, **kw)


def _stdout_is_terminal() -> bool:
    import sys

    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):
        return False


# ---------------------------------------------------------------------- running
def _option_text(value) -> str:
    """An option value as it reads in a row label: a function or module by its name, a
    tensor by its shape, anything else by ``str``."""
    import torch

    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}" if value.numel() > 1 else str(value.item())
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    if callable(value) and not isinstance(value, type):
        return type(value).__name__
    return str(value)


def _label(entry):
    if isinstance(entry, str):
        return entry, entry, {}
    if isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str) \
            and isinstance(entry[1], dict):
        opts = ", ".join(f"{k}={_option_text(v)}" for k, v in entry[1].items())
        return f"{entry[0]}({opts})" if opts else entry[0], entry[0], dict(entry[1])
    raise OptionError(f"compare: each method must be a name or a (name, options) pair (a str and a dict), got "
                      f"{entry!r:.80}")


def _iterations(post):
    d = post.diagnostics
    for key in ("sweeps", "n_iter", "num_steps", "rounds"):
        value = d.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return len(post.history) - 1 if len(post.history) > 1 else None


def _map_log_joint(post):
    """``log p(ĥ, v)`` of a posterior's MAP point, if it reports one."""
    value = getattr(post, "log_joint", None)
    if value is None:
        value = post.diagnostics.get("map_log_joint")
    return value


def _learned(post, graph) -> bool:
    """Whether ``post`` learned (changed) any of the model's ``ppl.param`` values."""
    return bool(set(post.params) & set(graph.params()))


def _errors(post, ref, graph):
    """``(max, mean)`` of |p − p_ref| over discrete sites' probabilities and of
    |E − E_ref| over continuous sites' elements (``None`` where nothing compares)."""
    if ref is None:
        return (None,) * 4
    discrete = set(graph.discrete_latent())
    prob_diffs, mean_diffs = [], []
    shared = [s for s in ref.sites if s in getattr(post, "sites", [])]
    for site in shared:
        try:
            if site in discrete:
                if not (hasattr(post, "probs") and hasattr(ref, "probs")):
                    continue
                a, b = post.probs(site), ref.probs(site)
                prob_diffs.append((a.detach().to(device=b.device, dtype=torch.float64) - b.detach().double()).abs()
                                  .reshape(-1))
            else:
                a, b = post.mean(site), ref.mean(site)
                diff = a.detach().to(device=b.device, dtype=torch.float64) - b.detach().double()
                mean_diffs.append(diff.abs().reshape(-1))
        except (PPLError, TypeError, NotImplementedError, RuntimeError):
            continue  # marginals not computed, no moments, or shapes that do not line up

    def stats(diffs):
        if not diffs:
            return None, None
        flat = torch.cat([d.cpu() for d in diffs])
        flat = flat[~torch.isnan(flat)]
        return (float(flat.max()), float(flat.mean())) if flat.numel() else (None, None)

    return stats(prob_diffs) + stats(mean_diffs)


def _pick_reference(posteriors, graph, reference):
    ok = {lbl: p for lbl, p in posteriors.items() if not isinstance(p, Exception)}
    if reference is not None:
        if reference not in posteriors:
            raise OptionError(f"compare: reference={reference!r} names no row; rows: {list(posteriors)}")
        if reference not in ok:
            return None, None
        return reference, "chosen"
    exact = [lbl for lbl, p in ok.items() if _verdict(p) == "exact" and p.log_evidence is not None]
    if exact:
        return exact[0], "exact"
    samplers = [lbl for lbl, p in ok.items() if _verdict(p) == "reliable" and _is_reference_sampler(p.method)]
    if samplers:
        return samplers[0], "sampler"
    bounded = [(p.elbo, lbl) for lbl, p in ok.items()
               if p.elbo is not None and math.isfinite(p.elbo) and not _learned(p, graph)]
    if bounded:
        return max(bounded, key=lambda t: t[0])[1], "highest elbo"
    return None, None


def _verdict(post):
    trust = getattr(post, "trust", None)
    return trust.verdict if trust is not None else None


def _is_reference_sampler(method: str) -> bool:
    from .backends.registry import registered_backends

    return bool(getattr(registered_backends().get(method), "reference_sampler", False))


def _scaled_errors(post, ref, graph):
    """``(max |E − E_ref| / sd_ref, the sd ratio farthest from 1)`` over the continuous
    elements both describe (``None`` where nothing compares)."""
    if ref is None:
        return None, None
    discrete = set(graph.discrete_latent())
    z, ratios = [], []
    for site in [s for s in ref.sites if s in getattr(post, "sites", []) and s not in discrete]:
        try:
            sd_ref = ref.variance(site).detach().double().clamp_min(0).sqrt().reshape(-1)
            diff = (post.mean(site).detach().double().to(sd_ref.device).reshape(-1)
                    - ref.mean(site).detach().double().reshape(-1))
            sd = post.variance(site).detach().double().to(sd_ref.device).clamp_min(0).sqrt().reshape(-1)
        except (PPLError, TypeError, NotImplementedError, RuntimeError):
            continue
        ok = sd_ref > 0
        z.append((diff.abs()[ok] / sd_ref[ok]))
        ratios.append(sd[ok] / sd_ref[ok])
    if not z:
        return None, None
    zz, rr = torch.cat(z), torch.cat(ratios)
    zz, rr = zz[~torch.isnan(zz)], rr[~torch.isnan(rr)]
    worst = float(rr[(rr.log()).abs().argmax()]) if rr.numel() else None
    return (float(zz.max()) if zz.numel() else None), worst


def run_comparison(graph, methods, options, *, infer, reference=None) -> Comparison:
    """Run each of ``methods`` on the compiled ``graph`` with ``infer`` and tabulate
    (the body of :func:`ppl.compare`; see it for the parameters).

    Parameters
    ----------
    graph : FactorGraph
    methods : sequence of str or (str, dict)
    options : dict
        Options for every method; a pair's own options win.
    infer : callable(graph, method=..., **options) -> Posterior
        :func:`ppl.infer`.
    reference : str, optional
        Label of the reference row.

    Returns
    -------
    Comparison

    Raises
    ------
    BackendNotFoundError
        Unknown method name (before anything runs).
    UnknownOptionError (an OptionError and a TypeError)
        An option a backend does not take.
    OptionError (a ValueError)
        ``methods`` that is empty or not a list, a malformed entry of it, or ``reference``
        that names no row.
    """
    from .backends.registry import get_backend

    if isinstance(methods, str):  # one name, not its letters
        methods = [methods]
    if not isinstance(methods, (list, tuple)) or not methods:
        raise OptionError(f"compare: methods must be a non-empty list of names or (name, options) pairs, "
                          f"'all' or None, got {methods!r:.80}")
    entries, seen = [], {}
    for m in methods:
        label, name, opts = _label(m)
        seen[label] = seen.get(label, 0) + 1
        entries.append((label if seen[label] == 1 else f"{label} #{seen[label]}", name, opts))  # labels stay unique
    for name in [e[1] for e in entries if e[1] != "auto"]:  # an "auto" row is ppl.infer(method="auto")
        get_backend(name)  # a misspelt name is an error, not a "not run" row
    if reference is not None and reference not in [e[0] for e in entries]:
        raise OptionError(f"compare: reference={reference!r} names no row; rows: {[e[0] for e in entries]}")
    snapshot = store_snapshot()
    posteriors, seconds = {}, {}
    try:
        for label, name, opts in entries:
            store_restore(snapshot)  # every method starts from the same ppl.param values
            merged = {**options, **opts}
            start = time.perf_counter()
            try:
                post = infer(graph, method=name, **merged)
            except PPLError as e:
                post = e
            seconds[label] = time.perf_counter() - start
            posteriors[label] = post
    finally:
        store_restore(snapshot)
    ref_label, ref_kind = _pick_reference(posteriors, graph, reference)
    ref = posteriors.get(ref_label) if ref_label is not None else None
    exact_le = ref.log_evidence if ref is not None and _verdict(ref) == "exact" else None
    rows = []
    for label, post in posteriors.items():
        if isinstance(post, Exception):
            rows.append({**dict.fromkeys(COLUMNS), "method": label, "seconds": seconds[label],
                         "status": f"not run: {post}"})
            continue
        learned = _learned(post, graph)
        gap = None
        if exact_le is not None and post.elbo is not None and not learned:
            gap = exact_le - post.elbo
        max_p, mean_p, max_m, mean_m = _errors(post, ref, graph)
        max_z, worst_ratio = _scaled_errors(post, ref, graph) if post is not ref else (None, None)
        rows.append({
            "method": label,
            "trust": _verdict(post),
            "log_evidence": post.log_evidence,
            "elbo": post.elbo,
            "kl_gap": gap,
            "map_log_joint": _map_log_joint(post),
            "max_marginal_error": max_p,
            "mean_marginal_error": mean_p,
            "max_mean_error": max_m,
            "mean_mean_error": mean_m,
            "max_mean_error_sd": max_z,
            "worst_sd_ratio": worst_ratio,
            "seconds": seconds[label],
            "iterations": _iterations(post),
            "converged": post.converged,
            "status": "ok",
        })
    notes = ["log_evidence, elbo, kl_gap, map_log_joint in nats; kl_gap = log p(x) (exact) - elbo = KL(q||p); "
             "seconds = wall time of each run"]
    if ref_label is None:
        notes.append("errors: no reference (no exact row ran and no row gives a bound at the model's own params)")
    else:
        why = {"exact": "exact", "sampler": "no exact row ran: a reliable run of the reference sampler stands in",
               "highest elbo": "no exact row ran: the highest ELBO (smallest KL(q||p)) stands in",
               "chosen": "chosen with reference="}[ref_kind]
        notes.append(f"errors against '{ref_label}' ({why}): marginal = |p - p_ref| over discrete marginal "
                     "probabilities, mean = |E[h] - E_ref[h]| over continuous sites")
    learners = [r["method"] for r in rows if r["status"] == "ok" and _learned(posteriors[r["method"]], graph)]
    if learners:
        notes.append(f"{', '.join(learners)} learned ppl.params: their bound and marginals are at the learned "
                     "params (no kl_gap); every method started from the same params")
    return Comparison(rows, posteriors, graph=graph, reference=ref_label, reference_kind=ref_kind,
                      title=f"ppl.compare on model '{graph.model.name}'", notes=notes)

