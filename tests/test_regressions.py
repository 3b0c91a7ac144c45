"""Regression tests for bugs found in review: each once gave a wrong answer or a wrong error."""

import os
import subprocess
import sys

import numpy as np
import pyro
import pytest
import torch

import ppl
import ppl.distributions as dist


def test_undeclared_batch_dim_never_gives_a_silent_answer():
    # obs has batch dim 2 with no plate: it once collided with z's enumeration dim and the
    # log evidence came out as -0.9239 instead of -2.2479
    @ppl.model
    def m(x):
        z = pyro.sample("z", dist.Bernoulli(0.5))
        pyro.sample("obs", dist.Normal(z, 1.0).expand([2]), obs=x)

    with pytest.raises((ppl.ModelError, ppl.UnsupportedModelError)):
        ppl.infer(m, {"x": torch.tensor([0.1, 0.9])}, method="exact")


def test_undeclared_latent_batch_is_unsupported():
    @ppl.model
    def m():
        z = pyro.sample("z", dist.Categorical(torch.ones(3) / 3).expand([4]))
        pyro.sample("o", dist.Normal(z.double(), 1.0), obs=torch.zeros(4))

    with pytest.raises(ppl.UnsupportedModelError, match="site 'z'.*ppl.plate"):
        ppl.infer(m, {}, method="exact")


def test_tables_in_float64_when_model_builds_float32_constants():
    # the model creates its tables with the default dtype inside the function; dtype=float64
    # must give float64 accuracy (reference: numpy forward algorithm in float64)
    T = 200
    rng = np.random.default_rng(0)
    y = rng.normal(size=T) * 2

    @ppl.model
    def hmm(y):
        trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
        locs = torch.tensor([-1.0, 1.0])
        x = pyro.sample("x_0", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("y_0", dist.Normal(locs[x], 1.0), obs=y[0])
        for t in pyro.markov(range(1, len(y))):
            x = pyro.sample(f"x_{t}", dist.Categorical(ppl.Vindex(trans)[x]))
            pyro.sample(f"y_{t}", dist.Normal(locs[x], 1.0), obs=y[t])

    trans = np.array([[0.9, 0.1], [0.2, 0.8]])
    locs = np.array([-1.0, 1.0])
    emit = np.exp(-0.5 * (y[:, None] - locs) ** 2) / np.sqrt(2 * np.pi)
    alpha = 0.5 * emit[0]
    log_z = 0.0
    for t in range(1, T):
        c = alpha.sum()
        log_z += np.log(c)
        alpha = (alpha / c) @ trans * emit[t]
    log_z += np.log(alpha.sum())
    post = ppl.infer(hmm, {"y": y}, method="exact", marginals=False, map=False)
    assert post.log_evidence == pytest.approx(log_z, abs=1e-9)


def test_elimination_order_independent_of_hash_seed():
    code = ("import ppl; from ppl.models import example_network; "
            "print(ppl.analyze(example_network('win95pts'), heuristic='min_degree').order)")
    outs = set()
    for seed in ("0", "1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout
        outs.add(out)
    assert len(outs) == 1


def _coin():
    @ppl.model
    def coin():
        c = pyro.sample("c", dist.Bernoulli(0.3))
        with ppl.plate("flips", 4):
            pyro.sample("y", dist.Bernoulli(0.2 + 0.5 * c), obs=torch.tensor([1.0, 1.0, 0.0, 1.0]))

    return coin


def test_compare_rejects_unknown_method_before_running():
    with pytest.raises(ppl.BackendNotFoundError, match="registered methods"):
        ppl.compare(_coin(), {}, methods=["exact", "exactt"])


def test_marginals_false_says_so():
    post = ppl.infer(_coin(), {}, method="exact", marginals=False)
    assert post.sites == ["c"]
    with pytest.raises(ppl.DataError, match="marginals=False"):
        post.marginal("c")


def test_sampling_reuses_the_taped_pass_and_stays_exact():
    post = ppl.infer(_coin(), {}, method="exact", seed=0)
    a = post.sample(4000)["c"].mean()
    b = post.sample(4000)["c"].mean()
    p = float(post.marginal("c").probs)
    se = (p * (1 - p) / 4000) ** 0.5
    assert abs(float(a) - p) < 5 * se and abs(float(b) - p) < 5 * se


def _flips_model():
    def coin(flips):
        c = pyro.sample("c", dist.Bernoulli(0.3))
        with pyro.plate("n", len(flips)):
            pyro.sample("y", dist.Bernoulli(0.2 + 0.5 * c), obs=flips)

    return ppl.model(coin)


@pytest.mark.parametrize(
    "flips, match",
    [
        (torch.tensor([1.0, 2.0, 0.0]), "outside the support"),  # once gave -1.347 silently
        (torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]), "does not fit"),  # once collided with c's dim
    ],
)
def test_obs_given_in_model_code_is_checked(flips, match):
    with pytest.raises(ppl.DataError, match=match) as info:
        ppl.infer(_flips_model(), {"flips": flips}, method="exact")
    assert "Trace Shapes" not in str(info.value)


def test_obs_scalar_in_model_code_is_checked():
    @ppl.model
    def scalar():
        c = pyro.sample("c", dist.Bernoulli(0.3))
        pyro.sample("y", dist.Bernoulli(0.2 + 0.5 * c), obs=-1.0)  # once reported log evidence +0.82

    with pytest.raises(ppl.DataError, match="'y'.*outside the support"):
        ppl.infer(scalar, {}, method="exact")


def test_integer_obs_in_model_code_on_bernoulli():
    ints = ppl.infer(_flips_model(), {"flips": torch.tensor([1, 0, 1])}, method="exact").log_evidence
    floats = ppl.infer(_flips_model(), {"flips": torch.tensor([1.0, 0.0, 1.0])}, method="exact").log_evidence
    # by hand: p = 0.7 * .2*.8*.2 + 0.3 * .7*.3*.7
    assert ints == pytest.approx(np.log(0.7 * 0.2 * 0.8 * 0.2 + 0.3 * 0.7 * 0.3 * 0.7), abs=1e-12)
    assert ints == floats


def test_changed_param_rebuilds_cached_tables():
    pyro.clear_param_store()

    @ppl.model
    def m(x):
        w = ppl.param("w_regression", torch.tensor([0.5, 0.5], dtype=torch.float64), constraint=dist.constraints.simplex)
        with ppl.plate("d", len(x)):
            z = ppl.sample("z", dist.Categorical(w))
            ppl.sample("o", dist.Normal(z.double(), 1.0), obs=x)

    x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    g = ppl.compile(m, {"x": x})
    first = ppl.infer(g, method="exact").log_evidence
    got = ppl.infer(g, method="exact", init={"w_regression": torch.tensor([0.9, 0.1], dtype=torch.float64)}).log_evidence
    assert ppl.infer(g, method="exact").log_evidence == first  # the warm start did not stick
    normal = torch.distributions.Normal(torch.tensor([0.0, 1.0], dtype=torch.float64), 1.0)
    want = sum(float(torch.logsumexp(torch.log(torch.tensor([0.9, 0.1], dtype=torch.float64))
                                     + normal.log_prob(xi), 0)) for xi in x)
    assert got == pytest.approx(want, abs=1e-12)
    pyro.clear_param_store()


def test_analysis_reports_undeclared_batch_dims():
    @ppl.model
    def m():
        pyro.sample("z", dist.Categorical(torch.ones(3) / 3).expand([4]))

    analysis = ppl.analyze(m, {})
    assert analysis.undeclared_batch == {"z": [-1]}
    ok, why = analysis.backends["exact"]
    assert not ok and "ppl.plate" in why


def test_chain_detection_independent_of_hash_seed():
    code = ("import torch, pyro, ppl, ppl.distributions as dist\n"
            "def hmm(y):\n"
            "    x = pyro.sample('x_0', dist.Categorical(torch.ones(2) / 2))\n"
            "    for t in pyro.markov(range(1, len(y))):\n"
            "        x = pyro.sample(f'x_{t}', dist.Categorical(ppl.Vindex(torch.tensor([[.9, .1], [.2, .8]]))[x]))\n"
            "        pyro.sample(f'y_{t}', dist.Normal(x.double(), 1.0), obs=y[t])\n"
            "print(ppl.analyze(ppl.model(hmm), {'y': torch.zeros(30)}).chains[0].vars)\n")
    outs = set()
    for seed in ("0", "1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.add(subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout)
    assert len(outs) == 1


def test_probe_keeps_a_constant_broadcast_against_a_param_constant():
    """``Normal(loc[z], 1.0)`` broadcasts the constant scale against a probed gather; the
    constant used to come back as a 'gather' with float positions, which sent the factor to
    a model re-run and ``loc`` to the gradient M-step."""
    import warnings

    import ppl
    import ppl.distributions as dist
    from ppl.distributions import constraints

    x = torch.cat([torch.randn(40, generator=torch.Generator().manual_seed(0)) - 2,
                   torch.randn(40, generator=torch.Generator().manual_seed(1)) + 2]).double()

    @ppl.model
    def gmm(x):
        w = ppl.param("w", torch.ones(2, dtype=torch.float64) / 2, constraint=constraints.simplex)
        loc = ppl.param("loc", torch.tensor([-1.0, 1.0], dtype=torch.float64))
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Categorical(w))
            ppl.sample("obs", dist.Normal(loc[z], 1.0), obs=x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        post = ppl.infer(gmm, {"x": x}, method="em", max_iter=3)
    assert post.diagnostics["m_step"]["loc"] == "closed form (Normal loc)"
    assert post.diagnostics["slow_factors"] == []


def test_a_failing_cavi_check_does_not_block_svi():
    """CAVI's analysis evaluates the model in float64; a float32 network in the model made
    that check raise ModelError from ppl.infer whatever the method (a VAE with few
    images).  Now the check reports "does not apply" and SVI runs."""
    import ppl
    import ppl.distributions as dist

    net = torch.nn.Linear(2, 3)                      # float32 weights

    @ppl.model
    def decoder(x):
        with ppl.plate("data", x.shape[0]):
            z = ppl.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            ppl.sample("x", dist.Normal(net(z), 1.0).to_event(1), obs=x)

    x = torch.randn(5, 3)
    an = ppl.analyze(decoder, {"x": x})
    assert an.backends["svi"][0]
    post = ppl.infer(decoder, {"x": x}, method="svi", num_steps=3, progress=False)
    assert post.method == "svi"


def test_map_of_discrete_sites_is_in_the_requested_precision():
    """A model with Python-float constants has float32 supports; the MAP point was returned
    in float32 and the log joint re-evaluated there lost 8e-8 nats.  Now the values come
    in the run's dtype and map's log_joint equals exact's max-product value."""
    import ppl
    import ppl.distributions as dist

    @ppl.model
    def grass():
        rain = ppl.sample("rain", dist.Bernoulli(0.2))
        sprinkler = ppl.sample("sprinkler", dist.Bernoulli(0.3))
        ppl.sample("wet", dist.Bernoulli(1 - 0.99 * 0.1 ** rain * 0.2 ** sprinkler))

    post = ppl.infer(grass, {"wet": 1.0}, method="map")
    exact = ppl.infer(grass, {"wet": 1.0}, method="exact")
    assert post.map()["rain"].dtype == torch.float64
    assert post.log_joint == pytest.approx(exact.diagnostics["map_log_joint"], abs=1e-12)


def test_svi_takes_a_python_number_used_as_obs():
    """A model argument given as a Python float and used as ``obs=`` works in exact and cavi;
    SVI's Pyro runs raised 'The value argument to log_prob must be a Tensor'.  Now SVI casts
    obs values as the compiled trace does (Normal-Normal: the posterior mean is v / 2)."""
    import warnings

    import ppl
    import ppl.distributions as dist

    @ppl.model
    def one_obs(v):
        mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        ppl.sample("y", dist.Normal(mu, 1.0), obs=v)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        post = ppl.infer(one_obs, {"v": 2.0}, method="svi", num_steps=1500, lr=0.05, seed=0, progress=False,
                         dtype=torch.float64)
    assert float(post.mean("mu")) == pytest.approx(1.0, abs=0.1)
