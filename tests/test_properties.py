"""Property-based tests: GMMSegmenter's contract over random images.

Images are small (1-D to 4-D, at most a few hundred pixels) with random
dtypes, channel axes and masks. Pixel values are small integers cast to the
dtype, so every dtype holds them exactly and "distinct values" means the same
thing before and after the cast. Input is *valid* when some pixel is inside
the mask; then the only error ``fit`` may raise is the documented ValueError
for fewer distinct pixel values than components.
"""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from gmm_segmenter import GMMSegmenter

# max_examples comes from the profile: 40 by default (tests/conftest.py),
# 500 with --hypothesis-profile=ci
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "int32", "uint32", "int64",
          "float16", "float32", "float64"]


@st.composite
def images(draw, max_channels=3):
    """``(image, channel_axis, mask, n_components)`` for one random image."""
    spatial = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7))
    channel_axis, shape = None, spatial
    n_channels = draw(st.integers(1, max_channels))
    if n_channels > 1 or draw(st.booleans()):
        position = draw(st.integers(0, len(spatial)))
        shape = spatial[:position] + (n_channels,) + spatial[position:]
        channel_axis = draw(st.sampled_from([position, position - len(shape)]))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    high = 1 if dtype == np.bool_ else draw(st.integers(1, 60))
    low = 0 if dtype.kind in "bu" else -high // 2
    values = draw(hnp.arrays(np.int64, shape, elements=st.integers(low, high)))
    image = values.astype(dtype)
    if dtype.kind == "f" and draw(st.booleans()):
        # non-finite pixels: never used, always label 0
        flat = image.reshape(-1)
        where = draw(st.lists(st.integers(0, flat.size - 1), max_size=3))
        flat[where] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    mask = None
    if draw(st.booleans()):
        mask = draw(hnp.arrays(np.bool_, spatial))
    if draw(st.booleans()):  # a view, not a fresh C-contiguous array
        image = np.flip(image, axis=0)
        mask = None if mask is None else np.flip(mask, axis=0)
    n_components = draw(st.integers(1, 3))
    return image, channel_axis, mask, n_components


def _valid_rows(image, channel_axis, mask):
    pixels = image[..., np.newaxis] if channel_axis is None else np.moveaxis(image, channel_axis, -1)
    rows = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64)
    keep = np.all(np.isfinite(rows), axis=1)
    if mask is not None:
        keep &= mask.reshape(-1)
    return rows[keep], keep.reshape(pixels.shape[:-1])


def _fit(image, channel_axis, mask, n_components, **params):
    segmenter = GMMSegmenter(
        n_components, channel_axis=channel_axis, random_state=0, max_iter=30, **params
    )
    with warnings.catch_warnings():
        # degenerate data (few values, collinear channels) legitimately warn
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        return segmenter.fit(image, mask=mask)


def _collapses(image, channel_axis, mask, n_components, beta) -> bool:
    """Whether fitting ``image`` has to regularise a collapsed covariance."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GMMSegmenter(
            n_components, channel_axis=channel_axis, random_state=0, max_iter=30, beta=beta
        ).fit(image, mask=mask)
    return any("covariance of a component collapsed" in str(w.message) for w in caught)


def _fit_or_skip(image, channel_axis, mask, n_components, **params):
    """Fit valid input; the only allowed refusal is too few distinct values."""
    rows, _ = _valid_rows(image, channel_axis, mask)
    assume(len(rows) > 0)
    n_distinct = len(np.unique(rows, axis=0))
    if n_distinct < n_components:
        with pytest.raises(ValueError, match=f"asks for {n_components} components, but"):
            _fit(image, channel_axis, mask, n_components, **params)
        assume(False)
    return _fit(image, channel_axis, mask, n_components, **params)


@pytest.mark.parametrize("beta", [0.0, 1.0])
@SETTINGS
@given(case=images())
def test_predict_labels_every_valid_pixel_and_leaves_the_input_alone(case, beta):
    image, channel_axis, mask, n_components = case
    original = image.copy()
    original_mask = None if mask is None else mask.copy()
    segmenter = _fit_or_skip(image, channel_axis, mask, n_components, beta=beta)
    labels = segmenter.predict(image, mask=mask)
    _, valid = _valid_rows(image, channel_axis, mask)
    assert labels.shape == valid.shape and labels.dtype == np.uint8
    assert np.all(labels[~valid] == 0)
    assert np.all((labels[valid] >= 1) & (labels[valid] <= segmenter.n_components_))
    np.testing.assert_array_equal(image, original)
    if mask is not None:
        np.testing.assert_array_equal(mask, original_mask)
    # labels are ordered by mean intensity, darkest first
    assert np.all(np.diff(segmenter.means_.mean(axis=1)) >= 0)
    proba = segmenter.predict_proba(image, mask=mask)
    assert np.all(np.isfinite(proba)) and np.all(proba[~valid] == 0)
    np.testing.assert_allclose(proba[valid].sum(axis=-1), 1, atol=1e-4)


@SETTINGS
@given(case=images())
def test_a_seed_makes_the_result_reproducible(case):
    image, channel_axis, mask, n_components = case
    first = _fit_or_skip(image, channel_axis, mask, n_components, beta=1.0)
    second = _fit(image, channel_axis, mask, n_components, beta=1.0)
    np.testing.assert_array_equal(first.means_, second.means_)
    np.testing.assert_array_equal(first.predict(image, mask=mask), second.predict(image, mask=mask))


@pytest.mark.parametrize("beta", [0.0, 1.0])
@SETTINGS
@given(case=images(), exponent=st.integers(-60, 60))
def test_labels_do_not_change_when_intensities_are_scaled_by_a_power_of_two(
    case, exponent, beta
):
    # scaling by 2**k is exact in floating point, so the standardised data,
    # hence the whole fit, are bit for bit the same: labels must be identical
    image, channel_axis, mask, n_components = case
    image = image.astype(np.float64)
    segmenter = _fit_or_skip(image, channel_axis, mask, n_components, beta=beta)
    labels = segmenter.predict(image, mask=mask)
    scaled = image * 2.0**exponent
    np.testing.assert_array_equal(
        _fit(scaled, channel_axis, mask, n_components, beta=beta).predict(scaled, mask=mask),
        labels,
    )


@pytest.mark.parametrize("beta", [0.0, 1.0])
@SETTINGS
@given(case=images(), factor=st.floats(1e-6, 1e6), shift=st.floats(-1e3, 1e3))
def test_labels_do_not_change_under_positive_scale_and_offset(case, factor, shift, beta):
    """a*x + b changes the data by rounding (~1e-16 relative), which matters at ties.

    - The offset b is at most 1e3 times the scaled intensities: a larger one
      would round the image itself away (1e-6 * x + 65536 keeps ~5 digits of x).
    - Symmetric data have equally good fits (values 1, 2, 3 in two classes:
      {1}{2, 3} or {1, 2}{3}); rounding may pick the other one. Then both
      pixel-wise fits must explain the data equally well (same likelihood, in
      input units, counting the change of units of the channels that vary);
      under the spatial prior the two groupings are different optima.
    - Otherwise the fits agree to rounding, and labels may differ only where
      two components nearly tie (posterior margin below 1e-3).
    """
    image, channel_axis, mask, n_components = case
    image = image.astype(np.float64)
    largest = 1.0 + np.abs(image[np.isfinite(image)]).max(initial=0.0)
    offset = shift * factor * largest
    segmenter = _fit_or_skip(image, channel_axis, mask, n_components, beta=beta)
    transformed = image * factor + offset
    other = _fit(transformed, channel_axis, mask, n_components, beta=beta)
    back = (other.means_ - offset) / factor
    if not np.allclose(back, segmenter.means_, rtol=1e-6, atol=1e-6 * largest):
        # a constant channel keeps unit scale ("any unit will do"), so its
        # density does not change with the factor: only varying channels count
        rows, _ = _valid_rows(image, channel_axis, mask)
        varying = int(np.count_nonzero(np.ptp(rows, axis=0) > 0))
        jacobian = varying * np.log(factor)
        # a collapsed covariance gets a ridge raised tenfold until it is
        # positive definite; rounding may stop the two fits at different
        # ridges, and then their likelihoods differ by design
        assume(not _collapses(image, channel_axis, mask, n_components, beta))
        assume(not _collapses(transformed, channel_axis, mask, n_components, beta))
        # Under the spatial prior mirrored groupings are not equally good: which
        # values are neighbours breaks the symmetry ([0, 3, 6, -3] in 3 classes:
        # {-3}{0, 3}{6} keeps neighbours together, {-3, 0}{3}{6} does not), so
        # a tie that rounding breaks leads to a different optimum, whose mixture
        # likelihood differs (by 1e-5 there). Only the pixel-wise fits must tie.
        assume(beta == 0)
        tied = other.score(transformed, mask=mask) + jacobian == pytest.approx(
            segmenter.score(image, mask=mask), rel=1e-6, abs=1e-6
        )
        if not tied:
            # Nearly symmetric data (values 0, 1, 2 with two 0s and one 2 in
            # 2 classes: {0}{1, 2} or {0, 1}{2}) can send EM from starts that
            # differ by rounding to two different local optima, of unequal
            # likelihood. That is allowed only as another grouping of the
            # pixels, with both fits converged; the same grouping at another
            # likelihood would be a real difference.
            assert segmenter.converged_ and other.converged_
            grouping = segmenter.predict(image, mask=mask).ravel()
            regrouped = other.predict(transformed, mask=mask).ravel()
            assert adjusted_rand_score(grouping, regrouped) < 1.0
        return
    labels, moved = segmenter.predict(image, mask=mask), other.predict(transformed, mask=mask)
    proba = np.sort(segmenter.predict_proba(image, mask=mask), axis=-1)
    decided = (proba[..., -1] - proba[..., -2] > 1e-3) if proba.shape[-1] > 1 else True
    np.testing.assert_array_equal(np.where(decided, moved, labels), labels)


@SETTINGS
@given(
    values=hnp.arrays(
        np.float64, st.tuples(st.integers(0, 60), st.integers(1, 3)),
        elements=st.sampled_from([-1.5, -0.0, 0.0, 0.25, 1.0, 2.0, 3.5, 7.0, 1e300]),
    ),
    enough=st.integers(1, 40),
)
def test_distinct_rows_are_counted_as_numpy_counts_them_up_to_enough(values, enough):
    from gmm_segmenter._training import count_distinct_rows

    # -0.0 and 0.0 are one value, as they are to EM
    expected = len(np.unique(values + 0.0, axis=0)) if len(values) else 0
    assert count_distinct_rows(values, enough) == min(expected, enough)
