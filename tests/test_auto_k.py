"""``n_components='auto'``: stop where a further component stops paying off."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage
from skimage import data
from sklearn.utils import check_random_state

from gmm_segmenter import GMMSegmenter, _selection


def three_class_phantom(shape=(128, 128), seed=0):
    """Three smooth regions at 60, 130 and 200 with noise: the answer is 3."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=8)
    truth = 1 + np.digitize(field, np.quantile(field, [1 / 3, 2 / 3]))
    image = np.array([60, 130, 200])[truth - 1] + rng.normal(scale=15, size=shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "bics, expected",
    [
        ([100.0], True),
        ([100.0, 50.0], True),
        ([100.0, 50.0, 45.0], False),  # 5 < 0.15 * 50
        ([100.0, 50.0, 40.0], True),  # 10 >= 0.15 * 50
        ([100.0, 50.0, 60.0], False),  # BIC rose
        ([100.0, 100.0], False),
        ([100.0, 90.0, 30.0, 25.0], False),  # compared with the largest drop, 60
    ],
)
def test_a_component_pays_off_against_the_largest_drop_so_far(bics, expected):
    assert _selection.pays_off(bics) is expected


def test_search_fits_no_candidate_after_the_one_that_does_not_pay_off():
    curve = {1: 100.0, 2: 40.0, 3: 20.0, 4: 19.0, 5: 0.0, 6: -50.0}
    asked = []

    def bic_of(k):
        asked.append(k)
        return curve[k]

    fitted, bics, chosen = _selection.search(range(1, 7), bic_of)
    assert asked == fitted == [1, 2, 3, 4] and bics == [100.0, 40.0, 20.0, 19.0]
    assert chosen == 3
    assert _selection.search([1, 2, 3], {1: 9.0, 2: 5.0, 3: 1.0}.get) == (
        [1, 2, 3], [9.0, 5.0, 1.0], 3
    )


def test_a_range_narrowed_from_below_only_removes_choices():
    # the drops 60, 20, 1: the elbow is at 3, whatever the range's bottom
    curve = {1: 100.0, 2: 40.0, 3: 20.0, 4: 19.0, 5: 18.5, 6: -50.0}
    for lowest, chosen in ((1, 3), (2, 3), (3, 3), (4, 4), (5, 5)):
        fitted, bics, got = _selection.search(range(lowest, 7), curve.get)
        assert got == chosen, lowest
        assert fitted[0] == 1 and bics == [curve[k] for k in fitted]
    # (started at its bottom, (3, 6) saw the drops 1 and 0.5 only, then 68.5)
    assert _selection.search(range(3, 7), curve.get)[0] == [1, 2, 3, 4]


@pytest.mark.parametrize("image_name", ["camera", "coins"])
def test_narrowing_the_range_from_below_keeps_the_choice_on_real_images(image_name):
    from skimage import data

    image = getattr(data, image_name)()[::2, ::2]
    chosen = {
        lowest: GMMSegmenter("auto", n_components_range=(lowest, 8), beta=0.0,
                             random_state=0).fit(image).n_components_
        for lowest in (1, 2, 3)
    }
    whole = chosen[1]
    assert chosen == {lowest: max(whole, lowest) for lowest in (1, 2, 3)}


def test_the_phantom_gets_its_three_classes_and_the_search_stops_after_four():
    segmenter = GMMSegmenter("auto", beta=0.0, random_state=0).fit(three_class_phantom())
    assert segmenter.n_components_ == 3
    np.testing.assert_array_equal(segmenter.n_components_candidates_, [1, 2, 3, 4])
    assert segmenter.bic_curve_.shape == (4,) and np.argmin(segmenter.bic_curve_) == 2


def test_a_photograph_gets_an_elbow_not_the_top_of_the_range():
    # BIC alone falls all the way to K = 8 on `camera`
    segmenter = GMMSegmenter("auto", beta=0.0, random_state=0).fit(data.camera())
    assert 2 <= segmenter.n_components_ <= 5
    assert len(segmenter.n_components_candidates_) == segmenter.n_components_ + 1
    assert np.all(np.diff(segmenter.bic_curve_[:-1]) < 0)


def test_auto_gives_the_model_of_the_chosen_fixed_k():
    image = data.astronaut()[::4, ::4]
    auto = GMMSegmenter("auto", channel_axis=-1, beta=0.0, max_samples=30_000,
                        n_components_range=(1, 4), random_state=0).fit(image)
    fixed = GMMSegmenter(auto.n_components_, channel_axis=-1, beta=0.0, max_samples=30_000,
                         random_state=0).fit(image)
    np.testing.assert_array_equal(auto.means_, fixed.means_)
    np.testing.assert_array_equal(auto.predict(image), fixed.predict(image))


def test_selection_data_is_a_seeded_subsample_that_leaves_the_random_state_alone():
    rng = np.random.default_rng(0)
    X, weights = rng.normal(size=(50_000, 3)), np.ones(50_000)
    state = check_random_state(0)
    before = state.get_state()[1].copy()
    rows, row_weights, own = _selection.selection_data(X, weights, state)
    assert rows.shape == (_selection.SELECTION_SAMPLES, 3) and row_weights.sum() == len(rows)
    np.testing.assert_array_equal(state.get_state()[1], before)
    assert own is not state
    again, _, _ = _selection.selection_data(X, weights, check_random_state(0))
    np.testing.assert_array_equal(rows, again)
    # a histogram's rows carry counts and are used whole
    histogram, counts = np.arange(70_000.0)[:, None], np.full(70_000, 3.0)
    assert _selection.selection_data(histogram, counts, state)[0] is histogram


def test_auto_at_the_top_of_its_range_says_the_range_may_be_too_small():
    rng = np.random.default_rng(0)
    levels = np.repeat(np.arange(6.0) * 10, 400)
    image = (levels + rng.normal(0, 1, levels.size)).reshape(40, 60)
    with pytest.warns(UserWarning, match=r"n_components='auto' chose 3, the top of "
                                         r"n_components_range=\(1, 3\).*Widen"):
        assert GMMSegmenter("auto", n_components_range=(1, 3), beta=0,
                            random_state=0).fit(image).n_components_ == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GMMSegmenter("auto", beta=0, random_state=0).fit(image).n_components_ == 6
