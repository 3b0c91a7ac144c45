"""Smoke tests: every runnable example runs to the end on its real data."""

import re

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


def test_em_bn_missing_example_runs(capsys):
    from ppl_examples import em_bn_missing

    em_bn_missing.main(["--quick"])
    out = capsys.readouterr().out
    assert "converged: True" in out and "non-decreasing: True" in out, out
    # maximum likelihood: the learned CPTs explain the incomplete data at least as well as the true ones
    assert "(EM >= true: True)" in out, out
    nodes = ("asia", "tub", "smoke", "lung", "bronc", "either", "xray", "dysp")
    rows = {r[0]: r for r in _rows(out, "largest absolute error") if r[0] in nodes}
    assert set(rows) == set(nodes), out
    assert rows["either"][-1] == "(hidden)"
    # the never-observed node's CPT (lung OR tub) and its child xray's, after undoing label switching
    assert float(rows["either"][2]) < 0.05 and float(rows["xray"][2]) < 0.05, out
    tv = next(line for line in out.splitlines() if "total-variation distance" in line)
    assert float(tv.split("EM ")[1].split(",")[0]) < 0.1, tv


def test_svi_logistic_example_runs(capsys):
    pytest.importorskip("sklearn")
    import math
    import re

    from ppl_examples import svi_logistic

    svi_logistic.main(["--steps", "50", "--elbo-particles", "200", "--draws", "200", "--batch", "64"])
    out = capsys.readouterr().out
    number = r"(-?\d+\.\d+)"
    rows = {}
    for label in ("mean field", "full rank", "full rank, B=64"):
        line = next(line for line in out.splitlines() if re.match(rf"{re.escape(label)} +(normal|mvn) ", line))
        m = re.search(rf"{number} ± {number} +{number} +{number} .* {number} +{number} +{number}$", line)
        assert m, line
        rows[label] = [float(v) for v in m.groups()]
    for label, (elbo, se, iwae, khat, acc_mean, acc_pred, logloss) in rows.items():
        assert math.isfinite(elbo) and elbo < 0 and 0 < se < 5, (label, out)
        assert iwae >= elbo, (label, out)            # log-mean-exp of the weights >= their mean, draw for draw
        assert math.isfinite(khat)
        # about 0.95-0.97 held-out accuracy for every method, even after 50 steps
        assert acc_mean > 0.9 and acc_pred > 0.9 and logloss < 0.3, (label, out)
    sk = re.search(r"scikit-learn C=1 \(MAP\) .* (\d\.\d+) +- +(\d\.\d+)$", out, re.M)
    assert sk and float(sk.group(1)) > 0.9, out
    assert "trained on minibatches of 64 rows of plate 'data'" in out
    assert out.count("PSIS k-hat readings") == 1 and "bias b" in out


def test_svi_gmm_iris_example_runs(capsys):
    pytest.importorskip("sklearn")
    import math
    import re

    from ppl_examples import svi_gmm_iris

    svi_gmm_iris.main(["--steps", "50", "--restarts", "1", "--elbo-particles", "20"])
    out = capsys.readouterr().out
    assert "enumerated exactly: ['z']" in out, out
    elbo = float(re.search(r"final ELBO (-?\d+\.\d+) ±", out).group(1))
    assert math.isfinite(elbo) and elbo < 0
    # the confusion table: one row per species, 50 flowers each, whatever labels the guide settled on
    table = [r for r in _rows(out, "MAP cluster") if r[0] in ("setosa", "versicolor", "virginica")]
    assert [r[0] for r in table] == ["setosa", "versicolor", "virginica"], out
    assert all(sum(int(v) for v in r[1:]) == 50 for r in table), out
    assert table[0][1] == "50", out                  # setosa is separated perfectly, in the matched column
    m = re.search(r"ppl SVI (-?\d\.\d+) .* GaussianMixture\(diag, n_init=1\) (-?\d\.\d+)", out)
    assert m, out
    ppl_ari, sk_ari = float(m.group(1)), float(m.group(2))
    assert ppl_ari > 0.5 and sk_ari > 0.5, out       # both about 0.8 on iris


def _png_written(out, path):
    """The example wrote ``path`` when matplotlib is installed, else said it could not."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed" in out and not path.exists()
    return path.is_file() and path.stat().st_size > 10_000 and f"wrote {path}" in out


def test_svi_vae_example_runs(capsys, tmp_path):
    pytest.importorskip("sklearn")
    import math
    import re

    from ppl_examples import svi_vae

    svi_vae.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ELBO per epoch"))
    epochs = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        epoch, total, per_image = line.split()
        epochs.append((int(epoch), float(total), float(per_image)))
    assert [e for e, _, _ in epochs] == list(range(1, 9)), out
    per_image = [p for _, _, p in epochs]
    assert all(math.isfinite(p) and -60 < p < 0 for p in per_image), out
    # learning the decoder and the encoder raises the ELBO: about -32.5 -> -22 nats/image in 8 epochs
    assert per_image[-1] > per_image[0] + 5, out
    assert per_image[-1] > max(per_image[:4]), out
    # epoch averages of the per-step estimates, each scaled to all N images: total = N * per image
    assert all(abs(t - 1500 * p) < 1500 * 0.001 for _, t, p in epochs), out
    m = re.search(r"final ELBO \(50 draws, all 1500 training images\): (-?\d+\.\d) ± (\d+\.\d) nats = "
                  r"(-?\d+\.\d+) ± (\d+\.\d+) nats/image", out)
    assert m, out
    elbo, se, elbo_img = float(m.group(1)), float(m.group(2)), float(m.group(3))
    assert 0 < se < 50 and abs(elbo / 1500 - elbo_img) < 1e-3, out
    assert abs(elbo_img - per_image[-1]) < 2, out        # the re-estimate agrees with the last epoch's average
    m = re.search(r"held-out 297 images: ELBO (-?\d+\.\d+) ± (\d+\.\d+) nats/image \(se over the images\), "
                  r"IWAE bound \(K=20\) (-?\d+\.\d+) nats/image", out)
    assert m, out
    test_elbo, test_iwae = float(m.group(1)), float(m.group(3))
    assert test_iwae >= test_elbo, out                 # log-mean-exp >= mean, on the same draws
    assert -40 < test_elbo < elbo_img + 5, out
    assert _png_written(out, tmp_path / "svi_vae.png"), out


def test_svi_kl_direction_example_runs(capsys, tmp_path):
    from ppl_examples import svi_kl_direction

    svi_kl_direction.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    log_evidence = float(next(line for line in lines if line.startswith("exact posterior")).split("log p(y) = ")[1]
                         .split(";")[0])
    assert abs(log_evidence - (-2.7896)) < 1e-3, out  # quadrature of the model's own density
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["alpha", "loss"])
    rows = {}
    for line in lines[start + 1:]:
        fields = line.split()
        if not fields or fields[0] == "moment-matched":
            break
        alpha, loss, mean, sd, neg, elbo, _, se, iwae, khat, objective, kl_qp, kl_pq, _ = fields
        rows[float(alpha)] = dict(loss=loss, mean=float(mean), sd=float(sd), neg=float(neg), elbo=float(elbo),
                                  iwae=float(iwae), khat=float(khat), objective=float(objective),
                                  kl_qp=float(kl_qp), kl_pq=float(kl_pq))
    assert sorted(rows) == [-1.0, 0.0, 0.5, 1.0], out
    one, zero, lowest = rows[1.0], rows[0.0], rows[-1.0]
    assert one["loss"] == "elbo" and zero["loss"] == "renyi", out
    # KL(q||p) locks onto one mode: the heavier one near +1.9, with that mode's width and no mass on theta < 0
    assert 1.7 < one["mean"] < 2.1 and one["sd"] < 0.35 and one["neg"] < 0.01, out
    # smaller alpha spreads: the sd at the smallest alpha, and at alpha = 0, is well above the one-mode sd
    assert lowest["sd"] > 2 * one["sd"], out
    assert zero["sd"] > 3 * one["sd"] and zero["neg"] > 0.15, out
    # the ELBO ranks alpha = 1 first (it minimises KL(q||p)); KL(p||q) ranks it last
    assert all(one["elbo"] >= r["elbo"] for r in rows.values()), out
    assert all(one["kl_qp"] <= r["kl_qp"] + 1e-3 for r in rows.values()), out
    assert zero["kl_pq"] < one["kl_pq"] / 5, out
    for alpha, r in rows.items():
        assert r["iwae"] >= r["elbo"] - 1e-3, (alpha, out)  # log-mean-exp >= mean, draw for draw
        assert r["kl_qp"] >= 0 and r["kl_pq"] >= 0, (alpha, out)
    # PSIS flags the missing mode of the alpha = 1 fit
    assert one["khat"] > 0.7, out
    # alpha < 0: the K-draw objective reads above log p(y); alpha = 1: it is the ELBO, below it
    assert lowest["objective"] > log_evidence and one["objective"] < log_evidence, out
    assert _png_written(out, tmp_path / "svi_kl_direction.png"), out


def test_map_sparse_coding_example_runs(capsys, tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("PIL")  # scikit-learn's load_sample_images reads JPEGs with Pillow
    import math
    import re

    from ppl_examples import map_sparse_coding

    map_sparse_coding.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    number = r"(-?\d+\.\d+(?:e[-+]\d+)?)"
    # (a) the MAP codes for the fixed dictionary
    m = re.search(rf"sparsity: {number} of the codes exactly 0", out)
    assert m and 0.05 < float(m.group(1)) < 0.95, out
    objective = float(re.search(rf"objective 0\.5\|\|X - H W\^T\|\|\^2 \+ alpha\|\|H\|\|_1 = {number}", out).group(1))
    assert math.isfinite(objective) and objective > 0, out
    # log_joint is minus the objective less the Normal's and the Laplace's normalising constants
    assert float(re.search(rf"log joint .*\|diff\| = {number}", out).group(1)) < 1e-6 * objective, out
    assert float(re.search(rf"KKT residual \(max violation .*\) = {number}", out).group(1)) < 1e-3, out
    # the same lasso problem as scikit-learn's coordinate descent: the same optimum
    sk = float(re.search(rf"sparse_encode\(lasso_cd\): .* objective = {number}", out).group(1))
    rel = float(re.search(rf"objective relative difference \(ppl - sklearn\) / sklearn = {number}", out).group(1))
    assert abs(rel) < 1e-4 and abs(objective - sk) < 1e-4 * sk, out
    # (b) dictionary learning: the objective per round, 4 rounds in the quick run, never rising
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["round", "objective"])
    rounds = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        fields = line.split()
        rounds.append((int(fields[0]), float(fields[1])))
    assert [r for r, _ in rounds] == list(range(5)), out
    assert abs(rounds[0][1] - objective) < 1e-3, out  # round 0: the codes of (a)
    values = [v for _, v in rounds]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(values, values[1:])), out
    assert values[-1] < 0.8 * values[0], out  # learning the atoms lowers it by about 40% in 4 rounds
    final = float(re.search(rf"post\.params\['W'\] = {number}", out).group(1))
    assert abs(final - values[-1]) < 1e-6 * final, out  # post.history agrees with the recomputed objective
    assert float(re.search(rf"max \|norm - 1\| of W's columns = {number}", out).group(1)) < 1e-10, out
    path = tmp_path / "sparse_coding_dictionary.png"
    assert _png_written(out, path), out
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600, image.shape


def test_cavi_binary_sparse_coding_example_runs(capsys, tmp_path):
    pytest.importorskip("sklearn")
    import re

    from ppl_examples import cavi_binary_sparse_coding

    cavi_binary_sparse_coding.main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    number = r"(-?\d+\.\d+(?:e[-+]\d+)?)"
    # (a) the three schedules: schedule, ELBO, sweeps, decreases, converged, seconds
    rows = {}
    for line in out.splitlines():
        m = re.match(rf"\s+(sequential|parallel, damping 1|parallel, damping 0\.5)\s+{number}\s+(\d+)\s+(\d+)\s+"
                     r"(True|False)\s", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), int(m.group(3)), int(m.group(4)), m.group(5) == "True")
    assert set(rows) == {"sequential", "parallel, damping 1", "parallel, damping 0.5"}, out
    seq_elbo, _, seq_decreases, _ = rows["sequential"]
    assert seq_decreases == 0, out  # sequential coordinate ascent never lowers the ELBO
    assert "parallel undamped: ELBO decreased in" in out
    # (b) the exact posterior: ELBO <= log evidence, KL gap >= 0 in total and per image
    m = re.search(rf"log evidence log p\(v\) = {number} nats; sequential mean-field ELBO = {number}", out)
    assert m, out
    log_evidence, elbo = float(m.group(1)), float(m.group(2))
    assert abs(elbo - seq_elbo) < 1e-3, out
    assert elbo <= log_evidence + 1e-9, out
    m = re.search(rf"KL gap log p\(v\) - ELBO = {number} nats total, {number} nats per image", out)
    assert m, out
    gap, per_image = float(m.group(1)), float(m.group(2))
    assert gap >= 0 and per_image >= 0 and abs(gap - (log_evidence - elbo)) < 1e-3, out
    m = re.search(rf"per image: median {number}, max {number}", out)
    assert m and float(m.group(1)) >= -1e-9 and float(m.group(2)) >= float(m.group(1)), out
    assert float(re.search(rf"mean \|q\(h_i=1\) - p\(h_i=1\|v\)\| = {number}", out).group(1)) >= 0, out
    # ppl's exact and CAVI numbers agree with a brute-force enumeration that shares no code with ppl
    m = re.search(rf"\|diff\| log evidence {number}, ELBO {number}, max marginal {number}", out)
    assert m and max(float(g) for g in m.groups()) < 1e-6, out
    # (c) explaining away: a negative exact correlation, p(h_i=1, h_j=1 | v) below p_i p_j
    m = re.search(rf"units h(\d+), h(\d+): corr = {number} \(from \d+ exact joint samples: {number}\)", out)
    assert m and float(m.group(3)) < 0 and abs(float(m.group(4)) - float(m.group(3))) < 0.1, out
    m = re.search(rf"exact = {number}\s+vs  p_i p_j \(exact marginals\) = {number}", out)
    assert m and float(m.group(1)) < float(m.group(2)), out
    path = tmp_path / "cavi_binary_sparse_coding.png"
    assert _png_written(out, path), out
    if path.exists():
        import matplotlib.image

        image = matplotlib.image.imread(str(path))
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600, image.shape


@pytest.mark.slow  # 70 s; tests/test_cavi_binary.py checks the same 64-unit fixed point in the default run
def test_cavi_binary_sparse_coding_example_runs_64_hidden(capsys, tmp_path):
    """m = 64: CAVI's binary quadratic path (no 2^m table), no exact parts, the eq. 19.44 check."""
    pytest.importorskip("sklearn")
    import re

    from ppl_examples import cavi_binary_sparse_coding

    cavi_binary_sparse_coding.main(["--hidden", "64", "--digits", "20", "--max-iter", "200", "--parallel-iter", "5",
                                    "--out", str(tmp_path)])
    out = capsys.readouterr().out
    number = r"(-?\d+\.\d+(?:e[-+]\d+)?)"
    m = re.search(rf"\n  sequential\s+{number}\s+(\d+)\s+(\d+)\s+(True|False)\s", out)
    assert m and int(m.group(3)) == 0 and m.group(4) == "True", out  # converged, never lowered the ELBO
    assert re.search(r"\n  parallel, damping 1\s", out) and re.search(r"\n  parallel, damping 0\.2\s", out), out
    assert "(b), (c) skipped: the exact posterior is a table of 2^64" in out and "log evidence" not in out, out
    assert "diagnostics['path'] = 'binary quadratic'" in out, out
    m = re.search(rf"max \|sigmoid\(logit_i\) - q_i\| = {number} \(over 20 images x 64 units\)", out)
    assert m and float(m.group(1)) < 1e-4, out  # the sequential q is a fixed point of eq. 19.44
    m = re.search(rf"ELBO = {number} nats, {number} per image .*closed form from q \(no ppl\): \|diff\| {number}", out)
    assert m and abs(float(m.group(1)) / 20 - float(m.group(2))) < 1e-3 and float(m.group(3)) < 1e-6, out
    m = re.search(rf"units on per image, sum_i q\(h_i=1\): mean {number}", out)
    assert m and 0 < float(m.group(1)) < 64, out
    assert _png_written(out, tmp_path / "cavi_binary_sparse_coding.png"), out

def test_cavi_linreg_diabetes_example_runs(capsys):
    pytest.importorskip("sklearn")
    import re

    from ppl_examples import cavi_linreg_diabetes

    cavi_linreg_diabetes.main(["--quick"])
    out = capsys.readouterr().out
    assert float(re.search(r"max \|mean error\| ([0-9.e+-]+)", out).group(1)) < 1e-4, out
    ratios = [float(line.split()[-1]) for line in out.splitlines()
              if re.match(r"\s+(age|sex|bmi|bp|s\d)\s", line)]
    assert len(ratios) == 10 and all(r <= 1 + 1e-9 for r in ratios) and min(ratios) < 0.5, out  # over-confident
    kl = float(re.search(r"KL\(q‖p\) = log p\(y\) - ELBO = ([0-9.e+-]+) nats", out).group(1))
    assert kl > 0, out
    assert "ELBO decreases 0" in out and "damping 1: CAVI (parallel, damping 1) diverged" in out, out


def test_cavi_bgmm_example_runs(capsys, tmp_path):
    pytest.importorskip("sklearn")
    import re

    from ppl_examples import cavi_bgmm

    cavi_bgmm.main(["--out", str(tmp_path)])
    out = capsys.readouterr().out
    number = r"(-?\d+\.\d+(?:e[-+]\d+)?)"
    assert re.search(r"cavi +applies  conjugate-exponential mean field", out), out
    assert re.search(r"wine, the analysis's cavi line: cavi +applies", out), out
    for name, (N, D) in {"iris": (150, 4), "wine": (178, 13)}.items():
        section = out.split(f"=== {name}: ")[1].split("\n===")[0]
        assert section.startswith(f"N = {N}, D = {D}, K = 3"), out
        assert "factors recognised: {'loc & prec': 'NormalWishart', 'weights': 'Dirichlet'}" in section, out
        assert re.search(r"ppl CAVI: +\d+ sweeps in .* converged True, ELBO decreases 0", section), out
        assert re.search(r"sklearn BGMM: +\d+ iterations in .* converged True", section), out
        m = re.search(rf"ELBO \(ours\) = {number} +\(Bishop eq\. 10\.70 at our q: {number}\)", section)
        assert m and abs(float(m.group(1)) - float(m.group(2))) < 1e-6 * abs(float(m.group(1))), out
        ours = float(m.group(1))
        sk = float(re.search(rf"ELBO of sklearn's q \(same formula\) = {number}", section).group(1))
        assert ours >= sk - 1e-6 * abs(sk), out  # CAVI reaches at least scikit-learn's fixed point
        # lower_bound_ plus the dropped constant is the same ELBO
        assert abs(float(re.search(rf"lower_bound_ \+ c = {number}", section).group(1)) - sk) < 1e-6 * abs(sk), out
        assert float(re.search(rf"max \|responsibility difference\| = {number}", section).group(1)) < 1e-3, out
        m = re.search(rf"adjusted Rand index .*: ours {number}, sklearn {number}", section)
        assert m and abs(float(m.group(1)) - float(m.group(2))) < 1e-9 and float(m.group(1)) > 0.5, out
        ours_w, sk_w = re.search(r"E\[pi\] sorted: ours \[(.*)\], sklearn \[(.*)\]", section).groups()
        assert max(abs(float(a) - float(b)) for a, b in zip(ours_w.split(","), sk_w.split(","))) < 1e-3, out
    assert _png_written(out, tmp_path / "cavi_bgmm.png"), out


def test_tour_runs_its_every_backend_part(capsys, tmp_path):
    """make demo's tour: part 2 runs every backend on one mixture from the same params, with
    auto's choice and the compare table (the other parts are the examples tested above)."""
    from ppl_examples import tour

    tour.main(["--parts", "2", "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "method='auto' picks 'em'" in out and "ppl.compare on model 'gmm_diag'" in out
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.split() and line.split()[0] in ("exact", "em(max_iter=200)")}
    assert set(rows) == {"exact", "em(max_iter=200)"}
    # EM learns θ from θ_0: its log likelihood is far above the exact log evidence at θ_0
    assert float(rows["em(max_iter=200)"].split()[1]) > float(rows["exact"].split()[1]) + 100
    import matplotlib.image

    for name in ("tour_gmm_bound.png", "tour_gmm_z.png"):        # the plots open as images
        image = matplotlib.image.imread(tmp_path / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 100



def test_tour_shows_auto_escalating(capsys, tmp_path):
    """make demo's part 6: CAVI's mean field on a correlated Gaussian posterior is judged
    unreliable (its sds fall short of the exact ones), and auto goes on to Laplace, whose
    answer matches the closed-form Gaussian posterior."""
    pytest.importorskip("sklearn")
    import torch
    from sklearn.datasets import load_diabetes

    from ppl_examples import tour

    tour.main(["--parts", "6", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    tried = out.split("method='auto' tried, in turn:")[1].split("the answer")[0]
    lines = [line.split() for line in tried.strip().splitlines()]
    assert [w[0] for w in lines] == ["cavi", "laplace"]
    assert "underestimates a posterior sd" in tried and "kept: its verdict is reliable" in tried
    # the exact posterior of a Gaussian linear model with known noise (Bishop 2006, eq. 3.53-3.54)
    d = load_diabetes(scaled=False)
    x = torch.tensor(d.data[:, 2], dtype=torch.float64)
    X = torch.stack([torch.ones_like(x), x], -1)
    y = torch.tensor(d.target, dtype=torch.float64)
    cov = torch.linalg.inv(torch.diag(torch.tensor([1 / 100.0 ** 2, 1 / 10.0 ** 2], dtype=torch.float64))
                           + X.T @ X / 60.0 ** 2)
    mean = cov @ X.T @ y / 60.0 ** 2
    rows = {line.split()[0]: line.split() for line in out.split("the answer (laplace):")[1].splitlines()
            if line.split() and line.split()[0] in ("alpha", "beta")}
    for i, site in enumerate(("alpha", "beta")):
        sd = float(cov[i, i].sqrt())
        assert abs(float(rows[site][1]) - float(mean[i])) < 0.15 * sd
        assert 0.85 < float(rows[site][2]) / sd < 1.15
