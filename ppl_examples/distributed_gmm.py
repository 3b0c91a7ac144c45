"""Fit Gaussian mixtures to scikit-learn's wine data on several processes (torch.distributed).

Run: ``torchrun --nproc_per_node 2 ppl_examples/distributed_gmm.py`` (any number of
processes; ``python ppl_examples/distributed_gmm.py`` runs the same on one process, in a
one-rank group).  See docs/distributed.md.

The UCI wine data (178 wines, 13 chemical measurements, 3 cultivars) ships with
scikit-learn, so this runs offline.  Every rank

1. joins the process group (gloo; torchrun sets ``RANK``, ``WORLD_SIZE``,
   ``MASTER_ADDR`` and ``MASTER_PORT``),
2. takes its shard of the rows (``np.array_split`` of a fixed shuffle: uneven when the
   process count does not divide 178),
3. standardises its shard with the *global* mean and standard deviation, from sums
   all-reduced over the ranks (a per-shard standardisation would give every rank a
   different data set),
4. takes k-means++ centres (scikit-learn's ``kmeans_plusplus``) seeded on rank 0's shard
   and broadcast, so that every rank (and the one-process check) starts alike,
5. fits a full-covariance GMM by EM from those centres, ``ppl.infer(gmm, {"x": shard},
   method="em", init={"loc": centres}, distributed=True)``: the E-step's expected
   sufficient statistics and the log likelihood are summed over the ranks, so every rank
   takes the same M-step,
6. fits the Bayesian GMM (Bishop 2006, §10.2) by CAVI with ``distributed=True``, its
   priors from the same global statistics, its q(z) started at each row's nearest centre.

Rank 0 prints the fits, the adjusted Rand index of the MAP cluster of every wine (the
ranks' labels gathered) against the cultivars, and a check: the same fits on one process
with all the rows, whose params must agree to 1e-6 relative.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import time
import warnings

import numpy as np
import torch
import torch.distributed as tdist

import ppl
import ppl.distributions as dist
from ppl.distributions import constraints
from ppl.models.mixtures import bayesian_gmm

K = 3


@ppl.model
def gmm(x, K=3):
    """K-component mixture with one full covariance matrix per component."""
    N, D = x.shape
    w = ppl.param("weights", torch.full((K,), 1.0 / K, dtype=x.dtype), constraint=constraints.simplex)
    loc = ppl.param("loc", x[:K].clone())
    cov = ppl.param("cov", torch.eye(D, dtype=x.dtype).repeat(K, 1, 1), constraint=constraints.positive_definite)
    with ppl.plate("data", N):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.MultivariateNormal(loc[z], covariance_matrix=cov[z]), obs=x)


def join_group() -> None:
    """Join torchrun's gloo group, or start a one-rank group on loopback when run by ``python``."""
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    else:
        tdist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))


def wine():
    """The rows in a fixed shuffled order (the same on every rank) and the cultivars."""
    from sklearn.datasets import load_wine

    data = load_wine()
    order = np.random.default_rng(0).permutation(len(data.target))
    return torch.tensor(data.data[order], dtype=torch.float64), data.target[order]


def global_moments(x_local: torch.Tensor):
    """Mean, standard deviation and covariance of every rank's rows together, from the
    shards' sums (all-reduced): what every rank's priors and scaling must share."""
    n = torch.tensor([float(len(x_local))], dtype=torch.float64)
    s1, s2 = x_local.sum(0), x_local.T @ x_local
    for t in (n, s1, s2):
        tdist.all_reduce(t)
    mean = s1 / n
    cov = (s2 - n * torch.outer(mean, mean)) / (n - 1)
    return mean, cov.diagonal().sqrt(), cov


def bgmm_data(x, mean_z, cov_z) -> dict:
    """scikit-learn's default priors of ``BayesianGaussianMixture`` (see
    :func:`ppl.models.mixtures.bgmm_priors`) from the global moments of the standardised rows."""
    d = x.shape[1]
    return dict(x=x, K=K, alpha0=1.0 / K, beta0=1.0, m0=mean_z, nu0=float(d), W0=torch.linalg.inv(cov_z))


def shared_centres(x_local: torch.Tensor) -> torch.Tensor:
    """k-means++ centres (Arthur & Vassilvitskii 2007) seeded on rank 0's rows, broadcast:
    every rank must start from the same params."""
    from sklearn.cluster import kmeans_plusplus

    centres = torch.zeros(K, x_local.shape[1], dtype=torch.float64)
    if tdist.get_rank() == 0:
        centres = torch.tensor(kmeans_plusplus(x_local.numpy(), K, random_state=0)[0], dtype=torch.float64)
    tdist.broadcast(centres, src=0)
    return centres


def nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """q(z) started at each row's nearest centre (0.9 on it), shape ``(N, K)``."""
    hard = torch.cdist(x, centres).argmin(-1)
    return torch.full((len(x), K), 0.1 / (K - 1), dtype=torch.float64).scatter(1, hard[:, None], 0.9)


def fit(x, mean_z, cov_z, centres, **extra) -> dict:
    """EM on the GMM and CAVI on the Bayesian GMM for rows ``x``; ``extra``: ``distributed``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.TrustWarning)
        t0 = time.perf_counter()
        em = ppl.infer(gmm, {"x": x}, method="em", init={"loc": centres}, max_iter=500, tol=1e-8, **extra)
        t1 = time.perf_counter()
        cavi = ppl.infer(bayesian_gmm, bgmm_data(x, mean_z, cov_z), method="cavi", init={"z": nearest(x, centres)},
                         tol=1e-10, max_iter=2000, **extra)
        t2 = time.perf_counter()
    return {"em": em, "cavi": cavi, "em_seconds": t1 - t0, "cavi_seconds": t2 - t1}


def labels(post) -> np.ndarray:
    """Every rank's MAP clusters, in rank order (gathered)."""
    mine = post.marginal("z").probs.argmax(-1).tolist()
    out = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, mine)
    return np.array([z for part in out for z in part])


def relative_gap(a: dict, b: dict) -> float:
    """The largest relative difference between two dicts of tensors."""
    return max(float(((a[k] - b[k]).abs() / b[k].abs().clamp_min(1e-12)).max()) for k in b)


def main(argv=None) -> dict:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(1)  # one thread per process, as torchrun's OMP_NUM_THREADS=1
    join_group()
    rank, world = tdist.get_rank(), tdist.get_world_size()
    x_all, cultivar = wine()
    rows = np.array_split(np.arange(len(x_all)), world)[rank]
    x_raw = x_all[rows]
    mean, sd, _ = global_moments(x_raw)
    x = (x_raw - mean) / sd                               # standardised with the global moments
    mean_z, _, cov_z = global_moments(x)
    centres = shared_centres(x)
    runs = fit(x, mean_z, cov_z, centres, distributed=True)
    em, cavi = runs["em"], runs["cavi"]
    em_labels, cavi_labels = labels(em), labels(cavi)
    report = {"rank": rank, "world_size": world, "em": em, "cavi": cavi}
    if rank == 0:
        from sklearn.metrics import adjusted_rand_score

        d = em.diagnostics["distributed"]
        print(f"wine: {d['global_plate_size']} rows on {world} process(es); rank 0 holds {d['local_plate_size']}")
        print(f"EM (full covariances, K={K}): log p(x; θ) = {em.log_evidence:.6f} after {em.diagnostics['n_iter']} "
              f"iterations ({runs['em_seconds']:.2f} s), converged {em.converged}; weights "
              f"{np.round(em.params['weights'].numpy(), 3).tolist()}; ARI vs cultivar "
              f"{adjusted_rand_score(cultivar, em_labels):.3f}")
        print(f"CAVI (Bayesian GMM): ELBO = {cavi.elbo:.6f} after {cavi.diagnostics['sweeps']} sweeps "
              f"({runs['cavi_seconds']:.2f} s); E[weights] {np.round(cavi.mean('weights').numpy(), 3).tolist()}; "
              f"ARI vs cultivar {adjusted_rand_score(cultivar, cavi_labels):.3f}")
        # the same fits on one process with every row (this rank reads them all here)
        xz = (x_all - x_all.mean(0)) / x_all.std(0)
        one = fit(xz, xz.mean(0), torch.cov(xz.T), centres)
        em_gap = relative_gap(em.params, one["em"].params)
        cavi_gap = relative_gap({"loc": cavi.mean("loc"), "prec": cavi.mean("prec")},
                                {"loc": one["cavi"].mean("loc"), "prec": one["cavi"].mean("prec")})
        print(f"check against one process on all {len(x_all)} rows: EM params max relative difference "
              f"{em_gap:.1e} (log-likelihood {em.log_evidence:.6f} vs {one['em'].log_evidence:.6f}); CAVI E[loc], "
              f"E[prec] {cavi_gap:.1e} (ELBO {cavi.elbo:.6f} vs {one['cavi'].elbo:.6f})")
        ok = em_gap < 1e-6 and cavi_gap < 1e-6
        print("same answer as one process: " + ("yes" if ok else "NO"))
        report.update(em_gap=em_gap, cavi_gap=cavi_gap, ok=ok)
    tdist.barrier()
    tdist.destroy_process_group()
    return report


if __name__ == "__main__":
    main()
