"""Sentences the built-in backends share when they state why ``method="auto"`` chose them."""

from __future__ import annotations

from ..base import list_names

__all__ = ["held_params_note", "not_ok"]


def not_ok(verdicts: dict) -> dict:
    """Name -> reason of every backend that does not apply."""
    return {n: w for n, (o, w) in verdicts.items() if not o}


def held_params_note(analysis, verdicts: dict, learner: str = "em") -> str:
    """``"; the model's N ppl.param(s) (...) are held at their current values, since em
    does not apply (...)"`` when the model has params, else ``""``."""
    params = list(analysis.graph.params())
    if not params:
        return ""
    why = not_ok(verdicts).get(learner, "not registered")
    return (f"; the model's {len(params)} ppl.param(s) ({list_names(params)}) are held at their current values, "
            f"since {learner} does not apply ({why})")
