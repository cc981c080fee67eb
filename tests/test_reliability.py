"""Bad and degenerate input: each case of docs/reliability.md that no other test pins."""

import warnings

import numpy as np
import pytest
from _helpers import make_segmenter, run_cli
from _images import quadrants

from gmm_segmenter import GMMSegmenter, _kernel, _mixture


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
    with pytest.warns(UserWarning, match=r"^1 of the 2 components lost all its pixels during EM and was re-seeded"):
        result = _mixture.run_em(
            X, np.ones(len(X)), initial, max_iter=100, tol=1e-6, reg_covar=1e-6
        )
    mixture = result.mixture
    # without the re-seed the weight was ~1e-16 and the mean 0/eps noise
    assert mixture.weights.min() > 0.01
    assert np.all(np.isfinite(mixture.means)) and np.all(np.isfinite(mixture.covariances))
    # the re-seeded component found the small bright cluster
    assert mixture.means.max() == pytest.approx(6.0, abs=0.5)


# ------------------------------------------------------ integer extremes


def _two_clusters_at_the_top(dtype, span, seed=0):
    """Two clusters just below the dtype's maximum, ``span`` apart; labels 1, 2."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    truth = np.ones((24, 24), dtype=np.uint8)
    truth[:, 12:] = 2
    noise = rng.integers(0, span // 40, size=truth.shape)
    below_max = np.where(truth == 1, span, 0) + noise
    image = np.array([info.max - int(d) for d in below_max.ravel()], dtype=dtype)
    return image.reshape(truth.shape), truth


@pytest.mark.parametrize("dtype", ["int32", "uint32", "int64", "uint64"])
@pytest.mark.parametrize("span", ["table", "wide"])
def test_integers_near_the_dtype_maximum_never_wrap(dtype, span):
    info = np.iinfo(dtype)
    # 'table': a value range short enough to predict through a lookup table
    # (the path where uint64 above 2**63 used to overflow); 'wide': the range
    # spans a quarter of the dtype, fitted and predicted in float64
    width = 4_000_000 if span == "table" else (int(info.max) - int(info.min)) // 4
    image, truth = _two_clusters_at_the_top(dtype, width)
    image[0, 0] = info.min  # masked out below: must not disturb the table
    mask = np.ones(image.shape, bool)
    mask[0, 0] = False
    original = image.copy()
    segmenter = make_segmenter(2).fit(image, mask=mask)
    labels = segmenter.predict(image, mask=mask)
    np.testing.assert_array_equal(image, original)
    assert labels[0, 0] == 0
    np.testing.assert_array_equal(labels[mask], truth[mask])
    np.testing.assert_array_equal(labels, segmenter.predict(image.astype(np.float64), mask=mask))
    assert np.all(np.isfinite(segmenter.means_)) and segmenter.means_.min() > 0


def test_integers_closer_than_float64_resolution_are_refused_clearly():
    # 2**63 - 1 and 2**63 - 2 are the same float64: the image is constant to
    # any floating-point fit, and says so rather than wrapping or crashing
    top = np.iinfo(np.int64).max
    image = np.array([[top, top - 1], [top - 2, top - 3]], dtype=np.int64)
    with pytest.raises(ValueError, match="only 1 distinct pixel value"):
        make_segmenter(2).fit(image)
    np.testing.assert_array_equal(make_segmenter(1).fit_predict(image), 1)


# ------------------------------------------------------ extreme ranges


@pytest.mark.parametrize(
    "image, match",
    [
        (np.array([[1e308, -1e308], [1.0, 2.0]]), "spread too much"),
        (np.array([[1e-300, 2e-300], [3e-300, 4e-300]]), "spread too little"),
        (np.array([[5e-324, 1e-323], [0.0, 1.5e-323]]), "spread too little"),  # subnormal
    ],
)
def test_spreads_whose_variance_leaves_float64_are_refused_with_advice(image, match):
    # before: an overflow RuntimeWarning and "array must not contain infs or
    # NaNs", or a bare CollapsedCovariance(0)
    with pytest.raises(ValueError, match=match + r".*Multiply the image by a constant"):
        make_segmenter(2).fit(image)
    rescaled = image * (1e-300 if match == "spread too much" else 1e300)
    np.testing.assert_array_equal(make_segmenter(2).fit_predict(rescaled) > 0, True)


def test_channel_with_extreme_spread_is_named():
    image = np.stack([np.arange(16.0).reshape(4, 4), np.arange(16.0).reshape(4, 4) * 1e-200], -1)
    with pytest.raises(ValueError, match="spread too little in channel 1"):
        make_segmenter(2, channel_axis=-1).fit(image)


def test_outliers_thirty_decades_away_are_segmented_or_explained():
    image, truth = quadrants()
    image = image / 255.0
    image[0, 0], image[-1, -1] = 1e30, 1e-30
    labels = make_segmenter(2).fit_predict(image)
    assert labels[0, 0] == 2 and np.all(labels.ravel()[1:] == 1)  # the outlier alone
    # next to 1e30, float64 cannot tell 0.1 from 0.9: say so instead of
    # calling the image (nearly) constant
    with pytest.raises(ValueError, match=r"only 2 distinct pixel values at float64 precision"
                       r".*too wide a dynamic range; clip the outliers or segment np.log"):
        make_segmenter(5).fit(image)


# ------------------------------------------------------ collinear channels


@pytest.mark.parametrize("covariance_type", _mixture.COVARIANCE_TYPES)
def test_gray_stored_as_rgb_fits_and_warns_with_advice(covariance_type):
    gray, truth = quadrants()
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    rgb = np.stack([gray, gray, gray], axis=-1)
    with pytest.warns(UserWarning, match=r"3 channels of X are linearly dependent.*"
                      r"grayscale image stored as RGB.*X\[\.\.\., 0\] with channel_axis=None") as caught:
        segmenter = make_segmenter(4, channel_axis=-1, covariance_type=covariance_type).fit(rgb)
    assert any(w.filename == __file__ for w in caught)  # points at the caller
    np.testing.assert_array_equal(segmenter.predict(rgb), truth)
    np.testing.assert_array_equal(segmenter.predict(rgb), make_segmenter(4).fit_predict(gray))


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_an_opaque_alpha_channel_is_named_as_the_constant_one(rgb_image, covariance_type):
    # not "segment one channel": that advice would throw the colours away
    image, truth = rgb_image
    rgba = np.concatenate([image, np.full(truth.shape + (1,), 255.0)], axis=-1)
    with pytest.warns(UserWarning, match=r"Channel 3 of the 4 channels of X is constant \(as an "
                      r"opaque alpha channel is\).*for RGBA, pass X\[\.\.\., :3\]") as caught:
        segmenter = make_segmenter(3, channel_axis=-1, covariance_type=covariance_type).fit(rgba)
    assert not any("linearly dependent" in str(w.message) for w in caught)
    np.testing.assert_array_equal(segmenter.predict(rgba), truth)
    # a constant colour channel is not taken for alpha
    flat = image.copy()
    flat[..., 0] = 7.0
    with pytest.warns(UserWarning, match=r"Channel 0 of the 3 channels of X is constant") as caught:
        make_segmenter(3, channel_axis=-1, covariance_type=covariance_type).fit(flat)
    assert not any("RGBA" in str(w.message) for w in caught)


def test_independent_channels_do_not_warn(rgb_image):
    image, _ = rgb_image
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_segmenter(3, channel_axis=-1).fit(image)


# ------------------------------------------------------ huge dimensions


def _huge_image(dtype=np.uint8):
    """A 10**12-pixel image that costs no memory (every pixel is one value)."""
    return np.broadcast_to(np.array(7, dtype=dtype), (10**6, 10**6))


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples"])
def test_outputs_that_cannot_fit_in_memory_are_refused_before_allocating(beta, method):
    image, _ = quadrants()
    segmenter = make_segmenter(4, beta=beta).fit(image.astype(np.uint8))
    with pytest.raises(MemoryError, match=r"needs about [\d.]+ [GTP]iB of memory, but only "
                       r".* is available\. Process the image in tiles"):
        getattr(segmenter, method)(_huge_image())


def _no_em(*args, **kwargs):
    raise AssertionError("EM ran before the refusal")


def test_spatial_fit_that_cannot_fit_in_memory_is_refused_before_em(monkeypatch):
    from gmm_segmenter import _image

    image, _ = quadrants()
    monkeypatch.setattr(_image, "available_memory", lambda: 100 * 1024)
    monkeypatch.setattr(_mixture, "fit_mixture", _no_em)
    # four posterior maps with their border, the log-potentials, the sweep's flags
    with pytest.raises(MemoryError, match=r"Fitting with the spatial prior \(4 components, "
                       r"image shape\(s\) \(64, 64\)\) needs about 136\.2 KiB"):
        make_segmenter(4, beta=1.0).fit(image)
    monkeypatch.undo()
    monkeypatch.setattr(_image, "available_memory", lambda: 100 * 1024)
    # an 8-bit image is fitted on its histogram (under 256 rows): within the
    # memory that the spatial maps of 4 components would not fit in either
    make_segmenter(4, beta=0.0).fit(np.round(image).astype(np.uint8))


def test_em_that_cannot_fit_in_memory_is_refused_naming_n_components(monkeypatch, capsys,
                                                                       tmp_path):
    from gmm_segmenter import _image

    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    monkeypatch.setattr(_image, "available_memory", lambda: 10**6)
    monkeypatch.setattr(_mixture, "fit_mixture", _no_em)
    # 8 float64 arrays of 4096 rows by 50 components
    with pytest.raises(MemoryError, match=r"^EM with n_components=50 on 4096 pixel values "
                       r"needs about 12\.5 MiB of memory, but only 976\.6 KiB is available\. "
                       r"Use fewer components, a smaller max_samples, or free memory\.$"):
        GMMSegmenter(50, beta=0.0).fit(image)
    np.save(tmp_path / "noise.npy", image)
    status, _, err = run_cli([str(tmp_path / "noise.npy"), "-k", "50", "--beta", "0",
                              "-o", str(tmp_path / "out")], capsys)
    assert status == 1
    assert "EM with -k 50 on 4096 pixel values needs about 12.5 MiB" in err
    assert "a smaller --max-samples" in err
    monkeypatch.undo()
    monkeypatch.setattr(_image, "available_memory", lambda: 10**6)
    GMMSegmenter(3, beta=0.0).fit(image)  # 8 x 4096 x 3 float64: 786 KB


def test_memory_is_read_again_unless_the_request_is_small_and_the_reading_fresh(monkeypatch):
    from gmm_segmenter import _image

    reads = []

    def available():
        reads.append(1)
        return 10**9

    monkeypatch.setattr(_image, "available_memory", available)
    monkeypatch.setattr(_image, "_last_reading", (-float("inf"), None, None))
    _image.check_memory(10**5, "a small output")
    _image.check_memory(10**5, "another small one")  # fresh reading: not read again
    assert len(reads) == 1
    _image.check_memory(2 * 10**7, "a large output")  # over 1 % of the reading: read
    assert len(reads) == 2
    with pytest.raises(MemoryError, match="too large"):
        _image.check_memory(2 * 10**9, "too large")
    monkeypatch.setattr(_image, "_last_reading", (-float("inf"), 10**9, available))
    _image.check_memory(10**5, "after a stale reading")  # old: read again
    assert len(reads) == 4
    # what a checked request takes comes off the reading: after 0.995 GB of the
    # 1 GB, a request of 1 MB is no longer small against what is left
    _image.check_memory(995 * 10**6, "nearly all of it")
    assert len(reads) == 5
    _image.check_memory(10**6, "a little more")
    assert len(reads) == 6
    # another source of readings (a test's, a later psutil) is never taken from the cache
    monkeypatch.setattr(_image, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError):
        _image.check_memory(10**5, "now that little is left")


def test_available_memory_without_psutil(monkeypatch):
    import sys

    from gmm_segmenter import _image

    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    available = _image.available_memory()
    assert available is None or available > 0
    assert _image.format_bytes(3 * 2**40) == "3.0 TiB"


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("covariance_type", _mixture.COVARIANCE_TYPES)
def test_pixels_far_outside_the_fitted_range_never_give_nan(beta, covariance_type):
    image, truth = quadrants()
    segmenter = make_segmenter(4, beta=beta, covariance_type=covariance_type).fit(image)
    far = image.copy()
    far[0, 0], far[0, 1], far[0, 2] = 1e300, -1e300, 1e45  # beyond float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings either
        labels = segmenter.predict(far)
        proba = segmenter.predict_proba(far)
        log_likelihood = segmenter.score_samples(far)
    assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=-1), 1, atol=1e-5)
    assert np.all(labels[0, :3] >= 1)
    assert np.all(log_likelihood[0, :3] < -1e80) and not np.isnan(log_likelihood).any()
    # before: NaN posteriors, spread by the spatial prior to the neighbours
    np.testing.assert_array_equal(labels.ravel()[3:], segmenter.predict(image).ravel()[3:])


@pytest.mark.parametrize("value", [4.0733655765983104e-308, 0.1, 1e300, -7.0])
def test_constant_float_images_with_any_value_fit_one_component(value):
    # a mean rounded in the last bit must not look like a tiny spread
    image = np.full((3, 5), value)
    np.testing.assert_array_equal(make_segmenter(1).fit_predict(image), 1)
    with pytest.raises(ValueError, match=r"only 1 distinct pixel value \(a constant image, or a"):
        make_segmenter(2).fit(image)


# ------------------------------------------------------ the command line


def test_cli_turns_estimator_errors_into_one_line_and_exit_1(tmp_path, capsys):
    from gmm_segmenter import io as gio

    gio.write_png(tmp_path / "black.png", np.zeros((8, 8), np.uint8))
    whole = tmp_path / "whole.png"
    gio.write_png(whole, (np.arange(64).reshape(8, 8) * 4).astype(np.uint8))
    (tmp_path / "cut.png").write_bytes(whole.read_bytes()[:40])
    (tmp_path / "empty.tif").write_bytes(b"")
    inputs = [tmp_path / name for name in ("black.png", "cut.png", "empty.tif")]
    status, _, err = run_cli([*inputs, "-k", "3", "--beta", "0", "-o", tmp_path / "out"], capsys)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in err
    assert any("black.png" in line and "constant image" in line for line in lines)
    assert any("cut.png" in line and "cannot be read as an image" in line for line in lines)
    assert any("empty.tif" in line for line in lines)

    status, _, err = run_cli([*inputs, "-k", "3", "--beta", "0", "--debug",
                           "-o", tmp_path / "out"], capsys)
    assert status == 1 and err.count("Traceback (most recent call last)") >= 3


# ------------------------------------------------------ shapes and storage


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_one_pixel_and_one_row_images(beta):
    one_pixel = np.array([[42.0]])
    np.testing.assert_array_equal(make_segmenter(1, beta=beta).fit_predict(one_pixel), [[1]])
    with pytest.raises(ValueError, match=r"only 1 pixel value \(a constant image.*Use n_components=1 or"):
        make_segmenter(2, beta=beta).fit(one_pixel)
    row = np.array([[0, 0, 1, 9, 10, 10]], dtype=np.uint8)
    pixelwise = make_segmenter(2, beta=0.0).fit_predict(row)
    np.testing.assert_array_equal(pixelwise, [[1, 1, 1, 2, 2, 2]])
    labels = make_segmenter(2, beta=beta).fit_predict(row)
    assert labels.shape == (1, 6) and set(labels.ravel()) <= {1, 2}
    column = row.T
    assert make_segmenter(2, beta=beta).fit_predict(column).shape == (6, 1)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_memory_mapped_images_are_read_not_written(tmp_path, beta):
    image, truth = quadrants()
    path = tmp_path / "image.dat"
    stored = np.memmap(path, dtype=np.float32, mode="w+", shape=image.shape)
    stored[:] = image
    stored.flush()
    del stored
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=image.shape)
    before = path.read_bytes()
    labels = make_segmenter(4, beta=beta).fit_predict(mapped)
    assert type(labels) is np.ndarray and labels.shape == image.shape
    if beta == 0.0:
        np.testing.assert_array_equal(labels, truth)
    assert path.read_bytes() == before


def test_max_iter_one_warns_with_advice_and_still_labels(quadrant_image):
    from sklearn.exceptions import ConvergenceWarning

    image, truth = quadrant_image
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=1.*Increase max_iter"):
        segmenter = make_segmenter(4, max_iter=1, init_params="random").fit(image)
    assert not segmenter.converged_ and segmenter.n_iter_ == 1
    labels = segmenter.predict(image)
    assert labels.min() >= 1 and labels.max() <= 4


def test_spatial_em_stopped_at_max_iter_spatial_warns_as_em_does(quadrant_image):
    from sklearn.exceptions import ConvergenceWarning

    image, truth = quadrant_image
    noisy = image + np.random.default_rng(0).normal(scale=0.6 * image.std(), size=image.shape)
    with pytest.warns(ConvergenceWarning, match=r"HMRF-EM did not converge in "
                      r"max_iter_spatial=1 iterations .*Increase max_iter_spatial, or raise tol"):
        segmenter = make_segmenter(4, beta=1.0, max_iter_spatial=1).fit(noisy)
    assert not segmenter.spatial_converged_
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # converged: no warning
        segmenter = make_segmenter(4, beta=1.0, max_iter_spatial=200).fit(noisy)
    assert segmenter.spatial_converged_ and segmenter.spatial_n_iter_ > 1


def test_rgba_is_four_features_for_the_estimator(rgb_image):
    # explicit: the estimator never guesses that a 4th channel is alpha (the
    # gmm-segment command does, in --channel-axis auto, and uses it as a mask)
    image, truth = rgb_image
    alpha = np.full(truth.shape + (1,), 255.0)
    alpha[:5] = 0.0
    rgba = np.concatenate([image, alpha], axis=-1)
    # ... but says what a partly transparent alpha channel does to the fit
    with pytest.warns(UserWarning, match=r"Channel 3 of the 4 channels of X looks like an alpha "
                      r"channel: \d+% of the pixels are transparent \(0\), \d+% opaque "
                      r"\(255\).*take a component of their own; for RGBA, pass X\[\.\.\., :3\] "
                      r"\(with mask=X\[\.\.\., 3\] > 0") as caught:
        segmenter = make_segmenter(3, channel_axis=-1).fit(rgba)
    assert any(w.filename == __file__ for w in caught)  # points at the caller
    assert segmenter.n_features_in_ == 4
    with pytest.raises(ValueError, match=r"X has 3 channel\(s\).*fitted on images with 4"):
        segmenter.predict(image)
    # dropping alpha and using it as the mask is one line for the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = make_segmenter(3, channel_axis=-1).fit_predict(
            rgba[..., :3], mask=rgba[..., 3] > 0
        )
    assert np.all(labels[:5] == 0)
    np.testing.assert_array_equal(labels[5:], truth[5:])


def test_a_fourth_channel_that_is_no_alpha_is_not_questioned(rgb_image):
    # a near-infrared band (or any fourth colour) of 0..255 with some pixels at
    # 0 and some at 255, but not mostly opaque, and a float alpha kept on 0..1
    image, truth = rgb_image
    rng = np.random.default_rng(0)
    band = np.clip(rng.normal(128, 60, truth.shape), 0, 255)
    assert (band == 0).mean() > 0.01 and (band == 255).mean() > 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_segmenter(3, channel_axis=-1).fit(np.dstack([image, band]))
    alpha = np.ones(truth.shape)
    alpha[:5] = 0.0
    with pytest.warns(UserWarning, match=r"looks like an alpha channel.*opaque \(1\)"):
        make_segmenter(3, channel_axis=-1).fit(np.dstack([image, alpha]))


def test_a_mostly_transparent_image_and_channels_first_get_the_alpha_warning(rgb_image):
    # a cut-out: most pixels transparent, soft edges; and the advice for
    # channels on another axis than the last
    image, truth = rgb_image
    alpha = np.zeros(truth.shape)
    rows = truth.shape[0]
    alpha[: rows // 3] = 255.0
    alpha[rows // 3] = 128.0  # a blended edge
    rgba = np.dstack([image, alpha])
    with pytest.warns(UserWarning, match=r"looks like an alpha channel: 6\d% of the pixels are "
                      r"transparent \(0\), 3\d% opaque \(255\)"):
        make_segmenter(3, channel_axis=-1).fit(rgba)
    with pytest.warns(UserWarning, match=r"looks like an alpha channel.*pass "
                      r"np\.take\(X, \[0, 1, 2\], axis=0\) with mask=np\.take\(X, 3, axis=0\) > 0") \
            as caught:
        make_segmenter(3, channel_axis=0).fit(np.moveaxis(rgba, -1, 0))
    assert not any("X[..., :3]" in str(w.message) for w in caught)
    # channels on the last axis named by its index: the advice is X[..., :3]
    with pytest.warns(UserWarning, match=r"looks like an alpha channel.*X\[\.\.\., :3\]"):
        make_segmenter(3, channel_axis=2).fit(rgba)
    # a sparse marker (mostly 0, a few saturated pixels, more in between) is no alpha
    marker = np.zeros(truth.shape)
    marker[:2] = 255.0
    marker[2:6] = 90.0
    assert 0.01 < (marker == 255).mean() < (marker == 90).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_segmenter(3, channel_axis=-1).fit(np.dstack([image, marker]))
    # a band of many levels that is only sometimes 0 or 255 is no alpha
    band = alpha.copy()
    band[rows // 3 + 1:] = np.linspace(0, 255, band[rows // 3 + 1:].size).reshape(-1, band.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_segmenter(3, channel_axis=-1).fit(np.dstack([image, band]))


def test_spherical_covariances_are_in_input_units_when_a_channel_is_constant():
    rng = np.random.default_rng(0)
    varying = np.repeat([0.0, 200.0], 500) + rng.normal(scale=10, size=1000)
    image = np.stack([np.full(1000, 5.0), varying], axis=-1).reshape(20, 50, 2)
    segmenter = GMMSegmenter(2, channel_axis=-1, covariance_type="spherical", beta=0,
                             random_state=0).fit(image)
    # the variance of each class is about 10**2 per channel averaged with the
    # constant channel's 0: about 50, never the standardised ~0.01
    assert np.all(segmenter.covariances_ > 20) and np.all(segmenter.covariances_ < 100)
    values, _ = segmenter.sample(4000)
    assert 5 < values[:, 1].std() / 2 < 200


def test_overlapping_fits_in_threads_restore_the_blas_threads():
    import threading

    from threadpoolctl import threadpool_info

    def threads_of_each_library():
        return [(info["user_api"], info["num_threads"]) for info in threadpool_info()]

    before = threads_of_each_library()
    image = np.random.default_rng(1).normal(size=(200, 200, 3))
    seen = []
    errors = []

    def fit():
        try:
            GMMSegmenter(3, channel_axis=-1, random_state=0).fit(image)
            with _kernel.one_blas_thread():  # OpenMP (k-means) in this very thread
                seen.append({n for api, n in threads_of_each_library() if api == "openmp"})
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=fit) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and seen == [{1}] * 3
    assert threads_of_each_library() == before


def test_a_tiny_sample_is_blamed_not_the_image():
    from skimage import data

    rgb = data.astronaut()[::4, ::4]
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ValueError) as refused:
        warnings.simplefilter("always")
        GMMSegmenter(3, beta=0, channel_axis=-1, max_samples=1, random_state=0).fit(rgb)
    message = str(refused.value)
    assert "the 1 pixel drawn from the 16384 valid pixels of X (max_samples=1)" in message
    assert "Raise max_samples" in message and "constant image" not in message
    # one sampled row says nothing about the channels
    assert not [w for w in caught if "constant" in str(w.message)]


def test_an_image_of_few_values_is_blamed_not_its_sample():
    # "Raise max_samples" was the advice for an image that itself holds 2 values
    from skimage import data

    two_values = (data.camera() > 100).astype(float)  # 262 144 pixels: a sample of 100 000
    with pytest.raises(ValueError) as refused:
        GMMSegmenter(3, beta=0).fit(two_values)
    message = str(refused.value)
    assert "the valid pixels of X hold only 2 distinct pixel values" in message, message
    assert "max_samples" not in message and "Use n_components<=2" in message
    # a third value the sample missed: the sample is blamed, rightly
    rare = two_values.copy()
    rare[0, :3] = 0.5
    with pytest.raises(ValueError, match=r"the 10 pixels drawn from the 262144 valid pixels "
                                         r"of X \(max_samples=10\) hold only 2 .*Raise "
                                         r"max_samples"):
        GMMSegmenter(3, beta=0, max_samples=10, random_state=0).fit(rare)
    # a dask image is not read whole to count its values: the advice names both causes,
    # the image's few values first
    da = pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match=r"the 100000 pixels drawn .* If the image itself "
                                         r"holds so few values, use fewer components; if "
                                         r"not, raise max_samples"):
        GMMSegmenter(3, beta=0).fit(da.from_array(two_values, chunks=128))


def test_too_many_components_are_refused_for_the_data_before_memory_is_weighed(monkeypatch):
    from gmm_segmenter import _image

    image = np.random.default_rng(0).random((30, 30)).astype(np.float32)
    monkeypatch.setattr(_image, "available_memory", lambda: 1000)
    # more components than the image's values: said as such, not as memory
    # (which no tiling could help)
    with pytest.raises(ValueError, match=r"n_components=1000 asks for 1000 components, but "
                       r"X has only 900 valid pixels; .* Use n_components<=900"):
        GMMSegmenter(1000, max_samples=100).fit(image)  # not "Raise max_samples"
    with pytest.raises(ValueError, match=r"the valid pixels of X hold only 900 pixel values"):
        GMMSegmenter(1000).fit(image)
