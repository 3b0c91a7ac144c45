"""``method="svi"``: stochastic variational inference with Pyro on the user's model, unchanged.

Maximises the ELBO ``L(q) = E_q[log p(v, h) - log q(h)] = log p(v) - KL(q(h) ‖ p(h | v))``
(Goodfellow et al. 2016, eq. 19.1) over a guide q by stochastic gradients (Pyro's ``SVI``;
reparameterised gradients, Kingma & Welling 2014).  Guides by name are Pyro's autoguides
(mean field, full- or low-rank Gaussian, point mass, inverse autoregressive flow); any
callable guide works, including an amortised encoder (§19.5, the VAE).  Discrete latents the
analysis finds tractable are summed out exactly (``TraceEnum_ELBO``, Obermeyer et al. 2019)
instead of being guided.  Losses: the ELBO, its analytic-KL form, the Rényi α-family
(Li & Turner 2016; α = 0 with K particles is the IWAE bound of Burda et al. 2016) and
reweighted wake-sleep (Bornschein & Bengio 2015; §19.5.1).

After the optimisation the ELBO is re-estimated with many draws (with its standard error),
with the importance-weighted bound and the PSIS k̂ of the guide (see
:mod:`ppl.backends.svi.bounds`).
"""

from __future__ import annotations

import math
import time
import warnings

import pyro
import pyro.optim
import torch
from pyro.infer import SVI

from ...analysis.report import format_bytes
from ...compiler.families import enumerate_values
from ...posterior import GuidePosterior
from ..base import Applicability, Backend
from ..common.distributed import PlateScale, data_shard
from ..common.existence import elbo_param_edges
from ..common.modules import ModuleWeights, is_module_param
from ..common.params import param_scope, params_in_dtype, store_restore, store_snapshot
from ..common.routing import not_ok
from ..common.runtime import in_dtype_or_default, run_context
from ..options import (COMMON, Boolean, CallableValue, InstanceOf, Integer, MappingOf, NoneValue, OneOf,
                       Option, Real, option_table)
from ...trust import RELIABLE, UNRELIABLE, Trust
from ...trust.psis import KHAT_GOOD, khat_reading, khat_threshold
from ..template import run_iterations
from ...errors import ConvergenceWarning, OptionError, UnsupportedModelError
from .bounds import estimate_bounds
from .fit import SVIFit
from .guides import GUIDES, guide_marginal_fn
from .losses import LOSSES, OPTIMIZERS, check_loss, make_loss, make_optimizer
from ..common.potential import enumeration_problem
from ..common.supports import dependent_supports
from .problem import build_problem
from .warmstart import apply_warm_start
from .sampling import discrete_marginals, joint_sampler

__all__ = ["SVIBackend", "LOSSES", "OPTIMIZERS"]


class SVIBackend(Backend):
    """Stochastic variational inference (see the module docstring); options in
    :attr:`options` (``ppl.methods("svi")`` lists them).  The guide (``guide=``) is a name
    of :data:`~ppl.backends.svi.guides.GUIDES` (``"normal"``: AutoNormal, mean field),
    a Pyro ``AutoGuide`` class, or a callable guide with the model's arguments (e.g. an
    amortised encoder)."""

    name = "svi"
    summary = ("stochastic VI with Pyro guides (mean field, full rank, flows, amortised); exact sums over tractable "
               "discrete latents")
    options = option_table(
        Option("guide", OneOf(*GUIDES) | CallableValue("a Pyro AutoGuide class or a callable guide"), "normal",
               "'normal' (AutoNormal, mean field), 'diagonal', 'mvn', 'lowrank', 'delta', 'iaf', an AutoGuide "
               "class or a callable guide"),
        Option("loss", OneOf(*LOSSES), "elbo", "'elbo', 'meanfield' (analytic KL), 'renyi' (alpha), 'rws'"),
        Option("alpha", Real(), 0.0, "Renyi alpha for loss='renyi' (0: the IWAE bound; 1 is the ELBO)"),
        Option("num_steps", Integer(1), 2000, "maximum optimisation steps"),
        Option("n_init", Integer(1), 1, "runs (later ones: Laplace fits from random starts, else prior draws); "
               "the highest final ELBO is kept (local optima)"),
        Option("optim", OneOf(*OPTIMIZERS) | InstanceOf(pyro.optim.PyroOptim, "a pyro.optim instance"), "adam",
               "optimiser name or a pyro.optim instance (then lr is ignored)"),
        Option("lr", Real(0.0, low_open=True), 0.01, "learning rate"),
        Option("lr_decay", Real(0.0, 1.0, low_open=True), 0.1,
               "lr decays exponentially to lr * lr_decay at num_steps (1 = constant)"),
        Option("num_particles", Integer(1) | NoneValue(), None, "draws per gradient step (None: 1; 10 for renyi/rws)"),
        Option("vectorize_particles", Boolean(), True, "draw the particles as one batched run"),
        Option("subsample_size", Integer(1) | MappingOf("a dict {plate: size}") | NoneValue(), None,
               "minibatch size on the data plate, or {plate: size}"),
        Option("tol", Real(0.0), 1e-3,
               "relative change of the windowed mean ELBO below which steps may stop (0: run all num_steps, then "
               "check that they ended stationary)"),
        Option("window", Integer(1), 100,
               "steps per convergence window: stop when its iterates are stationary (R-hat < 1.1, or no mean gradient "
               "beyond its noise), then average them"),
        Option("init", OneOf("laplace", "feasible", "median", "mean", "sample") | MappingOf("a dict site -> value")
               | CallableValue("a Pyro init_loc_fn"), "laplace",
               "start of autoguides: 'laplace' (the Laplace fit's mode and sds; locations move in units of its sds; "
               "'median' where it does not apply), a Pyro init strategy name, a dict site -> value or an init_loc_fn"),
        Option("init_scale", Real(0.0, low_open=True), 0.1,
               "initial scale of Gaussian autoguides (unconstrained; not used with init='laplace')"),
        Option("guide_options", MappingOf("a dict of autoguide arguments") | NoneValue(), None,
               "extra autoguide arguments (rank, hidden_dim, num_transforms)"),
        Option("elbo_particles", Integer(2) | NoneValue(), None,
               "draws of the final ELBO estimate (None: 1000; 100 with enumeration)"),
        Option("posterior_samples", Integer(1), 1000, "draws behind sample-based marginals"),
        COMMON["device"],
        COMMON["dtype"].but(constraint=COMMON["dtype"].constraint | NoneValue(),
                            doc="floating dtype of data, params, guide and the model's own tensors, float64 as "
                                "every other backend (not given: torch's default dtype instead where the model "
                                "computes with float32 tensors of its own, e.g. an nn.Module; None: torch's default "
                                "dtype, float32 unless changed)"),
        COMMON["seed"].but(doc="seed of Pyro's RNG for this run"),
        COMMON["progress"], COMMON["distributed"],
    )
    rank = 40
    rank_note = "a stochastic bound from gradient steps ranks below the closed-form methods"
    subsampling = True  # a plate the model subsamples is a minibatch: unbiased stochastic gradients

    # ------------------------------------------------------------------ applicability
    def check(self, analysis) -> Applicability:
        """SVI applies to every model whose discrete latents, if any, can be summed out
        exactly (a guide by name samples only continuous latents); otherwise it names the
        discrete sites and says to pass a guide that samples them."""
        n_cont = len(analysis.continuous)
        if analysis.discrete:
            why = enumeration_problem(analysis)
            if why:
                return Applicability(False, why, UnsupportedModelError)
            cost = (f"{len(analysis.discrete)} discrete latent(s) summed out exactly (largest table "
                    f"{format_bytes(analysis.clique_bytes)})")
            if not n_cont:
                return Applicability(True, f"no continuous latents; {cost}: the ELBO equals the log evidence")
            return Applicability(True, f"guide over {n_cont} continuous latent(s); {cost}")
        if not n_cont:
            return Applicability(True, "no latent variables: SVI maximises the likelihood of the params")
        return Applicability(True, f"guide over {n_cont} continuous latent(s) (stochastic ELBO gradients)")

    def validate_options(self, options: dict, fill: bool = True) -> dict:
        """As :meth:`Backend.validate_options`, but ``dtype`` is left out when not given: :meth:`run`
        fills float64 itself and must know whether it was chosen (a model with float32 tensors of
        its own, e.g. an nn.Module's weights, then runs in torch's default dtype)."""
        out = super().validate_options(options, fill=fill)
        if "dtype" not in options:
            out.pop("dtype", None)
        return out

    def check_options(self, analysis, verdict, options):
        """A callable guide may sample discrete latents that could not be enumerated (the run
        checks it against the model); an autoguide cannot follow a support that depends on
        another latent (its transform is fixed when it is built)."""
        guide = options.get("guide", "normal")
        if callable(guide) and not isinstance(guide, type):
            return verdict if verdict.ok else Applicability(True, "a user guide samples the latents that cannot "
                                                                  "be enumerated")
        dep = dependent_supports(analysis.graph)
        if verdict.ok and dep:
            return Applicability(False, f"the support of {dep} depends on other latents, which an autoguide's fixed "
                                        "transform cannot follow: use method='laplace', 'pathfinder' or 'nuts', or "
                                        "pass a guide", UnsupportedModelError)
        return verdict

    def auto_variants(self, analysis) -> list:
        """Under ``method="auto"``, after the Gaussian approximations: a full-rank Gaussian
        guide where the latents have at most 200 dimensions (it captures correlations the
        mean field misses), else the mean field."""
        graph = analysis.graph
        dims = sum(graph.sites[s].value.numel() for s in analysis.continuous)
        return [{"guide": "mvn"}] if 0 < dims <= 200 else [{}]

    def auto_skip(self, analysis, options, attempts):
        """No Gaussian guide after two Gaussian approximations failed for the posterior's shape
        (k̂ >= 0.7, tails out of reach, a failed variance estimate: ``importance.gaussian_misfit``)
        or found no mode: the posterior is not Gaussian (Yao et al. 2018, §2.2), so auto goes on."""
        if options.get("guide", "normal") not in ("normal", "diagonal", "mvn", "lowrank"):
            return None
        bad = [a for a in attempts if a.get("gaussian_approximation")
               and ((a.get("verdict") == "unreliable" and a.get("gaussian_misfit")) or a.get("numerical_failure"))]
        if len(bad) < 2:
            return None
        why = ", ".join(f"{a['method']} {a['gaussian_misfit']}" if a.get("gaussian_misfit")
                        else f"{a['method']} found no mode" for a in bad)
        return (f"two Gaussian approximations failed ({why}): the posterior is not close to a Gaussian, so a "
                "Gaussian guide would not be reliable either")

    def assess(self, posterior, graph, analysis):
        """Reliable when the optimisation converged (stationary iterates) and the guide
        passes PSIS as it is: k̂ < 0.5 (Yao et al. 2018, §2.2), within the sample-size
        threshold of its ``elbo_particles`` draws (Vehtari et al. 2024)."""
        d = posterior.diagnostics
        khat, draws = d.get("psis_khat"), d.get("elbo_particles") or 0
        numbers = {"psis_khat": khat, "khat_threshold": min(KHAT_GOOD, khat_threshold(draws)), "num_draws": draws,
                   "iterate_rhat": d.get("iterate_rhat"), "gradient_t": d.get("gradient_t"),
                   "elbo_se": d.get("elbo_se")}
        if d.get("guide") == "delta":
            return Trust(UNRELIABLE, ["a point-mass guide is a MAP estimate: no posterior uncertainty"], numbers,
                         next_method="laplace")
        if d.get("unbounded"):  # no maximum exists: converged or not, say why (ppl.backends.common.existence)
            return Trust(UNRELIABLE, list(d["unbounded"]), numbers)
        if not posterior.converged:
            return Trust(UNRELIABLE, [f"the optimisation did not reach its stationary phase in {d['num_steps']} steps "
                                      f"({d.get('drift', 'the guide is still moving')}); raise num_steps"], numbers,
                         next_method="nuts")
        if not d.get("guided"):
            return Trust(RELIABLE, ["no latent is approximated: the discrete latents are summed out exactly, and the "
                                    "params are a converged maximum-likelihood estimate"], numbers)
        if khat is None or math.isnan(khat):
            return Trust(RELIABLE, ["every importance weight p/q is equal: the guide matches the posterior"], numbers)
        if khat < numbers["khat_threshold"]:
            return Trust(RELIABLE, [f"converged, and PSIS k̂ = {khat:.2f} < {numbers['khat_threshold']:.2f}: the "
                                    "guide is close to the posterior (Yao et al. 2018)"], numbers)
        local = d.get("local_latents") or []
        why = (f"PSIS k̂ = {khat:.2f} >= {numbers['khat_threshold']:.2f}: the guide misses posterior mass (p/q has a "
               "heavy tail), so its means and sds can be off")
        if local:
            why += f" (k̂ is over the joint of every data point's latents {local})"
        return Trust(UNRELIABLE, [why], numbers, next_method="nuts")

    def deciding_fact(self, analysis, verdicts) -> str:
        """No closed-form method applies, so a guide is fitted."""
        failed = not_ok(verdicts)
        return (f"no closed-form method applies (exact: {failed.get('exact', 'not registered')}; cavi: "
                f"{failed.get('cavi', 'not registered')}), so stochastic VI fits a guide: {verdicts[self.name][1]}")

    # ------------------------------------------------------------------------- run
    def run(self, graph, analysis, **options):
        """Run SVI with ``options`` (see :attr:`options`).

        Returns
        -------
        GuidePosterior
            ``elbo`` (re-estimated, nats), ``history`` (the negated loss per step: the
            ELBO estimate for ``elbo``/``meanfield``, the K-draw Rényi bound for
            ``renyi`` (above log p(v) when α < 0), the wake-θ IWAE estimate for ``rws``),
            ``params`` (learned ``ppl.param`` values, guide parameters and ``pyro.module``
            weights under their ``"name$$$p"`` keys), ``converged``,
            ``diagnostics`` (``elbo_se``, ``iwae_bound``, ``psis_khat``, ``psis_reading``,
            ``num_steps``, ``loss``, ``guide``, ``enumerated``, ``seconds_per_step``,
            ``dtype`` (the run's), ``notes``, ...).

        The run is in ``dtype`` (float64 unless given): floating data, the model's
        ``ppl.param`` values in Pyro's param store (they stay in it) and the guide are in
        it, and it is torch's default dtype while the model runs, posterior draws
        included.  When ``dtype`` was not given and the float64 run fails at once on
        tensors of two dtypes (the model's own float32 tensors, e.g. an ``nn.Module``'s
        weights), it runs again in torch's default dtype, with a note in
        ``diagnostics["notes"]``.  Networks registered with ``pyro.module`` train from the
        weights the call found and get them back when it ends: the learned ones are in ``params``.

        Raises
        ------
        OptionError
            Bad option values (unknown guide, loss or optimiser names; numbers out of
            range; a loss that cannot enumerate).
        ModelError
            A user guide that does not match the model.
        UnsupportedModelError
            Discrete latents that neither the guide samples nor enumeration can sum out.
        NumericalError
            The loss became NaN or infinite.
        DataError
            ``subsample_size`` that the data cannot follow.

        With ``distributed=True`` (docs/distributed.md) each rank's plate is scaled by
        ``N / N_r`` and the gradients are averaged with weights ``N_r / N`` (the full-data
        gradient: a sum over data points, Hoffman et al. 2013, §2.4); the guide starts at
        the prior median (no Laplace fit), every rank seeds alike and stops alike.
        """
        o = self.settings(options)
        start = time.perf_counter()
        o.shard = data_shard(graph, o.distributed, self.name, local=graph.discrete_latent(), device=o.device,
                             global_=graph.continuous_latent(), refuse={"subsample_size": o.subsample_size})
        o.seed = o.shard.common_seed(o.seed)
        loss = check_loss(o.loss, o.alpha)
        particles = o.num_particles if o.num_particles is not None else (10 if loss in ("renyi", "rws") else 1)
        if loss == "rws" and particles < 2:
            raise OptionError(f"option num_particles={particles} is not accepted with loss='rws': reweighted "
                              "wake-sleep needs num_particles >= 2")
        return in_dtype_or_default(
            lambda dtype, notes: self._fit(graph, analysis, o, loss, particles, dtype, start, notes),
            o.dtype, given="dtype" in options)

    def _fit(self, graph, analysis, o, loss, particles, dtype, start, notes=()):
        """The runs in ``dtype`` (see :meth:`run`): ``n_init`` of them, each from the model's
        params as they were, and the one with the highest final ELBO kept (its parameters
        are left in Pyro's param store)."""
        with run_context(o.device, dtype, o.seed):
            params_in_dtype(graph, dtype)
            initial = store_snapshot() if o.n_init > 1 else None
            runs = []
            for restart in range(o.n_init):
                if restart:
                    store_restore(initial)
                with ModuleWeights():  # each run trains the networks from where the call found them
                    post, message = self._one_fit(graph, analysis, o, loss, particles, dtype, start, notes, restart)
                score = post.elbo if post.elbo is not None else post.diagnostics.get("log_joint", -math.inf)
                runs.append((score, post, message, store_snapshot() if o.n_init > 1 else None))
            best = max(range(len(runs)), key=lambda i: runs[i][0])
            score, post, message, kept = runs[best]
            if o.n_init > 1:
                store_restore(kept)
            post.diagnostics.update(restart_elbos=[r[0] for r in runs], best_restart=best)
            if message:
                warnings.warn(message, ConvergenceWarning, stacklevel=3)
            return post

    def _one_fit(self, graph, analysis, o, loss, particles, dtype, start, notes, restart):
        """One run: ``(posterior, non-convergence message or None)``."""
        p = build_problem(graph, analysis, o, loss, dtype, restart)
        if p.extra["warm"] is not None:
            apply_warm_start(p.guide, p.kind, p.extra["warm"], p.kwargs)
        optimizer = make_optimizer(o.optim, o.lr, o.lr_decay ** (1.0 / o.num_steps))
        elbo = make_loss(loss, bool(p.enumerated), particles, o.vectorize_particles, p.mpn, o.alpha,
                         bool(graph.params()))
        train_model, train_guide = p.enum_model, p.guide
        if p.batcher is not None:
            scale = PlateScale(p.batcher.plate, p.batcher.scale)
            train_model, train_guide = scale(p.enum_model), scale(p.guide)
        svi = SVI(o.shard.scaled(train_model), o.shard.scaled(train_guide), optimizer, loss=elbo)
        svi.loss_and_grads = o.shard.reduced(svi.loss_and_grads)  # distributed: the full data's loss and gradient
        fit = SVIFit(p, svi, optimizer, window=o.window, tol=o.tol, lr=o.lr, num_steps=o.num_steps, shard=o.shard)
        fit.label = f"svi ({p.kind}, {loss})"
        try:
            result = run_iterations(fit, max_iter=o.num_steps, tol=o.tol, progress=o.progress, warn=False)
        finally:
            p.restore()
        fit.finish(result.converged, result.history)
        message = None if result.converged else fit.not_converged(result, o.num_steps, o.tol)
        return self._posterior(graph, o, p, fit, result, loss, particles, dtype, start, notes), message

    def _posterior(self, graph, o, p, fit, result, loss, particles, dtype, start, notes=()):
        """The :class:`GuidePosterior` of a finished run: bounds re-estimated with many draws,
        the enumerated sites' marginals, a joint sampler."""
        train_seconds = fit.train_seconds
        deterministic = not p.guided or p.kind == "delta"
        data_plates = {pl for n in graph.observed() for pl in graph.variables[n].plates}
        local = [n for n in p.guided if set(graph.variables[n].plates) & data_plates]
        n_bound = o.elbo_particles or (100 if p.enumerated else 1000)
        o.shard.sync_rng()  # distributed: the same draws on every rank, whose log weights add up
        bounds = estimate_bounds(o.shard.scaled(p.enum_model), p.guide, p.kwargs, num_particles=n_bound,
                                 max_plate_nesting=p.mpn, enumerated=bool(p.enumerated), deterministic=deterministic,
                                 reduce=o.shard.weighted_mean)
        marginals = discrete_marginals(graph, p.enum_model, p.guide, p.kwargs, p.enumerated, p.mpn, deterministic,
                                       o.device)
        params = {n: pyro.param(n).detach().clone() for n in fit.param_names}
        point = None
        if p.kind == "delta":
            with torch.no_grad():
                point = {k: v.detach() for k, v in p.guide.median(**p.kwargs).items()}
        n_run = result.n_iter
        diagnostics = {
            "loss": loss, "guide": p.kind, "enumerated": p.enumerated, "guided": list(p.guided),
            "num_steps": n_run, "num_particles": particles, "alpha": o.alpha if loss == "renyi" else None,
            "seconds_per_step": train_seconds / max(n_run - 1, 1), "first_step_seconds": fit.first_step_seconds,
            "elbo_se": bounds.elbo_se, "elbo_particles": bounds.num_particles, "iwae_bound": bounds.iwae,
            "psis_khat": bounds.khat, "psis_reading": _psis_reading(bounds.khat, p.kind, local),
            "iterate_rhat": fit.last_rhat, "gradient_t": fit.last_t, "gradient_t_bound": fit.t_bound,
            "drift": None if result.converged else fit.drift(),
            "local_latents": local, "unbounded": [] if o.distributed else elbo_param_edges(
                p.enum_model, p.guide, p.kwargs, graph, p.mpn, bool(p.enumerated)),
            "subsample_size": p.batcher.size if p.batcher else None,
            "subsample_plate": p.batcher.plate if p.batcher else None, "device": str(o.device), "dtype": str(dtype),
            "init": p.extra.get("init"), "notes": list(notes),
        }
        elbo_value = bounds.elbo
        if p.kind == "delta":  # a Dirac q has entropy -inf: its bound is -inf (§19.3); report log p(v, h*) apart
            elbo_value = None
            diagnostics.update(log_joint=bounds.elbo, elbo_se=None, iwae_bound=None, psis_khat=None)
        return o.shard.annotate(GuidePosterior(
            self.name, graph=graph, continuous=list(p.guided),
            marginal_fn=_in_run(guide_marginal_fn(p.guide, p.kind, p.kwargs), o.device, dtype, graph, params),
            sampler=_in_run(joint_sampler(p.enum_model, p.guide, p.kwargs, p.guided, p.enumerated, p.mpn, graph),
                            o.device, dtype, graph, params),
            marginals=marginals, supports={n: enumerate_values(graph.sites[n].fn) for n in p.enumerated},
            families={n: graph.variables[n].family for n in p.enumerated}, posterior_samples=o.posterior_samples,
            point=point, guide=p.guide, elbo=elbo_value, log_evidence=bounds.elbo if not p.guided else None,
            params=params, history=result.history, converged=result.converged,
            elapsed=time.perf_counter() - start, diagnostics=diagnostics))


def _in_run(fn, device, dtype, graph, params):
    """``fn`` under the run's device and dtype, in a private param store with the learned
    ``ppl.param`` values and network weights: draws after :meth:`SVIBackend.run` returned run
    the model in the guide's dtype and leave Pyro's param store and the user's networks as they are."""
    def wrapped(*args, **kwargs):
        with param_scope(graph, {k: v for k, v in params.items() if k in graph.params() or is_module_param(k)}), \
                run_context(device, dtype):
            return fn(*args, **kwargs)

    return wrapped


def _psis_reading(khat, kind, local) -> str:
    if kind == "delta":
        return "point-mass guide: no importance weights"
    reading = khat_reading(khat)
    if local:
        reading += (f" (joint weights over every data point, since {local} are local latents: k̂ grows with the "
                    "data size even for a good per-point guide; judge per-point weights instead)")
    return reading
