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
