"""The command line (``python -m ppl``): analyze / infer / compare on a model file and a
CSV, and one readable line on stderr (no traceback, non-zero status) for each kind of
user mistake.  A few cases run in a subprocess, the way users call it; the rest call
``ppl.cli.main`` in-process (the same code path, without the 2 s import)."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import ppl
from ppl import cli

ROOT = Path(__file__).resolve().parents[1]

MODELS = textwrap.dedent('''
    import torch, ppl
    import ppl.distributions as dist

    @ppl.model
    def mixture(x, K=2):
        weights = ppl.param("weights", torch.ones(K) / K, constraint=dist.constraints.simplex)
        locs = ppl.param("locs", torch.linspace(-2.0, 2.0, K))
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(weights))
            ppl.sample("obs", dist.Normal(locs[z], 1.0), obs=x)

    @ppl.model
    def coin(flips):
        p = ppl.sample("p", dist.Beta(2.0, 2.0))
        with ppl.plate("n", len(flips)):
            ppl.sample("y", dist.Bernoulli(p), obs=flips)

    def helper():
        return 1
''')

X = [-2.1, -1.9, 2.2, 1.8, 0.1, -2.5, 2.0]


@pytest.fixture
def files(tmp_path):
    """tmp_path holding models.py (mixture, coin) and data.csv (column x)."""
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "data.csv").write_text("x\n" + "\n".join(str(v) for v in X) + "\n")
    return tmp_path


def run_cli(*args, cwd):
    """``python -m ppl ARGS`` in a subprocess: (status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "ppl", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def run_main(capsys, *args):
    """``ppl.cli.main(ARGS)`` in-process: (status, stdout, stderr)."""
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, status, *fragments):
    """Exit status ``status``, one line on stderr without a traceback, holding every fragment."""
    assert code == status, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(("error:", "python -m ppl")), err
    for fragment in fragments:
        assert fragment in err, err


# ------------------------------------------------------------------ subprocess
def test_infer_exact_prints_the_log_evidence_of_ppl_infer(files):
    code, out, err = run_cli("infer", "models.py:mixture", "--data", "data.csv", "--method", "exact", cwd=files)
    assert code == 0, err
    assert "Traceback" not in err
    post = ppl.infer(cli.load_model(str(files / "models.py:mixture"))[0],
                     {"x": torch.tensor(X, dtype=torch.float64)}, method="exact")
    printed = float(re.search(r"log evidence:\s+(\S+) nats", out).group(1))
    assert printed == pytest.approx(post.log_evidence, abs=1e-6)
    assert "method:        exact" in out and "routing:" in out and "z[6]" in out


def test_analyze_and_compare(files):
    code, out, err = run_cli("analyze", "models.py:coin", "--set", "flips=[1,0,1,1]", cwd=files)
    assert code == 0, err
    assert "Analysis of model 'coin'" in out and "continuous latent(s) p cannot be enumerated" in out

    code, out, err = run_cli("compare", "models.py:mixture", "--data", "data.csv", "--methods", "exact,cavi",
                             cwd=files)
    assert code == 0, err
    lines = out.splitlines()
    header = next(line.split() for line in lines if line.startswith("method "))
    rows = {line.split()[0]: dict(zip(header, line.split())) for line in lines
            if line.split()[:1] in (["exact"], ["cavi"])}
    assert set(rows) == {"exact", "cavi"}
    # exact's log evidence, and CAVI's ELBO reaches it on a model with one discrete latent per point
    assert float(rows["exact"]["log_evidence"]) == pytest.approx(float(rows["cavi"]["elbo"]), abs=1e-3)


def test_user_mistakes_exit_nonzero_with_one_line(files):
    (files / "broken.py").write_text("import torch\nraise ValueError('boom at import')\n")
    code, _, err = run_cli("infer", "broken.py:m", "--data", "data.csv", cwd=files)
    assert_one_line_error(code, err, 2, "ValueError", "boom at import")

    code, _, err = run_cli("infer", "models.py:mixture", "--data", "data.csv", "--method", "exakt", cwd=files)
    assert_one_line_error(code, err, 2, "exakt", "exact", "cavi")

    (files / "nan.csv").write_text("x\n1.0\n\n2.0\nNA\n")
    code, _, err = run_cli("infer", "models.py:mixture", "--data", "nan.csv", "--method", "exact", cwd=files)
    assert_one_line_error(code, err, 1, "data['x']", "NaN")


# ------------------------------------------------------------------ in-process
def test_model_lookup_errors(files, capsys):
    code, _, err = run_main(capsys, "infer", files / "missing.py:m", "--data", files / "data.csv")
    assert_one_line_error(code, err, 2, "does not exist")
    code, _, err = run_main(capsys, "infer", files / "models.py:nope", "--data", files / "data.csv")
    assert_one_line_error(code, err, 2, "nope", "mixture", "coin")
    code, _, err = run_main(capsys, "infer", files / "models.py", "--data", files / "data.csv")
    assert_one_line_error(code, err, 2, "2 models", "mixture", "coin")
    code, _, err = run_main(capsys, "infer", files / "models.py:torch", "--data", files / "data.csv")
    assert_one_line_error(code, err, 2, "not a model function")


def test_data_errors(files, capsys):
    model = files / "models.py:mixture"
    (files / "wrong.csv").write_text("y\n1.0\n2.0\n")
    code, _, err = run_main(capsys, "infer", model, "--data", files / "wrong.csv", "--method", "exact")
    assert_one_line_error(code, err, 1, "needs argument(s) ['x']", "data read: y")
    np.savez(files / "extra.npz", x=np.array(X), w=np.ones(3))
    code, _, err = run_main(capsys, "infer", model, "--data", files / "extra.npz", "--method", "exact")
    assert_one_line_error(code, err, 1, "['w']", "valid sample sites")
    code, _, err = run_main(capsys, "infer", model, "--data", files / "absent.npz")
    assert_one_line_error(code, err, 2, "does not exist")
    code, _, err = run_main(capsys, "infer", model, "--data", files / "models.py")
    assert_one_line_error(code, err, 2, "unsupported extension")
    (files / "ragged.csv").write_text("x,y\n1,2\n3\n")
    code, _, err = run_main(capsys, "infer", model, "--data", files / "ragged.csv")
    assert_one_line_error(code, err, 2, "1 fields", "header 2")


def test_option_and_method_errors(files, capsys):
    model, data = files / "models.py:coin", files / "data.csv"
    (files / "flips.csv").write_text("flips\n1\n0\n1\n1\n")
    flips = files / "flips.csv"
    code, _, err = run_main(capsys, "infer", model, "--data", flips, "--method", "exact")
    assert_one_line_error(code, err, 1, "does not apply", "cavi")
    code, _, err = run_main(capsys, "infer", model, "--data", flips, "--method", "cavi", "--option", "nosuch=1")
    assert_one_line_error(code, err, 2, "nosuch", "max_iter")
    code, _, err = run_main(capsys, "infer", model, "--data", flips, "--option", "max_iter")
    assert_one_line_error(code, err, 2, "key=value")
    code, _, err = run_main(capsys, "compare", model, "--data", data, "--methods", "exact,nope")
    assert_one_line_error(code, err, 2, "nope")
    code, _, err = run_main(capsys, "infer", model, "--bogus")
    assert_one_line_error(code, err, 2, "--bogus")


def test_infer_auto_routing_options_and_sites(files, capsys):
    (files / "flips.csv").write_text("flips\n1\n0\n1\n1\n")
    code, out, err = run_main(capsys, "infer", files / "models.py:coin", "--data", files / "flips.csv",
                              "--option", "max_iter=50", "--seed", "0", "--sites", "p")
    assert code == 0, err
    assert "method:        cavi" in out and "passed over:" in out and "exact" in out
    # Beta(2 + 3, 2 + 1) posterior: mean 5/8
    row = next(line.split() for line in out.splitlines() if line.startswith("p "))
    assert float(row[1]) == pytest.approx(5 / 8, abs=1e-6)


def test_data_matrix_and_em_params(files, capsys):
    (files / "gmm.py").write_text(textwrap.dedent('''
        import torch, ppl
        import ppl.distributions as dist

        @ppl.model
        def gmm(x, K=2):
            N, D = x.shape
            weights = ppl.param("weights", torch.ones(K) / K, constraint=dist.constraints.simplex)
            locs = ppl.param("locs", torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
            with ppl.plate("data", N):
                z = ppl.sample("z", dist.Categorical(weights))
                ppl.sample("obs", dist.Normal(locs[z], 1.0).to_event(1), obs=x)
    '''))
    rng = np.random.default_rng(0)
    points = np.r_[rng.normal(-3, 0.5, (20, 2)), rng.normal(3, 0.5, (20, 2))]
    np.savetxt(files / "points.csv", points, delimiter=",", header="a,b", comments="")
    code, out, err = run_main(capsys, "infer", files / "gmm.py", "--data", files / "points.csv", "--data-matrix", "x",
                              "--method", "em", "--max-rows", "2")
    assert code == 0, err
    assert "learned params:" in out and "locs:" in out and "(2x2)" in out
    assert "z: 2 of 40 elements shown" in out
    assert "z[2]" not in out


def test_loaders():
    assert [cli.parse_value(v) for v in ["3", "-2", "1e-3", "true", "False", "none", "[1, 2]", "normal", "'7'"]] == \
        [3, -2, 1e-3, True, False, None, [1, 2], "normal", "7"]
    assert cli.parse_option_value("dtype", "float32") is torch.float32
    assert cli.parse_bytes("2GiB") == 2**31 and cli.parse_bytes("2e9") == 2_000_000_000
    with pytest.raises(cli.UsageError):
        cli.parse_bytes("lots")


def test_csv_and_npz_conversions(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,c\n1,1.5,yes\n2,,no\n")
    data = cli.read_csv(tmp_path / "d.csv")
    assert data["a"].dtype == torch.int64 and data["a"].tolist() == [1, 2]
    assert data["b"].dtype == torch.float64 and torch.isnan(data["b"][1])
    assert data["c"].tolist() == ["yes", "no"]  # text stays text (state names)
    np.savez(tmp_path / "d.npz", f=np.ones(3, dtype=np.float32), i=np.arange(3, dtype=np.int32), k=np.array(4))
    data = cli.load_data([str(tmp_path / "d.npz")], sets={"K": 3})
    assert data["f"].dtype == torch.float64 and data["i"].dtype == torch.int64
    assert data["k"] == 4 and isinstance(data["k"], int) and data["K"] == 3
    assert cli.read_npz(tmp_path / "d.npz", float32=True)["f"].dtype == torch.float32
    with pytest.raises(cli.UsageError, match="comes from both"):
        cli.load_data([str(tmp_path / "d.npz"), str(tmp_path / "d.npz")])
