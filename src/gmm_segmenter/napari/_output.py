"""Results into the viewer: each output layer is updated by name, or added once.

Runs in the main thread after a job; needs a viewer, not the widget.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels

from . import _layers

#: The labels layer of image ``name`` is called ``name + LABELS_SUFFIX``.
LABELS_SUFFIX = " GMM labels"

#: ... and its bias field ``name + BIAS_FIELD_SUFFIX``.
BIAS_FIELD_SUFFIX = " GMM bias field"

#: ... and the Labels layer painted to guide its fit ``name + SCRIBBLES_SUFFIX``.
SCRIBBLES_SUFFIX = " scribbles"

_ADD = {Image: "add_image", Labels: "add_labels"}


def put_layer(viewer, layer_type, name, data, transform, *, added=None, **properties):
    """Update the ``layer_type`` layer called ``name`` in place, or add it if there is none.

    An existing layer gets ``data`` (keeps its own when ``data`` is None),
    ``transform`` and ``properties``; a new one gets them and ``added``
    (properties only a new layer takes, such as ``visible=False``).
    """
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and data is not None and np.ndim(data) != existing.ndim:
        # napari cannot give a layer data of other dimensions (an image that
        # gained an axis since the last run): a new layer, where the old one was
        index = viewer.layers.index(existing)
        added = {**(added or {}), "visible": existing.visible}
        viewer.layers.remove(existing)
        layer = put_layer(viewer, layer_type, name, data, transform, added=added, **properties)
        viewer.layers.move(viewer.layers.index(layer), index)
        return layer
    if isinstance(existing, layer_type):
        if data is not None:
            existing.data = data
        for key, value in {**transform, **properties}.items():
            if not _same(getattr(existing, key), value):  # each change repaints
                setattr(existing, key, value)
        return existing
    add = getattr(viewer, _ADD[layer_type])
    return add(data, name=name, **transform, **properties, **(added or {}))


def _same(current, value) -> bool:
    if isinstance(value, (dict, str)) or value is None:
        return current == value
    if isinstance(value, tuple) and all(isinstance(item, str) for item in value):
        return tuple(str(item) for item in current) == value  # axis names, units
    try:
        return np.shape(current) == np.shape(value) and np.allclose(current, value)
    except (TypeError, ValueError):
        return False


def labels_layer(viewer, layer, layout, data=None, metadata=None, scribbles=None):
    """The ``<image> GMM labels`` layer, updated or added with the image's transform.

    Without ``data`` an existing layer keeps its labels if they have the
    output's shape (a preview writes one plane into them); else they start
    as zeros. A new layer takes the colours of the Labels layer
    ``scribbles``, so class k looks the same in both, and goes under it, so
    the strokes stay in sight.
    """
    name = f"{layer.name}{LABELS_SUFFIX}"
    existing = viewer.layers[name] if name in viewer.layers else None
    if data is None:
        if not (isinstance(existing, Labels) and existing.data.shape == layout.layer_shape):
            data = np.zeros(layout.layer_shape, dtype=np.uint8)
    else:
        data = layout.to_layer(data)
    properties = {} if metadata is None else {"metadata": metadata}
    guided = isinstance(scribbles, Labels) and not isinstance(existing, Labels)
    # a copy: napari keeps per-layer state (the selected label) on the colormap
    added = {"colormap": scribbles.colormap.model_copy(deep=True)} if guided else None
    labels = put_layer(viewer, Labels, name, data, _layers.output_transform(layer, layout),
                       added=added, **properties)
    if guided and scribbles in viewer.layers:
        below = viewer.layers.index(scribbles)
        if viewer.layers.index(labels) > below:
            viewer.layers.move(viewer.layers.index(labels), below)
    return labels


def scribble_layer(viewer, layer, layout):
    """A new, empty ``<image> scribbles`` Labels layer to paint classes on.

    It has the labels' shape and transform, and the colours of the image's
    ``<image> GMM labels`` layer when there is one (napari's default
    colours otherwise, which a new labels layer also gets), so label k has
    the same colour in both.
    """
    labels = viewer.layers[f"{layer.name}{LABELS_SUFFIX}"] if (
        f"{layer.name}{LABELS_SUFFIX}" in viewer.layers) else None
    colours = {}
    if isinstance(labels, Labels):
        colours = {"colormap": labels.colormap.model_copy(deep=True)}
    return viewer.add_labels(
        np.zeros(layout.layer_shape, dtype=np.uint8), name=f"{layer.name}{SCRIBBLES_SUFFIX}",
        **_layers.output_transform(layer, layout), **colours,
    )


def show_components(viewer, image_name, components, transform, *, metadata=None):
    """``<image> GMM component k`` Labels layers (hidden at first) from ``components``.

    ``components`` holds the one-component label arrays (or is None when
    that output is off). Component layers of an earlier run are removed
    when the output is off, or when that run had more components.
    """
    prefix = f"{image_name} GMM component "
    n_components = 0 if components is None else len(components)
    stale = [
        existing.name for existing in viewer.layers
        if existing.name.startswith(prefix)
        and existing.name[len(prefix):].isdigit()
        and int(existing.name[len(prefix):]) > n_components
    ]
    for name in stale:
        viewer.layers.remove(name)
    for k, component in enumerate(components or [], start=1):
        put_layer(viewer, Labels, f"{prefix}{k}", component, transform,
                  added={"visible": False}, metadata=dict(metadata or {}))


def posterior_names(image_name):
    return f"{image_name} GMM posteriors", f"{image_name} GMM uncertainty"


def show_posteriors(viewer, image_name, posteriors, uncertainty, transform, *, metadata=None,
                    posterior_transform=None):
    """``<image> GMM posteriors`` (components on a slider of their own) and ``… uncertainty``.

    ``posteriors`` has the components on its first axis, in front of
    ``posterior_transform``'s axes (default: ``transform``'s). New layers start
    hidden; existing ones keep the visibility the user gave them. With
    ``posteriors`` None (the output is off) layers of an earlier run go.
    """
    names = posterior_names(image_name)
    if posteriors is None:
        for name in names:
            if name in viewer.layers:
                viewer.layers.remove(name)
        return
    hidden = {"visible": False}
    put_layer(
        viewer, Image, names[0], posteriors,
        _layers.prepend_axis(posterior_transform or transform, "component"),
        added=hidden, contrast_limits=(0.0, 1.0), colormap="magma",
        metadata=dict(metadata or {}),
    )
    put_layer(
        viewer, Image, names[1], uncertainty, transform, added=hidden,
        contrast_limits=(0.0, 1.0), colormap="inferno", metadata=dict(metadata or {}),
    )


def show_bias_field(viewer, image_name, field, transform, *, metadata=None):
    """``<image> GMM bias field``: the multiplicative field the labels were made with.

    ``field`` has the labels' axes, with the channels (one field each) on a
    first axis of their own, or the image's own axes (``transform`` then
    being the image's); ``None`` (no correction) removes the layer of
    an earlier run. A new layer starts hidden, as the posteriors do; an
    existing one keeps the visibility the user gave it.
    """
    name = f"{image_name}{BIAS_FIELD_SUFFIX}"
    if field is None:
        if name in viewer.layers:
            viewer.layers.remove(name)
        return
    if field.ndim > len(transform["scale"]):
        transform = _layers.prepend_axis(transform, "channel")
    earlier = name in viewer.layers
    layer = put_layer(viewer, Image, name, field, transform, added={"visible": False},
                      colormap="viridis", metadata=dict(metadata or {}))
    if earlier:  # a new field in an earlier run's layer: its own range, not the last one's
        layer.reset_contrast_limits(mode="data")  # (a hidden layer has no slice yet)
