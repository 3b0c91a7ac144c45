"""Binary sparse coding of handwritten digits: mean-field CAVI against the exact posterior.

The model (Goodfellow et al. 2016, §19.4, eq. 19.19-19.20): an image v (D = 64 pixels) is
explained by m binary hidden units h_i, each present with prior probability σ(b_i), and
Gaussian noise of precision β around the sum of the dictionary atoms W_:,i that are on::

    p(h_i = 1) = σ(b_i),        p(v | h) = N(v; W h, β⁻¹ I)

    with ppl.plate("data", N):
        hs = [ppl.sample(f"h{i}", Bernoulli(sigmoid(b[i]))) for i in range(m)]
        h = torch.stack(torch.broadcast_tensors(*hs), -1)
        ppl.sample("v", Normal(h @ W.T, beta ** -0.5).to_event(1), obs=v)

Every unit shares the Gaussian factor with every other unit, so the posterior p(h | v) does
not factorise: two atoms that overlap compete to explain the same pixels ("explaining
away"), and the posterior over h can have several modes.  The mean-field family
q(h) = Π_i q(h_i) (eq. 19.17) cannot represent that dependence.  ``method="cavi"`` runs
the coordinate update of eq. 19.44 (the general eq. 19.56, worked out for this model)::

    ĥ_i ← σ(b_i + vᵀβW_:,i − ½ W_:,iᵀβW_:,i − Σ_{j≠i} W_:,jᵀβW_:,i ĥ_j)

The data: scikit-learn's ``load_digits()`` (1797 images of 8 × 8 pixels, offline), pixels
scaled to [0, 1] and each pixel centred on its mean over the 1797 images; the first
``--digits`` images (default 60) are coded.  The dictionary is obtained once,
deterministically: scikit-learn's ``MiniBatchDictionaryLearning`` (``--hidden`` atoms,
non-negative codes, alpha = 1, ``random_state=0``) on all 1797 centred images gives
unit-norm atoms; W is those atoms times one amplitude, the mean of x·atom over the
(image, atom) pairs whose lasso code is non-zero (about 1.6; the lasso's own codes are
shrunk by alpha), so that a unit that is on adds about as much of its atom as the images
that use it contain.  The atoms are not orthogonal (cosines up to about 0.75; with
orthogonal atoms, e.g. principal components, WᵀW is diagonal, the posterior factorises and
mean field is exact).  b_i = ``--bias`` (−1: each unit on with prior probability 0.27),
β = ``--beta`` (4: noise s.d. 0.5).  With these values the coupling β W_:,iᵀW_:,j of
eq. 19.44 reaches about 8 nats for the most similar atoms, and in some images two
overlapping atoms are each a good explanation of the same strokes, but not both at once:
the posterior has two modes.  For m ≤ 16 the exact posterior, a table of 2^m states per
image, is enumerated; the default run codes 60 images with m = 12 in about 10 s on 2 cores.
At every m ``method="cavi"`` takes its binary quadratic path (``diagnostics["path"]``),
which computes eq. 19.44 from E[h] and E[hhᵀ] without a table over the 2^m codes, so up to
m = 64 (``--hidden 64``) CAVI still runs; the exact parts (b) and (c) are then skipped and
(d) is printed instead.
That run takes under 10 s on 2 cores, most of it learning the 64 atoms.

What is printed:

(a) the mean-field q by ``method="cavi"``: the sequential schedule (one unit at a time; the
    ELBO can never decrease) and the parallel one (all units from the same old q), undamped
    and damped (a step of 0.5 in natural parameters, §19.4.1; 0.2 for m > 16, as at m = 64
    on the default digits a step of 0.5 or 0.3 does not converge in 500 sweeps): ELBO reached,
    sweeps, how many sweeps lowered the ELBO (``diagnostics["decreases"]``), and whether
    the run converged.  Updating all units at once ignores that they explain the same
    pixels: undamped, the parallel run overshoots and can oscillate.
(b) the exact posterior by ``method="exact"`` (variable elimination over the 2^m states of
    each image): log evidence log p(v), the gap log p(v) − ELBO = KL(q ‖ p(h | v)) ≥ 0
    (eq. 19.1) in total and per image, and how far the mean-field marginals q(h_i = 1) are
    from the exact p(h_i = 1 | v).  The same quantities recomputed here by brute-force
    enumeration in torch (the quadratic form of the Gaussian, independent of ppl) check
    ppl's numbers.
(c) explaining away, for the image with the largest KL gap: the pair of units with the most
    negative posterior correlation, from the enumeration and from exact joint samples
    (``post.sample``) of that image's posterior; the exact p(h_i = 1, h_j = 1 | v) against
    the product of the exact marginals and against the mean field's q_i q_j, whose
    correlation is 0 by construction.  At the defaults the exact posterior splits its mass
    between "atom i, not atom j" and "atom j, not atom i"; the mean field, which minimises
    KL(q ‖ p), puts most of its mass on one of the two.
(d) for m > 16 only, instead of (b) and (c): the path ``method="cavi"`` reports, a check
    that the sequential q is a fixed point of eq. 19.44 written out here from W, b and β
    (max |σ(logit_i) − ĥ_i| over images and units), the ELBO per image (and the same ELBO in
    closed form from q, independent of ppl), and how many units are on per image (Σ_i ĥ_i).

The PNG (``--out``, default ``demo_output/``, file ``cavi_binary_sparse_coding.png``): the
dictionary atoms, the ELBO per sweep of the three CAVI runs, the exact marginals against
the mean-field ones, the histogram of per-image KL gaps, and the image of (c) with its two
competing atoms and the pair's joint probabilities.  For m > 16: the atoms, the ELBO per
sweep (and zoomed on its end), and the first images above their reconstructions W ĥ by
the sequential mean field.

References: I. Goodfellow, Y. Bengio and A. Courville, Deep Learning, MIT Press 2016,
§19.4 (eq. 19.1, 19.17, 19.19-19.20, 19.44, 19.56); D. M. Blei, A. Kucukelbir and
J. D. McAuliffe, Variational inference: a review for statisticians, JASA 2017; J. Mairal
et al., Online dictionary learning for sparse coding, ICML 2009.

Run: ``python ppl_examples/cavi_binary_sparse_coding.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np
import torch

import ppl
import ppl.distributions as dist

try:  # run as a script (python ppl_examples/...) or as a module
    from _figures import mosaic
    from _threads import limit_threads
except ImportError:  # pragma: no cover
    from ppl_examples._figures import mosaic
    from ppl_examples._threads import limit_threads

PIXELS = 64
MAX_HIDDEN = 64  # CAVI's binary quadratic path: eq. 19.44 from E[h] and E[hhᵀ], no 2^m table
MAX_EXACT = 16  # the exact posterior of (b) and (c) enumerates 2^m states per image
SHOWN = 8  # images shown with their reconstructions in the PNG for m > MAX_EXACT


@ppl.model
def binary_sparse_coding(v, W, b, beta):
    """Eq. 19.19-19.20: p(h_i = 1) = σ(b_i), p(v | h) = N(v; W h, β⁻¹ I), one Bernoulli
    site per hidden unit, N images in a plate."""
    N, m = v.shape[0], W.shape[1]
    with ppl.plate("data", N):
        hs = [ppl.sample(f"h{i}", dist.Bernoulli(torch.sigmoid(b[i]))) for i in range(m)]
        h = torch.stack(torch.broadcast_tensors(*hs), -1)
        ppl.sample("v", dist.Normal(h @ W.T, beta ** -0.5).to_event(1), obs=v)


def load(n):
    """All 1797 digits scaled to [0, 1] and centred per pixel (float64), and the first n."""
    from sklearn.datasets import load_digits

    x = load_digits().data / 16.0
    x = x - x.mean(0)
    return x, x[:n]


def dictionary(x, m):
    """W (64 × m): the unit-norm atoms of MiniBatchDictionaryLearning (non-negative codes,
    alpha = 1, random_state=0) on the centred digits, all times one amplitude: the mean of
    x·atom over the (image, atom) pairs whose sparse code is non-zero (the lasso's codes
    themselves are shrunk by alpha)."""
    from sklearn.decomposition import MiniBatchDictionaryLearning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's convergence chatter of the inner lasso
        learner = MiniBatchDictionaryLearning(n_components=m, alpha=1.0, batch_size=256, max_iter=30,
                                              fit_algorithm="cd", transform_algorithm="lasso_cd", transform_alpha=1.0,
                                              positive_code=True, random_state=0)
        codes = learner.fit_transform(x)
    atoms = learner.components_.T
    used = codes > 1e-8
    scale = float((x @ atoms)[used].mean())
    return atoms * scale, scale


def enumerate_posterior(v, W, b, beta):
    """Brute force over the 2^m codes with the Gaussian's quadratic form (no ppl):
    the states S (2^m × m), log p(v_n) (N,) and p(h | v_n) (N × 2^m)."""
    m, d = W.shape[1], W.shape[0]
    states = ((torch.arange(2 ** m)[:, None] >> torch.arange(m)) & 1).to(W.dtype)
    log_prior = states @ torch.nn.functional.logsigmoid(b) + (1 - states) @ torch.nn.functional.logsigmoid(-b)
    gram = W.T @ W
    sq = (v * v).sum(1, keepdim=True) - 2 * (v @ W) @ states.T + ((states @ gram) * states).sum(1)  # ||v - W s||²
    log_joint = log_prior + 0.5 * d * math.log(beta / (2 * math.pi)) - 0.5 * beta * sq
    log_evidence = torch.logsumexp(log_joint, 1)
    return states, log_evidence, (log_joint - log_evidence[:, None]).exp()


def mean_field_elbo(v, W, b, beta, q):
    """Per-image ELBO of the mean field q (N × m, q(h_i = 1)) in closed form:
    E_q log p(h) + E_q log p(v | h) + H(q), with
    E_q ||v − W h||² = ||v − W q||² + Σ_i q_i (1 − q_i) ||W_:,i||²."""
    d = W.shape[0]
    logsig = torch.nn.functional.logsigmoid
    prior = (q * logsig(b) + (1 - q) * logsig(-b)).sum(1)
    sq = ((v - q @ W.T) ** 2).sum(1) + (q * (1 - q) * (W * W).sum(0)).sum(1)
    lik = 0.5 * d * math.log(beta / (2 * math.pi)) - 0.5 * beta * sq
    entropy = -(torch.xlogy(q, q) + torch.xlogy(1 - q, 1 - q)).sum(1)
    return prior + lik + entropy


def fixed_point_residual(v, W, b, beta, q):
    """max |σ(logit_i) − ĥ_i| over images and units, with eq. 19.44 written out from W, b, β:
    logit_i = b_i + β vᵀW_:,i − ½ β W_:,iᵀW_:,i − Σ_{j≠i} β W_:,jᵀW_:,i ĥ_j.  0 at a fixed point
    of the coordinate updates (what a converged sequential run reaches)."""
    coupling = beta * W.T @ W
    diag = coupling.diagonal()
    logit = b + beta * v @ W - 0.5 * diag - (q @ coupling - q * diag)
    return float((torch.sigmoid(logit) - q).abs().max())


def _damping(m):
    """The step of the damped parallel run: 0.5 for m <= MAX_EXACT, 0.2 above (at m = 64 on
    the default digits steps of 0.5 and 0.3 cycle for 500 sweeps; 0.2 converges)."""
    return 0.5 if m <= MAX_EXACT else 0.2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=12,
                        help=f"hidden units m (at most {MAX_HIDDEN}); the exact posterior, 2^m states per image, "
                             f"is enumerated only for m <= {MAX_EXACT}")
    parser.add_argument("--digits", type=int, default=60, help="images coded (the first ones of load_digits)")
    parser.add_argument("--beta", type=float, default=4.0, help="noise precision β")
    parser.add_argument("--bias", type=float, default=-1.0, help="every b_i (prior p(h_i = 1) = σ(b_i))")
    parser.add_argument("--max-iter", type=int, default=500, help="sweeps at most of the sequential and damped runs")
    parser.add_argument("--parallel-iter", type=int, default=20, help="sweeps at most of the undamped parallel run")
    parser.add_argument("--draws", type=int, default=10000, help="exact joint samples of the image of (c)")
    parser.add_argument("--seed", type=int, default=0, help="seed of CAVI's random initial q and of the samples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="demo_output/", help="directory of the PNG")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 hidden units, 30 images, fewer sweeps "
                                                             "and draws")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden = min(args.hidden, 8)
        args.digits = min(args.digits, 30)
        args.max_iter = min(args.max_iter, 40)
        args.parallel_iter = min(args.parallel_iter, 15)
        args.draws = min(args.draws, 4000)
    if not 2 <= args.hidden <= MAX_HIDDEN:
        parser.error(f"--hidden must be between 2 and {MAX_HIDDEN}")
    if args.digits < 1:
        parser.error("--digits must be at least 1")
    with limit_threads(args.threads):
        _run(args)


def _cavi(data, args, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)  # reported from post.converged instead
        return ppl.infer(binary_sparse_coding, data, method="cavi", seed=args.seed, progress=False, **options)


def _q(post, m):
    """The mean field's q(h_i = 1) as an N × m tensor."""
    return torch.stack([post.probs(f"h{i}")[..., 1] for i in range(m)], -1)


def _run(args):
    start = time.perf_counter()
    x_all, x = load(args.digits)
    m, n = args.hidden, len(x)
    W_np, scale = dictionary(x_all, m)
    W = torch.from_numpy(W_np)
    b = torch.full((m,), args.bias, dtype=torch.float64)
    v = torch.from_numpy(x)
    data = {"v": v, "W": W, "b": b, "beta": args.beta}
    gram = (W.T @ W).numpy()
    off = gram[~np.eye(m, dtype=bool)]
    print(f"digits: {n} of the 1797 images of load_digits, 8x8 pixels scaled to [0, 1] and centred per pixel")
    print(f"dictionary: {m} unit-norm atoms of MiniBatchDictionaryLearning (random_state=0) times {scale:.3f} "
          f"(mean x.atom where the atom is used);\n  b_i = {args.bias:g} (prior p(h_i=1) = "
          f"{1 / (1 + math.exp(-args.bias)):.3f}), beta = {args.beta:g}")
    print(f"  coupling of units i, j in eq. 19.44: beta W_i.W_j ranges over [{args.beta * off.min():.2f}, "
          f"{args.beta * off.max():.2f}] (0 for all pairs would make the posterior factorise)\n")

    runs = _schedules(data, args)
    post_q = runs["sequential"]
    q = _q(post_q, m)
    if m <= MAX_EXACT:
        exact = _exact_parts(args, data, post_q, q, gram)
        path = plot(args, W_np, runs, exact=exact)
    else:
        print(f"(b), (c) skipped: the exact posterior is a table of 2^{m} = {2.0 ** m:.2e} states per image "
              f"(enumerated for m <= {MAX_EXACT} only)\n")
        _check_large(args, data, post_q, q)
        path = plot(args, W_np, runs, recon=(x[:SHOWN], (q[:SHOWN] @ W.T).numpy()))
    if path:
        print(f"\nwrote {path}")
    print(f"total wall time {time.perf_counter() - start:.1f} s")


def _schedules(data, args):
    """(a): the mean field by CAVI under three schedules, printed; the runs by name."""
    damping = _damping(args.hidden)
    damped = f"parallel, damping {damping:g}"
    runs = {
        "sequential": _cavi(data, args, schedule="sequential", max_iter=args.max_iter),
        "parallel, damping 1": _cavi(data, args, schedule="parallel", damping=1.0, max_iter=args.parallel_iter),
        damped: _cavi(data, args, schedule="parallel", damping=damping, max_iter=args.max_iter),
    }
    print("(a) mean field by method='cavi' (same random initial q, seed "
          f"{args.seed}):")
    print(f"  {'schedule':<22} {'ELBO (nats)':>12} {'sweeps':>7} {'decreases':>10} {'converged':>10} {'seconds':>8}")
    for name, post in runs.items():
        d = post.diagnostics
        print(f"  {name:<22} {post.elbo:12.3f} {d['sweeps']:7d} {d['decreases']:10d} {str(post.converged):>10} "
              f"{post.elapsed:8.2f}")
    wild = runs["parallel, damping 1"]
    tail = ", ".join(f"{e:.2f}" for e in wild.history[-4:])
    print(f"  parallel undamped: ELBO decreased in {wild.diagnostics['decreases']} of its "
          f"{wild.diagnostics['sweeps']} sweeps, converged {wild.converged}; last ELBOs {tail}")
    if args.hidden > MAX_EXACT:
        print(f"  damped parallel: step {damping:g} for m > {MAX_EXACT}, converged {runs[damped].converged} "
              "(at m = 64 on the default 60 digits steps 0.5 and 0.3 cycle for 500 sweeps)")
    print()
    return runs


def _check_large(args, data, post_q, q):
    """(d), for m > MAX_EXACT: the sequential q checked without the exact posterior."""
    v, W, b = data["v"], data["W"], data["b"]
    n, m = q.shape
    residual = fixed_point_residual(v, W, b, args.beta, q)
    elbo_img = mean_field_elbo(v, W, b, args.beta, q)
    on = q.sum(1).numpy()
    print("(d) the sequential mean field, checked without the exact posterior:")
    print(f"  path: diagnostics['path'] = {post_q.diagnostics.get('path')!r} (eq. 19.44 from E[h] and E[hh^T], "
          f"no table over the 2^{m} codes)")
    print(f"  fixed point of eq. 19.44 written out from W, b, beta: max |sigmoid(logit_i) - q_i| = {residual:.2e} "
          f"(over {n} images x {m} units)")
    print(f"  ELBO = {post_q.elbo:.3f} nats, {post_q.elbo / n:.3f} per image (median {np.median(elbo_img):.3f}); "
          f"closed form from q (no ppl): |diff| {abs(float(elbo_img.sum()) - post_q.elbo):.2e}")
    print(f"  units on per image, sum_i q(h_i=1): mean {on.mean():.2f} (min {on.min():.2f}, max {on.max():.2f}) "
          f"of {m}; the prior's m sigmoid(b) = {float(torch.sigmoid(b).sum()):.2f}")


def _exact_parts(args, data, post_q, q, gram):
    """(b) and (c), for m <= MAX_EXACT: the exact posterior and explaining away, printed;
    what the PNG's exact panels need."""
    v, W, b = data["v"], data["W"], data["b"]
    n, m = q.shape
    x = v.numpy()
    # (b) the exact posterior
    exact = ppl.infer(binary_sparse_coding, data, method="exact")
    p = _q(exact, m)
    states, log_ev_img, post_img = enumerate_posterior(v, W, b, args.beta)
    elbo_img = mean_field_elbo(v, W, b, args.beta, q)
    gap_img = (log_ev_img - elbo_img).numpy()
    gap = exact.log_evidence - post_q.elbo
    top = post_img.max(1).values.numpy()
    print(f"(b) exact posterior by method='exact' ({2 ** m} states per image, {exact.elapsed:.2f} s):")
    print(f"  log evidence log p(v) = {exact.log_evidence:.3f} nats; sequential mean-field ELBO = {post_q.elbo:.3f}")
    print(f"  KL gap log p(v) - ELBO = {gap:.4f} nats total, {gap / n:.4f} nats per image")
    print(f"  per image: median {np.median(gap_img):.4f}, max {gap_img.max():.4f}; "
          f"{int((gap_img > 0.1).sum())} of {n} images above 0.1 nats")
    print(f"  exact posterior: most probable code holds median {np.median(top):.3f} of the mass "
          f"(min {top.min():.3f}); {int((top < 0.5).sum())} of {n} images have no code above 0.5")
    mad = float((q - p).abs().mean())
    print(f"  marginals: mean |q(h_i=1) - p(h_i=1|v)| = {mad:.4f}, max {float((q - p).abs().max()):.4f} "
          f"(over {n} images x {m} units)")
    err_ev = abs(float(log_ev_img.sum()) - exact.log_evidence)
    err_elbo = abs(float(elbo_img.sum()) - post_q.elbo)
    err_marg = float((post_img @ states - p).abs().max())
    print(f"  check by brute-force enumeration (no ppl): |diff| log evidence {err_ev:.2e}, ELBO {err_elbo:.2e}, "
          f"max marginal {err_marg:.2e}")
    print()

    # (c) explaining away in the image with the largest KL gap
    k = int(np.argmax(gap_img))
    one = {"v": v[k:k + 1], "W": W, "b": b, "beta": args.beta}
    single = ppl.infer(binary_sparse_coding, one, method="exact")
    draws = single.sample(args.draws, seed=args.seed)
    pk = post_img[k]
    mean = pk @ states
    second = (states.T * pk) @ states  # p(h_i = 1, h_j = 1 | v)
    cov = second - torch.outer(mean, mean)
    sd = cov.diagonal().clamp_min(1e-300).sqrt()
    corr = (cov / torch.outer(sd, sd)).numpy()
    np.fill_diagonal(corr, np.inf)
    i, j = np.unravel_index(np.argmin(corr), corr.shape)
    i, j = int(min(i, j)), int(max(i, j))
    hi, hj = (draws[f"h{u}"].reshape(-1).double() for u in (i, j))
    spread = float(hi.std(unbiased=False) * hj.std(unbiased=False))
    corr_mc = float(((hi - hi.mean()) * (hj - hj.mean())).mean()) / spread if spread > 0 else float("nan")
    pij, pi, pj = float(second[i, j]), float(mean[i]), float(mean[j])
    qi, qj = float(q[k, i]), float(q[k, j])
    print(f"(c) explaining away in image {k} (digit with the largest KL gap, {gap_img[k]:.4f} nats):")
    print(f"  most negative exact posterior correlation: units h{i}, h{j}: corr = {corr[i, j]:.3f} "
          f"(from {args.draws} exact joint samples: {corr_mc:.3f}); mean field: 0 by construction")
    print(f"  p(h{i}=1, h{j}=1 | v) exact = {pij:.4f}   vs  p_i p_j (exact marginals) = {pi * pj:.4f}   "
          f"vs  q_i q_j (mean field) = {qi * qj:.4f}")
    print(f"  marginals: exact p(h{i}=1|v) = {pi:.3f}, p(h{j}=1|v) = {pj:.3f}; mean field q = {qi:.3f}, {qj:.3f}")
    joint = np.array([[float(pk[(states[:, i] == a) & (states[:, j] == c)].sum()) for c in (0, 1)] for a in (0, 1)])
    print(f"  exact joint of (h{i}, h{j}): p(0,0) = {joint[0, 0]:.3f}, p(0,1) = {joint[0, 1]:.3f}, "
          f"p(1,0) = {joint[1, 0]:.3f}, p(1,1) = {joint[1, 1]:.3f}")
    print(f"  the atoms overlap: W_{i}.W_{j} / (|W_{i}| |W_{j}|) = "
          f"{gram[i, j] / math.sqrt(gram[i, i] * gram[j, j]):.3f}")

    return {"p": p.numpy(), "q": q.numpy(), "gap_img": gap_img, "image": x[k], "pair": (i, j), "joint": joint,
            "q_pair": (qi, qj)}


def plot(args, W, runs, exact=None, recon=None):
    """Write the PNG (see the module docstring); return its path, or None without matplotlib.
    ``exact`` (m <= MAX_EXACT): what :func:`_exact_parts` returns, for the exact panels;
    ``recon`` (m > MAX_EXACT): a few images and their reconstructions W ĥ."""
    try:
        import matplotlib
    except ImportError:
        print("\nmatplotlib is not installed (pip install matplotlib): no PNG written")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = W.shape[1]
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    if exact is not None:
        fig, axes = plt.subplots(2, 3, figsize=(14, 8.4))
        _atoms_panel(axes[0, 0], W, cmap)
        _elbo_panel(axes[0, 1], runs)
        _exact_panels(axes[0, 2], axes[1, 0], axes[1, 1], axes[1, 2], W, cmap, **exact)
        what = "mean-field CAVI vs the exact posterior"
    else:
        fig, axes = plt.subplots(2, 2, figsize=(12, 10))
        _atoms_panel(axes[0, 0], W, cmap)
        _elbo_panel(axes[0, 1], runs)
        _elbo_panel(axes[1, 0], runs, zoom=True)
        _recon_panel(axes[1, 1], *recon, cmap)
        what = f"mean-field CAVI (no exact posterior: 2^{m} states per image)"
    fig.suptitle(f"binary sparse coding of digits: m = {m} units, beta = {args.beta:g}, b = {args.bias:g}; {what}",
                 fontsize=11)
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "cavi_binary_sparse_coding.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _atoms_panel(ax, W, cmap):
    """The dictionary atoms as a numbered mosaic."""
    m = W.shape[1]
    lim = np.abs(W).max()
    cols = min(m, max(4, math.ceil(math.sqrt(m))))  # 4 columns up to m = 16, 8 at m = 64
    ax.imshow(mosaic(W.T, cols=cols), cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    for u in range(m):
        r, c = divmod(u, cols)
        ax.text(c * 9 - 0.4, r * 9 - 0.4, str(u), fontsize=7, va="top", ha="left",
                bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8))
    ax.set_title("dictionary atoms W[:, i] (red > 0 > blue)\nMiniBatchDictionaryLearning on the centred digits",
                 fontsize=9)
    ax.axis("off")


def _elbo_panel(ax, runs, zoom=False):
    """The ELBO per sweep of each CAVI run; ``zoom``: around the final ELBOs of the converged runs."""
    for name, post in runs.items():
        ax.plot(range(len(post.history)), post.history, marker=".", ms=3, lw=1, label=name)
    if zoom:
        finals = [post.history[-1] for post in runs.values() if post.converged] or [runs["sequential"].history[-1]]
        best, low = max(finals), min(finals)
        span = max(best - low, 1.0)
        ax.set_ylim(low - 2 * span, best + 0.5 * span)
    else:
        best = max(max(post.history) for post in runs.values())
        low = min(min(post.history[2:], default=best) for post in runs.values())
        span = max(best - low, 1.0)
        ax.set_ylim(low - 0.05 * span, best + 0.05 * span)  # from sweep 2 on: the random start is far below
    ax.set_xlabel("sweep")
    ax.set_ylabel("ELBO (nats)")
    ax.set_title("the same, zoomed on the final ELBOs of the converged runs" if zoom
                 else "CAVI: ELBO per sweep by schedule", fontsize=9)
    ax.legend(fontsize=8)


def _exact_panels(ax_marg, ax_gap, ax_image, ax_joint, W, cmap, p, q, gap_img, image, pair, joint, q_pair):
    """The panels of (b) and (c): marginals, KL gaps, the image of (c) with its two atoms, the pair's joint."""
    m = W.shape[1]
    i, j = pair
    ax = ax_marg
    ax.scatter(p.ravel(), q.ravel(), s=4, alpha=0.4)
    ax.plot([0, 1], [0, 1], color="k", lw=0.8)
    ax.set_xlabel("exact p(h_i = 1 | v)")
    ax.set_ylabel("mean field q(h_i = 1)")
    ax.set_title(f"marginals, {p.shape[0]} images x {m} units", fontsize=9)

    ax = ax_gap
    ax.hist(gap_img, bins=40, color="C3")
    ax.set_yscale("log")
    ax.set_xlabel("KL(q || p(h | v)) = log p(v) - ELBO (nats)")
    ax.set_ylabel("images")
    ax.set_title(f"per-image KL gap of the sequential mean field (total {gap_img.sum():.2f} nats)", fontsize=9)

    ax = ax_image
    lim = max(np.abs(image).max(), np.abs(W[:, [i, j]]).max())
    ax.imshow(mosaic(np.stack([image, W[:, i], W[:, j]]), cols=3), cmap=cmap, vmin=-lim, vmax=lim,
              interpolation="nearest")
    ax.set_title(f"explaining away: the image of (c) (centred), atom {i}, atom {j}", fontsize=9)
    ax.axis("off")

    ax = ax_joint
    labels = ["(0,0)", "(0,1)", "(1,0)", "(1,1)"]
    exact = joint.ravel()
    qi, qj = q_pair
    mf = np.array([(1 - qi) * (1 - qj), (1 - qi) * qj, qi * (1 - qj), qi * qj])
    pos = np.arange(4)
    ax.bar(pos - 0.2, exact, 0.4, label="exact p(h_i, h_j | v)")
    ax.bar(pos + 0.2, mf, 0.4, label="mean field q_i q_j")
    ax.set_xticks(pos, labels)
    ax.set_xlabel(f"(h{i}, h{j})")
    ax.set_ylabel("probability")
    ax.set_title("the pair's joint: exact vs mean field", fontsize=9)
    ax.legend(fontsize=8)


def _recon_panel(ax, images, recon, cmap):
    """The images, each above its reconstruction W ĥ, in rows of four."""
    lim = max(np.abs(images).max(), np.abs(recon).max())
    rows = [block for r in range(0, len(images), 4) for block in (images[r:r + 4], recon[r:r + 4])]
    ax.imshow(mosaic(np.concatenate(rows), cols=4), cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_title(f"the first {len(images)} images (centred), each above W q,\n"
                 "its reconstruction by the sequential mean field", fontsize=9)
    ax.axis("off")


if __name__ == "__main__":
    main()
