"""The Posterior: one interface for the result of every backend.

Members: ``method``, ``marginal(site)``, ``mean(site)``, ``variance(site)``,
``quantile(site, q)``, ``sample(n)``, ``map()``, ``seed``, ``memory_budget``,
``elbo``, ``log_evidence``, ``params``, ``history``, ``converged``, ``elapsed``,
``diagnostics``, ``trust``, ``summary()``, ``to_arviz()``, ``plot(site, path=None)``,
``plot_arviz(kind)``, ``predictive(n, data)``, ``save(path)`` (and ``ppl.load(path)``, plain
pickle), ``model``, ``load_module_weights()``; notebook display (``_repr_html_``).  A field a backend cannot fill is ``None``, never a made-up value.

Subclasses hold the representation of each backend, one module each:

* :mod:`~ppl.posterior.base`: :class:`Posterior`, the interface and its shared members;
* :mod:`~ppl.posterior.networks`: ``load_module_weights``, the learned ``pyro.module``
  weights written into the user's networks;
* :mod:`~ppl.posterior.tables`: :class:`TablePosterior` (exact tables over discrete
  latents) and :class:`MeanFieldPosterior` (CAVI's mean field over discrete latents);
* :mod:`~ppl.posterior.guide`: :class:`GuidePosterior` (a fitted SVI guide, with exact
  conditional marginals of enumerated discrete sites);
* :mod:`~ppl.posterior.point`: :class:`PointPosterior` (a MAP point mass);
* :mod:`~ppl.posterior.draws`: :class:`DrawsPosterior` (chains of a sampler, or PSIS-resampled
  draws of an approximation);
* :mod:`~ppl.posterior.factors`: :class:`FactorPosterior` (CAVI's factorised q of
  continuous, and discrete, factors);
* :mod:`~ppl.posterior.plotting`: the matplotlib helpers of ``plot``;
* :mod:`~ppl.posterior.quantiles`: quantiles and moments of every marginal family (exact
  inverses, bisection, fixed-seed draws as the last resort), shared by all classes;
* :mod:`~ppl.posterior.checks`: the argument checks of the queries, the memory budget of
  draws, and RNG isolation;
* :mod:`~ppl.posterior.persist`: the portable state behind pickling, ``save`` and ``load``;
* :mod:`~ppl.posterior.reattach`: the data and fitted sites a saved posterior keeps, and its
  model compiled again on them, so that a loaded posterior predicts;
* :mod:`~ppl.posterior.predictive` and :mod:`~ppl.posterior.conditionals`: posterior and
  prior predictive draws (Pyro's ``Predictive``), and draws of summed-out discrete latents;
* :mod:`~ppl.posterior.arviz_export`: ``to_arviz``'s InferenceData groups;
* :mod:`~ppl.posterior.summary`: ``summary()`` and the HTML display;
* :mod:`~ppl.posterior.figures`: ``plot`` and ``plot_arviz``.
"""

from __future__ import annotations

from .base import Posterior
from .draws import DrawsPosterior
from .factors import FactorPosterior
from .guide import GuidePosterior
from .persist import load
from .point import PointPosterior
from .stream import StreamFactorPosterior, StreamPosterior
from .tables import MeanFieldPosterior, TablePosterior, sample_tables, support_values  # noqa: F401 (public helpers)

__all__ = ["Posterior", "TablePosterior", "GuidePosterior", "PointPosterior", "MeanFieldPosterior",
           "FactorPosterior", "DrawsPosterior", "StreamPosterior", "StreamFactorPosterior", "load"]
