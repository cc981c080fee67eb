"""Inputs that used to give an unclear message or a silent surprise."""

import warnings

import numpy as np
import pytest

from gmm_segmenter import GMMSegmenter
from gmm_segmenter import io as gio


def _image(seed=0):
    rng = np.random.default_rng(seed)
    return np.repeat([10.0, 100.0], 50)[np.newaxis].repeat(6, axis=0) + rng.normal(size=(6, 100))


@pytest.mark.parametrize("params, match", [
    ({"beta": 1e308}, r"'beta' parameter of GMMSegmenter must be a float in the range "
                      r"\[0.0, 1000000.0\]"),
    ({"reg_covar": 1e308}, r"'reg_covar' parameter of GMMSegmenter must be a float in the range"),
    ({"spacing": (1e-300, 1e300)}, r"voxel sizes 10\*\*600 times apart; they must be within"),
])
def test_huge_parameters_name_themselves(params, match):
    with pytest.raises(ValueError, match=match):
        GMMSegmenter(2, **params).fit(_image())


def test_channel_axis_true_is_not_axis_one():
    rgb = np.dstack([_image(), _image(1), _image(2)])
    with pytest.raises(ValueError, match="channel_axis=True is not an axis"):
        GMMSegmenter(2, channel_axis=True).fit(rgb)


@pytest.mark.parametrize("name", [
    "n_components", "beta", "n_init", "max_iter", "max_samples", "connectivity",
    "max_iter_spatial", "bias_field",
])
@pytest.mark.parametrize("value", [True, np.True_, False])
def test_a_bool_is_not_taken_for_a_number(name, value):
    if name == "n_components":
        segmenter = GMMSegmenter(value)
    else:
        segmenter = GMMSegmenter(2, **{name: value})
    with pytest.raises(ValueError, match=rf"'{name}' parameter of GMMSegmenter must be .*"
                                         rf"Got {value!r} instead"):
        segmenter.fit(_image())


def test_the_mask_of_a_masked_array_is_used():
    image = _image()
    hidden = np.zeros(image.shape, bool)
    hidden[:, :10] = True
    masked = np.ma.masked_array(image, mask=hidden)
    segmenter = GMMSegmenter(2, beta=0.0, random_state=0)
    labels = segmenter.fit_predict(masked)
    assert (labels[hidden] == 0).all() and (labels[~hidden] > 0).all()
    np.testing.assert_array_equal(labels, GMMSegmenter(2, beta=0.0, random_state=0)
                                  .fit_predict(image, mask=~hidden))


def test_a_pil_image_is_read_as_numpy_reads_it():
    # it was refused with "got Image", though np.asarray reads it
    from PIL import Image
    from skimage import data

    picture = data.astronaut()[::4, ::4]
    segmenter = GMMSegmenter(3, channel_axis=-1, beta=0.0, random_state=0)
    labels = segmenter.fit_predict(Image.fromarray(picture))
    reference = GMMSegmenter(3, channel_axis=-1, beta=0.0, random_state=0).fit_predict(picture)
    np.testing.assert_array_equal(labels, reference)
    np.testing.assert_array_equal(segmenter.predict([Image.fromarray(picture)])[0], reference)
    # a palette image's values are indices, not colours: refused with the conversion
    with pytest.raises(ValueError, match=r"X is a PIL image in palette mode \('P', .*pass "
                                         r"np\.asarray\(X\.convert\('RGB'\)\) with "
                                         r"channel_axis=-1"):
        segmenter.fit(Image.fromarray(picture).convert("P"))


def test_nan_in_a_mask_is_refused():
    mask = np.ones(_image().shape)
    mask[0, 0] = np.nan
    with pytest.raises(ValueError, match="mask for X holds NaN"):
        GMMSegmenter(2).fit(_image(), mask=mask)


def test_nan_in_a_dask_mask_is_refused_as_in_memory():
    # it counted as True: the pixel was fitted and labelled
    da = pytest.importorskip("dask.array")
    image = _image()
    mask = np.ones(image.shape)
    mask[0, 0] = np.nan
    lazy_image, lazy_mask = da.from_array(image, chunks=25), da.from_array(mask, chunks=25)
    with pytest.raises(ValueError, match="mask for X holds NaN"):
        GMMSegmenter(2, beta=0.0, random_state=0).fit(lazy_image, mask=lazy_mask)
    segmenter = GMMSegmenter(2, beta=0.0, random_state=0).fit(image)
    with pytest.raises(ValueError, match="mask for X holds NaN"):
        segmenter.predict(lazy_image, mask=lazy_mask).compute()
    # a float mask without NaN: nonzero is True, as in memory
    mask[0, 0] = 0.0
    labels = segmenter.predict(lazy_image, mask=da.from_array(mask, chunks=25)).compute()
    np.testing.assert_array_equal(labels, segmenter.predict(image, mask=mask))
    assert labels[0, 0] == 0


def test_a_dask_array_with_unknown_chunks_says_so():
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(_image(), chunks=(3, 50))
    lazy = lazy[lazy[:, 0] > -1e9]
    with pytest.raises(ValueError, match=r"unknown chunk sizes .*compute_chunk_sizes\(\)"):
        GMMSegmenter(2).fit(lazy)


def test_a_dask_mask_with_unknown_chunks_says_so():
    da = pytest.importorskip("dask.array")
    image = da.from_array(_image(), chunks=(3, 50))
    rows = da.ones(image.shape, chunks=(3, 50), dtype=bool)
    unknown = rows[rows[:, 0]]  # the same rows, of a size dask cannot know
    with pytest.raises(ValueError, match=r"^mask for X is a dask array with unknown chunk "
                       r"sizes \(shape \(nan, \d+\)\); call mask\.compute_chunk_sizes\(\)"):
        GMMSegmenter(2).fit(image, mask=unknown)


def test_missing_zarr_chunks_are_reported(tmp_path):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    store = zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=(10, 10), chunks=(5, 5),
                            dtype="uint8")
    store[:5, :5] = 3
    with pytest.warns(UserWarning, match=r"v.zarr: 3 of 4 chunks are not stored; zarr reads "
                                         r"them as the fill value 0"):
        gio.read_zarr(tmp_path / "v.zarr")
    store[:] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gio.read_zarr(tmp_path / "v.zarr")


def test_an_automatic_search_over_a_huge_range_ends_quickly():
    import time

    image = np.random.default_rng(0).normal(size=(40, 50))  # 2 000 pixels
    started = time.perf_counter()
    segmenter = GMMSegmenter("auto", n_components_range=(1, 10**6), beta=0.0,
                             random_state=0).fit(image)
    assert time.perf_counter() - started < 60
    assert len(segmenter.bic_curve_) < 100


def test_a_colour_image_without_channel_axis_is_segmented_as_a_volume_with_a_warning():
    from skimage import data

    from gmm_segmenter import GMMSegmenter

    photo = data.astronaut()[::4, ::4]  # 128 x 128 x 3
    with pytest.warns(UserWarning, match=r"X has shape \(128, 128, 3\): its last axis of 3 "
                                         r"looks like colour channels.*channel_axis=-1") as seen:
        labels = GMMSegmenter(3, beta=0, random_state=0).fit_predict(photo)
    assert labels.shape == photo.shape  # still a volume: the caller may mean one
    assert all(w.filename == __file__ for w in seen if "colour channels" in str(w.message))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GMMSegmenter(3, beta=0, channel_axis=-1, random_state=0).fit_predict(photo)
        # thin volumes and small stacks are volumes
        volume = np.random.default_rng(0).normal(size=(3, 64, 64))
        GMMSegmenter(2, beta=0, random_state=0).fit_predict(volume)
        GMMSegmenter(2, beta=0, random_state=0).fit_predict(volume[:, :20, :20].T.copy())


@pytest.mark.parametrize("shape, axis", [((2, 40, 48), "0"), ((12, 2, 40, 48), "1"),
                                         ((12, 40, 48, 2), "-1")])
def test_two_channels_without_channel_axis_are_named(shape, axis):
    # a two-colour image (H and DAB, two microscope channels) was segmented as a
    # volume of two slices without a word
    from gmm_segmenter import GMMSegmenter

    image = np.random.default_rng(0).random(shape)
    with pytest.warns(UserWarning, match=rf"its axis {axis} \(of length 2\) looks like "
                                         rf"channels.*Pass channel_axis={axis} ") as seen:
        model = GMMSegmenter(2, beta=0, random_state=0).fit(image)
    assert len([w for w in seen if "looks like channels" in str(w.message)]) == 1
    assert all(w.filename == __file__ for w in seen if "looks like channels" in str(w.message))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(image)  # said once, at fit
        GMMSegmenter(2, beta=0, channel_axis=int(axis), random_state=0).fit(image)
        GMMSegmenter(2, beta=0, random_state=0).fit(np.random.default_rng(0).random((4, 40, 48)))
        # a voxel size for every axis says they are all space (an isotropic one says
        # nothing: napari passes every layer's scale)
        GMMSegmenter(2, beta=0, spacing=(3,) + (1,) * (len(shape) - 1),
                     random_state=0).fit(image)
    with pytest.warns(UserWarning, match="looks like channels"):
        GMMSegmenter(2, beta=0, spacing=(1,) * len(shape), random_state=0).fit(image)
    # a batch of such images: said once
    with pytest.warns(UserWarning) as seen:
        GMMSegmenter(2, beta=0, random_state=0).fit([image] * 3)
    assert len([w for w in seen if "looks like channels" in str(w.message)]) == 1


def test_a_spatial_axis_given_as_channel_axis_warns_with_the_likely_one():
    from skimage import data

    from gmm_segmenter import GMMSegmenter

    photo = data.astronaut()[::4, ::4]  # 128 x 128 x 3
    with pytest.warns(UserWarning, match=r"X has shape \(128, 128, 3\): channel_axis=0 makes "
                                         r"128 channels of only 384 pixels.*channel_axis=-1") as seen:
        GMMSegmenter(3, beta=0, random_state=0, channel_axis=0).fit(photo)
    assert all(w.filename == __file__ for w in seen if "channel_axis=0 makes" in str(w.message))
    grey = data.camera()[::8, ::8]  # 64 x 64
    with pytest.warns(UserWarning, match=r"64 channels of only 64 pixels.*channel_axis=None"):
        GMMSegmenter(3, beta=0, random_state=0, channel_axis=-1).fit(grey)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # many channels over many pixels (a spectral image) are channels
        spectra = np.random.default_rng(0).normal(size=(40, 40, 64))
        GMMSegmenter(2, beta=0, random_state=0, channel_axis=-1).fit(spectra)


def test_blocks_whose_pixels_are_all_valid_have_no_valid_map():
    # labelling skips the masked copies of a block only when it is told that
    # every pixel of it is valid
    from gmm_segmenter import _image

    image = np.random.default_rng(0).random((700, 400)).astype(np.float32)
    view = _image.ImageView(pixels=image[..., np.newaxis], mask=None)
    assert all(valid is None for *_, valid in _image.iter_chunks(view))
    image[650, 7] = np.nan
    maps = [valid for *_, valid in _image.iter_chunks(view)]
    assert sum(valid is not None for valid in maps) == 1
    assert sum(int(np.count_nonzero(~valid)) for valid in maps if valid is not None) == 1
    mask = np.ones(image.shape, dtype=bool)
    mask[:10] = False
    masked = _image.ImageView(pixels=image[..., np.newaxis], mask=mask)
    flags = np.concatenate([
        np.ones(stop - start, bool) if valid is None else valid
        for start, stop, _, valid in _image.iter_chunks(masked)
    ])
    assert np.count_nonzero(~flags) == 10 * 400 + 1


def test_an_image_given_as_python_lists_is_named_as_a_batch_of_rows():
    # image.tolist() is one table to scikit-learn; here a list is a batch, and
    # the rows came back as twenty 1-D label lines without a word
    from skimage import data

    rows = data.camera()[:20, :30].tolist()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = GMMSegmenter(2, random_state=0).fit_predict(rows)
    said = [str(w.message) for w in caught if "Python lists" in str(w.message)]
    assert said == [
        "X is a list of 20 Python lists of numbers: a list is a batch of images, so it is "
        "read as 20 one-dimensional images of 30 pixels each. If it is one image, pass "
        "np.asarray(X)."
    ]
    assert {w.filename for w in caught} == {__file__}
    assert len(labels) == 20
    # a batch of arrays, or of images given as nested lists, is a batch on purpose
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GMMSegmenter(2, beta=0, random_state=0).fit([np.asarray(row) for row in rows[:4]])
        GMMSegmenter(2, beta=0, random_state=0).fit([rows[:10], rows[10:]])
        arrays = [np.asarray(row) for row in rows]  # lists of rows as arrays: 2-D images
        GMMSegmenter(2, beta=0, random_state=0).fit([arrays[:10], arrays[10:]])
