"""What ``gmm-segment`` writes into the Result folder for each input.

``NAME_labels.tif``, the segmented picture, one mask per component, the
posteriors with ``--proba``, the bias field with ``--bias-field`` and
``NAME_report.json``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._model import json_params
from .._version import __version__
from ..io import write_json, write_png
from ..io import write_tiff as _write_tiff
from ._folder import ResultSet

# Palette for --colors labels: matplotlib's tab10, cycled for more components.
_LABEL_COLOURS = np.array(
    [
        [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
        [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
    ],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class Options:
    outdir: Path
    colors: str
    masks: bool
    proba: bool
    protected: frozenset = field(default_factory=frozenset)  # the inputs, resolved


# ------------------------------------------------------------------ the segmented picture


def _display_mapping(prepared):
    """Map pixel values (input units) to PNG values; return (function, dtype)."""
    dtype = prepared.pixels.dtype
    if dtype == np.uint8:
        return (lambda v: v), np.uint8
    if dtype == np.uint16 and prepared.n_channels == 1:
        return (lambda v: v), np.uint16  # 16-bit grayscale PNG
    if dtype == np.uint16:
        return (lambda v: v / 257.0), np.uint8  # PNG has no 16-bit colour here
    if dtype == np.bool_:
        return (lambda v: v * 255.0), np.uint8
    values = prepared.pixels if prepared.mask is None else prepared.pixels[prepared.mask]
    values = values[np.isfinite(values)] if dtype.kind == "f" else values
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    span = high - low if high > low else 1.0
    return (lambda v: (v - low) / span * 255.0), np.uint8


def segmented_image(labels, prepared, segmenter, colors) -> tuple[np.ndarray, str]:
    """The "segmented" picture: each pixel in its component's colour; label 0 black."""
    n_channels = segmenter.means_.shape[1]
    if colors == "mean" and n_channels in (1, 3):
        to_display, dtype = _display_mapping(prepared)
        limit = np.iinfo(dtype).max
        palette = np.clip(np.rint(to_display(segmenter.means_)), 0, limit).astype(dtype)
        used = "mean"
    else:
        repeats = -(-segmenter.n_components_ // len(_LABEL_COLOURS))
        palette = np.tile(_LABEL_COLOURS, (repeats, 1))[: segmenter.n_components_]
        used = "labels"
    palette = np.vstack([np.zeros((1, palette.shape[1]), palette.dtype), palette])
    picture = palette[labels]
    return (picture[..., 0] if palette.shape[1] == 1 else picture), used


# ------------------------------------------------------------------ files


def write_outputs(name, labels, posteriors, picture, report, options: Options,
                  bias=None, voxel=None) -> list[str]:
    """Write every file of one input and swap them in as one set; return their names.

    ``bias`` is the field the labels were made with (channels last, if any), or None.
    ``voxel`` (see ``Runner.voxel_report``): the TIFFs record that voxel size.
    """
    is_plane = labels.ndim == 2
    picture_ext = ".png" if is_plane else ".tif"
    written = []
    result = ResultSet(options.outdir, name, options.protected)
    calibrated = {}
    if voxel is not None and len(voxel["spacing"]) == labels.ndim and labels.ndim in (2, 3):
        calibrated = {"spacing": voxel["spacing"], "unit": voxel["unit"]}

    def write_tiff(path, array, **options):
        _write_tiff(path, array, **options, **calibrated)

    def path(filename):
        written.append(filename)
        return result.path(filename)

    try:
        write_tiff(path(f"{name}_labels.tif"), labels)
        picture_path = path(f"{name}_segmented{picture_ext}")
        if is_plane:
            write_png(picture_path, picture)
        else:
            write_tiff(picture_path, picture, rgb=picture.ndim == labels.ndim + 1)
        if options.masks:
            for k in range(report["n_components"]):
                mask = np.where(labels == k + 1, np.uint8(255), np.uint8(0))
                mask_path = path(f"{name}_Mask{k}{picture_ext}")
                write_png(mask_path, mask) if is_plane else write_tiff(mask_path, mask)
        if posteriors is not None:
            axes = {2: "CYX", 3: "CZYX"}.get(labels.ndim)
            write_tiff(path(f"{name}_proba.tif"), np.moveaxis(posteriors, -1, 0), axes=axes)
        if bias is not None:
            if bias.ndim > labels.ndim:  # one field per channel: channels first, as proba
                axes = {2: "CYX", 3: "CZYX"}.get(labels.ndim)
                bias = np.moveaxis(bias, -1, 0)
            else:
                axes = {2: "YX", 3: "ZYX"}.get(labels.ndim)
            write_tiff(path(f"{name}_bias.tif"), bias.astype(np.float32), axes=axes)
        report["outputs"] = written + [f"{name}_report.json"]
        write_json(result.path(f"{name}_report.json"), report)
        result.commit()
    except BaseException:
        result.discard()
        raise
    return report["outputs"]


# ------------------------------------------------------------------ report


def _versions():
    versions = {"gmm_segmenter": __version__, "python": platform.python_version()}
    for module in ("numpy", "scipy", "sklearn", "skimage", "imageio", "tifffile"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # pragma: no cover - reporting only
            versions[module] = None
    return versions


def timings(seconds):
    """Seconds per step, rounded for the report."""
    return {key: round(value, 4) for key, value in seconds.items()}


def _float(value):
    value = float(value)
    return value if np.isfinite(value) else None


def build_report(source, prepared, segmenter, labels, model_source, requested_k, seconds,
                 counts=None, bias=None):
    """``NAME_report.json``: the input, the model and its fit, pixels per label, timings;
    with a bias field (``bias``, the field the labels were made with) its range."""
    if counts is not None:  # a lazy volume: no extra passes over it
        mean_log_likelihood = bic = float("nan")
    else:
        try:
            mean_log_likelihood = segmenter.score(prepared.pixels, mask=prepared.mask)
            bic = segmenter.bic(prepared.pixels, mask=prepared.mask)
        except ValueError:  # every pixel masked out
            mean_log_likelihood = bic = float("nan")
        counts = np.bincount(labels.ravel(), minlength=segmenter.n_components_ + 1)
    report = {
        "input": str(source.path) if source.path is not None else f"skimage.data.{source.sample}",
        "name": source.name,
        **prepared.info,
        "n_components": int(segmenter.n_components_),
        "n_components_requested": requested_k,
        "bic": _float(bic),
        "mean_log_likelihood": _float(mean_log_likelihood),
        "pixels_per_label": {str(label): int(n) for label, n in enumerate(counts)},
        "model": _model_report(segmenter, model_source),
        "seconds": timings(seconds),
        "versions": _versions(),
    }
    if segmenter.bias_field is not None:
        report["bias_field"] = _bias_report(segmenter, prepared, bias)
    if hasattr(segmenter, "bic_curve_"):
        report["bic_curve"] = {
            "n_components": [int(n) for n in segmenter.n_components_candidates_],
            "bic": [_float(b) for b in segmenter.bic_curve_],
            # the numbers differ in scale from "bic" above: say why in the file
            "compared_on": (
                "the histogram of the image's grey levels"
                if getattr(segmenter, "fit_method_", None) == "histogram"
                else "the pixels sampled for the fit (--max-samples)"
            ) + ", in the fit's standardised units; \"bic\" above is of every pixel in the "
                "image's units, so only the curve's differences compare",
        }
    return report


def _bias_report(segmenter, prepared, bias):
    """The field's setting and, when it was computed, its range over the used pixels."""
    from .._bias import degree_of

    out = {"setting": segmenter.bias_field, "degree": degree_of(segmenter.bias_field)}
    if bias is not None:
        values = bias if prepared.mask is None else bias[prepared.mask]
        out["min"] = _float(values.min()) if values.size else None
        out["max"] = _float(values.max()) if values.size else None
        out["corrected"] = bool(values.size and (values.min() != 1 or values.max() != 1))
    return out


def _model_report(segmenter, model_source):
    return {
        "source": model_source,
        "covariance_type": segmenter.covariance_type,
        "weights": segmenter.weights_.tolist(),
        "means": segmenter.means_.tolist(),
        "covariances": segmenter.covariances_.tolist(),
        # pixel-wise EM, then EM under the spatial prior (0 iterations without one)
        "converged": bool(getattr(segmenter, "converged_", True)),
        "n_iter": int(getattr(segmenter, "n_iter_", 0)),
        "spatial_converged": bool(getattr(segmenter, "spatial_converged_", True)),
        "spatial_n_iter": int(getattr(segmenter, "spatial_n_iter_", 0)),
        # the strength used: the one chosen when params say beta 'auto'
        "beta": float(segmenter.beta_),
        "fit_method": getattr(segmenter, "fit_method_", None),
        "params": json_params(segmenter),
    }
