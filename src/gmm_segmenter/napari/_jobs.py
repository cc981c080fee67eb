"""The work a Run does, as generators that yield progress between steps.

The widget runs these in a napari ``thread_worker``: each ``yield`` is a
point where Cancel takes effect and the progress bar moves. They use only
the public GMMSegmenter API and know nothing of napari or Qt.
"""

from __future__ import annotations

import copy
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._image import is_dask_array
from .._model import label_dtype
from .._wording import LONE_X
from ..estimator import GMMSegmenter
from . import _layers

#: At most this many pixels go into the plot's histogram.
HISTOGRAM_PIXELS = 200_000
_HISTOGRAM_BINS = 128


@dataclass
class Progress:
    """What a job reports between steps."""

    step: int
    total: int
    message: str


@dataclass
class Request:
    """The data and settings of one segmentation.

    ``frames`` are the images to segment (one, or one per time point), each
    laid out with its channels on ``channel_axis``; ``masks`` the matching
    boolean masks or ``None``; ``scribbles`` the matching integer images
    that guide the fit (``y``: 0 unknown, k "class k") or ``None``.
    """

    frames: list
    params: dict
    masks: list | None = None
    scribbles: list | None = None
    per_frame: bool = False
    shared: bool = False
    posteriors: bool = False


@dataclass
class Result:
    """Labels (and optional posteriors) per frame, the fitted models, and the
    bias field of each frame when the model corrects one."""

    labels: list
    posteriors: list | None
    models: list = field(default_factory=list)
    fields: list | None = None


def _as_frame(index, n_frames, call, *args, **kwargs):
    """``call(*args, **kwargs)`` on frame ``index`` of ``n_frames`` alone, its
    warnings and refusals naming the frame: ``X[index]``, which the dock says
    as "frame index", as it does for the frames of a fit on all of them
    (the estimator, given one frame, says ``X``: "the image" in the dock)."""
    if n_frames == 1:
        return call(*args, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call(*args, **kwargs)
        except ValueError as error:
            raise ValueError(LONE_X.sub(f"X[{index}]", str(error))) from error
    for record in caught:
        warnings.warn_explicit(LONE_X.sub(f"X[{index}]", str(record.message)),
                               record.category, record.filename, record.lineno)
    return result


def _frame_of(index, n_frames) -> str:
    """`` frame 2 (3 of 4)``: the frame as napari's slider and the messages
    number it (from 0), and how far the job is."""
    return f" frame {index} ({index + 1} of {n_frames})"


def _mask(request, index):
    return None if request.masks is None else request.masks[index]


def _guide(request, index) -> dict:
    """``y=`` for fitting frame ``index``: its scribbles, or nothing where none are painted."""
    if request.scribbles is None or not np.any(request.scribbles[index]):
        return {}
    return {"y": request.scribbles[index]}


def segment(request: Request):
    """Fit and predict; a generator that yields :class:`Progress` and returns a :class:`Result`."""
    frames = request.frames
    n_frames = len(frames)
    steps_per_frame = 2 if request.posteriors else 1
    if request.per_frame:
        total = n_frames * (1 + steps_per_frame)
    else:
        total = 1 + n_frames * steps_per_frame
    step = 0
    models, labels, posteriors, fields = [], [], [] if request.posteriors else None, []

    yield Progress(step, total, "Fitting the mixture…")
    if not request.per_frame:
        model = GMMSegmenter(**request.params)
        if request.shared and n_frames > 1:
            masks = None if request.masks is None else list(request.masks)
            guide = {} if request.scribbles is None else {"y": list(request.scribbles)}
            model.fit(list(frames), mask=masks, **guide)
        else:
            model.fit(frames[0], mask=_mask(request, 0), **_guide(request, 0))
        models.append(model)
        step += 1
    for index, frame in enumerate(frames):
        if request.per_frame:
            yield Progress(step, total, f"Fitting{_frame_of(index, n_frames)}…")
            model = _as_frame(index, n_frames, GMMSegmenter(**request.params).fit,
                              frame, mask=_mask(request, index), **_guide(request, index))
            models.append(model)
            step += 1
        yield from _label(models[-1], request, index, labels, posteriors, step, total, fields)
        step += steps_per_frame
    yield Progress(total, total, "Done")
    return Result(labels, posteriors, models, fields or None)


def _ones(field) -> bool:
    """Whether a frame's field is 1 everywhere (refused, or flat). A lazy one
    is judged by its first chunk, which keeps the rest unread: a fitted
    smooth field is not exactly 1 over a whole chunk unless it is 1 everywhere."""
    if is_dask_array(field):
        return bool(np.all(np.asarray(field.blocks[(0,) * field.ndim]) == 1))
    return bool(np.all(field == 1))


def _label(model, request, index, labels, posteriors, step, total, fields):
    """Append frame ``index``'s labels (and posteriors, and bias field) to the
    lists, yielding progress."""
    frame, mask = request.frames[index], _mask(request, index)
    n_frames = len(request.frames)
    where = _frame_of(index, n_frames) if n_frames > 1 else ""
    if model.bias_field is not None:
        yield Progress(step, total, f"Estimating the bias field{where}…")
        # the field predict divides by: the same estimate, with the same seed
        fields.append(_as_frame(index, n_frames, model.estimate_bias_field, frame, mask=mask))
    scribbles = _guide(request, index).get("y")
    if not request.posteriors:
        yield Progress(step, total, f"Labelling{where}…")
        labels.append(_keep_scribbled(
            _as_frame(index, n_frames, model.predict, frame, mask=mask), scribbles))
        return
    # one pass gives both: labels are the posteriors' argmax (0 where all are 0)
    yield Progress(step, total, f"Computing posteriors{where}…")
    maps = _as_frame(index, n_frames, model.predict_proba, frame, mask=mask)
    yield Progress(step + 1, total, f"Labelling{where}…")
    if is_dask_array(maps):  # stays lazy: napari computes what it displays
        dtype = label_dtype(maps.shape[-1])
        frame_labels = maps.map_blocks(labels_of, drop_axis=maps.ndim - 1, dtype=dtype)
    else:
        frame_labels = labels_of(maps)
    labels.append(_keep_scribbled(frame_labels, scribbles))
    posteriors.append(maps)


def _keep_scribbled(frame_labels, scribbles):
    """The labels with every scribbled pixel in its scribbled class (where
    the pixel is labelled at all); unlike ``fit_predict(X, y)``, the strokes
    do not pass their class on to their neighbours."""
    if scribbles is None:
        return frame_labels
    if is_dask_array(frame_labels) or is_dask_array(scribbles):
        import dask.array as da

        keep = (da.asarray(scribbles) > 0) & (frame_labels > 0)
        return da.where(keep, da.asarray(scribbles).astype(frame_labels.dtype), frame_labels)
    keep = (scribbles > 0) & (frame_labels > 0)
    frame_labels[keep] = scribbles[keep]
    return frame_labels


def labels_of(maps):
    """Labels 1..K from posterior maps (components last); 0 where all are 0."""
    frame_labels = np.argmax(maps, axis=-1).astype(label_dtype(maps.shape[-1]))
    frame_labels += 1
    frame_labels[~maps.any(axis=-1)] = 0
    return frame_labels


def apply(model, request: Request):
    """Predict with an already fitted ``model``; same protocol as :func:`segment`."""
    model = copy.deepcopy(model)
    settable = set(model.get_params(deep=False))
    model.set_params(**{k: v for k, v in request.params.items() if k in settable})
    n_frames = len(request.frames)
    steps_per_frame = 2 if request.posteriors else 1
    total = n_frames * steps_per_frame
    step = 0
    labels, posteriors, fields = [], [] if request.posteriors else None, []
    for index in range(n_frames):
        yield from _label(model, request, index, labels, posteriors, step, total, fields)
        step += steps_per_frame
    yield Progress(total, total, "Done")
    return Result(labels, posteriors, [model], fields or None)


def stack(arrays: list, time_axis: int | None) -> np.ndarray:
    """Frames back into one array (the time axis first, as in the layer)."""
    if time_axis is None:
        return arrays[0]
    if any(is_dask_array(array) for array in arrays):
        import dask.array as da

        return da.stack(arrays, axis=0)
    return np.stack(arrays, axis=0)


@dataclass
class Outputs:
    """Everything the viewer shows after a job, computed in the worker thread.

    ``labels`` (time first, as in the layer); ``posteriors`` with the
    components first (a slider of their own) and ``uncertainty``, or None;
    ``components`` the one-component Labels arrays, or None; ``histograms``
    one ``(counts, edges)`` per model (per frame when each frame has its
    own model), or None when the plot shows no histogram; ``bias_field``
    the fields the labels were made with (time first, channels before
    that), or None without a correction; ``bias_refused`` that a field was
    asked for and every frame's is 1 everywhere: refused (the estimator
    warned why, a :class:`~gmm_segmenter.BiasFieldWarning`) or flat.
    ``shares``: with the histograms, each model's share of the labelled
    pixels per label (None for lazy labels), which the plot sizes a guided
    model's curves by (see :func:`._plot.draw`). ``corrected``: with the
    histograms, whether each one's values are divided by an estimated bias
    field (True, False, or "partly" when some of its frames' were refused).
    """

    labels: object
    models: list
    posteriors: object = None
    uncertainty: object = None
    components: list | None = None
    histograms: list | None = None
    bias_field: object = None
    bias_refused: bool = False
    shares: list | None = None
    corrected: list | None = None


def then(job, finish):
    """Run ``job``, then ``finish(result)`` in the same (worker) thread."""
    result = yield from job
    return finish(result)


def outputs(result: Result, request: Request, *, time_axis, per_component, histogram):
    """Stack a job's frames into layer arrays and the plot's histograms (worker thread).

    ``histogram`` says whether the plot shows the pixel values (a single
    channel); with one model per frame each frame gets its own histogram.
    """
    labels = stack(result.labels, time_axis)
    out = Outputs(labels=labels, models=result.models)
    if result.fields is not None:
        fields = stack(result.fields, time_axis)
        channel_axis = request.params.get("channel_axis")
        if channel_axis is not None:  # one field per channel: on an axis of their own
            frame_ndim = result.fields[0].ndim
            axis = channel_axis % frame_ndim + (0 if time_axis is None else 1)
            fields = np.moveaxis(fields, axis, 0)
        if all(_ones(field) for field in result.fields):
            out.bias_refused = True  # a layer of ones would only look like a field
        else:
            out.bias_field = fields
    if result.posteriors is not None:
        posteriors = stack(result.posteriors, time_axis)
        if is_dask_array(posteriors):
            out.uncertainty = posteriors.map_blocks(
                _layers.entropy, drop_axis=posteriors.ndim - 1, dtype=np.float32
            )
        else:
            out.uncertainty = _layers.entropy(posteriors)
        out.posteriors = np.moveaxis(posteriors, -1, 0)
    if per_component:
        n_components = int(max(model.n_components_ for model in result.models))
        out.components = [
            _component(labels, k) for k in range(1, n_components + 1)
        ]
    if histogram:
        channel_axis = request.params.get("channel_axis")
        frames = list(request.frames)
        # the models describe the corrected values: the sample is divided by its field
        fields = result.fields or [None] * len(frames)
        if channel_axis is None or frames[0].shape[channel_axis] == 1:
            histogram_of = pixel_histogram
        else:
            def histogram_of(frames, masks, fields):
                return channel_histogram(frames, masks, channel_axis, fields)
        applied = [field is not None and not _ones(field) for field in fields]
        if len(result.models) > 1:
            out.corrected = applied
            out.histograms = [
                histogram_of(frame, _mask(request, index), fields[index])
                for index, frame in enumerate(frames)
            ]
        else:
            out.corrected = [all(applied) or ("partly" if any(applied) else False)]
            out.histograms = [histogram_of(frames, request.masks, fields)]
        if not any(is_dask_array(frame_labels) for frame_labels in result.labels):
            per_model = result.labels if len(result.models) > 1 else [result.labels]
            out.shares = [
                label_shares(labels, model.n_components_)
                for labels, model in zip(per_model, result.models)
            ]
    return out


def label_shares(labels, n_components) -> np.ndarray | None:
    """The share of each label ``1..n_components`` among the labelled pixels of
    ``labels`` (an array or a list of them); ``None`` when none is labelled."""
    listed = labels if isinstance(labels, list) else [labels]
    counts = sum(
        np.bincount(np.asarray(frame).ravel(), minlength=n_components + 1)[1 : n_components + 1]
        for frame in listed
    )
    total = counts.sum()
    return None if total == 0 else counts / total


def _component(labels, k):
    if is_dask_array(labels):
        return labels.map_blocks(lambda block: np.where(block == k, block, 0), dtype=labels.dtype)
    return np.where(labels == k, labels, 0).astype(labels.dtype)


def pixel_values(frames, masks=None, limit=HISTOGRAM_PIXELS, fields=None):
    """An evenly strided sample of at most about ``limit`` pixel values of ``frames``.

    ``frames`` is one array or a list of them (with their masks, and bias
    ``fields`` the sample is divided by); lazy arrays are read only at the
    sampled pixels.
    """
    if not isinstance(frames, list):
        frames, masks = [frames], None if masks is None else [masks]
        fields = None if fields is None else [fields]
    share = max(1, limit // max(len(frames), 1))
    values = []
    for index, frame in enumerate(frames):
        mask = None if masks is None else masks[index]
        field = None if fields is None else fields[index]
        stride = max(1, int(np.ceil((frame.size / share) ** (1 / frame.ndim))))
        sample = (slice(None, None, stride),) * frame.ndim
        part = np.asarray(frame[sample])
        if field is not None:
            part = part / np.asarray(field[sample])
        if mask is not None:
            part = part[np.asarray(mask)[sample]]
        values.append(part.ravel())
    values = np.concatenate(values) if values else np.zeros(0)
    return values[np.isfinite(values)] if values.dtype.kind == "f" else values


def pixel_histogram(frames, masks=None, fields=None):
    """``(counts, edges)`` of a sample of the pixel values (divided by their bias
    ``fields``, if any): one bin per grey level for integers of a narrow
    range, else 128 bins between the 0.1 and 99.9 percentiles. ``None`` when
    there is no finite pixel."""
    values = pixel_values(frames, masks, fields=fields)
    if values.size == 0:
        return None
    values = values.astype(np.float64, copy=False)
    low, high = np.percentile(values, [0.1, 99.9])
    if high - low < 2 * _HISTOGRAM_BINS and np.all(values == np.round(values)):
        edges = np.arange(np.floor(low) - 0.5, np.ceil(high) + 1.5)  # one bin per level
    elif high > low:
        edges = np.linspace(low, high, _HISTOGRAM_BINS + 1)
    else:
        edges = np.array([low - 0.5, low + 0.5])
    counts, edges = np.histogram(values, bins=edges)
    return counts, edges


#: Bins along each axis of the plot's histogram of two channels.
_CHANNEL_BINS = 96


@dataclass(frozen=True)
class ChannelHistogram:
    """Counts of the pixels of several channels over a plane of their values.

    ``counts[i, j]`` counts the pixels whose coordinates fall in bin ``i`` of
    ``x_edges`` and ``j`` of ``y_edges``. Coordinates are
    ``projection @ (value - centre)``: the channels themselves for two of
    them, else the two directions in which the sampled pixels spread most
    (principal axes), where a mixture's components show as ellipses.
    """

    counts: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray
    projection: np.ndarray
    centre: np.ndarray

    @property
    def by_channels(self) -> bool:
        return self.projection.shape == (2, 2) and np.array_equal(self.projection, np.eye(2))


def channel_histogram(frames, masks, channel_axis, fields=None) -> ChannelHistogram | None:
    """:class:`ChannelHistogram` of a sample of the pixels of ``frames`` (their
    channels on ``channel_axis``), divided by ``fields`` (one each, or None);
    ``None`` without a finite pixel."""
    listed = frames if isinstance(frames, list) else [frames]
    listed_masks = masks if isinstance(frames, list) else [masks]
    listed_fields = fields if isinstance(frames, list) else [fields]
    share = max(1, HISTOGRAM_PIXELS // max(len(listed), 1))
    rows = []
    for index, frame in enumerate(listed):
        mask = None if listed_masks is None else listed_masks[index]
        field = None if listed_fields is None else listed_fields[index]
        n_spatial = frame.ndim - 1
        stride = max(1, int(np.ceil((frame.size / frame.shape[channel_axis] / share)
                                    ** (1 / max(n_spatial, 1)))))
        sample = (slice(None, None, stride),) * n_spatial
        part = np.asarray(np.moveaxis(frame, channel_axis, -1)[sample], dtype=np.float64)
        if field is not None:
            part = part / np.asarray(np.moveaxis(field, channel_axis, -1)[sample])
        part = part.reshape(-1, part.shape[-1])
        if mask is not None:
            part = part[np.asarray(mask)[sample].reshape(-1)]
        rows.append(part)
    table = np.concatenate(rows) if rows else np.zeros((0, 2))
    table = table[np.all(np.isfinite(table), axis=1)]
    if len(table) == 0:
        return None
    n_channels = table.shape[1]
    if n_channels == 2:
        centre, projection = np.zeros(2), np.eye(2)
    else:
        centre = table.mean(axis=0)
        _, vectors = np.linalg.eigh(np.cov(table - centre, rowvar=False))
        projection = vectors[:, ::-1][:, :2].T  # largest spread first
        projection *= np.where(projection.sum(axis=1) < 0, -1.0, 1.0)[:, np.newaxis]
    points = (table - centre) @ projection.T
    edges = []
    for column in points.T:
        low, high = np.percentile(column, [0.5, 99.5])
        if not high > low:
            low, high = low - 0.5, low + 0.5
        edges.append(np.linspace(low, high, _CHANNEL_BINS + 1))
    counts, x_edges, y_edges = np.histogram2d(points[:, 0], points[:, 1], bins=edges)
    return ChannelHistogram(counts, x_edges, y_edges, projection, centre)


class Meter:
    """One fraction of a job that only grows, from its steps and the estimator's reports.

    The job's steps (:class:`Progress`) split the bar. Inside a step the
    estimator reports stages ("EM", "labelling", "smoothing", "spatial EM"
    …, which alternate during a spatial fit); each change of stage takes
    :attr:`SHARE` of what is left of the step and the stage's own count
    fills it, so the bar keeps moving during a long fit instead of jumping
    at its end, and never goes back. Written from the worker thread, read
    from the UI thread.
    """

    SHARE = 0.4

    def __init__(self):
        self._lock = threading.Lock()
        self.step, self.total, self.message = 0, 1, "Starting…"
        self._begin_step()

    def _begin_step(self):
        self._within, self._base, self._span, self._stage = 0.0, 0.0, 0.0, None

    def job(self, progress: Progress):
        """The job reached a new step."""
        with self._lock:
            self.step, self.total = progress.step, max(progress.total, 1)
            self.message = progress.message
            self._begin_step()

    def report(self, stage, done, total):
        """The estimator's progress report (the ``_progress`` callback's arguments)."""
        fraction = min(done / total, 1.0) if total else 0.0
        with self._lock:
            if stage != self._stage:
                self._base = self._within
                self._span = (1.0 - self._base) * self.SHARE
                self._stage = stage
            self._within = max(self._within, self._base + self._span * fraction)

    def fraction(self) -> float:
        """How much of the job is done, in [0, 1]."""
        with self._lock:
            return min((self.step + self._within) / self.total, 1.0)
