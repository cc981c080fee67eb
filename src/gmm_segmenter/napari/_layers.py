"""Pure helpers between napari layers and the estimator: axes, masks, transforms.

Nothing here needs a viewer or Qt, so all of it is tested on plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._covariance import COVARIANCE_TYPES

#: How a leading axis is treated.
SPACE, SHARED_MODEL, PER_FRAME = "space", "shared", "per-frame"

#: A preview segments at most about this many pixels of its slice (a laptop
#: screen shows no more of it at once); a larger slice is strided.
PREVIEW_PIXELS = 512 * 512

#: ... and fits its mixture on a sample of at most this many pixels (Run: the
#: estimator's default, 100 000): a stroke's preview must keep up with the brush.
PREVIEW_SAMPLES = 25_000

#: ... and runs at most this many HMRF-EM iterations (Run: the estimator's
#: 20). Guided fits of a photo ran 16-18; at 8, 0.6 % of a 512 x 512
#: preview of camera changed label (none of astronaut's), and the slowest
#: stroke of benchmarks/napari_guided_timing.py took 0.3 s less.
PREVIEW_SPATIAL_ITERATIONS = 8


@dataclass(frozen=True)
class Layout:
    """Which axes of a layer's data hold channels, time and space.

    ``channel_axis`` and ``time_axis`` index the layer's data array.
    ``spatial_axes`` are the remaining data axes. ``layer_axes`` maps each
    data axis that is also a napari dimension of the layer (all but an RGB
    channel axis) to its position in the layer's ``scale``.
    """

    shape: tuple
    channel_axis: int | None
    time_axis: int | None
    rgb: bool

    @property
    def spatial_axes(self) -> tuple:
        skip = {self.channel_axis, self.time_axis}
        return tuple(axis for axis in range(len(self.shape)) if axis not in skip)

    @property
    def output_axes(self) -> tuple:
        """Data axes kept in the labels: every axis but the channel axis."""
        return tuple(axis for axis in range(len(self.shape)) if axis != self.channel_axis)

    @property
    def output_shape(self) -> tuple:
        return tuple(self.shape[axis] for axis in self.output_axes)

    @property
    def unit_axis(self) -> int | None:
        """A channel axis the output layers keep, of length 1, or None.

        napari lines up a layer of fewer dimensions with the last axes of
        the others, so labels without the channel axis overlay an image
        whose channels come first (CZYX) but not one whose channels sit
        later (ZCYX, as napari opens an ImageJ hyperstack): their Z would
        fall on its C. The outputs keep that axis at length 1 instead,
        stretched over every channel by :func:`output_transform`.
        """
        if self.rgb or self.channel_axis is None or self.channel_axis == 0:
            return None
        return self.channel_axis

    @property
    def layer_shape(self) -> tuple:
        """The shape of the output layers' data: ``output_shape`` and the unit axis."""
        shape = self.output_shape
        if self.unit_axis is None:
            return shape
        return shape[:self.unit_axis] + (1,) + shape[self.unit_axis:]

    def to_layer(self, array, leading: int = 0):
        """``array`` (output axes after ``leading`` axes of its own) as a layer's data."""
        if self.unit_axis is None:
            return array
        return np.expand_dims(array, leading + self.unit_axis)

    def from_layer(self, array):
        """A layer's data of :attr:`layer_shape` without the unit axis (a view); other
        arrays as they are."""
        if self.unit_axis is None or tuple(np.shape(array)) != self.layer_shape:
            return array
        return np.squeeze(array, axis=self.unit_axis)

    @property
    def spatial_shape(self) -> tuple:
        return tuple(self.shape[axis] for axis in self.spatial_axes)

    @property
    def n_channels(self) -> int:
        """The values per pixel: 1 for a grey layer."""
        return 1 if self.channel_axis is None else self.shape[self.channel_axis]

    @property
    def frame_channel_axis(self) -> int | None:
        """The channel axis of one frame (the data without its time axis)."""
        if self.channel_axis is None or self.time_axis is None:
            return self.channel_axis
        return self.channel_axis - (self.channel_axis > self.time_axis)

    def layer_axis(self, data_axis: int) -> int:
        """Position of ``data_axis`` among the layer's dimensions (its ``scale``)."""
        if self.rgb and data_axis == self.channel_axis:
            raise ValueError("the RGB channel axis is not a layer dimension")
        return data_axis

    def frames(self, data) -> list:
        """The data split along the time axis (one frame when there is none)."""
        if self.time_axis is None:
            return [data]
        return [np.take(data, t, axis=self.time_axis) for t in range(self.shape[self.time_axis])]


def make_layout(shape, *, rgb: bool, channel_axis: int | None, leading_axis: str) -> Layout:
    """Check the user's axis choices against the layer's data shape.

    Raises ``ValueError`` with a message for the user when they do not fit.
    """
    ndim = len(shape)
    if rgb:
        channel_axis = ndim - 1
    elif channel_axis is not None and not 0 <= channel_axis < ndim:
        raise ValueError(
            f"The channel axis {channel_axis} does not exist in a layer with "
            f"{ndim} dimensions; choose an axis between 0 and {ndim - 1}, or none."
        )
    time_axis = None if leading_axis == SPACE else 0
    if time_axis is not None and channel_axis == time_axis:
        raise ValueError(
            "The leading axis cannot be both the channel axis and time; choose "
            "another channel axis or treat the leading axis as space."
        )
    layout = Layout(tuple(shape), channel_axis, time_axis, rgb)
    n_spatial = len(layout.spatial_axes)
    if n_spatial < 1 or (time_axis is not None and n_spatial < 2):
        where = "per frame " if time_axis is not None else ""
        raise ValueError(
            f"The layer has shape {tuple(shape)}: that leaves {n_spatial} spatial "
            f"axis {where}after taking out the channel and time axes; segmenting "
            "needs at least 2 per frame (1 without time). Treat the leading axis "
            f"as space{'' if rgb else ' or choose no channel axis'}."
        )
    return layout


def spacing_from_scale(scale, layout: Layout, axes=None) -> tuple:
    """Voxel sizes of data ``axes`` (default: the spatial ones) from the layer's ``scale``."""
    scale = np.asarray(scale, dtype=float)
    axes = layout.spatial_axes if axes is None else axes
    return tuple(abs(float(scale[layout.layer_axis(axis)])) for axis in axes)


def mask_array(mask, layout: Layout) -> list | None:
    """One boolean mask per frame from a mask of the spatial or output shape.

    ``mask`` is an array (labels, or shapes rasterised by the caller) whose
    non-zero pixels are kept. It either covers the whole output (time
    included) or one frame; a frame mask is used for every frame.
    """
    if mask is None:
        return None
    frames = _per_frame(
        np.asarray(mask) != 0, layout, "The mask has",
        "draw the mask on a layer of the same shape as the image.",
    )
    if not any(frame.any() for frame in frames):
        raise ValueError(
            "The mask is empty: no pixel is inside it. Paint or draw the region "
            "to segment, or choose no mask."
        )
    return frames


def frames_of(array, layout: Layout) -> list:
    """``array``, of the layer's output shape (time included), as one array per frame."""
    return _per_frame(array, layout, "The array has", "")


def _per_frame(array, layout: Layout, subject: str, advice: str) -> list:
    """``array`` as one array per frame: it covers the whole output (time
    included) or one frame, which is then used for every frame."""
    array = layout.from_layer(array)
    frame_shape = layout.spatial_shape
    n_frames = 1 if layout.time_axis is None else layout.shape[layout.time_axis]
    if array.shape == layout.output_shape and layout.time_axis is not None:
        return [array[t] for t in range(n_frames)]
    if array.shape == frame_shape:
        return [array] * n_frames
    expected = (
        f"{frame_shape}" if layout.time_axis is None
        else f"{frame_shape} (one frame) or {layout.output_shape} (every frame)"
    )
    raise ValueError(
        f"{subject} shape {array.shape}, but the image's pixels have shape {expected}; "
        f"{advice}"
    )


def scribble_arrays(scribbles, layout: Layout) -> list | None:
    """One integer scribble image per frame (``y`` of a guided fit), or None.

    ``scribbles`` is a Labels layer's data: ``0`` unknown, ``k`` "this pixel
    is class k". Like a mask it covers the whole output (time included) or
    one frame, which is then used for every frame. None when nothing is
    painted, so an empty layer leaves the fit unguided. The values
    themselves (classes above K, negative numbers) are the estimator's to
    check.
    """
    if scribbles is None:
        return None
    frames = _per_frame(
        np.asarray(scribbles), layout, "The scribbles have",
        "paint on a Labels layer of the image's shape (New scribble layer makes one).",
    )
    if not any(frame.any() for frame in frames):
        return None
    return frames


#: The unit of an axis the outputs add (the posteriors' components): napari's
#: own for an axis without one. napari uses physical units only while the
#: layers' units agree axis by axis (counted from the last), and the
#: components' axis is in front of every axis of the image.
ADDED_AXIS_UNIT = "pixel"


def layer_units(layer) -> tuple | None:
    """The layer's units as names ("micrometer", "pixel"), or None (napari before 0.6)."""
    units = getattr(layer, "units", None)
    return None if units is None else tuple(str(unit) for unit in units)


def layer_transform(layer) -> dict:
    """The layer's own ``scale``, ``translate``, ``rotate``, ``shear``, ``affine``,
    axis names and units (napari 0.6 and later), for an output of the layer's
    dimensions."""
    names = getattr(layer, "axis_labels", None)
    units = layer_units(layer)
    return {
        "scale": np.asarray(layer.scale),
        "translate": np.asarray(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": np.asarray(layer.affine.affine_matrix),
        **({} if names is None else {"axis_labels": tuple(names)}),
        **({} if units is None else {"units": units}),
    }


def unit_axis_transform(layer, layout: Layout) -> dict:
    """The layer's transform for an output that keeps its (non-RGB) channel axis
    at length 1: that pixel as wide as all the channels and centred on them,
    so the output shows at every channel."""
    transform = layer_transform(layer)
    axis, n_channels = layout.channel_axis, layout.n_channels
    scale, translate = transform["scale"].copy(), transform["translate"].copy()
    translate[axis] += scale[axis] * (n_channels - 1) / 2
    scale[axis] *= n_channels
    return {**transform, "scale": scale, "translate": translate}


def output_transform(layer, layout: Layout) -> dict:
    """``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` for the output.

    The labels keep every layer dimension but a (non-RGB) channel axis, so
    they overlay the image exactly. A channel axis after the first stays as
    the unit axis of :attr:`Layout.unit_axis`, one pixel as wide as all
    the channels and centred on them, so the labels show at every channel.
    """
    n_dims = len(layer.scale)
    if layout.unit_axis is not None:
        return unit_axis_transform(layer, layout)
    keep = [
        layout.layer_axis(axis)
        for axis in layout.output_axes
        if not (layout.rgb and axis == layout.channel_axis)
    ]
    if len(keep) == n_dims:
        return layer_transform(layer)
    return kept_axes_transform(layer, keep)


def kept_axes_transform(layer, keep: list) -> dict:
    """The layer's transform (as :func:`layer_transform`) for an output of its
    dimensions ``keep`` (positions in the layer's ``scale``) alone."""
    n_dims = len(layer.scale)
    # the image's axis names and units (napari 0.6 and later), so the outputs'
    # sliders read alike and napari keeps showing physical sizes
    names, units = getattr(layer, "axis_labels", None), layer_units(layer)
    labels = {} if names is None else {"axis_labels": tuple(names[axis] for axis in keep)}
    if units is not None:
        labels["units"] = tuple(units[axis] for axis in keep)
    from napari.utils.transforms import Affine

    square = np.ix_(keep, keep)
    shear = Affine(shear=layer.shear, ndim=n_dims).linear_matrix
    affine = layer.affine.affine_matrix
    homogeneous = keep + [n_dims]
    return {
        "scale": np.asarray(layer.scale)[keep],
        "translate": np.asarray(layer.translate)[keep],
        "rotate": np.asarray(layer.rotate)[square],
        "shear": shear[square],
        "affine": affine[np.ix_(homogeneous, homogeneous)],
        **labels,
    }


def prepend_axis(transform: dict, name: str, unit: str = ADDED_AXIS_UNIT) -> dict:
    """``transform`` with a unit axis in front called ``name``, of ``unit``, for a
    components (or channels) axis."""
    from napari.utils.transforms import Affine

    scale = np.concatenate([[1.0], transform["scale"]])
    translate = np.concatenate([[0.0], transform["translate"]])
    n = len(scale)
    rotate = np.eye(n)
    rotate[1:, 1:] = transform["rotate"]
    affine = np.eye(n + 1)
    affine[1:, 1:] = transform["affine"]
    shear = np.eye(n)
    shear[1:, 1:] = Affine(shear=transform["shear"], ndim=n - 1).linear_matrix
    prepended = {"scale": scale, "translate": translate, "rotate": rotate, "shear": shear,
                 "affine": affine}
    if "axis_labels" in transform:
        prepended["axis_labels"] = (name,) + tuple(transform["axis_labels"])
    if "units" in transform:
        prepended["units"] = (unit,) + tuple(transform["units"])
    return prepended


def entropy(posteriors: np.ndarray) -> np.ndarray:
    """Normalised entropy of the posteriors (last axis): 0 sure, 1 undecided.

    Pixels with all-zero posteriors (masked out) get 0.
    """
    n_components = posteriors.shape[-1]
    p = np.clip(posteriors, 1e-12, 1.0, dtype=np.float32)
    h = -np.sum(posteriors * np.log(p), axis=-1, dtype=np.float32)
    if n_components > 1:
        h /= np.log(n_components)
    return np.clip(h, 0.0, 1.0).astype(np.float32, copy=False)


def component_densities(model, x: np.ndarray, weights=None) -> np.ndarray:
    """Weighted density of each component of a single-channel model at ``x``.

    ``weights`` replace the model's (the plot's shares of a guided model).
    Returns an array of shape ``(n_components_, len(x))``, in label order.
    """
    if model.n_features_in_ != 1:
        raise ValueError("component densities are drawn for single-channel models only")
    covariances = np.asarray(model.covariances_, dtype=float)
    n_components = model.n_components_
    kind = COVARIANCE_TYPES[model.covariance_type]
    variances = kind.variances(covariances, n_components).reshape(n_components)
    means = np.asarray(model.means_, dtype=float).reshape(n_components)
    x = np.asarray(x, dtype=float)[np.newaxis]
    sd = np.sqrt(variances)[:, np.newaxis]
    pdf = np.exp(-0.5 * ((x - means[:, np.newaxis]) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
    weights = model.weights_ if weights is None else weights
    return np.asarray(weights, dtype=float)[:, np.newaxis] * pdf


def plane_index(layout: Layout, position, plane_axes) -> tuple:
    """Index into the data selecting the 2-D plane through ``position``.

    ``position`` holds a data coordinate per axis (non-plane axes are
    rounded and clipped); ``plane_axes`` are the two data axes kept. The
    channel axis is always kept whole.
    """
    index = []
    for axis, size in enumerate(layout.shape):
        if axis in plane_axes or axis == layout.channel_axis:
            index.append(slice(None))
        else:
            index.append(int(np.clip(np.round(position[axis]), 0, size - 1)))
    return tuple(index)


def preview_plane_axes(layout: Layout, displayed_axes) -> tuple:
    """The two spatial data axes a preview segments, preferring the displayed ones."""
    spatial = layout.spatial_axes
    shown = [axis for axis in displayed_axes if axis in spatial]
    if len(shown) >= 2:
        return tuple(shown[-2:])
    return tuple(spatial[-2:])


def preview_stride(plane_shape, limit: int | None = None) -> int:
    """The step along each axis that leaves at most about ``limit`` pixels of a plane
    (default :data:`PREVIEW_PIXELS`)."""
    limit = PREVIEW_PIXELS if limit is None else limit
    n_pixels = int(np.prod(plane_shape))
    return max(1, int(np.ceil(np.sqrt(n_pixels / limit))))


def coarse_scribbles(scribbles: np.ndarray, stride: int) -> np.ndarray:
    """Scribbles on the grid of ``image[::stride, ::stride]``: each block's largest label.

    Striding the scribbles as well would lose thin strokes; a block keeps
    any class painted in it (the larger label where two meet).
    """
    if stride == 1:
        return scribbles
    from skimage.measure import block_reduce

    return block_reduce(scribbles, (stride,) * scribbles.ndim, np.max)


def fine_labels(labels: np.ndarray, stride: int, shape) -> np.ndarray:
    """Labels of a strided plane back on the plane's own ``shape``, in blocks."""
    if stride == 1:
        return labels
    for axis in range(labels.ndim):
        labels = np.repeat(labels, stride, axis=axis)
    return labels[tuple(slice(0, n) for n in shape)]
