import os

# scikit-learn's array-API check runs only when SciPy's array API is on, which
# must be set before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np
import pytest


def quadrants(shape=(64, 64), levels=(20.0, 90.0, 160.0, 230.0), noise=8.0, seed=0):
    """A grayscale image of four quadrants with known labels 1..4 (darkest first)."""
    rng = np.random.default_rng(seed)
    truth = np.ones(shape, dtype=np.uint8)
    h, w = shape[0] // 2, shape[1] // 2
    truth[:h, w:] = 2
    truth[h:, :w] = 3
    truth[h:, w:] = 4
    image = np.asarray(levels)[truth - 1] + rng.normal(scale=noise, size=shape)
    return image, truth


def rgb_patches(shape=(60, 90), noise=10.0, seed=0):
    """An RGB image of three vertical bands with known labels, darkest first."""
    rng = np.random.default_rng(seed)
    colours = np.array([[30.0, 40.0, 90.0], [200.0, 60.0, 50.0], [220.0, 230.0, 120.0]])
    truth = np.repeat(np.arange(1, 4), shape[1] // 3)[np.newaxis].repeat(shape[0], axis=0)
    image = colours[truth - 1] + rng.normal(scale=noise, size=truth.shape + (3,))
    return np.clip(image, 0, 255), truth.astype(np.uint8)


@pytest.fixture
def quadrant_image():
    return quadrants()


@pytest.fixture
def rgb_image():
    return rgb_patches()
