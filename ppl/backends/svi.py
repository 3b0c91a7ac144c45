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
:mod:`ppl.backends.bounds`).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import pyro
import pyro.optim
import torch
from pyro import poutine
from pyro.infer import SVI, ReweightedWakeSleep, RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

from ..analysis.report import format_bytes
from ..compiler.families import enumerate_values
from ..errors import (ConvergenceWarning, ModelError, NumericalError, OptionError, PPLError,
                      UnsupportedModelError)
from ..posterior import GuidePosterior
from .base import Applicability, Backend, check_int, check_number, place, progress_bar, run_context
from ..compiler.observations import CheckObservations
from .bounds import estimate_bounds, khat_reading
from .guides import build_guide, check_guide, guide_marginal_fn
from .minibatch import Minibatcher, PlateScale

__all__ = ["SVIBackend", "LOSSES", "OPTIMIZERS"]

#: ``loss=`` names.
LOSSES = ("elbo", "meanfield", "renyi", "rws")

#: ``optim=`` names -> torch optimisers (``lr`` is their learning rate; wrapped in Pyro's
#: ``ExponentialLR`` scheduler for ``lr_decay``).
OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "clipped_adam": pyro.optim.clipped_adam.ClippedAdam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

#: Guide draws whose conditional marginals p(z | h, v) are averaged for enumerated sites.
DISCRETE_MARGINAL_DRAWS = 16


class SVIBackend(Backend):
    """Stochastic variational inference (see the module docstring).

    Options
    -------
    guide : str, AutoGuide class or callable
        ``"normal"`` (AutoNormal, mean field; default), ``"diagonal"``, ``"mvn"`` (full
        rank), ``"lowrank"``, ``"delta"`` (MAP), ``"iaf"`` (a flow), a Pyro ``AutoGuide``
        class, or a callable guide with the model's arguments (e.g. an amortised
        encoder).
    loss : {"elbo", "meanfield", "renyi", "rws"}
        ``Trace_ELBO`` (``TraceEnum_ELBO`` when discrete latents are enumerated),
        ``TraceMeanField_ELBO`` (analytic KL terms), ``RenyiELBO`` with ``alpha``,
        ``ReweightedWakeSleep``.
    alpha : float
        Rényi α (``loss="renyi"``), default 0 (the IWAE bound); α = 1 is the ELBO.
    num_steps : int
        Maximum optimisation steps (default 2000).
    optim : str or pyro.optim.PyroOptim
        ``"adam"`` (default), ``"clipped_adam"``, ``"sgd"``, ``"rmsprop"``, ``"adagrad"``,
        or an optimiser instance (then ``lr`` is ignored).
    lr : float
        Learning rate (default 0.01).
    lr_decay : float
        The learning rate decays exponentially from ``lr`` to ``lr · lr_decay`` at
        ``num_steps`` (default 0.1; 1 keeps it constant): stochastic-approximation steps
        must shrink for the iterates to settle (Robbins & Monro 1951), and a decayed Adam
        ends much nearer the optimum than a constant one.
    num_particles : int
        Draws per gradient estimate (default 1; 10 for ``renyi`` and ``rws``).
    vectorize_particles : bool
        Draw the particles as one batched run (default True).
    subsample_size : int or dict
        Minibatch size on the data plate (see :mod:`ppl.backends.minibatch`).
    tol, window : float, int
        Stop when the mean ELBO of the last ``window`` steps differs from that of the
        ``window`` before by less than ``tol · max(1, |ELBO|)``, or by less than half the
        standard error of that difference (defaults 1e-3, 100); ``tol=0`` runs all
        ``num_steps``.
    init : str, dict or callable
        Initial location of autoguides (``"feasible"`` default, ``"median"``, ``"mean"``,
        ``"sample"``, a dict site -> value).
    init_scale : float
        Initial scale of Gaussian autoguides (default 0.1).
    guide_options : dict
        Extra autoguide arguments (``rank``, ``hidden_dim``, ``num_transforms``).
    elbo_particles : int
        Draws of the final ELBO estimate (default 1000; 100 with enumerated sites, which
        are run one draw at a time).
    posterior_samples : int
        Draws behind sample-based marginals (default 1000).
    device, dtype, seed, progress
        Where and in what precision it runs (default CPU, torch's default dtype), the
        seed of Pyro's RNG, and a tqdm bar with the running ELBO.
    """

    name = "svi"
    summary = "stochastic VI with Pyro guides (mean field, full rank, flows, amortised); exact sums over tractable discrete latents"
    options = {
        "guide": "'normal' (default), 'diagonal', 'mvn', 'lowrank', 'delta', 'iaf', an AutoGuide class or a callable guide",
        "loss": "'elbo' (default), 'meanfield', 'renyi', 'rws'",
        "alpha": "Renyi alpha for loss='renyi' (default 0: IWAE)",
        "num_steps": "maximum optimisation steps (default 2000)",
        "optim": "'adam' (default), 'clipped_adam', 'sgd', 'rmsprop', 'adagrad' or a pyro.optim instance",
        "lr": "learning rate (default 0.01)",
        "lr_decay": "lr decays exponentially to lr * lr_decay at num_steps (default 0.1; 1 = constant)",
        "num_particles": "draws per gradient step (default 1; 10 for renyi/rws)",
        "vectorize_particles": "batch the particles (default True)",
        "subsample_size": "minibatch size on the data plate, or {plate: size}",
        "tol": "relative change of the windowed mean ELBO to stop at (default 1e-3)",
        "window": "steps per convergence window (default 100)",
        "init": "autoguide init: 'feasible' (default), 'median', 'mean', 'sample' or a dict",
        "init_scale": "initial scale of Gaussian autoguides (default 0.1)",
        "guide_options": "extra autoguide arguments (rank, hidden_dim, num_transforms)",
        "elbo_particles": "draws of the final ELBO estimate (default 1000; 100 with enumeration)",
        "posterior_samples": "draws behind sample-based marginals (default 1000)",
        "device": "'cpu' (default) or 'cuda'",
        "dtype": "floating dtype of data and guide (default torch's default dtype)",
        "seed": "seed of Pyro's RNG for this run",
        "progress": "tqdm bar with the running ELBO (default: on a terminal)",
    }

    # ------------------------------------------------------------------ applicability
    def check(self, analysis) -> Applicability:
        """SVI applies to every model whose discrete latents, if any, can be summed out
        exactly (a guide by name samples only continuous latents); otherwise it names the
        discrete sites and says to pass a guide that samples them."""
        n_cont = len(analysis.continuous)
        if analysis.discrete:
            why = _enumeration_problem(analysis)
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

    def check_options(self, analysis, verdict, options):
        """A callable guide may sample discrete latents that could not be enumerated: the
        run then checks the guide against the model instead."""
        guide = options.get("guide", "normal")
        if not verdict.ok and callable(guide) and not isinstance(guide, type):
            return Applicability(True, "a user guide samples the latents that cannot be enumerated")
        return verdict

    # ------------------------------------------------------------------------- run
    def run(self, graph, analysis, *, guide="normal", loss="elbo", alpha=0.0, num_steps=2000, optim="adam", lr=0.01,
            lr_decay=0.1,
            num_particles=None, vectorize_particles=True, subsample_size=None, tol=1e-3, window=100,
            init="feasible", init_scale=0.1, guide_options=None, elbo_particles=None, posterior_samples=1000,
            device=None, dtype=None, seed=None, progress=None):
        """Run SVI; see the class docstring for options.

        Returns
        -------
        GuidePosterior
            ``elbo`` (re-estimated, nats), ``history`` (the negated loss per step: the
            ELBO estimate for ``elbo``/``meanfield``, the K-draw Rényi bound for
            ``renyi`` (above log p(v) when α < 0), the wake-θ IWAE estimate for ``rws``), ``params`` (learned
            ``ppl.param`` values and guide parameters), ``converged``, ``diagnostics``
            (``elbo_se``, ``iwae_bound``, ``psis_khat``, ``psis_reading``, ``num_steps``,
            ``loss``, ``guide``, ``enumerated``, ``seconds_per_step``, ...).

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
        """
        start = time.perf_counter()
        loss_name = _check_loss(loss, alpha)
        num_particles = check_int("num_particles", num_particles, 2 if loss_name == "rws" else 1) if num_particles \
            is not None else (10 if loss_name in ("renyi", "rws") else 1)
        num_steps = check_int("num_steps", num_steps, 1)
        window = check_int("window", window, 1)
        posterior_samples = check_int("posterior_samples", posterior_samples, 1)
        check_number("lr", lr, low=0.0, low_open=True)
        check_number("tol", tol, low=0.0)
        check_number("lr_decay", lr_decay, low=0.0, high=1.0, low_open=True)
        if elbo_particles is not None:
            check_int("elbo_particles", elbo_particles, 2)
        optimizer = _optimizer(optim, lr, lr_decay ** (1.0 / num_steps))
        device = torch.device(device) if device is not None else torch.device("cpu")
        dtype = dtype or torch.get_default_dtype()
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise OptionError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        mpn = max([-p.dim for p in graph.plates.values()], default=0)

        with run_context(device, dtype, seed):
            kwargs = {k: place(v, device, dtype) for k, v in graph.bound.kwargs.items()}
            observations = {k: place(v, device, dtype) for k, v in graph.bound.observations.items()}
            state = {"obs": observations}

            # obs= values the model takes as Python numbers become tensors of the site's dtype, as
            # in the compiled trace (no re-validation: the data were checked at compile time)
            cast = CheckObservations(graph.model, observations, validate=False)
            conditioned = cast(poutine.condition(graph.model.fn, data=observations) if observations
                               else graph.model.fn)

            def model_fn(*args, **kw):
                if state["obs"] is observations:  # the full data: the model conditioned once
                    return conditioned(*args, **kw)
                return cast(poutine.condition(graph.model.fn, data=state["obs"]))(*args, **kw)

            latents = graph.latent()
            discrete = set(graph.discrete_latent())
            continuous = [n for n in latents if n not in discrete]
            named = isinstance(guide, str) or isinstance(guide, type)
            if named:
                enumerated = sorted(discrete, key=latents.index)
                problem = _enumeration_problem(analysis) if enumerated else None
                if problem:
                    raise UnsupportedModelError(problem)
                q, kind = build_guide(guide, model_fn, enumerated, has_latents=bool(continuous), init=init,
                                      init_scale=init_scale, options=guide_options)
                guided = continuous
            else:
                q, kind = build_guide(guide, model_fn, (), has_latents=True, options=guide_options)
                guided = check_guide(model_fn, q, kwargs, discrete, latents)
                enumerated = [n for n in latents if n in discrete and n not in guided]
            if enumerated and loss_name != "elbo":
                raise OptionError(f"loss='{loss_name}' cannot sum out the discrete latent(s) {enumerated}: use "
                                  "loss='elbo' (exact enumeration), or a guide that samples them")
            enum_set = set(enumerated)
            enum_model = poutine.infer_config(
                model_fn, lambda msg: {"enumerate": "parallel"} if msg["name"] in enum_set else {}) \
                if enumerated else model_fn

            batcher = Minibatcher(graph, subsample_size, kwargs, observations) if subsample_size is not None else None
            if batcher is not None and kind not in ("custom", "empty"):
                local = [n for n in guided if batcher.plate in graph.variables[n].plates]
                if local:
                    raise OptionError(
                        f"subsample_size: the latent site(s) {local} are local to the subsampled plate "
                        f"'{batcher.plate}'; an autoguide keeps one parameter per data point, which minibatches "
                        "cannot follow here: pass an amortised guide (guide=callable encoder) or drop subsample_size")
            train_model, train_guide = enum_model, q
            if batcher is not None:
                train_model = PlateScale(batcher.plate, batcher.scale)(enum_model)
                train_guide = PlateScale(batcher.plate, batcher.scale)(q)

            elbo = _make_loss(loss_name, bool(enumerated), num_particles, vectorize_particles, mpn, alpha,
                              bool(graph.params()))
            svi = SVI(train_model, train_guide, optimizer, loss=elbo)
            scheduled = isinstance(optimizer, pyro.optim.lr_scheduler.PyroLRScheduler)
            history, converged, n_run, first_step = [], False, 0, 0.0
            param_names: list = []
            bar = progress_bar(num_steps, f"svi ({kind}, {loss_name})", progress)
            train_start = time.perf_counter()
            try:
                for step in range(num_steps):
                    step_kwargs = kwargs
                    if batcher is not None:
                        step_kwargs, state["obs"] = batcher.draw()
                    if step == 0:
                        if batcher is not None:
                            with poutine.block():
                                batcher.check(model_fn, step_kwargs)
                                if kind == "custom":
                                    batcher.check(q, step_kwargs, what="guide")
                        with poutine.trace(param_only=True) as cap:
                            value = _step(svi, step_kwargs, step, lr)
                        param_names = [n for n, s in cap.trace.nodes.items() if s["type"] == "param"]
                        first_step = time.perf_counter() - train_start
                        train_start = time.perf_counter()
                    else:
                        value = _step(svi, step_kwargs, step, lr)
                    if scheduled:
                        optimizer.step()
                    history.append(-value)
                    n_run = step + 1
                    if bar is not None and (n_run % 20 == 0 or n_run == num_steps):
                        bar.set_postfix_str(f"ELBO {sum(history[-20:]) / len(history[-20:]):.6g}")
                        bar.update(n_run - bar.n)
                    if n_run % window == 0 and n_run >= 2 * window and _flat(history, window, tol):
                        converged = True
                        break
            finally:
                if bar is not None:
                    bar.close()
                state["obs"] = observations
            train_seconds = time.perf_counter() - train_start
            if not converged:
                warnings.warn(f"SVI did not converge in {num_steps} steps (windowed mean ELBO still changing by more "
                              f"than tol={tol} relative over {window} steps); raise num_steps or lr, or tol",
                              ConvergenceWarning, stacklevel=3)

            deterministic = not guided or kind == "delta"
            data_plates = {p for n in graph.observed() for p in graph.variables[n].plates}
            local = [n for n in guided if set(graph.variables[n].plates) & data_plates]
            n_bound = elbo_particles or (100 if enumerated else 1000)
            bounds = estimate_bounds(enum_model, q, kwargs, num_particles=n_bound, max_plate_nesting=mpn,
                                     enumerated=bool(enumerated), deterministic=deterministic)
            marginals = _discrete_marginals(graph, enum_model, q, kwargs, enumerated, mpn, deterministic, device)
            params = {n: pyro.param(n).detach().clone() for n in param_names}
            marginal_fn = guide_marginal_fn(q, kind, kwargs)
            sampler = _sampler(enum_model, q, kwargs, guided, enumerated, mpn, graph)
            point = None
            if kind == "delta":
                with torch.no_grad():
                    point = {k: v.detach() for k, v in q.median(**kwargs).items()}

        diagnostics = {
            "loss": loss_name, "guide": kind, "enumerated": enumerated, "guided": list(guided),
            "num_steps": n_run, "num_particles": num_particles, "alpha": alpha if loss_name == "renyi" else None,
            "seconds_per_step": train_seconds / max(n_run - 1, 1), "first_step_seconds": first_step, "elbo_se": bounds.elbo_se,
            "elbo_particles": bounds.num_particles, "iwae_bound": bounds.iwae, "psis_khat": bounds.khat,
            "psis_reading": _psis_reading(bounds.khat, kind, local), "subsample_size": batcher.size if batcher else None,
            "subsample_plate": batcher.plate if batcher else None, "device": str(device), "dtype": str(dtype),
        }
        elbo_value = bounds.elbo
        if kind == "delta":  # a Dirac q has entropy -inf: its bound is -inf (§19.3); report log p(v, h*) apart
            elbo_value = None
            diagnostics.update(log_joint=bounds.elbo, elbo_se=None, iwae_bound=None, psis_khat=None)
        supports = {n: enumerate_values(graph.sites[n].fn) for n in enumerated}
        families = {n: graph.variables[n].family for n in enumerated}
        return GuidePosterior(
            self.name, graph=graph, continuous=list(guided), marginal_fn=marginal_fn, sampler=sampler,
            marginals=marginals, supports=supports, families=families, posterior_samples=posterior_samples,
            point=point, guide=q, elbo=elbo_value, log_evidence=bounds.elbo if not guided else None, params=params,
            history=history, converged=converged, elapsed=time.perf_counter() - start, diagnostics=diagnostics)


# ------------------------------------------------------------------------ helpers
def _enumeration_problem(analysis) -> str | None:
    """Why the discrete latents cannot be summed out (None when they can)."""
    shown = ", ".join(analysis.discrete[:6]) + (" ..." if len(analysis.discrete) > 6 else "")
    hint = ("pass a guide that samples them (guide=callable, with loss='rws' or 'elbo'), or use method='exact' / "
            "'em' if there are no continuous latents")
    if analysis.undeclared_batch:
        site, dims = next(iter(analysis.undeclared_batch.items()))
        return (f"discrete latent(s) {shown} cannot be enumerated: site '{site}' has batch dims {dims} not "
                f"declared by a plate; declare them with ppl.plate, or {hint}")
    if analysis.cost.intractable:
        return f"discrete latent(s) {shown} cannot be summed out: {analysis.cost.intractable}; {hint}"
    if analysis.clique_bytes > analysis.memory_budget:
        return (f"summing out the discrete latent(s) {shown} needs a table of {format_bytes(analysis.clique_bytes)} "
                f"(treewidth <= {analysis.treewidth}), over the {format_bytes(analysis.memory_budget)} budget; "
                f"{hint}")
    return None


def _psis_reading(khat, kind, local) -> str:
    if kind == "delta":
        return "point-mass guide: no importance weights"
    reading = khat_reading(khat)
    if local:
        reading += (f" (joint weights over every data point, since {local} are local latents: k̂ grows with the "
                    "data size even for a good per-point guide; judge per-point weights instead)")
    return reading


def _flat(history, window, tol) -> bool:
    """Stopping rule: the mean ELBO of the last ``window`` steps differs from the mean of
    the ``window`` before by less than ``tol · max(1, |mean|)``, or (``tol > 0``) by less
    than half the standard error of that difference (no change the noise of the
    estimates can show).  ``tol = 0`` runs every step."""
    prev = torch.tensor(history[-2 * window:-window], dtype=torch.float64)
    cur = torch.tensor(history[-window:], dtype=torch.float64)
    change = abs(float(cur.mean() - prev.mean()))
    se = math.sqrt(float(prev.var() + cur.var()) / window) if window > 1 else 0.0
    return change <= tol * max(1.0, abs(float(prev.mean()))) or (tol > 0 and change <= 0.5 * se)


def _check_loss(loss, alpha) -> str:
    if loss not in LOSSES:
        raise OptionError(f"loss={loss!r} is not a loss name; names: {list(LOSSES)}")
    if loss == "renyi":
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha)):
            raise OptionError(f"alpha must be a finite number, got {alpha!r}")
        if alpha == 1:
            raise OptionError("alpha=1 is the ELBO itself: use loss='elbo'")
    return loss


def _optimizer(optim, lr, gamma):
    """A Pyro optimiser; names get an exponential learning-rate schedule (factor ``gamma``
    per step), stepped by the training loop."""
    if isinstance(optim, pyro.optim.PyroOptim):
        return optim
    try:
        cls = OPTIMIZERS[optim]
    except (KeyError, TypeError):
        raise OptionError(f"optim={optim!r} is not an optimiser name; names: {sorted(OPTIMIZERS)}, "
                          "or pass a pyro.optim instance") from None
    if gamma == 1.0:
        return pyro.optim.PyroOptim(cls, {"lr": float(lr)})
    return pyro.optim.ExponentialLR({"optimizer": cls, "optim_args": {"lr": float(lr)}, "gamma": gamma})


def _make_loss(name, enumerated, num_particles, vectorize, mpn, alpha, model_has_params):
    common = dict(num_particles=num_particles, max_plate_nesting=mpn,
                  vectorize_particles=bool(vectorize) and num_particles > 1)
    if name == "elbo":
        return TraceEnum_ELBO(**common) if enumerated else Trace_ELBO(**common)
    if name == "meanfield":
        return TraceMeanField_ELBO(**common)
    if name == "renyi":
        return RenyiELBO(alpha=float(alpha), **common)
    return ReweightedWakeSleep(model_has_params=model_has_params, **common)


def _step(svi, kwargs, step, lr) -> float:
    try:
        value = svi.step(**kwargs)
    except PPLError:
        raise
    except (ValueError, RuntimeError) as e:
        message = str(e)
        if "nan" in message.lower() or "inf" in message.lower():
            raise NumericalError(f"SVI step {step}: {type(e).__name__}: {message.splitlines()[0]}; parameters may "
                                 f"have diverged: lower lr (now {lr}) or use float64") from e
        raise ModelError(f"SVI step {step} failed: {type(e).__name__}: {message}") from e
    if isinstance(value, tuple):  # ReweightedWakeSleep: (wake-theta loss, phi loss)
        value = value[0]
    if not math.isfinite(value):
        raise NumericalError(f"the SVI loss is {value} at step {step}: the ELBO estimate is not finite (parameters "
                             f"diverged, or the guide puts mass where the model has none); lower lr (now {lr}), "
                             "use init='median', or float64")
    return float(value)


def _discrete_marginals(graph, model, guide, kwargs, enumerated, mpn, deterministic, device) -> dict:
    """p(z | v) of each enumerated site, ``batch_shape + (K,)``: TraceEnum_ELBO's exact
    conditional marginals p(z | h, v), averaged over guide draws h (one draw when nothing is
    guided)."""
    if not enumerated:
        return {}
    elbo = TraceEnum_ELBO(max_plate_nesting=mpn)
    draws = 1 if deterministic else DISCRETE_MARGINAL_DRAWS
    total: dict = {}
    with torch.no_grad():
        for _ in range(draws):
            for name, d in elbo.compute_marginals(model, guide, **kwargs).items():
                if name in enumerated:
                    var = graph.variables[name]
                    values = enumerate_values(graph.sites[name].fn)
                    probs = _probs_of(d, values, var.batch_shape, device)
                    total[name] = total.get(name, 0) + probs.double()
    return {k: v / draws for k, v in total.items()}


def _probs_of(d, values, batch_shape, device):
    """Probabilities of the support ``values`` (``(K,) + event_shape``) under ``d``:
    ``batch_shape + (K,)``."""
    k, event = values.shape[0], values.shape[1:]
    values = values.to(device).reshape((k,) + (1,) * len(batch_shape) + event)
    return d.log_prob(values).exp().reshape((k,) + tuple(batch_shape)).movedim(0, -1)


def _sampler(model, guide, kwargs, guided, enumerated, mpn, graph):
    """Joint draws: guided sites from q, enumerated sites (if ``discrete``) from
    p(z | h, v) (``infer_discrete``); vectorised over a draws plate when the model allows,
    else one draw at a time."""
    from pyro.infer import infer_discrete

    def one(n, vectorized=True, discrete=True):
        def draws_plate():
            return pyro.plate("_ppl_draws", n, dim=-(mpn + 1)) if vectorized else contextlib.nullcontext()

        with draws_plate():
            guide_trace = poutine.trace(guide).get_trace(**kwargs)
        values = {s: guide_trace.nodes[s]["value"] for s in guided}
        if enumerated and discrete:
            def replayed(**kw):  # the draws plate inside: infer_discrete blocks handlers outside it
                with draws_plate():
                    return poutine.replay(model, trace=guide_trace)(**kw)

            first = -(mpn + 2) if vectorized else -(mpn + 1)
            model_trace = poutine.trace(infer_discrete(replayed, first_available_dim=first)).get_trace(**kwargs)
            values.update({s: model_trace.nodes[s]["value"] for s in enumerated})
        return values

    def shape_of(site):
        var = graph.variables[site]
        return tuple(var.batch_shape) + tuple(var.event_shape)

    def sampler(n, seed=None, discrete=True):
        rng = torch.random.fork_rng() if seed is not None else contextlib.nullcontext()
        with rng, torch.no_grad():
            if seed is not None:
                pyro.set_rng_seed(int(seed))
            try:
                values = one(n, discrete=discrete)
                return {s: v.detach().reshape((n,) + shape_of(s)) for s, v in values.items()}
            except (RuntimeError, ValueError, AssertionError, NotImplementedError) as e:
                if n > 1:
                    warnings.warn(f"posterior draws: the model does not broadcast over a batch of draws "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); drawing one at a time, "
                                  "which is slow. Index by latents with ppl.Vindex and let plates broadcast",
                                  UserWarning, stacklevel=3)
                draws = [one(1, vectorized=False, discrete=discrete) for _ in range(n)]
                return {s: torch.stack([d[s].detach().reshape(shape_of(s)) for d in draws]) for s in draws[0]}

    return sampler
