"""Starting points of EM's restarts: a user's ``init`` values, k-means++ (or random-row)
seeds for Normal locations (Arthur & Vassilvitskii 2007), and fresh Dirichlet(1)
probability tables for models without locations."""

from __future__ import annotations

import math

import torch

from ...errors import DataError, OptionError
from ...ops.expfam import uniform_simplex

__all__ = ["user_init", "seed_locations", "random_tables", "kmeans_pp"]


def user_init(init, space, dtype, device) -> dict:
    """Validate a user ``init`` mapping (constrained values) against the params."""
    if init is None or isinstance(init, str):
        if isinstance(init, str) and init not in ("kmeans++", "random"):
            raise OptionError(f"init must be None, a dict, 'kmeans++' or 'random', got {init!r}")
        return {}
    if not hasattr(init, "items"):
        raise OptionError(f"init must be None, a dict of param values, 'kmeans++' or 'random', got {type(init).__name__}")
    out = {}
    for k, v in init.items():
        if k not in space.shapes:
            raise DataError(f"init: '{k}' is not a ppl.param of the model; its params are {list(space.names)}")
        t = torch.as_tensor(v).detach().to(dtype=dtype, device=device)
        if tuple(t.shape) != tuple(space.shapes[k]):
            raise DataError(f"init['{k}']: expected shape {tuple(space.shapes[k])}, got {tuple(t.shape)}")
        c = space.constraints.get(k)
        if not torch.isfinite(t).all():
            raise DataError(f"init['{k}']: values must be finite")
        if c is not None and not bool(c.check(t).all()):
            raise DataError(f"init['{k}']: values outside the param's constraint {c}")
        out[k] = t.clone()
    return out


def seed_locations(pt, theta, strategy, gen) -> dict:
    """New values for every param used as a Normal/MultivariateNormal ``loc``: k-means++
    seeds (or random rows) of the data that loc explains."""
    out = {}
    for g in pt.groups:
        if g.template.family not in ("Normal", "MultivariateNormal") or "loc" not in g.slots:
            continue
        kind, pos = g.slots["loc"]
        if kind != "gather" or not g.value.is_floating_point():
            continue
        owners = pt.space.owners(pos)
        if len(owners) != 1:
            continue
        p = owners.pop()
        shape = pt.space.shapes[p]
        if p in out or len(shape) == 0:
            continue
        rows = shape[0]
        width = int(math.prod(shape[1:])) if len(shape) > 1 else 1
        points = g.value.reshape(-1, width) if g.value.shape[-1:] == (width,) or width == 1 else None
        if points is None or points.shape[0] < rows:
            continue
        out[p] = kmeans_pp(points, rows, gen, strategy).reshape(shape).to(theta[p].dtype)
    return out


def random_tables(space, theta, gen) -> dict:
    """New values for every simplex-constrained param (probability tables): each row drawn
    from the uniform Dirichlet(1)."""
    from torch.distributions import constraints

    return {p: uniform_simplex(space.shapes[p], gen).to(dtype=theta[p].dtype, device=theta[p].device)
            for p in space.names
            if space.constraints.get(p) is constraints.simplex and len(space.shapes[p]) >= 1}


def kmeans_pp(x: torch.Tensor, k: int, gen, strategy: str) -> torch.Tensor:
    """``k`` rows of ``x`` (n, d): uniformly at random, or by k-means++ D² sampling."""
    n = x.shape[0]
    cpu = x.detach().to("cpu")
    if strategy == "random":
        return cpu[torch.randperm(n, generator=gen)[:k]].to(x.device)
    centers = [cpu[int(torch.randint(n, (1,), generator=gen))]]
    d2 = ((cpu - centers[0]) ** 2).sum(-1)
    for _ in range(1, k):
        total = d2.sum()
        i = int(torch.multinomial(d2 / total, 1, generator=gen)) if total > 0 else int(torch.randint(n, (1,), generator=gen))
        centers.append(cpu[i])
        d2 = torch.minimum(d2, ((cpu - cpu[i]) ** 2).sum(-1))
    return torch.stack(centers).to(x.device)
