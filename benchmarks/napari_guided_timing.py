"""Time from the end of a brush stroke to the updated preview in the napari widget.

Guide with labels with Preview on: each stroke on the scribble layer
re-segments the displayed slice. On 1024 x 1024 images (camera, grayscale;
astronaut, RGB; both resized) this paints a few strokes of two classes, one
at a time, and times each from the stroke's end (napari's ``paint`` event,
as when the mouse button is released) to the labels layer holding the new
result, with the widget's default smoothing and with beta=0. It also times
a stroke made while the previous stroke's preview still runs (that preview
is superseded). The target is under a second. Needs the napari extra and a
display (``xvfb-run -a python benchmarks/napari_guided_timing.py``).
"""

import time

import napari
import numpy as np
from qtpy.QtWidgets import QApplication
from skimage import data, transform

#: (label, points) of the strokes, in fractions of the image's height and width.
STROKES = {
    "camera": [(1, [(0.15, 0.2), (0.15, 0.8)]),      # sky
               (2, [(0.35, 0.45), (0.6, 0.45)]),     # coat
               (3, [(0.88, 0.1), (0.88, 0.9)]),      # grass
               (1, [(0.3, 0.85), (0.5, 0.9)])],
    "astronaut": [(1, [(0.2, 0.05), (0.8, 0.05)]),   # background
                  (2, [(0.25, 0.45), (0.35, 0.5)]),  # face
                  (3, [(0.8, 0.3), (0.9, 0.6)]),     # suit
                  (2, [(0.4, 0.4), (0.42, 0.52)])],
}


def stroke(layer, label, points, shape, brush_size=12, steps=40):
    """Paint ``label`` along the polyline ``points`` as one stroke; returns when it ends."""
    layer.brush_size = brush_size
    corners = np.asarray(points) * (np.asarray(shape) - 1)
    with layer.block_history():  # one undo step: its end emits `paint`
        for start, end in zip(corners[:-1], corners[1:]):
            for t in np.linspace(0, 1, steps):
                layer.paint(start + t * (end - start), label, refresh=False)
    return time.perf_counter()


def wait_for_update(widget, before):
    """Seconds until the preview after a stroke has written its labels (and napari painted)."""
    while widget.running or widget.record is before:
        QApplication.processEvents()
        time.sleep(0.002)
    QApplication.processEvents()
    return time.perf_counter()


def main():
    viewer = napari.Viewer(show=False)
    _, widget = viewer.window.add_plugin_dock_widget("gmm-segmenter", "GMM Segmenter")
    images = {
        "camera": transform.resize(data.camera(), (1024, 1024), preserve_range=True),
        "astronaut": transform.resize(data.astronaut(), (1024, 1024), preserve_range=True),
    }
    default = widget.auto_beta.value
    for name, image in images.items():
        layer = viewer.add_image(image.astype(np.uint8), name=name, rgb=image.ndim == 3)
        widget.image.value = layer
        widget.n_components.value = 3
        for smoothing in ("default", "beta=0"):
            widget.auto_beta.value = default if smoothing == "default" else False
            widget.beta.value = 0.0
            scribbles = widget.add_scribble_layer()
            scribbles.data = np.zeros_like(scribbles.data)
            widget.preview.value = True
            wait_for_update(widget, None)
            seconds = []
            for label, points in STROKES[name]:
                before = widget.record
                ended = stroke(scribbles, label, points, layer.data.shape[:2])
                seconds.append(wait_for_update(widget, before) - ended)
            # a stroke while the last one's preview runs: that preview is superseded
            before = widget.record
            stroke(scribbles, 3, [(0.95, 0.3), (0.95, 0.7)], layer.data.shape[:2])
            QApplication.processEvents()
            ended = stroke(scribbles, 1, [(0.05, 0.3), (0.05, 0.7)], layer.data.shape[:2])
            superseded = wait_for_update(widget, before) - ended
            widget.preview.value = False
            print(f"1024x1024 {name}, {smoothing} smoothing: stroke to updated preview "
                  f"{', '.join(f'{s:.2f}' for s in seconds)} s (median "
                  f"{np.median(seconds):.2f} s); a stroke during a preview "
                  f"{superseded:.2f} s (target < 1 s)")
        viewer.layers.clear()
    viewer.close()


if __name__ == "__main__":
    main()
