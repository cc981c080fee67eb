"""GMMSegmenter on images with known answers, and its input contract."""

import inspect
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from _helpers import ari, make_segmenter
from _images import quadrants, rgb_patches
from sklearn.mixture import GaussianMixture

from gmm_segmenter import GMMSegmenter, segment

# Spatial smoothing changes labels by design: these tests pin the pixel-wise
# model (beta=0, also the default of make_segmenter).


# ---------------------------------------------------------------- known answers


def test_grayscale_quadrants_are_found_in_order(quadrant_image):
    image, truth = quadrant_image
    labels = make_segmenter(4).fit_predict(image)
    assert labels.shape == image.shape
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, truth)


def test_rgb_patches(rgb_image):
    image, truth = rgb_image
    segmenter = make_segmenter(3, channel_axis=-1).fit(image)
    labels = segmenter.predict(image)
    assert labels.shape == truth.shape
    assert ari(labels, truth) > 0.99
    # darkest first: by the mean over channels
    assert np.all(np.diff(segmenter.means_.mean(axis=1)) > 0)
    np.testing.assert_array_equal(labels, truth)


def test_channel_axis_first_gives_the_same_labels(rgb_image):
    image, truth = rgb_image
    channels_first = np.moveaxis(image, -1, 0)
    labels = make_segmenter(3, channel_axis=0).fit_predict(channels_first)
    np.testing.assert_array_equal(labels, make_segmenter(3, channel_axis=-1).fit_predict(image))


def test_three_dimensional_blobs():
    rng = np.random.default_rng(4)
    z, y, x = np.mgrid[:24, :24, :24]
    truth = np.ones((24, 24, 24), dtype=np.uint8)
    truth[(z - 8) ** 2 + (y - 8) ** 2 + (x - 8) ** 2 < 36] = 2
    truth[(z - 16) ** 2 + (y - 15) ** 2 + (x - 16) ** 2 < 25] = 3
    image = np.array([10.0, 50.0, 90.0])[truth - 1] + rng.normal(scale=5, size=truth.shape)
    labels = make_segmenter(3).fit_predict(image)
    assert labels.shape == truth.shape
    assert ari(labels, truth) > 0.98


def test_batch_of_images_with_different_shapes():
    first, truth_first = quadrants((40, 48), seed=1)
    second, truth_second = quadrants((30, 70), seed=2)
    segmenter = make_segmenter(4).fit([first, second])
    labels = segmenter.predict([first, second])
    assert isinstance(labels, list) and len(labels) == 2
    np.testing.assert_array_equal(labels[0], truth_first)
    np.testing.assert_array_equal(labels[1], truth_second)
    # one model: the batch was pooled, not fitted image by image
    assert segmenter.n_pixels_fit_ == first.size + second.size


@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "uint32", "int8", "int16", "int32", "int64",
              "float16", "float32", "float64"]
)
def test_every_dtype_segments_and_leaves_the_input_alone(dtype):
    image, truth = quadrants(levels=(10, 40, 70, 100), noise=3)
    if np.dtype(dtype).kind == "i":
        image = image - 50  # negative values too
    elif np.dtype(dtype).kind == "u":
        image = np.clip(image, 0, None)  # a cast would wrap -0.3 to the maximum
    image = image.astype(dtype)
    original = image.copy()
    labels = make_segmenter(4).fit_predict(image)
    np.testing.assert_array_equal(image, original)
    assert ari(labels, truth) > 0.99
    assert labels.min() >= 1 and labels.max() <= 4


@pytest.mark.parametrize("dtype", [">u2", ">i2", ">f4"])
@pytest.mark.parametrize("colour", [False, True])
def test_big_endian_images_segment_as_their_native_copies(dtype, colour):
    # FITS files (astropy) and some readers give big-endian arrays; 16-bit colour
    # ones reached a compiled kernel that refused the byte order (a numba TypingError)
    image, _ = quadrants(levels=(10, 40, 70, 100), noise=3)
    image = np.clip(image, 0, None)
    if colour:
        image = np.stack([image, image[::-1], image[:, ::-1]], axis=-1)
    big = image.astype(dtype)
    native = image.astype(np.dtype(dtype).newbyteorder("="))
    original = big.copy()
    channel_axis = -1 if colour else None
    # (with the spatial prior: its prediction reads colour values in a compiled pass)
    segmenter = make_segmenter(4, channel_axis=channel_axis, beta=0.5).fit(big)
    reference = make_segmenter(4, channel_axis=channel_axis, beta=0.5).fit(native)
    np.testing.assert_array_equal(segmenter.predict(big), reference.predict(native))
    np.testing.assert_allclose(segmenter.predict_proba(big), reference.predict_proba(native),
                               rtol=1e-6, atol=1e-7)
    assert big.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(big, original)


def test_boolean_image():
    image = np.zeros((20, 20), dtype=bool)
    image[5:15, 5:15] = True
    labels = make_segmenter(2).fit_predict(image)
    np.testing.assert_array_equal(labels, image.astype(np.uint8) + 1)


def test_read_only_and_strided_views_are_accepted(quadrant_image):
    image, truth = quadrant_image
    view = np.asfortranarray(image)[::-1, ::2]
    view.flags.writeable = False
    labels = make_segmenter(4).fit_predict(view)
    np.testing.assert_array_equal(labels, truth[::-1, ::2])


# --------------------------------------------------------- fast paths are exact


def test_histogram_fit_equals_the_fit_on_every_pixel():
    image, _ = quadrants(levels=(40, 100, 160, 220), noise=15)
    image = np.clip(image, 0, 255).astype(np.uint8)
    histogram = make_segmenter(4).fit(image)
    every_pixel = make_segmenter(4, max_samples=None).fit(image.astype(np.float64))
    assert histogram.fit_method_ == "histogram"
    assert every_pixel.fit_method_ == "subsample"
    assert histogram.n_iter_ == every_pixel.n_iter_
    np.testing.assert_allclose(histogram.means_, every_pixel.means_, rtol=1e-8)
    np.testing.assert_allclose(histogram.covariances_, every_pixel.covariances_, rtol=1e-8)
    np.testing.assert_allclose(histogram.weights_, every_pixel.weights_, rtol=1e-8)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int32"])
def test_lookup_table_prediction_equals_direct_prediction(dtype):
    image, _ = quadrants(levels=(10, 40, 70, 100), noise=12, seed=5)
    image = image.astype(dtype)
    segmenter = make_segmenter(4).fit(image)
    through_table = segmenter.predict(image)
    direct = segmenter.predict(image.astype(np.float64))
    np.testing.assert_array_equal(through_table, direct)
    np.testing.assert_allclose(
        segmenter.predict_proba(image), segmenter.predict_proba(image.astype(float)), atol=1e-5
    )


def test_subsample_fit_reaches_the_full_fit_likelihood():
    image, _ = rgb_patches((200, 300))
    sampled = make_segmenter(3, channel_axis=-1, max_samples=2000).fit(image)
    full = make_segmenter(3, channel_axis=-1, max_samples=None).fit(image)
    assert sampled.score(image) > full.score(image) - 0.01


# ------------------------------------------------- fitted attributes and scores


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_fitted_attributes_are_gaussian_mixture_parameters(rgb_image, covariance_type):
    image, _ = rgb_image
    segmenter = make_segmenter(3, channel_axis=-1, covariance_type=covariance_type).fit(image)
    pixels = image.reshape(-1, 3)
    mixture = GaussianMixture(3, covariance_type=covariance_type)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        setattr(mixture, name, getattr(segmenter, name))
    np.testing.assert_array_equal(segmenter.predict(image).ravel(), mixture.predict(pixels) + 1)
    np.testing.assert_allclose(segmenter.score(image), mixture.score(pixels), rtol=1e-9)
    np.testing.assert_allclose(segmenter.bic(image), mixture.bic(pixels), rtol=1e-9)
    np.testing.assert_allclose(segmenter.aic(image), mixture.aic(pixels), rtol=1e-9)
    np.testing.assert_allclose(
        segmenter.predict_proba(image).reshape(-1, 3), mixture.predict_proba(pixels), atol=1e-5
    )


def test_scores_of_no_valid_pixel_are_refused_alike():
    image, _ = quadrants(noise=10)
    segmenter = make_segmenter(4, beta=0).fit(image)
    nothing = np.zeros(image.shape, dtype=bool)
    for score in (segmenter.score, segmenter.bic, segmenter.aic):
        with pytest.raises(ValueError, match="Every pixel of X is masked out or not finite"):
            score(image, mask=nothing)
        with pytest.raises(ValueError, match="nothing to score"):
            score(np.full(image.shape, np.nan))


def test_lower_bound_is_in_input_units():
    image, _ = quadrants(noise=10)
    segmenter = make_segmenter(4, max_samples=None, tol=1e-8, max_iter=500).fit(image)
    # at convergence the last E-step bound is the likelihood of the final model
    np.testing.assert_allclose(segmenter.lower_bound_, segmenter.score(image), rtol=1e-5)
    assert segmenter.lower_bounds_[-1] == segmenter.lower_bound_


def test_scaling_intensities_does_not_change_labels(rgb_image):
    image, _ = rgb_image
    labels = make_segmenter(3, channel_axis=-1).fit_predict(image)
    scaled = make_segmenter(3, channel_axis=-1).fit_predict(image * 1e-20 + 3e-18)
    np.testing.assert_array_equal(labels, scaled)


def test_extreme_dynamic_range(quadrant_image):
    image, truth = quadrant_image
    for factor in (1e-30, 1e30):
        labels = make_segmenter(4).fit_predict(image * factor)
        np.testing.assert_array_equal(labels, truth)


def test_predict_proba_and_transform(quadrant_image):
    image, _ = quadrant_image
    segmenter = make_segmenter(4).fit(image)
    proba = segmenter.predict_proba(image)
    assert proba.shape == image.shape + (4,)
    np.testing.assert_allclose(proba.sum(axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.argmax(proba, axis=-1) + 1, segmenter.predict(image))
    np.testing.assert_array_equal(segmenter.transform(image), proba)
    np.testing.assert_array_equal(make_segmenter(4).fit_transform(image), proba)
    np.testing.assert_array_equal(make_segmenter(4).fit_predict(image), segmenter.predict(image))


def test_sample_draws_from_the_components(quadrant_image):
    image, _ = quadrant_image
    segmenter = make_segmenter(4).fit(image)
    values, labels = segmenter.sample(20000)
    assert values.shape == (20000, 1)
    assert set(np.unique(labels)) == {1, 2, 3, 4}
    for k in range(4):
        drawn = values[labels == k + 1, 0]
        assert abs(drawn.mean() - segmenter.means_[k, 0]) < 1.0
        assert len(drawn) / 20000 == pytest.approx(segmenter.weights_[k], abs=0.02)


def test_auto_chooses_the_number_of_classes_by_bic(quadrant_image):
    image, _ = quadrant_image
    segmenter = GMMSegmenter("auto", random_state=0, beta=0.0).fit(image)
    assert segmenter.n_components_ == 4
    # the search stops after K = 5, the first candidate that does not pay off
    np.testing.assert_array_equal(segmenter.n_components_candidates_, np.arange(1, 6))
    assert segmenter.bic_curve_.shape == (5,)
    assert np.argmin(segmenter.bic_curve_) == 3


def test_auto_stops_at_the_number_of_distinct_values():
    image = np.repeat([0, 100], 50).reshape(10, 10).astype(np.uint8)
    segmenter = GMMSegmenter("auto", beta=0.0).fit(image)
    np.testing.assert_array_equal(segmenter.n_components_candidates_, [1, 2])
    assert segmenter.n_components_ == 2


def test_determinism_with_a_seed():
    image, _ = rgb_patches((100, 120), noise=40)
    first = GMMSegmenter(3, channel_axis=-1, random_state=7, max_samples=500, beta=0.0)
    second = GMMSegmenter(3, channel_axis=-1, random_state=7, max_samples=500, beta=0.0)
    np.testing.assert_array_equal(first.fit_predict(image), second.fit_predict(image))
    np.testing.assert_array_equal(first.means_, second.means_)


# ------------------------------------------------------------ masks and NaN


def test_mask_restricts_fit_and_predict(quadrant_image):
    image, truth = quadrant_image
    image = image.copy()
    mask = truth != 4
    image[~mask] = 1e6  # would dominate the fit if it were used
    segmenter = make_segmenter(3).fit(image, mask=mask)
    assert segmenter.means_.max() < 300
    labels = segmenter.predict(image, mask=mask)
    assert np.all(labels[~mask] == 0)
    np.testing.assert_array_equal(labels[mask], truth[mask])


def test_non_finite_pixels_get_label_zero(quadrant_image):
    image, truth = quadrant_image
    image = image.copy()
    image[0, 0], image[5, 5], image[40, 40] = np.nan, np.inf, -np.inf
    segmenter = make_segmenter(4).fit(image)
    labels = segmenter.predict(image)
    assert labels[0, 0] == labels[5, 5] == labels[40, 40] == 0
    finite = np.isfinite(image)
    np.testing.assert_array_equal(labels[finite], truth[finite])
    proba = segmenter.predict_proba(image)
    assert np.all(proba[~finite] == 0) and np.all(np.isfinite(proba))
    assert np.isfinite(segmenter.score(image))


def test_mask_per_image_in_a_batch(quadrant_image):
    image, _ = quadrant_image
    mask = np.zeros(image.shape, dtype=bool)
    mask[:20] = True
    segmenter = make_segmenter(4).fit([image, image], mask=[None, mask])
    labels = segmenter.predict([image, image], mask=[mask, None])
    assert np.all(labels[0][~mask] == 0) and np.all(labels[1] > 0)


def test_segment_one_liner(rgb_image):
    image, truth = rgb_image
    labels = segment(image, 3, channel_axis=-1, random_state=0, beta=0.0)
    np.testing.assert_array_equal(labels, truth)


def test_segment_speaks_of_its_own_arguments(rgb_image):
    # the estimator's X and y are segment()'s image and scribbles
    colour, _ = rgb_image
    with pytest.warns(UserWarning, match=r"^image has shape .*Pass channel_axis=-1") as caught:
        segment(colour, 3, beta=0.0, random_state=0)
    assert len(caught) == 1 and caught[0].filename == __file__  # at the caller's line
    with pytest.raises(ValueError, match=r"^mask for image has shape \(5, 5\)"):
        segment(colour[..., 0], 3, mask=np.ones((5, 5), bool))
    with pytest.raises(ValueError, match=r"^The scribbles hold label 9 "):
        segment(colour[..., 0], 3, scribbles=np.full(colour.shape[:2], 9))


def test_segment_names_itself_and_the_closest_parameter_for_a_misspelt_one():
    image = np.zeros((8, 8))
    with pytest.raises(TypeError, match=r"^segment\(\) got an unexpected keyword argument "
                       r"'n_component'; did you mean n_components=3\? It takes beta, "):
        segment(image, n_component=3)
    with pytest.raises(TypeError, match=r"argument 'colour'\. It takes .*channel_axis"):
        segment(image, colour=True)
    with pytest.raises(TypeError, match=r"argument 'labels'; did you mean scribbles=None\?"):
        segment(image, labels=None)


@pytest.mark.parametrize("keyword, meant", [
    ("n_component", "n_components"), ("n_clusters", "n_components"), ("smoothing", "beta"),
    ("random_seed", "random_state"), ("Beta", "beta"), ("channels_axis", "channel_axis"),
])
def test_the_constructor_names_the_parameter_a_misspelt_or_foreign_keyword_meant(keyword, meant):
    # Python's own error only called the keyword unexpected
    with pytest.raises(TypeError, match=rf"^GMMSegmenter\(\) got an unexpected keyword argument "
                       rf"'{keyword}'; did you mean {meant}=3\? It takes beta, bias_field, "):
        GMMSegmenter(**{keyword: 3})
    with pytest.raises(TypeError, match=r"'colour'\. It takes .*channel_axis"):
        GMMSegmenter(colour=True)
    # what belongs to an image is shown with the image
    with pytest.raises(TypeError, match=r"'mask': a mask belongs to an image, so it is given "
                       r"with the image, as in GMMSegmenter\(3\)\.fit\(X, "
                       r"mask=mask\)"):
        GMMSegmenter(3, mask=None)
    with pytest.raises(TypeError, match=r"'scribbles': .*fit\(X, y=scribbles\)"):
        GMMSegmenter(3, scribbles=None)
    # and the estimator is made, cloned and pickled as before
    import pickle

    from sklearn.base import clone

    made = GMMSegmenter(n_components=4, beta=0.5)
    assert clone(made).get_params() == pickle.loads(pickle.dumps(made)).get_params()
    assert type(clone(made)) is GMMSegmenter and made.n_components == 4
    # help() and IDEs see the parameters, not the check's *args, **kwargs
    assert list(inspect.signature(GMMSegmenter).parameters)[:2] == [
        "n_components", "covariance_type"
    ]


@pytest.mark.parametrize("keyword, instead", [
    ("warm_start", r"every fit starts afresh from init_params\. To fit several images "
                   r"together, pass them to one fit as a list"),
    ("means_init", r"scribble a few pixels of each, fit\(X, y=scribbles\), or give per-class "
                   r"probability maps, fit\(X, prior=maps\)"),
    ("precisions_init", r"fit\(X, y=scribbles\)"),
    ("verbose", r"run it inside gmm_segmenter\.progress\(callback\)"),
    ("n_jobs", r"share the idle cores"),
])
def test_gaussian_mixture_parameters_not_taken_say_what_does_their_work(keyword, instead):
    # warm_start was answered "did you mean random_state=True?"
    with pytest.raises(TypeError, match=rf"^GMMSegmenter\(\) got an unexpected keyword argument "
                       rf"'{keyword}': it takes no {keyword}; .*{instead}"):
        GMMSegmenter(3, **{keyword: True})


def test_set_params_and_misspelt_options_say_what_was_meant():
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline

    # set_params (what GridSearchCV calls) gave scikit-learn's bare list
    with pytest.raises(ValueError, match=r"^Invalid parameter 'warm_start' for estimator "
                       r"GMMSegmenter: it takes no warm_start; every fit starts afresh"):
        make_pipeline(GMMSegmenter(3)).set_params(gmmsegmenter__warm_start=True)
    with pytest.raises(ValueError, match=r"'n_component' .*: did you mean n_components\? It "
                       r"takes beta, "):
        GMMSegmenter(3).set_params(n_component=4)
    # a word far from every parameter gets no guess (it was "did you mean n_components?")
    with pytest.raises(ValueError, match=r"'nonsense' for estimator GMMSegmenter: it takes "):
        GMMSegmenter(3).set_params(nonsense=1)
    made = GMMSegmenter(3).set_params(beta=0.5, n_components=4)
    assert clone(made).get_params()["beta"] == 0.5 and made.n_components == 4
    # a misspelt option names the one meant, and only for the parameter refused
    for params, meant in [({"covariance_type": "ful"}, "covariance_type='full'"),
                          ({"init_params": "kmean", "max_iter": 5}, "init_params='kmeans'"),
                          ({"beta": "Auto"}, "beta='auto'")]:
        with pytest.raises(ValueError, match=rf"Got .* instead\. Did you mean {meant}\?$"):
            GMMSegmenter(2, **params).fit(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"'connectivity' .* Got 0 instead\.$"):
        GMMSegmenter(2, connectivity=0, covariance_type="ful").fit(np.zeros((4, 4)))
    # a voxel size given as one number or a string says how to give it
    for spacing in (3, "3,1,1"):
        with pytest.raises(ValueError, match=r"'spacing' .* instead\. Give one voxel size per "
                           r"spatial axis, in the array's order, such as spacing=\(3, 1, 1\)"):
            GMMSegmenter(2, spacing=spacing).fit(np.zeros((4, 4, 4)))


def test_a_model_asked_for_its_channels_on_another_axis_names_the_axis_that_holds_them():
    stack = np.random.default_rng(0).random((6, 2, 20, 24))
    model = GMMSegmenter(2, beta=0, channel_axis=1, random_state=0).fit(stack)
    moved = np.moveaxis(stack, 1, 0)
    with pytest.raises(ValueError, match=r"X has 6 channel\(s\) along channel_axis=1, .* "
                       r"Axis 0 of X holds 2: if those are the channels, call "
                       r"set_params\(channel_axis=0\) first"):
        model.predict(moved)
    labels = model.predict(stack)
    np.testing.assert_array_equal(model.set_params(channel_axis=0).predict(moved), labels)


def test_parameter_errors_list_the_options_in_one_order():
    # scikit-learn lists a set of options in its iteration order, which for
    # strings changed from one process to the next
    script = textwrap.dedent('''
        import numpy as np
        from gmm_segmenter import GMMSegmenter
        for params in ({"covariance_type": "ful"}, {"init_params": "x"}, {"beta": "x"}):
            try:
                GMMSegmenter(2, **params).fit(np.zeros((4, 4)))
            except ValueError as error:
                print(error)
    ''')
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in range(4)
    }
    assert len(outputs) == 1
    assert "among {'full', 'tied', 'diag', 'spherical'}" in outputs.pop()


def test_a_constructor_parameter_given_to_a_method_says_where_it_belongs(rgb_image):
    image, _ = rgb_image
    segmenter = make_segmenter(3)
    with pytest.raises(TypeError, match=r"^GMMSegmenter\.fit\(\) got an unexpected keyword "
                       r"argument 'channel_axis': channel_axis is a parameter of the "
                       r"estimator.*GMMSegmenter\(3, channel_axis=-1\).*"
                       r"set_params\(channel_axis=-1\); then call fit\(X\)\. fit\(\) takes "
                       r"X, y, mask, prior\.$"):
        segmenter.fit(image, channel_axis=-1)
    assert not hasattr(segmenter, "model_")  # nothing was fitted
    # the example given runs as written
    with pytest.raises(TypeError, match=r"as in GMMSegmenter\(n_components=4\), or "):
        segmenter.fit(image, n_components=4)
    assert GMMSegmenter(n_components=4).n_components == 4
    segmenter.set_params(channel_axis=-1, beta=0.0).fit(image)
    # predict uses the fitted beta: setting it needs a new fit, and the advice says so
    with pytest.raises(TypeError, match=r"^GMMSegmenter\.predict_proba\(\).*'beta': beta is "
                       r"a parameter.*set_params\(beta=0\.5\); then fit again: "
                       r"predict_proba\(\) uses what fit\(\) learned, not beta\."):
        segmenter.predict_proba(image, beta=0.5)
    # what predict reads from the estimator acts at once
    with pytest.raises(TypeError, match=r"set_params\(connectivity=2\); then call "
                       r"predict\(X\) \(it reads connectivity from the estimator\)"):
        segmenter.predict(image, connectivity=2)
    # an array is not written out in the advice
    with pytest.raises(TypeError, match=r"^GMMSegmenter\.score\(\).*'masks'; did you mean "
                       r"mask=\.\.\.\? score\(\) takes X, y, mask\.$"):
        segmenter.score(image, masks=np.ones(image.shape[:2], bool))
    # the methods keep their signatures, for help() and IDEs
    assert "mask" in inspect.signature(GMMSegmenter.predict).parameters
    assert segmenter.transform(image, mask=None).shape == image.shape[:2] + (3,)


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "params, X, error, match",
    [
        ({"channel_axis": 3}, np.zeros((4, 4, 3)), ValueError, r"channel_axis=3 is out of range"),
        ({"channel_axis": -1}, np.zeros(5), ValueError, r"channel_axis=-1 .*channel_axis=None"),
        ({}, np.zeros((4, 4), dtype=complex), ValueError, r"Complex data not supported"),
        ({}, np.array([["a", "b"]], dtype=object), TypeError, r"dtype object"),
        ({}, np.array(["a", "b"]), TypeError, r"dtype <U1"),
        ({}, np.zeros((0, 5)), ValueError, r"X is empty"),
        ({}, np.float64(3.0), ValueError, r"scalar"),
        ({}, [], ValueError, r"empty list"),
        ({}, "image.png", TypeError, r"got str"),
        ({}, np.arange(2.0), ValueError, r"only 2 pixel values.*n_components<=2"),
        ({}, np.full((8, 8), 3.0), ValueError, r"constant image.*Use n_components=1 or"),
        ({"n_components": 0}, np.zeros((4, 4)), ValueError, r"n_components"),
        ({"covariance_type": "round"}, np.zeros((4, 4)), ValueError, r"covariance_type"),
        ({"n_components": "auto", "n_components_range": (5, 2)}, np.zeros((4, 4)),
         ValueError, r"n_components_range must be two integers"),
        ({"n_components": "auto", "n_components_range": (0, 2)}, np.zeros((4, 4)),
         ValueError, r"1 <= smallest"),
        # unused with a fixed number, but checked as every parameter is
        ({"n_components": 3, "n_components_range": (5, 2)}, np.arange(16.0).reshape(4, 4),
         ValueError, r"got n_components_range=\(5, 2\)"),
        # a fixed number asks for exactly that many, a range for its smallest or more
        ({"n_components": 3}, np.arange(2.0), ValueError,
         r"^n_components=3 asks for 3 components, but"),
        ({"n_components": "auto", "n_components_range": (3, 5)}, np.arange(2.0), ValueError,
         r"^n_components_range=\(3, 5\) asks for at least 3 components, but"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(params, X, error, match):
    with pytest.raises(error, match=match):
        GMMSegmenter(**params).fit(X)


def test_constant_image_with_one_component_works():
    image = np.full((10, 10), 7, dtype=np.uint8)
    segmenter = GMMSegmenter(1).fit(image)
    np.testing.assert_array_equal(segmenter.predict(image), 1)
    assert segmenter.means_[0, 0] == 7
    constant_float = np.full((10, 10), 0.25)
    np.testing.assert_array_equal(GMMSegmenter(1).fit_predict(constant_float), 1)


def test_all_masked_image_is_refused(quadrant_image):
    image, _ = quadrant_image
    with pytest.raises(ValueError, match="masked out or not finite"):
        make_segmenter(3).fit(image, mask=np.zeros(image.shape, bool))
    with pytest.raises(ValueError, match="masked out or not finite"):
        make_segmenter(3).fit(np.full((5, 5), np.nan))


def test_mask_of_the_wrong_shape(quadrant_image):
    image, _ = quadrant_image
    with pytest.raises(ValueError, match=r"mask for X has shape \(3, 3\)"):
        make_segmenter(3).fit(image, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="list of 2 masks"):
        make_segmenter(3).fit([image, image], mask=np.ones(image.shape, bool))


def test_predict_with_other_channels_than_fit(rgb_image):
    image, _ = rgb_image
    segmenter = make_segmenter(3, channel_axis=-1).fit(image)
    with pytest.raises(ValueError, match=r"X has 4 channel\(s\).*fitted on images with 3"):
        segmenter.predict(np.zeros((5, 5, 4)))


def test_a_colour_model_on_a_grey_image_says_the_image_is_grey(rgb_image):
    image, _ = rgb_image
    segmenter = make_segmenter(3, channel_axis=-1, beta=0).fit(image)
    grey = np.zeros((image.shape[0], image.shape[1] + 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error alone: no warning that repeats it
        with pytest.raises(ValueError, match=rf"^X looks like a grey image of shape "
                           rf"\({grey.shape[0]}, {grey.shape[1]}\) whose axis -1 is taken for "
                           rf"its channels \(channel_axis=-1: {grey.shape[1]} channels\), but "
                           r"this GMMSegmenter was fitted on 3-channel \(colour\) images"):
            segmenter.predict(grey)
    first = make_segmenter(3, channel_axis=0, beta=0).fit(np.moveaxis(image, -1, 0))
    with pytest.raises(ValueError, match=rf"^X looks like a grey image of shape "
                       rf"\({grey.shape[0]}, {grey.shape[1]}\) whose axis 0 is taken for its "
                       rf"channels \(channel_axis=0: {grey.shape[0]} channels\)"):
        first.predict(grey)
    with pytest.raises(ValueError, match=r"X has 4 channel\(s\)") as raised:
        segmenter.predict(np.zeros((5, 5, 4)))  # a 4-channel image is not taken for grey
    assert "grey" not in str(raised.value)
    # what is wrong with other inputs is said first, as before the channels
    with pytest.raises(ValueError, match="channel_axis=-1 indicates a channel axis, which is "
                       "not possible for a 1-dimensional X"):
        segmenter.predict(np.zeros(500))
    with pytest.raises(ValueError, match=r"\bempty\b"):
        segmenter.predict(np.zeros((0, 5, 4)))
    segmenter.set_params(channel_axis=np.True_)
    with pytest.raises((ValueError, TypeError), match="channel_axis"):
        segmenter.predict(np.zeros((5, 5, 4)))


def test_a_grey_model_on_a_colour_array_advises_what_it_accepts(rgb_image):
    # "pass channel_axis=-1", the advice at fit, would be refused by a grey model
    colour, _ = rgb_image
    grey = make_segmenter(3, beta=0).fit(colour.mean(axis=-1))
    with pytest.warns(UserWarning, match=r"last axis of 3 looks like colour channels, but this "
                      r"GMMSegmenter was fitted on grey images, so it labels X as a 3-D volume "
                      r"of 3 slices\. For a colour image, convert it to grey first") as caught:
        labels = grey.predict(colour)
    assert labels.shape == colour.shape
    assert len(caught) == 1 and "Pass channel_axis=-1" not in str(caught[0].message)
    assert caught[0].filename == __file__
    # a batch names the image; a dask array is told the same
    with pytest.warns(UserWarning, match=r"X\[1\] has shape .* so it labels X\[1\] as a 3-D "
                      r"volume of 3 slices\. For a colour image, convert it") as caught:
        grey.predict([colour.mean(axis=-1), colour])
    assert not any("Pass channel_axis=-1" in str(w.message) for w in caught)
    da = pytest.importorskip("dask.array")
    with pytest.warns(UserWarning, match=r"fitted on grey images") as caught:
        grey.predict(da.from_array(colour, chunks=(32, 32, 3)))
    assert not any("Pass channel_axis=-1" in str(w.message) for w in caught)
    # a fit (no model yet) keeps its advice
    with pytest.warns(UserWarning, match=r"Pass channel_axis=-1 for a colour image"):
        make_segmenter(3, beta=0).fit(colour)


def test_a_colour_image_fitted_as_a_volume_is_warned_about_once(rgb_image):
    # predict used to add the grey model's advice ("convert it to grey
    # first"), which a model of 3-slice volumes would not fit
    colour, _ = rgb_image
    with pytest.warns(UserWarning, match=r"Pass channel_axis=-1 for a colour image") as caught:
        volumes = make_segmenter(3, beta=0).fit(colour)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = volumes.predict(colour)
        volumes.predict_proba([colour, colour])
    assert labels.shape == colour.shape
    # a fit on grey images again gives the grey model's advice
    volumes.fit(colour.mean(axis=-1))
    with pytest.warns(UserWarning, match=r"fitted on grey images"):
        volumes.predict(colour)


def test_a_mask_given_as_a_path_asks_for_the_array(quadrant_image, tmp_path):
    image, _ = quadrant_image
    for path in ("mask.png", tmp_path / "mask.png"):
        with pytest.raises(TypeError, match=r"mask for X is (str|\w*Path) .*mask\.png.*, not an "
                           r"array; read the file first"):
            make_segmenter(3).fit(image, mask=path)


def test_a_batch_of_other_bit_depths_warns(quadrant_image):
    image, _ = quadrant_image
    eight = np.clip(image * 40, 0, 255).astype(np.uint8)
    with pytest.warns(UserWarning, match=r"X mixes images of other types: image 0 is uint8 "
                      r"and image 1 is uint16\..* may come out as one class"):
        make_segmenter(3, beta=0).fit([eight, eight.astype(np.uint16) * 256])
    with pytest.warns(UserWarning, match="image 0 is float64 and image 2 is uint8"):
        make_segmenter(3, beta=0).fit([image, image, eight])
    with warnings.catch_warnings():
        # floats of two widths, one type in two byte orders, wide integers of the
        # same values, or one type: nothing said
        warnings.simplefilter("error")
        make_segmenter(3, beta=0).fit([image, image.astype(np.float32)])
        make_segmenter(3, beta=0).fit([eight, eight[::-1]])
        sixteen = eight.astype(np.uint16) * 256
        make_segmenter(3, beta=0).fit([sixteen, sixteen.astype(">u2")])
        make_segmenter(3, beta=0).fit([sixteen.astype(np.int32), sixteen.astype(np.int64)])


def test_batch_with_mixed_channels_is_refused():
    with pytest.raises(ValueError, match="different numbers of channels"):
        GMMSegmenter(channel_axis=-1).fit([np.zeros((4, 4, 3)), np.zeros((4, 4, 4))])


def test_sample_refuses_non_positive_counts(quadrant_image):
    segmenter = make_segmenter(4).fit(quadrant_image[0])
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        segmenter.sample(0)


def test_colour_lookup_table_equals_direct_prediction(monkeypatch):
    from skimage import data

    from gmm_segmenter import _image

    image = data.astronaut() // 16 * 16  # a poster: a few thousand colours
    mask = np.ones(image.shape[:2], dtype=bool)
    mask[:100] = False
    monkeypatch.setattr(_image, "_MIN_COLOUR_TABLE_PIXELS", 1 << 10)
    view = _image.as_images(image, channel_axis=-1)[0]
    table_values, index_of = _image.lookup_plan(view)
    assert table_values.shape[1] == 3 and len(table_values) < image.shape[0] * image.shape[1] / 10
    segmenter = make_segmenter(3, channel_axis=-1).fit(image)
    through_table = segmenter.predict(image, mask=mask)
    proba_table = segmenter.predict_proba(image)
    monkeypatch.setattr(_image, "lookup_plan", lambda view: None)
    np.testing.assert_array_equal(through_table, segmenter.predict(image, mask=mask))
    np.testing.assert_allclose(proba_table, segmenter.predict_proba(image), atol=1e-5)


@pytest.mark.parametrize("dtype, spread", [
    (np.uint16, 300), (np.int16, 300), (np.int16, 4000),  # the last spans 32 768-65 535
])
def test_small_16_bit_images_use_a_table_over_their_range(monkeypatch, dtype, spread):
    from gmm_segmenter import _image, _kernel

    rng = np.random.default_rng(0)
    values = rng.normal(size=(48, 52)) * spread - 200  # int16: negative too
    values[10:30, 10:30] += 5 * spread
    image = np.clip(values, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
    view = _image.as_images(image, channel_axis=None)[0]
    table_values, index_of = _image.lookup_plan(view)
    assert table_values[0, 0] == image.min() and table_values[-1, 0] == image.max()
    assert np.array_equal(table_values[index_of(image), 0], image.reshape(-1))
    segmenter = make_segmenter(3, beta=0.6).fit(image)
    model = segmenter.model_
    ranged = _kernel.log_potential(view, model.standardized, model.offset, model.scale)
    labels, proba = segmenter.predict(image), segmenter.predict_proba(image)
    monkeypatch.setattr(_image, "_SCAN_RANGE_PIXELS", 0)  # the table over every value
    assert len(_image.lookup_plan(view)[0]) == 1 << 16
    whole = _kernel.log_potential(view, model.standardized, model.offset, model.scale)
    np.testing.assert_array_equal(ranged, whole)
    np.testing.assert_array_equal(labels, segmenter.predict(image))
    np.testing.assert_array_equal(proba, segmenter.predict_proba(image))
    refitted = make_segmenter(3, beta=0.6).fit(image)
    np.testing.assert_array_equal(refitted.model_.mixture.means, model.mixture.means)


def test_noisy_colour_images_skip_the_colour_table(monkeypatch):
    from gmm_segmenter import _image

    noisy = np.random.default_rng(0).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    monkeypatch.setattr(_image, "_MIN_COLOUR_TABLE_PIXELS", 1 << 10)
    assert _image.lookup_plan(_image.as_images(noisy, channel_axis=-1)[0]) is None


def test_a_fixed_k_refit_drops_the_bic_curve_of_an_earlier_auto_fit(quadrant_image):
    image, _ = quadrant_image
    segmenter = GMMSegmenter("auto", n_components_range=(2, 4), beta=0.0).fit(image)
    assert segmenter.n_components_candidates_[0] == 1  # the curve starts at 1
    assert len(segmenter.bic_curve_) == len(segmenter.n_components_candidates_)
    segmenter.set_params(n_components=2).fit(image)
    assert not hasattr(segmenter, "bic_curve_")
    assert not hasattr(segmenter, "n_components_candidates_")
    single = GMMSegmenter("auto", n_components_range=(3, 3), beta=0.0).fit(image)
    assert single.bic_curve_.shape == (1,) and np.isfinite(single.bic_curve_[0])


def test_a_long_channel_axis_beside_a_short_one_names_the_short_one():
    # (Z, C, Y, X) with channel_axis=2: 40 "channels" of 576 pixels each, enough
    # pixels for the older check, so nothing was said
    stack = np.random.default_rng(0).random((6, 2, 40, 48)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"X has shape \(6, 2, 40, 48\): channel_axis=2 makes "
                      r"40 channels, while axis 1 \(of length 2\) looks like the channels .* Pass "
                      r"channel_axis=1 if it holds them"):
        GMMSegmenter(2, beta=0, channel_axis=2).fit(stack)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the short axis as channels: nothing to say
        GMMSegmenter(2, beta=0, channel_axis=1).fit(stack)


@pytest.mark.parametrize("method", ["fit_predict", "fit_transform"])
def test_fit_predict_says_each_warning_about_the_image_once_and_at_the_callers_line(method):
    from skimage import data

    image = data.astronaut()[::4, ::4]
    tiny = np.random.default_rng(0).random((5, 5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(GMMSegmenter(3, channel_axis=0, random_state=0), method)(image)
        getattr(GMMSegmenter(2, random_state=0), method)(tiny)  # too small to choose beta
    said = [str(w.message) for w in caught]
    assert sum("looks like a spatial axis" in m for m in said) == 1, said
    assert sum("beta='auto' needs at least" in m for m in said) == 1, said
    assert {w.filename for w in caught} == {__file__}, [(w.filename, w.lineno) for w in caught]
