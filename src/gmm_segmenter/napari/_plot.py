"""The fitted mixture, drawn with matplotlib inside the widget.

Drawing a figure with text and ticks takes a few hundred milliseconds on a
small machine, so :func:`render` runs in a thread of its own (a figure of its
own, Agg only) and the widget shows the finished picture: the UI thread
never waits for matplotlib.

The thread is a plain one, not a napari worker: a napari worker runs its
function inside ``warnings.catch_warnings()``, and leaving that restores the
process's warning filters and hooks as they were when it started. A picture
finishing while a segmentation job ran undid the job's capture of the
estimator's warnings, which then never reached the user.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy

from .._wording import count
from ._layers import component_densities

#: Light-theme colours; :meth:`MixturePlot.set_colours` takes the viewer's theme.
_LIGHT = {"background": "#ffffff", "foreground": "#000000", "faint": "#bfbfbf"}
_DPI = 100

#: The plot of one channel reaches this many times the histogram's peak.
HEADROOM = 1.5

#: One thread draws every plot's pictures, one at a time.
_RENDERER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gmm-plot")


class MixturePlot(QLabel):
    """Histogram with the component Gaussians (single channel) and the BIC curve (auto K).

    For several channels it shows the pixels over two channels (or their two
    principal axes) with each component's ellipse (see :func:`_draw_channels`);
    without their histogram, the component weights. The
    histogram comes precomputed (counts and bin edges) and the picture is
    rendered in a worker thread; a newer model or message replaces a
    picture still being rendered.
    """

    #: A picture finished (emitted in the drawing thread, received in the UI's).
    _rendered = Signal(object, object, int)

    def __init__(self):
        super().__init__()
        self._rendered.connect(self._on_rendered)
        self.setMinimumHeight(160)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.colours = dict(_LIGHT)
        self._drawn = None  # what show_model last drew, to redraw in new colours
        self._message = ""
        self._token = 0
        self.rendering = None  # the token of the picture being drawn, if any
        self.clear()

    def set_colours(self, background, foreground, faint):
        """Draw in these colours (the viewer's theme) from now on, and redraw."""
        self.colours = {"background": background, "foreground": foreground, "faint": faint}
        self.setStyleSheet(f"background-color: {background}; color: {foreground};")
        if self._drawn is not None:
            self.show_model(*self._drawn)

    def message(self, text):
        """Show ``text`` instead of a model (while a job runs, after a failure)."""
        self._token += 1
        self._message, self._drawn = text, None
        self.setPixmap(QPixmap())
        self.setText(text)

    def clear(self):
        self.message("Run to see the fitted mixture")

    def show_model(self, model, histogram=None, colours=None, shares=None, corrected=None):
        """Draw ``model``; ``histogram`` is ``(counts, edges)`` of the pixel values.

        ``colours`` maps label ``k`` to an RGBA colour, so curves match the layer;
        ``shares`` are the labels' and ``corrected`` whether a bias field was
        applied (see :func:`draw`).
        """
        self._token += 1
        token = self._token
        self._drawn = (model, histogram, colours, shares, corrected)
        width = max(self.width(), 300)
        height = 300 if getattr(model, "bic_curve_", None) is not None else 220
        self.setMinimumHeight(height)
        arguments = (model, histogram, colours, dict(self.colours), (width, height), shares,
                     corrected)
        self.rendering = token
        _RENDERER.submit(self._render, arguments, token)

    def _render(self, arguments, token):
        """Drawing thread: the picture (or what went wrong), handed to the UI thread."""
        try:
            picture, error = render(*arguments), None
        except Exception as failure:  # shown in the plot's place, not lost in the thread
            picture, error = None, failure
        try:
            self._rendered.emit(picture, error, token)
        except RuntimeError:  # the widget was closed while the picture was drawn
            pass

    def _on_rendered(self, picture, error, token):
        if self.rendering == token:  # an older picture may finish after a newer one started
            self.rendering = None
        if error is not None:
            if token == self._token:
                self.message(f"The plot could not be drawn: {error}")
            return
        self._show_picture(picture, token)

    def _show_picture(self, picture, token):
        if token != self._token:
            return  # a newer model or message came first
        height, width = picture.shape[:2]
        image = QImage(picture.data, width, height, 4 * width, QImage.Format.Format_RGBA8888)
        try:
            self.setPixmap(QPixmap.fromImage(image.copy()))
        except RuntimeError:  # the widget was closed while the picture was drawn
            pass


def _style(axes, colours):
    foreground = colours["foreground"]
    axes.set_facecolor(colours["background"])
    axes.tick_params(labelsize=7, colors=foreground)
    for spine in axes.spines.values():
        spine.set_color(foreground)
    axes.xaxis.label.set_color(foreground)
    axes.yaxis.label.set_color(foreground)
    axes.title.set_color(foreground)


def full_covariances(model) -> np.ndarray:
    """``(K, D, D)`` covariance matrices of ``model``, whatever its covariance type."""
    covariances = np.asarray(model.covariances_, dtype=float)
    n_components, n_features = model.n_components_, model.n_features_in_
    if model.covariance_type == "full":
        return covariances
    if model.covariance_type == "tied":
        return np.broadcast_to(covariances, (n_components, n_features, n_features))
    if model.covariance_type == "diag":
        return np.stack([np.diag(row) for row in covariances])
    return covariances[:, np.newaxis, np.newaxis] * np.eye(n_features)  # spherical


#: What the plot says when the pixels shown are divided by their bias field:
#: all of them, or those of the frames whose field was estimated.
_CORRECTED = {True: "corrected for the bias field",
              "partly": "partly corrected for the bias field"}


def _corrected(model, corrected=None) -> str:
    """What the plot says when its values are divided by a bias field ("" when not).

    ``corrected`` says whether the run applied a field (True, False, or
    "partly": some frames' fields were refused); None (a model without a
    run, whose values are of its own, corrected images) follows the model.
    """
    if corrected is None:
        corrected = getattr(model, "bias_field", None) is not None
    return _CORRECTED.get(corrected, "")


def _draw_channels(axes, model, histogram, colour, theme):
    """The pixels of several channels as a 2-D histogram (two channels, or their
    two principal axes), each component as its ellipse of two standard
    deviations there, numbered by its label."""
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.patches import Ellipse

    shade = LinearSegmentedColormap.from_list(
        "pixels", [theme["background"], theme["faint"], theme["foreground"]])
    density = np.log1p(histogram.counts).T
    axes.imshow(
        np.ma.masked_equal(density, 0), origin="lower", aspect="auto", cmap=shade,
        extent=(histogram.x_edges[0], histogram.x_edges[-1],
                histogram.y_edges[0], histogram.y_edges[-1]),
        interpolation="nearest",
    )
    projection = histogram.projection
    means = (np.asarray(model.means_, dtype=float) - histogram.centre) @ projection.T
    reach = []
    for k, covariance in enumerate(full_covariances(model)):
        plane = projection @ covariance @ projection.T
        values, vectors = np.linalg.eigh(plane)
        width, height = 4 * np.sqrt(np.maximum(values[::-1], 0))  # 2 sd each way
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        edge = colour[k] if colour[k] is not None else f"C{k % 10}"
        axes.add_patch(Ellipse(means[k], width, height, angle=angle, fill=False,
                               edgecolor=edge, linewidth=1.5))
        # a dot at the mean shows a tight class (a black background) whose
        # ellipse is too small to see; the number is in the theme's text
        # colour (a dark red one was unreadable on a dark theme), boxed in
        # the background's colour with the label's colour round it, legible
        # over the densest pixels
        axes.plot(*means[k], "o", markersize=4, color=edge,
                  markeredgecolor=theme["foreground"], markeredgewidth=0.5)
        axes.annotate(f"{k + 1}", means[k], xytext=(4, 4), textcoords="offset points",
                      color=theme["foreground"], fontsize=8, fontweight="bold", ha="left",
                      va="bottom",
                      bbox={"boxstyle": "round,pad=0.2", "facecolor": theme["background"],
                            "edgecolor": edge, "linewidth": 1.0, "alpha": 0.85})
        # the ellipse's extent along each axis: 2 sd of the plane's variances
        reach.append(2 * np.sqrt(np.maximum(np.diag(plane), 0)))
    # channels counted from 0, as napari's slider of a channel axis counts them
    names = ("channel 0", "channel 1") if histogram.by_channels else (
        "principal axis 1", "principal axis 2")
    axes.set_xlabel(names[0], fontsize=8)
    axes.set_ylabel(names[1], fontsize=8)
    # the pixels' range (0.5-99.5 percentiles), widened to every ellipse drawn:
    # a class at the end of the range (black, saturated) sat on the frame, and
    # a broad one's ellipse ran off it
    reach = np.asarray(reach)
    for edges, axis, limit in ((histogram.x_edges, 0, axes.set_xlim),
                               (histogram.y_edges, 1, axes.set_ylim)):
        low = min(edges[0], (means[:, axis] - reach[:, axis]).min())
        high = max(edges[-1], (means[:, axis] + reach[:, axis]).max())
        margin = 0.05 * (high - low)
        limit(low - margin, high + margin)


def _y_top(density, densities) -> float | None:
    """The top of a one-channel plot: the histogram's peak with headroom.

    A narrow class (a needle of a Gaussian, over a spike of the histogram
    such as a saturated sky) set the range, and the other classes and their
    pixels shrank to the baseline. The range follows the histogram's peak
    without lone spikes (the largest median of 7 neighbouring bins, of those
    that hold pixels), and
    reaches :data:`HEADROOM` times it; a taller curve or spike runs off the
    top. None (matplotlib's own range) when the histogram is all spikes
    (an image of a few values).
    """
    if density.size == 0:
        return None
    # the median of 7 neighbouring bins leaves a spike out; empty bins do not
    # count, so a comb (a stretched 8-bit image's every 2nd or 3rd grey level)
    # keeps its height, and a window of fewer than 3 bins that hold pixels
    # (a spike at the range's end, a few lone values) says nothing
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(density, 3), 7)
    held = np.ma.masked_equal(windows, 0)
    medians = np.ma.median(held, axis=-1)
    medians = np.ma.masked_where(held.count(axis=-1) < 3, medians)
    broad = float(np.ma.max(medians)) if medians.count() else 0.0
    if broad <= 0:
        return None
    tallest = max(float(np.max(density)), float(np.max(densities.sum(axis=0))))
    return min(tallest, HEADROOM * broad) * 1.05


def render(model, histogram=None, colours=None, theme=None, size=(320, 220),
           shares=None, corrected=None) -> np.ndarray:
    """The plot of ``model`` as an RGBA picture of ``size`` pixels (any thread)."""
    figure = draw(model, histogram, colours, theme, size, shares, corrected)
    return np.array(figure.canvas.buffer_rgba())


def draw(model, histogram=None, colours=None, theme=None, size=(320, 220),
         shares=None, corrected=None) -> Figure:
    """The figure :func:`render` pictures, drawn.

    A guided fit's weights are equal (the prior's field, not the classes'
    shares: see docs/guided.md), and curves drawn with them stood as high
    for a class of 3 % of the pixels as for one of 84 %, away from the
    histogram. Such a model's curves are sized by ``shares``, each label's
    share of the labelled pixels, when given. The axes say the values are
    corrected for the bias field when ``corrected`` (see :func:`_corrected`):
    a model set to correct one whose field was refused describes the
    image's own values.
    """
    theme = theme or _LIGHT
    figure = Figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI,
                    facecolor=theme["background"])
    FigureCanvasAgg(figure)
    n_components = model.n_components_
    colours = colours or {}
    colour = [colours.get(k + 1) for k in range(n_components)]
    foreground = theme["foreground"]
    has_curve = getattr(model, "bic_curve_", None) is not None
    n_axes = 1 + has_curve
    channels = model.n_features_in_ > 1 and hasattr(histogram, "projection")
    # (a plane of channels has a y label too, and its ticks beside it)
    # a y label and ticks need the left margin; a lone histogram has neither
    left = 0.2 if channels else 0.04 if model.n_features_in_ == 1 and not has_curve else 0.14
    said = _corrected(model, corrected)  # of the bias field ("" when none was applied)
    # a second line of the title says the channels are corrected for the bias field
    two_lines = channels and bool(said)
    figure.subplots_adjust(left=left, right=0.97,
                           top=(0.92 if has_curve else 0.9) - (0.08 if two_lines else 0),
                           bottom=0.13 if has_curve else 0.18, hspace=0.75)
    main = figure.add_subplot(n_axes, 1, 1)
    if model.n_features_in_ == 1:
        means = np.asarray(model.means_, dtype=float).ravel()
        spread = np.sqrt(np.max(np.abs(np.asarray(model.covariances_, dtype=float))))
        if histogram is not None:
            counts, edges = histogram
            density = counts / max(counts.sum(), 1) / np.diff(edges)
            main.stairs(density, edges, fill=True, color=theme["faint"], label="pixels")
            low, high = edges[0], edges[-1]
        else:
            low, high = means.min() - 3 * spread, means.max() + 3 * spread
        x = np.linspace(low, high, 400)
        weights = np.asarray(model.weights_, dtype=float)
        by_labels = shares is not None and np.all(weights == weights[0]) and n_components > 1
        densities = component_densities(model, x, shares if by_labels else None)
        for k, curve in enumerate(densities):
            main.plot(x, curve, color=colour[k], linewidth=1.5, label=f"{k + 1}")
        # under the components' curves: where one dominates, the sum ran over it
        main.plot(x, densities.sum(axis=0), color=foreground, linewidth=0.8, linestyle="--",
                  zorder=1)
        if histogram is not None:
            top = _y_top(density, densities)
            if top is not None:
                main.set_ylim(0, top)
        main.set_xlabel(f"intensity, {said}" if said else "intensity", fontsize=8)
        main.set_yticks([])
    elif channels:
        _draw_channels(main, model, histogram, colour, theme)
    else:
        labels = np.arange(1, n_components + 1)
        main.bar(labels, model.weights_, color=[c if c is not None else "C0" for c in colour])
        main.set_xticks(labels if n_components <= 12 else labels[:: -(-n_components // 12)])
        main.set_xlabel("component (label)", fontsize=8)
        main.set_ylabel("weight", fontsize=8)
    title = count(n_components, "component")
    if model.n_features_in_ == 1 and by_labels:
        title += ", sized by their labels"
    if channels and said:
        # under the title: beside a channel's name it ran off the figure
        title += f"\n{said}"
    main.set_title(title, fontsize=9)
    _style(main, theme)
    if has_curve:
        bic = figure.add_subplot(n_axes, 1, 2)
        candidates = np.asarray(model.n_components_candidates_)
        bic.plot(candidates, model.bic_curve_, "o-", color=foreground, markersize=3)
        bic.axvline(n_components, color="C3", linewidth=1)
        bic.set_xlabel("number of components", fontsize=8)
        # a title, not a y label: beside BIC's tick labels a label ran off the figure
        bic.set_title("BIC (lower is better)", fontsize=8)
        bic.xaxis.get_major_locator().set_params(integer=True)
        bic.yaxis.set_major_formatter(EngFormatter(places=None, sep=""))  # 600k, not 600000
        _style(bic, theme)
    figure.canvas.draw()
    return figure
