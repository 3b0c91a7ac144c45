"""Sparse coding and dictionary learning of natural-image patches, with ``method="map"``.

The data: 8 × 8 patches of the two photographs that ship with scikit-learn
(``load_sample_images``: a Chinese temple and a flower), grey-scaled (mean over RGB / 255),
cut at random places (``extract_patches_2d``), each patch shifted to mean 0 and scaled to
standard deviation 1.  A patch is a vector x of D = 64 numbers; offline.

The model (Goodfellow et al. 2016, §19.3, eq. 19.14-19.16): per patch a code h of K
numbers with a factorial Laplace prior, and x a noisy linear image of it::

    with ppl.plate("patches", N):
        h = ppl.sample("h", Laplace(0, 1 / alpha).to_event(1))
        ppl.sample("x", Normal(h @ W.T, 1).to_event(1), obs=x)

so ``log p(h, x) = -0.5 ||x - W h||² - alpha ||h||_1 + const``: the MAP code is the lasso
solution, ``argmin_h 0.5 ||x - W h||² + alpha ||h||_1``, scikit-learn's
``sparse_encode(..., algorithm="lasso_cd")`` objective with its dictionary ``D = Wᵀ``.
The L1 term is not differentiable at 0, so the MAP backend optimises it by FISTA
(proximal gradient; its soft-threshold step gives exact zeros) rather than L-BFGS.

(a) **Sparse coding** with a fixed dictionary: K patches of the data drawn at random and
    scaled to unit norm.  ``ppl.infer(model, data, method="map", tol=...)`` returns the codes
    of all N patches (one optimisation over the whole plate).  Printed: the fraction of
    exact zeros, the objective ``0.5 ||X - H Wᵀ||² + alpha ||H||_1``, ``post.log_joint`` (the
    same up to the constant ``N D/2 log 2π + N K log(2/alpha)``), the KKT residual (how far
    the codes are from the lasso's optimality conditions: 0 at the exact optimum), and
    scikit-learn's coordinate descent on the same problem with its objective and the
    relative difference.

(b) **Dictionary learning** (§19.3's alternating procedure): W becomes a ``ppl.param``
    with unit-norm columns (without the constraint, W could grow and h shrink to make the
    L1 penalty vanish) and ``learn_params=True`` alternates MAP codes given W with the
    maximisation over W given the codes (projected gradient onto the unit-norm columns).
    Starting from the dictionary of (a), the objective falls round by round (printed from
    ``post.history``, the log joint per round, less the constant).

The PNG (``--out``, default ``demo_output/``, file ``sparse_coding_dictionary.png``): the
initial dictionary (random patches) next to the learned one, atoms ordered by how many
patches use them.  At the default alpha = 0.1 the penalty is weak for patches of norm 8
and K = D = 64 atoms form a complete basis: the learned codes are dense (about 18% zeros
after 15 rounds on 5000 patches) and the atoms look noisy.  With ``--alpha 1`` (about 15%
non-zeros) the learned atoms become localised, oriented edges and gratings, the
receptive fields of Olshausen & Field (1996).

References: I. Goodfellow, Y. Bengio and A. Courville, Deep Learning, MIT Press 2016,
§19.3; B. A. Olshausen and D. J. Field, Emergence of simple-cell receptive field properties
by learning a sparse code for natural images, Nature 1996; A. Beck and M. Teboulle, A fast
iterative shrinkage-thresholding algorithm for linear inverse problems, SIAM J. Imaging
Sciences 2009; J. Mairal et al., Online dictionary learning for sparse coding, ICML 2009.

Run: ``python ppl_examples/map_sparse_coding.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np
import pyro
import torch

import ppl
import ppl.distributions as dist

try:  # run as a script (python ppl_examples/...) or as a module
    from _figures import mosaic
    from _threads import limit_threads
except ImportError:  # pragma: no cover
    from ppl_examples._figures import mosaic
    from ppl_examples._threads import limit_threads

PATCH = 8
PIXELS = PATCH * PATCH


@ppl.model
def sparse_coding(x, W, alpha=0.1):
    """Codes h (N × K) of the patches x (N × 64) for a fixed dictionary W (64 × K)."""
    N, D = x.shape
    with ppl.plate("patches", N):
        h = ppl.sample("h", dist.Laplace(W.new_zeros(W.shape[1]), 1.0 / alpha).to_event(1))
        ppl.sample("x", dist.Normal(h @ W.T, 1.0).to_event(1), obs=x)


@ppl.model
def dictionary(x, W0, alpha=0.1):
    """The same model with W a learnable param with unit-norm columns (initial value W0)."""
    N, D = x.shape
    W = ppl.param("W", W0, constraint=ppl.constraints.unit_norm_columns)
    with ppl.plate("patches", N):
        h = ppl.sample("h", dist.Laplace(W.new_zeros(W.shape[1]), 1.0 / alpha).to_event(1))
        ppl.sample("x", dist.Normal(h @ W.T, 1.0).to_event(1), obs=x)


def load_patches(n, seed=0):
    """``n`` normalised 8 × 8 grey-scale patches (float64, about n × 64), n / 2 from each of
    scikit-learn's two sample images."""
    from sklearn.datasets import load_sample_images
    from sklearn.feature_extraction.image import extract_patches_2d

    rng = np.random.RandomState(seed)
    blocks = []
    for img in load_sample_images().images:
        grey = img.mean(axis=2) / 255.0
        blocks.append(extract_patches_2d(grey, (PATCH, PATCH), max_patches=n // 2, random_state=rng)
                      .reshape(-1, PIXELS))
    x = np.concatenate(blocks)
    x = x - x.mean(axis=1, keepdims=True)
    return x / (x.std(axis=1, keepdims=True) + 1e-8)


def random_dictionary(x, k, seed=0):
    """``k`` patches of ``x`` drawn at random, scaled to unit norm, as the rows of D (k × 64)."""
    rows = np.random.RandomState(seed + 1).choice(len(x), size=k, replace=False)
    d = x[rows].copy()
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def objective(x, codes, d, alpha):
    """The lasso objective ``0.5 ||X - C D||² + alpha ||C||_1`` (C: N × K codes, D: K × 64)."""
    return 0.5 * float(((x - codes @ d) ** 2).sum()) + alpha * float(np.abs(codes).sum())


def log_joint_constant(n, k, alpha):
    """``-log p(h, x) - objective``: the Normal's ``N D/2 log 2π`` and the Laplace's
    ``N K log(2 b)``, b = 1 / alpha."""
    return n * PIXELS * 0.5 * math.log(2 * math.pi) + n * k * math.log(2.0 / alpha)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=5000, help="number N of patches (half from each image)")
    parser.add_argument("--atoms", type=int, default=64, help="dictionary size K")
    parser.add_argument("--alpha", type=float, default=0.1, help="L1 weight (the Laplace prior's 1 / scale)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of dictionary learning (codes, then W)")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="inner tolerance of the codes in (a): max-abs prox-gradient, nats per unit")
    parser.add_argument("--learn-tol", type=float, default=1e-3, help="inner tolerance of the final codes in (b)")
    parser.add_argument("--round-iter", type=int, default=10,
                        help="FISTA iterations per step inside each learning round in (b) (round_iter)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patches and of the initial dictionary")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads for both libraries (0: the libraries' defaults)")
    parser.add_argument("--out", default="demo_output/", help="directory of the PNG")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1000 patches, 4 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.patches = min(args.patches, 1000)
        args.rounds = min(args.rounds, 4)
    with limit_threads(args.threads):
        _run(args)


def _run(args):
    start = time.perf_counter()
    x = load_patches(args.patches, args.seed)
    n, k, alpha = len(x), args.atoms, args.alpha
    d0 = random_dictionary(x, k, args.seed)
    xt, w0 = torch.from_numpy(x), torch.from_numpy(d0.T.copy())
    const = log_joint_constant(n, k, alpha)
    print(f"patches: {n} of {PATCH}x{PATCH} pixels from scikit-learn's two sample images (grey, each patch "
          f"mean 0 / sd 1); K = {k} atoms, alpha = {alpha:g}, threads {args.threads or 'default'}\n")

    # ------------------------------------------------------------------ (a) codes
    print(f"(a) sparse coding, fixed dictionary ({k} random patches, unit norm): MAP of h, tol {args.tol:g}")
    t0 = time.perf_counter()
    post = ppl.infer(sparse_coding, {"x": xt, "W": w0, "alpha": alpha}, method="map", tol=args.tol)
    t_ppl = time.perf_counter() - t0
    codes = post.map()["h"].numpy()
    obj = objective(x, codes, d0, alpha)
    step = post.diagnostics["inner"][-1]
    print(f"  ppl MAP ({step['method']}): {step['iterations']} iterations, {t_ppl:.2f} s, converged "
          f"{post.converged}")
    print(f"  sparsity: {np.mean(codes == 0):.3f} of the codes exactly 0 ({np.mean((codes != 0).sum(1)):.1f} "
          f"non-zero of {k} per patch)")
    print(f"  objective 0.5||X - H W^T||^2 + alpha||H||_1 = {obj:.6f}")
    print(f"  log joint {post.log_joint:.4f} = -(objective) - {const:.4f}: |diff| = "
          f"{abs(post.log_joint + obj + const):.2e}")
    print(f"  KKT residual (max violation of the lasso optimality conditions) = "
          f"{post.diagnostics['kkt_residual']['h']:.2e}")
    sk = sklearn_codes(x, d0, alpha)
    if sk is not None:
        sk_codes, t_sk = sk
        sk_obj = objective(x, sk_codes, d0, alpha)
        print(f"  scikit-learn sparse_encode(lasso_cd): {t_sk:.2f} s, sparsity {np.mean(sk_codes == 0):.3f}, "
              f"objective = {sk_obj:.6f}")
        print(f"  objective relative difference (ppl - sklearn) / sklearn = {(obj - sk_obj) / abs(sk_obj):.2e}; "
              f"max |h_ppl - h_sklearn| = {np.abs(codes - sk_codes).max():.2e}")
    print()

    # ------------------------------------------------------------ (b) dictionary
    print(f"(b) dictionary learning, unit-norm atoms, from the dictionary of (a): learn_params=True, "
          f"max_rounds {args.rounds}, round_iter {args.round_iter}, tol {args.learn_tol:g}, rtol 1e-6")
    pyro.clear_param_store()  # a "W" left from an earlier run would otherwise be reused
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)  # reported below: converged True / False
        learned = ppl.infer(dictionary, {"x": xt, "W0": w0, "alpha": alpha}, method="map", learn_params=True,
                            max_rounds=args.rounds, round_iter=args.round_iter, tol=args.learn_tol, rtol=1e-6)
    t_learn = time.perf_counter() - t0
    print(f"  {'round':>5} {'objective':>14} {'per patch':>10}")
    print(f"  {0:>5} {obj:14.4f} {obj / n:10.5f}   (the codes of (a), initial dictionary)")
    for r, lj in enumerate(learned.history, 1):
        value = -lj - const
        print(f"  {r:>5} {value:14.4f} {value / n:10.5f}")
    print()
    w = learned.params["W"].detach().numpy()
    h = learned.map()["h"].numpy()
    final = objective(x, h, w.T, alpha)
    norms = np.linalg.norm(w, axis=0)
    print(f"  {len(learned.history)} rounds in {t_learn:.2f} s, converged (rtol) {learned.converged}; final "
          f"objective recomputed from post.map()['h'] and post.params['W'] = {final:.4f} "
          f"({final / obj:.3f} of the initial dictionary's)")
    print(f"  sparsity {np.mean(h == 0):.3f} ({np.mean((h != 0).sum(1)):.1f} non-zero of {k} per patch); "
          f"max |norm - 1| of W's columns = {np.abs(norms - 1).max():.1e}")
    print(f"  KKT residual of the codes for the final W = {learned.diagnostics['kkt_residual']['h']:.2e} (each "
          "round re-codes after updating W, so the codes are the MAP under the W returned)")

    path = plot(args, d0, w, h)
    if path:
        print(f"\nwrote {path}")
    print(f"total wall time {time.perf_counter() - start:.1f} s")


def sklearn_codes(x, d, alpha):
    """scikit-learn's lasso codes of ``x`` for the dictionary ``d`` (K × 64) and the seconds
    taken, or None without scikit-learn."""
    try:
        from sklearn.decomposition import sparse_encode
        from sklearn.exceptions import ConvergenceWarning
    except ImportError:
        print("  scikit-learn is not installed: no comparison")
        return None
    with warnings.catch_warnings():
        # coordinate descent stops at max_iter=1000 on a few patches, its duality gap a few 1e-6 above its tol
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        codes = sparse_encode(x, d, algorithm="lasso_cd", alpha=alpha)
    return codes, time.perf_counter() - t0


def plot(args, d0, w, h):
    """Write the PNG (see the module docstring); return its path, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("\nmatplotlib is not installed (pip install matplotlib): no PNG written")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = w.shape[1]
    cols = math.ceil(math.sqrt(k))
    usage = (h != 0).mean(0)
    order = np.argsort(-usage, kind="stable")
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    cmap = plt.get_cmap("gray").with_extremes(bad="white")  # the gaps between atoms
    for ax, atoms, title in ((axes[0], d0, f"initial dictionary: {k} random patches"),
                             (axes[1], w.T[order], f"learned dictionary ({len(h)} patches, alpha {args.alpha:g}),\n"
                                                   "atoms by usage, most used first")):
        ax.imshow(mosaic(atoms, cols, side=PATCH, normalise=True), cmap=cmap, vmin=-1, vmax=1,
                  interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle("sparse coding of 8x8 natural-image patches: MAP dictionary learning with unit-norm atoms",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "sparse_coding_dictionary.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
