"""Exact inference on the bnlearn Bayesian networks bundled with pgmpy: ppl vs pgmpy.

For each network, fixed evidence is chosen reproducibly (see :func:`choose_evidence`):
about 10% of the nodes, leaves (the "findings") first, with states taken from one
forward sample of the network, so the evidence has positive probability.  Then

* ppl: ``g = ppl.compile(model, evidence)`` (timed once: "ppl compile"), then
  ``ppl.infer(g, method="exact", map=False)`` — every non-evidence node's posterior
  marginal (and the log evidence) in one call.  The first call on a fresh graph
  ("ppl first infer") also runs the analysis (moral graph, min-fill order) and builds the
  factor tables and the contraction plan, which are cached on ``g``; "ppl warm infer" is
  the median of the following calls.
* pgmpy: one ``VariableElimination(model).query([node], evidence=..., show_progress=False)``
  per non-evidence node, pgmpy's defaults (``elimination_order="greedy"``: opt_einsum's
  greedy contraction path on the network pruned to the query), in a seeded random order,
  in a forked child process (so a query can be stopped, and its memory is capped by
  ``--pgmpy-memory-gb``).  Once the finished queries took ``--pgmpy-cap`` seconds, or
  one query runs past ``--pgmpy-query-timeout``, querying stops and the total is
  extrapolated as (mean seconds per timed query) × (number of non-evidence nodes);
  column "pgmpy queries timed" says how many ran.

Correctness is checked in the same run: the largest |p_ppl - p_pgmpy| over every state of
every node pgmpy was queried on (states aligned by name) must be below 1e-6.  When fewer
than ``--check-nodes`` default queries finish (munin: pgmpy's greedy path needs minutes
and gigabytes per query), a seeded subset of nodes is also queried with pgmpy's classic
VE given ppl's min-fill elimination order, for the check only.

Not timed: importing libraries, a warm-up run of ppl on the 5-node ``cancer`` network
(one-time costs), reading the networks (ppl's BIF reader, pgmpy's BIFReader), choosing
the evidence, building pgmpy's ``VariableElimination`` object, starting the child
process, the fallback check.

Run ``python benchmarks/bn_exact.py`` (all eight networks; several minutes, mostly pgmpy
and munin) or ``--quick`` for a smoke test.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
import zlib

import numpy as np

try:  # run as a script (python benchmarks/bn_exact.py) or as a module (python -m benchmarks.bn_exact)
    from _common import (Timer, add_common_args, fmt_ratio, fmt_sci, fmt_seconds, markdown_table,
                         print_machine, start, time_repeated, write_json)
except ImportError:  # pragma: no cover
    from benchmarks._common import (Timer, add_common_args, fmt_ratio, fmt_sci, fmt_seconds, markdown_table,
                                    print_machine, start, time_repeated, write_json)

ALL_NETWORKS = ("asia", "child", "insurance", "alarm", "hepar2", "win95pts", "andes", "munin")
QUICK_NETWORKS = ("asia", "child", "insurance", "alarm")
TOLERANCE = 1e-6


# --------------------------------------------------------------------------- evidence
def forward_sample(model, rng: np.random.Generator) -> dict:
    """One ancestral sample of a Bayesian-network model built by ``ppl.models``.

    Parameters
    ----------
    model : ppl Model with ``nodes`` (topological order) and ``cpds``
        (node -> (parents, table of shape (card(parents)..., card(node)))).
    rng : numpy Generator

    Returns
    -------
    dict[str, int]
        Node -> state index.
    """
    values: dict[str, int] = {}
    for node in model.nodes:
        parents, table = model.cpds[node]
        row = np.asarray(table[tuple(values[p] for p in parents)], dtype=np.float64)
        values[node] = int(rng.choice(len(row), p=row / row.sum()))
    return values


def choose_evidence(model, name: str, fraction: float = 0.1, seed: int = 0) -> dict:
    """Fixed, reproducible evidence for network ``name``.

    ``k = max(1, round(fraction * n_nodes))`` nodes are chosen with a generator seeded by
    ``(seed, crc32(name))``: leaves (nodes without children) first, drawn at random
    without replacement; if there are fewer than ``k`` leaves, all of them plus randomly
    drawn other nodes.  Their states come from one forward sample drawn with the same
    generator, so the evidence has positive probability.

    Returns
    -------
    dict[str, str]
        Node -> state name, in the network's topological order.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    sample = forward_sample(model, rng)
    has_child = {p for node in model.nodes for p in model.cpds[node][0]}
    leaves = [n for n in model.nodes if n not in has_child]
    others = [n for n in model.nodes if n in has_child]
    k = max(1, int(round(fraction * len(model.nodes))))
    if len(leaves) >= k:
        chosen = set(rng.choice(leaves, size=k, replace=False).tolist())
    else:
        chosen = set(leaves) | set(rng.choice(others, size=k - len(leaves), replace=False).tolist())
    return {n: model.state_names[n][sample[n]] for n in model.nodes if n in chosen}


# --------------------------------------------------------------------------- one network
def bench_ppl(ppl, model, evidence, repeat: int, budget_s: float) -> dict:
    """Time compile, first and warm exact inference; return timings and the posterior."""
    with Timer() as t_compile:
        graph = ppl.compile(model, evidence)
    with Timer() as t_first:
        first = ppl.infer(graph, method="exact", map=False)
    warm, times, post = time_repeated(lambda: ppl.infer(graph, method="exact", map=False),
                                      repeat=repeat, budget_s=budget_s)
    analysis = ppl.analyze(graph)  # cached by the first infer
    return {
        "compile_s": t_compile.seconds,
        "first_s": t_first.seconds,
        "warm_s": warm,
        "warm_times": times,
        "plan_s": first.diagnostics.get("plan_seconds"),
        "treewidth": analysis.treewidth,
        "log_evidence": post.log_evidence,
        "posterior": post,
    }


def _vm_bytes() -> int:
    """This process's virtual address-space size (Linux; 0 if unknown)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _pgmpy_worker(conn, pgmpy_model, evidence, nodes, elimination_order, memory_bytes):
    """Child process: run one pgmpy VE query per node and send each result as it comes.

    Messages: ``("ok", node, seconds, {state: p})``, ``("error", node, seconds, text)``
    and finally ``("done",)``.  The address space is capped at the current size plus
    ``memory_bytes`` so that a query asking for a huge intermediate fails with
    MemoryError instead of exhausting a shared machine.
    """
    import resource

    warnings.simplefilter("ignore")  # pgmpy's deprecation notices
    from pgmpy.inference import VariableElimination

    if memory_bytes:
        limit = _vm_bytes() + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    ve = VariableElimination(pgmpy_model)
    for node in nodes:
        order = "greedy" if elimination_order is None else [v for v in elimination_order if v != node]
        start = time.perf_counter()
        try:
            factor = ve.query([node], evidence=evidence, elimination_order=order, show_progress=False)
        except MemoryError:
            conn.send(("error", node, time.perf_counter() - start, "MemoryError (address-space cap)"))
            break
        except Exception as e:  # report, do not hang the parent
            conn.send(("error", node, time.perf_counter() - start, f"{type(e).__name__}: {e}"))
            break
        seconds = time.perf_counter() - start
        states = factor.state_names[node]
        conn.send(("ok", node, seconds, {s: float(v) for s, v in zip(states, np.asarray(factor.values).reshape(-1))}))
    conn.send(("done",))
    conn.close()


def run_pgmpy_queries(pgmpy_model, evidence, nodes, cap_s: float, query_timeout_s: float,
                      memory_gb: float, elimination_order=None) -> dict:
    """Time pgmpy VE queries, one per node of ``nodes`` in the given order, in a child
    process (forked: the network is not copied or re-read).

    Querying stops between queries once the finished ones took ``cap_s`` seconds in all;
    a single query still running after ``query_timeout_s`` seconds is stopped (the child
    is killed) and recorded as ``cut`` with the seconds it had run (a lower bound on its
    time).

    Returns
    -------
    dict
        ``results`` (node -> {state: p}, finished queries), ``times`` (their seconds),
        ``cut`` (seconds of the stopped query, or None), ``error`` (text or None).
    """
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_pgmpy_worker, daemon=True,
                       args=(send, pgmpy_model, evidence, list(nodes), elimination_order,
                             int(memory_gb * 2**30)))
    proc.start()
    send.close()
    results, times, cut, error = {}, [], None, None
    try:
        while True:
            waited = time.perf_counter()
            if not recv.poll(query_timeout_s):
                cut = time.perf_counter() - waited
                break
            try:
                msg = recv.recv()
            except EOFError:
                error = f"pgmpy worker died (exit code {proc.exitcode})"
                break
            if msg[0] == "done":
                break
            if msg[0] == "error":
                error = f"{msg[1]}: {msg[3]} after {msg[2]:.1f} s"
                break
            _, node, seconds, probs = msg
            results[node] = probs
            times.append(seconds)
            if sum(times) >= cap_s:
                break
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()
    return {"results": results, "times": times, "cut": cut, "error": error}


def bench_pgmpy(pgmpy_model, evidence, query_nodes, args, seed: int, ppl_order) -> dict:
    """pgmpy's default VE (``elimination_order="greedy"``), one query per non-evidence
    node in a seeded random order, within ``args.pgmpy_cap`` / ``args.pgmpy_query_timeout``
    (see :func:`run_pgmpy_queries`).

    When fewer than ``args.check_nodes`` queries finish, a seeded subset of that many
    nodes is also queried with pgmpy's classic VE given ppl's min-fill elimination order
    (``ppl_order``), for the correctness check only (not timed in the table).

    Returns
    -------
    dict
        ``timed`` (finished default queries), ``cut`` (seconds of a query stopped at the
        timeout, or None), ``error``, ``per_query_s`` (mean over the finished queries,
        the stopped one counted with the seconds it ran), ``total_s`` (measured if all
        finished, else extrapolated: per_query_s × number of nodes), ``lower_bound_s``
        (seconds actually spent: the total is at least this), ``extrapolated``,
        ``results`` (node -> {state: p} from every finished query, both kinds),
        ``check`` (None or a dict about the fallback check).
    """
    order = list(query_nodes)
    np.random.default_rng(seed).shuffle(order)
    run = run_pgmpy_queries(pgmpy_model, evidence, order, args.pgmpy_cap, args.pgmpy_query_timeout,
                            args.pgmpy_memory_gb)
    times = list(run["times"]) + ([run["cut"]] if run["cut"] is not None else [])
    spent = sum(times)
    complete = len(run["times"]) == len(order)
    per_query = spent / len(times) if times else float("nan")
    out = {
        "timed": len(run["times"]),
        "cut": run["cut"],
        "error": run["error"],
        "per_query_s": per_query,
        "total_s": spent if complete else per_query * len(order),
        "lower_bound_s": spent,
        "extrapolated": not complete,
        "results": dict(run["results"]),
        "check": None,
    }
    if len(run["results"]) < min(args.check_nodes, len(order)):
        check_nodes = [n for n in order if n not in run["results"]][: args.check_nodes - len(run["results"])]
        chk = run_pgmpy_queries(pgmpy_model, evidence, check_nodes, float("inf"), args.pgmpy_query_timeout,
                                args.pgmpy_memory_gb, elimination_order=list(ppl_order))
        out["check"] = {"nodes": len(chk["results"]), "asked": len(check_nodes), "times": chk["times"],
                        "cut": chk["cut"], "error": chk["error"]}
        out["results"].update(chk["results"])
    return out


def max_abs_diff(post, model, pgmpy_results) -> float:
    """Largest |p_ppl - p_pgmpy| over the queried nodes' states (aligned by state name)."""
    worst = 0.0
    for node, probs in pgmpy_results.items():
        ours = post.probs(node).detach().cpu().numpy().reshape(-1)
        names = model.state_names[node]
        if set(names) != set(probs):
            raise AssertionError(f"state names differ for {node}: ppl {names}, pgmpy {list(probs)}")
        theirs = np.array([probs[s] for s in names])
        worst = max(worst, float(np.abs(ours - theirs).max()))
    return worst


def run_network(name: str, args, ppl) -> dict:
    """Benchmark one network; returns a row of raw numbers."""
    from ppl.models import example_network, load_pgmpy_example

    model = example_network(name)
    evidence = choose_evidence(model, name, fraction=args.evidence_fraction, seed=args.seed)
    query_nodes = [n for n in model.nodes if n not in evidence]
    print(f"[{name}] {len(model.nodes)} nodes, {len(evidence)} evidence nodes; ppl ...", flush=True)
    ours = bench_ppl(ppl, model, evidence, repeat=args.repeat, budget_s=args.ppl_budget)
    missing = set(query_nodes) - set(ours["posterior"].sites)
    if missing:
        raise AssertionError(f"{name}: ppl gave no marginal for {sorted(missing)[:5]}")

    print(f"[{name}] ppl: compile {ours['compile_s']:.3f} s, first infer {ours['first_s']:.3f} s, "
          f"warm {ours['warm_s']:.4f} s; pgmpy ...", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pgmpy's deprecation and BIF-reader notices
        pg_model = load_pgmpy_example(name)
    if set(map(str, pg_model.nodes())) != set(model.nodes):
        raise AssertionError(f"{name}: ppl and pgmpy networks have different nodes")
    theirs = bench_pgmpy(pg_model, evidence, query_nodes, args, seed=args.seed + zlib.crc32(name.encode()),
                         ppl_order=ours["posterior"].diagnostics["elimination_order"])
    diff = max_abs_diff(ours["posterior"], model, theirs["results"]) if theirs["results"] else float("nan")
    status = f"{theirs['timed']}/{len(query_nodes)} default queries finished"
    if theirs["cut"] is not None:
        status += f", one stopped after {theirs['cut']:.1f} s"
    if theirs["error"]:
        status += f", error: {theirs['error']}"
    if theirs["check"]:
        c = theirs["check"]
        status += f"; check with ppl's elimination order: {c['nodes']}/{c['asked']} nodes"
        if c["times"]:
            status += f" ({np.mean(c['times']):.2f} s per query)"
        if c["error"]:
            status += f" [{c['error']}]"
        elif c["cut"] is not None:
            status += f" [one stopped after {c['cut']:.1f} s]"
    print(f"[{name}] pgmpy: {status}; {theirs['per_query_s']:.4f} s per default query; "
          f"max |p_ppl - p_pgmpy| = {diff:.2e} over {len(theirs['results'])} nodes", flush=True)
    return {
        "network": name,
        "nodes": len(model.nodes),
        "evidence_nodes": len(evidence),
        "query_nodes": len(query_nodes),
        "treewidth": ours["treewidth"],
        "ppl_compile_s": ours["compile_s"],
        "ppl_first_infer_s": ours["first_s"],
        "ppl_warm_infer_s": ours["warm_s"],
        "ppl_warm_times": ours["warm_times"],
        "ppl_plan_s": ours["plan_s"],
        "ppl_log_evidence": ours["log_evidence"],
        "pgmpy_s": theirs["total_s"],
        "pgmpy_lower_bound_s": theirs["lower_bound_s"],
        "pgmpy_per_query_s": theirs["per_query_s"],
        "pgmpy_timed": theirs["timed"],
        "pgmpy_cut_s": theirs["cut"],
        "pgmpy_error": theirs["error"],
        "pgmpy_extrapolated": theirs["extrapolated"],
        "pgmpy_check": theirs["check"],
        "compared_nodes": len(theirs["results"]),
        "max_abs_diff": diff,
        "ok": diff < TOLERANCE,
        "evidence": evidence,
    }


def warm_up(ppl) -> None:
    """Compile and query a small network (cancer, 5 nodes) once, untimed, so one-time
    costs (lazy imports, torch dispatch set-up) do not land on the first timed network."""
    from ppl.models import example_network

    model = example_network("cancer")
    graph = ppl.compile(model, {model.nodes[-1]: model.state_names[model.nodes[-1]][0]})
    ppl.infer(graph, method="exact", map=False)


def _pgmpy_cells(r) -> dict:
    """pgmpy time, how it was obtained, and the three ratios, as table cells."""
    ppl_times = {"pgmpy / ppl warm": r["ppl_warm_infer_s"], "pgmpy / ppl first": r["ppl_first_infer_s"],
                 "pgmpy / ppl (compile+first)": r["ppl_compile_s"] + r["ppl_first_infer_s"]}
    n = r["query_nodes"]
    timed = f"{r['pgmpy_timed']}/{n}"
    if r["pgmpy_cut_s"] is not None:
        timed += f" + 1 stopped at {r['pgmpy_cut_s']:.0f} s"
    if r["pgmpy_error"]:
        timed += " + 1 failed (memory cap)" if "MemoryError" in r["pgmpy_error"] else " + 1 failed"
    if r["pgmpy_timed"] == 0:  # nothing finished: only a lower bound is known
        cells = {"pgmpy s (all nodes)": "> " + fmt_seconds(r["pgmpy_lower_bound_s"])}
        cells.update({k: "> " + fmt_ratio(r["pgmpy_lower_bound_s"] / v) for k, v in ppl_times.items()})
    else:
        mark = "~" if r["pgmpy_extrapolated"] else ""
        if r["pgmpy_extrapolated"]:
            timed += ", extrapolated"
        cells = {"pgmpy s (all nodes)": mark + fmt_seconds(r["pgmpy_s"])}
        cells.update({k: mark + fmt_ratio(r["pgmpy_s"] / v) for k, v in ppl_times.items()})
    cells["pgmpy queries timed"] = timed
    return cells


def format_rows(rows) -> str:
    """The results table (Markdown)."""
    columns = ["network", "nodes", "evidence nodes", "treewidth", "ppl compile s", "ppl first infer s",
               "ppl warm infer s", "pgmpy s (all nodes)", "pgmpy queries timed", "pgmpy / ppl warm",
               "pgmpy / ppl first", "pgmpy / ppl (compile+first)", "max abs diff"]
    out = []
    for r in rows:
        diff = fmt_sci(r["max_abs_diff"]) + f" ({r['compared_nodes']} nodes"
        diff += ", via ppl's order)" if r["pgmpy_check"] else ")"
        out.append({
            "network": r["network"],
            "nodes": r["nodes"],
            "evidence nodes": r["evidence_nodes"],
            "treewidth": r["treewidth"],
            "ppl compile s": fmt_seconds(r["ppl_compile_s"]),
            "ppl first infer s": fmt_seconds(r["ppl_first_infer_s"]),
            "ppl warm infer s": fmt_seconds(r["ppl_warm_infer_s"]),
            **_pgmpy_cells(r),
            "max abs diff": diff,
        })
    notes = [
        "ppl: every non-evidence node's marginal from one `ppl.infer(g, method=\"exact\", map=False)`; "
        "compile = `ppl.compile(model, evidence)` once; first infer = first call on the fresh graph (analysis, "
        "factor tables, plan, contraction); warm infer = median of the later calls.",
        "pgmpy: one `VariableElimination(model).query([node], evidence)` per non-evidence node, pgmpy's defaults "
        "(elimination_order=\"greedy\", i.e. opt_einsum's greedy path on the pruned network), in a seeded random "
        "order. `~` = extrapolated: mean seconds per timed query x number of nodes (a query stopped at the "
        "per-query timeout counts with the seconds it ran, so the estimate is then low). `>` = no query finished "
        "within the timeout: only the lower bound (time spent) is known, and the ratios are lower bounds too.",
        f"max abs diff = max |p_ppl - p_pgmpy| over every state of the compared nodes (tolerance {TOLERANCE:g}); "
        "\"via ppl's order\": too few default queries finished, so a seeded subset of nodes was also queried with "
        "pgmpy's classic VE given ppl's min-fill elimination order (correctness only, not timed above).",
    ]
    return markdown_table(out, columns, title="Exact inference on bnlearn networks: ppl vs pgmpy", notes=notes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--networks", default=",".join(ALL_NETWORKS),
                        help="comma-separated network names (see ppl.models.available_examples())")
    parser.add_argument("--quick", action="store_true", help=f"only the small networks {','.join(QUICK_NETWORKS)}")
    parser.add_argument("--evidence-fraction", type=float, default=0.1, help="share of nodes observed")
    parser.add_argument("--seed", type=int, default=0, help="seed of evidence choice and pgmpy query order")
    parser.add_argument("--repeat", type=int, default=7, help="warm ppl infer calls (median reported)")
    parser.add_argument("--ppl-budget", type=float, default=20.0,
                        help="stop repeating warm ppl calls (after 3) once they took this many seconds")
    parser.add_argument("--pgmpy-cap", type=float, default=60.0,
                        help="seconds of finished pgmpy queries per network before extrapolating")
    parser.add_argument("--pgmpy-query-timeout", type=float, default=60.0,
                        help="stop a single pgmpy query after this many seconds")
    parser.add_argument("--pgmpy-memory-gb", type=float, default=6.0,
                        help="address space a pgmpy query may add before it fails with MemoryError")
    parser.add_argument("--check-nodes", type=int, default=10,
                        help="nodes to check with pgmpy given ppl's elimination order when fewer default "
                             "queries finish")
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the benchmark; returns a process exit code (1 if a result disagrees with pgmpy)."""
    args = parse_args(argv)
    ppl, info = start(args, ("pyro", "pgmpy", "networkx"))
    names = list(QUICK_NETWORKS) if args.quick else [n.strip() for n in args.networks.split(",") if n.strip()]
    warm_up(ppl)
    rows = [run_network(name, args, ppl) for name in names]
    print()
    print(format_rows(rows))
    print()
    print_machine(info)
    bad = [r["network"] for r in rows if not r["ok"]]
    if bad:
        print(f"FAIL: ppl and pgmpy disagree by more than {TOLERANCE:g} on {bad}")
    else:
        print(f"OK: ppl agrees with pgmpy within {TOLERANCE:g} on every queried marginal")
    if args.json:
        write_json(args.json, {"machine": info, "args": vars(args), "results": rows})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
