"""Guided segmentation: scribbles (``fit(X, y)``) and prior maps (``fit(X, prior=...)``)."""

import json
import warnings

import numpy as np
import pytest
from _helpers import ari, make_segmenter, run_cli
from _images import biased_blobs, quadrants
from scipy import ndimage

from gmm_segmenter import GMMSegmenter, load_model, save_model


def stripes(shape=(60, 90), levels=(30.0, 120.0, 210.0), noise=10.0, seed=0):
    """Three vertical bands, darkest (truth 1) to brightest (truth 3)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(1, 4), shape[1] // 3)[np.newaxis].repeat(shape[0], axis=0)
    return np.asarray(levels)[truth - 1] + rng.normal(scale=noise, size=shape), truth


def scribble(truth, numbering):
    """A short stroke in the middle of each true class ``c``, labelled
    ``numbering[c]`` (``numbering`` maps a truth label to a scribble label)."""
    y = np.zeros(truth.shape, dtype=np.int32)
    for c, label in numbering.items():
        rows = np.flatnonzero((truth == c).any(axis=1))
        columns = np.flatnonzero((truth == c).any(axis=0))
        row, column = rows[len(rows) // 2], columns[len(columns) // 2]
        stroke = (slice(row - 1, row + 2), slice(column - 4, column + 4))
        assert np.all(truth[stroke] == c)
        y[stroke] = label
    return y


def close_pair(seed=0):
    """A large background and two small blobs whose levels are close: the
    unguided mixture spends two components on the background's tails and
    merges the blobs."""
    rng = np.random.default_rng(seed)
    truth = np.ones((96, 96), dtype=np.uint8)
    truth[20:36, 20:36] = 2
    truth[56:72, 56:72] = 3
    levels = np.array([100.0, 130.0, 150.0])
    return levels[truth - 1] + rng.normal(scale=15.0, size=truth.shape), truth


def label_of(labels, truth, c):
    """The most frequent label on true class ``c``."""
    return int(np.bincount(labels[truth == c]).argmax())


# ------------------------------------------------------------------ numbering


@pytest.mark.parametrize("beta", [0.0, "auto"])
def test_labels_follow_the_scribble_numbering(beta):
    image, truth = stripes()
    numbering = {1: 2, 2: 3, 3: 1}  # the bright class scribbled as 1
    y = scribble(truth, numbering)
    segmenter = GMMSegmenter(3, beta=beta, random_state=0).fit(image, y)
    labels = segmenter.predict(image)
    for c, label in numbering.items():
        assert label_of(labels, truth, c) == label
    np.testing.assert_allclose(segmenter.means_.ravel(), [210, 30, 120], atol=5)


def test_unscribbled_classes_come_after_the_scribbled_ones_darkest_first():
    image, truth = quadrants()
    y = scribble(truth, {4: 1, 2: 2})  # brightest as 1, the second darkest as 2
    labels = make_segmenter(4).fit_predict(image, y)
    assert [label_of(labels, truth, c) for c in (4, 2, 1, 3)] == [1, 2, 3, 4]


def test_labels_may_skip_a_number_that_an_unscribbled_class_then_takes():
    image, truth = stripes()
    y = scribble(truth, {3: 1, 1: 3})  # label 2 unused: the middle class takes it
    labels = make_segmenter(3).fit_predict(image, y)
    assert [label_of(labels, truth, c) for c in (3, 2, 1)] == [1, 2, 3]


def test_guided_separates_classes_the_unguided_fit_merges():
    image, truth = close_pair()
    unguided = GMMSegmenter(3, random_state=0).fit_predict(image)
    y = scribble(truth, {1: 1, 2: 2, 3: 3})
    guided = GMMSegmenter(3, random_state=0).fit_predict(image, y)
    assert ari(truth, unguided) < 0.75
    assert ari(truth, guided) > ari(truth, unguided) + 0.1
    assert [label_of(guided, truth, c) for c in (1, 2, 3)] == [1, 2, 3]


def test_fit_predict_and_fit_transform_keep_the_scribbled_pixels():
    image, truth = stripes(noise=60.0)  # noisy: some scribbled pixels look like another class
    y = scribble(truth, {1: 1, 2: 2, 3: 3})
    labels = make_segmenter(3).fit_predict(image, y)
    np.testing.assert_array_equal(labels[y > 0], y[y > 0])
    posteriors = make_segmenter(3).fit_transform(image, y)
    np.testing.assert_array_equal(posteriors[y > 0].argmax(axis=-1) + 1, y[y > 0])
    np.testing.assert_allclose(posteriors[y > 0].max(axis=-1), 1.0)


def test_scribbles_pass_their_class_to_neighbours_under_the_spatial_prior():
    image, truth = stripes(noise=60.0)
    y = scribble(truth, {1: 1, 2: 2, 3: 3})
    model = GMMSegmenter(3, beta=1.0, random_state=0)
    guided = model.fit_predict(image, y)
    plain = model.predict(image)  # the fitted model alone
    ring = ndimage.binary_dilation(y > 0, iterations=2) & (y == 0)
    agree_guided = np.mean(guided[ring] == truth[ring])
    agree_plain = np.mean(plain[ring] == truth[ring])
    assert agree_guided >= agree_plain


def test_n_components_auto_keeps_at_least_the_scribbled_classes():
    image, truth = stripes()
    y = scribble(truth, {1: 1, 2: 2})
    y[20:22, 10:20] = 5  # a fifth class, scribbled on the dark band
    segmenter = GMMSegmenter("auto", beta=0, random_state=0).fit(image, y)
    assert segmenter.n_components_ >= 5


def test_saved_model_round_trips(tmp_path):
    image, truth = stripes()
    y = scribble(truth, {1: 3, 2: 1, 3: 2})
    segmenter = GMMSegmenter(3, random_state=0).fit(image, y)
    path = tmp_path / "guided.npz"
    save_model(segmenter, path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(image), segmenter.predict(image))
    assert label_of(loaded.predict(image), truth, 1) == 3


# ------------------------------------------------------------ with the rest


def test_mask_ignores_scribbles_outside_it():
    image, truth = stripes()
    y = scribble(truth, {1: 1, 2: 2, 3: 3})
    mask = np.ones(truth.shape, dtype=bool)
    mask[:, :10] = False
    y_outside = y.copy()
    y_outside[40:45, :8] = 3  # wrong, but masked out: ignored
    labels = make_segmenter(3).fit_predict(image, y_outside, mask=mask)
    assert np.all(labels[~mask] == 0)
    assert [label_of(labels, truth, c) for c in (1, 2, 3)] == [1, 2, 3]


def test_bias_field_with_scribbles():
    image, truth, _ = biased_blobs()
    y = np.zeros(truth.shape, dtype=np.int32)
    rng = np.random.default_rng(1)
    for c, label in {1: 3, 2: 1, 3: 2}.items():
        inside = np.argwhere(ndimage.binary_erosion(truth == c, iterations=3))
        picks = inside[rng.choice(len(inside), 40, replace=False)]
        y[tuple(picks.T)] = label
    for beta in (0.0, "auto"):
        segmenter = GMMSegmenter(3, bias_field="auto", beta=beta, random_state=0)
        labels = segmenter.fit_predict(image, y)
        assert [label_of(labels, truth, c) for c in (1, 2, 3)] == [3, 1, 2]
        assert ari(truth, labels) > 0.8
        assert segmenter.bias_field_.shape == image.shape


def test_batch_with_scribbles_on_one_image_only():
    (a, truth_a), (b, truth_b) = stripes(seed=0), stripes(seed=1)
    y = [scribble(truth_a, {1: 2, 2: 3, 3: 1}), None]
    labels = make_segmenter(3).fit_predict([a, b], y)
    for image_labels, truth in zip(labels, (truth_a, truth_b)):
        assert [label_of(image_labels, truth, c) for c in (1, 2, 3)] == [2, 3, 1]


def test_dask_images_and_scribbles():
    da = pytest.importorskip("dask.array")
    image, truth = stripes(shape=(64, 96))
    y = scribble(truth, {1: 3, 2: 1, 3: 2})
    expected = make_segmenter(3).fit(image, y)
    for lazy_y in (y, da.from_array(y, chunks=(32, 32))):
        segmenter = make_segmenter(3).fit(da.from_array(image, chunks=(32, 32)), lazy_y)
        np.testing.assert_allclose(segmenter.means_, expected.means_, rtol=0.02)
        labels = segmenter.fit_predict(da.from_array(image, chunks=(32, 32)), lazy_y)
        assert hasattr(labels, "compute")
        labels = labels.compute()
        assert [label_of(labels, truth, c) for c in (1, 2, 3)] == [3, 1, 2]
        np.testing.assert_array_equal(labels[y > 0], y[y > 0])


def test_dask_scribbles_with_the_spatial_prior():
    da = pytest.importorskip("dask.array")
    image, truth = stripes(shape=(64, 96))
    y = scribble(truth, {1: 3, 2: 1, 3: 2})
    segmenter = GMMSegmenter(3, random_state=0)
    labels = segmenter.fit_predict(
        da.from_array(image, chunks=(32, 48)), da.from_array(y, chunks=(16, 16))
    ).compute()
    assert [label_of(labels, truth, c) for c in (1, 2, 3)] == [3, 1, 2]


def test_rgb_and_histogram_paths():
    image, truth = stripes()
    y = scribble(truth, {1: 2, 2: 1, 3: 3})
    as_uint8 = np.clip(image, 0, 255).astype(np.uint8)
    segmenter = make_segmenter(3).fit(as_uint8, y)
    assert segmenter.fit_method_ == "histogram"
    assert [label_of(segmenter.predict(as_uint8), truth, c) for c in (1, 2, 3)] == [2, 1, 3]
    rgb = np.stack([image, image[:, ::-1], 255 - image], axis=-1)
    labels = make_segmenter(3, channel_axis=-1).fit_predict(rgb, y)
    assert [label_of(labels, truth, c) for c in (1, 2, 3)] == [2, 1, 3]


# ------------------------------------------------------------------ prior maps


def one_hot_prior(truth, n_classes, confidence=0.8):
    prior = np.stack([truth == c for c in range(1, n_classes + 1)], axis=-1).astype(float)
    return prior * confidence + (1 - confidence) / n_classes


def test_prior_maps_name_the_classes_and_help_a_noisy_image():
    image, truth = stripes(noise=70.0)
    order = [2, 0, 1]  # class k of the prior is truth order[k] + 1
    prior = one_hot_prior(truth, 3)[..., order]
    unguided = make_segmenter(3).fit_predict(image)
    segmenter = make_segmenter(3)
    labels = segmenter.fit_predict(image, prior=prior)
    for k, c in enumerate(order):
        assert label_of(labels, truth, c + 1) == k + 1
    assert ari(truth, labels) > ari(truth, unguided) + 0.2
    # prior_weight=0 leaves the data alone (as unguided, in the prior's order)
    plain = make_segmenter(3, prior_weight=0.0).fit_predict(image, prior=prior)
    assert ari(truth, plain) < ari(truth, labels)


@pytest.mark.parametrize("beta", [0.0, "auto"])
def test_prior_weight_zero_is_the_unguided_fit_named_by_the_maps(beta):
    image, truth = stripes(noise=40.0)
    order = [2, 0, 1]  # class k of the prior is truth order[k] + 1
    prior = one_hot_prior(truth, 3)[..., order]
    kept = prior.copy()
    unguided = make_segmenter(3, beta=beta).fit(image)
    segmenter = make_segmenter(3, beta=beta, prior_weight=0.0)
    labels = segmenter.fit_predict(image, prior=prior)
    np.testing.assert_array_equal(prior, kept)
    # the same mixture, each component moved to the class its map names
    by_mean = np.argsort(segmenter.means_.ravel())
    np.testing.assert_allclose(segmenter.means_.ravel()[by_mean], unguided.means_.ravel())
    assert [label_of(labels, truth, c + 1) for c in order] == [1, 2, 3]
    expected = np.asarray(order)[unguided.predict(image) - 1] + 1
    assert [label_of(labels, truth, c) for c in (1, 2, 3)] != [1, 2, 3]
    assert ari(expected, labels) == 1.0


@pytest.mark.parametrize("channel_axis", [None, -1])
def test_flat_prior_maps_give_the_unguided_fit(channel_axis):
    image, truth = stripes(noise=30.0)
    if channel_axis is not None:
        image = np.stack([image, 255 - image, image / 2], axis=-1)
    flat = np.full(truth.shape + (3,), 1 / 3)
    unguided = make_segmenter(3, channel_axis=channel_axis).fit(image)
    for weight in (1.0, 0.0):
        segmenter = make_segmenter(3, channel_axis=channel_axis, prior_weight=weight)
        labels = segmenter.fit_predict(image, prior=flat)
        np.testing.assert_array_equal(segmenter.means_, unguided.means_)
        np.testing.assert_array_equal(labels, unguided.predict(image))


def test_prior_maps_that_leave_classes_alike_do_not_merge_them():
    """Maps equal for two classes (or flat, beside scribbles) start those
    classes alike; EM cannot part identical components, so they start from
    clusters of the data instead."""
    image, truth = stripes(noise=20.0)
    prior = one_hot_prior(truth, 3)
    prior[..., 1] = prior[..., 2] = (prior[..., 1] + prior[..., 2]) / 2
    for beta in (0.0, "auto"):
        segmenter = make_segmenter(3, beta=beta)
        labels = segmenter.fit_predict(image, prior=prior)
        assert len(np.unique(np.round(segmenter.means_.ravel()))) == 3
        assert ari(truth, labels) > 0.9
        assert label_of(labels, truth, 1) == 1  # the class the maps tell apart
    y = scribble(truth, {1: 1})
    segmenter = make_segmenter(3, beta=0.0, prior_weight=0.0)
    labels = segmenter.fit_predict(image, y, prior=np.full(truth.shape + (3,), 1 / 3))
    assert len(np.unique(np.round(segmenter.means_.ravel()))) == 3
    assert ari(truth, labels) > 0.9


def _distinct_means(segmenter):
    return len(np.unique(np.round(segmenter.means_.ravel()))) == segmenter.n_components_


@pytest.mark.parametrize("case", ["proportions", "proportional", "masked"])
@pytest.mark.parametrize("init_params", ["auto", "k-means++"])
def test_maps_that_are_the_same_up_to_a_factor_do_not_merge_classes(case, init_params):
    image, truth = stripes(noise=20.0)
    mask = None
    if case == "proportions":  # the same probabilities at every pixel, uneven
        prior = np.broadcast_to([0.2, 0.3, 0.5], truth.shape + (3,)).copy()
    elif case == "proportional":  # classes 2 and 3 of one map, 2/3 and 1/3 of it
        prior = one_hot_prior(truth, 3)
        shared = prior[..., 1] + prior[..., 2]
        prior[..., 1], prior[..., 2] = 2 * shared / 3, shared / 3
    else:  # the maps tell classes apart only where the mask hides the image
        prior = np.full(truth.shape + (3,), 1 / 3)
        prior[:, :10] = one_hot_prior(truth, 3)[:, :10]
        mask = np.ones(truth.shape, bool)
        mask[:, :10] = False
    segmenter = make_segmenter(3, init_params=init_params)
    labels = segmenter.fit_predict(image, prior=prior, mask=mask)
    assert _distinct_means(segmenter), segmenter.means_.ravel()
    keep = truth > 0 if mask is None else mask
    if case == "proportions" and init_params != "auto":
        # a prior of half the pixels in class 3 everywhere, from seeds: EM
        # settles where class 3 takes most of the image (a local optimum)
        return
    assert ari(truth[keep], labels[keep]) > 0.9


@pytest.mark.parametrize("beta", [0.0, "auto"])
def test_prior_maps_are_the_class_probabilities_and_are_not_counted_twice(beta):
    """Constant maps of 0.5/0.3/0.2: mixing weights re-estimated from
    posteriors that hold the maps ran to one class for the whole image."""
    from skimage import data

    image = data.coins()
    maps = np.broadcast_to([0.5, 0.3, 0.2], image.shape + (3,)).copy()
    segmenter = make_segmenter(3, beta=beta)
    labels = segmenter.fit_predict(image, prior=maps)
    np.testing.assert_allclose(segmenter.weights_, 1 / 3)
    counts = np.bincount(labels.ravel(), minlength=4)[1:]
    assert counts.min() > 0.1 * labels.size, counts
    # the proportions the maps ask for, in their order
    assert counts[0] > counts[1] > counts[2], counts


@pytest.mark.parametrize("init_params", ["k-means++", "random_from_data"])
def test_scribbles_alone_start_the_other_classes_from_every_row(init_params):
    image, truth = stripes(noise=20.0)
    segmenter = make_segmenter(3, init_params=init_params)
    labels = segmenter.fit_predict(image, scribble(truth, {1: 1}))
    assert _distinct_means(segmenter), segmenter.means_.ravel()
    assert ari(truth, labels) > 0.9


def test_prior_weight_zero_names_the_classes_of_the_corrected_image():
    image, truth = stripes(shape=(60, 120), noise=5.0)
    field = np.linspace(0.6, 1.2, truth.shape[1])[np.newaxis]
    order = [1, 2, 0]
    prior = one_hot_prior(truth, 3)[..., order]
    for bias_field in (None, "auto"):
        segmenter = make_segmenter(3, prior_weight=0.0, bias_field=bias_field)
        labels = segmenter.fit_predict(image * field, prior=prior)
        assert [label_of(labels, truth, c + 1) for c in order] == [1, 2, 3], bias_field


def test_prior_maps_with_the_spatial_prior():
    image, truth = stripes(noise=70.0)
    labels = GMMSegmenter(3, random_state=0).fit_predict(image, prior=one_hot_prior(truth, 3))
    assert [label_of(labels, truth, c) for c in (1, 2, 3)] == [1, 2, 3]
    assert ari(truth, labels) > 0.9


# ------------------------------------------------------------------ bad input


def _unchanged(*arrays):
    return [np.array(a, copy=True) for a in arrays]


@pytest.mark.parametrize(
    "make_y, match",
    [
        (lambda y: y[:, :-1], r"Scribbles y have shape \(60, 89\) but the image's spatial shape "
                              r"is \(60, 90\); pass an integer label image of shape \(60, 90\)"),
        (lambda y: np.where(y == 3, 4, y), r"Scribbles y hold label 4 but the model has 3 "
                                           r"components \(labels 1..3\); pass n_components=4"),
        (lambda y: np.where(y == 3, -1, y), r"negative label -1; .*-1 for 'unlabelled' is 0 here"),
        (lambda y: y + 0.5 * (y > 0), r"hold the value 1.5, which is not a whole number"),
        (lambda y: np.where(y == 3, np.nan, y), r"hold the value nan, which is not a whole number"),
        (lambda y: y.astype(str), r"Scribbles y have dtype <U\d+; pass an integer label image"),
        (lambda y: np.where(y == 3, 255, y).astype(np.uint8),
         r"hold label 255 .*if 255 marks pixels to leave out, set them to 0"),
        (lambda y: np.where(y > 0, 255, 0).astype(np.uint8),
         r"hold only the label 255, as a black-and-white mask .* pass the image as mask= "),
        (lambda y: np.where(y == 3, 1e20, y), r"hold the label 1e\+20, far above any number "
                                              r"of classes \(at most 65535\)"),
        (lambda y: np.where(y == 3, 2**64 - 5, y).astype(np.uint64),
         r"hold the label 1.84467e\+19, far above any number of classes"),
    ],
)
def test_bad_scribbles_are_refused_clearly(make_y, match):
    image, truth = stripes()
    y = make_y(scribble(truth, {1: 1, 2: 2, 3: 3}))
    before = _unchanged(image, y)
    with pytest.raises((ValueError, TypeError), match=match):
        make_segmenter(3).fit(image, y)
    np.testing.assert_array_equal(image, before[0])
    np.testing.assert_array_equal(y, before[1])


@pytest.mark.parametrize("n_components", [1, 3, "auto"])
def test_a_black_and_white_mask_given_as_scribbles_is_refused(n_components):
    image, truth = stripes()
    y = np.where(scribble(truth, {1: 1, 2: 2, 3: 3}) > 0, 255, 0).astype(np.uint8)
    with pytest.raises(ValueError, match=r"hold only the label 255, as a black-and-white mask"):
        make_segmenter(n_components).fit(image, y)


@pytest.mark.parametrize("n_components", [3, "auto"])
def test_a_picture_given_as_scribbles_is_named_as_one(n_components):
    # a 16-bit image passed as --scribbles was told to use -k 65535 or more
    image, truth = stripes()
    picture = (np.random.default_rng(0).random(image.shape) * 65535).astype(np.uint16)
    with pytest.raises(ValueError, match=r"Scribbles y hold \d+ different values \(up to "
                       r"\d+\) on 100% of the pixels, as a picture does, not painted strokes"):
        make_segmenter(n_components).fit(image, picture)
    # strokes of many classes on a large share are labels all the same
    y = scribble(truth, {1: 1, 2: 2, 3: 3})
    make_segmenter(3).fit(image, y)


def test_whole_number_floats_are_labels():
    image, truth = stripes()
    y = scribble(truth, {1: 2, 2: 3, 3: 1})
    as_ints = make_segmenter(3).fit(image, y)
    as_floats = make_segmenter(3).fit(image, y.astype(np.float32))
    np.testing.assert_array_equal(as_ints.means_, as_floats.means_)


def test_scribbles_entirely_outside_the_mask_are_refused():
    image, truth = stripes()
    y = scribble(truth, {1: 1, 2: 2, 3: 3})
    mask = ~(y == 2)
    with pytest.raises(ValueError, match=r"Every scribble of class\(es\) 2 lies on pixels that "
                                         r"are masked out"):
        make_segmenter(3).fit(image, y, mask=mask)


def test_classes_with_identical_scribbled_values_warn():
    image, truth = stripes()
    image[5:7, 0:3] = 30.0  # a flat patch, scribbled as two classes
    y = np.zeros(truth.shape, dtype=int)
    y[5, 0:3], y[6, 0:3] = 1, 2
    y[5:8, 40:44] = 3
    with pytest.warns(UserWarning, match=r"scribbles of classes 1 and 2 cover identical pixel "
                                         r"values \(30\).*merge them into one label"):
        make_segmenter(3).fit(image, y)


def test_batch_scribbles_must_match_the_batch():
    image, truth = stripes()
    y = scribble(truth, {1: 1})
    with pytest.raises(ValueError, match=r"X is a list of 2 images, so y must be a list of 2"):
        make_segmenter(3).fit([image, image], y)
    with pytest.raises(ValueError, match=r"y is a list of 1 arrays but X is one image"):
        make_segmenter(3).fit(image, [y])


@pytest.mark.parametrize(
    "make_prior, match",
    [
        (lambda p: p[..., :2], r"prior has 2 classes on its last axis .* but n_components=3"),
        (lambda p: p[:-1], r"prior has shape \(59, 90, 3\) but the image's spatial shape is "
                           r"\(60, 90\); .* shape \(60, 90, 3\) for n_components=3\.$"),
        (lambda p: p - 0.3, r"prior holds the negative value"),
        (lambda p: p * 2, r"must sum to 1 at every pixel .* sum to 2.*normalise them first"),
        (lambda p: np.where(p > 0.5, np.nan, p),
         r"prior holds NaN or infinite values.*\(np\.nan_to_num\(prior\) sets them to 0\)"),
    ],
)
def test_bad_prior_maps_are_refused_clearly(make_prior, match):
    image, truth = stripes()
    prior = make_prior(one_hot_prior(truth, 3))
    before = prior.copy()
    with pytest.raises(ValueError, match=match):
        make_segmenter(3).fit(image, prior=prior)
    np.testing.assert_array_equal(prior, before)


def test_a_prior_of_the_wrong_shape_under_auto_components_names_k():
    image, truth = stripes()
    with pytest.raises(ValueError, match=r"shape \(60, 90, K\) for K classes\.$"):
        make_segmenter("auto").fit(image, prior=one_hot_prior(truth, 3)[:-1])


def test_prior_weight_is_validated():
    image, truth = stripes()
    with pytest.raises(ValueError, match="prior_weight"):
        make_segmenter(3, prior_weight=-1.0).fit(image, prior=one_hot_prior(truth, 3))


def test_unguided_fit_is_unchanged_by_a_none_y():
    image, _ = stripes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = make_segmenter(3).fit(image)
        b = make_segmenter(3).fit(image, None)
    np.testing.assert_array_equal(a.means_, b.means_)


# ------------------------------------------------------------------ CLI


def test_cli_scribbles(tmp_path):
    import tifffile

    image, truth = stripes()
    image = np.clip(image, 0, 255).astype(np.uint8)
    y = scribble(truth, {1: 3, 2: 1, 3: 2}).astype(np.uint8)
    tifffile.imwrite(tmp_path / "bands.tif", image)
    tifffile.imwrite(tmp_path / "scribbles.tif", y)
    out = tmp_path / "out"
    status = run_cli([tmp_path / "bands.tif", "-k", "3", "--scribbles", tmp_path / "scribbles.tif",
                      "-o", out, "--seed", "0"])
    assert status == 0
    labels = tifffile.imread(next(out.rglob("*labels*.tif")))
    assert [label_of(labels, truth, c) for c in (1, 2, 3)] == [3, 1, 2]
    report = json.loads(next(out.rglob("*.json")).read_text())
    assert "scribbles" in json.dumps(report)


def test_cli_scribbles_of_another_size_fail_clearly(tmp_path, capsys):
    import tifffile

    image, truth = stripes()
    tifffile.imwrite(tmp_path / "bands.tif", np.clip(image, 0, 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "scribbles.tif", np.zeros((10, 10), dtype=np.uint8))
    status, _, err = run_cli([tmp_path / "bands.tif", "-k", "3", "--scribbles",
                              tmp_path / "scribbles.tif", "-o", tmp_path / "out"], capsys)
    assert status != 0
    assert "(10, 10)" in err and "(60, 90)" in err


@pytest.mark.parametrize("label, expected", [
    (5, "pass -k 5 or more (or -k auto)"),
    (-1, "set those pixels to 0 in the label file"),
])
def test_cli_scribble_errors_speak_of_options_not_of_python(tmp_path, capsys, label, expected):
    import tifffile

    image, truth = stripes()
    tifffile.imwrite(tmp_path / "bands.tif", np.clip(image, 0, 255).astype(np.uint8))
    y = scribble(truth, {1: 1, 2: 2, 3: 3}).astype(np.int16)
    y[y == 3] = label
    tifffile.imwrite(tmp_path / "scribbles.tif", y)
    status, _, err = run_cli([tmp_path / "bands.tif", "-k", "3", "--scribbles",
                              tmp_path / "scribbles.tif", "-o", tmp_path / "out"], capsys)
    assert status != 0
    assert "The --scribbles labels hold" in err and expected in err, err
    for python in ("n_components", "np.where", "Scribbles y"):
        assert python not in err, err


def test_cli_scribbles_with_a_saved_model_is_a_usage_error(tmp_path, capsys):
    image, truth = stripes()
    path = tmp_path / "model.npz"
    save_model(make_segmenter(3).fit(image), path)
    status, _, err = run_cli(["x.png", "--model", path, "--scribbles", "s.tif"], capsys)
    assert status == 2
    assert "--scribbles guides a new fit, but --model applies a saved model" in err


def test_histogram_and_pixel_fits_agree_with_scribbles():
    image, truth = stripes(noise=25.0)
    as_uint8 = np.clip(np.round(image), 0, 255).astype(np.uint8)
    y = scribble(truth, {1: 2, 2: 1})  # the bright class unscribbled
    histogram = make_segmenter(3).fit(as_uint8, y)
    pixels = make_segmenter(3).fit(as_uint8.astype(np.float64), y)
    assert (histogram.fit_method_, pixels.fit_method_) == ("histogram", "subsample")
    np.testing.assert_allclose(histogram.means_, pixels.means_, atol=0.5)
    np.testing.assert_allclose(histogram.weights_, pixels.weights_, atol=0.01)


def test_segment_takes_scribbles():
    from gmm_segmenter import segment

    image, truth = stripes()
    labels = segment(image, 3, scribbles=scribble(truth, {3: 1}), beta=0, random_state=0)
    assert [label_of(labels, truth, c) for c in (3, 1, 2)] == [1, 2, 3]


def test_prior_maps_for_a_batch_and_refused_for_dask():
    (a, truth_a), (b, truth_b) = stripes(noise=70.0, seed=0), stripes(noise=70.0, seed=1)
    priors = [one_hot_prior(truth_a, 3), one_hot_prior(truth_b, 3)]
    labels = make_segmenter(3).fit_predict([a, b], prior=priors)
    for image_labels, truth in zip(labels, (truth_a, truth_b)):
        assert [label_of(image_labels, truth, c) for c in (1, 2, 3)] == [1, 2, 3]
    da = pytest.importorskip("dask.array")
    with pytest.raises(TypeError, match=r"prior maps need images in memory.*X.compute\(\)"):
        make_segmenter(3).fit(da.from_array(a, chunks=30), prior=priors[0])


def test_the_identical_values_warning_points_at_the_caller():
    image, truth = stripes()
    image[5:7, 0:3] = 30.0
    y = np.zeros(truth.shape, dtype=int)
    y[5, 0:3], y[6, 0:3] = 1, 2
    with pytest.warns(UserWarning, match="identical pixel values") as caught:
        make_segmenter(3).fit(image, y)
    assert any(w.filename == __file__ for w in caught)


def test_empty_scribbles_fit_as_unguided():
    image, _ = stripes()
    plain = GMMSegmenter(3, random_state=0).fit(image)
    empty = GMMSegmenter(3, random_state=0).fit(image, np.zeros(image.shape, dtype=np.uint8))
    np.testing.assert_array_equal(plain.means_, empty.means_)
    np.testing.assert_array_equal(plain.weights_, empty.weights_)


@pytest.mark.parametrize("classes_first", [True, False])
def test_cli_prior(tmp_path, classes_first):
    import tifffile

    image, truth = stripes(noise=20.0)
    image = np.clip(image, 0, 255).astype(np.uint8)
    prior = one_hot_prior(truth, 3)[..., [2, 0, 1]].astype(np.float32)
    tifffile.imwrite(tmp_path / "bands.tif", image)
    tifffile.imwrite(tmp_path / "prior.tif", np.moveaxis(prior, -1, 0) if classes_first else prior)
    out = tmp_path / "out"
    status = run_cli([tmp_path / "bands.tif", "-k", "3", "--prior", tmp_path / "prior.tif",
                      "--prior-weight", "0.8", "--beta", "0", "-o", out])
    assert status == 0
    labels = tifffile.imread(next(out.rglob("*labels*.tif")))
    assert [label_of(labels, truth, c) for c in (3, 1, 2)] == [1, 2, 3]
    report = json.loads(next(out.rglob("*.json")).read_text())
    assert report["prior"]["weight"] == 0.8


def test_cli_prior_of_another_shape_and_a_weight_alone_fail_clearly(tmp_path, capsys):
    import tifffile

    image, _ = stripes()
    tifffile.imwrite(tmp_path / "bands.tif", np.clip(image, 0, 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "prior.tif", np.full((3, 10, 10), 1 / 3, dtype=np.float32))
    status, _, err = run_cli([tmp_path / "bands.tif", "--prior", tmp_path / "prior.tif",
                              "-o", tmp_path / "out"], capsys)
    assert status != 0 and "--prior has shape (3, 10, 10)" in err and "(60, 90)" in err
    status, _, err = run_cli([tmp_path / "bands.tif", "--prior-weight", "2"], capsys)
    assert status == 2 and "give --prior PRIORFILE too" in err
    # three maps, classes first, for -k 2: the file's layout, not the one read
    tifffile.imwrite(tmp_path / "three.tif", np.full((3, 60, 90), 1 / 3, dtype=np.float32))
    status, _, err = run_cli([tmp_path / "bands.tif", "-k", "2", "--prior", tmp_path / "three.tif",
                              "-o", tmp_path / "out"], capsys)
    assert status != 0 and "--prior holds 3 class maps but -k 2; pass -k 3" in err, err
    assert "(60, 90, 3)" not in err and "n_components" not in err


def test_model_files_record_prior_weight_only_when_it_is_not_the_default(tmp_path):
    image, truth = stripes()
    prior = one_hot_prior(truth, 3)
    for weight, recorded in ((1.0, False), (0.5, True)):
        segmenter = make_segmenter(3, prior_weight=weight).fit(image, prior=prior)
        path = tmp_path / f"weight{weight}.npz"
        save_model(segmenter, path)
        with np.load(path) as stored:
            text = " ".join(str(stored[name]) for name in stored.files)
        assert ("prior_weight" in text) == recorded
        loaded = load_model(path)
        assert loaded.prior_weight == weight
        np.testing.assert_array_equal(loaded.predict(image), segmenter.predict(image))


def test_a_small_free_class_kept_under_the_prior_raises_no_swallowed_warning():
    # Guided HMRF-EM starts from equal weights; the warning must compare a
    # component's posterior share with its pixel-wise share, not with 1/K.
    rng = np.random.default_rng(4)
    level = np.zeros((128, 128))
    level[:, 64:] = 40.0
    for r, c in rng.integers(4, 124, size=(25, 2)):
        level[r - 1:r + 2, c - 1:c + 2] = 250.0  # specks, about 1.4 % of the pixels
    image = rng.poisson(level + 3).astype(np.float32)
    scribbles = np.zeros(image.shape, np.uint8)
    scribbles[10:14, 10:40] = 1
    scribbles[10:14, 80:110] = 2
    scribbles[level == 250.0] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        labels = GMMSegmenter(3, random_state=0).fit_predict(image, y=scribbles)
    assert np.mean(labels[level == 250.0] == 3) > 0.9


def test_a_large_guided_image_is_fitted_whole_not_on_tiles(monkeypatch):
    # unguided, an image above 2**20 pixels is fitted on tiles, which could
    # miss every stroke; guided it is fitted whole
    from gmm_segmenter import _hmrf

    image, truth = stripes(shape=(1030, 1032))
    called = []
    original = _hmrf.representative_tiles
    monkeypatch.setattr(
        _hmrf, "representative_tiles", lambda *a, **k: called.append(1) or original(*a, **k)
    )
    GMMSegmenter(3, beta=0.5, random_state=0).fit(image)
    assert called  # the unguided fit would use tiles here
    called.clear()
    y = scribble(truth, {1: 3, 2: 1, 3: 2})
    labels = GMMSegmenter(3, beta=0.5, random_state=0).fit_predict(image, y=y)
    assert not called
    assert ari(truth, labels) > 0.99 and labels[truth == 1].mean() > 2.9


def test_scribbles_for_a_colour_image_fitted_as_a_volume_suggest_channel_axis():
    rgb = np.random.default_rng(0).integers(0, 255, size=(20, 30, 3)).astype(np.uint8)
    y = np.zeros((20, 30), np.uint8)
    y[2, 2] = 1
    with pytest.raises(ValueError, match=r"shape \(20, 30\).*\(20, 30, 3\).*channel_axis=-1"):
        GMMSegmenter(2, beta=0, random_state=0).fit(rgb, y=y)


# ------------------------------------------------- the smoothing, from the strokes


def two_strokes_per_class(truth):
    """Two short separate strokes inside each true class ``c``, labelled ``c``."""
    y = np.zeros(truth.shape, dtype=np.int32)
    for c in np.unique(truth):
        inside = np.argwhere(ndimage.binary_erosion(truth == c, iterations=3))
        for row, column in (inside[len(inside) // 4], inside[3 * len(inside) // 4]):
            y[row, column - 2 : column + 3] = c
    assert all(ndimage.label(y == c)[1] == 2 for c in np.unique(truth))
    return y


def test_held_out_split_alternates_each_classs_strokes():
    from gmm_segmenter import _guidance

    y = np.zeros((20, 30), dtype=np.int32)
    y[2, 2:6] = 1  # class 1: three strokes
    y[10, 2:6] = 1
    y[17, 20:25] = 1
    y[5, 10:14] = 2  # class 2: one stroke, which is kept
    y[6, 14] = 2  # touching it diagonally: the same stroke
    def guidance_of(y):
        positions = np.flatnonzero(y)
        image = _guidance.ImageGuidance(y.shape, positions, y.ravel()[positions] - 1)
        return _guidance.Guidance([image], scribbled=(0, 1), min_components=2, prior_weight=1.0)

    kept, held_out = guidance_of(y).held_out_split()
    (positions, classes), = held_out
    held = np.zeros(y.size, dtype=np.int32)
    held[positions] = classes + 1
    assert np.array_equal(held.reshape(y.shape) > 0, np.pad(y[10:11, 2:6] > 0, ((10, 9), (2, 24))))
    kept_map = np.zeros(y.size, dtype=np.int32)
    kept_map[kept.images[0].positions] = kept.images[0].classes + 1
    assert np.array_equal(kept_map.reshape(y.shape) + held.reshape(y.shape), y)
    single = np.where(y == 2, 2, 0) + np.where(np.arange(20)[:, None] == 2, y, 0)
    assert guidance_of(single).held_out_split() is None


def test_guided_auto_smooths_as_much_as_the_held_out_strokes_need():
    from gmm_segmenter import _hmrf

    clean, truth = quadrants(noise=8.0)
    noisy, _ = quadrants(noise=45.0)
    y = two_strokes_per_class(truth)
    # 4 neighbours on a square grid, 4 components
    critical = _hmrf.critical_beta(_hmrf.Lattice(np.ones(2), np.ones(2), 1), 4)
    tried = [f * critical for f in _hmrf.HELD_OUT_FACTORS]
    chosen = {
        name: GMMSegmenter(4, random_state=0).fit(image, y).beta_
        for name, image in (("clean", clean), ("noisy", noisy))
    }
    assert chosen["clean"] == pytest.approx(critical)  # the weakest tried suffices
    assert chosen["noisy"] > chosen["clean"]
    assert any(chosen["noisy"] == pytest.approx(beta) for beta in tried)
    labels = GMMSegmenter(4, random_state=0).fit_predict(noisy, y)
    unguided = GMMSegmenter(4, random_state=0).fit_predict(noisy)
    assert ari(truth, labels) >= ari(truth, unguided)


def test_guided_hmrf_em_starts_from_the_held_out_search(monkeypatch):
    from gmm_segmenter import _hmrf

    image, truth = quadrants(noise=45.0)
    y = two_strokes_per_class(truth)
    searched, started = [], []
    search, fit = _hmrf.held_out_beta, _hmrf.hmrf_em

    def spy_search(*args):
        result = search(*args)
        searched.append((result[0], [np.copy(p) for p in result[1]], result[1]))
        return result

    def spy_fit(*args, **kwargs):
        started.append(kwargs)
        return fit(*args, **kwargs)

    monkeypatch.setattr(_hmrf, "held_out_beta", spy_search)
    monkeypatch.setattr(_hmrf, "hmrf_em", spy_fit)
    segmenter = GMMSegmenter(4, random_state=0).fit(image, y)
    (beta, maps, passed), = searched
    assert segmenter.beta_ == beta
    assert started[0]["beta"] == beta
    assert started[0]["start"] is passed  # the search's maps, updated in place by HMRF-EM
    assert not np.array_equal(passed[0], maps[0])
    assert ari(truth, segmenter.predict(image)) > 0.9


def test_guided_auto_with_one_stroke_per_class_chooses_by_free_energy(monkeypatch):
    from gmm_segmenter import _hmrf

    image, truth = stripes(noise=40.0)
    y = scribble(truth, {1: 1, 2: 2, 3: 3})
    called = []
    monkeypatch.setattr(_hmrf, "held_out_beta", lambda *a: called.append(a))
    segmenter = GMMSegmenter(3, random_state=0).fit(image, y)
    assert not called
    centre = _hmrf.critical_beta(_hmrf.Lattice(np.ones(2), np.ones(2), 1), 3)
    assert any(segmenter.beta_ == pytest.approx(f * centre) for f in _hmrf.BETA_FACTORS)


def test_a_fixed_beta_is_kept_with_many_strokes():
    image, truth = quadrants(noise=45.0)
    y = two_strokes_per_class(truth)
    assert GMMSegmenter(4, beta=0.7, random_state=0).fit(image, y).beta_ == 0.7


@pytest.mark.parametrize("seed", [1, 11])
def test_the_guided_pixelwise_bound_never_falls(seed):
    # the mixing weights come from the unscribbled pixels: the scribbled ones
    # must then leave the weights out of the bound, or it fell (seeds 1 and
    # 11: by up to 0.003 nats a pixel)
    from skimage import data

    image = data.coins()
    rng = np.random.default_rng(seed)
    scribbles = np.zeros(image.shape, np.uint8)
    k = int(rng.integers(2, 5))
    for label in range(1, k + 1):
        for _ in range(rng.integers(1, 4)):
            row, col = rng.integers(5, 290), rng.integers(5, 370)
            painted = label if rng.random() < 0.7 else rng.integers(1, k + 1)
            scribbles[row:row + 3, col:col + rng.integers(5, 30)] = painted
    segmenter = GMMSegmenter(k, beta=0, random_state=0).fit(image, scribbles)
    assert len(segmenter.lower_bounds_) > 2
    assert np.diff(segmenter.lower_bounds_).min() > -1e-9


def test_many_classes_with_identical_values_are_named_ten_pairs_then_counted():
    # a label image of objects passed as scribbles: 30 classes on one value
    image = np.random.default_rng(0).random((40, 40))
    image[0, :30] = 0.5
    y = np.zeros(image.shape, dtype=int)
    y[0, :30] = np.arange(1, 31)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GMMSegmenter(30, beta=0.0, random_state=0).fit(image, y)
    said = [str(w.message) for w in caught if "identical pixel values" in str(w.message)]
    assert said[:10] == [
        f"The scribbles of classes 1 and {b} cover identical pixel values (0.5), so the "
        "mixture cannot tell these classes apart by intensity; merge them into one label, "
        "or scribble pixels that show how they differ." for b in range(2, 12)
    ]
    assert len(said) == 11 and said[10].startswith(
        f"{30 * 29 // 2 - 10} more pairs of scribbled classes cover identical pixel values.")
