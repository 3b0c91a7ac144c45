"""Online EM over a stream of minibatches (Cappé & Moulines 2009, "On-line
expectation-maximization algorithm for latent data models", JRSS-B 71(3), §2.2, eq. 7-8).

For minibatch ``B_k`` at θ_k: the exact E-step of the batch
(:meth:`EMFit.e_step <ppl.backends.em.backend.EMFit.e_step>`), its
expected sufficient statistics scaled to the global size N, the stochastic-approximation
step ``s ← (1 − γ_k) s + γ_k ŝ_{B_k}`` (inside the closed forms' ``shard.sum_dict``, here a
:class:`~ppl.backends.common.streaming.StreamHook`), then θ_{k+1} = θ̄(s), the closed-form
maximisers of batch EM (:mod:`ppl.backends.em.mstep`).  The loop, the step sizes and the
verdict are :mod:`ppl.backends.common.streaming`'s.
"""

from __future__ import annotations

import time

import torch

from ...errors import UnsupportedModelError
from ...posterior.stream import StreamPosterior
from ..common.params import store_params
from ..common.streaming import StreamProblem, fixed_arguments, run_stream, stream_refusals

__all__ = ["OnlineEM", "run_online_em"]


class OnlineEM(StreamProblem):
    """EM's hooks for :func:`~ppl.backends.common.streaming.run_stream`; the global state is
    θ as one flat vector (the layout of the first batch's :class:`~ppl.compiler.parametric.space.ParamSpace`)."""

    first_step_full = True  # s starts as the first batch's statistics (no arbitrary s_0)
    fixed_point_check = True  # converged only where one batch EM step from θ barely moves it

    def __init__(self, fit_class, o):
        self.fit_class, self.o = fit_class, o
        self.space = None

    def build(self, graph, analysis, hook):
        """An :class:`~ppl.backends.em.backend.EMFit` of the batch graph with ``hook`` as its shard.

        Raises
        ------
        UnsupportedModelError
            A param without a closed-form M-step (online EM averages sufficient statistics),
            or params whose shapes change with the batch."""
        fit = self.fit_class.build(graph, analysis, self.o, (), hook)
        if fit.gradient:
            raise UnsupportedModelError(
                f"stream= with method='em' needs a closed-form M-step for every param (online EM averages expected "
                f"sufficient statistics), but {fit.gradient} take the gradient M-step: {fit.m_step_labels()}; "
                "use method='svi' with subsample_size for such models")
        space = fit.pt.space
        shapes = [(n, tuple(space.shapes[n])) for n in space.names]
        if self.space is None:
            self.space = shapes
        elif shapes != self.space:
            raise UnsupportedModelError(f"stream=: the params' shapes change with the batch size ({self.space} vs "
                                        f"{shapes}); declare params whose shapes do not depend on the data size")
        return fit

    def refresh(self, fit) -> None:
        """Drop value-derived constants of the rebound batch (``x xᵀ`` of each group)."""
        for g in fit.pt.groups:
            g.stats.clear()

    def start(self, fit):
        """θ_0 from ``init`` (k-means++ / random rows are drawn from the first batch)."""
        return fit.initialize(0)["flat"]

    def update(self, fit, flat, step):
        """E-step of the batch at θ, then the M-step from the running statistics."""
        state = fit.e_step(flat)
        value = state["total"]
        fit.check_step(value, True, "stream")         # DataError: the batch is impossible at θ
        return fit.m_step(state), value

    def evaluate(self, fit, flat) -> float:
        """``log p(x_B; θ)`` of the batch (global factors weighted ``|B| / N``)."""
        return float(fit.e_step(flat)["total"])

    def blocks(self, flat) -> list:
        """θ per param (constrained values)."""
        values = self.space_of(flat)
        return [values[n] for n, _ in self.space]

    def space_of(self, flat) -> dict:
        out, k = {}, 0
        for n, shape in self.space:
            size = int(torch.Size(shape).numel())
            out[n] = flat[k:k + size].reshape(shape)
            k += size
        return out


def run_online_em(method, fit_class, graph, analysis, o, start):
    """Online EM with the options ``o`` of :class:`~ppl.backends.em.backend.EMBackend`.

    Returns
    -------
    StreamPosterior
        ``params`` (θ at the end, float64, constrained), ``log_evidence`` = ``elbo`` = the
        exact ``log p(x; θ)`` of the whole stream at the final θ (an evaluation pass),
        ``history`` (per epoch: Σ_B log p(x_B; θ at B), the running estimate), ``converged``
        (the movement criterion), ``diagnostics["stream"]``.

    Raises
    ------
    OptionError
        ``stream`` with ``n_init > 1``, ``map_latents`` or ``distributed``.
    UnsupportedModelError
        A param without a closed-form M-step.
    DataError
        Bad batches (docs/streaming.md).
    """
    stream_refusals(method, {"n_init>1": o.n_init > 1, "map_latents": bool(o.map_latents),
                             "distributed=True": bool(o.distributed), "m_step='gradient'": o.m_step == "gradient"})
    problem = OnlineEM(fit_class, o)
    result = run_stream(problem, graph, analysis, o, fixed_arguments(graph, o.stream))
    params = {k: v.clone() for k, v in problem.space_of(result["state"]).items()}
    store_params(params)
    d = result["diagnostics"]
    n = d["num_points"]
    diagnostics = {"stream": d, "setup_seconds": d["setup_seconds"], "n_obs": n,
                   "average_log_likelihood": result["value"] / n, "n_iter": d["batches"], "device": str(o.device)}
    first = next(iter(result["structures"].shapes.values()))[0]
    diagnostics["m_step"] = first.m_step_labels()
    return StreamPosterior(method, graph=graph, plate=d["plate"], local=_local_latents(graph, d["plate"]),
                           params=params, elbo=result["value"], log_evidence=result["value"],
                           history=result["history"], converged=result["converged"],
                           elapsed=time.perf_counter() - start, diagnostics=diagnostics, seed=o.seed)


def _local_latents(graph, plate) -> list:
    return [n for n in graph.latent() if plate in graph.variables[n].plates]
