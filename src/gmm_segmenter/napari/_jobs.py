"""The work a Run does, as generators that yield progress between steps.

The widget runs these in a napari ``thread_worker``: each ``yield`` is a
point where Cancel takes effect and the progress bar moves. They use only
the public GMMSegmenter API and know nothing of napari or Qt.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .._image import is_dask_array
from .._model import label_dtype
from ..estimator import GMMSegmenter


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
    boolean masks or ``None``.
    """

    frames: list
    params: dict
    masks: list | None = None
    per_frame: bool = False
    shared: bool = False
    posteriors: bool = False


@dataclass
class Result:
    """Labels (and optional posteriors) per frame, and the fitted models."""

    labels: list
    posteriors: list | None
    models: list = field(default_factory=list)


def _mask(request, index):
    return None if request.masks is None else request.masks[index]


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
    models, labels, posteriors = [], [], [] if request.posteriors else None

    yield Progress(step, total, "Fitting the mixture…")
    if not request.per_frame:
        model = GMMSegmenter(**request.params)
        if request.shared and n_frames > 1:
            masks = None if request.masks is None else list(request.masks)
            model.fit(list(frames), mask=masks)
        else:
            model.fit(frames[0], mask=_mask(request, 0))
        models.append(model)
        step += 1
    for index, frame in enumerate(frames):
        if request.per_frame:
            yield Progress(step, total, f"Fitting frame {index + 1} of {n_frames}…")
            model = GMMSegmenter(**request.params).fit(frame, mask=_mask(request, index))
            models.append(model)
            step += 1
        yield from _label(models[-1], request, index, labels, posteriors, step, total)
        step += steps_per_frame
    yield Progress(total, total, "Done")
    return Result(labels, posteriors, models)


def _label(model, request, index, labels, posteriors, step, total):
    """Append frame ``index``'s labels (and posteriors) to the lists, yielding progress."""
    frame, mask = request.frames[index], _mask(request, index)
    n_frames = len(request.frames)
    where = f" frame {index + 1} of {n_frames}" if n_frames > 1 else ""
    if not request.posteriors:
        yield Progress(step, total, f"Labelling{where}…")
        labels.append(model.predict(frame, mask=mask))
        return
    # one pass gives both: labels are the posteriors' argmax (0 where all are 0)
    yield Progress(step, total, f"Computing posteriors{where}…")
    maps = model.predict_proba(frame, mask=mask)
    yield Progress(step + 1, total, f"Labelling{where}…")
    if is_dask_array(maps):  # stays lazy: napari computes what it displays
        dtype = label_dtype(maps.shape[-1])
        labels.append(maps.map_blocks(labels_of, drop_axis=maps.ndim - 1, dtype=dtype))
    else:
        labels.append(labels_of(maps))
    posteriors.append(maps)


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
    labels, posteriors = [], [] if request.posteriors else None
    for index in range(n_frames):
        yield from _label(model, request, index, labels, posteriors, step, total)
        step += steps_per_frame
    yield Progress(total, total, "Done")
    return Result(labels, posteriors, [model])


def stack(arrays: list, time_axis: int | None) -> np.ndarray:
    """Frames back into one array (the time axis first, as in the layer)."""
    if time_axis is None:
        return arrays[0]
    if any(is_dask_array(array) for array in arrays):
        import dask.array as da

        return da.stack(arrays, axis=0)
    return np.stack(arrays, axis=0)
