"""GMM EM and Bayesian GMM CAVI at scale: in memory vs streamed from a ``.npy`` memory map,
1 process vs 2 (gloo, ``distributed=True``), against scikit-learn's ``GaussianMixture`` /
``BayesianGaussianMixture`` (issue 18; docs/benchmarks.md, docs/streaming.md).

Every case runs in its own subprocess, so its peak resident memory (``ru_maxrss``) is its
own; the data are written once to a ``.npy`` file in a temp dir (in chunks).  Each fit
makes the same number of passes over the data (``--passes``: EM iterations, CAVI sweeps,
stream epochs; ``tol=0``), from the same starting means.  "set-up" is what is not the
passes (compile, analysis, table building, the first call; for a stream, the compiles
per batch size and the evaluation pass are in the stream's own columns).

    python benchmarks/scale.py                 # N = 10^7, D = 10, K = 8
    python benchmarks/scale.py --n 1000000
    python benchmarks/scale.py --quick         # N = 10^5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_common_args, fmt_ratio, fmt_seconds, markdown_table, source_state, start  # noqa: E402

D, K = 10, 8


def _write_data(path, n, seed=0, chunk=1_000_000):
    """``n`` rows of a K-component mixture in D dims, written chunk by chunk to ``path``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 4.0, size=(K, D))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, D))
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        z = rng.integers(0, K, size=m)
        out[i:i + m] = means[z] + rng.normal(size=(m, D))
    out.flush()
    return means


# ------------------------------------------------------------------------ one case (subprocess)
def _model():
    import torch
    import ppl
    import ppl.distributions as dist
    from ppl.distributions import constraints

    @ppl.model
    def gmm(x, K=K):
        N, Dx = x.shape
        w = ppl.param("weights", torch.ones(K, dtype=x.dtype) / K, constraint=constraints.simplex)
        loc = ppl.param("loc", torch.zeros(K, Dx, dtype=x.dtype))
        cov = ppl.param("cov", torch.eye(Dx, dtype=x.dtype).repeat(K, 1, 1), constraint=constraints.positive_definite)
        with ppl.plate("data", N):
            z = ppl.sample("z", dist.Categorical(w))
            ppl.sample("obs", dist.MultivariateNormal(loc[z], covariance_matrix=cov[z]), obs=x)
    return gmm


def _priors(path):
    """The Bayesian GMM's priors from streamed moments (scikit-learn's defaults: m0 = mean,
    W0⁻¹ = covariance, ν0 = D, β0 = 1, α0 = 1/K)."""
    import numpy as np
    import torch

    arr = np.load(path, mmap_mode="r")
    s1, s2, n = np.zeros(D), np.zeros((D, D)), 0
    for i in range(0, arr.shape[0], 500_000):
        c = np.asarray(arr[i:i + 500_000])
        s1 += c.sum(0)
        s2 += c.T @ c
        n += len(c)
    mean = s1 / n
    cov = (s2 - n * np.outer(mean, mean)) / (n - 1)
    f = lambda a: torch.as_tensor(a, dtype=torch.float64)
    return {"K": K, "alpha0": 1.0 / K, "beta0": 1.0, "m0": f(mean), "nu0": float(D), "W0": f(np.linalg.inv(cov))}


def _case(kind, path, passes, batch, init_path, rank=0, world=1):
    import numpy as np
    import torch
    import ppl
    from ppl.models.mixtures import bayesian_gmm

    from _common import limit_threads

    limit_threads(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    init = {"loc": torch.as_tensor(np.load(init_path))}
    gmm = _model()
    t0 = time.perf_counter()
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind.startswith("em"):
            if kind == "em_stream":
                post = ppl.infer_stream(gmm, ppl.stream_npy(path, batch_size=batch), method="em", init=init,
                                        epochs=passes)
                s = post.diagnostics["stream"]
                out["setup"] = time.perf_counter() - t0 - s["seconds"] + s["setup_seconds"]
            else:
                arr = np.load(path, mmap_mode="r")
                x = torch.as_tensor(np.array(arr[rank::world]))
                post = ppl.infer(gmm, {"x": x}, method="em", init=init, max_iter=passes, tol=0,
                                 distributed=world > 1, marginals=False, map=False)
                out["setup"] = time.perf_counter() - t0 - post.diagnostics["seconds_per_iteration"] * (passes + 1)
            out["value"] = post.log_evidence / (np.load(path, mmap_mode="r").shape[0])
        elif kind.startswith("cavi"):
            priors = _priors(path)
            if kind == "cavi_stream":
                post = ppl.infer_stream(bayesian_gmm, ppl.stream_npy(path, batch_size=batch), priors, method="cavi",
                                        epochs=passes, init={"loc": init["loc"]}, seed=0)
                s = post.diagnostics["stream"]
                out["setup"] = time.perf_counter() - t0 - s["seconds"] + s["setup_seconds"]
            else:
                arr = np.load(path, mmap_mode="r")
                x = torch.as_tensor(np.array(arr[rank::world]))
                post = ppl.infer(bayesian_gmm, {**priors, "x": x}, method="cavi", max_iter=passes, tol=0, seed=0,
                                 init={"loc": init["loc"]}, distributed=world > 1)
                per = post.diagnostics.get("seconds_per_iteration")
                out["setup"] = None if per is None else time.perf_counter() - t0 - per * passes
            out["value"] = post.elbo / (np.load(path, mmap_mode="r").shape[0])
        else:  # scikit-learn
            from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

            x = np.load(path)
            t0 = time.perf_counter()
            if kind == "sk_em":
                m = GaussianMixture(K, max_iter=passes, tol=0, means_init=init["loc"].numpy(), reg_covar=1e-6).fit(x)
                out["value"] = float(m.score(x))
            else:
                m = BayesianGaussianMixture(n_components=K, max_iter=passes, tol=0, reg_covar=1e-6,
                                            mean_precision_prior=1.0, random_state=0).fit(x)
                out["value"] = None           # its lower_bound_ omits constants: not comparable
            out["setup"] = None
    out["seconds"] = time.perf_counter() - t0
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["base_mib"] = base
    return out


def _rank_main(rank, world, kind, path, passes, batch, init_path, port, queue):
    import torch.distributed as tdist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    out = _case(kind, path, passes, batch, init_path, rank, world)
    queue.put((rank, out))
    tdist.destroy_process_group()


def _two_processes(kind, path, passes, batch, init_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    procs = [ctx.Process(target=_rank_main, args=(r, 2, kind, path, passes, batch, init_path, port, queue))
             for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get() for _ in procs)
    for p in procs:
        p.join()
    out = dict(results[0])
    out["seconds"] = max(r["seconds"] for r in results.values())     # the slower rank, after its imports
    out["peak_mib"] = sum(r["peak_mib"] for r in results.values())   # both ranks together
    out["base_mib"] = sum(r["base_mib"] for r in results.values())
    return out


# ------------------------------------------------------------------------ driver
def _run(kind, path, passes, batch, init_path, procs=1):
    cmd = [sys.executable, os.path.abspath(__file__), "--case", kind, "--path", path, "--passes", str(passes),
           "--batch", str(batch), "--init", init_path, "--procs", str(procs)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--quick", action="store_true", help="N = 10^5")
    p.add_argument("--passes", type=int, default=5, help="EM iterations / CAVI sweeps / stream epochs")
    p.add_argument("--batch", type=int, default=100_000, help="rows per stream batch")
    p.add_argument("--sklearn-max-n", type=int, default=10_000_000, help="largest N scikit-learn is run on")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--init", help=argparse.SUPPRESS)
    p.add_argument("--procs", type=int, default=1, help=argparse.SUPPRESS)
    add_common_args(p)
    args = p.parse_args()
    if args.case:
        fn = _two_processes if args.procs == 2 else _case
        print(json.dumps(fn(args.case, args.path, args.passes, args.batch, args.init)))
        return
    n = 100_000 if args.quick else args.n
    _, info = start(args, ["sklearn"])
    print(f"source: {source_state()}; N = {n:,}, D = {D}, K = {K}, {args.passes} passes, stream batches of "
          f"{args.batch:,}; data {n * D * 8 / 2**20:.0f} MiB\n")
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.npy")
        means = _write_data(path, n)
        init_path = os.path.join(tmp, "init.npy")
        np.save(init_path, means + 0.5)
        rows = []
        for model, prefix, peer in (("GMM EM", "em", "sk_em"), ("Bayesian GMM CAVI", "cavi", "sk_bgmm")):
            cases = [("in memory, 1 process", f"{prefix}_memory", 1), ("stream (.npy memmap), 1 process",
                                                                       f"{prefix}_stream", 1),
                     ("in memory, 2 processes (gloo)", f"{prefix}_memory", 2)]
            peer_res = _run(peer, path, args.passes, args.batch, init_path) if n <= args.sklearn_max_n else None
            for label, kind, procs in cases:
                r = _run(kind, path, args.passes, args.batch, init_path, procs)
                rows.append(_row(model, label, r, peer_res))
                print(rows[-1], flush=True)
            if peer_res is not None:
                rows.append(_row(model, "scikit-learn (in memory)", peer_res, peer_res))
        print()
        print(markdown_table(rows, ["model", "run", "total", "set-up", "passes", "peak memory", "of which the fit", "bound / N",
                                    "speed vs scikit-learn", "memory vs scikit-learn"],
                             title=f"N = {n:,}, D = {D}, K = {K}, {args.passes} passes",
                             notes=["total: wall seconds of the fit, in seconds (2 processes: the slower rank, "
                                    "from its ppl.infer call to its result)",
                                    "set-up: compile, analysis, tables, first call (— where not separable)",
                                    "peak memory: ru_maxrss of the fitting process (2 processes: the sum); of "
                                    "which the fit: less the process after its imports (torch, ppl, sklearn)",
                                    "bound / N: EM log p(x; θ)/N, CAVI ELBO/N (scikit-learn: its lower_bound_, "
                                    "per point for EM; its BGMM bound omits constants: n/a)",
                                    "ratios > 1: ppl faster / smaller than scikit-learn (memory: of the fit)"]))


def _row(model, label, r, peer):
    if "error" in r:
        return {"model": model, "run": label, "total": f"error: {r['error'][:60]}"}
    setup = r.get("setup")
    row = {"model": model, "run": label, "total": fmt_seconds(r["seconds"]),
           "set-up": "—" if setup is None else fmt_seconds(max(setup, 0.0)),
           "passes": "—" if setup is None else fmt_seconds(r["seconds"] - max(setup, 0.0)),
           "peak memory": f"{r['peak_mib']:.0f} MiB", "of which the fit": f"{r['peak_mib'] - r['base_mib']:.0f} MiB",
           "bound / N": "n/a" if r["value"] is None else f"{r['value']:.4f}"}
    if peer is not None and "error" not in peer:
        row["speed vs scikit-learn"] = fmt_ratio(peer["seconds"] / r["seconds"])
        row["memory vs scikit-learn"] = fmt_ratio((peer["peak_mib"] - peer["base_mib"])
                                                  / max(r["peak_mib"] - r["base_mib"], 1.0))
    return row


if __name__ == "__main__":
    main()
