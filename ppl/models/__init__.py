"""Ready-made model builders.

Discrete Bayesian networks (Koller & Friedman 2009, §3.2):

- :func:`bayesian_network` – a model from conditional probability tables
  ``node -> (parents, table)``;
- :func:`read_bif` – a model from a BIF file or text (fast; no pgmpy needed);
- :func:`from_pgmpy` – a model from a pgmpy ``DiscreteBayesianNetwork``;
- :func:`example_network` – one of the bnlearn networks bundled with pgmpy (``asia``,
  ``alarm``, ``child``, ``insurance``, ``hepar2``, ``win95pts``, ``andes``, ``munin``, ...;
  :func:`available_examples` lists them), loaded offline with :func:`read_bif`;
- :func:`load_pgmpy_example` – the same network as a pgmpy object (pgmpy's reader; slow
  on the big ones), for checking against pgmpy.

Every builder returns a :class:`ppl.dsl.Model` whose sites are named as the network's
nodes, with ``cpds``, ``nodes`` (topological order), ``cardinalities`` and
``state_names`` attributes.  pgmpy is optional (``pip install 'ppl[pgmpy]'``) and is
imported only by the functions that need it.

Learning a network's CPTs from data with hidden or missing values (EM; Koller & Friedman
2009, §19.2): :func:`learnable_bayesian_network` / :func:`learnable_from_network` build a
model whose CPTs are ``ppl.param`` sites for ``ppl.infer(model, data, method="em")``;
:func:`sample_network_data`, :func:`hide_at_random`, :func:`encode_data`,
:func:`make_init`, :func:`count_cpts` and :func:`learned_network` make data, starts and
estimates (see the package ``ppl/models/bn_learning/``).

Mixtures: :func:`bayesian_gmm`, the Bayesian Gaussian mixture with Dirichlet weights and
Normal-Wishart components (Bishop 2006, §10.2), and :func:`bgmm_priors`, scikit-learn's
default priors for it.
"""

from .bn import bayesian_network
from .mixtures import bayesian_gmm, bgmm_priors
from .bn_learning import (
    count_cpts,
    encode_data,
    hide_at_random,
    learnable_bayesian_network,
    learnable_from_network,
    learned_network,
    make_init,
    sample_network_data,
)
from .pgmpy_io import available_examples, example_network, from_pgmpy, load_pgmpy_example, read_bif

__all__ = [
    "bayesian_network",
    "bayesian_gmm",
    "bgmm_priors",
    "from_pgmpy",
    "read_bif",
    "example_network",
    "load_pgmpy_example",
    "available_examples",
    "learnable_bayesian_network",
    "learnable_from_network",
    "make_init",
    "sample_network_data",
    "hide_at_random",
    "encode_data",
    "count_cpts",
    "learned_network",
]
