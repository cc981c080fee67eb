"""Brain-like phantoms and image degradations for benchmarks/anatomy.py.

A phantom has three classes, numbered as the estimator numbers them (darkest
first): 1 background and CSF, 2 a thin grey-matter-like ribbon, 3 a
white-matter-like core with thin fingers. On top of the tissue there are thin
tubes ("vessels") 1-3 pixels wide: bright ones in the CSF, dark ones crossing
the white matter.

Everything is rendered on a finer grid and averaged down, so pixels on an
edge are mixtures of two tissues (partial volume); the truth of a pixel is the
tissue that fills most of it. A thick-slice volume averages several fine
slices into one. Every random draw is seeded.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: T1-like tissue intensities of classes 1, 2, 3; white matter is the brightest.
INTENSITIES = np.array([0.38, 0.78, 1.0])


def _smooth_field(shape, sigma, rng):
    """Smoothed white noise with unit standard deviation."""
    field = ndi.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return field / field.std()


def _physical_grid(shape, spacing):
    """Coordinates of voxel centres, centred on the volume, in units of the
    finest (in-plane) voxel of the target grid."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def _tubes(fine_shape, fine_spacing, n_tubes, rng):
    """Fine-grid boolean tubes along smooth random curves, radius 0.5, 1 or
    1.5 target pixels (width 1-3 pixels), chosen per tube."""
    ndim = len(fine_shape)
    extent = np.array(fine_shape) * np.array(fine_spacing)
    seeds = np.zeros(fine_shape, dtype=bool)
    radius_at = np.zeros(fine_shape, dtype=np.float32)
    step = min(fine_spacing) / 2
    for i in range(n_tubes):
        radius = (0.5, 1.0, 1.5)[i % 3]
        point = rng.uniform(0.1, 0.9, size=ndim) * extent
        direction = rng.normal(size=ndim)
        if ndim == 3:
            direction[0] *= 0.3  # mostly in-plane, so thick slices cut them obliquely
        direction /= np.linalg.norm(direction)
        length = rng.uniform(0.15, 0.4) * extent[-1]
        for _ in range(int(length / step)):
            direction += rng.normal(scale=0.08, size=ndim)
            direction /= np.linalg.norm(direction)
            point = point + step * direction
            index = tuple(np.floor(point / fine_spacing).astype(int))
            if all(0 <= j < n for j, n in zip(index, fine_shape)):
                seeds[index] = True
                radius_at[index] = radius
    distance, nearest = ndi.distance_transform_edt(
        ~seeds, sampling=fine_spacing, return_indices=True
    )
    return distance <= radius_at[tuple(nearest)]


def brain_labels(shape, spacing=(1.0,) * 3, supersample=2, seed=0, n_tubes=None):
    """Fine-grid class map (1, 2, 3) of a folded brain-like phantom.

    shape and spacing are those of the target grid; the fine grid has
    ``supersample`` points per in-plane pixel and ``spacing * supersample``
    per thick pixel.
    """
    rng = np.random.default_rng(seed)
    spacing = np.asarray(spacing[-len(shape):], dtype=float)
    factors = np.round(spacing / spacing.min() * supersample).astype(int)
    fine_shape = tuple(n * f for n, f in zip(shape, factors))
    fine_spacing = spacing / factors  # in target in-plane pixels

    # Folding: smooth fields drawn on the target grid (cheap) and
    # interpolated to the fine grid.
    coarse = tuple(int(np.ceil(n * s)) for n, s in zip(shape, spacing))
    zoom = [f / c for f, c in zip(fine_shape, coarse)]
    crop = tuple(slice(0, n) for n in fine_shape)

    def fine(field):
        return ndi.zoom(field, zoom, order=1, grid_mode=True, mode="grid-wrap")[crop]

    grid = _physical_grid(fine_shape, fine_spacing)
    extent = np.array(shape) * spacing
    semi_axes = 0.46 * extent
    radius = np.sqrt(sum((g / a) ** 2 for g, a in zip(grid, semi_axes)))

    # White matter: a core with fingers (gyri) pointing outwards. Their
    # length follows a smooth random field read on a sphere (a function of
    # the direction only), so the fingers are radial and a few pixels wide;
    # a second field makes them wander.
    gyri = _smooth_field(coarse, 1.5, rng)
    centre = (np.array(coarse) - 1) / 2
    sphere = 0.65 * max(semi_axes)
    length = np.sqrt(sum(g**2 for g in grid))
    on_sphere = [
        centre[i] + sphere * g / np.maximum(length, 1e-9) for i, g in enumerate(grid)
    ]
    on_sphere = np.broadcast_arrays(*on_sphere)
    finger = ndi.map_coordinates(gyri, on_sphere, order=1, mode="wrap")
    wander = fine(_smooth_field(coarse, 3.0, rng))
    boundary = 0.45 + 0.32 * np.clip(finger + 0.2, 0, 1.5) + 0.04 * wander
    white = radius < boundary
    # Grey matter: a ribbon 1 to 3 target pixels thick around the white matter.
    thickness = 2.0 + np.clip(_smooth_field(coarse, 6.0, rng), -1, 1)
    thickness = fine(thickness)
    distance = ndi.distance_transform_edt(~white, sampling=fine_spacing)
    labels = np.ones(fine_shape, dtype=np.uint8)
    labels[distance <= thickness] = 2
    labels[white] = 3
    # Ventricles: CSF in the centre.
    ventricle = sum((g / (0.18 * a)) ** 2 for g, a in zip(grid, semi_axes)) < 1
    labels[ventricle & (wander > 0.3)] = 1

    if n_tubes is None:
        n_tubes = 12 if len(shape) == 2 else 24
    tubes = _tubes(fine_shape, fine_spacing, n_tubes, rng)
    labels[tubes & (labels == 1)] = 3  # bright vessels in the CSF
    labels[tubes & (labels == 3) & (radius < 0.7)] = 1  # dark vessels across the white matter
    return labels, factors


def average_down(labels, factors, n_classes=3):
    """Target-grid partial-volume image (noise-free) and majority truth."""
    shape = tuple(n // f for n, f in zip(labels.shape, factors))
    blocks = tuple(x for pair in zip(shape, factors) for x in pair)
    block_axes = tuple(range(1, 2 * len(shape), 2))
    fractions = np.stack(
        [(labels == c + 1).reshape(blocks).mean(axis=block_axes) for c in range(n_classes)]
    )
    image = np.tensordot(INTENSITIES[:n_classes], fractions, axes=1)
    truth = (np.argmax(fractions, axis=0) + 1).astype(np.uint8)
    return image, truth


def brain_phantom(shape, spacing=None, supersample=2, seed=0):
    """(clean image, truth) of the brain-like phantom on the target grid."""
    spacing = (1.0,) * len(shape) if spacing is None else spacing
    labels, factors = brain_labels(shape, spacing, supersample, seed)
    return average_down(labels, factors)


def bias_field(shape, amplitude, spacing=None, seed=0, region=None):
    """Smooth multiplicative field with the given peak-to-peak amplitude
    around 1 (0.4: from 0.8 to 1.2) over ``region`` (a boolean mask, the
    object; default the whole image): a seeded second-order polynomial in
    the physical coordinates, dominated by its linear part. Outside the
    region it goes on continuously but is clipped to the same range."""
    if amplitude == 0:
        return np.ones(shape)
    spacing = (1.0,) * len(shape) if spacing is None else spacing
    rng = np.random.default_rng(seed + 7919)
    grid = _physical_grid(shape, spacing)
    extent = max(n * s for n, s in zip(shape, spacing))
    coords = [g / extent for g in grid]
    field = np.zeros(shape)
    for i, x in enumerate(coords):
        field = field + rng.uniform(0.6, 1.0) * rng.choice([-1, 1]) * x
        for y in coords[i:]:
            field = field + rng.uniform(-0.5, 0.5) * x * y
    inside = field if region is None else field[region]
    low, high = inside.min(), inside.max()
    return 1 + amplitude * (np.clip((field - low) / (high - low), 0, 1) - 0.5)


def rician(image, sigma, seed=0):
    """Magnitude of the image plus complex Gaussian noise of sd ``sigma``
    in each of the real and imaginary parts."""
    if sigma == 0:
        return image.astype(np.float32)
    rng = np.random.default_rng(seed + 104729)
    real = image + rng.normal(scale=sigma, size=image.shape)
    imaginary = rng.normal(scale=sigma, size=image.shape)
    return np.hypot(real, imaginary).astype(np.float32)
