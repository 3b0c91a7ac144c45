"""CAVI for conjugate-exponential models, continuous or mixed with discrete latents.

In a conjugate-exponential model the log joint is *multilinear* in the sufficient
statistics ``T_j(h_j)`` of the latents (Bishop 2006, §10.4): linear in each factor's
statistics when the others are fixed.  Under a mean field

* ``E_q[ln p(v, h)]`` is an affine function of each factor's mean parameters
  ``M_j = E_q[T_j]``, and
* the optimal factor is in its own family with natural parameters
  ``η_j* = ∂ E_q[ln p] / ∂ M_j`` (the rule of Autoconj, Hoffman, Johnson & Tran 2018;
  Goodfellow et al. 2016, eq. 19.56).  For a discrete latent the mean parameters are its
  probabilities and this is eq. 19.18: the expected log factor tables.

``E_q[ln p]`` is computed from the user's model as written, with no symbolic rewriting:

1. Every discrete latent is enumerated (its own tensor dim, as in the exact backend), so
   each factor becomes a table over its discrete scope; the expectation over a discrete
   ``q`` is a contraction of that table against it.
2. Each continuous factor (:mod:`ppl.ops.sigma`: Normal, Gamma, Beta, Dirichlet, Wishart,
   and a MultivariateNormal mean with a Wishart-scaled precision as one Normal-Wishart
   factor) is replaced by its *sigma points*, a few values with equal weights whose
   average of ``T`` is ``M`` exactly.  A factor's table, averaged over the points of the
   continuous factors it depends on, is its expectation under ``q``.

The tables come from :class:`~ppl.compiler.parametric.ParametricTables` with the continuous
latents in the role of θ: one probe run shows which distribution arguments are plain
selections of latent values (``loc[z]``, ``prec[z]``, ``Categorical(weights)``), and those
factors are re-evaluated at the sigma points without running the model, batched (for a
Gaussian likelihood by matrix products).  Other factors (the latents' own priors,
``Normal(mu, tau ** -0.5)``) take one model run per combination of points.  All plate
copies of a continuous site move to their ``k``-th point together: exact when every entry
of a factor table touches one copy of each site (a factor inside the site's plates, or a
copy selected by an enumerated index, as in a mixture).

Conjugacy is *checked*, not assumed: ``E_q[ln p]`` must be affine in each factor's mean
parameters, so its second difference along a random segment (different in every plate
copy) must vanish to round-off.  A Poisson likelihood on a Normal latent, a Gamma used as
a mean, or a factor coupling two copies of a site fails, naming the site.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from ...compiler.families import is_unit_uniform
from ...compiler.parametric import ParametricTables
from ...compiler.tables import enumeration_dims
from ...ops.contract import LogFactor
from ...ops.sigma import RULES, NormalWishartRule
from ...ops.shapes import broadcast_shapes
from ..common.distributed import NO_SHARD
from ..common.unconstrained import start_value
from .discrete import MeanFieldTables

__all__ = ["FAMILIES", "MAX_COMBINATIONS", "Block", "find_blocks", "ConjugateModel", "conjugate_problem"]

#: Latent families with a sigma-point rule (a MultivariateNormal only as the mean of a
#: Normal-Wishart pair).
FAMILIES = tuple(RULES) + ("Uniform(0, 1) (the Beta(1, 1) it is)",
                           "a MultivariateNormal mean with a Wishart-scaled precision (Normal-Wishart)")

#: Most combinations of sigma points one factor may need (the product over the continuous
#: factors it depends on).
MAX_COMBINATIONS = 256


@dataclass
class Block:
    """One continuous mean-field factor: a rule over one or two sites (plates shared)."""

    rule: object
    sites: tuple


# ----------------------------------------------------------------------------- structure
def find_blocks(graph, sites):
    """The continuous factors of ``sites``, or a string saying which site has no rule."""
    blocks, used = [], set()
    for w in sites:
        if graph.variables[w].family != "Wishart":
            continue
        means = [s for s in sites if graph.variables[s].family == "MultivariateNormal"
                 and w in graph.factors[s].scope and s not in used]
        if len(means) == 1 and graph.variables[means[0]].plates == graph.variables[w].plates:
            blocks.append(Block(NormalWishartRule(), (means[0], w)))
            used.update((means[0], w))
    for s in sites:
        if s in used:
            continue
        var = graph.variables[s]
        rule = RULES.get(var.family)
        if rule is None and graph.factors[s].scope == (s,) and is_unit_uniform(graph.sites[s].fn):
            rule = RULES["Beta"]          # Uniform(0, 1) is Beta(1, 1): its factor is a Beta
        if rule is None:
            return (f"continuous latent '{s}' ({var.family}): closed-form mean-field factors exist here for "
                    f"{', '.join(FAMILIES)}")
        blocks.append(Block(rule, (s,)))
        used.add(s)
    return blocks


def _n_points(graph, block) -> int:
    """Sigma points of a block (2 per scalar rule, 2D for a D-dim Gaussian, 4 for Normal-Wishart)."""
    if block.rule.name == "MultivariateNormal":
        return 2 * graph.variables[block.sites[0]].event_shape[-1]
    return 2 * block.rule.n_sites


def _moment_shortcut(group, blocks, pt):
    """For a MultivariateNormal likelihood whose ``loc`` and ``precision_matrix`` are plain
    selections (``loc[z]``, ``prec[z]``) of the mean and precision of one Normal-Wishart
    block, table entry by entry of the same copy: a function ``(group, means) -> tables``
    that reads ``E[Λ], E[Λμ], E[μᵀΛμ], E ln|Λ|`` straight from the block's mean
    parameters (Bishop 2006, eq. 10.64; the message of variational message passing, Winn &
    Bishop 2005) instead of averaging over its sigma points; or None."""
    t = group.template
    slots = group.slots
    if (t.family != "MultivariateNormal" or t.value_gather or t.n_re or group.scales
            or set(slots) != {"loc", "precision_matrix"}
            or any(kind != "gather" for kind, _ in slots.values()) or not group.value.is_floating_point()):
        return None
    found = [(i, b) for i, b in enumerate(blocks) if b.rule.name == "NormalWishart"]
    pos_loc, pos_prec = slots["loc"][1], slots["precision_matrix"][1]
    space = pt.space
    for i, b in found:
        mean_site, prec_site = b.sites
        o_loc, o_prec = space.offsets[mean_site], space.offsets[prec_site]
        n_loc, n_prec = space.shapes[mean_site].numel(), space.shapes[prec_site].numel()
        d = space.shapes[mean_site][-1]
        if not (bool(((pos_loc >= o_loc) & (pos_loc < o_loc + n_loc)).all())
                and bool(((pos_prec >= o_prec) & (pos_prec < o_prec + n_prec)).all())):
            continue
        rel_loc, rel_prec = pos_loc - o_loc, pos_prec - o_prec
        copy = rel_loc[..., 0] // d                                     # the copy each entry's loc comes from
        expect_loc = copy.unsqueeze(-1) * d + torch.arange(d, device=copy.device)
        expect_prec = copy[..., None, None] * d * d + torch.arange(d * d, device=copy.device).reshape(d, d)
        if not (torch.equal(rel_loc, expect_loc.expand_as(rel_loc))
                and torch.equal(rel_prec.expand(copy.shape + (d, d)), expect_prec)):
            continue

        def tables(g, means, i=i, rel_loc=rel_loc, rel_prec=rel_prec, copy=copy, d=d):
            s, sm, quad, ld = means[i]
            s = 0.5 * (s + s.transpose(-1, -2))
            return g.mvn_table_from_statistics(s.reshape(-1)[rel_prec], sm.reshape(-1)[rel_loc],
                                               quad.reshape(-1)[copy], ld.reshape(-1)[copy])
        return tables
    return None


def _categorical_shortcut(group, blocks, pt):
    """For a Categorical whose ``probs`` are whole rows of one Dirichlet block's site
    (``Categorical(weights)``, ``Categorical(trans[z_prev])``): a function ``(group, means)
    -> tables`` giving ``E[ln π_value] = M_value`` straight from the Dirichlet's mean
    parameters ``M = E[ln π]``; or None."""
    t = group.template
    if (t.family != "Categorical" or t.value_gather or t.n_re or group.scales or set(group.slots) != {"probs"}
            or group.slots["probs"][0] != "gather"):
        return None
    pos = group.slots["probs"][1]
    space = pt.space
    for i, b in enumerate(blocks):
        if b.rule.name != "Dirichlet":
            continue
        site = b.sites[0]
        offset, k = space.offsets[site], space.shapes[site][-1]
        rel = pos - offset
        if not bool(((rel >= 0) & (rel < space.shapes[site].numel())).all()) or pos.shape[-1] != k:
            continue
        row = rel[..., 0] // k
        if not torch.equal(rel, row.unsqueeze(-1) * k + torch.arange(k, device=rel.device)):
            continue
        value = group.value.long().unsqueeze(-1)

        def tables(g, means, i=i, row=row, k=k, value=value):
            (m,) = means[i]
            e_log = m.reshape(-1, k)[row]
            shape = broadcast_shapes(e_log.shape[:-1], value.shape[:-1])
            return g.finish(torch.take_along_dim(e_log.expand(shape + (k,)), value.expand(shape + (1,)), -1)[..., 0])
        return tables
    return None


class ConjugateModel:
    """Expected factor tables of a conjugate-exponential model under a mean field.

    Parameters
    ----------
    graph : FactorGraph
    moral : networkx.Graph
        The analysis' moral graph (for the enumeration dims).
    blocks : list[Block]
    dtype, device
        Of the tables.
    shard : Shard, optional
        Distributed: tables of factors outside the data plate weighted ``1 / W`` (their share).

    Attributes
    ----------
    tables : ParametricTables
        With the continuous latents as θ.
    deps : dict[str, tuple[int, ...]]
        Factor -> the blocks its table depends on.
    """

    def __init__(self, graph, moral, blocks, dtype, device, params=None, shard=NO_SHARD):
        self.graph, self.blocks, self.dtype, self.device, self.shard = graph, blocks, dtype, device, shard
        self.cont = [s for b in blocks for s in b.sites]
        self.dims = enumeration_dims(graph, moral)
        self.start = {s: start_value(graph.sites[s], device, dtype) for s in self.cont}
        self.theta = dict(params or {})       # ppl.param values, when they are learned (variational EM)
        key = ("latent_tables", dtype, str(device), tuple(self.cont), tuple(self.theta))
        # the structure found does not depend on the values: one probe per graph
        self.tables = graph.memo("cavi", key, lambda: ParametricTables(
            graph, self.dims, graph.plate_order, {**self.start, **self.theta}, dtype=dtype, device=device,
            latents=self.cont))
        owner = {s: i for i, b in enumerate(blocks) for s in b.sites}
        self.deps = {n: tuple(sorted({owner[s] for s in f.scope if s in owner})) for n, f in graph.factors.items()}
        self.names = list(graph.factors)
        for n, d in self.deps.items():
            combos = math.prod(_n_points(graph, b) for b in (blocks[i] for i in d))
            if combos > MAX_COMBINATIONS:
                raise ValueError(f"factor '{n}' depends on {len(d)} continuous factors ({combos} combinations of "
                                 f"sigma points, at most {MAX_COMBINATIONS})")
        # a factor of one block and no discrete latent (a prior with constant arguments, or one
        # whose arguments are the block's other site): E_q[ln f] = a + ⟨g, M_i⟩ with constant
        # (a, g), g being its part of the block's natural parameters; found once (fit_affine)
        self.affine_names = [n for n, d in self.deps.items() if len(d) == 1 and not self.tables.layouts[n][1]
                             and not self.theta]     # with params learned, a prior's (a, g) may move with θ
        self.moments = {}
        for g in self.tables.groups:
            try:
                spec = _moment_shortcut(g, blocks, self.tables) or _categorical_shortcut(g, blocks, self.tables)
            except (RuntimeError, IndexError, ValueError):  # layouts the shortcut does not follow: sigma points
                spec = None
            if spec is not None:
                self.moments[id(g)] = spec
        self.varying = [n for n in self.names if n not in self.affine_names]
        self.affine = {}

    def fit_affine(self, qc) -> None:
        """``(a, g)`` of every affine factor, by one differentiable evaluation at ``qc`` (exact
        anywhere: the factor is affine in the mean parameters, as the analysis checked)."""
        for n in self.affine_names:
            (i,) = self.deps[n]
            leaves = tuple(t.detach().clone().requires_grad_(True) for t in self.blocks[i].rule.mean(qc[i]))
            with torch.enable_grad():
                value = self.factor_tables(qc, names={n}, leaves={i: leaves})[n].table.sum()
                grads = (torch.autograd.grad(value, leaves, allow_unused=True) if value.requires_grad
                         else (None,) * len(leaves))      # constant in the latent: a Uniform(0, 1) prior
            grads = tuple(torch.zeros_like(l) if g is None else g.detach() for g, l in zip(grads, leaves))
            a = value.detach() - sum((g * l.detach()).sum() for g, l in zip(grads, leaves))
            self.affine[n] = (i, a, grads)

    def affine_value(self, qc) -> torch.Tensor:
        """``Σ E_q[ln f]`` over the affine factors (nats)."""
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        means = {}
        for i, a, g in self.affine.values():
            m = means.setdefault(i, self.blocks[i].rule.mean(qc[i]))
            total = total + a + sum((gg * mm).sum() for gg, mm in zip(g, m))
        return total

    def affine_gradient(self, i) -> tuple | None:
        """Block ``i``'s natural-parameter part from its affine factors, or None."""
        out = None
        for j, _, g in self.affine.values():
            if j == i:
                out = g if out is None else tuple(a + b for a, b in zip(out, g))
        return out

    def initial(self, init):
        """Each block's starting factor, centred on the probe run's values (or on ``init``)."""
        values = dict(self.start)
        if isinstance(init, dict):
            for k, v in init.items():
                if k in values:
                    values[k] = torch.as_tensor(v, dtype=self.dtype, device=self.device).expand(values[k].shape)
        return [b.rule.initial(tuple(values[s] for s in b.sites)) for b in self.blocks]

    def factor_tables(self, qc, names=None, leaves=None) -> dict:
        """Factor name -> expected log table (``E`` over the continuous factors; the discrete
        scope enumerated), for ``names`` (default all, in graph order).  ``leaves``: block
        index -> mean parameters to differentiate through (the others are detached)."""
        names = self.names if names is None else [n for n in self.names if n in names]
        needed = sorted({i for n in names for i in self.deps[n]})
        means = {}
        for i in needed:
            if leaves is not None and i in leaves:
                means[i] = leaves[i]
            else:
                means[i] = tuple(t.detach() for t in self.blocks[i].rule.mean(qc[i]))
        points = {i: self.blocks[i].rule.points(means[i]) for i in needed}
        for i, b in enumerate(self.blocks):  # blocks no asked factor depends on: any value fills θ
            if i not in points:
                points[i] = [tuple(self.start[s] for s in b.sites)]
        pt = self.tables
        out = {}
        wanted = set(names)
        for n in names:
            if n in pt.constant:
                out[n] = pt.constant[n]
        for g in pt.groups:
            if not wanted & set(g.members):
                continue
            deps = sorted({i for m in g.members for i in self.deps[m]})
            if id(g) in self.moments:     # the arguments are one block's sites: its mean parameters are the moments
                acc = self.moments[id(g)](g, means)
            else:
                combos = itertools.product(*(range(len(points[i])) for i in deps))
                acc = g.expected_log_tables([pt.space.flat(self._values(points, dict(zip(deps, c))))
                                             for c in combos])
            for k, m in enumerate(g.members):
                if m in wanted:
                    out[m] = acc[k] if acc.shape[0] > 1 else acc[0]
        by_deps = {}  # slow factors by the blocks they depend on: one set of runs each
        for n in names:
            if n in pt.slow:
                by_deps.setdefault(self.deps[n], []).append(n)
        for deps, slow in by_deps.items():
            combos = list(itertools.product(*(range(len(points[i])) for i in deps)))
            acc = {}
            for combo in combos:
                tabs = pt.slow_tables(self._values(points, dict(zip(deps, combo))), grad=torch.is_grad_enabled(),
                                      names=slow)
                for n in slow:
                    acc[n] = tabs[n] if n not in acc else acc[n] + tabs[n]
            for n in slow:
                out[n] = acc[n] / len(combos)
        return self.shard.scale_factors({n: LogFactor(out[n], *pt.layouts[n]) for n in names})

    def _values(self, points, choice) -> dict:
        """Site -> value at the chosen point of each block (point 0 for the others)."""
        vals = {}
        for i, b in enumerate(self.blocks):
            p = points[i][choice.get(i, 0)]
            for s, v in zip(b.sites, p):
                vals[s] = v
        vals.update(self.theta)
        return {s: vals[s] for s in self.tables.space.names}

    def factors_of(self, i, varying: bool = False) -> set:
        """Factors whose table depends on block ``i`` (only the non-affine ones if ``varying``)."""
        return {n for n, d in self.deps.items() if i in d and not (varying and n in self.affine)}


# ----------------------------------------------------------------------------- analysis
def conjugate_problem(graph, moral) -> str | None:
    """Why the conjugate path does not apply to ``graph``'s latents, or None (cached per graph)."""
    return graph.memo("cavi", "conjugate_problem", lambda: _problem(graph, moral))


def _problem(graph, moral):
    blocks = find_blocks(graph, graph.continuous_latent())
    if isinstance(blocks, str):
        return blocks
    try:
        cm = ConjugateModel(graph, moral, blocks, torch.float64, torch.device("cpu"))
        gen = torch.Generator().manual_seed(0)
        qc = cm.initial("random")
        disc = graph.discrete_latent()
        mf = MeanFieldTables(graph, disc, cm.factor_tables(qc), torch.float64, torch.device("cpu"))
        qd = mf.initial("random", 0)
        with torch.no_grad():
            for i, b in enumerate(blocks):
                names = cm.factors_of(i)
                a = b.rule.mean(qc[i])
                c = b.rule.mean(b.rule.perturbed(qc[i], gen))
                vals = []
                for t in (0.0, 0.5, 1.0):
                    m = tuple(x + t * (y - x) for x, y in zip(a, c))
                    tabs = cm.factor_tables(qc, names=names, leaves={i: m})
                    vals.append(float(mf.expected_log_joint(qd, mf.layout(tabs))))
                second = vals[0] - 2 * vals[1] + vals[2]
                if not all(math.isfinite(v) for v in vals) or abs(second) > 1e-7 * (sum(abs(v) for v in vals) + 1):
                    site = " and ".join(f"'{s}'" for s in b.sites)
                    return (f"the log joint is not linear in the sufficient statistics of latent {site} "
                            f"({b.rule.name}): the model is not conjugate-exponential in it (e.g. a non-Gaussian "
                            "likelihood on a Normal latent, or a factor coupling several plate copies of it), so "
                            "its mean-field factor has no closed form here")
    except Exception as e:  # noqa: BLE001 - a model this check cannot run is refused here, never crashes infer
        return (f"the model could not be evaluated on sigma points: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else e!r}")
    return None
