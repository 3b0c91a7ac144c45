"""Which tensor a torch op writes into, for the tensor subclasses that follow a model
run (:class:`~ppl.compiler.provenance.Tracked`, :class:`~ppl.compiler.probe.Probe`).

An in-place write (``locs[1] = mu + gap``, ``x.add_(a)``, ``torch.add(a, b, out=x)``)
returns nothing new: the tensor written into keeps its old Python class, so whatever a
subclass knew about the value (its sites, its θ positions) is lost unless the subclass
looks at the target.  :func:`mutated_tensor` names the target.
"""

from __future__ import annotations

import torch

__all__ = ["mutated_tensor", "adopt", "restoring_classes"]

# dunder in-place operators (``a += b`` ...) and the setitem of ``a[i] = b``
_INPLACE_DUNDERS = frozenset({
    "__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__",
    "__imatmul__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__",
})
# trailing-underscore methods that do not change values
_NOT_WRITES = frozenset({"requires_grad_", "share_memory_", "retain_grad_", "detach_", "resize_as_"})


def mutated_tensor(name: str, args: tuple, kwargs: dict):
    """The tensor an op writes into, or None.

    Parameters
    ----------
    name : str
        The op's ``__name__`` as ``__torch_function__`` sees it.
    args : tuple
    kwargs : dict

    Returns
    -------
    torch.Tensor or None
        ``kwargs["out"]`` when given, ``args[0]`` for an in-place op (``__setitem__``,
        ``__iadd__``..., or a method whose name ends in ``_`` such as ``add_``), else None.
    """
    out = kwargs.get("out") if kwargs else None
    if isinstance(out, torch.Tensor):
        return out
    inplace = name in _INPLACE_DUNDERS or (
        name.endswith("_") and not name.startswith("_") and name not in _NOT_WRITES)
    if inplace and args and isinstance(args[0], torch.Tensor):
        return args[0]
    return None


_adopted: list = []


def adopt(target: torch.Tensor, cls: type) -> None:
    """Make ``target`` an instance of the tensor subclass ``cls`` in place (its Python
    object is the one the model holds), remembering its class for
    :class:`restoring_classes`."""
    _adopted.append((target, type(target)))
    target.__class__ = cls


class restoring_classes:
    """Context manager: tensors adopted inside it (:func:`adopt`) get their own class
    back on exit."""

    def __enter__(self):
        self._mark = len(_adopted)
        return self

    def __exit__(self, *exc):
        while len(_adopted) > self._mark:
            target, cls = _adopted.pop()
            target.__class__ = cls
        return False
