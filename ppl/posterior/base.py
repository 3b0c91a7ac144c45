"""The Posterior: one interface for the result of every backend (DESIGN.md).

Members: ``method``, ``marginal(site)``, ``mean(site)``, ``sample(n)``, ``map()``,
``elbo``, ``log_evidence``, ``params``, ``history``, ``converged``, ``elapsed``,
``diagnostics``, ``summary()``, ``to_arviz()``, ``plot(site, path)``.  A field a backend cannot fill is
``None``, never a made-up value.

Subclasses hold the representation of each backend: :class:`TablePosterior` (exact
tables over discrete latents), :class:`GuidePosterior` (a fitted SVI guide, with exact
conditional marginals of enumerated discrete sites), :class:`PointPosterior` (a MAP point mass),
:class:`MeanFieldPosterior` and :class:`FactorPosterior` (CAVI's factorised q: discrete, continuous).
"""

from __future__ import annotations

import contextlib
import os
import re

import torch

from ..errors import DataError
from ..table import Table

__all__ = ["Posterior", "TablePosterior", "GuidePosterior", "PointPosterior", "MeanFieldPosterior",
           "FactorPosterior"]


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
    """

    def __init__(self, method, *, graph=None, elbo=None, log_evidence=None, params=None, history=None,
                 converged=None, elapsed=0.0, diagnostics=None):
        self.method = method
        self.graph = graph
        self.elbo = elbo
        self.log_evidence = log_evidence
        self.params = dict(params or {})
        self.history = list(history or [])
        self.converged = converged
        self.elapsed = float(elapsed)
        self.diagnostics = dict(diagnostics or {})

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
        """Posterior mean of ``site``, shape ``batch_shape + event_shape``."""
        return self.marginal(site).mean

    def variance(self, site: str) -> torch.Tensor:
        """Posterior variance of ``site`` (elementwise), shape ``batch_shape + event_shape``."""
        return _variance(self.marginal(site))

    def quantile(self, site: str, q: float) -> torch.Tensor:
        """The ``q``-quantile of ``site``'s marginal, elementwise, shape ``batch_shape +
        event_shape`` (NaN where the marginal has no quantile function)."""
        marg = self.marginal(site)
        value = _quantile(marg, q)
        return value if value is not None else torch.full_like(self.mean(site), float("nan"))

    _sampler = None  # callable(n, seed) -> dict, set by subclasses that can draw

    def sample(self, num_samples: int, seed: int | None = None) -> dict:
        """``num_samples`` joint posterior draws: site -> tensor of shape
        ``(num_samples,) + batch_shape + event_shape``; ``seed`` makes them reproducible.

        Raises
        ------
        ValueError
            If ``num_samples`` is not a positive integer.
        TypeError
            If this posterior cannot be sampled.
        """
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if self._sampler is None:
            raise TypeError(f"posterior of method '{self.method}' cannot be sampled")
        return self._sampler(num_samples, seed)

    def map(self) -> dict:
        """The most probable joint assignment: site -> value (``batch_shape + event_shape``)."""
        raise TypeError(f"posterior of method '{self.method}' has no MAP assignment")

    def summary(self, quantiles=(0.05, 0.5, 0.95)) -> Table:
        """Per-site table of mean, standard deviation and quantiles (scalar elements;
        plated sites give one row per element, first 20 shown).

        Returns
        -------
        ppl.table.Table
        """
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
        return Table(rows, title=f"posterior summary ({self.method})")

    def to_arviz(self, num_samples: int = 1000):
        """Posterior draws as an ``arviz.InferenceData`` (one chain).

        Raises
        ------
        ImportError
            If ArviZ is not installed (``pip install arviz``).
        """
        import warnings

        try:
            with warnings.catch_warnings():  # ArviZ announces its refactor on import
                warnings.simplefilter("ignore", FutureWarning)
                import arviz as az
        except ImportError as e:
            raise ImportError("to_arviz() needs ArviZ: pip install arviz") from e
        draws = self.sample(num_samples)
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
        ImportError
            If matplotlib is not installed.
        """
        if site not in self.sites:
            raise self._unknown(site)
        path = os.fspath(path)
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        fig = _figure()
        table = None
        if site in getattr(self, "_supports", {}) and hasattr(self, "probs"):
            table = self.probs(site).detach().cpu().double()
        if table is not None:
            flat = table.reshape(-1, table.shape[-1])
            support = self._supports[site]
            labels = [_state_label(v) for v in support] if support.dim() == 1 else [str(k) for k in
                                                                                    range(table.shape[-1])]
            shown = min(copies, flat.shape[0])
            for i in range(shown):
                ax = fig.add_subplot(1, shown, i + 1)
                ax.bar(range(len(labels)), flat[i].tolist(), color="C0")
                ax.set_xticks(range(len(labels)))
                ax.set_xticklabels(labels, fontsize=8)
                ax.set_ylim(0, 1.05)
                ax.set_xlabel("value")
                ax.set_title(site if flat.shape[0] == 1 else f"{site}[{i}]", fontsize=9)
            fig.axes[0].set_ylabel("posterior probability")
            n = flat.shape[0]
        else:
            n = _plot_continuous_marginal(fig, self.marginal(site), site, copies, num_samples, seed)
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
        return f"<Posterior {' '.join(bits)}>"


def _variance(marg):
    try:
        return marg.variance
    except NotImplementedError:
        return torch.full_like(marg.mean, float("nan"))


def _quantile(marg, q):
    samples = getattr(marg, "_samples", None)
    if samples is not None and type(marg).__name__ == "Empirical":  # draws: batch + (S,) + event
        return samples.quantile(q, dim=len(marg.batch_shape))
    probs = getattr(marg, "probs", None)
    if isinstance(marg, torch.distributions.Categorical):
        cdf = probs.cumsum(-1)
        return (cdf < q).sum(-1).to(probs.dtype)
    if isinstance(marg, torch.distributions.Bernoulli):
        return (probs > 1 - q).to(probs.dtype)
    try:
        return marg.icdf(torch.tensor(q))
    except (NotImplementedError, ValueError, RuntimeError):
        return None


class _DiscreteTables:
    """Marginal tables of discrete sites: ``probs``/``marginal``/``mean``/``variance`` from
    ``self._marginals`` (site -> probabilities ``batch_shape + (K,)``), ``self._supports``
    (site -> values ``(K,) + event_shape``) and ``self._families`` (site -> family).
    Shared by every posterior that holds discrete marginals (exact, EM, SVI with
    enumerated sites)."""

    def _discrete_probs(self, site: str) -> torch.Tensor:
        if site not in self._marginals:
            raise DataError(f"marginals were not computed for this posterior (it was run with marginals=False); "
                            f"run ppl.infer(..., marginals=True) to get '{site}'")
        return self._marginals[site]

    def _discrete_marginal(self, site: str):
        p = self._discrete_probs(site)
        family = self._families.get(site)
        if family == "Bernoulli":
            return torch.distributions.Bernoulli(probs=p[..., 1], validate_args=False)
        if family == "OneHotCategorical":
            return torch.distributions.OneHotCategorical(probs=p, validate_args=False)
        return torch.distributions.Categorical(probs=p, validate_args=False)

    def _discrete_moment(self, site: str, power: int) -> torch.Tensor:
        p = self._discrete_probs(site)
        values = self._supports[site].to(device=p.device, dtype=p.dtype)
        event = values.shape[1:]
        p = p.reshape(p.shape + (1,) * len(event))
        return (p * values**power).sum(dim=-1 - len(event))

    def _discrete_variance(self, site: str) -> torch.Tensor:
        return (self._discrete_moment(site, 2) - self._discrete_moment(site, 1) ** 2).clamp_min(0)


class TablePosterior(_DiscreteTables, Posterior):
    """Exact posterior over discrete latents, held as marginal tables.

    Parameters
    ----------
    marginals : dict[str, torch.Tensor]
        Site -> probabilities, shape ``batch_shape + (K,)``.
    supports : dict[str, torch.Tensor]
        Site -> support values, shape ``(K,) + event_shape``.
    families : dict[str, str]
        Site -> distribution family (``"Bernoulli"`` marginals are returned as Bernoulli).
    sampler : callable(n, seed) -> dict, optional
        Exact joint sampler.
    map_assignment : dict[str, torch.Tensor], optional
    """

    def __init__(self, method, *, marginals, supports, families, sampler=None, map_assignment=None, **kw):
        super().__init__(method, **kw)
        self._marginals = marginals  # empty when the backend was asked not to compute them
        self._supports = supports
        self._families = families
        self._sampler = sampler
        self._map = map_assignment

    @property
    def sites(self) -> list:
        return list(self._supports)

    def probs(self, site: str) -> torch.Tensor:
        """Marginal probabilities of ``site``, shape ``batch_shape + (K,)``; state ``k`` is
        the site's ``k``-th support value.

        Raises
        ------
        DataError
            If ``site`` is not a latent site, or marginals were not computed
            (``marginals=False``)."""
        if site not in self._supports:
            raise self._unknown(site)
        return self._discrete_probs(site)

    def marginal(self, site: str):
        """Exact posterior marginal: ``Bernoulli`` for Bernoulli sites, ``OneHotCategorical``
        for one-hot sites, else ``Categorical`` over the support's indices; batch shape =
        the site's plate batch shape."""
        self.probs(site)
        return self._discrete_marginal(site)

    def mean(self, site: str) -> torch.Tensor:
        """``E[site]`` under the exact posterior: Σ_k p_k · value_k."""
        self.probs(site)
        return self._discrete_moment(site, 1)

    def variance(self, site: str) -> torch.Tensor:
        """``Var[site]`` under the exact posterior: E[value²] − E[value]²."""
        self.probs(site)
        return self._discrete_variance(site)

    def map(self) -> dict:
        """The joint MAP assignment (max-product), site -> value with the site's batch shape."""
        if self._map is None:
            return super().map()
        return dict(self._map)


class GuidePosterior(_DiscreteTables, Posterior):
    """Posterior represented by a fitted guide q (SVI): continuous sites from q, discrete
    sites that were enumerated from their exact conditional marginals.

    Parameters
    ----------
    continuous : list[str]
        Latent sites the guide samples.
    marginal_fn : callable(site) -> Distribution or None
        The guide's exact per-site marginal (batch shape = the site's plate batch shape,
        event shape = the site's event shape) where the guide's form gives one (AutoNormal,
        AutoMultivariateNormal, AutoLowRankMultivariateNormal, AutoDelta), else ``None``:
        the marginal is then the empirical distribution of ``posterior_samples`` draws.
    sampler : callable(n, seed, discrete=True) -> dict
        Joint draws: site -> tensor ``(n,) + batch_shape + event_shape`` (continuous sites
        from q, enumerated discrete sites from p(z | continuous draw, data) unless
        ``discrete=False``).
    marginals, supports, families : dict
        As :class:`TablePosterior`, for the enumerated discrete sites: probabilities
        ``batch_shape + (K,)`` averaged over guide draws (a Rao-Blackwellised estimate of
        p(z | data); exact when the guide has no continuous sites).
    posterior_samples : int
        Draws behind sample-based marginals and moments.
    point : dict, optional
        For a point-mass guide (AutoDelta): site -> value, returned by :meth:`map`.
    guide : callable, optional
        The fitted guide, kept as :attr:`guide` (usable with Pyro, e.g. ``Predictive``).
    """

    def __init__(self, method, *, continuous, marginal_fn, sampler, marginals, supports, families,
                 posterior_samples=1000, point=None, guide=None, **kw):
        super().__init__(method, **kw)
        self.guide = guide
        self._continuous = list(continuous)
        self._marginal_fn = marginal_fn
        self._sampler = sampler
        self._marginals = marginals
        self._supports = supports
        self._families = families
        self._n_draws = int(posterior_samples)
        self._point = point
        self._cache: dict = {}
        self._draws = None

    @property
    def sites(self) -> list:
        return self._continuous + list(self._supports)

    def probs(self, site: str) -> torch.Tensor:
        """Posterior probabilities of an enumerated discrete site, shape ``batch_shape + (K,)``.

        Raises
        ------
        DataError
            If ``site`` is not an enumerated discrete latent site."""
        if site not in self._supports:
            raise self._unknown(site) if site not in self._continuous else DataError(
                f"'{site}' is a continuous site: use marginal('{site}'), mean('{site}') or sample()")
        return self._discrete_probs(site)

    def _samples(self, site):
        if self._draws is None:
            self._draws = self._sampler(self._n_draws, None, discrete=False)
        return self._draws[site]

    def marginal(self, site: str):
        """q's marginal of ``site`` (exact for Gaussian and point-mass guides, else an
        ``Empirical`` over ``posterior_samples`` guide draws); enumerated discrete sites:
        Categorical/Bernoulli of :meth:`probs`.

        Raises
        ------
        DataError
            If ``site`` is not a latent site."""
        if site in self._supports:
            return self._discrete_marginal(site)
        if site not in self._continuous:
            raise self._unknown(site)
        if site not in self._cache:
            marg = self._marginal_fn(site)
            if marg is None:
                import pyro.distributions as pdist

                draws = self._samples(site)
                batch = draws.dim() - 1 - len(self.graph.variables[site].event_shape) if self.graph else 0
                values = draws.movedim(0, batch)
                marg = pdist.Empirical(values, torch.zeros(values.shape[: batch + 1], dtype=values.dtype,
                                                           device=values.device))
            self._cache[site] = marg
        return self._cache[site]

    def mean(self, site: str) -> torch.Tensor:
        """Mean of q's marginal (closed form where the family has one, else the mean of
        ``posterior_samples`` draws), shape ``batch_shape + event_shape``."""
        if site in self._supports:
            return self._discrete_moment(site, 1)
        try:
            return self.marginal(site).mean
        except NotImplementedError:
            return self._samples(site).mean(0)

    def quantile(self, site: str, q: float) -> torch.Tensor:
        """Elementwise ``q``-quantile of q's marginal: closed form where it has one, else
        from ``posterior_samples`` draws."""
        if site in self._supports:
            return super().quantile(site, q)
        value = _quantile(self.marginal(site), q)
        return value if value is not None else self._samples(site).quantile(q, dim=0)

    def variance(self, site: str) -> torch.Tensor:
        """Elementwise variance of q's marginal (closed form or from draws)."""
        if site in self._supports:
            return self._discrete_variance(site)
        try:
            return self.marginal(site).variance
        except NotImplementedError:
            return self._samples(site).var(0)

    def map(self) -> dict:
        """The point of a point-mass guide (``guide="delta"``: the MAP estimate, §19.3)."""
        if self._point is None:
            return super().map()
        return dict(self._point)


class PointPosterior(Posterior):
    """A point mass at the joint MAP ``ĥ = argmax_h log p(h, v)`` (``method="map"``).

    MAP inference is variational inference with a Dirac ``q(h) = δ(h - ĥ)``
    (Goodfellow et al. 2016, §19.3, eq. 19.9-19.11): every marginal is a ``Delta``, the
    mean is ĥ, the variance 0 and draws repeat ĥ.  Its ELBO is ``-∞`` (a Dirac has
    differential entropy ``-∞`` for continuous latents), so :attr:`elbo` is ``None``; the
    objective MAP maximises, ``log p(ĥ, v)``, is :attr:`log_joint`.

    Attributes
    ----------
    log_joint : float
        ``log p(ĥ, v; θ)`` in nats (densities for continuous latents, with respect to
        Lebesgue measure in the space the site is declared in).
    """

    def __init__(self, method, *, values, event_dims, log_joint, **kw):
        kw.setdefault("elbo", None)
        super().__init__(method, **kw)
        self._values = dict(values)
        self._event_dims = dict(event_dims)
        self.log_joint = float(log_joint)
        self._sampler = self._repeat

    @property
    def sites(self) -> list:
        return list(self._values)

    def _value(self, site):
        if site not in self._values:
            raise self._unknown(site)
        return self._values[site]

    def marginal(self, site: str):
        """``Delta(ĥ_site)`` with the site's batch shape (event dims as the site's)."""
        import pyro.distributions as pdist

        value = self._value(site)
        return pdist.Delta(value if value.is_floating_point() else value.double(),
                           event_dim=self._event_dims.get(site, 0))

    def mean(self, site: str) -> torch.Tensor:
        return self._value(site).clone()

    def variance(self, site: str) -> torch.Tensor:
        value = self._value(site)
        return torch.zeros(value.shape, dtype=value.dtype if value.is_floating_point() else torch.float64,
                           device=value.device)

    def quantile(self, site: str, q: float) -> torch.Tensor:
        return self.mean(site)

    def map(self) -> dict:
        """Site -> ĥ (``batch_shape + event_shape``)."""
        return {k: v.clone() for k, v in self._values.items()}

    def _repeat(self, n, seed=None):
        del seed  # a point mass has nothing random
        return {k: v.unsqueeze(0).expand((n,) + tuple(v.shape)).clone() for k, v in self._values.items()}

    def __repr__(self):
        return f"<Posterior method='{self.method}' log_joint={self.log_joint:.6g} elapsed={self.elapsed:.3g}s>"


class MeanFieldPosterior(TablePosterior):
    """A mean-field ``q(h) = Π_j q_j(h_j)`` over discrete latents (``method="cavi"``).

    Same members as :class:`TablePosterior`, read as the variational factors, not the
    exact posterior: ``probs(site)`` / ``marginal(site)`` is ``q_site`` (plate batch shape +
    states), ``mean``/``variance`` are moments under it, ``sample(n)`` draws every site
    independently (the mean-field family has no dependence between sites), ``map()`` is
    each ``q_site``'s mode, and ``elbo`` is ``L(q) = log p(v) - KL(q‖p(h|v))``
    (Goodfellow et al. 2016, eq. 19.1, 19.30), a lower bound on the log evidence.
    """

    def __init__(self, method, *, marginals, supports, families, seed=None, **kw):
        modes = {v: support_values(supports[v], p.argmax(-1)) for v, p in marginals.items()}
        super().__init__(method, marginals=marginals, supports=supports, families=families, map_assignment=modes,
                         **kw)
        self._sampler = lambda n, sample_seed=None: sample_tables(
            marginals, supports, n, seed if sample_seed is None else sample_seed)

    def map(self) -> dict:
        """Each factor's mode, site -> value with the site's batch shape (the mode of
        ``q``, which need not be the joint MAP of the posterior)."""
        return super().map()


class FactorPosterior(_DiscreteTables, Posterior):
    """A mean field ``q(h) = Π_j q_j(h_j)`` (``method="cavi"``) of continuous factors —
    Gaussian factors (``Normal``, or ``MultivariateNormal`` over a site's event dims) or the
    sites' own conjugate families (Normal, Gamma, Beta, Dirichlet, Wishart, Normal-Wishart) —
    and, in a mixed model, discrete factors held as probability tables.

    ``marginal(site)`` is ``q_site`` (a torch distribution with the site's plate batch shape;
    for the mean of a Normal-Wishart pair its Student-t marginal), ``probs(site)`` a discrete
    factor's table ``batch_shape + (K,)``, ``mean``/``variance`` moments under ``q``,
    ``sample(n)`` draws from ``q`` (a Normal-Wishart pair jointly, every other factor
    independently), ``map()`` each factor's mode.

    Parameters
    ----------
    factors : dict[str, torch.distributions.Distribution]
        Continuous site -> its factor (or marginal).
    marginals, supports, families : dict, optional
        Discrete sites, as for :class:`TablePosterior`.
    joint : dict[tuple[str, ...], callable(n) -> tuple], optional
        Samplers of factors that cover several sites.
    """

    def __init__(self, method, *, factors, marginals=None, supports=None, families=None, joint=None, **kw):
        super().__init__(method, **kw)
        self._factors = dict(factors)
        self._marginals = dict(marginals or {})
        self._supports = dict(supports or {})
        self._families = dict(families or {})
        self._joint = dict(joint or {})
        self._sampler = self._draw

    @property
    def sites(self) -> list:
        return list(self._factors) + list(self._supports)

    def probs(self, site: str) -> torch.Tensor:
        """A discrete factor's probabilities, ``batch_shape + (K,)`` (state ``k`` is the
        ``k``-th support value)."""
        if site not in self._supports:
            raise self._unknown(site)
        return self._discrete_probs(site)

    def marginal(self, site: str):
        if site in self._supports:
            return self._discrete_marginal(site)
        if site not in self._factors:
            raise self._unknown(site)
        return self._factors[site]

    def mean(self, site: str) -> torch.Tensor:
        if site in self._supports:
            return self._discrete_moment(site, 1)
        return self.marginal(site).mean

    def variance(self, site: str) -> torch.Tensor:
        if site in self._supports:
            return self._discrete_variance(site)
        return super().variance(site)

    def map(self) -> dict:
        """Each factor's mode, site -> ``batch_shape + event_shape`` (Normal, MultivariateNormal:
        the mean; Gamma: ``(a - 1) / b``, 0 when ``a < 1``; discrete: the most probable
        state)."""
        out = {}
        for s, d in self._factors.items():
            if isinstance(d, torch.distributions.Gamma):
                out[s] = ((d.concentration - 1).clamp_min(0) / d.rate).clone()
            else:
                out[s] = d.mean.clone()
        for s, p in self._marginals.items():
            out[s] = support_values(self._supports[s], p.argmax(-1))
        return out

    def _draw(self, n, seed=None):
        with torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(int(seed))
            out = {}
            for sites, draw in self._joint.items():
                out.update(zip(sites, draw(n)))
            for s, d in self._factors.items():
                if s not in out:
                    out[s] = d.sample((n,))
            out.update(sample_tables(self._marginals, self._supports, n))
            return out



# ---------------------------------------------------------------------- plotting helpers
def _figure(figsize=(8.0, 3.5)):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global backend change).

    Raises
    ------
    ImportError
        If matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install matplotlib (or ppl[plots])") from e
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _safe_name(site: str) -> str:
    """``site`` as a file-name fragment."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", site) or "site"


def _state_label(value) -> str:
    v = float(value)
    return str(int(v)) if v.is_integer() else f"{v:.3g}"


def _plot_continuous_marginal(fig, marg, site, copies, num_samples, seed) -> int:
    """Histogram (+ density) panels of a continuous marginal; returns the number of elements."""
    import pyro.distributions as pdist

    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng, torch.no_grad():
        if seed is not None:
            torch.manual_seed(int(seed))
        point = isinstance(marg, pdist.Delta)
        draws = marg.mean.unsqueeze(0) if point else marg.sample((num_samples,))
    draws = draws.detach().cpu().double().reshape(draws.shape[0], -1)
    n = draws.shape[1]
    shown = min(copies, n)
    density = not point and len(marg.event_shape) == 0 and type(marg).__name__ != "Empirical"
    for i in range(shown):
        ax = fig.add_subplot(1, shown, i + 1)
        col = draws[:, i]
        if point:
            ax.axvline(float(col[0]), color="C3", lw=2, label="point mass")
            ax.legend(fontsize=7)
        else:
            finite = col[torch.isfinite(col)]
            ax.hist(finite.tolist(), bins=40, density=True, color="C0", alpha=0.5, label="draws")
            if density and finite.numel() > 1:
                lo, hi = float(finite.min()), float(finite.max())
                grid = torch.linspace(lo, hi, 200, dtype=torch.float64)
                try:
                    shape = (200,) + tuple(marg.batch_shape)
                    values = grid.reshape((200,) + (1,) * len(marg.batch_shape)).expand(shape)
                    lp = marg.log_prob(values.to(marg.mean.dtype)).detach().cpu().double().reshape(200, -1)[:, i]
                    ax.plot(grid.tolist(), lp.exp().tolist(), color="C1", lw=1.5, label="density")
                except (ValueError, RuntimeError, NotImplementedError):
                    pass
            ax.legend(fontsize=7)
        ax.set_title(site if n == 1 else f"{site}[{i}]", fontsize=9)
        ax.set_xlabel("value")
    fig.axes[0].set_ylabel("density")
    return n

def sample_tables(marginals: dict, supports: dict, n: int, seed=None) -> dict:
    """``n`` independent draws from each discrete factor: site -> values of shape
    ``(n,) + batch_shape + event_shape``.

    Parameters
    ----------
    marginals : dict[str, torch.Tensor]
        Site -> probabilities ``batch_shape + (K,)``.
    supports : dict[str, torch.Tensor]
        Site -> support values ``(K,) + event_shape``.
    seed : int, optional
        Seed of a private generator (torch's global RNG when None)."""
    out = {}
    gen = None
    for site, p in marginals.items():
        if seed is not None and gen is None:
            gen = torch.Generator(device=p.device)
            gen.manual_seed(int(seed))
        idx = torch.multinomial(p.reshape(-1, p.shape[-1]), n, replacement=True, generator=gen)
        out[site] = support_values(supports[site].to(p.device), idx.T.reshape((n,) + tuple(p.shape[:-1])))
    return out


def support_values(support: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``support[idx]`` with the support's event dims kept: ``idx.shape + event_shape``
    (state indices ``idx`` of a discrete site to its values; ``support`` is ``(K,) + event``)."""
    return support[idx.reshape(-1)].reshape(tuple(idx.shape) + tuple(support.shape[1:]))
