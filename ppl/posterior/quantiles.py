"""Quantiles and moments of posterior marginals: the one place every Posterior reads them.

:func:`marginal_quantile` gives the elementwise ``q``-quantile of a torch/Pyro
distribution, exact wherever a closed form or an exact inverse exists:

* draws (``Empirical``): the sample quantile (linear interpolation between order
  statistics, numpy's default; the weighted inverse CDF for weighted draws);
* ``Delta``: its point;
* discrete tables (``Categorical``, ``Bernoulli``, ``OneHotCategorical`` elementwise, any
  distribution with ``enumerate_support``): the smallest value ``x`` with ``F(x) >= q``
  (:func:`table_quantile`);
* ``Normal``: ``loc + scale · ndtri(q)`` (accurate in both tails; torch's ``icdf`` is not);
* ``Beta``: ``betaincinv(a, b, q)`` (in the far lower tail, where it fails, bisection on
  ``log x``; a quantile below the smallest positive double is 0); ``Gamma`` (and ``Chi2``):
  ``gammaincinv(a, q) / rate`` (under a decreasing transform, ``gammainccinv``);
  ``Dirichlet``: component ``k`` is ``Beta(α_k, α_0 - α_k)``; ``StudentT``:
  ``loc + scale · stdtrit(df, q)``; ``MultivariateNormal`` / ``MultivariateStudentT``:
  component ``i`` is ``Normal`` / ``StudentT`` with scale ``sqrt(Σ_ii)``; ``Wishart``: the
  diagonal ``W_ii = Σ_ii χ²_df`` exactly (off-diagonal elements: see below) — the inverses of
  the regularised incomplete beta and gamma functions and of Student's t CDF are SciPy's
  (``scipy.special``; DiDonato & Morris 1992, 1986);
* ``Independent``: its base's marginals; ``TransformedDistribution`` through transforms that
  act elementwise and monotonically (``LogNormal``, ``InverseGamma``, a Gaussian guide pushed
  through ``biject_to(support)``): the transform of the base's ``q``- (increasing) or
  ``1 - q``-quantile (decreasing);
* any other distribution: ``icdf`` where torch implements it; else, for a univariate one
  with a ``cdf``, bisection on the cdf to machine precision; else, as a last resort, the
  sample quantile of ``FALLBACK_DRAWS`` draws made under the fixed seed
  :data:`~ppl.posterior.checks.FIXED_SEED` (the same numbers on every call; Monte Carlo error
  about ``sqrt(q(1-q)/FALLBACK_DRAWS) / density``).

A result is never NaN: where none of these applies an
:class:`~ppl.errors.UnsupportedModelError` is raised, and a NaN (non-finite parameters or
draws) raises :class:`~ppl.errors.NumericalError`.  :func:`marginal_mean` /
:func:`marginal_variance` fall back to the same fixed-seed draws where the family has no
closed-form moment.
"""

from __future__ import annotations

import math
import warnings

import torch

from ..errors import NumericalError, UnsupportedModelError
from .checks import FIXED_SEED, check_memory, isolated_rng, numel

__all__ = ["marginal_quantile", "table_quantile", "sample_quantile", "marginal_mean", "marginal_variance",
           "FALLBACK_DRAWS"]

#: Draws behind a quantile or moment that has no closed form and no cdf to invert.
FALLBACK_DRAWS = 10_000


def _name(site) -> str:
    return f"site '{site}'" if site is not None else "the marginal"


def _float_dtype(dist) -> tuple:
    """(dtype, device) of a distribution's floating parameters (default dtype, CPU if none)."""
    seen = set()
    todo = [dist]
    while todo:
        d = todo.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        for v in vars(d).values():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                return v.dtype, v.device
            if isinstance(v, torch.distributions.Distribution):
                todo.append(v)
    return torch.get_default_dtype(), torch.device("cpu")


# ---------------------------------------------------------------- draws and tables

def sample_quantile(draws: torch.Tensor, q: float, dim: int = 0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Elementwise ``q``-quantile of ``draws`` along ``dim``.

    Unweighted: linear interpolation between the order statistics at ``q (S - 1)`` (numpy's
    and ``torch.quantile``'s default; no size limit).  Weighted (``weights`` of the shape of
    ``draws`` up to ``dim``, inclusive): the smallest draw whose normalised cumulative weight
    reaches ``q``.

    Returns
    -------
    torch.Tensor
        ``draws``'s shape without ``dim``.
    """
    x = draws if draws.is_floating_point() else draws.double()
    x = x.movedim(dim, 0)
    s = x.shape[0]
    if weights is None:
        pos = q * (s - 1)
        lo = min(int(math.floor(pos)), s - 1)
        hi = min(lo + 1, s - 1)
        frac = pos - lo
        below = torch.kthvalue(x, lo + 1, dim=0).values
        if frac == 0.0 or hi == lo:
            return below
        above = torch.kthvalue(x, hi + 1, dim=0).values
        return torch.where(below == above, below, torch.lerp(below, above, frac))
    w = weights.movedim(dim, 0).to(x.dtype)
    w = w.reshape(w.shape + (1,) * (x.dim() - w.dim())).expand_as(x)
    order = x.argsort(dim=0)
    xs, ws = x.gather(0, order), w.gather(0, order)
    return _first_reaching(xs, ws, q, axis=0)


def _first_reaching(values: torch.Tensor, probs: torch.Tensor, q: float, axis: int) -> torch.Tensor:
    """The value at the first position along ``axis`` (values sorted ascending there) whose
    cumulative probability reaches ``q`` among positions of positive probability: ``q = 0``
    gives the smallest value of positive probability, ``q = 1`` the largest."""
    total = probs.sum(axis, keepdim=True)
    cdf = probs.cumsum(axis) / total
    positive = probs > 0
    if q >= 1.0:
        k = probs.shape[axis]
        ranks = torch.arange(k, device=probs.device).reshape((k,) + (1,) * (probs.dim() - 1 - axis))
        idx = torch.where(positive, ranks, -1).amax(axis, keepdim=True)
    else:
        tol = 16 * torch.finfo(cdf.dtype).eps if q > 0 else 0.0
        reached = (cdf >= q - tol) & positive
        idx = reached.to(torch.uint8).argmax(axis, keepdim=True)  # the first True
    return values.gather(axis, idx.clamp_min(0)).squeeze(axis)


def table_quantile(probs: torch.Tensor, values: torch.Tensor, q: float, *, site=None, budget=None) -> torch.Tensor:
    """Elementwise ``q``-quantile of a discrete marginal held as a table: the smallest value
    ``x`` with ``P(X <= x) >= q`` (``q = 0``: the smallest value of positive probability).

    Parameters
    ----------
    probs : torch.Tensor
        Probabilities ``batch_shape + (K,)`` (normalised along the last axis here).
    values : torch.Tensor
        Support values ``(K,) + event_shape`` (an event, e.g. one-hot, is read elementwise).
    q : float
        In ``[0, 1]`` (checked by the caller).
    site : str, optional
        For messages.
    budget : int, optional
        Memory budget in bytes of the ``batch × K × event`` work table.

    Returns
    -------
    torch.Tensor
        Shape ``batch_shape + event_shape``, the dtype of ``probs``.

    Raises
    ------
    NumericalError
        If the table has a NaN/infinite or no positive probability.
    IntractableError
        If the work table would exceed ``budget``.
    """
    batch = tuple(probs.shape[:-1])
    k = int(probs.shape[-1])
    event = tuple(values.shape[1:])
    e = numel(event)
    check_memory(numel(batch) * k * max(e, 1), 3 * probs.element_size(), budget,
                 what=f"quantile of {_name(site)}", unit="table entries", detail="3 work tensors",
                 fix="use fewer plate copies or states")
    if not torch.isfinite(probs).all() or not (probs.sum(-1) > 0).all():
        raise NumericalError(f"quantile of {_name(site)}: its probability table has NaN/infinite entries or no "
                             "positive probability, so it has no quantile; check the model and data")
    vals = values.to(device=probs.device, dtype=probs.dtype).reshape(k, e)
    order = vals.argsort(dim=0)                              # (K, E): ascending per element
    sorted_vals = vals.gather(0, order)                      # (K, E)
    p = probs.clamp_min(0)[..., order]                       # batch + (K, E)
    sv = sorted_vals.expand(batch + (k, e))
    out = _first_reaching(sv, p, q, axis=len(batch))         # batch + (E,)
    return out.reshape(batch + event)


def _bernoulli_table(p: torch.Tensor) -> tuple:
    return torch.stack([1 - p, p], -1), torch.tensor([0.0, 1.0], dtype=p.dtype, device=p.device)


# ---------------------------------------------------------------- exact inverses

def _special(name: str):
    """``scipy.special.<name>``, or ``None`` without SciPy (then bisection or draws are used)."""
    try:
        from scipy import special
    except ImportError:  # pragma: no cover - SciPy comes with ArviZ, a dependency
        return None
    return getattr(special, name)


def _scipy(fn, *args, dtype, device) -> torch.Tensor:
    import numpy as np

    arrays = [a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.float64(a) for a in args]
    return torch.as_tensor(np.asarray(fn(*np.broadcast_arrays(*arrays))), dtype=dtype, device=device)


def _normal_q(loc: torch.Tensor, scale: torch.Tensor, q: float, upper: bool = False) -> torch.Tensor:
    """``loc + scale · Φ⁻¹(q)`` (``upper``: ``Φ⁻¹(1 - q)``, without forming ``1 - q``), with
    ``torch.special.ndtri`` in float64: accurate in both tails (``erfinv(2q - 1)``, torch's
    ``Normal.icdf``, gives ``-inf`` below ``q ≈ 1e-17``)."""
    z = float(torch.special.ndtri(torch.tensor(q, dtype=torch.float64)))
    return loc + scale * (-z if upper else z)


def _log_bisect_beta(a, b, q: float):
    """``x`` with ``I_x(a, b) = q`` by bisection on ``log x`` over the positive float64 range,
    for the far lower tail where ``betaincinv`` gives NaN (e.g. ``Beta(5, 3)`` at ``q = 1e-300``:
    ``x ≈ 3e-61``); 0 where even the smallest positive double has ``I_x > q`` (underflow)."""
    import numpy as np
    from scipy import special

    lo = np.full(np.shape(a), math.log(np.nextafter(0.0, 1.0)))
    hi = np.zeros(np.shape(a))
    for _ in range(120):
        mid = (lo + hi) / 2
        below = special.betainc(a, b, np.exp(mid)) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    out = np.exp((lo + hi) / 2)
    return np.where(special.betainc(a, b, np.exp(lo)) > q, 0.0, out)


def _beta_q(a: torch.Tensor, b: torch.Tensor, q: float):
    fn = _special("betaincinv")
    if fn is None:
        return None
    import numpy as np

    a64, b64 = np.broadcast_arrays(*(t.detach().cpu().double().numpy() for t in (a, b)))
    out = np.asarray(fn(a64, b64, q), dtype=np.float64)
    far = np.isnan(out) & (a64 > 0) & (b64 > 0) & np.isfinite(a64) & np.isfinite(b64) & (0 < q < 1)
    if far.any():  # betaincinv fails in the far lower tail
        out[far] = _log_bisect_beta(a64[far], b64[far], q)
    out = torch.as_tensor(out, dtype=a.dtype, device=a.device)
    return torch.where(b <= 0, torch.ones_like(out), out)  # Beta(a, 0): all mass at 1 (a 1-component Dirichlet)


def _gamma_q(conc: torch.Tensor, rate: torch.Tensor, q: float, upper: bool = False):
    fn = _special("gammainccinv" if upper else "gammaincinv")
    return None if fn is None else _scipy(fn, conc, q, dtype=conc.dtype, device=conc.device) / rate


def _upper(marg, q: float):
    """The ``x`` with ``P(X > x) = q``: exact in both tails for Normal and Gamma bases (a
    decreasing transform's quantile), else the ``1 - q``-quantile."""
    D = torch.distributions
    if isinstance(marg, D.Normal):
        return _normal_q(marg.loc, marg.scale, q, upper=True)
    if isinstance(marg, D.Gamma):
        return _gamma_q(marg.concentration, marg.rate, q, upper=True)
    if isinstance(marg, D.Independent):
        return _upper(marg.base_dist, q)
    return _exact(marg, 1 - q)


def _student_q(df, loc, scale, q: float):
    fn = _special("stdtrit")
    return None if fn is None else loc + scale * _scipy(fn, df, q, dtype=loc.dtype, device=loc.device)


def _elementwise_sign(transform):
    """The sign (+1/-1, or a tensor of them) of a transform that acts on each element alone
    and monotonically, and keeps the shape; ``None`` for any other transform."""
    T = torch.distributions.transforms
    if isinstance(transform, T.ComposeTransform):
        sign = 1
        for part in transform.parts:
            s = _elementwise_sign(part)
            if s is None:
                return None
            sign = sign * s
        return sign
    if isinstance(transform, T.IndependentTransform):
        return _elementwise_sign(transform.base_transform)
    if transform.domain.event_dim != 0 or transform.codomain.event_dim != 0 or not transform.bijective:
        return None
    try:
        return transform.sign
    except NotImplementedError:
        return None


def _transformed_q(marg, q: float):
    transforms = list(marg.transforms)
    sign = _elementwise_sign(torch.distributions.transforms.ComposeTransform(transforms))
    if sign is None:
        return None
    shape = tuple(marg.base_dist.batch_shape + marg.base_dist.event_shape)
    if any(tuple(t.forward_shape(shape)) != shape for t in transforms):
        return None
    up = _exact(marg.base_dist, q)
    if up is None:
        return None
    down = up if q == 0.5 else _upper(marg.base_dist, q)
    if down is None:
        return None
    for t in transforms:
        up, down = t(up), t(down)
    if isinstance(sign, torch.Tensor):
        return torch.where(sign > 0, up, down)
    return up if sign > 0 else down


def _exact(marg, q: float):
    """The closed-form / exact-inverse quantile, or ``None`` when there is none."""
    D = torch.distributions
    name = type(marg).__name__
    if name == "Empirical" and getattr(marg, "_samples", None) is not None:
        dim = len(marg.batch_shape)
        lw = marg._log_weights
        uniform = bool((lw == lw[..., :1]).all()) if lw.numel() else True
        return sample_quantile(marg._samples, q, dim=dim, weights=None if uniform else (lw - lw.amax(-1, True)).exp())
    if name == "Delta" and hasattr(marg, "v"):
        v = marg.v
        return v if v.is_floating_point() else v.double()
    if isinstance(marg, D.Bernoulli):
        return table_quantile(*_bernoulli_table(marg.probs), q)
    if isinstance(marg, D.OneHotCategorical):
        p = marg.probs  # component k is Bernoulli(p_k)
        return table_quantile(*_bernoulli_table(p.reshape(-1)), q).reshape(p.shape)
    if isinstance(marg, D.Categorical):
        p = marg.probs
        return table_quantile(p, torch.arange(p.shape[-1], dtype=p.dtype, device=p.device), q)
    if isinstance(marg, D.Normal):
        return _normal_q(marg.loc, marg.scale, q)
    if isinstance(marg, D.Beta):
        return _beta_q(marg.concentration1, marg.concentration0, q)
    if isinstance(marg, D.Gamma):
        return _gamma_q(marg.concentration, marg.rate, q)
    if isinstance(marg, D.Dirichlet):
        a = marg.concentration
        return _beta_q(a, a.sum(-1, keepdim=True) - a, q)
    if isinstance(marg, D.StudentT):
        return _student_q(marg.df, marg.loc, marg.scale, q)
    if isinstance(marg, D.MultivariateNormal):
        cov = marg.covariance_matrix
        return _normal_q(marg.loc, cov.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt(), q)
    if name == "MultivariateStudentT":
        tril = marg.scale_tril
        scale = (tril * tril).sum(-1).sqrt()  # sqrt of diag(L Lᵀ)
        return _student_q(marg.df.unsqueeze(-1), marg.loc, scale, q)
    if isinstance(marg, D.Independent):
        return _exact(marg.base_dist, q)
    if isinstance(marg, D.TransformedDistribution):
        value = _transformed_q(marg, q)
        if value is not None:
            return value
    if getattr(marg, "has_enumerate_support", False) and not marg.event_shape:
        try:
            values = marg.enumerate_support(expand=False)     # (K,) + (1,) * batch
            probs = marg.log_prob(values).exp()               # (K,) + batch
        except (NotImplementedError, ValueError, RuntimeError):
            return None
        k = values.shape[0]
        return table_quantile(probs.movedim(0, -1), values.reshape(k).to(probs.dtype), q)
    if isinstance(marg, D.Wishart):
        return None  # off-diagonal elements: draws (see _wishart_q)
    dtype, device = _float_dtype(marg)
    try:
        value = marg.icdf(torch.tensor(q, dtype=dtype, device=device))
    except (NotImplementedError, ValueError, RuntimeError, TypeError, AttributeError):
        return None
    return None if torch.isnan(value).any() else value


# ---------------------------------------------------------------- numerical inverses

def _is_discrete(marg) -> bool:
    try:
        return bool(marg.support.is_discrete)
    except NotImplementedError:
        return False


def _bounds(marg):
    try:
        support = marg.support
    except NotImplementedError:
        return -math.inf, math.inf
    while hasattr(support, "base_constraint"):  # independent(...)
        support = support.base_constraint
    lo = getattr(support, "lower_bound", -math.inf)
    hi = getattr(support, "upper_bound", math.inf)
    return lo, hi


def bisect_quantile(marg, q: float, iterations: int = 200):
    """Elementwise ``q``-quantile of a univariate continuous distribution by bisection on its
    ``cdf`` (brackets grown by doubling out of the support's bounds), to machine precision;
    ``None`` if it has no cdf or the bracket cannot be found."""
    if marg.event_shape or _is_discrete(marg):
        return None
    dtype, device = _float_dtype(marg)
    shape = tuple(marg.batch_shape)
    lo_b, hi_b = _bounds(marg)
    lo_b = torch.as_tensor(lo_b, dtype=dtype, device=device).expand(shape).clone()
    hi_b = torch.as_tensor(hi_b, dtype=dtype, device=device).expand(shape).clone()
    if q == 0.0:
        return lo_b
    if q == 1.0:
        return hi_b

    def cdf(x):
        return marg.cdf(x)

    try:
        # a finite start inside the support, then doubling steps outward until the cdf brackets q
        start = torch.where(torch.isfinite(lo_b), lo_b + 1, torch.where(torch.isfinite(hi_b), hi_b - 1, 0.0))
        start = torch.where(torch.isfinite(lo_b) & torch.isfinite(hi_b), (lo_b + hi_b) / 2, start)
        lo, hi = lo_b.clone(), hi_b.clone()
        step = torch.ones(shape, dtype=dtype, device=device)
        f = cdf(start)
        lo = torch.where(f <= q, start, lo)
        hi = torch.where(f > q, start, hi)
        for _ in range(1100):
            need_hi, need_lo = ~torch.isfinite(hi), ~torch.isfinite(lo)
            if not (need_hi.any() or need_lo.any()):
                break
            step = step * 2
            up, down = start + step, start - step
            f_up, f_down = cdf(torch.where(need_hi, up, start)), cdf(torch.where(need_lo, down, start))
            hi = torch.where(need_hi & (f_up > q), up, hi)
            lo = torch.where(need_hi & (f_up <= q), up, lo)
            lo = torch.where(need_lo & (f_down <= q), down, lo)
            hi = torch.where(need_lo & (f_down > q), down, hi)
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            return None
        for _ in range(iterations):
            mid = (lo + hi) / 2
            below = cdf(mid) < q
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            if bool(((hi - lo) <= 4 * torch.finfo(dtype).eps * hi.abs().clamp_min(1e-300)).all()):
                break
        return (lo + hi) / 2
    except (NotImplementedError, ValueError, RuntimeError, TypeError, AttributeError):
        return None


def _fixed_draws(marg, *, site=None, budget=None, what: str = "quantile") -> torch.Tensor:
    """``FALLBACK_DRAWS`` draws of ``marg`` under the fixed seed (global RNGs untouched).

    Raises
    ------
    IntractableError
        If they would exceed the memory budget.
    UnsupportedModelError
        If ``marg`` cannot be sampled."""
    dtype, _ = _float_dtype(marg)
    size = numel(tuple(marg.batch_shape) + tuple(marg.event_shape))
    check_memory(FALLBACK_DRAWS, size * torch.finfo(dtype).bits // 8, budget,
                 what=f"the {what} of {_name(site)} from draws", detail=f"{size:,} elements × "
                 f"{torch.finfo(dtype).bits // 8} bytes", fix="use fewer plate copies")
    try:
        with isolated_rng(FIXED_SEED), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Singular sample", UserWarning)  # torch's Wishart, which redraws
            return marg.sample((FALLBACK_DRAWS,))
    except (NotImplementedError, ValueError, RuntimeError, TypeError) as e:
        why = f": {str(e).splitlines()[0][:120]}" if str(e).strip() else ""
        raise UnsupportedModelError(
            f"the {what} of {_name(site)} cannot be computed: its marginal {type(marg).__name__} has no closed form, "
            f"no cdf to invert and cannot be sampled ({type(e).__name__}{why})") from e


def _drawn_quantile(marg, q, *, site, budget):
    draws = _fixed_draws(marg, site=site, budget=budget)
    if _is_discrete(marg):  # the inverse empirical cdf: a value of the support
        return sample_quantile(draws, q, dim=0, weights=torch.ones(draws.shape[:1], dtype=torch.float64,
                                                                    device=draws.device))
    return sample_quantile(draws, q, dim=0)


def _wishart_q(marg, q, *, site, budget):
    """Diagonal elements exactly (``W_ii = Σ_ii χ²_df``), off-diagonal ones from fixed-seed draws."""
    out = _drawn_quantile(marg, q, site=site, budget=budget).clone()
    cov = marg.covariance_matrix
    diag = cov.diagonal(dim1=-2, dim2=-1)
    df = marg.df.unsqueeze(-1).expand_as(diag)
    exact = _gamma_q(df / 2, 1 / (2 * diag), q)
    if exact is not None:
        out.diagonal(dim1=-2, dim2=-1).copy_(exact)
    return out


# ---------------------------------------------------------------- the entry points

def marginal_quantile(marg, q: float, *, site=None, budget=None) -> torch.Tensor:
    """Elementwise ``q``-quantile of a torch/Pyro distribution (see the module docstring for
    the method used per family; exact wherever possible, fixed-seed draws as the last resort).

    Parameters
    ----------
    marg : torch.distributions.Distribution
    q : float
        In ``[0, 1]`` (checked by the caller: :func:`~ppl.posterior.checks.check_level`).
    site : str, optional
        For messages.
    budget : int, optional
        Memory budget in bytes of any draws or work table (default 2 GiB).

    Returns
    -------
    torch.Tensor
        Shape ``batch_shape + event_shape``; never NaN.

    Raises
    ------
    UnsupportedModelError
        If the marginal has no quantile function, no cdf and cannot be sampled.
    NumericalError
        If the quantile is NaN (non-finite parameters or draws).
    IntractableError
        If draws or a table needed would exceed ``budget``.
    """
    value = _exact(marg, q)
    if value is None and isinstance(marg, torch.distributions.Wishart):
        value = _wishart_q(marg, q, site=site, budget=budget)
    if value is None:
        value = bisect_quantile(marg, q)
    if value is None:
        value = _drawn_quantile(marg, q, site=site, budget=budget)
    if torch.isnan(value).any():
        raise NumericalError(f"the {q}-quantile of {_name(site)} is NaN: its marginal {type(marg).__name__} has "
                             "non-finite parameters or draws")
    return value


def marginal_mean(marg, *, site=None, budget=None) -> torch.Tensor:
    """``marg.mean``, or the mean of fixed-seed draws where the family has none in closed
    form; shape ``batch_shape + event_shape``."""
    try:
        return marg.mean
    except NotImplementedError:
        return _fixed_draws(marg, site=site, budget=budget, what="mean").mean(0)


def marginal_variance(marg, *, site=None, budget=None) -> torch.Tensor:
    """Elementwise variance of a torch Distribution: ``marg.variance``, or the variance of
    fixed-seed draws where the family has none in closed form.

    Parameters
    ----------
    marg : torch.distributions.Distribution
    site : str, optional
    budget : int, optional
        Memory budget in bytes of the draws.

    Returns
    -------
    torch.Tensor
        Shape ``batch_shape + event_shape`` (that of ``marg.mean``).

    Raises
    ------
    UnsupportedModelError
        If it has no closed-form variance and cannot be sampled.
    """
    try:
        return marg.variance
    except NotImplementedError:
        draws = _fixed_draws(marg, site=site, budget=budget, what="variance")
        return draws.var(0) if draws.is_floating_point() else draws.double().var(0)
