"""Helpers shared by the EM test files."""

import warnings

import numpy as np
import torch

import ppl


def em(model, data, **options):
    """ppl EM with BoundDecreaseWarning an error and the 'max_iter reached' warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)
        warnings.simplefilter("error", ppl.BoundDecreaseWarning)
        return ppl.infer(model, data, method="em", **options)


def to_np(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
