"""Learning the conditional probability tables of a discrete Bayesian network from data
with hidden or missing values, by EM.

Given the graph of a Bayesian network (each node's parents) and the number of states of
each node, :func:`learnable_bayesian_network` builds a :class:`ppl.dsl.Model` whose
conditional probability tables (CPTs) are ``ppl.param`` sites with a ``simplex``
constraint, one per node, and whose data are one integer column per node, ``-1``
marking a missing entry.  ``ppl.infer(model, columns, method="em")`` then returns the
maximum-likelihood CPTs (Koller & Friedman 2009, §19.2.2):

- the E-step is exact inference: for every row, the posterior of the row's missing
  entries given its observed ones, at the current CPTs;
- the M-step sets every CPT row to its normalised *expected* family counts,
  ``θ[u, x] ∝ Σ_rows p(X = x, Pa(X) = u | row's observed values; θ_old)``,
  the complete-data maximum-likelihood estimate (Koller & Friedman 2009, §17.2.3,
  normalised counts) with the counts replaced by their expectations.

A node with no column at all is latent (hidden) in every row.  With no missing values, the
first M-step gives the count-based estimate at once (:func:`count_cpts`).

The other functions produce data and read results: :func:`sample_network_data` draws a
complete data set from a known network, :func:`hide_at_random` removes entries at random,
:func:`encode_data` turns state names and NaN/None into the integer columns the model
takes, :func:`make_init` draws starting CPTs (for restarts), :func:`count_cpts` is the
count-based estimate of the CPTs from the rows in which a node and its parents are all
observed, and :func:`learned_network` turns the learned params into a
:func:`~ppl.models.bayesian_network` for exact queries.

References
----------
D. Koller and N. Friedman, *Probabilistic Graphical Models: Principles and Techniques*,
MIT Press, 2009: §17.2 (maximum-likelihood estimation of a Bayesian network's CPTs from
complete data: normalised counts), §19.1 (missing data, MAR), §19.2.2 (EM for Bayesian
networks: expected sufficient statistics), §19.5 (hidden variables; non-identifiability).
A. P. Dempster, N. M. Laird and D. B. Rubin, "Maximum likelihood from incomplete data via
the EM algorithm", *J. R. Stat. Soc. B* 39 (1977).

Modules: :mod:`~ppl.models.bn_learning.builder` (the model), :mod:`.columns` (its data
columns), :mod:`.structure` (graph checks), :mod:`.initial` (θ_0), :mod:`.data` (making
and encoding data), :mod:`.estimates` (counts; the learned network).
"""

from .builder import learnable_bayesian_network, learnable_from_network
from .columns import MISSING, ROWS_PLATE  # noqa: F401 - the data encoding, at the top level as before
from .data import encode_data, hide_at_random, sample_network_data
from .estimates import count_cpts, learned_network
from .initial import make_init

__all__ = [
    "learnable_bayesian_network",
    "learnable_from_network",
    "make_init",
    "sample_network_data",
    "hide_at_random",
    "encode_data",
    "count_cpts",
    "learned_network",
]
