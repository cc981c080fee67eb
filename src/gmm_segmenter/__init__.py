"""Gaussian-mixture image segmentation for scikit-learn, napari and the command line."""

from importlib.metadata import PackageNotFoundError, version

from ._progress import Cancelled, progress
from .estimator import GMMSegmenter, segment
from .io import load_model, save_model

try:
    __version__ = version("gmm-segmenter")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "GMMSegmenter",
    "segment",
    "save_model",
    "load_model",
    "progress",
    "Cancelled",
    "__version__",
]
