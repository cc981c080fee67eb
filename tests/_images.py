"""Seeded synthetic images with known answers, shared by the test modules.

Plain functions, not fixtures: tests call them with their own shapes and
seeds. The test modules import this file by name (``from _images import
...``): pytest's default import mode puts ``tests/`` on ``sys.path``.
"""

import numpy as np


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


def rgb_bands(shape, seed=0):
    """:func:`rgb_patches` as the uint8 picture an RGB file holds (width a multiple of 3)."""
    image, _ = rgb_patches(shape, seed=seed)
    return image.astype(np.uint8)


def gray_bands(shape, seed=0):
    """A uint8 grayscale picture of three vertical bands (30, 120, 210) with noise."""
    rng = np.random.default_rng(seed)
    levels = np.array([30.0, 120.0, 210.0])[np.arange(shape[1]) * 3 // shape[1]]
    return np.clip(levels + rng.normal(scale=8, size=shape), 0, 255).astype(np.uint8)
