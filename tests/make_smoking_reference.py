"""Regenerate ``tests/fixtures/smoking_reference.json``: the posterior of a hierarchical
meta-analysis of statsmodels' ``china_smoking`` data (8 cities, a log odds ratio of lung
cancer for smokers per city under ``Normal(mu, tau)``), by plain Pyro NUTS (no ppl code) on
the hand-written non-centred model, 4 chains of 2000 warmup + 2000 draws (about 30 min on
a 2-core VM).  The stored run: R-hat 1.00 everywhere, bulk ESS >= 1844 (tau).

    python tests/make_smoking_reference.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS

OUT = Path(__file__).parent / "fixtures" / "smoking_reference.json"


def smoking_data():
    import statsmodels.api as sm

    d = sm.datasets.china_smoking.load_pandas().data
    t = lambda c: torch.tensor(d[c].to_numpy(dtype=np.float64))  # noqa: E731
    k1, k0 = t("smoking_yes_cancer_yes"), t("smoking_no_cancer_yes")
    return {"n1": k1 + t("smoking_yes_cancer_no"), "k1": k1, "n0": k0 + t("smoking_no_cancer_no"), "k0": k0}


def smoking_noncentred(n1, k1, n0, k0):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 2.0))
    tau = pyro.sample("tau", dist.HalfNormal(torch.tensor(1.0, dtype=torch.float64)))
    with pyro.plate("city", n1.shape[0]):
        base = pyro.sample("base", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 2.0))
        u = pyro.sample("u", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        pyro.sample("k1", dist.Binomial(n1, logits=base + mu + tau * u), obs=k1)
        pyro.sample("k0", dist.Binomial(n0, logits=base), obs=k0)


def main():
    data, draws = smoking_data(), {}
    for chain in range(4):
        pyro.set_rng_seed(100 + chain)
        mcmc = MCMC(NUTS(smoking_noncentred, target_accept_prob=0.9), num_samples=2000, warmup_steps=2000,
                    disable_progbar=True)
        mcmc.run(**data)
        s = mcmc.get_samples()
        s["lor"] = s["mu"][:, None] + s["tau"][:, None] * s["u"]
        for k in ("mu", "tau", "base", "lor"):
            draws.setdefault(k, []).append(s[k].numpy())
    out = {k: [np.concatenate(v).mean(0).tolist(), np.concatenate(v).std(0).tolist()] for k, v in draws.items()}
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
