"""Bad and degenerate input: each case of docs/reliability.md that no other test pins."""

import warnings

import numpy as np
import pytest
from conftest import quadrants

from gmm_segmenter import GMMSegmenter, _mixture

PIXELWISE = {"beta": 0.0}


def make(n_components=3, **params):
    return GMMSegmenter(n_components, random_state=0, **{**PIXELWISE, **params})


# ------------------------------------------------------ degenerate mixtures


def _far_component_start(covariance_type):
    """Two components, the second placed where no sample is: EM empties it."""
    covariances = {
        "full": np.array([[[1.0]], [[1e-6]]]),
        "tied": np.array([[1.0]]),
        "diag": np.array([[1.0], [1e-6]]),
        "spherical": np.array([1.0, 1e-6]),
    }[covariance_type]
    return _mixture.Mixture(
        np.array([0.5, 0.5]),
        np.array([[0.0], [1e3]]),
        covariances,
        _mixture.precision_cholesky(covariances, covariance_type),
        covariance_type,
    )


@pytest.mark.parametrize("covariance_type", _mixture.COVARIANCE_TYPES)
def test_an_emptied_component_is_reseeded_with_a_warning(covariance_type):
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=195), rng.normal(6.0, 0.2, size=5)])[:, np.newaxis]
    initial = _far_component_start(covariance_type)
    with pytest.warns(UserWarning, match=r"Component\(s\) 1 of 2 lost all their pixels.*re-seeded"):
        result = _mixture.run_em(
            X, np.ones(len(X)), initial, max_iter=100, tol=1e-6, reg_covar=1e-6
        )
    mixture = result.mixture
    # without the re-seed the weight was ~1e-16 and the mean 0/eps noise
    assert mixture.weights.min() > 0.01
    assert np.all(np.isfinite(mixture.means)) and np.all(np.isfinite(mixture.covariances))
    # the re-seeded component found the small bright cluster
    assert mixture.means.max() == pytest.approx(6.0, abs=0.5)
