"""Plain functions for napari-assistant and workflow recorders: image in, labels out.

Each is typed ``napari.types.ImageData -> napari.types.LabelsData``, so napari
builds a small widget for it, puts the labels in a new layer, and tools that
record workflows (napari-assistant) can replay it. The dock widget remains
the main entry: it adds masks, time series, previews, posteriors and the plot.
"""

import contextlib
import functools
import pathlib
import re
import textwrap
import warnings
from typing import Annotated, Literal

import numpy as np
from magicgui import magic_factory
from napari.types import ImageData, LabelsData
from napari.utils.notifications import show_error

from .. import _warmup, io
from . import _layers, _output
from .._wording import (
    ALPHA_AXIS_ADVICE, FEWER_COMPONENTS_ADVICE, RGBA_ADVICE, SPATIAL_ITER_ADVICE,
    X_AS_THE_IMAGE, reword,
)
from ..estimator import GMMSegmenter


def _tip(text: str) -> str:
    """A tooltip in lines of 60 characters: Qt shows plain text on one line,
    wider than the screen for the longer ones."""
    return textwrap.fill(text, 60)


#: The controls napari builds for the parameters (magicgui reads the options;
#: type checkers and napari-assistant see the plain types).
CovarianceType = Annotated[Literal["full", "tied", "diag", "spherical"], {
    "tooltip": _tip(
        "The shape of each class's spread, as in scikit-learn's GaussianMixture. 'tied' "
        "(one spread for every class) suits clean scans whose classes differ only by "
        "their mean."
    ),
}]
Channels = Annotated[Literal["auto", "last axis", "none"], {
    "tooltip": _tip(
        "'auto': a last axis of 3 or 4 is colour, as napari shows it (RGBA: transparent "
        "pixels get label 0); 'last axis': other channels on the last axis; 'none': "
        "grayscale (a last axis of 3 or 4 is then a volume's)."
    ),
}]
Components = Annotated[int, {
    "min": 1, "max": 50, "tooltip": _tip("How many classes: labels 1 to K, darkest first."),
}]
AutoSmoothing = Annotated[bool, {
    "tooltip": _tip(
        "Choose the strength of the spatial smoothing from the image; untick to set "
        "'fixed smoothing' yourself."
    ),
}]
Smoothing = Annotated[float, {
    "label": "fixed smoothing", "min": 0.0, "max": 1e6, "step": 0.1,
    "tooltip": _tip(
        "The smoothing strength used when 'auto smoothing' is unticked (0 = pixel-wise "
        "Gaussian mixture)."
    ),
}]
BiasField = Annotated[bool, {
    "tooltip": _tip(
        "Correct uneven illumination (a smooth multiplicative field) while fitting."
    ),
}]
Seed = Annotated[int, {
    "min": 0, "max": 2**31 - 1,
    "tooltip": _tip(
        "Seed of the random sampling and starts: a seed gives the same labels every time."
    ),
}]
ModelFile = Annotated[pathlib.Path, {
    "label": "model", "filter": "*.npz",
    "tooltip": _tip(
        "A model file written by the GMM Segmenter's Save model… or gmm-segment "
        "--save-model."
    ),
}]

#: The estimator's words for these functions' options (components, channels), as they say them.
_FUNCTION_WORDS = [
    (re.compile(r"\bn_components=(\d+) asks for \d+ components, but\b"),
     r"n components is \1, but"),
    (re.compile(r"\bUse n_components=1 or n_components='auto'"), "Set n components to 1"),
    (re.compile(r"\bUse n_components<=(\d+) or n_components='auto'"),
     r"Set n components to \1 or fewer"),
    (FEWER_COMPONENTS_ADVICE,
     "Use fewer n components, or a lower 'fixed smoothing' (with 'auto smoothing' "
     "unticked)."),
    (re.compile(r"\(beta=([\d.]+)\)"), r"(smoothing \1)"),
    (SPATIAL_ITER_ADVICE, "In Python, GMMSegmenter(...) takes a larger max_iter_spatial or tol."),
    # the colour an RGB layer is: 'auto', the default, reads it so
    (re.compile(r"\bPass channel_axis=-1 for a colour image\b"),
     "Choose channels='auto' (the default) for a colour image"),
    # a grey model told channels='none' on a layer that looks like colour
    (re.compile(r"For a colour image, convert it to grey first \(e\.g\. skimage\.color\.rgb2gray, "
                r"scaled as the model's images were\) or fit a model on colour images "
                r"\(channel_axis=-1\)"),
     "For a colour layer, apply this model to a grey copy of it (scaled as the model's images "
     "were), or apply a model fitted on colour layers with channels='auto' (the default)"),
    (RGBA_ADVICE,
     "for an RGBA layer, choose channels='auto' (the default): it leaves alpha out and "
     "gives transparent pixels label 0"),
    (ALPHA_AXIS_ADVICE,
     "segment a layer of its first three channels, with a mask of where the fourth is "
     "above 0"),
    (re.compile(r"\bchannel_axis=None\b"), "channels='none'"),
    (re.compile(r"\bchannel_axis=-?\d+\b"), "channels='last axis'"),
    *X_AS_THE_IMAGE,
]


def _looks_rgb(image) -> bool:
    """napari's own reading of an array as RGB(A): a last axis of 3 or 4 (at least 3-D)."""
    return image.ndim >= 3 and image.shape[-1] in (3, 4)


def _check_channels(channels):
    if channels not in ("auto", "last axis", "none"):
        raise ValueError(
            f"channels must be 'auto', 'last axis' or 'none'; got {channels!r}"
        )


def _check_channels_leave_a_plane(image, channels):
    if channels == "last axis" and image.ndim < 3:
        raise ValueError(
            f"channels='last axis' on an image of shape {image.shape} leaves a line of "
            "pixels, which napari cannot show as labels; choose channels='none' for a "
            "grey image."
        )


def _colours_and_mask(image, channels):
    """``(pixels, channel_axis, mask)`` for ``channels``: in 'auto' an RGBA image
    is its three colours with alpha 0 masked out, as the dock and
    ``gmm-segment`` read it."""
    _check_channels(channels)
    _check_channels_leave_a_plane(image, channels)
    if channels == "auto":
        if _looks_rgb(image) and image.shape[-1] == 4:
            return image[..., :3], -1, _visible(image[..., 3])
        return image, (-1 if _looks_rgb(image) else None), None
    return image, (-1 if channels == "last axis" else None), None


def _an_image(image):
    if image is None:
        raise ValueError("There is no image to segment: add an Image layer and choose it.")
    return np.asarray(image)


def _visible(alpha):
    mask = alpha != 0
    if not mask.any():
        raise ValueError(
            "Every pixel of the image is transparent (alpha 0): there is nothing to segment."
        )
    return mask


def _in_these_words(text: str) -> str:
    return reword(text, _FUNCTION_WORDS)


@contextlib.contextmanager
def _warnings_in_these_words():
    """The estimator's warnings once each (fit and predict both check the
    input), in the words of these functions' options."""
    _warmup.finish()  # a dock's warm-up, if running: warning filters are global
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for warning in caught:
        text = _in_these_words(str(warning.message))
        if text not in seen:
            seen.add(text)
            warnings.warn(text, warning.category, stacklevel=3)


def segment_image(
    image: ImageData,
    n_components: Components = 3,
    auto_smoothing: AutoSmoothing = True,
    smoothing: Smoothing = 1.0,
    covariance_type: CovarianceType = "full",
    channels: Channels = "auto",
    correct_bias_field: BiasField = False,
    random_seed: Seed = 0,
) -> LabelsData:
    """Segment ``image`` with a Gaussian mixture: labels 1..K, darkest first.

    ``auto_smoothing`` chooses the spatial prior's strength from the image
    (``beta='auto'``); untick it to use ``smoothing`` (0 = pixel-wise GMM).
    ``channels``: ``'auto'`` reads a last axis of 3 or 4 as colour, as
    napari shows such an image as RGB(A) (an RGBA image is segmented by its
    colours, and transparent pixels get label 0); ``'last axis'`` for other
    channels on the last axis (all of them features); ``'none'`` for
    grayscale (a last axis of 3 or 4 is then a volume's). Tick
    ``correct_bias_field`` for uneven illumination (``bias_field='auto'``).
    """
    pixels, channel_axis, mask = _colours_and_mask(_an_image(image), channels)
    segmenter = GMMSegmenter(
        n_components, covariance_type=covariance_type,
        beta="auto" if auto_smoothing else smoothing,
        channel_axis=channel_axis,
        bias_field="auto" if correct_bias_field else None, random_state=random_seed,
    )
    with _warnings_in_these_words():
        # (fit_predict: what the fit said about the image is not said again,
        # and a bias field is the one fitted with the mixture)
        return segmenter.fit_predict(pixels, mask=mask)


def apply_model(
    image: ImageData,
    model_file: ModelFile = pathlib.Path("model.npz"),
    channels: Channels = "auto",
) -> LabelsData:
    """Label ``image`` with a model file written by the GMM Segmenter's Save model….

    Every image gets the same classes, without refitting. ``channels``:
    ``'auto'`` takes the last axis as channels when the model has several
    and the last axis holds that many (or one more under a grey or RGB
    model: alpha, whose transparent pixels get label 0), or when it is 3 or
    4 long (colour, as napari shows it), else none; ``'last axis'`` or
    ``'none'`` say so. A model of other channels than the image's is refused.
    """
    _check_channels(channels)
    model_file = pathlib.Path(model_file)
    if not model_file.is_file():
        problem = (
            "is a folder, not a model file" if model_file.is_dir()
            else "is not a regular file" if model_file.exists() else "no such model file"
        )
        error = ValueError if model_file.exists() else FileNotFoundError
        raise error(
            f"{model_file}: {problem}; choose a .npz file written by Save "
            "model… or gmm-segment --save-model."
        )
    segmenter = io.load_model(model_file)
    image = _an_image(image)
    mask = None
    n_channels = segmenter.means_.shape[1]
    if channels == "auto":
        last = image.shape[-1] if image.ndim >= 2 else None
        if n_channels > 1 and last == n_channels:
            axis = -1
        elif n_channels in (1, 3) and last == n_channels + 1 and image.ndim >= 3:
            # grey + alpha or RGBA under a model of the colours alone
            image, mask, axis = image[..., :-1], _visible(image[..., -1]), -1
            if n_channels == 1:
                image, axis = image[..., 0], None
        elif _looks_rgb(image):
            axis = -1  # colour, as napari shows it (and as segment image reads it)
        else:
            axis = None
    else:
        _check_channels_leave_a_plane(image, channels)
        axis = -1 if channels == "last axis" else None
    given = 1 if axis is None else image.shape[axis]
    if given != n_channels:
        kind = {1: " (a grey layer)", 3: " (an RGB layer)"}.get(n_channels, "")
        volume = (
            " With channels='auto' a last axis of 3 or 4 is colour, as napari shows it: "
            "choose channels='none' if it is a volume's third axis."
            if channels == "auto" and axis == -1 and n_channels == 1 else ""
        )
        raise ValueError(
            f"{model_file.name} was fitted on images with {n_channels} channel(s), but with "
            f"channels={channels!r} the image has {given}; choose an image with "
            f"{n_channels} channel(s){kind}, or a model fitted on images like this one."
            + volume
        )
    # a model fitted on volumes labels a plane: the neighbourhood the plane has
    n_spatial = image.ndim - (axis is not None)
    spacing = segmenter.spacing
    segmenter.set_params(
        channel_axis=axis, connectivity=max(1, min(segmenter.connectivity, n_spatial)),
        spacing=spacing if spacing is None or len(spacing) == n_spatial else None,
    )
    with _warnings_in_these_words():
        return segmenter.predict(image, mask=mask)


def _as_a_widget(function):
    """``function`` as napari's widget for it runs it: input it refuses is an
    error notification with the message, in these functions' words, and no
    layer (``None``).

    Raised in a function widget, the error would reach the user as an empty
    notification behind magicgui's "While emitting signal …" (napari issue
    6420). Errors of other kinds are bugs and propagate with their traceback.
    The signature and type hints are ``function``'s, so napari builds the
    same widget and napari-assistant reads the same types.
    """

    @functools.wraps(function)
    def widget_function(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (ValueError, OSError) as error:
            # the reason first: a collapsed notification shows only its start
            show_error(f"{_in_these_words(str(error))} (GMM Segmenter, "
                       f"{function.__name__.replace('_', ' ')})")
            return None

    return widget_function


def _result_geometry(image_layer, labels_ndim: int) -> dict:
    """The world geometry of labels of ``labels_ndim`` dimensions of ``image_layer``:
    its scale, translate, rotate, shear, affine, axis names and units, as the
    dock's outputs carry them (channels, when left out, are on the last axis)."""
    if labels_ndim == image_layer.ndim:
        return _layers.layer_transform(image_layer)
    if labels_ndim < image_layer.ndim:
        return _layers.kept_axes_transform(image_layer, list(range(labels_ndim)))
    # an RGB layer segmented as a volume: a new layer's geometry, as napari
    # gives when it cannot take the image's
    return {
        "scale": np.ones(labels_ndim), "translate": np.zeros(labels_ndim),
        "rotate": np.eye(labels_ndim), "shear": np.eye(labels_ndim),
        "affine": np.eye(labels_ndim + 1),
        "axis_labels": tuple(str(axis) for axis in range(-labels_ndim, 0)),
        "units": ("pixel",) * labels_ndim,
    }


def _result_follows_the_image(widget) -> None:
    """Give the result layer the chosen image's world geometry after every run.

    napari gives a new result layer the image's scale and translate, but a
    run that updates the layer only replaces its data: the labels of another
    image would stay at the first one's place and size.
    """
    from napari.layers import Image, Labels
    from napari.utils._magicgui import find_viewer_ancestor

    def follow(result):
        viewer = find_viewer_ancestor(widget)
        if result is None or viewer is None or widget.result_name not in viewer.layers:
            return
        chosen = widget.image.value
        holding = [layer for layer in viewer.layers
                   if isinstance(layer, Image) and layer.data is chosen]
        # one array may back several layers (at other scales): the choice's name tells
        name = getattr(widget.image, "current_choice", None)
        named = [layer for layer in holding if name in (layer.name, f"{layer.name} (data)")]
        image_layer = (named or holding or [None])[0]
        if image_layer is not None:
            _output.put_layer(viewer, Labels, widget.result_name, None,
                              _result_geometry(image_layer, np.ndim(result)))

    widget.called.connect(follow)


def _segment_image_init(widget) -> None:
    _fixed_smoothing_follows_auto(widget)
    _result_follows_the_image(widget)


def _fixed_smoothing_follows_auto(widget) -> None:
    """Grey out *fixed smoothing* while *auto smoothing* is ticked: it is not used then."""

    def follow(auto):
        widget.smoothing.enabled = not auto

    widget.auto_smoothing.changed.connect(follow)
    follow(widget.auto_smoothing.value)


#: What napari's *segment image* and *apply model* widgets run: the plain
#: functions, with refused input shown as a notification.
run_segment_image = _as_a_widget(segment_image)
run_apply_model = _as_a_widget(apply_model)

#: The widgets napari.yaml contributes (magicgui builds one per dock, from the
#: functions' signatures and hints).
segment_image_widget = magic_factory(run_segment_image, widget_init=_segment_image_init)
apply_model_widget = magic_factory(run_apply_model, widget_init=_result_follows_the_image)
