"""Dask and zarr arrays: fit from the chunks, predict lazily block by block.

Nothing here imports dask unless a dask (or zarr) array is actually passed,
so dask stays an optional dependency.

- ``fit`` summarises the training data without loading the array: the exact
  histogram of integer single-channel data (a bincount or ``np.unique`` per
  block, summed in a tree), or a seeded uniform sample of the valid pixels
  (valid pixels counted per block, then drawn per block, in one compute).
  The spatial prior's HMRF-EM runs on an in-memory crop of at most
  :data:`SPATIAL_FIT_PIXELS` pixels from the centre of the volume.
- ``predict``/``predict_proba``/``transform``/``score_samples`` return lazy
  dask arrays with the input's spatial chunks. Pixel-wise maps
  (``beta_ == 0``) are computed per block with ``map_blocks`` and equal the
  in-memory result exactly. With the spatial prior, blocks are extended by a
  halo of :data:`HALO` pixels (``dask.array.map_overlap``), smoothed, and
  trimmed; labels differ from the in-memory result only at a few pixels near
  block seams (see ``docs/scale.md`` for the measured tolerance).

The function sent to the workers holds a copy of the estimator stripped to
its fitted parameters (a few kilobytes), never the training data.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from . import _image
from ._image import is_dask_array

#: Pixels of the crop on which HMRF-EM (the spatial prior's fit) runs.
SPATIAL_FIT_PIXELS = 1 << 22

#: Halo (pixels per side) around each block for the spatial prior. Mean
#: field couples a pixel to pixels farther away with every sweep, but the
#: coupling decays fast: the labels that still differ from the in-memory
#: result (at most 6e-4 of them in our phantoms) come from the sweeps
#: stopping at a different point in a block than in the whole image, and a
#: wider halo (16) did not reduce them; it only costs (1 + 2 * 8 / 128)**3
#: = 1.4x the work on 128**3 chunks.
HALO = 8

# Fitted attributes a prediction needs; nothing else is shipped to workers.
_PREDICTION_ATTRIBUTES = (
    "n_components_",
    "weights_",
    "means_",
    "covariances_",
    "precisions_cholesky_",
    "precisions_",
    "intensity_offset_",
    "intensity_scale_",
    "beta_",
    "n_features_in_",
)


def _is_zarr_array(x) -> bool:
    return type(x).__module__.startswith("zarr") and hasattr(x, "chunks") and hasattr(x, "shape")


def lazy_inputs(image, mask):
    """Zarr arrays as dask arrays; a dask mask computed when the image is in memory."""
    if _is_zarr_array(image) or _is_zarr_array(mask):
        try:
            import dask.array as da
        except ImportError:  # without dask a zarr array is read whole
            return image, mask
        if _is_zarr_array(image):
            image = da.from_zarr(image)
        if _is_zarr_array(mask):
            mask = da.from_zarr(mask)
    if is_dask_array(mask) and not is_dask_array(image):
        mask = mask.compute()
    return image, mask


def has_dask(views) -> bool:
    return any(is_dask_array(view.pixels) for view in views)


def _dask_array():
    import dask.array as da

    return da


def _pixels(view):
    """The view's pixels as a dask array with the channels in one chunk."""
    da = _dask_array()
    pixels = view.pixels
    if not is_dask_array(pixels):
        pixels = da.from_array(pixels, chunks=pixels.shape)
    return pixels.rechunk({pixels.ndim - 1: -1})


def _mask(view, pixels):
    """The view's mask chunked like ``pixels``, with a channel axis of one, or None.

    The channel axis lines the mask's blocks up with the pixels' blocks in
    ``map_blocks`` (which aligns arrays from their last axis).
    """
    if view.mask is None:
        return None
    da = _dask_array()
    spatial_chunks = pixels.chunks[:-1]
    mask = view.mask
    if is_dask_array(mask):
        mask = mask.rechunk(spatial_chunks)
    else:
        mask = da.from_array(mask, chunks=spatial_chunks)
    return mask[..., np.newaxis]


# --------------------------------------------------------------------------
# training data


def _tree_reduce(parts, merge, split_every=8):
    """Combine delayed ``parts`` pairwise-ish in a tree (bounded memory per task)."""
    import dask

    merge = dask.delayed(merge, pure=True)
    while len(parts) > 1:
        parts = [merge(*parts[i : i + split_every]) for i in range(0, len(parts), split_every)]
    return parts[0]


def _block_table(block, mask_block, small):
    """Distinct values and counts of the valid pixels of one block."""
    values = block.reshape(-1)
    if mask_block is not None:
        values = values[mask_block.reshape(-1)]
    if small is not None:
        counts = np.bincount(values.view(small), minlength=1 << (8 * small.itemsize))
        return None, counts.astype(np.int64)
    distinct, counts = np.unique(values, return_counts=True)
    # the image's own dtype: int64 would wrap uint64 values above 2**63
    return distinct, counts.astype(np.int64)


def _merge_tables(*tables):
    if tables[0][0] is None:  # dense bincounts
        return None, sum(counts for _, counts in tables)
    values = np.concatenate([v for v, _ in tables])
    counts = np.concatenate([c for _, c in tables])
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, np.bincount(inverse.reshape(-1), weights=counts).astype(np.int64)


def _view_blocks(view):
    """Delayed ``(pixels_block, mask_block_or_None)`` per block, in chunk-grid C order."""
    pixels = _pixels(view)
    mask = _mask(view, pixels)
    pixel_blocks = pixels.to_delayed().reshape(-1)
    mask_blocks = [None] * len(pixel_blocks) if mask is None else mask.to_delayed().reshape(-1)
    sizes = [math.prod(shape) for shape in _block_shapes(pixels.chunks[:-1])]
    return list(pixel_blocks), list(mask_blocks), sizes


def _block_shapes(chunks):
    return [
        tuple(chunks[axis][i] for axis, i in enumerate(index))
        for index in np.ndindex(*(len(c) for c in chunks))
    ]


def integer_histogram(views):
    """:func:`_image.integer_histogram` over dask (and NumPy) images, per block."""
    import dask

    tables = []
    for view in views:
        if not is_dask_array(view.pixels):
            tables.append(dask.delayed(_image.integer_histogram)([view]))
            continue
        small = _image._SMALL_INTEGER_KINDS.get(view.dtype)
        pixel_blocks, mask_blocks, _ = _view_blocks(view)
        parts = [
            dask.delayed(_block_table, pure=True)(block, mask_block, small)
            for block, mask_block in zip(pixel_blocks, mask_blocks)
        ]
        merged = _tree_reduce(parts, _merge_tables)
        tables.append(dask.delayed(_table_values, pure=True)(merged, small, view.dtype))
    return _image.merge_histograms(dask.compute(*tables))


def _table_values(table, small, dtype):
    values, counts = table
    if values is None:
        present = np.flatnonzero(counts)
        return present.astype(small).view(dtype).astype(np.int64), counts[present]
    return values, counts


def _valid_count(block, mask_block):
    values = block.reshape(-1, block.shape[-1])
    valid = _block_valid(values, mask_block)
    return len(values) if valid is None else int(np.count_nonzero(valid))


def _block_valid(values, mask_block):
    valid = None if mask_block is None else mask_block.reshape(-1)
    if values.dtype.kind not in "biu":
        finite = np.isfinite(values).all(axis=1)
        valid = finite if valid is None else valid & finite
    return valid


def _block_draw(block, mask_block, positions):
    values = block.reshape(-1, block.shape[-1])
    valid = _block_valid(values, mask_block)
    if valid is not None:
        positions = np.flatnonzero(valid)[positions]
    return values[positions].astype(np.float64)


def sample_pixels(views, n_samples, random_state):
    """:func:`_image.sample_pixels` over dask images: counts per block, then draws.

    The sample is uniform over the valid pixels and seeded, but ranks run
    block by block, so it is a different sample from the in-memory one.
    """
    import dask

    blocks = []  # (pixels_block, mask_block, size)
    for view in views:
        pixel_blocks, mask_blocks, sizes = _view_blocks(view)
        blocks.extend(zip(pixel_blocks, mask_blocks, sizes, [view.may_be_invalid] * len(sizes)))
    lazy_counts = [
        dask.delayed(_valid_count, pure=True)(block, mask_block) if may_be_invalid else size
        for block, mask_block, size, may_be_invalid in blocks
    ]
    counts = np.array(dask.compute(*lazy_counts), dtype=np.int64)
    n_channels = views[0].n_channels
    n_valid = int(counts.sum())
    if n_valid == 0:
        return np.empty((0, n_channels)), 0
    m = min(n_samples, n_valid)
    ranks = np.sort(random_state.choice(n_valid, size=m, replace=False))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    draws = []
    for i, (block, mask_block, _, _) in enumerate(blocks):
        lo, hi = np.searchsorted(ranks, offsets[i : i + 2])
        if hi > lo:
            positions = ranks[lo:hi] - offsets[i]
            draws.append(dask.delayed(_block_draw, pure=True)(block, mask_block, positions))
    values = np.concatenate(dask.compute(*draws)) if draws else np.empty((0, n_channels))
    return values, n_valid


def spatial_fit_views(views):
    """In-memory views for HMRF-EM: dask images cropped to their centre."""
    out = []
    for view in views:
        if not is_dask_array(view.pixels):
            out.append(view)
            continue
        key = centre_crop(view.spatial_shape, SPATIAL_FIT_PIXELS)
        pixels = np.asarray(view.pixels[key].compute())
        mask = view.mask
        if mask is not None:
            mask = mask[key]
            mask = np.asarray(mask.compute() if is_dask_array(mask) else mask)
        out.append(_image.ImageView(pixels=pixels, mask=mask))
    return out


def centre_crop(shape, max_pixels):
    """Slices of a centred box of at most ``max_pixels``, halving the longest axis."""
    size = list(shape)
    while math.prod(size) > max_pixels:
        axis = int(np.argmax(size))
        size[axis] = (size[axis] + 1) // 2
    return tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(shape, size))


# --------------------------------------------------------------------------
# prediction


def prediction_copy(estimator):
    """A copy of ``estimator`` holding only what prediction needs, channels last."""
    params = estimator.get_params(deep=False)
    params["channel_axis"] = -1
    params["random_state"] = None
    copy = type(estimator)(**params)
    for name in _PREDICTION_ATTRIBUTES:
        setattr(copy, name, getattr(estimator, name))
    return copy


class PixelMap:
    """Apply a pixel-wise function to one channel-last block (picklable)."""

    def __init__(self, estimator, function, tail, dtype, fill, compute_dtype):
        self.estimator = prediction_copy(estimator)
        self.function = function
        self.tail = tail
        self.dtype = dtype
        self.fill = fill
        self.compute_dtype = compute_dtype

    def __call__(self, block, mask_block=None):
        if mask_block is not None and mask_block.ndim == block.ndim:
            mask_block = mask_block[..., 0]
        view = _image.ImageView(pixels=block, mask=mask_block)
        return self.estimator._map_image(
            view, self.function, self.tail, self.dtype, self.fill, self.compute_dtype
        )


def map_pixels(estimator, views, function, tail, dtype, fill, compute_dtype):
    """Lazy pixel-wise maps of dask images (NumPy images are mapped at once)."""
    mapper = PixelMap(estimator, function, tail, dtype, fill, compute_dtype)
    outputs = []
    for view in views:
        if not is_dask_array(view.pixels):
            outputs.append(mapper(view.pixels, view.mask))
            continue
        da = _dask_array()
        pixels = _pixels(view)
        mask = _mask(view, pixels)
        spatial = pixels.ndim - 1
        chunks = pixels.chunks[:-1] + tuple((n,) for n in tail)
        arrays = [pixels] if mask is None else [pixels, mask]
        outputs.append(_map_blocks(mapper, arrays, chunks, spatial, tail, dtype))
    return outputs


def _map_blocks(mapper, arrays, chunks, spatial, tail, dtype):
    da = _dask_array()
    pixels = arrays[0]
    kwargs = {}
    if not tail:
        kwargs["drop_axis"] = spatial
    elif len(tail) > 1:
        kwargs["new_axis"] = list(range(spatial + 1, spatial + len(tail)))
    return da.map_blocks(
        mapper,
        pixels,
        *arrays[1:],
        chunks=chunks,
        dtype=dtype,
        meta=np.empty((0,) * (spatial + len(tail)), dtype=dtype),
        name=f"gmm-{'labels' if not tail else 'map'}",
        **kwargs,
    )


class SpatialMap:
    """Spatial posteriors of one block extended by a halo, trimmed (picklable)."""

    def __init__(self, estimator, mixture, finish, depth):
        self.estimator = prediction_copy(estimator)
        self.mixture = mixture
        self.finish = finish
        self.depth = depth

    def run(self, block, mask_block=None):
        return self.estimator._map_spatial(block, mask_block, self.mixture, self.finish)

    def __call__(self, block, mask_block=None, block_info=None):
        out = self.run(block, None if mask_block is None else mask_block[..., 0])
        info = block_info[None]
        key = []
        for axis, (location, n_chunks) in enumerate(
            zip(info["chunk-location"], info["num-chunks"])
        ):
            if axis >= len(self.depth):
                key.append(slice(None))
                continue
            left = self.depth[axis] if location > 0 else 0
            right = self.depth[axis] if location < n_chunks - 1 else 0
            key.append(slice(left, out.shape[axis] - right))
        return out[tuple(key)]


def map_spatial(estimator, views, mixture, finish):
    """Lazy spatial maps of dask images via ``map_overlap`` with a halo."""
    da = _dask_array()
    outputs = []
    for view in views:
        if not is_dask_array(view.pixels):
            mapper = SpatialMap(estimator, mixture, finish, ())
            outputs.append(mapper.run(view.pixels, view.mask))
            continue
        pixels = _pixels(view)
        mask = _mask(view, pixels)
        spatial = pixels.ndim - 1
        # the halo cannot exceed a neighbouring chunk
        depth = tuple(min(HALO, min(chunks)) for chunks in pixels.chunks[:-1])
        mapper = SpatialMap(estimator, mixture, finish, depth)
        probe = mapper.run(
            np.broadcast_to(estimator.means_[0], (1,) * spatial + (view.n_channels,)).astype(
                view.dtype
            )
        )
        tail = probe.shape[spatial:]
        chunks = pixels.chunks[:-1] + tuple((n,) for n in tail)
        kwargs = {"drop_axis": spatial} if not tail else {}
        arrays = [pixels] if mask is None else [pixels, mask]
        depths = [dict(enumerate(depth)) | {spatial: 0}]
        if mask is not None:
            depths.append(depths[0])
        outputs.append(
            da.map_overlap(
                mapper,
                *arrays,
                depth=depths,
                boundary="none",
                trim=False,
                align_arrays=False,
                chunks=chunks,
                dtype=probe.dtype,
                meta=np.empty((0,) * probe.ndim, dtype=probe.dtype),
                name="gmm-spatial",
                **kwargs,
            )
        )
    return outputs


def bincount(labels, minlength):
    """Counts of each label of a dask label array, per block, summed in a tree.

    (``da.bincount(labels.ravel())`` would rechunk the volume to one axis.)
    """
    import dask

    parts = [
        dask.delayed(_block_bincount, pure=True)(block, minlength)
        for block in labels.to_delayed().reshape(-1)
    ]
    return _tree_reduce(parts, _add).compute()


def _block_bincount(block, minlength):
    return np.bincount(block.reshape(-1), minlength=minlength)


def _add(*arrays):
    return sum(arrays[1:], arrays[0])
