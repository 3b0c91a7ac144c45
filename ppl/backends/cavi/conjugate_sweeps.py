"""The sweeps of CAVI's conjugate path (:mod:`ppl.backends.cavi.conjugate`): discrete
factors from expected tables, continuous factors from natural parameters
``η_j* = ∂ E_q[ln p] / ∂ M_j`` (Autoconj: Hoffman, Johnson & Tran 2018; Goodfellow et
al. 2016, eq. 19.56) computed through sigma-point tables, and, with ``learn_params``, an
M-step after each sweep (variational EM, §19.2: both steps raise the same ELBO)."""

from __future__ import annotations

import time

import torch

from ...compiler.families import enumerate_values
from ...errors import NumericalError, OptionError
from ...posterior import FactorPosterior
from ..common.discrete import batch_layout
from ..common.params import current_params, param_constraint, store_params
from ..common.pointopt import maximise_params, param_block
from ..common.runtime import run_context
from .conjugate import ConjugateModel, find_blocks
from .discrete import MeanFieldTables, damped
from .loop import coordinate_ascent

__all__ = ["ConjugateSweeps", "run_conjugate"]


class ConjugateSweeps:
    """The state ``{"d": discrete log q per site, "c": tuple of continuous factors}`` and
    the functions of the coordinate-ascent loop on it: :meth:`elbo`, :meth:`sweep`,
    :meth:`moved`.  The expected tables at the last continuous q are kept
    (:meth:`tables`): the ELBO of a sweep's result, the next sweep's discrete step and its
    gradients all use them."""

    def __init__(self, graph, moral, o):
        self.graph, self.o = graph, o
        self.blocks = find_blocks(graph, graph.continuous_latent())
        theta = current_params(graph, graph.params(), o.dtype, o.device) if o.learn_params else {}
        if o.learn_params and not theta:
            raise OptionError(f"learn_params=True but model '{graph.model.name}' has no ppl.param to learn")
        self.cm = ConjugateModel(graph, moral, self.blocks, o.dtype, o.device, params=theta, shard=o.shard)
        self.theta0 = dict(theta)
        self.constraints = {n: param_constraint(n) for n in theta}
        qc = self.cm.initial(o.init)
        self.disc = graph.discrete_latent()
        self.cm.fit_affine(qc)
        self.mf = MeanFieldTables(graph, self.disc, self.cm.factor_tables(qc, names=self.cm.varying), o.dtype,
                                  o.device, o.shard)
        self.factor_sets = [self.cm.factors_of(i, varying=True) for i in range(len(self.blocks))]
        self.cache: dict = {}

    def initial(self, restart: int) -> dict:
        """Restart ``restart``'s starting q (discrete factors from ``init``, or fresh random
        draws after the first; the params reset to their starting values)."""
        o = self.o
        self.cm.theta = dict(self.theta0)
        self.cache.clear()
        qc = self.cm.initial(o.init)
        init = {k: v for k, v in o.init.items() if k in self.disc} if isinstance(o.init, dict) else o.init
        seed = o.seed
        if restart > 0:
            init, seed = "random", (None if o.seed is None else o.seed + restart)
        return {"d": self.mf.initial(init, seed), "c": tuple(qc), "theta": dict(self.theta0)}

    def tables(self, qc):
        """Expected tables at the continuous factors ``qc``, differentiable in every block's
        mean parameters; the last set is kept (``E`` is affine in each block's mean
        parameters, so the gradient at these tables is the gradient at any later q of the
        other blocks that share no factor with it)."""
        cache, blocks = self.cache, self.blocks
        key = tuple(id(t) for q in qc for t in q)
        if cache.get("key") != key:
            leaves = {i: tuple(t.detach().clone().requires_grad_(True) for t in b.rule.mean(q))
                      for i, (b, q) in enumerate(zip(blocks, qc))}
            with torch.enable_grad():
                layout = self.mf.layout(self.cm.factor_tables(qc, names=self.cm.varying, leaves=leaves))
            cache.update(key=key, layout=layout, qc=tuple(qc), leaves=leaves)
        return cache["layout"]

    def elbo(self, state) -> float:
        """``E_q[ln p] + H[q]`` in nats (eq. 19.30)."""
        layout = self.tables(state["c"])
        mf = self.mf
        with torch.no_grad():
            total = mf.expected_log_joint(state["d"], layout)
            for v in self.disc:
                p = mf.probs(state["d"][v])
                total = total - torch.where(p > 0, p * state["d"][v], torch.zeros_like(p)).sum()
            total = total + self.cm.affine_value(state["c"])
            total = total + sum(b.rule.entropy(q) * self.o.shard.share(b.sites[0])   # a global block's: 1 / W
                                for b, q in zip(self.blocks, state["c"]))
        return self.o.shard.total(total)

    def gradient(self, qd_now, qc_now, i):
        """``∂ E_q[ln p] / ∂ M_i`` at ``(qd_now, qc_now)``: the affine factors' constant part
        plus the others', from the kept tables when no block updated since shares a factor
        with block ``i``, else from new ones."""
        grads, leaves = self.varying_gradient(qd_now, qc_now, i)
        grads = tuple(torch.zeros_like(l) if g is None else g for g, l in zip(grads, leaves))
        fixed = self.cm.affine_gradient(i)      # distributed: a global block's sums over the data add over ranks
        return self.o.shard.reduce_block(self.blocks[i].sites[0], grads if fixed is None else
                                         tuple(a + b for a, b in zip(grads, fixed))), leaves

    def cached_gradients(self, qd_now):
        """Every block's gradient at the kept tables and ``qd_now``, by one backward pass
        through ``E`` over all varying factors (a factor adds nothing to the gradient of a
        block it does not depend on)."""
        cache = self.cache
        key = (cache["key"], id(qd_now))
        if cache.get("grads_key") != key:
            order = [i for i in range(len(self.blocks)) if self.factor_sets[i]]
            names = set().union(*(self.factor_sets[i] for i in order))
            leaves = [t for i in order for t in cache["leaves"][i]]
            with torch.enable_grad():
                e = self.mf.expected_log_joint(qd_now, [f for f in cache["layout"] if f[0] in names])
                flat = torch.autograd.grad(e, leaves, allow_unused=True, retain_graph=True)
            grads, k = {}, 0
            for i in order:
                n = len(cache["leaves"][i])
                grads[i] = flat[k:k + n]
                k += n
            cache.update(grads_key=key, grads=grads, grads_qd=qd_now)
        return cache["grads"]

    def varying_gradient(self, qd_now, qc_now, i):
        """Block ``i``'s gradient from its non-affine factors, and the leaves it is taken at."""
        cache, sets = self.cache, self.factor_sets
        if not sets[i]:
            leaves = self.blocks[i].rule.mean(qc_now[i])
            return tuple(None for _ in leaves), leaves
        if "qc" in cache:
            changed = [j for j, (a, b) in enumerate(zip(qc_now, cache["qc"])) if a is not b]
            if all(sets[j].isdisjoint(sets[i]) for j in changed):
                return self.cached_gradients(qd_now)[i], cache["leaves"][i]
        leaves = tuple(t.detach().clone().requires_grad_(True) for t in self.blocks[i].rule.mean(qc_now[i]))
        with torch.enable_grad():
            tabs = self.cm.factor_tables(qc_now, names=sets[i], leaves={i: leaves})
            e = self.mf.expected_log_joint(qd_now, self.mf.layout(tabs))
            return torch.autograd.grad(e, leaves, allow_unused=True), leaves

    def optimum(self, qd_now, qc_now, i):
        """Block ``i``'s new factor: a damped step to ``η_i*`` in natural parameters.

        Raises
        ------
        NumericalError
            Improper natural parameters (the expected log joint does not curve down in the
            block under q: a non-conjugate factor, or a log joint unbounded in it)."""
        b, damping = self.blocks[i], self.o.damping
        eta, _ = self.gradient(qd_now, qc_now, i)
        old = b.rule.natural(qc_now[i])
        eta = tuple((1.0 - damping) * o + damping * n for o, n in zip(old, eta))
        new = b.rule.from_natural(eta)
        if new is None:
            site = " and ".join(f"'{s}'" for s in b.sites)
            raise NumericalError(f"CAVI: the update of latent {site} ({b.rule.name}) has improper natural parameters "
                                 "(a negative precision or shape): the expected log joint under q, on its sigma "
                                 "points, does not curve down in it as a conjugate factor's would; the model is "
                                 "probably not conjugate in it (a probit or logistic link, a nonlinear mean) or "
                                 "its log joint is unbounded there; try method='laplace' or 'nuts'")
        return tuple(t.detach() for t in new)

    def sweep(self, state) -> dict:
        """One sweep: sequential (continuous factors first, from the given discrete q, then
        the discrete ones) or parallel (everything from the old q)."""
        qd_old, qc_old = state["d"], state["c"]
        mf, damping, disc, n = self.mf, self.o.damping, self.disc, len(self.blocks)
        mf.factors = self.tables(qc_old)  # the parallel schedule's discrete step uses the old tables
        if self.o.schedule == "sequential":
            qc_new = list(qc_old)
            for i in range(n):
                qc_new[i] = self.optimum(qd_old, qc_new, i)
            qd_new = dict(qd_old)
            if disc:
                mf.factors = self.tables(qc_new)
                with torch.no_grad():
                    for v in disc:
                        qd_new[v] = damped(qd_new[v], mf.optimum(v, qd_new), damping)
        else:
            with torch.no_grad():
                qd_new = {v: damped(qd_old[v], mf.optimum(v, qd_old), damping) for v in disc}
            qc_new = [self.optimum(qd_old, qc_old, i) for i in range(n)]
        new = {"d": qd_new, "c": tuple(qc_new), "theta": state["theta"]}
        if self.o.learn_params:
            self.m_step(new)
            new["theta"] = dict(self.cm.theta)
        return new

    def m_step(self, state) -> None:
        """θ ← argmax E_q[ln p(v, h; θ)] at the new q (L-BFGS in unconstrained space)."""
        cm, mf = self.cm, self.mf
        pblocks = [param_block(n, v, self.constraints[n]) for n, v in cm.theta.items()]

        def objective(vals):
            cm.theta = vals
            return mf.expected_log_joint(state["d"], mf.layout(cm.factor_tables(state["c"], names=cm.varying)))

        with torch.enable_grad():
            maximise_params(objective, pblocks, method="cavi", optimizer="lbfgs", max_iter=100, tol=1e-10)
        cm.theta = {b.name: b.value().detach() for b in pblocks}
        self.cache.clear()                                   # the kept tables were at the old θ

    def moved(self, new, old) -> float:
        """The largest change of a factor between two states (relative)."""
        changes = [b.rule.moved(a, c) for b, a, c in zip(self.blocks, new["c"], old["c"])]
        changes += [float((new["d"][v].exp() - old["d"][v].exp()).abs().max()) for v in self.disc]
        return self.o.shard.max(max(changes, default=0.0))


def run_conjugate(method, graph, moral, o, start):
    """CAVI sweeps over the discrete factors (expected tables) and the continuous factors
    (sigma-point natural parameters); with ``o.learn_params`` each sweep is followed by an
    M-step maximising ``E_q[ln p(v, h; θ)]`` over the ``ppl.param`` θ.  ``o`` holds the
    validated options of :class:`~ppl.backends.cavi.backend.CAVIBackend`.

    Returns
    -------
    FactorPosterior
        Continuous factors as torch distributions with the sites' plate batch shapes (a
        Normal-Wishart mean as its Student-t marginal), discrete factors as tables
        ``batch_shape + (K,)``; ``elbo`` in nats, ``history``, ``params`` (learned θ).

    Raises
    ------
    OptionError
        ``learn_params=True`` on a model without ``ppl.param``.
    NumericalError
        An update with improper natural parameters (a log joint unbounded under q), or
        diverging parallel sweeps.
    """
    run = ConjugateSweeps(graph, moral, o)
    with run_context(o.device, o.dtype, None):
        result = coordinate_ascent(run.initial, run.sweep, run.elbo, run.moved, graph=graph, schedule=o.schedule,
                                   damping=o.damping, max_iter=o.max_iter, tol=o.tol, progress=o.progress,
                                   n_init=o.n_init, shard=o.shard)
    state = result.state
    factors, joint = {}, {}
    for b, q in zip(run.blocks, state["c"]):
        factors.update(zip(b.sites, b.rule.distributions(q)))
        if b.rule.n_sites > 1:
            joint[b.sites] = (lambda rule, q: lambda n: rule.sample(q, n))(b.rule, q)
    disc = run.disc
    probs = {v: state["d"][v].exp().reshape(batch_layout(graph, graph.variables[v].plates) + (run.mf.cards[v],))
             for v in disc}
    supports = {v: enumerate_values(graph.sites[v].fn).to(o.device) for v in disc}
    diagnostics = {"schedule": o.schedule, "damping": o.damping, "sweeps": result.n_iter, **result.diagnostics(),
                   "path": "sigma points", "device": str(o.device), **o.shard.diagnostics(),
                   "factors": {" & ".join(b.sites): b.rule.name for b in run.blocks}}
    if o.learn_params:
        store_params(state["theta"])
    return FactorPosterior(method, graph=graph, factors=factors, marginals=probs, supports=supports,
                           families={v: graph.variables[v].family for v in disc}, joint=joint, params=state["theta"],
                           elbo=result.history[-1], history=result.history, converged=result.converged,
                           elapsed=time.perf_counter() - start, diagnostics=diagnostics)
