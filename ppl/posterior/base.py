"""The Posterior base class: one interface for the result of every backend.

Members: ``method``, ``marginal(site)``, ``mean(site)``, ``sample(n)``, ``map()``,
``elbo``, ``log_evidence``, ``params``, ``history``, ``converged``, ``elapsed``,
``diagnostics``, ``summary()``, ``to_arviz()``, ``plot(site, path)``, ``save(path)``, ``model``.  A field a
backend cannot fill is ``None``, never a made-up value.

Subclasses hold the representation of each backend, one module each of
:mod:`ppl.posterior`; this module holds what they share: the members' defaults, the
summary table, ArviZ export and plots.  The quantiles and moments of a marginal
(:func:`marginal_variance`, :func:`marginal_quantile`, re-exported here) live in
:mod:`ppl.posterior.quantiles`; the argument checks, the memory budget of draws and the
RNG isolation in :mod:`ppl.posterior.checks`.
"""

from __future__ import annotations

import os

import torch

from ..errors import DataError, OptionError, UnsupportedModelError
from ..table import Table
from .checks import check_count, check_level, check_memory, check_seed, default_budget, isolated_rng, numel
from .plotting import figure, plot_continuous_marginal, plot_table_marginal
from .quantiles import marginal_mean, marginal_quantile, marginal_variance, table_quantile

__all__ = ["Posterior", "marginal_variance", "marginal_quantile"]


class Posterior:
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
        Learned ``ppl.param`` values (empty when nothing is learned).
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
        self.diagnostics = dict(diagnostics or {})
        self.trust = trust
        self.seed = None if seed is None else int(seed)
        self.memory_budget = None if memory_budget is None else int(memory_budget)

    @property
    def budget(self) -> int:
        """The memory budget in effect, in bytes (see :attr:`memory_budget`)."""
        budget = getattr(self, "memory_budget", None)
        if budget is None:
            budget = self.diagnostics.get("memory_budget")
        return default_budget() if budget is None else int(budget)

    @property
    def model(self):
        """The model this posterior was fitted on, a ``ppl.Model``: the compiled graph's while
        :attr:`graph` is held; on a loaded posterior, the model re-imported from
        :attr:`model_path` (its module is imported), or ``None`` when it was not kept or
        does not import here."""
        graph = getattr(self, "graph", None)
        if graph is not None:
            return graph.model
        from .persist import import_model

        return import_model(getattr(self, "_model_path", None))

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
        diagnostics, trust; never the model or the graph); read it back with
        :func:`ppl.load`.  Closures are materialised first (:mod:`ppl.posterior.persist`:
        e.g. the joint draws behind a loaded exact or SVI posterior's :meth:`sample`).

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
            If ``path`` is not a str or ``os.PathLike``.
        OSError
            If the file cannot be written.
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
        the samplers' closures are)."""
        import copy

        new = type(self).__new__(type(self))
        memo[id(self)] = new
        graph = getattr(self, "graph", None)
        if graph is not None:
            memo[id(graph)] = graph
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
        covariates, a new plate size).  ``sites`` may name latent sites too.

        Returns
        -------
        dict[str, torch.Tensor]
            Site -> draws of shape ``(num_samples,) + batch_shape + event_shape``.

        Raises
        ------
        OptionError, DataError, UnsupportedModelError, IntractableError, ModelError
            As :func:`~ppl.posterior.predictive.posterior_predictive` (a bad argument, bad
            or plate-changing data for a local latent, no draws of a latent, over
            :attr:`budget`, a model that raises)."""
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
        """Per-site table of mean, standard deviation and quantiles (scalar elements;
        plated sites give one row per element, first 20 shown).

        Parameters
        ----------
        quantiles : sequence of float
            Levels in ``[0, 1]``, one column each (see :meth:`quantile`).

        Returns
        -------
        ppl.table.Table

        Raises
        ------
        OptionError
            If ``quantiles`` is not a sequence of numbers in ``[0, 1]``.
        """
        try:
            levels = list(quantiles)
        except TypeError:
            raise OptionError(f"summary(): quantiles must be a sequence of numbers in [0, 1], got {quantiles!r}") \
                from None
        quantiles = [check_level(q, name="quantiles", call="summary") for q in levels]
        rows = []
        for site in self.sites:
            mean = self.mean(site).reshape(-1)
            var = self.variance(site).reshape(-1)
            qs = [self.quantile(site, q).reshape(-1) for q in quantiles]
            n = mean.numel()
            for i in range(min(n, 20)):
                label = site if n == 1 else f"{site}[{i}]"
                row = {"site": label, "mean": float(mean[i]), "sd": float(var[i].clamp_min(0).sqrt())}
                for q, qv in zip(quantiles, qs):
                    row[f"{q:.0%}"] = float(qv[i])
                rows.append(row)
        notes = [str(self.trust)] if self.trust is not None else []
        return Table(rows, title=f"posterior summary ({self.method})", notes=notes)

    def to_arviz(self, num_samples: int = 1000):
        """Posterior draws as an ``arviz.InferenceData`` (one chain).

        Raises
        ------
        OptionError
            If ``num_samples`` is not a positive integer.
        IntractableError
            If the draws would exceed :attr:`budget` (as :meth:`sample`).
        UnsupportedModelError
            If this posterior cannot be sampled.
        ImportError
            If ArviZ is not installed (``pip install arviz``).
        """
        import warnings

        check_count(num_samples, call="to_arviz")

        try:
            with warnings.catch_warnings():  # ArviZ announces its refactor on import
                warnings.simplefilter("ignore", FutureWarning)
                import arviz as az
        except ImportError as e:
            raise ImportError("to_arviz() needs ArviZ: pip install arviz") from e
        draws = self._draw(num_samples, None, call="to_arviz")
        return az.from_dict(posterior={k: v.detach().cpu().numpy()[None] for k, v in draws.items()})

    def plot(self, site: str, path, copies: int = 4, num_samples: int = 2000, seed: int | None = 0) -> str:
        """Write a PNG of ``site``'s posterior marginal (matplotlib on an Agg canvas: no
        display needed, pyplot's state untouched), one panel per plate copy / element
        (the first ``copies``).

        Discrete sites with probability tables: a bar chart of the state probabilities.
        Continuous sites: a histogram of ``num_samples`` draws from ``marginal(site)``,
        with the marginal's density drawn over it where it has one per element; a point
        mass (MAP) as a vertical line.

        Parameters
        ----------
        site : str
            A latent site of this posterior (see :attr:`sites`).
        path : str or os.PathLike
            File to write (``.png`` is the format; parent directories are created).
        copies : int
            Plate copies / elements shown (the first ones, row-major).
        num_samples : int
            Draws behind the histogram of a continuous site.
        seed : int or None
            Seed of those draws (the global RNG state is left as it was).

        Returns
        -------
        str
            ``path``.

        Raises
        ------
        DataError
            If ``site`` is not a latent site of this posterior.
        OptionError
            If ``num_samples`` is not a positive integer or ``seed`` not a valid seed.
        IntractableError
            If the draws of a continuous site would exceed :attr:`budget`.
        ImportError
            If matplotlib is not installed.
        """
        num_samples = check_count(num_samples, call="plot")
        seed = check_seed(seed, call="plot")
        if site not in self.sites:
            raise self._unknown(site)
        discrete = site in getattr(self, "_supports", {}) and hasattr(self, "probs")
        marg = None
        if not discrete:
            marg = self.marginal(site)
            shape = tuple(marg.batch_shape) + tuple(marg.event_shape)
            check_memory(num_samples, numel(shape) * 8, self.budget, what=f"plot('{site}', num_samples={num_samples})",
                         detail=f"{numel(shape):,} elements × 8 bytes")
        path = os.fspath(path)
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        fig = figure()
        if discrete:
            table = self.probs(site).detach().cpu().double()
            n = plot_table_marginal(fig, table, self._supports[site], site, copies)
        else:
            n = plot_continuous_marginal(fig, marg, site, copies, num_samples, seed)
        shown = min(copies, n)
        more = f" (first {shown} of {n})" if n > shown else ""
        fig.suptitle(f"posterior marginal of '{site}' ({self.method}){more}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return path

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

