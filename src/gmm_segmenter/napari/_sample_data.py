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
    """A noisy 3-D stack of blobs (32 x 128 x 128): spatial smoothing cleans it up.

    Generated from a fixed seed, so it is the same every time.
    """
    blobs = data.binary_blobs(length=128, n_dim=3, volume_fraction=0.3, rng=0)[:32]
    rng = np.random.default_rng(0)
    image = np.where(blobs, 160.0, 90.0) + rng.normal(scale=35.0, size=blobs.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return [(image, {"name": "noisy blobs", "scale": (2.0, 1.0, 1.0)}, "image")]
