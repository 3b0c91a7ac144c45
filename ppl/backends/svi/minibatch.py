"""Data subsampling for stochastic-gradient methods (``subsample_size=`` of ``method="svi"``).

Each step draws B of a plate's N indices without replacement, slices the data along that plate, runs the
model on the slice and scales every log density inside the plate by N / B: the ELBO estimate and its
gradient stay unbiased (Hoffman et al. 2013, SVI, §2.4), as with Pyro's ``plate(..., subsample_size=B)``.
Sliced: observed sites inside the plate, along the plate's dim; model arguments whose first dim has the
plate's size N.  The model must take the plate's size from its data (``ppl.plate("data", len(x))``),
checked on the first step.
"""

from __future__ import annotations

import torch

from ...errors import DataError, OptionError
from ..common.distributed import PlateScale  # re-exported: the plate scaling of minibatches

__all__ = ["Minibatcher", "PlateScale"]


class Minibatcher:
    """Draws the data of one subsampled step.

    Parameters
    ----------
    graph : FactorGraph
    subsample_size : int or dict[str, int]
        B for the data plate (the plate the observed sites share), or plate name -> B
        (one plate).
    kwargs, observations : dict[str, Tensor]
        The full data (already on the run's device and dtype).

    Raises
    ------
    OptionError
        If the plate cannot be determined, B is not in 1..N, or more than one plate is
        named.
    DataError
        If nothing in the data has the plate's size N.
    """

    def __init__(self, graph, subsample_size, kwargs, observations):
        if isinstance(subsample_size, dict):
            if len(subsample_size) != 1:
                raise OptionError(f"subsample_size: give one plate -> size, got {subsample_size}")
            (plate, size), = subsample_size.items()
            if plate not in graph.plates:
                raise OptionError(f"subsample_size: model has no plate '{plate}'; its plates: {list(graph.plates)}")
        else:
            plate, size = self._data_plate(graph), subsample_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise OptionError(f"subsample_size must be a positive int (or {{plate: int}}), got {size!r}")
        self.plate = plate
        self.full = int(graph.plates[plate].size)
        self.size = min(int(size), self.full)
        dim = graph.plates[plate].dim
        self.obs_dims = {}
        for name, value in observations.items():
            var = graph.variables[name]
            if plate in var.plates:
                d = value.dim() - len(var.event_shape) + dim
                if 0 <= d < value.dim() and value.shape[d] == self.full:
                    self.obs_dims[name] = d
        self.arg_names = [k for k, v in kwargs.items()
                          if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == self.full]
        if not self.obs_dims and not self.arg_names:
            raise DataError(f"subsample_size: no observed site or argument has the size {self.full} of plate "
                            f"'{plate}' to subsample")
        self.kwargs, self.observations = kwargs, observations

    @staticmethod
    def _data_plate(graph) -> str:
        plates = {p for n in graph.observed() for p in graph.variables[n].plates}
        outer = [p for p in plates if all(p in graph.variables[n].plates for n in graph.observed())]
        if len(outer) != 1:
            raise OptionError(f"subsample_size: cannot tell which plate holds the data (plates of the observed "
                              f"sites: {sorted(plates)}); pass subsample_size={{'plate_name': size}}")
        return outer[0]

    @property
    def scale(self) -> float:
        """N / B."""
        return self.full / self.size

    def draw(self, generator=None):
        """``(kwargs, observations)`` of one step: B indices drawn without replacement."""
        device = next(iter(self.observations.values() or self.kwargs.values())).device
        idx = torch.randperm(self.full, generator=generator, device="cpu")[: self.size].to(device)
        kwargs = dict(self.kwargs)
        for k in self.arg_names:
            kwargs[k] = self.kwargs[k].index_select(0, idx)
        obs = dict(self.observations)
        for k, d in self.obs_dims.items():
            obs[k] = self.observations[k].index_select(d, idx)
        return kwargs, obs

    def check(self, model, kwargs, what: str = "model") -> None:
        """Before the first subsampled step: run ``model`` (or a guide: ``what="guide"``) on
        a slice; its plate must have shrunk to B.

        Raises
        ------
        DataError
            If the plate kept its full size (its size does not come from the data), or the
            model fails on the sliced data."""
        from pyro import poutine

        message = (f"subsample_size: plate '{self.plate}' must shrink to {self.size} when the data is sliced to "
                   f"{self.size} rows; the {what} must take the plate's size from the data (e.g. "
                   f"ppl.plate('{self.plate}', len(x))), or subsample in the model with Pyro's "
                   f"plate(..., subsample_size=)")
        try:
            trace = poutine.trace(model).get_trace(**kwargs)
        except Exception as e:
            raise DataError(f"{message}; on sliced data the {what} raised {type(e).__name__}: "
                            f"{str(e).splitlines()[0]}") from None
        for site in trace.nodes.values():
            for f in site.get("cond_indep_stack", ()):
                if f.name == self.plate and f.size != self.size:
                    raise DataError(f"{message}; it kept size {f.size}")
