"""Write the documentation's pictures into ``docs/images/`` (``make docs`` runs this
before ``mkdocs build``; the PNGs are not kept in git).

Each picture comes from the example its page shows, with the same code and data:

- ``render_gmm.png`` (docs/render.md): the factor graph of the Gaussian mixture,
  ``ppl.render(gmm, {"x": X}, path, engine="matplotlib")``;
- ``quickstart_z.png`` (docs/quickstart.md): ``post.plot("z", path)`` of the quickstart
  mixture's exact posterior;
- ``compare_mixture_bound.png``, ``compare_mixture_shift.png``, ``compare_mixture_z.png``
  (docs/compare.md): ``ppl.compare(mixture, data, methods=[...]).plot(prefix)``;
- ``quickstart_ppc.png`` (docs/quickstart.md): a posterior predictive check of the
  quickstart's regression ``line``: the observed points against replicated data;
- ``tutorial07_beta.png``, ``tutorial07_ppc.png``, ``tutorial07_render.png``
  (docs/tutorials/07-keep-predict-plot.md): the tutorial's own code is run, and the
  figures it leaves in ``beta_figure`` and ``ppc_figure`` and the drawing in ``drawing``
  are saved.

Files are written to a scratch folder beside the output and moved into place one by
one, so a build reading the folder never sees half a file.

Run: ``python ppl_examples/docs_images.py [--out docs/images]``.  About 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

import ppl
import ppl.distributions as dist
from ppl.posterior.plotting import figure

try:  # run as a script (python ppl_examples/docs_images.py) or as a module
    import tutorial_notebook
    from _threads import limit_threads
except ImportError:  # pragma: no cover
    from ppl_examples import tutorial_notebook
    from ppl_examples._threads import limit_threads

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorials" / "07-keep-predict-plot.md"

#: Every file :func:`main` writes, by page.
IMAGES = {
    "render.md": ["render_gmm.png"],
    "quickstart.md": ["quickstart_z.png", "quickstart_ppc.png"],
    "compare.md": ["compare_mixture_bound.png", "compare_mixture_shift.png", "compare_mixture_z.png"],
    "tutorials/07-keep-predict-plot.md": ["tutorial07_beta.png", "tutorial07_ppc.png", "tutorial07_render.png"],
}


# ------------------------------------------------------------------ the pages' models
@ppl.model
def gmm(x, K=3):
    """docs/render.md's mixture: Dirichlet weights, a Normal location per component."""
    N, D = x.shape
    weights = ppl.sample("weights", dist.Dirichlet(torch.ones(K)))
    with ppl.plate("components", K):
        loc = ppl.sample("loc", dist.Normal(torch.zeros(D), 10.0).to_event(1))
    with ppl.plate("data", N):
        z = ppl.sample("z", dist.Categorical(weights))
        ppl.sample("obs", dist.Normal(loc[z], 1.0).to_event(1), obs=x)


@ppl.model
def mixture(x, K=3):
    """docs/quickstart.md's first model."""
    weights = ppl.param("weights", torch.ones(K) / K, constraint=dist.constraints.simplex)
    locs = torch.tensor([-2.0, 0.0, 2.0])
    shift = ppl.sample("shift", dist.Bernoulli(0.5))
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Categorical(weights))
        ppl.sample("obs", dist.Normal(locs[z] + shift, 1.0), obs=x)


MIXTURE_DATA = {"x": [-2.1, -0.3, 0.4, 2.2, 1.9]}


@ppl.model
def line(x, y=None):
    """docs/quickstart.md's regression (Predictions)."""
    w = ppl.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with ppl.plate("points", len(x)):
        ppl.sample("y", dist.Normal(w[..., 0] + w[..., 1] * x, 0.5), obs=y)


# ------------------------------------------------------------------ the pictures
def render_picture(out: Path) -> list:
    """docs/render.md: the mixture's factor graph (matplotlib engine: Graphviz may be absent)."""
    X = torch.randn(150, 2, generator=torch.Generator().manual_seed(0))
    return [ppl.render(gmm, {"x": X}, out / "render_gmm.png", engine="matplotlib")]


def quickstart_marginal(out: Path) -> list:
    """docs/quickstart.md: the exact posterior marginal of the labels z."""
    post = ppl.infer(mixture, MIXTURE_DATA, method="exact")
    return [post.plot("z", out / "quickstart_z.png")]


def compare_pictures(out: Path) -> list:
    """docs/compare.md: bound traces and marginals of exact, EM, CAVI and SVI on the mixture."""
    methods = ["exact", "em", ("cavi", {"seed": 0}), ("svi", {"num_steps": 300, "seed": 0})]
    with warnings.catch_warnings():   # CAVI's unreliable verdict is what the picture shows
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        warnings.simplefilter("ignore", ppl.TrustWarning)
        table = ppl.compare(mixture, MIXTURE_DATA, methods=methods)
    return table.plot(out / "compare_mixture")


def quickstart_ppc(out: Path) -> list:
    """docs/quickstart.md: the observed y of ``line`` against 200 replicated data sets
    (the posterior predictive at the fitted x) and the predictive band over a grid of x."""
    x = torch.tensor([-1.0, -0.2, 0.3, 0.9, 1.4, 2.0])
    y = 0.3 + 1.2 * x
    fit = ppl.infer(line, {"x": x, "y": y}, method="cavi", seed=0)
    replicated = fit.predictive(200, seed=0)["y"]                          # (200, 6)
    grid = torch.linspace(-1.5, 4.0, 56)
    band = ppl.predict(fit, 2000, data={"x": grid}, seed=1)["y"]            # (2000, 56)
    fig = figure(figsize=(7.0, 3.6))
    ax = fig.subplots()
    ax.fill_between(grid.tolist(), band.quantile(0.05, dim=0).tolist(), band.quantile(0.95, dim=0).tolist(),
                    color="tab:blue", alpha=0.2, label="90% posterior predictive")
    ax.plot(grid.tolist(), band.mean(0).tolist(), color="tab:blue", label="predictive mean")
    jitter = 0.04 * torch.randn(replicated.shape, generator=torch.Generator().manual_seed(2))
    ax.scatter((x + jitter).reshape(-1).tolist(), replicated.reshape(-1).tolist(), s=4, color="tab:orange",
               alpha=0.3, label="200 replicated data sets (x jittered)")
    ax.scatter(x.tolist(), y.tolist(), s=30, color="black", zorder=3, label="observed y")
    ax.set(xlabel="x", ylabel="y", title="posterior predictive check of line (method='cavi')")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = out / "quickstart_ppc.png"
    fig.savefig(path, dpi=100)
    return [path]


def tutorial_pictures(out: Path) -> list:
    """docs/tutorials/07-keep-predict-plot.md: run the page's code, save what it displays."""
    nb = tutorial_notebook.notebook(TUTORIAL.read_text(encoding="utf-8"))
    namespace = {"__name__": "tutorial_07"}
    here = os.getcwd()
    # anything the page writes lands in a scratch folder; what it prints is the page's business
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
        os.chdir(scratch)
        try:
            for i, source in enumerate(tutorial_notebook.code_cells(nb)):
                exec(compile(source, f"{TUTORIAL.name}[cell {i}]", "exec"), namespace)
        finally:
            os.chdir(here)
    namespace["beta_figure"].savefig(out / "tutorial07_beta.png", dpi=100)
    namespace["ppc_figure"].savefig(out / "tutorial07_ppc.png", dpi=100)
    namespace["drawing"].save(out / "tutorial07_render.png")
    return [out / "tutorial07_beta.png", out / "tutorial07_ppc.png", out / "tutorial07_render.png"]


PICTURES = (render_picture, quickstart_marginal, compare_pictures, quickstart_ppc, tutorial_pictures)


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="folder of the PNGs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with limit_threads(args.threads), tempfile.TemporaryDirectory(dir=out, prefix=".scratch-") as scratch:
        for make in PICTURES:
            start = time.perf_counter()
            paths = [Path(p) for p in make(Path(scratch))]
            for path in paths:
                os.replace(path, out / path.name)
                written.append(out / path.name)
            print(f"{time.perf_counter() - start:5.1f} s  {make.__name__}: " + ", ".join(p.name for p in paths),
                  flush=True)
    expected = {name for names in IMAGES.values() for name in names}
    missing = expected - {p.name for p in written}
    if missing:
        raise RuntimeError(f"docs_images wrote no {sorted(missing)}")
    return written


if __name__ == "__main__":
    main()
