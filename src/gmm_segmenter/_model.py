"""The fitted model: everything a prediction needs, in one frozen object.

``GMMSegmenter.fit`` produces a :class:`FittedModel`, the prediction kernel
(:mod:`._kernel`) consumes it, :func:`~gmm_segmenter.save_model` and
:func:`~gmm_segmenter.load_model` store its :meth:`~FittedModel.arrays`, and
dask ships it to the workers. A new fitted quantity (a bias-field model, say)
is a new field here, and every one of those places follows.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace

import numpy as np

from . import _mixture, _mrf

__all__ = ["FittedModel", "MODEL_ARRAYS", "json_params", "label_dtype"]

#: The arrays of a model file, in the order they are stored.
MODEL_ARRAYS = ("weights", "means", "covariances", "intensity_offset", "intensity_scale")


@dataclass(frozen=True, eq=False)
class FittedModel:
    """A fitted mixture and the settings its predictions use.

    Attributes
    ----------
    mixture : Mixture
        Weights, means and covariances in the input's intensity units,
        components in label order (darkest first).
    offset, scale : ndarray of shape (n_features,)
        The standardisation predictions compute in: ``(x - offset) / scale``.
    beta : float
        Strength of the spatial prior; ``0`` predicts pixel by pixel.
    connectivity : int
        Neighbourhood of the spatial prior (as ``GMMSegmenter.connectivity``).
    spacing : tuple of float or None
        Voxel size along each spatial axis; ``None`` is isotropic.
    """

    mixture: _mixture.Mixture
    offset: np.ndarray
    scale: np.ndarray
    beta: float = 0.0
    connectivity: int = 1
    spacing: tuple | None = None

    def __post_init__(self):
        # frozen all the way down: the estimator's fitted attributes are these
        # arrays, and writing into one would silently change later predictions
        mixture = self.mixture
        for array in (mixture.weights, mixture.means, mixture.covariances,
                      mixture.precisions_cholesky, self.offset, self.scale):
            array.flags.writeable = False

    @property
    def n_components(self) -> int:
        return self.mixture.n_components

    @property
    def n_features(self) -> int:
        return self.mixture.n_features

    @property
    def covariance_type(self) -> str:
        return self.mixture.covariance_type

    @functools.cached_property
    def standardized(self) -> _mixture.Mixture:
        """The mixture in the standardised units predictions compute in."""
        return self.mixture.standardized(self.offset, self.scale)

    def neighbourhood(self, ndim: int) -> _mrf.Neighbourhood:
        """The spatial prior's neighbourhood on a grid of ``ndim`` axes."""
        return _mrf.neighbourhood(ndim, self.connectivity, self.spacing)

    def with_settings(self, **settings) -> "FittedModel":
        """The same mixture with other ``beta``, ``connectivity`` or ``spacing``."""
        return replace(self, **settings)

    def arrays(self) -> dict:
        """The float64 arrays a model file stores, by name (see :data:`MODEL_ARRAYS`)."""
        values = {
            "weights": self.mixture.weights,
            "means": self.mixture.means,
            "covariances": self.mixture.covariances,
            "intensity_offset": self.offset,
            "intensity_scale": self.scale,
        }
        return {name: np.asarray(values[name], dtype=np.float64) for name in MODEL_ARRAYS}

    @classmethod
    def from_arrays(cls, arrays: dict, covariance_type: str, **settings) -> "FittedModel":
        """Rebuild a model from :meth:`arrays`; raises ``CollapsedCovariance``
        when a covariance is not positive definite."""
        covariances = arrays["covariances"]
        mixture = _mixture.Mixture(
            weights=arrays["weights"],
            means=arrays["means"],
            covariances=covariances,
            precisions_cholesky=_mixture.precision_cholesky(covariances, covariance_type),
            covariance_type=covariance_type,
        )
        return cls(mixture, arrays["intensity_offset"], arrays["intensity_scale"], **settings)


def label_dtype(n_components: int) -> np.dtype:
    """The smallest unsigned dtype that holds labels ``0..n_components``."""
    return np.dtype(np.uint8 if n_components < 256 else np.uint16)


def json_params(estimator) -> dict:
    """The estimator's parameters that survive a JSON round trip unchanged.

    Others (a ``RandomState`` instance as ``random_state``) are left out:
    they are not needed to predict, and a repr could not be set back.
    """
    params = {}
    for name, value in estimator.get_params(deep=False).items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, np.generic):
            value = value.item()
        try:
            if json.loads(json.dumps(value)) == value:
                params[name] = value
        except (TypeError, ValueError):
            pass
    return params
