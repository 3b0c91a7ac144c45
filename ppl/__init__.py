"""ppl: write a latent-variable model once, get every sensible inference method for it.

Public API (see docs/)::

    import ppl, ppl.distributions as dist

    @ppl.model
    def m(...): ...

    ppl.analyze(m, data)                 # structure, treewidth, cost, which methods apply
    post = ppl.infer(m, data, method="exact")
    ppl.compare(m, data, methods=[...])
    post.save("post.pt"); ppl.load("post.pt")   # keep a result (no model needed to read it)
"""

from . import constraints, distributions, errors
from .api import analyze, compare, compile, infer, methods
from .cases import infer_cases
from .backends import Backend, get_backend, register_backend, registered_backends
from .compiler import FactorGraph
from .analysis import Analysis
from .dsl import Model, Vindex, deterministic, factor, markov, model, param, plate, sample
from .errors import (
    BackendNotFoundError,
    BoundDecreaseWarning,
    ConvergenceWarning,
    DataError,
    IntractableError,
    ModelError,
    NumericalError,
    OptionError,
    PPLError,
    TrustWarning,
    UnknownOptionError,
    UnsupportedModelError,
)
from .posterior import Posterior, load
from .posterior.predictive import predict, prior_predictive
from .render import render
from .streaming import infer_stream, stream_npy
from .table import Table

__version__ = "0.1.0"

__all__ = [
    "model", "Model", "sample", "param", "plate", "markov", "deterministic", "factor", "Vindex", "distributions", "constraints",
    "compile", "analyze", "infer", "compare", "methods", "FactorGraph", "Analysis", "Posterior", "load", "Table",
    "Backend", "register_backend", "get_backend", "registered_backends",
    "PPLError", "ModelError", "DataError", "UnsupportedModelError", "IntractableError", "BackendNotFoundError", "OptionError", "UnknownOptionError", "NumericalError",
    "ConvergenceWarning", "BoundDecreaseWarning", "TrustWarning", "errors", "models",
    "render", "predict", "prior_predictive", "infer_cases", "infer_stream", "stream_npy",
]


def __getattr__(name):  # lazy: ppl.models imports optional peers only when used
    if name == "models":
        import importlib

        return importlib.import_module(".models", __name__)
    raise AttributeError(f"module 'ppl' has no attribute {name!r}")
