"""Gaussian-mixture image segmentation for scikit-learn, napari and the command line."""

from ._progress import Cancelled, progress
from ._version import __version__
from .estimator import GMMSegmenter, segment
from .io import load_model, save_model

__all__ = [
    "GMMSegmenter",
    "segment",
    "save_model",
    "load_model",
    "progress",
    "Cancelled",
    "__version__",
]
