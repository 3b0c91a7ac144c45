"""The compiled contraction of a model's discrete latents, shared by every backend that
eliminates discrete latents exactly (exact; the E-step of EM; max-product MAP).

A :class:`DiscretePlan` holds the log-factor tables (one enumerated run of the model),
long chains pre-stacked for the parallel scan, and the elimination order of the
analysis.  It answers:

* :meth:`~DiscretePlan.log_partition` — ``log Σ_h p(h, v)`` (the log evidence) and, by one reverse
  sweep (:func:`ppl.ops.scaled.scaled_gradients`), every latent's marginal:
  ∂ log Z / ∂ log φ_f(x_f) = p(x_f | v), the adjoint trick (Darwiche 2003; Pyro's
  ``compute_marginals``); barren latents are left out of that pass and propagated
  forward;
* :meth:`~DiscretePlan.argmax` — the joint MAP assignment and ``max_h log p(h, v)`` (max-product with
  backtracking: the same engine, the other semiring);
* :meth:`sample` — exact joint posterior samples (backward sampling).
"""

from __future__ import annotations

import copy
import hashlib
from collections import deque
from collections.abc import Mapping

import pyro
import torch

from ...compiler import families
from ...compiler.tables import enumeration_dims, log_factor_tables
from ...ops.contract import ChainFactor, LogFactor, align_table, contract, plan_elimination
from ...ops.scaled import contract_scaled, scaled_gradients, to_scaled, to_scaled_many
from ...ops.scan import to_scaled_chain
from .chainstack import ChainLayout, stack_chain

__all__ = ["DiscretePlan", "Marginals", "batch_layout", "discrete_plan"]


class DiscretePlan:
    """See the module docstring.  Build with :func:`discrete_plan` (cached per graph)."""

    def __init__(self, graph, analysis, dtype=torch.float64, device=None, tables=None):
        self.graph = graph
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.plate_order = graph.plate_order
        self.var_plates = {v: frozenset(graph.variables[v].plates) for v in analysis.discrete}
        self.cards = {v: graph.variables[v].cardinality for v in analysis.discrete}
        self.dims = enumeration_dims(graph, analysis.moral)
        if tables is None:
            tables = log_factor_tables(graph, self.dims, self.plate_order, dtype=dtype, device=self.device)
        chain_members: list[list] = [[] for _ in analysis.chains]
        self.chains = list(analysis.chains)
        self.chain_plates = [tuple(p for p in self.plate_order if p in ch.plates) for ch in self.chains]
        self.chain_position = {v: (c, t) for c, ch in enumerate(self.chains) for t, v in enumerate(ch.vars)}
        interior = {v: ch for ch in self.chains for v in ch.interior}
        self.chain_tables = [None] * len(self.chains)
        chain_parts: list[list] = [[] for _ in self.chains]
        index = {id(ch): i for i, ch in enumerate(self.chains)}
        self.factors: dict[str, LogFactor] = {}
        for name, f in tables.items():
            hit = next((interior[v] for v in f.vars if v in interior), None)
            if hit is None:
                self.factors[name] = f
            else:
                chain_parts[index[id(hit)]].append(f)
                chain_members[index[id(hit)]].append(name)
        self.chain_members = chain_members  # per chain, the names of the factors stacked into it
        self.layouts = {name: (f.plates, f.vars) for name, f in tables.items()}
        self.chain_layouts = [ChainLayout.of(ch, tuple(graph.plates[p].size for p in plates), parts)
                              for ch, plates, parts in zip(self.chains, self.chain_plates, chain_parts)]
        for i, parts in enumerate(chain_parts):
            self.chain_tables[i] = self._stack_chain(i, [f.table for f in parts])
        self.order = list(analysis.order)
        self.plan = self._plan(self.factors.values(), self.order)
        self.supports = {v: families.enumerate_values(graph.sites[v].fn) for v in analysis.discrete}
        self.families = {v: graph.variables[v].family for v in analysis.discrete}
        self._sum_plans: dict = {}
        self._absorptions: dict = {}  # names -> (pairs, alive): shared with with_tables' copies
        self._numeric()

    def _numeric(self) -> None:
        """The parts that depend on the table values: barren latents (their check is
        numeric), absorption, the scaled inputs; caches of taped passes reset."""
        # the sum-product plan leaves barren latents out; their marginals are propagated forward
        self.barren = self._barren_latents()
        pruned = {v for v, _ in self.barren}
        kept = self._absorb([n for n in self.factors if n not in pruned])
        key = (tuple(self.barren), tuple(kept))
        if key not in self._sum_plans:
            self._sum_plans[key] = self._plan(kept.values(), [v for v in self.order if v not in pruned])
        self.sum_plan = self._sum_plans[key]
        self.scaled = dict(zip(kept, to_scaled_many([(f.table, len(f.plates)) for f in kept.values()])))
        self.chain_scaled = [to_scaled_chain(t) for t in self.chain_tables]
        self._sample_tape = None
        self._sources: dict = {}

    def with_tables(self, tables: list, chain_tables: list) -> "DiscretePlan":
        """A plan with the same structure and new tables (log domain): ``tables`` in the
        order of :attr:`factors`, ``chain_tables`` per chain (``plates + (L, K, K)``).
        Only the value-dependent parts are recomputed (EM's posterior at the learned θ)."""
        new = copy.copy(self)
        new.factors = {n: LogFactor(t, f.plates, f.vars) for (n, f), t in zip(self.factors.items(), tables)}
        new.chain_tables = list(chain_tables)
        new._numeric()
        return new

    # ------------------------------------------------------------------ build
    def _plan(self, factors, order):
        """The elimination plan of ``factors`` (LogFactors) plus this plan's chains."""
        inputs = [(f.vars, f.plates, False) for f in factors]
        inputs += [(ch.vars, plates, True) for ch, plates in zip(self.chains, self.chain_plates)]
        return plan_elimination(inputs, order, self.var_plates, self.plate_order, self.cards)

    def _absorb(self, names) -> dict:
        """Multiply each input factor into another whose scope contains its own (same
        plates), once, at plan time: the tables are constants, so the sum-product pass then
        has fewer tables and fewer broadcast products per call.  The absorbing factor keeps
        its variables and order, so every marginal can still be read from the gradient of
        some factor that contains the variable.  Which factor goes into which depends only
        on the scopes: it is found once per set of ``names`` (:meth:`_absorption`) and
        shared by the plans :meth:`with_tables` derives (new evidence, new θ).

        Returns
        -------
        dict[str, LogFactor]
            The factors left, with absorbed tables added in (log domain).
        """
        key = tuple(names)
        if key not in self._absorptions:
            self._absorptions[key] = self._absorption(names)
        pairs, alive = self._absorptions[key]
        tables = {n: self.factors[n] for n in names}
        for s, t in pairs:
            small, big = tables[s], tables[t]
            aligned = align_table(small.table, small.vars, big.vars, self.cards, len(big.plates))
            tables[t] = LogFactor(big.table + aligned, big.plates, big.vars)
        return {n: tables[n] for n in alive}

    def _absorption(self, names) -> tuple:
        """``(pairs, alive)``: the ``(small, target)`` absorptions in the order to apply them,
        and the names of the factors left (see :meth:`_absorb`)."""
        scopes = {n: (self.factors[n].vars, self.factors[n].plates) for n in names}
        holders: dict = {}
        for n, (vars_, _) in scopes.items():
            for v in vars_:
                holders.setdefault(v, []).append(n)
        rank = {n: i for i, n in enumerate(names)}
        alive = dict.fromkeys(names)
        pairs = []
        for s in sorted(names, key=lambda n: (len(scopes[n][0]), rank[n])):
            small_vars, small_plates = scopes[s]
            if not small_vars:
                continue
            scope = set(small_vars)
            target = next((t for t in holders[small_vars[0]] if t != s and t in alive
                           and scope <= set(scopes[t][0]) and scopes[t][1] == small_plates
                           and (len(scopes[t][0]), rank[t]) > (len(small_vars), rank[s])), None)
            if target is None:
                continue
            pairs.append((s, target))
            del alive[s]
        return pairs, list(alive)

    def _barren_latents(self) -> list:
        """Barren latents for the sum-product pass: ``(v, parent or None)`` in forward order.

        A latent ``v`` whose only factor is its own, normalised over ``v`` (checked
        numerically: a scaled or masked site is never pruned), with at most one other
        latent ``u`` in the same plates, contributes ``Σ_v p(v | u) = 1`` to the log
        evidence and nothing to any other marginal; removing it, leaves first, is barren
        node removal (Koller & Friedman 2009, §9.7; what pgmpy does per query).  Its
        marginal is then ``p(v) = Σ_u p(u | e) p(v | u)``, propagated forward.
        """
        users: dict = {}
        for name, f in self.factors.items():
            for v in f.vars:
                users.setdefault(v, set()).add(name)
        pruned: list = []
        gone: set = set()
        queue = deque(self.cards)  # worklist: a variable is re-examined when a child goes
        while queue:
            v = queue.popleft()
            f = self.factors.get(v)
            if v in gone or v in self.chain_position or f is None or v not in f.vars:  # the scan needs chains
                continue
            if users.get(v, set()) - {v} - gone:
                continue  # another live factor still needs v
            parents = [u for u in f.vars if u != v]
            if len(parents) > 1 or (parents and self.var_plates[parents[0]] != self.var_plates[v]):
                continue
            if tuple(f.plates) != tuple(p for p in self.plate_order if p in self.var_plates[v]):
                continue
            axis = len(f.plates) + f.vars.index(v)
            if not bool((torch.logsumexp(f.table, dim=axis).abs() < 1e-9).all()):
                continue  # not a normalised conditional of v
            pruned.append((v, parents[0] if parents else None))
            gone.add(v)
            queue.extend(parents)
        return pruned[::-1]

    def log_z(self, tables: dict) -> torch.Tensor:
        """``log Σ_h Π_f φ_f`` of factor log tables ``tables`` (name -> tensor, each in the
        layout this plan was built with), by the log-domain executor over this plan's
        structure; differentiable in the tables (no pruning, no shortcuts): the marginal
        density of continuous values that the tables were computed at, with the discrete
        latents summed out exactly."""
        factors = [LogFactor(tables[n], f.plates, f.vars) for n, f in self.factors.items()]
        chains = self._chain_stacks(tables)
        log_z, _ = contract(factors + self._chain_factors(chains), order=self.order, var_plates=self.var_plates,
                            plate_order=self.plate_order, plan=self.plan)
        return log_z

    def _chain_stacks(self, tables: dict) -> list:
        """Per chain, its stacked ``plates + (L, K, K)`` log table from factor log tables
        (rows of ParametricTables' group tensors taken together, see ``TableMap.rows``)."""
        rows = getattr(tables, "rows", None) or None
        stacks = tables.stacks if rows else None
        return [self._stack_chain(c, [tables[n] for n in members],
                                  None if rows is None else [rows.get(n) for n in members], stacks)
                for c, members in enumerate(self.chain_members)]

    def at_tables(self, tables: dict) -> "DiscretePlan":
        """:meth:`with_tables` from factor log tables by name (each in this plan's layout),
        e.g. the tables at one draw of the continuous latents."""
        return self.with_tables([tables[n] for n in self.factors], self._chain_stacks(tables))

    def _stack_chain(self, c: int, tables: list, rows: list | None = None,
                     stacks: list | None = None) -> torch.Tensor:
        """Chain ``c``'s stacked ``plates + (L, K, K)`` log table
        (:func:`~ppl.backends.common.chainstack.stack_chain`)."""
        return stack_chain(self.chain_layouts[c], tables, rows, stacks, dtype=self.dtype, device=self.device)

    # ---------------------------------------------------------------- queries
    def _factor_list(self):
        return list(self.factors.values()) + self._chain_factors(self.chain_tables)

    def _chain_factors(self, tables):
        return [ChainFactor(t, plates, ch.vars) for t, plates, ch in zip(tables, self.chain_plates, self.chains)]

    def log_partition(self, marginals: bool = True):
        """Log evidence and (optionally) every discrete latent's posterior marginal.

        Runs the plan with the scaled probability-domain executor
        (:mod:`ppl.ops.scaled`); marginals come from its reverse sweep:
        ``p(x_f | v) = φ_f(x_f) · ∂ log Z / ∂ φ_f(x_f)``.  If an intermediate
        underflows entirely there (factors disagreeing by more than ~745 nats), the
        log-domain executor is run instead, which is exact over the float64 range.

        Returns
        -------
        log_z : torch.Tensor, scalar
            ``log p(v)`` in nats (``-inf`` if the evidence is impossible).
        marginals : Marginals or None
            Site -> probabilities with the site's plate batch shape + ``(K,)``.
        """
        chain_leaves = [p.detach().requires_grad_(marginals) for p, _ in self.chain_scaled]
        inputs = list(self.scaled.values()) + [(p, s) for p, (_, s) in zip(chain_leaves, self.chain_scaled)]
        names = list(self.scaled)
        if marginals:
            log_z, grads = scaled_gradients(self.sum_plan, inputs)
        else:
            with torch.no_grad():
                log_z, grads = contract_scaled(self.sum_plan, inputs), None
        scaled = True
        if not torch.isfinite(log_z):  # underflow, or truly impossible evidence
            names = list(self.factors)
            log_z, grads = self._log_domain([f.table for f in self.factors.values()], self.chain_tables, marginals)
            scaled = False
        if not marginals or grads is None or not torch.isfinite(log_z):
            return log_z.detach(), None
        # factor marginals: φ·∂logZ/∂φ in the probability domain, ∂logZ/∂logφ in the log domain
        g_f = {n: (None if g is None else (g * self.scaled[n][0] if scaled else g))
               for n, g in zip(names, grads[: len(names)])}
        g_c = grads[len(names):]
        blocks = []  # per chain: marginals of all its variables, (..., L + 1, K)
        for table, (probs, _), g in zip(self.chain_tables, self.chain_scaled, g_c):
            g = torch.zeros_like(table) if g is None else (g * probs if scaled else g)
            blocks.append(torch.cat([g[..., :1, :, :].sum(-1), g.sum(-2)], dim=-2))
        out = {}
        barren = {v for v, _ in self.barren} if scaled else set()
        available = tuple(n for n, g in g_f.items() if g is not None)
        for v, (name, sum_dims, drop) in self._marginal_sources(available).items():
            if v in barren:
                continue
            m = g_f[name].sum(dim=sum_dims) if sum_dims else g_f[name]
            for i in drop:  # copies of a factor beyond v's plates all hold the same marginal
                m = m.select(i, 0)
            out[v] = m
        if scaled:
            self._propagate_barren(out, blocks)
        return log_z.detach(), Marginals(self, out, blocks)

    def factor_posteriors(self, tables: list, chain_tables: list):
        """Log evidence and the posterior marginal of every factor's scope, for new tables
        with this plan's structure (the E-step of EM).

        Runs the full plan (no barren pruning or absorption, so every input's adjoint is
        its factor's marginal): ``p(x_f | v) = φ_f ∂ log Z / ∂ φ_f``.

        Parameters
        ----------
        tables : list[torch.Tensor]
            Log tables of the factors outside chains, in the order of :attr:`factors`.
        chain_tables : list[torch.Tensor]
            Per chain, the stacked ``plates + (L, K, K)`` log table (see :meth:`_stack_chain`).

        Returns
        -------
        log_z : torch.Tensor, scalar
        factor_marginals : list[torch.Tensor] or None
            Same shapes as ``tables`` (each sums to 1 over its variables per plate copy).
        chain_marginals : list[torch.Tensor] or None
            Per chain, ``p(x_t, x_{t+1} | v)`` of shape ``plates + (L, K, K)``.
            ``None`` for both when the evidence is impossible (``log_z = -inf``).
        """
        metas = list(self.factors.values())
        mixture = self._mixture_var()
        if mixture is not None and not chain_tables:
            return self._mixture_posteriors(mixture, tables, metas)
        scaled = [to_scaled(t, len(f.plates)) for t, f in zip(tables, metas)]
        chains = [to_scaled_chain(t) for t in chain_tables]
        leaves = [p.detach().requires_grad_(True) for p, _ in chains]
        log_z, grads = scaled_gradients(self.plan, scaled + [(p, s) for p, (_, s) in zip(leaves, chains)])
        n = len(tables)
        if torch.isfinite(log_z):
            fm = [torch.zeros_like(t) if g is None else g * p for g, (p, _), t in zip(grads[:n], scaled, tables)]
            cm = [torch.zeros_like(t) if g is None else g * p for g, (p, _), t in zip(grads[n:], chains, chain_tables)]
            return log_z.detach(), fm, cm
        # underflow in the probability domain (or impossible evidence): log domain
        log_z, grads = self._log_domain(tables, chain_tables, True)
        if grads is None:
            return log_z, None, None
        out = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, list(tables) + list(chain_tables))]
        return log_z, out[:n], out[n:]

    def _log_domain(self, tables: list, chain_tables: list, grad: bool):
        """``log Z`` of the full plan by the log-domain executor (exact over the float64
        range) for log tables in the order of :attr:`factors` and per chain; with ``grad``,
        also ``∂ log Z / ∂ log φ`` of every input (the factor marginals), else ``None``."""
        with torch.set_grad_enabled(grad):
            leaves = [t.detach().requires_grad_(grad) for t in tables]
            cleaves = [t.detach().requires_grad_(grad) for t in chain_tables]
            factors = [LogFactor(t, f.plates, f.vars) for t, f in zip(leaves, self.factors.values())]
            log_z, _ = contract(factors + self._chain_factors(cleaves), order=self.order,
                                var_plates=self.var_plates, plate_order=self.plate_order, plan=self.plan)
            grads = None
            if grad and torch.isfinite(log_z) and log_z.requires_grad:
                grads = torch.autograd.grad(log_z, leaves + cleaves, allow_unused=True)
        return log_z.detach(), grads

    def _mixture_var(self):
        """The latent ``v`` when this is a mixture: one discrete latent, no chains, and
        every factor over exactly ``v``'s plates (the GMM / HMM-free case), else None.
        Its posterior is then a softmax per plate copy, done directly."""
        if len(self.cards) != 1 or self.chains:
            return None
        (v,) = self.cards
        plates = tuple(p for p in self.plate_order if p in self.var_plates[v])
        if all(tuple(f.plates) == plates and tuple(f.vars) in ((v,), ()) for f in self.factors.values()):
            return v
        return None

    def _mixture_posteriors(self, v, tables, metas):
        """:meth:`factor_posteriors` of a mixture: ``log Z = Σ_n logsumexp_k Σ_f φ_f``,
        responsibilities ``softmax_k`` (Bishop 2006, eq. 9.23)."""
        total = None
        for t, f in zip(tables, metas):
            t = t if f.vars else t.unsqueeze(-1)
            total = t if total is None else total + t
        lse = torch.logsumexp(total, dim=-1, keepdim=True)
        log_z = lse.sum()
        if not torch.isfinite(log_z):
            return log_z, None, None
        resp = (total - lse).exp()
        ones = None
        out = []
        for t, f in zip(tables, metas):
            if f.vars:
                out.append(resp)
            else:
                ones = torch.ones_like(t) if ones is None else ones
                out.append(ones)
        return log_z, out, []

    def _propagate_barren(self, out: dict, blocks: list) -> None:
        """Marginals of the pruned barren latents: ``p(v) = Σ_u p(u | e) p(v | u)``, in
        forward order (a parent's marginal is known before its child's)."""
        for v, u in self.barren:
            f = self.factors[v]
            probs = f.table.exp()
            if u is None:
                out[v] = probs
                continue
            if f.vars.index(u) > f.vars.index(v):
                probs = probs.transpose(-1, -2)
            if u in out:
                parent = out[u]
            else:
                c, t = self.chain_position[u]
                parent = blocks[c][..., t, :]
            out[v] = torch.matmul(parent.unsqueeze(-2), probs).squeeze(-2)

    def _marginal_sources(self, available: tuple) -> dict:
        """For every latent outside chains: the factor (among ``available``) whose marginal
        gives its own, the variable dims to sum out and the extra plate dims to drop.
        Static per plan and per set of factors, so computed once."""
        cached = self._sources.get(available)
        if cached is not None:
            return cached
        names = set(available)
        holders: dict = {}
        for n in available:
            for v in self.factors[n].vars:
                holders.setdefault(v, n)
        sources = {}
        for v in self.cards:
            if v in self.chain_position:
                continue
            name = v if v in names and v in self.factors[v].vars else holders.get(v)
            if name is None:
                continue  # a pruned barren latent: propagated forward instead
            f = self.factors[name]
            n = len(f.plates)
            axis = n + f.vars.index(v)
            sum_dims = tuple(i for i in range(n, n + len(f.vars)) if i != axis)
            drop = tuple(sorted((i for i, p in enumerate(f.plates) if p not in self.var_plates[v]), reverse=True))
            sources[v] = (name, sum_dims, drop)
        self._sources[available] = sources
        return sources

    def argmax(self):
        """Joint MAP assignment by max-product with backtracking.

        Returns
        -------
        max_log_joint : torch.Tensor, scalar
            ``max_h log p(h, v)``.
        values : dict[str, torch.LongTensor]
            Site -> state indices, shape ``(1,) + global plate layout``.
        """
        with torch.no_grad():
            best, tape = contract(self._factor_list(), order=self.order, var_plates=self.var_plates,
                                  plate_order=self.plate_order, semiring="max", tape=True, plan=self.plan)
            return best, tape.backtrace(1)

    def sample(self, num_samples: int, generator=None) -> dict:
        """``num_samples`` exact joint samples: site -> indices ``(S,) + global plate layout``.

        The taped sum-product pass is run once and kept; later calls only backtrace."""
        with torch.no_grad():
            if self._sample_tape is None:
                _, self._sample_tape = contract(self._factor_list(), order=self.order, var_plates=self.var_plates,
                                                plate_order=self.plate_order, semiring="sum", tape=True, plan=self.plan)
            return self._sample_tape.backtrace(num_samples, generator)

    # ------------------------------------------------------------- layouts
    def batch_layout(self, v) -> tuple:
        """The site's plate batch shape: plate sizes at their dims, 1 elsewhere."""
        return batch_layout(self.graph, self.var_plates[v])

    def to_batch(self, v, x: torch.Tensor, lead: int, plate_dims: int) -> torch.Tensor:
        """Reshape ``x`` of shape ``lead dims + plate_dims dims + tail`` to ``lead dims +
        batch_layout(v) + tail``.  The plate dims are either the variable's plates in plate
        order or the global layout (size 1 for plates the variable is not in): both
        reshape the same way because plate order follows tensor dims."""
        tail = x.shape[lead + plate_dims:]
        return x.reshape(tuple(x.shape[:lead]) + self.batch_layout(v) + tuple(tail))

    def values(self, v, idx: torch.Tensor, lead: int) -> torch.Tensor:
        """Support values of ``v`` at state indices ``idx`` (lead dims + global plate layout)."""
        support = self.supports[v].to(self.device)
        if support.is_floating_point():  # in the requested precision (a float32 support from Python constants)
            support = support.to(self.dtype)
        vals = support[idx.reshape(-1)].reshape(tuple(idx.shape) + tuple(support.shape[1:]))
        return self.to_batch(v, vals, lead, len(self.plate_order))


def batch_layout(graph, plates) -> tuple:
    """The batch shape of a site in ``plates`` (names): plate sizes at their dims, 1 elsewhere."""
    infos = [graph.plates[p] for p in graph.plate_order if p in plates]
    if not infos:
        return ()
    width = max(-p.dim for p in infos)
    shape = [1] * width
    for p in infos:
        shape[width + p.dim] = p.size
    return tuple(shape)


class Marginals(Mapping):
    """Site -> exact marginal probabilities (shape ``batch_shape + (K,)``), resolved on
    access: variables of a chain are slices of one tensor per chain, so a 100 000-step
    chain costs no per-variable work until a marginal is asked for."""

    def __init__(self, plan: DiscretePlan, direct: dict, blocks: list):
        self._plan = plan
        self._direct = direct
        self._blocks = blocks

    def __getitem__(self, v):
        done = self.__dict__.setdefault("_done", {})  # each site laid out once
        if v in done:
            return done[v]
        plan = self._plan
        if v in self._direct:
            out = plan.to_batch(v, self._direct[v], 0, len(plan.var_plates[v]))
        else:
            c, t = plan.chain_position[v]  # KeyError for unknown sites, as a dict
            out = plan.to_batch(v, self._blocks[c][..., t, :], 0, len(plan.var_plates[v]))
        done[v] = out
        return out

    def __iter__(self):
        return iter(self._plan.cards)

    def __len__(self):
        return len(self._plan.cards)

    def __contains__(self, v):
        return v in self._plan.cards


def _param_state(graph) -> tuple:
    """A digest of the value of every ``ppl.param`` the graph reads, so a plan built from
    other param values is not reused (values, not tensor identities: each call's private
    param store holds new tensors, and a freed tensor's id can be reused)."""
    store = dict(pyro.get_param_store().named_parameters())

    def digest(t):
        if t is None:
            return None
        raw = t.detach().cpu().reshape(-1).contiguous().view(torch.uint8)
        return (str(t.dtype), tuple(t.shape), hashlib.blake2b(raw.numpy().tobytes(), digest_size=16).hexdigest())

    return tuple((n, digest(store.get(n))) for n in graph.params())


def discrete_plan(graph, analysis, dtype=torch.float64, device=None) -> DiscretePlan:
    """The :class:`DiscretePlan` of ``graph``, built once per precision, device, ordering
    heuristic (orders are deterministic) and state of the ``ppl.param`` values, and
    memoised on the graph."""
    key = (dtype, str(device or "cpu"), analysis.heuristic, _param_state(graph))
    return graph.memo("discrete_plan", key, lambda: _rebound_plan(graph, analysis, dtype, device)
                      or DiscretePlan(graph, analysis, dtype=dtype, device=device))


def _rebound_plan(graph, analysis, dtype, device) -> DiscretePlan | None:
    """For a graph :mod:`ppl.prepared` rebound to new evidence: the plan of the graph it
    was rebound from, with tables reduced at the new evidence (no trace, no planning);
    ``None`` when the graph was compiled afresh or its model cannot be clamped."""
    prepared = graph.rebound
    if prepared is None:
        return None
    base = discrete_plan(prepared.graph, analysis, dtype=dtype, device=device)
    if graph.bound is prepared.graph.bound:  # the very call again (Prepared.again)
        return base
    tables = prepared.clamped_tables(graph, base.layouts, dtype, base.device)
    if tables is None:
        return None
    plan = base.at_tables(tables)
    plan.graph = graph
    return plan
