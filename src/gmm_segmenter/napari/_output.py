"""Results into the viewer: each output layer is updated by name, or added once.

Runs in the main thread after a job; needs a viewer, not the widget.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels

from .._image import is_dask_array
from . import _layers

#: The labels layer of image ``name`` is called ``name + LABELS_SUFFIX``.
LABELS_SUFFIX = " GMM labels"

_ADD = {Image: "add_image", Labels: "add_labels"}


def put_layer(viewer, layer_type, name, data, transform, *, added=None, **properties):
    """Update the ``layer_type`` layer called ``name`` in place, or add it if there is none.

    An existing layer gets ``data`` (keeps its own when ``data`` is None),
    ``transform`` and ``properties``; a new one gets them and ``added``
    (properties only a new layer takes, such as ``visible=False``).
    """
    existing = viewer.layers[name] if name in viewer.layers else None
    if isinstance(existing, layer_type):
        if data is not None:
            existing.data = data
        for key, value in {**transform, **properties}.items():
            setattr(existing, key, value)
        return existing
    add = getattr(viewer, _ADD[layer_type])
    return add(data, name=name, **transform, **properties, **(added or {}))


def labels_layer(viewer, layer, layout, data=None):
    """The ``<image> GMM labels`` layer, updated or added with the image's transform.

    Without ``data`` an existing layer keeps its labels if they have the
    output's shape (a preview writes one plane into them); else they start
    as zeros.
    """
    name = f"{layer.name}{LABELS_SUFFIX}"
    if data is None:
        existing = viewer.layers[name] if name in viewer.layers else None
        if not (isinstance(existing, Labels) and existing.data.shape == layout.output_shape):
            data = np.zeros(layout.output_shape, dtype=np.uint8)
    return put_layer(viewer, Labels, name, data, _layers.output_transform(layer, layout))


def show_components(viewer, image_name, labels, transform, n_components, *, one_per_component):
    """``<image> GMM component k`` Labels layers (hidden at first), if ``one_per_component``.

    Component layers of an earlier run are removed when they are off, or
    when that run had more components.
    """
    prefix = f"{image_name} GMM component "
    stale = [
        existing.name for existing in viewer.layers
        if existing.name.startswith(prefix)
        and existing.name[len(prefix):].isdigit()
        and (not one_per_component or int(existing.name[len(prefix):]) > n_components)
    ]
    for name in stale:
        viewer.layers.remove(name)
    if not one_per_component:
        return
    for k in range(1, n_components + 1):
        component = np.where(labels == k, labels, 0).astype(labels.dtype)
        put_layer(viewer, Labels, f"{prefix}{k}", component, transform, added={"visible": False})


def show_posteriors(viewer, image_name, posteriors, transform):
    """``<image> GMM posteriors`` (components on a slider of their own) and ``… uncertainty``.

    ``posteriors`` has the components on its last axis; both layers are hidden.
    """
    if is_dask_array(posteriors):
        uncertainty = posteriors.map_blocks(
            _layers.entropy, drop_axis=posteriors.ndim - 1, dtype=np.float32
        )
    else:
        uncertainty = _layers.entropy(posteriors)
    # the component axis comes first in the layer, a slider of its own
    maps = np.moveaxis(posteriors, -1, 0)
    put_layer(
        viewer, Image, f"{image_name} GMM posteriors", maps, _layers.prepend_axis(transform),
        contrast_limits=(0.0, 1.0), colormap="magma", visible=False,
    )
    put_layer(
        viewer, Image, f"{image_name} GMM uncertainty", uncertainty, transform,
        contrast_limits=(0.0, 1.0), colormap="inferno", visible=False,
    )
