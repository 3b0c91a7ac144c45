"""Learn the CPTs of the asia Bayesian network by EM from data with a hidden node and
entries missing at random.

The asia network (Lauritzen & Spiegelhalter 1988; 8 binary nodes, bundled with pgmpy and
read offline by ``ppl.models.example_network("asia")``) plays the true network.  We

1. draw N complete rows from it (``ppl.models.sample_network_data``, seeded);
2. hide the node ``either`` ("tuberculosis or lung cancer") in every row: it becomes a
   latent variable, as in a study that never records it; and remove a fraction of the
   other entries completely at random (``ppl.models.hide_at_random``; -1 = missing);
3. build a model of the same graph with unknown CPTs
   (``ppl.models.learnable_from_network``: every CPT a ``ppl.param`` with a simplex
   constraint, the rows in one plate, missing entries latent through ``obs_mask``) and
   learn the CPTs with ``ppl.infer(model, data, method="em")`` from several random
   starts (``ppl.models.make_init``), keeping the one with the highest log-likelihood;
4. print the log-likelihood history of the kept run, whether it converged, the learned
   CPTs of a few nodes next to the true ones and to the complete-data maximum-likelihood
   estimate (normalised counts on the rows before anything was removed), the largest
   error of every CPT, and the total-variation distance of each estimate's joint
   distribution from the truth.

The states of a hidden node have no names in the data: relabelling them (swapping the
two states of ``either``, together with the matching axes of its children's CPTs)
gives a network with exactly the same distribution of the observed nodes, so EM can
converge to either labelling (label switching; Koller & Friedman 2009, §19.5). Before we
compare tables, the learned labelling is matched to the true one: the permutation of the
hidden node's states closest to the truth is applied, and printed. The joint
distribution of the observed nodes, and the log-likelihood, do not depend on it. Here
the true ``either`` is a deterministic function of its parents (lung OR tub), so EM
recovers its CPT (after the relabelling) and those of its children ``xray`` and
``dysp``, although ``either`` is never observed.

EM's optimum is the maximum-likelihood estimate from the incomplete data, so its
log-likelihood is at least that of the true CPTs; the script prints both, and the
complete-data estimate's, all on the same incomplete data.

Run: ``python ppl_examples/em_bn_missing.py`` (``--quick`` for a short smoke run;
``--help`` for the options).
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import numpy as np
import torch

import ppl
from ppl.models import (
    count_cpts,
    example_network,
    hide_at_random,
    learnable_from_network,
    learned_network,
    make_init,
    sample_network_data,
)

try:  # run as a script (python ppl_examples/...) or as a module
    from _threads import limit_threads
except ImportError:  # pragma: no cover
    from ppl_examples._threads import limit_threads

SHOWN = ("either", "xray", "dysp", "lung")  # nodes whose tables are printed


# ---------------------------------------------------------------------------- data
def make_data(n, hidden, fraction, seed):
    """(true network, complete columns, observed columns): ``n`` rows drawn from asia,
    the ``hidden`` nodes left out, and each other entry removed with probability
    ``fraction``."""
    truth = example_network("asia")
    complete = sample_network_data(truth, n, seed=seed)
    observed = {k: v for k, v in complete.items() if k not in hidden}
    observed = hide_at_random(observed, fraction, seed=seed + 1)
    return truth, complete, observed


# ---------------------------------------------------------------------------- fitting
def fit(model, observed, starts, seed, max_iter, tol):
    """EM from ``starts`` random starts (seeds ``seed``, ``seed + 1``, ...); returns
    (best posterior, per-start rows (seed, log-likelihood, iterations, converged,
    seconds), the compiled graph)."""
    graph = ppl.compile(model, observed)  # compiled once; every start reuses it
    runs = []
    for s in range(seed, seed + starts):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ppl.ConvergenceWarning)  # reported in the table instead
            post = ppl.infer(graph, method="em", init=make_init(model, "random", seed=s), max_iter=max_iter,
                             tol=tol, progress=False, marginals=False, map=False)
        runs.append((s, post, time.perf_counter() - start))
    best = max(runs, key=lambda r: r[1].log_evidence)[1]
    rows = [(s, p.log_evidence, p.diagnostics["n_iter"], bool(p.converged), sec) for s, p, sec in runs]
    return best, rows, graph


def log_likelihood(graph, model, cpds):
    """log p(observed data; θ) of a network's CPTs ``cpds`` (node -> (parents, table)),
    exact: an EM run with no M-step (``max_iter=0``) evaluates its start."""
    init = {model.param_names[n]: torch.as_tensor(t, dtype=torch.float64) for n, (_, t) in cpds.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        post = ppl.infer(graph, method="em", init=init, max_iter=0, progress=False, marginals=False, map=False)
    return post.log_evidence


# ---------------------------------------------------------------------------- comparing
def tables_of(cpds):
    """node -> numpy table."""
    return {n: np.asarray(t, dtype=np.float64) for n, (_, t) in cpds.items()}


def relabel(tables, parents, node, perm):
    """The tables with the states of ``node`` renamed: new state j is old state perm[j]
    (its own table's last axis and its axis in each child's table)."""
    out = dict(tables)
    out[node] = tables[node][..., list(perm)]
    for child, ps in parents.items():
        if node in ps:
            out[child] = np.take(tables[child], list(perm), axis=list(ps).index(node))
    return out


def align_hidden(tables, truth, parents, hidden):
    """Undo label switching: for each hidden node, the permutation of its states whose
    relabelled tables (its own and its children's) are closest to the truth (largest
    absolute difference).  Returns (aligned tables, {node: permutation})."""
    perms = {}
    for node in hidden:
        family = [node] + [c for c, ps in parents.items() if node in ps]
        card = tables[node].shape[-1]
        best = min(itertools.permutations(range(card)),
                   key=lambda p: max(np.abs(relabel(tables, parents, node, p)[f] - truth[f]).max() for f in family))
        tables = relabel(tables, parents, node, best)
        perms[node] = best
    return tables, perms


def joint(tables, parents, nodes):
    """The joint distribution of all nodes (one axis per node, in ``nodes`` order)."""
    letters = {n: chr(ord("a") + i) for i, n in enumerate(nodes)}
    operands = []
    for n in nodes:
        operands += [tables[n], [ord(letters[p]) - ord("a") for p in parents[n]] + [ord(letters[n]) - ord("a")]]
    return np.einsum(*operands, list(range(len(nodes))))


def total_variation(p, q):
    return 0.5 * float(np.abs(p - q).sum())


# ---------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="rows sampled from the true network")
    parser.add_argument("--hidden", default="either", help="comma-separated nodes never observed (latent)")
    parser.add_argument("--missing", type=float, default=0.25,
                        help="probability that each other entry is removed (missing completely at random)")
    parser.add_argument("--starts", type=int, default=3, help="random starts of EM; the best is kept")
    parser.add_argument("--max-iter", type=int, default=500, help="EM iterations at most, per start")
    parser.add_argument("--tol", type=float, default=1e-6, help="stop when the average log-likelihood changes less")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data; starts use seed, seed + 1, ...")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (0: the libraries' defaults)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1000 rows, 1 start, at most 60 iterations, tol 1e-5")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 1000)
        args.starts = 1
        args.max_iter = min(args.max_iter, 60)
        args.tol = max(args.tol, 1e-5)
    with limit_threads(args.threads):
        _run(args)


def _run(args):
    start = time.perf_counter()
    hidden = [h for h in args.hidden.split(",") if h]
    truth, complete, observed = make_data(args.n, hidden, args.missing, args.seed)
    nodes = truth.nodes
    parents = {n: tuple(truth.cpds[n][0]) for n in nodes}
    entries = sum(v.numel() for v in observed.values())
    missing = sum(int((v < 0).sum()) for v in observed.values())
    complete_rows = int(torch.stack([v >= 0 for v in observed.values()]).all(0).sum())
    print(f"asia: {len(nodes)} binary nodes, N = {args.n} rows sampled from the true network (seed {args.seed})")
    print(f"  hidden in every row: {', '.join(hidden) or 'none'}; missing at random: {missing} of {entries} other "
          f"entries ({missing / entries:.1%}); rows with every other node observed: {complete_rows}")

    model = learnable_from_network(truth, name="asia_em")
    best, rows, graph = fit(model, observed, args.starts, args.seed, args.max_iter, args.tol)
    print(f"\nEM from {args.starts} random start(s) (max_iter={args.max_iter}, tol={args.tol:g}, "
          f"threads={args.threads or 'default'}):")
    print(f"  {'seed':>4} {'log lik':>14} {'iters':>5} {'conv':>5} {'seconds':>8}")
    for s, ll, it, conv, sec in rows:
        print(f"  {s:>4} {ll:14.4f} {it:5d} {str(conv):>5} {sec:8.2f}")
    h = best.history
    shown = sorted({0, 1, 2, 5, 10, 20, 50, 100, len(h) - 1} & set(range(len(h))))
    print("  kept run, log-likelihood by iteration: " + ", ".join(f"{i}: {h[i]:.4f}" for i in shown))
    closed = sum(v.startswith("closed form") for v in best.diagnostics["m_step"].values())
    print(f"  converged: {best.converged}; iterations: {best.diagnostics['n_iter']}; "
          f"non-decreasing: {bool(np.all(np.diff(h) >= -1e-9 * np.abs(h[1:])))}; "
          f"M-steps in closed form: {closed} of {len(best.diagnostics['m_step'])} CPTs")

    true_tables = tables_of(truth.cpds)
    learned = tables_of(learned_network(model, best.params).cpds)
    learned, perms = align_hidden(learned, true_tables, parents, hidden)
    mle = tables_of(count_cpts(model, complete))              # all values, before anything was removed
    available = count_cpts(model, observed)                   # rows with the node and its parents observed
    for node, perm in perms.items():
        how = ("the learned labelling is the true one" if list(perm) == sorted(perm) else
               f"learned states {list(perm)} renamed {sorted(perm)} (EM found the other labelling)")
        print(f"  label switching, hidden node '{node}': {how}")

    ll_true = log_likelihood(graph, model, truth.cpds)
    ll_mle = log_likelihood(graph, model, {n: (parents[n], t) for n, t in mle.items()})
    print(f"\nlog-likelihood of the incomplete data: EM {best.log_evidence:.4f}, true CPTs {ll_true:.4f}, "
          f"complete-data MLE {ll_mle:.4f}  (EM >= true: {best.log_evidence >= ll_true - 1e-6})")

    print("\nlargest absolute error of each CPT against the truth:")
    print(f"  {'node':<8} {'parents':<12} {'EM, incomplete data':>20} {'MLE, complete data':>19} "
          f"{'available-case counts':>22}")
    for n in nodes:
        fam_known = all(v in observed for v in parents[n] + (n,))
        avail = (f"{np.abs(np.asarray(available[n][1]) - true_tables[n]).max():22.4f}" if fam_known
                 else f"{'(hidden)':>22}")
        print(f"  {n:<8} {','.join(parents[n]) or '-':<12} {np.abs(learned[n] - true_tables[n]).max():20.4f} "
              f"{np.abs(mle[n] - true_tables[n]).max():19.4f} {avail}")
    p_true = joint(true_tables, parents, nodes)
    print(f"  total-variation distance of the joint distribution (256 states) from the truth: "
          f"EM {total_variation(joint(learned, parents, nodes), p_true):.4f}, "
          f"complete-data MLE {total_variation(joint(mle, parents, nodes), p_true):.4f}")

    states = truth.state_names
    print("\nCPT rows P(node | parents), first state's probability (states: yes, no): EM / true / complete-data MLE")
    for n in SHOWN:
        if n not in parents:
            continue
        print(f"  {n} | {', '.join(parents[n]) or '-'}" + ("   (hidden)" if n in hidden else ""))
        for config in itertools.product(*[range(true_tables[p].shape[-1]) for p in parents[n]]):
            label = ", ".join(f"{p}={states[p][j]}" for p, j in zip(parents[n], config)) or "(no parents)"
            i = tuple(config) + (0,)
            print(f"    {label:<24} {learned[n][i]:7.4f} {true_tables[n][i]:7.4f} {mle[n][i]:7.4f}")
    print(f"\ntotal wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
