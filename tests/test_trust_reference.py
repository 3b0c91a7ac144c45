"""The promise of the trust verdicts, on a reference set of public models
(:mod:`reference_models`: a regression on unscaled data with an unknown noise scale,
eight schools, a logistic regression, an AR(2) series, a GARCH(1, 1), a mixture with
ordered means, an HMM with unknown parameters): ``ppl.infer(model, data)`` with every
default is right (every parameter within 0.25 posterior sds of the reference mean, sd
ratio in [0.67, 1.5]) or says it is unreliable, and no result whose verdict is exact or
reliable is wrong — for auto and for each approximate method on its own.

References (``tests/fixtures/reference_posteriors.json``, ``tests/make_reference_posteriors.py``):
quadrature of the coefficients' closed-form Gaussian conditionals over a grid of the scale
(regression, AR(2), eight schools), and long NUTS runs of Pyro's kernel on a log density
checked against Pyro's own (``tests/test_potential.py``).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import warnings

import pytest
import torch

import ppl

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from reference_models import REFERENCE  # noqa: E402

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "reference_posteriors.json"
REF = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}


def _accuracy(post, name):
    """(worst |Δμ|/σ, the sd ratio farthest from 1) over every element of the reference sites."""
    worst_z, worst_ratio = 0.0, 1.0
    for site in REFERENCE[name][2]:
        ref = REF[name]["sites"][site]
        mean = post.mean(site).detach().double().reshape(-1)
        sd = post.variance(site).detach().double().clamp_min(0).sqrt().reshape(-1)
        rm, rs = torch.tensor(ref["mean"], dtype=torch.float64), torch.tensor(ref["sd"], dtype=torch.float64)
        worst_z = max(worst_z, float(((mean - rm).abs() / rs).max()))
        for r in (sd / rs).tolist():
            if abs(math.log(r)) > abs(math.log(worst_ratio)):
                worst_ratio = r
    return worst_z, worst_ratio


def _right(z, ratio):
    return z < 0.25 and 0.67 <= ratio <= 1.5


def _infer(name, **options):
    model, make_data, _ = REFERENCE[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.infer(model, make_data(), seed=0, **options)


FAST = ["regression", "logistic", "ar2"]
SLOW = ["eight_schools", "garch", "mixture", "hmm"]


def _available(names):
    return [n for n in names if n in REF]


@pytest.mark.parametrize("name", _available(FAST))
def test_auto_is_right_and_says_so(name):
    post = _infer(name)
    z, ratio = _accuracy(post, name)
    assert post.trust.ok, f"{name}: auto ended {post.trust.verdict}: {post.trust.reasons}"
    assert _right(z, ratio), f"{name}: {post.method} is {post.trust.verdict} but |Δμ|/σ = {z:.2f}, sd ratio {ratio:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize("name", _available(SLOW))
def test_auto_is_right_or_unreliable_on_the_harder_models(name):
    post = _infer(name)
    z, ratio = _accuracy(post, name)
    if post.trust.ok:
        assert _right(z, ratio), f"{name}: {post.method} says {post.trust.verdict} but |Δμ|/σ = {z:.2f}, " \
                                 f"sd ratio {ratio:.2f}"
    else:
        assert post.trust.reasons and post.trust.next_method is not None or post.method == "nuts"


METHODS = ["laplace", "pathfinder", "svi"]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", _available(FAST + SLOW))
def test_no_reliable_verdict_is_wrong(name, method):
    """Each approximate method on its own: a reliable verdict is right; an unreliable one
    names the failed diagnostic."""
    try:
        post = _infer(name, method=method)
    except ppl.PPLError:
        return  # refusing is honest
    z, ratio = _accuracy(post, name)
    if post.trust.ok:
        assert _right(z, ratio), f"{name}/{method} says {post.trust.verdict} but |Δμ|/σ = {z:.2f}, " \
                                 f"sd ratio {ratio:.2f}: {post.trust.reasons}"
    else:
        assert post.trust.reasons


@pytest.mark.slow
@pytest.mark.parametrize("name", _available(FAST + SLOW))
def test_chees_reliable_verdicts_are_right(name):
    """The lockstep sampler on every reference model, the mixture and the HMM with their
    discrete latents summed out included: reliable only when right."""
    test_no_reliable_verdict_is_wrong(name, "chees")


def test_the_reference_file_covers_the_fast_models():
    assert set(FAST) <= set(REF), f"missing references: {set(FAST) - set(REF)}; run tests/make_reference_posteriors.py"


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_the_reference_data_do_not_depend_on_torch_default_dtype(name):
    # the fixtures were made under float64 (tests/make_reference_posteriors.py); a generator that draws in
    # torch's default dtype would give the tests other data than the reference's (it did: the HMM's states)
    make_data = REFERENCE[name][1]
    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float32)
        a = make_data()
        torch.set_default_dtype(torch.float64)
        b = make_data()
    finally:
        torch.set_default_dtype(before)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
