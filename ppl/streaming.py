"""Data beyond memory: streams of minibatches of the data plate (docs/streaming.md).

:func:`infer_stream` fits a model to a stream (online EM for ``method="em"``, stochastic
variational inference for ``method="cavi"``); :func:`stream_npy` reads a ``.npy`` file
through a memory map, one chunk of rows per batch, so memory stays bounded by the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from .api import infer
from .backends.registry import get_backend, methods_taking
from .errors import DataError, OptionError

__all__ = ["infer_stream", "stream_npy", "NpyStream"]


class NpyStream:
    """A stream over the rows of a ``.npy`` file: each call returns a fresh iterator of
    ``{key: tensor of shape (B, ...)}``, the rows ``[i, i + batch_size)`` read from
    ``np.load(path, mmap_mode="r")`` (only those rows are in memory; the last batch may be
    short).

    Attributes
    ----------
    num_points : int
        The number of rows (N, from the file's header, without reading the data).
    """

    def __init__(self, path, key: str, batch_size: int, dtype=torch.float64):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise OptionError(f"stream_npy: batch_size={batch_size!r} must be a positive integer")
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"stream_npy: cannot read {str(path)!r} as a .npy array ({e})") from None
        if array.ndim < 1 or array.shape[0] == 0:
            raise DataError(f"stream_npy: {str(path)!r} holds an array of shape {array.shape}; a stream needs rows "
                            "(the data plate along the first dim)")
        self.path, self.key, self.batch_size, self.dtype = path, key, int(batch_size), dtype
        self.num_points = int(array.shape[0])
        self.shape = tuple(array.shape)

    def __call__(self):
        array = np.load(self.path, mmap_mode="r")
        for i in range(0, self.num_points, self.batch_size):
            chunk = np.array(array[i:i + self.batch_size])         # a copy of these rows only
            yield {self.key: torch.from_numpy(chunk).to(self.dtype)}

    def __repr__(self):
        return f"stream_npy({str(self.path)!r}, key={self.key!r}, batch_size={self.batch_size}) of {self.shape}"


def stream_npy(path, key: str = "x", batch_size: int = 10_000, dtype=torch.float64) -> NpyStream:
    """A stream of minibatches of the rows of the ``.npy`` file at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy`` file holding an array of shape ``(N, ...)``: N data points.
    key : str
        The data key of each batch (a model argument or an observed site).
    batch_size : int
        Rows per batch ``B`` (the last batch holds ``N mod B`` rows when that is not 0).
    dtype : torch.dtype
        Of the batch tensors (default float64, ppl's precision).

    Returns
    -------
    NpyStream
        Callable: each call a fresh iterator of ``{key: tensor (B, ...)}``; ``num_points`` = N.

    Raises
    ------
    DataError
        The file cannot be read as a ``.npy`` array, or it has no rows.
    OptionError
        ``batch_size`` not a positive integer.
    """
    return NpyStream(path, key, batch_size, dtype)


def infer_stream(model, stream, data=None, method: str = "em", **options):
    """``ppl.infer(model, {**data, **first batch}, method=method, stream=stream, **options)``:
    fit ``model`` to the minibatches of ``stream`` (online EM for ``"em"``, SVI for
    ``"cavi"``; docs/streaming.md).  The first batch only fixes the compiled structure; every
    batch, the first included, is read from the stream in each epoch.

    Parameters
    ----------
    model : Model
    stream : callable
        Returns a fresh iterator of data dicts, each one minibatch of the data plate
        (e.g. :func:`stream_npy`).
    data : mapping, optional
        The model's other arguments (constants, hyperparameters).
    method : str
        ``"em"`` or ``"cavi"``.
    **options
        As for ``ppl.infer`` with that method (``epochs``, ``step_offset``, ``step_power``,
        ``num_points``, ``stream_tol``, ...).

    Returns
    -------
    Posterior
        :class:`~ppl.posterior.stream.StreamPosterior` (EM) or
        :class:`~ppl.posterior.stream.StreamFactorPosterior` (CAVI).

    Raises
    ------
    OptionError
        ``stream`` not callable (a list or an iterator of batches: wrap it, ``lambda:
        iter(batches)``), or ``method`` one that does not stream (``"auto"`` included).
    DataError
        An empty stream, a first batch that is not a dict, an exception raised by the
        stream itself (naming it and the batch); the errors of ``ppl.infer``.
    """
    if not callable(stream):
        raise OptionError(f"infer_stream(): stream= (a {type(stream).__name__}) must be a callable returning a "
                          "fresh iterator of data dicts on each call (every epoch reads the stream again): e.g. "
                          "ppl.stream_npy(path, key='x', batch_size=10_000), or lambda: iter(batches) for a list")
    streaming = methods_taking("stream")
    if method != "auto":
        get_backend(method)  # an unknown name: BackendNotFoundError, listing the registered ones
    if method not in streaming:
        raise OptionError(f"infer_stream(): method={method!r} does not fit a stream of minibatches; the methods "
                          f"that stream: {streaming} (method='auto' does not choose among them: name one)")
    return infer(model, data, method=method, stream=stream, **options)  # compiles on the first batch
