"""Streaming over minibatches of the data plate (docs/streaming.md): online EM (Cappé &
Moulines 2009) against batch EM's fixed point, SVI for CAVI's conjugate models (Hoffman
et al. 2013) against batch CAVI's ELBO, ``.npy`` memory maps read in chunks, the errors,
the trust verdict, and peak memory bounded by the batch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.distributions import constraints
from ppl.models.mixtures import bayesian_gmm, bgmm_priors

from distributed_worker import normal_gamma  # noqa: E402 - the tests folder is on sys.path

F64 = torch.float64


# small batches: one torch thread (many threads on a shared 2-core machine are ~30x slower here)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@ppl.model
def gmm(x, K=3):
    N, D = x.shape
    w = ppl.param("weights", torch.ones(K, dtype=x.dtype) / K, constraint=constraints.simplex)
    loc = ppl.param("loc", torch.zeros(K, D, dtype=x.dtype))
    cov = ppl.param("cov", torch.eye(D, dtype=x.dtype).repeat(K, 1, 1), constraint=constraints.positive_definite)
    with ppl.plate("data", N):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("obs", dist.MultivariateNormal(loc[z], covariance_matrix=cov[z]), obs=x)


def _mixture(n_per, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0., 0.], [5., 5.], [-5., 5.]], dtype=F64)
    x = torch.cat([c + torch.randn(n_per, 2, generator=g, dtype=F64) for c in centers])
    return x[torch.randperm(len(x), generator=g)]


X = _mixture(700)                                          # N = 2100
INIT = {"loc": torch.tensor([[1., 0.], [4., 4.], [-4., 4.]], dtype=F64)}


def batches(x, size):
    return lambda: ({"x": x[i:i + size]} for i in range(0, len(x), size))


@pytest.fixture(scope="module")
def batch_em():
    return ppl.infer(gmm, {"x": X}, method="em", init=INIT, max_iter=500, tol=1e-10)


# ------------------------------------------------------------------------ online EM
def test_online_em_converges_to_batch_em_fixed_point(batch_em):
    with pytest.warns(ppl.TrustWarning, match="not at a fixed point"):
        post = ppl.infer_stream(gmm, batches(X, 300), method="em", init=INIT, epochs=30, step_power=0.6)
    for name in ("weights", "loc", "cov"):
        assert torch.allclose(post.params[name], batch_em.params[name], atol=0.01), name
    assert abs(post.log_evidence - batch_em.log_evidence) < 0.1            # nats, N = 2100
    # θ barely moved over the last epoch, but one batch EM step from it still moves it by more
    # than stream_tol (it is ~1e-2 from the fixed point): not converged, and it says so
    d = post.diagnostics["stream"]
    assert d["moved_last_epoch"] < 1e-3 < d["batch_step_moves"]
    assert not post.converged and post.trust.verdict == "unreliable" and "fixed point" in str(post.trust.reasons)
    d = post.diagnostics["stream"]
    assert d["batches"] == 30 * 7 and d["num_points"] == 2100 and d["final_step"] == pytest.approx(211 ** -0.6)
    assert d["compiles"] == 1 and d["rebinding"][300].startswith("in place")   # one check compile, no trace per batch


def test_online_em_one_giant_batch_is_batch_em():
    one = ppl.infer_stream(gmm, lambda: iter([{"x": X}]), method="em", init=INIT, epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ppl.infer(gmm, {"x": X}, method="em", init=INIT, max_iter=1, tol=0)
    for name in ref.params:
        torch.testing.assert_close(one.params[name], ref.params[name], rtol=1e-12, atol=1e-12)
    assert one.log_evidence == pytest.approx(ref.log_evidence, rel=1e-12)


def test_stopped_too_early_is_unreliable_and_keeps_no_local_posterior():
    with pytest.warns(ppl.TrustWarning, match="run more epochs"):
        post = ppl.infer_stream(gmm, batches(X, 300), method="em", init=INIT, epochs=1)
    assert post.converged is False and post.trust.verdict == "unreliable"
    assert post.trust.numbers["moved_last_epoch"] >= 1e-3
    with pytest.raises(ppl.DataError, match="per-point latent of the data plate 'data'"):
        post.marginal("z")


def test_npy_memory_map_in_chunks(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, X.numpy())
    stream = ppl.stream_npy(path, key="x", batch_size=400)        # 5 batches of 400 and one of 100
    assert stream.num_points == 2100
    sizes = [b["x"].shape[0] for b in stream()]
    assert sizes == [400] * 5 + [100]
    post = ppl.infer_stream(gmm, stream, method="em", init=INIT, epochs=3)
    ref = ppl.infer_stream(gmm, batches(X, 400), method="em", init=INIT, epochs=3)
    for name in ref.params:
        torch.testing.assert_close(post.params[name], ref.params[name], rtol=0, atol=0)
    assert set(post.diagnostics["stream"]["rebinding"]) == {400, 100}   # compiled once per batch size


# ------------------------------------------------------------------------ SVI for CAVI
def test_svi_normal_gamma_approaches_batch_cavi():
    g = torch.Generator().manual_seed(0)
    x = 1.5 + 0.7 * torch.randn(3000, generator=g, dtype=F64)
    ref = ppl.infer(normal_gamma, {"x": x}, method="cavi")
    post = ppl.infer_stream(normal_gamma, batches(x, 500), method="cavi", epochs=20)
    assert abs(post.elbo - ref.elbo) < 0.05                              # nats, N = 3000
    assert float(post.mean("mu")) == pytest.approx(float(ref.mean("mu")), abs=2e-3)
    assert float(post.mean("tau")) == pytest.approx(float(ref.mean("tau")), rel=2e-3)
    assert post.converged


def test_svi_bayesian_gmm_approaches_batch_cavi():
    x = _mixture(1000, seed=1)
    priors = bgmm_priors(x, 3)
    priors.pop("x")
    ref = ppl.infer(bayesian_gmm, {**priors, "x": x}, method="cavi", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.TrustWarning)                 # SVI's q is not checked (see the docs)
        post = ppl.infer_stream(bayesian_gmm, batches(x, 500), priors, method="cavi", epochs=10, seed=0)
    assert abs(post.elbo - ref.elbo) < 0.5                                  # nats, N = 3000
    order = lambda m: m[torch.argsort(m[:, 0] * 100 + m[:, 1])]
    torch.testing.assert_close(order(post.mean("loc")), order(ref.mean("loc")), atol=0.02, rtol=0)
    assert post.trust.verdict == "unreliable" and "not checked" in post.trust.reasons[0]
    with pytest.raises(ppl.DataError, match="keeps no per-point posteriors"):
        post.marginal("z")


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize("stream, match", [
    (lambda: iter([{"x": X[:300]}, {"y": X[300:600]}]), "missing"),
    (lambda: iter([{"x": X[:300]}, {"x": torch.zeros(300, 3, dtype=F64)}]), "may differ only in their first"),
    (lambda: iter([{"x": X[:300]}, {"x": X[:0]}]), "empty"),
    (lambda: iter([{"x": X[:300]}, [1, 2]]), "not a dict"),
    (lambda: iter([{"x": X[:300]}, {"x": X[:300] * float("nan")}]), "NaN"),
])
def test_bad_batches_raise_data_error(stream, match):
    with pytest.raises(ppl.DataError, match=match):
        ppl.infer_stream(gmm, stream, method="em", init=INIT, epochs=1)


def test_empty_stream_and_wrong_num_points():
    with pytest.raises(ppl.DataError, match="no batch"):
        ppl.infer_stream(gmm, lambda: iter([]), method="em")
    with pytest.raises(ppl.DataError, match="num_points"):
        ppl.infer_stream(gmm, batches(X, 300), method="em", init=INIT, epochs=1, num_points=5000)


@pytest.mark.parametrize("options", [{"step_power": 0.5}, {"step_power": 1.2}, {"step_offset": -1.0},
                                     {"epochs": 0}, {"n_init": 2}, {"stream": 3}])
def test_bad_options_raise_option_error(options):
    with pytest.raises(ppl.OptionError):
        ppl.infer(gmm, {"x": X[:300]}, method="em", **{"stream": batches(X, 300), **options})


# ------------------------------------------------------------------------ memory
_PEAK = textwrap.dedent("""
    import json, resource, sys, numpy as np, torch, ppl
    sys.path.insert(0, {tests!r})
    from test_streaming import gmm
    torch.set_num_threads(1)
    path, mode = sys.argv[1], sys.argv[2]
    init = {{"loc": torch.tensor([[1., 0.], [4., 4.], [-4., 4.]], dtype=torch.float64)}}
    ppl.infer(gmm, {{"x": torch.as_tensor(np.load(path, mmap_mode="r")[:1000].copy())}}, method="em", max_iter=1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "stream":
        ppl.infer_stream(gmm, ppl.stream_npy(path, batch_size=20_000), method="em", init=init, epochs=1)
    else:
        ppl.infer(gmm, {{"x": torch.as_tensor(np.load(path))}}, method="em", init=init, max_iter=3, tol=0)
    print(json.dumps({{"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}}))
""")


@pytest.mark.slow
def test_peak_memory_bounded_by_the_batch(tmp_path):
    """600 000 points x 2 (9.6 MB): the in-memory fit's peak grows with N, the stream's with B = 20 000."""
    path = tmp_path / "big.npy"
    np.save(path, _mixture(200_000, seed=2).numpy())
    code = _PEAK.format(tests=str(__import__("pathlib").Path(__file__).parent))
    peak = {}
    for mode in ("stream", "memory"):
        out = subprocess.run([sys.executable, "-c", code, str(path), mode], capture_output=True, text=True,
                             timeout=300, check=True)
        peak[mode] = json.loads(out.stdout.strip().splitlines()[-1])["peak_kib"]
    assert peak["stream"] * 4 < peak["memory"], peak


def test_infer_with_stream_and_no_batch_in_data_compiles_on_the_first_batch():
    """``ppl.infer(model, data_without_the_batch, stream=...)`` is ``ppl.infer_stream``."""
    a = ppl.infer(gmm, {"K": 3}, method="em", stream=batches(X, 300), init=INIT, epochs=3)
    b = ppl.infer_stream(gmm, batches(X, 300), {"K": 3}, method="em", init=INIT, epochs=3)
    for name in b.params:
        torch.testing.assert_close(a.params[name], b.params[name], rtol=0, atol=0)


def test_online_em_converged_claims_hold_against_batch_em(batch_em):
    """Where the verdict says converged, θ is within stream_tol (relative) of batch EM's."""
    post = ppl.infer_stream(gmm, batches(X, 300), method="em", init=INIT, epochs=30, step_power=1.0, stream_tol=1e-2)
    assert post.converged and post.trust.verdict == "reliable"
    for name in ("weights", "loc", "cov"):
        ref = batch_em.params[name]
        assert float((post.params[name] - ref).abs().max() / ref.abs().max()) < 1e-2, name


def test_polish_passes_reach_batch_em_fixed_point_in_bounded_memory(batch_em):
    """Batch EM steps over the stream after the online epochs: the converged claim is batch
    EM's own criterion, and θ matches the in-memory fit."""
    post = ppl.infer_stream(gmm, batches(X, 300), method="em", init=INIT, epochs=3, polish_passes=200,
                            stream_tol=1e-6)
    d = post.diagnostics["stream"]
    assert post.converged and post.trust.verdict == "reliable" and 0 < d["polish_passes"] <= 200
    assert d["batch_step_moves"] < 1e-6
    for name in ("weights", "loc", "cov"):  # both stop where an EM step moves θ ~1e-6: EM's slow tail leaves ~1e-5
        torch.testing.assert_close(post.params[name], batch_em.params[name], rtol=0, atol=1e-4)
    assert post.log_evidence == pytest.approx(batch_em.log_evidence, abs=1e-6)
