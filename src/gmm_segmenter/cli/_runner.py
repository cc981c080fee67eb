"""Turning sources into results: one image or volume at a time, or one model for all.

A failing input becomes an :class:`Outcome` with a one-line error; the
others go on.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import copy
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from .. import _dask, _training
from .._image import is_dask_array
from .._progress import Cancelled, progress
from ..estimator import GMMSegmenter
from ..io import is_zarr_store, read_tiff_axes, read_zarr, write_json
from . import _isolated
from ._console import describe, is_terminal, warnings_said, working_on
from ._folder import ResultSet
from ._inputs import InputError, Prepared, Source, load_source, prepare, prior_for
from ._outputs import Options, build_report, segmented_image, timings, write_outputs


@dataclass
class Outcome:
    source: Source
    outputs: list[str] | None = None
    n_components: int | None = None
    error: str | None = None
    traceback: str | None = None
    segmenter: GMMSegmenter | None = None
    #: what the run took from the file's metadata, said after its summary
    from_file: str = ""


def _failure(source, error) -> Outcome:
    message = describe(error)
    label = source.label
    if not message.startswith(label) and not (source.path and message.startswith(str(source.path))):
        message = f"{label}: {message}"
    return Outcome(source, error=message, traceback=traceback.format_exc())


def _check_file_channels(file_axes, option, spacing, ndim):
    """Say what the file's channel axis (``C``) means for ``--spacing`` with a size
    for every axis (refused) and for ``--channel-axis none`` (said once per file)."""
    axis = file_axes.channel_axis
    letters = "".join(a for i, a in enumerate(file_axes.axes) if i != axis)
    if option == axis and spacing is not None and len(spacing) == ndim:
        raise InputError(
            f"--spacing gives {len(spacing)} sizes, one per axis, but the file's metadata "
            f"names its axes {file_axes.axes}: axis {axis} (C) holds the channels, which "
            f"have no voxel size. Give {ndim - 1} sizes (in the order {letters}), or "
            "--channel-axis none to take every axis as space."
        )
    if option == "none":
        lost = ""
        if spacing is None and file_axes.spacing(axis) is not None:
            lost = (f", without the voxel size the file records (C has none; --spacing "
                    f"with {ndim} sizes gives one)")
        warnings.warn(
            f"--channel-axis none takes the file's channel axis (axis {axis}, C of "
            f"{file_axes.axes}) as one more axis of space: segmented as a {ndim}-D grey "
            f"image{lost}. Leave out --channel-axis to segment its channels together.",
            UserWarning, stacklevel=2,
        )


def _warn_time_as_space(file_axes, spacing, fitted=True):
    """Say that a time axis the file's metadata names is segmented as space
    (``fitted``: a model is fitted to the file, not given with ``--model``)."""
    frame = "".join(a for a in file_axes.axes if a not in "TCS")
    sizes = "" if spacing is not None else (
        " and without a voxel size (time has none; --spacing with a size for every axis, "
        "T first, gives one)"
        if all(letter in file_axes.sizes for letter in frame) else ""
    )
    frame_axes = file_axes.axes.replace("T", "")
    channels = (f" (channels on their axis {frame_axes.index('C')})"
                if "C" in frame_axes else "")
    how = (
        f"segment the {frame} frames one by one with one model, use napari's 'time: one "
        f"model', or in Python fit one GMMSegmenter on the list of frames{channels}"
        if fitted else
        f"label the {frame} frames one by one with the --model, use napari's Apply model "
        f"with 'time: one model', or in Python predict the list of frames{channels}"
    )
    warnings.warn(
        f"The file's metadata names a time axis (T of {file_axes.axes}): it is segmented "
        f"as one more axis of space, smoothed across frames as within them{sizes}. To "
        f"{how} (docs/cli.md, Time series).",
        UserWarning, stacklevel=2,
    )


def _check_channels(model, prepared, model_source):
    """Refuse an input of other channels than the shared model's, naming the
    file's own axes (the estimator sees the channels moved last)."""
    wanted, given = model.n_features_in_, prepared.n_channels
    if given == wanted:
        return
    shape = tuple(prepared.info.get("shape", prepared.pixels.shape))
    model_word = "--model" if model_source and model_source.startswith("loaded") else "model"
    if prepared.channel_axis is None:
        what = f"The image is grey (1 channel, shape {shape})"
    else:
        what = (f"The image has {given} channels (on its axis "
                f"{prepared.info.get('channel_axis')}, shape {shape})")
    if wanted == 1:
        colour = given in (3, 4) and prepared.info.get("channel_axis") in (-1, len(shape) - 1)
        if colour:
            what = f"The image is in colour ({given} channels, shape {shape})"
        raise InputError(
            f"{what}, but the {model_word} was fitted on grey images (1 channel). Give "
            f"grey images ({'converted to grey' if colour else 'one channel saved on its own'}"
            "), or use a model fitted on images like this one."
        )
    holding = [axis for axis, size in enumerate(shape) if size == wanted]
    advice = (f"Give --channel-axis {holding[0]} if that axis holds them" if len(holding) == 1
              else f"Give images with {wanted} channels (--channel-axis N when axis N holds "
                   "them)")
    raise InputError(
        f"{what}, but the {model_word} was fitted on images with {wanted} channels. "
        f"{advice}, or use a model fitted on images like this one."
    )


def model_channel_axis(model, shape) -> int | None:
    """The channel axis a ``--model`` of several channels was saved with, when an
    image of ``shape`` holds that many there (a ``(Z, C, Y, X)`` stack); else None."""
    axis = model.channel_axis
    n_channels = getattr(model, "n_features_in_", 1)
    if n_channels < 2 or not isinstance(axis, int) or not -len(shape) <= axis < len(shape):
        return None
    return axis if shape[axis] == n_channels else None


class Runner:
    """Everything one invocation needs to turn a source into its outputs."""

    def __init__(self, args, params, shared_model, model_source, mask, status=None,
                 protected=frozenset(), scribbles=None, prior=None):
        self.status = status or (lambda text: None)
        self.args = args
        self.params = params
        self.shared_model = shared_model
        self.model_source = model_source
        self.fit_warnings = []  # said of the --fit-on fit: in every input's report
        self.mask = mask
        self.scribbles = scribbles
        self.prior = prior
        self.options = Options(args.outdir, args.colors, not args.no_masks, args.proba,
                               protected)
        self.read_limits = _isolated.Limits.from_arguments(args)
        self.requested_k = (
            None if args.model is not None
            else params.get("n_components", GMMSegmenter().n_components)
        )
        # progress(stage, done, total) of EM and labelling inside one image
        self.on_stage = lambda stage, done, total: None

    def _on_stage(self, stage, done, total):
        if _stopping.is_set():  # interrupted: the images in other threads stop too
            raise Cancelled
        self.on_stage(stage, done, total)

    def read(self, source) -> Prepared:
        with working_on(source.label):
            prepared = self._read(source)
            prepared.warnings = warnings_said()
            return prepared

    def _read(self, source) -> Prepared:
        image = load_source(source, self.args.max_pixels, self.read_limits)
        file_axes = None
        if source.path is not None and not is_zarr_store(source.path):
            file_axes = read_tiff_axes(source.path)
            if file_axes is not None and len(file_axes.axes) != image.ndim:
                file_axes = None
        option = self.args.channel_axis
        if option == "auto" and self.shared_model is not None:
            axis = model_channel_axis(self.shared_model, image.shape)
            option = option if axis is None else axis  # (axis 0 too)
        axes_channel = (option == "auto" and file_axes is not None
                        and file_axes.channel_axis is not None)
        if axes_channel:
            option = file_axes.channel_axis  # an ImageJ hyperstack's or OME's channels
        spacing = self.params.get("spacing")
        if file_axes is not None and file_axes.channel_axis is not None:
            _check_file_channels(file_axes, option, spacing, image.ndim)
        if file_axes is not None and "T" in file_axes.axes:
            _warn_time_as_space(file_axes, spacing, fitted=self.shared_model is None)
        prepared = prepare(image, option, self.mask, None if spacing is None else len(spacing),
                           None if file_axes is None else file_axes.axes)
        prepared.axes_channel = axes_channel
        if file_axes is not None:
            prepared.info["axes"] = file_axes.axes
            file_spacing = file_axes.spacing(prepared.info["channel_axis"])
            if file_spacing is not None:
                prepared.voxel_size = file_spacing
                prepared.unit = file_axes.unit
        return prepared

    def spacing_for(self, prepared_list):
        """``{'spacing': ...}`` for the estimator when the files give the voxel size and
        ``--spacing`` does not; empty otherwise (also when the files disagree)."""
        if "spacing" in self.params or not _same_voxel_sizes(prepared_list):
            return {}
        return {"spacing": prepared_list[0].voxel_size}

    def fit(self, prepared_list) -> GMMSegmenter:
        batch = len(prepared_list) > 1
        first = prepared_list[0]
        segmenter = GMMSegmenter(**self.params, **self.spacing_for(prepared_list),
                                 channel_axis=first.channel_axis)
        pixels = [p.pixels for p in prepared_list] if batch else first.pixels
        masks = [p.mask for p in prepared_list] if batch else first.mask
        scribbles = self.scribbles
        if batch and scribbles is not None:
            scribbles = [scribbles] * len(prepared_list)
        prior = None
        if self.prior is not None:
            prior = [prior_for(self.prior, p.spatial_shape) for p in prepared_list]
            prior = prior if batch else prior[0]
        with progress(self._on_stage):
            return segmenter.fit(pixels, scribbles, mask=masks, prior=prior)

    def segmenter_for(self, source, prepared, seconds):
        """The shared model, or one fitted on this input (timed into ``seconds``),
        and the input's labels when the fit made them (guided by ``--scribbles``,
        which the labels keep); ``None`` when they are still to be predicted."""
        if self.shared_model is not None:
            _check_channels(self.shared_model, prepared, self.model_source)
            segmenter = copy.copy(self.shared_model)
            segmenter.set_params(channel_axis=prepared.channel_axis, **self.spacing_for([prepared]))
            return segmenter, self.model_source, None
        tick = time.perf_counter()
        self.status(f"{source.name}: fitting")
        labels = None
        if self.scribbles is None and self.prior is None:
            segmenter = self.fit([prepared])
        else:
            segmenter = GMMSegmenter(**self.params, **self.spacing_for([prepared]),
                                     channel_axis=prepared.channel_axis)
            prior = None if self.prior is None else prior_for(self.prior, prepared.spatial_shape)
            with progress(self._on_stage):
                labels = segmenter.fit_predict(prepared.pixels, self.scribbles,
                                               mask=prepared.mask, prior=prior)
        seconds["fit"] = time.perf_counter() - tick
        return segmenter, "fitted on this image", labels

    def voxel_report(self, segmenter, prepared):
        """The voxel size the input was segmented at, its unit and where it came
        from (``--spacing``, the file, or the ``--model``); ``None`` without one."""
        spacing = segmenter.spacing
        if spacing is None:
            return None
        spacing = [float(size) for size in spacing]
        from_file = prepared.voxel_size is not None and tuple(spacing) == prepared.voxel_size
        if "spacing" in self.params:
            source = "--spacing"
        elif from_file:
            source = "the file's metadata"
        else:
            source = "the --model"
        return {"spacing": spacing, "unit": prepared.unit if from_file else None,
                "from": source}

    def guidance_report(self, segmenter, prepared):
        """What the report says about the voxel size (see :meth:`voxel_report`),
        ``--mask``, ``--scribbles`` and ``--prior`` (nothing without them)."""
        report = {}
        voxel = self.voxel_report(segmenter, prepared)
        if voxel is not None:
            report["voxel_size"] = voxel
        if self.mask is not None:
            report["mask"] = {"file": str(self.args.mask),
                              "pixels_kept": int(np.count_nonzero(self.mask))}
        if self.scribbles is not None:
            classes, counts = np.unique(self.scribbles[self.scribbles > 0], return_counts=True)
            report["scribbles"] = {
                "file": str(self.args.scribbles),
                "pixels_per_label": {str(int(k)): int(n) for k, n in zip(classes, counts)},
            }
        if self.prior is not None:
            report["prior"] = {
                "file": str(self.args.prior),
                "weight": self.params.get("prior_weight", GMMSegmenter().prior_weight),
            }
        return report

    def process(self, source, prepared=None, read_seconds=0.0) -> Outcome:
        with working_on(source.label):
            return self._process(source, prepared, read_seconds)

    def _process(self, source, prepared, read_seconds) -> Outcome:
        try:
            started = time.perf_counter()
            if prepared is None:
                self.status(f"{source.name}: reading")
                prepared = self.read(source)
            seconds = {"read": read_seconds + time.perf_counter() - started}
            if is_dask_array(prepared.pixels):
                return self.process_volume(source, prepared, seconds, started)
            segmenter, model_source, labels = self.segmenter_for(source, prepared, seconds)
            tick = time.perf_counter()
            self.status(f"{source.name}: labelling")
            with progress(self._on_stage):
                if labels is None:
                    labels = segmenter.predict(prepared.pixels, mask=prepared.mask)
                posteriors = (
                    segmenter.predict_proba(prepared.pixels, mask=prepared.mask)
                    if self.options.proba else None
                )
                # the field predict divided by (the same estimate, the same seed)
                bias = (
                    None if segmenter.bias_field is None
                    else segmenter.estimate_bias_field(prepared.pixels, mask=prepared.mask)
                )
            seconds["predict"] = time.perf_counter() - tick
            tick = time.perf_counter()
            self.status(f"{source.name}: writing")
            picture, colours = segmented_image(labels, prepared, segmenter, self.options.colors)
            report = build_report(
                source, prepared, segmenter, labels, model_source, self.requested_k, seconds,
                bias=bias,
            )
            report["colors"] = colours
            report.update(self.guidance_report(segmenter, prepared))
            seconds["report_and_write"] = time.perf_counter() - tick
            seconds["total"] = time.perf_counter() - started + read_seconds
            report["seconds"] = timings(seconds)
            report["warnings"] = _unique(prepared.warnings + self.fit_warnings + warnings_said())
            outputs = write_outputs(
                source.name, labels, posteriors, picture, report, self.options, bias=bias,
                voxel=report.get("voxel_size"),
            )
            return Outcome(source, outputs=outputs, n_components=segmenter.n_components_,
                           segmenter=segmenter, from_file=_from_file(prepared, report))
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

        # dask redraws its bar with carriage returns: in a log file each draw
        # is a line of its own, so it is drawn on a terminal only
        shown = not self.args.quiet and is_terminal(sys.stderr)
        bar = ProgressBar(out=sys.stderr) if shown else contextlib.nullcontext()
        result = ResultSet(self.options.outdir, source.name, self.options.protected)
        try:
            with bar:
                segmenter, model_source, labels = self.segmenter_for(source, prepared, seconds)
                self._warn_unwritten(segmenter, source.name)
                tick = time.perf_counter()
                self.status(f"{source.name}: labelling")
                if labels is None:
                    labels = segmenter.predict(prepared.pixels, mask=prepared.mask)
                path = result.path(f"{source.name}_labels.zarr")
                labels.to_zarr(str(path))
                seconds["predict_and_write"] = time.perf_counter() - tick
                counts = _dask.bincount(read_zarr(path), segmenter.n_components_ + 1)
            report = build_report(
                source, prepared, segmenter, None, model_source, self.requested_k, seconds,
                counts=counts,
            )
            if segmenter.bias_field is not None:
                report["bias_field"].update(_lazy_field_range(segmenter, prepared))
            seconds["total"] = time.perf_counter() - started
            report["seconds"] = timings(seconds)
            report.update(self.guidance_report(segmenter, prepared))
            report["warnings"] = _unique(prepared.warnings + self.fit_warnings + warnings_said())
            report["outputs"] = [path.name, f"{source.name}_report.json"]
            report["skipped"] = (
                "segmented picture, masks, posteriors and bias field: the input is a zarr "
                "store, read lazily"
            )
            write_json(result.path(f"{source.name}_report.json"), report)
            result.commit()
        except BaseException:
            result.discard()
            raise
        return Outcome(source, outputs=report["outputs"], n_components=segmenter.n_components_,
                       segmenter=segmenter)

    def _warn_unwritten(self, segmenter, name):
        """Say which outputs asked for a zarr store's input does not get."""
        unwritten = []
        if self.options.proba:
            unwritten.append(f"--proba ({name}_proba.tif)")
        if segmenter.bias_field is not None:
            unwritten.append(f"--bias-field's field ({name}_bias.tif)")
        if unwritten:
            warnings.warn(
                f"{' and '.join(unwritten)} not written for a zarr store's input, read "
                f"lazily: each would be as large as the input. Only {name}_labels.zarr and "
                "the report are.",
                UserWarning,
                stacklevel=2,
            )


def _lazy_field_range(segmenter, prepared) -> dict:
    """The range of a lazy volume's field, from a strided sample of it (the
    field is smooth; all of it would be another pass over the volume), and
    whether it corrects anything."""
    from .._bias import FIELD_FIT_PIXELS
    from .._image import strided_steps

    field = segmenter.estimate_bias_field(prepared.pixels, mask=prepared.mask)
    steps = strided_steps(field.shape, FIELD_FIT_PIXELS)
    key = tuple(slice(None, None, step) for step in steps)
    sample = np.asarray(field[key].compute())
    low, high = float(sample.min()), float(sample.max())
    return {"min": low, "max": high, "corrected": not low == high == 1.0,
            "range_from": "a strided sample of the field (a zarr store's input, read lazily)"}


# ------------------------------------------------------------------ the batch


#: Set when the run is interrupted while images are processed in threads:
#: each stops at its next progress report (a few times a second).
_stopping = threading.Event()


def _map(function, items, jobs):
    """``function`` over ``items``, ``jobs`` at a time; yields results as they finish."""
    if jobs == 1 or len(items) < 2:
        for item in items:
            yield function(item)
        return
    # images run side by side, so BLAS runs in one thread: OpenBLAS's own
    # threads, shared by callers in several threads, wait for each other
    # (six colour images with -j 2 took 8-16 s with them, 7-8 s without)
    with threadpool_limits(limits=1, user_api="blas"), \
            concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(function, item) for item in items]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        except BaseException:
            _stopping.set()  # fits and predictions running in other threads: stop now
            for future in futures:
                future.cancel()
            _isolated.stop_all()  # files still decoding in other threads: stop now
            raise
        finally:
            try:
                pool.shutdown(wait=True)  # the stopped threads end before the next run
            finally:
                _stopping.clear()


def _sizes(spacing) -> str:
    """A voxel size as the summary line and warnings write it: ``1.5 x 0.5 x 0.5``."""
    return " x ".join(f"{size:g}" for size in spacing)


def _from_file(prepared, report) -> str:
    """What the file's metadata set (channels, voxel size), for the summary line."""
    said = []
    if prepared.axes_channel:
        said.append(f"channels on axis {report['channel_axis']}")
    voxel = report.get("voxel_size")
    if voxel is not None and voxel["from"] == "the file's metadata":
        unit = f" {voxel['unit']}" if voxel["unit"] else ""
        said.append(f"voxel size {_sizes(voxel['spacing'])}{unit}")
    return f"; {' and '.join(said)}, as the file records" if said else ""


def _report(console, outcome):
    if outcome.error is None:
        console.step(outcome.source.name)
        console.info(
            f"{outcome.source.label}: {outcome.n_components} "
            f"component{'' if outcome.n_components == 1 else 's'} -> "
            f"{outcome.source.name}_* ({len(outcome.outputs)} files){outcome.from_file}"
        )
    else:
        console.step()
        console.error(outcome.error, outcome.traceback)


def run_all(runner, sources, console, args) -> tuple[list[Outcome], int]:
    """Process every source, reporting each as it finishes.

    Returns the outcomes and the number of inputs that failed without one
    (read, but left without a model when ``--fit-on`` could not fit).
    """
    _stopping.clear()  # an earlier run in this process was interrupted: not this one
    if args.fit_on:
        return _fit_on_all(runner, sources, console, args.jobs)
    outcomes = []
    for outcome in _map(runner.process, sources, args.jobs):
        _report(console, outcome)
        outcomes.append(outcome)
    return outcomes, 0


def _fit_on_all(runner, sources, console, jobs):
    """Read every input, fit one model on all of them, then label each."""
    loaded, outcomes = _read_all(runner, sources, console, jobs)
    loaded = _same_channels(loaded, outcomes, console)
    if not loaded:
        return outcomes, 0
    if runner.shared_model is None:
        _warn_if_mixed_depths(loaded, console, runner.fit_warnings)
        _warn_if_mixed_voxel_sizes(loaded, console, runner)
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # said above, with the files' names
                warnings.filterwarnings("ignore", message="X mixes images of other types")
                runner.shared_model = runner.fit([prepared for _, prepared, _ in loaded])
        except Exception as error:
            console.error(f"fitting one model on {len(loaded)} input(s) failed: "
                          f"{describe(error)}", traceback.format_exc())
            return outcomes, len(loaded)
        runner.model_source = (
            f"fitted on {len(loaded)} input(s) together (--fit-on) in "
            f"{time.perf_counter() - started:.3f} s"
        )
    for outcome in _map(lambda item: runner.process(*item), loaded, jobs):
        _report(console, outcome)
        outcomes.append(outcome)
    return outcomes, 0


def _warn_if_mixed_depths(loaded, console, said):
    """Say (and add to ``said``) when --fit-on's inputs are of other bit depths."""
    pair = _training.mixed_depths([prepared.pixels.dtype for _, prepared, _ in loaded])
    if pair is not None:
        (first, one, _), (other, two, _) = (loaded[index] for index in pair)
        text = (
            f"--fit-on: {first.label} is {one.pixels.dtype} and {other.label} is "
            f"{two.pixels.dtype}. {_training.MIXED_DEPTHS_CONSEQUENCE} Run without "
            "--fit-on to fit each input on its own, or convert them to one bit depth first."
        )
        console.warn(text)
        said.append(text)


def _same_voxel_sizes(prepared_list) -> bool:
    """Whether the inputs all record voxels of one shape: the prior reads only the
    sizes' ratios, so 1.5 x 0.5 x 0.5 um and 1500 x 500 x 500 nm are alike."""
    shapes = {_voxel_shape(p) for p in prepared_list}
    return len(shapes) == 1 and None not in shapes


def _voxel_shape(prepared):
    """The input's voxel size divided by its smallest, to 6 digits; ``None`` without one."""
    if prepared.voxel_size is None:
        return None
    smallest = min(prepared.voxel_size)
    return tuple(float(f"{size / smallest:.6g}") for size in prepared.voxel_size)


def _warn_if_mixed_voxel_sizes(loaded, console, runner):
    """Say when --fit-on's files record voxel sizes that differ (the fit then takes none)."""
    prepared_list = [prepared for _, prepared, _ in loaded]
    if ("spacing" in runner.params or _same_voxel_sizes(prepared_list)
            or all(p.voxel_size is None for p in prepared_list)):
        return

    def size(prepared):
        if prepared.voxel_size is None:
            return "none"
        return _sizes(prepared.voxel_size) + (f" {prepared.unit}" if prepared.unit else "")

    examples = {}  # one file of each shape of voxel
    for source, prepared, _ in loaded:
        examples.setdefault(_voxel_shape(prepared), (source, prepared))
    shown = "; ".join(
        f"{source.label}: {size(prepared)}" for source, prepared in list(examples.values())[:3]
    ) + ("; …" if len(examples) > 3 else "")
    text = (
        f"--fit-on: the files record voxels of different shapes ({shown}), so the model "
        "is fitted with none (every voxel a cube); give --spacing to choose one."
    )
    console.warn(text)
    runner.fit_warnings.append(text)


def _read_all(runner, sources, console, jobs):
    """``(source, prepared, seconds)`` of every readable input, in order, and the failures."""

    def read(source):
        started = time.perf_counter()
        try:
            return source, runner.read(source), time.perf_counter() - started, None
        except Exception as error:
            return source, None, 0.0, _failure(source, error)

    loaded, outcomes = [], []
    for source, prepared, seconds, failure in _map(read, sources, jobs):
        if failure is not None:
            outcomes.append(failure)
            _report(console, failure)
        else:
            loaded.append((source, prepared, seconds))
    loaded.sort(key=lambda item: sources.index(item[0]))
    return loaded, outcomes


def _same_channels(loaded, outcomes, console):
    """The inputs with the channel count most of them have (the first's, on a
    tie); the others fail, naming one input of that count."""
    if not loaded:
        return loaded
    counts = collections.Counter(prepared.n_channels for _, prepared, _ in loaded)
    reference = max(counts, key=lambda n: (counts[n], n == loaded[0][1].n_channels))
    example = next(source for source, prepared, _ in loaded if prepared.n_channels == reference)
    others = counts[reference] - 1
    kept = []
    for source, prepared, seconds in loaded:
        if prepared.n_channels != reference:
            failure = Outcome(source, error=(
                f"{source.label}: has {prepared.n_channels} channel(s) but "
                f"{example.label}{f' and {others} other input(s)' if others else ''} "
                f"{'have' if others else 'has'} {reference}; --fit-on needs inputs with "
                "the same channels"
            ))
            outcomes.append(failure)
            _report(console, failure)
        else:
            kept.append((source, prepared, seconds))
    return kept


def _unique(texts) -> list:
    """``texts`` without repeats, in order."""
    return list(dict.fromkeys(texts))
