"""Printing posteriors for the command line: summary tables and one-line messages."""

from __future__ import annotations

import torch

from ..errors import PPLError
from ..table import Table


# ------------------------------------------------------------------ output
def _fmt_number(v, digits: int = 6) -> str:
    if v is None:
        return "-"
    if isinstance(v, torch.Tensor):
        v = v.item()
    return f"{float(v):.{digits}f}"


def _fmt_tensor(t, limit: int = 8) -> str:
    if not isinstance(t, torch.Tensor):
        return repr(t)
    flat = t.detach().reshape(-1).cpu()
    shown = ", ".join(f"{float(x):.4g}" for x in flat[:limit])
    shape = "x".join(str(s) for s in t.shape) or "scalar"
    more = f", ... ({flat.numel() - limit} more)" if flat.numel() > limit else ""
    return f"[{shown}{more}]  ({shape})"


def summary_table(post, sites=None, max_rows: int = 10):
    """``post.summary()`` restricted to ``sites`` (all when None), at most ``max_rows``
    rows (elements) per site; a note says what was left out.

    Returns
    -------
    ppl.table.Table
    """
    table = post.summary()
    wanted = list(sites) if sites else list(post.sites)
    rows, notes = [], list(table.notes)
    for site in wanted:
        mine = [r for r in table.rows if r.get("site") == site or str(r.get("site", "")).startswith(site + "[")]
        try:
            total = int(post.mean(site).numel())
        except Exception:  # noqa: BLE001 - only for the note
            total = len(mine)
        rows.extend(mine[:max_rows])
        if total > min(len(mine), max_rows):
            notes.append(f"{site}: {min(len(mine), max_rows)} of {total} elements shown "
                         f"(--max-rows sets how many, --sites which sites)")
    return Table(rows, columns=table.columns, title=table.title, notes=notes)


def format_posterior(post, label: str = "", sites=None, max_rows: int = 10, diagnostics: bool = False) -> str:
    """The report ``python -m ppl infer`` prints: method, routing, ELBO / log evidence,
    convergence, time, learned params and the summary table of ``post``."""
    lines = []
    if label:
        lines.append(f"model:         {label}")
    lines.append(f"method:        {post.method}")
    routing = post.diagnostics.get("routing") or {}
    if routing:
        lines.append(f"routing:       {routing.get('reason')}")
        passed = routing.get("passed_over") or {}
        if diagnostics:
            for name, why in passed.items():
                lines.append(f"  passed over {name}: {why}")
        elif passed:
            lines.append(f"passed over:   {', '.join(passed)} (--diagnostics says why)")
    lines.append(f"log evidence:  {_fmt_number(post.log_evidence)}" + (" nats" if post.log_evidence is not None
                                                                       else "  (not given by this method)"))
    lines.append(f"ELBO:          {_fmt_number(post.elbo)}" + (" nats" if post.elbo is not None else ""))
    if post.converged is None:
        lines.append("converged:     n/a (not iterative)")
    else:
        lines.append(f"converged:     {'yes' if post.converged else 'no'}")
    if post.history:
        lines.append(f"iterations:    {len(post.history)}")
    lines.append(f"elapsed:       {post.elapsed:.4f} s")
    if post.params:
        lines.append("learned params:")
        for name, value in post.params.items():
            lines.append(f"  {name}: {_fmt_tensor(value)}")
    if diagnostics:
        lines.append("diagnostics:")
        for key, value in post.diagnostics.items():
            if key != "routing":
                text = _fmt_tensor(value) if isinstance(value, torch.Tensor) else one_line(repr(value))
                lines.append(f"  {key}: {text[:200]}")
    if max_rows > 0:
        lines.append("")
        try:
            lines.append(str(summary_table(post, sites, max_rows)))
        except (PPLError, TypeError, ValueError, NotImplementedError) as e:
            lines.append(f"summary: not available ({one_line(e)})")
    return "\n".join(lines)


def one_line(e) -> str:
    """A message on one line: the non-blank lines of ``str(e)``, stripped and joined by spaces.

    Parameters
    ----------
    e : str or BaseException
        A message, or an exception whose message is wanted.

    Returns
    -------
    str
        What the command line prints after ``error:`` (multi-line errors such as Pyro's
        trace tables, or pandas' parse errors, would otherwise break the one-line rule).
    """
    text = str(e) if not isinstance(e, str) else e
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
