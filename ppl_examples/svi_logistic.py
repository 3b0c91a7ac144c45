"""Bayesian logistic regression on the breast-cancer data by stochastic variational inference.

The Wisconsin diagnostic breast-cancer data ship with scikit-learn (569 tumours, 30
measurements of cell nuclei, malignant or benign), so this runs offline.  The rows are
split into a training and a test set with a fixed seed and the features are standardised
with the training set's means and deviations.  The model is

    w ~ Normal(0, 1)  (D weights, one event),   b ~ Normal(0, 5),
    y_n ~ Bernoulli(logits = x_n · w + b)        for the rows n of the data plate,

with ``X`` a model argument and ``y`` the observed site (``data={"X": ..., "y": ...}``).
For each guide we run ``ppl.infer(model, data, method="svi", guide=...)``:

- ``guide="normal"``: AutoNormal, a mean-field Gaussian (independent weights);
- ``guide="mvn"``: a full-rank Gaussian over all 31 latents;
- ``guide="mvn"`` again with ``subsample_size=B``: minibatches of B training rows per
  step, the likelihood scaled by N / B (unbiased ELBO gradients).

and print the final ELBO (re-estimated on the full training set with many draws) with its
standard error, the importance-weighted (IWAE) bound, the PSIS k̂ of the guide and its
reading, steps, seconds, the posterior mean and sd of the first few weights, and the
held-out accuracy twice: with the posterior-mean weights (a plug-in classifier), and with
the posterior predictive p(y = 1 | x) = E_q[sigmoid(x · w + b)] averaged over
``post.sample(n)`` draws; also the held-out log loss of the predictive.  scikit-learn's
``LogisticRegression(C=1)`` minimises ½‖w‖² + Σ log-loss with an unpenalised intercept:
the MAP estimate under the same N(0, 1) prior (with a flat prior on b), printed alongside.

What to expect: the features are strongly correlated (radius, perimeter and area
measure nearly the same thing), so the posterior of w is far from independent.  The mean
field guide then underestimates the posterior sds and its ELBO lies well below the full
rank guide's; PSIS k̂ flags it as unreliable, while the full-rank guide's k̂ is near the
usable range.  Classification accuracy barely depends on this: all methods classify the
held-out tumours about equally well.

The step size decays geometrically (Adam, lr → lr · lr_decay over the run: the backend's
``lr_decay`` option).  The model computes ``x · w`` as
``(X * w).sum(-1)`` rather than ``X @ w``, so that a batch of weight draws (shape
``(S, 1, D)`` under Pyro's vectorised particle and draw plates) broadcasts over the rows:
the final ELBO estimate and ``post.sample`` then draw all particles at once.

Run: ``python ppl_examples/svi_logistic.py`` (``--steps 50`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import pyro
import torch

import ppl
import ppl.distributions as dist

try:  # run as a script (python ppl_examples/...) or as a module
    from _threads import limit_threads
except ImportError:  # pragma: no cover
    from ppl_examples._threads import limit_threads


@ppl.model
def logistic(X):
    """Bayesian logistic regression: N(0, 1) weights, N(0, 5) bias, Bernoulli labels ``y``."""
    D = X.shape[-1]
    w = ppl.sample("w", dist.Normal(torch.zeros(D, dtype=X.dtype), 1.0).to_event(1))
    b = ppl.sample("b", dist.Normal(torch.tensor(0.0, dtype=X.dtype), 5.0))
    with ppl.plate("data", len(X)):
        logits = (X * w).sum(-1) + b          # X @ w + b, broadcasting over a batch of w draws
        ppl.sample("y", dist.Bernoulli(logits=logits))


def load(test_size, seed):
    """Standardised train/test features (float32 tensors), labels (1 = benign) and feature names."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    bunch = load_breast_cancer()
    X_tr, X_te, y_tr, y_te = train_test_split(bunch.data, bunch.target, test_size=test_size, random_state=seed,
                                              stratify=bunch.target)
    scaler = StandardScaler().fit(X_tr)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return (as_t(scaler.transform(X_tr)), as_t(y_tr), as_t(scaler.transform(X_te)), as_t(y_te),
            list(bunch.feature_names))


def held_out(p, y):
    """Accuracy and mean log loss (nats) of predicted probabilities ``p`` of y = 1."""
    p = p.double().clamp(1e-12, 1 - 1e-12)
    y = y.double()
    acc = float(((p > 0.5).double() == y).double().mean())
    logloss = float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())
    return acc, logloss


def fit(data, guide, args, subsample_size=None):
    """One SVI run; returns (posterior, seconds)."""
    options = dict(guide=guide, num_steps=args.steps, lr=args.lr, lr_decay=args.lr_decay, elbo_particles=args.elbo_particles,
                   seed=args.seed, progress=False)
    if subsample_size:
        options["subsample_size"] = subsample_size
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)   # reported in the table instead
        post = ppl.infer(logistic, data, method="svi", **options)
    return post, time.perf_counter() - start


def evaluate(post, X_te, y_te, draws, seed):
    """Held-out (accuracy, log loss) with the posterior-mean weights and with the posterior predictive."""
    w_mean, b_mean = post.mean("w"), post.mean("b")
    X_te = X_te.to(w_mean.dtype)                             # the posterior is in SVI's dtype (float64)
    plug_in = held_out(torch.sigmoid(X_te @ w_mean + b_mean), y_te)
    s = post.sample(draws, seed=seed)                        # w: (draws, D), b: (draws,)
    predictive = torch.sigmoid(X_te @ s["w"].T + s["b"]).mean(-1)
    return plug_in, held_out(predictive, y_te)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="SVI steps at most (it may stop earlier, converged)")
    parser.add_argument("--lr", type=float, default=0.05, help="initial Adam step size")
    parser.add_argument("--lr-decay", type=float, default=0.1, help="the step size falls to lr * this by the last step")
    parser.add_argument("--batch", type=int, default=64, help="minibatch size of the subsampled run (0: skip it)")
    parser.add_argument("--draws", type=int, default=1000, help="posterior draws of the predictive")
    parser.add_argument("--elbo-particles", type=int, default=1000, help="draws of the final ELBO/IWAE/k-hat estimate")
    parser.add_argument("--test-size", type=float, default=0.3, help="held-out fraction of the rows")
    parser.add_argument("--show", type=int, default=6, help="weights shown in the table")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of every SVI run")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (0: the libraries' defaults)")
    args = parser.parse_args(argv)
    with limit_threads(args.threads):
        _run(args)


def _run(args):
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    X_tr, y_tr, X_te, y_te, names = load(args.test_size, args.seed)
    data = {"X": X_tr, "y": y_tr}
    N, D = X_tr.shape
    print(f"breast cancer (scikit-learn): {N + len(X_te)} tumours, {D} standardised features, y = 1 benign; "
          f"train {N} / test {len(X_te)} (stratified, seed {args.seed})")
    print(f"model: w ~ N(0, 1)^{D}, b ~ N(0, 5), y ~ Bernoulli(logits = X w + b); SVI: Adam lr {args.lr:g} -> "
          f"{args.lr * args.lr_decay:g} over {args.steps} steps, 1 particle, threads {args.threads or 'default'}\n")

    pyro.clear_param_store()
    warm = argparse.Namespace(**{**vars(args), "steps": 2, "elbo_particles": 10})
    fit(data, "normal", warm)                 # untimed: one-off start-up costs stay out of the timings below

    runs = [("mean field", "normal", None), ("full rank", "mvn", None)]
    if args.batch:
        runs.append((f"full rank, B={args.batch}", "mvn", args.batch))
    results = []
    for label, guide, batch in runs:
        post, seconds = fit(data, guide, args, subsample_size=batch)
        plug_in, predictive = evaluate(post, X_te, y_te, args.draws, args.seed)
        results.append((label, guide, post, seconds, plug_in, predictive))

    sk = LogisticRegression(C=1.0, max_iter=5000).fit(X_tr.numpy(), y_tr.numpy())
    sk_p = torch.as_tensor(sk.predict_proba(X_te.numpy())[:, 1])
    sk_acc, sk_logloss = held_out(sk_p, y_te)

    print(f"{'run':<22} {'guide':<6} {'ELBO ± se':>16} {'IWAE':>8} {'k-hat':>6} {'steps':>5} {'conv':>5} "
          f"{'s/step':>7} {'seconds':>7}   {'acc mean-w':>10} {'acc pred':>8} {'logloss':>7}")
    for label, guide, post, seconds, plug_in, predictive in results:
        d = post.diagnostics
        print(f"{label:<22} {guide:<6} {post.elbo:9.2f} ± {d['elbo_se']:4.2f} {d['iwae_bound']:8.2f} "
              f"{d['psis_khat']:6.2f} {d['num_steps']:5d} {str(bool(post.converged)):>5} "
              f"{d['seconds_per_step']:7.4f} {seconds:7.2f}   {plug_in[0]:10.3f} {predictive[0]:8.3f} "
              f"{predictive[1]:7.3f}")
    print(f"{'scikit-learn C=1 (MAP)':<22} {'-':<6} {'':>16} {'':>8} {'':>6} {'':>5} {'':>5} {'':>7} {'':>7}   "
          f"{sk_acc:10.3f} {'-':>8} {sk_logloss:7.3f}")
    print(f"(ELBO, IWAE bound and k-hat from {args.elbo_particles} guide draws on all {N} training rows; "
          f"accuracy and log loss on the {len(X_te)} test rows; predictive from {args.draws} draws)\n")

    print("PSIS k-hat readings:")
    for label, _, post, *_ in results:
        d = post.diagnostics
        extra = f" [trained on minibatches of {d['subsample_size']} rows of plate '{d['subsample_plate']}']" \
            if d["subsample_size"] else ""
        print(f"  {label:<22} {d['psis_reading']}{extra}")
    print()

    show = min(args.show, D)
    print(f"posterior mean ± sd of the first {show} weights (standardised features), next to scikit-learn's MAP:")
    print(f"  {'feature':<20} " + " ".join(f"{label:>18}" for label, *_ in results) + f" {'sklearn MAP':>12}")
    rows = [(names[i], lambda post, i=i: (post.mean("w")[i], post.variance("w")[i]), float(sk.coef_[0, i]))
            for i in range(show)]
    rows.append(("bias b", lambda post: (post.mean("b"), post.variance("b")), float(sk.intercept_[0])))
    for name, moments, sk_value in rows:
        cells = []
        for _, _, post, *_ in results:
            m, v = moments(post)
            cells.append(f"{float(m):8.3f} ± {math.sqrt(max(float(v), 0.0)):6.3f}")
        print(f"  {name:<20} " + " ".join(f"{c:>18}" for c in cells) + f" {sk_value:12.3f}")
    sd_mf = results[0][2].variance("w").sqrt()
    sd_fr = results[1][2].variance("w").sqrt()
    print(f"  median over the {D} weights of sd(mean field) / sd(full rank): {float((sd_mf / sd_fr).median()):.2f}")
    print(f"\ntotal wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
