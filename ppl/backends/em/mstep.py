"""M-steps of EM: closed-form updates from expected sufficient statistics where a
parameter's role is recognised, L-BFGS on the expected complete-data log-likelihood
otherwise.

With the E-step weights ``W_f(x_f) = p(x_f | v; θ_old)`` of every factor, the M-step
maximises (Goodfellow et al. 2016, §19.2, eq. 19.8 with q fixed)

    Q(θ) = Σ_f Σ_{x_f} W_f(x_f) log φ_f(x_f; θ).

A parameter used only as a *gather* (:mod:`ppl.compiler.probe`) in a role listed in
:data:`RULES` has a closed-form maximiser, computed here from weighted sums over the
factor tables' entries (:func:`grouped_sum`):

========================  ===========================================================
role                      update (sums over the entries that select the element/row)
========================  ===========================================================
Normal loc                ``μ = Σ W x/σ² / Σ W/σ²`` (exact for any fixed scales)
Normal scale              ``σ² = Σ W (x-μ)² / Σ W + reg_covar``
MultivariateNormal loc    ``μ = Σ W x / Σ W`` (rows whose entries share one covariance)
MultivariateNormal cov    ``Σ = Σ W (x-μ)(x-μ)ᵀ / Σ W + reg_covar I`` (covariance_matrix;
                          its Cholesky factor for scale_tril, inverse for precision_matrix)
Categorical probs/logits  ``p ∝ Σ W onehot(x)`` (whole rows of a simplex / real param)
Bernoulli probs/logits    ``p = Σ W x / Σ W``
Poisson rate              ``λ = Σ W x / Σ W``
Exponential rate          ``λ = Σ W / Σ W x``
========================  ===========================================================

Locations are updated before scales (an expectation-conditional maximisation step,
Meng & Rubin 1993): each update maximises Q over its parameter given the others, so Q
never decreases and the log-likelihood never decreases (the generalised-EM argument of
Dempster, Laird & Rubin 1977).  For mixtures whose location and scale select the same
component (the usual GMM, every covariance type of scikit-learn), it is the joint
maximiser, identical to scikit-learn's and hmmlearn's M-steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import constraints, transform_to

from ...compiler.parametric import slot_event_rank
from ...errors import DataError
from ...ops.expfam import broadcast_einsum
from ...ops.shapes import broadcast_shapes
from ..common.distributed import NO_SHARD

__all__ = ["grouped_sum", "ClosedFormUpdate", "plan_closed_forms", "GradientMStep", "expected_log_lik"]

def grouped_sum(index: torch.Tensor, operands, n_out: int, out_tail: str = "", entries=None) -> torch.Tensor:
    """``out[g] = Σ_{e : index[e] = g} Π_k operand_k[e]`` over broadcast entries ``e``.

    Entries are the broadcast of ``index`` and the operands' leading dims; each operand
    may carry trailing dims named by upper-case letters (``(x, "D")``), and the product
    keeps those named in ``out_tail`` (``"DE"`` for an outer product).  Dims along which
    ``index`` is constant are summed by ``torch.einsum`` before the scatter, so a sum
    over N data points and K components grouped by component costs one GEMM, never an
    ``N·K·D²`` intermediate.

    Parameters
    ----------
    index : torch.LongTensor
        Group of each entry, in ``[0, n_out)``.
    operands : list[tuple[torch.Tensor, str]]
    n_out : int
    out_tail : str
    entries : tuple[int, ...], optional
        The full entry shape, when some entries differ only along dims no operand
        varies along (each such entry counts once: the sum over such a dim is a product
        by its size).

    Returns
    -------
    torch.Tensor, shape ``(n_out,) + tail sizes``
    """
    rank = max([index.dim()] + [t.dim() - len(tl) for t, tl in operands])
    idx = index.reshape((1,) * (rank - index.dim()) + tuple(index.shape))
    kept = [d for d in range(rank) if idx.shape[d] > 1]
    res = broadcast_einsum(operands, out_tail, keep=kept, rank=rank)  # kept dims (1 where constant) + tail
    mult = 1
    if entries is not None:  # summed dims no operand varies along: each value counts entries[d] times
        present = set()
        for t, tl in operands:
            lead = tuple(t.shape[: t.dim() - len(tl)])
            lead = (1,) * (rank - len(lead)) + lead
            present.update(d for d in range(rank) if lead[d] != 1)
        entries = (1,) * (rank - len(entries)) + tuple(entries)
        mult = math.prod(entries[d] for d in range(rank) if d not in present and d not in kept)
    tail = tuple(res.shape[len(kept):])
    shape = tuple(idx.shape[d] for d in kept)
    res = res.expand(shape + tail)
    gid = idx.reshape(shape)
    out = torch.zeros((n_out,) + tail, dtype=res.dtype, device=res.device)
    out.index_add_(0, gid.reshape(-1), res.reshape((-1,) + tail))
    return out * mult if mult != 1 else out


# ------------------------------------------------------------------ roles
def _is(c, kind) -> bool:
    c = getattr(c, "base_constraint", c) if isinstance(c, constraints.independent) else c
    if kind == "real":
        return c is None or isinstance(c, type(constraints.real))
    if kind == "positive":
        return isinstance(c, constraints.greater_than) and float(c.lower_bound) == 0.0
    if kind == "unit":
        return isinstance(c, constraints.interval) and float(c.lower_bound) == 0.0 and float(c.upper_bound) == 1.0
    return isinstance(c, type(getattr(constraints, kind)))


#: (family, slot) -> (role, constraint the param must have, event size of the slot)
RULES = {
    ("Normal", "loc"): ("normal_loc", "real", 0),
    ("Normal", "scale"): ("normal_scale", "positive", 0),
    ("MultivariateNormal", "loc"): ("mvn_loc", "real", 1),
    ("MultivariateNormal", "covariance_matrix"): ("mvn_cov", "positive_definite", 2),
    ("MultivariateNormal", "scale_tril"): ("mvn_cov", "lower_cholesky", 2),
    ("MultivariateNormal", "precision_matrix"): ("mvn_cov", "positive_definite", 2),
    ("Categorical", "probs"): ("cat", "simplex", 1),
    ("Categorical", "logits"): ("cat", "real", 1),
    ("Bernoulli", "probs"): ("mean", "unit", 0),
    ("Bernoulli", "logits"): ("mean", "real", 0),
    ("Poisson", "rate"): ("mean", "positive", 0),
    ("Exponential", "rate"): ("inverse_mean", "positive", 0),
}
_ORDER = {"normal_loc": 0, "mvn_loc": 0, "normal_scale": 1, "mvn_cov": 1, "cat": 2, "mean": 2, "inverse_mean": 2}
LABEL = {
    "normal_loc": "Normal loc", "normal_scale": "Normal scale", "mvn_loc": "MultivariateNormal loc",
    "mvn_cov": "MultivariateNormal covariance", "cat": "Categorical probabilities", "mean": "mean parameter",
    "inverse_mean": "Exponential rate",
}


@dataclass
class ClosedFormUpdate:
    """The closed-form update of one param: its role and the (group, slot) uses."""

    param: str
    role: str
    uses: list  # [(group index, slot name, members)]: members = None (all) or the stack rows the param owns
    label: str
    prior: tuple = None  # MAP: ("normal", μ0, 1/s0²) or ("dirichlet", α - 1), shaped as the update's statistics


def _rows_ok(pos: torch.Tensor, ev: int, offset: int, shape) -> bool:
    """The trailing ``ev`` dims of ``pos`` select whole trailing rows/matrices of the param."""
    if ev == 0:
        return True
    tail = tuple(pos.shape[-ev:])
    if tuple(shape[-ev:]) != tail:
        return False
    width = int(torch.tensor(tail).prod())
    start = pos.reshape(pos.shape[: pos.dim() - ev] + (width,))
    expect = start[..., :1] + torch.arange(width, device=pos.device)
    return bool(torch.equal(start, expect)) and bool(((start[..., 0] - offset) % width == 0).all())


def _base(d):
    """``d`` without Independent / Expanded wrappers."""
    while type(d).__name__ in ("Independent", "ExpandedDistribution"):
        d = d.base_dist
    return d


def _prior_stats(p, role, prior, space, flat_dtype, device):
    """The pseudo-statistics a conjugate prior adds to the closed-form update of ``p``
    (EM for MAP: the M-step maximises Q + log p(θ), Bishop 2006, §9.3), or a string
    saying why there is none."""
    shape = space.shapes[p]
    base = _base(prior)
    fam = type(base).__name__
    try:
        if role == "normal_loc" and fam == "Normal":
            mu0 = base.loc.detach().to(dtype=flat_dtype, device=device).expand(shape).reshape(-1)
            prec0 = base.scale.detach().to(dtype=flat_dtype, device=device).pow(-2).expand(shape).reshape(-1)
            return ("normal", mu0, prec0)
        if role == "cat" and fam == "Dirichlet" and _is(space.constraints.get(p), "simplex"):
            alpha = base.concentration.detach().to(dtype=flat_dtype, device=device).expand(shape)
            if bool((alpha >= 1).all()):
                return ("dirichlet", (alpha - 1).reshape(-1, shape[-1]))
            return "a Dirichlet prior with a concentration < 1 (the MAP may lie on the simplex's boundary)"
    except RuntimeError:  # a prior whose shape does not broadcast to the param's
        return f"its {fam} prior does not broadcast to the param's shape"
    return f"no closed-form MAP update for a {fam} prior on a {LABEL[role]}"


def plan_closed_forms(pt, gradient_only: bool = False, priors=None):
    """Decide, per param, the closed-form update or the gradient M-step.

    ``priors`` (EM for MAP): param -> (name of its prior factor, prior distribution), for
    params whose prior factor depends on them alone.  A Normal prior on a Normal ``loc``
    and a Dirichlet prior (concentrations ≥ 1) on Categorical ``probs`` are conjugate:
    their update adds the prior's pseudo-statistics,
    ``μ = (Σ W x/σ² + μ0/s0²) / (Σ W/σ² + 1/s0²)`` and ``p ∝ Σ W onehot(x) + α − 1``.
    Any other prior sends the param to the gradient M-step.

    Returns
    -------
    updates : list[ClosedFormUpdate]
        In update order (locations first).
    gradient : list[str]
        Params left to the gradient M-step.
    why : dict[str, str]
        Param -> the reason it has no closed form (for diagnostics).
    """
    space = pt.space
    priors = dict(priors or {})
    own_prior = {f: p for p, (f, _) in priors.items()}
    uses: dict = {p: [] for p in space.names}
    why: dict = {}
    for name in pt.slow:
        for p in pt.templates[name].deps:
            if own_prior.get(name) == p:
                continue  # the param's own conjugate-candidate prior: decided below
            why.setdefault(p, f"factor '{name}': {pt.templates[name].slow}")
    for gi, g in enumerate(pt.groups):
        fam = g.template.family
        for slot, (kind, pos) in g.slots.items():
            if kind != "gather":
                continue
            owners = space.owners(pos)
            rule = RULES.get((fam, slot))
            for p in owners:
                if rule is None:
                    why.setdefault(p, f"{fam} {slot} has no closed-form update")
                uses[p].append((gi, slot, rule))
    updates, gradient = [], []
    for p in space.names:
        us = uses[p]
        if gradient_only or p in why or not us:
            if us or p in why:
                gradient.append(p)
                why.setdefault(p, "gradient M-step requested" if gradient_only else "no use found")
            continue
        roles = {r[0] for _, _, r in us}
        if len(roles) != 1:
            why[p] = f"used in several roles ({sorted(roles)})"
            gradient.append(p)
            continue
        role, need, ev = us[0][2]
        c = space.constraints.get(p)
        if not all(_is(c, r[1]) for _, _, r in us):
            why[p] = f"its constraint {c} does not match its role ({LABEL[role]})"
            gradient.append(p)
            continue
        selected = [(gi, slot, _owned_members(pt.groups[gi].slots[slot][1], p, ev, space)) for gi, slot, _ in us]
        if any(members is False for _, _, members in selected):
            why[p] = f"{LABEL[role]} entries do not select whole rows of '{p}'"
            gradient.append(p)
            continue
        if role == "mvn_loc" and not all(_one_cov_per_row(pt.groups[gi], space) for gi, _, _ in us):
            why[p] = "rows of this MultivariateNormal loc meet several covariances"
            gradient.append(p)
            continue
        stats, label = None, f"closed form ({LABEL[role]})"
        if p in priors:
            logits = any(pt.groups[gi].slots.get("logits") is not None for gi, _, _ in us)
            stats = _prior_stats(p, role, priors[p][1], space, pt.dtype, pt.device) if not logits else \
                "a prior on Categorical logits"
            if isinstance(stats, str):
                why[p] = f"MAP: {stats}"
                gradient.append(p)
                continue
            label = f"closed form ({LABEL[role]}, MAP with a {type(_base(priors[p][1])).__name__} prior)"
        updates.append(ClosedFormUpdate(p, role, selected, label, stats))
    updates.sort(key=lambda u: _ORDER[u.role])
    return updates, gradient, why


def _owned_members(pos: torch.Tensor, p: str, ev: int, space):
    """Which stacked members of a group's slot ``pos`` (leading dim: the members) select
    rows of param ``p``: ``None`` when the whole slot belongs to ``p``, a LongTensor of
    member rows when the group stacks factors of several params (two CPTs of one shape),
    ``False`` when some member mixes params or does not select whole rows of ``p``."""
    off, shape = space.offsets[p], space.shapes[p]
    owners = space.owners(pos)
    if owners == {p}:
        return None if _rows_ok(pos, ev, off, shape) else False
    rows = []
    for i in range(pos.shape[0]):
        own = space.owners(pos[i])
        if len(own) != 1:
            return False
        if own == {p}:
            if not _rows_ok(pos[i], ev, off, shape):
                return False
            rows.append(i)
    return torch.tensor(rows, dtype=torch.long, device=pos.device)


def _members(t, members):
    """Rows ``members`` of a stacked tensor (leading dim: the group's members, or 1 when
    they all agree); ``t`` itself for ``members=None`` or a broadcast leading dim."""
    if members is None or t is None or not isinstance(t, torch.Tensor) or t.shape[0] == 1:
        return t
    return t.index_select(0, members)


def _one_cov_per_row(group, space) -> bool:
    scale_slot = next(s for s in group.slots if s != "loc")
    kind, cov = group.slots[scale_slot]
    if kind == "const" and all(s == 1 for s in cov.shape[:-2]):
        return True
    loc = group.slots["loc"][1][..., 0]
    c = cov[..., 0, 0] if kind == "gather" else cov.reshape(cov.shape[:-2] + (-1,)).sum(-1)
    a, b = torch.broadcast_tensors(loc, c)
    pairs = torch.unique(torch.stack([a.reshape(-1).to(b.dtype), b.reshape(-1)], 1), dim=0)
    return pairs.shape[0] == torch.unique(a).numel()


# ------------------------------------------------------------------ closed-form step
def _entry_weights(group, w: torch.Tensor, members=None) -> torch.Tensor:
    """The group's weights on its base distribution's entries (of the stacked ``members``
    only, when given): mask and scale applied, broadcast over Independent dims."""
    t = group.template
    if group.mask is not None:
        w = w * _members(group.mask, members)
    if t.scale != 1.0:
        w = w * t.scale
    return w.reshape(tuple(w.shape) + (1,) * t.n_re)


def _entry_shape(group, w: torch.Tensor, members=None) -> tuple:
    """Broadcast shape of the base distribution's entries: weights, value and slots
    without their event dims (of the stacked ``members`` only, when given)."""
    fam = group.template.family
    ev = 1 if fam == "MultivariateNormal" else 0
    value = _members(group.value, members)
    shapes = [tuple(w.shape), tuple(value.shape[: value.dim() - ev])]
    for s, (_, t) in group.slots.items():
        e = slot_event_rank(fam, s)
        t = _members(t, members)
        shapes.append(tuple(t.shape[: t.dim() - e]))
    return tuple(broadcast_shapes(*shapes))


def apply_closed_form(u: ClosedFormUpdate, pt, flat: torch.Tensor, weights: list, reg_covar: float,
                      shard=NO_SHARD, centre=None) -> None:
    """Update ``u.param`` in ``flat`` (θ as one vector) in place; see the module table.
    With a distributed ``shard`` the statistics are summed over ranks before the
    maximiser (they are sums over data points: Dempster, Laird & Rubin 1977); with a
    streaming hook they are averaged into its running statistics (online EM).  ``centre``
    (θ as one vector) is where statistics that need a current value (a covariance's
    scatter about the means) are taken; default ``flat`` as updated so far (batch EM's
    exact M-step).  Online EM passes the E-step's θ, so that scatters of different batches
    share one centre and add up (their sum is the full data's scatter about it).

    Raises
    ------
    DataError
        If a covariance is not positive definite after adding ``reg_covar``.
    """
    space = pt.space
    off, shape = space.offsets[u.param], space.shapes[u.param]
    cur = flat[off:off + shape.numel()].reshape(shape)
    acc = shard.sum_dict(_sufficient_statistics(u, pt, flat if centre is None else centre, weights), u.param)
    if u.prior is not None:  # EM for MAP: a conjugate prior's pseudo-statistics
        if u.prior[0] == "normal":
            acc["num"] = acc["num"] + u.prior[1] * u.prior[2]
            acc["den"] = acc["den"] + u.prior[2]
        else:
            acc["num"] = acc["num"] + u.prior[1]
    new = _maximiser(u, pt, acc, cur, reg_covar)
    flat[off:off + shape.numel()] = new.reshape(-1)


def _sufficient_statistics(u: ClosedFormUpdate, pt, flat: torch.Tensor, weights: list) -> dict:
    """``{"num": ..., "den": ...}``: the weighted sufficient statistics of ``u.param``'s
    closed form, summed over every factor group that uses it (E-step responsibilities
    ``weights`` per group)."""
    space = pt.space
    off, shape = space.offsets[u.param], space.shapes[u.param]
    numel = shape.numel()
    role = u.role
    acc: dict = {}

    def add(key, val):
        acc[key] = val if key not in acc else acc[key] + val

    for gi, slot, members in u.uses:
        g = pt.groups[gi]

        def theta(slot_pair, members=members):
            kind, t = slot_pair
            t = _members(t, members)
            return flat[t] if kind == "gather" else t

        w = _entry_weights(g, _members(weights[gi], members), members)
        pos = _members(g.slots[slot][1], members)
        x = _members(g.value, members)
        ent = _entry_shape(g, w, members)

        def gsum(index, operands, n_out, out_tail=""):
            return grouped_sum(index, operands, n_out, out_tail, entries=ent)

        if role in ("normal_loc", "normal_scale"):
            ids = pos - off
            if role == "normal_loc":
                prec = theta(g.slots["scale"]).pow(-2)
                add("num", gsum(ids, [(w, ""), (prec, ""), (x, "")], numel))
                add("den", gsum(ids, [(w, ""), (prec, "")], numel))
            else:
                mu = theta(g.slots["loc"])
                add("num", gsum(ids, [(w, ""), (x * x, "")], numel)
                    - 2 * gsum(ids, [(w, ""), (x, ""), (mu, "")], numel)
                    + gsum(ids, [(w, ""), (mu * mu, "")], numel))
                add("den", gsum(ids, [(w, "")], numel))
        elif role == "mvn_loc":
            d = shape[-1]
            rows = (pos[..., 0] - off) // d
            add("num", gsum(rows, [(w, ""), (x, "D")], numel // d, "D"))
            add("den", gsum(rows, [(w, "")], numel // d))
        elif role == "mvn_cov":
            d = shape[-1]
            mats = (pos[..., 0, 0] - off) // (d * d)
            mu = theta(g.slots["loc"])
            n = numel // (d * d)
            b = gsum(mats, [(w, ""), (x, "D"), (mu, "E")], n, "DE")
            xx = g.outer()
            second = gsum(mats, [(w, ""), (xx, "DE")], n, "DE") if xx is not None else \
                gsum(mats, [(w, ""), (x, "D"), (x, "E")], n, "DE")
            add("num", second - b - b.transpose(-1, -2)
                + gsum(mats, [(w, ""), (mu, "D"), (mu, "E")], n, "DE"))
            add("den", gsum(mats, [(w, "")], n))
        elif role == "cat":
            k = shape[-1]
            rows = (pos[..., 0] - off) // k
            onehot = torch.nn.functional.one_hot(x.long(), k).to(flat.dtype)
            add("num", gsum(rows, [(w, ""), (onehot, "K")], numel // k, "K"))
        else:  # mean / inverse_mean
            ids = pos - off
            add("num", gsum(ids, [(w, ""), (x, "")], numel))
            add("den", gsum(ids, [(w, "")], numel))
    return acc


def _maximiser(u: ClosedFormUpdate, pt, acc: dict, cur: torch.Tensor, reg_covar: float) -> torch.Tensor:
    """The M-step's closed-form maximiser of ``u.param`` from its statistics ``acc``
    (entries without weight keep their current value ``cur``).

    Raises
    ------
    DataError
        A collapsed variance or a singular covariance after adding ``reg_covar``."""
    space, role, shape = pt.space, u.role, pt.space.shapes[u.param]
    tiny = torch.finfo(cur.dtype).tiny
    if role == "cat":
        counts = acc["num"]
        total = counts.sum(-1, keepdim=True)
        new = torch.where(total > 0, counts / total.clamp_min(tiny), cur.reshape(counts.shape))
        if u.uses and pt.groups[u.uses[0][0]].slots.get("logits") is not None:
            new = torch.where(total > 0, new.clamp_min(tiny).log(), cur.reshape(counts.shape))
    else:
        den = acc["den"]
        has = den > 0
        safe = den.clamp_min(tiny)
        if role == "normal_loc":
            new = torch.where(has, acc["num"] / safe, cur.reshape(-1))
        elif role == "normal_scale":
            var = acc["num"] / safe + reg_covar
            if bool((has & ~(var > 0)).any()):
                raise DataError(f"param '{u.param}': a variance collapsed to {float(var[has].min()):.3g} "
                                "(a component holds a single value); increase reg_covar")
            new = torch.where(has, var.clamp_min(tiny).sqrt(), cur.reshape(-1))
        elif role == "mvn_loc":
            new = torch.where(has[:, None], acc["num"] / safe[:, None], cur.reshape(acc["num"].shape))
        elif role == "mvn_cov":
            d = shape[-1]
            cov = acc["num"] / safe[:, None, None] + reg_covar * torch.eye(d, dtype=cur.dtype, device=cur.device)
            cov = 0.5 * (cov + cov.transpose(-1, -2))
            chol, info = torch.linalg.cholesky_ex(cov)
            if bool((has & (info > 0)).any()):
                raise DataError(f"param '{u.param}': a covariance matrix is singular after the M-step (too few "
                                "points with weight in some component, or collinear data); increase reg_covar")
            slot = u.uses[0][1]
            if slot == "scale_tril":
                cov = chol
            elif slot == "precision_matrix":
                cov = torch.cholesky_inverse(chol)
            new = torch.where(has[:, None, None], cov, cur.reshape(cov.shape))
        else:
            mean = acc["num"] / safe
            if role == "inverse_mean":
                mean = safe / acc["num"].clamp_min(tiny)
            if _is(space.constraints.get(u.param), "real"):  # logits
                mean = torch.logit(mean.clamp(tiny, 1 - 1e-16))
            elif _is(space.constraints.get(u.param), "positive"):
                mean = mean.clamp_min(tiny)
            new = torch.where(has, mean, cur.reshape(-1))
    return new


# ------------------------------------------------------------------ gradient step
def expected_log_lik(pt, flat: torch.Tensor, values: dict, weights: list, other_weights: dict,
                     groups=None, slow: bool = True) -> torch.Tensor:
    """``Q(θ) = Σ_f Σ_x W_f(x) log φ_f(x; θ)`` (nats) over the chosen groups and, if
    ``slow``, the slow factors (one model run); differentiable in ``flat``/``values``."""
    total = flat.new_zeros(())
    for gi in (range(len(pt.groups)) if groups is None else groups):
        t = pt.groups[gi].log_tables(flat)
        w = weights[gi]
        total = total + torch.where(w > 0, w * t, torch.zeros((), dtype=t.dtype, device=t.device)).sum()
    if slow and pt.slow:
        for n, t in pt.slow_tables(values, grad=True).items():
            w = other_weights[n]
            total = total + torch.where(w > 0, w * t, torch.zeros((), dtype=t.dtype, device=t.device)).sum()
    return total


class GradientMStep:
    """Maximise Q over the params without a closed form, by L-BFGS (strong Wolfe line
    search) in the unconstrained space ``transform_to(constraint)`` (as Pyro's param
    store; Nocedal & Wright 2006, §7.2).  A step that does not increase Q is rejected, so EM stays monotone.

    Parameters
    ----------
    pt : ParametricTables
    params : list[str]
    max_iter : int
        L-BFGS iterations per M-step.
    shard : Shard, optional
        Distributed: Q and its gradient are summed over ranks (Q is a sum over data points),
        so every rank takes the same L-BFGS steps.
    """

    def __init__(self, pt, params, max_iter: int = 20, shard=NO_SHARD):
        self.pt = pt
        self.shard = shard
        self.params = list(params)
        self.max_iter = max_iter
        deps = set(self.params)
        self.groups = [gi for gi, g in enumerate(pt.groups) if g.deps & deps]
        self.slow = any(pt.templates[n].deps & deps for n in pt.slow)
        self.transforms = {p: transform_to(pt.space.constraints.get(p) or constraints.real) for p in self.params}

    def __call__(self, flat: torch.Tensor, weights: list, other_weights: dict) -> None:
        """Update the params in ``flat`` in place."""
        if not self.params:
            return
        space = self.pt.space
        fixed = space.unflat(flat.detach())
        u = {p: self.transforms[p].inv(fixed[p]).detach().clone().requires_grad_(True) for p in self.params}

        def q():
            values = dict(fixed)
            values.update({p: self.transforms[p](u[p]) for p in self.params})
            return self.shard.sum_value(expected_log_lik(self.pt, space.flat(values), values, weights, other_weights,
                                                         groups=self.groups, slow=self.slow))

        with torch.no_grad():
            before = float(q())
        opt = torch.optim.LBFGS(list(u.values()), max_iter=self.max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-10, tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            loss = -q()
            if not torch.isfinite(loss):
                return loss
            loss.backward()
            self.shard.sum_grads(u.values())
            return loss

        with torch.enable_grad():
            opt.step(closure)
        with torch.no_grad():
            after = float(q())
            if after >= before and after == after:
                for p in self.params:
                    off, n = space.offsets[p], space.shapes[p].numel()
                    flat[off:off + n] = self.transforms[p](u[p]).reshape(-1)
