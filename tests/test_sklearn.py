"""GMMSegmenter as a scikit-learn citizen."""

import pickle

import joblib
import numpy as np
import pytest
from _images import quadrants
from scipy import ndimage
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from gmm_segmenter import GMMSegmenter

_IMAGE_NOT_TABLE = (
    "a 2-D array is a grayscale image, not an (n_samples, n_features) table: "
)
EXPECTED_FAILED_CHECKS = {
    "check_n_features_in": _IMAGE_NOT_TABLE + "n_features_in_ counts channels (1), not columns",
    "check_n_features_in_after_fitting": _IMAGE_NOT_TABLE
    + "n_features_in_ counts channels, so a wider image is not a feature mismatch",
    "check_transformer_general": _IMAGE_NOT_TABLE
    + "an image of another width is valid input to transform, not a feature mismatch",
    "check_transformer_general(readonly_memmap=True)": _IMAGE_NOT_TABLE
    + "an image of another width is valid input to transform, not a feature mismatch",
    "check_transformer_data_not_an_array": "a Python list is a batch of images, so a "
    "list of rows returns a list of maps, not one (n_samples, K) array",
    "check_fit1d": "a 1-D array is a valid one-dimensional (line) image, not a malformed table",
    "check_fit2d_predict1d": "a 1-D array is a valid one-dimensional (line) image, so "
    "predict accepts it",
    "check_estimators_empty_data_messages": _IMAGE_NOT_TABLE
    + "a (12, 0) image is reported as empty, without the tabular '0 feature(s)' wording",
}


_SCRIBBLES_NOT_TARGETS = (
    _IMAGE_NOT_TABLE + "y is a scribble image of X's spatial shape, so the check's "
    "one-target-per-row y is refused with a shape error"
)
#: Checks that pass a tabular ``y`` to ``fit``: GMMSegmenter itself refuses it
#: (see test_tabular_y_is_refused), so they run on _IgnoresY as well.
TABULAR_Y_CHECKS = (
    "check_array_api_input",
    "check_dict_unchanged", "check_dont_overwrite_parameters", "check_dtype_object",
    "check_estimators_dtypes", "check_estimators_fit_returns_self",
    "check_estimators_overwrite_params", "check_estimators_pickle",
    "check_estimators_pickle(readonly_memmap=True)", "check_f_contiguous_array_estimator",
    "check_fit2d_1feature", "check_fit2d_1sample", "check_fit_check_is_fitted",
    "check_fit_idempotent", "check_fit_score_takes_y", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_pipeline_consistency",
    "check_positive_only_tag_during_fit", "check_readonly_memmap_input",
    "check_transformer_n_iter",
)


class _IgnoresY(GMMSegmenter):
    """GMMSegmenter without scribbles, so that the checks that pass a tabular
    y still test everything else (pickling, dtypes, idempotence, ...)."""

    def fit(self, X, y=None, **params):
        return super().fit(X, **params)

    def fit_predict(self, X, y=None, **params):
        return super().fit_predict(X, **params)

    def fit_transform(self, X, y=None, **params):
        return super().fit_transform(X, **params)


def _expected_failed_checks(estimator):
    if isinstance(estimator, _IgnoresY):
        return EXPECTED_FAILED_CHECKS
    # check_fit1d's y, X's values as integers, is read as scribbles of the
    # line image, with labels above n_components: refused with the
    # ValueError the check asks for, so it passes here
    expected = {name: why for name, why in EXPECTED_FAILED_CHECKS.items() if name != "check_fit1d"}
    return expected | dict.fromkeys(TABULAR_Y_CHECKS, _SCRIBBLES_NOT_TARGETS)


@parametrize_with_checks(
    [
        GMMSegmenter(random_state=0),
        _IgnoresY(random_state=0),
        _IgnoresY(2, covariance_type="diag", random_state=0),
        _IgnoresY(2, bias_field=1, random_state=0),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_scikit_learn_contract(estimator, check):
    check(estimator)


def test_it_is_a_density_estimator_like_gaussian_mixture():
    from sklearn.base import is_clusterer, is_classifier, is_regressor
    from sklearn.mixture import GaussianMixture
    from sklearn.utils import get_tags

    assert get_tags(GMMSegmenter()).estimator_type == get_tags(GaussianMixture()).estimator_type
    assert get_tags(GMMSegmenter()).estimator_type == "density_estimator"
    assert not (is_clusterer(GMMSegmenter()) or is_classifier(GMMSegmenter())
                or is_regressor(GMMSegmenter()))


def test_tabular_y_is_refused():
    table = np.random.default_rng(0).normal(size=(30, 3))
    with pytest.raises(ValueError, match=r"Scribbles y have shape \(30,\) but the image's "
                       r"spatial shape is \(30, 3\)"):
        GMMSegmenter(2, random_state=0).fit(table, np.arange(30) % 2)


def test_clone_params_and_repr():
    segmenter = GMMSegmenter(4, covariance_type="tied", channel_axis=-1, random_state=3)
    cloned = clone(segmenter)
    assert cloned.get_params() == segmenter.get_params()
    cloned.set_params(n_components=2, covariance_type="diag")
    assert (cloned.n_components, cloned.covariance_type) == (2, "diag")
    assert segmenter.n_components == 4
    text = repr(segmenter)
    for part in ("GMMSegmenter(", "n_components=4", "covariance_type='tied'", "random_state=3"):
        assert part in text
    html = segmenter._repr_html_()
    assert "GMMSegmenter" in html and "<div" in html


def test_not_fitted_error(quadrant_image):
    for method in ("predict", "predict_proba", "transform", "score", "score_samples"):
        with pytest.raises(NotFittedError):
            getattr(GMMSegmenter(), method)(quadrant_image[0])
    with pytest.raises(NotFittedError):
        GMMSegmenter().sample(3)


@pytest.mark.parametrize(
    "dump, load",
    [(pickle.dumps, pickle.loads), (None, None)],
    ids=["pickle", "joblib"],
)
def test_pickle_and_joblib_round_trip(quadrant_image, tmp_path, dump, load):
    image, _ = quadrant_image
    segmenter = GMMSegmenter(4, random_state=0, beta=0.0).fit(image)
    if dump is None:
        joblib.dump(segmenter, tmp_path / "model.joblib")
        restored = joblib.load(tmp_path / "model.joblib")
    else:
        restored = load(dump(segmenter))
    np.testing.assert_array_equal(restored.predict(image), segmenter.predict(image))
    np.testing.assert_array_equal(restored.means_, segmenter.means_)


def test_pipeline_with_a_smoothing_step():
    image, truth = quadrants(noise=40, seed=1)
    other, other_truth = quadrants(noise=40, seed=2)
    pipe = make_pipeline(
        FunctionTransformer(ndimage.gaussian_filter, kw_args={"sigma": 1}),
        GMMSegmenter(4, random_state=0, beta=0.0),
    )
    pipe.fit(image)
    labels = pipe.predict(other)
    raw = GMMSegmenter(4, random_state=0, beta=0.0).fit(image).predict(other)
    assert np.mean(labels == other_truth) > 0.95
    assert np.mean(labels == other_truth) > np.mean(raw == other_truth) + 0.1
    # posterior maps flow on through transform
    assert pipe.transform(other).shape == other.shape + (4,)
    # a pipeline's output configuration reaches the segmenter: NumPy only
    assert pipe.set_output(transform="default").transform(other).shape == other.shape + (4,)
    segmenter = pipe[-1]
    assert segmenter.set_output(transform=None) is segmenter
    with pytest.raises(ValueError, match=r"set_output\(transform='pandas'\).*a table cannot "
                                         r"hold.*transform='default'"):
        pipe.set_output(transform="pandas")
    # a value that is no container at all is called so (it got the pandas advice)
    with pytest.raises(ValueError, match=r"set_output\(transform='foo'\): unknown output "
                                         r"container; .*'default'.*'pandas'.*'polars'"):
        segmenter.set_output(transform="foo")


def test_grid_search_over_n_components_on_a_list_of_images():
    images = [quadrants(seed=seed)[0] for seed in range(4)]
    search = GridSearchCV(
        GMMSegmenter(random_state=0, beta=0.0), {"n_components": [1, 2, 4]}, cv=2
    )
    search.fit(images)
    assert search.best_params_ == {"n_components": 4}
    scores = search.cv_results_["mean_test_score"]
    assert scores[0] < scores[1] < scores[2]
