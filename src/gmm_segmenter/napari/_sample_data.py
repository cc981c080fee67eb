"""Sample images shipped with scikit-image: nothing is downloaded."""

from __future__ import annotations

import numpy as np
from skimage import data


def coins():
    """Greek coins on a grey background (grayscale, 303 x 384)."""
    return [(data.coins(), {"name": "coins"}, "image")]


def astronaut():
    """Eileen Collins, RGB (512 x 512 x 3)."""
    return [(data.astronaut(), {"name": "astronaut", "rgb": True}, "image")]


def noisy_blobs():
    """A noisy 3-D stack of blobs of two kinds on a background (32 x 128 x 128).

    Three classes, as many as the widget's default number of components,
    with voxels twice as long along the first axis (the layer's scale);
    spatial smoothing cleans it up. Generated from fixed seeds, so it is
    the same every time.
    """
    first, second = (
        data.binary_blobs(length=128, n_dim=3, volume_fraction=0.35, rng=seed)[:32]
        for seed in (0, 1)
    )
    classes = np.where(first, 1, np.where(second, 2, 0))
    rng = np.random.default_rng(0)
    image = np.choose(classes, [60.0, 130.0, 200.0]) + rng.normal(scale=30.0, size=classes.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return [(image, {"name": "noisy blobs", "scale": (2.0, 1.0, 1.0)}, "image")]
