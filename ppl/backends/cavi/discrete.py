"""CAVI over discrete latents by their factor tables: a site's optimal ``ln q_j*`` is, factor
by factor, the expectation of the factor's log table over the other variables of its scope
under their current q (eq. 19.56, a contraction), and the ELBO (eq. 19.30) is exact; with
``learn_params`` each sweep is followed by an M-step on the same ELBO (variational EM)."""

from __future__ import annotations

import math
import string
import time

import torch

from ...compiler import families
from ...compiler.parametric import parametric_tables
from ...compiler.tables import enumeration_dims, log_factor_tables
from ...posterior import MeanFieldPosterior
from ...errors import DataError, OptionError
from ...ops.contract import LogFactor
from ..common.discrete import batch_layout
from ..common.distributed import NO_SHARD
from ..common.params import current_params, param_constraint, store_params
from ..common.pointopt import maximise_params, param_block
from ..common.runtime import seeded_generator
from .loop import coordinate_ascent

__all__ = ["MeanFieldTables", "ParamStep", "damped", "run_discrete", "INITS"]

#: ``init=`` names.
INITS = ("random", "uniform")


def _floor(dtype) -> float:
    """The finite stand-in for ``log 0`` in CAVI's tables (nats)."""
    return -1e250 if dtype == torch.float64 else -1e30


class MeanFieldTables:
    """Factor tables, their einsum layouts, and the two computations: a site's optimal
    ``ln q_j*`` and the ELBO.  ``q`` maps site -> log probabilities, shape (sizes of the
    site's plates, in plate order) + (K,); ``shard``: the ELBO summed over ranks (distributed)."""

    def __init__(self, graph, sites, tables, dtype, device, shard=NO_SHARD):
        self.graph, self.shard = graph, shard
        self.sites = sites
        self.dtype, self.device = dtype, device
        self._probs = []  # (log q tensor, its exp), most recent first
        self.cards = {v: graph.variables[v].cardinality for v in sites}
        self.var_plates = {v: tuple(p for p in graph.plate_order if p in graph.variables[v].plates) for v in sites}
        letters = iter(string.ascii_letters)
        self.letter = {("plate", p): next(letters) for p in graph.plate_order}
        for v in sites:
            self.letter[("var", v)] = next(letters)
        self.by_site = {v: [] for v in sites}
        self.factors = self.layout(tables)
        for i, (_, _, _, vars_) in enumerate(self.factors):
            for v in vars_:
                self.by_site[v].append(i)

    def probs(self, logq: torch.Tensor) -> torch.Tensor:
        """``exp`` of a factor's log probabilities, kept for the last few tensors asked (a
        sweep and its ELBO ask for the same factor several times)."""
        for t, p in self._probs:
            if t is logq:
                return p
        p = logq.exp()
        self._probs = [(logq, p)] + self._probs[:2 * max(1, len(self.sites))]
        return p

    def layout(self, tables) -> list:
        """``(name, table, plates, vars)`` per factor; ``log 0`` replaced by a very negative
        finite stand-in, so that ``-inf`` times ``q = 0`` counts as 0 (0 · log 0 = 0)."""
        return [(name, f.table.clamp_min(_floor(self.dtype)), tuple(f.plates), tuple(f.vars))
                for name, f in tables.items()]

    def _subs(self, plates, vars_) -> str:
        return "".join(self.letter[("plate", p)] for p in plates) + "".join(self.letter[("var", v)] for v in vars_)

    def optimum(self, v, q) -> torch.Tensor:
        """``ln q_v*``: Σ over v's factors of E_{q of the others}[ln f], normalised (eq. 19.56)."""
        total = torch.zeros(tuple(self.graph.plates[p].size for p in self.var_plates[v]) + (self.cards[v],),
                            dtype=self.dtype, device=self.device)
        for i in self.by_site[v]:
            _, table, plates, vars_ = self.factors[i]
            others = [u for u in vars_ if u != v]
            operands = [table] + [self.probs(q[u]) for u in others]
            subs = [self._subs(plates, vars_)] + [self._subs(self.var_plates[u], (u,)) for u in others]
            out = self._subs(self.var_plates[v], (v,))
            total = total + torch.einsum(",".join(subs) + "->" + out, *operands)
        return total - torch.logsumexp(total, -1, keepdim=True)

    def elbo(self, q) -> float:
        """``Σ_f E_q[ln f] + Σ_j H(q_j)`` in nats (eq. 19.30)."""
        total = self.expected_log_joint(q, self.factors)
        for v in self.sites:
            p = self.probs(q[v])
            total = total - torch.where(p > 0, p * q[v], torch.zeros_like(p)).sum()
        return self.shard.total(total)

    def expected_log_joint(self, q, factors) -> torch.Tensor:
        """``Σ_f E_q[ln f]`` over ``factors`` (a :meth:`layout`), differentiable in the tables."""
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for _, table, plates, vars_ in factors:
            if not vars_:
                total = total + table.sum()
                continue
            operands = [table] + [self.probs(q[u]) for u in vars_]
            subs = [self._subs(plates, vars_)] + [self._subs(self.var_plates[u], (u,)) for u in vars_]
            total = total + torch.einsum(",".join(subs) + "->", *operands)
        return total

    def initial(self, init, seed) -> dict:
        shapes = {v: tuple(self.graph.plates[p].size for p in self.var_plates[v]) + (self.cards[v],)
                  for v in self.sites}
        if isinstance(init, dict):
            unknown = [k for k in init if k not in shapes]
            if unknown:
                raise OptionError(f"init names {unknown}, which are not discrete latent sites; those are {self.sites}")
            out = self.initial("uniform", seed)
            for v, p in init.items():
                p = torch.as_tensor(p, dtype=self.dtype, device=self.device)
                if p.numel() != math.prod(shapes[v]):
                    raise OptionError(f"init['{v}'] has shape {tuple(p.shape)}; expected {shapes[v]} (the site's plate "
                                      "sizes and its number of states)")
                p = p.reshape(shapes[v])
                if bool((p < 0).any()) or not torch.allclose(p.sum(-1), torch.ones((), dtype=self.dtype)):
                    raise OptionError(f"init['{v}'] must hold probabilities summing to 1 over the last dim")
                out[v] = p.log()
            return out
        if init == "uniform":
            return {v: torch.full(s, -math.log(s[-1]), dtype=self.dtype, device=self.device) for v, s in shapes.items()}
        if init == "random":
            gen = seeded_generator(seed, self.device)
            out = {}
            for v, s in shapes.items():
                e = -torch.log(self.shard.rand(s, self.var_plates[v], gen, self.dtype, self.device).clamp_min(1e-300))
                out[v] = (e / e.sum(-1, keepdim=True)).log()       # Dirichlet(1): normalised exponentials
            return out
        raise OptionError(f"init must be one of {list(INITS)} or a dict site -> probabilities, got {init!r}")


class ParamStep:
    """Variational EM's M-step: maximise ``E_q[ln p(v, h; θ)]`` over the ``ppl.param`` θ,
    the factor tables rebuilt from θ by one enumerated run per evaluation."""

    def __init__(self, graph, dims, dtype, device):
        names = graph.params()
        if not names:
            raise OptionError(f"learn_params=True but model '{graph.model.name}' has no ppl.param to learn")
        self.graph, self.dims, self.dtype, self.device = graph, dims, dtype, device
        self.constraints = {n: param_constraint(n) for n in names}
        self.values = current_params(graph, names, dtype, device)
        # the tables as functions of θ: gathers of θ rebuilt without a model run (EM's machinery)
        self.pt = parametric_tables(graph, dims, graph.plate_order, self.values, dtype=dtype, device=device)

    def tables(self, values):
        tabs = self.pt.tables(values, grad=True)
        return {n: LogFactor(tabs[n], *self.pt.layouts[n]) for n in self.graph.factors}

    def step(self, mf, q) -> None:
        """One M-step (in place): the new θ, and ``mf``'s tables at it."""
        fixed_q = {v: t.detach() for v, t in q.items()}
        blocks = [param_block(n, v, self.constraints[n]) for n, v in self.values.items()]

        def objective(vals):
            return mf.expected_log_joint(fixed_q, mf.layout(self.tables(vals)))

        maximise_params(objective, blocks, method="cavi", optimizer="lbfgs", max_iter=100, tol=1e-9)
        self.values = {b.name: b.value() for b in blocks}
        with torch.no_grad():
            mf.factors = mf.layout(self.tables(self.values))


def damped(old: torch.Tensor, new: torch.Tensor, damping: float) -> torch.Tensor:
    """``(1 - d) ln q_old + d ln q*``, normalised (a step in natural parameters, §19.4.1)."""
    if damping == 1.0:
        return new
    mixed = (1.0 - damping) * old + damping * new
    return mixed - torch.logsumexp(mixed, -1, keepdim=True)


def run_discrete(method, graph, analysis, o, start):
    """CAVI over the discrete latents' factor tables (options ``o``: validated settings of
    :class:`~ppl.backends.cavi.backend.CAVIBackend`).

    Returns
    -------
    MeanFieldPosterior
        ``marginal(site)`` = ``q_site`` (Categorical / Bernoulli with the site's plate
        batch shape), ``elbo`` (nats, eq. 19.30, exact for this q), ``history`` (ELBO per
        sweep; the first entry is the ELBO of the initial q), ``converged``, ``params``
        (learned θ with ``learn_params``).

    Raises
    ------
    OptionError
        An init table of the wrong shape or not a distribution.
    DataError
        The evidence has probability zero under every q (ELBO = -inf).
    """
    sites = list(analysis.discrete)
    dims = enumeration_dims(graph, analysis.moral)
    tables = o.shard.scale_factors(log_factor_tables(graph, dims, graph.plate_order, dtype=o.dtype, device=o.device))
    mf = MeanFieldTables(graph, sites, tables, o.dtype, o.device, o.shard)
    initial_factors = mf.factors

    def initial(restart):
        mf.factors = initial_factors
        learner = ParamStep(graph, dims, o.dtype, o.device) if o.learn_params else None
        if restart == 0:
            return mf.initial(o.init, o.seed), learner
        return mf.initial("random", None if o.seed is None else o.seed + restart), learner

    def sweep(state):
        q, learner = dict(state[0]), state[1]
        if o.schedule == "sequential":
            for v in sites:
                q[v] = damped(q[v], mf.optimum(v, q), o.damping)
        else:
            q = {v: damped(q[v], mf.optimum(v, q), o.damping) for v in sites}
        if learner is not None:  # M-step on the same ELBO
            learner.step(mf, q)
        return q, learner

    def moved(new, old):
        return o.shard.max(max((float((new[0][v].exp() - old[0][v].exp()).abs().max()) for v in sites), default=0.0))

    result = coordinate_ascent(initial, sweep, lambda s: mf.elbo(s[0]), moved, graph=graph, schedule=o.schedule,
                               damping=o.damping, max_iter=o.max_iter, tol=o.tol, progress=o.progress,
                               n_init=o.n_init, shard=o.shard)
    q, learner = result.state
    if result.history[-1] <= _floor(o.dtype) / 10:  # q weighs log 0 (its stand-in) wherever it goes
        raise DataError(f"the evidence on {graph.observed()} has probability zero under every q CAVI reached on "
                        f"model '{graph.model.name}' (ELBO = -inf)", log_evidence=-math.inf)
    params = {}
    if learner is not None:
        params = learner.values
        store_params(params)
    probs = {v: q[v].exp().reshape(batch_layout(graph, graph.variables[v].plates) + (mf.cards[v],)) for v in sites}
    supports = {v: families.enumerate_values(graph.sites[v].fn).to(o.device) for v in sites}
    diagnostics = {"schedule": o.schedule, "damping": o.damping, "sweeps": result.n_iter, **result.diagnostics(),
                   "device": str(o.device), "path": "discrete tables", **o.shard.diagnostics()}
    return MeanFieldPosterior(method, graph=graph, marginals=probs, supports=supports,
                              families={v: graph.variables[v].family for v in sites}, seed=o.seed,
                              elbo=result.history[-1], history=result.history, params=params,
                              converged=result.converged, elapsed=time.perf_counter() - start,
                              diagnostics=diagnostics)
