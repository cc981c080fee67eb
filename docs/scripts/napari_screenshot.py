"""Make docs/images/napari_widget.png: the GMM Segmenter widget in use.

The window is the size of a 1366 x 768 laptop screen. Run on a display
with OpenGL, for example headless:

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/scripts/napari_screenshot.py
"""

import os
import tempfile
import time
from pathlib import Path

# settings of our own, so toasts can be turned off without touching the user's
os.environ["NAPARI_CONFIG"] = os.path.join(tempfile.mkdtemp(), "settings.yaml")

import napari  # noqa: E402
from napari.settings import get_settings  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

OUTPUT = Path(__file__).resolve().parents[1] / "images" / "napari_widget.png"


def main():
    get_settings().application.gui_notification_level = "error"
    viewer = napari.Viewer(title="GMM Segmenter")
    viewer.window.resize(1366, 768)
    _, widget = viewer.window.add_plugin_dock_widget("gmm-segmenter", "GMM Segmenter")
    viewer.open_sample("gmm-segmenter", "coins")
    widget.image.value = viewer.layers["coins"]
    widget.auto_components.value = True
    widget.max_components.value = 4
    widget.run()
    while widget.running or widget.plot.rendering is not None:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    viewer.layers["coins GMM labels"].opacity = 0.6
    widget.scroll_area.ensureWidgetVisible(widget.plot)  # the controls scroll; show the plot
    viewer.reset_view()
    QApplication.processEvents()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUTPUT), canvas_only=False, flash=False)
    viewer.close()
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
