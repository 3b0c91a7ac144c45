"""Repeated exact queries as a user makes them: ``ppl.infer(model, data=evidence)`` again
and again on one Bayesian network with new evidence, against pgmpy's
``VariableElimination`` (issue 18, "prepared models").

For each network and each evidence setting:

* the evidence *nodes* are fixed: ``10%`` = about a tenth of the nodes, leaves first (as
  ``bn_exact.py``); ``4 nodes`` = four nodes drawn at random among all nodes (pgmpy then
  prunes each query to the query's and the evidence's ancestors);
* the evidence *values* are held out: ``--cases`` forward samples of the network (seeded
  apart from the node choice), so no value was seen when the code was written;
* ppl: the first case's call prepares the model (compile, analysis, plan: reported as
  "ppl first call s"); each later case is one timed ``post = ppl.infer(model, data=ev)``
  (defaults: ``method="auto"``, which routes to exact) followed by ``post.marginal(node)``
  for every non-evidence node; "ppl next call s" is the median over those cases;
* pgmpy: for each of the same later cases, one ``VariableElimination(model).query([node],
  evidence=ev)`` per non-evidence node (pgmpy's defaults, seeded order, a forked child with
  the caps of ``bn_exact.py``); "pgmpy s" is the median over cases of the total per case.

Correctness is checked in the same run: max |p_ppl - p_pgmpy| over every queried state of
every case must be below 1e-6.  Not timed: imports, reading the networks, choosing the
evidence, building pgmpy's VariableElimination object, the fork.

Run ``python benchmarks/prepared.py`` (alarm, hepar2, win95pts, andes; munin with
``--networks munin``: pgmpy's default queries do not finish there, see bn_exact.py) or
``--quick`` (alarm only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
import zlib

import numpy as np

try:  # run as a script or as a module
    from _common import add_common_args, fmt_ratio, fmt_sci, fmt_seconds, markdown_table, print_machine, start
    from bn_exact import choose_evidence, forward_sample, run_pgmpy_queries, warm_up
except ImportError:  # pragma: no cover
    from benchmarks._common import (add_common_args, fmt_ratio, fmt_sci, fmt_seconds, markdown_table,
                                    print_machine, start)
    from benchmarks.bn_exact import choose_evidence, forward_sample, run_pgmpy_queries, warm_up

NETWORKS = ("alarm", "hepar2", "win95pts", "andes")
TOLERANCE = 1e-6


def evidence_nodes(model, name: str, setting: str, seed: int) -> list:
    """The fixed evidence nodes of one setting (``"10%"`` or ``"4 nodes"``)."""
    if setting == "10%":
        return list(choose_evidence(model, name, fraction=0.1, seed=seed))
    rng = np.random.default_rng([seed, 7, zlib.crc32(name.encode())])
    return sorted(rng.choice(model.nodes, size=4, replace=False).tolist(), key=model.nodes.index)


def cases(model, name: str, nodes: list, count: int, seed: int) -> list:
    """``count`` evidence dicts over ``nodes``, states from independent forward samples."""
    rng = np.random.default_rng([seed, 11, zlib.crc32(name.encode())])
    out = []
    for _ in range(count):
        sample = forward_sample(model, rng)
        out.append({n: model.state_names[n][sample[n]] for n in nodes})
    return out


def time_ppl(ppl, model, evidence: list) -> dict:
    """First call (prepares), then one timed call + every marginal per later case."""
    start_t = time.perf_counter()
    ppl.infer(model, data=evidence[0])
    first = time.perf_counter() - start_t
    times, posts = [], []
    for ev in evidence[1:]:
        query = [n for n in model.nodes if n not in ev]
        t0 = time.perf_counter()
        post = ppl.infer(model, data=ev)
        marginals = {n: post.marginal(n) for n in query}
        times.append(time.perf_counter() - t0)
        posts.append((post, marginals))
    reused = all(p.graph.rebound is not None for p, _ in posts)
    return {"first_s": first, "next_s": statistics.median(times), "times": times, "posts": posts, "reused": reused}


def time_pgmpy(pg_model, model, evidence: list, posts: list, args, seed: int) -> dict:
    """pgmpy's total per case (one query per non-evidence node) and the largest
    difference from ppl's marginals."""
    totals, worst, partial = [], 0.0, False
    for case, ev in enumerate(evidence[1:]):
        query = [n for n in model.nodes if n not in ev]
        np.random.default_rng(seed + case).shuffle(query)
        run = run_pgmpy_queries(pg_model, ev, query, args.pgmpy_cap, args.pgmpy_query_timeout, args.pgmpy_memory_gb)
        if len(run["times"]) < len(query):
            partial = True
            per = (sum(run["times"]) + (run["cut"] or 0.0)) / max(1, len(run["times"]) + (run["cut"] is not None))
            totals.append(per * len(query))
        else:
            totals.append(sum(run["times"]))
        post, marginals = posts[case]
        for node, probs in run["results"].items():
            ours = marginals[node].probs.detach().cpu().numpy().reshape(-1)
            theirs = np.array([probs[s] for s in model.state_names[node]])
            worst = max(worst, float(np.abs(ours - theirs).max()))
    return {"s": statistics.median(totals), "partial": partial, "max_abs_diff": worst}


def run_setting(ppl, name: str, setting: str, args) -> dict:
    from ppl.models import example_network, load_pgmpy_example

    model = example_network(name)
    nodes = evidence_nodes(model, name, setting, args.seed)
    evidence = cases(model, name, nodes, args.cases, args.seed)
    print(f"[{name} / {setting}] {len(model.nodes)} nodes, evidence on {len(nodes)}; ppl ...", flush=True)
    ours = time_ppl(ppl, model, evidence)
    print(f"[{name} / {setting}] ppl first {ours['first_s']:.3f} s, next {ours['next_s'] * 1e3:.2f} ms "
          f"(reused: {ours['reused']}); pgmpy ...", flush=True)
    row = {"network": name, "setting": setting, "evidence nodes": len(nodes), "cases timed": len(evidence) - 1,
           "ppl first call s": fmt_seconds(ours["first_s"]), "ppl next call s": fmt_seconds(ours["next_s"]),
           "graph reused": "yes" if ours["reused"] else "no", "_ppl": ours["next_s"], "_ok": True}
    if args.no_pgmpy or name == "munin":
        row.update({"pgmpy s": "not run", "pgmpy / ppl next": "-", "max abs diff": "-"})
        return row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pg_model = load_pgmpy_example(name)
    theirs = time_pgmpy(pg_model, model, evidence, ours["posts"], args, args.seed + zlib.crc32(name.encode()))
    mark = "~" if theirs["partial"] else ""
    row.update({"pgmpy s": mark + fmt_seconds(theirs["s"]), "pgmpy / ppl next": mark + fmt_ratio(theirs["s"] / ours["next_s"]),
                "max abs diff": fmt_sci(theirs["max_abs_diff"]), "_ok": theirs["max_abs_diff"] < TOLERANCE})
    print(f"[{name} / {setting}] pgmpy {theirs['s']:.3f} s per case; ratio {theirs['s'] / ours['next_s']:.1f}x; "
          f"max |diff| {theirs['max_abs_diff']:.1e}", flush=True)
    return row


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated network names")
    parser.add_argument("--quick", action="store_true", help="alarm only")
    parser.add_argument("--settings", default="10%,4 nodes", help="evidence settings: '10%%' and/or '4 nodes'")
    parser.add_argument("--cases", type=int, default=6, help="evidence cases per setting (the first prepares)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-pgmpy", action="store_true", help="time ppl only")
    parser.add_argument("--pgmpy-cap", type=float, default=60.0, help="seconds of pgmpy queries per case")
    parser.add_argument("--pgmpy-query-timeout", type=float, default=60.0)
    parser.add_argument("--pgmpy-memory-gb", type=float, default=6.0)
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    ppl, info = start(args, ("pyro", "pgmpy", "networkx"))
    names = ["alarm"] if args.quick else [n.strip() for n in args.networks.split(",") if n.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    warm_up(ppl)
    rows = [run_setting(ppl, name, setting, args) for name in names for setting in settings]
    columns = ["network", "setting", "evidence nodes", "cases timed", "ppl first call s", "ppl next call s",
               "graph reused", "pgmpy s", "pgmpy / ppl next", "max abs diff"]
    notes = ["ppl next call = median over held-out cases of `post = ppl.infer(model, data=ev)` (defaults: auto -> "
             "exact, MAP found only when asked) plus `post.marginal(node)` for every non-evidence node; first call = "
             "the first case (compile, analysis, plan). pgmpy = median over the same cases of one "
             "`VariableElimination.query([node], evidence=ev)` per non-evidence node (defaults); `~` = extrapolated "
             "from the queries that finished within the caps.",
             f"max abs diff = max |p_ppl - p_pgmpy| over every queried state of every case (tolerance {TOLERANCE:g})."]
    print()
    print(markdown_table(rows, columns, title="Repeated exact queries (prepared models): ppl vs pgmpy", notes=notes))
    print()
    print_machine(info)
    bad = [f"{r['network']}/{r['setting']}" for r in rows if not r["_ok"]]
    if bad:
        print(f"FAIL: ppl and pgmpy disagree by more than {TOLERANCE:g} on {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
