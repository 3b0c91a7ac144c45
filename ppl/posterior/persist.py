"""Keeping a result: the portable state of a Posterior, ``post.save(path)`` and :func:`load`.

A Posterior pickles (plain :mod:`pickle`, and :func:`torch.save` underneath
:meth:`~ppl.posterior.base.Posterior.save`) as a *portable state*: a dict of plain values
that unpickles in a fresh process where the model's module cannot be imported (a model
defined in ``__main__``, in a notebook, or in a file since deleted).  It holds the
posterior's tensors, torch distributions, tables, draws, point values, ``params``,
``history``, ``diagnostics``, ``trust``, ``seed``, ``memory_budget`` and the run's numbers;
never the compiled ``graph`` (it holds the model function and Pyro distributions), and never
a closure.  What a closure computed is materialised first (each class's
``_portable_state``):

* a joint sampler that runs the model or an elimination plan (exact, EM, SVI) is replaced by
  :data:`STORED_DRAWS` joint draws made at save time with the run's seed (seed
  :data:`~ppl.posterior.checks.FIXED_SEED` when the run had none); a loaded posterior's
  ``sample(n, seed)`` picks ``n`` of them uniformly with replacement (:class:`StoredDraws`);
* SVI's per-site marginals are computed for every site (closed form for Gaussian and
  point-mass guides, else the empirical distribution of the fixed-seed draws they were
  read from already), and so are those fixed-seed draws: means, variances and quantiles of a
  loaded SVI posterior are the original's;
* the lazily computed marginals of the discrete sites a sampler summed out (Laplace,
  Pathfinder, NUTS) are computed;
* CAVI's samplers of factors over several sites (a Normal-Wishart pair) are replaced by
  stored joint draws as above.

Any other attribute that would not unpickle elsewhere (a callable, an object of a class
defined outside torch, Pyro, numpy, SciPy, ArviZ or ppl) is dropped: ``None`` as an
attribute, a ``"<not saved: TYPE>"`` string inside ``diagnostics`` or another container.
The model is kept by import path (``"module:qualname"``) when the name imports back to the
very object the posterior was fitted with (never for ``__main__`` or a function defined
inside another); :attr:`~ppl.posterior.base.Posterior.model` re-imports it on request.

So that a loaded posterior predicts, the state also keeps (:mod:`ppl.posterior.reattach`)
the data the model was called with (``_data``: its arguments and observed values as bound,
when they are tensors, numpy arrays, numbers, strings or containers of them, and take at
most :data:`DATA_BYTES`; else ``None`` and the reason in ``_data_note``) and the fitted
model's name and sites (``_fitted``).  A loaded posterior with a model (re-imported,
or attached by ``load(path, model=fn)``) compiles it again on that data to run
``predictive`` and the model groups of ``to_arviz``.

Files written by :meth:`~ppl.posterior.base.Posterior.save` hold ``{"format":
"ppl.posterior", "version": VERSION, "ppl_version": ..., "posterior": post}``.  Version 2
added the data; files of version 1 still load (without data: their ``predictive`` needs
``data=``).  Loading unpickles (``torch.load(weights_only=False)``), which can run
arbitrary code: load only files you trust, exactly as with :mod:`pickle`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import sys
import types
from collections.abc import Mapping

import torch

from ..errors import DataError, IntractableError, OptionError, PPLError
from .checks import FIXED_SEED, numel
from .reattach import TRANSIENT, attach, fitted_sites, imported_model, kept_data

__all__ = ["FORMAT", "VERSION", "READS", "STORED_DRAWS", "STORED_BYTES", "DATA_BYTES", "StoredDraws", "portable",
           "portable_state", "restore_state", "model_path", "import_model", "stored_draws", "save", "load"]

#: The ``format`` tag of a saved posterior and of its pickled state.
FORMAT = "ppl.posterior"
#: Version of the portable state written (2: with the run's data, ``_data``, and the fitted sites, ``_fitted``).
VERSION = 2
#: Versions read; a file or pickle of another version is refused (DataError).  Version 1 has no data.
READS = (1, 2)
#: Joint draws stored in place of a sampler that needs the model (exact, EM, SVI, CAVI pairs).
STORED_DRAWS = 4000
#: At most this many bytes of stored draws per sampler (fewer draws for large sites).
STORED_BYTES = 256 * 2**20
#: At most this many bytes of the run's data are kept (tensor and array elements, string lengths); over it,
#: none (``_data_note`` says why).  Set it to 0 before saving to keep no data.
DATA_BYTES = 256 * 2**20

#: Top-level packages whose classes and functions unpickle wherever ppl is installed.
SAFE_PACKAGES = frozenset({"builtins", "copyreg", "collections", "_codecs", "functools", "operator", "math",
                           "datetime", "fractions", "decimal", "numbers", "enum",
                           "torch", "pyro", "numpy", "scipy", "arviz", "xarray", "pandas", "ppl"})


# ---------------------------------------------------------------------- portable values
class _Discard:
    """A sink for the trial pickling of :func:`_portable_object` (counts nothing, keeps nothing)."""

    def write(self, data):
        return len(data)


class _PortabilityPickler(pickle.Pickler):
    """A pickler that refuses every class or function it would save by reference outside
    :data:`SAFE_PACKAGES` (a user's model function, a class defined in ``__main__``)."""

    def reducer_override(self, obj):
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            module = getattr(obj, "__module__", None) or ""
            qualname = getattr(obj, "__qualname__", "") or ""
            if module.partition(".")[0] not in SAFE_PACKAGES or "<" in qualname:
                raise pickle.PicklingError(f"{module}.{qualname} would not import in another process")
        return NotImplemented


def _portable_object(value) -> bool:
    """Whether ``value`` pickles and would unpickle in a fresh process with ppl installed."""
    try:
        _PortabilityPickler(_Discard(), protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except Exception:  # noqa: BLE001 (any failure means: not portable)
        return False
    return True


class _Dropped:
    """The marker :func:`portable` returns for a value that cannot be kept."""

    def __repr__(self):
        return "DROPPED"


DROPPED = _Dropped()


def _tensor(value: torch.Tensor) -> torch.Tensor:
    value = value.detach()
    return value if type(value) is torch.Tensor else value.as_subclass(torch.Tensor)


def _in_container(value):
    kept = portable(value)
    return f"<not saved: {type(value).__name__}>" if kept is DROPPED else kept


def portable(value):
    """``value`` in a form that unpickles in any process with ppl installed, or
    :data:`DROPPED`.

    Tensors are detached (plain ``torch.Tensor``, no copy); dicts (any mapping: a plain
    dict), lists, tuples and sets are rebuilt with each item made portable (an item that
    cannot be kept becomes the string ``"<not saved: TYPE>"``); a :class:`~ppl.trust.Trust`
    keeps its verdict, reasons and portable numbers; a callable is dropped; any other object
    is kept as it is when it pickles using only classes and functions of
    :data:`SAFE_PACKAGES` (torch distributions do), else dropped.

    Parameters
    ----------
    value : object

    Returns
    -------
    object
        The portable value (the input itself where nothing needs changing), or
        :data:`DROPPED`.
    """
    from ..trust import Trust

    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        return value
    if isinstance(value, torch.Tensor):
        return _tensor(value)
    if isinstance(value, Mapping):
        try:
            items = list(value.items())
        except Exception:  # noqa: BLE001
            return DROPPED
        return {k: _in_container(v) for k, v in items if portable(k) is not DROPPED}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_in_container(v) for v in value)
    if isinstance(value, Trust):
        return dataclasses.replace(value, reasons=[str(r) for r in value.reasons],
                                   numbers=portable(dict(value.numbers)),
                                   next_method=None if value.next_method is None else str(value.next_method))
    if callable(value) and not isinstance(value, torch.distributions.Distribution):
        return value if isinstance(value, StoredDraws) else DROPPED
    return value if _portable_object(value) else DROPPED


# ---------------------------------------------------------------------- stored draws
class StoredDraws:
    """A fixed set of joint posterior draws standing in for a sampler that needs the model.

    Called as a Posterior's sampler: ``draws(n, seed=None)`` returns ``n`` of the stored
    draws picked uniformly with replacement (site -> ``(n,) + batch_shape + event_shape``),
    by a private generator seeded with ``seed``, or torch's global RNG when ``seed`` is None.
    Estimates from them carry the Monte Carlo error of ``count`` draws, and more than
    ``count`` draws repeat stored ones.

    Parameters
    ----------
    draws : dict[str, torch.Tensor]
        Site -> ``(S,) + batch_shape + event_shape``, the same ``S`` for every site.
    seed : int
        The seed they were drawn with.
    discrete : sequence of str
        Sites left out of a call with ``discrete=False`` (the enumerated discrete sites of
        an SVI posterior).
    order : sequence of str, optional
        When given, a call returns a tuple of these sites' draws in this order (the samplers
        of CAVI's factors over several sites), not a dict.

    Attributes
    ----------
    count : int
        ``S``, the number of stored draws.
    """

    def __init__(self, draws: dict, seed: int, discrete=(), order=None):
        self.draws = {k: _tensor(v) for k, v in draws.items()}
        self.seed = int(seed)
        self.discrete = tuple(discrete)
        self.order = None if order is None else tuple(order)
        first = next(iter(self.draws.values()), None)
        self.count = 0 if first is None else int(first.shape[0])

    def __call__(self, n: int, seed: int | None = None, discrete: bool = True):
        """``n`` stored draws picked uniformly with replacement (see the class)."""
        gen = None
        if seed is not None:
            gen = torch.Generator()
            gen.manual_seed(int(seed))
        idx = torch.randint(self.count, (int(n),), generator=gen)
        out = {k: v[idx.to(v.device)] for k, v in self.draws.items() if discrete or k not in self.discrete}
        return out if self.order is None else tuple(out[k] for k in self.order)

    def layout(self) -> dict:
        """Site -> (shape of one draw, bytes per element), as ``Posterior._draw_layout``."""
        return {k: (tuple(v.shape[1:]), v.element_size()) for k, v in self.draws.items()}

    def __repr__(self):
        return f"<StoredDraws {self.count} draws of {list(self.draws)} (seed {self.seed})>"


def _stored_count(item_bytes: int, budget: int) -> int:
    item_bytes = max(int(item_bytes), 1)
    return min(STORED_DRAWS, STORED_BYTES // item_bytes, int(budget) // item_bytes)


def stored_draws(post, discrete=()):
    """:class:`StoredDraws` of ``post``'s own sampler: up to :data:`STORED_DRAWS` joint draws
    (fewer when they would take more than :data:`STORED_BYTES` or the posterior's memory
    budget), drawn with ``post.seed`` (:data:`~ppl.posterior.checks.FIXED_SEED` when None)
    with the global RNGs left as they were.

    Parameters
    ----------
    post : Posterior
        A posterior whose sampler still works (before saving).
    discrete : sequence of str
        Sites to leave out of ``discrete=False`` calls (see :class:`StoredDraws`).

    Returns
    -------
    StoredDraws or None
        ``None`` when not even one draw fits the memory budget (a loaded posterior then
        cannot be sampled).
    """
    layout = post._draw_layout()
    size = sum(numel(shape) * itemsize for shape, itemsize in layout.values())
    n = _stored_count(size, post.budget)
    if n < 1:
        return None
    seed = FIXED_SEED if post.seed is None else int(post.seed)
    try:
        draws = post._draw(n, seed, call="save")
    except IntractableError:
        return None
    return StoredDraws(draws, seed, discrete=discrete)


def stored_joint(draw, sites, seed: int, budget: int):
    """:class:`StoredDraws` standing in for ``draw(n) -> tuple`` (a sampler of one factor over
    ``sites``, drawing from torch's global RNG): up to :data:`STORED_DRAWS` draws made under
    ``seed`` with the global RNGs left as they were; ``None`` when one draw does not fit
    ``budget`` bytes.

    Parameters
    ----------
    draw : callable(n) -> tuple of torch.Tensor
        One tensor ``(n,) + shape`` per site, in the order of ``sites``.
    sites : tuple of str
    seed : int
    budget : int
        Bytes.

    Returns
    -------
    StoredDraws or None
    """
    from .checks import isolated_rng

    with isolated_rng(seed), torch.no_grad():
        one = draw(1)
    n = _stored_count(sum(t[0].numel() * max(t.element_size(), 1) for t in one), budget)
    if n < 1:
        return None
    with isolated_rng(seed), torch.no_grad():  # from the seed again: not shifted by the probe draw
        values = draw(n)
    return StoredDraws(dict(zip(sites, values)), seed, order=sites)


# ---------------------------------------------------------------------- the model's path
def model_path(model) -> str | None:
    """``"module:qualname"`` of ``model`` when that name, looked up in the module already
    imported in this process, is ``model`` itself (or the function a ``ppl.Model`` wraps);
    else ``None`` (a model defined in ``__main__``, inside a function, or rebound).

    Parameters
    ----------
    model : ppl.Model, callable or None

    Returns
    -------
    str or None
    """
    if model is None:
        return None
    module = getattr(model, "__module__", None)
    qualname = getattr(model, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__" or "<" in qualname:
        return None
    if module not in sys.modules:  # never import anything while saving
        return None
    obj = sys.modules[module]
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return None
    if obj is model or obj is getattr(model, "function", None):
        return f"{module}:{qualname}"
    return None


def import_model(path: str | None):
    """The model at ``path`` (``"module:qualname"``) as a ``ppl.Model``, importing its module;
    ``None`` when ``path`` is None or does not import (the module is missing, or no longer
    defines the name).

    Parameters
    ----------
    path : str or None

    Returns
    -------
    ppl.Model or None
    """
    return imported_model(path)[0]


# ---------------------------------------------------------------------- the state
def portable_state(post) -> dict:
    """The portable state of ``post`` (see the module docstring): ``{"format", "version",
    "class", "attributes"}``, the attributes holding only portable values.

    Each class's ``_portable_state()`` gives the attributes it materialises (closures
    replaced by data); every other instance attribute goes through :func:`portable`
    (``None`` where it cannot be kept) except the class's ``_transient`` ones (caches
    rebuilt on load), :data:`~ppl.posterior.reattach.TRANSIENT` (an attached model, a
    graph compiled again) and ``graph`` (never kept).  While the graph is held, the run's
    data and the fitted sites are added (``_data``, ``_data_note``, ``_fitted``:
    :func:`~ppl.posterior.reattach.kept_data` under :data:`DATA_BYTES`,
    :func:`~ppl.posterior.reattach.fitted_sites`); a loaded posterior keeps its own.

    Parameters
    ----------
    post : Posterior

    Returns
    -------
    dict
    """
    own = post._portable_state()
    skip = set(own) | set(getattr(post, "_transient", ())) | set(TRANSIENT) | {"graph", "_model_path"}
    attributes = {}
    for name, value in vars(post).items():
        if name in skip:
            continue
        kept = portable(value)
        attributes[name] = None if kept is DROPPED else kept
    for name, value in own.items():
        kept = portable(value)
        attributes[name] = None if kept is DROPPED else kept
    graph = getattr(post, "graph", None)
    if graph is not None and getattr(graph, "model", None) is not None:
        attributes["_data"], attributes["_data_note"] = kept_data(graph, DATA_BYTES)
        attributes["_fitted"] = fitted_sites(graph)
    attributes["graph"] = None
    attributes["_model_path"] = post.model_path or model_path(vars(post).get(TRANSIENT[0]))
    cls = type(post)
    return {"format": FORMAT, "version": VERSION, "class": f"{cls.__module__}:{cls.__qualname__}",
            "attributes": attributes}


def _check_header(state, what: str) -> None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{what} is not a saved ppl posterior (no '{FORMAT}' format tag)")
    version = state.get("version")
    if version not in READS:
        raise DataError(f"{what} holds a ppl posterior of format version {version!r}; this ppl "
                        f"(ppl.posterior.persist.VERSION = {VERSION}) reads versions {list(READS)} only: load it "
                        "with the ppl version that saved it")


def restore_state(post, state) -> None:
    """Set ``post``'s attributes from a :func:`portable_state` (unpickling), then let its class
    rebuild its caches (``_restored``).

    Parameters
    ----------
    post : Posterior
        A fresh instance (``cls.__new__(cls)``).
    state : dict

    A state of version 1 gets ``_data = None`` (with the reason in ``_data_note``) and
    ``_fitted = None``: it kept no data.

    Raises
    ------
    DataError
        If ``state`` is not a ppl posterior state, or of a format version not in :data:`READS`.
    """
    _check_header(state, "the pickled object")
    attributes = state.get("attributes")
    if not isinstance(attributes, dict):
        raise DataError("the pickled object is not a saved ppl posterior (its state has no attributes)")
    if state.get("version") == 1:
        post.__dict__.update({"_data": None, "_fitted": None,
                              "_data_note": "saved in format version 1, which kept no data"})
    post.__dict__.update(attributes)
    post._restored()


def rebuild(cls):
    """An empty instance of the Posterior class ``cls``, filled by ``__setstate__``
    (the reconstructor of :meth:`~ppl.posterior.base.Posterior.__reduce__`)."""
    return cls.__new__(cls)


# ---------------------------------------------------------------------- files
def _path(path, call: str) -> str:
    if isinstance(path, io.IOBase) or not isinstance(path, (str, os.PathLike)):
        raise OptionError(f"{call}: path must be a file path (str or os.PathLike), got {type(path).__name__}")
    return os.fspath(path)


def save(post, path) -> str:
    """Write ``post`` to ``path`` with :func:`torch.save`: ``{"format": "ppl.posterior",
    "version": VERSION, "ppl_version": ppl.__version__, "posterior": post}`` (the posterior
    as its portable state; parent directories are created).

    Parameters
    ----------
    post : Posterior
    path : str or os.PathLike

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    OptionError
        If ``path`` is not a str or ``os.PathLike``, is a directory, or cannot be written
        (any ``OSError``: a parent that is a file, no permission, a full disk; the message
        names the path).
    """
    from .. import __version__

    path = _path(path, "save()")
    if os.path.isdir(path):
        raise OptionError(f"save(): path {path!r} is a directory; expected a file path (e.g. "
                          f"{os.path.join(path, 'posterior.pt')!r})")
    try:
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(path, "wb") as f:  # Python's open: a failure is an OSError (torch's own writer: RuntimeError)
            torch.save({"format": FORMAT, "version": VERSION, "ppl_version": __version__, "posterior": post}, f)
    except OSError as e:
        raise OptionError(f"save(): cannot write {path!r}: {type(e).__name__}: {e}") from e
    return path


def _check_map_location(map_location):
    """``map_location`` as given, checked: None, or a str / torch.device naming a device
    this machine has.

    Raises
    ------
    OptionError
        Naming ``map_location`` and the value, when it is another type, not a device
        name (``"gpu"``), a device that is not available here, or a device type other
        than CPU and CUDA (``"meta"``: tensors without values), as ``ppl.infer(device=)``."""
    if map_location is None:
        return None
    if not isinstance(map_location, (str, torch.device)):
        raise OptionError(f"ppl.load(): map_location must be None, a str or a torch.device, got "
                          f"{type(map_location).__name__}")
    try:
        torch.empty(0, device=torch.device(map_location))
    except Exception as e:  # noqa: BLE001 (torch raises RuntimeError, AssertionError...: not a usable device)
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise OptionError(f"ppl.load(): map_location={map_location!r} is not a device available here ({why}); "
                          "expected None, 'cpu', or an available device such as 'cuda' or 'cuda:0'") from None
    kind = torch.device(map_location).type
    if kind not in ("cpu", "cuda"):  # e.g. 'meta': tensors without values, nothing to answer from
        raise OptionError(f"ppl.load(): map_location={map_location!r} is not supported (device type '{kind}' "
                          "is neither CPU nor CUDA, as for ppl.infer's device=); expected None, 'cpu', or an "
                          "available device such as 'cuda' or 'cuda:0'")
    return map_location


def load(path, map_location=None, model=None):
    """Read a Posterior written by ``post.save(path)``.

    The result answers ``mean``, ``variance``, ``marginal``, ``quantile``, ``probs``,
    ``sample``, ``summary``, ``to_arviz``, ``plot`` and ``map`` (where the original did) from
    the saved data, without the model (see :mod:`ppl.posterior.persist` for what is read
    from stored draws); its ``graph`` is ``None`` and its ``model`` is ``model`` when given,
    else re-imported by path when possible.  With a model, ``predictive``, ``ppl.predict``
    and ``to_arviz``'s ``observed_data``, ``posterior_predictive``, ``log_likelihood`` (and
    ``prior``) groups work as on the original: the model is compiled again on the saved
    data (:mod:`ppl.posterior.reattach`).

    Loading unpickles (``torch.load(..., weights_only=False)``): like :mod:`pickle`, a
    crafted file can run arbitrary code, so load only files you trust.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :meth:`~ppl.posterior.base.Posterior.save`.
    map_location : str, torch.device or None
        Device to load the tensors onto (``torch.load``'s ``map_location``, e.g. ``"cpu"``
        for a posterior saved on a GPU); ``None`` keeps the saved devices.
    model : ppl.Model, callable or None
        The model to run for predictions, in place of the one kept by import path (needed
        when the model was defined in ``__main__`` or inside a function).  It must be the
        fitted model: the same name (``ppl.model(fn, name=...)`` renames) and, checked on
        the saved data when they were kept, the same sites (sample and ``ppl.param``) with
        the same roles, distribution families and shapes.

    Returns
    -------
    Posterior
        Of the class that was saved.

    Raises
    ------
    OptionError
        If ``path`` is not a str or ``os.PathLike``, or ``map_location`` not None, a str
        or a ``torch.device`` naming a device available here (``"gpu"`` is not a device).
    DataError
        If the file cannot be read, is not a saved ppl posterior (another torch file, a
        pickle of something else, not a torch file at all), or holds a format version
        not in :data:`READS`; or the saved data do not fit ``model``.
    ModelError
        ``model`` is not the fitted model (its name or sites differ: the message names
        them), or raises when compiled on the saved data.
    """
    path = _path(path, "ppl.load()")
    map_location = _check_map_location(map_location)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except PPLError:
        raise
    except OSError as e:
        raise DataError(f"ppl.load(): cannot read {path!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 (unpickling errors of every kind: not one of our files)
        raise DataError(f"ppl.load(): {path!r} is not a saved ppl posterior (written by Posterior.save): "
                        f"{type(e).__name__}: {e}") from e
    _check_header(payload, f"ppl.load(): {path!r}")
    post = payload.get("posterior")
    if not callable(getattr(post, "_portable_state", None)):  # (a Posterior: base imports this module)
        raise DataError(f"ppl.load(): {path!r} is not a saved ppl posterior (it holds {type(post).__name__})")
    if model is not None:
        attach(post, model, call="ppl.load")
    return post
