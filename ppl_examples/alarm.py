"""Diagnose a patient with the ALARM monitoring network, exactly.

ALARM (Beinlich et al. 1989) is a 37-node Bayesian network for monitoring patients in
intensive care, bundled with pgmpy and read here offline from its BIF file.  We

1. load it as a ppl model and print ppl's analysis of it,
2. enter a few monitor readings as evidence,
3. print the exact log evidence, the posterior marginals that moved most from the
   prior, and the MAP explanation (the most probable joint state of every unobserved
   node),
4. compare elimination heuristics (and check them against each other) with
   ``ppl.compare``.

Run: ``python ppl_examples/alarm.py`` (``make demo`` runs it as part 1 of the tour, ``ppl_examples/tour.py``).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import ppl
from ppl.models import example_network

# Monitor readings of one patient (states as named in the network's BIF file).
EVIDENCE = {
    "CVP": "LOW",
    "PCWP": "LOW",
    "BP": "LOW",
    "HR": "HIGH",
    "CO": "LOW",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=8, help="how many most-changed marginals to show")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model = example_network("alarm")
    print(f"ALARM: {len(model.nodes)} nodes, loaded offline from pgmpy's bundled BIF file\n")

    graph = ppl.compile(model, EVIDENCE)
    print(ppl.analyze(graph))
    print()

    prior = ppl.infer(model, method="exact", map=False)
    post = ppl.infer(graph, method="exact")
    print("evidence: " + ", ".join(f"{k}={v}" for k, v in EVIDENCE.items()))
    print(f"log evidence  log p(readings) = {post.log_evidence:.6f} nats "
          f"(p = {math.exp(post.log_evidence):.3e}); computed in {post.elapsed * 1000:.1f} ms\n")

    changes = []
    for node in post.sites:
        p, q = prior.probs(node), post.probs(node)
        changes.append((float(0.5 * (p - q).abs().sum()), node))  # total variation distance
    changes.sort(reverse=True)
    print("posterior marginals that moved most from the prior (total variation distance):")
    print(f"  {'node':<14} {'TV':>6}  prior -> posterior")
    for tv, node in changes[: args.top]:
        names = model.state_names[node]
        p, q = prior.probs(node), post.probs(node)
        cells = ", ".join(f"{s} {float(a):.2f}->{float(b):.2f}" for s, a, b in zip(names, p, q))
        print(f"  {node:<14} {tv:6.3f}  {cells}")
    print()

    mp = post.map()
    diagnoses = ["HYPOVOLEMIA", "LVFAILURE", "ANAPHYLAXIS", "INSUFFANESTH", "PULMEMBOLUS", "INTUBATION",
                 "KINKEDTUBE", "DISCONNECT"]
    print(f"MAP explanation (log p(MAP state, readings) = {post.diagnostics['map_log_joint']:.4f}):")
    shown = [n for n in diagnoses if n in mp]
    print("  " + ", ".join(f"{n}={model.state_names[n][int(mp[n])]}" for n in shown))
    others = [n for n in post.sites if n not in shown]
    print("  " + ", ".join(f"{n}={model.state_names[n][int(mp[n])]}" for n in others))
    print()

    table = ppl.compare(graph, methods=["exact", ("exact", {"heuristic": "min_degree"}),
                                        ("exact", {"dtype": torch.float32})])
    print(table)
    print(f"\ntotal wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
