"""The fitted model: one frozen object behind the fitted attributes, the
kernel, model files and dask; files written by 0.1.0 still load."""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from gmm_segmenter import GMMSegmenter, load_model, save_model
from gmm_segmenter._image import as_images
from gmm_segmenter._kernel import predict_image
from gmm_segmenter._model import FittedModel

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("name", "image", "expected_key"),
    [
        ("model-0.1.0-gray-spatial.npz", data.camera()[::8, ::8], "gray"),
        ("model-0.1.0-rgb-auto-diag.npz", data.astronaut()[::8, ::8], "rgb"),
    ],
)
def test_model_files_written_by_0_1_0_load_and_predict_as_they_did(name, image, expected_key):
    segmenter = load_model(DATA / name)
    with np.load(DATA / "model-0.1.0-expected.npz") as expected:
        proba = expected[expected_key + "_proba"]
        # the spatial prior's compiled mean field rounds differently: equal to rtol 1e-5
        np.testing.assert_allclose(segmenter.predict_proba(image), proba, rtol=1e-5, atol=1e-30)
        top_two = np.sort(proba, axis=-1)[..., -2:]
        decided = top_two[..., 1] - top_two[..., 0] > 1e-5  # labels agree but at ties
        np.testing.assert_array_equal(
            segmenter.predict(image)[decided], expected[expected_key][decided]
        )


def test_a_0_1_0_model_keeps_its_fitted_summary():
    segmenter = load_model(DATA / "model-0.1.0-rgb-auto-diag.npz")
    assert segmenter.covariance_type == "diag" and segmenter.beta_ == 0.0
    assert segmenter.n_components_ == len(segmenter.weights_) == 4
    assert list(segmenter.n_components_candidates_) == [2, 3, 4]
    assert segmenter.channel_axis == -1


@pytest.fixture(scope="module")
def fitted():
    return GMMSegmenter(3, random_state=0).fit(data.camera()[::4, ::4])


def test_fitted_attributes_are_views_of_the_frozen_model(fitted):
    model = fitted.model_
    assert isinstance(model, FittedModel)
    assert fitted.means_ is model.mixture.means
    assert fitted.covariances_ is model.mixture.covariances
    assert fitted.intensity_scale_ is model.scale
    assert fitted.beta_ == model.beta > 0
    assert (fitted.n_components_, fitted.n_features_in_) == (3, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.beta = 2.0


def test_an_unfitted_segmenter_has_no_fitted_attributes():
    segmenter = GMMSegmenter()
    for name in ("model_", "means_", "beta_", "n_features_in_", "n_components_"):
        assert not hasattr(segmenter, name)
    with pytest.raises(AttributeError, match="not fitted yet"):
        segmenter.weights_


def test_the_kernel_alone_gives_the_estimators_labels(fitted):
    image = data.camera()[::4, ::4]
    view = as_images(image, channel_axis=None)[0]
    np.testing.assert_array_equal(predict_image(view, fitted.model_, "labels"), fitted.predict(image))
    np.testing.assert_array_equal(
        predict_image(view, fitted.model_, "posteriors"), fitted.predict_proba(image)
    )
    pixelwise = fitted.model_.with_settings(beta=0.0)
    assert not np.array_equal(
        predict_image(view, pixelwise, "labels"), fitted.predict(image)
    )


def test_the_model_round_trips_through_pickle_and_model_files(fitted, tmp_path):
    image = data.camera()[::4, ::4]
    copy = pickle.loads(pickle.dumps(fitted.model_))
    view = as_images(image, channel_axis=None)[0]
    np.testing.assert_array_equal(predict_image(view, copy, "labels"), fitted.predict(image))
    path = save_model(fitted, tmp_path / "model.npz")
    loaded = load_model(path)
    for name, array in fitted.model_.arrays().items():
        np.testing.assert_array_equal(loaded.model_.arrays()[name], array)
    assert loaded.beta_ == fitted.beta_


def test_the_kernel_refuses_an_unknown_output(fitted):
    view = as_images(np.zeros((4, 4)), channel_axis=None)[0]
    with pytest.raises(ValueError, match="output must be one of labels, posteriors"):
        predict_image(view, fitted.model_, "histogram")


def test_a_model_file_without_its_fitted_beta_is_refused(fitted, tmp_path):
    path = save_model(fitted, tmp_path / "model.npz")
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    metadata = json.loads(str(arrays.pop("metadata")))
    del metadata["fitted"]["beta_"]
    np.savez(tmp_path / "stripped.npz", **arrays, metadata=np.array(json.dumps(metadata)))
    with pytest.raises(ValueError, match="stripped.npz: .*records no fitted beta_"):
        load_model(tmp_path / "stripped.npz")


def test_the_fitted_arrays_cannot_be_written_in_place(fitted):
    image = data.camera()[::4, ::4]
    before = fitted.predict(image)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_",
                 "intensity_offset_", "intensity_scale_"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(fitted, name)[0] = 0
    np.testing.assert_array_equal(fitted.predict(image), before)


def test_an_image_far_from_every_class_is_warned_about():
    from skimage import data

    camera, coins = data.camera(), data.coins()
    segmenter = GMMSegmenter(3, beta=0, random_state=0).fit(camera)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the training image, another photo, a brighter one
        segmenter.predict(camera)
        segmenter.predict(coins)
        segmenter.predict(np.clip(camera * 1.3, 0, 255).astype(np.uint8))
        segmenter.score_samples(coins.astype(np.uint16) * 256)  # scores are for such images
    with pytest.warns(UserWarning, match=r"X's values lie far from every class of this model: "
                                         r"its median pixel is .* another bit depth"):
        labels = segmenter.predict(coins.astype(np.uint16) * 256)
    assert len(np.unique(labels)) == 1  # why it matters: one class


@pytest.mark.parametrize("channel_axis", [None, -1])
def test_an_image_converted_to_floats_in_0_1_is_warned_about(channel_axis):
    # skimage.img_as_float puts 8-bit values in [0, 1]: within 2 standard
    # deviations of a wide dark class, so not far from the model, yet one class
    from skimage import data, img_as_float

    image = data.camera()[::2, ::2] if channel_axis is None else data.astronaut()[::2, ::2]
    segmenter = GMMSegmenter(3, beta=0, channel_axis=channel_axis, random_state=0).fit(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the image itself, a crop of it, a darker one
        segmenter.predict(image)
        segmenter.predict(image[40:90, 40:90])
        segmenter.predict((image * 0.1).astype(image.dtype))
        segmenter.predict(np.full_like(image, 30))
    with pytest.warns(UserWarning, match=r"X's values span 0\.\d+ \(1st to 99th percentile, "
                                         r"in the widest channel\), where this model's classes "
                                         r"span .* multiplied by 255 they would span"):
        labels = segmenter.predict(img_as_float(image))
    assert len(np.unique(labels)) <= 2  # why it matters


def test_an_image_of_many_channels_is_not_far_from_its_own_model():
    # A spatial axis taken for channels gives hundreds of them; a class's own
    # pixels then lie about sqrt(channels) standard deviations from its mean,
    # which is no sign of another bit depth.
    from skimage import data

    image = data.astronaut()[::2, ::2]
    with pytest.warns(UserWarning, match="looks like a spatial axis"):
        segmenter = GMMSegmenter(3, beta=0, channel_axis=0, random_state=0).fit(image)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segmenter.predict(image)
    messages = [str(w.message) for w in caught]
    assert not any("far from every class" in m for m in messages), messages
    assert any("looks like a spatial axis" in m for m in messages), messages
    # the same model still warns about an image of another bit depth
    with pytest.warns(UserWarning, match="far from every class"):
        segmenter.predict(image.astype(np.uint16) * 256)


def test_labelling_an_image_whose_mask_keeps_no_pixel_says_so():
    # fit refuses such an image; predict's zeros alone would look like a result
    from skimage import data

    image = data.camera()[::4, ::4]
    segmenter = GMMSegmenter(2, random_state=0).fit(image)
    nothing = np.zeros(image.shape, bool)
    with pytest.warns(UserWarning, match=r"The mask keeps no pixel of X, so every label is 0"):
        assert not segmenter.predict(image, mask=nothing).any()
    with pytest.warns(UserWarning, match=r"The mask keeps no pixel of X\[1\], so every posterior"):
        segmenter.predict_proba([image, image], mask=[~nothing, nothing])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segmenter.predict(image, mask=~nothing)
        assert np.isnan(segmenter.score_samples(image, mask=nothing)).all()


def test_fitting_a_batch_with_an_image_whose_mask_keeps_no_pixel_says_so():
    # one such image is refused; in a batch it was silently left out of the fit
    from skimage import data

    image = data.camera()[::4, ::4]
    nothing = np.zeros(image.shape, bool)
    with pytest.raises(ValueError, match="Every pixel of X is masked out"):
        GMMSegmenter(2, beta=0.0, random_state=0).fit(image, mask=nothing)
    with pytest.warns(UserWarning, match=r"The mask keeps no pixel of X\[1\], so it adds "
                                         r"nothing to the fit \(its labels would all be 0\)"):
        labels = GMMSegmenter(2, beta=0.0, random_state=0).fit_predict(
            [image, image], mask=[None, nothing])
    assert labels[0].min() == 1 and not labels[1].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GMMSegmenter(2, beta=0.0, random_state=0).fit([image, image], mask=[None, ~nothing])
    # an image of no finite value is said alike (it was silent in fit and predict)
    blank = np.full(image.shape, np.nan)
    with pytest.warns(UserWarning, match=r"X\[1\] has no finite value \(every pixel is NaN or "
                                         r"infinite\), so it adds nothing to the fit"):
        segmenter = GMMSegmenter(2, beta=0.0, random_state=0).fit([image * 1.0, blank])
    with pytest.warns(UserWarning, match=r"X has no finite value \(every pixel is NaN or "
                                         r"infinite\), so every label is 0"):
        assert not segmenter.predict(blank).any()
    partly = image * 1.0
    partly[:10] = np.nan
    keep = np.zeros(image.shape, bool)
    keep[:10] = True
    with pytest.warns(UserWarning, match=r"X has no finite value \(every pixel the mask keeps "
                                         r"is NaN or infinite\), so every posterior is 0"):
        segmenter.predict_proba(partly, mask=keep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segmenter.predict(partly)  # some NaN: label 0 there, as documented, no warning
