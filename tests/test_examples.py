"""Smoke tests: every runnable example runs to the end on its real data."""

import pytest

pytest.importorskip("pgmpy")


def test_alarm_demo_runs(capsys):
    from ppl_examples import alarm

    alarm.main(["--top", "3"])
    out = capsys.readouterr().out
    assert "log evidence" in out and "MAP explanation" in out and "ppl.compare" in out
    # the readings make left-ventricular failure the most probable diagnosis in this network
    assert "LVFAILURE=TRUE" in out


def _rows(out, heading):
    """Table rows (lists of fields) printed under the line starting with ``heading`` up to the next blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_em_gmm_example_runs(capsys):
    pytest.importorskip("sklearn")
    import math

    from ppl_examples import em_gmm

    em_gmm.main(["--quick"])
    out = capsys.readouterr().out
    for name in ("iris", "wine"):
        rows = {r[0]: r for r in _rows(out, f"{name}:") if r[0] in ("full", "diag")}
        assert set(rows) == {"full", "diag"}, out
        for r in rows.values():
            ppl_ll, ppl_ari, sk_ll = float(r[1]), float(r[5]), float(r[6])
            assert math.isfinite(ppl_ll) and math.isfinite(sk_ll)
            assert -1.0 <= ppl_ari <= 1.0
            # a poor local optimum of one library would show as a large gap; same model, same data
            assert abs(ppl_ll - sk_ll) < 1.0, r
    # full-covariance EM on iris recovers the species well (scikit-learn: ARI about 0.9)
    iris_full = next(r for r in _rows(out, "iris:") if r[0] == "full")
    assert float(iris_full[5]) > 0.5, out
    # the same θ_0 gives scikit-learn's lower_bound_ to round-off
    diffs = [float(line.rsplit("=", 1)[1]) for line in out.splitlines() if "|diff|" in line]
    assert len(diffs) == 2 and max(diffs) < 1e-8, out


def test_em_hmm_example_runs(capsys):
    pytest.importorskip("statsmodels")
    pytest.importorskip("hmmlearn")
    import math
    import re

    from ppl_examples import em_hmm

    em_hmm.main(["--quick"])
    out = capsys.readouterr().out
    rows = [r for r in _rows(out, "Gaussian HMM on") if r[0].isdigit()]
    assert [int(r[0]) for r in rows] == [2, 3], out
    for r in rows:
        loglik, bic = float(r[2]), float(r[3])
        assert math.isfinite(loglik) and math.isfinite(bic) and loglik < 0
    assert "lowest BIC: K =" in out
    # the Viterbi path covers every year of the series
    counts_line = next(line for line in out.splitlines() if "Viterbi path (post.map())" in line)
    counts = [int(c) for _, c in re.findall(r"(\d+): (\d+)", counts_line.split(";")[0])]
    assert sum(counts) == 309, counts_line
    assert "categorical HMM" in out and "emission" in out
    # same θ_0 and iterations as hmmlearn: the same log-likelihood; EM never decreased it
    checks = [line for line in out.splitlines() if "|diff|" in line]
    assert len(checks) == 2, out
    for line in checks:
        assert float(line.split("|diff| =")[1].split()[0]) < 1e-6, line
        assert line.rstrip().endswith("non-decreasing: True"), line
