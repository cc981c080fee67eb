"""The GMM Segmenter dock widget."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    show_file_dialog,
)
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from .. import io
from .._covariance import COVARIANCE_TYPES
from .._image import is_dask_array
from .._progress import Cancelled, progress
from . import _jobs, _layers, _output
from ._plot import MixturePlot

if TYPE_CHECKING:
    import napari

_COVARIANCE_TYPES = [
    (f"{name}: {kind.description}", name) for name, kind in COVARIANCE_TYPES.items()
]
_NEIGHBOURHOODS = [
    ("faces (4 in 2-D, 6 in 3-D)", 1),
    ("faces + edges (8 / 18)", 2),
    ("faces + edges + corners (8 / 26)", 3),
]
_LEADING_AXIS = [
    ("space (segment as one volume)", _layers.SPACE),
    ("time: one model for all frames", _layers.SHARED_MODEL),
    ("time: fit each frame", _layers.PER_FRAME),
]
_HISTOGRAM_PIXELS = 200_000


class GMMSegmenterWidget(Container):
    """Segment an Image layer with a Gaussian mixture model into a Labels layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer; napari passes it when the widget is opened from the menu.

    Attributes
    ----------
    model : GMMSegmenter or None
        The model of the last run (or loaded from a file); "Apply model"
        labels other layers with it, "Save model…" writes it.
    worker : napari thread worker or None
        The running job, if any.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self.model = None
        self._cancel_requested = threading.Event()
        self.worker = None
        self._job_kind = None
        self._preview_pending = False

        self.image = ComboBox(label="Image", choices=self._image_choices)
        self.channel_axis = ComboBox(label="Channel axis", choices=self._channel_choices)
        self.leading_axis = ComboBox(label="Leading axis", choices=_LEADING_AXIS)
        self.auto_components = CheckBox(text="Choose the number by BIC (auto)", value=False)
        self.n_components = SpinBox(label="Components", value=3, min=1, max=50)
        self.max_components = SpinBox(label="Up to (auto)", value=6, min=2, max=50)
        self.covariance_type = ComboBox(label="Covariance", choices=_COVARIANCE_TYPES)
        self.beta = FloatSpinBox(
            label="Smoothing", value=1.0, min=0.0, max=20.0, step=0.1,
            tooltip="Strength of the spatial prior (beta); 0 = pixel-wise GMM. "
            "Smoothing never crosses the time axis.",
        )
        self.connectivity = ComboBox(label="Neighbourhood", choices=_NEIGHBOURHOODS)
        self.seed = SpinBox(label="Random seed", value=0, min=0, max=2**31 - 1)
        self.mask = ComboBox(
            label="Mask (optional)", choices=self._mask_choices, nullable=True, value=None,
            tooltip="A Labels or Shapes layer: only pixels inside it are segmented.",
        )
        self.per_component = CheckBox(text="One Labels layer per component")
        self.posteriors = CheckBox(text="Posterior maps + uncertainty")
        self.preview = CheckBox(text="Preview (current 2-D slice)")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="Progress", value=0, min=0, max=1)
        self.status = Label(value="")
        self.apply_target = ComboBox(label="Apply model to", choices=self._image_choices)
        self.apply_button = PushButton(text="Apply current model")
        self.save_button = PushButton(text="Save model…")
        self.load_button = PushButton(text="Load model…")
        buttons = Container(
            widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False
        )
        model_buttons = Container(
            widgets=[self.apply_button, self.save_button, self.load_button],
            layout="horizontal", labels=False,
        )
        self.extend([
            self.image, self.channel_axis, self.leading_axis, self.auto_components,
            self.n_components, self.max_components, self.covariance_type, self.beta,
            self.connectivity, self.seed, self.mask, self.per_component, self.posteriors,
            self.preview, buttons, self.progress, self.status, self.apply_target,
            model_buttons,
        ])
        self.max_components.visible = False
        self.plot = MixturePlot()
        self.native.layout().addWidget(self.plot)
        self._connect_signals()
        self.reset_choices()

    def _connect_signals(self):
        self.image.changed.connect(self.channel_axis.reset_choices)
        self.auto_components.changed.connect(self._toggle_auto)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.apply_button.changed.connect(lambda: self.apply_model())
        self.save_button.changed.connect(lambda: self.save_model())
        self.load_button.changed.connect(lambda: self.load_model())
        for setting in (
            self.image, self.channel_axis, self.leading_axis, self.auto_components,
            self.n_components, self.max_components, self.covariance_type, self.beta,
            self.connectivity, self.seed, self.mask, self.preview,
        ):
            setting.changed.connect(self._preview_if_on)
        self._viewer.dims.events.current_step.connect(self._preview_if_on)

    # ----------------------------------------------------------- choices

    def _image_choices(self, widget=None):
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _mask_choices(self, widget=None):
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, (Labels, Shapes))
            and not layer.name.endswith(_output.LABELS_SUFFIX)
        ]

    def _channel_choices(self, widget=None):
        layer = self.image.value if hasattr(self, "image") else None
        if layer is None:
            return [("none (grayscale)", None)]
        if layer.rgb:
            return [("RGB(A) colour, last axis", -1)]
        shape = _data_of(layer).shape
        return [("none (grayscale)", None)] + [
            (f"axis {axis} (size {size})", axis) for axis, size in enumerate(shape)
        ]

    def _toggle_auto(self, auto):
        self.n_components.visible = not auto
        self.max_components.visible = auto

    # ------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        return self.worker is not None

    def run(self):
        """Fit a model to the chosen image and label it (in a background thread)."""
        self._start("run")

    def cancel(self):
        """Stop the running job at its next step; the layers stay as they were."""
        if self.worker is not None:
            self.status.value = "Cancelling…"
            self._cancel_requested.set()  # stops EM and smoothing mid-way
            self.worker.quit()

    def apply_model(self, layer=None):
        """Label ``layer`` (default: "Apply model to") with the current model, without refitting."""
        if layer is not None:
            self.apply_target.value = layer
        self._start("apply")

    def preview_now(self):
        """Segment only the displayed 2-D slice of the image, with the current settings."""
        self._start("preview")

    def save_model(self, path=None):
        """Write the current model to a ``.npz`` model file (asks for a path if none given)."""
        if self.model is None:
            show_error("GMM Segmenter: there is no model to save yet; press Run first.")
            return None
        if path is None:
            path = self._ask_model_path("w", "Save GMM model")
            if not path:
                return None
        try:
            written = io.save_model(self.model, path)
        except (OSError, ValueError) as error:
            show_error(f"GMM Segmenter: could not save the model: {error}")
            return None
        self.status.value = f"Saved model to {Path(written).name}"
        return written

    def load_model(self, path=None):
        """Read a model file written by Save model… (or ``gmm-segment --save-model``)."""
        if path is None:
            path = self._ask_model_path("r", "Load GMM model")
            if not path:
                return None
        try:
            model = io.load_model(path)
        except (OSError, ValueError) as error:
            show_error(f"GMM Segmenter: {error}")
            return None
        self.model = model
        self.status.value = (
            f"Loaded {Path(path).name}: {model.n_components_} components, "
            f"{model.n_features_in_} channel(s)"
        )
        self.plot.show_model(model)
        return model

    def _ask_model_path(self, mode, caption):
        return show_file_dialog(
            mode=mode, caption=caption, filter="GMM model (*.npz)", parent=self.native
        )

    def _preview_if_on(self, *args):
        if self.preview.value:
            self.preview_now()

    def _start(self, kind):
        if self.running:
            if kind == "preview":
                self._preview_pending = True
            else:
                show_info("GMM Segmenter: a job is already running; wait for it or press Cancel.")
            return
        try:
            job, finish = self._prepare(kind)
        except ValueError as error:
            show_error(f"GMM Segmenter: {error}")
            return
        self._cancel_requested = threading.Event()
        worker = create_worker(
            _drive, job, self._cancel_requested, _start_thread=False, _ignore_errors=True
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(finish)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._job_kind = kind
        self.run_button.enabled = False
        self.apply_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        worker.start()

    def _on_progress(self, progress):
        self.progress.max = max(progress.total, 1)
        self.progress.value = progress.step
        self.status.value = progress.message

    def _on_error(self, error):
        if isinstance(error, Cancelled):
            self._on_aborted()
            return
        show_error(f"GMM Segmenter: {error}")
        self.status.value = "Failed; see the notification."

    def _on_aborted(self):
        self.status.value = "Cancelled"
        self.progress.value = 0

    def _on_finished(self):
        self.worker = None
        self._job_kind = None
        self.run_button.enabled = True
        self.apply_button.enabled = True
        self.cancel_button.enabled = False
        if self._preview_pending and self.preview.value:
            self._preview_pending = False
            self.preview_now()

    # ------------------------------------------------------- job building

    def _image_layout(self, layer):
        if not isinstance(layer, Image):
            raise ValueError(
                f"{_name(layer)} is not an Image layer; choose an Image layer to segment."
            )
        if layer.multiscale:
            raise ValueError(
                f"{_name(layer)} is multiscale; segment one of its levels as its own layer."
            )
        channel_axis = None if layer.rgb else self.channel_axis.value
        if channel_axis is not None and channel_axis >= layer.ndim:
            channel_axis = None
        return _layers.make_layout(
            _data_of(layer).shape, rgb=layer.rgb, channel_axis=channel_axis,
            leading_axis=self.leading_axis.value,
        )

    def _params(self, layout, layer, *, n_spatial=None):
        n_spatial = len(layout.spatial_axes) if n_spatial is None else n_spatial
        auto = self.auto_components.value
        return {
            "n_components": "auto" if auto else self.n_components.value,
            "n_components_range": (1, self.max_components.value),
            "covariance_type": self.covariance_type.value,
            "channel_axis": layout.frame_channel_axis,
            "beta": self.beta.value,
            "connectivity": min(self.connectivity.value, n_spatial),
            "spacing": _layers.spacing_from_scale(layer.scale, layout),
            "random_state": self.seed.value,
        }

    def _masks(self, layout):
        layer = self.mask.value
        if layer is None:
            return None
        if isinstance(layer, Shapes):
            if layer.ndim == len(layout.output_shape):
                array = layer.to_labels(labels_shape=layout.output_shape)
            elif layer.ndim == len(layout.spatial_shape):
                array = layer.to_labels(labels_shape=layout.spatial_shape)
            else:
                raise ValueError(
                    f"The Shapes layer {layer.name!r} has {layer.ndim} dimensions, but the "
                    f"image's pixels have shape {layout.spatial_shape}; draw the shapes on "
                    "the image."
                )
        elif isinstance(layer, Labels):
            array = _data_of(layer)
        else:
            raise ValueError(f"{_name(layer)} is neither a Labels nor a Shapes layer.")
        try:
            return _layers.mask_array(array, layout)
        except ValueError as error:
            raise ValueError(f"Mask {layer.name!r}: {error}") from None

    def _prepare(self, kind):
        layer = self.apply_target.value if kind == "apply" else self.image.value
        if layer is None:
            raise ValueError("There is no Image layer to segment; open or add an image first.")
        layout = self._image_layout(layer)
        data = _data_of(layer)
        if not is_dask_array(data):
            data = np.asarray(data)  # dask and zarr layers stay lazy
        masks = self._masks(layout)
        want_posteriors = self.posteriors.value and kind != "preview"
        if kind == "preview":
            return self._prepare_preview(layer, layout, data, masks)
        request = _jobs.Request(
            frames=layout.frames(data),
            params=self._params(layout, layer),
            masks=masks,
            per_frame=self.leading_axis.value == _layers.PER_FRAME,
            shared=self.leading_axis.value == _layers.SHARED_MODEL,
            posteriors=want_posteriors,
        )
        if kind == "apply":
            if self.model is None:
                raise ValueError("There is no model yet; press Run or Load model… first.")
            params = {k: request.params[k] for k in ("channel_axis", "spacing")}
            # a model fitted on a volume may carry a neighbourhood a plane lacks
            params["connectivity"] = min(self.model.connectivity, len(layout.spatial_axes))
            request.params = params
            job = _jobs.apply(self.model, request)
        else:
            job = _jobs.segment(request)

        def finish(result):
            self._show_result(layer, layout, result, data, masks)

        return job, finish

    def _prepare_preview(self, layer, layout, data, masks):
        dims = self._viewer.dims
        offset = dims.ndim - layer.ndim
        displayed = [axis - offset for axis in dims.displayed if axis - offset >= 0]
        position = list(layer.world_to_data(dims.point))
        if layer.rgb:
            position.append(0)
        plane = _layers.preview_plane_axes(layout, displayed)
        index = _layers.plane_index(layout, position, plane)
        if is_dask_array(data):
            # its labels would be a lazy array, which cannot take a plane, and
            # an in-memory one as large as the volume is what laziness avoids
            raise ValueError(
                "Preview is not available for a lazy (dask or zarr) layer; press Run, "
                "or make an in-memory layer of the slices you want to try settings on."
            )
        frame = np.asarray(data[index])
        kept = [axis for axis in range(data.ndim) if isinstance(index[axis], slice)]
        channel_axis = None if layout.channel_axis is None else kept.index(layout.channel_axis)
        mask = None
        if masks is not None:
            spatial_index = tuple(index[axis] for axis in layout.spatial_axes)
            time = 0 if layout.time_axis is None else index[layout.time_axis]
            mask = masks[time][spatial_index]
            if not mask.any():
                raise ValueError("The mask is empty on the displayed slice; move to a slice inside it.")
        params = self._params(layout, layer, n_spatial=2)
        params["channel_axis"] = channel_axis
        params["spacing"] = _layers.spacing_from_scale(layer.scale, layout, plane)
        request = _jobs.Request(frames=[frame], params=params,
                                masks=None if mask is None else [mask])
        output_index = tuple(index[axis] for axis in layout.output_axes)

        def finish(result):
            labels_layer = _output.labels_layer(self._viewer, layer, layout)
            labels_layer.data[output_index] = result.labels[0]
            labels_layer.refresh()
            self.model = result.models[-1]
            self._plot(layer, frame, result.models[-1], labels_layer, layout, mask)
            self.status.value = "Preview of the displayed slice"

        return _jobs.segment(request), finish

    # ------------------------------------------------------------- output

    def _show_result(self, layer, layout, result, data, masks):
        labels = _jobs.stack(result.labels, layout.time_axis)
        labels_layer = _output.labels_layer(self._viewer, layer, layout, data=labels)
        model = result.models[-1]
        applied = self._job_kind == "apply"
        if len(result.models) > 1:
            # fit per frame: the current model is the displayed frame's
            position = layer.world_to_data(self._viewer.dims.point)
            frame = int(np.clip(np.round(position[0]), 0, len(result.models) - 1))
            model = result.models[frame]
        if not applied:
            self.model = model
        n_components = int(max(m.n_components_ for m in result.models))
        transform = _layers.output_transform(layer, layout)
        _output.show_components(
            self._viewer, layer.name, labels, transform, n_components,
            one_per_component=self.per_component.value,
        )
        if result.posteriors is not None:
            posteriors = _jobs.stack(result.posteriors, layout.time_axis)
            _output.show_posteriors(self._viewer, layer.name, posteriors, transform)
        frame_data = layout.frames(data)[0]
        frame_mask = None if masks is None else masks[0]
        self._plot(layer, frame_data, model, labels_layer, layout, frame_mask)
        verb = "Applied the model" if applied else "Fitted"
        self.status.value = f"{verb}: {model.n_components_} components → {labels_layer.name!r}"

    def _plot(self, layer, frame, model, labels_layer, layout, mask):
        colours = {k: labels_layer.get_color(k) for k in range(1, model.n_components_ + 1)}
        values = None
        if model.n_features_in_ == 1 and layout.channel_axis is None:
            if is_dask_array(frame):  # a lazy volume: plot an evenly strided sample
                stride = max(1, round((frame.size / _HISTOGRAM_PIXELS) ** (1 / frame.ndim)))
                sample = (slice(None, None, stride),) * frame.ndim
                frame = np.asarray(frame[sample])
                mask = None if mask is None else np.asarray(mask)[sample]
            values = np.asarray(frame if mask is None else frame[mask]).ravel()
            if values.size > _HISTOGRAM_PIXELS:
                values = values[:: values.size // _HISTOGRAM_PIXELS + 1]
        try:
            self.plot.show_model(model, values, colours)
        except Exception as error:  # a plot must never break a run
            show_info(f"GMM Segmenter: the plot could not be drawn ({error})")


def _drive(job, cancel_requested):
    """Run a job generator in the worker thread, passing on its progress and result.

    Cancel takes effect at the job's next yield, and also inside a long fit
    or prediction: the estimator's progress reports check ``cancel_requested``.
    """

    def check(stage, done, total):
        if cancel_requested.is_set():
            raise Cancelled

    with progress(check):
        return (yield from job)


def _data_of(layer):
    data = layer.data
    return data[0] if getattr(layer, "multiscale", False) else data


def _name(layer):
    return f"Layer {layer.name!r} ({type(layer).__name__})"

