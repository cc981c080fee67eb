"""Guidance: scribbles and prior probability maps, validated and applied.

Scribbles are an integer image per training image, ``0`` where nothing is
known and ``k`` (``1..K``) where the user says the pixel belongs to class
``k``. Prior maps are per-class probabilities, ``(*spatial_shape, K)``.
Both enter the model as a per-pixel log-prior added to the unary term
``log w_k + log p(x | k)``:

- a prior map adds ``prior_weight * log(max(prior, PRIOR_FLOOR))``;
- a scribble is its hard special case: every class but the scribbled one
  gets ``-CLAMP``, so the pixel's responsibilities are fixed (one-hot) in
  the pixel-wise EM, in the mean field of HMRF-EM and in the labels of
  ``fit_predict``.

Scribbles are kept sparse (flat positions and classes of the valid
scribbled pixels), so applying them costs a write per scribbled pixel, not a
pass over the image.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from collections.abc import Callable

from . import _hmrf, _image, _mixture, _training
from ._image import is_batch, is_dask_array

__all__ = [
    "CLAMP", "PRIOR_FLOOR", "ImageGuidance", "Guidance", "prepare", "dask_nonzero",
    "guided_start", "label_order", "GuidedRows", "training_rows", "anchor_rows",
]

#: Gap in log-probability that pins a scribbled pixel to its class. Far
#: beyond any difference of log-densities or of the spatial prior's field,
#: and still finite (the mean-field kernels assume finite potentials);
#: ``exp(-CLAMP)`` is exactly 0 in float32 and float64.
CLAMP = 1e4

#: Prior probabilities are floored here before their log is taken: an atlas
#: that says 0 (a misregistered edge) makes a class very unlikely, not impossible.
PRIOR_FLOOR = 1e-6

#: Smallest variance (standardised units: a share of the image's variance)
#: a scribbled class starts from: strokes on a flat region would otherwise
#: start the class as a spike on one value.
START_VARIANCE = 1e-3

#: Together the scribbled pixels weigh at least this share of the other
#: pixels in every M-step (EM-lambda, Nigam et al. 2000): at their natural
#: weight (0.5 % of an image) a scribbled class whose level overlaps a larger
#: class drifted into it, and its label with it. The mixing weights are
#: estimated from the unscribbled pixels alone, so the scribbles' extent
#: does not bias them.
ANCHOR_SHARE = 0.1

#: The largest scribble label taken (the largest uint16 label): a larger one
#: is a marker (an "ignore" value, a float's garbage), not a class.
MAX_LABEL = 65535

#: Scribbles with more than this share of the pixels labelled, in more than
#: ``PICTURE_LABELS`` labels above the number of classes, are a picture given
#: by mistake (a file of the image itself, or another photograph).
PICTURE_SHARE = 0.5
PICTURE_LABELS = 64

#: How far a prior map's row may sum from 1 before it is refused.
PRIOR_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ImageGuidance:
    """One image's guidance: its valid scribbled pixels and its prior map.

    ``positions`` are flat (C-order) positions in ``spatial_shape``, sorted;
    ``classes`` the 0-based class of each; ``prior`` the caller's
    ``(*spatial_shape, K)`` map (never written to) or ``None``; ``values``
    the pixel values at ``positions``, ``(n, n_channels)``.
    """

    spatial_shape: tuple
    positions: np.ndarray
    classes: np.ndarray
    prior: np.ndarray | None = None
    values: np.ndarray | None = None  # the image's values at ``positions``

    def restricted(self, key) -> "ImageGuidance":
        """The guidance of ``image[key]``, ``key`` a tuple of slices (a crop or strides)."""
        if key is None or all(k == slice(None) for k in key):
            return self
        coordinates = np.unravel_index(self.positions, self.spatial_shape)
        keep = np.ones(len(self.positions), dtype=bool)
        local = []
        new_shape = []
        for axis_key, axis_coordinates, n in zip(key, coordinates, self.spatial_shape):
            start, stop, step = axis_key.indices(n)
            keep &= (axis_coordinates >= start) & (axis_coordinates < stop)
            keep &= (axis_coordinates - start) % step == 0
            local.append((axis_coordinates - start) // step)
            new_shape.append(len(range(start, stop, step)))
        new_shape = tuple(new_shape)
        positions = (
            np.ravel_multi_index(tuple(c[keep] for c in local), new_shape)
            if keep.any() else np.empty(0, dtype=np.intp)
        )
        prior = None if self.prior is None else self.prior[tuple(key)]
        return replace(
            self, spatial_shape=new_shape, positions=positions, classes=self.classes[keep],
            prior=prior, values=None if self.values is None else self.values[keep],
        )

    @functools.cached_property
    def log_prior_planes(self) -> np.ndarray:
        """``log(max(prior, PRIOR_FLOOR))`` as ``(K, n_pixels)`` float32, computed
        once: HMRF-EM adds it at every iteration."""
        n_components = self.prior.shape[-1]
        flat = self.prior.reshape(-1, n_components)
        planes = np.empty((n_components, len(flat)), dtype=np.float32)
        for k in range(n_components):
            np.log(np.maximum(flat[:, k], PRIOR_FLOOR), out=planes[k], casting="same_kind")
        return planes

    def add_to(self, potential: np.ndarray, prior_weight: float) -> None:
        """Add the log-prior to ``(K, *spatial_shape)`` potentials, in place.

        Pixels that are not valid hold whatever they held: the caller masks them.
        """
        n_components = potential.shape[0]
        if self.prior is not None and prior_weight != 0:
            planes = potential.reshape(n_components, -1)
            for plane, log_prior in zip(planes, self.log_prior_planes):
                plane += np.float32(prior_weight) * log_prior
        if len(self.positions):
            planes = potential.reshape(n_components, -1)
            own = planes[self.classes, self.positions]
            for k in range(n_components):
                others = self.classes != k
                planes[k, self.positions[others]] = own[others] - CLAMP

    def log_prior_at(self, positions: np.ndarray, n_components: int, prior_weight: float):
        """``(len(positions), K)`` log-prior rows at flat positions of this image."""
        rows = np.zeros((len(positions), n_components))
        if self.prior is not None and prior_weight != 0:
            coordinates = np.unravel_index(positions, self.spatial_shape)
            values = np.asarray(self.prior[coordinates], dtype=np.float64)
            rows += prior_weight * np.log(np.maximum(values, PRIOR_FLOOR))
        if len(self.positions) and len(positions):
            at = np.minimum(np.searchsorted(self.positions, positions), len(self.positions) - 1)
            hit = np.flatnonzero(self.positions[at] == positions)
            own_class = self.classes[at[hit]]
            own = rows[hit, own_class]
            pinned = np.repeat((own - CLAMP)[:, np.newaxis], n_components, axis=1)
            pinned[np.arange(len(hit)), own_class] = own
            rows[hit] = pinned
        return rows


@dataclass(frozen=True)
class Guidance:
    """Every image's guidance and what the fit needs to know about it.

    ``scribbled`` are the 0-based classes that have valid scribbles;
    ``min_components`` the fewest components the scribbles and priors allow.
    """

    images: list
    scribbled: tuple
    min_components: int
    prior_weight: float
    n_prior_classes: int = 0

    @property
    def has_prior(self) -> bool:
        return any(image.prior is not None for image in self.images)

    @property
    def names_only(self) -> bool:
        """Prior maps and no scribbles, and the maps only name the classes:
        ``prior_weight=0``, or maps that give every class the same probability
        at every pixel (adding them changes no fit). The fit is then the
        unguided one, its components matched to the maps' classes by
        :func:`order_by_maps`."""
        if self.scribbled or not self.has_prior:
            return False
        return self.prior_weight == 0 or all(
            image.prior is None or float(np.ptp(image.prior, axis=-1).max()) < FLAT
            for image in self.images
        )

    @property
    def n_scribbled_pixels(self) -> int:
        return sum(len(image.positions) for image in self.images)

    def adjusters(self) -> list:
        """Per image, a function that adds its log-prior to ``(K, *spatial)``
        potentials in place (``None`` for an image without guidance)."""
        return [
            functools.partial(image.add_to, prior_weight=self.prior_weight)
            if len(image.positions) or image.prior is not None else None
            for image in self.images
        ]

    def restricted(self, keys) -> "Guidance":
        return replace(
            self, images=[g.restricted(key) for g, key in zip(self.images, keys)]
        )

    def held_out_split(self) -> "tuple[Guidance, list] | None":
        """Every other stroke of each class held out, to choose ``beta='auto'`` by.

        A stroke is a connected group (any connectivity) of one class's
        scribbled pixels in one image. Each class's strokes, in the order of
        their first pixel, alternate between kept and held out; a class with
        one stroke keeps it. Returns the guidance of the kept strokes and,
        per image, ``(positions, classes)`` of the held-out pixels; ``None``
        when no class has two strokes (or a prior map is given: it would
        speak for the held-out pixels too).
        """
        if self.has_prior:
            return None
        kept_images, held_out = [], []
        for image in self.images:
            keep = np.ones(len(image.positions), dtype=bool)
            for k in np.unique(image.classes):
                ours = np.flatnonzero(image.classes == k)
                keep[ours] = _kept_strokes(image.positions[ours], image.spatial_shape)
            kept_images.append(replace(
                image, positions=image.positions[keep], classes=image.classes[keep],
                values=None if image.values is None else image.values[keep],
            ))
            held_out.append((image.positions[~keep], image.classes[~keep]))
        if not any(len(positions) for positions, _ in held_out):
            return None
        return replace(self, images=kept_images), held_out


def has_held_out_strokes(labels: np.ndarray) -> bool:
    """Whether some class of a scribble image has two or more strokes, so
    that ``beta='auto'`` is chosen from the strokes (:meth:`Guidance.held_out_split`)."""
    flat = labels.reshape(-1)
    positions = np.flatnonzero(flat)
    return any(
        _stroke_ranks(positions[flat[positions] == k], labels.shape).max() > 0
        for k in np.unique(flat[positions])
    )


def _kept_strokes(positions: np.ndarray, spatial_shape) -> np.ndarray:
    """Whether each of one class's scribbled pixels (sorted flat
    ``positions``) is in a kept stroke: strokes alternate, the first kept."""
    return _stroke_ranks(positions, spatial_shape) % 2 == 0


def _stroke_ranks(positions: np.ndarray, spatial_shape) -> np.ndarray:
    """The stroke of each of one class's scribbled pixels (sorted flat
    ``positions``, at least one): strokes are connected groups, any
    connectivity, numbered 0, 1, ... by their first pixel."""
    # the strokes' bounding box, not the whole image, is labelled
    coordinates = np.unravel_index(positions, spatial_shape)
    low = [int(c.min()) for c in coordinates]
    box = tuple(int(c.max()) - lo + 1 for c, lo in zip(coordinates, low))
    local = tuple(c - lo for c, lo in zip(coordinates, low))
    drawn = np.zeros(box, dtype=bool)
    drawn[local] = True
    strokes, _ = ndi.label(drawn, structure=np.ones((3,) * len(box), dtype=bool))
    stroke = strokes[local]
    _, first = np.unique(stroke, return_index=True)
    rank = np.empty(stroke.max() + 1, dtype=np.intp)
    rank[stroke[np.sort(first)]] = np.arange(len(first))
    return rank[stroke]


# --------------------------------------------------------------------------
# validation


def prepare(y, prior, images, n_components, prior_weight, pixels_at) -> Guidance | None:
    """Check scribbles ``y`` and ``prior`` against ``images``; ``None`` when
    neither is given, or the scribbles are all 0 and there are no prior maps.

    ``pixels_at(positions)`` gives each image's values and validity at flat
    positions (one array of positions per image), from the images' backend.
    Raises ``ValueError`` or ``TypeError`` naming the image, the value given
    and what would work; never writes to ``y`` or ``prior``.
    """
    if y is None and prior is None:
        return None
    views = images.views
    shapes = [view.spatial_shape for view in views]
    names = ["y"] if not images.batch else [f"y[{i}]" for i in range(len(views))]
    scribble_list = _per_image(y, "y", len(views), images.batch)
    prior_list = _per_image(prior, "prior", len(views), images.batch)
    n_prior = None
    if prior is not None:
        if any(is_dask_array(view.pixels) for view in views):
            raise TypeError(
                "prior maps need images in memory, but X holds a dask array; pass "
                "X.compute() (and the prior as a NumPy array), or guide with scribbles y, "
                "which work on dask arrays."
            )
        prior_names = [n.replace("y", "prior", 1) for n in names]
        prior_list = [
            _check_prior(p, shape, view.mask, name, n_components)
            for p, shape, view, name in zip(prior_list, shapes, views, prior_names)
        ]
        n_prior = prior_list[0].shape[-1]
        if any(p.shape[-1] != n_prior for p in prior_list):
            raise ValueError(
                "The prior maps of the batch have different numbers of classes "
                f"({sorted({p.shape[-1] for p in prior_list})}); every map needs one "
                "probability per class on its last axis."
            )
        if n_components != "auto" and n_prior != n_components:
            raise ValueError(
                f"prior has {n_prior} classes on its last axis (shape "
                f"{prior_list[0].shape}) but n_components={n_components}; pass "
                f"n_components={n_prior} (or 'auto'), or one map per component."
            )
    positions, classes = [], []
    for labels, shape, name in zip(scribble_list, shapes, names):
        if labels is None:
            positions.append(np.empty(0, dtype=np.intp))
            classes.append(np.empty(0, dtype=np.intp))
            continue
        where, values = _scribbles(labels, shape, name, n_components, n_prior)
        positions.append(where)
        classes.append(values - 1)
    given = sorted({int(k) for c in classes for k in np.unique(c)})
    if not given and prior is None:
        return None  # an empty Labels layer: the unguided fit, exactly
    # scribbles on pixels that are masked out or not finite are dropped
    kept_positions, kept_classes, values_kept = [], [], []
    n_channels = images.n_channels
    if given:
        for (values, valid), where, labels_of in zip(pixels_at(positions), positions, classes):
            kept_positions.append(where[valid])
            kept_classes.append(labels_of[valid])
            values_kept.append(values[valid])
    else:
        kept_positions, kept_classes = positions, classes
        values_kept = [np.empty((0, n_channels)) for _ in positions]
    scribbled = sorted({int(k) for c in kept_classes for k in np.unique(c)})
    lost = sorted(set(given) - set(scribbled))
    if lost:
        raise ValueError(
            f"Every scribble of class(es) {', '.join(str(k + 1) for k in lost)} lies on "
            "pixels that are masked out (mask False) or not finite, so nothing tells the "
            "fit what those classes look like; scribble them inside the mask, or set "
            "those scribbles to 0."
        )
    if scribbled:
        _warn_if_indistinct(np.concatenate(values_kept), np.concatenate(kept_classes))
    guides = [
        ImageGuidance(shape, where, labels_of, p, values)
        for shape, where, labels_of, p, values in zip(
            shapes, kept_positions, kept_classes, prior_list, values_kept
        )
    ]
    min_components = max([k + 1 for k in scribbled] + [n_prior or 1])
    return Guidance(
        guides, tuple(scribbled), min_components, float(prior_weight), n_prior or 0
    )


def _per_image(value, name, n_images, batch):
    if value is None:
        return [None] * n_images
    if not batch:
        if is_batch(value):
            raise ValueError(
                f"{name} is a list of {len(value)} arrays but X is one image; pass one "
                f"array with X's spatial shape (or X as a list of images)."
            )
        return [value]
    if not is_batch(value) or len(value) != n_images:
        raise ValueError(
            f"X is a list of {n_images} images, so {name} must be a list of {n_images} "
            "arrays (one per image, None for an image without one); got "
            f"{type(value).__name__}" + (f" of length {len(value)}" if is_batch(value) else "")
            + "."
        )
    return list(value)


def _scribbles(labels, spatial_shape, name, n_components, n_prior):
    """Flat positions and labels (``1..K``) of the scribbled pixels of one image."""
    if not is_dask_array(labels):
        labels = np.asarray(labels)
    if labels.shape != spatial_shape:
        hint = ""
        if labels.shape == spatial_shape[:-1] and spatial_shape[-1] in (3, 4):
            hint = (
                f" If the last axis of length {spatial_shape[-1]} holds colour channels, "
                "pass channel_axis=-1 to GMMSegmenter."
            )
        raise ValueError(
            f"Scribbles {name} have shape {labels.shape} but the image's spatial shape is "
            f"{spatial_shape}; pass an integer label image of shape {spatial_shape} "
            f"(0 = unknown, k = class k).{hint}"
        )
    kind = labels.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"Scribbles {name} have dtype {labels.dtype}; pass an integer label image "
            "(0 = unknown, k = class k)."
        )
    if is_dask_array(labels):
        where, values = dask_nonzero(labels)
    else:
        flat = labels.reshape(-1)
        where = np.flatnonzero(flat)
        values = flat[where]
    if kind == "f":
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            raise ValueError(
                f"Scribbles {name} hold the value {float(values[bad][0]):g}, which is not a "
                "whole number; scribbles are class labels (0 = unknown, k = class k): pass "
                f"an integer image, e.g. np.rint({name}).astype(int) if the values are "
                "labels stored as floats."
            )
    if kind != "b" and len(values) and values.min() < 0:
        raise ValueError(
            f"Scribbles {name} hold the negative label {values.min():g}; labels are 0 "
            "(unknown) or 1..K (the class). scikit-learn's -1 for 'unlabelled' is 0 "
            f"here: pass np.where({name} < 0, 0, {name})."
        )
    if len(values) and values.max() > MAX_LABEL:
        raise ValueError(
            f"Scribbles {name} hold the label {values.max():g}, far above any number of "
            f"classes (at most {MAX_LABEL}); labels are 0 (unknown) or 1..K (the class). "
            f"If that value marks pixels to leave out, set them to 0: "
            f"np.where({name} > K, 0, {name})."
        )
    values = values.astype(np.int64)
    highest = int(values.max()) if len(values) else 0
    limit = n_prior if n_prior is not None else n_components
    if highest in (255, 65535) and values.min() == highest and (
            limit == "auto" or highest > limit):
        raise ValueError(
            f"Scribbles {name} hold only the label {highest}, as a black-and-white "
            "mask saved as an image does; scribbles number classes 1..K. To segment "
            "only those pixels, pass the image as mask= instead."
        )
    n_pixels = math.prod(spatial_shape)
    if len(values) > PICTURE_SHARE * n_pixels and (
            limit == "auto" or highest > limit) and (
            len(np.unique(values[:: max(1, len(values) // 100_000)])) > PICTURE_LABELS):
        # painted strokes number a few classes on part of the image
        shown = len(np.unique(values))
        raise ValueError(
            f"Scribbles {name} hold {shown} different values (up to {highest}) on "
            f"{len(values) / n_pixels:.0%} of the pixels, as a picture does, not painted "
            "strokes; scribbles are a label image, 0 where nothing is known and k where "
            "class k was painted (as a napari Labels layer is saved)."
        )
    if limit != "auto" and highest > limit:
        raise ValueError(
            f"Scribbles {name} hold label {highest} but the model has {limit} "
            f"component{'s' * (limit != 1)} "
            f"({'label 1' if limit == 1 else f'labels 1..{limit}'}); pass "
            f"n_components={highest} or more (or 'auto'), or relabel the scribbles (if "
            f"{highest} marks pixels to leave out, set them to 0)."
        )
    return where.astype(np.intp), values


def _check_prior(prior, spatial_shape, mask, name, n_components):
    if prior is None:
        raise ValueError(
            f"{name} is None; with prior maps every image of the batch needs one."
        )
    prior = np.asarray(prior)
    if prior.ndim != len(spatial_shape) + 1 or prior.shape[:-1] != spatial_shape:
        if n_components == "auto":
            wanted = f"({', '.join(map(str, spatial_shape + ('K',)))}) for K classes"
        else:
            wanted = f"{spatial_shape + (n_components,)} for n_components={n_components}"
        raise ValueError(
            f"{name} has shape {prior.shape} but the image's spatial shape is "
            f"{spatial_shape}; pass one probability per class on a last axis: shape "
            f"{wanted}."
        )
    if prior.dtype.kind not in "biuf":
        raise TypeError(f"{name} has dtype {prior.dtype}; pass probabilities as floats.")
    if prior.shape[-1] < 1:
        raise ValueError(f"{name} has no classes on its last axis (shape {prior.shape}).")
    if n_components != "auto" and prior.shape[-1] != n_components:
        raise ValueError(
            f"{name} has {prior.shape[-1]} classes on its last axis (shape {prior.shape}) "
            f"but n_components={n_components}; pass n_components={prior.shape[-1]} (or "
            "'auto'), or one map per component."
        )
    flat = prior.reshape(-1, prior.shape[-1])
    used = None if mask is None else np.asarray(mask).reshape(-1)
    rows = flat if used is None else flat[used]
    if not np.isfinite(rows).all():
        raise ValueError(
            f"{name} holds NaN or infinite values; probabilities must be finite "
            f"numbers in [0, 1] (np.nan_to_num({name}) sets them to 0)."
        )
    if len(rows) and rows.min() < 0:
        raise ValueError(
            f"{name} holds the negative value {rows.min():.3g}; probabilities must lie "
            "in [0, 1]."
        )
    sums = rows.sum(axis=-1, dtype=np.float64)
    if len(sums):
        worst = int(np.argmax(np.abs(sums - 1)))
        if abs(sums[worst] - 1) > PRIOR_SUM_TOLERANCE:
            raise ValueError(
                f"The class probabilities of {name} must sum to 1 at every pixel (within "
                f"{PRIOR_SUM_TOLERANCE:g}), but one pixel's sum to {sums[worst]:.4g}; "
                f"normalise them first: {name} / {name}.sum(axis=-1, keepdims=True)."
            )
    return prior


#: At most this many pairs of classes with identical scribbled values are
#: named, one warning each; one more warning counts the rest.
MAX_INDISTINCT_WARNINGS = 10


def _warn_if_indistinct(values, classes):
    """Warn about pairs of classes whose scribbles hold the very same pixel values.

    Classes are grouped by their set of values (one sort, and a dictionary):
    comparing every pair took minutes for thousands of scribbled classes (an
    instance-label image passed as scribbles).
    """
    order = np.argsort(classes, kind="stable")
    ks, starts = np.unique(classes[order], return_index=True)
    alike = {}  # a set of values, as bytes -> the classes that hold it, in order
    for k, rows in zip(ks, np.split(values[order], starts[1:])):
        distinct = np.unique(rows, axis=0)
        alike.setdefault((distinct.shape, distinct.tobytes()), []).append((int(k), distinct))
    groups = [members for members in alike.values() if len(members) > 1]
    n_pairs = sum(len(members) * (len(members) - 1) // 2 for members in groups)
    # the first pairs overall are among the first pairs of each group
    pairs = sorted(
        (pair for members in groups for pair in itertools.islice(
            ((a, b, distinct) for i, (a, distinct) in enumerate(members)
             for b, _ in members[i + 1:]),
            MAX_INDISTINCT_WARNINGS,
        )),
        key=lambda pair: pair[:2],
    )[:MAX_INDISTINCT_WARNINGS]
    for a, b, distinct in pairs:
        shown = ", ".join(f"{v:g}" for v in distinct.ravel()[:5])
        warnings.warn(
            f"The scribbles of classes {a + 1} and {b + 1} cover identical pixel "
            f"values ({shown}{', ...' if distinct.size > 5 else ''}), so the "
            "mixture cannot tell these classes apart by intensity; merge them into "
            "one label, or scribble pixels that show how they differ.",
            UserWarning,
            stacklevel=_training.caller_stacklevel(),
        )
    if n_pairs > len(pairs):
        warnings.warn(
            f"{n_pairs - len(pairs)} more pairs of scribbled classes cover identical pixel "
            "values. Are the scribbles a label image of objects? Scribble one label per "
            "class of intensity, not per object.",
            UserWarning,
            stacklevel=_training.caller_stacklevel(),
        )


def dask_nonzero(labels):
    """Flat positions and values of the nonzero pixels of a dask array, block by block."""
    import dask

    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in labels.chunks]
    delayed = labels.to_delayed()
    parts = [
        dask.delayed(_block_nonzero, pure=True)(
            delayed[index], tuple(int(s[i]) for s, i in zip(starts, index)), labels.shape
        )
        for index in np.ndindex(*labels.numblocks)
    ]
    found = dask.compute(*parts)
    if not found:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=labels.dtype)
    where = np.concatenate([w for w, _ in found])
    values = np.concatenate([v for _, v in found])
    order = np.argsort(where, kind="stable")
    return where[order], values[order]


def _block_nonzero(block, origin, shape):
    block = np.asarray(block)
    local = np.nonzero(block)
    values = block[local]
    global_ = tuple(c + o for c, o in zip(local, origin))
    return np.ravel_multi_index(global_, shape).astype(np.intp), values


# --------------------------------------------------------------------------
# the rows of guided EM


@dataclass(frozen=True)
class GuidedRows:
    """The pixel-wise fit's rows: free (unscribbled) rows, then scribbled ones.

    Weights count pixels, so scribbles weigh what they cover. ``free_prior``
    holds the prior maps' rows at the free rows' pixels (with prior maps).
    """

    free_values: np.ndarray
    free_weights: np.ndarray
    scribble_values: np.ndarray
    scribble_classes: np.ndarray
    scribble_weights: np.ndarray
    scribble_prior: Callable  # (n_components, prior_weight) -> rows
    free_prior: Callable | None
    min_components: int
    n_prior_classes: int

    def log_prior(self, n_components: int, prior_weight: float) -> np.ndarray:
        """Log-prior rows for :func:`._mixture.run_em`: of every row with prior
        maps, of the scribbled rows (the last ones) alone without."""
        scribbled = self.scribble_prior(n_components, prior_weight)
        if self.free_prior is None:
            return scribbled
        return np.vstack([self.free_prior(n_components, prior_weight), scribbled])


def training_rows(guidance: Guidance, views, values, weights, method, n_valid, max_rows,
                  generator) -> GuidedRows:
    """The rows guided EM fits: ``values``/``weights`` (the histogram or
    sample of every valid pixel) less the scribbled pixels, then at most
    ``max_rows`` scribbled pixels. With prior maps the free rows are a
    sample of pixel positions instead, since each pixel has its own prior."""
    guides = guidance.images
    n_scribbled = guidance.n_scribbled_pixels
    # the scribbled pixels: all, or a seeded draw weighted up to all of them
    picked = _image.draw_ranks([len(g.positions) for g in guides],
                               max_rows or n_scribbled, generator)
    scribble_values = np.concatenate([g.values[p] for g, p in zip(guides, picked)]) \
        if n_scribbled else np.empty((0, values.shape[1]))
    scribble_classes = np.concatenate([g.classes[p] for g, p in zip(guides, picked)]) \
        if n_scribbled else np.empty(0, dtype=np.intp)
    n_picked = len(scribble_classes)
    free_pixels = max(n_valid - n_scribbled, 0)
    anchored = max(n_scribbled, ANCHOR_SHARE * free_pixels)
    scribble_weights = np.full(n_picked, anchored / max(n_picked, 1))
    pixels_each = n_scribbled / max(n_picked, 1)  # the pixels each scribbled row stands for
    picked_positions = [g.positions[p] for g, p in zip(guides, picked)]

    def scribble_prior(n_components, prior_weight):
        if not n_picked:
            return np.zeros((0, n_components))
        return np.vstack([
            g.log_prior_at(p, n_components, prior_weight) for g, p in zip(guides, picked_positions)
        ])

    free_prior = None
    if guidance.has_prior:
        valid_maps = [_image.valid_map(view) for view in views]
        shapes = [view.spatial_shape for view in views]
        positions = _hmrf.sample_positions(
            valid_maps, shapes, max_rows or np.iinfo(np.int64).max, generator
        )
        values = _hmrf.values_at(views, positions)
        weights = np.full(len(values), free_pixels / max(len(values), 1))

        def free_prior(n_components, prior_weight):
            return np.vstack([
                g.log_prior_at(p, n_components, prior_weight) for g, p in zip(guides, positions)
            ])
    elif method == "histogram":
        rows = np.searchsorted(values[:, 0], scribble_values[:, 0])
        scribbled_counts = np.bincount(
            rows, weights=np.full(n_picked, pixels_each), minlength=len(values)
        )
        weights = np.maximum(weights - scribbled_counts, 0.0)
    else:
        weights = weights * (free_pixels / max(float(weights.sum()), 1.0))
    return GuidedRows(
        values, weights, scribble_values, scribble_classes, scribble_weights,
        scribble_prior, free_prior, guidance.min_components, guidance.n_prior_classes,
    )


# --------------------------------------------------------------------------
# the start of guided EM, and the labels' order


def guided_start(X, sample_weight, classes, log_prior, n_components, *, covariance_type,
                 init_params, reg_covar, random_state) -> _mixture.Mixture:
    """Initial mixture for guided EM on rows ``X``, the last ``len(classes)`` scribbled.

    Unscribbled rows start from the prior maps when there are any
    (``log_prior``: the maps' log at the fit's weight, or at weight 1 when
    the fit ignores them, so that they still name the classes), otherwise
    from ``init_params`` with ``n_components`` clusters, which are matched to
    the scribbled classes (least total distance between cluster means and
    scribble means); the unmatched clusters start the unscribbled classes,
    darkest first. Every scribbled class then starts at its scribbles' mean
    and covariance, whatever cluster it was matched to: that is what keeps
    two classes the unguided start would merge apart.

    Maps that do not tell two classes apart (the same probabilities at every
    pixel, such as flat maps) would start them as one component, and EM
    never separates identical components: the ``init_params`` clusters,
    matched to the classes by their overlap with the maps, then split them
    (see :func:`_split_by_clusters`).
    """
    from scipy.optimize import linear_sum_assignment

    n_free_rows = len(X) - len(classes)
    free, free_weight = X[:n_free_rows], sample_weight[:n_free_rows]
    scribbles, scribble_weight = X[n_free_rows:], sample_weight[n_free_rows:]
    scribbled = np.unique(classes)
    one_hot = np.zeros((len(classes), n_components))
    one_hot[np.arange(len(classes)), classes] = 1.0
    if log_prior is not None and len(log_prior) == len(X):  # prior maps
        _, log_resp = _mixture.log_normalize(log_prior[:n_free_rows])
        resp = np.exp(log_resp)
        if _classes_alike(resp):
            resp = _split_by_clusters(resp, free, free_weight, init_params, random_state)
    else:
        resp = _mixture.initial_responsibilities(
            free, free_weight, n_components, init_params, random_state
        )
        if len(scribbled):
            # seeds alone (k-means++) would start the unscribbled classes from one row each
            resp = _every_row(resp, free, free_weight)
            cluster_means = _cluster_means(resp, free, free_weight)
            scribble_means = np.array([scribbles[classes == k].mean(axis=0) for k in scribbled])
            cost = ((scribble_means[:, np.newaxis] - cluster_means[np.newaxis]) ** 2).sum(-1)
            _, matched = linear_sum_assignment(cost)
            order = np.empty(n_components, dtype=np.intp)
            order[scribbled] = matched
            leftover = np.setdiff1d(np.arange(n_components), matched)
            leftover = leftover[np.argsort(cluster_means[leftover].mean(axis=1), kind="stable")]
            order[np.setdiff1d(np.arange(n_components), scribbled)] = leftover
            resp = resp[:, order]
    weighted = np.vstack([resp * free_weight[:, np.newaxis],
                          one_hot * scribble_weight[:, np.newaxis]])
    start = _mixture.regularised_fit(
        X, weighted, reg_covar, covariance_type, float(sample_weight.sum())
    )
    mass = weighted[:n_free_rows].sum(axis=0) + 1e-300
    start = replace(start, weights=mass / mass.sum())  # from the unscribbled pixels
    if not len(scribbled):
        return start
    _, means, covariances = _mixture.estimate_parameters(
        scribbles, one_hot[:, scribbled] * scribble_weight[:, np.newaxis],
        max(reg_covar, START_VARIANCE), covariance_type,
    )
    all_means = start.means.copy()
    all_means[scribbled] = means
    all_covariances = start.covariances.copy()
    if covariance_type != "tied":
        all_covariances[scribbled] = covariances
    return _mixture.Mixture(
        start.weights, all_means, all_covariances,
        _mixture.precision_cholesky(all_covariances, covariance_type), covariance_type,
    )


#: Maps whose classes' probabilities differ by less than this at every pixel are flat.
FLAT = 1e-6

#: Two classes whose start responsibilities, each scaled to a mean of 1 over
#: the rows, differ by less than this at every row start alike: EM would fit
#: them as one component twice (the same means, or all but).
ALIKE = 0.05


def _classes_alike(resp: np.ndarray) -> bool:
    """Whether two columns of ``resp`` are proportional, to :data:`ALIKE`.

    Proportional, not only equal: maps that are the same at every pixel but
    uneven across classes (class proportions), or whose informative part is
    masked out, start every component at the same mean too.
    """
    if len(resp) == 0 or resp.shape[1] < 2:
        return False
    scaled = resp / np.maximum(resp.mean(axis=0), 1e-300)
    return any(
        bool((np.abs(scaled[:, k + 1:] - scaled[:, k:k + 1]).max(axis=0) < ALIKE).any())
        for k in range(resp.shape[1] - 1)
    )


def _cluster_means(resp: np.ndarray, X: np.ndarray, sample_weight: np.ndarray) -> np.ndarray:
    """Each cluster's mean row, weighted by ``resp * sample_weight``."""
    mass = resp.T @ sample_weight + 1e-300
    return (resp * sample_weight[:, np.newaxis]).T @ X / mass[:, np.newaxis]


def _every_row(clusters: np.ndarray, X: np.ndarray, sample_weight: np.ndarray) -> np.ndarray:
    """Clusters that hold every row: the seeds that ``'k-means++'`` and
    ``'random_from_data'`` give (one row each) become one-hot assignments of
    each row to its nearest seed; clusters that hold every row already are
    returned as they are."""
    if np.all(clusters.sum(axis=1) > 0):
        return clusters
    centres = _cluster_means(clusters, X, sample_weight)
    nearest = np.argmin(((X[:, np.newaxis, :] - centres[np.newaxis]) ** 2).sum(axis=-1), axis=1)
    assigned = np.zeros_like(clusters)
    assigned[np.arange(len(X)), nearest] = 1.0
    return assigned


def _split_by_clusters(resp, X, sample_weight, init_params, random_state) -> np.ndarray:
    """Responsibilities from maps ``resp`` times those of ``init_params``'s
    clusters, each cluster taken as the class whose map it overlaps most
    (one cluster a class), renormalised. Where the maps tell classes apart
    they still decide; where they do not, the clusters do."""
    clusters = _every_row(
        _mixture.initial_responsibilities(
            X, sample_weight, resp.shape[1], init_params, random_state
        ),
        X, sample_weight,
    )
    overlap = (clusters * sample_weight[:, np.newaxis]).T @ resp  # (cluster, class)
    cluster_of_class = _most_shared(overlap)
    product = resp * clusters[:, cluster_of_class]
    total = product.sum(axis=1, keepdims=True)
    # a row the clusters give none of the maps' classes keeps the maps'
    return np.where(total > 0, product / np.where(total > 0, total, 1.0), resp)


#: Pixels per image at which :func:`order_by_maps` compares components with the maps.
NAMING_PIXELS = 1 << 16


def order_by_maps(guidance: Guidance, mixture, pixels_at, offset, scale) -> np.ndarray | None:
    """The order of ``mixture``'s components (standardised by ``offset``,
    ``scale``) that makes component ``k`` the maps' class ``k``: each
    component goes to the class it shares most probability with (one
    component a class), over up to :data:`NAMING_PIXELS` pixels of each
    image drawn with a fixed seed. ``None`` when the maps give every class the same
    probability everywhere: they name nothing, and the unguided order stands.
    """
    n_components = mixture.n_components
    generator = np.random.default_rng(0)  # (evenly spaced positions would line up in a volume)
    positions = [
        np.unique(generator.integers(0, math.prod(image.spatial_shape), NAMING_PIXELS))
        for image in guidance.images
    ]
    overlap = np.zeros((n_components, n_components))  # (component, class)
    informative = False
    for image, where, (values, valid) in zip(guidance.images, positions, pixels_at(positions)):
        if image.prior is None or not valid.any():
            continue
        coordinates = np.unravel_index(where[valid], image.spatial_shape)
        maps = np.asarray(image.prior[coordinates], dtype=np.float64)
        informative |= bool(np.ptp(maps, axis=-1).max() >= FLAT)
        _, log_resp = _mixture.log_normalize(
            _mixture.weighted_log_prob((values[valid] - offset) / scale, mixture)
        )
        overlap += np.exp(log_resp).T @ maps
    if not informative:
        return None
    return _most_shared(overlap)


def _most_shared(overlap: np.ndarray) -> np.ndarray:
    """For each column of a square ``overlap`` (what row ``i`` and class ``j``
    share), the row matched to it: the one-to-one matching of largest total."""
    from scipy.optimize import linear_sum_assignment

    rows, columns = linear_sum_assignment(-overlap)
    row_of = np.empty(overlap.shape[1], dtype=np.intp)
    row_of[columns] = rows
    return row_of


def anchor_rows(guidance: Guidance, n_components: int, table_weight: float, offset, scale):
    """``(values, weighted_resp)`` of the scribbled pixels for
    :class:`._hmrf.ResponsibilityTable`'s ``fixed`` rows: standardised values,
    one-hot responsibilities weighing :data:`ANCHOR_SHARE` of ``table_weight``
    together (at least one per pixel)."""
    values = [g.values for g in guidance.images if len(g.positions)]
    if not values:
        return None
    classes = np.concatenate([g.classes for g in guidance.images if len(g.positions)])
    weight = max(1.0, ANCHOR_SHARE * table_weight / len(classes))
    resp = np.zeros((len(classes), n_components))
    resp[np.arange(len(classes)), classes] = weight
    return (np.concatenate(values) - offset) / scale, resp


def label_order(means: np.ndarray, scribbled, fixed: bool) -> np.ndarray:
    """The order of components that gives the labels: scribbled classes keep
    their number, the others fill the remaining numbers darkest first; with
    ``fixed`` (prior maps name every class) the order is kept as it is."""
    n_components = len(means)
    order = np.arange(n_components)
    if fixed:
        return order
    free = np.setdiff1d(order, np.asarray(scribbled, dtype=np.intp))
    brightness = means[free].mean(axis=1)
    order[free] = free[np.argsort(brightness, kind="stable")]
    return order
