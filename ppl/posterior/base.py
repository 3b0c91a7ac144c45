"""The Posterior base class: one interface for the result of every backend.

Members: ``method``, ``marginal(site)``, ``mean(site)``, ``sample(n)``, ``map()``,
``elbo``, ``log_evidence``, ``params``, ``history``, ``converged``, ``elapsed``,
``diagnostics``, ``summary()``, ``to_arviz()``, ``plot(site, path)``.  A field a backend cannot fill is
``None``, never a made-up value.

Subclasses hold the representation of each backend, one module each of
:mod:`ppl.posterior`; this module holds what they share: the members' defaults, the
summary table, ArviZ export and plots, and the moments of a torch Distribution
(:func:`marginal_variance`, :func:`marginal_quantile`).
"""

from __future__ import annotations

import os

import torch

from ..errors import DataError
from ..table import Table
from .plotting import figure, plot_continuous_marginal, plot_table_marginal

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
    """

    def __init__(self, method, *, graph=None, elbo=None, log_evidence=None, params=None, history=None,
                 converged=None, elapsed=0.0, diagnostics=None, trust=None):
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
        return marginal_variance(self.marginal(site))

    def quantile(self, site: str, q: float) -> torch.Tensor:
        """The ``q``-quantile of ``site``'s marginal, elementwise, shape ``batch_shape +
        event_shape`` (NaN where the marginal has no quantile function)."""
        marg = self.marginal(site)
        value = marginal_quantile(marg, q)
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
        notes = [str(self.trust)] if self.trust is not None else []
        return Table(rows, title=f"posterior summary ({self.method})", notes=notes)

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
        fig = figure()
        if site in getattr(self, "_supports", {}) and hasattr(self, "probs"):
            table = self.probs(site).detach().cpu().double()
            n = plot_table_marginal(fig, table, self._supports[site], site, copies)
        else:
            n = plot_continuous_marginal(fig, self.marginal(site), site, copies, num_samples, seed)
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


def marginal_variance(marg) -> torch.Tensor:
    """Elementwise variance of a torch Distribution, NaN where it has none.

    Parameters
    ----------
    marg : torch.distributions.Distribution

    Returns
    -------
    torch.Tensor
        Shape ``batch_shape + event_shape`` (that of ``marg.mean``).
    """
    try:
        return marg.variance
    except NotImplementedError:
        return torch.full_like(marg.mean, float("nan"))


def marginal_quantile(marg, q: float) -> torch.Tensor | None:
    """Elementwise ``q``-quantile of a torch Distribution: from the draws of an
    ``Empirical``, the CDF of a ``Categorical`` (a state index) or ``Bernoulli``, else
    ``icdf``.

    Parameters
    ----------
    marg : torch.distributions.Distribution
    q : float
        In ``[0, 1]``.

    Returns
    -------
    torch.Tensor or None
        Shape ``batch_shape + event_shape``; ``None`` where the distribution has no
        quantile function (``icdf`` not implemented or failing).
    """
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
