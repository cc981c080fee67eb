"""Guide with labels: scribbles painted in napari guide the fit.

Needs a display with OpenGL: run under Xvfb, e.g.
``xvfb-run -a -s "-screen 0 1366x768x24" python -m pytest tests/test_napari_guided.py``.
"""

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari comes with the napari extra")
pytest.importorskip("pytestqt", reason="pytest-qt comes with the test extra")

from napari.utils.notifications import notification_manager  # noqa: E402

try:  # the shared test images
    from _images import quadrants  # noqa: E402
except ImportError:
    from conftest import quadrants  # noqa: E402
from _helpers import fixed_smoothing, run_widget  # noqa: E402
from gmm_segmenter.napari import _jobs, _layers  # noqa: E402

TIMEOUT_MS = 60_000

# quadrants(): truth 1 (darkest) top left, 2 top right, 3 bottom left, 4 (brightest) bottom right
TOP_LEFT, BOTTOM_RIGHT = (16, 16), (48, 48)


def run(qtbot, widget, action=None):
    run_widget(qtbot, widget, action, timeout_ms=TIMEOUT_MS)


def new_messages(since, severity="error"):
    return [n.message for n in notification_manager.records[since:] if n.severity == severity]


def stroke(layer, label, points, brush_size=6):
    """Paint ``label`` along ``points`` as one brush stroke (one undo step, one paint event)."""
    layer.brush_size = brush_size
    with layer.block_history():
        for point in points:
            layer.paint(point, label, refresh=False)
    layer.refresh()


@pytest.fixture
def viewer_widget(viewer_widget, qtbot):
    """The viewer and widget, with Preview off and no job at the end (closing
    the viewer would otherwise start a preview of the next image on the list)."""
    yield viewer_widget
    widget = viewer_widget[1]
    widget.preview.value = False
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def quadrant_widget(viewer, widget, n_components=4):
    image, truth = quadrants()
    viewer.add_image(image, name="quads", scale=(2.0, 0.5))
    widget.image.value = viewer.layers["quads"]
    widget.n_components.value = n_components
    fixed_smoothing(widget, 0.0)
    return image, truth


def previewing(qtbot, viewer, widget):
    """The quadrants image, a new scribble layer and Preview on, its first
    (unguided) preview shown; returns ``(truth, scribbles)``."""
    _, truth = quadrant_widget(viewer, widget)
    scribbles = widget.add_scribble_layer()
    widget.preview.value = True
    qtbot.waitUntil(lambda: not widget.running and "quads GMM labels" in viewer.layers,
                    timeout=TIMEOUT_MS)
    return truth, scribbles


# ------------------------------------------------------- pure helpers


def test_scribble_arrays_per_frame_one_frame_and_empty():
    layout = _layers.make_layout((3, 8, 8), rgb=False, channel_axis=None,
                                 leading_axis=_layers.PER_FRAME)
    painted = np.zeros((3, 8, 8), np.uint8)
    painted[1, 2, 2] = 2
    frames = _layers.scribble_arrays(painted, layout)
    assert len(frames) == 3 and frames[1][2, 2] == 2 and not frames[0].any()
    one = _layers.scribble_arrays(painted[1], layout)
    assert len(one) == 3 and all(frame[2, 2] == 2 for frame in one)
    assert _layers.scribble_arrays(np.zeros((8, 8), np.uint8), layout) is None
    with pytest.raises(ValueError, match=r"scribbles have shape \(4, 4\).*New scribble layer"):
        _layers.scribble_arrays(np.zeros((4, 4), np.uint8), layout)


def test_jobs_pass_scribbles_as_y_and_only_where_painted(monkeypatch):
    from gmm_segmenter.estimator import GMMSegmenter

    seen = []
    original = GMMSegmenter.fit

    def fit(self, X, y=None, **kwargs):
        seen.append(None if y is None else np.asarray(y).copy())
        return original(self, X, **kwargs)

    monkeypatch.setattr(GMMSegmenter, "fit", fit)
    image, _ = quadrants((16, 16))
    painted = np.zeros((16, 16), np.uint8)
    painted[2, 2] = 1
    params = {"n_components": 2, "beta": 0.0, "random_state": 0}
    request = _jobs.Request(frames=[image, image], params=params, per_frame=True,
                            scribbles=[painted, np.zeros_like(painted)])
    job = _jobs.segment(request)
    while True:
        try:
            next(job)
        except StopIteration:
            break
    assert len(seen) == 2 and seen[0][2, 2] == 1 and seen[1] is None


def test_a_coarse_preview_grid_keeps_every_stroke():
    assert _layers.preview_stride((512, 512)) == 1
    assert _layers.preview_stride((1024, 1024)) == 2
    assert _layers.preview_stride((2048, 1536)) == 4
    painted = np.zeros((5, 7), np.uint8)
    painted[1, 3] = 2  # a one-pixel stroke, off the strided grid
    painted[4, 6] = 1  # in the last, partial block
    coarse = _layers.coarse_scribbles(painted, 2)
    assert coarse.shape == painted[::2, ::2].shape
    assert coarse[0, 1] == 2 and coarse[2, 3] == 1 and coarse.sum() == 3
    fine = _layers.fine_labels(np.arange(12).reshape(3, 4), 2, (5, 7))
    assert fine.shape == (5, 7) and fine[1, 1] == 0 and fine[4, 6] == 11


# ------------------------------------------------------ the widget


def test_the_layer_choice_and_a_new_scribble_layer_in_the_outputs_colours(
    qtbot, viewer_widget
):
    viewer, widget = viewer_widget
    quadrant_widget(viewer, widget)
    assert widget.scribbles.label == "Guide with labels" and widget.scribbles.value is None
    run(qtbot, widget)
    labels = viewer.layers["quads GMM labels"]
    labels.new_colormap(seed=7)  # the user shuffled the output's colours
    assert labels not in widget.scribbles.choices  # outputs are not offered
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="cells")
    assert widget.scribbles.value is None  # offered, not chosen for the user
    assert viewer.layers["cells"] in widget.scribbles.choices

    widget.new_scribbles_button.clicked.emit()
    scribbles = viewer.layers["quads scribbles"]
    assert widget.scribbles.value is scribbles
    assert viewer.layers.selection.active.name == scribbles.name and scribbles.mode == "paint"
    assert scribbles.data.shape == labels.data.shape and not scribbles.data.any()
    np.testing.assert_allclose(scribbles.scale, (2.0, 0.5))
    for k in range(1, 5):
        np.testing.assert_array_equal(scribbles.get_color(k), labels.get_color(k))
    n_layers = len(viewer.layers)
    widget.add_scribble_layer()  # chosen again, not added twice
    assert len(viewer.layers) == n_layers and widget.scribbles.value is scribbles


def test_an_empty_scribble_layer_or_none_changes_nothing(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    quadrant_widget(viewer, widget)
    run(qtbot, widget)
    unguided = viewer.layers["quads GMM labels"].data.copy()
    widget.add_scribble_layer()
    run(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["quads GMM labels"].data, unguided)
    assert widget.record["settings"]["scribbles"] is None
    assert "y=scribbles" not in widget.record["python"]


def test_labels_follow_the_scribble_numbering_and_a_rerun_updates_in_place(
    qtbot, viewer_widget
):
    viewer, widget = viewer_widget
    _, truth = quadrant_widget(viewer, widget)
    scribbles = widget.add_scribble_layer()
    stroke(scribbles, 1, [BOTTOM_RIGHT, (52, 44)])  # the brightest quadrant is class 1
    stroke(scribbles, 2, [TOP_LEFT])  # the darkest is class 2
    run(qtbot, widget)
    labels = viewer.layers["quads GMM labels"]
    # the new labels go under the strokes, in their colours
    assert viewer.layers.index(labels) < viewer.layers.index(scribbles)
    for k in range(1, 5):
        np.testing.assert_array_equal(labels.get_color(k), scribbles.get_color(k))
    assert np.mean(labels.data[truth == 4] == 1) > 0.99
    assert np.mean(labels.data[truth == 1] == 2) > 0.99
    assert set(np.unique(labels.data[(truth == 2) | (truth == 3)])) == {3, 4}
    # the next strokes go on the scribble layer, not on the new labels
    assert viewer.layers.selection.active.name == scribbles.name
    record = labels.metadata["gmm_segmenter"]
    assert record["settings"]["scribbles"]["layer"] == "quads scribbles"
    namespace = {"viewer": viewer}
    exec(record["python"], namespace)  # the code reads the scribbles too
    np.testing.assert_array_equal(namespace["labels"], labels.data)

    n_layers = len(viewer.layers)
    stroke(scribbles, 3, [(16, 48)])  # top right (truth 2) becomes class 3
    run(qtbot, widget)
    assert viewer.layers["quads GMM labels"] is labels and len(viewer.layers) == n_layers
    assert np.mean(labels.data[truth == 2] == 3) > 0.99
    assert np.mean(labels.data[truth == 3] == 4) > 0.99


@pytest.mark.parametrize("mode", ["shared", "per-frame"])
def test_a_time_series_is_guided_frame_by_frame_and_its_code_reproduces_it(
    qtbot, viewer_widget, mode
):
    viewer, widget = viewer_widget
    image, truth = quadrants((32, 32))
    viewer.add_image(np.stack([image, image + 15, image - 10]), name="movie")
    widget.image.value = viewer.layers["movie"]
    widget.leading_axis.value = mode
    widget.n_components.value = 4
    fixed_smoothing(widget, 0.0)
    scribbles = widget.add_scribble_layer()
    assert scribbles.data.shape == (3, 32, 32)  # one plane per frame
    painted = np.zeros((3, 32, 32), np.uint8)
    painted[:2, 20:28, 20:28] = 1  # bottom right (the brightest) is class 1 ...
    painted[:2, 4:12, 4:12] = 2  # ... and top left (the darkest) class 2, in frames 0 and 1
    scribbles.data = painted
    run(qtbot, widget)
    labels = viewer.layers["movie GMM labels"].data
    for t in (0, 1) if mode == "per-frame" else (0, 1, 2):
        assert np.mean(labels[t][truth == 4] == 1) > 0.99
        assert np.mean(labels[t][truth == 1] == 2) > 0.99
    if mode == "per-frame":  # frame 2 has no strokes: unguided, darkest first
        np.testing.assert_array_equal(labels[2], truth)
    namespace = {"viewer": viewer}
    exec(widget.record["python"], namespace)
    np.testing.assert_array_equal(namespace["labels"], labels)


def test_a_stroke_on_a_slice_of_a_stack_guides_that_slices_preview(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, truth = quadrants((48, 48))
    viewer.add_image(np.stack([image] * 4), name="stack")
    widget.image.value = viewer.layers["stack"]
    widget.n_components.value = 4
    fixed_smoothing(widget, 0.0)
    scribbles = widget.add_scribble_layer()
    viewer.dims.set_current_step(0, 2)
    widget.preview.value = True
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    stroke(scribbles, 1, [(2, 36, 36)], brush_size=5)  # on the displayed slice, 2
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert scribbles.data[2].any() and not scribbles.data[[0, 1, 3]].any()
    labels = viewer.layers["stack GMM labels"].data
    assert np.mean(labels[2][truth == 4] == 1) > 0.99
    assert not labels[[0, 1, 3]].any()  # a preview writes its slice only


def test_a_dask_layer_is_guided_too(qtbot, viewer_widget):
    da = pytest.importorskip("dask.array")
    viewer, widget = viewer_widget
    image, truth = quadrants()
    viewer.add_image(da.from_array(image, chunks=(32, 32)), name="lazy")
    widget.image.value = viewer.layers["lazy"]
    widget.n_components.value = 4
    fixed_smoothing(widget, 0.0)
    scribbles = widget.add_scribble_layer()
    stroke(scribbles, 1, [BOTTOM_RIGHT])
    stroke(scribbles, 2, [TOP_LEFT])
    run(qtbot, widget)
    labels = np.asarray(viewer.layers["lazy GMM labels"].data)
    assert np.mean(labels[truth == 4] == 1) > 0.99
    assert np.mean(labels[truth == 1] == 2) > 0.99


def test_guidance_with_bias_field_posteriors_and_component_layers(qtbot, viewer_widget):
    from _images import biased_blobs

    viewer, widget = viewer_widget
    image, truth, _ = biased_blobs((96, 96), amplitude=0.4)
    viewer.add_image(image, name="lit")
    widget.image.value = viewer.layers["lit"]
    widget.n_components.value = int(truth.max())
    fixed_smoothing(widget, 0.0)
    widget.bias_field.value = True
    widget.posteriors.value = True
    widget.per_component.value = True
    scribbles = widget.add_scribble_layer()
    # the brightest class painted 1, the darkest 2, wherever the truth says so
    brightest, darkest = int(truth.max()), int(truth[truth > 0].min())
    painted = np.zeros_like(scribbles.data)
    painted[::7, ::7][truth[::7, ::7] == brightest] = 1
    painted[::7, ::7][truth[::7, ::7] == darkest] = 2
    scribbles.data = painted
    run(qtbot, widget)
    labels = viewer.layers["lit GMM labels"].data
    assert np.mean(labels[truth == brightest] == 1) > 0.95
    assert np.mean(labels[truth == darkest] == 2) > 0.95
    for name in ("lit GMM bias field", "lit GMM posteriors", "lit GMM uncertainty",
                 "lit GMM component 1"):
        assert name in viewer.layers, name
    uncertainty = viewer.layers["lit GMM uncertainty"].data
    assert uncertainty.shape == truth.shape and 0 <= uncertainty.min() <= uncertainty.max() <= 1


def test_a_stroke_updates_the_preview(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    truth, scribbles = previewing(qtbot, viewer, widget)
    labels = viewer.layers["quads GMM labels"]
    assert labels.metadata["gmm_segmenter"]["settings"]["scribbles"] is None
    np.testing.assert_array_equal(labels.data, truth)  # unguided: darkest first

    stroke(scribbles, 1, [BOTTOM_RIGHT])
    assert widget.running  # the stroke started a preview
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    record = labels.metadata["gmm_segmenter"]
    assert record["operation"].startswith("preview")
    assert record["settings"]["scribbles"]["layer"] == "quads scribbles"
    assert np.mean(labels.data[truth == 4] == 1) > 0.99


def test_a_large_slice_is_previewed_on_a_coarser_grid(qtbot, viewer_widget, monkeypatch):
    monkeypatch.setattr(_layers, "PREVIEW_PIXELS", 32 * 32)  # the 64 x 64 image is large
    viewer, widget = viewer_widget
    truth, scribbles = previewing(qtbot, viewer, widget)
    stroke(scribbles, 1, [(49, 49)], brush_size=1)  # one pixel, off the strided grid
    stroke(scribbles, 2, [TOP_LEFT])
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    labels = viewer.layers["quads GMM labels"]
    assert "every 2nd pixel" in widget.status.value
    assert labels.data.shape == truth.shape
    assert np.mean(labels.data[truth == 4] == 1) > 0.95
    assert np.mean(labels.data[truth == 1] == 2) > 0.95
    record = labels.metadata["gmm_segmenter"]
    assert record["params"]["spacing"] == [4.0, 1.0]  # the layer's scale, times 2
    namespace = {"viewer": viewer}
    exec(record["python"], namespace)
    np.testing.assert_array_equal(namespace["labels"], labels.data)


def test_undoing_a_stroke_updates_the_preview(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    truth, scribbles = previewing(qtbot, viewer, widget)
    stroke(scribbles, 1, [BOTTOM_RIGHT])
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    labels = viewer.layers["quads GMM labels"]
    assert np.mean(labels.data[truth == 4] == 1) > 0.99
    guided = labels.metadata["gmm_segmenter"]
    qtbot.wait(500)  # the stroke's own redraws start no second preview
    assert labels.metadata["gmm_segmenter"] is guided
    scribbles.undo()  # emits no paint event, only a redraw
    qtbot.waitUntil(lambda: labels.metadata["gmm_segmenter"] is not guided
                    and not widget.running, timeout=TIMEOUT_MS)
    assert labels.metadata["gmm_segmenter"]["settings"]["scribbles"] is None
    np.testing.assert_array_equal(labels.data, truth)  # unguided again: darkest first


def test_previews_of_a_slice_reuse_the_smoothing_auto_chose_until_the_strokes_can(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    quadrant_widget(viewer, widget)
    widget.auto_beta.value = True
    scribbles = widget.add_scribble_layer()
    widget.preview.value = True
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    labels = viewer.layers["quads GMM labels"]
    first = labels.metadata["gmm_segmenter"]
    assert first["params"]["beta"] == "auto"
    assert first["params"]["max_samples"] == _layers.PREVIEW_SAMPLES
    assert first["params"]["max_iter_spatial"] == _layers.PREVIEW_SPATIAL_ITERATIONS
    stroke(scribbles, 1, [BOTTOM_RIGHT])
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    record = labels.metadata["gmm_segmenter"]
    assert record["settings"]["scribbles"] is not None
    assert record["params"]["beta"] == first["model"]["beta"]  # no second search
    stroke(scribbles, 1, [(56, 40)])  # a second stroke of class 1: the strokes choose
    qtbot.waitUntil(lambda: labels.metadata["gmm_segmenter"] is not record
                    and not widget.running, timeout=TIMEOUT_MS)
    assert labels.metadata["gmm_segmenter"]["params"]["beta"] == "auto"
    widget.n_components.value = 3  # another setting: auto chooses afresh
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert labels.metadata["gmm_segmenter"]["params"]["beta"] == "auto"


def test_strokes_during_a_preview_supersede_it(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    truth, scribbles = previewing(qtbot, viewer, widget)
    stroke(scribbles, 1, [BOTTOM_RIGHT])
    stroke(scribbles, 2, [TOP_LEFT])  # while the first stroke's preview runs
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    labels = viewer.layers["quads GMM labels"]
    assert "Cancelled" not in widget.status.value
    # the preview shown is the one with both strokes
    assert np.mean(labels.data[truth == 4] == 1) > 0.99
    assert np.mean(labels.data[truth == 1] == 2) > 0.99


def test_scribbles_of_another_shape_are_refused_before_a_job(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    quadrant_widget(viewer, widget)
    viewer.add_labels(np.ones((10, 10), np.uint8), name="small")
    widget.scribbles.value = viewer.layers["small"]
    since = len(notification_manager.records)
    widget.run()
    assert not widget.running
    errors = new_messages(since)
    # named as the control shows it, as every message about the scribbles does
    assert any("Guide with labels 'small': The scribbles have shape (10, 10)" in m
               and "(64, 64)" in m for m in errors), errors
    assert "quads GMM labels" not in viewer.layers
    assert widget.status.value.startswith("Not segmented: Guide with labels 'small'")


@pytest.mark.parametrize("case", ["class above K", "outside the mask", "same values"])
def test_bad_scribbles_end_in_a_notification_not_a_crash(qtbot, viewer_widget, case):
    viewer, widget = viewer_widget
    image, _ = quadrants(noise=0.0)  # flat quadrants: scribbles can hold identical values
    viewer.add_image(image.astype(np.uint8), name="quads")
    widget.image.value = viewer.layers["quads"]
    widget.n_components.value = 3
    fixed_smoothing(widget, 0.0)
    scribbles = widget.add_scribble_layer()
    if case == "class above K":
        stroke(scribbles, 7, [TOP_LEFT])
        severity, expected = "error", (
            "Guide with labels 'quads scribbles': The scribbles hold label 7 but the model has "
            "3 components (labels 1..3); raise Components to 7 or more (or tick its auto box), "
            "or paint fewer classes")
    elif case == "outside the mask":
        inside = np.zeros((64, 64), np.uint8)
        inside[32:] = 1
        viewer.add_labels(inside, name="bottom half")
        widget.mask.value = viewer.layers["bottom half"]
        stroke(scribbles, 1, [BOTTOM_RIGHT])
        stroke(scribbles, 2, [TOP_LEFT])  # all of class 2 outside the mask
        severity, expected = "error", "class(es) 2 lies on pixels that are masked out"
    else:
        stroke(scribbles, 1, [TOP_LEFT])
        stroke(scribbles, 2, [(20, 20)])  # the same flat quadrant
        severity, expected = "warning", "classes 1 and 2 cover identical pixel values"
    since = len(notification_manager.records)
    run(qtbot, widget)
    messages = new_messages(since, severity)
    assert any(expected in m for m in messages), messages
    assert not any("n_components" in m or "Scribbles y" in m for m in messages), messages
    assert widget.run_button.enabled and not widget.running
    if severity == "error":  # refused as the scribbles of another shape are, before a job
        assert widget.status.value.startswith("Not segmented: "), widget.status.value

    widget.preview.value = True  # the same through a stroke's preview
    since = len(notification_manager.records)
    stroke(scribbles, 3, [(60, 4)])
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    if severity == "error":
        messages = new_messages(since, severity)
        assert any(expected in m for m in messages), messages
    widget.preview.value = False

    scribbles.data = np.zeros_like(scribbles.data)
    widget.mask.value = None
    run(qtbot, widget)  # the widget still works
    assert viewer.layers["quads GMM labels"].data.max() == 3


def test_a_label_above_what_components_offers_is_sent_to_the_auto_box():
    from gmm_segmenter import GMMSegmenter
    from gmm_segmenter.napari._widget import MAX_COMPONENTS, _in_widget_words

    image, _ = quadrants(noise=5.0)
    for label, expected in [
        (7, "raise Components to 7 or more (or tick its auto box), or paint fewer classes"),
        (MAX_COMPONENTS + 10, f"tick the auto box of Components (Components itself goes up to "
                              f"{MAX_COMPONENTS}), or paint fewer classes"),
    ]:
        y = np.zeros(image.shape, np.int32)
        y[2:5, 2:5] = label
        with pytest.raises(ValueError) as raised:
            GMMSegmenter(3, beta=0).fit(image, y)
        words = _in_widget_words(raised.value)
        assert expected in words, words
        assert "n_components" not in words


def test_scribbled_pixels_keep_their_class_in_the_labels_and_the_recorded_code(
    qtbot, viewer_widget
):
    viewer, widget = viewer_widget
    _, truth = quadrant_widget(viewer, widget)
    scribbles = widget.add_scribble_layer()
    stroke(scribbles, 1, [BOTTOM_RIGHT, (52, 44)])
    stroke(scribbles, 2, [TOP_LEFT])
    scribbles.data[20, 20] = 1  # one pixel of the darkest quadrant called class 1
    scribbles.refresh()
    run(qtbot, widget)
    labels = viewer.layers["quads GMM labels"]
    assert labels.data[20, 20] == 1  # as fit_predict(X, y) gives it
    assert np.mean(labels.data[truth == 1] == 2) > 0.99
    namespace = {"viewer": viewer}
    exec(labels.metadata["gmm_segmenter"]["python"], namespace)
    np.testing.assert_array_equal(namespace["labels"], labels.data)


def test_the_first_preview_leaves_the_scribble_layer_selected_for_painting(
        qtbot, viewer_widget):
    viewer, widget = viewer_widget
    quadrant_widget(viewer, widget)
    scribbles = widget.add_scribble_layer()
    assert viewer.layers.selection.active.name == scribbles.name  # napari wraps it: no `is`
    assert scribbles.mode == "paint"
    widget.preview.value = True  # the first preview adds the labels layer
    qtbot.waitUntil(lambda: "quads GMM labels" in viewer.layers and not widget.running,
                    timeout=TIMEOUT_MS)
    assert viewer.layers.selection.active.name == scribbles.name
    assert scribbles.mode == "paint"
    viewer.layers.selection.active = viewer.layers["quads"]  # the user's own choice
    stroke(scribbles, 1, [BOTTOM_RIGHT])
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert viewer.layers.selection.active.name == "quads"  # is kept


def test_removing_the_image_during_a_preview_stops_it_without_a_warning(
        qtbot, viewer_widget):
    viewer, widget = viewer_widget
    quadrant_widget(viewer, widget)
    widget.preview.value = True
    qtbot.waitUntil(lambda: widget.running, timeout=TIMEOUT_MS)
    since = len(notification_manager.records)
    viewer.layers.remove("quads")
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert new_messages(since, "warning") == []
    assert "quads GMM labels" not in viewer.layers


def test_another_image_lets_go_of_the_last_ones_scribbles(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    quadrant_widget(viewer, widget)
    first = widget.add_scribble_layer()
    stroke(first, 1, [TOP_LEFT])
    viewer.add_image(np.random.default_rng(0).normal(size=(40, 50)), name="other")
    since = len(notification_manager.records)
    widget.preview.value = True
    widget.image.value = viewer.layers["other"]
    assert widget.scribbles.value is None  # (64, 64) strokes cannot guide a (40, 50) image
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert new_messages(since) == []
    own = widget.add_scribble_layer()  # guides "other"
    widget.image.value = viewer.layers["quads"]
    assert widget.scribbles.value.name == first.name  # each image's own scribble layer
    widget.image.value = viewer.layers["other"]
    assert widget.scribbles.value.name == own.name
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert new_messages(since) == []


def test_a_guided_model_s_curves_are_sized_by_its_labels(qtbot, viewer_widget, monkeypatch):
    # a guided fit's weights are equal, and curves drawn with them stood as
    # high for a class of 4 % of the pixels as for one of 80 %
    from gmm_segmenter import GMMSegmenter
    from gmm_segmenter.napari import _plot

    viewer, widget = viewer_widget
    rng = np.random.default_rng(0)
    truth = np.ones((96, 96), dtype=np.uint8)
    truth[:, 70:] = 2  # 27 %
    truth[10:30, 10:30] = 3  # 4 %
    image = np.choose(truth - 1, [50.0, 120.0, 200.0]) + rng.normal(0, 12, truth.shape)
    viewer.add_image(image, name="uneven")
    widget.image.value = viewer.layers["uneven"]
    scribbles = widget.add_scribble_layer()
    for label, point in ((1, (60, 40)), (2, (60, 85)), (3, (20, 20))):
        stroke(scribbles, label, [point])
    drawn = []
    real = _plot.component_densities
    monkeypatch.setattr(_plot, "component_densities", lambda model, x, weights=None: (
        drawn.append(weights) or real(model, x, weights)
    ))
    run(qtbot, widget)
    qtbot.waitUntil(lambda: widget.plot.rendering is None, timeout=TIMEOUT_MS)
    assert widget.model.beta_ > 0 and np.all(widget.model.weights_ == widget.model.weights_[0])
    labels = viewer.layers["uneven GMM labels"].data
    shares = np.bincount(labels.ravel(), minlength=4)[1:] / labels.size
    np.testing.assert_allclose(drawn[-1], shares)
    assert shares[2] < 0.06 and shares[0] > 0.6
    # an unguided model keeps its fitted weights
    figure = _plot.draw(GMMSegmenter(3, random_state=0).fit(image), None, shares=shares)
    assert "sized by their labels" not in figure.axes[0].get_title()
    assert drawn[-1] is None
