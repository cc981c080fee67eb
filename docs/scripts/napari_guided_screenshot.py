"""Make docs/images/napari_guided.png: Guide with labels in the GMM Segmenter widget.

The astronaut sample with a few strokes of three classes (face, suit,
wall) painted into "astronaut scribbles", four components, and the labels
of Run: classes 1-3 follow the strokes, the unpainted fourth takes the dark
helmet. The window is the size of a 1366 x 768 laptop screen. Run on a
display with OpenGL, for example headless:

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/scripts/napari_guided_screenshot.py
"""

import os
import tempfile
import time
from pathlib import Path

# settings of our own, so toasts can be turned off without touching the user's
os.environ["NAPARI_CONFIG"] = os.path.join(tempfile.mkdtemp(), "settings.yaml")

import napari  # noqa: E402
import numpy as np  # noqa: E402
from napari.settings import get_settings  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

OUTPUT = Path(__file__).resolve().parents[1] / "images" / "napari_guided.png"

#: label -> strokes, each a polyline of (row, column) points on the 512 x 512 image
STROKES = {
    1: [[(125, 205), (170, 240)]],                          # face
    2: [[(300, 90), (440, 120)], [(290, 320), (340, 330)]],  # suit
    3: [[(20, 300), (120, 340)]],                           # wall
}


def paint(layer, label, points, steps=60):
    """One brush stroke of ``label`` along ``points``, as napari's brush makes it."""
    with layer.block_history():
        for start, end in zip(points[:-1], points[1:]):
            for t in np.linspace(0, 1, steps):
                layer.paint(np.add(start, t * np.subtract(end, start)), label, refresh=False)
    layer.refresh()


def main():
    get_settings().application.gui_notification_level = "error"
    viewer = napari.Viewer(title="GMM Segmenter")
    viewer.window.resize(1366, 768)
    _, widget = viewer.window.add_plugin_dock_widget("gmm-segmenter", "GMM Segmenter")
    viewer.open_sample("gmm-segmenter", "astronaut")
    widget.image.value = viewer.layers["astronaut"]
    widget.n_components.value = 4
    scribbles = widget.add_scribble_layer()  # the button "New scribble layer"
    scribbles.brush_size = 9
    for label, strokes in STROKES.items():
        for points in strokes:
            paint(scribbles, label, points)
    scribbles.selected_label = 3
    widget.run()
    while widget.running or widget.plot.rendering is not None:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    viewer.layers["astronaut GMM labels"].opacity = 0.55
    viewer.layers.selection.active = scribbles
    # the controls scroll: show the guide's choice and the run's status
    widget.scroll_area.ensureWidgetVisible(widget.status.native, 0, 50)
    widget.scroll_area.ensureWidgetVisible(widget.scribbles.native, 0, 50)
    viewer.reset_view()
    QApplication.processEvents()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUTPUT), canvas_only=False, flash=False)
    labels = viewer.layers["astronaut GMM labels"].data
    painted = scribbles.data > 0
    agree = np.mean(labels[painted] == scribbles.data[painted])
    print(f"labels on the strokes equal to the strokes: {agree:.1%}")
    viewer.close()
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
