"""``method="cavi"``: mean-field coordinate-ascent variational inference.

The mean-field family ``q(h) = Π_j q_j(h_j)`` (Goodfellow et al. 2016, §19.4, eq. 19.17;
a plate of N copies of a site gives N independent factors, updated as one batched tensor
operation) and the coordinate update

    ln q_j*(h_j) = E_{i≠j}[ln p(v, h)] + const                          (eq. 19.56)

(for a discrete ``h_j``: the expectation of each factor's log table over the other
variables of its scope, eq. 19.18); the ELBO ``L(q) = Σ_f E_q[ln f] + Σ_j H(q_j)``
(eq. 19.30) is computed exactly after every sweep.

Schedules:

* ``"sequential"``: one site at a time (all plate copies of it at once: copies of a site
  share no factor, so this is the same as one copy at a time).  Each update maximises L
  over ``q_j`` exactly, so L never decreases; a decrease beyond round-off raises
  :class:`~ppl.errors.BoundDecreaseWarning`.
* ``"parallel"``: every site from the same old ``q`` (a block update).  It can overshoot
  and oscillate (§19.4.1); ``damping`` moves each factor a step of that size toward its
  optimum, in natural parameters: ``ln q ← (1 - d) ln q + d ln q*`` (normalised).  Along
  that path KL(q‖q*) falls monotonically, so damping never hurts a sequential update either.

Paths, chosen from the model (``diagnostics["path"]``):

* ``"discrete tables"`` (:mod:`~ppl.backends.cavi.discrete`): every latent discrete; the
  updates above by contraction of factor tables;
* ``"gaussian"`` (:mod:`~ppl.backends.cavi.gaussian`): every latent Normal under a
  quadratic log joint (eq. 19.57-19.67);
* ``"binary quadratic"`` (:mod:`~ppl.backends.cavi.binary`): Bernoulli latents under a
  quadratic log joint (eq. 19.44), no ``2^n`` table;
* ``"sigma points"`` (:mod:`~ppl.backends.cavi.conjugate`): conjugate-exponential
  continuous latents (Normal, Gamma, Beta, Dirichlet, Wishart, Normal-Wishart), alone or
  mixed with discrete ones: natural parameters as gradients of ``E_q[ln p]`` on sigma
  points.

A continuous latent none of these covers raises :class:`~ppl.errors.UnsupportedModelError`
naming the site and the structural test that failed.
"""

from __future__ import annotations

import time

from ...analysis.report import format_bytes
from ...compiler.zeros import has_exact_zero
from ...errors import UnsupportedModelError
from ..base import Applicability, Backend
from ..common.distributed import data_shard, shard_trust
from ..common.elimination import factor_table_refusal
from ..common.quadratic import all_normal, not_quadratic
from ..common.routing import held_params_note, not_ok
from ..common.streaming import stream_trust
from ..common.svi_stream import run_svi
from ..options import COMMON, STREAM, Boolean, Integer, MappingOf, OneOf, Option, Real, option_table
from .assess import assess_cavi
from .binary import binary_problem, run_binary
from .conjugate import conjugate_problem
from .conjugate_sweeps import ConjugateSweeps, run_conjugate
from .discrete import INITS, run_discrete
from .gaussian import MAX_GAUSSIAN_DIM, run_gaussian

__all__ = ["CAVIBackend", "SCHEDULES", "INITS", "MAX_GAUSSIAN_DIM"]

#: ``schedule=`` names.
SCHEDULES = ("sequential", "parallel")


class CAVIBackend(Backend):
    """Mean-field CAVI (see the module docstring); options in :attr:`options`.

    ``init``: ``"random"`` draws each discrete factor from Dirichlet(1) per plate copy
    (breaks the symmetry of mixtures) and each continuous one from the prior; ``"uniform"``
    starts discrete factors uniform and continuous ones at the prior mean; a dict gives
    site -> probabilities ``batch_shape + (K,)`` (discrete) or a starting mean
    (continuous).  Restarts (``n_init > 1``) start from fresh random draws and keep the run
    with the highest ELBO.  ``learn_params=True`` is variational EM (Goodfellow et al.
    2016, §19.2 with a mean-field E-step): after each sweep ``E_q[ln p(v, h; θ)]`` is
    maximised over the ``ppl.param`` θ (L-BFGS in unconstrained space; projected for
    ``unit_norm_columns``); both steps raise the same ELBO ``L(q, θ)``.
    """

    name = "cavi"
    summary = "mean-field coordinate ascent, closed-form updates (discrete; Gaussian-quadratic; conjugate Normal/Gamma)"
    options = option_table(
        Option("max_iter", Integer(1), 200, "sweeps at most"),
        Option("tol", Real(0.0), 1e-8, "ELBO change per observed value (nats) at which sweeps stop (with q still)"),
        Option("damping", Real(0.0, 1.0, low_open=True), 1.0,
               "step toward each factor's optimum in natural parameters, in (0, 1]"),
        Option("schedule", OneOf(*SCHEDULES), "sequential",
               "'sequential' (site by site; the ELBO never decreases) or 'parallel'"),
        Option("init", OneOf(*INITS) | MappingOf("a dict site -> probabilities or starting mean"), "random",
               "'random', 'uniform' or a dict site -> probabilities / starting mean"),
        Option("n_init", Integer(1), 1, "restarts from random starts; the highest ELBO is kept"),
        COMMON["seed"].but(doc="seed of init='random' and of sample()"),
        Option("learn_params", Boolean(), False, "variational EM: also maximise the ELBO over the ppl.params"),
        COMMON["dtype"], COMMON["device"], COMMON["progress"],
        COMMON["memory_budget"].but(doc="bytes for the largest factor table (None: 2 GiB)"),
        COMMON["heuristic"].but(doc="accepted and unused (CAVI needs no elimination order)"), COMMON["distributed"],
        *STREAM.values())
    rank = 30
    rank_note = "a mean-field approximation ranks below exact inference and EM"

    # ------------------------------------------------------------------ applicability
    def check(self, analysis) -> Applicability:
        """Whether one of the four paths (module docstring) covers the model: every latent
        Normal under a quadratic log joint (Gaussian, at most ``MAX_GAUSSIAN_DIM``
        dimensions); continuous latents with conjugate-exponential updates, alone or with
        discrete ones whose factor tables fit the memory budget (sigma points); every latent
        a Bernoulli under a quadratic log joint with factors larger than the ``K²`` block
        (binary quadratic); every latent discrete, in declared plates, with the largest
        factor table within the memory budget (discrete tables).  A model without latents
        applies too.  A refusal names the site and the test that failed."""
        graph = analysis.graph
        if analysis.continuous:
            return _gaussian_applicability(graph, analysis)
        if analysis.undeclared_batch:
            site, dims = next(iter(analysis.undeclared_batch.items()))
            return Applicability(False, f"site '{site}' has batch dims {dims} not declared by a plate, so its "
                                        "discrete latents cannot be enumerated: declare i.i.d. copies with ppl.plate",
                                 UnsupportedModelError)
        if not analysis.discrete:
            return Applicability(True, "no latent variables: the ELBO is the log likelihood")
        binary = _binary_path(graph, analysis)
        if binary:
            return Applicability(True, binary)
        refused, nbytes = factor_table_refusal(graph, analysis)
        if refused is not None:
            return refused
        return Applicability(True, f"mean field over {len(analysis.discrete)} discrete latent(s); largest factor "
                                   f"table {format_bytes(nbytes)} (cost per sweep ~ the sum of factor tables)")

    def auto_variants(self, analysis) -> list:
        """Under ``method="auto"``: four starts where discrete latents make local optima likely."""
        return [{"n_init": 4}] if analysis.discrete else [{}]

    def assess(self, posterior, graph, analysis):
        """:func:`~ppl.backends.cavi.assess.assess_cavi`, agreed over ranks (:func:`shard_trust`) when distributed."""
        return stream_trust(posterior, "SVI's global factors stopped moving over the last epoch", False) if \
            "stream" in posterior.diagnostics else shard_trust(posterior, assess_cavi(posterior, graph, analysis))

    def deciding_fact(self, analysis, verdicts) -> str:
        """Exact does not apply and every latent has a closed-form update."""
        return (f"exact does not apply ({not_ok(verdicts).get('exact', 'not registered')}) and every latent has a "
                f"closed-form CAVI update: {verdicts[self.name][1]}{held_params_note(analysis, verdicts)}")

    # ------------------------------------------------------------------------- run
    def run(self, graph, analysis, **options):
        """Run CAVI with ``options`` (see :attr:`options`) on the path the model takes:
        Gaussian factors (Normal latents, quadratic log joint), conjugate factors by sigma
        points (continuous latents, possibly mixed with discrete ones), binary quadratic
        (Bernoulli latents, quadratic log joint, large factors) or discrete tables.

        Returns
        -------
        MeanFieldPosterior or FactorPosterior
            ``marginal(site)`` = ``q_site`` with the site's plate batch shape, ``elbo``
            (nats, eq. 19.30, exact for this q), ``history`` (ELBO per sweep; the first
            entry is the ELBO of the initial q), ``converged``, ``sample(n)`` (independent
            draws from the q's), ``diagnostics`` (``path``, ``schedule``, ``damping``,
            ``sweeps``, ``decreases``, ``restarts``).

        Raises
        ------
        OptionError
            Bad option values (unknown schedule or init, damping outside (0, 1], an init
            table of the wrong shape or not a distribution).
        DataError
            The evidence has probability zero under every q (ELBO = -inf).
        UnsupportedModelError
            ``learn_params`` or ``distributed`` with continuous latents that have no closed-form
            update; ``distributed`` with a discrete latent outside the data plate (docs/distributed.md).
        """
        o = self.settings(options)
        start = time.perf_counter()
        if o.stream is not None:  # stochastic variational inference over minibatches (docs/streaming.md)
            return run_svi(self.name, graph, analysis, o, start, ConjugateSweeps)
        o.shard = data_shard(graph, o.distributed, self.name, local=graph.discrete_latent(),
                             refuse={"learn_params=True": o.learn_params})
        if analysis.continuous:
            if o.learn_params or o.shard.active:  # variational EM, or distributed: the conjugate path
                problem = conjugate_problem(graph, analysis.moral)
                if problem:
                    raise UnsupportedModelError(f"{'distributed=True' if o.shard.active else 'learn_params=True'} "
                                                f"with continuous latents needs closed-form conjugate updates: "
                                                f"{problem}; use method='svi'")
            if (not o.learn_params and not o.shard.active and not analysis.discrete
                    and all_normal(graph, analysis.continuous) and not_quadratic(graph, analysis.continuous) is None):
                return run_gaussian(self.name, graph, o, start)
            return run_conjugate(self.name, graph, analysis.moral, o, start)
        if not o.learn_params and not o.shard.active and _binary_path(graph, analysis):
            return run_binary(self.name, graph, o, start)
        return run_discrete(self.name, graph, analysis, o, start)


def _binary_path(graph, analysis) -> str | None:
    """Why the binary quadratic path (:mod:`ppl.backends.cavi.binary`) is taken, or None: every
    latent a scalar Bernoulli, the log joint quadratic in them, and the largest factor's
    table (``2^scope`` per copy) larger than the ``K²`` block the quadratic path works with."""
    sites = list(analysis.discrete)
    if not sites or any(graph.variables[s].family != "Bernoulli" for s in sites):
        return None
    scope = max((sum(1 for v in f.scope if v in analysis.discrete) for f in graph.factors.values()), default=0)
    if 2.0 ** scope <= len(sites) ** 2:
        return None
    if binary_problem(graph, sites) is not None:
        return None
    if any(has_exact_zero(site.fn) for site in graph.sites.values() if getattr(site, "fn", None) is not None):
        return None  # a probability of exactly 0 has no finite logit: the tables path keeps log 0 = -inf
    return (f"mean field over {len(sites)} binary latent(s) under a quadratic log joint: updates from E[h] and "
            f"E[hhᵀ] (eq. 19.44), no 2^{scope} table")


def _gaussian_applicability(graph, analysis) -> Applicability:
    if analysis.discrete or not all_normal(graph, analysis.continuous):
        return _conjugate_applicability(graph, analysis)
    n = sum(graph.sites[s].value.numel() for s in analysis.continuous)
    if n > MAX_GAUSSIAN_DIM:
        return Applicability(False, f"{n} latent dimensions: the Gaussian mean field builds the dense {n} x {n} "
                                    f"precision (at most {MAX_GAUSSIAN_DIM}); use method='svi'",
                             UnsupportedModelError)
    problem = not_quadratic(graph, analysis.continuous)
    if problem:
        other = _conjugate_applicability(graph, analysis)
        return other if other.ok else Applicability(False, problem, UnsupportedModelError)
    return Applicability(True, f"Gaussian mean field over {len(analysis.continuous)} Normal latent site(s), {n} "
                               "dimension(s) of a quadratic log joint (closed-form Gaussian factors)")


def _conjugate_applicability(graph, analysis) -> Applicability:
    if analysis.discrete:
        refused, _ = factor_table_refusal(graph, analysis)
        if refused is not None:
            return refused
    problem = conjugate_problem(graph, analysis.moral)
    if problem:
        return Applicability(False, f"{problem}; use method='svi' (mean field: guide='normal') or 'map'",
                             UnsupportedModelError)
    families = sorted({graph.variables[s].family for s in analysis.continuous})
    mixed = f" and {len(analysis.discrete)} discrete latent(s) (expected factor tables)" if analysis.discrete else ""
    return Applicability(True, f"conjugate-exponential mean field over {len(analysis.continuous)} continuous latent "
                               f"site(s) ({', '.join(families)}){mixed}: natural parameters by sigma points "
                               "(checked linear)")


