"""What a model function reads besides its arguments, as one comparable value.

:mod:`ppl.prepared` reuses a compiled model only while everything the model function can
read outside its arguments is unchanged.  :func:`fingerprint` walks from the function
(or callable object, ``functools.partial``, bound method) to what it can reach:

* its closure cells, default and keyword-default arguments, and the globals named
  anywhere in its code (nested code objects: lambdas, inner functions, comprehensions);
* through a global that is a module, the module attributes the code names (``cfg.P``);
* the attributes of objects (``vars()``, ``__slots__``: a config namespace, the model
  object of a callable class, a dataclass), and the attributes of classes defined
  outside libraries;
* the items of lists, tuples, dicts and sets; ``torch.nn.Module`` parameters and buffers;
* user functions reached on the way, walked the same way.

Values: constants as themselves; tensors and numpy arrays by a digest of their full
content (with dtype and shape), so an in-place edit and a replacement are both seen;
functions, classes and objects of libraries (torch, pyro, numpy, ppl...) by identity.
The walk is bounded (:data:`MAX_DEPTH` levels, :data:`MAX_OBJECTS` objects,
:data:`MAX_BYTES` bytes hashed); where it cannot see everything (a bound reached, an
object whose state it cannot read, a tensor it cannot hash), :func:`fingerprint`
returns ``None``, and the cache is then not used: correctness over speed.
"""

from __future__ import annotations

import functools
import hashlib
import types
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["fingerprint", "MAX_DEPTH", "MAX_OBJECTS", "MAX_BYTES"]

#: Levels of containers / attributes below the model function.
MAX_DEPTH = 6
#: Objects visited at most.
MAX_OBJECTS = 20_000
#: Bytes of tensors and arrays hashed at most.
MAX_BYTES = 64 << 20

#: Top-level packages whose functions, classes and objects count by identity.
LIBRARIES = frozenset({
    "ppl", "pyro", "torch", "numpy", "scipy", "pandas", "networkx", "opt_einsum", "arviz", "matplotlib",
    "builtins", "math", "functools", "itertools", "collections", "typing", "abc", "types", "operator", "re",
    "random", "warnings", "contextlib", "dataclasses", "enum", "inspect", "os", "sys", "copy", "numbers",
})
_CONSTANTS = (bool, int, float, complex, str, bytes, type(None), type(Ellipsis), range, slice)
_OPAQUE = (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodWrapperType, types.WrapperDescriptorType,
           types.MethodDescriptorType, types.GetSetDescriptorType, types.MemberDescriptorType,
           torch.dtype, torch.device, np.dtype)


class _Unreliable(Exception):
    """The walk met something it cannot fingerprint."""


def _library(obj) -> bool:
    module = getattr(obj, "__module__", None) or getattr(type(obj), "__module__", None) or ""
    return str(module).partition(".")[0] in LIBRARIES


def _names(code: types.CodeType) -> set:
    """Names read by ``code`` and by the code objects nested in it."""
    out = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            out |= _names(const)
    return out


class _Walk:
    def __init__(self):
        self.out: list = []
        self.seen: dict = {}
        self.bytes = 0

    def digest(self, kind: str, array: np.ndarray, shape, dtype) -> None:
        """Record a digest of ``array``'s full content, with its dtype and shape."""
        self.bytes += array.nbytes
        if self.bytes > MAX_BYTES:
            raise _Unreliable("too many bytes to hash")
        raw = np.ascontiguousarray(array).view(np.uint8) if array.size else np.empty(0, np.uint8)
        self.out.append((kind, str(dtype), tuple(shape), hashlib.blake2b(raw.tobytes(), digest_size=16).digest()))

    def tensor(self, t: torch.Tensor) -> None:
        """Record a tensor by its content (its bytes where numpy has no such dtype)."""
        if t.layout != torch.strided or t.is_quantized or t.is_meta:
            raise _Unreliable("a tensor without plain contents")
        data = t.detach()
        if data.is_complex() or data.dtype in (torch.bfloat16,) or str(data.dtype).startswith("torch.float8"):
            data = data.view(torch.uint8) if data.dim() else data.reshape(1).view(torch.uint8)
        self.digest("tensor", data.cpu().contiguous().numpy(), t.shape, t.dtype)

    def value(self, obj, depth: int) -> None:  # noqa: C901 - one dispatch over the kinds of value
        """Record ``obj`` and what it holds, ``depth`` more levels down at most."""
        if isinstance(obj, _CONSTANTS):
            self.out.append((type(obj).__name__, obj))
            return
        if id(obj) in self.seen:  # met before: where, not again
            self.out.append(("again", self.seen[id(obj)]))
            return
        if depth < 0 or len(self.seen) >= MAX_OBJECTS:
            raise _Unreliable("the walk's bounds")
        self.seen[id(obj)] = len(self.seen)
        self._keep.append(obj)  # ids stay unique while the walk runs
        if isinstance(obj, torch.Tensor):
            self.tensor(obj)
        elif isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                self.out.append("object-array")
                self.items(list(obj.reshape(-1)), depth - 1)
            else:
                self.digest("array", obj, obj.shape, obj.dtype)
        elif isinstance(obj, np.generic):
            self.out.append(("numpy", str(obj.dtype), obj.tobytes()))
        elif isinstance(obj, _OPAQUE) or isinstance(obj, types.ModuleType):
            self.out.append(("same", id(obj)))
        elif isinstance(obj, torch.nn.Module):
            self.out.append(("module", id(obj)))
            for t in list(obj.parameters()) + list(obj.buffers()):
                self.tensor(t)
            self.attributes(obj, depth - 1)
        elif isinstance(obj, (list, tuple)):
            self.out.append((type(obj).__name__, len(obj)))
            self.items(obj, depth - 1)
        elif isinstance(obj, (set, frozenset)):
            self.out.append((type(obj).__name__, len(obj)))
            self.items(sorted(obj, key=repr), depth - 1)
        elif isinstance(obj, Mapping) and type(obj).__module__ == "builtins":
            self.out.append(("dict", len(obj)))
            for k, v in obj.items():
                self.value(k, depth - 1)
                self.value(v, depth - 1)
        elif isinstance(obj, functools.partial):
            self.out.append("partial")
            self.items((obj.func, obj.args, dict(obj.keywords or {})), depth - 1)
        elif isinstance(obj, types.MethodType):
            self.out.append("method")
            self.items((obj.__func__, obj.__self__), depth - 1)
        elif isinstance(obj, types.FunctionType):
            self.function(obj, depth - 1)
        elif isinstance(obj, (staticmethod, classmethod)):
            self.value(obj.__func__, depth - 1)
        elif isinstance(obj, property):
            self.items((obj.fget, obj.fset), depth - 1)
        elif type(obj) is object:  # a sentinel
            self.out.append(("same", id(obj)))
        elif isinstance(obj, type):
            self.out.append(("class", id(obj)))
            if not _library(obj):
                for name, attr in vars(obj).items():
                    if not (name.startswith("__") and name.endswith("__")):
                        self.out.append(name)
                        self.value(attr, depth - 1)
        elif _library(obj) and not hasattr(obj, "__dict__") and not hasattr(type(obj), "__slots__"):
            raise _Unreliable(f"a {type(obj).__name__} whose state cannot be read")
        else:
            self.out.append(("object", id(type(obj))))
            if isinstance(obj, Mapping):
                self.value(dict(obj), depth - 1)
            self.attributes(obj, depth - 1)
            if not _library(obj):
                self.value(type(obj), depth - 1)

    def items(self, values, depth: int) -> None:
        """Record each of ``values``."""
        for v in values:
            self.value(v, depth)

    def attributes(self, obj, depth: int) -> None:
        """Record an object's attributes (``__dict__`` and ``__slots__``)."""
        state = getattr(obj, "__dict__", None)
        slots = [s for c in type(obj).__mro__ for s in getattr(c, "__slots__", ()) if isinstance(s, str)]
        if state is None and not slots:
            if not isinstance(obj, (Mapping, list, tuple, set, frozenset)):
                raise _Unreliable(f"a {type(obj).__name__} whose state cannot be read")
            return
        for name, v in sorted((state or {}).items()):
            self.out.append(name)
            self.value(v, depth)
        for name in slots:
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                self.out.append(name)
                self.value(getattr(obj, name), depth)

    def function(self, fn: types.FunctionType, depth: int) -> None:
        """Record what a function reads: closure, defaults, the globals its code names."""
        self.out.append(("function", id(fn.__code__)))
        if _library(fn) and depth < MAX_DEPTH - 1:  # a library's function (not the model itself): by identity
            return
        for cell in fn.__closure__ or ():
            try:
                self.value(cell.cell_contents, depth)
            except ValueError:  # an empty cell
                self.out.append("empty")
        self.value(fn.__defaults__, depth)
        self.value(fn.__kwdefaults__, depth)
        names = _names(fn.__code__)
        globs = fn.__globals__
        for name in sorted(names):
            if name not in globs:
                continue
            g = globs[name]
            self.out.append(name)
            if isinstance(g, types.ModuleType):
                self.module(g, names, depth)
            else:
                self.value(g, depth)

    def module(self, module: types.ModuleType, names: set, depth: int) -> None:
        """A module the code names: the attributes the code names too (``cfg.P``); of a
        library module only those that are data (constants, tensors, arrays)."""
        self.out.append(("module", module.__name__))
        library = module.__name__.partition(".")[0] in LIBRARIES
        for name in sorted(names):
            attr = getattr(module, name, None)
            if attr is None or isinstance(attr, types.ModuleType):
                continue
            if library and not isinstance(attr, (*_CONSTANTS, torch.Tensor, np.ndarray)):
                continue
            self.out.append(name)
            self.value(attr, depth - 1)


def fingerprint(fn) -> tuple | None:
    """What ``fn`` (a model function, callable object, ``functools.partial`` or bound
    method) can read besides its arguments, as a comparable tuple (see the module
    docstring); ``None`` when it cannot be computed reliably (then nothing is reused).

    Equal fingerprints mean equal values of everything reached: tensors and arrays equal
    in content, constants equal, the same library objects."""
    walk = _Walk()
    walk._keep = []
    try:
        if isinstance(fn, types.FunctionType):
            walk.seen[id(fn)] = 0
            walk._keep.append(fn)
            walk.function(fn, MAX_DEPTH)
        else:
            walk.value(fn, MAX_DEPTH)
            call = getattr(type(fn), "__call__", None)
            if isinstance(call, types.FunctionType):
                walk.value(call, MAX_DEPTH)
    except _Unreliable:
        return None
    except (RuntimeError, TypeError, ValueError, AttributeError):  # an object that refuses to be read
        return None
    return tuple(walk.out)
