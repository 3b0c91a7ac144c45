"""Stochastic variational inference for CAVI's conjugate models over a stream of
minibatches (Hoffman, Blei, Wang & Paisley 2013, "Stochastic variational inference",
JMLR 14, Alg. 1 and eq. 25-26).

For minibatch ``B`` at the global factors ``λ``:

1. the local factors (a mixture's ``q(z_i)``, ``i ∈ B``) by their CAVI update given the
   global ones (iterated to a fixed point when several local sites couple);
2. each global factor's intermediate natural parameters
   ``λ̂ = η_prior + (N / |B|) Σ_{i∈B} η_i``: the gradient of ``E_q[ln p]`` with respect to
   its mean parameters (as in batch CAVI, :mod:`ppl.backends.cavi.conjugate`) with the
   factors inside the data plate weighted ``N / |B|`` and the others 1
   (:class:`~ppl.backends.common.streaming.StreamHook`);
3. ``λ ← (1 − ρ_t) λ + ρ_t λ̂`` (eq. 26; the damped step of batch CAVI with damping ρ_t),
   the global factors in turn (each from the others' newest values, as CAVI's sequential
   schedule).

With one batch holding all the data and ρ = 1 this is a sweep of batch CAVI.  The global
factors start from batch CAVI on the first minibatch, scaled to N, from CAVI's random
start (``init``), which breaks a mixture's symmetry as batch CAVI's first sweep does.  The driver (loop, steps, verdict) is
:mod:`ppl.backends.common.streaming`; the sweeps class is passed in by the CAVI backend.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from ...errors import UnsupportedModelError
from ...posterior.stream import StreamFactorPosterior
from .streaming import StreamProblem, fixed_arguments, run_stream, stream_refusals

__all__ = ["ConjugateSVI", "run_svi", "LOCAL_ITER", "START_SWEEPS"]

#: Most rounds of local updates per batch when several local discrete sites couple.
LOCAL_ITER = 50
#: Most sweeps of batch CAVI on the first minibatch (the global factors' start).
START_SWEEPS = 50


class ConjugateSVI(StreamProblem):
    """SVI's hooks for :func:`~ppl.backends.common.streaming.run_stream`; the global state is
    ``{"c": tuple of the global factors}`` (each block's rule's parameters).

    Parameters
    ----------
    sweeps_class : type
        CAVI's conjugate sweeps (``ConjugateSweeps(graph, moral, o)``).
    o : SimpleNamespace
        The CAVI backend's options.
    """

    def __init__(self, sweeps_class, o):
        self.sweeps_class, self.o = sweeps_class, o

    def build(self, graph, analysis, hook):
        """CAVI's conjugate sweeps on the batch graph, with ``hook`` as their shard.

        Raises
        ------
        UnsupportedModelError
            A continuous latent inside the data plate (a per-point continuous factor), or a
            discrete latent outside it."""
        inside = [s for s in graph.continuous_latent() if s in hook.local_sites]
        outside = [s for s in graph.discrete_latent() if s not in hook.local_sites]
        if inside or outside:
            what = f"continuous latent(s) {inside} inside" if inside else f"discrete latent(s) {outside} outside"
            raise UnsupportedModelError(f"stream= with method='cavi' (SVI) needs global continuous latents and local "
                                        f"discrete ones, but {what} the data plate '{hook.plate}'")
        o = SimpleNamespace(**vars(self.o))
        o.shard, o.learn_params, o.damping, o.schedule = hook, False, 1.0, "sequential"
        return self.sweeps_class(graph, analysis.moral, o)

    def refresh(self, run) -> None:
        """Drop what was derived from the previous batch's values."""
        for g in run.cm.tables.groups:
            g.stats.clear()
        run.cache.clear()

    def _weigh(self, run, weights, qc) -> None:
        """Weights (inside, outside the plate) of every table from now on."""
        run.o.shard.weights = weights
        run.cache.clear()
        run.cm.fit_affine(qc)

    def _local(self, run, qc) -> dict:
        """The local factors' CAVI optimum given the global ``qc`` (log q per site)."""
        hook = run.o.shard
        self._weigh(run, (1.0, hook.batch_size / hook.num_points), qc)
        if not run.disc:
            return {}
        mf = run.mf
        mf.factors = run.tables(qc)
        q = mf.initial("uniform", None)
        with torch.no_grad():
            for _ in range(LOCAL_ITER if len(run.disc) > 1 else 1):
                moved = 0.0
                for v in run.disc:
                    new = mf.optimum(v, q)
                    moved = max(moved, float((new.exp() - q[v].exp()).abs().max()))
                    q[v] = new
                if moved < 1e-10:
                    break
        return q

    def start(self, run):
        """The global factors' start: batch CAVI on the first minibatch scaled to N (from
        CAVI's ``init``, whose random local factors break a mixture's symmetry), at most
        :data:`START_SWEEPS` sweeps, until no factor moves more than 1e-6 (relative).
        Without it, SVI from a symmetric start moves the components apart only slowly."""
        first = run.initial(0)
        qc, qd = tuple(first["c"]), first["d"]
        for _ in range(START_SWEEPS):
            new = self._global(run, qd, qc, 1.0)
            moved = max((float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
                         for a, b in zip(self.blocks({"c": new}), self.blocks({"c": qc}))), default=0.0)
            qc, qd = new, self._local(run, new)
            if moved < 1e-6:
                break
        return {"c": qc}

    def _global(self, run, qd, qc, step) -> tuple:
        """Every global factor's step of size ``step`` toward λ̂ (the plate weighted N / |B|)."""
        hook = run.o.shard
        self._weigh(run, (hook.num_points / hook.batch_size, 1.0), qc)
        run.o.damping = step
        new = list(qc)
        for i in range(len(run.blocks)):
            new[i] = run.optimum(qd, new, i)
        return tuple(new)

    def update(self, run, state, step):
        """Local step, the batch's ELBO share, then the global step of size ``step``."""
        qc = state["c"]
        qd = self._local(run, qc)
        value = run.elbo({"d": qd, "c": qc})
        return {"c": self._global(run, qd, qc, step)}, value

    def evaluate(self, run, state) -> float:
        """The batch's share of the full-data ELBO at the global factors, with the local
        factors at their optimum (the global terms weighted ``|B| / N``)."""
        qd = self._local(run, state["c"])
        return float(run.elbo({"d": qd, "c": state["c"]}))

    def blocks(self, state) -> list:
        """The global factors' parameters, as tensors."""
        return [t.reshape(-1) for q in state["c"] for t in q]


def run_svi(method, graph, analysis, o, start, sweeps_class):
    """SVI over ``o.stream`` for CAVI's conjugate path (see the module docstring).

    Returns
    -------
    StreamFactorPosterior
        The global factors (torch distributions with the sites' shapes), ``elbo`` = the
        full-data ELBO at them with each batch's local factors at their optimum (an
        evaluation pass), ``history`` (per epoch: the sum of each batch's ELBO share before
        its step), ``converged`` (the movement criterion), ``diagnostics["stream"]``.

    Raises
    ------
    OptionError
        ``stream`` with ``learn_params``, ``distributed`` or ``n_init > 1``.
    UnsupportedModelError
        Latents on the wrong side of the data plate, or a model outside the conjugate path.
    DataError
        Bad batches (docs/streaming.md).
    """
    stream_refusals(method, {"learn_params=True": o.learn_params, "distributed=True": bool(o.distributed),
                             "n_init>1": o.n_init > 1})
    if not analysis.continuous:
        raise UnsupportedModelError("stream= with method='cavi' runs SVI on the conjugate (sigma-point) path, which "
                                    "needs global continuous latents (e.g. a mixture's weights and locations); this "
                                    "model has none: use method='em' with stream= for its params")
    problem = ConjugateSVI(sweeps_class, o)
    result = run_stream(problem, graph, analysis, o, fixed_arguments(graph, o.stream))
    run = next(iter(result["structures"].shapes.values()))[0]
    factors, joint = {}, {}
    for b, q in zip(run.blocks, result["state"]["c"]):
        factors.update(zip(b.sites, b.rule.distributions(q)))
        if b.rule.n_sites > 1:
            joint[b.sites] = (lambda rule, q: lambda n: rule.sample(q, n))(b.rule, q)
    d = result["diagnostics"]
    diagnostics = {"stream": d, "path": "sigma points (SVI)", "setup_seconds": d["setup_seconds"],
                   "sweeps": d["batches"], "device": str(o.device),
                   "factors": {" & ".join(b.sites): b.rule.name for b in run.blocks}}
    local = [n for n in graph.latent() if d["plate"] in graph.variables[n].plates]
    return StreamFactorPosterior(method, plate=d["plate"], local=local, graph=graph, factors=factors, joint=joint,
                                 elbo=result["value"], history=result["history"], converged=result["converged"],
                                 elapsed=time.perf_counter() - start, diagnostics=diagnostics, seed=o.seed)
