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
"""

from .bn import bayesian_network
from .pgmpy_io import available_examples, example_network, from_pgmpy, load_pgmpy_example, read_bif

__all__ = [
    "bayesian_network",
    "from_pgmpy",
    "read_bif",
    "example_network",
    "load_pgmpy_example",
    "available_examples",
]
