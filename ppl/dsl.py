"""The modelling language: ``@ppl.model``, the :class:`Model` object, Pyro's primitives
re-exported, and the binding of a user's ``data`` mapping to a model.

A model is an ordinary Python function written with Pyro's primitives.  ``@ppl.model``
wraps it without changing what it means: calling the :class:`Model` calls the function,
so it stays a valid Pyro model (``pyro.poutine`` handlers, ``Predictive`` and
``pyro.render_model`` all work on it).

Data binding (docs/dsl.md, "Binding data to a model"): ``data`` is a mapping.  A key that names a
parameter of the model function is passed as that argument; a key that names a sample
site conditions that site (it becomes observed).  Any other key raises
:class:`~ppl.errors.DataError` listing the valid names.  numpy arrays, lists, Python
scalars and torch tensors are accepted; the user's objects are copied, never modified
(the conversions and checks of values: :mod:`ppl.compiler.binding`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pyro
import pyro.poutine as poutine
import torch
from pyro.ops.indexing import Vindex
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from .errors import DataError, ModelError, OptionError
from .module_dtypes import ModuleBoundary, module_dtype_boundary
from .paramstore import private_param_store

from .rng import kept_global_rngs

_ModuleBoundary = ModuleBoundary  # the class's old home: models pickled before it moved still load

__all__ = [
    "model",
    "Model",
    "BoundData",
    "sample",
    "param",
    "plate",
    "markov",
    "deterministic",
    "factor",
    "Vindex",
    "module_dtype_boundary",
]

# Pyro's primitives, re-exported unchanged: ppl models are Pyro models.
sample = pyro.sample
param = pyro.param
plate = pyro.plate
markov = pyro.markov
deterministic = pyro.deterministic
factor = pyro.factor


@dataclass
class BoundData:
    """The result of binding a ``data`` mapping to a model.

    Attributes
    ----------
    args : tuple
        Positional arguments for the model function (always empty: data binds by name).
    kwargs : dict[str, Any]
        Model-function arguments taken from ``data``; arrays converted to torch tensors
        (copies).
    observations : dict[str, torch.Tensor]
        Sample-site name -> observed value (a copy of the user's value, as a tensor whose
        dtype suits the site: ``int64`` for integer data, the default float dtype for
        floating data).
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    observations: dict = field(default_factory=dict)


class Model:
    """A probabilistic model: a Python function written with Pyro primitives.

    Create one with the :func:`model` decorator.  Calling it calls the wrapped function.

    Parameters
    ----------
    fn : callable or torch.nn.Module
        The model function, or a module (a ``pyro.nn.PyroModule`` whose ``forward`` takes
        the data and whose ``PyroSample`` attributes are its latents): calling the Model
        calls the module, and ``data`` binds to the parameters of its ``forward``.
    name : str, optional
        Display name; defaults to ``fn.__name__`` (a module's class name).
    state_names : dict[str, list[str]], optional
        For discrete sites whose states have names (Bayesian networks): site -> names of
        its states, state ``i`` having name ``state_names[site][i]``.  Observed values may
        then be given as names in ``data``.

    Attributes
    ----------
    missing_values : dict[str, Any]
        Argument name -> the value that stands for a missing entry in that argument
        (``-1`` in a column of a learnable Bayesian network).  Empty by default; a masked
        numpy array (``np.ma.MaskedArray``) bound to such an argument has its masked
        entries replaced by this value, while masked entries anywhere else are refused
        with :class:`~ppl.errors.DataError`.

    Raises
    ------
    TypeError
        If ``fn`` is not callable.
    """

    def __init__(self, fn: Callable, name: str | None = None, state_names: Mapping[str, list] | None = None):
        if not callable(fn):
            raise TypeError(f"@ppl.model expects a function, got {type(fn).__name__}")
        if isinstance(fn, ModuleBoundary):     # another Model's fn
            fn = fn.fn
        self.state_names = {k: list(v) for k, v in (state_names or {}).items()}
        self.missing_values: dict = {}
        if isinstance(fn, torch.nn.Module):
            # a module (a pyro.nn.PyroModule): calling it runs forward under its own hooks;
            # its attributes (parameters, submodules) are not copied onto the Model
            functools.update_wrapper(self, fn, updated=())
            self.name = name or type(fn).__name__
            signed = fn.forward
        else:
            functools.update_wrapper(self, fn)
            self.name = name or getattr(fn, "__name__", "model")
            signed = fn
        if _lazy_kind(signed) is not None:
            raise ModelError(_lazy_message(self.name, _lazy_kind(signed)))
        # every run of the model (by ppl or by Pyro) passes nn.Module boundaries in the module's dtype
        self.fn = ModuleBoundary(fn)
        try:
            self.signature = inspect.signature(signed)
        except (TypeError, ValueError):  # builtins / C callables
            self.signature = None

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    @property
    def function(self) -> Callable:
        """The user's function (or module) itself; :attr:`fn` calls it inside
        :func:`module_dtype_boundary`."""
        return self.fn.fn

    def __repr__(self):
        return f"<ppl.Model {self.name}>"

    # ------------------------------------------------------------------ binding
    @property
    def argument_names(self) -> list[str]:
        """Names of the model function's parameters (keys of ``data`` passed as arguments)."""
        if self.signature is None:
            return []
        return [
            p.name
            for p in self.signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    def site_names(self, **kwargs) -> list[str]:
        """Names of the sample sites one prior run of the model visits, in order.

        Plates, deterministic sites and ``factor`` sites are excluded (they cannot be observed).
        The run uses a private Pyro param store, as ``ppl.infer`` does: Pyro's global one,
        and every ``pyro.module`` network, are left as found.

        Raises
        ------
        ModelError
            If the model raises while running (duplicate site names included).
        """
        with private_param_store():
            trace = trace_model(self, BoundData(kwargs=kwargs))
        return [
            name
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site) and not is_deterministic(site)
            and not is_factor(site)
        ]

    def bind(self, data: Mapping[str, Any] | None) -> BoundData:
        """Split ``data`` into model arguments and observations (see the module docstring).

        Parameters
        ----------
        data : mapping of str to array-like, or None
            Keys naming a function parameter become arguments; keys naming a sample site
            condition that site.  Values: torch tensors, numpy arrays, lists, Python
            scalars, or (for sites with ``state_names``) state names.

        Returns
        -------
        BoundData

        Raises
        ------
        DataError
            If ``data`` is not a mapping, a key names neither an argument nor a sample
            site (the message lists the valid names), a key names a site the model code
            already observes (``obs=``), a required argument is missing, a value cannot be
            converted to a tensor, a floating value holds NaN/inf, a tensor is empty (a
            dimension of size 0), a masked array has masked entries (unless the model
            takes them as missing: :attr:`missing_values`), or a boolean is given for a
            site whose states have names that are not booleans.
        """
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise DataError(f"data must be a mapping of names to values, got {type(data).__name__}")
        # the value conversions and checks; imported at call time, as ppl.compiler imports this module
        from .compiler import binding

        arg_names = self.argument_names
        missing = getattr(self, "missing_values", None) or {}
        kwargs, rest = {}, {}
        for key, value in data.items():
            if not isinstance(key, str):
                raise DataError(f"data keys must be strings, got {key!r}")
            if key in arg_names:
                value = binding.unmask(key, value, model=self.name, what="argument", missing_value=missing.get(key),
                                       takes_missing=list(missing))
                kwargs[key] = binding.convert_argument(key, value)
                binding.check_not_empty(key, kwargs[key])
            else:
                rest[key] = value
        self._check_required_arguments(kwargs)
        observations = {}
        if rest:
            observed_in_code = self._sites_observed_in_code(kwargs)
            sites = list(observed_in_code)
            unknown = [k for k in rest if k not in observed_in_code]
            if unknown:
                raise DataError(
                    f"data key(s) {unknown} of model '{self.name}' name neither an argument nor a sample site; "
                    f"valid argument names: {arg_names}; valid sample sites: {sites}"
                )
            already = [k for k in rest if observed_in_code[k]]
            if already:
                key = already[0]
                raise DataError(
                    f"data key '{key}' names sample site '{key}' of model '{self.name}', which the model code "
                    f"already observes (ppl.sample('{key}', ..., obs=...)): the value in data would silently "
                    f"replace the code's obs= value. Remove '{key}' from data, or make the observed value a model "
                    f"argument (def {self.name}(..., {key}): ... obs={key}) and pass it by that name"
                    + (f" (also observed in the code: {already[1:]})" if len(already) > 1 else "")
                )
            for key, value in rest.items():
                value = binding.unmask(key, value, model=self.name, what="observed site", takes_missing=list(missing))
                observations[key] = binding.convert_observation(key, value, self.state_names.get(key))
                binding.check_not_empty(key, observations[key])
        return BoundData(kwargs=kwargs, observations=observations)

    def _sites_observed_in_code(self, kwargs) -> dict:
        """Sample site -> whether the model code observes it (``obs=``), from one prior run
        (the sites :meth:`site_names` lists, in order)."""
        trace = trace_model(self, BoundData(kwargs=kwargs))
        return {
            name: bool(site["is_observed"])
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site) and not is_deterministic(site)
            and not is_factor(site)
        }

    def _check_required_arguments(self, kwargs):
        if self.signature is None:
            return
        missing = [
            p.name
            for p in self.signature.parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in kwargs
        ]
        if missing:
            raise DataError(
                f"model '{self.name}' needs argument(s) {missing}: pass them in data, e.g. data={{'{missing[0]}': ...}}"
            )


def model(fn: Callable | None = None, *, name: str | None = None, state_names=None):
    """Decorator that turns a Pyro-style function into a :class:`Model`.

    Usable bare (``@ppl.model``) or with options (``@ppl.model(name="gmm")``).

    Parameters
    ----------
    fn : callable or torch.nn.Module
        The model function, written with ``ppl.sample``/``ppl.plate``/... (Pyro primitives),
        or a ``pyro.nn.PyroModule`` instance (``ppl.model(module)``: its ``forward`` takes the
        data).
    name : str, optional
        Display name (default: the function's name, or the module's class name).
    state_names : dict[str, list[str]], optional
        Names of the states of discrete sites (see :class:`Model`).

    Returns
    -------
    Model
    """
    if fn is None:
        return lambda f: Model(f, name=name, state_names=state_names)
    if isinstance(fn, Model):
        return fn
    return Model(fn, name=name, state_names=state_names)


def as_model(obj) -> Model:
    """Return ``obj`` as a :class:`Model` (wrapping a plain callable).

    Raises
    ------
    OptionError
        If ``obj`` is not callable (as ``ppl.prior_predictive`` and ``ppl.load`` refuse a
        ``model`` argument that is not one).
    """
    if isinstance(obj, Model):
        return obj
    if callable(obj):
        return Model(obj)
    raise OptionError(f"model must be a ppl.model or a callable model function, got {type(obj).__name__} "
                      f"({obj!r:.60})")


# ---------------------------------------------------------------------- tracing
@contextlib.contextmanager
def default_dtype(dtype):
    """Torch's default float dtype set to ``dtype`` inside the block and restored after it;
    nothing is changed for a dtype other than float32/float64 or the current default."""
    old = torch.get_default_dtype()
    if dtype not in (torch.float32, torch.float64) or dtype == old:
        yield
        return
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def data_default_dtype(bound: BoundData):
    """Trace under torch's default dtype float64 when every floating tensor of the data is
    float64 (numpy arrays and Python floats bind as float64): the priors a model builds
    from Python numbers (``dist.Normal(0., 1.)``) then share the data's dtype, as in every
    backend's run (float64 by default), instead of float32 against float64 data (``x @ w``
    refuses to mix them).  Float32 data, or a default dtype the user has set, is left as
    it is."""
    floating = {v.dtype for v in (*bound.args, *bound.kwargs.values(), *bound.observations.values())
                if isinstance(v, torch.Tensor) and v.is_floating_point()}
    use = floating == {torch.float64} and torch.get_default_dtype() == torch.float32
    return default_dtype(torch.float64) if use else contextlib.nullcontext()


def trace_model(model: Model, bound: BoundData, *messengers, grad: bool = False) -> poutine.Trace:
    """Run ``model`` once under ``poutine.trace`` with ``bound``'s observations conditioned.

    The run uses forked RNGs (torch's, numpy's and Python's ``random`` global states are
    restored afterwards, also when the model draws from them itself) and an isolated param
    store context is *not* created:
    ``ppl.param`` sites read/initialise Pyro's global param store, as in Pyro.

    Parameters
    ----------
    model : Model
    bound : BoundData
    *messengers : pyro Messenger
        Extra handlers, applied inside the trace (outermost first).
    grad : bool
        Record autograd history (default off: tracing never needs it, except a gradient
        M-step that differentiates factor tables with respect to ``ppl.param`` values).

    Raises
    ------
    ModelError
        If the model raises while running (duplicate site names, shape errors, ...).
    """
    fn = poutine.condition(model.fn, data=bound.observations) if bound.observations else model.fn
    for messenger in reversed(messengers):
        fn = messenger(fn)
    fn = _FeasibleImproper()(fn)   # outermost: only sites no other handler gave a value
    fn = _SiteProgress(model.name)(fn)  # a count of the sites on a terminal, for runs over PROGRESS_DELAY s
    try:
        with kept_global_rngs(), torch.set_grad_enabled(grad), data_default_dtype(bound):
            trace = poutine.trace(fn).get_trace(*bound.args, **bound.kwargs)
    except (DataError, ModelError) as e:
        # Pyro appends its trace-shape table to errors raised inside a model; ours say enough
        message = str(e.args[0]) if e.args else str(e)
        head = _TRACE_TABLE.split(message, maxsplit=1)[0].rstrip()
        if head != message:
            raise type(e)(head) from None
        raise
    except RuntimeError as e:
        if "Multiple sample sites named" in str(e):
            first = str(e).splitlines()[0]
            raise ModelError(
                f"model '{model.name}': {first}; every sample site needs a unique name (plates count as sites: "
                "a plate's name must differ from every site's and from other plates')"
            ) from None
        raise ModelError(f"model '{model.name}' raised while being traced{_where(model, e)}: {_text(e)}") from e
    except ZeroDivisionError as e:
        why = "a ppl.plate has size 0, and a plate needs at least one copy (is the data it is sized from empty?)" \
            if "size cannot be zero" in str(e) else f"{type(e).__name__}: {e}"
        raise ModelError(f"model '{model.name}' raised while being traced: {why}") from e
    except Exception as e:
        raise ModelError(f"model '{model.name}' raised while being traced{_where(model, e)}: {_text(e)}") from e
    returned = trace.nodes.get("_RETURN", {}).get("value")
    if _lazy_kind(returned) is not None:  # e.g. a lambda or callable object around a generator function
        if inspect.iscoroutine(returned):
            returned.close()  # never awaited: no "coroutine was never awaited" warning
        raise ModelError(_lazy_message(model.name, _lazy_kind(returned)))
    return trace


def _lazy_kind(obj) -> str | None:
    """``"generator"`` or ``"coroutine"`` when ``obj`` is a generator / async function
    (or what calling one returned), whose body does not run when it is called; else None."""
    if inspect.isgeneratorfunction(obj) or inspect.isasyncgenfunction(obj) or inspect.isgenerator(obj) \
            or inspect.isasyncgen(obj):
        return "generator"
    if inspect.iscoroutinefunction(obj) or inspect.iscoroutine(obj):
        return "coroutine"
    return None


def _lazy_message(name: str, kind: str) -> str:
    """The ModelError text for a model that is a generator or coroutine function."""
    why, fix = (("its body contains `yield` (a stray yield?)", "remove the `yield` (return the value instead)")
                if kind == "generator" else ("it is an `async def`", "write the model as a plain `def`"))
    return (f"model '{name}' is a {kind} function: {why}, so calling it returns a {kind} object and runs none of "
            f"the model's code (ppl would trace a model without sites); {fix}")


_TRACE_TABLE = re.compile(r"\n\s*Trace Shapes:")


def _text(e: BaseException) -> str:
    """``Type: message`` of an exception raised in a model, without the trace-shape table
    Pyro appends."""
    return f"{type(e).__name__}: {_TRACE_TABLE.split(str(e), maxsplit=1)[0].rstrip()}"


def _where(model: Model, e: BaseException) -> str:
    """`` at file.py:line (`code`)`` of the innermost frame of the model's own source file in
    ``e``'s traceback (the line of the user's code that raised, e.g. a torch distribution
    refusing a covariance before any ``pyro.sample`` names the site); ``""`` when none or
    when the model was not read from a file."""
    code = getattr(inspect.unwrap(getattr(model, "fn", None) or (lambda: None)), "__code__", None)
    if code is None:
        return ""
    if code.co_filename.startswith("<"):  # typed at a prompt or exec'd from a string: no file to point at
        return ""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == code.co_filename]
    if not frames:
        return ""
    f = frames[-1]
    line = f" (`{f.line.strip()[:80]}`)" if f.line else ""
    return f" at {os.path.basename(f.filename)}:{f.lineno}{line}"


class _SiteProgress(Messenger):
    """A tqdm count of the sample sites a run has visited, shown on a terminal only when
    the run takes longer than :data:`PROGRESS_DELAY` seconds (a long unrolled ``markov``
    loop); nothing is printed for short runs or off a terminal."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.bar = None

    def _pyro_sample(self, msg):
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(desc=f"running model '{self.name}'", unit=" sites", delay=PROGRESS_DELAY, leave=False,
                            disable=None, mininterval=0.5)
        self.bar.update()

    def __exit__(self, *args):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        return super().__exit__(*args)


#: Seconds a traced run of a model lasts before its progress count shows (on a terminal).
PROGRESS_DELAY = 2.0


class _FeasibleImproper(Messenger):
    """A latent site whose distribution cannot draw (Pyro's ``ImproperUniform``, as it is or
    wrapped: ``to_event``, ``expand``, ``mask``, a ``TransformedDistribution`` over it)
    takes the feasible point ``biject_to(support)(0)``, as Pyro's ``init_to_feasible``
    would give it, instead of raising; every other site is left to its handlers."""

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None:
            return
        base = msg["fn"]
        while hasattr(base, "base_dist"):
            base = base.base_dist
        if not isinstance(base, pyro.distributions.ImproperUniform):
            return
        transform = torch.distributions.biject_to(msg["fn"].support)
        msg["value"] = transform(torch.zeros(transform.inverse_shape(msg["fn"].shape())))


def is_deterministic(site) -> bool:
    """Whether a trace site is a ``pyro.deterministic`` site.

    Parameters
    ----------
    site : dict
        A node of a :class:`pyro.poutine.Trace` (its message).

    Returns
    -------
    bool
        True when Pyro marked the site ``infer["_deterministic"]`` (a deterministic
        value recorded as a masked Delta sample site, not a random variable).
    """
    return bool(site.get("infer", {}).get("_deterministic", False))


def is_factor(site) -> bool:
    """Whether a trace sample site is a ``pyro.factor`` term rather than a random variable.

    Parameters
    ----------
    site : dict
        A sample node of a :class:`pyro.poutine.Trace`.

    Returns
    -------
    bool
        True when the site's distribution, seen through its wrappers (``base_dist``),
        is Pyro's ``Unit``: the distribution ``pyro.factor`` samples from.
    """
    fn = site["fn"]
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__name__ == "Unit"
