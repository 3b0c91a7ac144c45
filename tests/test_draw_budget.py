"""Options that size a backend's draws are checked against the memory budget before the
draws are allocated: an IntractableError naming the options, not torch's allocator error, a
MemoryError, or a run the OS kills (issue 17, bounded memory)."""

import pytest
import torch

import ppl
import ppl.distributions as dist

F64 = torch.float64


@ppl.model
def gauss(x):
    mu = ppl.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 10.0))
    with ppl.plate("data", len(x)):
        ppl.sample("obs", dist.Normal(mu, 1.0), obs=x)


DATA = {"x": torch.tensor([0.3, 1.7, -0.4, 2.2], dtype=F64)}


@pytest.mark.parametrize("method, options, named", [
    ("laplace", {"num_draws": 10**12}, "num_draws=1,000,000,000,000"),
    ("pathfinder", {"num_paths": 10**9}, "num_paths=1,000,000,000"),
    ("pathfinder", {"num_paths": 1, "num_draws": 10**12}, "num_draws=1,000,000,000,000"),
    ("pathfinder", {"num_paths": 1, "num_elbo_draws": 10**12}, "num_elbo_draws=1,000,000,000,000"),
    ("chees", {"num_chains": 10**9}, "num_chains=1,000,000,000"),
    ("nuts", {"num_samples": 10**12}, "num_samples=1,000,000,000,000"),
])
def test_draw_counts_over_the_budget_are_refused_before_allocating(method, options, named):
    with pytest.raises(ppl.IntractableError, match=f"method='{method}' with .*{named}") as e:
        ppl.infer(gauss, DATA, method=method, seed=0, **options)
    # 1 coordinate × 4 working copies × 8 bytes per draw
    count = 1
    for v in options.values():
        count *= v
    assert e.value.bytes >= 32 * count and e.value.budget < e.value.bytes
    assert "lower" in str(e.value) and "memory_budget=<bytes>" in str(e.value)


def test_a_budget_that_fits_runs():
    post = ppl.infer(gauss, DATA, method="laplace", seed=0, num_draws=1000, memory_budget=1000 * 32)
    assert post.sample(10, seed=0)["mu"].shape[0] == 10
    with pytest.raises(ppl.IntractableError, match="at most 999 fit"):
        ppl.infer(gauss, DATA, method="laplace", seed=0, num_draws=1000, memory_budget=1000 * 32 - 1)
