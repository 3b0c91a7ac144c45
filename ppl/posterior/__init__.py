"""The Posterior: one interface for the result of every backend (see :mod:`ppl.posterior.base`)."""

from __future__ import annotations

from .base import (FactorPosterior, GuidePosterior, MeanFieldPosterior, PointPosterior, Posterior,  # noqa: F401
                   TablePosterior, _figure, _safe_name, sample_tables, support_values)

__all__ = ["Posterior", "TablePosterior", "GuidePosterior", "PointPosterior", "MeanFieldPosterior",
           "FactorPosterior"]
