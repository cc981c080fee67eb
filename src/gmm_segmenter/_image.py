"""Images in, pixel tables out, and back.

Everything here works on views of the caller's arrays and on bounded-size
chunks of pixels, so that memory never grows with the number of pixels beyond
the outputs themselves.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from . import _training

#: Pixels handled at once when an image is walked chunk by chunk.
CHUNK_PIXELS = 1 << 17

# Integer dtypes whose every possible value fits in a lookup table of at most
# 2**16 entries, indexed directly through an unsigned view of the data.
SMALL_INTEGER_KINDS = {
    np.dtype(np.bool_): np.dtype(np.uint8),
    np.dtype(np.uint8): np.dtype(np.uint8),
    np.dtype(np.int8): np.dtype(np.uint8),
    np.dtype(np.uint16): np.dtype(np.uint16),
    np.dtype(np.int16): np.dtype(np.uint16),
}

# Wider integer images are predicted through a table over their value range
# when that range is at most this long.
MAX_TABLE_RANGE = 1 << 22


@dataclass(frozen=True)
class ImageView:
    """One image seen as pixels of ``n_channels`` values.

    ``pixels`` is a channel-last view of the caller's array, never written to
    (a float16 image is the one exception: a float32 copy); ``mask`` is a boolean array of the spatial shape where
    ``True`` marks pixels to use, or ``None`` when every pixel is used.
    """

    pixels: np.ndarray
    mask: np.ndarray | None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.pixels.shape[:-1]

    @property
    def n_pixels(self) -> int:
        return math.prod(self.spatial_shape)

    @property
    def n_channels(self) -> int:
        return self.pixels.shape[-1]

    @property
    def dtype(self) -> np.dtype:
        return self.pixels.dtype

    @property
    def is_integer(self) -> bool:
        return self.dtype.kind in "biu"

    @property
    def may_be_invalid(self) -> bool:
        """Whether some pixels may be masked out or not finite."""
        return self.mask is not None or not self.is_integer


def computed(view: ImageView) -> ImageView:
    """``view`` in memory: its pixels and mask read, if either is a dask array
    (both in one pass over the graph they share)."""
    lazy = [part for part in (view.pixels, view.mask) if is_dask_array(part)]
    if not lazy:
        return view
    import dask

    read = iter(dask.compute(*lazy))
    pixels, mask = (
        np.asarray(next(read)) if is_dask_array(part) else part
        for part in (view.pixels, view.mask)
    )
    return ImageView(pixels=pixels, mask=mask)


def is_dask_array(x) -> bool:
    """Whether ``x`` is a dask array (without importing dask)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(x, module.Array)


def is_zarr_array(x) -> bool:
    """Whether ``x`` is a zarr array (without importing zarr)."""
    return type(x).__module__.startswith("zarr") and hasattr(x, "chunks") and hasattr(x, "shape")


def is_batch(X) -> bool:
    """A list or tuple of images is a batch; anything else is one image."""
    return isinstance(X, (list, tuple))


def as_images(X, *, channel_axis, mask=None, param_name="X", convert=None,
              grey_model=False, n_sizes=None) -> list[ImageView]:
    """Validate one image or a batch of images and return channel-last views.

    ``convert(image, mask)``, when given, sees each image and its mask first
    and returns them in a form this module reads (the chunked backend turns
    zarr arrays into dask arrays there). ``grey_model``: the images are to
    be labelled by a model of grey images, which a colour-looking image
    should be converted for (not read with ``channel_axis=-1``); ``None``:
    by a model fitted on colour-looking images read as volumes, so they are
    not warned about again. ``n_sizes``: how many voxel sizes an anisotropic
    ``spacing`` gives; as many as an image has axes say they are all space. Raises
    ``TypeError`` or ``ValueError`` naming the parameter, what was given and
    what would work.
    """
    if is_batch(X):
        if len(X) == 0:
            raise ValueError(
                f"{param_name} is an empty list; pass one image as an array or a "
                "non-empty list of images."
            )
        images = list(X)
        _warn_if_nested_lists(images, param_name)
        masks = _as_mask_list(mask, len(images))
        names = [f"{param_name}[{i}]" for i in range(len(images))]
    else:
        images, masks, names = [X], [mask], [param_name]
    views = [
        _as_image(image, channel_axis, image_mask, name, convert, grey_model)
        for image, image_mask, name in zip(images, masks, names)
    ]
    if channel_axis is None and grey_model is False:
        _warn_if_two_channels(views, names, n_sizes)
    channels = {view.n_channels for view in views}
    if len(channels) > 1:
        raise ValueError(
            f"The images in {param_name} have different numbers of channels "
            f"({sorted(channels)}); a batch must share one channel layout."
        )
    return views


def _warn_if_nested_lists(images, name):
    """Warn when a batch is Python lists of numbers: ``image.tolist()``, which
    scikit-learn would read as one table, reads here as a batch of rows."""
    if len(images) < 2 or not all(isinstance(image, (list, tuple)) for image in images):
        return
    first = images[0]
    if not first or not isinstance(first[0], (int, float, np.generic)):
        return  # empty, or nested deeper (lists or arrays): a batch of images on purpose
    warnings.warn(
        f"{name} is a list of {len(images)} Python lists of numbers: a list is a batch of "
        f"images, so it is read as {len(images)} one-dimensional images of "
        f"{len(first)} pixels each. If it is one image, pass np.asarray({name}).",
        UserWarning, stacklevel=_training.caller_stacklevel(),
    )


def _as_mask_list(mask, n_images) -> list:
    if mask is None:
        return [None] * n_images
    if not is_batch(mask) or len(mask) != n_images:
        raise ValueError(
            f"mask must be None or a list of {n_images} masks (one per image, "
            "each None or a boolean array of the image's spatial shape) when X is "
            f"a list of {n_images} images; got {type(mask).__name__}"
            + (f" of length {len(mask)}" if is_batch(mask) else "")
            + "."
        )
    return list(mask)


def _as_image(image, channel_axis, mask, name, convert, grey_model=False) -> ImageView:
    if sparse.issparse(image):
        raise TypeError(
            f"{name} is a sparse {type(image).__name__}; sparse input is not "
            "supported, images must be dense arrays: pass X.toarray()."
        )
    if not (hasattr(image, "__array__") or isinstance(image, (list, tuple))) and (
        hasattr(image, "__array_interface__") or hasattr(image, "__array_struct__")
    ):
        # a PIL image (or any buffer numpy reads): read as np.asarray would
        if getattr(image, "mode", None) in ("P", "PA"):
            raise ValueError(
                f"{name} is a PIL image in palette mode ({image.mode!r}, a GIF or an "
                "indexed PNG): its values are indices into a palette, not colours; pass "
                f"np.asarray({name}.convert('RGB')) with channel_axis=-1 (or "
                f"{name}.convert('L') for grey)."
            )
        image = np.asarray(image)
    if not (hasattr(image, "__array__") or isinstance(image, (list, tuple))):
        raise TypeError(
            f"{name} must be an image given as an array (or a list of arrays for "
            f"a batch); got {type(image).__name__}."
        )
    if isinstance(channel_axis, (bool, np.bool_)):
        raise ValueError(
            f"channel_axis={channel_axis} is not an axis; pass an integer such as "
            "channel_axis=-1 (the last axis), or channel_axis=None if the image is grayscale."
        )
    if convert is not None:
        image, mask = convert(image, mask)
    hidden = None
    if isinstance(image, np.ma.MaskedArray):  # its mask hides pixels, as mask= would
        hidden = np.ma.getmaskarray(image)
        image = np.ma.getdata(image)
    if is_dask_array(image):
        _check_chunks(image, name)
    # a dask array stays lazy: everything below only reads its shape and dtype
    array = _real_array(image if is_dask_array(image) else np.asarray(image), name)
    if array.ndim == 0:
        raise ValueError(
            f"{name} is a scalar (0-d array); pass an image with at least one "
            "spatial axis."
        )
    if channel_axis is None:
        _warn_if_colour(array.shape, name, grey_model)
        pixels = array[..., np.newaxis]
        hidden = None if hidden is None else hidden[..., np.newaxis]
    else:
        if array.ndim < 2:
            raise ValueError(
                f"channel_axis={channel_axis} indicates a channel axis, which is not "
                f"possible for a {array.ndim}-dimensional {name} of shape "
                f"{array.shape}; use channel_axis=None if the image is grayscale."
            )
        if not -array.ndim <= channel_axis < array.ndim:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for {name} with "
                f"{array.ndim} dimensions (shape {array.shape}); use an axis in "
                f"[{-array.ndim}, {array.ndim - 1}], or channel_axis=None if the "
                "image is grayscale."
            )
        _warn_if_not_channels(array.shape, channel_axis, name)
        pixels = np.moveaxis(array, channel_axis, -1)
        hidden = None if hidden is None else np.moveaxis(hidden, channel_axis, -1)
    if pixels.size == 0:
        raise ValueError(
            f"{name} is empty (shape {array.shape}); pass an image with at least "
            "one pixel."
        )
    if pixels.dtype == np.float16:
        # float16 has too little precision and range for the arithmetic below:
        # one float32 copy (twice the input), the caller's array is untouched.
        pixels = pixels.astype(np.float32)
    elif not pixels.dtype.isnative:
        # big-endian data (FITS files, some readers): the compiled kernels read
        # the machine's byte order only; one copy, the caller's array untouched
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    mask = _as_mask(mask, pixels.shape[:-1], name)
    if hidden is not None and hidden.any():
        shown = ~hidden.any(axis=-1)
        mask = shown if mask is None else mask & shown
    return ImageView(pixels=pixels, mask=mask)


#: A last axis of 3 or 4 with both other axes at least this long reads as
#: colour channels (a photograph), not as a volume of 3 or 4 slices.
COLOUR_SIDE = 32


def looks_like_colour(shape) -> bool:
    """Whether an image of ``shape`` read with ``channel_axis=None`` looks like
    a colour image (last axis of 3 or 4, both others at least :data:`COLOUR_SIDE`)."""
    return len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) >= COLOUR_SIDE


def _warn_if_two_channels(views, names, n_sizes) -> None:
    """Warn, once per shape, of an image read as grey whose one axis of 2 among
    long ones looks like two channels (a two-colour microscope); 3 or 4 slices
    stay a volume, and so does an image given a voxel size for every axis."""
    said = set()
    for view, name in zip(views, names):
        shape = tuple(view.pixels.shape[:-1])
        if shape in said or n_sizes == len(shape) or looks_like_colour(shape):
            continue
        said.add(shape)
        message = channels_within_message(shape, name, sizes=(2,))
        if message is not None:
            warnings.warn(message, UserWarning, stacklevel=_training.caller_stacklevel())


def _warn_if_colour(shape, name, grey_model=False) -> None:
    """Warn when ``channel_axis=None`` would segment a colour image as a volume.

    ``grey_model``: a fitted model of grey images labels it, which refuses
    ``channel_axis=-1``: the advice is a grey copy or a colour model instead.
    ``None``: a model fitted on such images as volumes labels it; their fit
    said this already, and a grey copy would not fit that model.
    """
    if grey_model is None or not looks_like_colour(shape):
        return
    if grey_model:
        advice = (
            f"but this GMMSegmenter was fitted on grey images, so it labels {name} as a "
            f"3-D volume of {shape[-1]} slices. For a colour image, convert it to grey first "
            "(e.g. skimage.color.rgb2gray, scaled as the model's images were) or fit a "
            "model on colour images (channel_axis=-1)"
        )
    else:
        advice = (
            f"but with channel_axis=None it is segmented as a 3-D volume of {shape[-1]} "
            "slices. Pass channel_axis=-1 for a colour image"
        )
    warnings.warn(
        f"{name} has shape {shape}: its last axis of {shape[-1]} looks like colour "
        f"channels, {advice}; for a volume, ignore this warning.",
        UserWarning,
        stacklevel=_training.caller_stacklevel(),
    )


#: A channel axis at least this long, with fewer than :data:`PIXELS_PER_CHANNEL`
#: pixels per channel, reads as a spatial axis given as ``channel_axis``.
MANY_CHANNELS = 32
PIXELS_PER_CHANNEL = 8


def _warn_if_not_channels(shape, channel_axis, name) -> None:
    """Warn when ``channel_axis`` names an axis that looks spatial, not one of channels.

    ``channel_axis=0`` on an RGB photograph, or ``-1`` on a grayscale one,
    makes hundreds of channels of a few pixels each: a full covariance of
    that many channels cannot be estimated from so few pixels.
    """
    message = not_channels_message(shape, channel_axis, name)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=_training.caller_stacklevel())


#: Lengths of an axis that looks like channels among longer ones.
CHANNEL_SIZES = (2, 3, 4)

#: A channel axis at least this long beside a single axis of CHANNEL_SIZES is
#: questioned: the short axis looks like the channels.
CHANNELS_BESIDE_SHORT = 8


def short_axes(shape, skip=None) -> list:
    """The axes of ``shape`` (but ``skip``) whose length is one of :data:`CHANNEL_SIZES`."""
    return [axis for axis, size in enumerate(shape) if size in CHANNEL_SIZES and axis != skip]


#: The other axes beside a short one (see :func:`channels_within_message`)
#: are at least this long.
LONG_AXIS = 8


def channels_within_message(shape, name, option="channel_axis={axis}",
                            sizes=CHANNEL_SIZES) -> str | None:
    """What to say when one short axis among long ones (a ``(Z, C, Y, X)``
    hyperstack, ``(Z, Y, X, C)``, ``(C, Y, X)``) is about to be segmented as
    space; ``None`` when no axis looks so. ``option`` spells the setting to
    pass; ``sizes``: the lengths of a short axis that are questioned."""
    short = short_axes(shape)
    if len(shape) < 3 or len(short) != 1 or shape[short[0]] not in sizes:
        return None
    axis = short[0]
    if min(size for other, size in enumerate(shape) if other != axis) < LONG_AXIS:
        return None
    where = (" (an ImageJ hyperstack stores them there)" if 0 < axis < len(shape) - 2
             else "")
    shown = said_axis(axis, len(shape))
    return (
        f"{name} has shape {tuple(shape)}: its axis {shown} (of length {shape[axis]}) "
        f"looks like channels{where}, but it is segmented as a {len(shape)}-D grayscale "
        f"volume. Pass {option.format(axis=shown)} to model the channels together; for a "
        "volume, ignore this warning."
    )


def said_axis(axis, ndim) -> int:
    """``axis`` as advice names it: ``-1`` for the last, else its index."""
    return axis - ndim if axis == ndim - 1 else axis


def _channels_elsewhere_message(shape, channel_axis, name) -> str | None:
    """``channel_axis=0`` or ``2`` on a ``(Z, C, Y, X)`` stack: the axis taken is
    long and a single other one of 2 to 4 looks like the channels."""
    here = channel_axis % len(shape)
    short = short_axes(shape, skip=here)
    if len(shape) < 3 or len(short) != 1 or shape[here] < CHANNELS_BESIDE_SHORT:
        return None
    axis = said_axis(short[0], len(shape))
    return (
        f"{name} has shape {tuple(shape)}: channel_axis={channel_axis} makes "
        f"{shape[here]} channels, while axis {axis} (of length {shape[axis]}) looks like "
        f"the channels (as in a (Z, C, Y, X) stack). Pass channel_axis={axis} if it holds "
        "them; for an image of that many channels, ignore this warning."
    )


def not_channels_message(shape, channel_axis, name) -> str | None:
    """What :func:`_warn_if_not_channels` says of ``shape`` and ``channel_axis``, or ``None``."""
    n_channels = shape[channel_axis]
    n_pixels = math.prod(shape) // max(n_channels, 1)
    if n_channels < MANY_CHANNELS or n_pixels >= PIXELS_PER_CHANNEL * n_channels:
        # enough pixels, but a short axis elsewhere may look more like the channels
        return _channels_elsewhere_message(shape, channel_axis, name)
    others = [axis for axis in range(len(shape)) if shape[axis] in (3, 4)
              and axis != channel_axis % len(shape)]
    if others:
        axis = said_axis(others[-1], len(shape))
        advice = f"Pass channel_axis={axis} if axis {axis} holds the colour channels"
    else:
        advice = "Pass channel_axis=None for a grayscale image"
    return (
        f"{name} has shape {tuple(shape)}: channel_axis={channel_axis} makes {n_channels} "
        f"channels of only {n_pixels} pixels each (a model of {n_channels} channels "
        f"wants at least {PIXELS_PER_CHANNEL} pixels per channel, "
        f"{PIXELS_PER_CHANNEL * n_channels}), which looks like a spatial axis. {advice}; "
        "for an image of that many "
        "channels, ignore this warning."
    )


# Far beyond any real volume's chunk count; building a graph that size alone
# exhausts memory.
_MAX_CHUNKS = 10_000_000


def _check_chunks(image, name):
    """A dask array's chunk sizes must be known, and its chunks countable."""
    if any(isinstance(n, float) and math.isnan(n) for n in image.shape):
        raise ValueError(
            f"{name} is a dask array with unknown chunk sizes (shape {image.shape}); "
            f"call {name}.compute_chunk_sizes() first."
        )
    if image.npartitions > _MAX_CHUNKS:
        raise ValueError(
            f"{name} is a dask array of {image.npartitions} chunks (shape {image.shape}, "
            f"chunk size {image.chunksize}), more than {_MAX_CHUNKS}; use larger chunks "
            f"({name}.rechunk(...))."
        )


def _real_array(array, name):
    """``array`` as real numbers (bool, integer or float), or a clear error."""
    if array.dtype.kind == "c":
        # scikit-learn's convention for complex input is a ValueError
        raise ValueError(
            f"Complex data not supported: {name} has dtype {array.dtype}; segment "
            f"np.abs({name}) or {name}.real instead."
        )
    if array.dtype.kind == "O":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{name} has dtype object and its values are not numbers ({error}); "
                "pass a numeric array."
            ) from None
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {array.dtype}; images must be real-valued "
            "(bool, integer or float): convert it to a numeric array first."
        )
    return array


def strided_steps(spatial_shape, max_pixels) -> tuple:
    """Steps per axis of a strided copy of at most ``max_pixels`` pixels: the
    axis longest in the copy is stepped first, so the copy's pixels stay
    about as far apart along every axis."""
    steps = [1] * len(spatial_shape)

    def strided():
        return [-(-n // s) for n, s in zip(spatial_shape, steps)]

    while math.prod(strided()) > max_pixels:
        steps[int(np.argmax(strided()))] += 1
    return tuple(steps)


def _as_mask(mask, spatial_shape, name) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, (str, bytes, os.PathLike)):
        raise TypeError(
            f"mask for {name} is {type(mask).__name__} {mask!r}, not an array; read the "
            "file first (e.g. gmm_segmenter.io.read_image(path) > 0) and pass a boolean "
            f"array of shape {spatial_shape} (True where pixels are used)."
        )
    if not is_dask_array(mask):
        mask = np.asarray(mask)
    elif any(isinstance(n, float) and math.isnan(n) for n in mask.shape):
        raise ValueError(
            f"mask for {name} is a dask array with unknown chunk sizes (shape "
            f"{mask.shape}); call mask.compute_chunk_sizes() first, or pass it in memory."
        )
    if mask.shape != spatial_shape:
        raise ValueError(
            f"mask for {name} has shape {mask.shape} but the image's spatial shape "
            f"is {spatial_shape}; pass a boolean array of shape {spatial_shape} "
            "(True where pixels are used)."
        )
    if mask.dtype != np.bool_:
        if mask.dtype.kind not in "biuf":
            raise TypeError(
                f"mask for {name} has dtype {mask.dtype}; pass a boolean array "
                "(True where pixels are used)."
            )
        message = (
            f"mask for {name} holds NaN, which is neither True nor False; pass a "
            "boolean array (True where pixels are used), e.g. np.nan_to_num(mask) != 0."
        )
        if mask.dtype.kind == "f" and is_dask_array(mask):
            # checked block by block as the mask is computed (not read twice)
            return mask.map_blocks(_nonzero_without_nan, message, dtype=np.bool_)
        if mask.dtype.kind == "f" and np.isnan(mask).any():
            raise ValueError(message)
        mask = mask != 0
    return mask


def _nonzero_without_nan(block, message):
    """``block != 0`` of a float mask's block; ``ValueError(message)`` for NaN in it."""
    if np.isnan(block).any():
        raise ValueError(message)
    return block != 0


def blocks(spatial_shape: Sequence[int], chunk_pixels: int = CHUNK_PIXELS):
    """Split a spatial grid into C-ordered blocks of about ``chunk_pixels``.

    Yields ``(key, start, stop)``: ``image[key]`` is the block and
    ``start:stop`` its range in the C-order flattened grid.
    """
    shape = tuple(int(n) for n in spatial_shape)
    inner, axis = 1, len(shape)
    while axis > 0 and inner * shape[axis - 1] <= chunk_pixels:
        axis -= 1
        inner *= shape[axis]
    if axis == 0:
        yield (Ellipsis,), 0, inner
        return
    step = max(1, chunk_pixels // inner)
    length = shape[axis - 1]
    for position, outer in enumerate(np.ndindex(*shape[: axis - 1])):
        for first in range(0, length, step):
            last = min(first + step, length)
            start = (position * length + first) * inner
            yield outer + (slice(first, last),), start, start + (last - first) * inner


def has_valid_pixel(view: ImageView) -> bool:
    """Whether some pixel is inside the mask and finite (stops at the first
    block that has one: the first, for most images)."""
    if not view.may_be_invalid:
        return view.n_pixels > 0
    return any(valid is None or valid.any() for _, _, _, valid in iter_chunks(view))


def count_distinct_pixels(views: Sequence[ImageView], enough: int) -> int:
    """Distinct valid pixel values (rows) of in-memory ``views``, counting no
    further than ``enough`` (a chunk at a time: an image of many values stops early)."""
    found = None
    for view in views:
        for _, _, values, valid in iter_chunks(view):
            rows = values if valid is None else values[valid]
            if not len(rows):
                continue
            rows = np.unique(rows, axis=0)
            found = rows if found is None else np.unique(np.vstack([found, rows]), axis=0)
            if len(found) >= enough:
                return enough
    return 0 if found is None else len(found)


def chunk_values(view: ImageView, key) -> np.ndarray:
    """The pixels of one block as an ``(n, n_channels)`` array."""
    return view.pixels[key].reshape(-1, view.n_channels)


def chunk_valid(view: ImageView, key, values: np.ndarray) -> np.ndarray | None:
    """Which pixels of a block are used, or ``None`` when all are."""
    valid = None
    if view.mask is not None:
        valid = view.mask[key].reshape(-1)
    if not view.is_integer:
        # channel by channel: a reduction along the short channel axis is
        # several times slower than a few elementwise passes
        finite = np.isfinite(values[:, 0])
        for channel in range(1, values.shape[1]):
            finite &= np.isfinite(values[:, channel])
        valid = finite if valid is None else valid & finite
    # (a block with every pixel valid is the common case: no masked copies)
    return None if valid is None or valid.all() else valid


def iter_chunks(view: ImageView) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None]]:
    """Yield ``(start, stop, values, valid)`` for each block of an image."""
    for key, start, stop in blocks(view.spatial_shape):
        values = chunk_values(view, key)
        yield start, stop, values, chunk_valid(view, key, values)


def valid_map(view: ImageView) -> np.ndarray | None:
    """Pixels inside the mask with finite values, or ``None`` when all are."""
    if not view.may_be_invalid:
        return None
    valid = np.ones(view.spatial_shape, dtype=bool)
    flat = valid.reshape(-1)
    for start, stop, _, chunk_valid in iter_chunks(view):
        if chunk_valid is not None:
            flat[start:stop] = chunk_valid
    return None if flat.all() else valid


# --------------------------------------------------------------------------
# memory


def available_memory() -> int | None:
    """Bytes of memory available now (psutil if installed, else sysconf), or None."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def format_bytes(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError  # pragma: no cover


#: The last reading of :func:`available_memory`, less what the requests checked
#: since have taken: ``(time.monotonic(), bytes, the function that read it)``.
#: A request of less than ``1 / _SMALL_SHARE`` of a reading at most
#: ``_READING_SECONDS`` old is let through without reading again (psutil takes
#: 0.1 ms a reading, and a 256² fit asks 10-25 times); larger ones always
#: read anew.
_last_reading = (-math.inf, None, None)
_reading_lock = threading.Lock()
_READING_SECONDS = 1.0
_SMALL_SHARE = 100


#: What :func:`check_memory` advises unless told otherwise.
MEMORY_ADVICE = (
    "Process the image in tiles (crops along its spatial axes), use fewer components, "
    "or free memory."
)


def check_memory(n_bytes: int, what: str, advice: str = MEMORY_ADVICE) -> None:
    """Refuse, before allocating, work that needs more memory than is available.

    Raises ``MemoryError`` stating the estimate, what is available, and
    ``advice``; does nothing when the available memory cannot be known.
    """
    global _last_reading
    with _reading_lock:
        now = time.monotonic()
        when, reading, source = _last_reading
        if (source is available_memory and reading is not None
                and now - when < _READING_SECONDS and n_bytes * _SMALL_SHARE < reading):
            # a small request against a fresh reading: no need to read again;
            # what it takes comes off the reading, as does what larger ones took
            _last_reading = (when, reading - n_bytes, source)
            return
        available = available_memory()
        left = None if available is None else available - n_bytes
        _last_reading = (now, left, available_memory)
    if available is not None and n_bytes > available:
        raise MemoryError(
            f"{what} needs about {format_bytes(n_bytes)} of memory, but only "
            f"{format_bytes(available)} is available. {advice}"
        )


# --------------------------------------------------------------------------
# training data: a weighted table of pixel values


def integer_histogram(views: list[ImageView]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts over the valid pixels of integer images.

    Exact: EM on these weighted values is EM on every pixel.
    """
    tables = []
    for view in views:
        small = SMALL_INTEGER_KINDS.get(view.dtype)
        if small is not None:
            counts = np.zeros(1 << (8 * small.itemsize), dtype=np.int64)
            for start, stop, values, valid in iter_chunks(view):
                index = values.reshape(-1).view(small)
                if valid is not None:
                    index = index[valid]
                counts += np.bincount(index, minlength=counts.size)
            tables.append(dense_table(counts, small, view.dtype))
        else:
            parts = []
            for start, stop, values, valid in iter_chunks(view):
                values = values.reshape(-1)
                if valid is not None:
                    values = values[valid]
                parts.append(np.unique(values, return_counts=True))
            tables.extend(parts)
    return merge_histograms(tables)


def dense_table(counts: np.ndarray, small: np.dtype, dtype: np.dtype):
    """``(distinct values, counts)`` from counts indexed by ``small``-typed bit patterns."""
    present = np.flatnonzero(counts)
    return present.astype(small).view(dtype).astype(np.int64), counts[present]


def merge_histograms(tables) -> tuple[np.ndarray, np.ndarray]:
    """One ``(distinct values, counts)`` table from several."""
    values = np.concatenate([np.asarray(v) for v, _ in tables])
    counts = np.concatenate([c for _, c in tables])
    if values.size == 0:
        return values.astype(np.float64), counts
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, np.bincount(inverse.reshape(-1), weights=counts).astype(np.int64)


def draw_ranks(counts, n_samples: int, random_state: np.random.Generator) -> list[np.ndarray]:
    """A seeded uniform sample without replacement from groups of items.

    ``counts[i]`` items are in group ``i``; returns, for each group, the
    sorted positions (within the group) of the items drawn: ``min(n_samples,
    sum(counts))`` in all. Every seeded subsample of pixels (the fit's
    training sample, in memory and per dask block, and the spatial prior's
    probe pixels) is drawn here.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if n_samples >= total:
        ranks = np.arange(total)
    else:
        ranks = np.sort(random_state.choice(total, size=n_samples, replace=False))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    bounds = np.searchsorted(ranks, offsets)
    return [ranks[lo:hi] - offsets[i] for i, (lo, hi) in enumerate(zip(bounds, bounds[1:]))]


def sample_pixels(views: list[ImageView], n_samples: int, random_state: np.random.Generator):
    """A uniform random sample (without replacement) of the valid pixels.

    Returns an ``(m, n_channels)`` float64 array with ``m = min(n_samples,
    n_valid)``, and the number of valid pixels. Memory is bounded by the
    sample, not the images: valid pixels are counted and drawn chunk by chunk.
    """
    counts = []  # valid pixels per (image, block); a whole image when all are valid
    for view in views:
        if not view.may_be_invalid:
            counts.append([view.n_pixels])
        else:
            counts.append(
                [
                    (stop - start) if valid is None else int(np.count_nonzero(valid))
                    for start, stop, _, valid in iter_chunks(view)
                ]
            )
    flat_counts = [c for image_counts in counts for c in image_counts]
    n_valid = int(sum(flat_counts))
    if n_valid == 0:
        return np.empty((0, views[0].n_channels)), 0
    drawn = iter(draw_ranks(flat_counts, n_samples, random_state))
    parts = []
    for view in views:
        if not view.may_be_invalid:
            positions = next(drawn)
            parts.append(view.pixels[np.unravel_index(positions, view.spatial_shape)])
            continue
        for start, stop, values, valid in iter_chunks(view):
            positions = next(drawn)
            if len(positions):
                if valid is not None:
                    positions = np.flatnonzero(valid)[positions]
                parts.append(values[positions])
    return np.concatenate(parts).astype(np.float64, copy=False), n_valid


def pixels_at(view: ImageView, positions: np.ndarray):
    """Values ``(n, n_channels)`` float64 at flat positions, and whether each is valid."""
    coordinates = np.unravel_index(positions, view.spatial_shape)
    values = np.asarray(view.pixels[coordinates], dtype=np.float64)
    valid = np.isfinite(values).all(axis=1)
    if view.mask is not None:
        valid &= np.asarray(view.mask[coordinates])
    return values, valid


@dataclass(frozen=True)
class Images:
    """Validated images, and whether they came as a batch (a list).

    Backends (:mod:`._source` for NumPy arrays, :mod:`._dask` for chunked
    ones) subclass this and add the few operations everything above them
    uses: ``histogram()``, ``sample(n_samples, random_state)``,
    ``spatial_fit_views()`` and ``predict(model, output)``.
    """

    views: list
    batch: bool

    @property
    def n_channels(self) -> int:
        return self.views[0].n_channels

    def unbatch(self, outputs: list):
        """One output per image as the caller gave them: a list for a batch."""
        return outputs if self.batch else outputs[0]


def lookup_plan(view: ImageView):
    """How to predict an integer image through a lookup table.

    Returns ``(table_values, index_of)`` where ``table_values`` (shape
    ``(n, n_channels)``) are the pixel values the table is computed for and
    ``index_of(values)`` maps a chunk's values to table rows; or ``None``
    when a table would not pay off.
    """
    if view.dtype == np.uint8 and 2 <= view.n_channels <= 3:
        large = view.n_pixels >= _MIN_COLOUR_TABLE_PIXELS >> (8 * (3 - view.n_channels))
        return _colour_plan(view) if large else None
    if view.n_channels != 1 or not view.is_integer:
        return None
    plan = _intensity_plan(view)
    if plan is None:
        return None
    table_values, index_of = plan
    return table_values[:, np.newaxis], index_of


# An 8-bit colour image is labelled through a table over the colours it
# holds when they are at most this share of its pixels, and when it is large
# enough that the table's fixed ~80 MB (for 3 channels) stays below 10 bytes
# per pixel.
_MAX_COLOUR_SHARE = 0.1
_MIN_COLOUR_TABLE_PIXELS = 1 << 23


def _pack_colours(values: np.ndarray) -> np.ndarray:
    """Each 8-bit colour (row of ``values``) as one integer."""
    packed = values[:, 0].astype(np.uint32)
    for channel in range(1, values.shape[1]):
        packed <<= 8
        packed |= values[:, channel]
    return packed


def _colour_plan(view: ImageView):
    """A table over the distinct colours of an 8-bit colour image.

    A photograph holds far fewer distinct colours than pixels, so evaluating
    the mixture once per colour and indexing by the packed colour is exact
    and several times cheaper than evaluating every pixel.
    """
    present = np.zeros(1 << (8 * view.n_channels), dtype=bool)
    most = _MAX_COLOUR_SHARE * view.n_pixels
    for number, (_, _, values, valid) in enumerate(iter_chunks(view), start=1):
        packed = _pack_colours(values)
        present[packed if valid is None else packed[valid]] = True
        checkpoint = number % 16 == 0 or number & (number - 1) == 0
        if checkpoint and np.count_nonzero(present) > most:
            return None  # a noisy image: evaluating each pixel is cheaper
    colours = np.flatnonzero(present)
    del present
    if colours.size > most:
        return None
    row_of_colour = np.zeros(1 << (8 * view.n_channels), dtype=np.int32)
    row_of_colour[colours] = np.arange(colours.size, dtype=np.int32)
    shifts = 8 * np.arange(view.n_channels - 1, -1, -1)
    table_values = ((colours[:, np.newaxis] >> shifts) & 0xFF).astype(np.float64)
    return table_values, lambda values: row_of_colour[_pack_colours(values)]


def every_value(dtype) -> np.ndarray:
    """Every value of an 8- or 16-bit ``dtype`` (a key of :data:`SMALL_INTEGER_KINDS`)
    as float64, in the order of their unsigned bits: a table over them is
    indexed by the values seen as unsigned."""
    small = SMALL_INTEGER_KINDS[np.dtype(dtype)]
    values = np.arange(1 << (8 * small.itemsize), dtype=np.int64).astype(small)
    return values.view(dtype).astype(np.float64)


#: A 16-bit image of at most this many pixels is labelled through a table over
#: the range of values it holds rather than over all 65 536: the scan for
#: that range costs less than the table's unused rows (on a 256 x 256 image
#: of values 0-5734, HMRF-EM spent 40 % of its time on the full table).
_SCAN_RANGE_PIXELS = 1 << 20


def _intensity_plan(view: ImageView):
    """Table values and indexing for a single-channel integer image."""
    small = SMALL_INTEGER_KINDS.get(view.dtype)
    if small is not None and (small.itemsize == 1 or view.n_pixels > _SCAN_RANGE_PIXELS):
        return every_value(view.dtype), lambda values: values.reshape(-1).view(small)
    lowest = highest = None
    for _, _, values, valid in iter_chunks(view):
        if valid is not None:
            values = values[valid]
        if values.size:
            lo, hi = int(values.min()), int(values.max())
            lowest = lo if lowest is None else min(lowest, lo)
            highest = hi if highest is None else max(highest, hi)
    if lowest is None:
        lowest = highest = 0
    if highest - lowest >= MAX_TABLE_RANGE:
        return None
    # Integer arithmetic in the image's own dtype: int64 would wrap uint64
    # values above 2**63, and float64 rounds differently from a direct cast.
    first, last = view.dtype.type(lowest), view.dtype.type(highest)
    table_values = (first + np.arange(highest - lowest + 1, dtype=view.dtype)).astype(np.float64)

    # the range fits the dtype's unsigned twin (int16 values -20000..20000 span
    # 40000): the difference of two values of a signed dtype can wrap in it,
    # read unsigned it cannot
    unsigned = np.dtype(f"u{view.dtype.itemsize}") if view.dtype.kind == "i" else None

    def index_of(values):
        # masked-out pixels may hold any value; clip them into the table first,
        # so the subtraction cannot leave the table
        offsets = np.clip(values.reshape(-1), first, last) - first
        if unsigned is not None:
            offsets = offsets.view(unsigned)
        return offsets.astype(np.intp)

    return table_values, index_of
