"""The moral (interaction) graph of the latent variables given the evidence.

Two latent variables are joined when some factor's scope holds both: for a directed
model this links each node to its parents and "marries" co-parents (Koller & Friedman
2009, Def. 4.16); observed variables and parameters are conditioned on, so they are
dropped.  Plates stay templates: a plated latent is one node.
"""

from __future__ import annotations

import itertools

import networkx as nx

__all__ = ["moral_graph", "latent_scopes"]


def latent_scopes(graph) -> dict:
    """Factor name -> tuple of the latent variables in its scope (trace order).

    Parameters
    ----------
    graph : ppl.compiler.FactorGraph
    """
    latent = {n for n, v in graph.variables.items() if v.role == "latent"}
    return {name: tuple(s for s in f.scope if s in latent) for name, f in graph.factors.items()}


def moral_graph(graph) -> nx.Graph:
    """Moral graph of ``graph``'s latent variables given its observed ones.

    Parameters
    ----------
    graph : ppl.compiler.FactorGraph

    Returns
    -------
    networkx.Graph
        One node per latent variable (attributes: ``cardinality``, ``plates``,
        ``family``); an edge between two latents that share a factor's scope.
    """
    g = nx.Graph()
    for name, v in graph.variables.items():
        if v.role == "latent":
            g.add_node(name, cardinality=v.cardinality, plates=v.plates, family=v.family)
    for scope in latent_scopes(graph).values():
        if len(scope) > 1:
            g.add_edges_from(itertools.combinations(scope, 2))
    return g
