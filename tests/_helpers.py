"""Small helpers shared by the test modules (imported as ``from _helpers import ...``)."""

import numpy as np
from sklearn.metrics import adjusted_rand_score

from gmm_segmenter import GMMSegmenter, cli


def make_segmenter(n_components=3, **params):
    """A seeded GMMSegmenter, pixel-wise (``beta=0``) unless ``beta`` is given.

    Spatial smoothing changes labels by design; the tests that pin labels,
    or only need a fast fit, use the pixel-wise model.
    """
    return GMMSegmenter(n_components, random_state=0, **{"beta": 0.0, **params})


def ari(truth, labels):
    """The adjusted Rand index of two label maps of any shape."""
    return adjusted_rand_score(np.ravel(truth), np.ravel(labels))


def run_cli(argv, capsys=None):
    """``gmm-segment argv`` in-process: the exit status, with ``capsys`` also (stdout, stderr)."""
    status = cli.main([str(argument) for argument in argv])
    if capsys is None:
        return status
    out, err = capsys.readouterr()
    return status, out, err


def open_widget(viewer):
    """``(viewer, widget)``: the plugin's dock widget opened the way
    ``napari -w gmm-segmenter`` opens it, through the installed manifest."""
    _, widget = viewer.window.add_plugin_dock_widget("gmm-segmenter", "GMM Segmenter")
    return viewer, widget


def run_widget(qtbot, widget, action=None, *, timeout_ms):
    """Start a job with ``action`` (default: the Run button's) and wait for it to end."""
    (action or widget.run)()
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout_ms)


def fixed_smoothing(widget, beta):
    """Untick the widget's automatic smoothing and set the strength to ``beta``."""
    widget.auto_beta.value = False
    widget.beta.value = beta
