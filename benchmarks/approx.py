"""Approximate inference against a NUTS reference: ``method="auto"``, ``"laplace"``,
``"pathfinder"``, ``"svi"`` and ``"chees"`` next to Pyro's own NUTS and Pyro's plain AutoNormal SVI.

The question (the issue's goal): on the reference models, how long does each method take
(and how many gradient evaluations) to reach the reference posterior to within
|Δμ|/σ < 0.25, and does ``method="auto"`` reach NUTS' accuracy in at most 1/10 of NUTS'
time?

**Models and reference.**  The models and data of ``tests/reference_models.py``
(``REFERENCE``: name -> (model, make_data, sites)) and the reference posterior moments of
``tests/fixtures/reference_posteriors.json`` (per site and element: mean and sd; by
quadrature for the models that are linear-Gaussian given one scale, else long NUTS runs,
4 chains x 2000 draws; ``tests/make_reference_posteriors.py``).  A model the file does not
hold yet is skipped with a note, or, with ``--wait-reference MINUTES``, run last if its
reference appears in time.  Everything runs in float64 (``torch.set_default_dtype``;
the data are float64), as the reference.

**ppl** (``--methods``): ``ppl.infer(model, data, method=m, seed=seed, progress=False)`` with
every other option at its default, for m in ``auto``, ``laplace``, ``pathfinder``, ``svi``,
``chees``.
Timed: the wall time of the whole call (compile, analysis, the backend, its trust
verdict; for auto every method it tries).  Recorded: ``post.trust.verdict``; for auto the
method it returned and its route (``diagnostics["routing"]["attempts"]``); gradient
evaluations where the diagnostics report them (Laplace and Pathfinder:
``gradient_evaluations``, Pathfinder's density-only evaluations apart; SVI:
``num_steps`` x ``num_particles`` gradient steps; ChEES: its batched gradient evaluations
x ``num_chains`` (one point each; the batch costs about one on small models); NUTS, which reports none: the calls of
its potential function by Pyro's kernel, counted here by wrapping
``ppl.backends.nuts.sampler._potential_fn`` in this process; no file is changed).  For
auto the count is that of the method it returned; the seconds of the earlier attempts are
in its route.  The moments compared are ``post.mean(site)`` and ``post.variance(site)``.

**Peers**, in the same run, on the model as written (``model.fn``, the plain Pyro function;
the data as keyword arguments; observed sites carry ``obs=`` in the code):

* ``pyro-nuts``: Pyro's ``NUTS(model.fn, max_plate_nesting=1)`` with Pyro's defaults
  (``target_accept_prob=0.8``, diagonal mass matrix, no JIT, ``init_to_uniform``),
  ``config_enumerate`` where the model has discrete latents (summed out by Pyro's
  ``TraceEnum`` potential), ``--nuts-chains`` x (``--nuts-warmup`` + ``--nuts-samples``),
  default 4 x (500 + 500), chain ``c`` seeded ``seed + c``, run one after another (as
  ``pyro.infer.MCMC`` does on a 2-core machine: it draws chains sequentially when there are
  more chains than cores - 1).  The chains are driven here (``kernel.setup``, then
  ``kernel.sample`` per iteration, as ``pyro.infer.mcmc.api._gen_samples``) so that a slow
  model can be cut short: **budget** ``--nuts-budget`` seconds per chain (0: none).  From
  its ``PILOT_ITERS``-th iteration on, a chain still in its warmup whose pace so far
  projects its whole schedule past 1.5 x the budget is stopped, and every chain restarts on
  a shorter schedule (warmup and draws scaled alike, to what fits the budget at that pace;
  ``MAX_RESTARTS`` times at most; the abandoned chains' seconds are reported apart, not
  counted); NUTS is skipped on the model when fewer than ``MIN_ITERS`` iterations per chain
  would fit.  A chain past 1.5 x the budget in its draws stops and keeps the draws it has.
  On the last schedule allowed there is no projection: a chain stops only past 3 x the
  budget (in its warmup: NUTS is then skipped on the model).
  Where the whole schedule did not run, the ratios use its time estimated at the pace of
  the chains that ran (``~``): the goal is about NUTS' time on its whole schedule, and the
  shortened run's accuracy is shown as it is.  Gradient evaluations: calls of the kernel's
  potential function (a subclass of ``NUTS`` wraps it).  Verdict column: split R-hat (worst element) and
  divergent transitions.
* ``pyro-svi``: ``AutoNormal`` (Pyro's defaults: ``init_to_feasible``, ``init_scale=0.1``) on
  the model with its discrete sites hidden (``poutine.block``), ``pyro.optim.Adam({"lr":
  0.01})``, ``Trace_ELBO(max_plate_nesting=1)`` or, with discrete latents,
  ``TraceEnum_ELBO(max_plate_nesting=1)`` on ``config_enumerate(model.fn)``, ``--svi-steps``
  steps (default 3000), or as many as fit in ``--svi-budget`` seconds (default 60; 0: no
  limit), after which it is measured as it is.  Timed: guide and SVI construction and the
  steps.  The moments are
  those of ``--draws`` draws of the fitted guide (one vectorised call under a plate, not
  timed).  No verdict.

**Accuracy.**  For every element of every reference site: ``|μ - μ_ref| / σ_ref`` (the worst
is shown) and ``σ / σ_ref`` (the one farthest from 1 in log scale is shown).  **right**:
the worst |Δμ|/σ < 0.25 and every sd ratio in [0.67, 1.5].

**Goal.**  auto is right on every model where its verdict is reliable (or exact), and takes
at most 1/10 of Pyro NUTS' time on every model.  The summary also gives, per method, the
models right and the median time ratio to Pyro NUTS (ratios against a Pyro NUTS cut short
by the budget are against its shorter run: larger than against the full schedule).

**Warm-up.**  Before the first model each ppl method and both peers run once on a small
normal model (short settings, not timed), so one-time costs (imports, first dispatch) are
not charged to the first model.  One thread (``--threads``, default 1).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

try:  # run as a script (python benchmarks/approx.py) or as a module
    from _common import add_common_args, markdown_table, print_machine, source_state, start, write_json
except ImportError:  # pragma: no cover
    from benchmarks._common import add_common_args, markdown_table, print_machine, source_state, start, write_json

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_JSON = ROOT / "tests" / "fixtures" / "reference_posteriors.json"
PPL_METHODS = ("auto", "laplace", "pathfinder", "svi", "chees")
PEERS = ("pyro-nuts", "pyro-svi")
ALL_METHODS = PPL_METHODS + PEERS
#: accuracy targets
MEAN_TOL = 0.25
SD_RANGE = (0.67, 1.5)
#: the goal: auto's time at most this fraction of Pyro NUTS'
TIME_GOAL = 0.1
#: Pyro NUTS budget: iterations of the first chain before its time is projected; fewest iterations per chain
PILOT_ITERS = 25
MIN_ITERS = 100
HARD_FACTOR = 1.5
MAX_RESTARTS = 1


# --------------------------------------------------------------------------- models
def load_models():
    """``REFERENCE`` of ``tests/reference_models.py`` (imported from the tests folder)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from reference_models import REFERENCE

    return REFERENCE


def load_reference() -> dict:
    if not REFERENCE_JSON.exists():
        return {}
    return json.loads(REFERENCE_JSON.read_text())


def reference_label(ref: dict) -> str:
    if ref.get("method") == "quadrature":
        return "quadrature"
    if ref.get("method") == "nuts":
        return f"NUTS {ref.get('chains', '?')}x{ref.get('draws', '?')}"
    return ref.get("method", "?")


def discrete_sites(fn, kwargs) -> list:
    """Names of the unobserved sites with enumerable support in one trace of ``fn``."""
    import pyro.poutine as poutine
    import torch

    with torch.no_grad():
        tr = poutine.trace(fn).get_trace(**kwargs)
    return [n for n, s in tr.nodes.items() if s["type"] == "sample" and not s["is_observed"]
            and getattr(s["fn"], "has_enumerate_support", False)]


# --------------------------------------------------------------------------- accuracy
def accuracy(moments: dict, ref: dict, sites) -> dict:
    """``moments``: site -> (mean, sd) tensors or arrays; ``ref``: the reference's
    ``sites``.  Returns the worst |Δμ|/σ (and where), the worst sd ratio and ``right``."""
    worst_z, worst_z_at, worst_r, worst_r_at, all_in = 0.0, None, 1.0, None, True
    for s in sites:
        mean, sd = moments[s]
        mean = [float(x) for x in mean.reshape(-1)]
        sd = [float(x) for x in sd.reshape(-1)]
        rm, rs = ref[s]["mean"], ref[s]["sd"]
        if len(mean) != len(rm):
            raise ValueError(f"site {s}: {len(mean)} elements, the reference has {len(rm)}")
        for i, (m, d, m0, d0) in enumerate(zip(mean, sd, rm, rs)):
            label = s if len(rm) == 1 else f"{s}[{i}]"
            z = abs(m - m0) / d0 if math.isfinite(m) else math.inf
            r = d / d0 if math.isfinite(d) else math.inf
            if not z <= worst_z:
                worst_z, worst_z_at = z, label
            off = abs(math.log(r)) if 0 < r < math.inf else math.inf
            if off > (abs(math.log(worst_r)) if 0 < worst_r < math.inf else math.inf) or worst_r_at is None:
                worst_r, worst_r_at = r, label
            all_in &= SD_RANGE[0] <= r <= SD_RANGE[1]
    return {"max_z": worst_z, "max_z_at": worst_z_at, "sd_ratio": worst_r, "sd_ratio_at": worst_r_at,
            "right": bool(worst_z < MEAN_TOL and all_in)}


def flat_moments(draws: dict, sites) -> dict:
    """site -> (mean, sd) of draws ``(n, ...)`` flattened per draw."""
    out = {}
    for s in sites:
        x = draws[s].detach().double()
        x = x.reshape(x.shape[0], -1)
        out[s] = (x.mean(0), x.std(0))
    return out


# --------------------------------------------------------------------------- ppl
class NutsCounter:
    """Counts calls of ppl's NUTS potential function by Pyro's kernel: wraps
    ``ppl.backends.nuts.sampler._potential_fn`` (the factory the chains call) in this
    process; restores it on exit."""

    def __enter__(self):
        from ppl.backends.nuts import sampler

        self.mod, self.orig, self.calls = sampler, sampler._potential_fn, 0
        orig = self.orig

        def factory(*a, **k):
            fn, jitted = orig(*a, **k)

            def counted(params):
                self.calls += 1
                return fn(params)

            return counted, jitted

        sampler._potential_fn = factory
        return self

    def __exit__(self, *exc):
        self.mod._potential_fn = self.orig
        return False


def ppl_evals(post, nuts_calls: int) -> tuple:
    """``(gradient evaluations or None, text)`` from a ppl posterior's diagnostics."""
    d, m = post.diagnostics, post.method
    if m == "nuts":
        return nuts_calls, f"{nuts_calls:,}"
    if m == "chees" and d.get("grad_evals") is not None:
        n = int(d["grad_evals"]) * int(d["num_chains"])
        return n, f"{n:,} ({d['grad_evals']:,} batched)"
    if m == "svi" and d.get("num_steps") is not None:
        n = int(d["num_steps"]) * int(d.get("num_particles") or 1)
        return n, f"{n:,} ({d['num_steps']} steps)"
    if d.get("gradient_evaluations") is not None:
        n = int(d["gradient_evaluations"])
        extra = f" + {d['density_evaluations']:,} dens." if d.get("density_evaluations") else ""
        return n, f"{n:,}{extra}"
    return None, "-"


def route_text(post) -> str:
    attempts = post.diagnostics.get("routing", {}).get("attempts") or []
    parts = []
    for a in attempts:
        opts = "".join(f" {k}={v}" for k, v in a["options"].items() if k == "guide")
        why = str(a.get("left_because") or "")
        if a["verdict"] is None and why.startswith("not tried"):
            parts.append(f"{a['method']}{opts} not tried ({'time budget' if 'time budget' in why else 'declined'})")
            continue
        verdict = a["verdict"] or "failed"
        parts.append(f"{a['method']}{opts} {verdict[:1].upper()} {a['seconds']:.1f}s")
    return " > ".join(parts)


def run_ppl(ppl, method: str, model, data, sites, ref, seed: int, options: dict) -> dict:
    import torch

    gc.collect()
    with NutsCounter() as counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        try:
            post = ppl.infer(model, data, method=method, seed=seed, progress=False, **options)
        except Exception as e:  # a method that fails on a model is a result, not a crash
            return {"method": method, "seconds": time.perf_counter() - t0, "error": f"{type(e).__name__}: {e}"[:300]}
        seconds = time.perf_counter() - t0
    with torch.no_grad():
        moments = {s: (post.mean(s), post.variance(s).clamp_min(0).sqrt()) for s in sites}
    evals, evals_text = ppl_evals(post, counter.calls)
    out = {"method": method, "seconds": seconds, "verdict": post.trust.verdict, "returned": post.method,
           "evals": evals, "evals_text": evals_text, "route": route_text(post) if method == "auto" else "",
           "reasons": list(post.trust.reasons)[:3], **accuracy(moments, ref, sites)}
    d = post.diagnostics
    if post.method == "nuts":
        out["nuts"] = {k: d.get(k) for k in ("divergences", "max_rhat", "min_ess_bulk", "jit_compile", "full_mass")}
    return out


# --------------------------------------------------------------------------- Pyro NUTS
def _counting_nuts():
    from pyro.infer import NUTS

    class CountingNUTS(NUTS):
        """Pyro's NUTS, counting calls of its potential function."""

        calls = 0

        def _initialize_model_properties(self, model_args, model_kwargs):
            super()._initialize_model_properties(model_args, model_kwargs)
            inner = self.potential_fn

            def counted(z):
                CountingNUTS.calls += 1
                return inner(z)

            self.potential_fn = counted

    return CountingNUTS


def _nuts_chain(fn, kwargs, seed, warmup, samples, budget_s, project=True) -> dict:
    """One Pyro NUTS chain driven as ``pyro.infer.mcmc.api._gen_samples``.  With a budget:
    (``project``) from iteration ``PILOT_ITERS`` on, a chain in its warmup whose pace so far
    projects the whole schedule past ``HARD_FACTOR * budget_s`` stops (status ``"too
    slow"``); a chain past ``HARD_FACTOR * budget_s`` (without ``project``: twice that) stops,
    in its draws keeping the draws it has, in its warmup with none (``"cut in warmup"``)."""
    import pyro
    import torch

    cls = _counting_nuts()
    cls.calls = 0
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    kernel = cls(fn, max_plate_nesting=1)
    t0 = time.perf_counter()
    kernel.setup(warmup, **kwargs)
    params = kernel.initial_params
    kept, status, i = [], "done", 0
    limit = HARD_FACTOR * budget_s * (1 if project else 2)
    for i in range(warmup + samples):
        params = kernel.sample(params)
        if i >= warmup:
            kept.append({k: v.detach().clone() for k, v in params.items()})
        if not budget_s or i + 1 == warmup + samples:
            continue
        el = time.perf_counter() - t0
        # judged once the pace is measured over PILOT_ITERS iterations and a quarter of the limit
        if project and i < warmup and ((i + 1 >= PILOT_ITERS and el > limit / 4) or el > limit) \
                and el / (i + 1) * (warmup + samples) > limit:
            status = "too slow"
            break
        if el > limit:
            status = "cut in draws" if i >= warmup else "cut in warmup"
            break
    seconds = time.perf_counter() - t0
    draws = {}
    if kept:
        with torch.no_grad():
            draws = {k: kernel.transforms[k].inv(torch.stack([p[k] for p in kept])) if k in kernel.transforms
                     else torch.stack([p[k] for p in kept]) for k in kept[0]}
    diag = kernel.diagnostics() if kept else {}
    kernel.cleanup()
    return {"seconds": seconds, "iterations": i + 1, "status": status, "draws": draws, "calls": cls.calls,
            "divergences": len(diag.get("divergences", [])), "warmup": warmup, "samples": samples}


def run_pyro_nuts(model, kwargs, sites, ref, args) -> dict:
    """Pyro NUTS on the model as written, ``--nuts-chains`` chains one after another; with a
    budget, a schedule too slow for it is shortened (warmup and draws alike, to what fits
    ``--nuts-budget`` at the pace of the chain that was too slow) and the chains restart,
    at most ``MAX_RESTARTS`` times; the seconds of the abandoned chains are reported apart."""
    import pyro.infer
    import torch
    from pyro.ops.stats import split_gelman_rubin

    fn = model.fn
    if discrete_sites(fn, kwargs):
        fn = pyro.infer.config_enumerate(fn)
    budget = args.nuts_budget or 0.0
    full = args.nuts_warmup + args.nuts_samples
    warmup, samples = args.nuts_warmup, args.nuts_samples
    notes, chains, abandoned_s, rate = [], [], 0.0, None
    gc.collect()
    restarts, c = 0, 0
    while c < args.nuts_chains:
        res = _nuts_chain(fn, kwargs, args.seed + c, warmup, samples, budget, project=restarts < MAX_RESTARTS)
        if res["status"] == "cut in warmup":  # only on the last schedule allowed: no draws, no more tries
            abandoned_s += res["seconds"] + sum(r["seconds"] for r in chains)
            rate = res["seconds"] / res["iterations"]
            return {"method": "pyro-nuts", "skipped": True, "seconds": None, "abandoned_s": abandoned_s,
                    "est_full_s": rate * full * args.nuts_chains,
                    "note": f"skipped: chain {c} at {warmup}+{samples} still in its warmup after {res['seconds']:.0f} s "
                            f"({rate:.2f} s/iteration; {abandoned_s:.0f} s in all); "
                            f"{args.nuts_chains}x({args.nuts_warmup}+{args.nuts_samples}) ~ "
                            f"{rate * full * args.nuts_chains / 60:.0f} min"}
        if res["status"] == "too slow":
            abandoned_s += res["seconds"] + sum(r["seconds"] for r in chains)
            rate = res["seconds"] / res["iterations"]
            total = int(budget / rate)
            if total < MIN_ITERS:
                why = f"< {MIN_ITERS} iterations per chain fit {budget:g} s"
                return {"method": "pyro-nuts", "skipped": True, "seconds": None, "abandoned_s": abandoned_s,
                        "est_full_s": rate * full * args.nuts_chains,
                        "note": f"skipped: {rate:.2f} s/iteration (chain {c} at {warmup}+{samples}, "
                                f"{res['iterations']} iterations, {abandoned_s:.0f} s in all); {why}; "
                                f"{args.nuts_chains}x({args.nuts_warmup}+{args.nuts_samples}) ~ "
                                f"{rate * full * args.nuts_chains / 60:.0f} min"}
            frac = min(total / (warmup + samples), 1.0)
            warmup, samples = max(int(warmup * frac), MIN_ITERS // 2), max(int(samples * frac), MIN_ITERS // 2)
            notes.append(f"chain {c} at {rate:.3f} s/iteration after {res['iterations']} iterations: "
                         f"restarted at {warmup}+{samples}")
            chains, c, restarts = [], 0, restarts + 1
            continue
        if res["status"] != "done":
            notes.append(f"chain {c}: {res['status']} after {res['iterations'] - warmup} draws")
        chains.append(res)
        c += 1
    seconds = sum(r["seconds"] for r in chains)
    iters = sum(r["iterations"] for r in chains)
    n = min(len(next(iter(r["draws"].values()))) for r in chains)
    pooled = {s: torch.cat([r["draws"][s] for r in chains]) for s in sites}
    rhat = float("nan")
    if len(chains) > 1:
        rh = []
        for s in sites:
            x = torch.stack([r["draws"][s][:n] for r in chains]).double()
            x = x.reshape(x.shape[0], x.shape[1], -1)
            rh.append(float(split_gelman_rubin(x, chain_dim=0, sample_dim=1).max()))
        rhat = max(rh)
    div = sum(r["divergences"] for r in chains)
    calls = sum(r["calls"] for r in chains)
    short = (warmup, samples) != (args.nuts_warmup, args.nuts_samples) or any(r["status"] != "done" for r in chains)
    est = seconds / iters * full * args.nuts_chains if short else None
    if short:
        notes.append(f"{args.nuts_chains}x({args.nuts_warmup}+{args.nuts_samples}) at this pace ~ {est:.0f} s")
    if abandoned_s:
        notes.append(f"abandoned chains {abandoned_s:.0f} s, not counted")
    return {"method": "pyro-nuts", "seconds": seconds, "abandoned_s": abandoned_s, "est_full_s": est, "evals": calls,
            "evals_text": f"{calls:,}", "verdict": f"R-hat {rhat:.3f}, {div} div.",
            "schedule": f"{len(chains)}x({warmup}+{samples})", "rhat": rhat, "divergences": div,
            "note": "; ".join(notes), "cut": short, **accuracy(flat_moments(pooled, sites), ref, sites)}


# --------------------------------------------------------------------------- Pyro SVI
def run_pyro_svi(model, kwargs, sites, ref, args) -> dict:
    import pyro
    import pyro.optim
    import torch
    from pyro import poutine
    from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
    from pyro.infer.autoguide import AutoNormal

    fn = model.fn
    discrete = discrete_sites(fn, kwargs)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    gc.collect()
    t0 = time.perf_counter()
    if discrete:
        guide = AutoNormal(poutine.block(fn, hide=discrete))
        svi = SVI(config_enumerate(fn), guide, pyro.optim.Adam({"lr": args.svi_lr}),
                  loss=TraceEnum_ELBO(max_plate_nesting=1))
    else:
        guide = AutoNormal(fn)
        svi = SVI(fn, guide, pyro.optim.Adam({"lr": args.svi_lr}), loss=Trace_ELBO(max_plate_nesting=1))
    losses, note = [], ""
    try:
        for step in range(args.svi_steps):
            losses.append(svi.step(**kwargs))
            if args.svi_budget and time.perf_counter() - t0 > args.svi_budget and step + 1 < args.svi_steps:
                note = (f"cut by the budget at {step + 1} of {args.svi_steps} steps "
                        f"(all ~ {(time.perf_counter() - t0) / (step + 1) * args.svi_steps:.0f} s)")
                break
    except Exception as e:
        return {"method": "pyro-svi", "seconds": time.perf_counter() - t0,
                "error": f"{type(e).__name__} at step {len(losses)}: {e}"[:300]}
    seconds = time.perf_counter() - t0
    steps = len(losses)
    with torch.no_grad(), pyro.plate("_draws", args.draws, dim=-2):
        draws = guide(**kwargs)
    finite = [x for x in losses[-100:] if math.isfinite(x)]
    return {"method": "pyro-svi", "seconds": seconds, "evals": steps, "note": note,
            "evals_text": f"{steps:,} ({steps} steps)", "verdict": "-",
            "final_loss": statistics.mean(finite) if finite else float("nan"),
            "nonfinite_losses": sum(not math.isfinite(x) for x in losses),
            **accuracy(flat_moments(draws, sites), ref, sites)}


# --------------------------------------------------------------------------- warm-up
def warm_up(ppl, methods, args):
    """Run each method once on a small normal model with short settings (not timed)."""
    import pyro
    import pyro.distributions as pdist
    import torch

    @ppl.model
    def normal(y):
        mu = pyro.sample("mu", pdist.Normal(torch.tensor(0.0), 5.0))
        sigma = pyro.sample("sigma", pdist.HalfNormal(torch.tensor(3.0)))
        with pyro.plate("data", len(y)):
            pyro.sample("y", pdist.Normal(mu, sigma), obs=y)

    y = torch.linspace(-1.0, 2.0, 20)
    small = {"laplace": {}, "pathfinder": {}, "svi": {"num_steps": 50},
             "nuts": {"num_chains": 2, "warmup_steps": 20, "num_samples": 20},
             "chees": {"num_chains": 4, "warmup_steps": 20, "num_samples": 20}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m, opts in small.items():
            if m in methods or "auto" in methods:
                try:
                    ppl.infer(normal, {"y": y}, method=m, seed=0, progress=False, **opts)
                except Exception as e:  # pragma: no cover - reported, not fatal
                    print(f"  warm-up {m}: {type(e).__name__}: {e}")
        ref = {"mu": {"mean": [0.0], "sd": [1.0]}, "sigma": {"mean": [1.0], "sd": [1.0]}}
        ns = argparse.Namespace(**{**vars(args), "nuts_chains": 1, "nuts_warmup": 20, "nuts_samples": 20,
                                   "nuts_budget": 0, "svi_steps": 20, "svi_budget": 0,
                                   "draws": 100})
        if "pyro-nuts" in methods:
            run_pyro_nuts(normal, {"y": y}, ["mu", "sigma"], ref, ns)
        if "pyro-svi" in methods:
            run_pyro_svi(normal, {"y": y}, ["mu", "sigma"], ref, ns)


# --------------------------------------------------------------------------- one model
def run_model(ppl, name, entry, ref, args) -> dict:
    model, make_data, sites = entry
    data = make_data()
    rsites = ref["sites"]
    dims = sum(len(rsites[s]["mean"]) for s in sites)
    row = {"model": name, "sites": list(sites), "elements": dims, "reference": reference_label(ref), "runs": []}
    print(f"[{name}] sites {', '.join(sites)} ({dims} elements), reference {row['reference']}", flush=True)
    ppl_opts = {"auto": dict(args.auto_options)}
    for method in args.methods:
        t_load = os.getloadavg()[0]
        if method in PPL_METHODS:
            r = run_ppl(ppl, method, model, data, sites, rsites, args.seed, ppl_opts.get(method, {}))
        elif method == "pyro-nuts":
            t0 = time.perf_counter()
            try:
                r = run_pyro_nuts(model, data, sites, rsites, args)
            except Exception as e:  # Pyro's NUTS failing on a model is a result (as Pyro SVI's), not a crash
                r = {"method": "pyro-nuts", "seconds": time.perf_counter() - t0,
                     "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"[:300]}
        else:
            r = run_pyro_svi(model, data, sites, rsites, args)
        r["load_1min"] = t_load
        row["runs"].append(r)
        print("  " + describe(r), flush=True)
    return row


def describe(r) -> str:
    if r.get("error"):
        return f"{r['method']}: FAILED after {r['seconds']:.1f} s: {r['error']}"
    if r.get("skipped"):
        return f"{r['method']}: {r['note']}"
    extra = ""
    if r["method"] == "auto":
        extra = f", returned {r['returned']} [{r['route']}]"
    if r["method"] == "pyro-nuts":
        extra = f", {r['schedule']}" + (f" ({r['note']})" if r.get("note") else "")
    if r["method"] == "pyro-svi" and r.get("note"):
        extra = f" ({r['note']})"
    return (f"{r['method']}: {r['seconds']:.1f} s, {r['verdict']}, max |dmu|/sd {r['max_z']:.3f} ({r['max_z_at']}), "
            f"sd ratio {r['sd_ratio']:.2f} ({r['sd_ratio_at']}), evals {r['evals_text']}, "
            f"{'right' if r['right'] else 'not right'}{extra}")


# --------------------------------------------------------------------------- output
def _nuts_base(row):
    """``(Pyro NUTS seconds, estimated?)``: its measured seconds, or where its whole schedule did
    not run, that schedule's time at the pace it ran (marked ``~``); ``(None, False)``
    without either."""
    for r in row["runs"]:
        if r["method"] == "pyro-nuts" and not r.get("error"):
            if r.get("est_full_s"):
                return r["est_full_s"], True
            if r.get("seconds") is not None:
                return r["seconds"], False
    return None, False


def _nuts_seconds(row):
    return _nuts_base(row)[0]


def _ratio(s, base, approx=False) -> str:
    if s is None or base is None:
        return "-"
    x = s / base
    text = f"{x:.3f}" if x < 0.1 else f"{x:.2f}" if x < 10 else f"{x:.0f}"
    return ("~" if approx else "") + text


def format_table(rows) -> str:
    columns = ["model", "method", "seconds", "/ Pyro NUTS", "grad evals", "max |Δμ|/σ", "worst sd ratio", "verdict",
               "right", "notes"]
    out = []
    for row in rows:
        base, approx = _nuts_base(row)
        for r in row["runs"]:
            cell = {"model": row["model"], "method": r["method"]}
            if r.get("error") or r.get("skipped"):
                cell.update({"seconds": f"{r['seconds']:.1f}" if r.get("seconds") else "-", "right": "-",
                             "verdict": "failed" if r.get("error") else "skipped",
                             "notes": (r.get("error") or r.get("note") or "")[:200]})
                out.append(cell)
                continue
            note = ""
            if r["method"] == "auto":
                note = f"returned {r['returned']}: {r['route']}"
            elif r["method"] == "pyro-nuts":
                note = r["schedule"] + (f"; {r['note']}" if r.get("note") else "")
            elif r["method"] == "pyro-svi":
                note = "; ".join(x for x in (r.get("note"), f"{r['nonfinite_losses']} non-finite losses"
                                             if r.get("nonfinite_losses") else "") if x)
            cell.update({
                "seconds": f"{r['seconds']:.1f}" if r["seconds"] >= 10 else f"{r['seconds']:.2f}",
                "/ Pyro NUTS": _ratio(r["seconds"], base, approx), "grad evals": r["evals_text"],
                "max |Δμ|/σ": f"{r['max_z']:.2f} ({r['max_z_at']})",
                "worst sd ratio": f"{r['sd_ratio']:.2f} ({r['sd_ratio_at']})",
                "verdict": r["verdict"], "right": "yes" if r["right"] else "NO", "notes": note,
            })
            out.append(cell)
    notes = [
        f"right: max |Δμ|/σ_ref < {MEAN_TOL} over every element of the compared sites and every sd ratio "
        f"σ/σ_ref in [{SD_RANGE[0]}, {SD_RANGE[1]}]; worst sd ratio: the one farthest from 1 (log scale).",
        "seconds: wall time of the whole call (ppl: `ppl.infer`, compile and verdict included; auto: every method it "
        "tried); / Pyro NUTS: seconds over Pyro NUTS' seconds on the model in this run; ~: Pyro NUTS did not run "
        "its whole schedule within the budget (shortened, or skipped), so the ratio is over the whole schedule's "
        "time estimated at the pace it ran.",
        "grad evals: ppl Laplace / Pathfinder: `gradient_evaluations` (+ density-only evaluations); SVI: steps x "
        "particles; NUTS (ppl and Pyro): calls of the potential by the kernel; auto: the returned method's only.",
        "auto's route: each attempt, its verdict (R reliable, U unreliable, E exact, F failed) and seconds.",
    ]
    return markdown_table(out, columns, title="Time and accuracy against the reference posterior", notes=notes)


def summarize(rows, methods) -> list:
    lines = []
    for m in methods:
        runs = [(row, r) for row in rows for r in row["runs"] if r["method"] == m]
        ok = [(row, r) for row, r in runs if not r.get("error") and not r.get("skipped")]
        right = [row["model"] for row, r in ok if r["right"]]
        ratios = [r["seconds"] / _nuts_seconds(row) for row, r in ok if _nuts_seconds(row)]
        med = f"{statistics.median(ratios):.3g}" if ratios else "-"
        line = (f"{m}: right on {len(right)}/{len(runs)} models"
                + (f" (not: {', '.join(row['model'] for row, r in runs if not (r in [x for _, x in ok] and r['right']))})"
                   if len(right) < len(runs) else "")
                + f"; median time / Pyro NUTS {med}")
        if m in PPL_METHODS:
            trusted = [(row, r) for row, r in ok if r["verdict"] in ("reliable", "exact")]
            wrong = [row["model"] for row, r in trusted if not r["right"]]
            line += (f"; says reliable on {len(trusted)}, right on {len(trusted) - len(wrong)} of those"
                     + (f" (wrong but reliable: {', '.join(wrong)})" if wrong else ""))
        if m == "auto":
            fast = [row["model"] for row, r in ok if _nuts_seconds(row) and r["seconds"] / _nuts_seconds(row) <= TIME_GOAL]
            compared = [row for row, r in ok if _nuts_seconds(row)]
            estimated = [row["model"] for row in compared if _nuts_base(row)[1]]
            trusted_ok = all(r["right"] for row, r in ok if r["verdict"] in ("reliable", "exact"))
            met = trusted_ok and len(fast) == len(compared) and len(ok) == len(runs) and compared
            line += (f"; <= {TIME_GOAL:g} x Pyro NUTS on {len(fast)}/{len(compared)}"
                     + (f" ({', '.join(estimated)} against an estimate)" if estimated else "")
                     + f" -> goal (right wherever reliable, and <= 1/10 of NUTS' time): {'MET' if met else 'NOT MET'}")
        lines.append(line)
    return lines


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default=None, help="comma-separated subset of the reference models (default all)")
    parser.add_argument("--methods", default=",".join(ALL_METHODS), help=f"comma-separated subset of {ALL_METHODS}")
    parser.add_argument("--seed", type=int, default=0, help="seed of every method (Pyro NUTS chain c: seed + c)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: regression and eight_schools, Pyro NUTS 2x(100+100), Pyro SVI 500 steps, "
                             "auto with time_budget=10")
    parser.add_argument("--nuts-chains", type=int, default=None, help="Pyro NUTS chains (default 4; 2 with --quick)")
    parser.add_argument("--nuts-warmup", type=int, default=None, help="Pyro NUTS warmup per chain (500; 100 quick)")
    parser.add_argument("--nuts-samples", type=int, default=None, help="Pyro NUTS draws per chain (500; 100 quick)")
    parser.add_argument("--nuts-budget", type=float, default=40.0,
                        help="seconds per Pyro NUTS chain (0: no limit): a slower model gets a shorter schedule "
                             "(or is skipped), see the module docstring")
    parser.add_argument("--svi-steps", type=int, default=None, help="Pyro AutoNormal SVI steps (3000; 500 quick)")
    parser.add_argument("--svi-budget", type=float, default=60.0,
                        help="seconds for Pyro SVI's steps on one model (0: no limit): it stops there and is "
                             "measured as it is")
    parser.add_argument("--svi-lr", type=float, default=0.01)
    parser.add_argument("--draws", type=int, default=4000, help="draws of Pyro's fitted guide for its moments")
    parser.add_argument("--auto-time-budget", type=float, default=None,
                        help="ppl auto's time_budget option (default: ppl's own; 10 with --quick)")
    parser.add_argument("--wait-reference", type=float, default=0.0,
                        help="minutes (from the start of the models) to wait for a reference posterior that "
                             "tests/make_reference_posteriors.py is still writing; such models run last")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false")
    add_common_args(parser)
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in args.methods:
        if m not in ALL_METHODS:
            parser.error(f"unknown method {m!r}; choose from {ALL_METHODS}")
    q = args.quick
    args.nuts_chains = args.nuts_chains or (2 if q else 4)
    args.nuts_warmup = args.nuts_warmup or (100 if q else 500)
    args.nuts_samples = args.nuts_samples or (100 if q else 500)
    args.svi_steps = args.svi_steps or (500 if q else 3000)
    if args.auto_time_budget is None and q:
        args.auto_time_budget = 10.0
    args.auto_options = {} if args.auto_time_budget is None else {"time_budget": args.auto_time_budget}
    if args.models is None:
        args.models = "regression,eight_schools" if q else None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    ppl, info = start(args, ("pyro",))
    import torch

    torch.set_default_dtype(torch.float64)  # as the reference models and their reference posteriors
    models = load_models()
    reference = load_reference()
    names = list(models) if args.models is None else [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in models]
    if unknown:
        print(f"unknown model(s) {unknown}; the reference models are {list(models)}")
        return 2
    missing = [n for n in names if n not in reference]
    names = [n for n in names if n in reference] + (missing if args.wait_reference else [])
    info["ppl_source"] = source_state()
    print(f"ppl source: {info['ppl_source']}; seed {args.seed}; methods {', '.join(args.methods)}; Pyro NUTS "
          f"{args.nuts_chains}x({args.nuts_warmup}+{args.nuts_samples}), budget {args.nuts_budget:g} s per chain; "
          f"Pyro SVI {args.svi_steps} steps", flush=True)
    for n in missing:
        print(f"[{n}] no reference posterior in {REFERENCE_JSON.relative_to(ROOT)} yet "
              f"(python tests/make_reference_posteriors.py): "
              + (f"run last if it appears within {args.wait_reference:g} min" if args.wait_reference else "skipped"))
    if args.warm_up:
        print("warm-up ...", flush=True)
        warm_up(ppl, args.methods, args)
    t0 = time.perf_counter()
    rows = []
    for n in names:
        while n not in reference and time.perf_counter() - t0 < args.wait_reference * 60:
            time.sleep(30)
            reference = load_reference()
        if n not in reference:
            print(f"[{n}] skipped: its reference posterior did not appear within {args.wait_reference:g} min")
            continue
        rows.append(run_model(ppl, n, models[n], reference[n], args))
    missing = [n for n in missing if n not in reference]
    total = time.perf_counter() - t0
    print()
    print(format_table(rows))
    if missing:
        print(f"\nNot run (no reference posterior yet): {', '.join(missing)}")
    print()
    for line in summarize(rows, args.methods):
        print(line)
    print()
    print_machine(info)
    print(f"ppl source: {info['ppl_source']}; benchmark wall time {total / 60:.1f} min")
    if args.json:
        for row in rows:
            for r in row["runs"]:
                r.pop("draws", None)
        write_json(args.json, {"machine": info, "args": {k: v for k, v in vars(args).items()}, "results": rows,
                               "missing": missing})
    return 0


if __name__ == "__main__":
    sys.exit(main())
