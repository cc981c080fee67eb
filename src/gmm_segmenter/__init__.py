"""Gaussian-mixture image segmentation for scikit-learn, napari and the command line."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._progress import Cancelled, progress
from ._version import __version__

if TYPE_CHECKING:  # for type checkers and the API docs; at run time see __getattr__
    from ._bias import BiasFieldWarning
    from .estimator import GMMSegmenter, segment
    from .io import load_model, save_model

__all__ = [
    "GMMSegmenter",
    "segment",
    "save_model",
    "load_model",
    "BiasFieldWarning",
    "progress",
    "Cancelled",
    "__version__",
]

# Loaded on first use, as scikit-image loads its submodules: the estimator
# imports scikit-learn and SciPy, which `import gmm_segmenter` and
# `gmm-segment --help` do not need.
_LAZY = {
    "GMMSegmenter": "estimator",
    "segment": "estimator",
    "save_model": "io",
    "load_model": "io",
    "BiasFieldWarning": "_bias",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return list(__all__)
