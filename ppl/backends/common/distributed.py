"""Data-parallel inference on ``torch.distributed``: each rank holds a shard of the data plate.

Inside an initialised process group (``torch.distributed.init_process_group``, e.g. under
``torchrun``), ``ppl.infer(model, local_data, method=m, distributed=True)`` with ``m`` in
em, cavi, svi treats each rank's data as its share of the *data plate* (the plate whose
size is the rank's number of data points).  For data points that are conditionally
independent given the global variables, the log joint splits as

    log p(v, h) = Σ_{f outside the plate} log f  +  Σ_r Σ_{i in shard r} log f_i,

so every quantity a backend reads as a sum over data points adds across ranks:

* EM: the E-step's expected sufficient statistics and the log likelihood are sums over
  data points (Dempster, Laird & Rubin 1977; Bishop 2006, §9.2), so they add across shards;
* CAVI: a global factor's natural parameters ``η = ∂ E_q[ln p] / ∂ M`` are its prior's plus
  a sum of per-point contributions (Bishop 2006, §10.4; Hoffman, Blei, Wang & Paisley 2013,
  §2, eq. 15), and so is the ELBO;
* SVI: the gradient of the ELBO is a sum over data points (Hoffman et al. 2013, §2.4); each
  rank scales its plate by ``N / N_r`` and the gradients are averaged with weights
  ``N_r / N``, which gives the full-data gradient (data-parallel SGD, Li et al. 2020,
  "PyTorch Distributed").

Every rank evaluates the factors outside the data plate (priors, global observations) too,
so each rank weighs them by ``1 / W`` (their *share*) and the all-reduced sum counts them
once.  Reductions run in float64 on the process group's device (CPU for gloo, the current
CUDA device for nccl) and come back in the caller's dtype and device.

:func:`data_shard` checks the group, finds the data plate, compares the model's structure
across ranks and returns a :class:`Shard`; without ``distributed`` it returns
:data:`NO_SHARD`, whose methods leave everything as it is, so a backend calls the same
hooks in both cases.
"""

from __future__ import annotations

import hashlib
import math
import random

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from ...errors import DataError, ModelError, OptionError, UnsupportedModelError
from ...trust import RELIABLE, UNRELIABLE, Trust
from .runtime import count_observations

__all__ = ["NO_SHARD", "NoShard", "PlateScale", "Shard", "all_gather_objects", "all_reduce_sum", "comm_device",
           "data_shard", "is_initialized", "require_group", "shard_trust"]


# ------------------------------------------------------------------------ process group
def is_initialized() -> bool:
    """Whether a ``torch.distributed`` process group is initialised in this process."""
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized())


def require_group(method: str) -> None:
    """Raise unless a process group is initialised.

    Raises
    ------
    OptionError
        ``distributed=True`` outside a process group: says to call
        ``torch.distributed.init_process_group`` or to run under ``torchrun``."""
    if not is_initialized():
        raise OptionError(f"option distributed=True of method '{method}' needs an initialised torch.distributed "
                          "process group: call torch.distributed.init_process_group('gloo') (or 'nccl' on CUDA) "
                          "first, e.g. in a script started by torchrun --nproc_per_node N")


def comm_device() -> torch.device:
    """Where the group's collectives take tensors: the current CUDA device for a group
    whose only backend is nccl, else the CPU (gloo, mpi, or a group with both)."""
    backend = str(torch.distributed.get_backend()).lower()
    if "nccl" in backend and "gloo" not in backend and "cpu" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensors: list, op=None) -> list:
    """The element-wise sum (or ``op``) over ranks of each tensor, in one collective.

    Parameters
    ----------
    tensors : list[torch.Tensor]
        Any shapes, dtypes and devices (the same list on every rank).
    op : torch.distributed.ReduceOp, optional
        Default ``SUM``.

    Returns
    -------
    list[torch.Tensor]
        Each tensor's reduction, with its shape, dtype and device; the reduction itself is
        in float64 on :func:`comm_device`.
    """
    if not tensors:
        return []
    flat = torch.cat([t.detach().reshape(-1).to(device=comm_device(), dtype=torch.float64) for t in tensors])
    torch.distributed.all_reduce(flat, op=op or torch.distributed.ReduceOp.SUM)
    out, k = [], 0
    for t in tensors:
        n = t.numel()
        out.append(flat[k:k + n].reshape(t.shape).to(device=t.device, dtype=t.dtype))
        k += n
    return out


def all_gather_objects(obj) -> list:
    """``obj`` of every rank, in rank order (picklable, small: plate sizes and digests)."""
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _digest(value) -> str:
    """A short digest of a value (tensors by their bytes in float64 or int64)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        t = t.to(torch.float64) if t.is_floating_point() else t.to(torch.int64)
        data = repr(tuple(t.shape)).encode() + t.contiguous().numpy().tobytes()
    else:
        data = repr(value).encode()
    return hashlib.sha256(data).hexdigest()[:16]


# ------------------------------------------------------------------------ plate scaling
class PlateScale(Messenger):
    """Multiply the log density of every sample site inside plate ``plate`` by ``factor``:
    ``N / B`` for a subsampled plate (Pyro's ``plate(..., subsample_size=B)``; Hoffman et
    al. 2013, §2.4), ``N / N_r`` for a rank's shard, so its ELBO estimates the full data's."""

    def __init__(self, plate: str, factor: float):
        super().__init__()
        self.plate = plate
        self.factor = float(factor)

    def _process_message(self, msg):
        if msg["type"] == "sample" and any(f.name == self.plate for f in msg["cond_indep_stack"]):
            msg["scale"] = msg["scale"] * self.factor


# ------------------------------------------------------------------------ the shard
class NoShard:
    """Not distributed: every hook of :class:`Shard` leaves its argument as it is (sums are
    this process's own; nothing is broadcast, scaled or synchronised)."""

    active = False
    world_size, rank = 1, 0

    def _unchanged(self, value, *args):
        return value

    def _nothing(self, *args) -> None:
        return None

    sum_dict = sum_value = broadcast = scale_factors = scaled = reduced = weighted_mean = common_seed = \
        annotate = _unchanged
    sum_grads = sync_rng = _nothing

    def n_obs(self, graph) -> int:
        """Observed values of ``graph`` (:func:`~ppl.backends.common.runtime.count_observations`)."""
        return count_observations(graph)

    def share(self, name) -> float:
        """1: every factor is this process's own."""
        return 1.0

    def total(self, value) -> float:
        """``value`` as a float."""
        return float(value)

    max = total

    def reduce_block(self, site, grads):
        """``grads`` as they are."""
        return grads

    def rand(self, shape, plates, generator, dtype, device):
        """``torch.rand(shape)`` from ``generator``."""
        return torch.rand(shape, dtype=dtype, device=device, generator=generator)

    def diagnostics(self) -> dict:
        """Nothing to record."""
        return {}


#: The shard of a run that is not distributed.
NO_SHARD = NoShard()


class Shard(NoShard):
    """This rank's share of the data plate, and the collectives the backends call.

    Attributes
    ----------
    plate : str
        The data plate.
    world_size, rank : int
    sizes : list[int]
        The data plate's size on every rank (``N_r``), in rank order.
    local_size, global_size, offset : int
        ``N_r``, ``N = Σ N_r`` and ``Σ_{s < r} N_s`` (where this rank's points start in
        the global order).
    local_sites : frozenset[str]
        Sites (variables and their factors) inside the data plate.
    device : torch.device
        The run's device (its CUDA RNG is shared by :meth:`sync_rng`).
    """

    active = True

    def __init__(self, plate, sizes, rank, local_sites, n_obs, device=None):
        self.plate, self.sizes, self.rank = plate, list(sizes), int(rank)
        self.device = torch.device(device or "cpu")
        self.world_size = len(self.sizes)
        self.local_size, self.global_size = self.sizes[self.rank], sum(self.sizes)
        self.offset = sum(self.sizes[:self.rank])
        self.local_sites = frozenset(local_sites)
        self._n_obs = int(n_obs)

    # -------------------------------------------------------------- bookkeeping
    def n_obs(self, graph) -> int:
        """Observed values over every rank (the scale of per-observation tolerances)."""
        return self._n_obs

    def share(self, name) -> float:
        """The weight of site (or factor) ``name`` on this rank: 1 inside the data plate,
        ``1 / W`` outside it (every rank evaluates it; the sum over ranks counts it once)."""
        return 1.0 if name in self.local_sites else 1.0 / self.world_size

    def diagnostics(self) -> dict:
        """``{"distributed": {world_size, rank, global_plate_size, local_plate_size, plate}}``."""
        return {"distributed": {"world_size": self.world_size, "rank": self.rank,
                                "global_plate_size": self.global_size, "local_plate_size": self.local_size,
                                "plate": self.plate}}

    def annotate(self, posterior):
        """``posterior`` with :meth:`diagnostics` added to its ``diagnostics``."""
        posterior.diagnostics.update(self.diagnostics())
        return posterior

    # -------------------------------------------------------------- sums
    def total(self, value) -> float:
        """The sum over ranks of a scalar (a bound's terms), as a float."""
        return float(all_reduce_sum([torch.as_tensor(value, dtype=torch.float64).reshape(())])[0])

    def max(self, value) -> float:
        """The largest of a scalar over ranks (how far q moved)."""
        return float(all_reduce_sum([torch.as_tensor(float(value), dtype=torch.float64)],
                                    op=torch.distributed.ReduceOp.MAX)[0])

    def sum_dict(self, stats: dict, key=None) -> dict:
        """Each tensor of ``stats`` summed over ranks (expected sufficient statistics), keys
        in sorted order so every rank packs them alike (``key``, the param they are for, is
        not needed here)."""
        keys = sorted(stats)
        return dict(zip(keys, all_reduce_sum([stats[k] for k in keys])))

    def sum_value(self, x: torch.Tensor) -> torch.Tensor:
        """A scalar whose value is the sum of ``x`` over ranks and whose gradient is this
        rank's own (sum the gradients with :meth:`sum_grads` after ``backward``)."""
        total = all_reduce_sum([x.detach()])[0]
        return x + (total - x.detach())

    def sum_grads(self, tensors) -> None:
        """Replace each tensor's ``.grad`` by its sum over ranks (in place; None counts as 0)."""
        tensors = list(tensors)
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in tensors]
        for t, g in zip(tensors, all_reduce_sum(grads)):
            t.grad = g

    def weighted_mean(self, tensors):
        """``Σ_r (N_r / N) t_r`` of each tensor (or of one tensor): per-rank estimates of a
        full-data quantity (each scaled by ``N / N_r``) combined into the full-data value."""
        one = isinstance(tensors, torch.Tensor)
        items = [tensors] if one else list(tensors)
        w = self.local_size / self.global_size
        out = all_reduce_sum([t * w for t in items])
        return out[0] if one else out

    def reduce_block(self, site, grads):
        """A mean-field factor's natural-parameter gradients ``grads`` (a tuple of tensors)
        summed over ranks when its site ``site`` is global (outside the data plate); a
        local factor's own, unchanged."""
        if site in self.local_sites:
            return grads
        return tuple(all_reduce_sum(list(grads)))

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` (a starting point every rank must share)."""
        buf = tensor.detach().to(device=comm_device(), dtype=torch.float64).clone()
        torch.distributed.broadcast(buf, src=0)
        return buf.to(device=tensor.device, dtype=tensor.dtype).reshape(tensor.shape)

    def scale_factors(self, factors: dict) -> dict:
        """Factor name -> :class:`~ppl.ops.contract.LogFactor` with the tables of factors
        outside the data plate multiplied by ``1 / W`` (their share)."""
        return {n: f if n in self.local_sites else type(f)(f.table * self.share(n), f.plates, f.vars)
                for n, f in factors.items()}

    def rand(self, shape, plates, generator, dtype, device):
        """This rank's slice of a uniform draw over the *global* data plate: the draw of
        ``shape`` with the data plate's dim (its place in ``plates``) of the global size,
        cut at :attr:`offset`; so a seeded random start is the one-process start, sliced."""
        if self.plate not in plates:
            return torch.rand(shape, dtype=dtype, device=device, generator=generator)
        d = list(plates).index(self.plate)
        full = list(shape)
        full[d] = self.global_size
        return torch.rand(full, dtype=dtype, device=device, generator=generator).narrow(d, self.offset,
                                                                                        self.local_size)

    # -------------------------------------------------------------- SVI
    def scaled(self, fn):
        """``fn`` (a model or guide) with the data plate's log densities scaled by ``N / N_r``."""
        return PlateScale(self.plate, self.global_size / self.local_size)(fn)

    def reduced(self, loss_and_grads):
        """Wrap an ELBO's ``loss_and_grads``: after the local backward pass, the gradient of
        every param it touched and the loss become their weighted means over ranks
        (:meth:`weighted_mean`, one collective): the full-data ELBO's gradient when each rank
        runs the model under :meth:`scaled`."""
        def wrapped(model, guide, *args, **kwargs):
            with poutine.trace(param_only=True) as cap:
                loss = loss_and_grads(model, guide, *args, **kwargs)
            names = sorted(n for n, s in cap.trace.nodes.items() if s["type"] == "param")
            leaves = [cap.trace.nodes[n]["value"].unconstrained() for n in names]
            grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]
            values = [torch.as_tensor(v, dtype=torch.float64) for v in (loss if isinstance(loss, tuple) else (loss,))]
            out = self.weighted_mean(grads + values)
            for t, g in zip(leaves, out):
                if t.grad is not None:  # a param without a gradient is left without one, as Pyro leaves it
                    t.grad = g
            reduced = [float(v) for v in out[len(leaves):]]
            return tuple(reduced) if isinstance(loss, tuple) else reduced[0]

        return wrapped

    def sync_rng(self) -> None:
        """Every rank's torch RNG (the CPU one, and the run device's when it is CUDA) set to
        rank 0's: the guide's draws of global latents are then the same on every rank."""
        cuda = self.device.type == "cuda"
        states = [torch.get_rng_state()] + ([torch.cuda.get_rng_state(self.device)] if cuda else [])
        buf = torch.cat(states).to(comm_device())
        torch.distributed.broadcast(buf, src=0)
        buf = buf.cpu()
        torch.set_rng_state(buf[:states[0].numel()].clone())
        if cuda:
            torch.cuda.set_rng_state(buf[states[0].numel():].clone(), self.device)

    def common_seed(self, seed):
        """``seed``, or (None) a seed drawn on rank 0 and shared, so that every rank seeds alike."""
        if seed is not None:
            return seed
        buf = torch.tensor([random.SystemRandom().randrange(2 ** 31)], dtype=torch.int64, device=comm_device())
        torch.distributed.broadcast(buf, src=0)
        return int(buf.item())


# ------------------------------------------------------------------------ setting up
def data_shard(graph, option, method: str, *, local=(), global_=(), refuse=None, device=None) -> NoShard:
    """This rank's :class:`Shard` of ``graph`` (compiled from the rank's own data), or
    :data:`NO_SHARD` when ``option`` (the ``distributed`` option) is False.

    Collective: every rank of the group must call it, with the same model.

    Parameters
    ----------
    graph : FactorGraph
    option : bool or str
        ``True`` finds the data plate (the plate whose size differs between ranks; when
        all sizes agree, the one plate every observed plated site is in); a plate name
        names it.
    method : str
        For messages.
    local : sequence of str
        Latent sites that must be inside the data plate (EM: every latent; CAVI and SVI:
        the discrete ones).
    global_ : sequence of str
        Latent sites that must be outside it (SVI: the continuous ones the guide fits).
    refuse : dict, optional
        ``"name=value"`` -> whether that option setting is given: settings a distributed
        run of ``method`` does not support.
    device : torch.device, optional
        The run's device.

    Raises
    ------
    OptionError
        No initialised process group; a plate name the model lacks; an ambiguous data
        plate (pass its name); an option setting of ``refuse``.
    ModelError
        Ranks whose models differ (a plate, a site, or a plate other than the data plate
        of another size: named); no plate over the observed data; a factor outside the
        data plate over latents inside it.
    DataError
        A model argument or global observation (outside the data plate) that differs
        between ranks, or a rank without data points.
    UnsupportedModelError
        A latent of ``local`` outside the data plate, or of ``global_`` inside it.
    """
    if not option:
        return NO_SHARD
    require_group(method)
    for name, on in (refuse or {}).items():
        if on:
            raise OptionError(f"option {name} of method '{method}' cannot be combined with distributed=True (not "
                              "supported in data-parallel runs)")
    rank = torch.distributed.get_rank()
    # every decision below is taken from gathered values, so every rank raises alike
    observed = [sorted(graph.variables[v].plates) for v in graph.observed() if graph.variables[v].plates]
    everyone = all_gather_objects({"model": graph.model.name, "observed": observed,
                                   "plates": {n: (p.dim, p.size) for n, p in graph.plates.items()}})
    plate = _data_plate(everyone, option)
    local_sites = {n for n, v in graph.variables.items() if plate in v.plates}
    local_sites |= {n for n, f in graph.factors.items() if plate in f.plates}
    _check_structure(graph, plate, local_sites, rank)
    _check_placement(graph, plate, local_sites, method, local, global_)
    sizes = [e["plates"][plate][1] for e in everyone]
    if min(sizes) < 1:
        raise DataError(f"distributed=True: rank {sizes.index(min(sizes))} holds no data point of plate '{plate}'; "
                        "give every rank at least one")
    in_plate = sum(math.prod(graph.variables[v].batch_shape or (1,)) for v in graph.observed() if v in local_sites)
    n_obs = max(1, int(Shard(plate, sizes, rank, local_sites, 0).total(in_plate))
                + count_observations(graph) - in_plate)
    return Shard(plate, sizes, rank, local_sites, n_obs, device)


def _data_plate(everyone, option) -> str:
    """The data plate from every rank's ``{"model", "observed": plates of each observed
    site, "plates": name -> (dim, size)}``."""
    first = everyone[0]
    for r, e in enumerate(everyone):
        if e["model"] != first["model"]:
            raise ModelError(f"distributed=True: rank {r} runs model '{e['model']}' and rank 0 '{first['model']}'; "
                             "every rank must run the same model")
        names = set(e["plates"]) ^ set(first["plates"])
        if names:
            raise ModelError(f"distributed=True: plate(s) {sorted(names)} of model '{first['model']}' exist on only "
                             f"some ranks (rank 0 and rank {r} differ); every rank must have the same plates")
        for n, (dim, _) in e["plates"].items():
            if dim != first["plates"][n][0]:
                raise ModelError(f"distributed=True: plate '{n}' has dim {dim} on rank {r} and "
                                 f"{first['plates'][n][0]} on rank 0")
    varying = sorted(n for n in first["plates"] if len({e["plates"][n][1] for e in everyone}) > 1)
    if isinstance(option, str):
        if option not in first["plates"]:
            raise OptionError(f"option distributed={option!r}: model '{first['model']}' has no plate named "
                              f"{option!r}; its plates: {sorted(first['plates'])}")
        other = [n for n in varying if n != option]
        if other:
            raise ModelError(f"distributed: plate '{other[0]}' has different sizes on different ranks "
                             f"({[e['plates'][other[0]][1] for e in everyone]}) but is not the data plate "
                             f"'{option}'; only the data plate's size may differ between ranks")
        return option
    if len(varying) > 1:
        raise ModelError(f"distributed=True: plates {varying} have different sizes on different ranks; only one "
                         "plate, the data plate, may differ (pass distributed='<plate name>' to say which)")
    if varying:
        return varying[0]
    sets = [set(p) for p in first["observed"]]
    candidates = sorted(set.intersection(*sets)) if sets else []
    if not candidates:
        raise ModelError(f"distributed=True: model '{first['model']}' has no plate over its observed data (the "
                         "data plate each rank holds a shard of): put the observations in a ppl.plate")
    if len(candidates) > 1:
        raise OptionError(f"distributed=True: every rank's plates have the same sizes, so the data plate is one of "
                          f"{candidates} (each holds every observed site): pass distributed='<plate name>'")
    return candidates[0]


def _site_key(graph, name, plate) -> tuple:
    """What must agree between ranks about variable ``name``: its role, family, support,
    shapes (the data plate's dim masked) and plates, and its factor's scope."""
    v = graph.variables[name]
    batch = list(v.batch_shape)
    dim = graph.plates[plate].dim
    if plate in v.plates and -len(batch) <= dim < 0:
        batch[dim] = -1
    f = graph.factors.get(name)
    return (v.role, v.family, v.support, v.cardinality, tuple(v.event_shape), tuple(batch), tuple(v.plates),
            (f.family, tuple(f.scope), tuple(f.plates)) if f is not None else None)


def _check_structure(graph, plate, local_sites, rank) -> None:
    """Compare every rank's sites (a digest each), factors, and the values of arguments and
    observations outside the data plate; raise naming the first difference."""
    size = graph.plates[plate].size
    sites = {n: _digest(_site_key(graph, n, plate)) for n in graph.variables}
    sites.update({f"factor {n}": _digest((f.family, tuple(f.scope), tuple(f.plates)))
                  for n, f in graph.factors.items() if n not in graph.variables})
    values = {}
    for k, v in graph.bound.kwargs.items():  # an argument with the plate's size is the rank's data
        if isinstance(v, torch.Tensor) and size in v.shape or type(v) is int and v == size \
                or not isinstance(v, (torch.Tensor, int, float, str)):  # other objects: no reliable digest
            continue
        values[f"argument '{k}'"] = _digest(v)
    values.update({f"observation '{k}'": _digest(v) for k, v in graph.bound.observations.items()
                   if k not in local_sites})
    everyone = all_gather_objects({"sites": sites, "values": values})
    mine = everyone[rank]
    for r, e in enumerate(everyone):
        missing = sorted(set(e["sites"]) ^ set(mine["sites"]))
        if missing:
            raise ModelError(f"distributed=True: site(s) {missing} of model '{graph.model.name}' exist on only some "
                             f"ranks (ranks {rank} and {r} differ); every rank must trace the same sites")
        bad = [n for n in mine["sites"] if e["sites"][n] != mine["sites"][n]]
        if bad:
            raise ModelError(f"distributed=True: site '{bad[0]}' of model '{graph.model.name}' differs between ranks "
                             f"{rank} and {r} (family, support, shape, plates or scope); only the size of the data "
                             f"plate '{plate}' may differ between ranks")
        bad = [n for n in mine["values"] if e["values"].get(n) != mine["values"][n]]
        if bad:
            raise DataError(f"distributed=True: {bad[0]} differs between ranks {rank} and {r}; values outside the "
                            f"data plate '{plate}' (priors, constants, global observations) must be the same on every "
                            "rank (compute them from the global data, e.g. with torch.distributed.all_reduce)")


def _check_placement(graph, plate, local_sites, method, local, global_) -> None:
    """A factor outside the plate may not depend on latents inside it; ``local`` latents
    must be inside, ``global_`` latents outside."""
    for n, f in graph.factors.items():
        inside = [v for v in f.scope if v in local_sites and graph.variables[v].role == "latent"]
        if n not in local_sites and inside:
            raise ModelError(f"distributed=True: factor '{n}' lies outside the data plate '{plate}' but depends on "
                             f"the per-point latent(s) {inside}: it couples every shard's points, so the model does "
                             "not split over ranks")
    outside = [v for v in local if v not in local_sites]
    if outside:
        raise UnsupportedModelError(
            f"method '{method}' with distributed=True needs these latents inside the data plate '{plate}', but "
            f"{outside} {'is' if len(outside) == 1 else 'are'} outside it: a latent shared by every data point "
            "couples the shards' sums (make it a ppl.param, or run on one process)")
    inside = [v for v in global_ if v in local_sites]
    if inside:
        raise UnsupportedModelError(
            f"method '{method}' with distributed=True fits global latents only, but {inside} "
            f"{'is a latent' if len(inside) == 1 else 'are latents'} of the data plate '{plate}' (one per data "
            "point): sum it out (a discrete latent), or run on one process")


# ------------------------------------------------------------------------ trust
def shard_trust(posterior, trust: Trust) -> Trust:
    """The verdict every rank of a distributed run reports, from each rank's own ``trust``
    of ``posterior`` (a run without ``diagnostics["distributed"]``: ``trust`` as it is).

    Collective: every rank calls it after the same run.  Each rank's check saw only its
    shard, so: a check of the discrete marginals against exact inference (every latent
    inside the data plate, so each rank's exact marginals are those of one process) is
    reliable only when it is on every rank, with the largest error over the ranks; a
    verdict that needs no data (e.g. jointly drawn blocks) stands when every rank reached
    it; anything else (PSIS: its weights would need every rank's data in one log weight) is
    unreliable, as not checked.  The per-shard exact log evidence and KL gap are dropped.

    Returns
    -------
    Trust
        The same on every rank.
    """
    if "distributed" not in posterior.diagnostics or not is_initialized():
        return trust
    numbers = dict(trust.numbers)
    kind = "exact" if "max_marginal_error" in numbers else ("psis" if "psis_khat" in numbers else "fixed")
    everyone = all_gather_objects((kind, trust.verdict, numbers.get("max_marginal_error"), list(trust.reasons),
                                   trust.next_method))
    posterior.diagnostics.pop("exact_log_evidence", None)
    kinds = {e[0] for e in everyone}
    if kinds == {"exact"}:
        worst = max(range(len(everyone)), key=lambda r: everyone[r][2])
        ok = all(e[1] == RELIABLE for e in everyone)
        _, _, err, reasons, next_method = everyone[worst]
        reasons = [f"checked on every rank's shard (the largest error over ranks, rank {worst}): {r}" for r in reasons]
        return Trust(RELIABLE if ok else UNRELIABLE, reasons, {"max_marginal_error": err},
                     next_method=None if ok else next_method)
    if kinds == {"fixed"} and len({(e[1], tuple(e[3])) for e in everyone}) == 1:
        return Trust(trust.verdict, list(trust.reasons), {k: v for k, v in numbers.items() if k != "kl_gap"},
                     next_method=trust.next_method)
    return Trust(UNRELIABLE, ["a distributed run's approximation is not checked against the model: its importance "
                              "weights would need every rank's data in one log weight (not implemented); check a "
                              "subsample on one process"], {}, next_method=trust.next_method)
