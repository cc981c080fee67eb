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


def segment_image(
    image: ImageData,
    n_components: int = 3,
    auto_smoothing: bool = True,
    smoothing: float = 1.0,
    covariance_type: CovarianceType = "full",
    channels_last: bool = False,
    correct_bias_field: bool = False,
    random_seed: int = 0,
) -> LabelsData:
    """Segment ``image`` with a Gaussian mixture: labels 1..K, darkest first.

    ``auto_smoothing`` chooses the spatial prior's strength from the image
    (``beta='auto'``); untick it to use ``smoothing`` (0 = pixel-wise GMM).
    Tick ``channels_last`` for RGB or other channels on the last axis, and
    ``correct_bias_field`` for uneven illumination (``bias_field='auto'``).
    """
    segmenter = GMMSegmenter(
        n_components, covariance_type=covariance_type,
        beta="auto" if auto_smoothing else smoothing,
        channel_axis=-1 if channels_last else None,
        bias_field="auto" if correct_bias_field else None, random_state=random_seed,
    )
    return segmenter.fit(np.asarray(image)).predict(np.asarray(image))


def apply_model(
    image: ImageData,
    model_file: pathlib.Path = pathlib.Path("model.npz"),
    channels_last: bool = False,
) -> LabelsData:
    """Label ``image`` with a model file written by the GMM Segmenter's Save model….

    Every image gets the same classes, without refitting.
    """
    model_file = pathlib.Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(
            f"{model_file}: no such model file; choose a .npz file written by Save "
            "model… or gmm-segment --save-model."
        )
    segmenter = io.load_model(model_file)
    segmenter.set_params(channel_axis=-1 if channels_last else None)
    return segmenter.predict(np.asarray(image))
