"""``pyro.module`` weights: every ppl call leaves the user's networks as it found them.

``pyro.module(name, net)`` registers each parameter ``p`` of ``net`` in Pyro's param store
under ``"name$$$p"`` (``$$$``: Pyro's module divider) as the network's *own* tensor, and the
network's forward pass reads that tensor, so a gradient step (SVI's) changes the user's
network in place.  ppl keeps its calls pure instead:

* :class:`ModuleWeights`, entered by every :func:`~ppl.backends.common.params.param_scope`
  (each ``ppl.infer`` / ``analyze`` / ``compare`` / ``compile`` call, each later run of the
  model or guide by a posterior), copies the value and gradient of every module weight the
  first time the scope sees it registered, and copies them back into the same tensor
  objects when the scope exits, normally or by an exception;
* the learned weights are read into ``post.params`` (under their ``"name$$$p"`` keys) before
  that, and a scope given them as ``values`` runs the networks with them while it lasts:
  posterior draws, ``post.predictive``, ``to_arviz`` and ``init=post`` warm starts use the
  learned weights, never the user's untouched ones;
* :func:`load_module_weights` (``post.load_module_weights()``) writes them into the user's
  networks, on request only.

Writes go through ``tensor.data`` under ``torch.no_grad()``: the tensor objects stay the
same and the copy back adds nothing to their version counters (an optimiser's in-place
steps inside the call still count).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pyro.poutine.messenger import Messenger

from ...errors import ModelError, OptionError, UnsupportedModelError

__all__ = ["DIVIDER", "is_module_param", "module_values", "write_value", "ModuleWeights", "ModuleRefs",
           "keep_module_refs", "load_module_weights"]

#: Pyro's divider between a module's name and its parameter's (``"decoder$$$out.weight"``).
DIVIDER = "$$$"


def is_module_param(name) -> bool:
    """Whether param site ``name`` is a weight registered by ``pyro.module``."""
    return isinstance(name, str) and DIVIDER in name


def module_values(params: Mapping) -> dict:
    """The ``pyro.module`` weights (``"name$$$p"`` keys) of a mapping of param values."""
    return {k: v for k, v in params.items() if is_module_param(k)}


def write_value(tensor: torch.Tensor, value: torch.Tensor) -> None:
    """Copy ``value`` (same shape; cast to ``tensor``'s dtype and device) into ``tensor``
    itself, out of autograd and without bumping ``tensor``'s version counter."""
    with torch.no_grad():
        tensor.data.copy_(value)


class ModuleWeights(Messenger):
    """A Pyro messenger that keeps ``pyro.module`` weights as it found them.

    The first time a weight is registered inside it (a ``pyro.param`` message named
    ``"name$$$p"`` whose initial tensor is the network's own parameter), it copies the
    tensor's value and ``.grad``; with ``values``, it then writes the given weight into the
    tensor.  On exit (normal or by an exception) every tensor seen gets its value and its
    ``.grad`` (the same object, with its values) back.  It reads messages after Pyro has
    handled them (``_pyro_post_param``), from the outermost messenger in, so nested scopes
    restore in the right order.  A registration hidden from it by an enclosing
    ``poutine.block()`` is not seen.

    Parameters
    ----------
    values : dict[str, torch.Tensor], optional
        ``"name$$$p"`` -> the weight to run with (the parameter's shape); other keys are
        ignored.
    known : dict[str, torch.Tensor], optional
        ``"name$$$p"`` -> the network's tensor where already known (the compiled model's
        param sites): claimed on entry, so even a run hidden from the messenger uses
        ``values``.

    Attributes
    ----------
    tensors : dict[str, torch.Tensor]
        ``"name$$$p"`` -> the network's own tensor, for every weight seen (kept after exit).

    Raises
    ------
    ModelError
        When a weight of ``values`` does not have its tensor's shape (the network changed
        since the fit); raised inside the model run that registers it (or on entry).
    """

    def __init__(self, values: Mapping | None = None, known: Mapping | None = None):
        super().__init__()
        self.values = module_values(values or {})
        self.known = {k: t for k, t in (known or {}).items() if k in self.values and isinstance(t, torch.Tensor)}
        self.tensors: dict = {}
        self._saved: dict = {}  # id(tensor) -> (tensor, value, grad, grad value)

    def __enter__(self):
        out = super().__enter__()
        try:
            for name, tensor in self.known.items():
                self.claim(name, tensor)
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return out

    def __exit__(self, exc_type, exc_value, traceback):
        try:
            self.restore()
        finally:
            super().__exit__(exc_type, exc_value, traceback)

    def _pyro_post_param(self, msg):
        args = msg["args"]
        if is_module_param(msg["name"]) and len(args) > 1 and isinstance(args[1], torch.Tensor):
            self.claim(msg["name"], args[1])

    def claim(self, name: str, tensor: torch.Tensor) -> None:
        """Snapshot ``tensor`` (weight ``name``) the first time it is seen, then give it
        ``values[name]`` if given.  Raises ``ModelError`` on a shape mismatch."""
        self.tensors[name] = tensor
        if id(tensor) in self._saved:
            return
        grad = tensor.grad
        self._saved[id(tensor)] = (tensor, tensor.detach().clone(), grad,
                                   None if grad is None else grad.detach().clone())
        value = self.values.get(name)
        if value is None:
            return
        if tuple(value.shape) != tuple(tensor.shape):
            raise ModelError(f"pyro.module weight '{name}' has shape {tuple(tensor.shape)} in the network, but the "
                             f"weight to run it with has shape {tuple(value.shape)}: the network changed since the fit")
        write_value(tensor, value)

    def restore(self) -> None:
        """Every tensor seen back to the value and ``.grad`` it had when first seen."""
        for tensor, value, grad, grad_value in reversed(list(self._saved.values())):
            if tensor.shape == value.shape:
                write_value(tensor, value)
            if tensor.grad is not grad:
                tensor.grad = grad
            if grad is not None and grad.shape == grad_value.shape:
                write_value(grad, grad_value)
        self._saved.clear()


class ModuleRefs:
    """``"name$$$p"`` -> the network's own tensor, for every ``pyro.module`` weight a fit
    registered: where :func:`load_module_weights` writes by default.  Copies of a posterior
    share it; it is never pickled or saved (a loaded posterior has none)."""

    def __init__(self, tensors: Mapping):
        self.tensors = dict(tensors)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        raise TypeError("references to the user's networks are not saved with a posterior")


def keep_module_refs(post, weights: ModuleWeights) -> None:
    """Keep in ``post`` the tensors of the networks ``weights`` saw registered (if any)."""
    if weights is not None and weights.tensors:
        post._module_refs = ModuleRefs(weights.tensors)


def load_module_weights(post, modules: Mapping | None = None) -> list:
    """Write the learned ``pyro.module`` weights of ``post`` (its ``params`` entries
    ``"name$$$p"``) into the networks; see
    :meth:`~ppl.posterior.base.Posterior.load_module_weights` (parameters, returns, raises)."""
    learned = module_values(post.params or {})
    if not learned:
        raise UnsupportedModelError(f"this posterior (method '{post.method}') holds no learned pyro.module weights "
                                    "(post.params has no 'name$$$param' entry)")
    targets = _targets(post, learned, modules)
    for name, tensor in targets.items():
        value = learned[name]
        if tuple(tensor.shape) != tuple(value.shape):
            raise OptionError(f"load_module_weights: weight '{name}' has shape {tuple(tensor.shape)} in the network, "
                              f"but the learned weight has shape {tuple(value.shape)}")
    for name, tensor in targets.items():
        write_value(tensor, learned[name])
    return list(targets)


def _targets(post, learned: dict, modules) -> dict:
    """``"name$$$p"`` -> the tensor to write: from ``modules`` (Pyro name -> nn.Module), or
    the tensors the fit registered."""
    if modules is None:
        refs = getattr(getattr(post, "_module_refs", None), "tensors", None) or {}
        missing = [n for n in learned if n not in refs]
        if missing:
            raise UnsupportedModelError(
                f"load_module_weights: this posterior does not know the networks of {missing} (a loaded posterior "
                "keeps the weights, not the networks): pass them, e.g. load_module_weights({'decoder': decoder})")
        return {n: refs[n] for n in learned}
    if not isinstance(modules, Mapping) or not all(
            isinstance(k, str) and isinstance(m, torch.nn.Module) for k, m in modules.items()):
        raise OptionError("load_module_weights: modules must be a dict of pyro.module names to torch.nn.Module "
                          f"objects, got {modules!r}")
    out = {}
    for module_name, module in modules.items():
        own = dict(module.named_parameters())
        names = [n for n in learned if n.partition(DIVIDER)[0] == module_name]
        if not names:
            raise OptionError(f"load_module_weights: no learned weight of a module named '{module_name}' (learned: "
                              f"{sorted({n.partition(DIVIDER)[0] for n in learned})})")
        lacking = [n for n in names if n.partition(DIVIDER)[2] not in own]
        if lacking:
            raise OptionError(f"load_module_weights: module '{module_name}' has no parameter(s) "
                              f"{[n.partition(DIVIDER)[2] for n in lacking]}")
        out.update({n: own[n.partition(DIVIDER)[2]] for n in names})
    return out
