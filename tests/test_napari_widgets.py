"""The napari widget as a microscopist meets it: saving and loading, the plot,
the layout on a laptop screen, progress, provenance, bad input, and the
function widgets for napari-assistant.

Needs a display with OpenGL: run under Xvfb, e.g.
``xvfb-run -a -s "-screen 0 1366x768x24" python -m pytest tests/test_napari_widgets.py``.
"""

import inspect
import json
import re
import subprocess
import sys
import threading
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari comes with the napari extra")
pytest.importorskip("pytestqt", reason="pytest-qt comes with the test extra")

from napari.utils.notifications import notification_manager  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

try:  # the shared test images
    from _images import quadrants, rgb_patches  # noqa: E402
except ImportError:
    from conftest import quadrants, rgb_patches  # noqa: E402
from _helpers import fixed_smoothing, open_widget, run_widget  # noqa: E402
from gmm_segmenter import GMMSegmenter  # noqa: E402
from gmm_segmenter.napari import _functions, _jobs, _record  # noqa: E402
from gmm_segmenter._wording import count  # noqa: E402

TIMEOUT_MS = 60_000
ROOT = Path(__file__).resolve().parents[1]


def run(qtbot, widget, action=None):
    run_widget(qtbot, widget, action, timeout_ms=TIMEOUT_MS)


def new_messages(since, severity="error"):
    return [n.message for n in notification_manager.records[since:] if n.severity == severity]


def astronaut_1024():
    from skimage import data, transform

    return transform.resize(data.astronaut(), (1024, 1024), preserve_range=True).astype(np.uint8)


class PauseTimer:
    """The longest gap between ticks of a 10 ms timer in the UI thread."""

    def __init__(self):
        self.longest = 0.0
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(10)
        self._timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        self.longest = max(self.longest, now - self._last)
        self._last = now

    def start(self):
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self):
        self._timer.stop()
        self._tick()


# ---------------------------------------------------- 1. save and load


def test_a_saved_model_gets_npz_and_files_without_it_still_load(qtbot, viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    image, _ = quadrants()
    viewer.add_image(image, name="coins")
    widget.image.value = viewer.layers["coins"]
    widget.n_components.value = 4
    run(qtbot, widget)
    written = widget.save_model(tmp_path / "coins_model")  # typed without extension
    assert written == tmp_path / "coins_model.npz" and written.exists()
    assert "coins_model.npz" in widget.status.value
    # the file keeps the record of how the model was made
    with np.load(written, allow_pickle=False) as archive:
        record = json.loads(str(archive["metadata"]))["record"]
    assert record["python"] == widget.record["python"]
    assert record["model"]["n_components"] == 4
    assert record["model"]["spatial_converged"] == widget.model.spatial_converged_
    assert record["model"]["spatial_n_iter"] == widget.model.spatial_n_iter_ > 0

    renamed = tmp_path / "no_extension"
    renamed.write_bytes(written.read_bytes())
    widget.model = None
    assert widget.load_model(renamed).n_components_ == 4

    other_kind = tmp_path / "picture.png"
    other_kind.write_bytes(b"\x89PNG\r\n\x1a\n not a model")
    since = len(notification_manager.records)
    assert widget.load_model(other_kind) is None
    errors = new_messages(since)
    assert any("not a valid gmm-segmenter model file" in m and "Choose a .npz" in m
               for m in errors), errors
    # the dock's advice only, not the command line's and Python's as well
    assert not any("--save-model or save_model" in m for m in errors), errors
    assert widget.model is not None and not widget.running
    assert widget.status.value == "Not loaded; see the notification."
    # a save that fails says so there too, not what the last action said
    assert widget.save_model(tmp_path / "no such folder" / "model.npz") is None
    assert widget.status.value == "Not saved; see the notification."


# ------------------------------------------------- 2. per-frame plot


def test_the_plot_shows_the_displayed_frames_histogram(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, _ = quadrants((48, 48))
    series = np.stack([image + 100.0 * t for t in range(4)])  # brightness drifts
    viewer.add_image(series, name="drift")
    widget.image.value = viewer.layers["drift"]
    widget.n_components.value = 4
    fixed_smoothing(widget, 0.0)
    widget.leading_axis.value = "per-frame"
    viewer.dims.set_current_step(0, 3)
    run(qtbot, widget)
    model, histogram, *_ = widget.plot._drawn
    counts, edges = histogram
    assert edges[0] > 300 - 60 and model is widget.model  # frame 3, not frame 0
    np.testing.assert_allclose(model.means_.min(), 320, atol=10)
    viewer.dims.set_current_step(0, 1)  # the plot follows the slider
    model, (counts, edges), *_ = widget.plot._drawn
    assert edges[0] < 200 and np.isclose(model.means_.min(), 120, atol=10)

    widget.leading_axis.value = "shared"
    run(qtbot, widget)
    _, (counts, edges), *_ = widget.plot._drawn
    assert edges[0] < 50 and edges[-1] > 500  # every frame's pixels


def test_messages_of_one_frame_name_that_frame(qtbot, viewer_widget):
    # a frame fitted or labelled alone was "the image", which read as the whole layer
    viewer, widget = viewer_widget
    image, _ = quadrants((48, 48))
    series = np.stack([image, image, (image > image.mean()).astype(float) * 100])
    viewer.add_image(series, name="movie", axis_labels=("t", "y", "x"))
    widget.image.value = viewer.layers["movie"]
    widget.n_components.value = 3
    fixed_smoothing(widget, 0.0)
    widget.leading_axis.value = "per-frame"
    since = len(notification_manager.records)
    run(qtbot, widget)
    errors = new_messages(since)
    assert any("frame 2's valid pixels hold only 2" in m or "of frame 2 hold only 2" in m
               for m in errors), errors
    assert not any("the image" in m for m in errors), errors
    # a mask that keeps nothing of frame 1, one model for all: frame 1 named each time
    mask = np.ones(series.shape, dtype=np.uint8)
    mask[1] = 0
    viewer.add_labels(mask, name="keep")
    widget.mask.value = viewer.layers["keep"]
    widget.leading_axis.value = "shared"
    since = len(notification_manager.records)
    viewer.layers["movie"].data = np.stack([image, image, image + 1.0])
    run(qtbot, widget)
    warned = new_messages(since, severity="warning")
    assert any("The mask keeps no pixel of frame 1" in m for m in warned), warned
    assert not any("of the image" in m for m in warned), warned


# ------------------------------------------- 3. no freeze at the end


def test_the_end_of_a_1024_rgb_run_costs_the_ui_thread_under_100_ms(
    qtbot, viewer_widget
):
    """The longest UI-thread pause during and at the end of a rerun, napari's
    painting included, stays under 100 ms, and so does the plugin's own work
    at the end (layers updated, record, plot handed to a thread). The first
    run's pause, which includes napari creating the Labels layer, is printed."""
    viewer, widget = viewer_widget
    viewer.add_image(astronaut_1024(), name="astronaut", rgb=True)
    widget.image.value = viewer.layers["astronaut"]
    first = PauseTimer()
    first.start()
    run(qtbot, widget)  # the first run adds the layers (napari's own cost)
    qtbot.wait(200)
    first.stop()
    print(f"1024x1024 RGB first run: longest UI-thread pause {first.longest * 1000:.0f} ms")
    finishing = []
    show_result = widget._show_result

    def timed(*args, **kwargs):
        started = time.perf_counter()
        show_result(*args, **kwargs)
        finishing.append(time.perf_counter() - started)

    widget._show_result = timed
    # up to three reruns: work the plugin puts on the UI thread pauses it in
    # every one, a busy machine (another process scheduled in) only in some
    longest = []
    for seed in (1, 2, 3):
        widget.seed.value = seed
        finishing.clear()
        pauses = PauseTimer()
        pauses.start()
        run(qtbot, widget)
        qtbot.waitUntil(lambda: widget.plot.rendering is None, timeout=TIMEOUT_MS)
        qtbot.wait(200)  # the layer's repaint
        pauses.stop()
        print(f"1024x1024 RGB rerun: end-of-run UI work {finishing[0] * 1000:.0f} ms, "
              f"longest UI-thread pause {pauses.longest * 1000:.0f} ms")
        longest.append((max(finishing[0], pauses.longest), finishing[0], pauses.longest))
        if longest[-1][0] <= 0.100:
            break
    _, finished, paused = min(longest)
    assert finished <= 0.100
    assert paused <= 0.100


def test_the_histogram_is_drawn_in_milliseconds_whatever_the_grey_levels(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60_000, size=(1024, 1024)).astype(np.uint16)
    model = GMMSegmenter(3, beta=0, random_state=0).fit(image[::8, ::8])
    histogram = _jobs.pixel_histogram(image)
    assert len(histogram[0]) <= 128
    started = time.perf_counter()
    widget.plot.show_model(model, histogram, {})
    assert time.perf_counter() - started < 0.05  # matplotlib runs in a worker thread
    qtbot.waitUntil(lambda: widget.plot.rendering is None, timeout=TIMEOUT_MS)
    assert not widget.plot.pixmap().isNull()
    levels = _jobs.pixel_histogram(np.arange(100, dtype=np.uint8).reshape(10, 10))
    assert len(levels[0]) == 100  # one bin per grey level when there are few


# ------------------------------------------ 4. stale output layers


def test_posterior_layers_follow_the_settings_and_keep_their_visibility(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, _ = quadrants()
    viewer.add_image(image, name="quads", axis_labels=("y", "x"))
    widget.image.value = viewer.layers["quads"]
    widget.n_components.value = 4
    widget.posteriors.value = True
    run(qtbot, widget)
    posteriors = viewer.layers["quads GMM posteriors"]
    assert not posteriors.visible
    # the slider over the components is called so; the image's axes keep their names
    assert tuple(posteriors.axis_labels) == ("component", "y", "x")
    assert tuple(viewer.layers["quads GMM labels"].axis_labels) == ("y", "x")
    posteriors.visible = True  # the user looks at them
    widget.n_components.value = 3
    run(qtbot, widget)
    assert viewer.layers["quads GMM posteriors"].visible
    assert viewer.layers["quads GMM posteriors"].data.shape[0] == 3
    widget.posteriors.value = False
    run(qtbot, widget)
    assert "quads GMM posteriors" not in viewer.layers
    assert "quads GMM uncertainty" not in viewer.layers


def test_outputs_follow_an_image_that_gained_an_axis_since_the_last_run(qtbot, viewer_widget):
    # napari cannot give an existing layer data of more dimensions (it raised
    # IndexError): the outputs are made anew in their places, keeping what
    # the user showed
    viewer, widget = viewer_widget
    image, _ = quadrants()
    viewer.add_image(image, name="im")
    widget.image.value = viewer.layers["im"]
    widget.n_components.value = 3
    widget.posteriors.value = True
    fixed_smoothing(widget, 0.5)
    since = len(notification_manager.records)
    run(qtbot, widget)
    viewer.layers["im GMM uncertainty"].visible = True
    viewer.layers.remove("im")
    viewer.add_image(np.stack([image, image[::-1]]), name="im", axis_labels=("z", "y", "x"))
    order = [layer.name for layer in viewer.layers]
    widget.image.value = viewer.layers["im"]
    run(qtbot, widget)
    assert not new_messages(since)
    assert [layer.name for layer in viewer.layers] == order
    assert viewer.layers["im GMM labels"].data.shape == (2,) + image.shape
    assert viewer.layers["im GMM posteriors"].data.shape == (3, 2) + image.shape
    assert viewer.layers["im GMM uncertainty"].data.shape == (2,) + image.shape
    assert tuple(viewer.layers["im GMM posteriors"].axis_labels) == ("component", "z", "y", "x")
    assert viewer.layers["im GMM uncertainty"].visible
    assert not viewer.layers["im GMM posteriors"].visible


# ------------------------------------------------------- 5. layout


def test_the_widget_fits_a_1366_by_768_screen_with_a_long_layer_name(qtbot, make_napari_viewer):
    viewer, widget = open_widget(make_napari_viewer(show=True))
    name = "2024-05-17_HeLa_H2B-GFP_timelapse_pos03_ch1_deconvolved"
    image, _ = quadrants()
    viewer.add_image(image, name=name)
    widget.image.value = viewer.layers[name]
    widget.auto_components.value = True
    widget.max_components.value = 3
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    assert name in widget.status.value
    # the number BIC chose is said to be its choice
    assert widget.status.value.startswith(
        f"Fitted: {count(widget.model.n_components_, 'component')} (by BIC) → "
    ), widget.status.value
    narrow = widget.native.minimumSizeHint()
    assert narrow.width() <= 420, narrow
    assert narrow.height() <= 400, narrow  # the rest scrolls
    window = widget.native.window()
    assert window.minimumSizeHint().height() <= 768 - 60
    assert window.minimumSizeHint().width() <= 1366
    assert widget.scroll_area.widget().isAncestorOf(widget.plot)
    assert widget.status.native.wordWrap()
    QApplication.processEvents()
    # napari's styling widens the controls after the dock is built: none is cut off
    assert widget.scroll_area.horizontalScrollBar().maximum() == 0


# ----------------------------------------------------- 6. progress


def test_progress_moves_every_second_in_the_widget_and_the_activity_panel(
    qtbot, viewer_widget
):
    from napari.utils import progress as activity_progress

    viewer, widget = viewer_widget
    # 2048 x 2048: a run of a few seconds, long enough to watch the bar step
    # (a 1024 one ends in 0.9 s, where a loaded machine's samples saw 4 positions)
    viewer.add_image(np.tile(astronaut_1024(), (2, 2, 1)), name="astronaut", rgb=True)
    widget.image.value = viewer.layers["astronaut"]
    seen, activity = [], []

    def sample():
        if widget.running:
            seen.append((time.perf_counter(), widget.progress.value, widget.status.value))
            activity.extend(bar.n for bar in list(activity_progress._all_instances)
                            if "astronaut" in (bar.desc or "") or bar is widget._activity)

    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(sample)
    timer.start()
    run(qtbot, widget)
    timer.stop()
    changes = [t for (t, *state), (_, *before) in zip(seen[1:], seen) if state != before]
    gaps = np.diff([seen[0][0]] + changes + [seen[-1][0]])
    values = [value for _, value, _ in seen]
    print(f"longest time without a change: {gaps.max():.2f} s; "
          f"{len(set(values))} bar positions")
    # the status shows whole seconds, so it changes every second; sampled every
    # 50 ms on a loaded machine, a change can be seen up to a few samples late
    assert gaps.max() <= 1.25
    assert len(set(values)) >= 5 and values == sorted(values)  # moves, never back
    assert max(activity, default=0) > 0  # napari's activity panel had the bar
    assert widget._activity is None and widget not in activity_progress._all_instances


def test_the_meter_only_grows_and_splits_steps_by_stage():
    meter = _jobs.Meter()
    meter.job(_jobs.Progress(0, 2, "Fitting"))
    readings = []
    for stage, done, total in [("EM", 5, 100), ("EM", 50, 100), ("labelling", 1, 2),
                               ("smoothing", 1, 3), ("spatial EM", 1, 20),
                               ("EM", 1, 100)]:
        meter.report(stage, done, total)
        readings.append(meter.fraction())
    assert readings == sorted(readings) and readings[-1] < 0.5
    meter.job(_jobs.Progress(1, 2, "Labelling"))
    assert meter.fraction() == 0.5


def fit_quadrants(qtbot, viewer, widget, name):
    """Add the quadrants image as ``name`` and fit it (smoothing 0); return the image."""
    image, _ = quadrants()
    viewer.add_image(image, name=name)
    widget.image.value = viewer.layers[name]
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    return image


# -------------------------------------------------- 7. stale status


def test_the_status_line_counts_one_component_in_the_singular(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(quadrants()[0], name="quads")
    widget.image.value = viewer.layers["quads"]
    widget.n_components.value = 1
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    assert widget.status.value.startswith("Fitted: 1 component"), widget.status.value
    assert "1 components" not in widget.status.value


def test_the_status_line_reports_an_error_before_a_job(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    fit_quadrants(qtbot, viewer, widget, "quads")
    assert widget.status.value.startswith("Fitted")
    viewer.add_labels(np.ones((10, 10), dtype=np.uint8), name="small mask")
    widget.mask.value = viewer.layers["small mask"]
    widget.run()
    assert not widget.running
    assert widget.status.value.startswith("Not segmented: Mask 'small mask'") and (
        "shape" in widget.status.value)
    # not the fit's 100 % beside it, and a long reason kept short (all of it
    # in the tooltip and the notification), so the buttons stay in view
    assert widget.progress.value == 0
    assert len(widget.status.value) <= 180 + len(" (hover for more)")
    assert widget.status.value in widget.status.native.toolTip() or (
        widget.status.value.endswith("(hover for more)")
        and len(widget.status.native.toolTip()) > len(widget.status.value) - 17
    )


# ----------------------------------- 8. outputs as inputs, deleted image


def test_outputs_are_not_offered_as_inputs(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, _ = quadrants()
    viewer.add_image(image, name="quads")
    widget.image.value = viewer.layers["quads"]
    widget.posteriors.value = True
    widget.per_component.value = True
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    widget.reset_choices()
    assert [layer.name for layer in widget.image.choices] == ["quads"]
    assert [layer.name for layer in widget.apply_target.choices] == ["quads"]
    assert widget.mask.choices == (None,)


def test_apply_model_to_follows_a_newly_opened_image(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image = fit_quadrants(qtbot, viewer, widget, "first")  # adds Labels: not applied to
    assert widget.apply_target.value is viewer.layers["first"]
    viewer.add_image(image[::-1].copy(), name="second")
    assert widget.apply_target.value is viewer.layers["second"]
    assert widget.image.value is viewer.layers["first"]  # what Run fits stays
    viewer.add_labels(np.zeros(image.shape, dtype=np.uint8), name="a mask")
    assert widget.apply_target.value is viewer.layers["second"]
    widget.apply_model()
    qtbot.waitUntil(lambda: "second GMM labels" in viewer.layers, timeout=30_000)


def test_deleting_the_image_mid_run_stops_the_job_and_adds_nothing(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    volume = np.random.default_rng(1).normal(size=(48, 160, 160)).astype(np.float32)
    viewer.add_image(volume, name="volume")
    widget.image.value = viewer.layers["volume"]
    since = len(notification_manager.records)
    widget.run()
    qtbot.waitUntil(lambda: widget.status.value.startswith("Fitting"), timeout=TIMEOUT_MS)
    viewer.layers.remove("volume")
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(viewer.layers) == 0
    warnings = new_messages(since, "warning")
    assert any("was deleted while it was being segmented" in m and "press Run" in m
               for m in warnings), warnings
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    # the status line says why it stopped: the user pressed no Cancel
    assert widget.status.value.startswith(
        "Stopped: 'volume' was deleted while it was being segmented"
    ), widget.status.value


def test_deleting_the_layer_as_an_apply_job_ends_leaves_no_done_or_stale_plot(
    qtbot, viewer_widget, monkeypatch
):
    # a job past its last check of the request to stop ends as usual, with a
    # result for no layer: the dock must say it stopped, not "Done"
    viewer, widget = viewer_widget
    image = fit_quadrants(qtbot, viewer, widget, "first")
    viewer.add_image(image[::-1].copy(), name="second")
    since = len(notification_manager.records)
    widget.apply_model()
    # the request to stop never reaches the job (as when it comes too late)
    monkeypatch.setattr(widget, "_cancel_requested", threading.Event())
    monkeypatch.setattr(widget.worker, "quit", lambda: None)
    viewer.layers.remove("second")
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert "second GMM labels" not in viewer.layers
    assert widget.status.value.startswith(
        "Stopped: 'second' was deleted while it was being segmented; the plot shows the "
        "last result again, 'first GMM labels'"
    ), widget.status.value
    # the last result's model is drawn again (in a thread of its own)
    qtbot.waitUntil(lambda: "Applying" not in widget.plot.text(), timeout=TIMEOUT_MS)
    warnings = new_messages(since, "warning")
    assert any("was deleted" in m and "Apply current model" in m for m in warnings), warnings


# --------------------------------------- 9. help, theme, plot state


def test_every_control_explains_itself_and_the_plot_follows_theme_and_state(
    qtbot, viewer_widget
):
    from napari.utils.theme import get_theme

    viewer, widget = viewer_widget
    from magicgui.widgets import Container

    controls = [w for w in vars(widget).values() if hasattr(w, "tooltip") and hasattr(w, "native")
                and not isinstance(w, Container)]
    assert len(controls) >= 20
    assert all(control.tooltip for control in controls), [
        c.label for c in controls if not c.tooltip]
    image, _ = quadrants()
    viewer.add_image(image, name="quads")
    widget.image.value = viewer.layers["quads"]
    widget.n_components.value = 4
    fixed_smoothing(widget, 0.0)
    for theme in ("dark", "light"):
        viewer.theme = theme
        run(qtbot, widget)
        qtbot.waitUntil(lambda: widget.plot.rendering is None, timeout=TIMEOUT_MS)
        picture = widget.plot.pixmap().toImage()
        corner = picture.pixelColor(2, 2).name()
        assert corner == get_theme(theme).background.as_hex().lower(), (theme, corner)
    assert widget.plot._drawn[0] is widget.model
    viewer.add_image(np.full((20, 20), 7.0), name="flat")
    widget.image.value = viewer.layers["flat"]
    widget.run()
    assert widget.plot._drawn is None  # not the previous model while the job runs
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.plot._drawn is None and "failed" in widget.plot._message


# --------------------------------------- 10. provenance, copy code


def test_output_metadata_records_the_python_that_reproduces_the_labels(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, _ = rgb_patches()
    viewer.add_image(image.astype(np.uint8), name="rgb", rgb=True, scale=(0.5, 0.5))
    viewer.add_shapes([np.array([[0, 0], [0, 89], [40, 89], [40, 0]])], name="region")
    widget.image.value = viewer.layers["rgb"]
    widget.mask.value = viewer.layers["region"]
    widget.posteriors.value = True
    run(qtbot, widget)
    labels = viewer.layers["rgb GMM labels"]
    record = labels.metadata["gmm_segmenter"]
    assert record["gmm_segmenter_version"] and record["params"]["channel_axis"] == 2
    assert record["model"]["n_components"] == 3 and record["settings"]["mask"]["kind"] == "shapes"
    assert viewer.layers["rgb GMM uncertainty"].metadata["gmm_segmenter"] == record
    namespace = {"viewer": viewer}
    exec(record["python"], namespace)
    np.testing.assert_array_equal(namespace["labels"], labels.data)

    code = widget.copy_code()
    assert code == record["python"] and QApplication.clipboard().text() == code
    # the search range is shown only when the number of components is searched
    assert "n_components_range" not in code and "n_components=3," in code
    widget.auto_components.value = True
    widget.max_components.value = 4
    run(qtbot, widget)
    searched = viewer.layers["rgb GMM labels"].metadata["gmm_segmenter"]["python"]
    assert "n_components='auto'," in searched and "n_components_range=(1, 4)," in searched
    widget.auto_components.value = False

    viewer.add_image(image[::-1].astype(np.uint8), name="flipped", rgb=True)
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["flipped"]))
    applied = viewer.layers["flipped GMM labels"]
    namespace = {"viewer": viewer}
    exec(applied.metadata["gmm_segmenter"]["python"], namespace)
    np.testing.assert_array_equal(namespace["labels"], applied.data)


def test_time_series_code_reproduces_shared_and_per_frame_runs(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, _ = quadrants((32, 32))
    viewer.add_image(np.stack([image, image[::-1] + 20, image[:, ::-1]]), name="movie")
    viewer.add_labels(np.pad(np.ones((20, 32), np.uint8), ((0, 12), (0, 0))), name="top")
    widget.image.value = viewer.layers["movie"]
    widget.mask.value = viewer.layers["top"]
    widget.n_components.value = 2
    for mode in ("shared", "per-frame"):
        widget.leading_axis.value = mode
        run(qtbot, widget)
        labels = viewer.layers["movie GMM labels"]
        namespace = {"viewer": viewer}
        exec(labels.metadata["gmm_segmenter"]["python"], namespace)
        np.testing.assert_array_equal(namespace["labels"], labels.data)


def test_apply_reads_the_target_by_its_own_shape_not_the_image_s_leading_axis(
    qtbot, viewer_widget
):
    from gmm_segmenter import GMMSegmenter

    viewer, widget = viewer_widget
    image, _ = quadrants((32, 32), noise=30.0)  # noisy: smoothing changes labels
    movie = np.stack([image, image[::-1], image[:, ::-1], image.T])
    viewer.add_image(movie, name="movie")
    viewer.add_image(image, name="plane")
    widget.n_components.value = 4
    fixed_smoothing(widget, 1.0)
    # a model of the movie's frames applies to a plane: the plane is one frame
    widget.image.value = viewer.layers["movie"]
    widget.leading_axis.value = "shared"
    run(qtbot, widget)
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["plane"]))
    applied = viewer.layers["plane GMM labels"]
    assert applied.data.shape == image.shape
    namespace = {"viewer": viewer}
    exec(applied.metadata["gmm_segmenter"]["python"], namespace)
    np.testing.assert_array_equal(namespace["labels"], applied.data)
    # a model of a plane applies to the movie frame by frame: no smoothing
    # across time, whatever the Leading axis says for the image
    widget.image.value = viewer.layers["plane"]
    run(qtbot, widget)
    model = widget.model
    widget.image.value = viewer.layers["movie"]
    widget.leading_axis.value = "space"
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["movie"]))  # as asked: a volume
    as_volume = viewer.layers["movie GMM labels"].data.copy()
    widget.image.value = viewer.layers["plane"]
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["movie"]))
    frames = viewer.layers["movie GMM labels"].data
    expected = np.stack([GMMSegmenter.predict(model, frame) for frame in movie])
    np.testing.assert_array_equal(frames, expected)
    assert not np.array_equal(as_volume, expected)  # the volume was smoothed across frames
    namespace = {"viewer": viewer}
    exec(viewer.layers["movie GMM labels"].metadata["gmm_segmenter"]["python"], namespace)
    np.testing.assert_array_equal(namespace["labels"], frames)


def test_apply_reads_the_target_s_channels_by_the_model_not_the_image_s_channel_axis(
    qtbot, viewer_widget
):
    from gmm_segmenter import GMMSegmenter

    viewer, widget = viewer_widget
    image, _ = quadrants((32, 32), noise=20.0)
    two = np.stack([image, 255.0 - image])  # (2, H, W): channels first
    viewer.add_image(image, name="plane")
    viewer.add_image(two, name="two")
    viewer.add_image(np.stack([two, two[:, ::-1]]), name="two movie")  # (T, 2, H, W)
    viewer.add_image(np.moveaxis(two, 0, -1).copy(), name="two last")  # (H, W, 2)
    viewer.add_image(np.stack([image, image.T]), name="grey movie")
    widget.n_components.value = 4
    fixed_smoothing(widget, 1.0)
    # a grey model, while the Image layer chosen now has its channels on axis 0
    widget.image.value = viewer.layers["plane"]
    run(qtbot, widget)
    grey = widget.model
    widget.image.value = viewer.layers["two"]
    widget.channel_axis.value = 0
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["grey movie"]))
    np.testing.assert_array_equal(
        viewer.layers["grey movie GMM labels"].data,
        np.stack([GMMSegmenter.predict(grey, frame) for frame in (image, image.T)]),
    )
    # a model of two channels on axis 0 finds them on axis 1 of a movie, and last
    run(qtbot, widget)
    model = widget.model
    assert model.n_features_in_ == 2
    # (their labels keep that channel axis at length 1, so they overlay the layer)
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["two movie"]))
    np.testing.assert_array_equal(
        viewer.layers["two movie GMM labels"].data,
        np.stack([GMMSegmenter.predict(model, frame) for frame in (two, two[:, ::-1])])[:, None],
    )
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["two last"]))
    np.testing.assert_array_equal(
        viewer.layers["two last GMM labels"].data, GMMSegmenter.predict(model, two)[..., None]
    )
    for name in ("two movie", "two last"):
        namespace = {"viewer": viewer}
        exec(viewer.layers[f"{name} GMM labels"].metadata["gmm_segmenter"]["python"], namespace)
        np.testing.assert_array_equal(namespace["labels"], viewer.layers[f"{name} GMM labels"].data)


def test_an_rgba_layer_is_segmented_by_colour_with_transparent_pixels_left_out(
    qtbot, viewer_widget
):
    viewer, widget = viewer_widget
    image, truth = rgb_patches()
    rgba = np.concatenate([image, np.full(truth.shape + (1,), 255.0)], axis=-1).astype(np.uint8)
    rgba[:10, :20, 3] = 0  # a transparent corner
    viewer.add_image(rgba, name="rgba", rgb=True)
    viewer.add_labels(np.pad(np.ones((50, 90), np.uint8), ((0, 10), (0, 0))), name="top")
    widget.image.value = viewer.layers["rgba"]
    widget.n_components.value = 3
    widget.auto_beta.value = False
    widget.beta.value = 0.0
    since = len(notification_manager.records)
    run(qtbot, widget)
    labels = viewer.layers["rgba GMM labels"].data
    assert labels.shape == truth.shape and np.all(labels[:10, :20] == 0)
    np.testing.assert_array_equal(labels[10:], truth[10:])
    # alpha is not a feature: no warning of a constant channel
    assert not any("constant" in m for m in new_messages(since, "warning"))
    assert widget.model.n_features_in_ == 3
    for mask in (None, viewer.layers["top"]):  # the code says so, with a Mask too
        widget.mask.value = mask
        run(qtbot, widget)
        layer = viewer.layers["rgba GMM labels"]
        assert np.all(layer.data[:10, :20] == 0) and (mask is None or np.all(layer.data[50:] == 0))
        namespace = {"viewer": viewer}
        exec(layer.metadata["gmm_segmenter"]["python"], namespace)
        np.testing.assert_array_equal(namespace["labels"], layer.data)
    widget.mask.value = None
    # the model applies to another RGBA layer (its colours; its transparent pixels 0)
    other = rgba[::-1].copy()
    viewer.add_image(other, name="flipped", rgb=True)
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["flipped"]))
    applied = viewer.layers["flipped GMM labels"].data
    assert np.all(applied[-10:, :20] == 0)
    np.testing.assert_array_equal(applied[:-10], truth[::-1][:-10])
    # a preview of the slice leaves the transparent pixels out as well
    widget.image.value = viewer.layers["rgba"]
    widget.preview.value = True
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    preview = viewer.layers["rgba GMM labels"]
    assert preview.metadata["gmm_segmenter"]["operation"].startswith("preview")
    assert np.all(preview.data[:10, :20] == 0)
    namespace = {"viewer": viewer}
    exec(preview.metadata["gmm_segmenter"]["python"], namespace)
    np.testing.assert_array_equal(namespace["labels"], preview.data)
    widget.preview.value = False


def test_an_rgba_time_series_masks_each_frame_s_transparent_pixels(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, truth = rgb_patches((40, 60))
    rgba = np.concatenate([image, np.full(truth.shape + (1,), 255.0)], axis=-1).astype(np.uint8)
    movie = np.stack([rgba, rgba, rgba])
    movie[1, :8, :8, 3] = 0  # transparent in the second frame only
    viewer.add_image(movie, name="movie", rgb=True)
    widget.image.value = viewer.layers["movie"]
    widget.n_components.value = 3
    widget.auto_beta.value = False
    widget.beta.value = 0.0
    for mode in ("shared", "per-frame"):
        widget.leading_axis.value = mode
        run(qtbot, widget)
        labels = viewer.layers["movie GMM labels"]
        assert labels.data.shape == (3,) + truth.shape
        assert np.all(labels.data[1, :8, :8] == 0) and np.all(labels.data[[0, 2], :8, :8] > 0)
        namespace = {"viewer": viewer}
        exec(labels.metadata["gmm_segmenter"]["python"], namespace)
        np.testing.assert_array_equal(namespace["labels"], labels.data)


# ----------------------------------------------------- 11. one dock


def test_the_menu_reuses_the_dock_napari_w_opened(qtbot, make_napari_viewer):
    from napari._app_model import get_app_model

    viewer, widget = open_widget(make_napari_viewer(show=True))
    docks = dict(viewer.window.dock_widgets)
    assert list(docks) == ["GMM Segmenter (gmm-segmenter)"]
    get_app_model().commands.execute_command("gmm-segmenter.make_widget").result()
    assert dict(viewer.window.dock_widgets) == docks


# ----------------------------------------------------------- 12. Qt6


def test_qt6_by_default_and_a_quiet_launch(tmp_path):
    import qtpy

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["napari"]
    assert any("pyqt6" in requirement.lower() for requirement in extra), extra
    assert not any("pyqt5" in requirement.lower() for requirement in extra), extra
    assert qtpy.API_NAME in ("PyQt6", "PySide6")
    script = (
        "import napari\n"
        "viewer = napari.Viewer()\n"
        "viewer.window.add_plugin_dock_widget('gmm-segmenter', 'GMM Segmenter')\n"
        "viewer.close()\n"
    )
    launched = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr
    assert "Warning" not in launched.stderr, launched.stderr


_SCRIPT_START = (
    "import time\n"
    "import napari, numpy as np\n"
    "from qtpy.QtWidgets import QApplication\n"
    "viewer = napari.Viewer(show=False)\n"
    "_, widget = viewer.window.add_plugin_dock_widget('gmm-segmenter', 'GMM Segmenter')\n"
    "def pump(seconds, until=lambda: True):\n"
    "    end = time.monotonic() + seconds\n"
    "    while time.monotonic() < end and not until():\n"
    "        QApplication.processEvents()\n"
    "        time.sleep(0.01)\n"
)


def run_napari_script(tmp_path, body):
    """``body`` after a viewer with the dock (``viewer``, ``widget``, ``pump``),
    in a Python process of its own: a crash there fails the test, not the run."""
    return subprocess.run([sys.executable, "-c", _SCRIPT_START + body], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize("remove_the_image_first, wait_after", [
    (False, True), (True, True), (False, False),  # the last: the script ends at once
])
def test_closing_napari_during_a_run_ends_cleanly(tmp_path, remove_the_image_first, wait_after):
    # before the fix Qt deleted the dock's widgets (and the worker's signals)
    # under the running job, and the process aborted
    launched = run_napari_script(tmp_path, (
        "layer = viewer.add_image(np.random.default_rng(0).normal(size=(1500, 1500)))\n"
        "widget.image.value = layer\n"
        "widget.run()\n"
        "time.sleep(0.3)\n"
        "QApplication.processEvents()\n"
        "assert widget.running\n"
        f"if {remove_the_image_first}:\n"
        "    viewer.layers.clear()\n"
        "viewer.close()\n"
        f"if {wait_after}:\n"
        "    pump(10, until=lambda: False)\n"
        "print('still here')\n"
    ))
    assert launched.returncode == 0, launched.stderr
    assert "still here" in launched.stdout, launched.stderr
    assert "has been deleted" not in launched.stderr, launched.stderr
    assert "Traceback" not in launched.stderr, launched.stderr
    assert "was deleted while it was being segmented" not in launched.stderr, launched.stderr


def test_closing_napari_with_preview_on_starts_no_job(tmp_path):
    # napari removes every layer as it closes, which moves the sliders and
    # resets the layer lists: none of that may start a preview
    launched = run_napari_script(tmp_path, (
        "rng = np.random.default_rng(0)\n"
        "viewer.add_image(rng.normal(size=(3, 64, 64)), name='stack')\n"
        "viewer.add_image(rng.normal(size=(64, 64)), name='plane')\n"
        "widget.image.value = viewer.layers['stack']\n"
        "widget.preview.value = True\n"
        "pump(60, until=lambda: not widget.running and 'stack GMM labels' in viewer.layers)\n"
        "started = []\n"
        "widget._start = lambda kind: started.append(kind)\n"
        "viewer.close()\n"
        "pump(2, until=lambda: False)\n"
        "print('started', started, widget.running)\n"
    ))
    assert launched.returncode == 0, launched.stderr
    assert "started [] False" in launched.stdout, (launched.stdout, launched.stderr)
    assert "Traceback" not in launched.stderr, launched.stderr


# ------------------------------------------- function widgets (assistant)


def test_function_widgets_are_typed_for_napari_assistant_and_contributed(qtbot):
    import typing

    from npe2 import PluginManifest

    for function in (_functions.segment_image, _functions.apply_model,
                     _functions.run_segment_image, _functions.run_apply_model):
        hints = typing.get_type_hints(function)
        assert hints["image"] is napari.types.ImageData
        assert hints["return"] is napari.types.LabelsData
    # the widgets napari builds have the plain functions' controls
    for plain, run in ((_functions.segment_image, _functions.run_segment_image),
                       (_functions.apply_model, _functions.run_apply_model)):
        assert inspect.signature(run) == inspect.signature(plain)
    for factory, run in ((_functions.segment_image_widget, _functions.run_segment_image),
                         (_functions.apply_model_widget, _functions.run_apply_model)):
        widget = factory()
        assert widget.__wrapped__ is run and widget.name == run.__name__
        assert [w.name for w in widget][:-1] == list(inspect.signature(run).parameters)
        assert widget.call_button is not None
    manifest = PluginManifest.from_distribution("gmm-segmenter")
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    assert commands["gmm-segmenter.segment_image"].endswith(":segment_image_widget")
    assert commands["gmm-segmenter.apply_model"].endswith(":apply_model_widget")
    segment_menu = [item.command for item in manifest.contributions.menus["napari/layers/segment"]]
    assert "gmm-segmenter.segment_image" in segment_menu


def test_function_widgets_segment_and_apply(qtbot, make_napari_viewer, tmp_path):
    from gmm_segmenter.io import save_model

    image, truth = quadrants()
    labels = _functions.segment_image(image, n_components=4, auto_smoothing=False, smoothing=0.0)
    np.testing.assert_array_equal(labels, truth)
    rgb, rgb_truth = rgb_patches()
    model = GMMSegmenter(3, channel_axis=-1, beta=0, random_state=0).fit(rgb)
    path = save_model(model, tmp_path / "rgb.npz")
    # an RGB array is read as colour, as napari shows it, unless told otherwise
    applied = _functions.apply_model(rgb, path)
    assert applied.shape == rgb_truth.shape and np.mean(applied == rgb_truth) > 0.99
    np.testing.assert_array_equal(_functions.apply_model(rgb, path, channels="last axis"), applied)
    labels = _functions.segment_image(rgb, n_components=3, auto_smoothing=False, smoothing=0.0)
    assert labels.shape == rgb_truth.shape and np.mean(labels == rgb_truth) > 0.99
    as_volume = _functions.segment_image(
        rgb, n_components=3, auto_smoothing=False, smoothing=0.0, channels="none"
    )
    assert as_volume.shape == rgb.shape
    with pytest.raises(ValueError, match="channels must be 'auto', 'last axis' or 'none'"):
        _functions.segment_image(rgb, channels="first")
    # channels on a 2-D image would leave labels napari cannot show: refused
    for function, args in ((_functions.segment_image, ()), (_functions.apply_model, (path,))):
        with pytest.raises(ValueError, match=r"channels='last axis' on an image of shape "
                                             r"\(\d+, \d+\) leaves a line.*channels='none'"):
            function(image, *args, channels="last axis")
    # RGBA: the colours, with transparent pixels left out (label 0), once and
    # in the functions' own words when something is odd
    rgba = np.concatenate([rgb, np.full(rgb_truth.shape + (1,), 255.0)], axis=-1)
    rgba[:10, :20, 3] = 0
    labels = _functions.segment_image(rgba, n_components=3, auto_smoothing=False, smoothing=0.0)
    assert np.all(labels[:10, :20] == 0) and np.array_equal(labels[10:], rgb_truth[10:])
    applied = _functions.apply_model(rgba, path)  # a model of the colours alone
    assert np.all(applied[:10, :20] == 0) and np.mean(applied[10:] == rgb_truth[10:]) > 0.99
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _functions.segment_image(rgb, n_components=3, auto_smoothing=False, smoothing=0.0,
                                 channels="none")
    colour = [str(w.message) for w in caught if "looks like colour" in str(w.message)]
    assert len(colour) == 1 and "X" not in colour[0]
    assert "Choose channels='auto' (the default) for a colour image" in colour[0]
    # all four channels as features: the alpha warning, in these words
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _functions.segment_image(rgba, n_components=3, auto_smoothing=False, smoothing=0.0,
                                 channels="last axis")
    alpha = [str(w.message) for w in caught if "alpha channel" in str(w.message)]
    assert len(alpha) == 1 and "X[" not in alpha[0], alpha
    assert "for an RGBA layer, choose channels='auto' (the default)" in alpha[0]
    with pytest.raises(FileNotFoundError, match="Save model"):
        _functions.apply_model(rgb, tmp_path / "missing.npz")

    viewer = make_napari_viewer()
    viewer.add_image(image, name="quads")
    _, widget = viewer.window.add_plugin_dock_widget("gmm-segmenter", "segment image")
    # the strength box says it is the one used without auto; no 0 components
    assert widget.smoothing.label == "fixed smoothing" and "unticked" in widget.smoothing.tooltip
    # tooltips come in lines a screen shows (Qt puts plain text on one line)
    assert max(len(line) for w in widget for line in (w.tooltip or "").splitlines()) <= 60
    assert widget.n_components.min == 1
    # ... and is greyed out while auto smoothing is ticked (it is not used then)
    assert widget.auto_smoothing.value and not widget.smoothing.enabled
    widget.auto_smoothing.value = False
    assert widget.smoothing.enabled
    widget.n_components.value = 4
    widget.smoothing.value = 0.0
    widget()
    assert any(np.array_equal(layer.data, truth) for layer in viewer.layers[1:])

    # input the functions refuse: a notification that says why, in the
    # widget's words, and no layer (raised, napari would show an empty one)
    _, apply = viewer.window.add_plugin_dock_widget("gmm-segmenter", "apply model")
    apply.model_file.value = path  # on the grey quadrants, the only image
    n_layers, since = len(viewer.layers), len(notification_manager.records)
    assert apply() is None
    errors = new_messages(since)
    assert len(errors) == 1 and errors[0].startswith(
        "rgb.npz was fitted on images with 3 channel(s)"), errors
    assert errors[0].endswith("(GMM Segmenter, apply model)")
    assert "an RGB layer" in errors[0] and "channel_axis" not in errors[0]
    apply.model_file.value = tmp_path / "missing.npz"
    since = len(notification_manager.records)
    assert apply() is None and "no such model file" in new_messages(since)[0]
    apply.model_file.value = tmp_path
    since = len(notification_manager.records)
    assert apply() is None and "is a folder, not a model file" in new_messages(since)[0]
    assert len(viewer.layers) == n_layers
    since = len(notification_manager.records)
    assert _functions.run_segment_image(np.zeros((8, 8))) is None
    assert _functions.run_segment_image(None) is None  # no Image layer
    constant, no_image = new_messages(since)
    assert constant.startswith("n components is 3, but the valid pixels of the image hold only 1")
    # one value leaves one choice: not "1 or fewer"
    assert "Set n components to 1." in constant and "or fewer" not in constant
    assert "n_components" not in constant
    two_values = _functions._in_these_words(
        "... hold only 2 distinct pixel values; each component needs its own value to model. "
        "Use n_components<=2 or n_components='auto'.")
    assert two_values.endswith("Set n components to 2 or fewer.")
    assert no_image.startswith("There is no image to segment: add an Image layer")
    # a grey model on a colour image (as napari shows it) is refused, not
    # applied to three slices; told 'none', it is a volume's last axis
    grey_path = save_model(GMMSegmenter(4, beta=0, random_state=0).fit(image),
                           tmp_path / "grey.npz")
    with pytest.raises(ValueError, match="choose channels='none' if it is a volume's"):
        _functions.apply_model(rgb, grey_path)
    with pytest.warns(UserWarning, match=r"fitted on grey images, so it labels the image as a "
                      r"3-D volume of 3 slices\. For a colour layer, apply this model to a grey "
                      r"copy of it") as caught:
        assert _functions.apply_model(rgb, grey_path, channels="none").shape == rgb.shape
    assert not any("rgb2gray" in str(w.message) or "channel_axis" in str(w.message)
                   for w in caught)
    # a model of volumes (their connectivity and voxel sizes) labels a plane
    volume = GMMSegmenter(4, beta=0.5, connectivity=3, spacing=(2.0, 1.0, 1.0),
                          random_state=0).fit(np.stack([image] * 3))
    volume_path = save_model(volume, tmp_path / "volume.npz")
    np.testing.assert_array_equal(_functions.apply_model(image, volume_path), truth)
    # a bug is not hidden behind a notification
    with pytest.raises(ZeroDivisionError):
        _functions._as_a_widget(lambda image: 1 / 0)(image)


def choose_image(widget, name):
    """Choose the layer ``name`` in a function widget's image box, as a click does."""
    box = widget.image.native
    box.setCurrentIndex([box.itemText(i) for i in range(box.count())].index(f"{name} (data)"))


def test_function_widget_results_take_the_geometry_of_the_image_of_each_run(
    qtbot, make_napari_viewer, tmp_path
):
    from gmm_segmenter.io import save_model

    image, _ = quadrants()
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([image] * 3), name="tyx", scale=(10, 0.3, 0.3),
                     translate=(0, 5, 5), units=("s", "um", "um"), axis_labels=("t", "y", "x"))
    viewer.add_image(image[:40, :40], name="other2d", scale=(2, 2), rotate=30)
    _, widget = viewer.window.add_plugin_dock_widget("gmm-segmenter", "segment image")
    widget.n_components.value = 4
    path = save_model(GMMSegmenter(4, beta=0, random_state=0).fit(image), tmp_path / "m.npz")
    _, apply = viewer.window.add_plugin_dock_widget("gmm-segmenter", "apply model")
    apply.model_file.value = path
    for function in (widget, apply):
        for name in ("tyx", "other2d", "tyx"):
            choose_image(function, name)
            function()
            source, result = viewer.layers[name], viewer.layers[function.result_name]
            assert result.data.shape == source.data.shape, (function.result_name, name)
            np.testing.assert_allclose(result.scale, source.scale)
            np.testing.assert_allclose(result.translate, source.translate)
            np.testing.assert_allclose(result.rotate, source.rotate)
            assert tuple(result.units) == tuple(source.units)
            assert tuple(result.axis_labels) == tuple(source.axis_labels)
    # one array behind two layers: the one chosen, not the first that holds it
    viewer.add_image(viewer.layers["other2d"].data, name="other_big", scale=(0.5, 0.5),
                     translate=(-30, -30))
    choose_image(widget, "other_big")
    widget()
    result = viewer.layers[widget.result_name]
    np.testing.assert_allclose(result.scale, (0.5, 0.5))
    np.testing.assert_allclose(result.translate, (-30, -30))


def test_a_loaded_model_is_drawn_in_its_labels_colours_and_offered_a_matching_image(
    qtbot, viewer_widget, tmp_path
):
    from gmm_segmenter.io import save_model

    viewer, widget = viewer_widget
    rgb, truth = rgb_patches()
    path = save_model(GMMSegmenter(3, channel_axis=-1, beta=0, random_state=0).fit(rgb),
                      tmp_path / "rgb.npz")
    viewer.add_image(rgb.astype(np.uint8), name="rgb", rgb=True)
    viewer.add_image(rgb[..., 0], name="grey")  # the newest: Apply model to names it
    assert widget.apply_target.value is viewer.layers["grey"]
    widget.load_model(path)
    # a colour model: the colour image, where Apply would fail on the grey one
    assert widget.apply_target.value is viewer.layers["rgb"]
    # the plot's components in the colours their labels will have, not one default
    _, _, colours, *_ = widget.plot._drawn
    assert sorted(colours) == [1, 2, 3]
    assert len({tuple(np.round(np.ravel(c), 3)) for c in colours.values()}) == 3
    widget.apply_model()
    qtbot.waitUntil(lambda: "rgb GMM labels" in viewer.layers, timeout=TIMEOUT_MS)
    labels = viewer.layers["rgb GMM labels"]
    for k, colour in colours.items():
        np.testing.assert_allclose(np.ravel(labels.get_color(k)), np.ravel(colour))


# --------------------------------------------------------- bad input


def test_a_model_for_other_channels_is_refused_before_a_job(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    rgb, _ = rgb_patches()
    viewer.add_image(rgb.astype(np.uint8), name="rgb", rgb=True)
    viewer.add_image(rgb[..., 0], name="grey")
    widget.image.value = viewer.layers["rgb"]
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    since = len(notification_manager.records)
    widget.apply_model(viewer.layers["grey"])
    assert not widget.running
    errors = new_messages(since)
    # the layer's own reading, not the Image control's (RGB)
    assert any("'grey' is grey (1 channel), but the model needs 3 channels." in m
               for m in errors), errors
    assert "grey GMM labels" not in viewer.layers


def test_a_grey_stack_refused_by_a_model_of_two_channels_is_said_to_be_grey(
    qtbot, viewer_widget
):
    # a z-stack under a model of channels on axis 1 was read as 128 channels:
    # "'zstack' has 128 (read as channels on axis 1)"
    viewer, widget = viewer_widget
    image, _ = quadrants((32, 32))
    two = np.stack([np.stack([image, image[::-1]])] * 3)  # (Z, C, Y, X)
    viewer.add_image(two, name="zcyx")
    viewer.add_image(np.stack([image] * 4), name="zstack")
    widget.image.value = viewer.layers["zcyx"]
    widget.channel_axis.value = 1
    widget.n_components.value = 2
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    assert widget.model.n_features_in_ == 2
    since = len(notification_manager.records)
    widget.apply_model(viewer.layers["zstack"])
    assert not widget.running
    (error,) = new_messages(since)
    assert "'zstack' is grey (1 channel), but the model needs 2 channels." in error, error
    assert "32" not in error and "axis 1" not in error, error
    assert "stack them into one" in error and "press Run" in error, error
    assert "np.stack([a.data, b.data], axis=1)" in error, error  # (Z, C, Y, X)
    assert "zstack GMM labels" not in viewer.layers
    # a plane's channels are stacked last (axis=1 made (Y, C, X))
    viewer.add_image(image, name="plane")
    since = len(notification_manager.records)
    widget.apply_model(viewer.layers["plane"])
    (error,) = new_messages(since)
    assert "np.stack([a.data, b.data], axis=-1)" in error, error
    # on the Image itself, with its channels left as space: the axis that holds two
    widget.channel_axis.native.setCurrentIndex(0)
    assert widget.channel_axis.value is None
    since = len(notification_manager.records)
    widget.apply_model(viewer.layers["zcyx"])
    (error,) = new_messages(since)
    assert "'zcyx' is grey (1 channel), but the model needs 2 channels. If axis 1 holds its " \
           "channels, choose Channel axis 'axis 1 (size 2)'" in error, error


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_an_image_of_zeros_or_nan_ends_in_a_notification(qtbot, viewer_widget, fill):
    viewer, widget = viewer_widget
    viewer.add_image(np.full((32, 32), fill), name="blank")
    widget.image.value = viewer.layers["blank"]
    since = len(notification_manager.records)
    run(qtbot, widget)
    errors = new_messages(since)
    assert errors and all(len(m) > 40 for m in errors), errors
    # in the widget's words: no X, no mask=True of the Python call
    assert not any(re.search(r"\bX\b|True pixels", m) for m in errors), errors
    assert [layer.name for layer in viewer.layers] == ["blank"]
    assert widget.run_button.enabled and widget.status.value.startswith("Not segmented: ")
    # the status line says why, as the notification does
    reason = widget.status.value.removeprefix("Not segmented: ").removesuffix(
        " (hover for more)")
    assert any(reason.rstrip("…")[:60] in m for m in errors), (widget.status.value, errors)


def test_the_status_line_keeps_the_advice_of_a_short_reason(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    widget.run()  # no image layer yet
    assert not widget.running
    assert widget.status.value == (
        "Not segmented: There is no Image layer to segment; open or add an image first."
    )
    # a long one whose problem and advice together do not fit: its first
    # sentence (or clause), and the rest in the tooltip
    long = "The first clause is long " + "and longer " * 16 + "; advice. Second sentence."
    widget._set_status(long, short=True)
    assert widget.status.value.endswith("… (hover for more)"), widget.status.value
    assert ";" not in widget.status.value and widget.status.native.toolTip() == long


def test_the_status_line_keeps_the_advice_of_a_long_reason(qtbot, viewer_widget):
    # what to change is the message's last sentence: the status line keeps
    # it with the problem, not the explanation between them
    viewer, widget = viewer_widget
    viewer.add_image(np.tile(np.repeat([0.0, 1.0, 2.0], 10), (30, 1)), name="three values")
    widget.image.value = viewer.layers["three values"]
    widget.n_components.value = 6
    since = len(notification_manager.records)
    run(qtbot, widget)
    (error,) = new_messages(since)
    status = widget.status.value
    assert status.startswith(
        "Not segmented: Components is 6, but the image's valid pixels hold only 3")
    assert status.endswith(". Lower Components to 3 or fewer, or tick its auto box. "
                           "(hover for more)"), status
    assert "each component needs" not in status and "each component needs" in error
    assert widget.status.native.toolTip().endswith(error.removeprefix("GMM Segmenter: "))


def test_a_huge_image_on_a_small_machine_ends_in_advice(qtbot, viewer_widget, monkeypatch):
    from gmm_segmenter import _image

    viewer, widget = viewer_widget
    image, _ = quadrants()
    viewer.add_image(image, name="huge")
    widget.image.value = viewer.layers["huge"]
    monkeypatch.setattr(_image, "available_memory", lambda: 1000)
    since = len(notification_manager.records)
    run(qtbot, widget)
    errors = new_messages(since)
    assert any("dask" in m for m in errors), errors
    assert [layer.name for layer in viewer.layers] == ["huge"]
    assert widget.run_button.enabled


def test_a_preview_keeps_the_current_model(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, _ = quadrants((40, 40))
    viewer.add_image(np.stack([image] * 4), name="stack")
    widget.image.value = viewer.layers["stack"]
    widget.n_components.value = 4
    run(qtbot, widget)
    model = widget.model
    widget.preview.value = True
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.model is model and widget.status.value.startswith("Preview")
    # it says what it fitted, as a run does
    beta = widget._shown["models"][-1].beta_
    assert f"slice: 4 components, smoothing {beta:.2f} (press Run" in widget.status.value, (
        widget.status.value)
    record = viewer.layers["stack GMM labels"].metadata["gmm_segmenter"]
    assert record["operation"].startswith("preview")
    widget.preview.value = False
    assert not widget._preview_pending


# ------------------------------------------------------ bias field


def test_correct_bias_field_adds_the_field_as_an_image_layer(qtbot, viewer_widget):
    from _images import biased_blobs

    viewer, widget = viewer_widget
    image, truth, field = biased_blobs((96, 96), amplitude=0.4)
    viewer.add_image(image, name="lit", scale=(2.0, 0.5), translate=(10.0, -3.0))
    widget.image.value = viewer.layers["lit"]
    fixed_smoothing(widget, 0.0)
    widget.bias_field.value = True
    run(qtbot, widget)
    layer = viewer.layers["lit GMM bias field"]
    assert isinstance(layer, napari.layers.Image) and not layer.visible
    assert layer.data.shape == image.shape
    np.testing.assert_array_equal(layer.scale, (2.0, 0.5))
    np.testing.assert_array_equal(layer.translate, (10.0, -3.0))
    assert np.corrcoef(np.log(layer.data).ravel(), np.log(field).ravel())[0, 1] > 0.95
    # the plot's histogram is of the corrected values, which the model describes
    counts, edges = widget._shown["histograms"][0]
    expected, _ = np.histogram(image / layer.data, bins=edges)
    assert np.abs(counts / counts.sum() - expected / expected.sum()).sum() < 0.1
    labels = viewer.layers["lit GMM labels"].data
    assert np.mean(labels == truth) > 0.99
    # the hidden field is not left selected: the labels are, to touch them up
    assert viewer.layers.selection.active is viewer.layers["lit GMM labels"]
    # the status line says the field's range
    low, high = float(layer.data.min()), float(layer.data.max())
    assert f"; bias field {low:.2f}-{high:.2f}" in widget.status.value, widget.status.value
    assert widget.model.bias_field == "auto"
    assert "lit GMM bias field" not in [name for name, _ in widget._image_choices()]
    layer.visible = True  # the user looks at it: a second run updates it in place
    run(qtbot, widget)
    assert viewer.layers["lit GMM bias field"] is layer and layer.visible
    widget.bias_field.value = False
    run(qtbot, widget)
    assert "lit GMM bias field" not in viewer.layers


def test_the_plot_says_corrected_only_when_a_bias_field_was_applied(qtbot, viewer_widget):
    from _images import biased_blobs

    from gmm_segmenter.napari._plot import draw

    viewer, widget = viewer_widget
    noise = np.random.default_rng(0).standard_normal((128, 128))
    viewer.add_image(noise, name="noise")
    image, _, _ = biased_blobs((96, 96), amplitude=0.4)
    viewer.add_image(image, name="lit")
    widget.bias_field.value = True
    for name, said in (("noise", "intensity"),  # negative values: the field is refused
                       ("lit", "intensity, corrected for the bias field")):
        widget.image.value = viewer.layers[name]
        run(qtbot, widget)
        refused = "no bias field could be estimated" in widget.status.value
        assert refused == (name == "noise"), widget.status.value
        assert widget.model.bias_field == "auto"
        model, histogram, colours, shares, corrected = widget.plot._drawn
        axes = draw(model, histogram, colours, shares=shares, corrected=corrected).axes[0]
        assert axes.get_xlabel() == said
        # the histogram is of the values the model saw: the image's own when refused
        counts, edges = widget.plot._drawn[1]
        data = viewer.layers[name].data
        field = 1 if refused else viewer.layers[f"{name} GMM bias field"].data
        expected, _ = np.histogram(data / field, bins=edges)
        assert np.abs(counts / counts.sum() - expected / expected.sum()).sum() < 0.1


def test_a_bias_field_model_loaded_again_labels_its_image_as_the_run_did(
    qtbot, viewer_widget, tmp_path,
):
    from skimage import data

    viewer, widget = viewer_widget
    viewer.add_image(data.camera()[::2, ::2], name="camera")
    widget.image.value = viewer.layers["camera"]
    widget.bias_field.value = True
    run(qtbot, widget)
    labels = viewer.layers["camera GMM labels"].data.copy()
    path = widget.save_model(tmp_path / "field.npz")
    widget.bias_field.value = False  # the next Run's setting: the model keeps its own
    widget.load_model(path)
    assert widget.status.value.endswith(", corrects a bias field on Apply"), widget.status.value
    viewer.layers["camera GMM labels"].data = np.zeros_like(labels)
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["camera"]))
    np.testing.assert_array_equal(viewer.layers["camera GMM labels"].data, labels)


def test_the_field_degree_is_shown_with_the_correction_and_used(qtbot, viewer_widget):
    from _images import biased_blobs

    viewer, widget = viewer_widget
    assert widget.bias_degree.native.isHidden()  # nothing to choose without a correction
    widget.bias_field.value = True
    assert not widget.bias_degree.native.isHidden() and widget.bias_degree.value == "auto"
    image, _, field = biased_blobs((96, 96), amplitude=0.4)
    viewer.add_image(image, name="lit")
    widget.image.value = viewer.layers["lit"]
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    layer = viewer.layers["lit GMM bias field"]
    widget.bias_degree.value = 1  # a plane: what a warning advises when a field bends too much
    run(qtbot, widget)
    assert widget.model.bias_field == 1
    plane = viewer.layers["lit GMM bias field"].data
    # the layer updated in place shows the new field's range, not the last one's
    assert viewer.layers["lit GMM bias field"] is layer
    np.testing.assert_allclose(layer.contrast_limits, (plane.min(), plane.max()), rtol=1e-5)
    # a plane's logarithm is linear in the coordinates: its second differences vanish
    log = np.log(plane.astype(np.float64))
    assert np.abs(np.diff(log, n=2, axis=0)).max() < 1e-4
    assert np.abs(np.diff(log, n=2, axis=1)).max() < 1e-4
    assert "bias_field=1," in widget.record["python"], widget.record["python"]
    widget.bias_field.value = False
    assert widget.bias_degree.native.isHidden()


def test_an_rgb_layer_gets_a_field_per_channel_and_bad_input_only_warns(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, _ = rgb_patches()
    viewer.add_image(image.astype(np.uint8), name="rgb", rgb=True)
    widget.image.value = viewer.layers["rgb"]
    widget.bias_field.value = True
    run(qtbot, widget)
    layer = viewer.layers["rgb GMM bias field"]
    assert layer.data.shape == (3,) + image.shape[:2]  # channels on a slider of their own
    since = len(notification_manager.records)
    viewer.add_image(np.arange(36.0).reshape(6, 6) - 30, name="tiny")  # too small, negative
    widget.image.value = viewer.layers["tiny"]
    widget.n_components.value = 2
    run(qtbot, widget)  # the field cannot be estimated: segmented as it is, no crash
    assert "tiny GMM labels" in viewer.layers
    # no layer of ones that would look like a field; the status says there is none
    assert "tiny GMM bias field" not in viewer.layers
    assert "no bias field could be estimated" in widget.status.value
    assert not new_messages(since)
    # the same on a lazy layer, without reading the whole field to tell
    da = pytest.importorskip("dask.array")
    negative = np.random.default_rng(0).normal(size=(64, 64)) * 5 - 30
    viewer.add_image(da.from_array(negative, chunks=32), name="lazy")
    widget.image.value = viewer.layers["lazy"]
    run(qtbot, widget)
    assert "lazy GMM labels" in viewer.layers and "lazy GMM bias field" not in viewer.layers
    assert "no bias field could be estimated" in widget.status.value
    # the estimator's warnings in the worker reach the user as notifications
    warned = new_messages(since, severity="warning")
    assert any("untick Correct bias field" in message for message in warned), warned
    assert any("automatic smoothing needs at least 256 valid pixels" in m for m in warned), warned
    assert not any("beta=" in m for m in warned), warned
    # two values, each exactly one class: the field comes out flat without a
    # warning, and the status points at no notification
    since = len(notification_manager.records)
    viewer.add_image(np.where(np.arange(400).reshape(20, 20) % 2, 10.0, 200.0), name="two")
    widget.image.value = viewer.layers["two"]
    run(qtbot, widget)
    assert "two GMM bias field" not in viewer.layers
    assert "the bias field came out flat" in widget.status.value
    assert "notification" not in widget.status.value
    assert not new_messages(since, severity="warning")
    # the same with another warning (two grey values stored as RGB): the
    # status sends the user to that warning, not to a refused field
    since = len(notification_manager.records)
    grey = np.where(np.arange(1600).reshape(40, 40) % 2, 10, 200).astype(np.uint8)
    viewer.add_image(np.dstack([grey] * 3), name="grey rgb", rgb=True)
    widget.image.value = viewer.layers["grey rgb"]
    run(qtbot, widget)
    assert "grey rgb GMM bias field" not in viewer.layers
    status = widget.status.value
    assert "the bias field came out flat" in status and "read the warning" in status
    assert "could be estimated" not in status
    assert any("linearly dependent" in m for m in new_messages(since, severity="warning"))


def test_the_status_line_names_the_smoothing_the_fit_used(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, _ = quadrants()
    viewer.add_image(image, name="quads")
    widget.image.value = viewer.layers["quads"]
    run(qtbot, widget)  # the default: the smoothing chosen from the image
    assert widget.status.value.startswith("Fitted")
    assert f"smoothing {widget.model.beta_:.2f}" in widget.status.value
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    assert "smoothing" not in widget.status.value
    # the layer it names, deleted: the status says so (the model stays)
    viewer.layers.remove("quads GMM labels")
    assert "'quads GMM labels' (since deleted)" in widget.status.value
    assert "'quads GMM labels' (since deleted)" in widget.status.native.toolTip()
    assert widget.model is not None
    viewer.layers.remove("quads")  # another layer: nothing more to say
    assert widget.status.value.count("since deleted") == 1


def test_the_function_widgets_say_advice_in_their_options():
    from gmm_segmenter.napari._functions import _in_these_words

    emptied = _in_these_words(
        "Under the spatial prior (beta=1.22) 1 of the 5 components keep almost none of their "
        "pixels, so some labels are (nearly) empty. Use fewer components (or "
        "n_components='auto'), or a smaller beta.")
    assert "beta" not in emptied and "(smoothing 1.22)" in emptied
    assert emptied.endswith("or a lower 'fixed smoothing' (with 'auto smoothing' unticked).")
    stopped = _in_these_words(
        "HMRF-EM did not converge in max_iter_spatial=20 iterations (...). Increase "
        "max_iter_spatial, or raise tol.")
    assert stopped.endswith(". In Python, GMMSegmenter(...) takes a larger max_iter_spatial "
                            "or tol.")


def test_alpha_advice_for_channels_not_last_is_said_as_layers():
    from _images import alpha_warning

    from gmm_segmenter.napari._functions import _in_these_words
    from gmm_segmenter.napari._widget import _in_widget_words

    message = alpha_warning(channel_axis=0)
    assert "np.take(X, [0, 1, 2], axis=0)" in message
    for said in (_in_widget_words(message), _in_these_words(message)):
        assert "np.take" not in said and "X" not in said, said
        assert "segment a layer of its first three channels, with a" in said
        assert "of where the fourth is above 0" in said
    # channels last (a non-RGB layer of 4 channels): no console code either
    said = _in_widget_words(alpha_warning(channel_axis=-1))
    assert "X" not in said and "console" not in said and "'name'" not in said, said
    assert "segment a layer of its first three channels (with a Mask layer of where the " \
        "fourth is above 0" in said


def test_messages_in_the_widgets_words_read_as_sentences():
    from gmm_segmenter.napari._widget import _in_widget_words

    # the bias field's advice: the dock's checkbox, and Python for what it lacks
    assert _in_widget_words(
        "x is left without bias-field correction (its field is all ones). Use "
        "bias_field=None: a field of the lowest degree needs 90 pixels."
    ).endswith("(its field is all ones). Untick Correct bias field: a field of the lowest "
               "degree needs 90 pixels.")
    assert _in_widget_words(
        "Use a lower degree (bias_field=1 needs 90) or bias_field=None."
    ) == "Use a lower degree (Field degree 1 needs 90) or untick Correct bias field."
    assert _in_widget_words(
        "Try a lower degree (bias_field=1 or 2) or bias_field=None."
    ) == "Try a lower degree (Field degree 1 or 2) or untick Correct bias field."

    constant = (
        "n_components=3 asks for 3 components, but the valid pixels of X hold "
        "only 1 distinct pixel value (a constant image, or a mask or NaNs that leave one "
        "value); each component needs its own value to model. Use n_components=1 or "
        "n_components='auto'."
    )
    assert _in_widget_words(ValueError(constant)).endswith(
        "Set Components to 1, or tick its auto box."
    )
    assert "n_components" not in _in_widget_words(ValueError(constant))
    assert "the image's valid pixels hold only 1" in _in_widget_words(ValueError(constant))
    assert " X " not in _in_widget_words(ValueError(constant))
    assert _in_widget_words(ValueError(constant)).startswith(
        "Components is 3, but the image's valid pixels hold only 1 distinct pixel value")
    top = _in_widget_words(
        "n_components='auto' chose 6, the top of n_components_range=(1, 6): every added "
        "component still paid off, so the image may hold more classes. Widen "
        "n_components_range, or pass a number."
    )
    assert top.startswith("The auto box of Components chose 6, the most 'Up to (auto)' allows")
    assert top.endswith("Raise 'Up to (auto)', or untick auto and set Components.")
    assert "n_components" not in top
    two = constant.replace("hold only 1", "hold only 2").replace(
        "n_components=1 or", "n_components<=2 or"
    )
    assert _in_widget_words(ValueError(two)).endswith(
        "Lower Components to 2 or fewer, or tick its auto box."
    )
    few = (
        "beta='auto' needs at least 256 valid pixels with neighbours to choose the "
        "smoothing strength; the image (within its mask) has 100. beta=0.5 is used "
        "instead; pass a number to choose it yourself."
    )
    words = _in_widget_words(few)
    assert "pass a number" not in words and "beta" not in words
    spatial = _in_widget_words(
        "HMRF-EM did not converge in max_iter_spatial=20 iterations (the mean-field bound "
        "per pixel last changed by 0.0037, not yet within tol=0.001). Increase "
        "max_iter_spatial, or raise tol."
    )  # the dock has no such control: its copied code is where to set it
    binary = _in_widget_words(
        "Scribbles y hold only the label 255, as a black-and-white mask saved as an image "
        "does; scribbles number classes 1..K. To segment only those pixels, pass the image as "
        "mask= instead.")
    assert binary.endswith("choose that layer as 'Mask (optional)' instead.")
    assert "mask=" not in binary
    # in plain words, and what to do where the dock has no control for it
    assert spatial.startswith("The smoothing did not settle in 20 rounds, so the labels might "
                              "still change a little with more; they are usually fine as they "
                              "are: look them over."), spatial
    assert "HMRF" not in spatial and "tol" not in spatial and "mean-field" not in spatial
    assert spatial.endswith("(The dock has no control for more rounds: in the code Copy "
                            "Python code gives, GMMSegmenter(...) takes a larger "
                            "max_iter_spatial.)"), spatial
    with_field = _in_widget_words(
        "HMRF-EM did not converge in 60 iterations (3 x max_iter_spatial=20, with a bias "
        "field) (the mean-field bound per pixel last changed by 0.0037, not yet within "
        "tol=0.001). Increase max_iter_spatial, or raise tol.")
    assert with_field.startswith("The smoothing did not settle in 60 rounds,"), with_field
    # the images of a batch are the time series' frames, as its slider counts them
    frames = _in_widget_words(
        "bias_field: the field estimated for X[0] would scale intensities by up to 12.3 "
        "times. X[2] has 40 valid pixels.")
    assert "X[" not in frames and "the field estimated for frame 0 would scale" in frames
    assert ". Frame 2 has 40 valid pixels." in frames, frames
    assert words.endswith(
        "Smoothing 0.5 is used instead; untick 'Choose the smoothing from the image' "
        "and set Smoothing to choose it yourself."
    )
    # X is the image layer, except in advice written as code
    assert _in_widget_words("X has 3 channel(s). The pixel values of X spread too little") == (
        "The image has 3 channel(s). The pixel values of the image spread too little"
    )
    code = "Segment one channel instead (for example X[..., 0]) or np.log(X)"
    assert _in_widget_words(code) == code
    alpha = _in_widget_words(
        "Channel 3 of the 4 channels of X is constant (as an opaque alpha channel is), so it "
        "carries nothing to segment by; only reg_covar=1e-06 keeps the covariances "
        "invertible. Leave it out: for RGBA, pass X[..., :3] (with mask=X[..., 3] > 0 if some "
        "pixels are transparent)."
    )
    assert "reg_covar=" not in alpha and "X" not in alpha.replace("RGBA", "")
    assert "segment a layer of its first three channels" in alpha


def test_applying_a_model_to_a_layer_of_another_range_says_so_in_the_docks_words(
    qtbot, viewer_widget
):
    from skimage import data, img_as_float

    viewer, widget = viewer_widget
    camera = data.camera()[::4, ::4]
    viewer.add_image(camera, name="camera")
    viewer.add_image(img_as_float(camera), name="camera float")
    widget.image.value = viewer.layers["camera"]
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    assert "read the warning" not in widget.status.value
    since = len(notification_manager.records)
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["camera float"]))
    warned = new_messages(since, severity="warning")
    assert any("multiplied by 255 they would span about as much" in m for m in warned), warned
    assert any("press Run to fit a model to it" in m for m in warned), warned
    assert not any("skimage" in m or "X's" in m for m in warned), warned
    # the status line points at it: the labels alone look like a result
    assert "read the warning in the notifications" in widget.status.value


def test_the_plot_draws_without_touching_the_warning_filters(qtbot, viewer_widget, monkeypatch):
    # A napari worker runs inside warnings.catch_warnings(), and leaving it
    # restores the filters and hooks it found: a picture that finished while
    # a job ran undid the job's capture, and its warnings were lost.
    import threading

    entered = []

    class Spy(warnings.catch_warnings):
        def __enter__(self):
            entered.append(threading.current_thread().name)
            return super().__enter__()

    viewer, widget = viewer_widget
    image, _ = quadrants()
    model = GMMSegmenter(2, beta=0, random_state=0).fit(image)
    monkeypatch.setattr(warnings, "catch_warnings", Spy)
    widget.plot.show_model(model)
    qtbot.waitUntil(lambda: widget.plot.rendering is None, timeout=TIMEOUT_MS)
    monkeypatch.undo()
    assert entered == [], entered
    assert not widget.plot.pixmap().isNull()


def test_opening_the_dock_starts_one_warm_up(make_napari_viewer, monkeypatch):
    from gmm_segmenter import _warmup

    calls = []
    monkeypatch.setattr(_warmup, "IN_BACKGROUND", True)
    monkeypatch.setattr(_warmup, "_thread", None)
    monkeypatch.setattr(_warmup, "warm_up", lambda: calls.append(threading.current_thread().name))
    open_widget(make_napari_viewer())
    open_widget(make_napari_viewer())  # a second dock: loaded already
    _warmup._thread.join(30)
    assert calls == ["gmm-segmenter warm-up"]


def test_a_run_waits_for_the_warm_up_before_it_fits(make_napari_viewer, qtbot, monkeypatch):
    # warning filters and the BLAS limit are global: the run's must not
    # interleave with the warm-up's
    from gmm_segmenter import _warmup

    release, events = threading.Event(), []

    def slow():
        release.wait(30)
        events.append("warmed")

    real_fit = GMMSegmenter.fit

    def fit(self, *args, **kwargs):
        events.append("fit")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(_warmup, "IN_BACKGROUND", True)
    monkeypatch.setattr(_warmup, "_thread", None)
    monkeypatch.setattr(_warmup, "warm_up", slow)
    monkeypatch.setattr(GMMSegmenter, "fit", fit)
    viewer, widget = open_widget(make_napari_viewer())
    image, _ = quadrants()
    viewer.add_image(image, name="q")
    widget.run()
    qtbot.wait(300)
    assert widget.running and events == []
    release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert events[:2] == ["warmed", "fit"] and "q GMM labels" in viewer.layers
    # Cancel works while a run waits for it
    release.clear()
    monkeypatch.setattr(_warmup, "_thread", None)
    _warmup.warm_up_in_background()
    events.clear()
    widget.run()
    qtbot.wait(200)
    assert widget.running
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=5_000)
    assert events == [] and widget.status.value.startswith("Cancelled")
    release.set()
    _warmup._thread.join(30)


# ---------------------------------------------- users' findings (units, status, code)


def _output_layers(viewer, name):
    return [layer for layer in viewer.layers if layer.name.startswith(f"{name} GMM ")]


@pytest.mark.parametrize("layout", ["grey", "channels first", "channels second", "rgb"])
def test_outputs_keep_the_image_s_units(qtbot, viewer_widget, layout):
    from _images import biased_blobs

    viewer, widget = viewer_widget
    image, _, _ = biased_blobs((6, 48, 48), amplitude=0.3)
    channel_axis = None
    if layout == "channels first":
        image, channel_axis = np.stack([image, image[::-1]]), 0
    elif layout == "channels second":
        image, channel_axis = np.stack([image, image[:, ::-1]], axis=1), 1
    elif layout == "rgb":
        image = np.stack([image[3]] * 3, axis=-1).astype(np.uint8)
    scale = (1.5, 0.5, 0.5) if layout in ("grey", "rgb") else (1.5, 1.0, 0.5, 0.5)
    scale = scale[1:] if layout == "rgb" else scale
    viewer.add_image(image, name="vol", scale=scale, units="um", rgb=layout == "rgb")
    widget.image.value = viewer.layers["vol"]
    if layout != "rgb":
        widget.channel_axis.value = channel_axis
    fixed_smoothing(widget, 0.0)
    widget.bias_field.value = True
    widget.posteriors.value = True
    widget.per_component.value = True
    run(qtbot, widget)
    outputs = _output_layers(viewer, "vol")
    names = {layer.name for layer in outputs}
    assert {"vol GMM labels", "vol GMM posteriors", "vol GMM uncertainty",
            "vol GMM bias field", "vol GMM component 1"} <= names, names
    # napari uses physical units only while every layer's agree, axis by axis from the last
    assert viewer.layers.extent.units is not None, [(l.name, l.units) for l in outputs]
    for layer in outputs:
        units = [str(unit) for unit in layer.units]
        spatial = units[-(3 if layout != "rgb" else 2):]
        assert spatial == ["micrometer"] * len(spatial), (layer.name, units)
    # a preview's labels layer and a new scribble layer have them too
    viewer.layers.remove("vol GMM labels")
    widget.preview.value = True
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert all(str(unit) == "micrometer" for unit in viewer.layers["vol GMM labels"].units[-2:])
    widget.preview.value = False
    scribbles = widget.add_scribble_layer()
    assert [str(unit) for unit in scribbles.units][-2:] == ["micrometer"] * 2
    assert viewer.layers.extent.units is not None


def test_the_status_gives_the_bias_field_s_range_over_the_masked_pixels(qtbot, viewer_widget):
    from _images import biased_blobs

    viewer, widget = viewer_widget
    image, _, _ = biased_blobs((96, 96), amplitude=0.6)
    image[:4] = np.nan  # not finite: not segmented either
    viewer.add_image(image, name="lit")
    inside = np.zeros(image.shape, dtype=np.uint8)
    inside[:60, 20:70] = 1
    viewer.add_labels(inside, name="region")
    widget.image.value = viewer.layers["lit"]
    widget.mask.value = viewer.layers["region"]
    fixed_smoothing(widget, 0.0)
    widget.bias_field.value = True
    run(qtbot, widget)
    field = viewer.layers["lit GMM bias field"].data
    segmented = viewer.layers["lit GMM labels"].data > 0
    assert segmented.sum() == 56 * 50
    low, high = float(field[segmented].min()), float(field[segmented].max())
    assert f"; bias field {low:.2f}-{high:.2f}" in widget.status.value, widget.status.value
    # the box's range is wider: the status line gave it before
    box = f"{float(np.nanmin(field)):.2f}-{float(np.nanmax(field)):.2f}"
    assert box != f"{low:.2f}-{high:.2f}" and box not in widget.status.value


def test_a_field_refused_on_apply_is_advised_in_what_apply_can_do():
    from gmm_segmenter.napari._widget import _in_widget_words

    refused = ("bias_field: the field estimated for X varies more than tenfold; X is left "
               "without bias-field correction (its field is all ones). Try a lower degree "
               "(bias_field=1 or 2) or bias_field=None.")
    # Run: the next fit's settings are what to change
    assert _in_widget_words(refused).endswith(
        "Try a lower degree (Field degree 1 or 2) or untick Correct bias field.")
    # Apply uses the model's own field, whatever those controls say
    applied = _in_widget_words(refused, applying=True)
    assert "Field degree 1 or 2" not in applied and "untick Correct" not in applied
    assert applied.startswith("The model's bias field: the field estimated for the image")
    assert "choose a Mask of the region to segment, or press Run" in applied
    few = _in_widget_words(
        "bias_field: X has 144 valid pixels, too few to estimate a field of degree 3 (10 "
        "coefficients per channel; at least 300 pixels needed); X is left without "
        "bias-field correction (its field is all ones). Use a lower degree (bias_field=1 "
        "needs 90) or bias_field=None.", applying=True)
    assert few.endswith("press Run to fit a new model to this layer (Field degree 1 needs 90 "
                        "pixels), or with Correct bias field unticked."), few
    for message in (
        "bias_field: the field estimated for X is flat. The image may hold no smooth field; "
        "use bias_field=None.",
        "bias_field: X has 40 valid pixels. Use bias_field=None: a field of the lowest "
        "degree needs 90 pixels (a larger image, or a larger mask).",
        "bias_field: 100% of the valid pixels of X are negative. For differences or "
        "standardised values use bias_field=None.",
    ):
        words = _in_widget_words(message, applying=True)
        assert "bias_field=" not in words and "untick Correct bias field" not in words, words
        assert "press Run to fit a new model to this layer" in words, words


def test_apply_of_a_bias_field_model_advises_what_apply_can_do(qtbot, viewer_widget):
    from skimage import data

    viewer, widget = viewer_widget
    viewer.add_image(data.camera()[::2, ::2], name="camera")
    widget.image.value = viewer.layers["camera"]
    fixed_smoothing(widget, 0.0)
    widget.bias_field.value = True
    run(qtbot, widget)
    widget.bias_field.value = False  # the next Run's setting: Apply uses the model's field
    viewer.add_image(np.random.default_rng(0).normal(size=(12, 12)) * 5 + 100, name="tiny")
    since = len(notification_manager.records)
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["tiny"]))
    warned = new_messages(since, severity="warning")
    assert any("Field degree 1 needs" in m and "press Run to fit a new model" in m
               for m in warned), warned
    assert not any("untick Correct bias field" in m for m in warned), warned
    assert "no bias field could be estimated" in widget.status.value


def test_load_and_save_model_wait_for_a_run(qtbot, viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    widget.n_components.value = 2
    fit_quadrants(qtbot, viewer, widget, "quads")
    path = widget.save_model(tmp_path / "two.npz")
    widget.n_components.value = 4
    buttons = (widget.run_button, widget.apply_button, widget.save_button, widget.load_button)
    since = len(notification_manager.records)
    widget.run()
    assert widget.worker is not None
    assert not any(button.enabled for button in buttons)
    # what the buttons would do, asked for in code meanwhile: refused, and said
    assert widget.load_model(path) is None
    assert widget.save_model(tmp_path / "during.npz") is None
    assert not (tmp_path / "during.npz").exists()
    infos = new_messages(since, severity="info")
    assert any("load the model when it ends" in m for m in infos), infos
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert all(button.enabled for button in buttons)
    assert widget.model.n_components_ == 4
    # once the run has ended, the model loaded is the model kept
    assert widget.load_model(path).n_components_ == 2 and widget.model.n_components_ == 2
    # a preview never touches the model: Save and Load stay (they flickered off at
    # every step of a slider with Preview ticked)
    widget._start("preview")
    assert widget.worker is not None and widget.save_button.enabled
    assert widget.load_button.enabled and not widget.run_button.enabled
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def test_copy_python_code_after_a_preview_gives_the_run_s_model(qtbot, viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    image, _ = quadrants((600, 600))  # previewed on every 2nd pixel
    viewer.add_image(image, name="quads")
    widget.image.value = viewer.layers["quads"]
    fixed_smoothing(widget, 0.0)
    widget.preview.value = True
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    widget.preview.value = False
    # no Run yet: the preview's code, and said to be the preview's
    code = widget.copy_code()
    assert code.startswith("# a preview: the displayed slice only"), code
    assert "max_samples=25000" in code
    assert widget.status.value.startswith(
        "Copied the preview's Python code: the displayed slice, every 2nd pixel"), (
        widget.status.value)
    assert "press Run" in widget.status.value
    run(qtbot, widget)
    widget.preview.value = True  # a preview after the Run
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    widget.preview.value = False
    assert widget.record["operation"].startswith("preview")
    code = widget.copy_code()
    assert QApplication.clipboard().text() == code
    assert widget.status.value.startswith("Copied the Python code of the last Run, on 'quads'")
    # the model Save model… writes and Apply uses is the Run's: so is its code
    saved = widget.save_model(tmp_path / "model.npz")
    with np.load(saved, allow_pickle=False) as archive:
        assert code == json.loads(str(archive["metadata"]))["record"]["python"]
    assert "max_samples" not in code and "np.repeat" not in code and "[::2" not in code
    namespace = {"viewer": viewer}
    exec(code, namespace)
    assert namespace["labels"].shape == image.shape


def test_copy_python_code_after_a_refused_run_says_it_is_the_last_result_s(
    qtbot, viewer_widget
):
    # it said "Copied the Python code that reproduces the result", and the code,
    # reading the scribbles as they now are, was refused when pasted
    viewer, widget = viewer_widget
    image, _ = quadrants((64, 64))
    viewer.add_image(image, name="quads")
    widget.image.value = viewer.layers["quads"]
    widget.n_components.value = 4
    fixed_smoothing(widget, 0.0)
    scribbles = widget.add_scribble_layer()
    scribbles.data[2:6, 2:6] = 5  # a fifth class with 4 components: refused
    since = len(notification_manager.records)
    run(qtbot, widget)
    assert "quads GMM labels" not in viewer.layers and new_messages(since)
    since = len(notification_manager.records)
    assert widget.copy_code() is None
    (said,) = new_messages(since, severity="info")
    assert "the last Run was refused and there is no result to reproduce yet" in said, said
    widget.scribbles.value = None  # a Run without the strokes: a result
    run(qtbot, widget)
    good = widget.copy_code()
    assert widget.status.value == "Copied the Python code that reproduces the result."
    widget.scribbles.value = scribbles
    run(qtbot, widget)  # refused again
    assert widget.status.value.startswith("Not segmented"), widget.status.value
    code = widget.copy_code()
    assert code == good == QApplication.clipboard().text()
    assert widget.status.value.startswith(
        "The last Run was refused, so it has no code; copied the code of the last result "
        "instead, on 'quads'."), widget.status.value
    widget.scribbles.value = None
    run(qtbot, widget)  # a result again: its own code, said plainly
    widget.copy_code()
    assert widget.status.value == "Copied the Python code that reproduces the result."


def _outside_napari(code):
    """``code`` with its commented lines that read the layer's file in use, and
    the lines that read napari's layer left out."""
    kept = []
    for line in code.splitlines():
        if "viewer.layers" in line:
            continue
        if line.startswith(("# from gmm_segmenter.io import", "# image = read_",
                            "# rgba = read_")):
            line = line[2:]
        kept.append(line)
    return "\n".join(kept)


@pytest.mark.parametrize("kind", ["tif", "png", "rgba png"])
def test_the_code_of_a_layer_read_from_a_file_says_how_to_read_it_outside_napari(
    qtbot, viewer_widget, tmp_path, kind,
):
    import imageio.v3 as iio
    import tifffile

    viewer, widget = viewer_widget
    image, _ = quadrants((48, 48))
    image = np.clip(image, 0, 255).astype(np.uint8)
    path = tmp_path / ("quads.tif" if kind == "tif" else "quads.png")
    if kind == "tif":
        tifffile.imwrite(path, image)
    elif kind == "png":
        iio.imwrite(path, image)
    else:
        alpha = np.full(image.shape, 255, np.uint8)
        alpha[:5] = 0
        iio.imwrite(path, np.dstack([image, image[::-1], image[:, ::-1], alpha]))
    layer = viewer.open(path, plugin="napari")[0]
    widget.image.value = layer
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    code = widget.copy_code()
    name = "rgba" if kind == "rgba png" else "image"
    assert "# outside napari, read the file the layer came from instead:" in code, code
    assert f"# {name} = read_image({str(path.resolve())!r})" in code, code
    namespace = {}  # no viewer: as in a script
    exec(_outside_napari(code), namespace)
    labels = viewer.layers[f"{layer.name} GMM labels"].data
    np.testing.assert_array_equal(namespace["labels"], labels)
    # a layer made in Python has no file: nothing to say
    viewer.add_image(image, name="made")
    widget.image.value = viewer.layers["made"]
    run(qtbot, widget)
    assert "outside napari" not in widget.copy_code()


def test_a_loaded_rgb_model_is_offered_an_rgba_layer(qtbot, viewer_widget, tmp_path):
    from gmm_segmenter.io import save_model

    viewer, widget = viewer_widget
    rgb, truth = rgb_patches()
    path = save_model(GMMSegmenter(3, channel_axis=-1, beta=0, random_state=0).fit(rgb),
                      tmp_path / "rgb.npz")
    alpha = np.full(truth.shape + (1,), 255, np.uint8)
    viewer.add_image(np.concatenate([rgb.astype(np.uint8), alpha], axis=-1), name="rgba",
                     rgb=True)
    viewer.add_image(rgb[..., 0], name="camera16")  # the newest: Apply model to names it
    assert widget.apply_target.value is viewer.layers["camera16"]
    widget.load_model(path)
    # Apply reads RGBA as its three colours: the model's channels
    assert widget.apply_target.value is viewer.layers["rgba"]
    since = len(notification_manager.records)
    run(qtbot, widget, widget.apply_model)
    assert not new_messages(since)
    assert (viewer.layers["rgba GMM labels"].data == truth).mean() > 0.99


def test_an_image_without_a_finite_pixel_is_named_and_no_mask_is_asked_for(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    viewer.add_image(np.full((32, 32), np.nan), name="empty scan")
    widget.image.value = viewer.layers["empty scan"]
    since = len(notification_manager.records)
    run(qtbot, widget)
    (error,) = new_messages(since)
    assert "'empty scan' (Image) has no finite pixel" in error, error
    assert "Mask" not in error
    assert widget.status.value.startswith("Not segmented: Layer 'empty scan' (Image) has no")
    # with finite pixels, but none inside the Mask, the Mask is what to change
    partly = np.full((32, 32), np.nan)
    partly[16:] = np.random.default_rng(0).normal(100, 10, (16, 32))
    viewer.layers["empty scan"].data = partly
    top = np.zeros((32, 32), np.uint8)
    top[:8] = 1
    viewer.add_labels(top, name="top")
    widget.mask.value = viewer.layers["top"]
    since = len(notification_manager.records)
    run(qtbot, widget)
    (error,) = new_messages(since)
    assert "choose a Mask that marks some pixels inside the image's finite values" in error
    # a preview of a slice without a finite pixel says to move on
    viewer.add_image(np.stack([np.full((16, 16), np.nan), np.ones((16, 16))]), name="stack")
    widget.image.value = viewer.layers["stack"]
    widget.mask.value = None
    viewer.dims.set_current_step(0, 0)
    since = len(notification_manager.records)
    widget.preview.value = True
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    widget.preview.value = False
    assert any("The displayed slice of 'stack' has no finite pixel" in m
               for m in new_messages(since)), new_messages(since)


def test_the_components_boxes_say_their_maximum(viewer_widget):
    from gmm_segmenter.napari._widget import MAX_COMPONENTS

    _, widget = viewer_widget
    for box in (widget.n_components, widget.max_components):
        assert box.max == MAX_COMPONENTS
        assert f"t most {MAX_COMPONENTS}" in box.tooltip, box.tooltip


def test_the_status_of_a_volume_gives_the_voxel_size_it_was_segmented_with(
    qtbot, viewer_widget,
):
    viewer, widget = viewer_widget
    image, _ = quadrants((32, 32))
    fixed_smoothing(widget, 0.0)
    widget.n_components.value = 4
    viewer.add_image(np.stack([image] * 4), name="scan", scale=(1.5, 0.5, 0.5), units="um")
    widget.image.value = viewer.layers["scan"]
    run(qtbot, widget)
    assert "→ 'scan GMM labels'; voxel size 1.5 × 0.5 × 0.5 µm" in widget.status.value, (
        widget.status.value)
    # napari's default scale, when a reader found no voxel size: said, so it is seen
    viewer.add_image(np.stack([image] * 4), name="unscaled")
    widget.image.value = viewer.layers["unscaled"]
    run(qtbot, widget)
    assert widget.status.value.endswith("; voxel size 1 × 1 × 1"), widget.status.value
    # Apply says the size of the layer it labels
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["scan"]))
    assert "voxel size 1.5 × 0.5 × 0.5 µm" in widget.status.value, widget.status.value
    viewer.add_image(image, name="plane", scale=(2.0, 2.0))  # a plane: nothing to add
    widget.image.value = viewer.layers["plane"]
    run(qtbot, widget)
    assert "voxel" not in widget.status.value and widget.status.value.startswith("Fitted")


def test_two_channels_left_as_a_volume_are_named_in_the_dock_s_words(qtbot, viewer_widget):
    # a (2, Y, X) layer of two stains was segmented as two slices; the warning
    # that names the axis spoke of channel_axis=0, a setting the dock does not have
    viewer, widget = viewer_widget
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((2, 48, 40)).astype(np.float32), name="stains")
    widget.image.value = viewer.layers["stains"]
    fixed_smoothing(widget, 0)
    since = len(notification_manager.records)
    run(qtbot, widget)
    said = [m for m in new_messages(since, "warning") if "looks like channels" in m]
    assert len(said) == 1, new_messages(since, "warning")
    assert "Choose the Channel axis of size 2 to model the channels together" in said[0]
    assert "channel_axis" not in said[0]
    # one frame of a time layer: its axis 0 is the layer's axis 1, so no number is named
    viewer.add_image(rng.random((3, 2, 48, 40)).astype(np.float32), name="frames")
    widget.image.value = viewer.layers["frames"]
    from gmm_segmenter.napari import _layers

    widget.leading_axis.value = _layers.PER_FRAME
    since = len(notification_manager.records)
    run(qtbot, widget)
    said = [m for m in new_messages(since, "warning") if "looks like channels" in m]
    assert said and "Choose the Channel axis of size 2" in said[0], new_messages(since, "warning")


def test_a_refused_field_on_a_zero_padded_image_asks_for_a_mask_layer():
    from gmm_segmenter.napari._widget import _in_widget_words

    said = _in_widget_words(
        "bias_field: the field estimated for X would scale intensities by up to 89.7 times; "
        "X is left without bias-field correction (its field is all ones). 65% of its "
        "pixels are exactly 0, a background padded with zeros (as skull stripping or "
        "registration leaves)? Segment the rest only: a mask of the pixels above 0 "
        "(mask=image > 0)."
    )
    assert said.endswith("Segment the rest only: choose a Mask layer of the pixels above 0 "
                         "(a Labels layer of image > 0).")


def test_a_tiff_s_calibration_that_napari_left_out_is_pointed_to(qtbot, viewer_widget, tmp_path):
    # napari's reader opens Fiji's (Z, C, Y, X) stack of 1.5 x 0.5 x 0.5 um voxels at
    # scale 1 and with no channel axis: the dock segmented cubes of two slices' channels
    # where gmm-segment, given the same file, reads both
    import tifffile

    viewer, widget = viewer_widget
    stack = (np.random.default_rng(0).random((6, 2, 40, 48)) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "hyper.tif", stack, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"})
    [layer] = viewer.open(str(tmp_path / "hyper.tif"), plugin="napari")
    widget.image.value = layer
    fixed_smoothing(widget, 0.5)
    since = len(notification_manager.records)
    run(qtbot, widget)
    said = [m for m in new_messages(since, "warning") if "the file of layer" in m]
    assert len(said) == 1, new_messages(since, "warning")
    assert said[0].startswith("GMM Segmenter: hyper.tif, the file of layer 'hyper', holds "
                              "channels on axis 1: choose Channel axis 'axis 1 (size 2)'")
    assert ("it records a voxel size of 1.5 × 0.5 × 0.5 um, while the layer's scale is 1"
            in said[0]) and "viewer.layers['hyper'].scale = (1.5, 1, 0.5, 0.5)" in said[0]
    assert tuple(layer.scale) == (1, 1, 1, 1)  # advised, not changed
    since = len(notification_manager.records)
    run(qtbot, widget)  # said once
    assert not [m for m in new_messages(since, "warning") if "the file of layer" in m]
    # followed, there is nothing more to say
    layer.scale = (1.5, 1, 0.5, 0.5)
    widget.channel_axis.value = 1
    from gmm_segmenter.napari._widget import _calibration_advice

    assert _calibration_advice(layer, widget._image_layout(layer)) is None
