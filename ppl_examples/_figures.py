"""Figure helpers shared by the examples that draw 8 × 8 images (digits, patches, atoms)."""

from __future__ import annotations

import math

import numpy as np


def mosaic(images, cols, pad=1, side=8, gap=np.nan, normalise=False):
    """A grid of ``side × side`` images (``N × side²``) as one array, ``pad`` pixels apart.

    Parameters
    ----------
    images : array-like
        ``(N, side²)``.
    cols : int
        Images per row.
    gap : float
        Value of the gaps (NaN: drawn as the axes background).
    normalise : bool
        Scale each image to [-1, 1] by its largest ``|value|`` (dictionary atoms).

    Returns
    -------
    numpy.ndarray
        ``(rows·(side + pad) − pad, cols·(side + pad) − pad)``.
    """
    images = np.asarray(images, dtype=float).reshape(-1, side, side)
    rows = math.ceil(len(images) / cols)
    out = np.full((rows * (side + pad) - pad, cols * (side + pad) - pad), gap)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        if normalise:
            img = img / max(np.abs(img).max(), 1e-12)
        out[r * (side + pad):r * (side + pad) + side, c * (side + pad):c * (side + pad) + side] = img
    return out
