"""Data-parallel inference on torch.distributed (docs/distributed.md).

Two processes join a gloo group on loopback (``tests/distributed_worker.py``, started here
with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR=127.0.0.1``/a free ``MASTER_PORT``, as torchrun
would), each holds an uneven shard of every data set and calls ``ppl.infer(...,
distributed=True)``.  The reference is the same call on one process with all the data,
which shares no collective with the ranks:

* EM on a GMM (closed-form M-steps, a gradient M-step, and a run to convergence) and CAVI
  (the Bayesian GMM on iris, a Normal mean with a Gamma precision on uneven and even
  shards, an all-discrete mixture) give the one-process params / variational parameters to
  1e-6 relative (they differ only by the order of floating-point sums);
* SVI on a model whose guide draws only global latents, with a fixed step count and seed,
  gives the one-process parameters, ELBO and PSIS k̂ to 1e-6: every rank draws what one
  process draws (rank 0's RNG is shared each step), and the gradients averaged with
  weights N_r / N are the full-data gradient;
* SVI with a per-point discrete latent summed out: the ranks agree exactly, but the
  guide's set-up run draws that latent for the rank's points only, so the random stream
  (and every later draw) is not one process's: compared with one process up to Monte
  Carlo error only;
* every rank ends with the same posterior, records ``diagnostics["distributed"]``, and
  refuses the same bad runs with the same typed error (no rank left waiting).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import ppl

pytest.importorskip("sklearn")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import distributed_worker as dw  # noqa: E402

WORKER = Path(__file__).with_name("distributed_worker.py")
LOCAL = {("cavi_discrete", "z")}  # per-point quantities: each rank holds its own points'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(one-process references, [rank 0's results, rank 1's])``."""
    out = tmp_path_factory.mktemp("ranks")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(out)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    try:
        full = dw.datasets()
        data = {**full, "iris_full": full["iris"]}
        refs = {case: dw.run_case(case, data)[0] for case in dw.CASES}  # while the ranks run
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n\n".join(log[-3000:] for log in logs)
    return refs, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _close(got, want, case, key):
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9, msg=lambda m: f"{case}/{key}: {m}")


@pytest.mark.parametrize("case", ["em", "em_gradient", "em_converged", "cavi_bgmm", "cavi_normal_gamma",
                                  "cavi_normal_even", "svi"])
def test_two_ranks_give_the_one_process_answer(runs, case):
    refs, ranks = runs
    want = refs[case]
    for r, got in enumerate(ranks):
        got = got["results"][case]
        assert set(got) == set(want)
        for key in want:
            _close(got[key], want[key], f"rank {r} {case}", key)
    if case == "em_converged":  # the stopping rule reads the summed log likelihood: same iteration
        assert float(ranks[0]["results"][case]["n_iter"]) == float(want["n_iter"])
        assert float(want["converged"]) == 1.0


def test_cavi_discrete_path_gives_each_rank_its_points_of_the_one_process_q(runs):
    refs, ranks = runs
    want = refs["cavi_discrete"]
    cut = dw.CUTS["mixture"]
    _close(ranks[0]["results"]["cavi_discrete"]["z"], want["z"][:cut], "rank 0 cavi_discrete", "z")
    _close(ranks[1]["results"]["cavi_discrete"]["z"], want["z"][cut:], "rank 1 cavi_discrete", "z")
    for r in range(2):
        _close(ranks[r]["results"]["cavi_discrete"]["elbo"], want["elbo"], f"rank {r} cavi_discrete", "elbo")


def test_every_rank_ends_with_the_same_posterior(runs):
    _, (a, b) = runs
    assert a["trust"] == b["trust"]  # verdicts agreed over the ranks (shard_trust for CAVI)
    assert a["trust"]["cavi_discrete"][0] == "reliable"  # exact marginals checked on every shard
    for case in dw.CASES:
        for key, value in a["results"][case].items():
            if (case, key) in LOCAL:
                continue
            other = b["results"][case][key]
            assert value.shape == other.shape and (torch.equal(value, other) or bool(value.isnan().all())), \
                (case, key, value, other)


def test_svi_with_a_summed_out_local_latent_agrees_with_one_process_up_to_monte_carlo_error(runs):
    refs, ranks = runs
    want, got = refs["svi_enumerated"], ranks[0]["results"]["svi_enumerated"]
    loc, ref = got["AutoNormal.locs.loc"], want["AutoNormal.locs.loc"]
    assert float((loc - ref).abs().max()) < 0.1, (loc, ref)  # posterior sds of the locations are ~0.17
    assert abs(float(got["elbo"] - want["elbo"])) < 1.0


DATA_OF = {"em": "gmm", "em_gradient": "gmm", "em_converged": "gmm", "cavi_bgmm": "iris", "cavi_normal_gamma": "normal",
           "cavi_normal_even": "normal_even", "cavi_discrete": "mixture", "svi": "normal", "svi_enumerated": "two"}


def test_diagnostics_record_the_shard(runs):
    _, ranks = runs
    full = dw.datasets()
    for r, res in enumerate(ranks):
        for case in dw.CASES:
            name = DATA_OF[case]
            n, local = len(full[name]), len(dw.shard(full[name], name, r))
            assert res["where"][case] == {"world_size": 2, "rank": r, "global_plate_size": n,
                                          "local_plate_size": local, "plate": "data"}, case


@pytest.mark.parametrize("case, kind, words", [
    ("different_sites", "ModelError", ["site(s) ['b']", "only some ranks"]),
    ("different_priors", "DataError", ["argument 'm0' differs between ranks", "all_reduce"]),
    ("no_plate", "ModelError", ["no plate over its observed data"]),
    ("global_latent_em", "UnsupportedModelError", ["['c'] is outside it", "data plate 'data'"]),
    ("local_latent_svi", "UnsupportedModelError", ["['h']", "data plate 'data'"]),
    ("unknown_plate", "OptionError", ["no plate named 'rows'"]),
    ("exact", "UnknownOptionError", ["distributed is taken by", "em", "cavi", "svi"]),
    ("auto", "OptionError", ["method 'auto' is not accepted", "em", "cavi", "svi"]),
])
def test_bad_runs_fail_alike_on_every_rank(runs, case, kind, words):
    _, ranks = runs
    for res in ranks:
        message = res["errors"][case]
        assert message is not None and message.startswith(kind + ":"), message
        assert all(w in message for w in words), message


@pytest.mark.parametrize("method", ["em", "cavi", "svi"])
def test_distributed_without_a_process_group_says_how_to_start_one(method):
    assert not torch.distributed.is_initialized()
    model, x = (dw.gmm, dw.datasets()["gmm"]) if method == "em" else (dw.normal_gamma, dw.datasets()["normal"])
    with pytest.raises(ppl.OptionError, match="init_process_group.*torchrun"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ppl.infer(model, {"x": x}, method=method, distributed=True, num_steps=5) if method == "svi" else \
                ppl.infer(model, {"x": x}, method=method, distributed=True)


@pytest.mark.parametrize("method", ["exact", "map", "laplace", "pathfinder", "nuts", "chees"])
def test_methods_that_do_not_run_distributed_name_those_that_do(method):
    x = dw.datasets()["normal"]
    model = dw.fixed_mixture if method == "exact" else dw.normal_gamma
    with pytest.raises(ppl.OptionError, match=r"distributed is taken by em, .*cavi.*") as info:
        ppl.infer(model, {"x": x}, method=method, distributed=True)
    assert isinstance(info.value, ppl.UnknownOptionError) and "svi" in str(info.value)
    with pytest.raises(ppl.OptionError, match="choose a method that runs data-parallel: em, .*svi"):
        ppl.infer(model, {"x": x}, method="auto", distributed=True)


@pytest.mark.filterwarnings("ignore::ppl.TrustWarning")
def test_distributed_false_is_the_ordinary_run():
    x = dw.datasets()["normal"]
    a = ppl.infer(dw.normal_gamma, {"x": x}, method="cavi", seed=0)
    b = ppl.infer(dw.normal_gamma, {"x": x}, method="cavi", seed=0, distributed=False)
    assert a.elbo == b.elbo and "distributed" not in b.diagnostics


@pytest.mark.slow
def test_the_example_runs_under_torchrun(tmp_path):
    """ppl_examples/distributed_gmm.py on two processes started by torchrun: the fits equal
    one process's on all the rows."""
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(root / "ppl_examples" / "distributed_gmm.py")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "same answer as one process: yes" in done.stdout, done.stdout
    assert "wine: 178 rows on 2 process(es)" in done.stdout
