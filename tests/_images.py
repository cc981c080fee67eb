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


def smooth_field(shape, amplitude, spacing=None, seed=0):
    """A smooth multiplicative field, ``1 - amplitude / 2`` to ``1 + amplitude / 2``
    over the image: a seeded slope plus a bowl in physical coordinates."""
    rng = np.random.default_rng(seed + 11)
    spacing = (1.0,) * len(shape) if spacing is None else spacing
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    extent = max((n - 1) * s for n, s in zip(shape, spacing))
    coords = [(g - g.mean()) / extent for g in grid]
    direction = rng.normal(size=len(shape))
    direction /= np.linalg.norm(direction)
    log_field = sum(d * c for d, c in zip(direction, coords)) + 0.8 * sum(c**2 for c in coords)
    span = log_field.max() - log_field.min()
    return 1 + amplitude * ((log_field - log_field.min()) / span - 0.5)


def biased_blobs(shape=(128, 128), amplitude=0.4, noise=6.0, levels=(100.0, 150.0, 200.0),
                 spacing=None, seed=0):
    """``(image, truth, field)``: blobs of three classes (labels 1..3, darkest
    first) whose intensities are multiplied by :func:`smooth_field`.

    With ``amplitude=0.4`` the field spans 0.8 to 1.2, more than the ratio of
    neighbouring class levels (1.5 and 1.33): a pixel-wise threshold cannot
    separate the classes everywhere.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    spacing = (1.0,) * len(shape) if spacing is None else spacing
    blur = [max(shape) / 24 / s for s in spacing]
    smooth = ndimage.gaussian_filter(rng.normal(size=shape), blur)
    truth = np.digitize(smooth, np.quantile(smooth, [0.35, 0.7])).astype(np.uint8) + 1
    field = smooth_field(shape, amplitude, spacing, seed)
    image = np.asarray(levels)[truth - 1] * field + rng.normal(scale=noise, size=shape)
    return image, truth, field


def alpha_warning(channel_axis=0):
    """The text of the estimator's warning about a fourth channel that looks
    like alpha, with the channels on ``channel_axis`` (for the front ends'
    rewording tests)."""
    import warnings

    from gmm_segmenter import GMMSegmenter

    image, truth = rgb_patches()
    alpha = np.full(truth.shape + (1,), 255.0)
    alpha[: truth.shape[0] // 4] = 0.0
    rgba = np.moveaxis(np.concatenate([image, alpha], axis=-1), -1, channel_axis)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GMMSegmenter(3, channel_axis=channel_axis, beta=0, random_state=0).fit(rgba)
    return next(str(w.message) for w in caught if "alpha channel" in str(w.message))
