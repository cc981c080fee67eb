"""Plain functions for napari-assistant and workflow recorders: image in, labels out.

Each is typed ``napari.types.ImageData -> napari.types.LabelsData``, so napari
builds a small widget for it, puts the labels in a new layer, and tools that
record workflows (napari-assistant) can replay it. The dock widget remains
the main entry: it adds masks, time series, previews, posteriors and the plot.
"""

import pathlib
from typing import Literal

import numpy as np
from napari.types import ImageData, LabelsData

from .. import io
from ..estimator import GMMSegmenter

CovarianceType = Literal["full", "tied", "diag", "spherical"]
Channels = Literal["auto", "last axis", "none"]


def _looks_rgb(image) -> bool:
    """napari's own reading of an array as RGB(A): a last axis of 3 or 4 (at least 3-D)."""
    return image.ndim >= 3 and image.shape[-1] in (3, 4)


def _channel_axis(channels, image):
    if channels not in ("auto", "last axis", "none"):
        raise ValueError(
            f"channels must be 'auto', 'last axis' or 'none'; got {channels!r}"
        )
    if channels == "auto":
        return -1 if _looks_rgb(image) else None
    return -1 if channels == "last axis" else None


def segment_image(
    image: ImageData,
    n_components: int = 3,
    auto_smoothing: bool = True,
    smoothing: float = 1.0,
    covariance_type: CovarianceType = "full",
    channels: Channels = "auto",
    correct_bias_field: bool = False,
    random_seed: int = 0,
) -> LabelsData:
    """Segment ``image`` with a Gaussian mixture: labels 1..K, darkest first.

    ``auto_smoothing`` chooses the spatial prior's strength from the image
    (``beta='auto'``); untick it to use ``smoothing`` (0 = pixel-wise GMM).
    ``channels``: ``'auto'`` reads a last axis of 3 or 4 as colour, as
    napari shows such an image as RGB(A); ``'last axis'`` for other
    channels on the last axis; ``'none'`` for grayscale (a last axis of 3
    or 4 is then a volume's). Tick ``correct_bias_field`` for uneven
    illumination (``bias_field='auto'``).
    """
    image = np.asarray(image)
    segmenter = GMMSegmenter(
        n_components, covariance_type=covariance_type,
        beta="auto" if auto_smoothing else smoothing,
        channel_axis=_channel_axis(channels, image),
        bias_field="auto" if correct_bias_field else None, random_state=random_seed,
    )
    return segmenter.fit(image).predict(image)


def apply_model(
    image: ImageData,
    model_file: pathlib.Path = pathlib.Path("model.npz"),
    channels: Channels = "auto",
) -> LabelsData:
    """Label ``image`` with a model file written by the GMM Segmenter's Save model….

    Every image gets the same classes, without refitting. ``channels``:
    ``'auto'`` takes the last axis as channels when the model has several
    and the last axis holds that many, else none; ``'last axis'`` or
    ``'none'`` say so.
    """
    model_file = pathlib.Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(
            f"{model_file}: no such model file; choose a .npz file written by Save "
            "model… or gmm-segment --save-model."
        )
    segmenter = io.load_model(model_file)
    image = np.asarray(image)
    if channels == "auto":
        n_channels = segmenter.means_.shape[1]
        axis = -1 if n_channels > 1 and image.ndim >= 2 and image.shape[-1] == n_channels else None
    else:
        axis = _channel_axis(channels, image)
    segmenter.set_params(channel_axis=axis)
    return segmenter.predict(image)
