"""The weighted EM core against scikit-learn's GaussianMixture."""

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from gmm_segmenter import _kernel, _mixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _blobs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [3.0, 1.0, -2.0], [-2.0, 4.0, 1.0]])
    X = np.concatenate([c + rng.normal(scale=[1.0, 0.6, 0.8], size=(n // 3, 3)) for c in centres])
    return X


def _mean_log_likelihood(X, mixture):
    return logsumexp(_mixture.weighted_log_prob(X, mixture), axis=1).mean()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_unit_weights_match_sklearn_step_for_step(covariance_type):
    X = _blobs()
    weights = np.ones(len(X))
    rng = np.random.RandomState(3)
    resp = _mixture.initial_responsibilities(X, weights, 3, "random", rng)
    initial = _mixture.initial_mixture(X, weights, resp, 1e-6, covariance_type)

    ours = _mixture.run_em(X, weights, initial, max_iter=30, tol=1e-12, reg_covar=1e-6)
    reference = GaussianMixture(
        3,
        covariance_type=covariance_type,
        weights_init=initial.weights,
        means_init=initial.means,
        precisions_init=initial.precisions(),
        max_iter=30,
        tol=1e-12,
        reg_covar=1e-6,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference.fit(X)

    assert ours.n_iter == reference.n_iter_
    np.testing.assert_allclose(ours.mixture.weights, reference.weights_, rtol=1e-6)
    np.testing.assert_allclose(ours.mixture.means, reference.means_, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ours.mixture.covariances, reference.covariances_, rtol=1e-6)
    np.testing.assert_allclose(ours.lower_bound, reference.lower_bound_, rtol=1e-6)
    np.testing.assert_allclose(_mean_log_likelihood(X, ours.mixture), reference.score(X), rtol=1e-6)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_samples(covariance_type):
    rng = np.random.default_rng(1)
    distinct = _blobs(90, seed=2)
    counts = rng.integers(1, 6, size=len(distinct))
    repeated = np.repeat(distinct, counts, axis=0)

    resp = _mixture.initial_responsibilities(repeated, np.ones(len(repeated)), 3, "quantile", None)
    initial = _mixture.initial_mixture(repeated, np.ones(len(repeated)), resp, 1e-6, covariance_type)
    weighted = _mixture.run_em(
        distinct, counts.astype(float), initial, max_iter=20, tol=0, reg_covar=1e-6
    )
    unweighted = _mixture.run_em(
        repeated, np.ones(len(repeated)), initial, max_iter=20, tol=0, reg_covar=1e-6
    )
    np.testing.assert_allclose(weighted.mixture.means, unweighted.mixture.means, rtol=1e-9)
    np.testing.assert_allclose(
        weighted.mixture.covariances, unweighted.mixture.covariances, rtol=1e-9
    )
    np.testing.assert_allclose(weighted.lower_bound, unweighted.lower_bound, rtol=1e-9)


def test_quantile_labels_give_every_group_a_distinct_value():
    # 70 % of the mass on one value must not leave groups empty
    values = np.array([[0.0], [1.0], [2.0], [3.0]])
    weights = np.array([70.0, 10.0, 10.0, 10.0])
    labels = _mixture.quantile_labels(values, weights, 3)
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    assert list(labels) == sorted(labels)


def test_collapsed_covariance_is_regularised_with_a_warning():
    # one component can only sit on a single repeated value
    X = np.concatenate([np.zeros(50), np.linspace(5, 6, 50)])[:, np.newaxis]
    weights = np.ones(len(X))
    resp = _mixture.initial_responsibilities(X, weights, 2, "quantile", None)
    with pytest.warns(UserWarning, match="collapsed"):
        initial = _mixture.initial_mixture(X, weights, resp, 0.0, "full")
    assert np.all(np.isfinite(initial.precisions_cholesky))


def test_a_collapsing_covariance_is_said_once_per_fit_not_once_per_iteration():
    # reg_covar=0 on a photograph: the same warning came ~30 times in one fit
    # wherever warnings always show (pytest, -W always, napari's capture)
    from skimage import data

    from gmm_segmenter import GMMSegmenter

    for spatial in ({"beta": 0.0}, {"beta": 0.5}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            GMMSegmenter(3, channel_axis=-1, reg_covar=0, random_state=0, **spatial).fit(
                data.astronaut()[::2, ::2])
        said = [str(w.message) for w in caught if "collapsed" in str(w.message)]
        # (the two best screened starts each run EM to the end)
        assert 1 <= len(said) <= 3, said


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_n_parameters_matches_sklearn(covariance_type):
    X = _blobs(60)
    reference = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    assert _mixture.n_parameters(3, 3, covariance_type) == reference._n_parameters()


# ------------------------------------------------------------- screened starts


def _fit(X, n_init, init_params="kmeans", seed=0, **extra):
    return _mixture.fit_mixture(
        X, np.ones(len(X)), 4, covariance_type="full", init_params=init_params, n_init=n_init,
        max_iter=200, tol=1e-6, reg_covar=1e-6, random_state=np.random.RandomState(seed), **extra,
    )


def _clusters_of_unequal_size(seed=0):
    """Five clusters for four components: starts disagree on which to merge."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [4, 0], [0, 4], [4, 4], [9, 9]], dtype=float)
    sizes = [3000, 300, 300, 3000, 600]
    return np.vstack([c + rng.normal(scale=s, size=(n, 2))
                      for c, n, s in zip(centres, sizes, [1.0, 0.3, 0.3, 1.0, 2.0])])


def test_screened_starts_are_never_worse_than_the_single_start():
    X = _clusters_of_unequal_size()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    for seed in range(4):
        single = _fit(X, 1, seed=seed)
        screened = _fit(X, "auto", seed=seed, input_scale=np.array([1.0, 1.0]))
        assert screened.lower_bound >= single.lower_bound - 1e-6


def test_screening_includes_kmeans_in_the_input_units(monkeypatch):
    X = _clusters_of_unequal_size()
    seen = []
    original = _mixture.initial_responsibilities

    def spy(X_start, *args, **kwargs):
        seen.append(np.std(X_start, axis=0))
        return original(X_start, *args, **kwargs)

    monkeypatch.setattr(_mixture, "initial_responsibilities", spy)
    _fit(X, "auto", input_scale=np.array([10.0, 1.0]))
    assert len(seen) == 1 + len(_mixture.SCREENED_STARTS)  # kmeans is init_params already
    np.testing.assert_allclose(seen[-1] / seen[0], [10.0, 1.0])


def test_a_start_cannot_win_by_a_spike_on_a_clipped_value():
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal([1, 1], 0.6, size=(4000, 2)), rng.normal([4, 4], 0.6, size=(4000, 2))])
    X = np.clip(X, 0, None)  # a clipped level: about 5 % of rows exactly (0, 0)
    X[rng.random(len(X)) < 0.05] = 0.0
    spiky = _mixture.fit_mixture(
        X, np.ones(len(X)), 3, covariance_type="full", init_params="kmeans", n_init="auto",
        max_iter=200, tol=1e-4, reg_covar=1e-6, random_state=np.random.RandomState(0),
    )
    assert _mixture.spike_count(X, np.ones(len(X)), spiky.mixture) == 0
    # the spike exists and would have a larger likelihood: a start on it finds it
    resp = np.zeros((len(X), 3))
    resp[:, 0] = np.all(X == 0, axis=1)
    resp[~resp[:, 0].astype(bool), 1 + (X[~resp[:, 0].astype(bool), 0] > 2.5)] = 1
    initial = _mixture.initial_mixture(X, np.ones(len(X)), resp, 1e-6, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_spike = _mixture.run_em(X, np.ones(len(X)), initial, max_iter=200, tol=1e-4,
                                   reg_covar=1e-6)
    assert _mixture.spike_count(X, np.ones(len(X)), on_spike.mixture) == 1
    assert on_spike.lower_bound > spiky.lower_bound


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("n_features", [1, 3])
def test_float32_log_densities_take_one_compiled_pass_with_numpy_s_values(
    covariance_type, n_features
):
    rng = np.random.default_rng(5)
    X = _blobs()[:, :n_features]
    mixture = _mixture.fit_mixture(
        X, np.ones(len(X)), 3, covariance_type=covariance_type, init_params="kmeans", n_init=1,
        max_iter=50, tol=1e-4, reg_covar=1e-6, random_state=np.random.RandomState(0),
    ).mixture
    pixels = (rng.normal(size=(5000, n_features)) * 3).astype(np.float32)
    expected = _mixture.log_gaussian_prob(
        pixels, mixture.means, mixture.precisions_cholesky, covariance_type
    )
    expected += np.log(mixture.weights).astype(np.float32)
    found = _mixture.weighted_log_prob(pixels, mixture)
    assert found.dtype == np.float32 and found.shape == (5000, 3)
    if n_features == 1:  # the same operations in the same order and precision
        np.testing.assert_array_equal(found, expected)
    else:  # BLAS may sum the products in another order
        np.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-5)
    # a strided view gives the same values
    wide = np.repeat(pixels, 2, axis=0)[::2]
    np.testing.assert_array_equal(_mixture.weighted_log_prob(wide, mixture), found)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("n_features", [1, 3])
def test_integer_pixels_are_standardised_inside_the_compiled_pass_bit_for_bit(dtype, n_features):
    rng = np.random.default_rng(8)
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, size=(4000, n_features), endpoint=True).astype(dtype)
    offset = values.mean(axis=0) + rng.normal(size=n_features)
    scale = values.std(axis=0) * rng.uniform(0.5, 2.0, size=n_features)
    X = (values - offset) / scale
    mixture = _mixture.fit_mixture(
        X, np.ones(len(X)), 3, covariance_type="full", init_params="kmeans", n_init=1,
        max_iter=20, tol=1e-4, reg_covar=1e-6, random_state=np.random.RandomState(0),
    ).mixture
    expected = _mixture.weighted_log_prob(
        _kernel.standardize(values, offset, scale, np.float32), mixture
    )
    found = _mixture.standardized_log_prob(values, mixture, offset, scale)
    np.testing.assert_array_equal(found, expected)
    # the pixels of a chunk are often a strided view of the image
    np.testing.assert_array_equal(
        _mixture.standardized_log_prob(np.repeat(values, 2, axis=0)[1::2], mixture, offset, scale),
        expected,
    )
    diagonal = _mixture.fit_mixture(
        X, np.ones(len(X)), 3, covariance_type="diag", init_params="kmeans", n_init=1,
        max_iter=5, tol=1e-4, reg_covar=1e-6, random_state=np.random.RandomState(0),
    ).mixture
    assert _mixture.standardized_log_prob(values, diagonal, offset, scale) is None


def _same_partition(a, b):
    """Whether two labellings group the rows alike (whatever the label numbers)."""
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


def test_distinct_rows_groups_rows_as_unique_does():
    rng = np.random.default_rng(0)
    rows = np.round(rng.normal(size=(5000, 3)) * 8) / 8  # many repeated rows
    rows[:50] = -rows[50:100]  # rows that differ in signs only (a weak hash merges them)
    rows[100:110] = -0.0  # equal to the rows of zeros
    rows[110:120] = 0.0
    _, expected = np.unique(rows + 0.0, axis=0, return_inverse=True)
    found = _mixture.distinct_rows(rows)
    assert found.shape == (len(rows),)
    assert _same_partition(found, expected.reshape(-1))
    assert len(np.unique(found[100:120])) == 1
    grey = np.round(rng.normal(size=(3000, 1)) * 4)
    assert _same_partition(_mixture.distinct_rows(grey), np.unique(grey[:, 0], return_inverse=True)[1])


def test_distinct_rows_falls_back_to_comparing_rows_when_hashes_collide(monkeypatch):
    rows = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [5.0, 6.0]])
    monkeypatch.setattr(_mixture, "_mix64", lambda values: np.zeros_like(values))
    found = _mixture.distinct_rows(rows)
    assert found[0] == found[2] and len({found[0], found[1], found[3]}) == 3


@pytest.mark.parametrize("name", ["moon", "camera", "coins"])
def test_a_grey_histogram_fit_is_never_worse_than_gaussian_mixture_on_every_pixel(name):
    # EM on an exact histogram runs past tol (it is cheap there); stopping at
    # tol left moon 0.011 nats per pixel below the original script's fit
    from skimage import data

    from gmm_segmenter import GMMSegmenter

    image = getattr(data, name)()
    pixels = image.reshape(-1, 1).astype(np.float64)
    ours = GMMSegmenter(3, beta=0, random_state=0).fit(image)
    reference = GaussianMixture(3, random_state=0).fit(pixels)
    assert ours.fit_method_ == "histogram"
    assert ours.score(image) >= reference.score(pixels)


def test_polishing_goes_past_tol_and_keeps_converged():
    rng = np.random.default_rng(0)
    values = np.arange(256.0)[:, np.newaxis]
    weights = rng.integers(1, 100, size=256).astype(np.float64)
    resp = _mixture.initial_responsibilities(
        values, weights, 3, "quantile", np.random.RandomState(0)
    )
    initial = _mixture.initial_mixture(values, weights, resp, 1e-6, "full")
    kwargs = dict(max_iter=500, tol=1e-3, reg_covar=1e-6)
    polished = _mixture.run_em(values, weights, initial, polish=True, **kwargs)
    plain = _mixture.run_em(values, weights, initial, **kwargs)
    assert plain.converged and polished.converged
    assert abs(plain.lower_bounds[-1] - plain.lower_bounds[-2]) < 1e-3
    assert polished.n_iter > plain.n_iter
    assert polished.lower_bound >= plain.lower_bound


@pytest.mark.parametrize(
    "shape, order", [((65_537, 3), "C"), ((100, 7), "C"), ((1, 2), "C"), ((0, 4), "C"),
                     ((5_000, 1), "C"), ((5_000, 3), "F")],
)
def test_column_sums_are_numpys_sums_bit_for_bit(shape, order):
    # the compiled loop must add the rows in numpy's order; where numpy sums
    # pairwise (one column, column-major) numpy's own sum is used
    rng = np.random.default_rng(21)
    values = np.asarray(rng.random(shape) * 10.0 ** rng.uniform(-8, 8, size=shape), order=order)
    np.testing.assert_array_equal(_mixture.column_sums(values), values.sum(axis=0))


@pytest.mark.parametrize("values", [
    np.random.default_rng(0).normal(size=5000),
    np.linspace(-3.0, 7.0, 257 * 4),  # values on the bin edges themselves
    np.concatenate([np.linspace(0.1, 0.3, 300), [1e9, -1e9]]),  # two far outliers
    np.repeat(np.arange(256.0), 3),  # exactly as many distinct values as bins
    np.repeat(np.arange(257.0), 3)[::-1].copy(),  # one more, in descending order
])
def test_the_multi_otsu_bins_are_those_of_a_binary_search(values):
    n_bins = 256
    ordered = np.unique(values)
    if ordered.size <= n_bins:
        expected = np.searchsorted(ordered, values)
    else:
        edges = np.linspace(values.min(), values.max(), n_bins + 1)
        expected = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
        got = np.empty(values.size, dtype=np.intp)
        _mixture._bin_of(values, edges, got)
        np.testing.assert_array_equal(got, expected)
    assert _mixture._more_distinct_than(values, n_bins) == (ordered.size > n_bins)
    # and the start built on them: each bin's class, as the binary search gave
    labels = _mixture.otsu_labels(values[:, np.newaxis], np.ones(values.size), 3)
    assert all(len(set(labels[expected == b])) <= 1 for b in np.unique(expected))


def test_the_multi_otsu_start_bins_few_values_exactly_and_many_values_evenly():
    rng = np.random.default_rng(22)
    # few distinct values: each is its own bin, so the split falls between them
    few = np.repeat([0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 30.0], 50)[:, np.newaxis]
    labels = _mixture.otsu_labels(few, np.ones(len(few)), 3)
    assert [set(labels[few[:, 0] == v]) for v in (0, 1, 2, 10, 11, 12, 30)] == [
        {0}, {0}, {0}, {1}, {1}, {1}, {2}]
    # many: three well-separated groups of continuous values
    many = np.concatenate([rng.normal(m, 0.5, 3000) for m in (0, 10, 30)])[:, np.newaxis]
    labels = _mixture.otsu_labels(many, np.ones(len(many)), 3)
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 3000))
