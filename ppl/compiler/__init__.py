"""Compiler layer: one traced run of a model -> :class:`FactorGraph`."""

from .factor_graph import Factor, FactorGraph, Variable, compile
from .trace import PlateInfo, SiteRecord, trace_with_provenance

__all__ = ["Factor", "FactorGraph", "Variable", "compile", "PlateInfo", "SiteRecord", "trace_with_provenance"]
