"""Streaming over minibatches of the data plate: the loop shared by online EM and SVI.

A stream is a callable returning a fresh iterator of data dicts, each one minibatch B of
the *data plate* (the plate of i.i.d. data points) of size N.  For data points that are
independent given the global variables, every quantity EM and CAVI read as a sum over the
data plate is a sum over points, so a minibatch gives an unbiased estimate of it when its
sum is scaled by ``N / |B|``.  What is done with those sums is the backend's own:

* online EM (Cappé & Moulines 2009, "On-line expectation-maximization algorithm for latent
  data models", JRSS-B 71(3), eq. 7-8): the E-step's expected sufficient statistics of the
  batch, scaled to N, are averaged by stochastic approximation
  ``s ← (1 − γ_k) s + γ_k ŝ_B`` and the M-step is the closed-form maximiser ``θ̄(s)``;
* stochastic variational inference (Hoffman, Blei, Wang & Paisley 2013, "Stochastic
  variational inference", JMLR 14, Alg. 1, eq. 25-26): the local factors by their CAVI
  update, the global natural parameters ``λ̂ = prior + (N / |B|) Σ_{i∈B} (per point)`` and
  ``λ ← (1 − ρ_t) λ + ρ_t λ̂``.

The separation is the one of data-parallel runs (:mod:`ppl.backends.common.distributed`):
a backend calls the same hooks (``share``, ``scale_factors``, ``sum_dict``, ...) on a
:class:`StreamHook`, which weighs the factors inside and outside the data plate and keeps
the running averages, as it calls them on a :class:`~ppl.backends.common.distributed.Shard`
to all-reduce.  :class:`BatchStructures` compiles the model once per distinct batch shape
and rebinds each new batch's values in place (checked once per shape against a fresh
compile); :func:`run_stream` is the loop over epochs and batches, with the step sizes, the
global size N, the final evaluation pass and the movement criterion of ``converged``;
:func:`stream_trust` is the verdict.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np
import torch

from ...analysis.report import analyze_graph
from ...compiler import compile as compile_model
from ...errors import DataError, ModelError, OptionError
from ...trust import RELIABLE, UNRELIABLE, Trust
from .distributed import NoShard

__all__ = ["first_batch", "StreamHook", "BatchStructures", "StreamProblem", "step_size", "run_stream", "stream_trust",
           "data_plate", "stream_refusals", "check_batch", "fixed_arguments"]


def step_size(k: int, offset: float, power: float) -> float:
    """The Robbins-Monro step ``(k + offset) ** -power`` of update ``k = 1, 2, ...``
    (Cappé & Moulines 2009, §2.2: Σγ = ∞, Σγ² < ∞ for power κ in (0.5, 1]; Hoffman et al.
    2013, eq. 26: ρ_t = (t + τ)^-κ).  At most 1."""
    return min(1.0, float(k + offset) ** (-float(power)))


def stream_refusals(method: str, options: dict) -> None:
    """Raise for option settings a streamed fit does not take.

    Raises
    ------
    OptionError
        ``stream`` with ``distributed``, ``n_init > 1``, ``map_latents`` or
        ``learn_params`` (named)."""
    for name, on in options.items():
        if on:
            raise OptionError(f"option {name} of method '{method}' cannot be combined with stream= (not supported "
                              "in streamed fits; see docs/streaming.md)")


# ------------------------------------------------------------------------ the data plate
def data_plate(graph, keys) -> str:
    """The data plate of ``graph`` compiled on one batch: the one plate that holds every
    observed site (the plate over the data points).

    Raises
    ------
    ModelError
        No plate holds every observed site, or several do (nested data plates are not
        streamed)."""
    observed = [set(graph.variables[v].plates) for v in graph.observed()]
    common = sorted(set.intersection(*observed)) if observed else []
    if len(common) != 1:
        what = "no plate holds" if not common else f"several plates {common} hold"
        raise ModelError(f"stream=: {what} every observed site of model '{graph.model.name}'; a stream is split "
                         "along one plate of i.i.d. data points (put the observations in one ppl.plate)")
    return common[0]


# ------------------------------------------------------------------------ the hook
class StreamHook(NoShard):
    """The hooks a backend calls (as on a distributed Shard) for one batch shape.

    Factors inside the data plate (``local_sites``) get weight ``w_local``, the others
    ``w_global`` (:meth:`share`, :meth:`scale_factors`); a backend sets the pair for what
    it computes: ``(1, |B| / N)`` for a batch's share of the full-data bound (the global
    factors then count once over an epoch that covers the data once), ``(N / |B|, 1)`` for
    the intermediate global parameters of SVI (Hoffman et al. 2013, eq. 25).

    :meth:`sum_dict` is online EM's stochastic-approximation step on the expected
    sufficient statistics (Cappé & Moulines 2009, eq. 7): the batch's statistics (summed
    with the weights ``(1, |B| / N)``) are scaled by ``N / |B|`` and averaged into the
    running ``averages[key]`` with step :attr:`gamma`.

    Attributes
    ----------
    plate : str
    local_sites : frozenset[str]
        Variables and factors inside the data plate.
    batch_size, num_points : int
        ``|B|`` and N.
    averages : dict
        Shared by every shape's hook: key -> running statistics (tensors).
    gamma : float
        The current step (set by :func:`run_stream`).
    """

    def __init__(self, plate, local_sites, batch_size, num_points, averages):
        self.plate, self.local_sites = plate, frozenset(local_sites)
        self.batch_size, self.num_points = int(batch_size), int(num_points)
        self.averages = averages
        self.gamma = 1.0
        #: In a full-data pass, EM's closed forms take their statistics about the E-step's θ
        #: (not the θ updated so far in the M-step), so that the statistics of different
        #: batches add up to the full data's (:func:`_evaluation_pass`).
        self.centre_at_e_step = False
        self.weights = (1.0, self.batch_size / self.num_points)

    def share(self, name) -> float:
        """The weight of site (or factor) ``name``: ``w_local`` inside the plate, ``w_global`` outside."""
        return self.weights[0] if name in self.local_sites else self.weights[1]

    def scale_factors(self, factors: dict) -> dict:
        """Factor name -> LogFactor with its table multiplied by its :meth:`share`."""
        return {n: f if self.share(n) == 1.0 else type(f)(f.table * self.share(n), f.plates, f.vars)
                for n, f in factors.items()}

    def n_obs(self, graph) -> int:
        """N (the tolerance scale of a bound per observed value)."""
        return self.num_points

    def sum_dict(self, stats: dict, key=None) -> dict:
        """``s_key ← (1 − γ) s_key + γ (N / |B|) stats`` (the first time: ``(N / |B|) stats``),
        returned as a new dict of tensors of the shapes of ``stats``."""
        scale = self.num_points / self.batch_size
        new = {k: v * scale for k, v in stats.items()}
        old = self.averages.get(key)
        if old is not None and self.gamma < 1.0:
            new = {k: (1.0 - self.gamma) * old[k] + self.gamma * v for k, v in new.items()}
        self.averages[key] = new
        return dict(new)


# ------------------------------------------------------------------------ the problem
class StreamProblem(ABC):
    """What a backend plugs into :func:`run_stream` (subclass and override).

    ``build(graph, analysis, hook)`` returns the backend's compiled structure of one batch
    shape; ``refresh(built)`` drops what it derived from the batch's values (called after
    each in-place rebinding); ``start(built)`` the global state from the first batch;
    ``update(built, state, step)`` one minibatch step, returning ``(state, value)`` with
    ``value`` the batch's part of the bound before the step; ``evaluate(built, state)``
    the batch's exact part of the full-data bound at ``state``; ``blocks(state)`` the
    global parameters as tensors (for the movement criterion).  ``first_step_full``: the
    first update takes step 1 (online EM's statistics start from the first batch's)."""

    first_step_full = False
    #: The evaluation pass also takes one full-data step from the final state (the problem's
    #: ``update`` with exact sums: online EM's batch EM step); the fit is ``converged`` only
    #: if that step moves no global parameter more than ``stream_tol`` either: the final
    #: state is then (nearly) a fixed point of the batch algorithm, not only a slow walk.
    fixed_point_check = False

    @abstractmethod
    def build(self, graph, analysis, hook):
        """The backend's compiled structure of one batch shape, with ``hook`` as its shard."""

    def refresh(self, built) -> None:
        return None

    @abstractmethod
    def start(self, built):
        """The global state from the first batch's structure."""

    @abstractmethod
    def update(self, built, state, step):
        """One minibatch step: ``(new state, the batch's bound before the step)``."""

    @abstractmethod
    def evaluate(self, built, state) -> float:
        """The batch's exact part of the full-data bound at ``state``."""

    @abstractmethod
    def blocks(self, state) -> list:
        """The global parameters of ``state`` as tensors (the movement criterion)."""


# ------------------------------------------------------------------------ batch structures
class BatchStructures:
    """Compiled structures per batch shape: the model is traced, analysed and built once
    per distinct batch size; a later batch of that shape is copied into the compiled
    graph's data tensors in place (no trace), and the first such rebinding of each shape
    is checked against a fresh compile (``problem.evaluate`` at the same state, to 1e-9
    relative); where it differs (a model that derives constants from its data), every
    batch of that shape is compiled afresh.

    Parameters
    ----------
    problem : StreamProblem
    graph, analysis
        Of the template batch ``infer`` compiled (its shape is cached as it is).
    fixed : dict
        The model's other arguments (outside the stream).
    keys : list[str]
        The keys every batch holds.
    num_points : int
    """

    def __init__(self, problem, graph, analysis, fixed, keys, num_points):
        self.problem, self.model, self.fixed, self.keys = problem, graph.model, dict(fixed), list(keys)
        self.num_points = int(num_points)
        self.settings = (analysis.heuristic, analysis.memory_budget, analysis.itemsize)
        self.plate = data_plate(graph, keys)
        self.averages: dict = {}
        self.shapes: dict = {}              # batch size -> [built, hook, graph, mode]
        self.trailing = None
        self.compiles = 0
        self.rebind_mode = {}
        self.setup_seconds = 0.0
        self._template = (graph, analysis)

    def _compile(self, batch):
        t = time.perf_counter()
        graph = compile_model(self.model, {**self.fixed, **batch})
        analysis = analyze_graph(graph, heuristic=self.settings[0], memory_budget=self.settings[1],
                                 itemsize=self.settings[2])
        self.compiles += 1
        self.setup_seconds += time.perf_counter() - t
        return graph, analysis

    def _build(self, graph, analysis, size):
        t = time.perf_counter()
        local = {n for n, v in graph.variables.items() if self.plate in v.plates}
        local |= {n for n, f in graph.factors.items() if self.plate in f.plates}
        hook = StreamHook(self.plate, local, size, self.num_points, self.averages)
        built = self.problem.build(graph, analysis, hook)
        self.setup_seconds += time.perf_counter() - t
        return built, hook

    def get(self, batch: dict, state):
        """``(built, hook)`` for ``batch`` (values already checked by :func:`check_batch`)."""
        size = int(next(iter(batch.values())).shape[0])
        entry = self.shapes.get(size)
        if entry is None:
            graph, analysis = self._template
            self._template = (None, None)
            if graph is None or graph.plates[self.plate].size != size:
                graph, analysis = self._compile(batch)
            _rebind(graph, batch)
            built, hook = self._build(graph, analysis, size)
            self.shapes[size] = entry = [built, hook, graph, "first"]
            self.rebind_mode[size] = "compiled"
            return built, hook
        built, hook, graph, mode = entry
        if mode == "recompile":
            g, a = self._compile(batch)
            built, hook = self._build(g, a, size)
            return built, hook
        _rebind(graph, batch)
        self.problem.refresh(built)
        if mode == "first" and state is not None:     # check in-place rebinding once per shape
            g, a = self._compile(batch)
            fresh, fresh_hook = self._build(g, a, size)
            mine, theirs = self.problem.evaluate(built, state), self.problem.evaluate(fresh, state)
            same = math.isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-9)
            entry[3] = "checked" if same else "recompile"
            self.rebind_mode[size] = "in place (checked against a fresh compile)" if same else \
                "compiled per batch (rebinding in place did not reproduce a fresh compile)"
            if not same:
                return fresh, fresh_hook
        return built, hook


def _rebind(graph, batch) -> None:
    """Copy ``batch``'s values into the tensors ``graph`` was compiled with (model arguments
    or observed sites), in place.

    Raises
    ------
    DataError
        A value with another shape than the compiled one, or non-finite values."""
    for k, v in batch.items():
        target = graph.bound.kwargs.get(k) if k in graph.bound.kwargs else graph.bound.observations.get(k)
        if not isinstance(target, torch.Tensor):
            raise DataError(f"stream=: batch key '{k}' is neither a tensor argument of model '{graph.model.name}' nor "
                            "an observed site")
        if tuple(v.shape) != tuple(target.shape):
            raise DataError(f"stream=: batch value '{k}' has shape {tuple(v.shape)}, the compiled batch "
                            f"{tuple(target.shape)}")
        if v.data_ptr() != target.data_ptr():
            target.copy_(v.to(dtype=target.dtype))


def check_batch(batch, keys, trailing, index: int) -> dict:
    """``batch`` as tensors, checked against the first batch's keys and trailing shapes.

    Raises
    ------
    DataError
        Not a mapping; a key missing (or extra); an empty batch; a leading size that
        differs between the batch's values; trailing dims other than the first batch's;
        non-finite floating values."""
    if not isinstance(batch, Mapping):
        raise DataError(f"stream=: batch {index} is a {type(batch).__name__}, not a dict of arrays "
                        "(e.g. {'x': tensor of shape (B, D)})")
    missing = [k for k in keys if k not in batch]
    extra = [k for k in batch if k not in keys]
    if missing or extra:
        raise DataError(f"stream=: batch {index} has keys {sorted(batch)}, the first batch {sorted(keys)}"
                        f"{f' (missing {missing})' if missing else ''}; every batch must hold the same keys")
    out, sizes = {}, set()
    for k in keys:
        v = batch[k]
        t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
        if t.dim() == 0:
            raise DataError(f"stream=: batch {index} value '{k}' is a scalar; a batch is a slice of the data plate "
                            "along its first dim")
        if t.is_floating_point():
            t = t.to(torch.float64)             # ppl's precision (a float32 memory map is read as float64)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DataError(f"stream=: batch {index} value '{k}' holds NaN or inf")
        sizes.add(int(t.shape[0]))
        if trailing is not None and tuple(t.shape[1:]) != trailing[k]:
            raise DataError(f"stream=: batch {index} value '{k}' has shape {tuple(t.shape)}; the first batch's was "
                            f"(B,) + {trailing[k]}: batches may differ only in their first (data plate) dim")
        out[k] = t
    if len(sizes) != 1:
        raise DataError(f"stream=: batch {index} values have different first dims {sorted(sizes)} (the batch size)")
    if sizes == {0}:
        raise DataError(f"stream=: batch {index} is empty (0 data points)")
    return out


def first_batch(stream) -> dict:
    """The first batch of ``stream`` (``stream=``), checked as every batch is: the data
    ``ppl.infer`` compiles the model on (it fixes the structure; every batch, this one
    included, is read again in each epoch).

    Raises
    ------
    OptionError
        ``stream`` not callable, or calling it gives no iterable.
    DataError
        An empty stream, or a first batch that is not a dict of arrays (:func:`check_batch`).
    """
    if not callable(stream):
        raise OptionError(f"stream= (a {type(stream).__name__}) must be a callable returning a fresh iterator of "
                          "data dicts (e.g. ppl.stream_npy(path, key='x', batch_size=10_000))")
    first = next((batch for _, batch in _read(stream)), None)
    if first is None:
        raise DataError("stream=: the stream yielded no batch (an empty stream)")
    return check_batch(first, sorted(first) if isinstance(first, Mapping) else [], None, 1)


def _read(stream):
    """``(n, batch)`` of a fresh iterator of ``stream()``, n from 1.  An exception of the
    user's stream (calling it, or reading a batch: a missing column, a file that is gone)
    is a :class:`DataError` naming the stream and the batch; ppl's own errors pass."""
    try:
        produced = stream()
    except (DataError, ModelError, OptionError):
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: named, not swallowed
        raise DataError(f"stream=: calling the stream {_name(stream)} raised {type(e).__name__}: {e}") from e
    try:
        it = iter(produced)
    except TypeError as e:
        raise OptionError(f"option stream: calling it must return an iterable of data dicts ({e})") from None
    n = 0
    while True:
        n += 1
        try:
            batch = next(it)
        except StopIteration:
            return
        except (DataError, ModelError, OptionError):
            raise
        except Exception as e:  # noqa: BLE001
            raise DataError(f"stream=: the stream {_name(stream)} raised {type(e).__name__}: {e} while reading "
                            f"batch {n}") from e
        yield n, batch


def _name(stream) -> str:
    return repr(getattr(stream, "__qualname__", None) or type(stream).__name__)


def _batches(stream, keys=None, trailing=None):
    """Checked batches of a fresh iterator of ``stream()``; raises DataError for an empty stream."""
    n = 0
    for n, batch in _read(stream):
        if keys is None:
            keys = sorted(batch) if isinstance(batch, Mapping) else []
            checked = check_batch(batch, keys, None, n)
            trailing = {k: tuple(v.shape[1:]) for k, v in checked.items()}
            yield checked, keys, trailing
            continue
        yield check_batch(batch, keys, trailing, n), keys, trailing
    if n == 0:
        raise DataError("stream=: the stream yielded no batch (an empty stream, or an iterator, not a callable "
                        "returning a fresh one, already used up)")


def _count(stream) -> int:
    """N by one pass over the stream (only the batch sizes are read)."""
    return sum(int(next(iter(b.values())).shape[0]) for b, _, _ in _batches(stream))


# ------------------------------------------------------------------------ the loop
def _moved(a: list, b: list) -> float:
    """The largest relative change ``‖a_i − b_i‖∞ / ‖b_i‖∞`` over the blocks."""
    out = 0.0
    for x, y in zip(a, b):
        scale = float(y.abs().max()) if y.numel() else 0.0
        out = max(out, float((x - y).abs().max()) / max(scale, 1e-300) if x.numel() else 0.0)
    return out


def run_stream(problem, graph, analysis, o, fixed) -> dict:
    """Fit ``problem`` to ``o.stream``: ``o.epochs`` passes, update ``k`` with step
    :func:`step_size` ``(k, o.step_offset, o.step_power)`` (step 1 for the first when
    ``problem.first_step_full``), then one evaluation pass at the final global state.

    Parameters
    ----------
    problem : StreamProblem
    graph, analysis
        Compiled on the template batch given to ``ppl.infer``.
    o : SimpleNamespace
        The backend's options (``stream``, ``epochs``, ``step_offset``, ``step_power``,
        ``num_points``, ``stream_tol``).
    fixed : dict
        The model's arguments outside the stream (``graph.bound.kwargs`` less the batch keys).

    Returns
    -------
    dict
        ``state`` (global), ``history`` (per epoch: the sum over its batches of each
        batch's bound before its step), ``value`` (the evaluation pass: the full-data bound
        at the final state), ``converged``, ``moved`` (per epoch), ``structures`` and the
        ``diagnostics["stream"]`` entry.

    Raises
    ------
    DataError
        Bad batches (:func:`check_batch`), an empty stream, batches that do not sum to
        ``num_points`` in an epoch.
    """
    n_points = o.num_points or getattr(o.stream, "num_points", None) or _count(o.stream)
    keys, structures, state, k = None, None, None, 0
    history, moves, gamma = [], [], 1.0
    start = time.perf_counter()
    for epoch in range(o.epochs):
        before = [b.clone() for b in problem.blocks(state)] if state is not None else None
        total, seen = 0.0, 0
        for batch, keys, _ in _batches(o.stream, keys, structures and structures.trailing):
            if structures is None:
                structures = BatchStructures(problem, graph, analysis, fixed, keys, n_points)
                structures.trailing = {k_: tuple(v.shape[1:]) for k_, v in batch.items()}
            built, hook = structures.get(batch, state)
            if state is None:
                state = problem.start(built)
                before = [b.clone() for b in problem.blocks(state)]
            k += 1
            gamma = 1.0 if (k == 1 and problem.first_step_full) else step_size(k, o.step_offset, o.step_power)
            hook.gamma = gamma
            state, value = problem.update(built, state, gamma)
            total += value
            seen += hook.batch_size
        if seen != n_points:
            raise DataError(f"stream=: epoch {epoch + 1} held {seen} data points but num_points is {n_points}; "
                            "pass num_points=N (the size of the data plate), or a stream that covers it once")
        history.append(total)
        moves.append(_moved(problem.blocks(state), before))
    value, step_state = _evaluation_pass(problem, structures, o.stream, keys, state)
    gap = _moved(problem.blocks(step_state), problem.blocks(state)) if step_state is not None else None
    polished = 0
    while gap is not None and gap >= o.stream_tol and polished < getattr(o, "polish_passes", 0):
        state = step_state  # a batch step over the stream, then the next pass evaluates it
        value, step_state = _evaluation_pass(problem, structures, o.stream, keys, state)
        gap = _moved(problem.blocks(step_state), problem.blocks(state))
        polished += 1
    if polished:  # the walk of the epochs is over: converged is batch EM's own criterion
        converged = gap < o.stream_tol
    else:
        converged = moves[-1] < o.stream_tol and (gap is None or gap < o.stream_tol)
    diag = {"batches": k, "batches_per_epoch": k // o.epochs, "epochs": o.epochs, "num_points": n_points,
            "final_step": gamma, "step_offset": o.step_offset, "step_power": o.step_power,
            "moved_last_epoch": moves[-1], "moved_per_epoch": moves, "stream_tol": o.stream_tol,
            "batch_step_moves": gap, "polish_passes": polished,
            "compiles": structures.compiles, "rebinding": dict(structures.rebind_mode),
            "setup_seconds": structures.setup_seconds, "seconds": time.perf_counter() - start,
            "plate": structures.plate}
    return {"state": state, "history": history, "value": value, "converged": converged, "moved": moves,
            "structures": structures, "diagnostics": diag}


def _evaluation_pass(problem, structures, stream, keys, state):
    """One pass over the stream at the global ``state``: ``(value, step_state)``, the
    full-data bound at ``state`` and, for a problem with ``fixed_point_check``, the state
    one full-data step from it (every batch's update at ``state``, with steps
    ``|B| / seen`` so the running statistics end as the exact sums: batch EM's step), else
    ``None``."""
    value, step_state, seen = 0.0, None, 0
    for batch, _, _ in _batches(stream, keys, structures.trailing):
        built, hook = structures.get(batch, state)
        if problem.fixed_point_check:
            seen += hook.batch_size
            hook.gamma = hook.batch_size / seen
            hook.centre_at_e_step = True
            try:
                step_state, part = problem.update(built, state, hook.gamma)
            finally:
                hook.centre_at_e_step = False
            value += float(part)
        else:
            value += problem.evaluate(built, state)
    return value, step_state


def fixed_arguments(graph, stream) -> dict:
    """The model's arguments outside the stream: ``graph.bound.kwargs`` less the keys of the
    stream's batches (read from its first batch)."""
    first = next(iter(_batches(stream)))[0]
    return {k: v for k, v in graph.bound.kwargs.items() if k not in first}


# ------------------------------------------------------------------------ trust
def stream_trust(posterior, converged_reason: str, checked: bool) -> Trust:
    """The verdict of a streamed fit (``posterior.diagnostics["stream"]``).

    ``converged`` means that no global parameter moved more than ``stream_tol`` (relative,
    ``‖Δ‖∞ / ‖θ‖∞`` per parameter block) over the last epoch.  Without it the verdict is
    unreliable ("run more epochs").  With it, ``checked`` says whether the backend's own
    verdict applies (online EM: a point estimate at a fixed point, ``converged_reason``);
    otherwise (SVI: q cannot be checked against the model without every data point in one
    importance weight) it is unreliable as not checked.

    Returns
    -------
    Trust
    """
    d = posterior.diagnostics["stream"]
    numbers = {"epochs": d["epochs"], "batches": d["batches"], "moved_last_epoch": d["moved_last_epoch"],
               "final_step": d["final_step"]}
    gap = d.get("batch_step_moves")
    if gap is not None:
        numbers["batch_step_moves"] = gap
    if not posterior.converged:
        if d["moved_last_epoch"] < d["stream_tol"]:  # the walk slowed down, but a full-data step still moves it
            return Trust(UNRELIABLE, [f"the streamed fit is not at a fixed point: one full-data step from its "
                                      f"final parameters moves them by {gap:.3g} (relative) >= stream_tol="
                                      f"{d['stream_tol']:g}, although they moved less over the last epoch (the "
                                      "step size shrank); run more epochs, or a larger step_power/smaller "
                                      "step_offset"], numbers, next_method=posterior.method)
        return Trust(UNRELIABLE, [f"the streamed fit stopped while its global parameters were still moving: "
                                  f"{d['moved_last_epoch']:.3g} (relative) over the last epoch >= stream_tol="
                                  f"{d['stream_tol']:g}; run more epochs (epochs=)"], numbers,
                     next_method=posterior.method)
    if checked:
        return Trust(RELIABLE, [converged_reason], numbers)
    return Trust(UNRELIABLE, [f"{converged_reason}, but q is not checked against the model: its importance weights "
                              "would need every data point in one log weight; check a subsample in memory"], numbers)

