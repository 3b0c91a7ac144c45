"""Exponential-family factors of a mean field, and their sigma points.

Each *rule* describes one mean-field factor ``q(h)`` of a conjugate-exponential model
(Bishop 2006, §10.4; Winn & Bishop 2005, VMP) by its

* parameters ``q`` (a tuple of tensors with the plate copies as batch dims),
* mean parameters ``M = E_q[T(h)]`` (expected sufficient statistics),
* natural parameters ``η`` (``ln q(h) = ⟨η, T(h)⟩ - A(η)``),
* entropy, and the torch distributions that report it,
* **sigma points**: a few values of ``h`` (equal weights) whose average of ``T`` is ``M``
  *exactly*, differentiable in ``M``.  For any function linear in ``T``, its average over
  the points is its expectation under ``q``; autograd of that average with respect to
  ``M`` gives the coefficients of ``T``, which are the natural parameters of the optimal
  factor ``ln q_j* = E_{-j}[ln p] + const`` (Goodfellow et al. 2016, eq. 19.56; the rule
  of Autoconj, Hoffman, Johnson & Tran 2018).

Points (weights equal; ``c± = 1 ± √(1 - P)`` keep the arithmetic mean 1 and the geometric
mean ``√P``):

================  ==========================  ============================================
rule              T(h)                        points
================  ==========================  ============================================
Normal            ``h, h²``                   ``m ± σ``
Gamma             ``ln h, h``                 ``μ₂ ± √(μ₂² - e^{2μ₁})``
Beta              ``ln h, ln(1-h)``           roots of ``t² - (1 + P - Q) t + P``
Dirichlet         ``ln π``                    ``ln π± = M ± (c + t v)``, ``t`` a 1-D root
Wishart           ``Λ, ln|Λ|``                ``c± S``
MultivariateNormal ``h, h hᵀ``                ``m ± √D L_:,i`` (2D points)
NormalWishart     ``Λ, Λμ, μᵀΛμ, ln|Λ|``      ``(c± S, m ± d)``, four points
================  ==========================  ============================================

The Dirichlet's two points lie on the simplex (a model's ``Categorical(π)`` normalises
its argument, so points off the simplex would not be evaluated linearly): along a fixed
ramp ``v``, ``t > 0`` solves ``lse(M + t v) + lse(M - t v) = 0`` (convex and even in
``t``, negative at 0 by Jensen), found by Newton's method without autograd and then one
differentiable Newton step, which carries the implicit-function derivative.
"""

from __future__ import annotations

import abc
import math

import torch

__all__ = ["RULES", "Rule", "NormalRule", "GammaRule", "BetaRule", "DirichletRule", "MultivariateNormalRule", "WishartRule",
           "NormalWishartRule", "mvn_wishart_entropy"]


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def _pair(p: torch.Tensor):
    """``1 ± √(1 - P)``: two positive numbers with mean 1 and product ``P`` (``0 < P ≤ 1``)."""
    half = torch.sqrt((1.0 - p).clamp_min(0.0))
    return 1.0 - half, 1.0 + half


def _logdet(a: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.linalg.cholesky(a).diagonal(dim1=-2, dim2=-1).log().sum(-1)


def _mvdigamma(x: torch.Tensor, d: int) -> torch.Tensor:
    """``Σ_{i=1..d} ψ((x + 1 - i) / 2)`` (the expected log-determinant of a Wishart)."""
    i = torch.arange(d, dtype=x.dtype, device=x.device)
    return torch.special.digamma((x.unsqueeze(-1) - i) / 2.0).sum(-1)


def _multigammaln(a: torch.Tensor, d: int) -> torch.Tensor:
    """``ln Γ_d(a)`` elementwise (torch's own takes a Python float p and scalar checks)."""
    i = torch.arange(d, dtype=a.dtype, device=a.device)
    return 0.25 * d * (d - 1) * math.log(math.pi) + torch.lgamma(a.unsqueeze(-1) - i / 2.0).sum(-1)


def mvn_wishart_entropy(nu, w, d):
    """Entropy of Wishart(ν, W) in nats (Bishop 2006, eq. B.82), ``ν (...)``, ``W (..., d, d)``."""
    log_b = -0.5 * nu * _logdet(w) - 0.5 * nu * d * math.log(2.0) - _multigammaln(0.5 * nu, d)
    e_logdet = _mvdigamma(nu, d) + d * math.log(2.0) + _logdet(w)
    return -log_b - 0.5 * (nu - d - 1.0) * e_logdet + 0.5 * nu * d


class Rule(abc.ABC):
    """One mean-field factor family (see the module docstring).  Parameters ``q`` are tuples
    of tensors whose leading dims are the plate copies.

    Attributes
    ----------
    name : str
    n_sites : int
        Sites the factor covers (2 for a Normal-Wishart pair: mean, then precision).
    """

    name = ""
    n_sites = 1

    @abc.abstractmethod
    def initial(self, values):
        """A factor centred on the site values ``values`` (tuple, one per site)."""

    @abc.abstractmethod
    def perturbed(self, q, generator):
        """A random nearby member, different in every plate copy (for linearity checks)."""

    @abc.abstractmethod
    def mean(self, q):
        """Mean parameters ``E_q[T]`` (tuple of tensors)."""

    @abc.abstractmethod
    def points(self, m):
        """List of per-point tuples of site values (equal weights) averaging ``T`` to ``m``."""

    @abc.abstractmethod
    def natural(self, q):
        """Natural parameters (the coefficients of ``T`` in ``ln q``)."""

    @abc.abstractmethod
    def from_natural(self, eta):
        """The factor with natural parameters ``eta`` (a tuple as returned by autograd on
        :meth:`mean`), or None if that is not a proper distribution."""

    @abc.abstractmethod
    def entropy(self, q) -> torch.Tensor:
        """Summed over plate copies, nats."""

    @abc.abstractmethod
    def distributions(self, q):
        """One torch distribution per site (marginals of ``q``)."""

    def moved(self, new, old) -> float:
        """Largest change between two factors' parameters, relative to their size."""
        return max(float((a - b).abs().max()) / (1.0 + float(b.abs().max())) for a, b in zip(new, old))


def _rand_like(x, generator, low, high):
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return low + (high - low) * u


class NormalRule(Rule):
    """``q = N(m, v)`` elementwise (every element of the site is its own factor)."""

    name = "Normal"

    def initial(self, values):
        (x,) = values
        return x.clone(), torch.ones_like(x)

    def perturbed(self, q, generator):
        m, v = q
        return m + _rand_like(m, generator, -0.5, 0.5), v * _rand_like(v, generator, 0.5, 2.0)

    def mean(self, q):
        m, v = q
        return m, m * m + v

    def points(self, mu):
        m1, m2 = mu
        half = torch.sqrt((m2 - m1 * m1).clamp_min(0.0))
        return [(m1 - half,), (m1 + half,)]

    def natural(self, q):
        m, v = q
        return m / v, -0.5 / v

    def from_natural(self, eta):
        e1, e2 = eta
        precision = -2.0 * e2
        if not bool((precision > 0).all()):
            return None
        return e1 / precision, 1.0 / precision

    def entropy(self, q):
        return 0.5 * torch.log(2 * math.pi * math.e * q[1]).sum()

    def distributions(self, q):
        return (torch.distributions.Normal(q[0], q[1].sqrt()),)


class GammaRule(Rule):
    """``q = Gamma(a, b)`` (rate ``b``) elementwise."""

    name = "Gamma"

    def initial(self, values):
        (x,) = values
        return torch.full_like(x, 2.0), 2.0 / x

    def perturbed(self, q, generator):
        a, b = q
        return a * _rand_like(a, generator, 0.7, 1.5), b * _rand_like(b, generator, 0.7, 1.5)

    def mean(self, q):
        a, b = q
        return torch.special.digamma(a) - torch.log(b), a / b

    def points(self, mu):
        m1, m2 = mu
        half = torch.sqrt((m2 * m2 - torch.exp(2.0 * m1)).clamp_min(0.0))
        return [(m2 - half,), (m2 + half,)]

    def natural(self, q):
        return q[0] - 1.0, -q[1]

    def from_natural(self, eta):
        a, b = eta[0] + 1.0, -eta[1]
        if not bool(((a > 0) & (b > 0)).all()):
            return None
        return a, b

    def entropy(self, q):
        a, b = q
        return (a - torch.log(b) + torch.lgamma(a) + (1.0 - a) * torch.special.digamma(a)).sum()

    def distributions(self, q):
        return (torch.distributions.Gamma(q[0], q[1]),)


class BetaRule(Rule):
    """``q = Beta(a, b)`` elementwise."""

    name = "Beta"

    def initial(self, values):
        (x,) = values
        x = x.clamp(0.05, 0.95)
        return 4.0 * x, 4.0 * (1.0 - x)

    def perturbed(self, q, generator):
        a, b = q
        return a * _rand_like(a, generator, 0.7, 1.5), b * _rand_like(b, generator, 0.7, 1.5)

    def mean(self, q):
        a, b = q
        s = torch.special.digamma(a + b)
        return torch.special.digamma(a) - s, torch.special.digamma(b) - s

    def points(self, mu):
        p, r = torch.exp(2.0 * mu[0]), torch.exp(2.0 * mu[1])
        s = 1.0 + p - r
        half = torch.sqrt((s * s - 4.0 * p).clamp_min(0.0))
        return [((s - half) / 2.0,), ((s + half) / 2.0,)]

    def natural(self, q):
        return q[0] - 1.0, q[1] - 1.0

    def from_natural(self, eta):
        a, b = eta[0] + 1.0, eta[1] + 1.0
        if not bool(((a > 0) & (b > 0)).all()):
            return None
        return a, b

    def entropy(self, q):
        return torch.distributions.Beta(q[0], q[1]).entropy().sum()

    def distributions(self, q):
        return (torch.distributions.Beta(q[0], q[1]),)


class DirichletRule(Rule):
    """``q = Dirichlet(α)`` over the last dim."""

    name = "Dirichlet"
    NEWTON = 60

    def initial(self, values):
        (x,) = values
        return (x.clamp_min(1e-3) * x.shape[-1] * 2.0,)

    def perturbed(self, q, generator):
        (a,) = q
        return (a * _rand_like(a, generator, 0.7, 1.5),)

    def mean(self, q):
        (a,) = q
        return (torch.special.digamma(a) - torch.special.digamma(a.sum(-1, keepdim=True)),)

    @staticmethod
    def _h(m, t, v):
        a, b = m + t * v, m - t * v
        h = torch.logsumexp(a, -1) + torch.logsumexp(b, -1)
        dh = (torch.softmax(a, -1) * v).sum(-1) - (torch.softmax(b, -1) * v).sum(-1)
        return h, dh

    def points(self, mu):
        (m,) = mu
        k = m.shape[-1]
        v = torch.arange(k, dtype=m.dtype, device=m.device) - (k - 1) / 2.0
        with torch.no_grad():
            md = m.detach()
            # start from the root of the quadratic h(0) + ½h''(0)t², h''(0) = 2 Var_softmax(M)(v);
            # on the convex increasing h (t > 0), Newton lands right of the root, then is monotone
            p = torch.softmax(md, -1)
            var = (p * v * v).sum(-1) - (p * v).sum(-1) ** 2
            h0 = 2.0 * torch.logsumexp(md, -1)
            t = torch.sqrt((-h0).clamp_min(0.0) / var.clamp_min(1e-300)).clamp_min(1e-12)
            for _ in range(self.NEWTON):
                h, dh = self._h(md, t.unsqueeze(-1), v)
                step = h / dh
                t = t - step
                if bool((step.abs() <= 1e-11 * t.abs()).all()):  # the differentiable step below squares it
                    break
        h, dh = self._h(m, t.unsqueeze(-1), v)        # one differentiable step: the IFT derivative
        t = (t - h / dh.detach()).unsqueeze(-1)
        plus = m + t * v
        plus = plus - torch.logsumexp(plus, -1, keepdim=True)
        minus = 2.0 * m - plus
        return [(plus.exp(),), (minus.exp(),)]

    def natural(self, q):
        return (q[0] - 1.0,)

    def from_natural(self, eta):
        a = eta[0] + 1.0
        if not bool((a > 0).all()):
            return None
        return (a,)

    def entropy(self, q):
        return torch.distributions.Dirichlet(q[0]).entropy().sum()

    def distributions(self, q):
        return (torch.distributions.Dirichlet(q[0]),)


class MultivariateNormalRule(Rule):
    """``q = N(m, S)`` over the site's last dim (a full-covariance Gaussian factor per plate
    copy).  Points: ``m ± √D L_:,i`` for the columns of ``S = L Lᵀ`` (the unscented
    transform's 2D points; Julier & Uhlmann 1997), whose mean is ``m`` and whose second
    moment is ``m mᵀ + S``."""

    name = "MultivariateNormal"

    def initial(self, values):
        (x,) = values
        d = x.shape[-1]
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        return x.clone(), eye.expand(x.shape + (d,)).clone()

    def perturbed(self, q, generator):
        m, cov = q
        return m + _rand_like(m, generator, -0.5, 0.5), cov * _rand_like(m[..., 0], generator, 0.7, 1.3)[..., None, None]

    def mean(self, q):
        m, cov = q
        return m, cov + m.unsqueeze(-1) * m.unsqueeze(-2)

    def points(self, mu):
        m, second = mu[0], _sym(mu[1])
        d = m.shape[-1]
        chol = torch.linalg.cholesky(second - m.unsqueeze(-1) * m.unsqueeze(-2))
        cols = math.sqrt(d) * chol.transpose(-1, -2)               # rows: √D L_:,i
        return [(m + sign * cols[..., i, :],) for i in range(d) for sign in (-1.0, 1.0)]

    def natural(self, q):
        m, cov = q
        prec = torch.linalg.inv(cov)
        return torch.einsum("...ij,...j->...i", prec, m), -0.5 * prec

    def from_natural(self, eta):
        g, h = eta[0], _sym(eta[1])
        prec = -2.0 * h
        chol, info = torch.linalg.cholesky_ex(prec)
        if not bool(info.eq(0).all()):
            return None
        cov = _sym(torch.cholesky_inverse(chol))
        return torch.einsum("...ij,...j->...i", cov, g), cov

    def entropy(self, q):
        d = q[0].shape[-1]
        return (0.5 * _logdet(q[1]) + 0.5 * d * math.log(2 * math.pi * math.e)).sum()

    def distributions(self, q):
        return (torch.distributions.MultivariateNormal(q[0], covariance_matrix=q[1]),)


class WishartRule(Rule):
    """``q = Wishart(ν, W)`` over a precision matrix (``E[Λ] = νW``)."""

    name = "Wishart"

    def initial(self, values):
        (lam,) = values
        d = lam.shape[-1]
        nu = torch.full(lam.shape[:-2], float(d + 2), dtype=lam.dtype, device=lam.device)
        return nu, _sym(lam) / nu[..., None, None]

    def perturbed(self, q, generator):
        nu, w = q
        return nu * _rand_like(nu, generator, 1.0, 1.5), w * _rand_like(nu, generator, 0.7, 1.3)[..., None, None]

    def mean(self, q):
        nu, w = q
        d = w.shape[-1]
        return nu[..., None, None] * w, _mvdigamma(nu, d) + d * math.log(2.0) + _logdet(w)

    def points(self, mu):
        s, ld = _sym(mu[0]), mu[1]
        d = s.shape[-1]
        lo, hi = _pair(torch.exp(2.0 * (ld - _logdet(s)) / d))
        return [(lo[..., None, None] * s,), (hi[..., None, None] * s,)]

    def natural(self, q):
        nu, w = q
        d = w.shape[-1]
        return -0.5 * torch.linalg.inv(w), 0.5 * (nu - d - 1.0)

    def from_natural(self, eta):
        g, e = _sym(eta[0]), eta[1]
        d = g.shape[-1]
        nu = 2.0 * e + d + 1.0
        winv = -2.0 * g
        if not bool((nu > d - 1).all()) or not bool(torch.linalg.cholesky_ex(winv)[1].eq(0).all()):
            return None
        return nu, _sym(torch.cholesky_inverse(torch.linalg.cholesky(winv)))

    def entropy(self, q):
        nu, w = q
        return mvn_wishart_entropy(nu, w, w.shape[-1]).sum()

    def distributions(self, q):
        nu, w = q
        return (torch.distributions.Wishart(nu, covariance_matrix=w),)

    def moved(self, new, old):
        return max(float((new[0] - old[0]).abs().max()) / (1.0 + float(old[0].abs().max())),
                   float((new[0][..., None, None] * new[1] - old[0][..., None, None] * old[1]).abs().max())
                   / (1.0 + float((old[0][..., None, None] * old[1]).abs().max())))


class NormalWishartRule(Rule):
    """``q(μ, Λ) = N(μ | m, (βΛ)⁻¹) W(Λ | W, ν)`` for a MultivariateNormal mean ``μ`` whose
    prior precision is a multiple of a Wishart latent ``Λ`` (Bishop 2006, eq. 2.157,
    10.59-10.63).  Sites: (mean, precision)."""

    name = "NormalWishart"
    n_sites = 2

    def initial(self, values):
        mu, lam = values
        d = mu.shape[-1]
        nu = torch.full(mu.shape[:-1], float(d + 2), dtype=mu.dtype, device=mu.device)
        return mu.clone(), torch.ones_like(nu), nu, _sym(lam) / nu[..., None, None]

    def perturbed(self, q, generator):
        m, beta, nu, w = q
        return (m + _rand_like(m, generator, -0.5, 0.5), beta * _rand_like(beta, generator, 0.7, 1.5),
                nu * _rand_like(nu, generator, 1.0, 1.5), w * _rand_like(nu, generator, 0.7, 1.3)[..., None, None])

    def mean(self, q):
        m, beta, nu, w = q
        d = m.shape[-1]
        s = nu[..., None, None] * w
        sm = torch.einsum("...ij,...j->...i", s, m)
        return s, sm, d / beta + (sm * m).sum(-1), _mvdigamma(nu, d) + d * math.log(2.0) + _logdet(w)

    def points(self, mu):
        s, sm, quad, ld = _sym(mu[0]), mu[1], mu[2], mu[3]
        d = s.shape[-1]
        m = torch.cholesky_solve(sm.unsqueeze(-1), torch.linalg.cholesky(s)).squeeze(-1)
        r = (quad - (sm * m).sum(-1)).clamp_min(0.0)
        step = torch.sqrt(r / s[..., 0, 0])
        e = torch.zeros(d, dtype=s.dtype, device=s.device)
        e[0] = 1.0
        delta = step.unsqueeze(-1) * e
        lo, hi = _pair(torch.exp(2.0 * (ld - _logdet(s)) / d))
        return [(m + sign * delta, c[..., None, None] * s) for c in (lo, hi) for sign in (-1.0, 1.0)]

    def natural(self, q):
        m, beta, nu, w = q
        d = m.shape[-1]
        g = -0.5 * (torch.linalg.inv(w) + beta[..., None, None] * m.unsqueeze(-1) * m.unsqueeze(-2))
        return g, beta.unsqueeze(-1) * m, -0.5 * beta, 0.5 * (nu - d)

    def from_natural(self, eta):
        g, gm, gq, gl = _sym(eta[0]), eta[1], eta[2], eta[3]
        d = g.shape[-1]
        beta = -2.0 * gq
        if not bool((beta > 0).all()):
            return None
        m = gm / beta.unsqueeze(-1)
        nu = 2.0 * gl + d
        winv = -2.0 * g - beta[..., None, None] * m.unsqueeze(-1) * m.unsqueeze(-2)
        if not bool((nu > d - 1).all()) or not bool(torch.linalg.cholesky_ex(winv)[1].eq(0).all()):
            return None
        return m, beta, nu, _sym(torch.cholesky_inverse(torch.linalg.cholesky(winv)))

    def entropy(self, q):
        m, beta, nu, w = q
        d = m.shape[-1]
        e_logdet = _mvdigamma(nu, d) + d * math.log(2.0) + _logdet(w)
        h_normal = 0.5 * d * math.log(2 * math.pi * math.e) - 0.5 * d * torch.log(beta) - 0.5 * e_logdet
        return (h_normal + mvn_wishart_entropy(nu, w, d)).sum()

    def distributions(self, q):
        """The mean's marginal is a multivariate Student t with ``ν - D + 1`` degrees of
        freedom and scale ``((ν - D + 1) β W)⁻¹`` (Bishop 2006, eq. 10.81 ff.)."""
        import pyro.distributions as pdist

        m, beta, nu, w = q
        d = m.shape[-1]
        df = nu - d + 1.0
        cov = torch.linalg.inv(w) / (df * beta)[..., None, None]
        mean = pdist.MultivariateStudentT(df, m, torch.linalg.cholesky(_sym(cov)))
        return mean, torch.distributions.Wishart(nu, covariance_matrix=w)

    def sample(self, q, n):
        """``n`` joint draws ``(μ, Λ)``: ``Λ ~ W(W, ν)``, then ``μ | Λ ~ N(m, (βΛ)⁻¹)``."""
        m, beta, nu, w = q
        lam = torch.distributions.Wishart(nu, covariance_matrix=w).sample((n,))
        mu = torch.distributions.MultivariateNormal(m, precision_matrix=beta[..., None, None] * lam).sample()
        return mu, lam

    def moved(self, new, old):
        pairs = [(new[0], old[0]), (new[1], old[1]), (new[2], old[2]),
                 (new[2][..., None, None] * new[3], old[2][..., None, None] * old[3])]
        return max(float((a - b).abs().max()) / (1.0 + float(b.abs().max())) for a, b in pairs)


#: Site family -> rule, for single-site factors.
RULES = {"Normal": NormalRule(), "Gamma": GammaRule(), "Beta": BetaRule(), "Dirichlet": DirichletRule(),
         "Wishart": WishartRule(), "MultivariateNormal": MultivariateNormalRule()}
