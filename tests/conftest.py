import os

# scikit-learn's array-API check runs only when SciPy's array API is on, which
# must be set before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest
from _images import quadrants, rgb_patches
from hypothesis import settings

from gmm_segmenter import _warmup

# No background warm-up fit beside the fits a test watches (its own test,
# tests/test_warmup.py, turns it back on).
_warmup.IN_BACKGROUND = False

# Property tests: 40 examples each by default; `pytest --hypothesis-profile=ci`
# runs 500 (the long run the reliability page reports).
settings.register_profile("quick", max_examples=40)
settings.register_profile("ci", max_examples=500)
settings.load_profile("quick")


@pytest.fixture
def quadrant_image():
    """``(image, truth)`` of :func:`_images.quadrants` with its defaults."""
    return quadrants()


@pytest.fixture
def rgb_image():
    """``(image, truth)`` of :func:`_images.rgb_patches` with its defaults."""
    return rgb_patches()


@pytest.fixture
def viewer_widget(make_napari_viewer):
    """``(viewer, widget)`` with the plugin's dock widget open (napari tests only)."""
    from _helpers import open_widget

    return open_widget(make_napari_viewer())
