"""The Posterior base class: one interface for the result of every backend.

Members: ``method``, ``marginal(site)``, ``mean(site)``, ``sample(n)``, ``map()``,
``elbo``, ``log_evidence``, ``params``, ``history``, ``converged``, ``elapsed``,
``diagnostics``, ``summary()``, ``to_arviz()``, ``plot(site, path=None)``, ``plot_arviz(kind)``,
``save(path)``, ``model``, ``load_module_weights()``, and the notebook display
(``_repr_html_``).  A field a backend cannot fill is ``None``, never a made-up value.

Subclasses hold the representation of each backend, one module each of
:mod:`ppl.posterior`; this module holds what they share: the members' defaults and thin
calls into the modules that do one job each: the summary table and HTML display in
:mod:`ppl.posterior.summary`, the ArviZ export in :mod:`ppl.posterior.arviz_export`, the
figures in :mod:`ppl.posterior.figures`.  The quantiles and moments of a marginal
(:func:`marginal_variance`, :func:`marginal_quantile`, re-exported here) live in
:mod:`ppl.posterior.quantiles`; the argument checks, the memory budget of draws and the
RNG isolation in :mod:`ppl.posterior.checks`.
"""

from __future__ import annotations

import torch

from ..errors import DataError, UnsupportedModelError
from ..table import Table

from .checks import check_budget, check_count, check_level, check_memory, check_seed, isolated_rng, numel
from .copies import ReturnsCopies
from .lazy import LazyDiagnostics
from .networks import NetworkWeights
from .sitecheck import SiteQueries
from .quantiles import marginal_mean, marginal_quantile, marginal_variance, table_quantile

__all__ = ["Posterior", "marginal_variance", "marginal_quantile"]


class Posterior(SiteQueries, ReturnsCopies, NetworkWeights):
    """Base class of inference results.

    Attributes
    ----------
    method : str
        Registered name of the backend that produced it.
    elbo : float or None
        Evidence lower bound in nats (equal to ``log_evidence`` for exact inference,
        where KL(q‖p) = 0; Goodfellow et al. 2016, eq. 19.1).
    log_evidence : float or None
        Exact ``log p(observed)`` in nats, or ``None`` when the backend cannot give it.
    params : dict[str, torch.Tensor]
        Learned ``ppl.param`` values and ``pyro.module`` weights (``"name$$$p"`` keys;
        :meth:`~Posterior.load_module_weights` writes them into the networks); empty when nothing is learned.
    history : list[float]
        Objective per iteration (empty for one-shot backends).
    converged : bool or None
        ``None`` for non-iterative backends.
    elapsed : float
        Wall-clock seconds of the backend's run.
    diagnostics : dict
        Backend-specific facts (e.g. ``"routing"``, ``"map_log_joint"``).
    trust : Trust or None
        How far to trust this result (:class:`ppl.trust.Trust`: verdict ``"exact"``,
        ``"reliable"`` or ``"unreliable"``, the reasons and the numbers behind them); set
        by ``ppl.infer`` from the backend's assessment.
    seed : int or None
        The run's seed where the backend passed it: the default seed of :meth:`sample`
        (``None``: ``sample(n)`` without a seed draws from torch's global RNG).
    memory_budget : int or None
        Bytes that one allocation of draws or tables by this object may take
        (:meth:`sample`, :meth:`to_arviz`, :meth:`plot`, fallback quantiles); ``None``: the
        run's ``diagnostics["memory_budget"]`` if set, else ppl's default (2 GiB).  Settable.
    graph : FactorGraph or None
        The compiled model it was fitted on; ``None`` on a loaded (unpickled) posterior.
    model : ppl.Model or None
        The model (see :attr:`model`); read-only.

    Notes
    -----
    Every Posterior pickles, and :meth:`save` / :func:`ppl.load` keep it in a file, as a
    portable state that loads in a process where the model cannot be imported
    (:mod:`ppl.posterior.persist`); a loaded posterior answers its queries from that data.
    """

    def __init__(self, method, *, graph=None, elbo=None, log_evidence=None, params=None, history=None,
                 converged=None, elapsed=0.0, diagnostics=None, trust=None, seed=None, memory_budget=None):
        self.method = method
        self.graph = graph
        self.elbo = elbo
        self.log_evidence = log_evidence
        self.params = dict(params or {})
        self.history = list(history or [])
        self.converged = converged
        self.elapsed = float(elapsed)
        self.diagnostics = diagnostics if isinstance(diagnostics, LazyDiagnostics) else dict(diagnostics or {})
        self.trust = trust
        self.seed = None if seed is None else int(seed)
        self.memory_budget = None if memory_budget is None else int(memory_budget)

    @property
    def budget(self) -> int:
        """The memory budget in effect, in bytes (see :attr:`memory_budget`)."""
        budget = getattr(self, "memory_budget", None)
        if budget is None:
            budget = self.diagnostics.get("memory_budget")
        return check_budget(budget)

    @property
    def model(self):
        """The model this posterior was fitted on, a ``ppl.Model``: the compiled graph's while
        :attr:`graph` is held; on a loaded posterior, the one given to ``ppl.load(path,
        model=...)``, else the model re-imported from :attr:`model_path` (its module is
        imported), or ``None`` when it was not kept or does not import here."""
        from .reattach import current_model

        return current_model(self)

    @property
    def model_path(self) -> str | None:
        """``"module:qualname"`` under which :attr:`model` is kept when saved, or ``None``
        (a model defined in ``__main__`` or inside a function, or not importable by that
        name); see :func:`ppl.posterior.persist.model_path`."""
        graph = getattr(self, "graph", None)
        if graph is not None:
            from .persist import model_path

            return model_path(graph.model)
        return getattr(self, "_model_path", None)

    def save(self, path) -> str:
        """Write this posterior to ``path`` (:func:`torch.save` of a versioned payload holding
        its portable state: tables, draws, factors, point values, params, history,
        diagnostics, trust, the run's data up to a cap; never the model or the graph); read
        it back with :func:`ppl.load`.  Closures are materialised first
        (:mod:`ppl.posterior.persist`: e.g. the joint draws behind a loaded exact or SVI
        posterior's :meth:`sample`); the data let a loaded posterior predict.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (parent directories are created).

        Returns
        -------
        str
            ``path``.

        Raises
        ------
        OptionError
            If ``path`` is not a str or ``os.PathLike``, is a directory, or cannot be
            written (the message names the path and the OS error).
        """
        from .persist import save

        return save(self, path)

    def __reduce__(self):
        """Pickle as the portable state (:func:`ppl.posterior.persist.portable_state`)."""
        from .persist import portable_state, rebuild

        return rebuild, (type(self),), portable_state(self)

    def __setstate__(self, state):
        """Unpickle from a portable state.

        Raises
        ------
        DataError
            If ``state`` is not a ppl posterior state of this ppl's format version."""
        from .persist import restore_state

        restore_state(self, state)

    def __copy__(self):
        """A shallow copy (sharing the graph and samplers; not the portable state)."""
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo):
        """A deep copy of every attribute but the compiled graph (shared, as the model and
        the samplers' closures are; so are a loaded posterior's attached model and graph
        compiled again)."""
        import copy

        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for shared in (getattr(self, "graph", None), *map(vars(self).get, ("_attached_model", "_rebuilt_graph"))):
            if shared is not None:
                memo[id(shared)] = shared
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def _portable_state(self) -> dict:
        """Attributes whose portable form this class computes (closures materialised), for
        :func:`ppl.posterior.persist.portable_state`: a sampler that is a closure becomes
        stored joint draws; the sites' event ranks are kept for use without the graph."""
        from .persist import DROPPED, portable, stored_draws

        out = {"_event_dims": {s: self._event_dim(s) for s in self.sites}}
        sampler = vars(self).get("_sampler")
        if sampler is not None and portable(sampler) is DROPPED:
            out["_sampler"] = stored_draws(self, discrete=list(getattr(self, "_supports", None) or {}))
        return out

    def _restored(self) -> None:
        """Rebuild caches after unpickling (subclasses with ``_transient`` attributes)."""

    def _event_dim(self, site: str) -> int:
        """Event rank of ``site``: from the graph, else the one saved with the posterior."""
        variables = getattr(getattr(self, "graph", None), "variables", None) or {}
        if site in variables:
            return len(variables[site].event_shape)
        return int((getattr(self, "_event_dims", None) or {}).get(site, 0))

    # The members below are filled by subclasses.
    @property
    def sites(self) -> list:
        """Latent sites this posterior describes."""
        return []

    def marginal(self, site: str):
        """Posterior marginal of ``site`` as a torch Distribution whose batch shape is the
        site's plate batch shape."""
        raise self._unknown(site)

    def mean(self, site: str) -> torch.Tensor:
        """Posterior mean of ``site``, shape ``batch_shape + event_shape`` (the marginal's
        closed form, else the mean of fixed-seed draws from it: the same on every call).

        Raises
        ------
        DataError
            If ``site`` is not a latent site of this posterior."""
        return marginal_mean(self.marginal(site), site=site, budget=self.budget)

    def variance(self, site: str) -> torch.Tensor:
        """Posterior variance of ``site`` (elementwise), shape ``batch_shape + event_shape``
        (closed form, else from fixed-seed draws as :meth:`mean`).

        Raises
        ------
        DataError
            If ``site`` is not a latent site of this posterior."""
        return marginal_variance(self.marginal(site), site=site, budget=self.budget)

    def quantile(self, site: str, q: float) -> torch.Tensor:
        """The ``q``-quantile of ``site``'s marginal, elementwise, shape ``batch_shape +
        event_shape``; never NaN.

        Exact wherever the marginal allows (:mod:`ppl.posterior.quantiles`): the sample
        quantile of draws (linear interpolation); a discrete site's smallest value ``x`` with
        ``P(site <= x) >= q`` (a value of its support; ``q = 0``: the smallest value of positive
        probability); Beta, Gamma, Dirichlet (per component), Student-t and Wishart diagonals
        by SciPy's exact inverses (``betaincinv``, ``gammaincinv``, ``stdtrit``); Normal and
        Gaussians pushed through monotone transforms (SVI's guides) in closed form; other
        univariate families by bisection on their cdf; as a last resort (e.g. off-diagonal
        Wishart elements) the sample quantile of 10,000 draws of the marginal under a fixed
        seed, the same on every call.

        Parameters
        ----------
        site : str
            A latent site (see :attr:`sites`).
        q : float
            The level, a float or int in ``[0, 1]`` (one level per call).

        Raises
        ------
        OptionError
            If ``q`` is not a number in ``[0, 1]`` (checked before anything else).
        DataError
            If ``site`` is not a latent site of this posterior.
        UnsupportedModelError
            If the marginal has no quantile function, no cdf and cannot be sampled.
        NumericalError
            If the marginal's parameters or draws are not finite.
        IntractableError
            If the draws or tables needed would exceed :attr:`budget`.
        """
        q = check_level(q)
        return self._quantile(site, q)

    def _quantile(self, site: str, q: float) -> torch.Tensor:
        supports = getattr(self, "_supports", None) or {}
        if site in supports:  # a discrete table: the quantile is a support value
            return table_quantile(self._discrete_probs(site), supports[site], q, site=site, budget=self.budget)
        return marginal_quantile(self.marginal(site), q, site=site, budget=self.budget)

    _sampler = None  # callable(n, seed) -> dict, set by subclasses that can draw

    def sample(self, num_samples: int, seed: int | None = None) -> dict:
        """``num_samples`` joint posterior draws: site -> tensor of shape
        ``(num_samples,) + batch_shape + event_shape``.

        ``seed`` makes them reproducible; without one the run's seed is used where the
        backend passed it (:attr:`seed`: the same draws on every call and in every run with
        that seed), else torch's global RNG (reproducible after ``torch.manual_seed``).  A
        seeded call leaves the global RNGs of torch, numpy and ``random`` as they were.

        Raises
        ------
        OptionError
            If ``num_samples`` is not a positive integer, or ``seed`` not ``None`` or an
            integer in ``[0, 2**32 - 1]``.
        UnsupportedModelError
            If this posterior cannot be sampled.
        IntractableError
            If the draws would take more than :attr:`budget` bytes
            (``num_samples`` × elements of every site × element size), checked before
            anything is allocated: ask for fewer draws.
        """
        return self._draw(num_samples, seed, call="sample")

    def predictive(self, num_samples: int = 1000, data=None, seed: int | None = None, sites=None) -> dict:
        """Posterior predictive draws of the observed sites: latents drawn jointly by
        :meth:`sample`, then the model run with them fixed and its observed sites drawn
        (Pyro's ``Predictive``; :func:`ppl.posterior.predictive.posterior_predictive` has
        the details).  ``data=None``: the fitted data; a mapping: new arguments (new
        covariates, a new plate size).  ``sites`` may name latent sites too.  A loaded
        posterior runs its :attr:`model` compiled again on the saved data
        (:mod:`ppl.posterior.reattach`).

        Returns
        -------
        dict[str, torch.Tensor]
            Site -> draws of shape ``(num_samples,) + batch_shape + event_shape``.

        Raises
        ------
        OptionError, DataError, UnsupportedModelError, IntractableError, ModelError
            As :func:`~ppl.posterior.predictive.posterior_predictive` (a bad argument, bad
            or plate-changing data for a local latent, no draws of a latent, over
            :attr:`budget`, a model that raises; a loaded posterior without a model or
            data, or whose model is not the fitted one)."""
        from .predictive import posterior_predictive

        return posterior_predictive(self, num_samples, data=data, seed=seed, sites=sites)

    def _draw(self, num_samples, seed, call: str) -> dict:
        n = check_count(num_samples, call=call)
        seed = check_seed(seed, call=call)
        if self._sampler is None:
            raise UnsupportedModelError(f"{call}(): the posterior of method '{self.method}' cannot be sampled; use "
                                        "marginal(), mean() or quantile() instead")
        layout = self._draw_layout()
        size = sum(numel(shape) * itemsize for shape, itemsize in layout.values())
        elements = sum(numel(shape) for shape, _ in layout.values())
        check_memory(n, size, self.budget, what=f"{call}(num_samples={n})",
                     detail=f"{elements:,} element(s) of {len(layout)} site(s), {size:,} bytes per draw")
        if seed is None:
            seed = self.seed
        if seed is None:
            return self._sampler(n, None)
        with isolated_rng(seed):
            return self._sampler(n, seed)

    def _draw_layout(self) -> dict:
        """Site -> (shape of one draw, bytes per element) of what :meth:`sample` returns (the
        graph's batch and event shapes at 8 bytes an element; subclasses refine it; a loaded
        posterior's stored draws give theirs)."""
        stored = getattr(self._sampler, "layout", None)
        if self.graph is None and callable(stored):
            return stored()
        out = {}
        variables = getattr(self.graph, "variables", None) or {}
        for site in self.sites:
            var = variables.get(site)
            shape = tuple(var.batch_shape) + tuple(var.event_shape) if var is not None else tuple(self.mean(site).shape)
            out[site] = (shape, 8)
        return out

    def map(self) -> dict:
        """The most probable joint assignment: site -> value (``batch_shape + event_shape``).

        Raises
        ------
        UnsupportedModelError
            If this posterior has none (the message says which method or option gives one)."""
        raise UnsupportedModelError(f"map(): the posterior of method '{self.method}' has no MAP assignment; "
                                    f"{self._no_map_hint()}")

    def _no_map_hint(self) -> str:
        return "run ppl.infer(..., method='map') for the joint MAP"

    def summary(self, quantiles=(0.05, 0.5, 0.95)) -> Table:
        """Per-site table of posterior mean, standard deviation and quantiles (scalar
        elements; a plated site gives one row per element, the first 20).

        Columns ``site``, ``mean``, ``sd`` and one per level (``"5%"``, ``"50%"``, ``"95%"``:
        :meth:`quantile`, exact where the marginal allows).  A site held as draws (NUTS,
        Laplace, Pathfinder) is summarised by ``arviz.summary``: ``mean`` and ``sd`` (ddof 1)
        of the draws, ``hdi_3%`` / ``hdi_97%`` (the 94% highest-density interval), and across
        a sampler's chains (two or more) ``mcse_mean``, ``mcse_sd``, ``ess_bulk``,
        ``ess_tail``, ``r_hat`` (Vehtari et al. 2021).  Other sites keep exact numbers from
        their marginal (probability tables, closed-form families), no Monte Carlo.  The
        trust line is the first note (:mod:`ppl.posterior.summary`).

        Parameters
        ----------
        quantiles : sequence of float
            Levels in ``[0, 1]``, one column each.

        Returns
        -------
        ppl.table.Table

        Raises
        ------
        OptionError
            If ``quantiles`` is not a sequence of numbers in ``[0, 1]``.
        DataError
            If a site's marginal was not computed (``marginals=False``).
        """
        from .summary import summary_table

        return summary_table(self, quantiles)

    def _summary_draws(self, site: str):
        """``(draws (C, S) + shape, real chains?)`` when ``site`` is held as draws (then
        :meth:`summary` uses ``arviz.summary``), else ``None``: exact numbers."""
        return None

    def _chain_draws(self, chains: int, per_chain: int, seed) -> dict:
        """Site -> draws ``(chains, per_chain) + shape`` for :meth:`to_arviz`: independent
        joint draws of :meth:`sample`, laid out as chains."""
        draws = self._draw(chains * per_chain, seed, call="to_arviz")
        return {k: v.reshape((chains, per_chain) + tuple(v.shape[1:])) for k, v in draws.items()}

    def to_arviz(self, num_samples: int = 1000, seed: int | None = None, predictive: bool = True,
                 log_likelihood: bool = True, prior: bool = False, chains: int = 4):
        """This posterior as an ``arviz.InferenceData`` (:mod:`ppl.posterior.arviz_export`),
        so ``az.summary``, ``az.loo``, ``az.compare`` and ArviZ's plots work on it.

        Groups (each draw group ``(chain, draw, *shape)``, dims named after the plates):

        * ``posterior``: a sampler's real chains, every draw (NUTS; ``num_samples`` is then
          checked but not used); otherwise ``num_samples`` joint draws of :meth:`sample`
          laid out as ``chains`` independent chains (fewer when ``num_samples < chains²``;
          ``num_samples`` rounded down to a multiple of the chains);
        * ``observed_data``: the observed sites' fitted values;
        * ``posterior_predictive`` (``predictive``): observed sites drawn given each
          posterior draw (as :meth:`predictive`);
        * ``log_likelihood`` (``log_likelihood``): ``log p(y_i | h_s)`` in nats per observed
          site, per draw and plate copy, ``(chain, draw, *batch_shape)``;
        * ``prior`` / ``prior_predictive`` (``prior``): latents / observed sites drawn from
          the prior (:func:`ppl.prior_predictive`; ``ppl.param`` sites at their declared
          values).

        A loaded posterior gives them all when it has its model (:attr:`model`) and its data
        were saved, else ``posterior`` alone; a group skipped is named, with the reason, in
        ``idata.posterior.attrs["ppl_notes"]``.

        Parameters
        ----------
        num_samples : int
            Draws, a positive integer.
        seed : int or None
            Makes every group reproducible, leaving the global RNGs as they were;
            ``None``: the run's seed (:attr:`seed`), else torch's global RNG.
        predictive, log_likelihood, prior : bool
            Which optional groups to build.
        chains : int
            Chains that independent draws are laid out as (a positive integer).

        Returns
        -------
        arviz.InferenceData

        Raises
        ------
        OptionError
            If ``num_samples`` or ``chains`` is not a positive integer, ``seed`` not a valid
            seed, or a flag not a bool.
        IntractableError
            If the draws would exceed :attr:`budget` (as :meth:`sample` and
            :meth:`predictive`), checked before allocating.
        UnsupportedModelError
            If this posterior cannot be sampled.
        ModelError
            If the model raises when run at the draws.
        ImportError
            If ArviZ is not installed (``pip install arviz``).
        """
        from .arviz_export import to_inference_data

        return to_inference_data(self, num_samples, seed=seed, predictive=predictive, log_likelihood=log_likelihood,
                                 prior=prior, chains=chains)

    def plot(self, site: str, path=None, copies: int = 4, num_samples: int = 2000, seed: int | None = 0):
        """A figure of ``site``'s posterior marginal (matplotlib on its own Agg canvas: no
        display needed, pyplot's state untouched), one panel per plate copy / element (the
        first ``copies``): written as a PNG to ``path``, or returned (Jupyter displays a
        Figure inline).

        Discrete sites with probability tables: a bar chart of the state probabilities.
        Continuous sites: a histogram of ``num_samples`` draws from ``marginal(site)``,
        with the marginal's density drawn over it where it has one per element; a point
        mass (MAP) as a vertical line.

        Parameters
        ----------
        site : str
            A latent site of this posterior (see :attr:`sites`).
        path : str, os.PathLike or None
            File to write, in the format its extension names (none: ``.png``; a
            directory: ``<site>.png`` inside it; parent directories are created);
            ``None``: nothing is written, the Figure is returned.
        copies : int
            Plate copies / elements shown (the first ones, row-major).
        num_samples : int
            Draws behind the histogram of a continuous site.
        seed : int or None
            Seed of those draws (the global RNG state is left as it was).

        Returns
        -------
        str or matplotlib.figure.Figure
            The path of the file written when ``path`` is given, else the Figure.

        Raises
        ------
        DataError
            If ``site`` is not a latent site of this posterior.
        OptionError
            If ``num_samples`` is not a positive integer, ``seed`` not a valid seed,
            ``path`` neither None, a str nor an os.PathLike, its extension not a format
            matplotlib writes, or the file cannot be written.
        IntractableError
            If the draws of a continuous site would exceed :attr:`budget`.
        ImportError
            If matplotlib is not installed.
        """
        from .figures import marginal_figure

        return marginal_figure(self, site, path, copies=copies, num_samples=num_samples, seed=seed)

    def plot_arviz(self, kind: str = "posterior", num_samples: int = 1000, seed: int | None = None, **kw):
        """ArviZ's plot of :meth:`to_arviz`: ``kind="posterior"`` (``az.plot_posterior``:
        marginal densities with HDI), ``"forest"`` (``az.plot_forest``: intervals of every
        site, per chain) or ``"ppc"`` (``az.plot_ppc``: posterior predictive draws over the
        observed data).  ArviZ draws through pyplot: the figure is pyplot's current one
        (close it with ``matplotlib.pyplot.close(fig)``); nothing else of pyplot is touched.

        Parameters
        ----------
        kind : {"posterior", "forest", "ppc"}
        num_samples : int
            Draws of :meth:`to_arviz` (not used for a sampler's real chains).
        seed : int or None
            As for :meth:`to_arviz`.
        **kw
            Passed to the ArviZ function (``var_names``, ``hdi_prob``, ``ax``...).

        Returns
        -------
        matplotlib.axes.Axes or numpy.ndarray of Axes
            What ArviZ returns (``.figure`` of an Axes is the Figure).

        Raises
        ------
        OptionError
            If ``kind`` is not one of the three, or as :meth:`to_arviz`.
        UnsupportedModelError
            ``kind="ppc"`` on a posterior without predictive draws (no model, nothing
            observed); or as :meth:`to_arviz`.
        ImportError
            If ArviZ or matplotlib is not installed.
        """
        from .figures import arviz_plot

        return arviz_plot(self, kind, num_samples=num_samples, seed=seed, **kw)

    def _repr_html_(self) -> str:
        """This posterior as HTML (Jupyter's display): method, trust verdict and its first
        reason, log evidence / ELBO, then :meth:`summary` (:func:`ppl.posterior.summary.posterior_html`)."""
        from .summary import posterior_html

        return posterior_html(self)

    def _unknown(self, site):
        return DataError(f"'{site}' is not a latent site of this posterior; latent sites: {self.sites}")

    def __repr__(self):
        bits = [f"method='{self.method}'"]
        if self.log_evidence is not None:
            bits.append(f"log_evidence={self.log_evidence:.6g}")
        elif self.elbo is not None:
            bits.append(f"elbo={self.elbo:.6g}")
        bits.append(f"elapsed={self.elapsed:.3g}s")
        if self.trust is not None:
            bits.append(f"trust={self.trust.verdict}")
        return f"<Posterior {' '.join(bits)}>"

    def __str__(self):
        head = repr(self)
        return head if self.trust is None else f"{head}\n{self.trust}"

