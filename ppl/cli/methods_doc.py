"""The options page of the docs (``docs/options.md``), generated from the backends' option
declarations: ``python -m ppl methods --markdown > docs/options.md``."""

from __future__ import annotations

from ..api import methods

__all__ = ["options_markdown", "options_page"]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def options_markdown() -> str:
    """One markdown table per registered method (name, default, accepted values, what it
    does), in the order ``method="auto"`` tries them."""
    parts = []
    for name, info in methods().items():
        parts.append(f"## `{name}`\n\n{info['summary']}\n")
        if info["options"]:
            parts.append("| option | default | accepted | what it does |\n|---|---|---|---|")
            for opt, default, accepted, doc in info["options"]:
                parts.append(f"| `{opt}` | `{_cell(default)}` | {_cell(accepted)} | {_cell(doc)} |")
        parts.append("")
    return "\n".join(parts)


def options_page() -> str:
    """The whole ``docs/options.md`` page."""
    return ("# Options of every method\n\n"
            "Generated from the declarations in the code (each backend's `options` table); do not edit by hand:\n"
            "`python -m ppl methods --markdown > docs/options.md` writes it again, and a test checks that it\n"
            "matches. `ppl.methods()` returns the same rows, and `python -m ppl methods NAME` prints them.\n"
            "A value a declaration refuses raises `ppl.OptionError` naming the option, the value and what is\n"
            "accepted; an option a method does not take raises `ppl.UnknownOptionError` (also a `TypeError`).\n\n"
            + options_markdown())
