"""The fitted mixture, drawn with matplotlib inside the widget."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from ._layers import component_densities

_HISTOGRAM_BINS = 128


class MixturePlot(FigureCanvasQTAgg):
    """Histogram with the component Gaussians (single channel) and the BIC curve (auto K).

    For several channels without auto K it shows the component weights.
    """

    def __init__(self):
        self.figure = Figure(figsize=(3.2, 2.4), layout="constrained")
        super().__init__(self.figure)
        self.setMinimumHeight(180)
        self.clear()

    def clear(self):
        self.figure.clear()
        axes = self.figure.add_subplot()
        axes.text(0.5, 0.5, "Run to see the fitted mixture", ha="center", va="center",
                  transform=axes.transAxes, fontsize=8, color="0.4")
        axes.set_axis_off()
        self.draw_idle()

    def show_model(self, model, values=None, colours=None):
        """Draw ``model``; ``values`` are pixel values (single channel) for the histogram.

        ``colours`` maps label ``k`` to an RGBA colour, so curves match the layer.
        """
        self.figure.clear()
        n_components = model.n_components_
        colours = colours or {}
        colour = [colours.get(k + 1) for k in range(n_components)]
        has_curve = getattr(model, "bic_curve_", None) is not None
        n_axes = 1 + has_curve
        main = self.figure.add_subplot(n_axes, 1, 1)
        if model.n_features_in_ == 1:
            values = np.asarray(values if values is not None else [], dtype=float).ravel()
            values = values[np.isfinite(values)]
            means = np.asarray(model.means_).ravel()
            spread = np.sqrt(np.max(np.abs(np.asarray(model.covariances_, dtype=float))))
            if values.size:
                low, high = np.percentile(values, [0.1, 99.9])
                bins = _HISTOGRAM_BINS
                if high - low < 2 * _HISTOGRAM_BINS and np.all(values == np.round(values)):
                    bins = np.arange(np.floor(low) - 0.5, np.ceil(high) + 1.5)  # one per level
                main.hist(values, bins=bins, range=(low, high) if high > low else None,
                          density=True, color="0.75", label="pixels")
            else:
                low, high = means.min() - 3 * spread, means.max() + 3 * spread
            x = np.linspace(low, high, 400)
            densities = component_densities(model, x)
            for k, density in enumerate(densities):
                main.plot(x, density, color=colour[k], linewidth=1.5, label=f"{k + 1}")
            main.plot(x, densities.sum(axis=0), color="k", linewidth=0.8, linestyle="--")
            main.set_xlabel("intensity", fontsize=8)
            main.set_yticks([])
        else:
            main.bar(np.arange(1, n_components + 1), model.weights_,
                     color=[c if c is not None else "C0" for c in colour])
            main.set_xlabel("component (label)", fontsize=8)
            main.set_ylabel("weight", fontsize=8)
        main.set_title(f"{n_components} components", fontsize=9)
        main.tick_params(labelsize=7)
        if has_curve:
            bic = self.figure.add_subplot(n_axes, 1, 2)
            candidates = np.asarray(model.n_components_candidates_)
            bic.plot(candidates, model.bic_curve_, "o-", color="k", markersize=3)
            bic.axvline(n_components, color="C3", linewidth=1)
            bic.set_xlabel("number of components", fontsize=8)
            bic.set_ylabel("BIC", fontsize=8)
            bic.tick_params(labelsize=7)
            bic.xaxis.get_major_locator().set_params(integer=True)
        self.draw_idle()
