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

The function sent to the workers holds the :class:`~._model.FittedModel`
(a few kilobytes) and calls the same kernel as in-memory prediction
(:func:`._kernel.predict_image`), never the estimator or its training data.
"""

from __future__ import annotations

import math

import numpy as np

from . import _bias, _image, _kernel
from ._image import ImageView, is_dask_array, is_zarr_array

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

class ChunkedImages(_image.Images):
    """Images of which at least one is a dask array: summarised from their
    chunks and predicted lazily (NumPy images of the same batch at once)."""

    def histogram(self):
        return integer_histogram(self.views)

    def sample(self, n_samples, random_state):
        return sample_pixels(self.views, n_samples, random_state)

    def spatial_fit_views(self):
        return spatial_fit_views(self.views)

    def spatial_fit_keys(self):
        return [
            centre_crop(view.spatial_shape, SPATIAL_FIT_PIXELS)
            if is_dask_array(view.pixels) else None
            for view in self.views
        ]

    def pixels_at(self, positions):
        return [pixels_at(view, where) for view, where in zip(self.views, positions)]

    def field_fit_views(self):
        return _bias.field_fit_views(self.views)

    def corrected(self, fields, names):
        views = [
            _lazy_corrected(view, field) if is_dask_array(view.pixels)
            else _bias.corrected_view(view, field, name)
            for view, field, name in zip(self.views, fields, names)
        ]
        return ChunkedImages(views, self.batch)

    def field_maps(self, fields, log=False):
        maps = []
        for view, field in zip(self.views, fields):
            if is_dask_array(view.pixels):
                maps.append(_lazy_field(view, field, log))
            elif log:
                maps.append(_bias.log_field_sum(field, view.spatial_shape))
            else:
                maps.append(_bias.field_image(field, view.spatial_shape, view.n_channels))
        return maps

    def predict(self, model, output, guidance=None):
        adjust = [None] * len(self.views) if guidance is None else guidance.adjusters()
        outputs = []
        for i, (view, add) in enumerate(zip(self.views, adjust)):
            if not is_dask_array(view.pixels):
                outputs.append(_kernel.predict_image(view, model, output, adjust_potential=add))
                continue
            lazy = _lazy_prediction(view, model, output)
            if guidance is not None and output != "log_likelihood":
                # the scribbled pixels themselves keep their class
                lazy = _pinned(lazy, guidance.images[i], output, model.n_components)
            outputs.append(lazy)
        return self.unbatch(outputs)


def lazy_inputs(image, mask):
    """Zarr arrays as dask arrays; a dask mask computed when the image is in memory."""
    if is_zarr_array(image) or is_zarr_array(mask):
        try:
            import dask.array as da
        except ImportError:  # without dask a zarr array is read whole
            return image, mask
        if is_zarr_array(image):
            image = da.from_zarr(image)
        if is_zarr_array(mask):
            mask = da.from_zarr(mask)
    if is_dask_array(mask) and not is_dask_array(image):
        mask = mask.compute()
    return image, mask


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
    return _image.merge_histograms(tables)


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
        small = _image.SMALL_INTEGER_KINDS.get(view.dtype)
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
    return _image.dense_table(counts, small, dtype) if values is None else (values, counts)


def _block_view(block, mask_block) -> ImageView:
    """One block (channels last) and its mask block (a trailing axis of one) as a view."""
    return ImageView(pixels=block, mask=None if mask_block is None else mask_block[..., 0])


def _block_valid(block, mask_block):
    view = _block_view(block, mask_block)
    return view, _image.chunk_valid(view, Ellipsis, block.reshape(-1, block.shape[-1]))


def _valid_count(block, mask_block):
    view, valid = _block_valid(block, mask_block)
    return view.n_pixels if valid is None else int(np.count_nonzero(valid))


def _block_draw(block, mask_block, positions):
    _, valid = _block_valid(block, mask_block)
    if valid is not None:
        positions = np.flatnonzero(valid)[positions]
    return block.reshape(-1, block.shape[-1])[positions].astype(np.float64)


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
    draws = [
        dask.delayed(_block_draw, pure=True)(block, mask_block, positions)
        for (block, mask_block, _, _), positions in zip(
            blocks, _image.draw_ranks(counts, n_samples, random_state)
        )
        if len(positions)
    ]
    values = np.concatenate(dask.compute(*draws)) if draws else np.empty((0, n_channels))
    return values, n_valid


def pixels_at(view, positions):
    """:func:`_image.pixels_at` for a dask image: only the chunks holding the positions are read."""
    if not is_dask_array(view.pixels):
        return _image.pixels_at(view, positions)
    coordinates = np.unravel_index(positions, view.spatial_shape)
    if not len(positions):
        return np.empty((0, view.n_channels)), np.empty(0, dtype=bool)
    values = np.asarray(view.pixels.vindex[coordinates].compute(), dtype=np.float64)
    valid = np.isfinite(values).all(axis=1)
    if view.mask is not None:
        mask = view.mask
        at = mask.vindex[coordinates].compute() if is_dask_array(mask) else mask[coordinates]
        valid &= np.asarray(at)
    return values, valid


def _pinned(lazy, guide, output, n_components):
    """A lazy output with each valid scribbled pixel set to its class."""
    if not len(guide.positions):
        return lazy
    return lazy.map_blocks(
        PinBlock(guide, output == "labels"), dtype=lazy.dtype, token="gmm-pinned",
        meta=np.empty((0,) * lazy.ndim, dtype=lazy.dtype),
    )


class PinBlock:
    """Sets the scribbled pixels of one output block to their class (picklable;
    holds the scribbles' coordinates only, not an image)."""

    def __init__(self, guide, labels):
        self.coordinates = np.stack(np.unravel_index(guide.positions, guide.spatial_shape))
        self.classes = guide.classes
        self.labels = labels

    def __call__(self, block, block_info=None):
        location = block_info[0]["array-location"][: len(self.coordinates)]
        inside = np.ones(len(self.classes), dtype=bool)
        for axis_coordinates, (start, stop) in zip(self.coordinates, location):
            inside &= (axis_coordinates >= start) & (axis_coordinates < stop)
        if not inside.any():
            return block
        local = tuple(c[inside] - start for c, (start, _) in zip(self.coordinates, location))
        classes = self.classes[inside]
        block = block.copy()
        if self.labels:
            used = block[local] > 0  # masked-out pixels stay 0
            block[tuple(c[used] for c in local)] = classes[used] + 1
        else:
            used = block[local].sum(axis=-1) > 0
            where = tuple(c[used] for c in local)
            block[where] = 0.0
            block[where + (classes[used],)] = 1.0
        return block


def spatial_fit_views(views):
    """In-memory views for HMRF-EM: dask images cropped to their centre."""
    out = []
    for view in views:
        if not is_dask_array(view.pixels):
            out.append(view)
            continue
        key = centre_crop(view.spatial_shape, SPATIAL_FIT_PIXELS)
        mask = None if view.mask is None else view.mask[key]
        out.append(_image.computed(ImageView(pixels=view.pixels[key], mask=mask)))
    return out


class FieldBlock:
    """One block of an image divided by its bias field, or of the field itself (picklable)."""

    def __init__(self, field, dtype, what="corrected"):
        self.field = field
        self.dtype = dtype
        self.what = what

    def __call__(self, block=None, block_info=None):
        info = block_info[None]
        location = info["array-location"]
        n_spatial = len(self.field.geometry.shape)
        indices = [np.arange(start, stop) for start, stop in location[:n_spatial]]
        if self.what == "log":
            log_field = self.field.log_on_box(indices)
            np.clip(log_field, -_bias.LOG_LIMIT, _bias.LOG_LIMIT, out=log_field)
            return log_field.sum(axis=-1)
        gain = self.field.on_box(indices, self.dtype)
        if self.what == "field":
            return gain
        return np.divide(block, gain, dtype=self.dtype)


def _lazy_corrected(view, field):
    """A dask image divided by its field, block by block (lazily)."""
    if field is None:
        return view
    da = _dask_array()
    pixels = _pixels(view)
    dtype = np.result_type(pixels.dtype, np.float32)
    corrected = da.map_blocks(
        FieldBlock(field, dtype), pixels, dtype=dtype, token="gmm-bias-corrected",
        meta=np.empty((0,) * pixels.ndim, dtype=dtype),
    )
    return ImageView(pixels=corrected, mask=view.mask)


def _lazy_field(view, field, log):
    """An image's field (or its log-Jacobian) as a dask array with the image's spatial chunks."""
    da = _dask_array()
    pixels = _pixels(view)
    spatial_chunks = pixels.chunks[:-1]
    if field is None:
        if log:
            return da.zeros(view.spatial_shape, chunks=spatial_chunks, dtype=np.float64)
        return da.ones(pixels.shape, chunks=pixels.chunks, dtype=np.float32)
    if log:
        return da.map_blocks(
            FieldBlock(field, np.float64, "log"), chunks=spatial_chunks, dtype=np.float64,
            token="gmm-bias-log", meta=np.empty((0,) * len(spatial_chunks)),
        )
    return da.map_blocks(
        FieldBlock(field, np.float32, "field"), chunks=pixels.chunks, dtype=np.float32,
        token="gmm-bias-field", meta=np.empty((0,) * pixels.ndim, dtype=np.float32),
    )


def centre_crop(shape, max_pixels):
    """Slices of a centred box of at most ``max_pixels``, halving the longest axis."""
    size = list(shape)
    while math.prod(size) > max_pixels:
        axis = int(np.argmax(size))
        size[axis] = (size[axis] + 1) // 2
    return tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(shape, size))


# --------------------------------------------------------------------------
# prediction


class BlockKernel:
    """:func:`._kernel.predict_image` on one channel-last block (picklable).

    With a halo (``depth`` pixels per spatial axis, from ``map_overlap``)
    the block's result is trimmed back to the block.
    """

    def __init__(self, model, output, depth=()):
        self.model = model
        self.output = output
        self.depth = depth

    def __call__(self, block, mask_block=None, block_info=None):
        out = _kernel.predict_image(_block_view(block, mask_block), self.model, self.output)
        if not self.depth:
            return out
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


def _lazy_prediction(view, model, output):
    """The lazy output of one dask image: per block, or per block with a halo."""
    da = _dask_array()
    pixels = _pixels(view)
    spatial = pixels.ndim - 1
    tail, dtype = _kernel.output_layout(model, output)
    spatial_chunks = pixels.chunks[:-1]
    smoothed = output != "log_likelihood" and model.beta != 0
    if smoothed:
        pixels = pixels.rechunk(_thick_chunks(spatial_chunks) + (-1,))
    mask = _mask(view, pixels)
    chunks = pixels.chunks[:-1] + tuple((n,) for n in tail)
    arrays = [pixels] if mask is None else [pixels, mask]
    kwargs = {"chunks": chunks, "dtype": dtype, "meta": np.empty((0,) * (spatial + len(tail)), dtype=dtype)}
    if not tail:
        kwargs["drop_axis"] = spatial
    if output == "log_likelihood" or model.beta == 0:
        if len(tail) > 1:  # pragma: no cover - every output has at most one extra axis
            kwargs["new_axis"] = list(range(spatial + 1, spatial + len(tail)))
        # a token, not a name: a name is the output's whole key, so two
        # predictions in one graph (frames stacked in time) would be one
        token = "gmm-labels" if not tail else "gmm-map"
        return da.map_blocks(BlockKernel(model, output), *arrays, token=token, **kwargs)
    # the halo cannot exceed a neighbouring chunk
    depth = tuple(min(HALO, min(chunks)) for chunks in pixels.chunks[:-1])
    depths = [dict(enumerate(depth)) | {spatial: 0}] * len(arrays)
    result = da.map_overlap(
        BlockKernel(model, output, depth), *arrays, depth=depths, boundary="none",
        trim=False, align_arrays=False, token="gmm-spatial", **kwargs,
    )
    if pixels.chunks[:-1] != spatial_chunks:  # back to the input's chunks
        result = result.rechunk(spatial_chunks + tuple((n,) for n in tail))
    return result


#: Smallest chunk (pixels along an axis) the spatial prior predicts on: a
#: chunk thinner than :data:`HALO` would cut its neighbours' halo short
#: (1-pixel chunks of a 4096² image: 1.4e-3 of the labels differed from the
#: in-memory result, against none with 1024² chunks), and a thin chunk's
#: halo is most of its work (17 rows computed for each row of the image).
MIN_SPATIAL_CHUNK = 4 * HALO

#: ... as long as a merged block holds at most this many pixels (or as many
#: as the input's largest block): slices of 4096² merged 32 at a time would
#: be blocks of 512 million pixels, gigabytes of posterior maps each.
MAX_MERGED_PIXELS = 1 << 22


def _thick_chunks(chunks):
    """``chunks`` (per spatial axis) with runs of thin chunks merged, so that
    each is at least :data:`MIN_SPATIAL_CHUNK` where the axis and
    :data:`MAX_MERGED_PIXELS` allow; the seams kept fall on the input's, so
    each block reads whole chunks of it."""
    budget = max(MAX_MERGED_PIXELS, math.prod(max(sizes) for sizes in chunks))
    merged = [tuple(sizes) for sizes in chunks]
    for axis, sizes in enumerate(merged):
        others = math.prod(max(other) for i, other in enumerate(merged) if i != axis)
        wanted = min(MIN_SPATIAL_CHUNK, budget // max(others, 1))
        if min(sizes) >= wanted or len(sizes) == 1:
            continue
        groups = [0]
        for size in sizes:
            if groups[-1] >= wanted:
                groups.append(0)
            groups[-1] += size
        if len(groups) > 1 and groups[-1] < wanted:
            last = groups.pop()
            groups[-1] += last
        merged[axis] = tuple(groups)
    return tuple(merged)


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
