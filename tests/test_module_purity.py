"""Pure calls for ``pyro.module`` networks (issue 17): ``ppl.infer`` / ``analyze`` /
``compare`` leave every network registered with ``pyro.module`` (by the model or by a
callable guide) bit for bit as they found it, also when the run raises; the learned weights
are in ``post.params`` under Pyro's ``"name$$$p"`` keys, every later run of the model or
guide by the posterior uses them, ``init=post`` starts from them, and
``post.load_module_weights()`` writes them into the networks only when asked.

References: the networks' state before the call (compared bit for bit), predictions
computed by hand from ``post.params`` (plain torch: ``x @ W.T + b``, the encoder's
``Linear`` as a matrix product), and a second identical call.
"""

from __future__ import annotations

import math
import warnings

import pyro
import pytest
import torch

import ppl
import ppl.distributions as dist

F64 = torch.float64
N = 24
X = torch.randn(N, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
W_TRUE, B_TRUE, NOISE = torch.tensor([[1.5, -2.0]], dtype=F64), torch.tensor([0.3], dtype=F64), 0.2
Y = (X @ W_TRUE.T + B_TRUE).squeeze(-1) + NOISE * torch.randn(N, generator=torch.Generator().manual_seed(1),
                                                               dtype=F64)
SVI = {"method": "svi", "num_steps": 400, "lr": 0.05, "seed": 0, "elbo_particles": 50, "progress": False}


def _net(seed=3):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.nn.Linear(2, 1).double()


def _regression(net):
    """y_i ~ Normal(net(x_i), s): the mean is a network registered with pyro.module."""
    @ppl.model
    def regression(x, y):
        pyro.module("net", net)
        s = ppl.sample("s", dist.HalfNormal(torch.tensor(1.0, dtype=F64)))
        with ppl.plate("data", len(x)):
            ppl.sample("y", dist.Normal(net(x).squeeze(-1), s), obs=y)

    return regression


def _vae(seed=4):
    """A tiny VAE: z_i ~ N(0, 1), x_i ~ N(decoder(z_i), 0.3 I); the amortised guide's
    encoder maps x_i to the mean and log-sd of q(z_i | x_i); both networks registered."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        decoder, encoder = torch.nn.Linear(1, 2).double(), torch.nn.Linear(2, 2).double()

    @ppl.model
    def vae(x):
        pyro.module("decoder", decoder)
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Normal(torch.zeros(1, dtype=F64), 1.0).to_event(1))
            ppl.sample("obs", dist.Normal(decoder(z), 0.3).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with ppl.plate("data", len(x)):
            out = encoder(x)
            ppl.sample("z", dist.Normal(out[..., :1], out[..., 1:].exp()).to_event(1))

    return vae, guide, decoder, encoder


def _state(*nets) -> list:
    """Each parameter: (the tensor object, a copy of its value, its .grad)."""
    return [(p, p.detach().clone(), p.grad) for net in nets for p in net.parameters()]


def _unchanged(state) -> bool:
    return all(torch.equal(p.detach(), value) and p.dtype == value.dtype and p.grad is grad
               for p, value, grad in state)


def _infer(model, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppl.infer(model, data, **{**SVI, **kw})


def _store():
    store = pyro.get_param_store()
    return {k: (store.get_state()["params"][k], store[k].detach().clone()) for k in store.keys()}


@pytest.fixture(scope="module")
def regression_fit():
    """``(net, model, state of net before the fit, posterior)`` of one seeded SVI fit."""
    net = _net()
    model = _regression(net)
    state = _state(net)
    return net, model, state, _infer(model, {"x": X, "y": Y})


@pytest.fixture(scope="module")
def vae_fit():
    """``(vae, guide, decoder, encoder, x, state of both networks before the fit, posterior)``."""
    vae, guide, decoder, encoder = _vae()
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    state = _state(decoder, encoder)
    post = _infer(vae, {"x": x}, guide=guide, num_steps=200, posterior_samples=4000)
    return vae, guide, decoder, encoder, x, state, post


def test_svi_leaves_the_networks_and_the_global_store_as_found():
    net = _net()
    model = _regression(net)
    pyro.clear_param_store()
    pyro.param("unrelated", torch.tensor([1.0, 2.0]))
    pyro.module("net", net)                      # a plain Pyro registration of the same network, before
    state, store = _state(net), _store()
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    post = _infer(model, {"x": X, "y": Y})
    assert _unchanged(state)
    assert all(torch.equal(v, sd[k]) for k, v in net.state_dict().items())
    after = _store()
    assert set(after) == set(store)
    assert all(after[k][0] is store[k][0] and torch.equal(after[k][1], store[k][1]) for k in store)
    assert post.params["net$$$weight"].shape == (1, 2) and post.params["net$$$bias"].shape == (1,)
    pyro.clear_param_store()


def test_an_amortised_guide_and_its_decoder_are_left_as_found(vae_fit):
    *_, state, post = vae_fit
    assert _unchanged(state)
    assert {"decoder$$$weight", "decoder$$$bias", "encoder$$$weight", "encoder$$$bias"} <= set(post.params)
    assert post.params["encoder$$$weight"].shape == (2, 2) and post.params["decoder$$$weight"].shape == (2, 1)


def test_two_seeded_runs_give_the_same_posterior(regression_fit):
    net, model, state, first = regression_fit
    second = _infer(model, {"x": X, "y": Y})
    assert _unchanged(state)
    assert first.elbo == second.elbo and first.history == second.history
    assert set(first.params) == set(second.params)
    assert all(torch.equal(first.params[k], second.params[k]) for k in first.params)
    assert torch.equal(first.mean("s"), second.mean("s"))


def test_the_learned_weights_are_in_params_and_near_the_truth(regression_fit):
    net, _, state, post = regression_fit
    initial = state[0][1]
    learned = post.params["net$$$weight"]
    assert not torch.equal(learned, initial) and torch.equal(net.weight.detach(), initial)
    torch.testing.assert_close(learned, W_TRUE, atol=0.2, rtol=0)   # N = 24 points with noise sd 0.2
    torch.testing.assert_close(post.params["net$$$bias"], B_TRUE, atol=0.2, rtol=0)


def test_predictive_and_draws_use_the_learned_weights(regression_fit):
    net, _, state, post = regression_fit
    w, b = post.params["net$$$weight"], post.params["net$$$bias"]
    by_hand = (X @ w.T + b).squeeze(-1)                  # the learned network, in plain torch
    untrained = (X @ net.weight.detach().T + net.bias.detach()).squeeze(-1)
    versions = [p._version for p in net.parameters()]
    n = 4000
    draws = post.predictive(n, seed=1)["y"]
    assert draws.shape == (n, N)
    s = float(post.mean("s"))
    se = 4 * (s + float(post.variance("s").sqrt())) / math.sqrt(n)
    assert float((draws.mean(0) - by_hand).abs().max()) < se
    assert float((untrained - by_hand).abs().max()) > 10 * se    # the user's weights would be far off
    with_x = post.predictive(n, data={"x": X[:3]}, seed=2)["y"]  # new covariates, the same weights
    assert float((with_x.mean(0) - by_hand[:3]).abs().max()) < se
    idata = post.to_arviz(num_samples=2000, seed=3)
    arviz_mean = torch.as_tensor(idata.posterior_predictive["y"].values).reshape(-1, N).mean(0)
    assert float((arviz_mean - by_hand).abs().max()) < 4 * (s + 0.1) / math.sqrt(2000)
    assert _unchanged(state)
    assert [p._version for p in net.parameters()] == versions   # lent and given back without in-place records


def test_guided_means_use_the_learned_encoder(vae_fit):
    _, _, _, encoder, x, state, post = vae_fit
    w, b = post.params["encoder$$$weight"], post.params["encoder$$$bias"]
    out = x @ w.T + b                                     # the learned encoder, in plain torch
    loc, sd = out[:, :1], out[:, 1:].exp()
    mean = post.mean("z")
    assert mean.shape == (N, 1)
    assert float(((mean - loc).abs() / sd).max()) < 4 / math.sqrt(4000) * 1.5
    draws = post.sample(3000, seed=0)["z"]
    assert draws.shape == (3000, N, 1)
    assert float(((draws.mean(0) - loc).abs() / sd).max()) < 4 / math.sqrt(3000) * 1.5
    untrained_loc = encoder(x).detach()[:, :1]
    assert float((untrained_loc - loc).abs().max()) > 0.1
    assert _unchanged(state)


def test_a_failing_run_leaves_the_networks_as_found():
    net = _net()
    calls = [0]

    @ppl.model
    def breaks(x, y):
        calls[0] += 1
        if calls[0] > 60:                                  # after some SVI steps have trained the network
            raise RuntimeError("boom")
        pyro.module("net", net)
        s = ppl.sample("s", dist.HalfNormal(torch.tensor(1.0, dtype=F64)))
        with ppl.plate("data", len(x)):
            ppl.sample("y", dist.Normal(net(x).squeeze(-1), s), obs=y)

    state = _state(net)
    pyro.clear_param_store()
    with pytest.raises(ppl.ModelError, match="boom"):
        _infer(breaks, {"x": X, "y": Y})
    assert calls[0] > 60 and _unchanged(state)
    with pytest.raises(ppl.OptionError, match="lr"):
        _infer(_regression(net), {"x": X, "y": Y}, lr=-1.0)
    assert _unchanged(state)
    assert not list(pyro.get_param_store().keys())
    assert not pyro.poutine.runtime._PYRO_STACK


def test_init_posterior_starts_from_the_learned_weights(regression_fit):
    net, model, state, post = regression_fit
    warm = _infer(model, {"x": X, "y": Y}, init=post, num_steps=5, lr=1e-6)
    cold = _infer(model, {"x": X, "y": Y}, num_steps=5, lr=1e-6)
    for k in ("net$$$weight", "net$$$bias"):
        torch.testing.assert_close(warm.params[k], post.params[k], atol=1e-4, rtol=0)
        user = dict(net.named_parameters())[k.partition("$$$")[2]].detach()
        torch.testing.assert_close(cold.params[k], user, atol=1e-4, rtol=0)
    given = _infer(model, {"x": X, "y": Y}, init={"net$$$weight": W_TRUE}, num_steps=5, lr=1e-6)
    torch.testing.assert_close(given.params["net$$$weight"], W_TRUE, atol=1e-4, rtol=0)
    assert _unchanged(state)
    with pytest.raises(ppl.OptionError, match=r"init\['net\$\$\$weight'\]: shape \(2,\), but pyro.module weight"):
        _infer(model, {"x": X, "y": Y}, init={"net$$$weight": torch.zeros(2, dtype=F64)})


def test_an_amortised_guide_warm_starts_its_encoder(vae_fit):
    vae, guide, _, _, x, state, post = vae_fit
    warm = _infer(vae, {"x": x}, guide=guide, init=post, num_steps=3, lr=1e-6, elbo_particles=10,
                  posterior_samples=10)
    for k in ("encoder$$$weight", "encoder$$$bias", "decoder$$$weight", "decoder$$$bias"):
        torch.testing.assert_close(warm.params[k], post.params[k], atol=1e-4, rtol=0)
    initial_encoder = state[2][1]                          # _state(decoder, encoder): encoder.weight third
    assert float((post.params["encoder$$$weight"] - initial_encoder).abs().max()) > 0.05   # so the start is told apart
    assert _unchanged(state)


@pytest.mark.parametrize("method, options", [("map", {}), ("laplace", {"seed": 0})])
def test_other_methods_leave_the_networks_as_found(method, options):
    net = _net()
    state = _state(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppl.infer(_regression(net), {"x": X, "y": Y}, method=method, **options)
    assert _unchanged(state)


def test_analyze_and_compare_leave_the_networks_as_found(regression_fit):
    net, model, state, alone = regression_fit
    versions = [p._version for p in net.parameters()]
    ppl.analyze(model, {"x": X, "y": Y})
    assert [p._version for p in net.parameters()] == versions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = ppl.compare(model, {"x": X, "y": Y}, methods=[("svi", {k: v for k, v in SVI.items()
                                                                        if k != "method"}), "laplace"])
    assert _unchanged(state)
    svi = next(post for label, post in table.posteriors.items() if label.startswith("svi"))
    assert torch.equal(svi.params["net$$$weight"], alone.params["net$$$weight"])


def test_load_module_weights_writes_the_learned_weights_on_request(tmp_path):
    net = _net()
    model = _regression(net)
    post = _infer(model, {"x": X, "y": Y})
    objects = [net.weight, net.bias]
    assert sorted(post.load_module_weights()) == ["net$$$bias", "net$$$weight"]
    assert net.weight is objects[0] and net.bias is objects[1]
    assert torch.equal(net.weight.detach(), post.params["net$$$weight"])
    assert torch.equal(net.bias.detach(), post.params["net$$$bias"])
    # the learned weights survive save / load; a loaded posterior is told which network to write
    path = post.save(tmp_path / "reg.pt")
    loaded = ppl.load(path)
    assert torch.equal(loaded.params["net$$$weight"], post.params["net$$$weight"])
    other = _net(seed=9)
    with pytest.raises(ppl.UnsupportedModelError, match=r"load_module_weights\(\{'decoder': decoder\}\)"):
        loaded.load_module_weights()
    assert loaded.load_module_weights({"net": other}) == ["net$$$weight", "net$$$bias"]
    assert torch.equal(other.weight.detach(), post.params["net$$$weight"])


def test_load_module_weights_refuses_what_it_cannot_write(regression_fit):
    net, _, before, post = regression_fit
    with pytest.raises(ppl.OptionError, match="modules must be a dict"):
        post.load_module_weights([net])
    with pytest.raises(ppl.OptionError, match="no learned weight of a module named 'decoder'"):
        post.load_module_weights({"decoder": net})
    with pytest.raises(ppl.OptionError, match=r"has no parameter\(s\) \['weight', 'bias'\]"):
        post.load_module_weights({"net": torch.nn.Sequential(torch.nn.Linear(2, 1))})
    with pytest.raises(ppl.OptionError, match=r"shape \(3, 2\) in the network"):
        post.load_module_weights({"net": torch.nn.Linear(2, 3).double()})
    assert _unchanged(before)                             # nothing written on an error
    exact = ppl.infer(_coin(), {"x": torch.tensor([1.0, 0.0])}, method="exact")
    with pytest.raises(ppl.UnsupportedModelError, match="holds no learned pyro.module weights"):
        exact.load_module_weights()


def _coin():
    @ppl.model
    def coin(x):
        z = ppl.sample("z", dist.Bernoulli(torch.tensor(0.5, dtype=F64)))
        with ppl.plate("d", len(x)):
            ppl.sample("x", dist.Bernoulli(0.2 + 0.6 * z), obs=x)

    return coin
