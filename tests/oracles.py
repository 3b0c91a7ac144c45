"""Brute-force references that share no code with ``ppl``.

:func:`brute_force` enumerates every joint assignment of the discrete latent sites of a
plain Pyro model and scores each one with Pyro's own ``trace(condition(model))``
``.log_prob_sum()``.  It imports nothing from ``ppl``: whatever bug the package has,
this reference cannot share it.  It is slow (one model run per joint state), so it is
for small models only.

Plated latents are vectors: a site ``z`` of batch shape ``(N,)`` with ``K`` states has
``K**N`` joint values, all enumerated.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass, field

import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

__all__ = [
    "LatentSite",
    "BruteForce",
    "split_data",
    "latent_sites",
    "log_joint",
    "brute_force",
    "MAX_JOINT_STATES",
]

MAX_JOINT_STATES = 200_000


@dataclass
class LatentSite:
    """A discrete latent site as seen in one prior run.

    Attributes
    ----------
    name : str
    batch_shape : torch.Size
        The site distribution's batch shape (its plates).
    support : torch.Tensor, shape (K,)
        The values the site can take, in ``enumerate_support`` order (long for
        Categorical, float for Bernoulli).
    """

    name: str
    batch_shape: torch.Size
    support: torch.Tensor

    @property
    def cardinality(self) -> int:
        return int(self.support.shape[0])

    @property
    def numel(self) -> int:
        return int(math.prod(self.batch_shape))

    def value(self, indices) -> torch.Tensor:
        """The site value whose flattened batch elements take support indices ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.support[idx].reshape(self.batch_shape)


@dataclass
class BruteForce:
    """Exact answers for a small discrete model, by enumeration.

    Attributes
    ----------
    sites : dict[str, LatentSite]
    log_evidence : float
        ``log sum_z p(x, z)`` over every joint assignment ``z`` of the latent sites.
    marginals : dict[str, torch.Tensor]
        Site -> posterior probabilities, shape ``batch_shape + (K,)``, float64;
        ``[..., k]`` is the probability of ``support[k]``.
    map_assignment : dict[str, torch.Tensor]
        One most probable joint assignment (site -> value of the site's batch shape).
    map_log_joint : float
        ``log p(x, z_map)``.
    joint : list[tuple[dict[str, torch.Tensor], float]]
        Every (assignment, log joint) pair, in enumeration order.
    index_tuples : list[tuple[int, ...]]
        The flattened support indices of each entry of ``joint`` (for counting samples).
    """

    sites: dict
    log_evidence: float
    marginals: dict
    map_assignment: dict
    map_log_joint: float
    joint: list = field(repr=False)
    index_tuples: list = field(repr=False)

    @property
    def log_joints(self) -> torch.Tensor:
        return torch.tensor([lj for _, lj in self.joint], dtype=torch.float64)

    @property
    def probs(self) -> torch.Tensor:
        """Posterior probability of each entry of ``joint``."""
        return torch.exp(self.log_joints - self.log_evidence)

    def key(self, assignment: dict) -> tuple:
        """The flattened support-index tuple of ``assignment`` (site -> value tensor)."""
        out = []
        for name, site in self.sites.items():
            v = torch.as_tensor(assignment[name]).reshape(-1).to(torch.float64)
            sup = site.support.to(torch.float64)
            idx = (v[:, None] == sup[None, :]).to(torch.long).argmax(-1)
            out.extend(int(i) for i in idx)
        return tuple(out)


def split_data(model_fn, data: dict):
    """Split a ``data`` mapping into model-function keyword arguments and observations.

    Keys naming a parameter of ``model_fn`` are arguments; all other keys are treated as
    observed sample sites.
    """
    params = set(inspect.signature(model_fn).parameters)
    kwargs = {k: v for k, v in data.items() if k in params}
    observations = {k: v for k, v in data.items() if k not in params}
    return kwargs, observations


def _trace(model_fn, kwargs, data):
    return poutine.trace(poutine.condition(model_fn, data=data)).get_trace(**kwargs)


def latent_sites(model_fn, kwargs: dict, observations: dict) -> dict:
    """Discrete latent sites of one prior run (observations conditioned), in trace order.

    Raises
    ------
    ValueError
        If a latent sample site is not discrete (no ``enumerate_support``).
    """
    with torch.no_grad():
        tr = _trace(model_fn, kwargs, observations)
    sites = {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        fn = site["fn"]
        if not getattr(fn, "has_enumerate_support", False):
            raise ValueError(f"latent site {name!r} is not discrete: brute force needs enumerable latents")
        support = fn.enumerate_support(expand=False)
        k = support.shape[0]
        sites[name] = LatentSite(name, torch.Size(fn.batch_shape), support.reshape(k).clone())
    return sites


def log_joint(model_fn, kwargs: dict, observations: dict, assignment: dict, expected_latents=None) -> float:
    """``log p(observations, assignment)`` from Pyro's own trace, as a Python float.

    Parameters
    ----------
    expected_latents : iterable of str, optional
        If given, checks that the conditioned run has no other unconditioned sample sites.
    """
    data = {**observations, **assignment}
    with torch.no_grad():
        tr = _trace(model_fn, kwargs, data)
    if expected_latents is not None:
        extra = [
            n
            for n, s in tr.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s) and n not in data
        ]
        if extra:
            raise ValueError(f"sites {extra} were not enumerated (the model's latent set is not fixed)")
    return float(tr.log_prob_sum())


def brute_force(model_fn, kwargs: dict, observations: dict, latent_sites_=None) -> BruteForce:
    """Enumerate every joint assignment of the discrete latents of a Pyro model.

    Parameters
    ----------
    model_fn : callable
        A plain Pyro model.
    kwargs : dict
        Keyword arguments for ``model_fn``.
    observations : dict[str, torch.Tensor]
        Observed site values (conditioned with ``poutine.condition``).
    latent_sites_ : dict[str, LatentSite] or iterable of str, optional
        The latents to enumerate; default: every unobserved sample site of one prior run.

    Returns
    -------
    BruteForce
    """
    # Tiny tensors: intra-op threading only adds overhead (milliseconds per kernel for
    # some ops on small machines), so run the enumeration single-threaded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _brute_force(model_fn, kwargs, observations, latent_sites_)
    finally:
        torch.set_num_threads(threads)


def _brute_force(model_fn, kwargs, observations, latent_sites_):
    all_sites = latent_sites(model_fn, kwargs, observations)
    if latent_sites_ is None:
        sites = all_sites
    elif isinstance(latent_sites_, dict):
        sites = dict(latent_sites_)
    else:
        sites = {n: all_sites[n] for n in latent_sites_}
    total = math.prod(s.cardinality ** s.numel for s in sites.values())
    assert total < MAX_JOINT_STATES, f"{total} joint states: too many for brute force"

    # one axis per (site, flattened batch element)
    axes = [(name, site.cardinality) for name, site in sites.items() for _ in range(site.numel)]
    joint, tuples, values = [], [], []
    for combo in itertools.product(*(range(k) for _, k in axes)):
        assignment, pos = {}, 0
        for name, site in sites.items():
            assignment[name] = site.value(combo[pos : pos + site.numel])
            pos += site.numel
        lj = log_joint(model_fn, kwargs, observations, assignment, expected_latents=sites)
        joint.append((assignment, lj))
        tuples.append(combo)
        values.append(lj)

    lj = torch.tensor(values, dtype=torch.float64)
    log_z = float(torch.logsumexp(lj, 0))
    if not math.isfinite(log_z):
        raise ValueError("the observations have probability zero under the model")
    probs = torch.exp(lj - log_z)
    idx = torch.tensor(tuples, dtype=torch.long).reshape(len(tuples), len(axes))

    marginals, pos = {}, 0
    for name, site in sites.items():
        k, n = site.cardinality, site.numel
        m = torch.zeros(n, k, dtype=torch.float64)
        for e in range(n):
            m[e].index_add_(0, idx[:, pos + e], probs)
        marginals[name] = m.reshape(tuple(site.batch_shape) + (k,))
        pos += n

    best = int(torch.argmax(lj))
    return BruteForce(
        sites=sites,
        log_evidence=log_z,
        marginals=marginals,
        map_assignment=joint[best][0],
        map_log_joint=values[best],
        joint=joint,
        index_tuples=tuples,
    )
