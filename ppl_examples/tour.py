"""The tour (``make demo``): one model per backend family, on real bundled data.

Every part runs offline on data that ships with scikit-learn or pgmpy, prints its analysis
(what is tractable and why) and its results, and writes its plots under ``--out``
(default ``demo_output/``):

1. **Exact inference** (``method="exact"``): the ALARM network (37 nodes, from pgmpy's
   bundled bnlearn networks): marginals given evidence, the MAP explanation, and
   ``ppl.compare`` of exact against the other applicable backends
   (``ppl_examples/alarm.py``).
2. **Every backend on one model**: a Gaussian mixture on iris with ``ppl.param`` weights,
   means and scales and a latent class per flower.  ``method="auto"`` says what it would
   pick; then ``ppl.compare`` runs exact (the posterior of z at the starting θ), EM,
   variational EM (CAVI with ``learn_params=True``), SVI (z summed out, θ by gradient) and
   hard EM (MAP with ``learn_params=True``) from the same θ_0, and lays out bound, log
   evidence, time, iterations and convergence side by side.
3. **Sparse coding, binary and Laplace, side by side** on small slices (analysis and
   ``ppl.compare``: exact vs CAVI and its KL gap for binary codes; MAP vs a mean-field Gaussian
   guide by SVI for Laplace codes), then
   **mean field, discrete and continuous**: binary sparse coding of digits with CAVI against
   the exact posterior (the KL gap and explaining away;
   ``ppl_examples/cavi_binary_sparse_coding.py``), and the Bayesian GMM with Normal-Wishart
   components by CAVI against scikit-learn's ``BayesianGaussianMixture``
   (``ppl_examples/cavi_bgmm.py``).
4. **MAP and sparse coding**: Laplace-prior codes of natural-image patches and dictionary
   learning (``ppl_examples/map_sparse_coding.py``, short setting).
5. **SVI with an amortised guide**: the VAE's analysis and a comparison of the encoder with
   a free Gaussian guide per image on 200 digits, then a variational autoencoder on digits
   (``ppl_examples/svi_vae.py``, short setting).
6. **How far to trust an answer**: a regression of diabetes progression on body-mass index
   (unscaled, so intercept and slope are strongly correlated).  ``method="auto"`` tries CAVI
   first; its mean field is exact in the means but underestimates the sds (KL(q‖p) is
   mode-seeking), its verdict says so, and auto escalates to the Laplace approximation,
   exact for this Gaussian posterior; every attempt and why it was left is printed.

Run: ``python ppl_examples/tour.py`` (``--quick`` for a smoke run; ``--parts 1,2`` for a few
parts).  It takes several minutes (parts 3 and 5, the CAVI, MAP and VAE runs, the most);
the time of each part is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import pyro
import torch

import ppl

try:  # run as a script (python ppl_examples/tour.py) or as a module
    import alarm
    import cavi_bgmm
    import cavi_binary_sparse_coding
    import em_gmm
    import map_sparse_coding
    import svi_vae
    from _threads import limit_threads
except ImportError:  # pragma: no cover
    from ppl_examples import alarm, cavi_bgmm, cavi_binary_sparse_coding, em_gmm, map_sparse_coding, svi_vae
    from ppl_examples._threads import limit_threads

PARTS = ("1", "2", "3", "4", "5", "6")


def banner(title: str) -> None:
    print("\n" + "=" * 100 + f"\n{title}\n" + "=" * 100, flush=True)


def every_backend(out: str, quick: bool) -> None:
    """Part 2: one mixture with params on iris, every backend from the same θ_0."""
    X, _ = em_gmm.load("iris")
    data = {"x": torch.as_tensor(X), "K": 3}
    model = em_gmm.gmm_diag
    print(ppl.analyze(model, data))
    steps, sweeps = (100, 30) if quick else (400, 200)
    methods = ["exact", ("em", {"max_iter": 200}), ("cavi", {"learn_params": True, "max_iter": sweeps}),
               ("svi", {"num_steps": steps, "lr": 0.05, "seed": 0}), ("map", {"learn_params": True})]
    theta0 = {"weights": torch.full((3,), 1 / 3, dtype=torch.float64), "loc": data["x"][[0, 60, 120]].clone(),
              "scale": torch.ones(3, 4, dtype=torch.float64)}          # one flower of each species as the means

    constraints = {"weights": ppl.distributions.constraints.simplex, "loc": ppl.distributions.constraints.real,
                   "scale": ppl.distributions.constraints.positive}

    def start_at_theta0():
        pyro.clear_param_store()
        for name, value in theta0.items():
            pyro.param(name, value.clone(), constraint=constraints[name])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)   # reported in the table
        start_at_theta0()
        auto = ppl.infer(model, data)
        print(f"method='auto' picks {auto.method!r}: {auto.diagnostics['routing']['reason']}\n")
        start_at_theta0()
        table = ppl.compare(model, data, methods=methods)
    print(table)
    print("\nexact: the posterior of z at θ_0 (nothing learned, so its log evidence is that of θ_0); em, cavi "
          "(variational EM), svi and map (hard EM) learn θ from θ_0: a higher bound is a better fit.")
    if hasattr(table, "plot"):
        paths = table.plot(os.path.join(out, "tour_gmm"))
        print("wrote " + ", ".join(str(p) for p in paths))


def analysed_comparison(title, model, data, methods) -> None:
    """Print a model's analysis and ``ppl.compare`` of ``methods`` on it (with auto's choice)."""
    print(f"--- {title}: ppl.analyze and ppl.compare ---")
    print(ppl.analyze(model, data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        print(ppl.compare(model, data, methods=methods))
    print()


def sparse_coding_views(quick: bool) -> None:
    """Parts 3 and 4's models on small slices: binary codes (exact vs CAVI: the KL gap) and
    Laplace codes (MAP vs a mean-field Gaussian guide by SVI)."""
    x_all, x = cavi_binary_sparse_coding.load(20)
    w, _ = cavi_binary_sparse_coding.dictionary(x_all, 8)
    data = {"v": torch.from_numpy(x), "W": torch.from_numpy(w), "b": torch.full((8,), -1.0, dtype=torch.float64),
            "beta": 4.0}
    analysed_comparison("binary sparse coding, 20 digits, 8 units", cavi_binary_sparse_coding.binary_sparse_coding,
                        data, ["exact", ("cavi", {"seed": 0})])
    patches = torch.from_numpy(map_sparse_coding.load_patches(200))
    dictionary = torch.from_numpy(map_sparse_coding.random_dictionary(patches.numpy(), 16)).T.contiguous()
    analysed_comparison("Laplace sparse coding, 200 patches, 16 atoms", map_sparse_coding.sparse_coding,
                        {"x": patches, "W": dictionary, "alpha": 0.1},
                        ["map", ("svi", {"guide": "normal", "num_steps": 100 if quick else 400, "seed": 0,
                                         "dtype": torch.float64})])


def vae_views(quick: bool) -> None:
    """Part 5's model: its analysis, and a comparison of an amortised guide (the encoder)
    with a free mean-field Gaussian guide per image, on 200 digits."""
    x, _, _, _ = svi_vae.load(1597, 0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder, decoder = svi_vae.Encoder(2, 32), svi_vae.Decoder(2, 32)
    vae, guide = svi_vae.make_vae(encoder, decoder, 2)
    steps = 150 if quick else 600
    pyro.clear_param_store()
    analysed_comparison("VAE, 200 digits, 2 latent dims", vae, {"x": x},
                        [("svi", {"guide": guide, "num_steps": steps, "lr": 0.01, "seed": 0}),
                         ("svi", {"guide": "normal", "num_steps": steps, "lr": 0.01, "seed": 0})])


def trust_views() -> None:
    """Part 6: auto escalates from a mean field that is too narrow to an exact Gaussian."""
    from sklearn.datasets import load_diabetes

    import ppl.distributions as dist

    f64 = torch.float64
    d = load_diabetes(scaled=False)
    x = torch.tensor(d.data[:, 2], dtype=f64)            # body-mass index, kg/m^2
    y = torch.tensor(d.target, dtype=f64)                # disease progression one year on

    @ppl.model
    def progression(x, y):
        alpha = ppl.sample("alpha", dist.Normal(torch.tensor(0.0, dtype=f64), 100.0))
        beta = ppl.sample("beta", dist.Normal(torch.tensor(0.0, dtype=f64), 10.0))
        with ppl.plate("patients", len(y)):
            ppl.sample("y", dist.Normal(alpha + beta * x, 60.0), obs=y)

    data = {"x": x, "y": y}
    print(ppl.analyze(progression, data))
    with warnings.catch_warnings():  # the attempts auto leaves behind warn; their reasons are printed below
        warnings.simplefilter("ignore", ppl.errors.TrustWarning)
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        post = ppl.infer(progression, data, seed=0)
    print("\nmethod='auto' tried, in turn:")
    for a in post.diagnostics["routing"]["attempts"]:
        left = a["left_because"] or "kept: its verdict is " + a["verdict"]
        print(f"  {a['method']:<10} {a['seconds']:6.2f} s  {left}")
    print(f"\nthe answer ({post.method}):")
    print(post.summary())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run (1-6)")
    parser.add_argument("--out", default="demo_output/", help="directory of the PNGs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="smoke run: every part in its shortest setting")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; the parts are {', '.join(PARTS)}")
    os.makedirs(args.out, exist_ok=True)
    with limit_threads(args.threads):
        _tour(args, parts)


def _tour(args, parts) -> None:
    quick = ["--quick"] if args.quick else []
    start = time.perf_counter()
    times = {}

    def run(part, title, fn):
        if part not in parts:
            return
        banner(f"{part}. {title}")
        t = time.perf_counter()
        fn()
        times[f"{part}. {title}"] = time.perf_counter() - t

    run("1", "Exact inference: the ALARM network", lambda: alarm.main(["--top", "5"]))
    run("2", "Every backend on one model: a Gaussian mixture with params on iris",
        lambda: every_backend(args.out, args.quick))
    run("3", "Sparse coding, binary and Laplace: analysis and comparison on small slices",
        lambda: sparse_coding_views(args.quick))
    run("3", "Mean field: binary sparse coding of digits (CAVI vs exact)",
        lambda: cavi_binary_sparse_coding.main(["--out", args.out] + quick))
    run("3", "Mean field: the Bayesian GMM on iris and wine (CAVI vs scikit-learn)",
        lambda: cavi_bgmm.main(["--out", args.out]))
    run("4", "MAP: sparse coding of image patches and dictionary learning",
        lambda: map_sparse_coding.main(["--out", args.out, "--patches", "2000", "--rounds", "6"] + quick))
    run("5", "SVI: the VAE's analysis, amortised vs free guides", lambda: vae_views(args.quick))
    run("5", "SVI: a variational autoencoder on digits",
        lambda: svi_vae.main(["--out", args.out, "--epochs", "25"] + quick))
    run("6", "How far to trust an answer: auto escalates from CAVI to Laplace", trust_views)
    banner("Tour done")
    for name, seconds in times.items():
        print(f"  {seconds:7.1f} s  {name}")
    print(f"  {time.perf_counter() - start:7.1f} s  in all; plots in {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
