"""SVI overhead: ``ppl.infer(model, data, method="svi")`` against plain Pyro SVI, ms per step.

``method="svi"`` runs Pyro's own ``SVI`` on the user's model; what it adds per step is its
own Python around ``svi.step`` (the model wrapper that conditions on ``data``, the
``infer_config`` handler that marks enumerated sites, the loop's bookkeeping and checks).
This script measures that against a plain Pyro loop on the same model, guide class, loss,
optimiser, data, seed and number of steps, in the same process.

Cases (``--cases``, default both):

* ``logreg``: Bayesian logistic regression on scikit-learn's breast-cancer data (569 x 30,
  standardised): ``w ~ Normal(0, 1)^30``, ``b ~ Normal(0, 5)``, ``y ~ Bernoulli(logits=Xw + b)``.
  AutoNormal, ``Trace_ELBO``.
* ``gmm``: a K = 3 Gaussian mixture on iris (150 x 4, standardised), the assignment ``z``
  summed out: ``weights ~ Dirichlet(1)``, per component ``locs ~ Normal(0, 2)^4`` and
  ``scales ~ LogNormal(0, 1)^4``, ``z ~ Categorical(weights)``, ``x ~ Normal(locs[z],
  scales[z])``.  AutoNormal over the continuous sites (``poutine.block(model, hide=["z"])``),
  ``TraceEnum_ELBO(max_plate_nesting=1)`` on ``config_enumerate(model)``.

**Plain Pyro** (as a Pyro user writes it): the model function with ``obs=`` in its code,
``AutoNormal(model, init_scale=0.1)`` (default ``init_to_feasible``), ``pyro.optim.Adam({"lr":
lr})``, ``SVI(model, guide, optim, loss)`` and ``losses.append(svi.step(**data))`` in a
``for`` loop.  ``Trace_ELBO`` / ``TraceEnum_ELBO`` get ``max_plate_nesting=1``, as ppl
passes.  Timed: the loop (``plain loop``), and guide + SVI construction + loop
(``plain e2e``).

**ppl**: ``ppl.infer(model, data, method="svi", num_steps=n, tol=0, lr=lr, seed=seed,
progress=False, elbo_particles=2, posterior_samples=2, dtype=dtype)`` (``tol=0``: it never
stops early; the two small numbers keep the final ELBO re-estimate cheap; ``dtype``: the
data's, as the plain side, since SVI's own default is float64) and ``lr_decay=1`` where the
backend has that option (a constant learning rate, as ``pyro.optim.Adam``; ppl's default
decays it exponentially with Pyro's ``ExponentialLR``).  ppl picks the same guide
(``"normal"`` = AutoNormal, init_scale 0.1, init_to_feasible), loss (``Trace_ELBO``;
``TraceEnum_ELBO`` because ``z`` is enumerated), Adam and max_plate_nesting.  Two ways of
giving the data (``--variants``):

* ``obs``: the very same function as the plain side (``obs=y`` in the code, ``y`` passed as an
  argument in ``data``): nothing is conditioned by ppl.
* ``site``: the same model without ``obs=``; the observed site is named in ``data``
  (``{"X": X, "y": y}`` / ``{"x": x}``), so ppl wraps the model in ``poutine.condition``.
* ``decay`` (not run by default): as ``obs`` but with ppl's default ``lr_decay`` schedule
  (what a user who leaves it alone pays for the scheduler; different numbers, not checked).

Timed for ppl:

* ``ppl loop``: ``post.diagnostics["seconds_per_step"]``, the training loop only (ppl's own
  ``perf_counter`` around the ``for`` loop), without the first step, which also sets the
  guide up and is reported apart (``diagnostics["first_step_seconds"]``); the plain loop is
  timed the same way.  (With a ppl whose ``seconds_per_step`` still includes the first step,
  the plain side includes it too.)
* ``ppl e2e``: wall time of the ``ppl.infer`` call up to the start of its post-processing
  (the final ELBO/IWAE/k-hat estimate, the discrete marginals, the sampler), divided by the
  steps: it includes ``compile`` (tracing the model, binding the data), the analysis and the
  backend's set-up.  The start of the post-processing is the end of ppl's training loop,
  stamped by wrapping ``run_iterations`` (the loop, as ``ppl.backends.svi.backend`` calls
  it) in this process (:class:`PplClock`); its start is stamped too, so the loop is also
  timed from outside (and in CPU seconds); no file is changed.
* ``ppl fixed``: compile + analysis + set-up before the loop (ms, once per call), and the
  post-processing (s), reported apart.

**Check**: with the same seed both sides draw the same random numbers, so ppl's
``post.history`` must equal minus the plain losses step by step; the largest difference is
printed (0 when the computations are identical) and above 1e-3 relative the run is flagged
and exits with status 1.

**Protocol**: each case is warmed up (one short run of each side), then ``--repeat`` rounds
run plain and every ppl variant once each, the order rotating between rounds, a
``gc.collect()`` before every run.  The table shows median ms/step and, as the overhead, the
median over the rounds of ppl / plain - 1 for the runs of one round (adjacent in time, so a
load that changes between rounds cancels), with its range and the ratio of the fastest runs.
On a loaded machine use more, shorter rounds (``--steps 100 --repeat 20``): a
run's wall time can change by tens of per cent with other work on the machine.

**Threads**: ``--threads`` (default 2) limits torch's intra-op pool and the BLAS pools.  On a
2-core machine that others are using, two torch threads make every step several times slower
(OpenMP threads wait for each other when one is descheduled); ``--threads 1`` is then the
steadier measurement.  Target: ppl's loop overhead <= 5 %.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings

try:  # run as a script (python benchmarks/svi_overhead.py) or as a module
    from _common import add_common_args, markdown_table, print_machine, source_state, start, write_json
except ImportError:  # pragma: no cover
    from benchmarks._common import add_common_args, markdown_table, print_machine, source_state, start, write_json

ALL_CASES = ("logreg", "gmm")
ALL_VARIANTS = ("obs", "site", "decay")
DEFAULT_VARIANTS = ("obs", "site")
GMM_K = 3
#: ppl's loop may be at most this much slower than plain Pyro's (ratio - 1)
TARGET_OVERHEAD = 0.05
#: largest relative |ppl history + plain loss| accepted
HISTORY_RTOL = 1e-3


# --------------------------------------------------------------------------- data
def breast_cancer(dtype):
    """scikit-learn's breast-cancer data, columns standardised: ``(X (569, 30), y (569,))``."""
    import torch
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)


def iris(dtype):
    """Iris measurements (150, 4), columns standardised."""
    import torch
    from sklearn.datasets import load_iris

    x = load_iris().data
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=dtype)


# --------------------------------------------------------------------------- models
def logreg(X, y):
    """Bayesian logistic regression, written as a Pyro user would (``obs=y``)."""
    import pyro
    import pyro.distributions as dist
    import torch

    n, d = X.shape
    w = pyro.sample("w", dist.Normal(torch.zeros(d), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", n):
        pyro.sample("y", dist.Bernoulli(logits=X @ w + b), obs=y)


def logreg_site(X):
    """The same model with ``y`` left for ``data`` to observe (ppl's ``site`` variant)."""
    import pyro
    import pyro.distributions as dist
    import torch

    n, d = X.shape
    w = pyro.sample("w", dist.Normal(torch.zeros(d), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", n):
        pyro.sample("y", dist.Bernoulli(logits=X @ w + b))


def _gmm_body(n: int, d: int, x=None):
    """K-component Gaussian mixture, diagonal scales, assignment ``z``; ``x`` observed
    through ``obs=`` when given, else left to ppl's ``data=`` binding."""
    import pyro
    import pyro.distributions as dist
    import torch

    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(GMM_K)))
    with pyro.plate("components", GMM_K):
        locs = pyro.sample("locs", dist.Normal(torch.zeros(d), 2.0).to_event(1))
        scales = pyro.sample("scales", dist.LogNormal(torch.zeros(d), 1.0).to_event(1))
    with pyro.plate("data", n):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scales[z]).to_event(1), obs=x)


def gmm(x):
    """The mixture as a Pyro user writes it (``obs=x``)."""
    _gmm_body(x.shape[0], x.shape[1], x)


def make_gmm_site(n: int, d: int):
    """The mixture without ``obs=``: ``x`` is observed through ``data={"x": x}``."""

    def gmm_site():
        _gmm_body(n, d)

    return gmm_site


def make_case(name: str, dtype) -> dict:
    """Model functions and data of a case: the plain model and its keyword arguments, and the
    ppl variants as (model, data)."""
    if name == "logreg":
        X, y = breast_cancer(dtype)
        return {"name": name, "size": f"N={X.shape[0]}, D={X.shape[1]}", "model": logreg, "kwargs": {"X": X, "y": y},
                "dtype": dtype,
                "enumerate": False, "loss": "Trace_ELBO",
                "ppl": {"obs": (logreg, {"X": X, "y": y}), "site": (logreg_site, {"X": X, "y": y}),
                        "decay": (logreg, {"X": X, "y": y})}}
    if name == "gmm":
        x = iris(dtype)
        return {"name": name, "size": f"iris N={x.shape[0]}, D={x.shape[1]}, K={GMM_K}", "model": gmm, "dtype": dtype,
                "kwargs": {"x": x}, "enumerate": True, "loss": "TraceEnum_ELBO",
                "ppl": {"obs": (gmm, {"x": x}), "site": (make_gmm_site(*x.shape), {"x": x}), "decay": (gmm, {"x": x})}}
    raise ValueError(name)


# --------------------------------------------------------------------------- runs
def run_plain(case: dict, steps: int, lr: float, seed: int) -> dict:
    """Plain Pyro SVI: build guide and SVI, then ``steps`` calls of ``svi.step``."""
    import pyro
    import pyro.optim
    from pyro import poutine
    from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
    from pyro.infer.autoguide import AutoNormal

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, kwargs = case["model"], case["kwargs"]
    gc.collect()
    t0 = time.perf_counter()
    if case["enumerate"]:
        guide = AutoNormal(poutine.block(model, hide=["z"]), init_scale=0.1)
        svi = SVI(config_enumerate(model), guide, pyro.optim.Adam({"lr": lr}),
                  loss=TraceEnum_ELBO(max_plate_nesting=1))
    else:
        guide = AutoNormal(model, init_scale=0.1)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss=Trace_ELBO(max_plate_nesting=1))
    t1, c1 = time.perf_counter(), time.process_time()
    losses = []
    for step in range(steps):
        losses.append(svi.step(**kwargs))
        if step == 0:
            t1b = time.perf_counter()  # the first step also sets the guide up (its prototype trace, parameters)
    t2, c2 = time.perf_counter(), time.process_time()
    return {"loop_s": (t2 - t1b) / max(steps - 1, 1), "loop_all_s": (t2 - t1) / steps, "first_s": t1b - t1,
            "loop_cpu_s": (c2 - c1) / steps, "e2e_s": (t2 - t0) / steps, "setup_s": t1 - t0, "losses": losses}


class PplClock:
    """Wraps ``run_iterations`` (ppl's SVI loop) in ``ppl.backends.svi.backend`` to stamp
    the loop's start and end (wall and CPU); restores it on exit."""

    def __enter__(self):
        from ppl.backends.svi import backend as mod

        self.mod = mod
        self.orig = mod.run_iterations
        self.stamps = {}
        orig = self.orig

        def run_iterations(*a, **k):
            self.stamps.setdefault("loop_start", (time.perf_counter(), time.process_time()))
            try:
                return orig(*a, **k)
            finally:
                self.stamps.setdefault("loop_end", (time.perf_counter(), time.process_time()))

        mod.run_iterations = run_iterations
        return self

    def __exit__(self, *exc):
        self.mod.run_iterations = self.orig
        return False


def run_ppl(ppl, case: dict, variant: str, steps: int, lr: float, seed: int) -> dict:
    import pyro

    model, data = case["ppl"][variant]
    extra = {}
    if "lr_decay" in ppl.registered_backends()["svi"].options:
        # constant lr, as pyro.optim.Adam on the plain side; the "decay" variant keeps ppl's default schedule
        extra = {} if variant == "decay" else {"lr_decay": 1.0}
    pyro.clear_param_store()
    gc.collect()
    with PplClock() as clock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: every run warns that it did not converge
        t0 = time.perf_counter()
        post = ppl.infer(model, data, method="svi", guide="normal", loss="elbo", optim="adam", lr=lr,
                         num_steps=steps, tol=0, init_scale=0.1, elbo_particles=2, posterior_samples=2, seed=seed,
                         progress=False, dtype=case["dtype"], **extra)
        t3 = time.perf_counter()
    d = post.diagnostics
    if d["num_steps"] != steps:
        raise RuntimeError(f"ppl ran {d['num_steps']} steps, not {steps}")
    (t1, c1), (t2, c2) = clock.stamps["loop_start"], clock.stamps["loop_end"]
    # since the first step is reported apart (diagnostics["first_step_seconds"]), seconds_per_step covers the
    # other steps; before, all of them
    first = d.get("first_step_seconds")
    return {"loop_s": d["seconds_per_step"], "excludes_first": first is not None, "first_s": first,
            "loop_outside_s": (t2 - t1) / steps, "loop_cpu_s": (c2 - c1) / steps,
            "e2e_s": (t2 - t0) / steps, "fixed_s": t1 - t0, "post_s": t3 - t2, "total_s": t3 - t0,
            "history": list(post.history), "guide": d["guide"], "loss": d["loss"], "enumerated": d["enumerated"],
            "dtype": d["dtype"]}


def history_diff(plain_losses, history) -> float:
    """Largest |ppl ELBO_i + plain loss_i| / max(1, |loss_i|)."""
    return max(abs(h + l) / max(1.0, abs(l)) for h, l in zip(history, plain_losses))


def run_case(ppl, name: str, args) -> dict:
    import torch

    case = make_case(name, getattr(torch, args.dtype))
    runners = {"plain": lambda n: run_plain(case, n, args.lr, args.seed)}
    for v in args.variants:
        runners[f"ppl-{v}"] = (lambda v: lambda n: run_ppl(ppl, case, v, n, args.lr, args.seed))(v)
    labels = list(runners)
    print(f"[{name}] {case['size']}: warm-up ({args.warmup_steps} steps each) ...", flush=True)
    for label in labels:
        runners[label](args.warmup_steps)
    runs = {label: [] for label in labels}
    loads = [os.getloadavg()[0]]
    for r in range(args.repeat):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label in order:
            runs[label].append(runners[label](args.steps))
        p = runs["plain"][-1]
        line = f"  round {r + 1}: plain {p['loop_s'] * 1e3:.3f} ms/step"
        for label in labels[1:]:
            q = runs[label][-1]
            line += (f", {label} {q['loop_s'] * 1e3:.3f} ({q['loop_s'] / p['loop_s'] - 1:+.1%}; e2e "
                     f"{q['e2e_s'] * 1e3:.3f}, fixed {q['fixed_s'] * 1e3:.0f} ms, post {q['post_s']:.2f} s)")
        print(line + f"; load {os.getloadavg()[0]:.2f}", flush=True)
        loads.append(os.getloadavg()[0])
    row = {"case": name, "size": case["size"], "loss": case["loss"], "steps": args.steps, "load_1min": loads}
    plain = runs["plain"]
    if not all(q["excludes_first"] for label in labels[1:] for q in runs[label]):
        for p in plain:  # this ppl's seconds_per_step includes the first step: compare with the same on plain
            p["loop_s"] = p["loop_all_s"]
        row["loop_includes_first_step"] = True
    for key in ("loop_s", "loop_cpu_s", "e2e_s", "setup_s", "first_s"):
        row[f"plain_{key}"] = statistics.median(x[key] for x in plain)
    row["plain_loop_each"] = [x["loop_s"] for x in plain]
    row["variants"] = {}
    for label in labels[1:]:
        rs = runs[label]
        v = {key: statistics.median(x[key] for x in rs)
             for key in ("loop_s", "loop_outside_s", "loop_cpu_s", "e2e_s", "fixed_s", "post_s", "total_s")}
        v["first_s"] = statistics.median(x["first_s"] for x in rs) if rs[0]["first_s"] is not None else None
        v["loop_each"] = [x["loop_s"] for x in rs]
        v["paired_overhead"] = [q["loop_s"] / p["loop_s"] - 1 for q, p in zip(rs, plain)]
        v["paired_cpu_overhead"] = [q["loop_cpu_s"] / p["loop_cpu_s"] - 1 for q, p in zip(rs, plain)]
        v["paired_e2e_overhead"] = [q["e2e_s"] / p["e2e_s"] - 1 for q, p in zip(rs, plain)]
        # the runs of a round are adjacent in time: the median of the per-round ratios follows a changing load
        # better than the ratio of the medians; min/min is the least disturbed pair of runs
        v["overhead"] = statistics.median(v["paired_overhead"])
        v["overhead_min"] = min(v["loop_each"]) / min(row["plain_loop_each"]) - 1
        v["cpu_overhead"] = statistics.median(v["paired_cpu_overhead"])
        v["e2e_overhead"] = statistics.median(v["paired_e2e_overhead"])
        v["history_rel_diff"] = max(history_diff(p["losses"], q["history"]) for p, q in zip(plain, rs))
        v["ppl_config"] = {k: rs[-1][k] for k in ("guide", "loss", "enumerated", "dtype")}
        row["variants"][label] = v
    return row


# --------------------------------------------------------------------------- output
def _ms(s) -> str:
    return f"{s * 1e3:.3f}"


def _pct(x) -> str:
    return f"{x:+.1%}"


def _range_pct(xs) -> str:
    return f"{min(xs):+.1%} to {max(xs):+.1%}" if len(xs) > 1 else _pct(xs[0])


def format_table(rows) -> str:
    columns = ["case", "ppl data", "plain Pyro ms/step", "ppl ms/step", "overhead", "per-round range",
               "fastest runs", "CPU ms/step plain / ppl", "CPU overhead", "e2e ms/step plain / ppl", "e2e overhead",
               "met?"]
    out = []
    for r in rows:
        for label, v in r["variants"].items():
            out.append({
                "case": r["case"], "ppl data": label[4:],
                "plain Pyro ms/step": _ms(r["plain_loop_s"]), "ppl ms/step": _ms(v["loop_s"]),
                "overhead": _pct(v["overhead"]), "per-round range": _range_pct(v["paired_overhead"]),
                "fastest runs": _pct(v["overhead_min"]),
                "CPU ms/step plain / ppl": f"{_ms(r['plain_loop_cpu_s'])} / {_ms(v['loop_cpu_s'])}",
                "CPU overhead": _pct(v["cpu_overhead"]),
                "e2e ms/step plain / ppl": f"{_ms(r['plain_e2e_s'])} / {_ms(v['e2e_s'])}",
                "e2e overhead": _pct(v["e2e_overhead"]),
                "met?": "yes" if v["overhead"] <= TARGET_OVERHEAD else "NO",
            })
    notes = [
        "ms/step: median over the rounds of the training loop's wall time per step, the first step (which also "
        "sets the guide up) left out as ppl's diagnostics do; plain: the `for` loop of `svi.step`; ppl: "
        "`post.diagnostics[\"seconds_per_step\"]`.",
        "overhead: median over the rounds of (ppl / plain - 1) for the round's runs, which are adjacent in time "
        f"(target <= {TARGET_OVERHEAD:.0%}); per-round range: smallest and largest of those; fastest runs: "
        "fastest ppl run / fastest plain run - 1.",
        "CPU: process CPU time of the whole loop (first step included, both sides) / steps, overhead as above "
        "(less sensitive to other work on the machine than wall time).",
        "e2e: plain = (AutoNormal + SVI construction + loop) / steps; ppl = (`ppl.infer` call up to the start "
        "of its post-processing, i.e. compile + analysis + set-up + loop) / steps; overhead as above.",
        "ppl data: `obs` = the same function as the plain side (`obs=` in the code, the data as arguments); "
        "`site` = the model without `obs=`, the observed site named in `data` (ppl conditions it).",
    ]
    return markdown_table(out, columns, title="SVI ms per step: ppl.infer(method=\"svi\") vs plain Pyro SVI",
                          notes=notes)


def format_fixed_table(rows) -> str:
    columns = ["case", "size", "loss", "steps", "ppl data", "plain set-up ms", "first step ms plain / ppl",
               "ppl fixed ms (compile+set-up)",
               "ppl post-processing s", "ppl loop ms/step (outside clock)", "loop ms/step range plain / ppl",
               "history rel diff"]
    out = []
    for r in rows:
        for label, v in r["variants"].items():
            out.append({
                "case": r["case"], "size": r["size"], "loss": r["loss"], "steps": r["steps"], "ppl data": label[4:],
                "plain set-up ms": f"{r['plain_setup_s'] * 1e3:.1f}",
                "first step ms plain / ppl": f"{r['plain_first_s'] * 1e3:.1f} / "
                                             + (f"{v['first_s'] * 1e3:.1f}" if v["first_s"] is not None else "-"),
                "ppl fixed ms (compile+set-up)": f"{v['fixed_s'] * 1e3:.0f}",
                "ppl post-processing s": f"{v['post_s']:.2f}",
                "ppl loop ms/step (outside clock)": _ms(v["loop_outside_s"]),
                "loop ms/step range plain / ppl": f"{_ms(min(r['plain_loop_each']))}-{_ms(max(r['plain_loop_each']))}"
                                                  f" / {_ms(min(v['loop_each']))}-{_ms(max(v['loop_each']))}",
                "history rel diff": (f"{v['history_rel_diff']:.1e}" if label != "ppl-decay"
                                     else "n/a (lr schedule)"),
            })
    notes = [
        "plain set-up: AutoNormal + SVI construction (the guide's parameters are created lazily in the first "
        "step, inside the loop on both sides).",
        "ppl fixed: `ppl.infer` entry to the loop's start (compile: tracing the model and binding the data; "
        "analysis; guide, loss and SVI construction). post-processing: final ELBO/IWAE/k-hat (elbo_particles=2), "
        "discrete marginals (16 TraceEnum draws when z is enumerated), guide marginals, sampler.",
        "history rel diff: max over steps of |ppl ELBO_i + plain loss_i| / max(1, |loss_i|) with the same seed "
        "(0: the two runs computed the same numbers).",
    ]
    return markdown_table(out, columns, title="Fixed costs, ranges and the same-numbers check", notes=notes)


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--cases", default=",".join(ALL_CASES), help=f"comma-separated subset of {ALL_CASES}")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="how ppl is called: 'obs' (obs= in the model, as the plain side), 'site' (observed "
                             "site named in data), 'decay' (as obs, with ppl's default lr_decay schedule instead of "
                             "a constant lr: not the same numbers as the plain side, so not checked)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 200 steps, 2 rounds")
    parser.add_argument("--steps", type=int, default=None, help="SVI steps per run (default 1000; 200 with --quick)")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3; 2 with --quick)")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                        help="torch default dtype and data dtype of both sides (ppl is given it as dtype=)")
    add_common_args(parser)
    parser.set_defaults(threads=2)
    args = parser.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for c in args.cases:
        if c not in ALL_CASES:
            parser.error(f"unknown case {c!r}; choose from {ALL_CASES}")
    for v in args.variants:
        if v not in ALL_VARIANTS:
            parser.error(f"unknown variant {v!r}; choose from {ALL_VARIANTS}")
    if args.steps is None:
        args.steps = 200 if args.quick else 1000
    if args.repeat is None:
        args.repeat = 2 if args.quick else 3
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    ppl, info = start(args, ("pyro", "sklearn"))
    if "svi" not in ppl.registered_backends():
        print("ppl has no 'svi' backend registered")
        return 2
    import torch

    torch.set_default_dtype(getattr(torch, args.dtype))  # both sides: model constants in the data's dtype
    info["ppl_source"] = source_state()
    print(f"ppl source: {info['ppl_source']}; {args.steps} steps per run, {args.repeat} rounds, dtype {args.dtype}",
          flush=True)
    rows = [run_case(ppl, name, args) for name in args.cases]
    print()
    print(format_table(rows))
    print()
    print(format_fixed_table(rows))
    print()
    for r in rows:
        for label, v in r["variants"].items():
            met = "MET" if v["overhead"] <= TARGET_OVERHEAD else "NOT MET"
            print(f"Target ppl SVI loop overhead <= {TARGET_OVERHEAD:.0%} on {r['case']} ({label}): {met} "
                  f"({v['overhead']:+.1%} wall, per-round {_range_pct(v['paired_overhead'])}; {v['cpu_overhead']:+.1%}"
                  f" CPU; config {v['ppl_config']})")
    print()
    print_machine(info)
    print(f"ppl source: {info['ppl_source']}; 1-min load average per case (start, after each round): "
          + "; ".join(f"{r['case']} " + ", ".join(f"{x:.2f}" for x in r["load_1min"]) for r in rows))
    bad = [(r["case"], label) for r in rows for label, v in r["variants"].items()
           if label != "ppl-decay" and not v["history_rel_diff"] <= HISTORY_RTOL]
    if bad:
        print(f"FAIL: ppl's ELBO history differs from plain Pyro's losses (rel > {HISTORY_RTOL:g}) on {bad}")
    else:
        print("OK: ppl's ELBO history equals plain Pyro's losses step by step on every case")
    if args.json:
        for r in rows:
            r.pop("history", None)
        write_json(args.json, {"machine": info, "args": vars(args), "results": rows})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
