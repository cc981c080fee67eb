"""How a result was made: the record stored in output layers and model files.

A record is a JSON-safe dict: the package version, the settings, the fitted
model's summary, and the Python code that reproduces the labels from the
layer's data with the public API. Nothing here needs a viewer or Qt.
"""

from __future__ import annotations

import datetime
import json

import numpy as np

from .._model import json_params
from .._version import __version__

#: Key of the record in a layer's ``metadata`` (and marks the plugin's outputs).
METADATA_KEY = "gmm_segmenter"


def model_summary(model) -> dict:
    """The fitted model in a few numbers: components, weights, means, convergence, beta."""
    summary = {
        "n_components": int(model.n_components_),
        "n_channels": int(model.n_features_in_),
        "covariance_type": model.covariance_type,
        "weights": np.round(np.asarray(model.weights_, dtype=float), 6).tolist(),
        "means": np.round(np.asarray(model.means_, dtype=float), 6).tolist(),
    }
    for name in ("converged_", "n_iter_", "spatial_converged_", "spatial_n_iter_", "beta_"):
        value = getattr(model, name, None)
        if isinstance(value, (bool, np.bool_)):
            summary[name.rstrip("_")] = bool(value)
        elif value is not None:
            summary[name.rstrip("_")] = float(value) if name == "beta_" else int(value)
    if getattr(model, "bic_curve_", None) is not None:
        summary["bic"] = {
            "n_components": [int(n) for n in model.n_components_candidates_],
            "bic": [float(b) for b in model.bic_curve_],
        }
    return summary


def _literal(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        return repr(tuple(_plain(v) for v in value))
    return repr(value)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _constructor(params: dict, indent: str = "") -> str:
    lines = [f"{indent}    {name}={_literal(value)}," for name, value in params.items()]
    return f"GMMSegmenter(\n" + "\n".join(lines) + f"\n{indent})"


def _index_literal(index) -> str:
    def part(i):
        if not isinstance(i, slice):
            return str(int(i))
        return ":" if i.step is None else f"::{i.step}"

    return "[" + ", ".join(part(i) for i in index) + "]"


def mask_code(mask: dict | None) -> list:
    """Lines that define ``mask`` (a boolean array) from the mask layer, or none."""
    if mask is None:
        return []
    layer = f"viewer.layers[{mask['layer']!r}]"
    select = "" if mask.get("index") is None else _index_literal(mask["index"])
    if mask["kind"] == "shapes":
        shape = tuple(mask["shape"])
        if mask.get("to_image") is None:
            return [f"mask = ({layer}.to_labels(labels_shape={shape!r}) != 0){select}"]
        # the shapes' own scale and translate differ from the image's: their
        # vertices in the image's pixels
        factor, offset = mask["to_image"]
        return [
            "from napari.layers import Shapes",
            f"shapes = {layer}",
            f"in_pixels = Shapes([np.asarray(v) * {factor!r} + {offset!r} for v in shapes.data],",
            "                   shape_type=shapes.shape_type, ndim=shapes.ndim)",
            f"mask = (in_pixels.to_labels(labels_shape={shape!r}) != 0){select}",
        ]
    return [f"mask = (np.asarray({layer}.data){_squeezed(mask)} != 0){select}"]


def _squeezed(description: dict) -> str:
    """``.squeeze(axis)`` for a Labels layer with the unit channel axis of the
    outputs (see ``_layers.Layout.unit_axis``), else nothing."""
    axis = description.get("unit_axis")
    return "" if axis is None else f".squeeze(axis={int(axis)})"


def scribble_code(scribbles: dict | None) -> list:
    """Lines that define ``scribbles`` (the ``y`` of a guided fit) from their layer, or none."""
    if scribbles is None:
        return []
    select = "" if scribbles.get("index") is None else _index_literal(scribbles["index"])
    return [f"scribbles = np.asarray(viewer.layers[{scribbles['layer']!r}].data)"
            f"{_squeezed(scribbles)}{select}"]


def python_code(*, image: str, params: dict, leading_axis: str, mask: dict | None = None,
                preview_index=None, source: str | None = None,
                scribbles: dict | None = None, preview_grid: dict | None = None,
                alpha: bool = False, lazy: bool = False, unit_axis: int | None = None,
                file: dict | None = None) -> str:
    """Python that recomputes the labels in napari's console (``viewer`` is defined there).

    ``leading_axis`` is ``"space"``, ``"shared"`` (one model for every
    frame) or ``"per-frame"``; ``mask`` describes the mask layer
    (``layer``, ``kind``, ``shape``, ``per_frame`` when it covers every
    frame); ``scribbles`` the Labels layer that guides the fit, described
    the same way (``layer``, ``per_frame``, ``index``); ``preview_index``
    the slice a preview segmented, and ``preview_grid`` the coarser grid of
    a large one (``stride``, the ``image`` index that strides the slice, the
    slice's ``shape``). ``source``, for
    a model applied to another layer, is the code that made the model (it
    defines ``segmenter``); ``params`` then holds what applying sets.
    ``alpha``: the layer is RGBA, segmented by its colours with its
    transparent pixels masked out. ``lazy``: the layer's data is a dask
    array, which the widget fits and labels without loading it (the code
    does too). ``unit_axis``: the labels layer keeps the image's channel
    axis there, at length 1 (``_layers.Layout.unit_axis``); so do the
    code's labels. ``file``: the file napari read the layer from (``path``,
    ``zarr`` for a zarr store, ``reader`` the plugin that read it), which
    commented lines read outside napari instead.
    """
    code = _python_code(
        image=image, params=params, leading_axis=leading_axis, mask=mask,
        preview_index=preview_index, source=source, scribbles=scribbles,
        preview_grid=preview_grid, alpha=alpha, lazy=lazy, file=file,
    )
    if unit_axis is None or preview_index is not None:
        return code
    return code + (f"labels = np.expand_dims(labels, {int(unit_axis)})  # the channel axis, "
                   "at length 1, as napari's layer has it\n")


def _python_code(*, image, params, leading_axis, mask, preview_index, source, scribbles,
                 preview_grid, alpha, lazy, file=None) -> str:
    lines = ["import numpy as np", "from gmm_segmenter import GMMSegmenter", ""]
    if preview_index is not None:
        lines.insert(0, "# a preview: the displayed slice only, with a preview's quicker "
                        "settings; Run gives the code of a full-resolution result")
    if source is not None:
        lines = [source.rstrip(), "", f"# the same model applied to {image!r}"]
    select = "" if preview_index is None else _index_literal(preview_index)
    data = f"viewer.layers[{image!r}].data"
    read = f"{data}{select}" if lazy else f"np.asarray({data}){select}"
    if lazy:
        lines.append("# a dask or zarr array: fitted and labelled without loading it whole")
    if alpha:
        lines.append(f"rgba = {read}")
        lines += file_code(file, "rgba", select)
        lines.append("image = rgba[..., :3]  # the colours; alpha 0 is masked out")
    else:
        lines.append(f"image = {read}")
        lines += file_code(file, "image", select)
    lines += mask_code(mask)
    if alpha:
        lines.append("mask = rgba[..., 3] != 0" if mask is None
                     else "mask = mask & (rgba[..., 3] != 0)")
        # of the image's shape, time axis included
        mask = dict(mask or {}, per_frame=True)
    fit_mask = predict_mask = ""
    if mask is not None:
        fit_mask = predict_mask = ", mask=mask"
    if source is not None:
        settings = ", ".join(f"{k}={_literal(v)}" for k, v in params.items())
        lines.append(f"segmenter.set_params({settings})")
        if leading_axis == "space" or preview_index is not None:
            lines.append(f"labels = segmenter.predict(image{predict_mask})")
        else:
            frame_mask = _frame_mask(mask)
            lines.append(f"labels = np.stack([segmenter.predict(frame{frame_mask}) "
                         "for t, frame in enumerate(image)])")
        return "\n".join(lines) + "\n"
    lines += scribble_code(scribbles)
    if preview_grid is not None:
        stride = preview_grid["stride"]
        lines.append(f"# the preview segments a grid {stride} times coarser; a scribbled "
                     f"{stride} x {stride} block keeps its largest label")
        lines.append(f"image = image{_index_literal(preview_grid['image'])}")
        if mask is not None:
            lines.append(f"mask = mask[::{stride}, ::{stride}]")
        if scribbles is not None:
            lines.append("from skimage.measure import block_reduce")
            lines.append(f"scribbles = block_reduce(scribbles, ({stride}, {stride}), np.max)")
    if leading_axis == "space" or preview_index is not None:
        guide = "" if scribbles is None else "y=scribbles, "
        fit_args = f"image, {guide}{fit_mask[2:]}".rstrip(", ")
        lines.append(f"segmenter = {_constructor(params)}")
        lines.append(f"labels = segmenter.fit({fit_args}).predict(image{predict_mask})")
        lines += _keep_scribbled_code(scribbles)
        if preview_grid is not None:
            stride = preview_grid["stride"]
            rows, columns = preview_grid["shape"]
            lines.append(f"labels = np.repeat(np.repeat(labels, {stride}, axis=0), {stride}, "
                         f"axis=1)[:{rows}, :{columns}]")
    elif leading_axis == "shared":
        lines.append("frames = list(image)  # time is the first axis")
        if mask is not None:
            masks = "list(mask)" if mask.get("per_frame") else "[mask] * len(frames)"
            lines.append(f"masks = {masks}")
        if scribbles is not None:
            guides = ("list(scribbles)" if scribbles.get("per_frame")
                      else "[scribbles] * len(frames)")
            lines.append(f"guides = {guides}")
        lines.append(f"segmenter = {_constructor(params)}")
        lines.append("segmenter.fit(frames" + (", y=guides" if scribbles is not None else "")
                     + (", mask=masks" if mask is not None else "") + ")")
        frame_mask = ", mask=masks[t]" if mask is not None else ""
        lines.append(f"labels = np.stack([segmenter.predict(frame{frame_mask}) "
                     "for t, frame in enumerate(frames)])")
        lines += _keep_scribbled_code(scribbles)
    else:
        frame_mask = _frame_mask(mask)
        guide = ""
        if scribbles is not None:
            frame_guide = "scribbles[t]" if scribbles.get("per_frame") else "scribbles"
            # a frame without strokes is fitted unguided
            guide = f", y={frame_guide} if {frame_guide}.any() else None"
        lines.append("labels = []")
        lines.append("for t, frame in enumerate(image):  # a model per frame")
        lines.append(f"    segmenter = {_constructor(params, '    ')}")
        lines.append(f"    labels.append(segmenter.fit(frame{guide}{frame_mask})"
                     f".predict(frame{frame_mask}))")
        lines.append("labels = np.stack(labels)")
        lines += _keep_scribbled_code(scribbles)
    return "\n".join(lines) + "\n"


def file_code(file: dict | None, name: str, select: str = "") -> list:
    """Commented lines that define ``name`` from the file napari read the layer
    from, for the code run outside napari (``viewer`` is napari's), or none."""
    if file is None:
        return []
    reader = "read_zarr" if file.get("zarr") else "read_image"
    plugin = file.get("reader")
    check = "" if plugin in (None, "napari") else (
        f" (napari read it with {plugin}: check that the arrays match)")
    return [
        f"# outside napari, read the file the layer came from instead{check}:",
        f"# from gmm_segmenter.io import {reader}",
        f"# {name} = {reader}({file['path']!r}){select}",
    ]


def _keep_scribbled_code(scribbles) -> list:
    """The line that gives every scribbled (and labelled) pixel its scribbled
    class, as the widget's labels have it; the scribbles of one frame apply to
    every frame."""
    if scribbles is None:
        return []
    return ["labels = np.where((scribbles > 0) & (labels > 0), scribbles, labels)"
            ".astype(labels.dtype)  # scribbled pixels keep their class"]


def _frame_mask(mask):
    if mask is None:
        return ""
    return ", mask=mask[t]" if mask.get("per_frame") else ", mask=mask"


def make_record(*, operation: str, image_layer, model, params: dict, settings: dict,
                code: str) -> dict:
    """The record of one run, JSON-safe (checked with a JSON round trip)."""
    record = {
        "gmm_segmenter_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "operation": operation,
        "image": {
            "layer": image_layer.name,
            "shape": [int(n) for n in image_layer.data.shape],
            "dtype": str(image_layer.data.dtype),
            "rgb": bool(image_layer.rgb),
            "scale": [float(s) for s in image_layer.scale],
        },
        "settings": settings,
        "params": params if params is not None else json_params(model),
        "model": model_summary(model),
        "python": code,
    }
    return json.loads(json.dumps(record, default=_plain_default))


def _plain_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)
