"""Write ``tests/fixtures/reference_posteriors.json``: long runs of NUTS (Pyro's kernel,
``pyro.infer.MCMC``, on ppl's unconstrained log density, which
``tests/test_potential.py`` checks against Pyro's own potential and against hand-written
densities) on every model of :mod:`reference_models`, summarised as per-element posterior
means and sds with their Monte Carlo standard errors and the R-hat of the run.

    python tests/make_reference_posteriors.py [NAME ...]

Each model: 4 chains x (1000 warmup + 2000 draws), seeds 0-3, target_accept_prob 0.95.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from reference_models import REFERENCE  # noqa: E402

OUT = pathlib.Path(__file__).parent / "fixtures" / "reference_posteriors.json"


def run(name, chains=4, warmup=1000, draws=2000):
    import ppl

    model, make_data, sites = REFERENCE[name]
    t0 = time.time()
    post = ppl.infer(model, make_data(), method="nuts", num_chains=chains, warmup_steps=warmup, num_samples=draws,
                     target_accept_prob=0.95, seed=0, progress=False)
    d = post.diagnostics
    out = {}
    for s in sites:
        x = post.draws(s).double().numpy()             # (chains, draws, ...)
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        import arviz as az

        idata = az.from_dict(posterior={s: flat})
        rhat = np.asarray(az.rhat(idata)[s]).reshape(-1)
        ess = np.asarray(az.ess(idata)[s]).reshape(-1)
        mean = flat.mean((0, 1))
        sd = flat.std((0, 1), ddof=1)
        out[s] = {"shape": list(x.shape[2:]), "mean": mean.tolist(), "sd": sd.tolist(),
                  "mcse_mean": (sd / np.sqrt(ess)).tolist(), "rhat": rhat.tolist(), "ess": ess.tolist()}
    return {"sites": out, "seconds": time.time() - t0, "chains": chains, "warmup": warmup, "draws": draws,
            "divergences": d["divergences"], "verdict": post.trust.verdict}


def main(names):
    torch.set_default_dtype(torch.float64)
    existing = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in names or list(REFERENCE):
        print(f"{name} ...", flush=True)
        existing[name] = run(name)
        print(f"  {existing[name]['seconds']:.0f} s, max R-hat "
              f"{max(max(v['rhat']) for v in existing[name]['sites'].values()):.4f}", flush=True)
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(existing, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
