"""Doctest collection imports every module under src/: the napari subpackage
needs the napari extra, so it is left out when napari is not installed."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("napari") else ["src/gmm_segmenter/napari"]
