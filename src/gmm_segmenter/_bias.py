"""Bias-field correction: a smooth multiplicative field, estimated with the mixture.

An image is modelled as ``y(x) = b(x) z(x)``: the values ``z`` come from the
mixture and ``b`` is a smooth positive field (uneven illumination,
vignetting, a receive coil's sensitivity). As in FSL FAST (Zhang, Brady &
Smith 2001, after Wells et al. 1996) and Van Leemput et al. (1999), ``log b``
is estimated jointly with the mixture: given the posteriors, it is the
weighted least-squares fit, on a low-order smooth basis, of the pixels'
log-residuals ``log y - log mean_k``, each weighted by how sharply its
components pin it down (the inverse variance of ``log z``, ``mean_k**2 /
var_k``). EM then alternates posteriors, mixture and field (an ECM
algorithm); with the spatial prior, HMRF-EM's posteriors drive the field.

The basis is the Legendre polynomials of total degree at most ``degree`` in
the physical coordinates (pixel index times ``spacing``), centred and scaled
so that the image's longest physical side spans [-1, 1]: the field is as
smooth per unit of length along every axis. Each basis function is a
product of one polynomial per axis, so the field on any box of pixels comes
from ``degree + 1`` values per axis: a dask block computes its own part of
the field, and no more than the corrected image is ever held in memory.

One field per channel, as in FAST: the channels of a multichannel image are
often recorded through different paths (excitation wavelengths, filters,
coils), whose fields differ; a field common to all channels is a special
case that per-channel fields can represent, for a few dozen coefficients
more. Each field's mean ``log b`` over its image's valid pixels is 0, so
corrected intensities keep the units of the input.

The field is fitted on the pixels with positive values (the log of the
others does not exist) at a seeded sample of positions; it is then evaluated
and applied everywhere, masked-out pixels included.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
from numpy.polynomial import legendre

from . import _hmrf, _image, _mixture, _training
from ._progress import report

__all__ = [
    "AUTO_DEGREE",
    "BiasFieldWarning",
    "BiasField",
    "Fields",
    "corrected_view",
    "degree_of",
    "field_image",
    "n_coefficients",
]

#: Degree of the field for ``bias_field='auto'``: a cubic polynomial holds
#: the slopes, bowls and saddles of illumination, vignetting and coil fields
#: without bending round structures of the size of an organ or a cell colony.
AUTO_DEGREE = 3

#: Largest degree accepted (286 coefficients per channel in 3-D).
MAX_DEGREE = 10

#: Valid pixels with a positive value needed per coefficient of the field.
MIN_PIXELS_PER_COEFFICIENT = 30

#: Above this share of negative values among the valid pixels, an image is
#: not an intensity image that a multiplicative field acts on (differences,
#: z-scores, phases): it is left without correction. Zeros (a padded
#: background) and the noise of a background-subtracted image stay below.
MAX_NEGATIVE_SHARE = 0.3

#: A field whose largest value over an image is more than this many times
#: its smallest is refused: no illumination or coil field varies that much
#: across an image, and such an estimate has explained structure away.
MAX_FIELD_RATIO = 10.0

#: Sampled pixels per image on which the field is fitted: at most this many,
#: at least ``MIN_SAMPLES_PER_IMAGE`` (the field of each image of a batch
#: needs its own), and at most ``MAX_DESIGN_VALUES`` basis values in all.
SAMPLE_LIMIT = 1 << 18
MIN_SAMPLES_PER_IMAGE = 20_000
MAX_DESIGN_VALUES = 1 << 25

#: Pixels of the image a field is fitted on, with the spatial prior's
#: posteriors: a larger image (in memory or dask) is fitted on a strided
#: copy of at most this many (a field is smooth: every few pixels in each
#: direction tell it as well as all of them), and HMRF-EM then refits the
#: mixture at full resolution. The spatial prior's own budget
#: (``_hmrf.FIT_PIXELS``): a 2048² picture fitted whole took 8.6 times the
#: default's time, 3.1 times on a copy of every second pixel.
FIELD_FIT_PIXELS = 1 << 20

#: Pixels (an evenly spread subset of the sample) each least-squares fit of
#: the field uses.
FIELD_ROWS = 1 << 15

#: Alternations of posteriors and field when a new image's field is
#: estimated with the mixture held fixed; they stop earlier once the field
#: changes by less than ``FIELD_TOL`` (in log units) at every sampled pixel.
ESTIMATE_ITERATIONS = 10
FIELD_TOL = 1e-3

#: Before those, alternations whose posteriors are tempered,
#: ``p(k | x) ∝ (w_k p(x | k))^(1/T)``, at these temperatures ``T``
#: (deterministic annealing, Ueda and Nakano 1998): from nearly even
#: posteriors the field first follows the image's smooth trend, and the
#: classes sharpen as it settles. Started at ``T = 1``, the posteriors of
#: the uncorrected image are wrong where the field is strong and hold it
#: there. Neither start finds the fitted field on every picture, so a new
#: image's estimate also starts from the field fitted on a training image
#: of the same grid and keeps the one that explains the image better (see
#: :meth:`Fields.estimate`): given their own pictures again as float32,
#: the default models of ``camera``, ``coins`` and ``moon`` then repeat
#: 99.9, 98.4 and 99.97 % of their labels (81, 98 and 99.97 % without that
#: start). The fit's first field (before HMRF-EM refits it) is annealed the
#: same way: on benchmarks/anatomy.py's cases with a field that changed the
#: Dice of 1 of 10 (2-D phantom at 9 % noise under a 40 % field: 0.873 to
#: 0.843).
ANNEALING = (30.0, 10.0, 5.0, 3.0, 2.0, 1.5, 1.2)

#: Levels (``log`` of a constant factor) tried for a new image's start from the
#: training image's field: a factor of 0.25 to 4, in steps of 1 % (the
#: likelihood of a picture with a narrow class, such as ``camera``'s sky,
#: peaks within a few percent of the right level), on ``LEVEL_ROWS`` of the
#: sampled pixels.
LEVELS = tuple(np.linspace(-math.log(4), math.log(4), 279))
LEVEL_ROWS = 4096
#: That start's field keeps a level of its own (its mean ``log b`` not 0)
#: only when the level explains the image better by this many nats per
#: sampled pixel than the same field centred: a mixture of overlapping
#: classes tells the level poorly (given again as float32, ``camera`` under
#: a ramp drifted 10 % darker for 0.02 nats and lost 30 % of its labels),
#: while an image darker or brighter than the training one gains far more
#: (``camera`` at 85 %: 0.74 nats).
LEVEL_GAIN = 0.05

#: Then, under the spatial prior, alternations of the prior's posteriors and
#: the field: the pixel-wise posteriors of a noisy image bias the field.
SPATIAL_ITERATIONS = 1

#: A component's spread in the log domain is taken as at least 1 %: a
#: component on one value (saturation, zero padding) would otherwise weigh
#: without limit, and a saturated region does not follow the field anyway.
MIN_LOG_SD = 0.01

#: ``log b`` is clipped to this range when evaluated: the field stays finite
#: and positive whatever its coefficients (the checks above refuse fields
#: long before).
LOG_LIMIT = 20.0


class BiasFieldWarning(UserWarning):
    """An image's bias field could not be estimated; the image is left without
    correction (its field is all ones)."""


def degree_of(bias_field) -> int | None:
    """The polynomial degree a ``bias_field`` setting asks for (``None``: no field)."""
    if bias_field is None:
        return None
    if isinstance(bias_field, str):
        return AUTO_DEGREE
    return int(bias_field)


def n_coefficients(ndim: int, degree: int) -> int:
    """Coefficients of a polynomial of total degree ``degree`` in ``ndim`` variables."""
    return math.comb(ndim + degree, degree)


@functools.cache
def exponents(ndim: int, degree: int) -> np.ndarray:
    """The degree of each basis function along each axis, ``(n_coefficients, ndim)``.

    The constant comes first, then by total degree.
    """
    terms = [e for e in itertools.product(range(degree + 1), repeat=ndim) if sum(e) <= degree]
    terms.sort(key=lambda e: (sum(e), tuple(-x for x in e)))
    table = np.array(terms, dtype=np.intp).reshape(-1, ndim)
    table.flags.writeable = False
    return table


@dataclass(frozen=True)
class Geometry:
    """An image's grid in the field's coordinates.

    Pixel index ``i`` along ``axis`` sits at ``(i - (n - 1) / 2) * spacing``
    from the centre; positions are divided by half the longest physical side.
    """

    shape: tuple
    spacing: tuple

    @classmethod
    def of(cls, shape, spacing=None) -> "Geometry":
        shape = tuple(int(n) for n in shape)
        spacing = (1.0,) * len(shape) if spacing is None else tuple(float(s) for s in spacing)
        return cls(shape, spacing)

    @functools.cached_property
    def half_extent(self) -> float:
        extent = max((n - 1) * s for n, s in zip(self.shape, self.spacing))
        return extent / 2 if extent > 0 else 1.0

    def coordinates(self, axis: int, indices) -> np.ndarray:
        centre = (self.shape[axis] - 1) / 2
        indices = np.asarray(indices, dtype=np.float64)
        return (indices - centre) * (self.spacing[axis] / self.half_extent)

    def vandermonde(self, axis: int, indices, degree: int) -> np.ndarray:
        """Legendre polynomials ``0..degree`` at pixel ``indices`` of ``axis``."""
        return legendre.legvander(self.coordinates(axis, indices), degree)


@dataclass(frozen=True, eq=False)
class BiasField:
    """The multiplicative field of one image: ``log b = sum_t coefficients[t] * basis_t``.

    ``coefficients`` has shape ``(n_coefficients, n_channels)``, in the
    order of :func:`exponents`.
    """

    geometry: Geometry
    degree: int
    coefficients: np.ndarray

    @property
    def n_channels(self) -> int:
        return self.coefficients.shape[1]

    @functools.cached_property
    def _tensor(self) -> np.ndarray:
        ndim = len(self.geometry.shape)
        tensor = np.zeros((self.degree + 1,) * ndim + (self.n_channels,))
        tensor[tuple(exponents(ndim, self.degree).T)] = self.coefficients
        return tensor

    def log_on_box(self, indices) -> np.ndarray:
        """``log b`` on the box of pixels ``indices`` (one index array per axis),
        shape ``(*lengths, n_channels)``, float64."""
        result = self._tensor
        for axis, axis_indices in enumerate(indices):
            # contracts the leading (polynomial) axis and appends the pixel axis
            vander = self.geometry.vandermonde(axis, axis_indices, self.degree)
            result = np.tensordot(result, vander, axes=([0], [1]))
        # (n_channels, *lengths) -> channels last
        return np.moveaxis(result, 0, -1)

    def on_box(self, indices, dtype=np.float32) -> np.ndarray:
        """The field ``b`` on a box of pixels, ``(*lengths, n_channels)``."""
        log_field = self.log_on_box(indices)
        np.clip(log_field, -LOG_LIMIT, LOG_LIMIT, out=log_field)
        return np.exp(log_field).astype(dtype, copy=False)


def box_indices(key, shape, steps=None) -> list[np.ndarray]:
    """The pixel indices along each axis of the block ``image[key]`` (see
    :func:`._image.blocks`), in the full image when the view is strided by ``steps``."""
    indices = []
    for axis, n in enumerate(shape):
        part = key[axis] if axis < len(key) else slice(None)
        if part is Ellipsis:
            part = slice(None)
        axis_indices = np.arange(n)[part] if isinstance(part, slice) else np.array([part])
        if steps is not None:
            axis_indices = axis_indices * steps[axis]
        indices.append(axis_indices)
    return indices


def corrected_view(
    view: _image.ImageView, field: BiasField | None, name="X", steps=None
) -> _image.ImageView:
    """An in-memory image divided by its field (a float copy; the caller's array is untouched).

    float32 for images that float32 holds exactly (8- and 16-bit, float32),
    float64 otherwise. ``steps``: the view is the image strided by them.
    """
    if field is None:
        return view
    dtype = np.result_type(view.dtype, np.float32)
    _image.check_memory(
        view.pixels.size * dtype.itemsize,
        f"The bias-corrected copy of {name} (shape {view.pixels.shape}, {dtype.name})",
    )
    out = np.empty(view.pixels.shape, dtype=dtype)
    for key, _, _ in _image.blocks(view.spatial_shape):
        target = out[key]
        gain = field.on_box(box_indices(key, view.spatial_shape, steps), dtype)
        np.divide(view.pixels[key], gain.reshape(target.shape), out=target)
    return _image.ImageView(pixels=out, mask=view.mask)


def field_image(field: BiasField | None, spatial_shape, n_channels, dtype=np.float32):
    """The field on a whole in-memory grid, ``(*spatial_shape, n_channels)``; ones for ``None``."""
    out = np.ones(tuple(spatial_shape) + (n_channels,), dtype=dtype)
    if field is None:
        return out
    for key, _, _ in _image.blocks(spatial_shape):
        target = out[key]
        target[...] = field.on_box(box_indices(key, spatial_shape), dtype).reshape(target.shape)
    return out


def log_field_sum(field: BiasField | None, spatial_shape) -> np.ndarray:
    """``sum_c log b_c`` on a whole grid (the log-Jacobian of the correction), float64."""
    out = np.zeros(tuple(spatial_shape), dtype=np.float64)
    if field is None:
        return out
    for key, _, _ in _image.blocks(spatial_shape):
        target = out[key]
        log_field = field.log_on_box(box_indices(key, spatial_shape))
        np.clip(log_field, -LOG_LIMIT, LOG_LIMIT, out=log_field)
        target[...] = log_field.sum(axis=-1).reshape(target.shape)
    return out


def basis_means(geometry: Geometry, degree: int, view_shape, steps, valid) -> np.ndarray:
    """The mean of each basis function over the valid pixels of a (strided) view.

    Exact, at the cost of one pass over the valid map: the map is contracted
    with each axis's polynomials in turn, slab by slab.
    """
    ndim = len(view_shape)
    vanders = [
        geometry.vandermonde(axis, np.arange(n) * step, degree)
        for axis, (n, step) in enumerate(zip(view_shape, steps))
    ]
    if valid is None:  # separable: a product of one mean per axis
        tensor = functools.reduce(np.multiply.outer, [v.mean(axis=0) for v in vanders])
    else:
        tensor = np.zeros((degree + 1,) * ndim)
        rows = max(1, _image.CHUNK_PIXELS // max(1, math.prod(view_shape[1:])))
        count = 0
        for start in range(0, view_shape[0], rows):
            slab = valid[start : start + rows].astype(np.float64)
            count += float(slab.sum())
            part = np.tensordot(slab, vanders[0][start : start + rows], axes=([0], [0]))
            for vander in vanders[1:]:
                part = np.tensordot(part, vander, axes=([0], [0]))
            tensor += part
        tensor /= max(count, 1.0)
    return tensor[tuple(exponents(ndim, degree).T)]


def design_matrix(geometry: Geometry, degree: int, indices) -> np.ndarray:
    """The basis functions at pixels given by one index array per axis, ``(n, n_coefficients)``."""
    terms = exponents(len(indices), degree)
    design = np.ones((len(indices[0]), len(terms)))
    for axis, axis_indices in enumerate(indices):
        vander = geometry.vandermonde(axis, axis_indices, degree)
        design *= vander[:, terms[:, axis]]
    return design


# --------------------------------------------------------------------------
# fitting


@dataclass
class ImageSample:
    """One image's pixels at a seeded sample of positions, and the field's basis there.

    ``weight`` is the number of valid pixels each sampled one stands for;
    ``coefficients`` is ``None`` while the image is not corrected (too small,
    not positive, or its field was refused). ``free_level``: the field's mean
    ``log b`` is left free (a new image's, brighter or dimmer than the
    training image's), instead of 0.
    """

    name: str
    geometry: Geometry
    degree: int
    positions: np.ndarray  # flat positions in the view
    values: np.ndarray  # (n, n_channels), input units
    design: np.ndarray  # (n, n_coefficients)
    moments: np.ndarray  # (n_coefficients,): basis means over the valid pixels
    weight: float
    coefficients: np.ndarray | None
    free_level: bool = False

    @functools.cached_property
    def positive(self) -> np.ndarray:
        return self.values > 0

    @functools.cached_property
    def log_values(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.where(self.positive, self.values, 1.0))

    def log_field(self) -> np.ndarray:
        """``log b`` at the sampled pixels, ``(n, n_channels)``."""
        if self.coefficients is None:
            return np.zeros(self.values.shape)
        cached = self.__dict__.get("_log_field")
        if cached is None or cached[0] is not self.coefficients:
            self.set_coefficients(self.coefficients)
            cached = self.__dict__["_log_field"]
        return cached[1]

    def set_coefficients(self, coefficients, log_field=None):
        """Take the field of ``coefficients``; ``log_field`` is ``design @
        coefficients`` when the caller has it already."""
        if log_field is None:
            log_field = self.design @ coefficients
        self.coefficients = coefficients
        self.__dict__["_log_field"] = (coefficients, np.clip(log_field, -LOG_LIMIT, LOG_LIMIT))

    def field(self) -> BiasField | None:
        if self.coefficients is None:
            return None
        return BiasField(self.geometry, self.degree, self.coefficients.copy())

    def at(self, positions, values, design) -> "ImageSample":
        """The same image and field at other sampled pixels."""
        return replace(self, positions=positions, values=values, design=design)


def field_fit_views(views):
    """``(view, steps)`` for each image's field: the image itself, or an
    in-memory copy of every ``steps``-th pixel of an image of more than
    :data:`FIELD_FIT_PIXELS` pixels; a dask image's copy (strided or not) is
    computed, as the field's fit reads it many times."""
    out = []
    for view in views:
        steps = _image.strided_steps(view.spatial_shape, FIELD_FIT_PIXELS)
        lazy = _image.is_dask_array(view.pixels)
        if set(steps) == {1} and not lazy:
            out.append((view, steps))
            continue
        key = tuple(slice(None, None, step) for step in steps)
        pixels, mask = view.pixels[key], None if view.mask is None else view.mask[key]
        out.append((_image.ImageView(pixels=_in_memory(pixels), mask=_in_memory(mask)), steps))
    return out


def _in_memory(array):
    if array is None:
        return None
    return np.ascontiguousarray(array.compute() if _image.is_dask_array(array) else array)


class Fields:
    """The field of each image of a batch while it is fitted or estimated.

    Built from the views the field is fitted on (the images themselves, or
    strided in-memory copies of dask images, ``steps`` apart) and the full
    images' spatial shapes.
    """

    def __init__(self, views, steps, samples):
        self.views = views
        self.steps = steps
        self.samples = samples
        #: While true, a refused field is not warned about but kept in
        #: ``reasons`` (by ``id`` of its sample) for :meth:`announce`.
        self.quiet = False
        self.reasons = {}

    @classmethod
    def sample(cls, field_views, shapes, spacing, degree, n_samples, random_state, names):
        """Draw each image's sample and check that the image can hold a field;
        every field starts flat."""
        views = [view for view, _ in field_views]
        steps = [tuple(step) for _, step in field_views]
        samples = []
        for (view, step), shape, name in zip(field_views, shapes, names):
            geometry = Geometry.of(shape, spacing)
            ndim = len(shape)
            valid = _image.valid_map(view)
            n_valid = view.n_pixels if valid is None else int(np.count_nonzero(valid))
            size = n_coefficients(ndim, degree)
            n_drawn = min(n_samples, SAMPLE_LIMIT, max(1, MAX_DESIGN_VALUES // size))
            positions = _hmrf.sample_positions([valid], [view.spatial_shape], n_drawn, random_state)[0]
            values = _hmrf.values_at([view], [positions])
            indices = [i * s for i, s in zip(np.unravel_index(positions, view.spatial_shape), step)]
            design = design_matrix(geometry, degree, indices)
            moments = basis_means(geometry, degree, view.spatial_shape, step, valid)
            sample = ImageSample(
                name, geometry, degree, positions, values, design, moments,
                weight=n_valid / max(len(positions), 1),
                coefficients=np.zeros((size, view.n_channels)),
            )
            if not _can_hold_field(sample, n_valid, size, degree):
                sample.coefficients = None
            samples.append(sample)
        return cls(views, steps, samples)

    def sample_coordinates(self) -> list[tuple]:
        """Each image's sampled pixels as coordinates in the full image (a
        strided copy's scaled back by its steps)."""
        return [
            tuple(c * s for c, s in zip(np.unravel_index(sample.positions, view.spatial_shape), step))
            for view, step, sample in zip(self.views, self.steps, self.samples)
        ]

    @property
    def fields(self) -> list[BiasField | None]:
        return [sample.field() for sample in self.samples]

    @property
    def any(self) -> bool:
        """Whether some image has a field to fit (the others cannot hold one)."""
        return any(sample.coefficients is not None for sample in self.samples)

    def corrected_views(self) -> list[_image.ImageView]:
        return [
            corrected_view(view, sample.field(), sample.name, steps)
            for view, sample, steps in zip(self.views, self.samples, self.steps)
        ]

    # ------------------------------------------------------------ the loops

    def fit(self, mixture, offset, scale, *, max_iter, tol, reg_covar, log_prior=None):
        """Fit mixture and fields together from ``mixture`` (standardised units).

        Returns the mixture, the mean log-likelihood per pixel after each
        iteration (standardised units, the correction's Jacobian included),
        and whether it converged. A field that does not explain the images
        better than no field at all is dropped (with a warning), and the
        mixture is then ``mixture`` as given. ``log_prior`` (one row per
        sampled pixel, the samples in order; see :meth:`sample_coordinates`)
        is added to every E-step, as guidance does.
        """
        weights = np.concatenate([np.full(len(s.values), s.weight) for s in self.samples])
        total = float(weights.sum())
        initial = mixture
        bounds, previous, converged = [], -np.inf, False
        said = set()  # the M-steps' warnings, each said once
        for n_iter in range(1, max_iter + 1):
            X, jacobian = self._standardised(offset, scale)
            log_prob = _mixture.weighted_log_prob(X, mixture)
            if log_prior is not None:
                log_prob += log_prior
            log_prob_norm, log_resp = _mixture.log_normalize(log_prob)
            bound = float(weights @ (log_prob_norm - jacobian) / total)
            bounds.append(bound)
            resp = np.exp(log_resp)
            mixture = _mixture.regularised_fit(
                X, resp * weights[:, np.newaxis], reg_covar, mixture.covariance_type, total,
                said,
            )
            change = self._update(resp, mixture.rescaled(offset, scale))
            report("bias field", n_iter, max_iter)
            if not self.any:
                break  # every field refused: the caller fits again without one
            if abs(bound - previous) < tol and change < FIELD_TOL:
                converged = True
                break
            previous = bound
        if not self._better_than_none(initial, mixture, offset, scale, weights):
            return initial, bounds, converged
        return mixture, bounds, converged

    def estimate(self, mixture, offset, scale, spatial_posteriors=None, check=True, starts=None):
        """Each image's field with ``mixture`` (standardised units) held fixed.

        Alternates pixel-wise posteriors (tempered at first, see
        :data:`ANNEALING`) and field; then, with
        ``spatial_posteriors`` (a function from corrected views to each
        view's posterior maps, the spatial prior's), a few alternations more
        with those. With ``check``, a field that does not explain its image
        better than none is dropped, with a warning.

        An image whose annealed field goes astray (refused: from nearly even
        posteriors a field first follows the image's own shading, and on a
        picture with large dark and bright regions, such as ``camera`` under
        a ramp, it may not come back) is estimated again from a flat field
        without tempering; only if that fails too is its field refused.

        ``starts``, when given, hold a field's coefficients per image (or
        ``None``) to start from as well: the field fitted with the mixture on
        a training image of the same grid. Each is followed by the same
        alternations without tempering, and each image keeps, of the two
        fields, the one under which ``mixture`` explains it better. The
        alternations from a flat field can settle far from the field a fit
        finds: given ``camera`` again as float32, its model's field came out
        0.78-1.54, 0.62 nats per sampled pixel less likely under the model
        than the fitted field, 0.84-1.08.
        """
        if not self.any:
            return
        fitted = mixture.rescaled(offset, scale)
        other = None
        if starts is not None and any(start is not None for start in starts):
            other = Fields(self.views, self.steps, [
                replace(sample, coefficients=None if sample.coefficients is None else start,
                        free_level=True)
                for sample, start in zip(self.samples, starts)
            ])
            other.quiet = True
        # the posteriors are needed only at the pixels each refit solves on
        # (the field's change is still judged at every sampled pixel)
        at = [_every(sample, _stride(len(sample.values))) for sample in self.samples]
        rows = _rows_of(at)
        quiet, self.quiet = self.quiet, True
        start = [sample.coefficients for sample in self.samples]
        self._alternate(ANNEALING + (1.0,) * ESTIMATE_ITERATIONS, mixture, fitted, at, rows,
                        offset, scale)
        astray = [
            i for i, sample in enumerate(self.samples)
            if start[i] is not None and sample.coefficients is None
        ]
        if astray:
            again = Fields([self.views[i] for i in astray], [self.steps[i] for i in astray],
                           [self.samples[i] for i in astray])
            again.quiet = True
            for i in astray:
                self.reasons.pop(id(self.samples[i]))
                self.samples[i].set_coefficients(start[i])
                at[i].coefficients = start[i]
            retried = [at[i] for i in astray]
            again._alternate((1.0,) * ESTIMATE_ITERATIONS, mixture, fitted, retried,
                             _rows_of(retried), offset, scale)
            self.reasons.update(again.reasons)
        if other is not None and other.any:
            self._keep_better(other, mixture, fitted, offset, scale)
        if spatial_posteriors is not None and self.any:
            for _ in range(SPATIAL_ITERATIONS):
                maps = spatial_posteriors(self.corrected_views())
                resp = np.concatenate([
                    m.reshape(-1, m.shape[-1])[a.positions] for m, a in zip(maps, at)
                ])
                del maps
                if self._update(resp, fitted, at, rows) < FIELD_TOL:
                    break
        if check:
            weights = np.concatenate([np.full(len(s.values), s.weight) for s in self.samples])
            for sample, rows in zip(self.samples, self._rows()):
                if sample.coefficients is not None and not self._helps(
                    [sample], mixture, offset, scale, weights[rows]
                ):
                    self._refuse(sample, "does not explain the image better than no field")
        self.quiet = quiet
        if not quiet:
            self.announce()

    def _keep_better(self, other, mixture, fitted, offset, scale):
        """Follow ``other``'s fields (started elsewhere) with ``mixture`` held
        fixed, then give each image the field under which it is explained better."""
        at = [_every(sample, _stride(len(sample.values))) for sample in other.samples]
        # a new image may be brighter or dimmer than the training one: the
        # start's level is the one under which the mixture explains it best
        for sample, fit_at in zip(other.samples, at):
            if sample.coefficients is not None:
                best = self._best_level(sample.coefficients, fit_at, mixture, offset, scale)
                sample.set_coefficients(_shifted(sample.coefficients, best))
                fit_at.coefficients = sample.coefficients
        started = [sample.coefficients for sample in other.samples]
        other._alternate((1.0,) * ESTIMATE_ITERATIONS, mixture, fitted, at, _rows_of(at),
                         offset, scale)

        def likelihood(sample, coefficients):
            return self._log_likelihood([replace(sample, coefficients=coefficients)],
                                        mixture, offset, scale)

        for mine, theirs, start in zip(self.samples, other.samples, started):
            # the start itself too: the alternations' refit in the log domain
            # is not an exact M-step and can lose a little likelihood
            found = [(likelihood(mine, c), c) for c in (theirs.coefficients, start)
                     if c is not None]
            if not found:
                continue
            best_score, best = max(found, key=lambda item: item[0])
            # its level only where it pays (see LEVEL_GAIN), else centred
            centred = _centred(best, mine.moments)
            centred_score = likelihood(mine, centred)
            free = best_score > centred_score + LEVEL_GAIN
            chosen, score = (best, best_score) if free else (centred, centred_score)
            if mine.coefficients is None or score > likelihood(mine, mine.coefficients):
                mine.set_coefficients(chosen)
                mine.free_level = free
                self.reasons.pop(id(mine), None)

    def _best_level(self, coefficients, sample, mixture, offset, scale) -> float:
        """The constant ``log`` factor on the field ``coefficients`` under which
        ``mixture`` explains ``sample`` best: the best of :data:`LEVELS`,
        refined between its neighbours (narrow classes, such as ``camera``'s
        sky, tell a level to 1 %)."""
        from scipy.optimize import minimize_scalar

        def loss(level, pixels=sample):
            shifted = replace(pixels, coefficients=_shifted(coefficients, level))
            return -self._log_likelihood([shifted], mixture, offset, scale)

        # the grid on a few thousand of the pixels, the refinement on all of them
        few = _every(sample, max(1, len(sample.values) // LEVEL_ROWS))
        best = float(min(LEVELS, key=lambda level: loss(level, few)))
        step = LEVELS[1] - LEVELS[0]
        refined = minimize_scalar(loss, bounds=(best - step, best + step), method="bounded",
                                  options={"xatol": 1e-3})
        return float(refined.x) if refined.fun < loss(best) else best

    def _log_likelihood(self, samples, mixture, offset, scale) -> float:
        """The mean log-likelihood of ``samples``' pixels, corrected by their
        fields, under ``mixture`` (the correction's Jacobian included)."""
        X, jacobian = self._standardised(offset, scale, samples)
        return float(np.mean(
            _mixture.log_sum_exp(_mixture.weighted_log_prob(X, mixture)) - jacobian
        ))

    def _alternate(self, temperatures, mixture, fitted, at, rows, offset, scale):
        """Posteriors at each temperature in turn, then the field from them
        (its spread judged at ``T = 1`` only); stops once the field settles."""
        for n_iter, temperature in enumerate(temperatures, 1):
            X, _ = self._standardised(offset, scale, at)
            log_prob = _mixture.weighted_log_prob(X, mixture)
            _, log_resp = _mixture.log_normalize(log_prob / temperature)
            change = self._update(np.exp(log_resp), fitted, at, rows,
                                  judge_spread=temperature == 1.0)
            report("bias field", n_iter, len(temperatures))
            if not self.any or (temperature == 1.0 and change < FIELD_TOL):
                break

    def refiner(self, positions, offset, scale):
        """A function ``update(resp, mixture)`` for HMRF-EM: refits the fields
        from the posteriors ``resp`` of the pixels at ``positions`` (one
        array of flat positions per image, as HMRF-EM's table holds them) and
        returns the table's corrected values in standardised units."""
        at_table = []
        for view, sample, where, steps in zip(self.views, self.samples, positions, self.steps):
            values = _hmrf.values_at([view], [where])
            indices = [i * s for i, s in zip(np.unravel_index(where, view.spatial_shape), steps)]
            design = design_matrix(sample.geometry, sample.degree, indices)
            at_table.append(sample.at(where, values, design))
        rows = _rows_of(at_table)
        # the rows each refit solves on, gathered once
        steps = [_stride(len(table_sample.values)) for table_sample in at_table]
        solve_at = [_every(table_sample, step) for table_sample, step in zip(at_table, steps)]
        solve_rows = _rows_of(solve_at)

        def update(resp, mixture):
            strided = np.concatenate([resp[r][::step] for r, step in zip(rows, steps)])
            self._update(strided, mixture.rescaled(offset, scale), solve_at, solve_rows)
            for sample, table_sample in zip(self.samples, at_table):
                table_sample.coefficients = sample.coefficients
            return self._standardised(offset, scale, at_table)[0]

        return update

    # ------------------------------------------------------------ steps

    def _rows(self):
        return _rows_of(self.samples)

    def _standardised(self, offset, scale, samples=None):
        """The samples' corrected values in standardised units, and each
        pixel's ``sum_c log b_c``."""
        samples = self.samples if samples is None else samples
        values, jacobian = [], []
        for sample in samples:
            log_field = sample.log_field()
            values.append(sample.values / np.exp(log_field))
            jacobian.append(log_field.sum(axis=1))
        X = (np.concatenate(values) - offset) / scale
        return X, np.concatenate(jacobian)

    def _update(self, resp, fitted, at=None, rows=None, judge_spread=True) -> float:
        """Refit every field from the posteriors; the largest change of ``log b``.

        ``resp`` are the posteriors of the samples' pixels, or of the pixels of
        ``at`` (the same images at other pixels, ``rows`` of ``resp`` each),
        which then hold the new fields too.
        """
        at = self.samples if at is None else at
        rows = self._rows() if rows is None else rows
        change = 0.0
        for sample, fit_at, image_rows in zip(self.samples, at, rows):
            if sample.coefficients is None:
                continue
            size = fit_at.design.shape[1]
            if len(fit_at.values) < size * MIN_PIXELS_PER_COEFFICIENT:
                continue  # too few of these pixels in this image: its field stays
            coefficients = _solve(fit_at, resp[image_rows], fitted,
                                  centre=not sample.free_level)
            if coefficients is None:
                self._refuse(sample, "has no pixel whose components pin the field down")
                continue
            new_log = sample.design @ coefficients
            if judge_spread and _spread_too_large(new_log):
                self._refuse(sample, _ratio_text(new_log))
                continue
            change = max(change, float(np.max(np.abs(new_log - sample.log_field()))))
            sample.set_coefficients(coefficients, new_log)
        if at is not self.samples:
            for sample, fit_at in zip(self.samples, at):
                fit_at.coefficients = sample.coefficients
        return change

    def _helps(self, samples, mixture, offset, scale, weights) -> bool:
        """Whether ``samples`` are explained better with their fields than without."""
        X, jacobian = self._standardised(offset, scale, samples)
        with_field = weights @ (_mixture.log_sum_exp(_mixture.weighted_log_prob(X, mixture)) - jacobian)
        bare = [replace(s, coefficients=None) for s in samples]
        X, _ = self._standardised(offset, scale, bare)
        without = weights @ _mixture.log_sum_exp(_mixture.weighted_log_prob(X, mixture))
        return bool(with_field >= without)

    def _better_than_none(self, initial, mixture, offset, scale, weights) -> bool:
        corrected = [s for s in self.samples if s.coefficients is not None]
        if not corrected:
            return True
        X, jacobian = self._standardised(offset, scale)
        with_fields = weights @ (_mixture.log_sum_exp(_mixture.weighted_log_prob(X, mixture)) - jacobian)
        bare = [replace(s, coefficients=None) for s in self.samples]
        X, _ = self._standardised(offset, scale, bare)
        without = weights @ _mixture.log_sum_exp(_mixture.weighted_log_prob(X, initial))
        if with_fields >= without:
            return True
        for sample in corrected:
            self._refuse(sample, "does not explain the image better than no field")
        return False

    def refuse(self, why):
        """Drop every field still held, each with a warning saying ``why``."""
        for sample in self.samples:
            if sample.coefficients is not None:
                self._refuse(sample, why)

    def announce(self):
        """Warn about the fields refused while :attr:`quiet`."""
        reasons, self.reasons = self.reasons, {}
        for sample, why in reasons.values():
            self._warn(sample, why)

    def _refuse(self, sample, why):
        sample.coefficients = None
        if self.quiet:
            self.reasons[id(sample)] = (sample, why)
        else:
            self._warn(sample, why)

    def _warn(self, sample, why):
        zeros = _zero_share(sample)
        if zeros >= ZERO_BACKGROUND:
            # a class spent on the zeros, and the field bent to their edge
            advice = (
                f"{zeros:.0%} of its pixels are exactly 0, a background padded with zeros "
                "(as skull stripping, registration or stitching leaves)? Segment the rest only: a mask "
                "of the pixels above 0 (mask=image > 0)."
            )
        elif sample.degree > 1:
            advice = f"Try a lower degree ({_lower_degrees(sample.degree)}) or bias_field=None."
        else:
            advice = "The image may hold no smooth field; use bias_field=None."
        warnings.warn(
            f"bias_field: the field estimated for {sample.name} {why}; {sample.name} is "
            f"left without bias-field correction (its field is all ones). {advice}",
            BiasFieldWarning,
            stacklevel=_training.caller_stacklevel(),
        )


#: A refused field's warning advises a mask when at least this share of the
#: image's valid pixels is exactly 0 (in every channel).
ZERO_BACKGROUND = 0.1


def _zero_share(sample) -> float:
    """The share of the sampled pixels that are 0 in every channel."""
    if not len(sample.values):
        return 0.0
    return float(np.mean(np.all(sample.values == 0, axis=1)))


def _every(sample, step) -> ImageSample:
    """``sample`` at every ``step``-th of its pixels (its field too)."""
    return sample.at(*(a[::step] for a in (sample.positions, sample.values, sample.design)))


def _stride(n_values) -> int:
    """The step between the ``FIELD_ROWS`` or fewer evenly spread rows of
    ``n_values`` sampled pixels that a refit of the field solves on."""
    return max(1, -(-n_values // FIELD_ROWS))


def _centred(coefficients, moments):
    """A field's coefficients with its mean ``log b`` over the valid pixels
    (whose basis means are ``moments``) set to 0, per channel."""
    centred = coefficients.copy()
    centred[0] -= moments @ coefficients  # the constant basis function is the first
    return centred


def _shifted(coefficients, level):
    """A field's coefficients times the constant factor ``exp(level)``."""
    shifted = coefficients.copy()
    shifted[0] += level  # the constant basis function is the first, 1 everywhere
    return shifted


def _lower_degrees(degree) -> str:
    """The settings of a lower degree than ``degree`` (at least 2), as advice."""
    if degree == 2:
        return "bias_field=1"
    if degree == 3:
        return "bias_field=1 or 2"
    return f"bias_field=1 to {degree - 1}"


def _rows_of(samples):
    """The rows of each sample in their concatenation."""
    offsets = np.cumsum([0] + [len(s.values) for s in samples])
    return [slice(a, b) for a, b in zip(offsets[:-1], offsets[1:])]


def _can_hold_field(sample, n_valid, size, degree) -> bool:
    """Whether an image has enough positive valid pixels for a field; warns if not."""
    n = len(sample.values)
    positive = float(np.mean(np.all(sample.positive, axis=1))) if n else 0.0
    negative = float(np.mean(np.any(sample.values < 0, axis=1))) if n else 0.0
    needed = size * MIN_PIXELS_PER_COEFFICIENT
    name = sample.name
    if negative > MAX_NEGATIVE_SHARE:
        warnings.warn(
            f"bias_field: {negative:.0%} of the valid pixels of {name} are negative; a "
            "multiplicative field acts on intensities (zero for no signal) and is "
            f"estimated from the logarithm of the positive ones, so {name} is left "
            "without bias-field correction (its field is all ones). For differences or "
            "standardised values use bias_field=None.",
            BiasFieldWarning,
            stacklevel=_training.caller_stacklevel(),
        )
        return False
    if positive * n_valid < needed:
        what = "valid pixels" if positive == 1.0 else "valid pixels with positive values"
        ndim = len(sample.geometry.shape)

        def pixels_for(d):
            return n_coefficients(ndim, d) * MIN_PIXELS_PER_COEFFICIENT

        # the highest lower degree the image can hold
        fitting = [d for d in range(degree - 1, 0, -1) if pixels_for(d) <= positive * n_valid]
        advice = (
            f"Use a lower degree (bias_field={fitting[0]} needs {pixels_for(fitting[0])}) or "
            "bias_field=None."
            if fitting else
            f"Use bias_field=None: a field of the lowest degree needs {pixels_for(1)} pixels "
            "(a larger image, or a larger mask)."
        )
        warnings.warn(
            f"bias_field: {name} has {int(round(positive * n_valid))} {what}, too few to "
            f"estimate a field of degree {degree} ({size} coefficients per channel; at "
            f"least {needed} pixels needed); {name} is left without bias-field "
            f"correction (its field is all ones). {advice}",
            BiasFieldWarning,
            stacklevel=_training.caller_stacklevel(),
        )
        return False
    return True


def _spread_too_large(log_field) -> bool:
    spread = np.max(log_field, axis=0) - np.min(log_field, axis=0)
    return bool(np.any(~np.isfinite(spread)) or np.any(spread > math.log(MAX_FIELD_RATIO)))


def _ratio_text(log_field) -> str:
    spread = np.max(log_field, axis=0) - np.min(log_field, axis=0)
    with np.errstate(over="ignore"):
        ratio = float(np.exp(np.nanmax(spread))) if np.all(np.isfinite(spread)) else np.inf
    return (
        f"would scale intensities by up to {ratio:.3g} times from one place to another "
        f"(more than {MAX_FIELD_RATIO:g}, which no smooth illumination or coil field does)"
    )


def _solve(sample: ImageSample, resp, fitted: _mixture.Mixture,
           centre: bool = True) -> np.ndarray | None:
    """Weighted least-squares ``log b`` of one image from its pixels' posteriors.

    ``fitted`` is the mixture in input units. Each channel's field is fitted
    to the log-residuals of its positive values by the normal equations (a
    few hundred coefficients at most, in a well-conditioned basis); with
    ``centre``, its mean over the image's valid pixels is then set to 0.
    """
    means = fitted.means
    variances = fitted.channel_variances()
    # an evenly spread subset of the (spatially ordered) pixels is plenty for
    # a few dozen coefficients, and keeps each refit cheap
    every = _stride(len(sample.values))
    design = sample.design[::every]
    resp = resp[::every]
    positive = sample.positive[::every]
    log_values = sample.log_values[::every]
    coefficients = np.zeros((design.shape[1], means.shape[1]))
    for channel in range(means.shape[1]):
        mean = means[:, channel]
        usable = mean > 0
        if not usable.any():
            return None
        safe_mean = np.where(usable, mean, 1.0)
        log_variance = np.maximum(variances[:, channel] / safe_mean**2, MIN_LOG_SD**2)
        precision = np.where(usable, 1.0 / log_variance, 0.0)
        weights = resp * precision
        # the sum along the short component axis, column by column: the same
        # bits as weights.sum(axis=1) at a third of its time
        omega = weights[:, 0].copy()
        for column in weights.T[1:]:
            omega += column
        omega *= positive[:, channel]  # the log of the others does not exist
        if np.count_nonzero(omega) < design.shape[1]:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            component_log = (weights @ np.log(safe_mean)) / omega
        residual = np.where(omega > 0, log_values[:, channel] - component_log, 0.0)
        weighted = design * omega[:, np.newaxis]
        gram = weighted.T @ design
        solution, *_ = np.linalg.lstsq(gram, weighted.T @ residual, rcond=None)
        coefficients[:, channel] = _centred(solution, sample.moments) if centre else solution
    if not np.all(np.isfinite(coefficients)):
        return None
    return coefficients
