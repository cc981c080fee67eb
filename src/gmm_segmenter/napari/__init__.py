"""The napari plugin: a dock widget that segments layers with GMMSegmenter.

This subpackage is the only place that imports napari, Qt, magicgui and
matplotlib; the rest of gmm_segmenter runs without them.
"""

from ._widget import GMMSegmenterWidget

__all__ = ["GMMSegmenterWidget"]
