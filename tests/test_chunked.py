"""Large observed sites evaluated chunk by chunk (ppl.compiler.chunked, issue 18 memory).

Reference: the same exact inference with chunking off (the whole log density at once), and
a closed-form mixture likelihood; the chunk size is set tiny so that every site chunks.
"""

from __future__ import annotations

import pytest
import torch

import pyro.distributions as dist
import pyro.poutine as poutine

import ppl
from ppl.compiler import chunked


def _run(model, data, chunk):
    old, inner, used = chunked.CHUNK_ELEMENTS, chunked._chunked, []

    def counting(*args):
        out = inner(*args)
        used.append(out is not None)
        return out

    chunked.CHUNK_ELEMENTS, chunked._chunked = chunk, counting
    try:
        return ppl.infer(ppl.compile(model, data), method="exact", map=False), any(used)
    finally:
        chunked.CHUNK_ELEMENTS, chunked._chunked = old, inner


def _same(model, data, sites):
    whole, used = _run(model, data, 1 << 40)
    assert not used
    small, used = _run(model, data, 7)  # every site above 7 elements goes in chunks of a row or two
    assert used  # the chunked path did run
    assert small.log_evidence == pytest.approx(whole.log_evidence, rel=1e-13, abs=1e-12)
    for s in sites:
        torch.testing.assert_close(small.probs(s), whole.probs(s), rtol=0, atol=1e-13)
    return small


K, D, N = 3, 4, 23
gen = torch.Generator().manual_seed(0)
X = torch.randn(N, D, generator=gen, dtype=torch.float64)
LOCS = torch.randn(K, D, generator=gen, dtype=torch.float64)
COV = torch.eye(D, dtype=torch.float64) * 0.7 + 0.1
COVARIATE = torch.randn(N, generator=gen, dtype=torch.float64)
W = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


@ppl.model
def diag_mixture(x):
    with ppl.plate("n", x.shape[0]):
        z = ppl.sample("z", dist.Categorical(W))
        ppl.sample("x", dist.Normal(LOCS[z], 1.3).to_event(1), obs=x)


@ppl.model
def full_mixture(x):
    with ppl.plate("n", x.shape[0]):
        z = ppl.sample("z", dist.Categorical(W))
        ppl.sample("x", dist.MultivariateNormal(LOCS[z], covariance_matrix=COV), obs=x)


@ppl.model
def per_point_parameters(y, c):  # the observed site's parameters vary along the plate
    with ppl.plate("n", y.shape[0]):
        z = ppl.sample("z", dist.Categorical(W))
        rate = torch.exp(0.3 * c + torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)[z])
        ppl.sample("y", dist.Poisson(rate), obs=y)


@ppl.model
def masked_and_scaled(x):
    with ppl.plate("n", x.shape[0]):
        z = ppl.sample("z", dist.Categorical(W))
        keep = torch.arange(x.shape[0]) % 3 != 0
        with poutine.scale(scale=0.5), poutine.mask(mask=keep):
            ppl.sample("x", dist.Normal(LOCS[z], 1.0).to_event(1), obs=x)


def test_diagonal_mixture_matches_the_whole_evaluation_and_the_closed_form():
    post = _same(diag_mixture, {"x": X}, ["z"])
    comp = torch.distributions.Normal(LOCS.unsqueeze(1), 1.3).log_prob(X.unsqueeze(0)).sum(-1)  # (K, N)
    expect = torch.logsumexp(comp + W.log().unsqueeze(1), dim=0).sum()
    assert post.log_evidence == pytest.approx(float(expect), rel=1e-12)


def test_full_covariance_per_point_parameters_and_masks_chunk_alike():
    _same(full_mixture, {"x": X}, ["z"])
    y = torch.poisson(torch.full((N,), 3.0), generator=gen).to(torch.float64)
    _same(per_point_parameters, {"y": y, "c": COVARIATE}, ["z"])
    post = _same(masked_and_scaled, {"x": X}, ["z"])
    comp = torch.distributions.Normal(LOCS.unsqueeze(1), 1.0).log_prob(X.unsqueeze(0)).sum(-1)
    keep = (torch.arange(N) % 3 != 0).to(torch.float64)
    expect = torch.logsumexp(0.5 * keep * comp + W.log().unsqueeze(1), dim=0).sum()
    assert post.log_evidence == pytest.approx(float(expect), rel=1e-12)


def test_slicing_a_distribution_keeps_every_parameter_row():
    fn = dist.Normal(torch.randn(5, 6, generator=gen), torch.rand(5, 6, generator=gen) + 0.1).to_event(0)
    part = chunked._slice_dist(fn, -1, 2, 3)
    v = torch.randn(5, 3, generator=gen)
    torch.testing.assert_close(part.log_prob(v), fn.log_prob(torch.cat([v[:, :0].new_zeros(5, 2), v,
                                                                         v.new_zeros(5, 1)], 1))[:, 2:5])


def test_parameters_expanded_along_the_plate_are_kept_as_one_copy():
    """A plate expands a distribution's parameters with stride 0; a chunk keeps one copy
    (an MVN rebuilt from N copies of its precision would run N Cholesky factorisations)."""
    prec = torch.eye(D, dtype=torch.float64) * 2.0
    fn = dist.MultivariateNormal(LOCS.unsqueeze(1), precision_matrix=prec).expand((K, N))
    assert fn.precision_matrix.stride(1) == 0
    part = chunked._slice_dist(fn, -1, 5, 4)
    assert tuple(part.batch_shape) == (K, 1)  # broadcasts against the chunk of data
    torch.testing.assert_close(part.log_prob(X[5:9]), fn.log_prob(X)[:, 5:9])


def test_mahalanobis_in_chunks_equals_the_whole_and_torch():
    """ops.expfam.mvn_log_prob over many points takes them in chunks (bounded temporaries)."""
    from ppl.ops import expfam

    x = torch.randn(50, D, generator=gen, dtype=torch.float64)
    loc = torch.randn(K, 1, D, generator=gen, dtype=torch.float64)
    tril = torch.linalg.cholesky(COV).expand(K, 1, D, D)
    old = expfam.MAHALANOBIS_CHUNK
    try:
        expfam.MAHALANOBIS_CHUNK = 1 << 40
        whole = expfam.mvn_log_prob(x, loc, tril)
        expfam.MAHALANOBIS_CHUNK = 3 * K * D  # three points a chunk
        parts = expfam.mvn_log_prob(x, loc, tril)
    finally:
        expfam.MAHALANOBIS_CHUNK = old
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(parts, torch.distributions.MultivariateNormal(loc, scale_tril=tril).log_prob(x))


def test_three_operand_sums_in_chunks_equal_one_einsum():
    """ops.expfam.broadcast_einsum sums a large summed dim in chunks (Σ_n w_nk x_nd x_ne)."""
    from ppl.ops import expfam

    w = torch.rand(40, 1, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(40, 1, 1, 4, generator=gen, dtype=torch.float64)
    c = torch.randn(1, 5, 1, generator=gen, dtype=torch.float64)
    ops = [(w, ""), (x, "D"), (x, "E"), (c, "")]
    old = expfam.EINSUM_CHUNK
    try:
        expfam.EINSUM_CHUNK = 1 << 40
        whole = expfam.broadcast_einsum(ops, "DE", keep=[1, 2], rank=3)
        expfam.EINSUM_CHUNK = 50  # a few rows of the 40 a chunk
        parts = expfam.broadcast_einsum(ops, "DE", keep=[1, 2], rank=3)
    finally:
        expfam.EINSUM_CHUNK = old
    assert parts.shape == whole.shape == (5, 3, 4, 4)
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=1e-12)
    direct = torch.einsum("nk,nd,ne,m->mkde", w[:, 0], x[:, 0, 0], x[:, 0, 0], c[0, :, 0])
    torch.testing.assert_close(parts, direct)
