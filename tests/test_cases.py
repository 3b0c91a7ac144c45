"""Batched evidence (ppl.infer_cases, issue 18): many cases in one plated call.

Reference: one ``ppl.infer`` per case on a freshly compiled graph, pgmpy's
VariableElimination for the asia network, and closed forms for a toy model.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import pyro.distributions as dist

import ppl
from ppl.errors import DataError
from ppl.models import example_network

CASES = pd.DataFrame({"dysp": ["yes", "no", "yes", None, "no", "yes"],
                      "xray": ["no", "yes", None, "yes", "no", "no"],
                      "smoke": [None, "yes", "no", None, None, None]})


def test_every_case_equals_its_own_exact_query_and_pgmpy():
    from pgmpy.inference import VariableElimination

    from ppl.models import load_pgmpy_example

    model = example_network("asia")
    res = ppl.infer_cases(model, CASES)
    assert len(res) == 6 and len(res.groups) == 1  # one plated pass, whatever each case observes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ve = VariableElimination(load_pgmpy_example("asia"))
    total = 0.0
    for i, row in enumerate(res.rows):
        ref = ppl.infer(ppl.compile(model, row), method="exact")
        total += ref.log_evidence
        for node in model.nodes:
            p = res.probs(node)[i]
            if node in row:  # observed in this case: the indicator of its state
                expect = torch.zeros(2, dtype=torch.float64)
                expect[model.state_names[node].index(row[node])] = 1.0
                assert torch.equal(p, expect)
            else:
                torch.testing.assert_close(p, ref.probs(node).double(), rtol=0, atol=1e-12)
        q = ve.query(["lung"], evidence=row, show_progress=False)
        theirs = dict(zip(q.state_names["lung"], np.asarray(q.values).reshape(-1)))
        if "lung" not in row:
            assert float(res.probs("lung")[i, 0]) == pytest.approx(theirs[model.state_names["lung"][0]], abs=1e-9)
    assert res.log_evidence == pytest.approx(total, abs=1e-9)
    frame = res.to_pandas()
    assert frame.shape == (6, 16) and frame[("lung", "yes")].iloc[1] == pytest.approx(float(res.probs("lung")[1, 0]))
    assert "case" in str(res.table("lung"))


def test_cases_with_a_model_that_has_plates_of_its_own():
    @ppl.model
    def cause_with_copies():
        c = ppl.sample("c", dist.Categorical(torch.tensor([0.7, 0.3], dtype=torch.float64)))
        with ppl.plate("copies", 3):
            ppl.sample("z", dist.Bernoulli(0.2 + 0.6 * c.double()))
        ppl.sample("e", dist.Bernoulli(0.1 + 0.8 * c.double()))

    res = ppl.infer_cases(cause_with_copies, [{"e": 1.0}, {"e": 0.0}, {}])
    post_c = res.probs("c")
    p1 = 0.3 * 0.9 / (0.3 * 0.9 + 0.7 * 0.1)
    p0 = 0.3 * 0.1 / (0.3 * 0.1 + 0.7 * 0.9)
    torch.testing.assert_close(post_c[:, 1], torch.tensor([p1, p0, 0.3], dtype=torch.float64), rtol=0, atol=1e-12)
    index, post = res.groups[0]
    assert index == [0, 1, 2]
    z = post.probs("z")  # (cases, copies, 2): the cases plate left of the model's own
    assert tuple(z.shape) == (3, 3, 2)
    torch.testing.assert_close(z[2, :, 1], torch.full((3,), 0.3 * 0.8 + 0.7 * 0.2, dtype=z.dtype))
    torch.testing.assert_close(z[0, :, 1], torch.full((3,), p1 * 0.8 + (1 - p1) * 0.2, dtype=z.dtype))
    torch.testing.assert_close(z[1, :, 1], torch.full((3,), p0 * 0.8 + (1 - p0) * 0.2, dtype=z.dtype))


def test_bad_cases_are_refused():
    model = example_network("asia")
    with pytest.raises(DataError, match="empty"):
        ppl.infer_cases(model, [])
    with pytest.raises(DataError, match="names no sample site"):
        ppl.infer_cases(model, [{"fever": "yes"}])
    with pytest.raises(DataError, match="is not a state of site 'dysp'"):
        ppl.infer_cases(model, [{"dysp": "maybe"}])
    with pytest.raises(DataError, match="list of dicts"):
        ppl.infer_cases(model, "dysp=yes")
    with pytest.raises(DataError, match="one length"):
        ppl.infer_cases(model, {"dysp": ["yes", "no"], "xray": ["no"]})
    columns = ppl.infer_cases(model, {"dysp": ["yes", "no"], "xray": ["no", "no"]})  # a dict of columns
    rows = ppl.infer_cases(model, [{"dysp": "yes", "xray": "no"}, {"dysp": "no", "xray": "no"}])
    torch.testing.assert_close(columns.probs("lung"), rows.probs("lung"), rtol=0, atol=0)

    @ppl.model
    def plated():
        c = ppl.sample("c", dist.Bernoulli(torch.tensor(0.5)))
        with ppl.plate("n", 2):
            ppl.sample("y", dist.Bernoulli(0.2 + 0.6 * c))

    with pytest.raises(DataError, match="not a scalar site outside every plate"):
        ppl.infer_cases(plated, [{"y": [1.0, 0.0]}])
    gate = example_network("asia")
    with pytest.raises(DataError, match=r"case 1 of 2 .* probability zero") as err:  # either = tub or lung, exactly
        ppl.infer_cases(gate, [{"either": "yes"}, {"either": "no", "tub": "yes"}])
    assert err.value.case == 1


def test_cases_each_observing_other_nodes_are_one_pass_and_equal_their_own_queries():
    model = example_network("alarm")
    rng = np.random.default_rng(3)
    names = model.state_names
    rows = [{n: names[n][int(rng.integers(len(names[n])))] for n in ("BP", "HRBP", "CVP", "HISTORY")
             if rng.random() < 0.5} for _ in range(12)]
    rows[0] = {}
    res = ppl.infer_cases(model, rows)
    assert len(res.groups) == 1
    for i, row in enumerate(rows):
        ref = ppl.infer(ppl.compile(model, row or None), method="exact")
        for node in ("LVFAILURE", "HYPOVOLEMIA", "STROKEVOLUME"):
            torch.testing.assert_close(res.probs(node)[i], ref.probs(node).double(), rtol=0, atol=1e-12)


def test_continuous_columns_are_answered_in_groups():
    @ppl.model
    def cause_and_reading():
        c = ppl.sample("c", dist.Categorical(torch.tensor([0.6, 0.4], dtype=torch.float64)))
        ppl.sample("y", dist.Normal(torch.tensor([0.0, 2.0], dtype=torch.float64)[c], 1.0))

    rows = [{"y": 0.5}, {"y": -1.0}, {"y": 0.5}] + [{"y": float(v)} for v in np.linspace(-1, 3, 6)]
    res = ppl.infer_cases(cause_and_reading, rows)
    assert res.groups[0][1].graph.observed() == ["y"]  # y observed, not an indicator: it is continuous
    per_case = res.case_log_evidence()  # one query per case on this path
    for i, row in enumerate(rows):
        like = 0.6 * math.exp(-0.5 * row["y"] ** 2) + 0.4 * math.exp(-0.5 * (row["y"] - 2.0) ** 2)
        assert float(per_case[i]) == pytest.approx(math.log(like / math.sqrt(2 * math.pi)), abs=1e-12)
    for i, row in enumerate(rows):
        like = [0.6 * math.exp(-0.5 * row["y"] ** 2), 0.4 * math.exp(-0.5 * (row["y"] - 2.0) ** 2)]
        assert float(res.probs("c")[i, 1]) == pytest.approx(like[1] / sum(like), abs=1e-12)


def test_each_case_log_evidence_equals_its_own_query():
    model = example_network("asia")
    res = ppl.infer_cases(model, CASES)
    per_case = res.case_log_evidence()
    assert per_case.shape == (6,)
    for i, row in enumerate(res.rows):
        ref = ppl.infer(ppl.compile(model, row or None), method="exact").log_evidence
        assert float(per_case[i]) == pytest.approx(ref, abs=1e-12)
    assert float(per_case.sum()) == pytest.approx(res.log_evidence, abs=1e-9)
