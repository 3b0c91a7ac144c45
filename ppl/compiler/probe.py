"""Which tensors in a model run are plain selections of ``ppl.param`` elements.

A :class:`Probe` is a ``ppl.param`` value that carries, beside its values, the flat
position of every element in the concatenated parameter vector θ.  Indexing and
shape-only operations (``loc[z]``, ``Vindex``, ``expand``, ``reshape``, broadcasting...)
apply the same operation to the positions, so their result is still a Probe whose
positions say which θ element each entry is: a *gather* of θ.  Any other operation
(arithmetic, ``softplus``, ``cholesky``...) gives a Probe without positions that only
remembers which params it depends on.

The EM backend uses this to recognise, from an ordinary model run, that a distribution
parameter is θ indexed by discrete latents (``Normal(loc[z], scale[z])``), which is what
makes a closed-form M-step and a fast, vectorised re-evaluation of the factor tables
possible.  Two normalisations that torch distributions apply in their constructors
(``probs / probs.sum(-1, keepdim=True)`` in ``Categorical``; ``logits -
logits.logsumexp(-1, keepdim=True)``) keep the positions: rebuilding the distribution
from the gathered θ applies them again, so the table is unchanged.
"""

from __future__ import annotations

import torch

from . import derivation
from .internals import no_torch_function
from .mutation import adopt, mutated_tensor

__all__ = ["Probe", "plain", "positions_of", "scale_of", "track_scales", "escaped_params"]

# Operations that only select, reorder or broadcast elements: applied to the positions.
_VIEWS = frozenset({
    "__getitem__", "index_select", "reshape", "view", "expand", "expand_as", "broadcast_to", "unsqueeze",
    "squeeze", "permute", "transpose", "t", "movedim", "moveaxis", "swapaxes", "flatten", "unflatten", "select",
    "narrow", "broadcast_tensors", "stack", "cat", "concat", "unbind", "split", "chunk", "gather",
    "take_along_dim", "repeat", "tile", "repeat_interleave", "flip", "roll", "diagonal", "tril", "triu",
})
# Operations that keep every element where it is (dtype/device changes, copies).
_SAME = frozenset({"to", "double", "float", "type", "type_as", "clone", "contiguous", "detach", "cpu", "cuda",
                   "requires_grad_", "__deepcopy__"})
# Operations that take a value out of torch: θ then enters the model untracked.
_ESCAPES = frozenset({"item", "tolist", "numpy", "__float__", "__int__", "__index__", "__bool__", "__array__"})
_SUMS = frozenset({"sum"})
_LSE = frozenset({"logsumexp"})
_DIVS = frozenset({"div", "__truediv__", "true_divide", "divide"})
_SUBS = frozenset({"sub", "__sub__", "subtract"})
_MULS = frozenset({"mul", "__mul__", "__rmul__", "multiply"})

#: Whether a constant times a gather is tracked as a *scaled gather* (``beta0 * prec``):
#: on for CAVI's probe runs of latent values only (EM's closed forms need plain gathers).
_track = [False]

#: Names of params whose values left torch during a probe run (``float(theta)``...).
_escaped: set = set()


class Probe(torch.Tensor):
    """A tensor that knows which parameter elements it is made of (see the module docstring).

    Attributes
    ----------
    ppl_positions : torch.LongTensor or None
        Same shape as the tensor: flat index into θ of each element, or ``None`` when the
        tensor is not a plain selection of θ.
    ppl_deps : frozenset[str]
        Names of the params the values depend on.
    """

    ppl_positions = None
    ppl_deps: frozenset = frozenset()
    ppl_rowop = None  # (kind, source probe) for the row sums / logsumexps of a gather
    ppl_scale = None  # for a scaled gather: the constant factor, broadcast to the tensor's shape

    @staticmethod
    def wrap(value: torch.Tensor, positions, deps) -> "Probe":
        """``value`` as a Probe with the given positions (LongTensor or None) and deps."""
        out = value.as_subclass(Probe)
        out.ppl_positions = positions
        out.ppl_deps = frozenset(deps)
        out.ppl_rowop = None
        out.ppl_scale = None
        return out

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        probes = _find(args) + (_find(kwargs.values()) if kwargs else [])
        name = getattr(func, "__name__", "")
        if name in _ESCAPES:
            for p in probes:
                _escaped.update(p.ppl_deps)
        with no_torch_function():
            out = func(*args, **kwargs)
        if not probes or name in ("__get__", "__set__", "size", "dim", "numel", "__len__"):
            return out
        deps = frozenset().union(*(p.ppl_deps for p in probes))
        target = mutated_tensor(name, args, kwargs)
        if target is not None:
            _written(target, deps)
            return out
        if any(p.ppl_scale is not None for p in probes):
            # a scaled gather stays one through copies and views (a distribution's constructor
            # expands its arguments), the same op applied to its factor; any other op makes it
            # a general function of θ
            p = probes[0]
            if len(probes) == 1 and isinstance(out, torch.Tensor) and (name in _SAME or name in _VIEWS):
                positions = _positions(name, func, args, kwargs, probes, out)
                if isinstance(positions, torch.Tensor) and positions.shape == out.shape:
                    try:
                        with no_torch_function():
                            factor = func(*(_swap(a, "ppl_scale") for a in args),
                                          **{k: _swap(v, "ppl_scale") for k, v in kwargs.items()})
                    except Exception:  # an op the factor cannot follow
                        factor = None
                    if isinstance(factor, torch.Tensor) and factor.shape == out.shape:
                        res = Probe.wrap(out, positions, deps)
                        res.ppl_scale = factor
                        return res
            return _wrap_out(out, _derived(func, name, args, kwargs, out, probes), deps, name, args, kwargs, probes)
        if _track[0] and name in _MULS and len(probes) == 1 and probes[0].ppl_positions is not None \
                and len(args) == 2 and not kwargs and isinstance(out, torch.Tensor):
            other = args[1] if args[0] is probes[0] else args[0]
            if isinstance(other, (int, float)) or (isinstance(other, torch.Tensor) and not isinstance(other, Probe)):
                try:
                    pos = probes[0].ppl_positions.expand(out.shape)
                    factor = torch.as_tensor(other, dtype=out.dtype, device=out.device).expand(out.shape)
                except RuntimeError:
                    return _wrap_out(out, None, deps, name, args, kwargs, probes)
                res = Probe.wrap(out, pos, deps)
                res.ppl_scale = factor
                return res
        positions = _positions(name, func, args, kwargs, probes, out)
        if positions is None:
            positions = _derived(func, name, args, kwargs, out, probes)
        if name == "broadcast_tensors":  # each output is its own input broadcast: constants stay constants
            inputs = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
            pos = positions if isinstance(positions, (tuple, list)) else [None] * len(out)
            return type(out)(_wrap_out(o, q, inp.ppl_deps, name, args, kwargs, [inp]) if isinstance(inp, Probe)
                             else o for o, q, inp in zip(out, pos, inputs))
        return _wrap_out(out, positions, deps, name, args, kwargs, probes)


def _derived(func, name, args, kwargs, out, probes):
    """New positions for ``out`` when a :func:`~ppl.compiler.derivation.record_derived`
    recorder is active and can replay the op (:meth:`Derivation.add
    <ppl.compiler.derivation.Derivation.add>`), else None."""
    rec = derivation.recorder()
    if rec is None or name in _ESCAPES or not isinstance(out, torch.Tensor):
        return None
    return rec.add(func, args, kwargs, out, probes, positions_of, scale_of)


def _written(target: torch.Tensor, deps: frozenset) -> None:
    """An in-place write of θ-dependent values into ``target`` (``locs[1] = mu + gap``):
    ``target`` (and any view of it) is no longer what the probe run saw when it was made,
    so the params involved are treated as escaped (their factors are re-evaluated by model
    runs) and ``target`` becomes a general function of them."""
    _escaped.update(deps)
    if not isinstance(target, Probe):
        adopt(target, Probe)
    target.ppl_positions = None
    target.ppl_deps = frozenset(target.ppl_deps) | deps
    target.ppl_rowop = target.ppl_scale = None


def _find(items) -> list:
    """Probes among ``items`` and inside list/tuple items (one level: torch ops take
    tensors or sequences of tensors)."""
    out = []
    for a in items:
        if isinstance(a, Probe):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, Probe))
    return out


def _swap(a, attr="ppl_positions"):
    """Replace probes by their positions (or another attribute; one level into lists/tuples)."""
    if isinstance(a, Probe):
        return getattr(a, attr)
    if isinstance(a, (list, tuple)):
        return type(a)(getattr(x, attr) if isinstance(x, Probe) else x for x in a)
    return a


def plain(x):
    """Strip Probe-ness.

    Parameters
    ----------
    x : object

    Returns
    -------
    object
        A plain ``torch.Tensor`` view of the same data when ``x`` is a :class:`Probe`,
        else ``x`` itself.
    """
    return x.as_subclass(torch.Tensor) if isinstance(x, Probe) else x


def _positions(name, func, args, kwargs, probes, out):
    """Positions of the output of a view op applied to probes, or None."""
    if len(args) == 2 and isinstance(args[1], Probe) and args[1].ppl_rowop is not None:
        kind, source = args[1].ppl_rowop
        if source is args[0] and ((name in _DIVS and kind == "sum") or (name in _SUBS and kind == "lse")):
            return args[0].ppl_positions
    if not all(p.ppl_positions is not None for p in probes):
        return None
    if name in _SAME and isinstance(out, torch.Tensor) and out.shape == probes[0].shape:
        return probes[0].ppl_positions
    if name in _VIEWS:
        # every tensor argument that carries values (not an index) must be a gather
        if name in ("stack", "cat", "concat") and not all(isinstance(a, Probe) for a in args[0]):
            return None
        try:
            with no_torch_function():
                return func(*(_swap(a) for a in args), **{k: _swap(v) for k, v in kwargs.items()})
        except Exception:  # an op the positions cannot follow (dtype-specific): not a gather
            return None
    return None


def _wrap_out(out, positions, deps, name, args, kwargs, probes):
    if isinstance(out, (tuple, list)):
        pos = positions if isinstance(positions, (tuple, list)) else [None] * len(out)
        return type(out)(_wrap_out(o, p, deps, name, args, kwargs, probes) for o, p in zip(out, pos))
    if not isinstance(out, torch.Tensor):
        return out
    if isinstance(positions, torch.Tensor) and (positions.shape != out.shape or positions.is_floating_point()):
        positions = None
    res = Probe.wrap(out, positions if isinstance(positions, torch.Tensor) else None, deps)
    # remember row sums / logsumexps over the last dim of a gather, for the normalisations
    if (name in _SUMS or name in _LSE) and len(probes) == 1 and probes[0].ppl_positions is not None \
            and args and args[0] is probes[0]:
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        if isinstance(dim, (tuple, list)) and len(dim) == 1:
            dim = dim[0]
        if isinstance(dim, int) and dim in (-1, probes[0].dim() - 1) and keep is True:
            if name in _SUMS:
                res.ppl_rowop = ("sum", probes[0])
            elif name in _LSE:
                res.ppl_rowop = ("lse", probes[0])
    return res


def positions_of(x):
    """``(positions, deps)`` of a tensor from a probe run: positions is a LongTensor for a
    gather of θ, ``None`` otherwise; deps is the set of params it depends on (empty for a
    constant)."""
    if isinstance(x, Probe):
        return (None if x.ppl_positions is None else plain(x.ppl_positions)), x.ppl_deps
    return None, frozenset()


def scale_of(x):
    """The constant factor of a scaled gather (``c * θ[i]``), or None."""
    if isinstance(x, Probe) and x.ppl_scale is not None:
        return plain(x.ppl_scale)
    return None


class track_scales:
    """Context manager: within it, a constant times a gather is a scaled gather."""

    def __enter__(self):
        self._old = _track[0]
        _track[0] = True
        return self

    def __exit__(self, *exc):
        _track[0] = self._old
        return False


def escaped_params(reset: bool = False) -> set:
    """Params whose values were turned into Python numbers or numpy arrays during probe
    runs (their uses are invisible to tracking); ``reset`` clears the record."""
    out = set(_escaped)
    if reset:
        _escaped.clear()
    return out
