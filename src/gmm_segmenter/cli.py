"""``gmm-segment``: segment image files with a Gaussian mixture from the shell.

The original workflow (ask for an image and a number of components, write the
segmented picture and one mask per component into ``Result/``) as a batch
tool. See ``docs/cli.md`` or ``gmm-segment --help``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import glob
import json
import os
import platform
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _dask
from ._progress import progress
from .estimator import GMMSegmenter
from .io import (
    IMAGE_EXTENSIONS,
    is_zarr_store,
    load_model,
    package_version,
    read_image,
    read_zarr,
    save_model,
    write_json,
    write_png,
    write_tiff,
)

__all__ = ["main", "build_parser", "SAMPLE_IMAGES"]

PROG = "gmm-segment"

#: ``--sample`` names: the scikit-image loader and the file it reads. Only the
#: ones whose file ships inside the installed scikit-image are offered, so a
#: sample never triggers a download.
SAMPLE_IMAGES = {
    "astronaut": ("astronaut", "astronaut.png"),
    "brick": ("brick", "brick.png"),
    "camera": ("camera", "camera.png"),
    "cat": ("cat", "chelsea.png"),
    "cell": ("cell", "cell.png"),
    "checkerboard": ("checkerboard", "chessboard_GRAY.png"),
    "clock": ("clock", "clock_motion.png"),
    "coffee": ("coffee", "coffee.png"),
    "coins": ("coins", "coins.png"),
    "colorwheel": ("colorwheel", "color.png"),
    "grass": ("grass", "grass.png"),
    "gravel": ("gravel", "gravel.png"),
    "horse": ("horse", "horse.png"),
    "hubble_deep_field": ("hubble_deep_field", "hubble_deep_field.jpg"),
    "immunohistochemistry": ("immunohistochemistry", "ihc.png"),
    "logo": ("logo", "logo.png"),
    "microaneurysms": ("microaneurysms", "microaneurysms.png"),
    "moon": ("moon", "moon.png"),
    "page": ("page", "page.png"),
    "retina": ("retina", "retina.jpg"),
    "rocket": ("rocket", "rocket.jpg"),
    "shepp_logan_phantom": ("shepp_logan_phantom", "phantom.png"),
    "text": ("text", "text.png"),
}

# Estimator parameters that only some versions of GMMSegmenter have: the flag
# exists only when the installed estimator takes the parameter.
_OPTIONAL_PARAMETER_FLAGS = {
    "beta": dict(
        flag="--beta", type=lambda text: text if text == "auto" else float(text), metavar="B",
        help="strength of the spatial smoothing prior (0 = independent pixels, "
        "'auto' = estimated from the image)",
    ),
    "connectivity": dict(
        flag="--connectivity", type=int, metavar="C",
        help="neighbourhood of the spatial prior (see GMMSegmenter's connectivity)",
    ),
    "spacing": dict(
        flag="--spacing", type=float, nargs="+", metavar="S",
        help="pixel/voxel size along each spatial axis, for the spatial prior",
    ),
}

# Palette for --colors labels: matplotlib's tab10, cycled for more components.
_LABEL_COLOURS = np.array(
    [
        [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
        [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
    ],
    dtype=np.uint8,
)


class InputError(Exception):
    """A problem with one input: reported on one line, the batch goes on."""


def available_samples() -> list[str]:
    """``--sample`` names whose image file ships inside the installed scikit-image."""
    try:
        import skimage.data
    except ImportError:  # pragma: no cover - scikit-image is a dependency
        return []
    folder = Path(skimage.data.__file__).parent
    return [
        name
        for name, (loader, filename) in SAMPLE_IMAGES.items()
        if hasattr(skimage.data, loader) and (folder / filename).is_file()
    ]


def _estimator_parameters() -> dict:
    return GMMSegmenter().get_params(deep=False)


# ------------------------------------------------------------------ parser


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _n_components(text):
    if text == "auto":
        return "auto"
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto', got {text!r}"
        ) from None


def _max_samples(text):
    return "all" if text == "all" else _positive_int(text)


def _channel_axis(text):
    if text in ("auto", "none"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', 'none' or an integer axis, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gmm-segment`` (flags depend on the installed estimator)."""
    defaults = _estimator_parameters()
    samples = available_samples()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Segment images with a Gaussian mixture model of their pixel values. "
            "For each input NAME, writes NAME_labels.tif (labels 1..K, darkest "
            "component first, 0 = masked out), NAME_segmented.png (each pixel in "
            "its component's colour), NAME_Mask0.png ... NAME_Mask{K-1}.png (one "
            "0/255 mask per component) and NAME_report.json into OUTDIR. Volumes "
            "(3-D stacks) get .tif instead of .png. Run with no arguments in a "
            "terminal to be asked for an image and a number of components."
        ),
        epilog=(
            "exit status: 0 all inputs segmented, 1 some input failed (each failure "
            "is reported on one line; the others are still processed), 2 usage error. "
            "Documentation: docs/cli.md"
        ),
    )
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE",
        help="image files, folders (every image inside, not recursive) or glob "
        "patterns such as 'data/*.tif'",
    )
    parser.add_argument(
        "--sample", action="append", default=[], choices=samples, metavar="NAME",
        help="also segment a sample image shipped with scikit-image; outputs are "
        f"named after it. One of: {', '.join(samples)}. Repeatable.",
    )
    parser.add_argument(
        "-o", "--outdir", default="Result", type=Path,
        help="folder for the results, created if needed (default: ./Result)",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "-k", "--n-components", type=_n_components, default=None, metavar="N",
        help="number of components (segments), or 'auto' to choose it by BIC "
        f"(default: {defaults['n_components']})",
    )
    model.add_argument(
        "--k-range", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
        help="numbers of components tried by -k auto (default: "
        f"{' '.join(str(n) for n in defaults['n_components_range'])})",
    )
    model.add_argument(
        "--covariance-type", choices=["full", "tied", "diag", "spherical"], default=None,
        help=f"covariance structure of the components (default: {defaults['covariance_type']})",
    )
    model.add_argument(
        "--channel-axis", type=_channel_axis, default="auto", metavar="AXIS",
        help="axis holding colour channels. 'auto' (default): a 2-D image whose "
        "last axis has 3 or 4 entries (RGB/RGBA; also a stack of such images) is "
        "segmented by colour, gray+alpha images by intensity, and an alpha channel "
        "is not a feature but excludes fully transparent pixels (label 0); "
        "everything else is grayscale, including multi-page/3-D TIFF volumes. "
        "'none' forces grayscale (every value is one pixel); an integer names the "
        "axis of the image as read, and then every channel, alpha included, is used.",
    )
    model.add_argument(
        "--mask", type=Path, default=None, metavar="MASKFILE",
        help="image whose nonzero pixels are segmented; the others get label 0. "
        "Must have the spatial shape of every input.",
    )
    model.add_argument(
        "--seed", type=int, default=0,
        help="random seed for the pixel subsample and initialisation (default: 0, "
        "so every run gives the same result)",
    )
    model.add_argument(
        "--max-samples", type=_max_samples, default=None, metavar="N",
        help="pixels drawn to fit colour/float images, or 'all' (default: "
        f"{defaults['max_samples']})",
    )
    model.add_argument(
        "--init", dest="init_params", default=None,
        choices=["auto", "otsu", "quantile", "kmeans", "k-means++", "random", "random_from_data"],
        help=f"how EM starts (default: {defaults['init_params']})",
    )
    model.add_argument("--n-init", type=_positive_int, default=None, metavar="N",
                       help=f"initialisations; the best is kept (default: {defaults['n_init']})")
    model.add_argument("--max-iter", type=_positive_int, default=None, metavar="N",
                       help=f"maximum EM iterations (default: {defaults['max_iter']})")
    model.add_argument("--tol", type=float, default=None,
                       help=f"EM convergence threshold (default: {defaults['tol']})")
    model.add_argument("--reg-covar", type=float, default=None,
                       help=f"covariance regularisation (default: {defaults['reg_covar']})")
    for name, spec in _OPTIONAL_PARAMETER_FLAGS.items():
        spec = dict(spec)
        flag = spec.pop("flag")
        if name in defaults:
            spec["help"] += f" (default: {defaults[name]})"
            model.add_argument(flag, dest=name, default=None, **spec)
        else:
            # Accepted by the parser so the error can say why it cannot be used.
            spec.pop("help")
            model.add_argument(flag, dest=name, default=None, help=argparse.SUPPRESS, **spec)
    model.add_argument(
        "--model", type=Path, default=None, metavar="FILE",
        help="apply a model saved with --save-model instead of fitting",
    )
    model.add_argument(
        "--save-model", type=Path, default=None, metavar="FILE",
        help="save the fitted model (.npz, no pickle) for --model; needs a single "
        "input or --fit-on",
    )
    model.add_argument(
        "--fit-on", action="store_true",
        help="fit one model on all inputs together (a seeded sample of their "
        "pixels), so a label means the same component in every file; all inputs "
        "are held in memory at once",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--colors", "--colours", choices=["mean", "labels"], default="mean",
        help="colour of each component in NAME_segmented.png: its mean intensity or "
        "colour ('mean', default, like the original tool), or a distinct colour "
        "per label ('labels')",
    )
    output.add_argument("--no-masks", action="store_true",
                        help="do not write NAME_Mask*.png")
    output.add_argument(
        "--proba", action="store_true",
        help="also write NAME_proba.tif: float32 posterior probabilities, component "
        "axis FIRST (K, M, N[, P]), one page per component",
    )

    run = parser.add_argument_group("running")
    run.add_argument("-j", "--jobs", type=_positive_int, default=1, metavar="N",
                     help="images processed at the same time (threads; default: 1)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="print only errors (no progress bar, no summary)")
    run.add_argument("--debug", action="store_true",
                     help="print full tracebacks for errors")
    run.add_argument("--version", action="version",
                     version=f"%(prog)s (gmm-segmenter) {package_version()}")
    return parser


# ------------------------------------------------------------------ inputs


@dataclass
class Source:
    """One input: a file or a scikit-image sample, and the stem of its outputs."""

    label: str
    path: Path | None = None
    sample: str | None = None
    name: str = ""


@dataclass
class Prepared:
    """An image ready for the estimator: channels last or none, and its mask."""

    pixels: np.ndarray
    channel_axis: int | None
    mask: np.ndarray | None
    info: dict = field(default_factory=dict)

    @property
    def n_channels(self):
        return 1 if self.channel_axis is None else self.pixels.shape[-1]

    @property
    def spatial_shape(self):
        return self.pixels.shape if self.channel_axis is None else self.pixels.shape[:-1]


_GLOB_CHARACTERS = set("*?[")


def collect_sources(patterns, samples) -> tuple[list[Source], list[str]]:
    """Expand files, folders and globs into sources; return them and the errors."""
    sources, errors = [], []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir() and not is_zarr_store(path):  # a zarr store is one volume
            found = sorted(
                child for child in path.iterdir()
                if child.is_file() and not child.name.startswith(".")
                and child.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                errors.append(f"{pattern}: folder holds no image files "
                              f"({', '.join(IMAGE_EXTENSIONS)})")
            sources += [Source(label=str(child), path=child) for child in found]
        elif path.exists() or not _GLOB_CHARACTERS & set(pattern):
            sources.append(Source(label=pattern, path=path))  # missing files fail on read
        else:
            matches = sorted(glob.glob(pattern, recursive=True))
            matches = [Path(m) for m in matches if Path(m).is_file()]
            if not matches:
                errors.append(f"{pattern}: no file matches this pattern")
            sources += [Source(label=str(m), path=m) for m in matches]
    sources += [Source(label=f"sample {name}", sample=name) for name in samples]
    _assign_names(sources)
    return sources, errors


def _assign_names(sources):
    """Output stems: the file stem, made unique when two inputs share one."""
    stems = [s.sample if s.sample else s.path.stem for s in sources]
    taken = set()
    for source, stem in zip(sources, stems):
        name = stem
        if stems.count(stem) > 1 and source.path is not None and source.path.suffix:
            name = f"{stem}_{source.path.suffix.lstrip('.').lower()}"
        unique, counter = name, 2
        while unique in taken:
            unique, counter = f"{name}_{counter}", counter + 1
        taken.add(unique)
        source.name = unique


def load_source(source: Source) -> np.ndarray:
    if source.sample is not None:
        import skimage.data

        return np.asarray(getattr(skimage.data, SAMPLE_IMAGES[source.sample][0])())
    if is_zarr_store(source.path):
        return read_zarr(source.path)  # lazy: read chunk by chunk when labelled
    return read_image(source.path)


def prepare(image, channel_axis_option, mask) -> Prepared:
    """Put channels last (or none) as ``--channel-axis`` says; alpha becomes a mask."""
    alpha = None
    if channel_axis_option == "none":
        pixels, axis = image, None
    elif channel_axis_option == "auto":
        colour = (image.ndim == 3 and image.shape[-1] in (2, 3, 4)) or (
            image.ndim == 4 and image.shape[-1] in (3, 4)
        )
        pixels, axis = (image, -1) if colour else (image, None)
        if colour and image.shape[-1] in (2, 4):
            pixels, alpha = image[..., :-1], image[..., -1]
    else:
        if not -image.ndim <= channel_axis_option < image.ndim:
            raise InputError(
                f"--channel-axis {channel_axis_option} is out of range for an image of "
                f"shape {image.shape}; use an axis in [{-image.ndim}, {image.ndim - 1}] "
                "or 'none'"
            )
        pixels, axis = np.moveaxis(image, channel_axis_option, -1), -1
    if axis is not None and pixels.shape[-1] == 1:
        pixels, axis = pixels[..., 0], None
    spatial_shape = pixels.shape if axis is None else pixels.shape[:-1]
    if len(spatial_shape) < 1 or 0 in spatial_shape:
        raise InputError(f"no pixels left after taking channels out of shape {image.shape}")
    combined = None
    if alpha is not None:
        combined = alpha > 0
    if mask is not None:
        if mask.shape != spatial_shape:
            raise InputError(
                f"--mask has shape {mask.shape} but the image's spatial shape is "
                f"{spatial_shape}"
            )
        combined = mask if combined is None else combined & mask
    info = {
        "shape": list(image.shape),
        "dtype": str(image.dtype),
        "channel_axis": None if axis is None else (
            channel_axis_option if isinstance(channel_axis_option, int) else image.ndim - 1
        ),
        "alpha_channel_as_mask": alpha is not None,
    }
    return Prepared(pixels=pixels, channel_axis=axis, mask=combined, info=info)


def read_mask(path) -> np.ndarray:
    mask = read_image(path)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        mask = mask[..., :3].any(axis=-1) if mask.shape[-1] == 3 else (
            mask[..., :3].any(axis=-1) & (mask[..., 3] > 0)
        )
    return np.asarray(mask) != 0


# ------------------------------------------------------------------ outputs


def _display_mapping(prepared: Prepared):
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


def segmented_image(labels, prepared: Prepared, segmenter, colors) -> tuple[np.ndarray, str]:
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


@dataclass(frozen=True)
class Options:
    outdir: Path
    colors: str
    masks: bool
    proba: bool


def write_outputs(name, labels, posteriors, picture, report, options: Options) -> list[str]:
    outdir = options.outdir
    is_plane = labels.ndim == 2
    picture_ext = ".png" if is_plane else ".tif"
    written = []

    def record(path):
        written.append(path.name)

    record(write_tiff(outdir / f"{name}_labels.tif", labels))
    picture_path = outdir / f"{name}_segmented{picture_ext}"
    record(
        write_png(picture_path, picture) if is_plane
        else write_tiff(picture_path, picture, rgb=picture.ndim == labels.ndim + 1)
    )
    if options.masks:
        for k in range(report["n_components"]):
            mask = np.where(labels == k + 1, np.uint8(255), np.uint8(0))
            path = outdir / f"{name}_Mask{k}{picture_ext}"
            record(write_png(path, mask) if is_plane else write_tiff(path, mask))
    if posteriors is not None:
        axes = {2: "CYX", 3: "CZYX"}.get(labels.ndim)
        record(write_tiff(outdir / f"{name}_proba.tif", np.moveaxis(posteriors, -1, 0), axes=axes))
    report["outputs"] = written + [f"{name}_report.json"]
    write_json(outdir / f"{name}_report.json", report)
    # masks or posteriors of an earlier run into this folder (a larger K, or
    # --proba then) would otherwise sit beside this run's results
    for stale in [*outdir.glob(f"{glob.escape(name)}_Mask*"), outdir / f"{name}_proba.tif"]:
        suffix = stale.name[len(name) + len("_Mask"):].split(".")[0]
        if stale.name not in written and (stale.name.endswith("proba.tif") or suffix.isdigit()):
            stale.unlink(missing_ok=True)
    return report["outputs"]


def _versions():
    versions = {"gmm_segmenter": package_version(), "python": platform.python_version()}
    for module in ("numpy", "scipy", "sklearn", "skimage", "imageio", "tifffile"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # pragma: no cover - reporting only
            versions[module] = None
    return versions


def _float(value):
    value = float(value)
    return value if np.isfinite(value) else None


def _json_params(segmenter):
    params = {}
    for key, value in segmenter.get_params(deep=False).items():
        value = list(value) if isinstance(value, tuple) else value
        try:
            json.dumps(value)
        except TypeError:
            value = repr(value)
        params[key] = value
    return params


def build_report(source, prepared, segmenter, labels, model_source, requested_k, seconds,
                 counts=None):
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
        "model": {
            "source": model_source,
            "covariance_type": segmenter.covariance_type,
            "weights": segmenter.weights_.tolist(),
            "means": segmenter.means_.tolist(),
            "covariances": segmenter.covariances_.tolist(),
            "converged": bool(getattr(segmenter, "converged_", True)),
            "n_iter": int(getattr(segmenter, "n_iter_", 0)),
            "fit_method": getattr(segmenter, "fit_method_", None),
            "params": _json_params(segmenter),
        },
        "seconds": {key: round(value, 4) for key, value in seconds.items()},
        "versions": _versions(),
    }
    if hasattr(segmenter, "bic_curve_"):
        report["bic_curve"] = {
            "n_components": [int(n) for n in segmenter.n_components_candidates_],
            "bic": [_float(b) for b in segmenter.bic_curve_],
        }
    return report


# ------------------------------------------------------------------ running


@dataclass
class Outcome:
    source: Source
    outputs: list[str] | None = None
    n_components: int | None = None
    error: str | None = None
    traceback: str | None = None
    segmenter: GMMSegmenter | None = None


def _describe(error) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text


def _failure(source, error) -> Outcome:
    message = _describe(error)
    label = source.label
    if not message.startswith(label) and not (source.path and message.startswith(str(source.path))):
        message = f"{label}: {message}"
    return Outcome(source, error=message, traceback=traceback.format_exc())


class Runner:
    """Everything one invocation needs to turn a source into its outputs."""

    def __init__(self, args, params, shared_model, model_source, mask, status=None):
        self.status = status or (lambda text: None)
        self.args = args
        self.params = params
        self.shared_model = shared_model
        self.model_source = model_source
        self.mask = mask
        self.options = Options(args.outdir, args.colors, not args.no_masks, args.proba)
        self.requested_k = (
            None if args.model is not None
            else params.get("n_components", _estimator_parameters()["n_components"])
        )
        # progress(stage, done, total) of EM and labelling inside one image
        self.on_stage = lambda stage, done, total: None

    def read(self, source) -> Prepared:
        return prepare(load_source(source), self.args.channel_axis, self.mask)

    def fit(self, prepared_list) -> GMMSegmenter:
        batch = len(prepared_list) > 1
        first = prepared_list[0]
        segmenter = GMMSegmenter(**self.params, channel_axis=first.channel_axis)
        pixels = [p.pixels for p in prepared_list] if batch else first.pixels
        masks = [p.mask for p in prepared_list] if batch else first.mask
        with progress(self.on_stage):
            return segmenter.fit(pixels, mask=masks)

    def segmenter_for(self, source, prepared, seconds):
        """The shared model, or one fitted on this input (timed into ``seconds``)."""
        if self.shared_model is not None:
            segmenter = copy.copy(self.shared_model)
            segmenter.set_params(channel_axis=prepared.channel_axis)
            return segmenter, self.model_source
        tick = time.perf_counter()
        self.status(f"{source.name}: fitting")
        segmenter = self.fit([prepared])
        seconds["fit"] = time.perf_counter() - tick
        return segmenter, "fitted on this image"

    def process(self, source, prepared=None, read_seconds=0.0) -> Outcome:
        try:
            started = time.perf_counter()
            if prepared is None:
                self.status(f"{source.name}: reading")
                prepared = self.read(source)
            seconds = {"read": read_seconds + time.perf_counter() - started}
            if _dask.is_dask_array(prepared.pixels):
                return self.process_volume(source, prepared, seconds, started)
            segmenter, model_source = self.segmenter_for(source, prepared, seconds)
            tick = time.perf_counter()
            self.status(f"{source.name}: labelling")
            with progress(self.on_stage):
                labels = segmenter.predict(prepared.pixels, mask=prepared.mask)
                posteriors = (
                    segmenter.predict_proba(prepared.pixels, mask=prepared.mask)
                    if self.options.proba else None
                )
            seconds["predict"] = time.perf_counter() - tick
            tick = time.perf_counter()
            self.status(f"{source.name}: writing")
            picture, colours = segmented_image(labels, prepared, segmenter, self.options.colors)
            report = build_report(
                source, prepared, segmenter, labels, model_source, self.requested_k, seconds
            )
            report["colors"] = colours
            seconds["report_and_write"] = time.perf_counter() - tick
            seconds["total"] = time.perf_counter() - started + read_seconds
            report["seconds"] = {key: round(value, 4) for key, value in seconds.items()}
            outputs = write_outputs(source.name, labels, posteriors, picture, report, self.options)
            return Outcome(source, outputs=outputs, n_components=segmenter.n_components_,
                           segmenter=segmenter)
        except KeyboardInterrupt:
            raise
        except Exception as error:
            return _failure(source, error)

    def process_volume(self, source, prepared, seconds, started) -> Outcome:
        """A lazy (zarr) volume: labels to ``NAME_labels.zarr``, chunk by chunk.

        The pictures, masks and posteriors, each as large as the volume, are
        not written, and the report leaves out the likelihood and BIC (each
        another pass over the volume).
        """
        from dask.diagnostics import ProgressBar

        bar = ProgressBar(out=sys.stderr) if not self.args.quiet else contextlib.nullcontext()
        with bar:
            segmenter, model_source = self.segmenter_for(source, prepared, seconds)
            tick = time.perf_counter()
            self.status(f"{source.name}: labelling")
            labels = segmenter.predict(prepared.pixels, mask=prepared.mask)
            path = self.options.outdir / f"{source.name}_labels.zarr"
            # written beside the result, then swapped in: an interrupted run
            # never leaves a half-written store in place of a complete one
            partial = path.with_name(f".{path.name}.part")
            shutil.rmtree(partial, ignore_errors=True)
            labels.to_zarr(str(partial), overwrite=True)
            shutil.rmtree(path, ignore_errors=True)
            os.replace(partial, path)
            seconds["predict_and_write"] = time.perf_counter() - tick
            written = read_zarr(path)
            counts = _dask.bincount(written, segmenter.n_components_ + 1)
        report = build_report(
            source, prepared, segmenter, None, model_source, self.requested_k, seconds,
            counts=counts,
        )
        seconds["total"] = time.perf_counter() - started
        report["seconds"] = {key: round(value, 4) for key, value in seconds.items()}
        report["outputs"] = [path.name, f"{source.name}_report.json"]
        report["skipped"] = "segmented picture, masks and posteriors: the input is a lazy volume"
        write_json(self.options.outdir / f"{source.name}_report.json", report)
        return Outcome(source, outputs=report["outputs"], n_components=segmenter.n_components_,
                       segmenter=segmenter)


class Console:
    """Progress bar and messages; errors always go to stderr, one line each."""

    def __init__(self, total, quiet, debug):
        from tqdm.auto import tqdm

        self.quiet, self.debug = quiet, debug
        self.stage_bar = None
        self.bar = tqdm(
            total=total, unit="image", desc=PROG, file=sys.stderr, leave=False,
            disable=quiet or total < 1 or not _is_terminal(sys.stderr),
        )

    def _write(self, text, stream):
        if self.bar.disable:
            print(text, file=stream, flush=True)
        else:
            self.bar.write(text, file=stream)

    def info(self, text):
        if not self.quiet:
            self._write(text, sys.stdout)

    def error(self, text, details=None):
        self._write(f"{PROG}: error: {text}", sys.stderr)
        if self.debug and details:
            self._write(details.rstrip(), sys.stderr)

    def status(self, text):
        if not self.bar.disable:
            self.bar.set_postfix_str(text)

    def step(self, label=None):
        if label:
            self.bar.set_postfix_str(label, refresh=False)
        self.bar.update(1)

    def stage(self, stage, done, total):
        """A second bar under the batch bar: the current step of the current image."""
        if self.bar.disable:
            return
        from tqdm.auto import tqdm

        if self.stage_bar is None:
            self.stage_bar = tqdm(file=sys.stderr, leave=False, position=1, desc=stage)
        if self.stage_bar.desc != stage or done < self.stage_bar.n:
            self.stage_bar.set_description_str(stage, refresh=False)
            self.stage_bar.reset(total=total)
        self.stage_bar.update(done - self.stage_bar.n)

    def close(self):
        if self.stage_bar is not None:
            self.stage_bar.close()
        self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _map(function, items, jobs):
    """``function`` over ``items``, ``jobs`` at a time; yields results as they finish."""
    if jobs == 1 or len(items) < 2:
        for item in items:
            yield function(item)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(function, item) for item in items]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _estimator_params(args, parser) -> dict:
    supported = _estimator_parameters()
    params = {"random_state": args.seed}
    for name in ("covariance_type", "init_params", "n_init", "max_iter", "tol", "reg_covar"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    if args.n_components is not None:
        params["n_components"] = args.n_components
    if args.max_samples is not None:
        params["max_samples"] = None if args.max_samples == "all" else args.max_samples
    if args.k_range is not None:
        low, high = args.k_range
        if not 1 <= low <= high:
            parser.error(f"--k-range needs 1 <= MIN <= MAX, got {low} {high}")
        params["n_components_range"] = (low, high)
    for name, spec in _OPTIONAL_PARAMETER_FLAGS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if name not in supported:
            parser.error(
                f"{spec['flag']} needs a GMMSegmenter with a {name!r} parameter; the "
                f"installed gmm-segmenter {package_version()} has none"
            )
        params[name] = tuple(value) if isinstance(value, list) else value
    try:
        GMMSegmenter(**params)._validate_params()
    except (TypeError, ValueError) as error:
        parser.error(_describe(error))
    return params


def _interactive_argv(parser) -> list[str] | None:
    """Ask for an image and a number of components, as the original script did."""
    try:
        image = input("Enter the image name: ").strip()
        while not image:
            image = input("Enter the image name (a file path): ").strip()
        while True:
            answer = input("Enter the number of components [3]: ").strip() or "3"
            try:
                _n_components(answer)
                break
            except argparse.ArgumentTypeError:
                print("Please enter a positive whole number, or 'auto'.")
    except EOFError:
        print(file=sys.stderr)
        parser.print_usage(sys.stderr)
        return None
    return [image, "-k", answer]


def main(argv=None) -> int:
    """Run ``gmm-segment`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        if not _is_terminal(sys.stdin):
            parser.print_usage(sys.stderr)
            print(f"{PROG}: error: no image given (run in a terminal to be asked for one)",
                  file=sys.stderr)
            return 2
        argv = _interactive_argv(parser)
        if argv is None:
            return 2
    try:
        args = parser.parse_args(argv)
        return _run(args, parser)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _run(args, parser) -> int:
    if not args.images and not args.sample:
        parser.error("no IMAGE and no --sample given")
    fitting_flags = {
        "-k": args.n_components, "--k-range": args.k_range,
        "--covariance-type": args.covariance_type, "--init": args.init_params,
        "--n-init": args.n_init, "--max-iter": args.max_iter, "--tol": args.tol,
        "--reg-covar": args.reg_covar, "--fit-on": args.fit_on or None,
        "--max-samples": args.max_samples,
    }
    if args.model is not None:
        given = [flag for flag, value in fitting_flags.items() if value is not None]
        if given:
            parser.error(
                f"--model applies a saved model, so {', '.join(given)} (which only "
                "shape a new fit) cannot be used with it"
            )
    params = _estimator_params(args, parser)

    sources, collect_errors = collect_sources(args.images, args.sample)
    if args.save_model is not None and not args.fit_on and args.model is None and len(sources) > 1:
        parser.error(
            f"--save-model saves one model, but {len(sources)} inputs each get their "
            "own; add --fit-on to fit one model on all of them"
        )
    console = Console(len(sources), args.quiet, args.debug)
    failed = len(collect_errors)
    for message in collect_errors:
        console.error(message)
    outcomes = []
    try:
        mask = None
        if args.mask is not None:
            try:
                mask = read_mask(args.mask)
            except Exception as error:
                console.error(f"--mask {_describe(error)}", traceback.format_exc())
                return 1
        shared_model, model_source = None, None
        if args.model is not None:
            try:
                shared_model = load_model(args.model)
            except Exception as error:
                console.error(f"--model {_describe(error)}", traceback.format_exc())
                return 1
            model_source = f"loaded from {args.model}"
            optional = {k: params[k] for k in _OPTIONAL_PARAMETER_FLAGS if k in params}
            if optional:
                # Smoothing acts when labelling, so it can be changed on a saved model.
                shared_model.set_params(**optional)
                if "beta" in optional and hasattr(shared_model, "beta_"):
                    shared_model.beta_ = float(optional["beta"])
        if not sources:
            return 1
        args.outdir.mkdir(parents=True, exist_ok=True)
        runner = Runner(args, params, shared_model, model_source, mask, console.status)
        if args.jobs == 1:  # one stage bar cannot follow several images at once
            runner.on_stage = console.stage

        if args.fit_on:
            outcomes, failed_reading = _fit_on_all(runner, sources, console, args)
            failed += failed_reading
        else:
            for outcome in _map(runner.process, sources, args.jobs):
                _report(console, outcome)
                outcomes.append(outcome)
    finally:
        console.close()

    succeeded = [o for o in outcomes if o.error is None]
    failed += sum(o.error is not None for o in outcomes)
    if args.save_model is not None and succeeded:
        model = runner.shared_model if runner.shared_model is not None else succeeded[0].segmenter
        try:
            save_model(model, args.save_model)
            console.info(f"model saved to {args.save_model}")
        except Exception as error:
            console.error(f"--save-model {args.save_model}: {_describe(error)}",
                          traceback.format_exc())
            failed += 1
    console.info(
        f"{len(succeeded)} of {len(succeeded) + failed} input(s) segmented into "
        f"{args.outdir}{os.sep}" + (f"; {failed} failed" if failed else "")
    )
    return 1 if failed else 0


def _report(console, outcome):
    if outcome.error is None:
        console.step(outcome.source.name)
        console.info(
            f"{outcome.source.label}: {outcome.n_components} components -> "
            f"{outcome.source.name}_* ({len(outcome.outputs)} files)"
        )
    else:
        console.step()
        console.error(outcome.error, outcome.traceback)


def _fit_on_all(runner, sources, console, args):
    """Read every input, fit one model on all of them, then label each."""

    def read(source):
        started = time.perf_counter()
        try:
            return source, runner.read(source), time.perf_counter() - started, None
        except Exception as error:
            return source, None, 0.0, _failure(source, error)

    loaded, outcomes = [], []
    for source, prepared, seconds, failure in _map(read, sources, args.jobs):
        if failure is not None:
            outcomes.append(failure)
            _report(console, failure)
        else:
            loaded.append((source, prepared, seconds))
    loaded.sort(key=lambda item: sources.index(item[0]))
    if loaded:
        reference = loaded[0][1].n_channels
        kept = []
        for source, prepared, seconds in loaded:
            if prepared.n_channels != reference:
                failure = Outcome(source, error=(
                    f"{source.label}: has {prepared.n_channels} channel(s) but "
                    f"{loaded[0][0].label} has {reference}; --fit-on needs inputs with "
                    "the same channels"
                ))
                outcomes.append(failure)
                _report(console, failure)
            else:
                kept.append((source, prepared, seconds))
        loaded = kept
    if not loaded:
        return outcomes, 0
    if runner.shared_model is None:
        started = time.perf_counter()
        try:
            runner.shared_model = runner.fit([prepared for _, prepared, _ in loaded])
        except Exception as error:
            console.error(f"fitting one model on {len(loaded)} input(s) failed: "
                          f"{_describe(error)}", traceback.format_exc())
            return outcomes, len(loaded)
        runner.model_source = (
            f"fitted on {len(loaded)} input(s) together (--fit-on) in "
            f"{time.perf_counter() - started:.3f} s"
        )
    for outcome in _map(lambda item: runner.process(item[0], item[1], item[2]), loaded, args.jobs):
        _report(console, outcome)
        outcomes.append(outcome)
    return outcomes, 0
