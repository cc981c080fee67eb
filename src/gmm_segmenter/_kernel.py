"""The prediction kernel: one in-memory image (or block) and a fitted model in,
labels, posteriors or log-likelihoods out.

Everything that labels pixels calls :func:`predict_image`: the estimator for
in-memory images, the dask workers for each block (with its halo), and so
through them the command line and napari. It reads nothing but its
arguments, so a block and a :class:`~._model.FittedModel` (a few kilobytes)
are all a worker needs.

Pixel-wise outputs are computed chunk by chunk (:data:`_image.CHUNK_PIXELS`
pixels at a time) in float32, through a lookup table where the image's
values allow one; outputs with the spatial prior come from mean-field
posterior maps (:mod:`._mrf`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from scipy.special import logsumexp, softmax
from threadpoolctl import ThreadpoolController

from . import _image, _mixture, _mrf
from ._model import FittedModel, label_dtype
from ._progress import report

__all__ = [
    "OUTPUTS",
    "predict_image",
    "output_layout",
    "log_potential",
    "check_spatial_memory",
    "standardize",
    "one_blas_thread",
]

#: What :func:`predict_image` can compute.
OUTPUTS = ("labels", "posteriors", "log_likelihood")


@dataclass(frozen=True)
class PixelFunction:
    """A function of standardised pixel values and the array it fills.

    ``compute`` maps ``(n, n_features)`` standardised values (of
    ``compute_dtype``) to ``(n, *tail)`` results. ``in_input_units``, when
    given, computes the same from 8- and 16-bit values as they are:
    standardising them in a pass of their own would cost as much as
    labelling them.
    ``tail_first`` lays the output out as ``(*tail, *spatial_shape)``.
    """

    compute: Callable
    tail: tuple
    dtype: np.dtype
    fill: float
    compute_dtype: type = np.float32
    in_input_units: Callable | None = None
    tail_first: bool = False


def output_layout(model: FittedModel, output: str) -> tuple[tuple, np.dtype]:
    """The axes each pixel adds to ``output`` and its dtype."""
    if output == "labels":
        return (), label_dtype(model.n_components)
    if output == "posteriors":
        return (model.n_components,), np.dtype(np.float32)
    if output == "log_likelihood":
        return (), np.dtype(np.float64)
    raise ValueError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")


def _pixel_function(model: FittedModel, output: str) -> PixelFunction:
    mixture = model.standardized
    tail, dtype = output_layout(model, output)
    if output == "labels":
        fitted = model.mixture
        return PixelFunction(
            compute=lambda values: _mixture.most_probable(values, mixture, dtype) + 1,
            tail=tail, dtype=dtype, fill=0,
            in_input_units=lambda values: _mixture.most_probable(
                values.astype(np.float32), fitted, dtype) + 1,
        )
    if output == "posteriors":
        return PixelFunction(
            compute=lambda values: softmax(_mixture.weighted_log_prob(values, mixture), axis=1),
            tail=tail, dtype=dtype, fill=0.0,
        )
    log_jacobian = np.log(model.scale).sum()
    return PixelFunction(
        compute=lambda values: logsumexp(
            _mixture.weighted_log_prob(values, mixture), axis=1
        ) - log_jacobian,
        tail=tail, dtype=dtype, fill=np.nan, compute_dtype=np.float64,
    )


def predict_image(
    view: _image.ImageView, model: FittedModel, output: str, adjust_potential=None
) -> np.ndarray:
    """``output`` (one of :data:`OUTPUTS`) for every pixel of one image.

    Labels and posteriors include the spatial prior when ``model.beta > 0``;
    log-likelihoods are always those of the mixture alone. Shapes: labels
    and log-likelihoods ``spatial_shape``, posteriors ``spatial_shape + (K,)``.
    ``adjust_potential``, when given, changes the ``(K, *spatial_shape)``
    log-potentials in place before labels or posteriors are computed from
    them (guidance: a per-pixel log-prior).
    """
    output_layout(model, output)  # refuses an unknown output before any work
    if adjust_potential is not None and output != "log_likelihood":
        with one_blas_thread():
            return _spatial_prediction(view, model, output, adjust_potential)
    if output == "log_likelihood" or model.beta == 0:
        with one_blas_thread():
            return map_pixels(view, _pixel_function(model, output), model.offset, model.scale)
    with one_blas_thread():
        return _spatial_prediction(view, model, output)


def _spatial_prediction(view, model, output, adjust_potential=None):
    hood = model.neighbourhood(len(view.spatial_shape))
    check_spatial_memory([view], model.n_components, "Labelling with the spatial prior")
    valid = _image.valid_map(view)
    potential = None
    if adjust_potential is None:  # a per-pixel prior needs a map of its own
        potential = table_log_potential(view, model.standardized, model.offset, model.scale)
    if potential is None:
        potential = log_potential(view, model.standardized, model.offset, model.scale)
    if adjust_potential is not None:
        adjust_potential(potential)
    padded = _mrf.spatial_posteriors(potential, valid, model.beta, hood)
    if output == "labels":
        labels = _mrf.most_probable(padded, potential.shape[1:], label_dtype(model.n_components))
        labels += 1
        if valid is not None:
            labels[~valid] = 0
        return labels
    if isinstance(potential, _mrf.TablePotential):
        out = np.empty(potential.shape[1:] + potential.shape[:1], dtype=np.float32)
    else:  # reuse the (K, *spatial_shape) buffer, component axis last
        out = potential.reshape(potential.shape[1:] + potential.shape[:1])
    return _mrf.channel_last(padded, out)


def table_log_potential(view: _image.ImageView, mixture: _mixture.Mixture, offset, scale):
    """The log-potentials of an 8- or 16-bit grey image as a :class:`._mrf.TablePotential`.

    One table column per possible value, indexed by the image's values seen
    as unsigned (a copy to 16 bits for 8-bit images): no ``(K, *spatial_shape)``
    float32 map is made. ``None`` for other images.
    """
    if not _through_table(view):
        return None
    small = _image.SMALL_INTEGER_KINDS[view.dtype]
    table_values = _image.every_value(view.dtype)[:, np.newaxis]  # indexed by the raw bits
    function = PixelFunction(
        compute=lambda values: _mixture.weighted_log_prob(values, mixture),
        tail=(mixture.n_components,), dtype=np.dtype(np.float32), fill=0.0,
    )
    table = _potential_table(function, table_values, mixture, offset, scale)
    index = np.ascontiguousarray(view.pixels[..., 0]).view(small)
    if index.dtype != np.uint16:
        index = index.astype(np.uint16)
    return _mrf.TablePotential(np.ascontiguousarray(table), index)


#: :func:`standardized_pixels` keeps at most this many values (128 MiB as float32).
STANDARDIZED_MAX_VALUES = 1 << 25


def standardized_pixels(views, offset, scale):
    """The valid pixels of each image in the fit's units, to compute log-potentials from again.

    HMRF-EM computes every image's log-potentials once an iteration, under a
    new mixture; standardising the same pixel values each time cost 9 % of
    the default's fit + predict on a 2048² RGB image. One entry per image:
    ``(values, valid)``, ``(n_valid, n_channels)`` float32 as
    :func:`log_potential` computes them and the flat valid flags (``None``:
    all), or ``None`` for an image read through a lookup table (cheaper
    still). All ``None`` when the values would take more than
    :data:`STANDARDIZED_MAX_VALUES`.
    """
    if sum(view.n_pixels * view.n_channels for view in views) > STANDARDIZED_MAX_VALUES:
        return [None] * len(views)
    kept = []
    for view in views:
        if _image.lookup_plan(view) is not None:
            kept.append(None)
            continue
        parts, flags = [], []
        for start, stop, values, valid in _image.iter_chunks(view):
            flags.append(np.ones(stop - start, dtype=bool) if valid is None else valid)
            parts.append(standardize(values if valid is None else values[valid], offset, scale,
                                     np.float32))
        valid = np.concatenate(flags)
        kept.append((np.ascontiguousarray(np.concatenate(parts)), None if valid.all() else valid))
    return kept


def log_potential(view: _image.ImageView, mixture: _mixture.Mixture, offset, scale,
                  standardized=None):
    """``log w_k + log p(x | k)`` at every pixel, ``(K, *spatial_shape)`` float32.

    ``mixture`` is in the standardised units ``(x - offset) / scale``. Component first:
    the layout of :mod:`._mrf`'s maps. Pixels that are not valid hold 0.
    ``standardized`` is the image's entry of :func:`standardized_pixels`, if any.
    """
    if standardized is not None:
        return _from_standardized(view, mixture, *standardized)
    function = PixelFunction(
        compute=lambda values: _mixture.weighted_log_prob(values, mixture),
        tail=(mixture.n_components,), dtype=np.dtype(np.float32), fill=0.0,
        tail_first=True,
        in_input_units=lambda values: _integer_log_potential(values, mixture, offset, scale),
    )
    plan = _image.lookup_plan(view)
    if plan is None:
        return map_pixels(view, function, offset, scale)
    # through the table, one component plane at a time: contiguous writes,
    # and no pass to fill the output first
    out = _new_output(function.tail + view.spatial_shape, np.float32)
    table_values, index_of = plan
    table = _potential_table(function, table_values, mixture, offset, scale)
    planes = out.reshape(mixture.n_components, view.n_pixels)
    for start, stop, values, valid in _image.iter_chunks(view):
        _take_planes(table, index_of(values), _NOT_MASKED if valid is None else valid,
                     planes[:, start:stop])
        report("labelling", stop, view.n_pixels)
    return out


_NOT_MASKED = np.empty(0, dtype=np.bool_)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _take_planes(table, index, valid, out):  # pragma: no cover - compiled
    """``out[k] = table[k, index]`` for every component ``k``, and 0 where
    ``valid`` (empty: everywhere valid) is false.

    ``np.take`` per component cast the 8- or 16-bit ``index`` to ``intp``
    each time: three quarters of its time on an 8-bit image, and 10 % of a
    default fit of ``camera``.
    """
    for k in range(table.shape[0]):
        column = table[k]
        plane = out[k]
        for i in range(index.size):
            plane[i] = column[index[i]]
        if valid.size:
            for i in range(index.size):
                if not valid[i]:
                    plane[i] = 0.0


def _integer_log_potential(values, mixture, offset, scale):
    """``log w_k + log p(x | k)`` of 8- or 16-bit ``values`` under the standardised ``mixture``.

    The compiled log-densities standardise the values as they read them
    (the same bits as :func:`standardize`) where they can.
    """
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    if _within_float32(values.dtype, offset, scale):
        out = _mixture.standardized_log_prob(values, mixture, offset, scale)
        if out is not None:
            return out
    return _mixture.weighted_log_prob(standardize(values, offset, scale, np.float32), mixture)


def _from_standardized(view, mixture, values, valid):
    out = _new_output((mixture.n_components,) + view.spatial_shape, np.float32,
                      None if valid is None else 0.0)
    planes = out.reshape(mixture.n_components, view.n_pixels)
    into = planes if valid is None else np.empty((mixture.n_components, len(values)), np.float32)
    for first in range(0, len(values), _image.CHUNK_PIXELS):
        stop = min(first + _image.CHUNK_PIXELS, len(values))
        into[:, first:stop] = _mixture.weighted_log_prob(values[first:stop], mixture).T
        report("labelling", stop, len(values))
    if valid is not None:
        planes[:, valid] = into
    return out


_last_table = threading.local()


def _potential_table(function, table_values, mixture, offset, scale):
    """The log-potentials ``function`` gives at every row of ``table_values``, ``(K, n)`` float32.

    ``function`` computes ``log w_k + log p(x | k)`` under ``mixture`` (the
    cache below knows no other). The last grey-level table is kept (per
    thread) for calls with the same mixture objects, such as the images of
    a batch in one HMRF-EM iteration.
    """
    grey = table_values.shape[1] == 1  # a range of integers: known by its ends
    key = (len(table_values), float(table_values[0, 0]), float(table_values[-1, 0])) if grey else None
    last = getattr(_last_table, "entry", None)
    if key is not None and last is not None and last[0] == key and all(
        a is b for a, b in zip(last[1], (mixture, offset, scale))
    ):
        return last[2]
    table = np.empty((mixture.n_components, len(table_values)), dtype=np.float32)
    for first in range(0, len(table_values), _image.CHUNK_PIXELS):
        rows = slice(first, first + _image.CHUNK_PIXELS)
        standardized = standardize(table_values[rows], offset, scale, np.float32)
        table[:, rows] = function.compute(standardized.astype(np.float64, copy=False)).T
    # the mixture objects themselves are held, so their ids cannot be reused
    _last_table.entry = None if key is None else (key, (mixture, offset, scale), table)
    return table


def _new_output(shape, dtype, fill=None) -> np.ndarray:
    """An output array of ``shape``, refused up front when it would not fit in memory;
    filled with ``fill`` unless it is ``None``."""
    dtype = np.dtype(dtype)
    _image.check_memory(
        math.prod(shape) * dtype.itemsize, f"An output of shape {shape} ({dtype.name})"
    )
    if fill is None:
        return np.empty(shape, dtype=dtype)
    if fill == 0:
        return np.zeros(shape, dtype=dtype)  # pages come zeroed: no pass to fill them
    return np.full(shape, fill, dtype=dtype)


def map_pixels(view: _image.ImageView, function: PixelFunction, offset, scale):
    """Apply ``function`` to the standardised pixels of one image, chunk by chunk."""
    tail = function.tail
    shape = tail + view.spatial_shape if function.tail_first else view.spatial_shape + tail
    out = _new_output(shape, function.dtype, function.fill)
    if function.tail_first:  # write pixel-major results through a transposed view
        flat = np.moveaxis(out.reshape(tail + (view.n_pixels,)), -1, 0)
    else:
        flat = out.reshape((view.n_pixels,) + tail)
    plan = _image.lookup_plan(view)
    if plan is not None:
        _map_through_table(view, function, plan, flat, offset, scale)
        return out
    in_input_units = function.in_input_units
    if view.dtype.kind not in "biu" or view.dtype.itemsize > 2:
        in_input_units = None  # wider values need the standardised units
    for start, stop, values, valid in _image.iter_chunks(view):
        if valid is not None:
            values = values[valid]
        if not len(values):
            result = np.empty((0,) + tail)
        elif in_input_units is not None:
            result = in_input_units(values)
        else:
            result = function.compute(
                standardize(values, offset, scale, function.compute_dtype)
            )
        if valid is None:
            flat[start:stop] = result
        else:
            flat[start:stop][valid] = result
        report("labelling", stop, view.n_pixels)
    return out


def _map_through_table(view, function, plan, flat, offset, scale):
    """Evaluate ``function`` once per table row, then index the table per chunk."""
    table_values, index_of = plan
    # evaluated in row blocks: a colour table may have millions of rows
    table = np.empty((len(table_values),) + function.tail, dtype=function.dtype)
    for first in range(0, len(table_values), _image.CHUNK_PIXELS):
        rows = slice(first, first + _image.CHUNK_PIXELS)
        standardized = standardize(table_values[rows], offset, scale, function.compute_dtype)
        table[rows] = function.compute(standardized.astype(np.float64, copy=False))
    for start, stop, values, valid in _image.iter_chunks(view):
        block = flat[start:stop]
        if valid is None:
            np.take(table, index_of(values), axis=0, out=block)
        else:
            block[valid] = table[index_of(values)[valid]]
        report("labelling", stop, view.n_pixels)


def standardize(values, offset, scale, dtype):
    """Pixel values in the fit's units, as ``dtype``, clipped to stay computable.

    A pixel far outside the fitted range (1e45 under a model of 0..255 data)
    would overflow to inf in float32 and turn every posterior NaN, in the
    spatial prior its neighbours' too. Clipped to 1e12 standard deviations
    (1e150 in float64), it lands in the widest component, as in the limit.
    """
    limit = _FLOAT32_LIMIT if np.dtype(dtype) == np.float32 else 1e150
    if np.dtype(dtype) == np.float32 and values.dtype.itemsize <= 2:
        # 8- and 16-bit values are exact in float32: no float64 pass, and the
        # subtraction converts as it goes
        # channel-major: broadcasting along a 3-long last axis is slow, and
        # the log-densities read the channels as rows anyway
        offset32, inverse32 = _mixture.float32_standardisation(offset, scale)
        standardized = np.subtract(values.T, offset32[:, np.newaxis], dtype=np.float32)
        standardized *= inverse32[:, np.newaxis]
        standardized = standardized.T
        if values.dtype.kind in "biu" and _within_float32(values.dtype, offset, scale):
            return standardized  # no value of this dtype can need clipping
    else:
        with np.errstate(over="ignore"):
            standardized = ((values.T - offset[:, np.newaxis]) / scale[:, np.newaxis]).T
    np.clip(standardized, -limit, limit, out=standardized)
    return standardized.astype(dtype, copy=False)


#: :func:`standardize` clips float32 values to this many standard deviations.
_FLOAT32_LIMIT = 1e12


def _within_float32(dtype, offset, scale) -> bool:
    """Whether every value of the 8- or 16-bit (or bool) ``dtype`` standardises
    to within :func:`standardize`'s float32 clipping limit."""
    info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
    reach = np.maximum(abs(info.min - offset), abs(info.max - offset)) / scale
    return bool(np.all(reach < _FLOAT32_LIMIT))


def check_spatial_memory(views, n_components, what):
    """Refuse a spatial-prior pass whose float32 posterior maps would not fit.

    Every image keeps a map of K posteriors per pixel inside a zero border
    (the outputs, or the fit's state), and the largest also needs its pixel
    log-potentials (K float32 a pixel, or a 2-byte table index for 8- and
    16-bit grey images, see :func:`table_log_potential`), its valid-pixel
    flags and the sweep's flags (one byte per segment of a row).
    """
    maps = [math.prod(_mrf.map_shape(n_components, view.spatial_shape)) for view in views]
    largest = max(view.n_pixels for view in views)
    unary = max(
        view.n_pixels * (2 if _through_table(view) else n_components * 4) for view in views
    )
    shapes = ", ".join(str(view.spatial_shape) for view in views)
    _image.check_memory(
        sum(maps) * np.dtype(np.float32).itemsize + unary
        + largest + max(maps) // n_components // 32,
        f"{what} ({n_components} components, image shape(s) {shapes})",
    )


def _through_table(view) -> bool:
    dtype = getattr(view, "dtype", None)
    return dtype in _image.SMALL_INTEGER_KINDS and getattr(view, "n_channels", 0) == 1


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None


@contextlib.contextmanager
def one_blas_thread():
    """One BLAS and one OpenMP thread while any fit or prediction runs, in any thread.

    EM and prediction multiply tall, skinny arrays by tiny (channels x
    channels) matrices: memory-bound work that BLAS threads only slow down,
    badly so when the cores are busy (a fit took 4x longer with two OpenBLAS
    threads on a loaded 2-core machine). The screened k-means starts run
    scikit-learn's OpenMP loops on 20 000 rows, where the threads gain
    nothing alone (astronaut, 0.8 s either way) and compete when fits
    overlap (``gmm-segment --jobs 2`` on six colour images: 6.7-6.9 s with
    one OpenMP thread per fit, 7.3-7.5 s with two).

    The BLAS setting is global to the process: the first caller to enter
    sets it and the last to leave restores it, so overlapping calls (a napari
    worker and the main thread, ``gmm-segment --jobs``) cannot restore each
    other's limit and leave BLAS single-threaded for good. OpenMP's is the
    calling thread's own, set and restored by each call.
    """
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = _blas_controller().select(user_api="blas").limit(limits=1)
        _blas_users += 1
    openmp = None
    try:
        openmp = _blas_controller().select(user_api="openmp").limit(limits=1)
        yield
    finally:
        if openmp is not None:
            openmp.restore_original_limits()
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


@functools.cache
def _blas_controller():
    # threadpool_limits() looks the loaded libraries up again on every call
    # (~3 ms, several times per fit); a controller made once does not. By the
    # first fit, NumPy's and SciPy's BLAS are loaded.
    return ThreadpoolController()
