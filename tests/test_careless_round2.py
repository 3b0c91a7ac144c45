"""Careless inputs, round 2: each test checks against a reference that cannot share the bug
(a closed form, a brute-force sum, the input's own value before the call)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.errors import DataError, ModelError, OptionError, UnsupportedModelError

F = torch.float64
XS3 = torch.tensor([0.3, 1.7, -0.4], dtype=F)
XS6 = torch.tensor([0.3, 1.7, -0.4, 0.9, 1.1, -2.0], dtype=F)


# --------------------------------------------------------------- f04: subsampled plates
def _mix_subsampled(x):
    with pyro.plate("d", 3, subsample_size=2) as idx:
        z = pyro.sample("z", dist.Bernoulli(torch.tensor(0.3, dtype=F)))
        pyro.sample("x", dist.Normal(2 * z, 1.), obs=x[idx])


def _mix_full_via_subsample(x):
    with pyro.plate("d", 3, subsample_size=3) as idx:  # subsample_size = size: every copy, nothing scaled
        z = pyro.sample("z", dist.Bernoulli(torch.tensor(0.3, dtype=F)))
        pyro.sample("x", dist.Normal(2 * z, 1.), obs=x[idx])


def _gauss_subsampled(x):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0., dtype=F), 10.))
    with pyro.plate("d", len(x), subsample_size=3) as idx:
        pyro.sample("x", dist.Normal(mu, 1.), obs=x[idx])


def _brute_log_evidence(xs) -> float:
    total = 0.0
    for x in xs.tolist():
        p = sum((0.3 if z else 0.7) * math.exp(-0.5 * (x - 2 * z) ** 2) / math.sqrt(2 * math.pi) for z in (0, 1))
        total += math.log(p)
    return total


@pytest.mark.parametrize("method", ["exact", "cavi", "map", "em"])
def test_subsampled_plate_is_refused_by_exact_and_table_methods(method):
    with pytest.raises(UnsupportedModelError) as info:
        ppl.infer(_mix_subsampled, {"x": XS3}, method=method)
    msg = str(info.value)
    assert "plate 'd'" in msg and "subsample_size" in msg and "method='svi'" in msg


@pytest.mark.parametrize("method", ["laplace", "pathfinder", "cavi", "nuts"])
def test_subsampled_plate_is_refused_by_continuous_methods(method):
    with pytest.raises(UnsupportedModelError, match=r"plate 'd' \(subsample_size=3 of 6\)"):
        ppl.infer(_gauss_subsampled, {"x": XS6}, method=method)


def test_subsampled_plate_auto_routes_to_svi_and_svi_still_runs():
    analysis = ppl.analyze(_gauss_subsampled, {"x": XS6})
    assert analysis.auto["method"] == "svi"
    assert [n for n, (ok, _) in analysis.backends.items() if ok] == ["svi"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(_gauss_subsampled, {"x": XS6}, method="svi", num_steps=300, seed=0)
    # closed form: N(0, 10^2) prior, unit noise -> posterior mean sum(x) / (n + 1/100); loose (3 of 6 per step)
    assert abs(float(post.mean("mu")) - float(XS6.sum()) / 6.01) < 0.6
    # a plate "subsampled" to its full size holds every copy: exact still applies, and is exact
    post = ppl.infer(_mix_full_via_subsample, {"x": XS3}, method="exact")
    assert post.log_evidence == pytest.approx(_brute_log_evidence(XS3), abs=1e-9)


# --------------------------------------------------------------- f02: generator models
def _gen_model(x):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0., dtype=F), 1.))
    with pyro.plate("d", len(x)):
        pyro.sample("obs", dist.Normal(mu, 1.), obs=x)
    yield mu


def test_generator_model_is_a_model_error_at_decoration_and_in_infer():
    with pytest.raises(ModelError, match=r"model '_gen_model' is a generator function.*yield"):
        ppl.model(_gen_model)
    for method in ("exact", "auto", "cavi"):
        with pytest.raises(ModelError, match="generator function"):
            ppl.infer(_gen_model, {"x": XS3}, method=method)
    with pytest.raises(ModelError, match="generator function"):
        ppl.analyze(_gen_model, {"x": XS3})


def test_model_that_returns_a_generator_is_refused_when_traced():
    wrapped = ppl.model(lambda x: _gen_model(x), name="wrapped")  # a plain lambda: only the run shows it
    with pytest.raises(ModelError, match="model 'wrapped' is a generator function"):
        ppl.compile(wrapped, {"x": XS3})
    with pytest.raises(ModelError, match="generator function"):
        wrapped.site_names(x=XS3)


# --------------------------------------------------------------- f10: returned values are copies
@ppl.model
def _gauss(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu, 1.0), obs=x)


@ppl.model
def _coin(x):
    z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.3, dtype=F)))
    with ppl.plate("d", len(x)):
        ppl.sample("x", dist.Normal(z.to(F) * 2, 1.0), obs=x)


@ppl.model
def _mix(x):
    w = ppl.param("w", torch.tensor([0.5, 0.5], dtype=F), constraint=dist.constraints.simplex)
    loc = ppl.param("loc", torch.tensor([-1., 1.], dtype=F))
    with ppl.plate("d", len(x)):
        z = ppl.sample("z", dist.Categorical(w))
        ppl.sample("x", dist.Normal(loc[z], 1.), obs=x)


XS4 = torch.tensor([0.3, 1.7, -0.4, 2.2], dtype=F)
# closed forms: N(0, 10^2) prior, unit noise, 4 points
GAUSS_MEAN, GAUSS_VAR = float(XS4.sum()) / 4.01, 1 / 4.01


def _coin_posterior_z1() -> float:
    like = [math.prod(math.exp(-0.5 * (x - 2 * z) ** 2) for x in XS4.tolist()) for z in (0, 1)]
    return 0.3 * like[1] / (0.7 * like[0] + 0.3 * like[1])


def _edit_everything(post, site):
    post.mean(site).sub_(1.0)
    post.variance(site).mul_(3.0)
    post.quantile(site, 0.3).add_(7)
    marg = post.marginal(site)
    for name in ("loc", "scale", "probs", "logits"):
        if isinstance(vars(marg).get(name), torch.Tensor):
            vars(marg)[name].mul_(0.5)
    for value in post.sample(3, seed=0).values():
        value.add_(1)
    for value in post.params.values():
        value.add_(100.0)
    try:
        for value in post.map().values():
            value.add_(1)
    except UnsupportedModelError:
        pass


def test_edits_of_returned_values_do_not_change_a_gaussian_posterior():
    post = ppl.infer(_gauss, {"x": XS4}, method="cavi", seed=0)
    _edit_everything(post, "mu")
    assert float(post.mean("mu")) == pytest.approx(GAUSS_MEAN, abs=1e-6)
    assert float(post.variance("mu")) == pytest.approx(GAUSS_VAR, rel=1e-6)
    # the 0.3-quantile of N(m, v): m + sqrt(v) * Phi^-1(0.3)
    q = GAUSS_MEAN + math.sqrt(GAUSS_VAR) * -0.5244005127080407
    assert float(post.quantile("mu", 0.3)) == pytest.approx(q, abs=1e-6)
    assert float(post.marginal("mu").mean) == pytest.approx(GAUSS_MEAN, abs=1e-6)


def test_edits_of_returned_values_do_not_change_an_svi_posterior():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ppl.infer(_gauss, {"x": XS4}, method="svi", num_steps=100, seed=0)
    before = (post.mean("mu").item(), post.quantile("mu", 0.3).item(), post.sample(5, seed=1)["mu"].tolist(),
              {k: v.tolist() for k, v in vars(post)["params"].items()})
    _edit_everything(post, "mu")
    after = (post.mean("mu").item(), post.quantile("mu", 0.3).item(), post.sample(5, seed=1)["mu"].tolist(),
             {k: v.tolist() for k, v in vars(post)["params"].items()})
    assert after == before


def test_edits_of_returned_values_do_not_change_an_exact_posterior():
    post = ppl.infer(_coin, {"x": XS4}, method="exact")
    _edit_everything(post, "z")
    post.probs("z").mul_(0.5)
    assert float(post.mean("z")) == pytest.approx(_coin_posterior_z1(), abs=1e-9)
    assert float(post.marginal("z").probs) == pytest.approx(_coin_posterior_z1(), abs=1e-9)
    assert float(post.map()["z"]) == 0.0


def test_edits_of_params_do_not_change_the_learned_values():
    post = ppl.infer(_mix, {"x": XS4}, method="em", seed=0)
    before = {k: v.clone() for k, v in vars(post)["params"].items()}
    _edit_everything(post, "z")
    for name, value in post.params.items():
        assert torch.equal(value, before[name])
    assert float(post.params["w"].sum()) == pytest.approx(1.0, abs=1e-12)


def test_edits_of_stored_draws_do_not_change_the_draws():
    post = ppl.infer(_gauss, {"x": XS4}, method="laplace", seed=0)
    kept = post.draws("mu").clone()
    post.draws("mu").add_(5.0)
    post.marginal("mu")._samples.add_(5.0)
    assert torch.equal(post.draws("mu"), kept)


# --------------------------------------------------------------- f06: site_names is pure
def test_site_names_leaves_the_global_param_store_alone():
    @ppl.model
    def with_param(x):
        s = ppl.param("s_round2", torch.tensor(1.0, dtype=F), constraint=dist.constraints.positive)
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0., dtype=F), 10.))
        ppl.sample("obs", dist.Normal(mu, s), obs=x)

    pyro.clear_param_store()
    pyro.param("kept", torch.tensor(3.0))
    assert with_param.site_names(x=torch.tensor(0.5, dtype=F)) == ["mu", "obs"]
    assert list(pyro.get_param_store().keys()) == ["kept"]
    assert float(pyro.param("kept")) == 3.0
    pyro.clear_param_store()


# --------------------------------------------------------------- f07: load(map_location="meta")
@pytest.mark.parametrize("where", ["meta", torch.device("meta")])
def test_load_refuses_a_meta_map_location(tmp_path, where):
    path = str(tmp_path / "p.pt")
    post = ppl.infer(_gauss, {"x": XS4}, method="cavi", seed=0)
    post.save(path)
    with pytest.raises(OptionError, match=r"map_location=.*meta.* is not supported"):
        ppl.load(path, map_location=where)
    loaded = ppl.load(path, map_location="cpu")  # still fine: the closed form comes back
    assert float(loaded.mean("mu")) == pytest.approx(GAUSS_MEAN, abs=1e-9)


# --------------------------------------------------------------- f09: infer_stream's arguments
def test_infer_stream_names_a_stream_that_is_not_callable():
    batches = [{"x": XS4}]
    for stream in (batches, iter(batches)):
        with pytest.raises(OptionError, match=r"stream= \(a \w+\) must be a callable returning a fresh iterator"):
            ppl.infer_stream(_gauss, stream, method="cavi")


@pytest.mark.parametrize("method", ["laplace", "auto", "svi"])
def test_infer_stream_names_a_method_that_does_not_stream(method):
    with pytest.raises(OptionError, match=rf"method='{method}' does not fit a stream.*\['em', 'cavi'\]"):
        ppl.infer_stream(_gauss, lambda: iter([{"x": XS4}]), method=method)


def test_infer_stream_names_an_exception_of_the_stream():
    def reader():
        raise KeyError("column 'x'")

    with pytest.raises(DataError, match=r"stream=: calling the stream '.*reader' raised KeyError"):
        ppl.infer_stream(_gauss, reader, method="cavi")

    def second_batch_fails():
        yield {"x": XS4}
        raise KeyError("column 'x'")

    with pytest.raises(DataError, match=r"raised KeyError: \"column 'x'\" while reading batch 2"):
        ppl.infer_stream(_gauss, second_batch_fails, method="cavi")
    with warnings.catch_warnings():  # a stream that reads fine: the closed form
        warnings.simplefilter("ignore")
        post = ppl.infer_stream(_gauss, lambda: iter([{"x": XS4}]), method="cavi", epochs=40)
    assert float(post.mean("mu")) == pytest.approx(GAUSS_MEAN, abs=1e-3)


# --------------------------------------------------------------- f11: a pandas Series as obs=
def test_pandas_series_argument_used_as_obs_is_read_as_numbers():
    pd = pytest.importorskip("pandas")
    series = pd.Series(XS4.tolist(), index=[10, 20, 30, 40])  # an index that is not 0..n-1
    post = ppl.infer(_gauss, {"x": series}, method="cavi")
    assert float(post.mean("mu")) == pytest.approx(GAUSS_MEAN, abs=1e-9)
    assert float(post.variance("mu")) == pytest.approx(GAUSS_VAR, rel=1e-9)
    assert series.tolist() == XS4.tolist()  # the user's Series is not changed
    with pytest.raises(DataError, match=r"observed site 'obs': cannot read its value .* \(Series\) as numbers"):
        ppl.infer(_gauss, {"x": pd.Series(["a", "b", "c"])}, method="cavi")


def test_dataframe_argument_still_reaches_the_model_unchanged():
    pd = pytest.importorskip("pandas")
    seen = []

    @ppl.model
    def by_column(frame):
        seen.append(type(frame))
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F), 10.0))
        with ppl.plate("data", len(frame)):
            ppl.sample("obs", dist.Normal(mu, 1.0), obs=frame["a"])

    frame = pd.DataFrame({"a": XS4.tolist(), "label": list("uvwx")}, index=[5, 6, 7, 8])  # not 0..n-1
    post = ppl.infer(by_column, {"frame": frame}, method="cavi")
    assert seen and all(t is pd.DataFrame for t in seen)
    assert float(post.mean("mu")) == pytest.approx(GAUSS_MEAN, abs=1e-9)


# --------------------------------------------------------------- f08: render's path
def test_render_names_a_path_that_is_not_a_path_or_cannot_be_written(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(OptionError, match=r"render\(\): path must be None, a str or an os.PathLike, got int"):
        ppl.render(_gauss, {"x": XS4}, 3, engine="matplotlib")
    target = tmp_path / "is_a_folder.png"
    target.mkdir()  # a path that names a directory cannot be written as a file, whoever runs the test
    with pytest.raises(OptionError, match=r"render\(\): cannot write the drawing to '.*is_a_folder.png'"):
        ppl.render(_gauss, {"x": XS4}, target, engine="matplotlib")
    good = ppl.render(_gauss, {"x": XS4}, tmp_path / "m.png", engine="matplotlib")
    assert good.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------- f01: the prepared-model cache
import functools  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

from ppl import prepared  # noqa: E402

EV = {"x": torch.tensor(1.)}


def _log_evidence(p: float) -> float:
    """log p(x=1) of z ~ Bernoulli(p), x | z ~ Bernoulli(0.2 + 0.7 z): by hand."""
    return math.log((1 - p) * 0.2 + p * 0.9)


_CFG = types.SimpleNamespace(p=0.3)
_HOLDER = types.SimpleNamespace(t=torch.tensor(0.3, dtype=F))
_BIG = np.full(70000, 0.3)
_PR = [0.3]
_PL = [0.3]
_LAMBDA_P = [0.3]
_MOD = types.ModuleType("ppl_round2_cfgmod")
_MOD.P = torch.tensor(0.3, dtype=F)
sys.modules["ppl_round2_cfgmod"] = _MOD
import ppl_round2_cfgmod  # noqa: E402


def _bn(p, x):
    z = ppl.sample("z", dist.Bernoulli(torch.as_tensor(p, dtype=F)))
    ppl.sample("x", dist.Bernoulli(0.2 + 0.7 * z), obs=x)


@ppl.model
def _m_cfg(x):
    _bn(_CFG.p, x)


@ppl.model
def _m_mod(x):
    _bn(ppl_round2_cfgmod.P, x)


@ppl.model
def _m_obj(x):
    _bn(_HOLDER.t, x)


@ppl.model
def _m_big(x):
    _bn(float(_BIG[0]), x)


@ppl.model
def _m_default(x, pr=_PR):
    _bn(pr[0], x)


def _m_partial_base(x, p):
    _bn(p[0], x)


def _prior():
    return _LAMBDA_P[0]


@ppl.model
def _m_lambda(x):
    get = lambda: _prior()  # noqa: E731 - the global is named only inside the lambda's code
    _bn(get(), x)


class _Callable:
    p = 0.3

    def __call__(self, x):
        _bn(self.p, x)


def _set(obj, name, value):
    return lambda: setattr(obj, name, value)


def _item(container, value):
    def edit():
        container[0] = value
    return edit


_INST = _Callable()
CASES = {
    "object attribute": (_m_cfg, _set(_CFG, "p", 0.9), _set(_CFG, "p", 0.3)),
    "module attribute reassigned": (_m_mod, _set(_MOD, "P", torch.tensor(0.9, dtype=F)),
                                    _set(_MOD, "P", torch.tensor(0.3, dtype=F))),
    "callable-class attribute": (_INST, _set(_INST, "p", 0.9), lambda: vars(_INST).pop("p", None)),
    "object's tensor edited in place": (_m_obj, lambda: _HOLDER.t.fill_(0.9), lambda: _HOLDER.t.fill_(0.3)),
    "big numpy array edited": (_m_big, _item(_BIG, 0.9), _item(_BIG, 0.3)),
    "mutable default argument": (_m_default, _item(_PR, 0.9), _item(_PR, 0.3)),
    "functools.partial": (functools.partial(_m_partial_base, p=_PL), _item(_PL, 0.9), _item(_PL, 0.3)),
    "global reached through a lambda": (_m_lambda, _item(_LAMBDA_P, 0.9), _item(_LAMBDA_P, 0.3)),
}


@pytest.mark.parametrize("label", list(CASES))
def test_prepared_cache_sees_what_the_model_reads(label):
    model, change, undo = CASES[label]
    model = ppl.model(model) if not isinstance(model, ppl.Model) else model
    prepared.clear_cache()
    try:
        first = ppl.infer(model, EV, method="exact")
        again = ppl.infer(model, EV, method="exact")
        assert again.graph.rebound is not None  # unchanged: the warm path still reuses the compiled model
        change()
        after = ppl.infer(model, EV, method="exact")
    finally:
        undo()
        prepared.clear_cache()
    assert first.log_evidence == pytest.approx(_log_evidence(0.3), abs=1e-12)
    assert after.log_evidence == pytest.approx(_log_evidence(0.9), abs=1e-12)
    assert float(after.marginal("z").probs) == pytest.approx(0.9 * 0.9 / (0.1 * 0.2 + 0.9 * 0.9), abs=1e-12)


def test_prepared_cache_is_not_used_where_the_fingerprint_cannot_be_read():
    import itertools

    counter = itertools.count()  # an iterator: its state cannot be read, so never reused

    @ppl.model
    def opaque(x):
        assert counter is not None
        _bn(0.3, x)

    prepared.clear_cache()
    ppl.infer(opaque, EV, method="exact")
    assert ppl.infer(opaque, EV, method="exact").graph.rebound is None
    prepared.clear_cache()
