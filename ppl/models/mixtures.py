"""The Bayesian Gaussian mixture with conjugate priors (Bishop 2006, §10.2, eq. 10.37-10.40).

    π ~ Dirichlet(α0 1_K)
    Λ_k ~ Wishart(ν0, W0)                      (precision; E[Λ_k] = ν0 W0)
    μ_k | Λ_k ~ N(m0, (β0 Λ_k)⁻¹)              (k = 1..K: a plate "components")
    z_n ~ Categorical(π)
    x_n | z_n ~ N(μ_{z_n}, Λ_{z_n}⁻¹)          (n = 1..N: a plate "data")

written as an ordinary ppl model: ``method="cavi"`` recognises (μ_k, Λ_k) as one
Normal-Wishart factor and derives Bishop's updates; ``method="svi"`` sums ``z`` out;
``method="map"`` gives a posterior mode.  :func:`bgmm_priors` gives scikit-learn's
``BayesianGaussianMixture`` defaults (``weight_concentration_prior_type=
"dirichlet_distribution"``), so the two fit the same model.
"""

from __future__ import annotations

import torch

from .. import distributions as dist
from ..dsl import model, plate, sample
from ..errors import DataError

__all__ = ["bayesian_gmm", "bgmm_priors"]


@model
def bayesian_gmm(x, K, alpha0, beta0, m0, nu0, W0):
    """The Bayesian GMM above.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, D)`` data.
    K : int
        Components.
    alpha0, beta0, nu0 : float
        Dirichlet concentration (per component), mean precision scale, Wishart degrees of
        freedom (``> D - 1``).
    m0 : torch.Tensor
        ``(D,)`` prior mean.
    W0 : torch.Tensor
        ``(D, D)`` Wishart scale (positive definite; ``W0⁻¹`` is scikit-learn's
        ``covariance_prior``).

    Sites: ``weights (K,)``, ``prec (K, D, D)``, ``loc (K, D)``, ``z (N,)``, ``x`` observed.
    """
    N, D = x.shape
    weights = sample("weights", dist.Dirichlet(torch.full((K,), float(alpha0), dtype=x.dtype, device=x.device)))
    with plate("components", K):
        prec = sample("prec", dist.Wishart(torch.tensor(float(nu0), dtype=x.dtype, device=x.device),
                                           covariance_matrix=W0))
        loc = sample("loc", dist.MultivariateNormal(m0, precision_matrix=beta0 * prec))
    with plate("data", N):
        z = sample("z", dist.Categorical(weights))
        sample("x", dist.MultivariateNormal(loc[z], precision_matrix=prec[z]), obs=x)


def bgmm_priors(x: torch.Tensor, K: int, alpha0: float = None, beta0: float = 1.0, nu0: float = None) -> dict:
    """``data`` for :func:`bayesian_gmm` with scikit-learn's default priors: ``α0 = 1/K``,
    ``β0 = 1``, ``m0`` = the data mean, ``ν0 = D``, ``W0⁻¹`` = the data covariance.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, D)`` floating data, ``N ≥ 2``.

    Returns
    -------
    dict
        ``x, K, alpha0, beta0, m0, nu0, W0`` (tensors in ``x``'s dtype and device).

    Raises
    ------
    DataError
        ``x`` not a floating ``(N, D)`` tensor with ``N ≥ 2``, or its covariance singular
        (a ``ValueError`` too).
    """
    if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() == 2 and x.shape[0] >= 2):
        raise DataError(f"bgmm_priors: x must be a floating (N, D) tensor with N >= 2, got {type(x).__name__} "
                         f"{tuple(getattr(x, 'shape', ()))}")
    cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
    if not bool(torch.linalg.cholesky_ex(cov)[1].eq(0).all()):
        raise DataError("bgmm_priors: the data covariance is singular: W0 = cov⁻¹ does not exist "
                        "(drop constant columns)")
    d = x.shape[1]
    return dict(x=x, K=int(K), alpha0=1.0 / K if alpha0 is None else float(alpha0), beta0=float(beta0),
                m0=x.mean(0), nu0=float(d) if nu0 is None else float(nu0), W0=torch.linalg.inv(cov))
