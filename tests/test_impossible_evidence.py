"""Evidence of probability zero (issue 17): torch scores a probability of exactly 0 given as
``probs`` by ``log(eps)`` (about -36.04 in float64), so impossible evidence used to get a
finite log evidence.  Every backend that computes from tables now says ``-inf``: a
``DataError`` with ``log_evidence == -inf``, and ``method="auto"`` stops there instead of
escalating.  Possible evidence in models with exact zeros keeps its exact value, checked
against brute-force enumeration written here."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import ppl
import ppl.distributions as dist

F64 = torch.float64


@ppl.model
def never_heads(x):
    c = ppl.sample("c", dist.Bernoulli(torch.tensor(0.0, dtype=F64)))
    ppl.sample("x", dist.Bernoulli(0.0 * c), obs=x)


CPT = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
PRIOR = torch.tensor([0.5, 0.5, 0.0], dtype=F64)


@ppl.model
def zero_state(x):
    c = ppl.sample("c", dist.Categorical(PRIOR))
    ppl.sample("x", dist.Categorical(CPT[c]), obs=x)


CASES = [(never_heads, torch.tensor(1.0, dtype=F64)), (zero_state, torch.tensor(2))]


@pytest.mark.parametrize("method", ["exact", "map", "cavi", "auto"])
@pytest.mark.parametrize("model,x", CASES, ids=["bernoulli", "categorical"])
def test_impossible_evidence_is_a_data_error_with_minus_infinity(model, x, method):
    with pytest.raises(ppl.DataError, match="probability zero") as info:
        ppl.infer(model, {"x": x}, method=method)
    assert info.value.log_evidence == -math.inf


def test_possible_evidence_with_exact_zeros_equals_brute_force():
    """Two chained categoricals with zero entries; every evidence value, log p(x) by
    enumerating c by hand (log 0 = -inf entries contribute nothing)."""
    for value in (0, 1):
        post = ppl.infer(zero_state, {"x": torch.tensor(value)}, method="exact")
        want = math.log(sum(float(PRIOR[c] * CPT[c, value]) for c in range(3)))
        assert post.log_evidence == pytest.approx(want, abs=1e-12)
        probs = post.probs("c")
        brute = torch.tensor([float(PRIOR[c] * CPT[c, value]) for c in range(3)], dtype=F64)
        torch.testing.assert_close(probs, brute / brute.sum(), rtol=0, atol=1e-12)
        assert float(probs[2]) == 0.0


@ppl.model
def sprinkler(wet):
    rain = ppl.sample("rain", dist.Bernoulli(torch.tensor(0.2, dtype=F64)))
    spr = ppl.sample("spr", dist.Bernoulli(torch.tensor(0.4, dtype=F64)))
    table = torch.tensor([[0.0, 0.8], [0.9, 0.99]], dtype=F64)  # dry for sure when neither
    ppl.sample("wet", dist.Bernoulli(ppl.Vindex(table)[spr.long(), rain.long()]), obs=wet)


@pytest.mark.parametrize("wet", [0.0, 1.0])
def test_deterministic_cpt_entries_keep_exact_marginals(wet):
    table = [[0.0, 0.8], [0.9, 0.99]]
    joint = {}
    for r, s in itertools.product((0, 1), repeat=2):
        pw = table[s][r]
        joint[(r, s)] = (0.2 if r else 0.8) * (0.4 if s else 0.6) * (pw if wet else 1 - pw)
    post = ppl.infer(sprinkler, {"wet": torch.tensor(wet, dtype=F64)}, method="exact")
    assert post.log_evidence == pytest.approx(math.log(sum(joint.values())), abs=1e-12)
    p_rain = sum(v for (r, _), v in joint.items() if r) / sum(joint.values())
    assert float(post.probs("rain")[1]) == pytest.approx(p_rain, abs=1e-12)


@ppl.model
def continuous_with_impossible_obs(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
    ppl.sample("x", dist.Bernoulli(torch.tensor(0.0, dtype=F64)), obs=x)


@pytest.mark.parametrize("method", ["auto", "laplace", "pathfinder", "svi", "nuts", "map"])
def test_an_observation_impossible_whatever_the_latents_is_refused_at_compile_time(method):
    """Before, the continuous methods returned the prior of mu as a 'reliable' posterior
    (the impossible site only added torch's constant log(eps))."""
    with pytest.raises(ppl.DataError, match=r"observed site 'x' of model 'continuous_with_impossible_obs': its value "
                                            r"has probability zero under its Bernoulli") as info:
        ppl.infer(continuous_with_impossible_obs, {"x": torch.tensor(1.0, dtype=F64)}, method=method)
    assert info.value.log_evidence == -math.inf
    post = ppl.infer(continuous_with_impossible_obs, {"x": torch.tensor(0.0, dtype=F64)}, method="laplace")
    assert abs(float(post.mean("mu"))) < 0.2  # the possible value leaves the N(0, 1) prior as it is
