"""The command line's ``--json`` output (analyze, infer, compare, methods), ``--plot DIR``
and the ``ppl`` console script: the JSON holds the numbers ``ppl.infer`` / ``ppl.analyze``
/ ``ppl.compare`` give in-process, and an exact posterior's numbers equal a brute-force
enumeration of the model."""

import dataclasses
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import ppl
from ppl import cli
from ppl.cli.jsonout import dumps, jsonable
from ppl.comparison import COLUMNS

# The models and data of tests/test_cli.py, plus a three-variable chain.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cli import MODELS as CLI_MODELS, X  # noqa: E402

MODELS = CLI_MODELS + textwrap.dedent('''

    @ppl.model
    def chain():
        a = ppl.sample("a", dist.Bernoulli(0.3))
        b = ppl.sample("b", dist.Bernoulli(0.2 + 0.6 * a))
        c = ppl.sample("c", dist.Bernoulli(0.1 + 0.7 * b))
        ppl.sample("y", dist.Normal(c, 1.0), obs=torch.tensor(0.8))
''')


@pytest.fixture
def files(tmp_path):
    """tmp_path holding models.py (mixture, coin, chain) and data.csv (column x)."""
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "data.csv").write_text("x\n" + "\n".join(str(v) for v in X) + "\n")
    return tmp_path


def run_json(capsys, *args):
    """``ppl.cli.main(ARGS + ["--json"])``: the parsed document (strict JSON: no NaN / Infinity tokens)."""
    code = cli.main([str(a) for a in args] + ["--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out, parse_constant=lambda token: pytest.fail(f"non-strict JSON token {token}"))


def brute_force_mixture():
    """Per data point, P(z_i = 1 | x_i) and log p(x) of the mixture at its initial params
    (weights 1/2, locs -2 and 2), by enumerating both states of every z_i."""
    x = torch.tensor(X, dtype=torch.float64)
    log_joint = torch.stack([torch.distributions.Normal(loc, 1.0).log_prob(x) + math.log(0.5) for loc in (-2.0, 2.0)])
    return (log_joint[1] - torch.logsumexp(log_joint, 0)).exp(), float(torch.logsumexp(log_joint, 0).sum())


def _in_process(files, name, data, method):
    model, _ = cli.load_model(str(files / f"models.py:{name}"))
    return ppl.infer(model, data, method=method)


# ---------------------------------------------------------------------- infer
def test_infer_exact_json_equals_ppl_infer_and_brute_force(files, capsys):
    doc = run_json(capsys, "infer", files / "models.py:mixture", "--data", files / "data.csv", "--method", "exact")
    post = _in_process(files, "mixture", {"x": torch.tensor(X, dtype=torch.float64)}, "exact")
    p1, log_evidence = brute_force_mixture()

    assert doc["method"] == "exact" and doc["command"] == "infer"
    assert doc["log_evidence"] == post.log_evidence
    assert doc["log_evidence"] == pytest.approx(log_evidence, abs=1e-6)
    assert doc["elbo"] == pytest.approx(log_evidence, abs=1e-6)
    assert doc["converged"] is None and doc["iterations"] is None and doc["elapsed"] > 0
    assert doc["trust"]["verdict"] == "exact" and doc["trust"]["next_method"] is None
    assert doc["routing"]["method"] == "exact" and doc["routing"]["auto"] is False
    assert doc["params"] == {}

    z = doc["sites"]["z"]
    assert z["shape"] == [7]
    assert z["mean"] == pytest.approx(p1.tolist(), abs=1e-7)
    assert z["sd"] == pytest.approx((p1 * (1 - p1)).sqrt().tolist(), abs=1e-7)
    assert z["support"] == [0, 1]
    probs = torch.tensor(z["probs"], dtype=torch.float64)
    assert torch.allclose(probs, torch.stack([1 - p1, p1], -1), atol=1e-7, rtol=0)
    # a discrete quantile: the smallest state whose cdf reaches the level
    for key, q in (("5%", 0.05), ("50%", 0.5), ("95%", 0.95)):
        assert z["quantiles"][key] == [0.0 if 1 - float(p) >= q else 1.0 for p in p1]
    assert z["quantiles"]["50%"][4] == 1.0 and z["quantiles"]["5%"][4] == 0.0  # P(z_4 = 1) = 0.60


def test_infer_auto_json_gives_routing_attempts_and_learned_params(files, capsys):
    doc = run_json(capsys, "infer", files / "models.py:mixture", "--data", files / "data.csv", "--diagnostics")
    post = _in_process(files, "mixture", {"x": torch.tensor(X, dtype=torch.float64)}, "auto")
    assert doc["method"] == post.method == "em"
    attempts = doc["routing"]["attempts"]
    assert [a["method"] for a in attempts] == [a["method"] for a in post.diagnostics["routing"]["attempts"]] == ["em"]
    assert attempts[0]["verdict"] == "reliable" and attempts[0]["left_because"] is None
    assert doc["routing"]["plan"] == post.diagnostics["routing"]["plan"]
    assert doc["elbo"] == pytest.approx(post.elbo, abs=1e-9)
    assert doc["converged"] is True and doc["iterations"] == len(post.history) == len(doc["history"])
    assert set(doc["params"]) == {"weights", "locs"}
    for name, value in post.params.items():
        assert doc["params"][name] == pytest.approx(value.tolist(), abs=1e-9)
    assert doc["diagnostics"]["n_iter"] == post.diagnostics["n_iter"] and "routing" not in doc["diagnostics"]


def test_infer_json_sites_filter_and_plot_dir(files, capsys):
    doc = run_json(capsys, "infer", files / "models.py:chain", "--method", "exact", "--sites", "b,c",
                   "--plot", files / "out" / "plots")
    assert list(doc["sites"]) == ["b", "c"]
    # brute force over the 8 joint states of (a, b, c)
    pa = {0: 0.7, 1: 0.3}
    weights = {}
    for a in (0, 1):
        for b in (0, 1):
            pb = 0.2 + 0.6 * a
            for c in (0, 1):
                pc = 0.1 + 0.7 * b
                like = math.exp(-0.5 * (0.8 - c) ** 2) / math.sqrt(2 * math.pi)
                weights[a, b, c] = pa[a] * (pb if b else 1 - pb) * (pc if c else 1 - pc) * like
    total = sum(weights.values())
    assert doc["log_evidence"] == pytest.approx(math.log(total), abs=1e-10)
    assert doc["sites"]["b"]["mean"] == pytest.approx(sum(w for (a, b, c), w in weights.items() if b) / total)
    assert doc["sites"]["c"]["mean"] == pytest.approx(sum(w for (a, b, c), w in weights.items() if c) / total)
    expected = [str(files / "out" / "plots" / "b.png"), str(files / "out" / "plots" / "c.png")]
    assert doc["plots"] == expected
    for path in expected:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_infer_plot_text_lists_the_paths_and_rejects_a_file(files, capsys):
    folder = files / "pngs"
    code = cli.main(["infer", str(files / "models.py:mixture"), "--data", str(files / "data.csv"), "--method",
                     "exact", "--plot", str(folder)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.rstrip().endswith(f"plots written (1):\n  {folder / 'z.png'}")
    assert (folder / "z.png").read_bytes()[:4] == b"\x89PNG"

    (files / "a_file").write_text("")
    code = cli.main(["infer", str(files / "models.py:mixture"), "--data", str(files / "data.csv"), "--method",
                     "exact", "--json", "--plot", str(files / "a_file")])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    assert out.err.strip().splitlines() == [f"error: --plot {files / 'a_file'}: exists and is not a directory"]


def test_json_errors_stay_one_line_on_stderr(files, capsys):
    code = cli.main(["infer", str(files / "models.py:mixture"), "--data", str(files / "data.csv"), "--method",
                     "laplace", "--json"])
    out = capsys.readouterr()
    assert code == 1 and out.out == "" and "Traceback" not in out.err
    assert len(out.err.strip().splitlines()) == 1 and out.err.startswith("error: method 'laplace' does not apply")


# -------------------------------------------------------------------- analyze
def test_analyze_json_equals_ppl_analyze(files, capsys):
    doc = run_json(capsys, "analyze", files / "models.py:chain", "--graph")
    model, _ = cli.load_model(str(files / "models.py:chain"))
    analysis = ppl.analyze(model)
    assert doc["variables"]["discrete_latent"] == ["a", "b", "c"] and doc["variables"]["observed"] == ["y"]
    assert doc["treewidth"] == analysis.treewidth == 1
    assert doc["log10_states"] == pytest.approx(3 * math.log10(2))
    assert sorted(map(sorted, doc["moral_graph"]["edges"])) == [["a", "b"], ["b", "c"]]
    assert doc["largest_clique"]["states"] == analysis.clique_states == 4
    assert doc["largest_clique"]["bytes"] == analysis.clique_bytes
    assert doc["exact_fits"] is True and doc["memory_budget"] == 2 * 1024**3
    assert doc["methods"]["exact"] == {"applies": True, "reason": analysis.backends["exact"][1]}
    assert doc["methods"]["laplace"]["applies"] is False
    assert doc["auto"]["method"] == analysis.auto["method"] == "exact"
    assert doc["auto"]["plan"] == analysis.auto["plan"]
    assert [v["name"] for v in doc["factor_graph"]["variables"]] == ["a", "b", "c", "y"]
    assert doc["factor_graph"]["variables"][0]["cardinality"] == 2

    doc = run_json(capsys, "analyze", files / "models.py:coin", "--set", "flips=[1,0,1,1]", "--memory-budget", "1KiB")
    assert doc["variables"]["continuous_latent"] == ["p"] and doc["variables"]["discrete_latent"] == []
    assert doc["log10_states"] is None and doc["memory_budget"] == 1024
    assert doc["methods"]["exact"]["applies"] is False and doc["methods"]["nuts"]["applies"] is True
    assert doc["plates"] == [{"name": "n", "size": 4, "dim": -1}]


# -------------------------------------------------------------------- compare
def test_compare_json_rows_reference_and_plots(files, capsys):
    doc = run_json(capsys, "compare", files / "models.py:mixture", "--data", files / "data.csv",
                   "--methods", "exact,cavi,laplace", "--plot", files / "cmp")
    _, log_evidence = brute_force_mixture()
    assert doc["columns"] == list(COLUMNS)
    assert [r["method"] for r in doc["rows"]] == ["exact", "cavi", "laplace"]
    assert doc["reference"] == "exact" and doc["reference_kind"] == "exact"
    exact, cavi, laplace = doc["rows"]
    assert all(list(r) == list(COLUMNS) for r in doc["rows"])
    assert exact["log_evidence"] == pytest.approx(log_evidence, abs=1e-6) and exact["trust"] == "exact"
    assert exact["max_marginal_error"] == 0 and exact["status"] == "ok"
    assert cavi["log_evidence"] is None and cavi["converged"] is True
    assert cavi["kl_gap"] == pytest.approx(exact["log_evidence"] - cavi["elbo"], abs=1e-12)
    assert laplace["status"].startswith("not run:") and laplace["elbo"] is None
    assert doc["plots"] == [str(files / "cmp" / "compare_bound.png"), str(files / "cmp" / "compare_z.png")]
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in doc["plots"])


def test_methods_json(capsys):
    doc = run_json(capsys, "methods", "exact")
    table = ppl.methods("exact")
    assert list(doc["methods"]) == ["exact"]
    assert [o["name"] for o in doc["methods"]["exact"]["options"]] == [r[0] for r in table["exact"]["options"]]
    assert doc["methods"]["exact"]["summary"] == table["exact"]["summary"]
    assert list(run_json(capsys, "methods")["methods"]) == ppl.api.auto_order()


# ------------------------------------------------------------------- jsonable
def test_jsonable_non_finite_numbers_tensors_and_objects():
    @dataclasses.dataclass
    class Point:
        x: float
        tags: frozenset

    value = {
        "t": torch.tensor([[1.5, float("nan")], [float("inf"), -float("inf")]]),
        "n": np.array([1, 2]), "s": np.float64("nan"), "i": np.int64(3), 4: (1, 2.0),
        "p": Point(float("-inf"), frozenset({"b", "a"})), "d": torch.float32, "b": torch.tensor(True),
    }
    assert jsonable(value) == {
        "t": [[1.5, None], ["inf", "-inf"]], "n": [1, 2], "s": None, "i": 3, "4": [1, 2.0],
        "p": {"x": "-inf", "tags": ["a", "b"]}, "d": "torch.float32", "b": True,
    }
    assert json.loads(dumps({"k": float("nan"), "v": torch.tensor(float("inf"))})) == {"k": None, "v": "inf"}


# ------------------------------------------------------------- console script
def _console_script():
    found = Path(sys.executable).parent / "ppl"
    if found.exists():
        return str(found)
    return shutil.which("ppl")


def test_console_script_prints_json(files):
    script = _console_script()
    if script is None:
        pytest.skip("the ppl console script is not installed (pip install -e .)")
    proc = subprocess.run([script, "infer", "models.py:mixture", "--data", "data.csv", "--method", "exact", "--json"],
                          cwd=files, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _, log_evidence = brute_force_mixture()
    assert json.loads(proc.stdout)["log_evidence"] == pytest.approx(log_evidence, abs=1e-6)
    proc = subprocess.run([script, "infer", "models.py:mixtur", "--data", "data.csv"], cwd=files,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == ("error: 'models.py' has no model named 'mixtur'; "
                                   "models in it: ['mixture', 'coin', 'chain']")
