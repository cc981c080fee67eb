"""The GMM Segmenter dock widget."""

from __future__ import annotations

import atexit
import functools
import json
import re
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, replace
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
from napari.utils import progress as activity_progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Qt, QThreadPool, QTimer
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QFrame,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from threadpoolctl import threadpool_limits

from .. import _bias, _guidance, _warmup, io
from .._covariance import COVARIANCE_TYPES
from .._image import is_dask_array, is_zarr_array
from .._model import json_params
from .._progress import Cancelled, progress
from .._wording import (
    ALPHA_AXIS_ADVICE, EM_ITER_ADVICE, FEWER_COMPONENTS_ADVICE, MASK_INSTEAD_ADVICE,
    ONE_CHANNEL_ADVICE, RESCALE_ADVICE, RGBA_ADVICE, SPATIAL_ITER_ADVICE, X_AS_THE_IMAGE,
    count, reword,
)
from . import _jobs, _layers, _output, _record
from ._plot import MixturePlot

if TYPE_CHECKING:
    import napari

# short enough for a closed combo box in a dock of about 350 pixels
_COVARIANCE_TYPES = [
    (f"{name}: {kind.description.removesuffix(' per component')}", name)
    for name, kind in COVARIANCE_TYPES.items()
]
_NEIGHBOURHOODS = [
    ("faces (4 in 2-D, 6 in 3-D)", 1),
    ("faces + edges (8 / 18)", 2),
    ("faces + edges + corners (8 / 26)", 3),
]
#: The bias field's polynomial degree: 'auto' is the estimator's default.
_FIELD_DEGREES = [
    (f"auto ({_bias.AUTO_DEGREE})", "auto"),
    ("1: a plane (a ramp)", 1),
    ("2", 2),
    ("3", 3),
    ("4", 4),
    ("5", 5),
]
_LEADING_AXIS = [
    ("space: one volume", _layers.SPACE),
    ("time: one model", _layers.SHARED_MODEL),
    ("time: fit each frame", _layers.PER_FRAME),
]
#: Steps of the progress bars (widget and napari's activity panel).
_BAR_STEPS = 1000
#: How often the progress bar and the elapsed time are refreshed.
_TICK_MS = 200
#: Quiet time after the scribbles' last change (an undo, a redo) before a preview.
_SETTLE_MS = 300
_PREFIX = "GMM Segmenter: "
#: Longest status line for a job that did not start (the rest is in its tooltip).
_STATUS_CHARS = 140
#: Longest status line that keeps a message's problem and its advice (what
#: the user acts on is worth a line more).
_STATUS_ADVICE_CHARS = 180

#: Workers still running, kept here until they end: a worker whose dock was
#: closed (napari closed mid-run) must outlive the widget, or Qt deletes its
#: signals under the running thread and the process aborts.
_LIVE_WORKERS = {}  # worker -> its cancel event


@atexit.register
def _stop_live_workers():
    """A script that closes the viewer mid-run and ends: stop the jobs and
    let their threads finish before Python tears down what they report to."""
    for cancel_requested in list(_LIVE_WORKERS.values()):
        cancel_requested.set()
    if _LIVE_WORKERS:
        QThreadPool.globalInstance().waitForDone(30_000)


_PREVIEW_TIP = (
    "Re-segment only the 2-D slice on screen whenever a setting or the slice changes. A "
    "preview does not change the current model."
)

#: The label of the scribbles' control, which messages about them name it by.
_SCRIBBLES_CONTROL = "Guide with labels"

#: The most components the Components and 'Up to (auto)' boxes offer.
MAX_COMPONENTS = 50

#: The estimator's messages speak of its parameters and of the scribbles
#: array; in the widget they become its controls and the scribble layer.
_WIDGET_WORDS = [
    # the spatial prior's rounds, in plain words; the dock has no control for them
    (re.compile(r"\bHMRF-EM did not converge in (?:max_iter_spatial=(\d+) iterations|"
                r"(\d+) iterations \([^)]*\)) \([^)]*\)\. Increase max_iter_spatial, or "
                r"raise tol\."),
     lambda match: (
         f"The smoothing did not settle in {match[1] or match[2]} rounds, so the labels "
         "might still change a little with more; they are usually fine as they are: look "
         "them over. (The dock has no control for more rounds: in the code Copy Python "
         "code gives, GMMSegmenter(...) takes a larger max_iter_spatial.)"
     )),
    # a batch of frames (a time series) names its images X[0], X[1], ...: as the
    # time slider counts them
    (re.compile(r"(^|\. )X\[(\d+)\]"), r"\1Frame \2"),
    (re.compile(r"\bX\[(\d+)\]"), r"frame \1"),
    # EM's limits are not in the dock: its copied code is where to change them
    (EM_ITER_ADVICE, "To let it settle, press Copy Python code and, in that code, give "
     "GMMSegmenter(...) a larger max_iter or tol, or another init_params."),
    (SPATIAL_ITER_ADVICE, "To let it settle, press Copy Python code and, in that code, give "
     "GMMSegmenter(...) a larger max_iter_spatial or tol."),
    (re.compile(r"\bn_components='auto' chose (\d+), the top of n_components_range=\(\d+, "
                r"\d+\)"),
     r"The auto box of Components chose \1, the most 'Up to (auto)' allows"),
    (re.compile(r"\bWiden n_components_range, or pass a number\."),
     "Raise 'Up to (auto)', or untick auto and set Components."),
    (re.compile(r"pass n_components=(\d+) or more \(or 'auto'\)"),
     lambda match: (
         f"raise Components to {match[1]} or more (or tick its auto box), or paint fewer classes"
         if int(match[1]) <= MAX_COMPONENTS else
         f"tick the auto box of Components (Components itself goes up to {MAX_COMPONENTS}), "
         "or paint fewer classes"
     )),
    (re.compile(r"\bUse n_components=1 or n_components='auto'"),
     "Set Components to 1, or tick its auto box"),
    (re.compile(r"\bUse n_components<=(\d+) or n_components='auto'"),
     r"Lower Components to \1 or fewer, or tick its auto box"),
    (re.compile(r"\bn_components=(\d+) asks for \d+ components, but\b"),
     r"Components is \1, but"),
    (re.compile(r"\bthe valid pixels of X\b"), "the image's valid pixels"),
    (re.compile(r"\bn_components<=(\d+)"), r"Components \1 or fewer"),
    (FEWER_COMPONENTS_ADVICE,
     "Lower Components (or tick its auto box), or smooth less: a lower Smoothing, with "
     "'Choose the smoothing from the image' unticked."),
    (MASK_INSTEAD_ADVICE,
     "choose that layer as 'Mask (optional)' instead."),
    (RESCALE_ADVICE,
     "Was the model fitted on images of another bit depth or range (an 8-bit picture "
     "converted to floats from 0 to 1, for one)? Its labels of this layer say little: "
     "rescale the layer as the model's images were, or press Run to fit a model to it."),
    (re.compile(r"^bias_field: "), "Correct bias field: "),
    (re.compile(r"\bn_components='auto'"), "the auto box of Components"),
    (re.compile(r"; pass a number to choose it yourself"),
     "; untick 'Choose the smoothing from the image' and set Smoothing to choose it yourself"),
    (re.compile(r"\bn_components=(\d+)"), r"Components \1"),
    (re.compile(r"\bbeta='auto'"), "automatic smoothing"),
    (re.compile(r"\bbeta=([\d.]+)"), r"Smoothing \1"),
    (re.compile(r"pass np\.where\(y(\[\d+\])? < 0, 0, y(\[\d+\])?\)"),
     "erase those strokes"),
    (re.compile(r": np\.where\(y(\[\d+\])? > K, 0, y(\[\d+\])?\)"), " (erase those strokes)"),
    (re.compile(r"\bScribbles y(\[\d+\])?"), "The scribbles"),
    (re.compile(r"\bUse bias_field=None\b"), "Untick Correct bias field"),
    (re.compile(r"(?:use )?bias_field=None"), "untick Correct bias field"),
    (re.compile(r"\(bias_field=(\d+) or (\d+)\)"), r"(Field degree \1 or \2)"),
    (re.compile(r"\(bias_field=(\d+) to (\d+)\)"), r"(Field degree \1 to \2)"),
    (re.compile(r"\(bias_field=(\d+)\)"), r"(Field degree \1)"),
    (re.compile(r"\(bias_field=(\d+) needs (\d+)\)"), r"(Field degree \1 needs \2)"),
    (re.compile(r"pass a mask with some True pixels"), "choose a Mask that marks some pixels"),
    (RGBA_ADVICE,
     "segment a layer of its first three channels (with a Mask layer of where the fourth "
     "is above 0, if some pixels are transparent)"),
    (ALPHA_AXIS_ADVICE,
     "segment a layer of its first three channels, with a Mask layer of where the fourth "
     "is above 0"),
    (ONE_CHANNEL_ADVICE,
     "(a layer of one channel, with Channel axis none)"),
    (re.compile(r"\bonly reg_covar=(\S+) keeps"), r"only a ridge of \1 (reg_covar) keeps"),
    # an axis of two channels left as space: the Channel axis of its size (the
    # message may be of one frame of a time layer, whose axes are not the layer's)
    (re.compile(r"(its axis -?\d+ \(of length (\d+)\) looks like channels.*?)Pass "
                r"channel_axis=-?\d+ to model the channels together"),
     r"\1Choose the Channel axis of size \2 to model the channels together"),
    (re.compile(r"a mask of the pixels above 0 \(mask=image > 0\)"),
     "choose a Mask layer of the pixels above 0 (a Labels layer of image > 0)"),
    *X_AS_THE_IMAGE,
]


#: Apply labels with the model's own bias field, whatever *Correct bias field*
#: and *Field degree* say (they are the next Run's settings): a field refused
#: on Apply is advised in what Apply's user can do.
_REFIT = ("press Run to fit a new model to this layer with Correct bias field unticked "
          "(Apply estimates a field whenever the model has one)")
_APPLY_WORDS = [
    (re.compile(r"^bias_field: "), "The model's bias field: "),
    (re.compile(r"\bTry a lower degree \(bias_field=[^)]*\) or bias_field=None\."),
     "Apply estimates a field of the model's own degree, whatever Correct bias field says: "
     "choose a Mask of the region to segment, or press Run to fit a new model to this "
     "layer (with a lower Field degree, or Correct bias field unticked)."),
    (re.compile(r"\bUse a lower degree \(bias_field=(\d+) needs (\d+)\) or bias_field=None\."),
     r"Apply estimates a field of the model's own degree, whatever Correct bias field "
     r"says: press Run to fit a new model to this layer (Field degree \1 needs \2 pixels), "
     r"or with Correct bias field unticked."),
    (re.compile(r"\bUse bias_field=None: (a field of the lowest degree needs \d+ pixels) "
                r"\(a larger image, or a larger mask\)\."),
     r"Apply estimates a field whenever the model has one, and \1: choose a larger image "
     r"or Mask, or press Run to fit a new model to this layer with Correct bias field "
     r"unticked."),
    (re.compile(r"\b[Uu]se bias_field=None\b"), _REFIT),
]


def _in_widget_words(error, applying=False) -> str:
    """``error``'s message in the dock's words; ``applying``: of an Apply job,
    whose bias field is the model's own."""
    text = str(error)
    if applying:
        text = reword(text, _APPLY_WORDS)
    return reword(text, _WIDGET_WORDS)


def _shapes_in_image_pixels(shapes, image, layout, axes):
    """``shapes`` with its vertices in ``image``'s pixel coordinates, and the
    ``(factor, offset)`` that took them there (``None`` when nothing did).

    A Shapes layer made before the image, or read from a file, has its own
    scale and translate: its shapes are drawn in world coordinates, so a
    vertex ``v`` of its data is at ``(v * scale + translate - image's
    translate) / image's scale`` in the image's pixels. ``axes`` are the
    image's data axes the shapes' dimensions stand for.
    """
    positions = [layout.layer_axis(axis) for axis in axes]
    image_scale = np.asarray(image.scale, dtype=float)[positions]
    image_translate = np.asarray(image.translate, dtype=float)[positions]
    factor = np.asarray(shapes.scale, dtype=float) / image_scale
    offset = (np.asarray(shapes.translate, dtype=float) - image_translate) / image_scale
    if np.allclose(factor, 1.0) and np.allclose(offset, 0.0):
        return shapes, None
    moved = Shapes(
        [np.asarray(vertices) * factor + offset for vertices in shapes.data],
        shape_type=shapes.shape_type, ndim=shapes.ndim,
    )
    return moved, [factor.tolist(), offset.tolist()]


def _while_open(method):
    """Do nothing once the dock is closed: its Qt widgets are gone."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if self._closed:
            return None
        return method(self, *args, **kwargs)

    return guarded
_MEMORY_ADVICE = (
    " Open the image as a lazy (dask or zarr) layer, crop or bin it, or fit on a "
    "smaller layer and label the large one with Apply current model."
)


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
        labels other layers with it, "Save model…" writes it. A preview
        does not replace it.
    worker : napari thread worker or None
        The running job, if any.
    record : dict or None
        How the last result was made (also in its layers' ``metadata``).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=False)
        self._viewer = napari_viewer
        self.model = None
        self.record = None
        self._model_code = None  # Python that defines `segmenter` as self.model
        self._model_record = None  # the record of the run (or file) self.model comes from
        # the last Run or Apply with self.model, whose code Copy Python code
        # gives after a preview (None: none since the model was made or loaded)
        self._full_record = None
        # the last Run or Apply was refused or failed ("Run", "Apply"): its
        # code is not the one Copy Python code has (None: it made a result)
        self._refused = None
        # spatial axes of the frames self.model was fitted on, and where their
        # channel axis was, counted from the end of the layer's axes (None: not known)
        self._model_frame_ndim = None
        self._model_channel_from_end = None
        self._cancel_requested = threading.Event()
        self.worker = None
        self._job = None  # what the running job works on
        self._preview_pending = False
        self._watched = None  # the scribble layer whose strokes trigger a preview
        self._scribbles_seen = None  # fingerprint of the scribbles the last job read
        self._preview_beta = {}  # beta='auto' of a previewed slice -> the smoothing chosen
        self._shown = None  # the last result's models and histograms, for the plot
        self._meter = _jobs.Meter()
        self._activity = None
        self._started = 0.0
        self._make_controls()
        self._lay_out()
        self._timer = QTimer(self.native)
        self._timer.setInterval(_TICK_MS)
        self._timer.timeout.connect(self._tick)
        self._settle_timer = QTimer(self.native)
        self._settle_timer.setSingleShot(True)
        self._settle_timer.setInterval(_SETTLE_MS)
        self._settle_timer.timeout.connect(self._on_scribbles_settled)
        # settings that change together (napari removing every layer as it
        # closes, a new image resetting the lists) start one preview, once
        # the event loop runs again; none if the dock is gone by then
        self._settings_timer = QTimer(self.native)
        self._settings_timer.setSingleShot(True)
        self._settings_timer.setInterval(0)
        self._settings_timer.timeout.connect(self._on_settings_settled)
        self._removed_warning = None
        self._advised = set()  # (layer, advice) said by _advise_calibration
        # Leading axis: the user's choice per layer (its unique_id), never
        # overridden; and whether the shown value is the dock's default
        self._leading_chosen = {}
        self._leading_defaulted = False
        self._resetting_leading = False
        self._warning_timer = QTimer(self.native)
        self._warning_timer.setSingleShot(True)
        self._warning_timer.setInterval(0)
        self._warning_timer.timeout.connect(self._warn_removed)
        self._closed = False
        self.native.destroyed.connect(self._on_closed)
        self._connect_signals()
        # a layer chosen before the signals were connected (the dock opened
        # on a viewer holding a zarr layer) is judged as a later choice is
        self._offer_preview()
        self._apply_theme()
        self.reset_choices()
        self._leading_axis_for_image()
        # the first Run would otherwise spend most of a second loading the
        # compiled kernels; the user is still choosing settings
        _warmup.warm_up_in_background()

    # ------------------------------------------------------------ building

    def _make_controls(self):
        self.image = ComboBox(
            label="Image", choices=self._image_choices,
            tooltip="The Image layer to segment (2-D, 3-D or n-D; grayscale, RGB or "
            "multichannel). The plugin's own outputs are not listed.",
        )
        self.channel_axis = ComboBox(
            label="Channel axis", choices=self._channel_choices,
            tooltip="For a multichannel layer stored as one array: the axis that holds "
            "the channels (modelled together). Leave 'none' for grayscale; RGB layers "
            "use their colour axis.",
        )
        self.leading_axis = ComboBox(
            label="Leading axis", choices=self._leading_choices,
            tooltip="'space' segments an n-D layer as one volume. For a time series "
            "(time first): one model for every frame (labels mean the same class at "
            "every time point), or a model per frame (for drifting intensities).",
        )
        self.auto_components = CheckBox(
            text="Choose the number by BIC (auto)", value=False,
            tooltip="Fit 1 to 'Up to' components and keep the number at the elbow of the "
            "BIC curve, where one more component stops paying off; the plot shows the curve.",
        )
        self.n_components = SpinBox(
            label="Components", value=3, min=1, max=MAX_COMPONENTS,
            tooltip="How many classes; labels run 1..K from the darkest to the brightest. "
            f"At most {MAX_COMPONENTS} here (GMMSegmenter in Python takes more).",
        )
        self.max_components = SpinBox(  # 8: GMMSegmenter's and gmm-segment's default range
            label="Up to (auto)", value=8, min=2, max=MAX_COMPONENTS,
            tooltip=f"The largest number of components BIC may choose (at most "
            f"{MAX_COMPONENTS}).",
        )
        self.covariance_type = ComboBox(
            label="Covariance", choices=_COVARIANCE_TYPES,
            tooltip="Shape of each class in colour space, as in scikit-learn's "
            "GaussianMixture; with one channel full, diag and spherical are the same.",
        )
        self.auto_beta = CheckBox(
            text="Choose the smoothing from the image (auto)", value=True,
            tooltip="Compare a few smoothing strengths by how well each explains the "
            "image (its free energy) and keep the best (beta='auto'). With scribbles of "
            "two or more strokes in a class, the strokes choose instead: the weakest "
            "strength under which strokes left out of the fit come out as painted. "
            "Untick to set the strength yourself.",
        )
        self.beta = FloatSpinBox(
            label="Smoothing", value=1.0, min=0.0, max=20.0, step=0.1,
            tooltip="Strength of the spatial prior (beta); 0 = pixel-wise GMM. "
            "Smoothing never crosses the time axis.",
        )
        self.connectivity = ComboBox(
            label="Neighbourhood", choices=_NEIGHBOURHOODS,
            tooltip="Which neighbours the smoothing counts. Voxel sizes come from the "
            "layer's scale.",
        )
        self.bias_field = CheckBox(
            text="Correct bias field",
            tooltip="Estimate a smooth multiplicative field (uneven illumination, "
            "vignetting, coil sensitivity) together with the classes and segment the "
            "corrected image; the field is added as '<image> GMM bias field' (hidden at "
            "first; the image divided by it is the corrected image).",
        )
        self.bias_degree = ComboBox(
            label="Field degree", choices=_FIELD_DEGREES,
            tooltip="How much the bias field may bend: the degree of its polynomial. "
            "Lower is smoother (1: a plane, a ramp of light); raise it for a field "
            "that bends more, such as a vignette with a bright centre.",
        )
        self.seed = SpinBox(
            label="Random seed", value=0, min=0, max=2**31 - 1,
            tooltip="The same seed gives the same result every time.",
        )
        self.mask = ComboBox(
            label="Mask (optional)", choices=self._mask_choices, nullable=True, value=None,
            tooltip="A Labels or Shapes layer: only pixels inside it are segmented; the "
            "others get label 0.",
        )
        self.scribbles = ComboBox(
            label=_SCRIBBLES_CONTROL, choices=self._scribble_choices, nullable=True,
            value=None,
            tooltip="A Labels layer painted with napari's brush: label k on a pixel says "
            "'this is class k', 0 says nothing. The result's classes follow that "
            "numbering; unpainted classes come after. Leave empty for an unguided fit.",
        )
        self.new_scribbles_button = PushButton(
            text="New scribble layer",
            tooltip="Add an empty Labels layer the shape of the image ('<image> "
            "scribbles'), in the output's colours, choose it here and start painting "
            "class 1.",
        )
        self.per_component = CheckBox(
            text="One Labels layer per component",
            tooltip="Also add '<image> GMM component k' layers (hidden at first), one "
            "per class.",
        )
        self.posteriors = CheckBox(
            text="Posterior maps + uncertainty",
            tooltip="Also add the probability of each class per pixel and their "
            "normalised entropy (0 sure, 1 undecided), hidden at first.",
        )
        self.preview = CheckBox(text="Preview (current 2-D slice)", tooltip=_PREVIEW_TIP)
        self.run_button = PushButton(
            text="Run", tooltip="Fit a model to the image and label all of it, in the "
            "background.",
        )
        self.cancel_button = PushButton(
            text="Cancel", enabled=False,
            tooltip="Stop the running job at its next step; the layers stay as they were.",
        )
        self.progress = ProgressBar(
            label="Progress", value=0, min=0, max=_BAR_STEPS,
            tooltip="How far the running job is; napari's activity panel shows it too.",
        )
        self.status = Label(value="")
        self.status.tooltip = "What the widget did last."
        self.apply_target = ComboBox(
            label="Apply model to", choices=self._image_choices,
            tooltip="The layer 'Apply current model' labels (same channels as the model).",
        )
        self.apply_button = PushButton(
            text="Apply current model",
            tooltip="Label 'Apply model to' with the current model, without refitting, "
            "so several images get the same classes.",
        )
        self.copy_button = PushButton(
            text="Copy Python code",
            tooltip="Put the Python code that reproduces the last result on the clipboard "
            "(it is also in the output layers' metadata).",
        )
        self.save_button = PushButton(
            text="Save model…",
            tooltip="Write the current model, with how it was made, to a .npz model file.",
        )
        self.load_button = PushButton(
            text="Load model…",
            tooltip="Read a model file written by Save model… or gmm-segment --save-model.",
        )
        self.max_components.visible = False
        self.beta.visible = False
        self.bias_degree.visible = False

    def _lay_out(self):
        def row(*widgets):
            buttons = Container(widgets=list(widgets), layout="horizontal", labels=False)
            buttons.margins = (0, 0, 0, 0)  # rows of buttons, as compact as the controls
            return buttons

        self._form = Container(labels=True, widgets=[
            self.image, self.channel_axis, self.leading_axis, self.auto_components,
            self.n_components, self.max_components, self.covariance_type, self.auto_beta,
            self.beta, self.connectivity, self.bias_field, self.bias_degree, self.seed,
            self.mask, self.scribbles, self.new_scribbles_button,
            self.per_component, self.posteriors, self.preview,
            row(self.run_button, self.cancel_button), self.progress,
            self.status, self.apply_target, row(self.apply_button, self.copy_button),
            row(self.save_button, self.load_button),
        ])
        for combo in (self.image, self.channel_axis, self.leading_axis,
                      self.covariance_type, self.connectivity, self.bias_degree, self.mask,
                      self.scribbles, self.apply_target):
            # a long layer name must not widen the dock: show what fits
            combo.native.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.native.setMinimumContentsLength(12)
        status = self.status.native
        status.setWordWrap(True)
        status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.plot = MixturePlot()
        content = QWidget()
        column = QVBoxLayout(content)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self._form.native)
        column.addWidget(self.plot)
        column.addStretch()
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll_area.setWidget(content)
        # napari styles the dock after it is built, which widens the controls:
        # the scroll area follows, so no control is cut off on the right
        self._width_keeper = _MinimumWidth(self.scroll_area, content)
        content.installEventFilter(self._width_keeper)
        self.scroll_area.installEventFilter(self._width_keeper)
        self._width_keeper.fit()
        layout = self.native.layout()
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll_area)

    def _connect_signals(self):
        self.image.changed.connect(self.channel_axis.reset_choices)
        self.image.changed.connect(self._leading_axis_for_image)
        self.leading_axis.changed.connect(self._remember_leading_axis)
        self.image.changed.connect(self._show_axis_choices)
        # magicgui's `changed` is not emitted when a combo box's value becomes
        # None ("none (grayscale)"), so the channel axis's Qt signal is used
        self.channel_axis.native.currentIndexChanged.connect(self._on_channel_axis_changed)
        self.image.changed.connect(self._follow_image_with_scribbles)
        self.image.changed.connect(self._offer_preview)
        self.auto_components.changed.connect(self._toggle_auto)
        self.auto_beta.changed.connect(lambda auto: setattr(self.beta, "visible", not auto))
        self.bias_field.changed.connect(lambda on: setattr(self.bias_degree, "visible", on))
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.apply_button.changed.connect(lambda: self.apply_model())
        self.copy_button.changed.connect(lambda: self.copy_code())
        self.save_button.changed.connect(lambda: self.save_model())
        self.load_button.changed.connect(lambda: self.load_model())
        self.new_scribbles_button.changed.connect(lambda: self.add_scribble_layer())
        self.scribbles.changed.connect(self._watch_scribbles)
        for combo in (self.image, self.mask, self.scribbles, self.apply_target):
            combo.changed.connect(lambda value, combo=combo: combo.native.setToolTip(
                f"{combo.current_choice}\n\n{combo.tooltip}"
            ))
        for setting in (  # (the channel axis: see _on_channel_axis_changed)
            self.image, self.leading_axis, self.auto_components,
            self.n_components, self.max_components, self.covariance_type, self.auto_beta,
            self.beta, self.connectivity, self.bias_field, self.bias_degree, self.seed,
            self.mask, self.scribbles, self.preview,
        ):
            setting.changed.connect(self._on_setting_changed)
        self._viewer.dims.events.current_step.connect(self._on_step_changed)
        self._viewer.layers.events.removed.connect(self._on_layer_removed)
        self._viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self._viewer.events.theme.connect(self._apply_theme)

    def reset_choices(self, *args):
        """Refresh the layer lists (napari calls this when layers change)."""
        self._resetting_leading, before = True, self._resetting_leading
        try:
            self._form.reset_choices()
        finally:
            self._resetting_leading = before
        self._show_axis_choices()

    def _on_channel_axis_changed(self, *args):
        self._leading_axis_for_image()
        self._show_axis_choices()
        self._on_setting_changed()

    def _leading_axis_for_image(self, *args):
        """*Leading axis* for the chosen image: the user's own choice for that
        layer if any; else *time: one model* when its leading axis is time
        (named t or time, or in a unit of time), so a time series is not
        smoothed across frames as if seconds were micrometres; else as it was."""
        self._resetting_leading, before = True, self._resetting_leading
        try:
            self.leading_axis.reset_choices()
            layer = self.image.value
            if layer is None or len(self.leading_axis.choices) < 2:
                return
            chosen = self._leading_chosen.get(layer.unique_id)
            if chosen is not None:
                self.leading_axis.value = chosen
                self._leading_defaulted = False
            elif _leading_axis_is_time(layer):
                self.leading_axis.value = _layers.SHARED_MODEL
                self._leading_defaulted = True
            elif self._leading_defaulted:  # the last layer's default, not a choice
                self.leading_axis.value = _layers.SPACE
                self._leading_defaulted = False
        finally:
            self._resetting_leading = before

    def _remember_leading_axis(self, value):
        """A *Leading axis* set by the user (or a script) is that layer's from now on."""
        layer = self.image.value
        if self._resetting_leading or layer is None or len(self.leading_axis.choices) < 2:
            return
        self._leading_chosen[layer.unique_id] = value
        self._leading_defaulted = False

    def _offer_preview(self, *args):
        """*Preview* only for an in-memory layer: a lazy (dask or zarr) one's
        labels are lazy too, and a preview plane of them is what it avoids."""
        layer = self.image.value
        data = None if layer is None or getattr(layer, "multiscale", False) else layer.data
        lazy = data is not None and _is_lazy(data)
        if lazy and self.preview.value:
            self.preview.value = False
            # the status line described the last layer's preview
            self._set_status(f"Preview is off: {layer.name!r} is a lazy (dask or zarr) layer; "
                             "press Run to segment it.")
        self.preview.enabled = not lazy
        self.preview.tooltip = (
            "Not available for a lazy (dask or zarr) layer: press Run, or try settings on "
            "an in-memory layer of a few slices." if lazy else _PREVIEW_TIP
        )

    def _show_axis_choices(self, *args):
        """*Channel axis* and *Leading axis* only where there is a choice: a 2-D
        grey image has no channels, a photo's are its colours, and neither
        can be a time series; a one-option list only takes room."""
        for combo in (self.channel_axis, self.leading_axis):
            combo.visible = len(combo.choices) > 1

    @_while_open
    def _apply_theme(self, *args):
        from napari.utils.theme import get_theme

        try:
            theme = get_theme(self._viewer.theme)
        except (ValueError, KeyError):
            theme = get_theme("dark")
        self.plot.set_colours(
            theme.background.as_hex(), theme.text.as_hex(), theme.primary.as_hex()
        )

    # ----------------------------------------------------------- choices

    def _image_choices(self, widget=None):
        return [
            (layer.name, layer) for layer in self._viewer.layers
            if isinstance(layer, Image) and not _is_output(layer)
        ]

    def _mask_choices(self, widget=None):
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, (Labels, Shapes)) and not _is_output(layer)
        ]

    def _scribble_choices(self, widget=None):
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Labels) and not _is_output(layer)
        ]

    def _channel_choices(self, widget=None):
        layer = self.image.value if hasattr(self, "image") else None
        if layer is None:
            return [("none (grayscale)", None)]
        if layer.rgb:
            return [("RGB(A) colour, last axis", -1)]
        shape = _data_of(layer).shape
        if len(shape) < 3:  # channels would leave a line, which no layer shows as labels
            return [("none (grayscale)", None)]
        return [("none (grayscale)", None)] + [
            (f"axis {axis} (size {size})", axis) for axis, size in enumerate(shape)
        ]

    def _leading_choices(self, widget=None):
        """Time choices only where a frame keeps 2 spatial axes (and the leading
        axis is not the channel axis); else 'space' alone, so a choice made for
        a time series does not carry over to an image that cannot be one."""
        layer = self.image.value if hasattr(self, "image") else None
        if layer is None:
            return _LEADING_AXIS
        ndim = len(_data_of(layer).shape)
        channel = ndim - 1 if layer.rgb else (
            self.channel_axis.value if hasattr(self, "channel_axis") else None
        )
        if channel is not None and channel >= ndim:
            channel = None  # a stale choice of the previous layer, about to be reset
        n_spatial = ndim - (channel is not None)
        if n_spatial - 1 < 2 or channel == 0:
            return _LEADING_AXIS[:1]
        return _LEADING_AXIS

    def _follow_image_with_scribbles(self, layer):
        """Another image: strokes made for one of another shape no longer guide;
        the new image's own scribble layer, if it has one, does."""
        guide = self.scribbles.value
        if guide is None:
            return
        try:
            shape = None if layer is None else self._image_layout(layer).layer_shape
        except ValueError:
            return
        if shape is not None and guide.data.shape == shape:
            return
        own = f"{layer.name}{_output.SCRIBBLES_SUFFIX}" if layer is not None else None
        candidate = self._viewer.layers[own] if own in self._viewer.layers else None
        self.scribbles.value = (
            candidate if isinstance(candidate, Labels) and candidate.data.shape == shape else None
        )

    def _toggle_auto(self, auto):
        self.n_components.visible = not auto
        self.max_components.visible = auto

    # ------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        """Whether a job runs, or a preview the settings asked for is about to start."""
        if self.worker is not None:
            return True
        try:
            return self._settings_timer.isActive()
        except RuntimeError:  # the dock was closed and its timer deleted
            return False

    def run(self):
        """Fit a model to the chosen image and label it (in a background thread)."""
        self._start("run")

    def cancel(self):
        """Stop the running job at its next step; the layers stay as they were."""
        if self.worker is not None:
            self._set_status("Cancelling…")
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

    def add_scribble_layer(self):
        """Add an empty ``<image> scribbles`` Labels layer, choose it, and start painting class 1.

        It has the labels' shape and transform, and the colours of the
        image's labels layer, so a stroke of label k looks like class k of
        the result. An existing ``<image> scribbles`` layer of that shape is
        chosen instead of adding a second one. Returns the layer, or None.
        """
        layer = self.image.value
        try:
            if layer is None:
                raise ValueError("There is no Image layer to paint on; open or add an "
                                 "image first.")
            layout = self._image_layout(layer)
        except ValueError as error:
            show_error(f"{_PREFIX}{error}")
            self._set_status(f"No scribble layer added: {error}")
            return None
        name = f"{layer.name}{_output.SCRIBBLES_SUFFIX}"
        existing = self._viewer.layers[name] if name in self._viewer.layers else None
        if isinstance(existing, Labels) and existing.data.shape == layout.layer_shape:
            scribbles = existing
        else:
            scribbles = _output.scribble_layer(self._viewer, layer, layout)
        self.scribbles.reset_choices()
        self.scribbles.value = scribbles
        self._viewer.layers.selection.active = scribbles
        scribbles.mode = "paint"
        scribbles.selected_label = 1
        self._set_status(f"Paint class 1, 2, … into {scribbles.name!r}, then press Run "
                         "(or tick Preview).")
        return scribbles

    def _watch_scribbles(self, layer):
        """Follow the strokes on the chosen scribble layer only."""
        previous, self._watched = self._watched, layer
        for watched, connect in ((previous, False), (layer, True)):
            if watched is None:
                continue
            # a stroke ends in `paint`, replacing the whole data in `data`;
            # undo and redo emit only `set_data`, as every brush move and
            # redraw do, so those are followed once the data settle
            handlers = ((watched.events.paint, self._on_scribbled),
                        (watched.events.data, self._on_scribbled),
                        (watched.events.set_data, self._on_scribbles_redrawn))
            for event, handler in handlers:
                if connect:
                    event.connect(handler)
                else:
                    event.disconnect(handler)

    @_while_open
    def _on_scribbled(self, event=None):
        """A stroke ended: with Preview on, re-segment the slice, superseding a stale preview."""
        self._preview_if_on()

    def _on_scribbles_redrawn(self, event=None):
        try:
            self._settle_timer.start()  # restarts: waits for the last change
        except RuntimeError:  # the dock was closed and its timer deleted; the layer lives on
            pass

    @_while_open
    def _on_scribbles_settled(self):
        """The scribbles have not changed for a moment: preview if they differ from the last job's."""
        layer = self.scribbles.value
        if layer is not None and self.preview.value and (
                _fingerprint(_data_of(layer)) != self._scribbles_seen):
            self.preview_now()

    def copy_code(self):
        """Put the Python code that reproduces the last result on the clipboard; returns it.

        After a refused (or failed) Run or Apply, that is the last result's
        code, and the status line says so: the refused one made nothing to
        reproduce.
        """
        if self.record is None:
            if self._refused is not None:
                show_info(f"{_PREFIX}the last {self._refused} was refused and there is no "
                          "result to reproduce yet; change what its message says and "
                          "press Run.")
                return None
            show_info(f"{_PREFIX}there is no result to reproduce yet; press Run first.")
            return None
        record, said = self.record, "Copied the Python code that reproduces the result."
        if self._refused is not None:
            record = self._full_record or record
            said = (
                f"The last {self._refused} was refused, so it has no code; copied the code of "
                f"the last result instead, on {record['image']['layer']!r}. It reads the "
                f"layers as they are now: if what the {self._refused} was refused for is in "
                "a layer (a stroke, a mask), the pasted code is refused too."
            )
            QApplication.clipboard().setText(record["python"])
            self._set_status(said)
            return record["python"]
        if record["operation"].startswith("preview"):
            # Save model… and Apply use the last Run's model, not the preview's:
            # its code is the one to keep
            if self._full_record is not None:
                record = self._full_record
                which = "Apply" if record["operation"] == "apply model" else "Run"
                said = (f"Copied the Python code of the last {which}, on "
                        f"{record['image']['layer']!r}: its model is the one Save model… "
                        "writes (not the preview's).")
            else:
                stride = record["settings"].get("preview_stride", 1)
                grid = "" if stride == 1 else f", every {_ordinal(stride)} pixel"
                said = (f"Copied the preview's Python code: the displayed slice{grid}, with "
                        "the preview's quicker settings; press Run for the code of a "
                        "full-resolution result.")
        code = record["python"]
        QApplication.clipboard().setText(code)
        self._set_status(said)
        return code

    def save_model(self, path=None):
        """Write the current model to a ``.npz`` model file (asks for a path if none given).

        ``.npz`` is added to a name without it, so Load model… lists the file.
        """
        if self._busy_with_the_model("save"):
            return None
        if self.model is None:
            show_error(f"{_PREFIX}there is no model to save yet; press Run first.")
            return None
        if path is None:
            path = self._ask_model_path("w", "Save GMM model")
            if not path:
                return None
        path = io.with_npz_suffix(path)
        try:
            written = io.save_model(self.model, path, record=self._model_record)
        except (OSError, ValueError, TypeError) as error:
            show_error(f"{_PREFIX}could not save the model: {error}. Choose a folder "
                       "you can write to.")
            self._set_status("Not saved; see the notification.")
            return None
        self._set_status(f"Saved model to {Path(written).name}")
        return Path(written)

    def load_model(self, path=None):
        """Read a model file written by Save model… (or ``gmm-segment --save-model``)."""
        if self._busy_with_the_model("load"):
            return None
        if path is None:
            path = self._ask_model_path("r", "Load GMM model")
            if not path:
                return None
        try:
            model = io.load_model(path)
        except (OSError, ValueError) as error:
            # the file's own advice names the command line's and Python's ways
            said = str(error).replace(" (save one with --save-model or save_model)", "")
            show_error(
                f"{_PREFIX}{said}. Choose a .npz model file written by Save model… "
                "or gmm-segment --save-model."
            )
            self._set_status("Not loaded; see the notification.")
            return None
        self.model = model
        self._model_record = read_record(path)
        self._full_record = None
        # the dock passes every fit its spacing, one number per spatial axis
        self._model_frame_ndim = None if model.spacing is None else len(model.spacing)
        self._model_channel_from_end = None
        self._model_code = (
            "import numpy as np\nfrom gmm_segmenter import GMMSegmenter\n"
            "from gmm_segmenter.io import load_model\n\n"
            f"segmenter = load_model({str(Path(path).resolve())!r})\n"
        )
        self._shown = None
        # (the controls above stay those of the next Run: they do not show the model's)
        field = "" if model.bias_field is None else ", corrects a bias field on Apply"
        self._set_status(
            f"Loaded {Path(path).name}: {count(model.n_components_, 'component')}, "
            f"{model.n_features_in_} channel(s){field}"
        )
        self._target_with_channels(model.n_features_in_)
        self._draw(model, None, _new_label_colours(model.n_components_))
        return model

    def _busy_with_the_model(self, action) -> bool:
        """Whether a Run or Apply is going, which Save and Load wait for (their
        buttons are disabled meanwhile); says so. A preview never touches the model."""
        if self.worker is None or (self._job is not None and self._job["kind"] == "preview"):
            return False
        show_info(f"{_PREFIX}a job is running; {action} the model when it ends, or press "
                  "Cancel.")
        return True

    def _target_with_channels(self, n_channels):
        """Make *Apply model to* an image with ``n_channels`` channels (as the
        dock reads them), unless it names one already: a colour model loaded
        while a grey layer is chosen would fail on Apply."""
        def channels(layer):
            try:
                n_channels = self._image_layout(layer).n_channels
            except ValueError:
                return None
            return n_channels - 1 if _has_alpha(layer) else n_channels  # as Apply reads it

        if self.apply_target.value is not None and channels(self.apply_target.value) == n_channels:
            return
        for layer in self.apply_target.choices:
            if layer is not None and channels(layer) == n_channels:
                self.apply_target.value = layer
                return

    def _ask_model_path(self, mode, caption):
        return show_file_dialog(
            mode=mode, caption=caption, filter="GMM model (*.npz);;All files (*)",
            parent=self.native,
        )

    @_while_open
    def _preview_if_on(self, *args):
        if self.preview.value:
            self.preview_now()

    @_while_open
    def _on_setting_changed(self, *args):
        if self.preview.value:
            try:
                self._settings_timer.start()
            except RuntimeError:  # the dock is being closed: its timer is gone
                pass

    @_while_open
    def _on_settings_settled(self):
        layer = self.image.value
        if layer is not None and layer in self._viewer.layers:
            self._preview_if_on()

    @_while_open
    def _on_step_changed(self, *args):
        self._on_setting_changed()  # napari closing moves the sliders as it removes layers
        if self._shown is not None and len(self._shown["models"]) > 1 and self.worker is None:
            self._plot_shown()  # fit each frame: the plot follows the time slider

    def _set_status(self, text, short=False):
        """The status line; with ``short``, at most :data:`_STATUS_CHARS` of it,
        so that a long message does not push the buttons below it out of
        view: the notification and the tooltip hold all of it.

        What is kept is what the user acts on: the problem (the first
        sentence's first clause) and the advice, which every message of
        the estimator and the widget gives last, when the two fit in
        :data:`_STATUS_ADVICE_CHARS`; failing that, the first sentence or
        its first clause."""
        shown = text
        if short and len(text) > _STATUS_CHARS:
            sentences = re.split(r"(?<=\.)\s+", text)
            first = sentences[0]
            head = re.split(r";\s", first, maxsplit=1)[0].rstrip(" ,.")
            with_advice = f"{head}. {sentences[-1]}"
            if len(sentences) > 1 and len(with_advice) <= _STATUS_ADVICE_CHARS:
                shown = with_advice
            else:
                if len(first) > _STATUS_CHARS:
                    first = head + "…"
                if len(first) > _STATUS_CHARS:
                    first = first[: _STATUS_CHARS - 1].rstrip(" ,;") + "…"
                shown = first
            shown += " (hover for more)"
        self.status.value = shown
        self.status.native.setToolTip(text)

    def _start(self, kind):
        if self.worker is not None:
            if kind == "preview":
                self._preview_pending = True
                if self._job is not None and self._job["kind"] == "preview":
                    # a stale preview: stop it at its next step, the new one follows
                    self._job["superseded"] = True
                    self._cancel_requested.set()
            else:
                show_info(f"{_PREFIX}a job is already running; wait for it or press Cancel.")
            return
        try:
            job, finish, layer = self._prepare(kind)
        except (ValueError, MemoryError) as error:
            advice = _MEMORY_ADVICE if isinstance(error, MemoryError) else ""
            reason = _in_widget_words(error, kind == "apply")
            if kind != "preview":
                self._refused = "Apply" if kind == "apply" else "Run"
            show_error(f"{_PREFIX}{reason}{advice}")
            self._set_status(f"{_status_prefix(error)}: {reason}{advice}", short=True)
            self.progress.value = 0  # not the last job's 100 %
            return
        if kind != "preview":
            self._advise_calibration(layer)
        self._cancel_requested = threading.Event()
        self._meter = _jobs.Meter()
        worker = create_worker(
            _drive, job, self._cancel_requested, self._meter, preview=kind == "preview",
            _start_thread=False, _ignore_errors=True,
        )
        worker.yielded.connect(self._tick)
        cancelled = self._cancel_requested
        worker.yielded.connect(lambda step: self._show_warning(step, cancelled))
        def while_open(slot):
            return lambda *args: None if self._closed else slot(*args)

        # the timer stops before the result is shown: a tick between the
        # result and the end of the worker would overwrite the status line
        worker.returned.connect(while_open(lambda *_: self._timer.stop()))
        worker.returned.connect(while_open(self._finisher(finish, layer)))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        _LIVE_WORKERS[worker] = self._cancel_requested
        worker.finished.connect(lambda: _LIVE_WORKERS.pop(worker, None))
        self.worker = worker
        self._job = {"kind": kind, "layer": layer, "removed": False, "warned": False}
        # (the model buttons too: a model loaded during a Run would be replaced
        # by the Run's when it ends, and a save would write the one it replaces;
        # a preview never touches the model, so they stay while one runs)
        model_buttons = () if kind == "preview" else (self.save_button, self.load_button)
        for button in (self.run_button, self.apply_button, *model_buttons):
            button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self._started = time.perf_counter()
        if kind != "preview":
            verb = "Applying the model" if kind == "apply" else "Fitting"
            self.plot.message(f"{verb} to {layer.name!r}…\nThe plot shows the new model "
                              "when the run ends.")
            self._activity = activity_progress(total=_BAR_STEPS, desc=f"GMM Segmenter: {layer.name}")
        self._set_status("Starting…")
        self._timer.start()
        worker.start()

    def _finisher(self, finish, layer):
        """``finish``, unless the job's ``layer`` was deleted: its results are
        dropped, and a job that ended before it saw the request to stop ends
        as a stopped one does."""
        def finish_or_drop(outputs):
            if layer not in self._viewer.layers:
                self._on_aborted()
                return
            finish(outputs)

        return finish_or_drop

    @_while_open
    def _on_closed(self, *args):
        """The dock was closed (or napari quit): stop the job, and listen no more.

        Its Qt widgets are gone: every handler a running worker or the viewer
        would still call returns at once (:func:`_while_open`)."""
        self._closed = True
        self._cancel_requested.set()
        for event, handler in (
            (self._viewer.dims.events.current_step, self._on_step_changed),
            (self._viewer.layers.events.removed, self._on_layer_removed),
            (self._viewer.layers.events.inserted, self._on_layer_inserted),
            (self._viewer.events.theme, self._apply_theme),
        ):
            event.disconnect(handler)

    @_while_open
    def _show_warning(self, step, cancelled=None):
        """A warning the estimator gave in the worker, as a napari notification;
        none once the job was cancelled (its event ``cancelled`` set): it would
        be about a result thrown away."""
        if isinstance(step, _Warned) and not (cancelled is not None and cancelled.is_set()):
            applying = self._job is not None and self._job["kind"] == "apply"
            show_warning(f"{_PREFIX}{_in_widget_words(step.message, applying)}")
            if self._job is not None:
                self._job["warned"] = True
                if step.about_bias_field:
                    self._job["bias_warned"] = True

    @_while_open
    def _tick(self, *args):
        """Refresh the progress bars and the elapsed time (every 200 ms while a job runs)."""
        if self.worker is None:
            return
        value = int(round(self._meter.fraction() * _BAR_STEPS))
        self.progress.value = value
        elapsed = time.perf_counter() - self._started
        message = self._meter.message
        self._set_status(f"{message} {elapsed:.0f} s" if elapsed >= 1 else message)
        activity = self._activity  # napari may process events (and end the job) in update
        if activity is not None and value > activity.n:
            activity.update(value - activity.n)

    @_while_open
    def _on_error(self, error):
        if isinstance(error, Cancelled):
            self._on_aborted()
            return
        if self._superseded():
            return  # a newer preview follows and reports for itself
        advice = _MEMORY_ADVICE if isinstance(error, MemoryError) else ""
        kind = None if self._job is None else self._job["kind"]
        reason = _in_widget_words(error, kind == "apply")
        if kind in ("run", "apply"):
            self._refused = "Apply" if kind == "apply" else "Run"
        show_error(f"{_PREFIX}{reason}{advice}")
        # the reason, as for a job that did not start (all of it in the tooltip)
        self._set_status(f"{_status_prefix(error)}: {reason}{advice}", short=True)
        self.plot.message("No new model: the run failed (see the notification).")

    def _superseded(self) -> bool:
        return self._job is not None and self._job.get("superseded", False)

    @_while_open
    def _on_aborted(self):
        if self._superseded():
            self._set_status("Updating the preview…")
            return
        # the plot goes back to the last result: say which, as Image may name another layer
        job = self._job
        stopped = "Cancelled"
        if job is not None and job.get("removed"):  # not the user's Cancel: say why
            stopped = f"Stopped: {job['layer'].name!r} was deleted while it was being segmented"
        shown = self._shown
        if shown is not None and shown["layer"] in self._viewer.layers:
            labels = shown["labels_layer"]
            gone = "" if labels in self._viewer.layers else " (since deleted)"
            self._set_status(f"{stopped}; the plot shows the last result again, "
                             f"{labels.name!r}{gone}")
        elif shown is None and self.model is not None:
            self._set_status(f"{stopped}; the plot shows the loaded model again")
        else:
            self._set_status(stopped)
        self.progress.value = 0
        self._plot_shown()

    @_while_open
    def _on_finished(self):
        self._timer.stop()
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        self.worker = None
        self._job = None
        for button in (self.run_button, self.apply_button, self.save_button, self.load_button):
            button.enabled = True
        self.cancel_button.enabled = False
        pending, self._preview_pending = self._preview_pending, False
        if pending and self.preview.value:
            self.preview_now()

    @_while_open
    @_while_open
    def _on_layer_inserted(self, event):
        """A new image becomes *Apply model to*: the usual next step after a
        fit is to open another image and label it with the model. (The combo
        box would otherwise keep the first image ever listed.)"""
        layer = event.value
        self.apply_target.reset_choices()
        if any(choice is layer for choice in self.apply_target.choices):
            self.apply_target.value = layer

    def _on_layer_removed(self, event):
        self._forget_shown_layer(event.value)
        job = self._job
        if job is None or event.value is not job["layer"]:
            return
        job["removed"] = True
        self.cancel()
        if job["kind"] == "preview":
            return  # nothing the user asked to keep (and napari, closing, removes every layer)
        # said once the event loop runs again: napari closing removes every
        # layer, then the dock, and a closed dock has nothing to say
        self._removed_warning = (
            f"{_PREFIX}the layer {event.value.name!r} was deleted while it was being "
            "segmented; the job was stopped and no layer was added. Add the image again "
            + ("and press Apply current model." if job["kind"] == "apply" else "and press Run.")
        )
        try:
            self._warning_timer.start()
        except RuntimeError:  # the dock is being closed: nothing to say
            pass

    def _forget_shown_layer(self, layer):
        """The status line names the last result's labels layer: say so when
        the user deletes it (the model stays, for Apply and Save)."""
        shown = self._shown
        # (==, not is: the dock's viewer hands out proxies of its layers)
        if shown is None or not layer == shown.get("labels_layer"):
            return
        quoted = repr(layer.name)
        if quoted in self.status.value:
            deleted = f"{quoted} (since deleted)"
            self.status.value = self.status.value.replace(quoted, deleted, 1)
            self.status.native.setToolTip(
                self.status.native.toolTip().replace(quoted, deleted, 1)
            )

    @_while_open
    def _warn_removed(self):
        if self._removed_warning is not None:
            show_warning(self._removed_warning)
            self._removed_warning = None

    def _select_scribbles(self):
        """A new layer takes napari's selection: give it back to the scribble
        layer, so the next stroke paints instead of panning the result."""
        guide = self.scribbles.value
        if guide is not None and guide in self._viewer.layers:
            self._viewer.layers.selection.active = guide

    # ------------------------------------------------------- job building

    def _leading_axis_of(self, layer):
        """How ``layer``'s leading axis is read.

        The *Leading axis* setting is made for the *Image* layer (and only
        shown where it has a choice). Another layer, one the model is applied
        to, is read by its own shape: as frames along its leading axis when it
        has one spatial axis more than the images the model was fitted on
        had (a 2-D model on a stack of planes), else as space.
        """
        if layer is self.image.value:
            return self.leading_axis.value
        model_ndim = self._model_frame_ndim
        channel_axis = self._channel_axis_of(layer)
        n_spatial = len(_data_of(layer).shape) - (channel_axis is not None)
        frames = model_ndim is not None and model_ndim >= 2 and n_spatial == model_ndim + 1
        return _layers.SHARED_MODEL if frames and channel_axis != 0 else _layers.SPACE

    def _channel_axis_of(self, layer):
        """``layer``'s channel axis in its data: the colour axis; for the *Image*
        layer, *Channel axis*; for another layer (one the model is applied to),
        none for a model of one channel, else an axis with the model's number
        of channels: where the model's images had it (counted from the end),
        else *Channel axis*, else the first."""
        shape = _data_of(layer).shape
        if layer.rgb:
            return len(shape) - 1
        chosen = self.channel_axis.value
        if chosen is not None and not 0 <= chosen < len(shape):
            chosen = None  # chosen for another layer (say, RGB's -1)
        if layer is self.image.value or self.model is None:
            return chosen
        n_channels = self.model.n_features_in_
        if n_channels == 1:
            return None
        from_end = self._model_channel_from_end
        tried = ([] if from_end is None or len(shape) + from_end < 0 else
                 [len(shape) + from_end])
        tried += ([] if chosen is None else [chosen]) + list(range(len(shape)))
        # none of the model's channels: grey, not the Image's channel axis
        # (a z-stack was read as 128 channels)
        return next((axis for axis in tried if shape[axis] == n_channels), None)

    def _channels_refused(self, layer, layout) -> str:
        """Why the model is not applied to ``layer``, whose channels are not the
        model's, and how to get a layer it applies to."""
        needed = self.model.n_features_in_
        if layer.rgb:
            has = f"{layer.name!r} is an RGB(A) colour layer (3 channels)"
        elif layout.channel_axis is None:
            has = f"{layer.name!r} is grey (1 channel)"
        else:
            has = (f"{layer.name!r} has {count(layout.n_channels, 'channel')} on axis "
                   f"{layout.channel_axis}")
        shape = _data_of(layer).shape
        axis = next((axis for axis, size in enumerate(shape) if size == needed), None)
        if needed == 1:
            how = ("Apply it to a grey layer (one channel of this one as a layer of its "
                   "own), or press Run to fit a new model to this layer.")
        elif layer is self.image.value and axis is not None and not layer.rgb:
            how = (f"If axis {axis} holds its channels, choose Channel axis 'axis {axis} "
                   f"(size {needed})'; else press Run to fit a new model to this layer.")
        else:
            # channels after the leading axis of a stack (Z, C, Y, X), last for a plane
            stack_axis = 1 if len(shape) >= 3 else -1
            how = (f"Apply it to one layer that holds {needed} channels on one axis (channels "
                   "napari opened as separate layers: stack them into one, e.g. "
                   f"viewer.add_image(np.stack([a.data, b.data], axis={stack_axis})) in "
                   "napari's console), or press Run to fit a new model to this layer.")
        return f"{has}, but the model needs {count(needed, 'channel')}. {how}"

    def _image_layout(self, layer):
        if not isinstance(layer, Image):
            raise ValueError(
                f"{_name(layer)} is not an Image layer; choose an Image layer to segment."
            )
        if layer.multiscale:
            raise ValueError(
                f"{_name(layer)} is multiscale; segment one of its levels as its own layer."
            )
        return _layers.make_layout(
            _data_of(layer).shape, rgb=layer.rgb,
            channel_axis=self._channel_axis_of(layer),
            leading_axis=self._leading_axis_of(layer),
        )

    def _params(self, layout, layer, *, n_spatial=None):
        n_spatial = len(layout.spatial_axes) if n_spatial is None else n_spatial
        auto = self.auto_components.value
        # the range only where it is used: the copied code shows these settings
        components = (
            {"n_components": "auto", "n_components_range": (1, self.max_components.value)}
            if auto else {"n_components": self.n_components.value}
        )
        return {
            **components,
            "covariance_type": self.covariance_type.value,
            "channel_axis": layout.frame_channel_axis,
            "beta": "auto" if self.auto_beta.value else self.beta.value,
            "connectivity": min(self.connectivity.value, n_spatial),
            "spacing": _layers.spacing_from_scale(layer.scale, layout),
            "bias_field": self.bias_degree.value if self.bias_field.value else None,
            "random_state": self.seed.value,
        }

    def _masks(self, layout, kind="run"):
        """The masks per frame, and how the code that reproduces a run makes them."""
        layer = self.mask.value
        if layer is None:
            return None, None
        description = {"layer": layer.name, "kind": "labels", "shape": None}
        if isinstance(layer, Shapes):
            description["kind"] = "shapes"
            if layer.ndim == len(layout.output_shape):
                shape = layout.output_shape
            elif layer.ndim == len(layout.spatial_shape):
                shape = layout.spatial_shape
            else:
                raise ValueError(
                    f"The Shapes layer {layer.name!r} has {layer.ndim} dimensions, but the "
                    f"image's pixels have shape {layout.spatial_shape}; draw the shapes on "
                    "the image."
                )
            image = self.apply_target.value if kind == "apply" else self.image.value
            axes = layout.output_axes if len(shape) == len(layout.output_shape) else (
                layout.spatial_axes)
            shapes, to_image = _shapes_in_image_pixels(layer, image, layout, axes)
            array = shapes.to_labels(labels_shape=shape)
            description["shape"] = list(shape)
            description["to_image"] = to_image
        elif isinstance(layer, Labels):
            array = _data_of(layer)
            description.update(_unit_axis_of(array, layout))
        else:
            raise ValueError(f"{_name(layer)} is neither a Labels nor a Shapes layer.")
        try:
            masks = _layers.mask_array(array, layout)
        except ValueError as error:
            target = self.apply_target.value
            if kind == "apply" and target is not None and target is not self.image.value:
                # the Mask is chosen with the Image layer; Apply uses it on another
                raise ValueError(
                    f"Mask {layer.name!r} does not fit {target.name!r}, the layer the model "
                    f"is applied to: {error} Or choose no Mask to apply the model to all of "
                    f"{target.name!r}."
                ) from None
            raise ValueError(f"Mask {layer.name!r}: {error}") from None
        description["per_frame"] = layout.time_axis is not None and (
            tuple(np.shape(layout.from_layer(array))) == layout.output_shape)
        return masks, description

    def _scribbles(self, layout):
        """The scribbles per frame (None if no layer is chosen or nothing is painted),
        and how the code that reproduces a run reads them."""
        layer = self.scribbles.value
        if layer is None:
            return None, None
        if not isinstance(layer, Labels):
            raise ValueError(f"{_name(layer)} is not a Labels layer; paint the scribbles "
                             "on a Labels layer (New scribble layer makes one).")
        data = np.array(_data_of(layer))  # a copy: the user paints on while the job runs
        self._scribbles_seen = _fingerprint(data)
        try:
            arrays = _layers.scribble_arrays(data, layout)
        except ValueError as error:
            raise ValueError(f"{_SCRIBBLES_CONTROL} {layer.name!r}: {error}") from None
        if arrays is None:
            return None, None
        per_frame = layout.time_axis is not None and (
            tuple(np.shape(layout.from_layer(data))) == layout.output_shape)
        return arrays, {"layer": layer.name, "per_frame": per_frame,
                        **_unit_axis_of(data, layout)}

    def _advise_calibration(self, layer):
        """Say, once per layer and file, what the layer's TIFF records that the layer
        lacks (see :func:`_calibration_advice`)."""
        try:
            advice = _calibration_advice(layer, self._image_layout(layer))
        except Exception:  # metadata is advice only: it never stops a run
            return
        key = (id(layer), advice)
        if advice is not None and key not in self._advised:
            self._advised.add(key)
            show_warning(f"{_PREFIX}{advice}")

    def _prepare(self, kind):
        layer = self.apply_target.value if kind == "apply" else self.image.value
        if layer is None:
            raise ValueError("There is no Image layer to segment; open or add an image first.")
        layout = self._image_layout(layer)
        data = _lazy_or_loaded(_data_of(layer))
        if not _has_finite_pixel(data):
            raise ValueError(
                f"{_name(layer)} has no finite pixel (every value is NaN or infinite), so "
                "there is nothing to segment; choose a layer with finite values."
            )
        masks, mask_description = self._masks(layout, kind)
        layout, data, masks = _without_alpha(layer, layout, data, masks)
        scribbles, scribble_description = (None, None) if kind == "apply" else (
            self._scribbles(layout))
        if kind == "preview":
            job, finish = self._prepare_preview(layer, layout, data, masks, mask_description,
                                                scribbles, scribble_description)
            return _naming_scribbles(job, self.scribbles.value), finish, layer
        leading_axis = self._leading_axis_of(layer)
        request = _jobs.Request(
            frames=layout.frames(data),
            params=self._params(layout, layer),
            masks=masks,
            scribbles=scribbles,
            per_frame=leading_axis == _layers.PER_FRAME,
            shared=leading_axis == _layers.SHARED_MODEL,
            posteriors=self.posteriors.value,
        )
        if kind == "apply":
            if self.model is None:
                raise ValueError("There is no model yet; press Run or Load model… first.")
            n_channels = layout.n_channels
            if n_channels != self.model.n_features_in_:
                raise ValueError(self._channels_refused(layer, layout))
            params = {k: request.params[k] for k in ("channel_axis", "spacing")}
            # a model fitted on a volume may carry a neighbourhood a plane lacks
            params["connectivity"] = min(self.model.connectivity, len(layout.spatial_axes))
            request.params = params
            job = _jobs.apply(self.model, request)
        else:
            job = _jobs.segment(request)
        job = _jobs.then(_naming_scribbles(job, self.scribbles.value), lambda result: (
            _jobs.outputs(result, request, time_axis=layout.time_axis,
                          per_component=self.per_component.value, histogram=True)
        ))
        settings = self._settings(layout, layer, mask_description, scribble_description)

        def finish(outputs):
            self._show_result(kind, layer, layout, outputs, request, settings,
                              mask_description, scribble_description)

        return job, finish, layer

    def _settings(self, layout, layer, mask_description, scribble_description=None):
        return {
            "channel_axis": layout.channel_axis,
            "leading_axis": self._leading_axis_of(layer),
            "mask": mask_description,
            "scribbles": scribble_description,
            "one_layer_per_component": bool(self.per_component.value),
            "posteriors": bool(self.posteriors.value),
        }

    def _prepare_preview(self, layer, layout, data, masks, mask_description, scribbles,
                         scribble_description):
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
        if not _has_finite_pixel(frame):
            raise ValueError(f"The displayed slice of {layer.name!r} has no finite pixel "
                             "(every value is NaN or infinite); move to another slice.")
        kept = [axis for axis in range(data.ndim) if isinstance(index[axis], slice)]
        channel_axis = None if layout.channel_axis is None else kept.index(layout.channel_axis)
        mask = guide = None
        spatial_index = tuple(index[axis] for axis in layout.spatial_axes)
        time_index = 0 if layout.time_axis is None else index[layout.time_axis]
        if masks is not None:
            mask = masks[time_index][spatial_index]
            if not mask.any():
                raise ValueError("The mask is empty on the displayed slice; move to a slice inside it.")
        if scribbles is not None:
            guide = scribbles[time_index][spatial_index]
            if not guide.any():  # strokes on other slices only: this one is unguided
                guide = scribble_description = None
        # a large slice is segmented on a coarser grid, so a preview (one per
        # stroke) keeps up with the brush; Run segments every pixel
        plane_shape = tuple(layout.shape[axis] for axis in sorted(plane))
        stride = _layers.preview_stride(plane_shape)
        coarse = tuple(slice(None) if axis == layout.channel_axis else slice(None, None, stride)
                       for axis in kept)
        params = self._params(layout, layer, n_spatial=2)
        params["channel_axis"] = channel_axis
        params["spacing"] = tuple(
            stride * size for size in _layers.spacing_from_scale(layer.scale, layout, plane)
        )
        params["max_samples"] = _layers.PREVIEW_SAMPLES
        params["max_iter_spatial"] = _layers.PREVIEW_SPATIAL_ITERATIONS
        coarse_guide = None if guide is None else _layers.coarse_scribbles(guide, stride)
        # beta='auto' without two strokes of a class reads the smoothing off
        # the image (three fits), which strokes do not change: the slice's
        # next previews reuse the first one's choice. With them, the strokes
        # choose it, cheaply, at every preview.
        beta_key = (id(layer), id(_data_of(layer)), repr(index), json.dumps(
            {**params, "beta": None}, sort_keys=True, default=str))
        auto_beta = params["beta"] == "auto" and (
            coarse_guide is None or not _guidance.has_held_out_strokes(coarse_guide))
        if auto_beta and beta_key in self._preview_beta:
            params["beta"] = self._preview_beta[beta_key]
        request = _jobs.Request(
            frames=[frame[coarse]], params=params,
            masks=None if mask is None else [mask[::stride, ::stride]],
            scribbles=None if coarse_guide is None else [coarse_guide],
        )
        output_index = tuple(index[axis] for axis in layout.output_axes)

        def fine(outputs):
            outputs.labels = _layers.fine_labels(outputs.labels, stride, plane_shape)
            return outputs

        job = _jobs.then(_jobs.segment(request), lambda result: fine(_jobs.outputs(
            result, request, time_axis=None, per_component=False,
            histogram=True,
        )))
        code_mask = None
        if mask_description is not None:
            mask_axes = layout.spatial_axes
            if mask_description["per_frame"]:
                mask_axes = (layout.time_axis,) + mask_axes
            code_mask = dict(mask_description, index=[index[axis] for axis in mask_axes])
        code_scribbles = None
        if scribble_description is not None:
            scribble_axes = layout.spatial_axes
            if scribble_description["per_frame"]:
                scribble_axes = (layout.time_axis,) + scribble_axes
            code_scribbles = dict(scribble_description,
                                  index=[index[axis] for axis in scribble_axes])
        settings = self._settings(layout, layer, mask_description, scribble_description)
        settings["preview_stride"] = stride

        def finish(outputs):
            model = outputs.models[-1]
            if auto_beta:
                self._preview_beta = {beta_key: float(model.beta_)}  # this slice's only
            code = _record.python_code(
                image=layer.name, params=params, leading_axis=_layers.SPACE,
                preview_index=index, mask=code_mask, scribbles=code_scribbles,
                alpha=_has_alpha(layer), file=_file_of(layer),
                preview_grid=None if stride == 1 else {
                    "stride": stride, "image": coarse, "shape": plane_shape},
            )
            record = _record.make_record(
                operation="preview of the displayed slice", image_layer=layer, model=model,
                params=json_params(model), settings=settings, code=code,
            )
            before = list(self._viewer.layers)
            labels_layer = _output.labels_layer(
                self._viewer, layer, layout, metadata={_record.METADATA_KEY: record},
                scribbles=self.scribbles.value,
            )
            if labels_layer not in before:
                self._select_scribbles()
            layout.from_layer(labels_layer.data)[output_index] = outputs.labels
            labels_layer.refresh()
            self.record = record
            # the preview's model is fitted on one slice: it does not replace self.model
            self._shown = {"models": outputs.models, "histograms": outputs.histograms,
                           "shares": outputs.shares, "corrected": outputs.corrected,
                           "labels_layer": labels_layer,
                           "layer": layer}
            self._plot_shown()
            grid = "" if stride == 1 else f", every {_ordinal(stride)} pixel"
            self._set_status(f"Preview of the displayed slice{grid}: {_fitted(model)} (press "
                             "Run to segment all of it and keep the model)")

        return job, finish

    # ------------------------------------------------------------- output

    def _show_result(self, kind, layer, layout, outputs, request, settings, mask_description,
                     scribble_description=None):
        applied = kind == "apply"
        models = outputs.models
        model = models[self._displayed_frame(layer, len(models))]
        data = _data_of(layer)
        reading = {"alpha": _has_alpha(layer), "lazy": _is_lazy(data),
                   "unit_axis": layout.unit_axis, "file": _file_of(layer)}
        if applied:
            code = _record.python_code(
                image=layer.name, params=request.params,
                leading_axis=self._leading_axis_of(layer),
                mask=mask_description, source=self._model_code, **reading,
            )
        else:
            code = _record.python_code(
                image=layer.name, params=request.params,
                leading_axis=self._leading_axis_of(layer),
                mask=mask_description, scribbles=scribble_description, **reading,
            )
        record = _record.make_record(
            operation="apply model" if applied else "fit and predict", image_layer=layer,
            model=model, params=json_params(model), settings=settings, code=code,
        )
        metadata = {_record.METADATA_KEY: record}
        labels_layer = _output.labels_layer(
            self._viewer, layer, layout, data=outputs.labels, metadata=metadata,
            scribbles=self.scribbles.value,
        )
        transform = _layers.output_transform(layer, layout)
        components, posteriors, uncertainty, field, field_transform = (
            outputs.components, outputs.posteriors, outputs.uncertainty, outputs.bias_field,
            transform,
        )
        posterior_transform = transform
        if layout.unit_axis is not None:  # the outputs keep the channel axis (ZCYX)
            components = None if components is None else [
                layout.to_layer(component) for component in components]
            if posteriors is not None:
                posteriors = layout.to_layer(posteriors, leading=1)
                uncertainty = layout.to_layer(uncertainty)
            if field is not None:  # one field per channel: on the image's channel axis
                field = np.moveaxis(field, 0, layout.unit_axis)
                field_transform = _layers.layer_transform(layer)
        elif posteriors is not None and layout.channel_axis is not None and not layout.rgb:
            # channels first (CZYX): the components' axis in front of the labels'
            # would fall on the image's channels and share their slider; the
            # posteriors keep the channel axis, at length 1, between them
            posteriors = np.expand_dims(posteriors, 1)
            posterior_transform = _layers.unit_axis_transform(layer, layout)
        if field is not None and field_transform is transform and field.ndim > len(
                transform["scale"]):  # one field per channel, on an axis in front
            units = _layers.layer_units(layer)
            field_transform = _layers.prepend_axis(
                transform, "channel", unit=_layers.ADDED_AXIS_UNIT if units is None or layer.rgb
                else units[layout.channel_axis])
        _output.show_components(
            self._viewer, layer.name, components, transform, metadata=metadata
        )
        _output.show_posteriors(
            self._viewer, layer.name, posteriors, uncertainty, transform, metadata=metadata,
            posterior_transform=posterior_transform,
        )
        _output.show_bias_field(
            self._viewer, layer.name, field, field_transform, metadata=metadata
        )
        # a new layer takes napari's selection: not a hidden output, whose
        # controls would show instead of the labels' (to touch them up)
        active = self._viewer.layers.selection.active
        if (active is not None and active is not labels_layer and not active.visible
                and active.name.startswith(f"{layer.name} GMM ")):
            self._viewer.layers.selection.active = labels_layer
        self._select_scribbles()
        self.record = self._full_record = record
        self._refused = None
        if not applied:
            self.model = model
            self._model_frame_ndim = len(layout.spatial_axes)
            self._model_channel_from_end = (
                None if layout.channel_axis is None else layout.channel_axis - len(layout.shape)
            )
            self._model_code = code
            self._model_record = record
        self._shown = {"models": models, "histograms": outputs.histograms,
                       "shares": outputs.shares, "corrected": outputs.corrected,
                       "labels_layer": labels_layer, "layer": layer}
        self._plot_shown()
        verb = "Applied the model" if applied else "Fitted"
        warned = self._job is not None and self._job.get("warned")
        if outputs.bias_refused:  # a field of ones: refused (the fit warned) or flat
            tail = (
                "; no bias field could be estimated (see the notification)"
                if self._job is not None and self._job.get("bias_warned")
                else "; the bias field came out flat (1 everywhere), so no layer shows it"
                + ("; read the warning in the notifications" if warned else "")
            )
        else:
            tail = "; read the warning in the notifications" if warned else ""
            span = _field_range(outputs.bias_field, outputs.labels)
            if span is not None:
                tail = f"; bias field {span[0]:.2f}-{span[1]:.2f}" + tail
        # a volume's voxel size, from the layer's scale: all ones (napari's
        # default when its reader found none) would smooth it as cubes unseen
        tail = _voxel_size(request.params.get("spacing"), layer, layout) + tail
        self._set_status(
            f"{verb}: {_fitted(model, chosen=not applied)} → {labels_layer.name!r}{tail}"
        )

    def _displayed_frame(self, layer, n_frames):
        if n_frames == 1:
            return 0
        position = layer.world_to_data(self._viewer.dims.point)
        return int(np.clip(np.round(position[0]), 0, n_frames - 1))

    def _plot_shown(self):
        """Draw the shown result's model (the displayed frame's, with one model per frame)."""
        shown = self._shown
        if shown is None:
            if self.model is not None:
                self._draw(self.model, None, _new_label_colours(self.model.n_components_))
            else:
                self.plot.clear()
            return
        if shown["layer"] not in self._viewer.layers:
            self.plot.clear()
            return
        frame = self._displayed_frame(shown["layer"], len(shown["models"]))
        model = shown["models"][frame]
        histograms = shown["histograms"]
        histogram = None if histograms is None else histograms[min(frame, len(histograms) - 1)]
        shares = shown.get("shares")
        shares = None if shares is None else shares[min(frame, len(shares) - 1)]
        corrected = shown.get("corrected")
        corrected = None if corrected is None else corrected[min(frame, len(corrected) - 1)]
        labels_layer = shown["labels_layer"]
        colours = {k: labels_layer.get_color(k) for k in range(1, model.n_components_ + 1)}
        self._draw(model, histogram, colours, shares, corrected)

    def _draw(self, model, histogram, colours, shares=None, corrected=None):
        try:
            self.plot.show_model(model, histogram, colours, shares, corrected)
        except Exception as error:  # a plot must never break a run
            show_info(f"{_PREFIX}the plot could not be drawn ({error})")


#: napari's axis names of a time axis (as readers and users write them).
_TIME_NAMES = {"t", "time", "frame", "frames"}


def _is_time_unit(unit) -> bool:
    """Whether ``unit`` (a pint unit, as napari's layers hold them) is one of time."""
    dimensionality = getattr(unit, "dimensionality", None)
    return dimensionality is not None and str(dimensionality) == "[time]"


def _leading_axis_is_time(layer) -> bool:
    """Whether the layer's first axis is time: named so (``axis_labels``) or in
    a unit of time (``units``: s, ms, min, h, ...)."""
    names = getattr(layer, "axis_labels", None)
    units = getattr(layer, "units", None)
    named = names is not None and len(names) and str(names[0]).strip().lower() in _TIME_NAMES
    return bool(named) or (units is not None and len(units) > 0 and _is_time_unit(units[0]))


def _voxel_size(spacing, layer, layout) -> str:
    """"; voxel size 1.5 × 0.5 × 0.5 µm" for a volume (3 or more spatial axes)
    segmented with ``spacing``, in the layer's units when its spatial axes
    share one other than pixels; "" for a plane. A time axis segmented as
    space (the user's choice) has no voxel size: that is said instead, with
    how to segment its frames."""
    if spacing is None or len(spacing) < 3:
        return ""
    unit = ""
    units = getattr(layer, "units", None)
    names = getattr(layer, "axis_labels", None)
    for axis in layout.spatial_axes:
        position = layout.layer_axis(axis)
        in_time = units is not None and _is_time_unit(units[position])
        named = names is not None and str(names[position]).strip().lower() in _TIME_NAMES
        if in_time or named:
            what = f"in {format(units[position], '~')}" if in_time else f"named {names[position]!r}"
            advice = (" (Leading axis 'time: one model' segments its frames)"
                      if axis == 0 else "")
            return f"; axis {axis} is time ({what}), smoothed as space{advice}"
    if units is not None:
        spatial = {units[layout.layer_axis(axis)] for axis in layout.spatial_axes}
        if len(spatial) == 1:
            name = format(spatial.pop(), "~")
            unit = "" if name in ("pixel", "px") else f" {name}"
    return f"; voxel size {_sizes(spacing)}{unit}"


def _sizes(spacing) -> str:
    """A voxel size as the dock writes it: ``1.5 × 0.5 × 0.5``."""
    return " × ".join(f"{size:g}" for size in spacing)


def _status_prefix(error) -> str:
    """How the status line opens for ``error``: input or settings refused (a
    ``ValueError``, whose message says what to change; found before the job
    or by the estimator's checks in it) is "Not segmented"; anything else
    (memory, a bug) "Failed"."""
    return "Not segmented" if isinstance(error, ValueError) else "Failed"


def _field_range(field, labels):
    """``(low, high)`` of the bias ``field`` over the pixels segmented (labelled:
    inside the mask, finite), as ``gmm-segment`` reports it; ``field`` has the
    axes of ``labels``, after a channel axis of its own if it has one. None
    without a field, for a lazy one (it is not read for this), or with no
    pixel labelled."""
    if field is None or _is_lazy(field) or _is_lazy(labels):
        return None
    segmented = np.asarray(labels) > 0
    if not segmented.any():
        return None
    values = field[:, segmented] if field.ndim > segmented.ndim else field[segmented]
    return float(np.min(values)), float(np.max(values))


def _fitted(model, chosen=True) -> str:
    """What the status line says of a model: "6 components (by BIC), smoothing
    1.39"; ``chosen``: say that BIC chose the number (not of a model applied)."""
    by_bic = " (by BIC)" if chosen and model.n_components == "auto" else ""
    smoothing = f", smoothing {model.beta_:.2f}" if model.beta_ else ""
    return f"{count(model.n_components_, 'component')}{by_bic}{smoothing}"


def _new_label_colours(n_components):
    """Label ``k``'s colour in a new Labels layer, for ``k = 1..n_components``: the
    colours a loaded model's labels will get (the plot draws its components in them)."""
    layer = Labels(np.zeros((1, 1), dtype=np.uint8))
    return {k: layer.get_color(k) for k in range(1, n_components + 1)}


def _drive(job, cancel_requested, meter=None, preview=False):
    """Run a job generator in the worker thread, passing on its progress and result.

    Cancel takes effect at the job's next yield, and also inside a long fit
    or prediction: the estimator's progress reports check ``cancel_requested``
    and move ``meter`` (a :class:`_jobs.Meter`) between the job's steps.
    A ``preview`` stops HMRF-EM early on purpose
    (:data:`_layers.PREVIEW_SPATIAL_ITERATIONS`): it does not warn that
    HMRF-EM had not converged.
    """

    def check(stage, done, total):
        if cancel_requested.is_set():
            raise Cancelled
        if meter is not None:
            meter.report(stage, done, total)

    # one BLAS thread: the BLAS pools a second calling thread starts compete
    # with the main thread's on a small machine, which made a fit in the
    # worker several times slower than the same fit in a plain script.
    # Warnings are collected here and passed on as steps: napari's worker
    # does not turn them into notifications, so they would be lost.
    shown = set()
    # (see there) before setting what is global to the process
    _warmup.finish(stop=cancel_requested)
    if cancel_requested.is_set():
        raise Cancelled
    with progress(check), threadpool_limits(limits=1), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        if preview:
            from sklearn.exceptions import ConvergenceWarning

            warnings.filterwarnings("ignore", "HMRF-EM did not converge", ConvergenceWarning)
        while True:
            try:
                step = next(job)
            except StopIteration as stop:
                yield from _new_warnings(caught, shown)
                return stop.value
            yield from _new_warnings(caught, shown)
            if meter is not None and isinstance(step, _jobs.Progress):
                meter.job(step)
            yield step


class _MinimumWidth(QObject):
    """Keeps a scroll area as wide as its content's minimum width plus the scroll bar."""

    def __init__(self, scroll_area, content):
        super().__init__(content)
        self._scroll_area, self._content = scroll_area, content

    def fit(self):
        area = self._scroll_area
        scrollbar = area.verticalScrollBar().sizeHint().width()
        if area.isVisible():  # the bar as drawn, and the frame
            scrollbar = max(scrollbar, area.width() - area.viewport().width())
        area.setMinimumWidth(self._content.minimumSizeHint().width() + scrollbar)

    def eventFilter(self, watched, event):
        if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show):
            self.fit()
        return False


@dataclass(frozen=True)
class _Warned:
    """A warning from the worker thread, to be shown on the main thread."""

    message: str
    #: the estimator refused a bias field (:class:`gmm_segmenter.BiasFieldWarning`)
    about_bias_field: bool = False


#: Numbers in a warning's text: warnings that differ only in them are one kind.
_NUMBERS = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _new_warnings(caught, shown):
    """Each kind of warning ``caught`` since the last call, once: the first of
    those that differ only in their numbers (each frame of a *fit each frame*
    run gave its own, one notification per frame)."""
    from .. import BiasFieldWarning

    for record in caught:
        message = str(record.message)
        kind = _NUMBERS.sub("#", message)
        if kind not in shown:
            shown.add(kind)
            yield _Warned(message, issubclass(record.category, BiasFieldWarning))
    caught.clear()


def _is_output(layer) -> bool:
    """Whether ``layer`` is one of the plugin's outputs (never offered as an input)."""
    if _record.METADATA_KEY in getattr(layer, "metadata", {}):
        return True
    suffixes = (_output.LABELS_SUFFIX, " GMM posteriors", " GMM uncertainty",
                _output.BIAS_FIELD_SUFFIX)
    return layer.name.endswith(suffixes) or " GMM component " in layer.name


def _naming_scribbles(job, layer):
    """``job``, whose errors about the scribbles name the layer they were painted on."""
    try:
        return (yield from job)
    except ValueError as error:
        if layer is None or "scribble" not in str(error).lower():
            raise
        raise ValueError(f"{_SCRIBBLES_CONTROL} {layer.name!r}: {error}") from None


def _fingerprint(array):
    """A cheap checksum of an array's contents (1 ms for a 1024 x 1024 uint8 layer)."""
    array = np.ascontiguousarray(array)
    return array.shape, array.dtype.str, zlib.crc32(array.view(np.uint8).reshape(-1))


def _ordinal(n):
    return {2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _unit_axis_of(array, layout) -> dict:
    """``{"unit_axis": axis}`` for a Labels layer's data with the outputs' unit
    channel axis (the code that reproduces a run squeezes it out), else ``{}``."""
    if layout.unit_axis is None or tuple(np.shape(array)) != layout.layer_shape:
        return {}
    return {"unit_axis": layout.unit_axis}


def _calibration_advice(layer, layout) -> str | None:
    """What the TIFF ``layer`` was read from records and the layer lacks: channels
    on an axis that *Channel axis* does not take, and a voxel size when the
    layer's scale is napari's default of ones (its TIFF reader leaves both out,
    where ``gmm-segment`` reads them). ``None`` when there is nothing to say."""
    file = _file_of(layer)
    if file is None or file["zarr"] or layer.rgb:
        return None
    found = io.read_tiff_axes(file["path"])
    shape = _data_of(layer).shape
    if found is None or len(found.axes) != len(shape):
        return None
    said = []
    channel = found.channel_axis
    if channel is not None and layout.channel_axis is None:
        said.append(f"holds channels on axis {channel}: choose Channel axis 'axis {channel} "
                    f"(size {shape[channel]})'")
    sizes = found.spacing(channel)
    spatial = [axis for axis in range(len(shape)) if axis != channel]  # as spacing() has them
    scale = np.array(layer.scale, dtype=float)  # a copy: the layer's own is not changed
    if sizes is not None and np.all(scale[spatial] == 1) and any(size != 1 for size in sizes):
        scale[spatial] = sizes
        unit = f" {found.unit}" if found.unit else ""
        shown = ", ".join(f"{value:g}" for value in scale)
        said.append(
            f"records a voxel size of {_sizes(sizes)}{unit}, "
            "while the layer's scale is 1 (napari's TIFF reader leaves it out), so it is "
            "shown and segmented with cubic voxels: set its scale (in napari's console, "
            f"viewer.layers[{layer.name!r}].scale = ({shown})) and Run again"
        )
    if not said:
        return None
    return (f"{Path(file['path']).name}, the file of layer {layer.name!r}, "
            + "; it ".join(said) + ".")


def _file_of(layer) -> dict | None:
    """The file napari read ``layer`` from (see :func:`_record.file_code`), or None."""
    source = getattr(layer, "source", None)
    path = getattr(source, "path", None)
    if not path:
        return None
    path = Path(path)
    if not (path.is_file() or io.is_zarr_store(path)):
        return None  # gone since, or a folder of images napari stacked
    return {"path": str(path.resolve()), "zarr": io.is_zarr_store(path),
            "reader": getattr(source, "reader_plugin", None)}


def _data_of(layer):
    data = layer.data
    return data[0] if getattr(layer, "multiscale", False) else data


def _is_lazy(data) -> bool:
    """Whether a layer's data is read as it is used (dask or zarr), not held in memory."""
    return is_dask_array(data) or is_zarr_array(data)


def _lazy_or_loaded(data):
    """A layer's data as a dask array (dask and zarr layers, which stay lazy)
    or in memory (anything else)."""
    if is_zarr_array(data):
        import dask.array as da

        return da.from_zarr(data)
    return data if is_dask_array(data) else np.asarray(data)


def _has_alpha(layer) -> bool:
    """Whether ``layer`` is RGBA: napari shows its last channel as opacity."""
    return bool(getattr(layer, "rgb", False)) and _data_of(layer).shape[-1] == 4


def _without_alpha(layer, layout, data, masks):
    """An RGBA layer as its colours, with its transparent pixels masked out.

    Alpha is how napari draws the layer, not a colour to segment by: an
    opaque one is a constant channel, and transparent pixels would take a
    component of their own. As ``gmm-segment`` does with RGBA files, the
    three colour channels are the features and pixels of alpha 0 get label
    0 (combined with the Mask, if one is chosen). Returns ``(layout, data,
    masks)``.
    """
    if not _has_alpha(layer):
        return layout, data, masks
    layout = replace(layout, shape=data.shape[:-1] + (3,))
    opaque = _layers.frames_of(data[..., 3] != 0, layout)
    masked = masks
    masks = opaque if masks is None else [mask & seen for mask, seen in zip(masks, opaque)]
    if not any(np.any(mask) for mask in masks):
        raise ValueError(
            f"{_name(layer)}: every pixel is transparent (alpha 0), so there is nothing to "
            "segment; choose a layer with visible pixels." if masked is None else
            f"{_name(layer)}: every pixel inside the Mask is transparent (alpha 0), so "
            "there is nothing to segment; choose a Mask over visible pixels."
        )
    return layout, data[..., :3], masks


def _has_finite_pixel(data) -> bool:
    """Whether an in-memory layer's data hold a finite value (a lazy layer is
    not read for this: the estimator says so as it reads it)."""
    if _is_lazy(data) or data.dtype.kind not in "fc" or data.size == 0:
        return True
    if np.isfinite(np.max(data)):  # one pass, no copy, for the usual image
        return True
    return bool(np.isfinite(data).any())


def _name(layer):
    return f"Layer {layer.name!r} ({type(layer).__name__})"


def read_record(path) -> dict | None:
    """The record stored in a model file by Save model…, or None."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return json.loads(str(archive["metadata"])).get("record")
    except (OSError, ValueError, KeyError):
        return None
