"""Bias-field correction: a smooth multiplicative field estimated with the mixture."""

import warnings

import numpy as np
import pytest
from _helpers import ari
from _images import biased_blobs, smooth_field
from sklearn.exceptions import ConvergenceWarning

from gmm_segmenter import (
    BiasFieldWarning, GMMSegmenter, _bias, _hmrf, _image, _source, load_model, save_model,
)


def _log_correlation(estimate, truth, where=None):
    """Correlation of two fields' logs (a field is known up to a constant factor)."""
    estimate, truth = np.log(estimate), np.log(truth)
    if where is not None:
        estimate, truth = estimate[where], truth[where]
    return np.corrcoef(estimate.ravel(), truth.ravel())[0, 1]


@pytest.fixture(scope="module")
def blobs():
    """A 2-D image under a 40 % field (0.8 to 1.2), its truth and its field."""
    return biased_blobs((128, 128), amplitude=0.4)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_a_known_field_is_recovered_and_the_labels_improve(blobs, beta):
    image, truth, field = blobs
    plain = GMMSegmenter(3, beta=beta, random_state=0).fit_predict(image)
    corrected = GMMSegmenter(3, beta=beta, bias_field="auto", random_state=0)
    labels = corrected.fit_predict(image)
    assert _log_correlation(corrected.bias_field_, field) > 0.95
    assert ari(truth, plain) < 0.7  # the field defeats the plain model...
    assert ari(truth, labels) > 0.95  # ...and not the corrected one
    # a new image of the same scene under another field: estimated with the mixture fixed
    other_field = smooth_field(image.shape, 0.4, seed=5)
    other = image / field * other_field
    assert _log_correlation(corrected.estimate_bias_field(other), other_field) > 0.95
    assert ari(truth, corrected.predict(other)) > 0.95


def test_the_field_keeps_the_intensity_units(blobs):
    image, _, _ = blobs
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0).fit(image)
    field = segmenter.bias_field_
    assert field.shape == image.shape and field.dtype == np.float32
    assert np.all(field > 0)
    assert abs(np.mean(np.log(field.astype(np.float64)))) < 1e-6
    # the corrected means stay where the image's classes are, not rescaled
    assert 90 < segmenter.means_[0, 0] < 110 and 180 < segmenter.means_[2, 0] < 220


def test_none_runs_none_of_the_field_machinery(blobs, monkeypatch):
    image, _, _ = blobs
    before = GMMSegmenter(3, random_state=0).fit(image)
    expected = before.predict(image), before.predict_proba(image), before.score(image)

    def refuse(*args, **kwargs):
        raise AssertionError("the bias field was estimated with bias_field=None")

    monkeypatch.setattr(_bias.Fields, "sample", refuse)
    segmenter = GMMSegmenter(3, random_state=0)
    assert segmenter.bias_field is None
    segmenter.fit(image)
    assert not hasattr(segmenter, "bias_field_")
    np.testing.assert_array_equal(segmenter.predict(image), expected[0])
    np.testing.assert_array_equal(segmenter.predict_proba(image), expected[1])
    assert segmenter.score(image) == expected[2]
    with pytest.raises(ValueError, match="bias_field=None.*set_params"):
        segmenter.estimate_bias_field(image)


def test_spatial_posteriors_drive_the_field(blobs, monkeypatch):
    image, _, _ = blobs
    calls = []
    original = _hmrf.hmrf_em

    def spy(*args, **kwargs):
        calls.append(kwargs.get("update_data") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(_hmrf, "hmrf_em", spy)
    GMMSegmenter(3, beta=1.0, bias_field="auto", random_state=0).fit(image)
    # without the field first, then refitting the field before every M-step
    assert calls == [False, True]


def test_mask_fits_the_field_inside_and_evaluates_it_everywhere(blobs):
    image, truth, field = blobs
    mask = np.zeros(image.shape, dtype=bool)
    mask[16:112, 16:112] = True
    spoiled = image.copy()
    spoiled[~mask] = 5000.0  # outside the mask: nothing a field could explain
    segmenter = GMMSegmenter(3, bias_field=2, random_state=0)
    labels = segmenter.fit_predict(spoiled, mask=mask)
    estimate = segmenter.bias_field_
    assert np.all(np.isfinite(estimate)) and np.all(estimate > 0)
    assert _log_correlation(estimate, field, mask) > 0.95
    assert abs(np.mean(np.log(estimate[mask].astype(np.float64)))) < 1e-6
    assert np.all(labels[~mask] == 0)
    assert ari(truth[mask], labels[mask]) > 0.95


def test_three_dimensional_volume():
    image, truth, field = biased_blobs((20, 48, 48), noise=5.0, seed=1)
    plain = GMMSegmenter(3, random_state=0).fit_predict(image)
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0)
    labels = segmenter.fit_predict(image)
    assert segmenter.bias_field_.shape == image.shape
    assert _log_correlation(segmenter.bias_field_, field) > 0.95
    assert ari(truth, labels) > 0.95 > ari(truth, plain) + 0.05


def test_thick_slices_with_their_spacing():
    spacing = (3.0, 1.0, 1.0)
    image, truth, field = biased_blobs((12, 48, 48), noise=5.0, spacing=spacing, seed=2)
    segmenter = GMMSegmenter(3, bias_field=2, spacing=spacing, random_state=0)
    labels = segmenter.fit_predict(image)
    assert _log_correlation(segmenter.bias_field_, field) > 0.95
    assert ari(truth, labels) > 0.95


def test_field_coordinates_are_physical():
    geometry = _bias.Geometry.of((11, 41), (4.0, 1.0))
    # the longest physical side (40 along axis 1) spans [-1, 1]; axis 0 is 40 long too
    np.testing.assert_allclose(geometry.coordinates(1, [0, 20, 40]), [-1, 0, 1])
    np.testing.assert_allclose(geometry.coordinates(0, [0, 5, 10]), [-1, 0, 1])
    thin = _bias.Geometry.of((11, 41))
    np.testing.assert_allclose(thin.coordinates(0, [0, 10]), [-0.25, 0.25])


def test_one_field_per_channel():
    _, truth, _ = biased_blobs((120, 120))
    rng = np.random.default_rng(3)
    colours = np.array([[100.0, 90.0], [135.0, 125.0], [175.0, 165.0]])
    fields = np.stack([smooth_field((120, 120), 0.4, seed=s) for s in (0, 1)])
    image = colours[truth - 1].transpose(2, 0, 1) * fields + rng.normal(scale=4, size=(2, 120, 120))
    plain = GMMSegmenter(3, channel_axis=0, beta=0, random_state=0).fit_predict(image)
    segmenter = GMMSegmenter(3, channel_axis=0, bias_field=2, beta=0, random_state=0)
    labels = segmenter.fit_predict(image)
    estimate = segmenter.bias_field_
    assert estimate.shape == image.shape  # channels on channel_axis, as in X
    for channel in range(2):
        assert _log_correlation(estimate[channel], fields[channel]) > 0.95
    assert ari(truth, labels) > 0.95 > ari(truth, plain) + 0.05


def test_batch_has_a_field_per_image(blobs):
    image, truth, field = blobs
    other_field = smooth_field(image.shape, 0.4, seed=9)
    other = image / field * other_field
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0)
    labels = segmenter.fit_predict([image, other[:100, :90]])
    fields = segmenter.bias_field_
    assert isinstance(fields, list) and [f.shape for f in fields] == [(128, 128), (100, 90)]
    assert _log_correlation(fields[0], field) > 0.95
    assert _log_correlation(fields[1], other_field[:100, :90]) > 0.95
    assert ari(truth[:100, :90], labels[1]) > 0.95


def test_dask_images_are_corrected_lazily_and_match_memory(blobs, monkeypatch):
    da = pytest.importorskip("dask.array")
    image, truth, _ = blobs
    lazy = da.from_array(image, chunks=(48, 40))
    in_memory = GMMSegmenter(3, bias_field="auto", random_state=0).fit(image)
    chunked = GMMSegmenter(3, bias_field="auto", random_state=0).fit(lazy)
    assert isinstance(chunked.bias_field_, da.Array)
    np.testing.assert_allclose(chunked.bias_field_.compute(), in_memory.bias_field_, rtol=1e-5)
    # the training image again, lazy or in memory: its fitted field is reused
    labels = chunked.predict(lazy)
    assert isinstance(labels, da.Array) and labels.chunks == lazy.chunks
    assert np.mean(labels.compute() != in_memory.predict(image)) < 1e-3
    np.testing.assert_allclose(
        chunked.score_samples(lazy).compute(), in_memory.score_samples(image), rtol=1e-5
    )
    # an image that is not the training one (an all-True mask makes it so on
    # both sides) gets its field estimated, alike in memory and from chunks
    everywhere = np.ones(image.shape, bool)
    labels = chunked.predict(lazy, mask=everywhere)
    assert np.mean(labels.compute() != in_memory.predict(image, mask=everywhere)) < 1e-3
    field = chunked.estimate_bias_field(lazy, mask=everywhere)
    assert isinstance(field, da.Array)
    np.testing.assert_allclose(
        field.compute(), in_memory.estimate_bias_field(image, mask=everywhere), rtol=1e-5
    )
    log_likelihood = chunked.score_samples(lazy, mask=everywhere)
    assert isinstance(log_likelihood, da.Array)
    np.testing.assert_allclose(
        log_likelihood.compute(), in_memory.score_samples(image, mask=everywhere)
    )


def test_a_large_dask_image_is_fitted_on_a_strided_copy(blobs, monkeypatch):
    da = pytest.importorskip("dask.array")

    image, truth, field = blobs
    monkeypatch.setattr(_bias, "FIELD_FIT_PIXELS", 2500)  # every third pixel or so
    lazy = da.from_array(image, chunks=(64, 64))
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0).fit(lazy)
    assert _log_correlation(segmenter.bias_field_.compute(), field) > 0.95
    assert ari(truth, segmenter.predict(lazy).compute()) > 0.95


def test_predict_on_the_dask_image_it_was_fitted_on_reuses_its_field(blobs, monkeypatch):
    # estimated again at predict, the field of a zarr volume under a field
    # relabelled 10.7 % of it between fit_predict and fit(X).predict(X)
    da = pytest.importorskip("dask.array")
    image, truth, field = blobs
    lazy = da.from_array(image, chunks=(64, 64))
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0).fit(lazy)
    fitted = segmenter.predict(lazy).compute()
    estimates = []
    estimate = GMMSegmenter._estimate_fields

    def counted(self, images, model):
        estimates.append(len(images.views))
        return estimate(self, images, model)

    monkeypatch.setattr(GMMSegmenter, "_estimate_fields", counted)
    again = segmenter.predict(da.from_array(image, chunks=(64, 64))).compute()  # built alike
    assert estimates == []
    np.testing.assert_array_equal(again, fitted)
    np.testing.assert_array_equal(segmenter.bias_field_.compute(),
                                  segmenter.estimate_bias_field(lazy).compute())
    # another image is estimated, in memory or lazy
    other = image.copy()
    other[0, 0] += 1.0
    segmenter.predict(da.from_array(other, chunks=(64, 64)))
    assert estimates == [1]


def test_a_large_in_memory_image_is_fitted_on_a_strided_copy(blobs, monkeypatch):
    # as a dask image is: HMRF-EM with the field ran on every pixel of a
    # 2048² picture, 8.6 times the default's time (3.1 times strided)
    image, truth, field = blobs
    whole = GMMSegmenter(3, bias_field="auto", random_state=0).fit(image)
    seen = []
    fit_views = _source.InMemoryImages.field_fit_views

    def recorded(self):
        views = fit_views(self)
        seen.append([(view.spatial_shape, steps) for view, steps in views])
        return views

    monkeypatch.setattr(_source.InMemoryImages, "field_fit_views", recorded)
    monkeypatch.setattr(_bias, "FIELD_FIT_PIXELS", image.size // 4)
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0).fit(image)
    half = tuple(-(-n // 2) for n in image.shape)
    assert seen and seen[0] == [(half, (2, 2))], seen
    assert segmenter.bias_field_.shape == image.shape
    assert _log_correlation(segmenter.bias_field_, field) > 0.95
    assert ari(truth, segmenter.predict(image)) >= ari(truth, whole.predict(image)) - 0.01
    # the budget itself: the spatial fit's
    assert _image.strided_steps((2048, 2048), 1 << 20) == (2, 2)
    assert _image.strided_steps((3000, 1000), 1 << 20) == (3, 1)


def test_an_image_too_small_for_the_field_warns_and_is_not_corrected(quadrant_image):
    image, _ = quadrant_image
    small = image[:12, :12]
    plain = GMMSegmenter(2, beta=0, random_state=0).fit(small)
    segmenter = GMMSegmenter(2, beta=0, bias_field="auto", random_state=0)
    with pytest.warns(BiasFieldWarning, match=r"bias_field.*144 valid pixels.*degree 3.*"
                      r"Use a lower degree \(bias_field=1 needs 90\)"):
        segmenter.fit(small)
    # the highest lower degree that fits: 240 pixels hold a quadratic (180)
    with pytest.warns(BiasFieldWarning, match=r"240 valid pixels.*degree 3.*"
                      r"Use a lower degree \(bias_field=2 needs 180\)"):
        GMMSegmenter(2, beta=0, bias_field="auto", random_state=0).fit(image[:12, :20])
    # too small for any degree: no advice to lower it
    with pytest.warns(BiasFieldWarning, match=r"degree 1 .*Use bias_field=None: a field of the "
                      r"lowest degree needs 90 pixels") as caught:
        GMMSegmenter(2, beta=0, bias_field=1, random_state=0).fit(image[:8, :5])
    assert not any("lower degree" in str(w.message) for w in caught)
    np.testing.assert_array_equal(segmenter.bias_field_, np.ones(small.shape, np.float32))
    np.testing.assert_array_equal(segmenter.means_, plain.means_)
    np.testing.assert_array_equal(segmenter.predict(small), plain.predict(small))
    flipped = small[::-1]  # a new image: its field is estimated, and cannot be
    with pytest.warns(BiasFieldWarning):
        labels = segmenter.predict(flipped)
    np.testing.assert_array_equal(labels, plain.predict(flipped))


def test_an_image_of_differences_warns_and_is_not_corrected(blobs):
    image, truth, _ = blobs
    centred = image - np.percentile(image, 60)  # differences, not intensities
    segmenter = GMMSegmenter(3, beta=0, bias_field="auto", random_state=0)
    with pytest.warns(BiasFieldWarning, match="60% of the valid pixels of X are negative"):
        labels = segmenter.fit_predict(centred)
    assert np.all(segmenter.bias_field_ == 1)
    assert labels.min() >= 1 and labels.max() <= 3


def test_zero_pixels_are_left_out_of_the_field_and_labelled(blobs):
    image, truth, field = blobs
    padded = np.pad(image, ((0, 0), (0, 40)))  # a zero-filled border, as scanners write
    with warnings.catch_warnings():
        warnings.simplefilter("error", BiasFieldWarning)
        segmenter = GMMSegmenter(4, beta=0, bias_field="auto", random_state=0)
        labels = segmenter.fit_predict(padded)
    assert np.all(np.isfinite(segmenter.bias_field_))
    assert _log_correlation(segmenter.bias_field_[:, :128], field) > 0.9
    assert np.all(labels[:, 128:] == 1)


def test_a_field_that_would_explode_is_refused(blobs, monkeypatch):
    image, _, _ = blobs
    monkeypatch.setattr(_bias, "MAX_FIELD_RATIO", 1.1)  # the true field spans 1.5
    segmenter = GMMSegmenter(3, beta=0, bias_field="auto", random_state=0)
    with pytest.warns(BiasFieldWarning, match="would scale intensities by up to") as record:
        labels = segmenter.fit_predict(image)
    assert np.all(segmenter.bias_field_ == 1)
    assert np.all(labels >= 1)
    assert "Try a lower degree" in str(record[0].message)
    # on an image padded with zeros (skull stripping), the refusal names the zeros
    padded = np.pad(image, 64)
    with pytest.warns(BiasFieldWarning, match="would scale intensities") as record:
        GMMSegmenter(3, beta=0, bias_field="auto", random_state=0).fit(padded)
    said = str(record[0].message)
    assert "% of its pixels are exactly 0, a background padded with zeros" in said, said
    assert "(mask=image > 0)" in said and "lower degree" not in said
    share = int(said.split("% of its pixels")[0].split()[-1])
    assert abs(share - 100 * (1 - image.size / padded.size)) <= 2


def test_a_field_that_takes_the_place_of_a_class_is_refused():
    # a large bright core inside a shell one step darker, noisy, no field: a
    # smooth dip over the core makes it look like the shell, and under the
    # spatial prior the core's class then keeps almost no voxel
    centred = np.indices((40, 40, 40)) - 19.5
    radius = np.sqrt((centred**2).sum(axis=0)) / 20
    truth = np.where(radius < 0.35, 3, np.where(radius < 0.7, 2, 1))
    rng = np.random.default_rng(0)
    image = np.array([0.4, 0.8, 1.0])[truth - 1] + rng.normal(scale=0.12, size=truth.shape)
    original = image.copy()
    plain = GMMSegmenter(3, random_state=0).fit(image)
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = segmenter.fit_predict(image)
    said = [str(w.message) for w in caught]
    assert len(said) == 1, said  # the refusal only, not the emptied class too
    assert issubclass(caught[0].category, BiasFieldWarning)
    assert "leaves a class almost no pixels under the spatial prior" in said[0]
    assert "left without bias-field correction (its field is all ones)" in said[0]
    assert np.all(segmenter.bias_field_ == 1)
    np.testing.assert_array_equal(labels, plain.predict(image))
    assert np.bincount(labels.ravel(), minlength=4)[3] > 0.1 * np.sum(truth == 3)
    np.testing.assert_array_equal(image, original)


def test_non_finite_pixels_are_label_zero_never_nan(blobs):
    image, _, _ = blobs
    holed = image.copy()
    holed[10:20, 30:40] = np.nan
    holed[50, 50] = np.inf
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0)
    labels = segmenter.fit_predict(holed)
    assert np.all(labels[10:20, 30:40] == 0) and labels[50, 50] == 0
    assert np.all(np.isfinite(segmenter.bias_field_))
    posteriors = segmenter.predict_proba(holed)
    assert not np.isnan(posteriors).any()


def test_the_callers_arrays_are_left_alone(blobs):
    image, _, _ = blobs
    image = image.astype(np.uint16)
    mask = np.ones(image.shape, dtype=bool)
    mask[:5] = False
    image_copy, mask_copy = image.copy(), mask.copy()
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0)
    segmenter.fit(image, mask=mask)
    segmenter.predict(image, mask=mask)
    segmenter.predict_proba(image, mask=mask)
    segmenter.estimate_bias_field(image, mask=mask)
    segmenter.score(image, mask=mask)
    np.testing.assert_array_equal(image, image_copy)
    np.testing.assert_array_equal(mask, mask_copy)


def test_predict_divides_by_the_field_estimate_bias_field_returns(blobs):
    image, _, _ = blobs
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0).fit(image)
    field = segmenter.estimate_bias_field(image)
    posteriors = segmenter.predict_proba(image)
    log_likelihood = segmenter.score_samples(image)
    plain = GMMSegmenter(3, random_state=0).fit(image)
    plain.model_ = segmenter.model_  # the same mixture, without the field
    corrected = image / field.astype(np.float64)
    np.testing.assert_allclose(posteriors, plain.predict_proba(corrected), atol=1e-4)
    # the density of the observed values includes the correction's Jacobian
    np.testing.assert_allclose(
        log_likelihood, plain.score_samples(corrected) - np.log(field), atol=1e-4
    )


def test_fit_predict_uses_the_field_fitted_with_the_mixture(blobs):
    image, truth, _ = blobs
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0)
    labels = segmenter.fit_predict(image)
    np.testing.assert_allclose(segmenter.estimate_bias_field(image), segmenter.bias_field_,
                               rtol=0.02)
    assert np.mean(labels != segmenter.predict(image)) < 0.01
    posteriors = segmenter.fit_transform(image)
    np.testing.assert_array_equal(np.argmax(posteriors, axis=-1) + 1, labels)


def test_model_files_keep_the_setting(blobs, tmp_path):
    image, _, _ = blobs
    for setting in ("auto", 2):
        segmenter = GMMSegmenter(3, bias_field=setting, random_state=0).fit(image)
        path = save_model(segmenter, tmp_path / f"model-{setting}.npz")
        loaded = load_model(path)
        assert loaded.bias_field == setting
        np.testing.assert_array_equal(loaded.predict(image), segmenter.predict(image))


def test_a_model_file_labels_its_training_image_as_the_fitted_estimator_did(tmp_path):
    # camera's field is ill-determined: estimated again with the mixture held
    # fixed, it moved 19 % of the labels of the loaded model
    from skimage import data

    camera = data.camera()[::2, ::2]
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0).fit(camera)
    loaded = load_model(save_model(segmenter, tmp_path / "model.npz"))
    np.testing.assert_array_equal(loaded.predict(camera), segmenter.predict(camera))
    for kept, stored in zip(loaded._training_fields, segmenter._training_fields):
        np.testing.assert_array_equal(kept.coefficients, stored.coefficients)  # bit for bit
        assert kept.geometry == stored.geometry and kept.degree == stored.degree
    # another image (here one pixel changed) gets its own field, as in the session
    changed = camera.copy()
    changed[0, 0] ^= 1
    np.testing.assert_array_equal(loaded.predict(changed), segmenter.predict(changed))


@pytest.mark.parametrize(("change", "match"), [
    (lambda t: t.update(digest="x"), "no valid digest"),
    (lambda t: t.update(fields=[]), r"holds 0 fields"),
    (lambda t: t["fields"][0].update(degree=99), r"degree 99; expected 1 to 10"),
    (lambda t: t["fields"][0].update(shape=[0, 5]), r"has shape \[0, 5\]"),
    (lambda t: t["fields"][0].update(spacing=[1.0, -1.0]), r"has spacing \[1\.0, -1\.0\]"),
    (lambda t: t["fields"][0].update(coefficients=[[1e999]]), r"finite coefficients of shape"),
    (lambda t: t["fields"][0].update(coefficients="no"), r"finite coefficients of shape"),
    (lambda t: t["fields"].__setitem__(0, 3), r"field 0 must be an object or null"),
])
def test_a_model_file_s_training_field_is_checked(blobs, tmp_path, change, match):
    import json

    image, _, _ = blobs
    path = save_model(GMMSegmenter(3, bias_field=2, beta=0, random_state=0).fit(image),
                      tmp_path / "model.npz")
    with np.load(path) as archive:
        arrays = dict(archive)
    metadata = json.loads(str(arrays["metadata"]))
    change(metadata["training_field"])
    arrays["metadata"] = np.array(json.dumps(metadata))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"bad\.npz: not a valid gmm-segmenter model file: "
                       r"'training_field'.*" + match):
        load_model(tmp_path / "bad.npz")


def test_model_files_without_a_field_are_as_before(quadrant_image, tmp_path):
    import json

    image, _ = quadrant_image
    path = save_model(GMMSegmenter(2, random_state=0).fit(image), tmp_path / "model.npz")
    with np.load(path) as archive:
        params = json.loads(str(archive["metadata"]))["params"]
    # older versions refuse parameters they do not know: leave the default out
    assert "bias_field" not in params
    assert load_model(path).bias_field is None


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (0, r"'bias_field' parameter.*Got 0 instead"),
        (11, r"'bias_field' parameter.*range \[1, 10\]"),
        ("yes", r"'bias_field' parameter.*\{'auto'\}.*Got 'yes'"),
        (2.5, r"'bias_field' parameter.*Got 2.5"),
        (True, r"'bias_field' parameter.*Got True instead; use bias_field='auto'"),
        (False, r"'bias_field' parameter.*Got False instead; use bias_field=None for no"),
    ],
)
def test_bad_settings_are_refused_by_name(quadrant_image, value, match):
    image, _ = quadrant_image
    with pytest.raises(ValueError, match=match):
        GMMSegmenter(bias_field=value).fit(image)


def test_a_spacing_for_other_dimensions_is_refused_without_the_prior_too(blobs):
    image, _, _ = blobs
    segmenter = GMMSegmenter(3, beta=0, bias_field="auto", random_state=0).fit(image)
    segmenter.set_params(spacing=(1.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="spacing must be None or a sequence of 2"):
        segmenter.predict(image)


@pytest.mark.parametrize(
    ("shape", "amplitude"),
    # a line under a 40 % field can trap EM in a wrong optimum (docs/bias-field.md)
    [((1000,), 0.2), ((6, 8, 10, 12), 0.4)],
)
def test_one_and_four_dimensional_images(shape, amplitude):
    image, truth, field = biased_blobs(shape, amplitude=amplitude, noise=5.0, seed=4)
    segmenter = GMMSegmenter(3, beta=0, bias_field=2, random_state=0)
    labels = segmenter.fit_predict(image)
    assert segmenter.bias_field_.shape == shape
    assert _log_correlation(segmenter.bias_field_, field) > 0.9
    assert ari(truth, labels) > 0.9


def test_predict_on_the_training_image_uses_the_fitted_field(blobs):
    image, _, _ = blobs
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0).fit(image)
    np.testing.assert_array_equal(
        segmenter.predict(image.copy()), GMMSegmenter(3, bias_field="auto",
                                                      random_state=0).fit_predict(image)
    )
    np.testing.assert_array_equal(segmenter.estimate_bias_field(image), segmenter.bias_field_)
    # another image (here one pixel changed) gets its own estimate
    other = image.copy()
    other[0, 0] *= 1.5
    assert not np.array_equal(segmenter.estimate_bias_field(other), segmenter.bias_field_)
    # so does the training image under another mask
    mask = np.ones(image.shape, bool)
    mask[:10] = False
    assert not np.array_equal(segmenter.estimate_bias_field(image, mask=mask),
                              segmenter.bias_field_)


def test_a_colour_image_whose_field_is_refused_is_segmented_as_without_one(monkeypatch):
    from skimage import data

    image = data.astronaut()[::2, ::2]
    monkeypatch.setattr(_bias, "MAX_FIELD_RATIO", 1.0001)  # refuse any field
    segmenter = GMMSegmenter(3, channel_axis=-1, beta=0, bias_field=1, random_state=0)
    with pytest.warns(BiasFieldWarning):
        labels = segmenter.fit_predict(image)
    plain = GMMSegmenter(3, channel_axis=-1, beta=0, random_state=0).fit(image)
    np.testing.assert_array_equal(segmenter.means_, plain.means_)  # the screened starts too
    np.testing.assert_array_equal(labels, plain.predict(image))
    assert np.all(segmenter.bias_field_ == 1)


@pytest.mark.parametrize("name", ["camera", "moon"])
def test_a_model_labels_its_own_image_alike_when_it_cannot_recognise_it(name):
    # given as float32, the training image is not recognised: its field is
    # estimated with the mixture held fixed, and must land where the fit's did
    from skimage import data

    image = getattr(data, name)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GMMSegmenter(3, bias_field="auto", random_state=0).fit(image)
        labels = model.predict(image)
        again = model.predict(image.astype(np.float32))
        field = model.estimate_bias_field(image.astype(np.float32))
    assert np.mean(labels == again) > 0.99
    np.testing.assert_allclose(field, model.bias_field_, rtol=0.02)



def test_a_refused_field_says_what_the_input_warns_about_once():
    # grey stored as RGB (its channels' warning) and mostly negative (no field):
    # the fit redone without a field must not say the first again
    rng = np.random.default_rng(0)
    grey = np.repeat([-60.0, 20.0], 800).reshape(40, 40) + rng.normal(0, 5, (40, 40))
    rgb = np.dstack([grey] * 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segmenter = GMMSegmenter(2, channel_axis=-1, bias_field="auto", random_state=0).fit(rgb)
    messages = [str(w.message) for w in caught]
    assert sum("linearly dependent" in m for m in messages) == 1, messages
    assert sum(issubclass(w.category, BiasFieldWarning) for w in caught) == 1, messages
    assert np.all(segmenter.bias_field_ == 1)


def test_a_refused_field_says_each_fit_warning_once():
    # too small for a field and for choosing the smoothing: the fit redone
    # without a field must not say the smoothing's warning again
    tiny = np.zeros((8, 8), np.uint8)
    tiny[:, 4:] = 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GMMSegmenter(2, bias_field="auto", random_state=0).fit(tiny)
    messages = [str(w.message) for w in caught]
    assert sum("needs at least 256 valid pixels" in m for m in messages) == 1, messages
    assert sum(issubclass(w.category, BiasFieldWarning) for w in caught) == 1, messages
    assert all(w.filename == __file__ for w in caught)  # they point at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segmenter = GMMSegmenter(2, bias_field="auto", random_state=0)
        with pytest.raises(UserWarning):
            segmenter.fit(tiny)
        assert not hasattr(segmenter, "model_")  # a warning turned error leaves it unfitted


def test_hmrf_em_with_a_field_has_three_times_the_iterations():
    """Refitting the field at every iteration moves the data HMRF-EM fits: on
    the unevenly lit micrograph of docs/bias-field.md it settles after more
    than max_iter_spatial=20 iterations, and settled it agrees far better
    with the evenly lit image's labels."""
    from skimage import data
    from sklearn.exceptions import ConvergenceWarning

    tissue = data.immunohistochemistry()
    rows, cols = np.indices(tissue.shape[:2]) / 512
    light = 0.4 + 0.6 * np.exp(-((rows - 0.3) ** 2 + (cols - 0.35) ** 2) / (2 * 0.5**2))
    uneven = (tissue * light[..., np.newaxis]).astype(np.uint8)
    params = dict(channel_axis=-1, bias_field="auto", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        segmenter = GMMSegmenter(3, **params).fit(uneven)
    first_run = len(GMMSegmenter(3, channel_axis=-1, random_state=0).fit(uneven).spatial_lower_bounds_)
    assert segmenter.spatial_converged_
    assert segmenter.spatial_n_iter_ - first_run > segmenter.max_iter_spatial
    # a budget that runs out says which one
    with pytest.warns(ConvergenceWarning, match=r"HMRF-EM did not converge in 6 iterations "
                      r"\(3 x max_iter_spatial=2, with a bias field\)"):
        GMMSegmenter(3, max_iter_spatial=2, **params).fit(uneven[::4, ::4])


@pytest.mark.parametrize("settings", [{}, {"max_iter_spatial": 1}, {"n_components": "auto"}])
def test_a_grey_fit_whose_field_is_refused_is_the_fit_without_one(monkeypatch, settings):
    # one deterministic start either way: the first HMRF-EM run (without a
    # field) is kept, not done again; everything fitted is as without a field,
    # what it warns about included
    from skimage import data

    image = data.camera()[::2, ::2]
    monkeypatch.setattr(_bias, "MAX_FIELD_RATIO", 1.0001)  # refuse any field
    settings = {"n_components": 3, **settings}

    runs = []
    hmrf_em = _hmrf.hmrf_em
    monkeypatch.setattr(_hmrf, "hmrf_em", lambda *a, **k: runs.append(1) or hmrf_em(*a, **k))

    def fitted(**extra):
        runs.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            segmenter = GMMSegmenter(random_state=0, **settings, **extra).fit(image)
        segmenter.runs = len(runs)
        said = [(w.category, str(w.message)) for w in caught]
        found = {
            name: value for name, value in vars(segmenter).items()
            if name.endswith("_") and not name.startswith("_") and name != "bias_field_"
        }
        return segmenter, found, said

    segmenter, found, said = fitted(bias_field="auto")
    unfielded, plain, plain_said = fitted()
    assert segmenter.runs == unfielded.runs == 1  # HMRF-EM ran once
    assert [category for category, _ in said].count(BiasFieldWarning) == 1
    assert [w for w in said if w[0] is not BiasFieldWarning] == plain_said
    if "max_iter_spatial" in settings:
        assert any(category is ConvergenceWarning for category, _ in plain_said)
    assert found.keys() == plain.keys()
    for name, value in plain.items():
        if name == "model_":
            np.testing.assert_array_equal(found[name].mixture.means, value.mixture.means)
            np.testing.assert_array_equal(found[name].mixture.covariances,
                                          value.mixture.covariances)
            assert found[name].beta == value.beta
        else:
            np.testing.assert_array_equal(found[name], value, err_msg=name)
    assert np.all(segmenter.bias_field_ == 1)


@pytest.mark.parametrize("beta", ["auto", 0.0])
def test_a_strong_ramp_on_a_photograph_is_corrected_not_refused(beta):
    # camera's large dark coat and bright sky: a field estimated with the
    # mixture of the unevenly lit picture held fixed followed that shading
    # (36 times across the picture) and was refused; the picture was then
    # segmented as if evenly lit
    from skimage import data

    camera = data.camera().astype(np.float64)
    ramp = np.linspace(0.5, 1.5, camera.shape[1])[np.newaxis, :]
    lit = camera * ramp
    with warnings.catch_warnings():
        warnings.simplefilter("error", BiasFieldWarning)
        segmenter = GMMSegmenter(3, beta=beta, bias_field="auto", random_state=0).fit(lit)
        # a new image's field (this one, as float32: not recognised as the
        # training image) is estimated too, and lands where the fit's did
        again = segmenter.estimate_bias_field(lit.astype(np.float32))
        mirrored = segmenter.estimate_bias_field(np.ascontiguousarray(lit[:, ::-1]))
    field = segmenter.bias_field_
    left, right = field[:, :32].mean(), field[:, -32:].mean()
    assert 2.3 < right / left < 3.5, (left, right)  # the ramp is 1.5 / 0.5 = 3 across
    np.testing.assert_allclose(again, field, rtol=0.1)
    assert mirrored[:, :32].mean() > 2 * mirrored[:, -32:].mean()
    evenly_lit = GMMSegmenter(3, beta=beta, random_state=0).fit_predict(camera)
    plain = GMMSegmenter(3, beta=beta, random_state=0).fit_predict(lit)
    assert ari(evenly_lit, segmenter.predict(lit)) > ari(evenly_lit, plain) + 0.05


@pytest.mark.parametrize("degree, advice", [
    (2, "(bias_field=1)"), ("auto", "(bias_field=1 or 2)"), (5, "(bias_field=1 to 4)"),
])
def test_a_refused_field_advises_only_lower_degrees(blobs, monkeypatch, degree, advice):
    image, _, _ = blobs
    monkeypatch.setattr(_bias, "MAX_FIELD_RATIO", 1.0001)  # refuse any field
    with pytest.warns(BiasFieldWarning) as caught:
        GMMSegmenter(3, beta=0, bias_field=degree, random_state=0).fit(image)
    assert any(f"Try a lower degree {advice} or bias_field=None." in str(w.message)
               for w in caught), [str(w.message) for w in caught]


def _vignette(shape):
    rows, columns = np.indices(shape, dtype=np.float64)
    y = (rows - (shape[0] - 1) / 2) / ((shape[0] - 1) / 2)
    x = (columns - (shape[1] - 1) / 2) / ((shape[1] - 1) / 2)
    return 1 - 0.25 * (x**2 + y**2)  # 1 at the centre, 0.5 in the corners


@pytest.mark.parametrize("beta", ["auto", 0.0])
@pytest.mark.parametrize("name", ["cell", "moon"])
def test_a_new_image_darker_or_vignetted_is_corrected_to_the_models_labels(name, beta):
    # a field with mean log 0 cannot darken a new image as a whole: held so,
    # a vignette (or the same picture at 85 %) was refused or mislabelled
    from skimage import data

    image = getattr(data, name)().astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BiasFieldWarning)
        model = GMMSegmenter(3, beta=beta, bias_field="auto", random_state=0).fit(image)
        labels = model.predict(image)
        vignette = _vignette(image.shape)
        field = model.estimate_bias_field(image * vignette)
        assert np.mean(model.predict(image * vignette) == labels) > 0.97
        assert np.mean(model.predict(image * 0.85) == labels) > 0.99
        dimmed = model.estimate_bias_field(image * 0.85)
    np.testing.assert_allclose(dimmed / model.bias_field_, 0.85, rtol=0.02)
    assert _log_correlation(field / model.bias_field_, vignette) > 0.95
    assert field[0, 0] / field[tuple(s // 2 for s in image.shape)] < 0.65  # corners darker


def test_a_degree_set_after_fitting_is_estimated_on_the_training_image_too(blobs):
    image, _, _ = blobs
    model = GMMSegmenter(3, beta=0, bias_field="auto", random_state=0).fit(image)
    assert np.array_equal(model.estimate_bias_field(image), model.bias_field_)
    model.set_params(bias_field=1)  # a plane: no longer the fitted cubic
    plane = model.estimate_bias_field(image)
    assert not np.allclose(plane, model.bias_field_)
    log_plane = np.log(plane)
    rows, columns = np.indices(image.shape)
    design = np.column_stack([np.ones(image.size), rows.ravel(), columns.ravel()])
    residual = np.linalg.lstsq(design, log_plane.ravel(), rcond=None)[1]
    assert residual[0] < 1e-6 * image.size  # it is a plane in the log domain


def test_estimate_bias_field_says_what_it_gives_for_an_image_too_small(blobs):
    # it segments nothing: its refusal names the field it returns instead
    image, _, _ = blobs
    segmenter = GMMSegmenter(3, bias_field="auto", random_state=0).fit(image)
    with pytest.warns(BiasFieldWarning) as caught:
        field = segmenter.estimate_bias_field(image[:8, :8])
    message = str(caught[0].message)
    assert "left without bias-field correction (its field is all ones)" in message
    assert "segmented" not in message
    assert field.shape == (8, 8) and np.all(field == 1)
