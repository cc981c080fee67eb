"""The napari plugin: pure helpers on arrays, then the widget in a real viewer.

Widget tests need a display with OpenGL: run them under Xvfb
(``bash tools/test.sh tests/test_napari.py`` sets it up).
"""

import itertools

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari comes with the napari extra")
pytest.importorskip("pytestqt", reason="pytest-qt comes with the test extra")

from napari.layers import Image  # noqa: E402
from napari.utils.notifications import notification_manager  # noqa: E402

from _helpers import fixed_smoothing, open_widget, run_widget  # noqa: E402
from _images import quadrants, rgb_patches  # noqa: E402
from gmm_segmenter import GMMSegmenter  # noqa: E402
from gmm_segmenter.napari import _jobs, _layers  # noqa: E402

TIMEOUT_MS = 30_000


# ------------------------------------------------------------- pure helpers


def test_layout_rgb_time_and_channels():
    rgb = _layers.make_layout((10, 12, 3), rgb=True, channel_axis=None, leading_axis="space")
    assert rgb.channel_axis == 2 and rgb.spatial_axes == (0, 1) and rgb.output_shape == (10, 12)
    series = _layers.make_layout((5, 2, 10, 12), rgb=False, channel_axis=1, leading_axis="shared")
    assert series.time_axis == 0 and series.spatial_shape == (10, 12)
    assert series.frame_channel_axis == 0 and series.output_shape == (5, 10, 12)
    assert len(series.frames(np.zeros(series.shape))) == 5
    with pytest.raises(ValueError, match="at least 2 per frame"):
        _layers.make_layout((5, 12), rgb=False, channel_axis=None, leading_axis="per-frame")
    with pytest.raises(ValueError, match="both the channel axis and time"):
        _layers.make_layout((5, 10, 12), rgb=False, channel_axis=0, leading_axis="shared")


def test_mask_array_checks_shape_and_emptiness():
    layout = _layers.make_layout((3, 8, 8), rgb=False, channel_axis=None, leading_axis="shared")
    frame_mask = np.zeros((8, 8), dtype=np.uint8)
    frame_mask[2:5, 2:5] = 1
    masks = _layers.mask_array(frame_mask, layout)
    assert len(masks) == 3 and masks[0].dtype == bool and masks[2].sum() == 9
    with pytest.raises(ValueError, match="shape"):
        _layers.mask_array(np.ones((4, 4)), layout)
    with pytest.raises(ValueError, match="empty"):
        _layers.mask_array(np.zeros((8, 8)), layout)


def test_output_transform_drops_the_channel_axis():
    layer = Image(np.zeros((2, 6, 8)), scale=(1.0, 0.5, 0.25), translate=(0.0, 10.0, 20.0))
    layout = _layers.make_layout((2, 6, 8), rgb=False, channel_axis=0, leading_axis="space")
    transform = _layers.output_transform(layer, layout)
    np.testing.assert_allclose(transform["scale"], [0.5, 0.25])
    np.testing.assert_allclose(transform["translate"], [10.0, 20.0])
    assert transform["rotate"].shape == (2, 2) and transform["affine"].shape == (3, 3)
    assert transform["axis_labels"] == ("-2", "-1")  # the channel axis's name goes too
    prepended = _layers.prepend_axis(transform, "component")
    assert prepended["axis_labels"] == ("component", "-2", "-1")
    assert prepended["scale"].tolist() == [1.0, 0.5, 0.25]
    assert _layers.spacing_from_scale(layer.scale, layout) == (0.5, 0.25)


def test_entropy_and_component_densities():
    posteriors = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(_layers.entropy(posteriors), [0.0, 1.0, 0.0], atol=1e-6)
    image, _ = quadrants()
    model = GMMSegmenter(4, beta=0, random_state=0).fit(image)
    x = np.linspace(-100, 400, 5001)
    densities = _layers.component_densities(model, x)
    # each weighted Gaussian integrates to its weight
    np.testing.assert_allclose(densities.sum(axis=1) * (x[1] - x[0]), model.weights_, atol=1e-3)


def test_jobs_yield_progress_and_per_frame_models():
    image, truth = quadrants((32, 32))
    request = _jobs.Request(frames=[image, image[::-1]], params={"n_components": 4,
                            "random_state": 0}, per_frame=True, posteriors=True)
    job = _jobs.segment(request)
    steps = []
    try:
        while True:
            steps.append(next(job))
    except StopIteration as stop:
        result = stop.value
    assert steps[-1].step == steps[-1].total == 6
    # frames numbered as the slider and the messages number them (from 0), and how far
    messages = [step.message for step in steps]
    assert "Fitting frame 1 (2 of 2)…" in messages, messages
    assert "Computing posteriors frame 0 (1 of 2)…" in messages, messages
    assert len(result.models) == 2 and len(result.labels) == 2
    assert result.posteriors[0].shape == (32, 32, 4)
    np.testing.assert_array_equal(result.labels[1], truth[::-1])


# ------------------------------------------------------------------- widget


def run(qtbot, widget, action=None):
    run_widget(qtbot, widget, action, timeout_ms=TIMEOUT_MS)


def new_errors(since):
    return [n.message for n in notification_manager.records[since:] if n.severity == "error"]


def test_manifest_validates_with_its_menu_and_samples():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("gmm-segmenter")
    manifest.validate_imports()
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == [
        "GMM Segmenter", "segment image", "apply model"]
    assert contributions.menus["napari/layers/segment"][0].command == "gmm-segmenter.make_widget"
    assert {s.key for s in contributions.sample_data} == {"coins", "astronaut", "noisy_blobs"}


def test_2d_image_layer_updated_in_place_with_scale(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, truth = quadrants()
    viewer.add_image(image, name="quads", scale=(2.0, 0.5), translate=(5.0, -3.0))
    widget.image.value = viewer.layers["quads"]
    widget.n_components.value = 4
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    labels = viewer.layers["quads GMM labels"]
    np.testing.assert_array_equal(labels.data, truth)
    np.testing.assert_allclose(labels.scale, (2.0, 0.5))
    np.testing.assert_allclose(labels.translate, (5.0, -3.0))
    assert widget.model.spacing == (2.0, 0.5)
    n_layers = len(viewer.layers)
    widget.n_components.value = 3
    fixed_smoothing(widget, 1.0)
    run(qtbot, widget)
    assert viewer.layers["quads GMM labels"] is labels and len(viewer.layers) == n_layers
    assert labels.data.max() == 3


def test_rgb_with_component_and_posterior_layers(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, truth = rgb_patches()
    viewer.add_image(image.astype(np.uint8), name="rgb", rgb=True)
    widget.image.value = viewer.layers["rgb"]
    widget.per_component.value = True
    widget.posteriors.value = True
    run(qtbot, widget)
    labels = viewer.layers["rgb GMM labels"].data
    assert labels.shape == truth.shape and np.mean(labels == truth) > 0.99
    assert widget.model.n_features_in_ == 3
    np.testing.assert_array_equal(viewer.layers["rgb GMM component 2"].data == 2, truth == 2)
    assert viewer.layers["rgb GMM posteriors"].data.shape == (3,) + truth.shape
    uncertainty = viewer.layers["rgb GMM uncertainty"].data
    assert uncertainty.shape == truth.shape and 0 <= uncertainty.min() <= uncertainty.max() <= 1
    widget.per_component.value = False
    run(qtbot, widget)
    assert "rgb GMM component 1" not in viewer.layers


def test_3d_stack_spacing_from_scale_and_preview(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, truth = quadrants((48, 48))
    stack = np.stack([image + np.random.default_rng(i).normal(size=image.shape) for i in range(6)])
    viewer.add_image(stack, name="stack", scale=(3.0, 1.0, 1.0))
    widget.image.value = viewer.layers["stack"]
    widget.n_components.value = 4
    run(qtbot, widget)
    labels = viewer.layers["stack GMM labels"]
    assert labels.data.shape == stack.shape and widget.model.spacing == (3.0, 1.0, 1.0)
    assert np.mean(labels.data == truth) > 0.99
    np.testing.assert_allclose(labels.scale, (3.0, 1.0, 1.0))

    labels.data = np.zeros_like(labels.data)
    viewer.dims.set_current_step(0, 2)
    widget.preview.value = True  # segments the displayed slice only
    qtbot.waitUntil(lambda: not widget.running and labels.data.any(), timeout=TIMEOUT_MS)
    assert labels.data[2].all() and not labels.data[[0, 1, 3, 4, 5]].any()
    widget.preview.value = False


def test_time_series_shared_and_per_frame(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, truth = quadrants((32, 32))
    frames = np.stack([image, image[:, ::-1], image[::-1]])
    viewer.add_image(frames, name="movie")
    widget.image.value = viewer.layers["movie"]
    widget.n_components.value = 4
    widget.leading_axis.value = "shared"
    run(qtbot, widget)
    labels = viewer.layers["movie GMM labels"].data
    assert widget.model.spacing == (1.0, 1.0)  # time is not a spatial axis
    np.testing.assert_array_equal(labels, np.stack([truth, truth[:, ::-1], truth[::-1]]))
    widget.leading_axis.value = "per-frame"
    run(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["movie GMM labels"].data, labels)


def test_time_is_offered_only_where_a_frame_keeps_two_spatial_axes(viewer_widget):
    viewer, widget = viewer_widget
    image, _ = quadrants((32, 32))
    rgb, _ = rgb_patches((40, 60))
    viewer.add_image(np.stack([image, image]), name="movie")
    viewer.add_image(rgb.astype(np.uint8), name="photo", rgb=True)
    viewer.add_image(image, name="flat")
    all_modes = ["space", "shared", "per-frame"]
    widget.image.value = viewer.layers["movie"]
    assert list(widget.leading_axis.choices) == all_modes
    assert not widget.leading_axis.native.isHidden()
    widget.leading_axis.value = "per-frame"
    # a photo or a 2-D image cannot be a time series: the choice goes back to
    # space, and a list of that one option is not shown
    for name in ("photo", "flat"):
        widget.image.value = viewer.layers[name]
        assert list(widget.leading_axis.choices) == ["space"]
        assert widget.leading_axis.value == "space"
        assert widget.leading_axis.native.isHidden()
    # a 2-D grey image has no axis to spare for channels (labels would be a line)
    assert list(widget.channel_axis.choices) == [None]
    assert widget.channel_axis.native.isHidden()
    widget.image.value = viewer.layers["photo"]  # its channels are its colours
    assert widget.channel_axis.native.isHidden()
    widget.image.value = viewer.layers["movie"]
    assert list(widget.leading_axis.choices) == all_modes
    assert not widget.channel_axis.native.isHidden()
    widget.leading_axis.value = "shared"
    assert not widget.leading_axis.native.isHidden()
    widget.channel_axis.value = 0  # the leading axis as channels: no time left
    assert widget.leading_axis.value == "space"
    assert list(widget.leading_axis.choices) == ["space"]
    assert widget.leading_axis.native.isHidden()
    # back to none, as in the dock's own list (magicgui says nothing of a None)
    widget.channel_axis.native.setCurrentIndex(0)
    assert widget.channel_axis.value is None
    assert list(widget.leading_axis.choices) == all_modes
    assert not widget.leading_axis.native.isHidden()


def test_a_time_axis_by_name_or_unit_defaults_to_its_frames_and_keeps_a_users_choice(
    qtbot, viewer_widget
):
    # 't' or seconds on the leading axis were read as space, and the status
    # said "voxel size 60 × 0.3 × 0.3", seconds and micrometres mixed
    viewer, widget = viewer_widget
    image, truth = quadrants((32, 32))
    frames = np.stack([image, image[:, ::-1], image[::-1]])
    viewer.add_image(frames, name="named", axis_labels=("t", "y", "x"))
    viewer.add_image(frames, name="timed", scale=(60, 0.3, 0.3), units=("s", "um", "um"))
    viewer.add_image(frames, name="minutes", units=("min", "um", "um"))
    viewer.add_image(frames, name="zstack", scale=(2, 0.3, 0.3), units=("um", "um", "um"))
    for name, mode in (("named", "shared"), ("zstack", "space"), ("timed", "shared"),
                       ("minutes", "shared"), ("zstack", "space")):
        widget.image.value = viewer.layers[name]
        assert widget.leading_axis.value == mode, name
    widget.image.value = viewer.layers["timed"]
    widget.n_components.value = 4
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["timed GMM labels"].data,
                                  np.stack([truth, truth[:, ::-1], truth[::-1]]))
    assert "voxel size" not in widget.status.value, widget.status.value
    # the user's choice stays: not overridden on coming back to the layer
    widget.leading_axis.value = "space"
    widget.image.value = viewer.layers["zstack"]
    widget.image.value = viewer.layers["timed"]
    assert widget.leading_axis.value == "space"
    run(qtbot, widget)
    status = widget.status.value
    assert "voxel size" not in status and "60 × 0.3" not in status, status
    assert "axis 0 is time (in s), smoothed as space (Leading axis 'time: one model' " \
           "segments its frames)" in status, status
    # and the z-stack still says its voxel size, in its unit
    widget.image.value = viewer.layers["zstack"]
    run(qtbot, widget)
    assert "voxel size 2 × 0.3 × 0.3 µm" in widget.status.value, widget.status.value


def test_multichannel_layer_with_a_channel_axis(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, truth = rgb_patches((40, 60))
    channels_first = np.moveaxis(image, -1, 0)
    viewer.add_image(channels_first, name="multi", scale=(1.0, 0.5, 0.5))
    widget.image.value = viewer.layers["multi"]
    widget.channel_axis.value = 0
    widget.posteriors.value = True
    run(qtbot, widget)
    labels = viewer.layers["multi GMM labels"]
    assert labels.data.shape == truth.shape and np.mean(labels.data == truth) > 0.99
    np.testing.assert_allclose(labels.scale, (0.5, 0.5))
    # the components' axis comes before the channels', not on it (they shared
    # one slider, and at component 2 the image of 2 channels showed nothing)
    posteriors = viewer.layers["multi GMM posteriors"]
    n_components = widget.model.n_components_
    assert posteriors.data.shape == (n_components, 1) + truth.shape
    image = viewer.layers["multi"]
    for channel in range(3):
        world = image.data_to_world((channel, 10, 20))
        assert tuple(np.round(posteriors.world_to_data((1, *world))).astype(int)) == (
            1, 0, 10, 20)


def test_outputs_of_a_layer_with_channels_after_the_first_axis_overlay_it(
        qtbot, viewer_widget):
    # napari lines up a layer of fewer dimensions with the others' last axes:
    # labels (Z, Y, X) of a ZCYX layer had their Z on its C
    viewer, widget = viewer_widget
    image, truth = rgb_patches((40, 60))
    stack = np.stack([np.moveaxis(image, -1, 0)] * 3)  # (Z, C, Y, X)
    layer = viewer.add_image(stack, name="zcyx", scale=(3.0, 1.0, 0.5, 0.5))
    widget.image.value = layer
    widget.channel_axis.value = 1
    widget.posteriors.value = True
    widget.per_component.value = True
    widget.bias_field.value = True
    run(qtbot, widget)
    labels = viewer.layers["zcyx GMM labels"]
    assert labels.data.shape == (3, 1, 40, 60)
    histogram = widget.plot._drawn[1]  # the plot shows the pixels of the channels
    assert histogram.counts.sum() > 0 and not histogram.by_channels
    assert all(np.mean(labels.data[z, 0] == truth) > 0.99 for z in range(3))
    # every point of the image, at every channel, finds its own pixel's label
    for z, c, y, x in [(2, 0, 5, 50), (2, 1, 5, 50), (2, 2, 5, 50), (0, 2, 33, 7)]:
        world = layer.data_to_world((z, c, y, x))
        assert tuple(np.round(labels.world_to_data(world)).astype(int)) == (z, 0, y, x)
    for name in ("zcyx GMM component 1", "zcyx GMM uncertainty"):
        assert viewer.layers[name].data.shape == (3, 1, 40, 60)
        np.testing.assert_allclose(viewer.layers[name].scale, labels.scale)
    posteriors = viewer.layers["zcyx GMM posteriors"]
    assert posteriors.data.shape == (3, 3, 1, 40, 60)
    world = layer.data_to_world((1, 2, 20, 30))
    assert tuple(np.round(posteriors.world_to_data((0, *world))).astype(int)) == (0, 1, 0, 20, 30)
    # one field per channel, on the image's own channel axis and transform
    field = viewer.layers["zcyx GMM bias field"]
    assert field.data.shape == stack.shape
    np.testing.assert_allclose(field.scale, layer.scale)
    # scribbles painted on a layer the dock made have the labels' shape, and guide
    scribbles = widget.add_scribble_layer()
    assert scribbles.data.shape == (3, 1, 40, 60)
    scribbles.data[1, 0][truth == 1] = 3
    scribbles.refresh()
    run(qtbot, widget)
    assert np.all(labels.data[1, 0][truth == 1] == 3)
    namespace = {"viewer": viewer}  # Copy Python code reads the scribbles and gives the same
    exec(labels.metadata["gmm_segmenter"]["python"], namespace)
    np.testing.assert_array_equal(namespace["labels"], labels.data)
    # the preview writes its slice into the layer
    widget.scribbles.value = None
    first = viewer.dims.ndim - 4  # the posteriors' component axis comes before the image's
    viewer.dims.set_point(first, layer.data_to_world((2, 1, 20, 30))[0])
    viewer.dims.set_point(first + 1, 1.0)
    labels.data[...] = 0
    widget.preview_now()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert labels.data[2, 0].all() and not labels.data[:2].any()


def test_a_channel_axis_of_one_channel_runs_with_a_histogram(qtbot, viewer_widget):
    # the plot's histogram of several channels failed on one, and so did the job
    viewer, widget = viewer_widget
    image, truth = quadrants((32, 32))
    layer = viewer.add_image(image[np.newaxis], name="cyx1")
    widget.image.value = layer
    widget.channel_axis.value = 0
    widget.n_components.value = 4
    run(qtbot, widget)
    assert np.mean(viewer.layers["cyx1 GMM labels"].data == truth) > 0.99
    counts, edges = widget.plot._drawn[1]  # the histogram of the one channel
    assert 0.99 * truth.size < counts.sum() <= truth.size and edges.ndim == 1


def test_the_plot_s_sample_is_divided_by_the_bias_field():
    # (the whole frames were divided first: a copy of each, for a sample of them)
    from gmm_segmenter.napari._jobs import channel_histogram, pixel_values

    rng = np.random.default_rng(0)
    frame = rng.random((3, 40, 50)) + 1.0
    field = np.linspace(0.5, 1.5, frame.size).reshape(frame.shape)
    np.testing.assert_allclose(pixel_values(frame, fields=field, limit=500),
                               pixel_values(frame / field, limit=500))
    sampled = channel_histogram([frame], None, 0, [field])
    whole = channel_histogram([frame / field], None, 0)
    np.testing.assert_array_equal(sampled.counts, whole.counts)
    np.testing.assert_allclose(sampled.centre, whole.centre)


def test_shapes_mask_limits_the_labels(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, truth = quadrants((40, 40))
    viewer.add_image(image, name="quads")
    viewer.add_shapes([np.array([[0, 0], [0, 39], [29, 39], [29, 0]])], name="region")
    widget.image.value = viewer.layers["quads"]
    widget.mask.value = viewer.layers["region"]
    widget.n_components.value = 4
    run(qtbot, widget)
    labels = viewer.layers["quads GMM labels"].data
    assert not labels[31:].any()
    np.testing.assert_array_equal(labels[:20], truth[:20])


def test_a_shapes_mask_of_another_scale_covers_what_it_is_drawn_over(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, truth = quadrants((40, 40))
    viewer.add_image(image, name="quads", scale=(2.0, 2.0), translate=(10.0, 0.0))
    # drawn in world coordinates over the image's rows 0-19 (world 10-48),
    # on a layer of scale 1 made before the image
    viewer.add_shapes([np.array([[10, 0], [10, 79], [48, 79], [48, 0]])], name="region")
    widget.image.value = viewer.layers["quads"]
    widget.mask.value = viewer.layers["region"]
    widget.n_components.value = 4
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    labels = viewer.layers["quads GMM labels"]
    assert not labels.data[20:].any() and labels.data[:19].all()
    namespace = {"viewer": viewer}  # Copy Python code draws the same mask
    exec(labels.metadata["gmm_segmenter"]["python"], namespace)
    np.testing.assert_array_equal(namespace["labels"], labels.data)


def test_cancel_and_no_second_job(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    stack = np.random.default_rng(0).normal(size=(8, 128, 128))
    viewer.add_image(stack, name="noise")
    widget.image.value = viewer.layers["noise"]
    widget.leading_axis.value = "per-frame"
    widget.run()
    worker = widget.worker
    widget.run()  # ignored while the first job runs
    assert widget.worker is worker
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.status.value == "Cancelled"
    assert "noise GMM labels" not in viewer.layers and widget.model is None


def test_no_warning_is_shown_about_a_cancelled_job(qtbot, viewer_widget):
    from gmm_segmenter.napari._widget import _Warned

    viewer, widget = viewer_widget
    viewer.add_image(np.random.default_rng(0).normal(size=(8, 128, 128)), name="noise")
    widget.image.value = viewer.layers["noise"]
    since = len(notification_manager.records)
    widget.run()
    worker = widget.worker
    worker.yielded.emit(_Warned("while it runs"))
    widget.cancel()
    worker.yielded.emit(_Warned("about the result thrown away"))
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    shown = [n.message for n in notification_manager.records[since:]]
    assert "GMM Segmenter: while it runs" in shown
    assert not any("thrown away" in message for message in shown)


def test_warnings_that_differ_only_in_numbers_are_shown_once_a_job():
    import warnings

    from gmm_segmenter.napari._widget import _new_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for frame_share in (0.12, 0.3, 2e-05):  # each frame of a 'fit each frame' run
            warnings.warn(f"Under the spatial prior (beta=1.2) 2 of the 6 components keep "
                          f"almost none of their pixels (pixel-wise they had {frame_share:.2g})")
        warnings.warn("The image is constant.")
    shown = set()
    said = [step.message for step in _new_warnings(caught, shown)]
    assert said == [
        "Under the spatial prior (beta=1.2) 2 of the 6 components keep almost none of "
        "their pixels (pixel-wise they had 0.12)",
        "The image is constant.",
    ]
    assert caught == []


def test_a_mask_that_does_not_fit_the_layer_applied_to_says_so(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    image, _ = quadrants((40, 40))
    viewer.add_image(image, name="train")
    viewer.add_image(image[:30, :24], name="small")
    viewer.add_labels(np.ones((40, 40), np.uint8), name="inside")
    widget.image.value = viewer.layers["train"]
    widget.mask.value = viewer.layers["inside"]
    widget.n_components.value = 4
    run(qtbot, widget)
    since = len(notification_manager.records)
    widget.apply_model(viewer.layers["small"])
    assert not widget.running and "small GMM labels" not in viewer.layers
    said = [n.message for n in notification_manager.records[since:] if n.severity == "error"]
    assert len(said) == 1 and said[0].startswith(
        "GMM Segmenter: Mask 'inside' does not fit 'small', the layer the model is applied "
        "to: The mask has shape (40, 40), but the image's pixels have shape (30, 24);")
    assert said[0].endswith("Or choose no Mask to apply the model to all of 'small'.")
    widget.mask.value = None
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["small"]))
    assert viewer.layers["small GMM labels"].data.shape == (30, 24)


def test_apply_to_other_layer_and_save_load_round_trip(qtbot, viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    image, truth = quadrants(seed=0)
    other, _ = quadrants(seed=1)
    viewer.add_image(image, name="train")
    viewer.add_image(other, name="other")
    widget.image.value = viewer.layers["train"]
    widget.n_components.value = 4
    run(qtbot, widget)
    model = widget.model
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["other"]))
    assert widget.model is model  # applying does not refit
    applied = viewer.layers["other GMM labels"].data.copy()
    np.testing.assert_array_equal(applied, model.predict(other))

    path = widget.save_model(tmp_path / "quads.npz")
    assert path.exists()
    widget.model = None
    loaded = widget.load_model(path)
    np.testing.assert_allclose(loaded.means_, model.means_)
    viewer.layers["other GMM labels"].data = np.zeros_like(applied)
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["other"]))
    np.testing.assert_array_equal(viewer.layers["other GMM labels"].data, applied)


def test_bad_input_shows_notifications(qtbot, viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    viewer.add_image(np.full((20, 20), 7.0), name="flat")
    widget.image.value = viewer.layers["flat"]
    since = len(notification_manager.records)
    run(qtbot, widget)  # the fit fails in the worker thread
    errors = new_errors(since)
    assert any("Components is 3, but the image's valid pixels hold only 1" in message
               for message in errors), errors

    viewer.add_labels(np.zeros((20, 20), dtype=np.uint8), name="empty mask")
    widget.mask.value = viewer.layers["empty mask"]
    since = len(notification_manager.records)
    widget.run()
    assert not widget.running
    assert any("empty" in message for message in new_errors(since))

    (tmp_path / "bad.npz").write_bytes(b"not a model")
    since = len(notification_manager.records)
    assert widget.load_model(tmp_path / "bad.npz") is None
    assert any("not a valid gmm-segmenter model file" in m for m in new_errors(since))


def test_sample_data_and_screenshot_not_blank(qtbot, make_napari_viewer):
    # a hidden viewer's canvas is never drawn: show it (on the virtual display)
    viewer, widget = open_widget(make_napari_viewer(show=True))
    viewer.open_sample("gmm-segmenter", "coins")
    widget.image.value = viewer.layers["coins"]
    widget.n_components.value = 2
    run(qtbot, widget)
    viewer.layers["coins"].visible = False
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.ndim == 3 and shot.shape[-1] == 4
    colours = np.unique(shot[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) >= 2, "the labels layer did not draw"
    assert shot[..., :3].std() > 10


def test_the_noisy_blobs_sample_holds_as_many_classes_as_the_widget_fits():
    from gmm_segmenter.napari import _sample_data

    ((image, meta, kind),) = _sample_data.noisy_blobs()
    assert kind == "image" and image.dtype == np.uint8 and image.shape == (32, 128, 128)
    searched = GMMSegmenter("auto", beta=0, random_state=0).fit(image)
    assert searched.n_components_ == 3  # the widget's default number of components
    assert np.array_equal(_sample_data.noisy_blobs()[0][0], image)  # seeded


@pytest.mark.parametrize("image, channel_axis", [
    (np.tile(np.arange(0, 250, 50, dtype=np.uint8), (40, 8)), None),
    (np.dstack([np.tile(np.arange(0, 250, 50, dtype=np.uint8), (40, 8))] * 3), -1),
])
def test_every_word_of_the_plot_lies_inside_it(image, channel_axis):
    # the BIC curve's six-digit ticks once pushed its label off the figure
    from gmm_segmenter.napari._plot import draw

    noisy = image + np.random.default_rng(0).normal(0, 8, image.shape)
    model = GMMSegmenter("auto", channel_axis=channel_axis, beta=0, random_state=0).fit(
        np.tile(noisy, (8, 8) + (1,) * (noisy.ndim - 2)))
    assert max(abs(b) for b in model.bic_curve_) > 1e5
    from gmm_segmenter.napari._jobs import channel_histogram

    histograms = [None]
    if channel_axis is not None:  # the pixels of the channels, with their axes' labels
        histograms.append(channel_histogram(noisy, None, channel_axis))
    for size, histogram in itertools.product([(300, 300), (420, 300)], histograms):
        figure = draw(model, histogram, size=size)  # the dock's sizes with a BIC curve
        renderer = figure.canvas.get_renderer()
        width, height = figure.canvas.get_width_height()
        assert len(figure.axes) == 2 and figure.axes[1].get_title().startswith("BIC")
        for axes in figure.axes:
            box = axes.get_tightbbox(renderer)
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, box
    if channel_axis is None:  # a lone histogram: a narrow left margin, the words inside
        from gmm_segmenter.napari._jobs import pixel_histogram

        model = GMMSegmenter(3, beta=0, random_state=0).fit(noisy)
        figure = draw(model, pixel_histogram(noisy), size=(300, 220))
        (axes,) = figure.axes
        box = axes.get_tightbbox(figure.canvas.get_renderer())
        assert 0 <= box.x0 < 0.1 * 300 and box.y0 >= 0, box
        *curves, total = axes.lines  # the dashed sum under the components' curves
        assert total.get_linestyle() == "--"
        assert all(total.get_zorder() < curve.get_zorder() for curve in curves)
    if channel_axis is not None:  # and without a BIC curve, in the smallest dock
        model = GMMSegmenter(3, channel_axis=channel_axis, beta=0, random_state=0).fit(noisy)
        figure = draw(model, histograms[1], size=(300, 220))
        (axes,) = figure.axes
        assert axes.get_ylabel() == "principal axis 2"
        box = axes.get_tightbbox(figure.canvas.get_renderer())
        assert box.x0 >= 0 and box.y0 >= 0, box


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_a_model_of_several_channels_is_drawn_over_its_pixels(covariance_type):
    # it was a bar chart of the weights: nothing of the pixels or the classes' shapes
    from gmm_segmenter.napari._jobs import channel_histogram
    from gmm_segmenter.napari._plot import draw, full_covariances

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=(60, 80))
    means = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 5.0]])
    two = np.moveaxis(means[truth] + rng.normal(scale=0.5, size=truth.shape + (2,)), -1, 0)
    model = GMMSegmenter(3, channel_axis=0, beta=0, covariance_type=covariance_type,
                         random_state=0).fit(two)
    histogram = channel_histogram(two, None, 0)
    # every pixel sampled, those beyond the 0.5-99.5 percentiles of a channel off the plot
    assert histogram.by_channels and 0.97 * truth.size < histogram.counts.sum() < truth.size
    (axes,) = draw(model, histogram, colours={1: "red"}).axes
    ellipses = sorted(axes.patches, key=lambda patch: tuple(patch.center))
    # channels counted from 0, as napari's slider of a channel axis counts them
    assert len(ellipses) == 3 and axes.get_xlabel() == "channel 0"
    assert axes.get_ylabel() == "channel 1"
    for ellipse, mean in zip(ellipses, sorted(map(tuple, model.means_))):
        np.testing.assert_allclose(ellipse.center, mean)
        # two standard deviations each way of a spread of 0.5 per channel
        assert 1.6 < min(ellipse.width, ellipse.height) <= max(ellipse.width, ellipse.height) < 2.5
    assert full_covariances(model).shape == (3, 2, 2)
    assert [text.get_text() for text in axes.texts] == ["1", "2", "3"]
    # a tight class at the end of the range (a black background) stays inside
    # the frame, its mean dotted: its ellipse alone was too small to see
    dark = np.where(truth == 0, -3.0, two)
    dark[:, truth == 0] = -3.0 + rng.normal(scale=1e-3, size=(2, int((truth == 0).sum())))
    model = GMMSegmenter(3, channel_axis=0, beta=0, random_state=0).fit(dark)
    (axes,) = draw(model, channel_histogram(dark, None, 0)).axes
    (left, right), (bottom, top) = axes.get_xlim(), axes.get_ylim()
    assert left < model.means_[:, 0].min() and bottom < model.means_[:, 1].min()
    assert right > model.means_[:, 0].max() and top > model.means_[:, 1].max()
    assert len(axes.lines) == 3  # a dot per mean
    # three channels: their plane of largest spread, where the means lie
    rgb = np.concatenate([two, two[:1] + two[1:]])
    model = GMMSegmenter(3, channel_axis=0, beta=0, random_state=0).fit(rgb)
    histogram = channel_histogram([rgb, rgb[:, ::2]], [None, np.ones((30, 80), bool)], 0)
    assert not histogram.by_channels
    assert 0.97 * truth.size * 3 // 2 < histogram.counts.sum() < truth.size * 3 // 2
    (axes,) = draw(model, histogram).axes
    assert axes.get_xlabel() == "principal axis 1" and len(axes.patches) == 3
    plane = (model.means_ - histogram.centre) @ histogram.projection.T
    back = plane @ histogram.projection + histogram.centre
    np.testing.assert_allclose(back, model.means_, atol=1e-6)  # nothing lost off the plane


@pytest.mark.parametrize("corrected", [False, True, "partly"])
def test_the_plot_of_two_channels_keeps_its_words_and_ellipses_in_sight(corrected):
    # the y label ran off the top ("channel 2, corrected for the bias fiel"), a
    # broad class's ellipse off the right, and label 1's dark red number was
    # unreadable on napari's dark theme
    from matplotlib.colors import to_rgba

    from gmm_segmenter.napari._jobs import channel_histogram
    from gmm_segmenter.napari._plot import draw

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=(80, 80))
    means = np.array([[15.0, 10.0], [20.0, 60.0], [83.0, 60.0]])
    spreads = np.array([[6.0, 6.0], [8.0, 4.0], [25.0, 4.0]])
    two = means[truth] + rng.normal(size=truth.shape + (2,)) * spreads[truth]
    two = np.minimum(two, 100.0)  # saturated: the broad class's ellipse reaches past the pixels
    dark = {"background": "#262930", "foreground": "#f0f1f2", "faint": "#5a626c"}
    for n_components, size in ((3, (300, 220)), ("auto", (300, 300))):  # the dock's sizes
        model = GMMSegmenter(n_components, channel_axis=-1, beta=0, bias_field="auto",
                             random_state=0).fit(two)
        figure = draw(model, channel_histogram(two, None, -1), {1: "#8b1a00"}, dark,
                      size=size, corrected=corrected)
        renderer = figure.canvas.get_renderer()
        width, height = figure.canvas.get_width_height()
        axes = figure.axes[0]
        texts = [text for each in figure.axes
                 for text in (each.title, each.xaxis.label, each.yaxis.label, *each.texts)]
        for text in texts:
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, (
                text.get_text(), box)
        assert ("corrected for the bias field" in axes.get_title()) == bool(corrected)
        (left, right), (bottom, top) = axes.get_xlim(), axes.get_ylim()
        for ellipse in axes.patches:  # every ellipse drawn, whole
            extent = ellipse.get_path().get_extents(ellipse.get_patch_transform())
            assert left <= extent.x0 and extent.x1 <= right, (extent, left, right)
            assert bottom <= extent.y0 and extent.y1 <= top, (extent, bottom, top)
        # the numbers in the theme's text colour, the label's colour round them
        number = axes.texts[0]
        assert to_rgba(number.get_color()) == to_rgba(dark["foreground"])
        assert to_rgba(number.get_bbox_patch().get_edgecolor())[:3] == to_rgba("#8b1a00")[:3]


@pytest.mark.parametrize("n_components, expected", [(3, [1, 2, 3]), (30, list(range(1, 31, 3)))])
def test_the_weights_of_a_colour_model_are_ticked_at_whole_labels(n_components, expected):
    from gmm_segmenter.napari._plot import draw

    rgb = np.random.default_rng(0).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    model = GMMSegmenter(n_components, channel_axis=-1, beta=0, max_iter=5,
                         random_state=0).fit(rgb)
    (axes,) = draw(model).axes
    assert axes.get_xticks().tolist() == expected  # no 0.5, 1.5, ... for labels


@pytest.mark.parametrize("preview", [False, True])
def test_a_preview_does_not_warn_that_its_shortened_em_stopped_early(preview):
    import threading

    from gmm_segmenter.napari._widget import _drive, _Warned

    image, _ = quadrants()
    noisy = image + np.random.default_rng(0).normal(scale=0.6 * image.std(), size=image.shape)

    def job():
        GMMSegmenter(4, beta=1.0, max_iter_spatial=1, random_state=0).fit(noisy)
        GMMSegmenter(4, beta=0, max_iter=1, init_params="random", random_state=0).fit(noisy)
        yield "fitted"

    steps = list(_drive(job(), threading.Event(), preview=preview))
    warned = [step.message for step in steps if isinstance(step, _Warned)]
    # the pixel-wise EM's limit is not shortened in a preview: it still warns
    assert len(warned) == 2 - preview and "EM did not converge in max_iter=1" in warned[-1]
    assert any("max_iter_spatial=1" in message for message in warned) != preview


def test_cancel_stops_a_fit_inside_em():
    import threading

    from gmm_segmenter import Cancelled
    from gmm_segmenter.napari._widget import _drive

    image, _ = quadrants()
    segmenter = GMMSegmenter(4)
    cancel_requested = threading.Event()

    def job():
        yield "started"
        cancel_requested.set()  # Cancel pressed while the fit runs
        segmenter.fit(image)
        yield "fitted"

    driven = _drive(job(), cancel_requested)
    assert next(driven) == "started"
    with pytest.raises(Cancelled):
        next(driven)
    assert not hasattr(segmenter, "means_")


def test_cancel_during_a_fit_is_shown_as_cancelled(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    volume = np.random.default_rng(1).normal(size=(48, 160, 160)).astype(np.float32)
    viewer.add_image(volume, name="volume")

    def cancel_a_fit_of_the_volume():
        widget.image.value = viewer.layers["volume"]
        widget.run()
        qtbot.waitUntil(lambda: widget.status.value.startswith("Fitting"), timeout=TIMEOUT_MS)
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
        return widget.status.value

    assert cancel_a_fit_of_the_volume() == "Cancelled"
    assert "volume GMM labels" not in viewer.layers
    # with a model from an earlier run, the status says whose the plot shows again
    image, _ = quadrants((40, 40))
    viewer.add_image(image, name="quads")
    widget.image.value = viewer.layers["quads"]
    run(qtbot, widget)
    model = widget.model
    assert cancel_a_fit_of_the_volume() == (
        "Cancelled; the plot shows the last result again, 'quads GMM labels'")
    assert widget.model is model
    viewer.layers.remove("quads GMM labels")  # ... and whether that layer is still there
    assert cancel_a_fit_of_the_volume() == (
        "Cancelled; the plot shows the last result again, 'quads GMM labels' (since deleted)")
    # after a preview of another layer, the preview is the last result shown
    widget.image.value = viewer.layers["volume"]
    widget.preview_now()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert cancel_a_fit_of_the_volume() == (
        "Cancelled; the plot shows the last result again, 'volume GMM labels'")
    assert widget.model is model


@pytest.mark.parametrize("posteriors", [False, True])
def test_a_dask_layer_gets_a_dask_labels_layer(qtbot, viewer_widget, posteriors):
    da = pytest.importorskip("dask.array")
    viewer, widget = viewer_widget
    image, truth = quadrants((64, 96), seed=3)
    viewer.add_image(da.from_array(image, chunks=(32, 48)), name="lazy")
    widget.image.value = viewer.layers["lazy"]
    widget.n_components.value = 4
    widget.posteriors.value = posteriors
    run(qtbot, widget)
    labels = viewer.layers["lazy GMM labels"].data
    assert isinstance(labels, da.Array)
    assert labels.chunks == ((32, 32), (48, 48))
    expected = GMMSegmenter(**widget.model.get_params()).fit(image).predict(image)
    # block seams may differ within the documented tolerance (docs/scale.md)
    assert np.mean(labels.compute() == expected) > 0.999
    if posteriors:
        assert isinstance(viewer.layers["lazy GMM uncertainty"].data, da.Array)
    # Copy Python code keeps the layer lazy, as the widget did
    code = viewer.layers["lazy GMM labels"].metadata["gmm_segmenter"]["python"]
    assert "np.asarray(viewer.layers['lazy'].data)" not in code
    namespace = {"viewer": viewer}
    exec(code, namespace)
    assert isinstance(namespace["labels"], da.Array)
    np.testing.assert_array_equal(namespace["labels"].compute(), labels.compute())


def test_a_zarr_layer_stays_lazy(qtbot, viewer_widget, tmp_path):
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    viewer, widget = viewer_widget
    image, _ = quadrants((64, 96), seed=3)
    store = zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=image.shape,
                            chunks=(32, 48), dtype=image.dtype)
    store[:] = image
    viewer.add_image(store, name="stored")
    widget.image.value = viewer.layers["stored"]
    widget.n_components.value = 4
    fixed_smoothing(widget, 0.0)
    run(qtbot, widget)
    labels = viewer.layers["stored GMM labels"].data
    assert isinstance(labels, da.Array) and labels.chunks == ((32, 32), (48, 48))
    expected = GMMSegmenter(**widget.model.get_params()).fit(image).predict(image)
    np.testing.assert_array_equal(labels.compute(), expected)
    namespace = {"viewer": viewer}
    exec(viewer.layers["stored GMM labels"].metadata["gmm_segmenter"]["python"], namespace)
    np.testing.assert_array_equal(np.asarray(namespace["labels"]), expected)


def test_preview_on_a_lazy_layer_is_refused_with_a_notification(qtbot, viewer_widget):
    da = pytest.importorskip("dask.array")
    viewer, widget = viewer_widget
    image, _ = quadrants((64, 96), seed=4)
    viewer.add_image(image, name="in memory")
    widget.image.value = viewer.layers["in memory"]
    widget.preview.value = True
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    viewer.add_image(da.from_array(image, chunks=(32, 48)), name="lazy")
    widget.image.value = viewer.layers["lazy"]
    # not offered: unticked and greyed out, and the tooltip says why; the
    # status line no longer describes the other layer's preview
    assert not widget.preview.value and not widget.preview.enabled
    assert "Not available for a lazy" in widget.preview.tooltip
    assert widget.status.value.startswith("Preview is off: 'lazy' is a lazy"), widget.status.value
    since = len(notification_manager.records)
    widget.preview_now()
    assert any("Preview is not available for a lazy" in m for m in new_errors(since))
    assert not widget.running
    widget.image.value = viewer.layers["in memory"]
    assert widget.preview.enabled and "Re-segment only" in widget.preview.tooltip


def test_preview_is_not_offered_for_a_lazy_layer_the_dock_opens_on(qtbot, make_napari_viewer):
    # the check ran only when the Image choice changed, not for the layer
    # the dock chose as it opened
    da = pytest.importorskip("dask.array")
    from _helpers import open_widget

    viewer = make_napari_viewer()
    image, _ = quadrants((64, 96), seed=4)
    viewer.add_image(da.from_array(image, chunks=(32, 48)), name="lazy")
    _, widget = open_widget(viewer)
    assert widget.image.value is viewer.layers["lazy"]
    assert not widget.preview.enabled and "Not available for a lazy" in widget.preview.tooltip


def test_a_volume_model_applies_to_a_plane(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(5)
    volume = np.repeat([0.0, 100.0], 8)[:, None, None] + rng.normal(size=(16, 24, 24))
    viewer.add_image(volume, name="volume")
    viewer.add_image(volume[3], name="plane")
    widget.image.value = viewer.layers["volume"]
    widget.n_components.value = 2
    widget.connectivity.value = 3
    run(qtbot, widget)
    since = len(notification_manager.records)
    run(qtbot, widget, lambda: widget.apply_model(viewer.layers["plane"]))
    assert not new_errors(since)
    assert set(np.unique(viewer.layers["plane GMM labels"].data)) <= {1, 2}


def test_a_needle_of_a_class_does_not_squash_the_plot_of_one_channel():
    # a saturated region: a spike in the histogram, and a class whose Gaussian
    # is a needle over it (as camera's sky under bias-field correction)
    from gmm_segmenter import GMMSegmenter
    from gmm_segmenter.napari._jobs import pixel_histogram
    from gmm_segmenter.napari._layers import component_densities
    from gmm_segmenter.napari._plot import HEADROOM, draw

    rng = np.random.default_rng(0)
    image = np.concatenate([rng.normal(40, 12, 40_000), rng.normal(150, 20, 40_000),
                            np.full(30_000, 255.0)]).reshape(110, 1000)
    model = GMMSegmenter(3, beta=0, random_state=0).fit(image)
    histogram = pixel_histogram(image)
    counts, edges = histogram
    density = counts / counts.sum() / np.diff(edges)
    needle = component_densities(model, np.linspace(edges[0], edges[-1], 400)).max()
    figure = draw(model, histogram)
    bottom, top = figure.axes[0].get_ylim()
    # the broad classes' pixels fill the plot; the spike and the needle run off its top
    broad = np.sort(density)[-3]  # past the spike's bin
    assert bottom == 0 and broad < top <= HEADROOM * 1.05 * broad * 1.5, (top, broad)
    assert top < needle / 3 and top < density.max() / 3, (top, needle, density.max())
    # a histogram without spikes keeps its whole range, curves included
    plain = image[:80]  # the two broad classes
    model = GMMSegmenter(2, beta=0, random_state=0).fit(plain)
    histogram = pixel_histogram(plain)
    counts, edges = histogram
    curves = component_densities(model, np.linspace(edges[0], edges[-1], 400)).sum(axis=0)
    _, top = draw(model, histogram).axes[0].get_ylim()
    assert top >= max(curves.max(), (counts / counts.sum() / np.diff(edges)).max())


def test_the_plot_says_when_its_pixels_are_corrected_for_the_bias_field():
    # the histogram is of the image divided by its field (a saturated sky became a
    # needle), under the plain word "intensity"
    from gmm_segmenter import GMMSegmenter
    from gmm_segmenter.napari._jobs import channel_histogram, pixel_histogram
    from gmm_segmenter.napari._plot import draw

    rng = np.random.default_rng(0)
    ramp = np.linspace(0.8, 1.2, 64)[None, :]
    grey = (np.where(np.arange(64) < 32, 60.0, 160.0)[:, None] * ramp
            + rng.normal(0, 5, (64, 64)))
    for bias_field, said in ((None, "intensity"), ("auto", "intensity, corrected for the bias "
                                                            "field")):
        model = GMMSegmenter(2, beta=0, bias_field=bias_field, random_state=0).fit(grey)
        assert draw(model, pixel_histogram(grey)).axes[0].get_xlabel() == said
    # a run says whether its field was applied: a refused one leaves the values as they are
    for corrected, said in ((False, "intensity"),
                            (True, "intensity, corrected for the bias field"),
                            ("partly", "intensity, partly corrected for the bias field")):
        axes = draw(model, pixel_histogram(grey), corrected=corrected).axes[0]
        assert axes.get_xlabel() == said
    colour = np.stack([grey, grey[::-1] + rng.normal(0, 5, grey.shape)], axis=-1)
    model = GMMSegmenter(2, beta=0, bias_field="auto", channel_axis=-1,
                         random_state=0).fit(colour)
    axes = draw(model, channel_histogram(colour, None, -1)).axes[0]
    # under the title: beside the y axis's channel it ran off the figure
    assert axes.get_xlabel() == "channel 0" and axes.get_ylabel() == "channel 1"
    assert axes.get_title() == "2 components\ncorrected for the bias field", axes.get_title()
