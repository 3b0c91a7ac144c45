"""The Viterbi path of a hidden Markov model is its joint MAP: ``method="map"`` on the sunspots HMM.

The series is the yearly mean sunspot number 1700-2008 (309 values) that ships with
statsmodels, modelled as in ``em_hmm.py`` (whose data loading and model this reuses): a
Gaussian-emission HMM on the square root of the series, written as a ``ppl.markov`` loop
over the years.  We

1. fit the HMM with K hidden regimes (default 3) by EM (``method="em"``), which leaves the
   learned θ in Pyro's param store;
2. run ``ppl.infer(gaussian_hmm, data, method="map")`` on the same model: the joint MAP
   ``argmax_x log p(x, y; θ)`` of the chain's hidden states, found by max-product
   elimination with backtracking, which on a chain *is* the Viterbi algorithm; print its
   ``log_joint``, the years spent in each regime, the number of regime switches, and a
   timeline of the regimes year by year;
3. run a Viterbi written here in numpy (log-space dynamic programme + backtrack) on the
   same θ, and print the fraction of years on which the two paths agree (1.0: they are
   the same path), the difference of their log joints and the time each took.

The regimes are listed in increasing order of their mean (regime 0 is the quietest).

Run: ``python ppl_examples/map_viterbi.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch

import ppl

try:  # run as a script (python ppl_examples/...) or as a module
    from _threads import limit_threads
    from em_hmm import fit, gaussian_hmm, load_sunspots, path_summary, print_path, relabel_by_mean
except ImportError:  # pragma: no cover
    from ppl_examples._threads import limit_threads
    from ppl_examples.em_hmm import fit, gaussian_hmm, load_sunspots, path_summary, print_path, relabel_by_mean


def numpy_viterbi(y, init, trans, loc, scale):
    """Most probable state path of a Gaussian HMM, in log space.

    Returns ``(path, max log p(x, y))``; ``path`` is an int array of length T.
    """
    with np.errstate(divide="ignore"):
        log_init, log_trans = np.log(init), np.log(trans)
    log_emit = (-0.5 * ((y[:, None] - loc[None, :]) / scale[None, :]) ** 2
                - np.log(scale)[None, :] - 0.5 * math.log(2.0 * math.pi))           # (T, K)
    T, K = log_emit.shape
    delta = log_init + log_emit[0]
    back = np.empty((T, K), dtype=np.int64)
    for t in range(1, T):
        scores = delta[:, None] + log_trans                                          # (from, to)
        back[t] = scores.argmax(0)
        delta = scores[back[t], np.arange(K)] + log_emit[t]
    path = np.empty(T, dtype=np.int64)
    path[-1] = int(delta.argmax())
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path, float(delta.max())


def numpy_log_joint(path, y, init, trans, loc, scale):
    """``log p(x = path, y; θ)`` of the Gaussian HMM."""
    with np.errstate(divide="ignore"):
        lj = np.log(init[path[0]]) + np.log(trans[path[:-1], path[1:]]).sum()
    z = (y - loc[path]) / scale[path]
    return float(lj + (-0.5 * z ** 2 - np.log(scale[path]) - 0.5 * math.log(2.0 * math.pi)).sum())


def spells(years, states):
    """Maximal runs of one regime: list of (first year, last year, regime)."""
    out, start = [], 0
    for t in range(1, len(states) + 1):
        if t == len(states) or states[t] != states[start]:
            out.append((int(years[start]), int(years[t - 1]), int(states[start])))
            start = t
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=3, help="number of hidden regimes")
    parser.add_argument("--max-iter", type=int, default=500, help="EM iterations at most")
    parser.add_argument("--tol", type=float, default=1e-6, help="EM stops when log-likelihood / T changes less")
    parser.add_argument("--reg-covar", type=float, default=1e-6, help="added to every variance in the M-step")
    parser.add_argument("--repeats", type=int, default=5, help="timing runs of each Viterbi (the best is shown)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (0: the libraries' defaults)")
    parser.add_argument("--quick", action="store_true", help="smoke run: at most 30 EM iterations, one timing run")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_iter = min(args.max_iter, 30)
        args.repeats = 1
    with limit_threads(args.threads):
        _run(args)


def _run(args):
    K = args.K
    start = time.perf_counter()
    years, spots = load_sunspots()
    T = len(spots)
    z = np.sqrt(spots)
    data = {"y": torch.as_tensor(z), "K": K}
    print(f"sunspots: yearly means {years[0]}-{years[-1]}, T = {T}; modelled as sqrt(sunspot number)\n")

    # -------------------------------------------------------------- 1. EM fit of θ
    post, seconds = fit(gaussian_hmm, data, max_iter=args.max_iter, tol=args.tol, reg_covar=args.reg_covar)
    theta = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in post.params.items()}
    print(f"Gaussian HMM, K = {K}, fitted by EM: log p(y; θ) = {post.log_evidence:.4f}, "
          f"{post.diagnostics['n_iter']} iterations, converged {bool(post.converged)}, {seconds:.2f} s")
    order, rank = relabel_by_mean(theta["loc"])
    for i, k in enumerate(order):
        print(f"  regime {i}: mean {theta['loc'][k]:6.3f} (~{theta['loc'][k] ** 2:6.1f} spots), "
              f"scale {theta['scale'][k]:6.3f}, expected stay {1.0 / max(1.0 - theta['trans'][k, k], 1e-12):5.1f} years")
    print()

    # -------------------------------------------------------------- 2. the joint MAP by ppl
    # init=post: the model's ppl.param sites start at the fitted θ (post.params)
    times = []
    for _ in range(max(args.repeats, 1)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ppl.ConvergenceWarning)
            mp = ppl.infer(gaussian_hmm, data, method="map", progress=False, init=post)
        times.append(time.perf_counter() - t0)
    ppl_seconds = min(times)
    best = mp.map()
    path = np.array([int(best[f"x_{t}"]) for t in range(T)])
    states = rank[path]
    counts, switches = path_summary(states, K)
    print('ppl.infer(gaussian_hmm, data, method="map"): max-product over the chain = the Viterbi path')
    print(f"  log p(x̂, y; θ) = {mp.log_joint:.6f}   (so log p(x̂ | y; θ) = {mp.log_joint - post.log_evidence:.4f}: "
          "the single most probable path is still an unlikely one)")
    print("  years per regime: " + ", ".join(f"{i}: {c}" for i, c in enumerate(counts))
          + f"; {switches} regime switches")
    runs = spells(years, states)
    longest = {i: max((r for r in runs if r[2] == i), key=lambda r: r[1] - r[0], default=None) for i in range(K)}
    print("  longest spell per regime: " + ", ".join(
        f"{i}: {r[0]}-{r[1]} ({r[1] - r[0] + 1} y)" for i, r in longest.items() if r is not None))
    print("  timeline (one digit per year, the regime):")
    print_path(years, states)
    print()

    # -------------------------------------------------------------- 3. numpy Viterbi, same θ
    times = []
    for _ in range(max(args.repeats, 1)):
        t0 = time.perf_counter()
        np_path, np_best = numpy_viterbi(z, theta["init"], theta["trans"], theta["loc"], theta["scale"])
        times.append(time.perf_counter() - t0)
    np_seconds = min(times)
    agree = float((np_path == path).mean())
    ppl_lj = numpy_log_joint(path, z, theta["init"], theta["trans"], theta["loc"], theta["scale"])
    print("numpy Viterbi (log-space DP + backtrack) on the same θ:")
    print(f"  max log p(x, y; θ) = {np_best:.6f}; |Δ log joint| = {abs(np_best - mp.log_joint):.2e} "
          f"(ppl's path scored by numpy: {abs(np_best - ppl_lj):.2e})")
    print(f"  agreement with numpy Viterbi: {agree:.3f} of {T} years")
    print(f"  time: ppl method='map' {ppl_seconds * 1e3:8.1f} ms (model compilation + max-product, best of "
          f"{len(times)}), numpy {np_seconds * 1e3:6.2f} ms")
    print(f"\ntotal wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
