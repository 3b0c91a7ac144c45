"""What a backend is: a named inference method that says whether it applies to an
analysed model and runs to a :class:`~ppl.posterior.Posterior`."""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import pyro
import torch

from ..errors import UnsupportedModelError

__all__ = ["Applicability", "Backend", "BoundMonitor", "progress_bar", "check_int", "check_number", "run_context",
           "place", "store_params", "count_observations",
           "current_params", "param_constraint"]


def check_int(name: str, value, low: int) -> int:
    """``value`` as the integer option ``name`` (at least ``low``).

    Raises
    ------
    OptionError
        If ``value`` is not an int (bools are refused) or is below ``low``."""
    from ..errors import OptionError

    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OptionError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_number(name: str, value, *, low=None, high=None, low_open: bool = False) -> float:
    """``value`` as the finite real option ``name`` in ``[low, high]`` (``(low, high]`` when
    ``low_open``); a bound left ``None`` is not checked.

    Raises
    ------
    OptionError
        If ``value`` is not a finite int/float or lies outside the range."""
    from ..errors import OptionError

    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else f"<= {high:g}"
        rng = " and ".join(b for b in (lo, hi) if b)
        raise OptionError(f"{name} must be a finite number{' ' + rng if rng else ''}, got {value!r}")
    return float(value)


@contextlib.contextmanager
def run_context(device: torch.device, dtype: torch.dtype, seed=None):
    """Default device and dtype for tensors the model creates, and an optional seed (the
    caller's RNG state is restored afterwards)."""
    old_dtype = torch.get_default_dtype()
    rng = contextlib.nullcontext()
    if seed is not None:
        devices = [device] if device.type == "cuda" else []
        rng = torch.random.fork_rng(devices=devices)
    with rng:
        if seed is not None:
            pyro.set_rng_seed(int(seed))
        torch.set_default_dtype(dtype)
        try:
            # torch.device as a context manager routes every torch call through a Python
            # TorchFunctionMode: worth it only to put the model's own tensors on an accelerator
            with device if device.type != "cpu" else contextlib.nullcontext():
                yield
        finally:
            torch.set_default_dtype(old_dtype)


def seeded_generator(seed, device: torch.device) -> torch.Generator:
    """A torch Generator on ``device`` seeded with ``seed`` (fresh entropy when None)."""
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    return gen


def place(value, device: torch.device, dtype: torch.dtype):
    """``value`` on ``device``, floating tensors cast to ``dtype`` (other values as they are)."""
    if isinstance(value, torch.Tensor):
        value = value.to(device)
        if value.is_floating_point():
            value = value.to(dtype)
    return value


def current_params(graph, names, dtype: torch.dtype, device: torch.device) -> dict:
    """The current constrained values of the ``ppl.param`` sites ``names``: Pyro's param store
    where it holds them, else the values traced when ``graph`` was compiled; detached copies
    in ``dtype`` on ``device``.  The starting θ of every learning backend (EM, MAP, CAVI)."""
    store = pyro.get_param_store()
    return {n: (store[n] if n in store else graph.sites[n].value).detach().to(dtype=dtype, device=device).clone()
            for n in names}


def param_constraint(name: str):
    """The constraint ``ppl.param`` site ``name`` was declared with (``real`` if none)."""
    return pyro.get_param_store()._constraints.get(name, torch.distributions.constraints.real)


def store_params(params: dict) -> None:
    """Leave learned ``ppl.param`` values (name -> constrained value) in Pyro's param store,
    in each param's own dtype and device, so the model run afterwards (another method,
    ``Predictive``) uses them."""
    store = pyro.get_param_store()
    with torch.no_grad():
        for k, v in params.items():
            old = store[k] if k in store else None
            store[k] = (v.to(dtype=old.dtype, device=old.device) if old is not None else v).detach().clone()


def count_observations(graph) -> int:
    """Observed values: the batch elements of every observed site (at least 1); the scale
    of per-observation convergence tolerances."""
    n = 0
    for v in graph.observed():
        var = graph.variables[v]
        n += int(math.prod(var.batch_shape)) if var.batch_shape else 1
    return max(n, 1)


def progress_bar(total: int, desc: str, progress=None):
    """A tqdm bar on stderr, or ``None`` when ``progress`` is False.  ``progress=None``
    shows it only on a terminal (tqdm's ``disable=None``)."""
    if progress is not None and not progress:
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=None if progress is None else False, file=sys.stderr)


@dataclass(frozen=True)
class Applicability:
    """Answer of :meth:`Backend.check`.

    Attributes
    ----------
    ok : bool
    reason : str
        Why it applies (facts and cost) or why not (naming the sites at fault).
    error : type
        Error class to raise if the user insists (``UnsupportedModelError`` or
        ``IntractableError``).
    details : dict
        Extra keyword arguments for the error (e.g. treewidth, bytes).
    """

    ok: bool
    reason: str
    error: type = UnsupportedModelError
    details: dict | None = None


class Backend(ABC):
    """Base class of inference backends.

    Subclasses set :attr:`name`, :attr:`summary` and :attr:`options` (option name ->
    one-line doc) and implement :meth:`check` and :meth:`run`.  Register an instance
    with :func:`ppl.register_backend`.
    """

    name: str = ""
    summary: str = ""
    options: dict = {}

    @abstractmethod
    def check(self, analysis) -> Applicability:
        """Whether this backend applies to ``analysis`` (a :class:`ppl.analysis.Analysis`), and why."""

    @abstractmethod
    def run(self, graph, analysis, **options):
        """Run inference on ``graph`` (a :class:`ppl.compiler.FactorGraph`) and return a Posterior."""

    def check_options(self, analysis, verdict: Applicability, options: dict) -> Applicability:
        """The verdict for a run with ``options``: by default :meth:`check`'s ``verdict``.
        A backend whose applicability depends on an option (e.g. SVI with a guide that
        samples the discrete latents enumeration could not handle) overrides this."""
        return verdict

    def validate_options(self, options: dict) -> None:
        """Raise ``TypeError`` naming any option this backend does not take (and listing those it does)."""
        unknown = [k for k in options if k not in self.options]
        if unknown:
            valid = ", ".join(f"{k} ({v})" for k, v in self.options.items())
            raise TypeError(f"method '{self.name}' got unknown option(s) {unknown}; it takes: {valid}")

    def __repr__(self):
        return f"<backend '{self.name}': {self.summary}>"


class BoundMonitor:
    """The iteration loop's bookkeeping, shared by iterative backends (EM, CAVI): the
    objective per iteration (``history``), the stopping rule, the monotonicity check and
    an optional tqdm progress bar.

    Parameters
    ----------
    what : str
        Name of the objective in messages (``"log-likelihood"``, ``"ELBO"``).
    tol : float
        Converged when ``|Δ objective| / n_obs < tol`` between consecutive iterations.
    n_obs : int
        Number of observed values the objective is averaged over for ``tol``.
    max_iter : int
        For the progress bar.
    progress : bool or None
        Show a tqdm bar with the running objective; ``None`` shows it only on a terminal.
    monotone : bool
        The objective must not decrease (EM, sequential CAVI): a decrease of more than
        ``1e-9 · (1 + |objective|)`` warns with :class:`~ppl.errors.BoundDecreaseWarning`.
    desc : str
        Label of the progress bar.
    """

    def __init__(self, what: str, tol: float, n_obs: int, max_iter: int, progress=None, monotone: bool = True,
                 desc: str = ""):
        self.what = what
        self.tol = float(tol)
        self.n_obs = max(int(n_obs), 1)
        self.monotone = monotone
        self.history: list = []
        self.converged = False
        self._bar = progress_bar(max_iter, desc or what, progress)

    def record(self, value: float) -> bool:
        """Append ``value`` (nats); returns True once converged."""
        import warnings

        from ..errors import BoundDecreaseWarning

        value = float(value)
        if self.history:
            prev = self.history[-1]
            if self.monotone and value < prev - 1e-9 * (1.0 + abs(prev)):
                warnings.warn(
                    f"the {self.what} decreased at iteration {len(self.history)}: {prev:.10g} -> {value:.10g} nats "
                    f"(by {prev - value:.3g}); this should not happen for an exact monotone method - please report it",
                    BoundDecreaseWarning, stacklevel=3)
            self.converged = abs(value - prev) / self.n_obs < self.tol
        self.history.append(value)
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.what} {value:.6g}")
            if len(self.history) > 1:
                self._bar.update(1)
        return self.converged

    def close(self) -> None:
        """Close the progress bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
