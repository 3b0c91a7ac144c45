"""Analysis layer: moral graph, elimination order, treewidth, plate-aware cost, chains."""

from .chains import Chain, find_chains
from .elimination import EliminationCost, elimination_cost, elimination_order
from .moral import latent_scopes, moral_graph
from .report import DEFAULT_MEMORY_BUDGET, Analysis, analyze_graph

__all__ = ["Analysis", "analyze_graph", "Chain", "find_chains", "EliminationCost", "elimination_cost",
           "elimination_order", "latent_scopes", "moral_graph", "DEFAULT_MEMORY_BUDGET"]
