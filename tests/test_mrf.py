"""The spatial prior: hidden Markov random field EM in GMMSegmenter and _mrf."""

import itertools
import warnings
from dataclasses import replace

import numpy as np
import pytest
from _helpers import ari
from scipy import ndimage as ndi
from scipy.special import softmax
from skimage.draw import line
from sklearn.utils._param_validation import InvalidParameterError

from gmm_segmenter import GMMSegmenter, _hmrf, _mixture, _mrf


def blobs(shape, n_classes=3, noise=0.45, seed=0, smoothness=4.0):
    """Quantile bands of smoothed noise (known truth 0..K-1) plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=shape), smoothness)
    truth = np.digitize(field, np.quantile(field, np.linspace(0, 1, n_classes + 1)[1:-1]))
    image = truth + rng.normal(scale=noise, size=shape)
    return image, truth


@pytest.fixture(scope="module")
def noisy_blobs():
    return blobs((96, 96), seed=1)


# ------------------------------------------------------------------ quality


def test_default_beats_pixelwise_on_noisy_blobs(noisy_blobs):
    image, truth = noisy_blobs
    spatial = GMMSegmenter(3, random_state=0).fit(image)
    pixelwise = GMMSegmenter(3, beta=0, random_state=0).fit(image)
    spatial_ari = ari(truth, spatial.predict(image))
    pixel_ari = ari(truth, pixelwise.predict(image))
    assert spatial.beta_ > 0
    assert spatial_ari > 0.8
    assert spatial_ari > pixel_ari + 0.2
    # the means are re-estimated under the prior, still near the truth
    np.testing.assert_allclose(spatial.means_.ravel(), [0, 1, 2], atol=0.1)


def test_default_keeps_thin_lines_on_a_clean_image():
    truth = np.zeros((96, 96), dtype=int)
    truth[60:90, 10:90] = 2
    for r0, c0, r1, c1 in [(5, 5, 5, 90), (10, 5, 50, 45), (10, 40, 50, 80), (55, 5, 56, 90)]:
        rr, cc = line(r0, c0, r1, c1)  # straight and diagonal, one pixel wide
        truth[rr, cc] = 1
    truth[30:32, 5:90] = 1  # two pixels wide
    rng = np.random.default_rng(2)
    image = truth + rng.normal(scale=0.12, size=truth.shape)
    labels = GMMSegmenter(3, random_state=0).fit_predict(image)
    thin = truth == 1
    assert np.mean(labels[thin] == 2) > 0.98
    assert np.count_nonzero((labels == 2) & ~thin) < 5
    assert ari(truth, labels) > 0.98


def test_3d_volume():
    image, truth = blobs((24, 24, 24), noise=0.5, seed=3, smoothness=2.5)
    spatial = ari(truth, GMMSegmenter(3, random_state=0).fit_predict(image))
    pixelwise = ari(truth, GMMSegmenter(3, beta=0, random_state=0).fit_predict(image))
    assert spatial > pixelwise + 0.2


def test_rgb_image():
    _, truth = blobs((64, 64), seed=4, noise=0.0)
    colours = np.array([[0.2, 0.2, 0.8], [0.9, 0.5, 0.3], [0.5, 1.1, 0.6]])
    rng = np.random.default_rng(5)
    image = colours[truth] + rng.normal(scale=0.35, size=truth.shape + (3,))
    image = np.moveaxis(image, -1, 0)  # channels first, to exercise channel_axis
    spatial = GMMSegmenter(3, channel_axis=0, random_state=0).fit(image)
    pixelwise = GMMSegmenter(3, channel_axis=0, beta=0, random_state=0).fit(image)
    assert spatial.predict(image).shape == truth.shape
    assert ari(truth, spatial.predict(image)) > ari(truth, pixelwise.predict(image)) + 0.15
    assert spatial.means_.shape == (3, 3)


def test_anisotropic_spacing_weighs_distant_neighbours_less():
    # alternating classes from one z-slice to the next: across slices the
    # neighbours disagree, so with isotropic weights the 26-neighbourhood
    # (mostly across slices) votes every pixel away; thick slices fix that
    truth = np.broadcast_to((np.arange(8) % 2)[:, None, None], (8, 32, 32))
    rng = np.random.default_rng(6)
    image = truth + rng.normal(scale=0.4, size=truth.shape)
    params = dict(connectivity=3, beta=1.0, random_state=0)
    isotropic = GMMSegmenter(2, **params).fit_predict(image)
    thick = GMMSegmenter(2, spacing=(5.0, 1.0, 1.0), **params).fit_predict(image)
    assert ari(truth, thick) > 0.75
    assert ari(truth, thick) > ari(truth, isotropic) + 0.3


# ---------------------------------------------------------- the contract


def test_beta_zero_is_the_pixelwise_model_exactly(noisy_blobs):
    image, _ = noisy_blobs
    segmenter = GMMSegmenter(3, beta=0, random_state=0).fit(image)
    assert (segmenter.beta_, segmenter.spatial_n_iter_) == (0.0, 0)
    # the spatial settings are not used at all
    pixel = GMMSegmenter(3, beta=0, random_state=0, max_iter_spatial=5).fit(image)
    for name in ("weights_", "means_", "covariances_", "lower_bound_"):
        np.testing.assert_array_equal(getattr(segmenter, name), getattr(pixel, name))
    offset, scale = segmenter.intensity_offset_, segmenter.intensity_scale_
    # predictions: the pixel-wise posterior, argmax + 1
    mixture = segmenter.model_.standardized
    standard = ((image.reshape(-1, 1) - offset) / scale).astype(np.float32)
    expected = softmax(_mixture.weighted_log_prob(standard, mixture), axis=1)
    proba = segmenter.predict_proba(image)
    np.testing.assert_allclose(proba.reshape(-1, 3), expected, atol=1e-5)
    np.testing.assert_array_equal(
        segmenter.predict(image).ravel(), np.argmax(expected, axis=1) + 1
    )


def test_beta_zero_parameters_are_unchanged_by_spatial_settings(noisy_blobs):
    image, _ = noisy_blobs
    plain = GMMSegmenter(3, beta=0, random_state=0).fit(image)
    other = GMMSegmenter(
        3, beta=0, connectivity=2, spacing=(2.0, 1.0), max_iter_spatial=3, random_state=0
    ).fit(image)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(other, name))
    np.testing.assert_array_equal(plain.predict(image), other.predict(image))


def test_posteriors_sum_to_one_and_include_the_prior(noisy_blobs):
    image, _ = noisy_blobs
    segmenter = GMMSegmenter(3, random_state=0).fit(image)
    proba = segmenter.predict_proba(image)
    assert proba.shape == image.shape + (3,) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=-1), 1, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(proba, axis=-1) + 1, segmenter.predict(image))
    np.testing.assert_array_equal(segmenter.transform(image), proba)
    # the same parameters without the prior give different (noisier) posteriors
    mixture = segmenter.model_.standardized
    standard = (image.reshape(-1, 1) - segmenter.intensity_offset_) / segmenter.intensity_scale_
    pixelwise = softmax(_mixture.weighted_log_prob(standard, mixture), axis=1)
    assert np.abs(proba.reshape(-1, 3) - pixelwise).max() > 0.5
    # the prior makes most pixels more certain
    assert np.mean(proba.max(axis=-1).ravel() >= pixelwise.max(axis=1) - 1e-6) > 0.8


def test_labels_are_darkest_first(noisy_blobs):
    image, truth = noisy_blobs
    segmenter = GMMSegmenter(3, random_state=0).fit(-image)  # brightest class is now darkest
    assert np.all(np.diff(segmenter.means_.ravel()) > 0)
    labels = segmenter.predict(-image)
    assert np.mean(labels == 3 - truth) > 0.9


def test_masked_pixels_get_no_label_and_cast_no_vote(noisy_blobs):
    image, truth = noisy_blobs
    mask = np.ones(image.shape, dtype=bool)
    mask[30:60, 30:60] = False
    other = image.copy()
    other[~mask] = 2.0  # what is under the mask must not matter
    other[35:40, 35:40] = np.nan
    first = GMMSegmenter(3, random_state=0).fit(image, mask=mask)
    second = GMMSegmenter(3, random_state=0).fit(other, mask=mask)
    np.testing.assert_allclose(first.means_, second.means_, rtol=1e-6)
    labels = first.predict(image, mask=mask)
    np.testing.assert_array_equal(labels, first.predict(other, mask=mask))
    assert np.all(labels[~mask] == 0) and np.all(labels[mask] > 0)
    proba = first.predict_proba(other, mask=mask)
    assert np.all(proba[~mask] == 0)
    np.testing.assert_allclose(proba[mask].sum(axis=-1), 1, atol=1e-5)
    assert np.mean(labels[mask] == truth[mask] + 1) > 0.9


def test_non_finite_pixels_get_label_zero(noisy_blobs):
    image, _ = noisy_blobs
    image = image.copy()
    image[0, :10] = np.nan
    image[5, 5] = np.inf
    labels = GMMSegmenter(3, random_state=0).fit_predict(image)
    assert np.all(labels[0, :10] == 0) and labels[5, 5] == 0
    assert np.count_nonzero(labels == 0) == 11


def test_each_image_of_a_batch_on_its_own_grid():
    first, truth_first = blobs((64, 80), seed=7)
    second, truth_second = blobs((50, 40), seed=8)
    segmenter = GMMSegmenter(3, random_state=0).fit([first, second])
    together = segmenter.predict([first, second])
    assert isinstance(together, list) and [t.shape for t in together] == [(64, 80), (50, 40)]
    np.testing.assert_array_equal(together[0], segmenter.predict(first))
    np.testing.assert_array_equal(together[1], segmenter.predict(second))
    assert ari(truth_first, together[0]) > 0.8 and ari(truth_second, together[1]) > 0.8
    # stacking the two (padded) would let one image vote on the other; a batch does not
    proba = segmenter.predict_proba([first, second], mask=[None, np.ones((50, 40), bool)])
    np.testing.assert_allclose(proba[1].sum(axis=-1), 1, atol=1e-5)


def test_integer_images_use_the_exact_histogram():
    image, truth = blobs((80, 80), seed=9)
    image = np.clip(np.round(100 + 40 * image), 0, 255).astype(np.uint8)
    segmenter = GMMSegmenter(3, beta=1.0, random_state=0).fit(image)
    assert segmenter.fit_method_ == "histogram"
    assert ari(truth, segmenter.predict(image)) > 0.85
    floats = GMMSegmenter(3, beta=1.0, random_state=0).fit(image.astype(np.float64))
    np.testing.assert_allclose(segmenter.means_, floats.means_, rtol=1e-3)


def test_deterministic_with_a_seed():
    image, _ = blobs((64, 64), seed=10)
    image = np.stack([image, -image + 0.1 * np.random.default_rng(0).normal(size=image.shape)], -1)
    params = dict(channel_axis=-1, beta="auto", max_samples=500, random_state=3)
    first = GMMSegmenter(3, **params).fit(image)
    second = GMMSegmenter(3, **params).fit(image)
    np.testing.assert_array_equal(first.means_, second.means_)
    assert first.beta_ == second.beta_
    np.testing.assert_array_equal(first.predict(image), second.predict(image))


def test_beta_pseudo_likelihood_is_estimated_and_reported(noisy_blobs):
    image, truth = noisy_blobs
    segmenter = GMMSegmenter(3, beta="pseudo-likelihood", random_state=0).fit(image)
    assert 0 < segmenter.beta_ <= _hmrf.BETA_MAX
    assert segmenter.spatial_n_iter_ >= 1
    assert ari(truth, segmenter.predict(image)) > 0.85


def _spy_on_the_search(monkeypatch, energies=None):
    """Record the HMRF-EM runs and the candidates' free energies of ``beta='auto'``;
    ``energies(beta)``, when given, replaces the candidates' free energies."""
    runs, scored = [], []
    original_run, original_bound = _hmrf._iterate, _hmrf._candidate_energy

    def run(mixture, posteriors, beta, **kwargs):
        result = original_run(mixture, posteriors, beta, **kwargs)
        runs.append((beta, mixture, result))
        return result

    def bound(beta, potentials, maps, grids, lattice):
        value = original_bound(beta, potentials, maps, grids, lattice)
        log_weights = np.log(runs[0][1].weights)
        log_z = _hmrf.bethe_log_partition(beta, lattice, log_weights)
        energy = value - log_z if energies is None else energies(beta)
        scored.append((beta, energy, log_z))
        return energy + log_z

    monkeypatch.setattr(_hmrf, "_iterate", run)
    monkeypatch.setattr(_hmrf, "_candidate_energy", bound)
    return runs, scored


def test_beta_auto_keeps_the_strength_of_largest_free_energy(noisy_blobs, monkeypatch):
    image, truth = noisy_blobs
    runs, scored = _spy_on_the_search(monkeypatch)
    segmenter = GMMSegmenter(3, random_state=0).fit(image)
    centre = runs[0][0]
    assert centre == pytest.approx(np.log(2.5))  # the critical strength in 2-D
    betas = [beta for beta, _, _ in scored]
    weaker, critical, stronger = (f * centre for f in _hmrf.BETA_FACTORS)
    # the stronger one first, then the critical one on the fit's own maps;
    # the weaker one only when the stronger one did not win
    assert betas[:2] == pytest.approx([stronger, critical])
    assert (len(betas) == 3) == (scored[0][1] <= scored[1][1])
    if len(betas) == 3:
        assert betas[2] == pytest.approx(weaker)
    top = max(energy for _, energy, _ in scored)
    contenders = [beta for beta, energy, _ in scored if energy >= top - _hmrf.REFIT_MARGIN]
    # HMRF-EM runs at the critical strength, then at every other contender
    assert [beta for beta, _, _ in runs] == [centre] + [b for b in contenders if b != centre]
    if len(contenders) == 1:
        assert segmenter.beta_ == contenders[0]
    else:
        refitted = {
            beta: result.objectives[-1] - _hmrf.bethe_log_partition(
                beta, _hmrf.Lattice.of([_hmrf.Grid(image.shape, None, _mrf.neighbourhood(2), None)]),
                np.log(runs[0][1].weights))
            for beta, _, result in runs if beta in contenders
        }
        assert segmenter.beta_ == max(refitted, key=refitted.get)
    assert ari(truth, segmenter.predict(image)) > 0.8


@pytest.mark.parametrize(
    "winner, expected", [(4 / 3, [4 / 3, 1.0]), (1.0, [4 / 3, 1.0, 2 / 3]), (2 / 3, [4 / 3, 1.0, 2 / 3])]
)
def test_beta_auto_scores_the_weaker_strength_only_when_the_stronger_loses(
    noisy_blobs, monkeypatch, winner, expected
):
    image, _ = noisy_blobs
    centre = np.log(2.5)
    runs, scored = _spy_on_the_search(
        monkeypatch, lambda beta: 1.0 if beta == pytest.approx(winner * centre) else 0.0
    )
    segmenter = GMMSegmenter(3, random_state=0).fit(image)
    assert [beta / centre for beta, _, _ in scored] == pytest.approx(expected)
    assert segmenter.beta_ == pytest.approx(winner * centre)


def test_beta_auto_goes_on_with_the_scoring_as_its_first_e_step(noisy_blobs, monkeypatch):
    image, _ = noisy_blobs
    centre = np.log(2.5)
    runs, scored = _spy_on_the_search(
        monkeypatch, lambda beta: 1.0 if beta == pytest.approx(4 / 3 * centre) else 0.0
    )
    sweeps = []
    original_sweep = _hmrf._sweep
    monkeypatch.setattr(
        _hmrf, "_sweep", lambda *args, **kwargs: sweeps.append(1) or original_sweep(*args, **kwargs)
    )
    segmenter = GMMSegmenter(3, random_state=0).fit(image)
    (_, _, first), (beta, _, second) = runs
    # the go-on run's first objective is the strength's score (the bound at
    # the critical fit's mixture), and it sweeps once less than it iterates
    bound = next(energy + log_z for b, energy, log_z in scored if b == beta)
    assert second.objectives[0] == pytest.approx(bound, rel=1e-12)
    assert len(sweeps) == first.n_iter + second.n_iter - 1
    assert second.n_iter >= 2 and segmenter.spatial_converged_


@pytest.mark.parametrize("factor", [2 / 3, 4 / 3])
def test_beta_auto_goes_on_from_the_critical_fit_at_another_winner(noisy_blobs, monkeypatch, factor):
    image, _ = noisy_blobs
    centre = np.log(2.5)
    runs, _ = _spy_on_the_search(
        monkeypatch, lambda beta: 1.0 if beta == pytest.approx(factor * centre) else 0.0
    )
    segmenter = GMMSegmenter(3, random_state=0).fit(image)
    assert segmenter.beta_ == pytest.approx(factor * centre)
    assert len(runs) == 2
    (_, _, first), (beta, start, _) = runs
    assert beta == pytest.approx(factor * centre)
    assert start is first.mixture  # warm started from the fit at the critical strength
    # the iterations of both runs are counted, the convergence is the last one's
    assert segmenter.spatial_n_iter_ == first.n_iter + runs[1][2].n_iter
    assert len(segmenter.spatial_lower_bounds_) == segmenter.spatial_n_iter_
    assert segmenter.spatial_converged_ == runs[1][2].converged


def test_beta_auto_refits_near_ties_and_keeps_the_better_refit(noisy_blobs, monkeypatch):
    image, _ = noisy_blobs
    centre = np.log(2.5)
    near = 0.5 * _hmrf.REFIT_MARGIN
    runs, scored = _spy_on_the_search(
        monkeypatch,
        lambda beta: {1.0: 0.0, round(4 / 3, 6): -near}.get(round(beta / centre, 6), -1.0),
    )
    segmenter = GMMSegmenter(3, random_state=0).fit(image)
    assert [beta / centre for beta, _, _ in runs] == pytest.approx([1.0, 4 / 3])
    log_z = {round(beta / centre, 6): value for beta, _, value in scored}
    refitted = {
        beta: result.objectives[-1] - log_z[round(beta / centre, 6)] for beta, _, result in runs
    }
    assert segmenter.beta_ == max(refitted, key=refitted.get)
    assert segmenter.beta_ == runs[0][0] or (
        segmenter.spatial_n_iter_ == runs[0][2].n_iter + runs[1][2].n_iter
    )


def _lattice(shape, spacing=None):
    hood = _mrf.neighbourhood(len(shape), 1, spacing)
    return _hmrf.Lattice.of([_hmrf.Grid(shape, None, hood, None)])


def test_mean_field_stops_when_settled_says_so(noisy_blobs):
    image, _ = noisy_blobs
    potential = np.stack([-(image - m) ** 2 for m in (0.0, 1.0, 2.0)]).astype(np.float32)
    hood = _mrf.neighbourhood(2)
    asked = []

    def settled():
        asked.append(True)
        return len(asked) == 2

    padded = _mrf.padded_posteriors(potential, None)
    sweeps, _ = _mrf.mean_field(potential, padded, None, 1.0, hood, max_sweeps=10, tol=0,
                                settled=settled)
    assert sweeps == 2 and len(asked) == 2
    again = _mrf.padded_posteriors(potential, None)
    assert _mrf.mean_field(potential, again, None, 1.0, hood, max_sweeps=2, tol=0)[0] == 2
    np.testing.assert_array_equal(padded, again)  # the same two sweeps


def test_held_out_search_stops_a_strength_once_the_strokes_settle(monkeypatch):
    rng = np.random.default_rng(5)
    truth = np.zeros((64, 64), dtype=int)
    truth[:, 32:] = 1
    image = truth + rng.normal(scale=0.6, size=truth.shape)
    potential = np.stack([-0.5 * (image - m) ** 2 / 0.36 for m in (0, 1)]).astype(np.float32)
    grids = [_hmrf.Grid(truth.shape, None, _mrf.neighbourhood(2), None)]
    positions = np.ravel_multi_index(np.nonzero(truth[30:34, :] >= 0), truth.shape)[::7]
    held_out = [(positions, truth.reshape(-1)[positions])]
    mixture = _mixture.Mixture(
        np.array([0.5, 0.5]), np.array([[0.0], [1.0]]), np.array([[[0.36]], [[0.36]]]),
        np.array([[[1 / 0.6]], [[1 / 0.6]]]), "full",
    )
    sweeps = {}
    original = _mrf.mean_field

    def count(*args, **kwargs):
        result = original(*args, **kwargs)
        sweeps.setdefault(kwargs.get("settled") is not None, []).append(result[0])
        return result

    monkeypatch.setattr(_mrf, "mean_field", count)
    chosen = _hmrf.held_out_beta(mixture, grids, lambda i, m: potential.copy(), held_out)
    assert chosen is not None and chosen[0] >= _hmrf.critical_beta(_hmrf.Lattice.of(grids), 2)
    assert list(sweeps) == [True]  # every strength's sweeps ask the strokes
    settling = sweeps.pop(True)
    monkeypatch.setattr(_hmrf, "HELD_OUT_SETTLED", 0.0)  # never settled: sweeps to SWEEP_TOL
    assert _hmrf.held_out_beta(mixture, grids, lambda i, m: potential.copy(), held_out)[0] == chosen[0]
    assert sum(settling) < sum(sweeps[True])


def test_bethe_log_partition_is_exact_on_a_chain_and_at_zero():
    log_weights = np.log([0.2, 0.3, 0.5])
    square = _lattice((40, 40))
    assert _hmrf.bethe_log_partition(0.0, square, log_weights) == pytest.approx(0.0, abs=1e-9)
    # a chain is a tree, where belief propagation is exact: compare with the
    # transfer matrix (the uniform messages leave only an end effect, O(1/n))
    n, beta = 4000, 0.8
    transfer = np.exp(beta * np.eye(3)) * np.exp(log_weights)[np.newaxis, :]
    vector, log_z = np.exp(log_weights), 0.0
    for _ in range(n - 1):
        vector = vector @ transfer
        log_z += np.log(vector.sum())
        vector /= vector.sum()
    chain = _hmrf.bethe_log_partition(beta, _lattice((n,)), log_weights)
    assert chain == pytest.approx(log_z / n, abs=1e-3)
    # far above the critical strength the prior freezes on one label
    frozen = _hmrf.bethe_log_partition(10.0, square, log_weights)
    edges = square.pairs.sum() / square.n_pixels
    assert frozen == pytest.approx(10.0 * edges + np.log(0.5), abs=1e-3)


def test_a_batch_of_2d_images_and_3d_volumes_adds_their_log_partitions():
    log_weights = np.log([0.2, 0.3, 0.5])
    grids = [
        _hmrf.Grid((30, 30), None, _mrf.neighbourhood(2), None),
        _hmrf.Grid((8, 10, 10), None, _mrf.neighbourhood(3), None),
        _hmrf.Grid((20, 20), None, _mrf.neighbourhood(2), None),
    ]
    mixed = _hmrf.Lattice.of(grids)
    planes, volume = _hmrf.Lattice.of(grids[::2]), _lattice((8, 10, 10))
    # the neighbourhood with the most pixels leads, and chooses the critical strength
    assert mixed.n_pixels == 1300 and mixed.total_pixels == 2100
    assert _hmrf.critical_beta(mixed, 3) == _hmrf.critical_beta(planes, 3)
    for beta in (0.3, 1.0, 2.0):
        apart = (_hmrf.bethe_log_partition(beta, planes, log_weights) * 1300
                 + _hmrf.bethe_log_partition(beta, volume, log_weights) * 800)
        assert _hmrf.bethe_log_partition(beta, mixed, log_weights) == pytest.approx(apart / 2100)
    # a group without neighbouring pairs (a checkerboard mask) does not lead
    checker = (np.indices((40, 40)).sum(axis=0) % 2).astype(bool)
    sparse = _hmrf.Lattice.of([_hmrf.Grid((40, 40), checker, _mrf.neighbourhood(2), None),
                               grids[1]])
    assert sparse.pairs.sum() > 0 and sparse.others[0].pairs.sum() == 0
    assert _hmrf.critical_beta(sparse, 3) == _hmrf.critical_beta(volume, 3)
    # so the default fits such a batch (it raised IndexError), the larger first or not
    rng = np.random.default_rng(0)
    plane = np.repeat(np.arange(3.0), 22)[:64] + rng.normal(scale=0.3, size=(64, 64))
    cube = np.repeat(np.arange(3.0), 6)[:16] + rng.normal(scale=0.3, size=(16, 16, 16))
    for batch, at in (([plane, cube], 0), ([cube, plane], 1)):
        labels = GMMSegmenter(3, random_state=0).fit_predict(batch)
        assert [part.shape for part in labels] == [part.shape for part in batch]
        assert np.mean(labels[at][:, :22] == 1) > 0.9


def test_critical_beta_is_the_bethe_transition():
    # e^beta = 1 + K / (z - 2) for z equal neighbours
    assert _hmrf.critical_beta(_lattice((30, 30)), 3) == pytest.approx(np.log(1 + 3 / 2))
    assert _hmrf.critical_beta(_lattice((10, 10, 10)), 3) == pytest.approx(np.log(1 + 3 / 4))
    assert _hmrf.critical_beta(_lattice((50,)), 3) == _hmrf.CHAIN_BETA  # a chain never orders
    # thick slices vote less across them, so ordering needs a stronger prior
    thick = _hmrf.critical_beta(_lattice((10, 20, 20), (3.0, 1.0, 1.0)), 3)
    assert thick > np.log(1 + 3 / 4)


def test_beta_auto_on_too_few_pixels_warns_and_uses_the_fallback():
    image = np.repeat([0.0, 1.0, 2.0], 40).reshape(10, 12)
    with pytest.warns(UserWarning, match=r"beta='auto' needs at least 256 valid pixels.*beta=0\.5"):
        segmenter = GMMSegmenter(3, random_state=0).fit(image)
    assert segmenter.beta_ == _hmrf.BETA_FALLBACK


def test_beta_auto_with_one_component_on_few_pixels_does_not_warn():
    image = np.arange(120, dtype=np.uint8).reshape(10, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one component: there is nothing to smooth
        segmenter = GMMSegmenter(1, random_state=0).fit(image)
    assert segmenter.beta_ == _hmrf.BETA_FALLBACK
    assert np.all(segmenter.predict(image) == 1)


def test_one_dimensional_signal_and_four_dimensional_image():
    signal = np.repeat([0.0, 1.0, 0.0, 1.0], 50) + np.random.default_rng(11).normal(
        scale=0.45, size=200
    )
    labels = GMMSegmenter(2, random_state=0).fit_predict(signal)
    truth = np.repeat([0, 1, 0, 1], 50)
    pixel = GMMSegmenter(2, beta=0, random_state=0).fit_predict(signal)
    assert np.mean(labels == truth + 1) > np.mean(pixel == truth + 1)
    image, truth = blobs((6, 8, 10, 12), seed=12, smoothness=1.5)
    labels = GMMSegmenter(3, random_state=0).fit_predict(image)
    pixel = GMMSegmenter(3, beta=0, random_state=0).fit_predict(image)
    assert labels.shape == image.shape
    assert ari(truth, labels) > ari(truth, pixel) + 0.1
    corners = GMMSegmenter(3, connectivity=4, beta=0.5, random_state=0).fit_predict(image)
    assert ari(truth, corners) > ari(truth, pixel) + 0.1


def test_spatial_attributes(noisy_blobs):
    image, _ = noisy_blobs
    segmenter = GMMSegmenter(3, beta=1.5, max_iter_spatial=4, random_state=0).fit(image)
    assert segmenter.beta_ == 1.5
    assert 1 <= segmenter.spatial_n_iter_ <= 4
    assert len(segmenter.spatial_lower_bounds_) == segmenter.spatial_n_iter_
    assert isinstance(segmenter.spatial_converged_, bool)


# --------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "params, image_shape, match",
    [
        ({"connectivity": 3}, (10, 10), r"connectivity=3 is out of range for X with 2 spatial"),
        ({"connectivity": 2}, (10,), r"connectivity=2 is out of range"),
        ({"spacing": (1.0, 2.0, 3.0)}, (10, 10), r"spacing must be None or a sequence of 2"),
        ({"spacing": (1.0, -2.0)}, (10, 10), r"spacing must hold positive, finite"),
        ({"spacing": (1.0, np.inf)}, (10, 10), r"spacing must hold positive, finite"),
    ],
)
def test_invalid_neighbourhoods_are_reported(params, image_shape, match):
    image = np.random.default_rng(0).normal(size=image_shape)
    with pytest.raises(ValueError, match=match):
        GMMSegmenter(2, **params).fit(image)


def test_a_fitted_volume_model_says_how_to_label_a_slice():
    volume = np.random.default_rng(0).normal(size=(6, 12, 12))
    for params, fix in (({"connectivity": 3}, r"call set_params\(connectivity=1\) first"),
                        ({"spacing": (3, 1, 1)},
                         r"call set_params\(spacing=None\) \(or 2 voxel sizes\) first")):
        segmenter = GMMSegmenter(2, random_state=0, **params).fit(volume)
        with pytest.raises(ValueError, match=fix):
            segmenter.predict(volume[0])
        segmenter.set_params(connectivity=1, spacing=None)
        assert segmenter.predict(volume[0]).shape == (12, 12)


def test_connectivity_is_checked_per_image_of_a_batch():
    images = [np.random.default_rng(0).normal(size=(8, 8, 8)), np.arange(64.0).reshape(8, 8)]
    with pytest.raises(ValueError, match=r"connectivity=3 is out of range for X\[1\]"):
        GMMSegmenter(2, connectivity=3).fit(images)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"beta": -1.0}, "'beta' parameter"),
        ({"beta": "strong"}, "'beta' parameter"),
        ({"connectivity": 0}, "'connectivity' parameter"),
        ({"max_iter_spatial": 0}, "'max_iter_spatial' parameter"),
        ({"spacing": "thick"}, "'spacing' parameter"),
        ({"spacing": 2.0}, "'spacing' parameter"),
    ],
)
def test_invalid_spatial_parameters(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        GMMSegmenter(2, **params).fit(np.arange(20.0).reshape(4, 5))


# --------------------------------------------------------------- internals


def test_neighbourhood_counts_and_weights():
    for ndim, connectivity, count in [(1, 1, 2), (2, 1, 4), (2, 2, 8), (3, 1, 6), (3, 2, 18),
                                      (3, 3, 26)]:
        hood = _mrf.neighbourhood(ndim, connectivity)
        structure = ndi.generate_binary_structure(ndim, connectivity)
        assert len(hood.offsets) == count == structure.sum() - 1
        assert hood.weights.sum() == pytest.approx(2 * ndim)
    hood = _mrf.neighbourhood(3, 1, spacing=(4.0, 0.5, 0.5))
    weights = dict(zip(map(tuple, hood.offsets), hood.weights))
    assert weights[(1, 0, 0)] / weights[(0, 1, 0)] == pytest.approx(0.125)
    assert weights[(0, 0, -1)] == weights[(0, 1, 0)]
    assert len(list(hood.half())) == 3


def test_mean_field_never_decreases_the_objective():
    rng = np.random.default_rng(13)
    potential = rng.normal(size=(3, 30, 40)).astype(np.float32)  # component first
    valid = rng.uniform(size=(30, 40)) > 0.1
    hood = _mrf.neighbourhood(2, 2)
    padded = _mrf.padded_posteriors(potential, valid)
    previous = _mrf.objective(potential, padded, 1.2, hood)
    for _ in range(6):
        _mrf.mean_field(potential, padded, valid, 1.2, hood, max_sweeps=1)
        current = _mrf.objective(potential, padded, 1.2, hood)
        assert current >= previous - 1e-3
        previous = current
    inside = _mrf.channel_last(padded, np.empty((30, 40, 3), np.float32))
    assert np.all(inside[~valid] == 0)
    np.testing.assert_allclose(inside[valid].sum(axis=-1), 1, atol=1e-5)
    # the border stays zero: nothing outside the image votes
    assert padded.sum(dtype=np.float64) == inside.sum(dtype=np.float64)


def shifted(offset, shape):
    """The neighbours at ``offset`` of every pixel, in a map padded by one pixel."""
    return (slice(None),) + tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, shape))


def reference_mean_field(potential, valid, beta, hood, sweeps):
    """Colour-by-colour mean field written plainly: float64, whole-grid fields."""
    shape = potential.shape[1:]
    keep = 1 if valid is None else valid
    q = softmax(potential.astype(float), axis=0) * keep
    parity = np.indices(shape) % 2
    for _ in range(sweeps):
        for colour in itertools.product((0, 1), repeat=len(shape)):
            padded = np.pad(q, [(0, 0)] + [(1, 1)] * len(shape))
            field = sum(
                weight * padded[shifted(offset, shape)]
                for offset, weight in zip(hood.offsets, hood.weights)
            )
            update = softmax(potential + beta * field, axis=0) * keep
            here = np.all(parity == np.reshape(colour, (-1,) + (1,) * len(shape)), axis=0)
            q = np.where(here, update, q)
    return q


@pytest.mark.parametrize(
    "shape, connectivity, spacing, masked",
    [
        ((31,), 1, None, False),
        ((9, 12), 1, None, True),
        ((7, 10), 2, (2.0, 1.0), False),
        ((5, 6, 7), 3, (3.0, 1.0, 1.0), True),
        ((3, 4, 3, 5), 2, None, False),
    ],
)
def test_mean_field_matches_a_plain_reference(shape, connectivity, spacing, masked):
    # odd and even widths: the maps store the last axis split by parity
    rng = np.random.default_rng(15)
    potential = (2 * rng.normal(size=(3,) + shape)).astype(np.float32)
    potential[:, (0,) * len(shape)] = 0.5  # a tie: argmax takes the first component
    valid = rng.uniform(size=shape) > 0.2 if masked else None
    hood = _mrf.neighbourhood(len(shape), connectivity, spacing)
    padded = _mrf.padded_posteriors(potential, valid)
    _mrf.mean_field(potential, padded, valid, 1.3, hood, max_sweeps=4, tol=0)
    result = np.moveaxis(_mrf.channel_last(padded, np.empty(shape + (3,), np.float32)), -1, 0)
    expected = reference_mean_field(potential, valid, 1.3, hood, 4)
    np.testing.assert_allclose(result, expected, atol=1e-5)
    labels = _mrf.most_probable(padded, shape, np.uint8)
    np.testing.assert_array_equal(labels, np.argmax(result, axis=0))
    # blocks of one row at a time give the same posteriors as whole colours
    rows = _mrf.padded_posteriors(potential, valid)
    _mrf.mean_field(potential, rows, valid, 1.3, hood, max_sweeps=4, tol=0, block_pixels=1)
    np.testing.assert_array_equal(rows, padded)
    # the objective, per pair of neighbours, against the plain sum
    q = expected
    plain = np.sum(q * potential) - np.sum(q * np.log(np.where(q > 0, q, 1)))
    padded_q = np.pad(q, [(0, 0)] + [(1, 1)] * len(shape))
    for offset, weight in hood.half():
        plain += 1.3 * weight * np.sum(q * padded_q[shifted(offset, shape)])
    assert _mrf.objective(potential, padded, 1.3, hood) == pytest.approx(plain, rel=1e-5)


@pytest.mark.parametrize("shape", [(3, 1, 1100), (1, 7), (2, 3, 1, 515)])
def test_most_probable_reads_every_segment_and_breaks_ties_to_the_first(shape):
    # rows wider than the kernels' 256-pixel segments, axes of length 1,
    # exact ties, and a label dtype wider than a byte
    rng = np.random.default_rng(18)
    potential = rng.integers(0, 3, size=(5,) + shape).astype(np.float32)
    padded = _mrf.padded_posteriors(potential, None)
    labels = _mrf.most_probable(padded, shape, np.uint16)
    assert labels.dtype == np.uint16 and labels.shape == shape
    posteriors = _mrf.channel_last(padded, np.empty(shape + (5,), np.float32))
    np.testing.assert_array_equal(labels, np.argmax(posteriors, axis=-1))
    assert np.any(np.sum(posteriors == posteriors.max(axis=-1, keepdims=True), axis=-1) > 1)


def test_histogram_responsibilities_sum_posteriors_per_value():
    rng = np.random.default_rng(16)
    shape = (6, 9)
    potential = rng.normal(size=(2,) + shape).astype(np.float32)
    padded = _mrf.padded_posteriors(potential, None)
    rows = rng.integers(-1, 4, size=shape).astype(np.int32)  # -1: not used
    table = _hmrf.ResponsibilityTable(np.zeros((4, 1)), rows=[rows])
    q = softmax(potential, axis=0)
    expected = np.zeros((4, 2))
    np.add.at(expected, rows[rows >= 0], q[:, rows >= 0].T)
    np.testing.assert_allclose(table.weighted_resp([padded], [shape]), expected, rtol=1e-5)


def test_local_fields_match_a_convolution():
    rng = np.random.default_rng(14)
    q = softmax(rng.normal(size=(7, 9, 2)), axis=-1).astype(np.float32)
    padded = _mrf.padded_posteriors(np.log(np.moveaxis(q, -1, 0)), None)
    hood = _mrf.neighbourhood(2, 2, spacing=(2.0, 1.0))
    kernel = np.zeros((3, 3))
    for offset, weight in zip(hood.offsets, hood.weights):
        kernel[1 - offset[0], 1 - offset[1]] = weight  # convolution flips
    expected = np.stack(
        [ndi.convolve(q[..., k].astype(float), kernel, mode="constant") for k in range(2)], -1
    )
    positions = np.arange(63)
    np.testing.assert_allclose(
        _mrf.local_fields(padded, (7, 9), positions, hood), expected.reshape(-1, 2), rtol=1e-5
    )
    np.testing.assert_allclose(
        _mrf.posteriors_at(padded, (7, 9), positions), q.reshape(-1, 2), rtol=1e-5
    )


def test_masked_out_pixels_do_not_dilute_the_mean_change():
    # a small valid region inside a large masked grid converges exactly like
    # the region on its own: the stopping rule averages over valid pixels
    rng = np.random.default_rng(0)
    small = rng.normal(size=(2, 20, 20)).astype(np.float32)
    big = np.zeros((2, 200, 200), np.float32)
    big[:, :20, :20] = small
    valid = np.zeros((200, 200), dtype=bool)
    valid[:20, :20] = True
    hood = _mrf.neighbourhood(2, 1, None)
    alone = _mrf.mean_field(small, _mrf.padded_posteriors(small, None), None, 1.0, hood,
                            max_sweeps=30)
    embedded = _mrf.mean_field(big, _mrf.padded_posteriors(big, valid), valid, 1.0, hood,
                               max_sweeps=30)
    assert embedded[0] == alone[0] > 3
    assert embedded[1] == pytest.approx(alone[1], rel=1e-5)


def test_a_component_the_prior_empties_is_reported():
    rng = np.random.default_rng(0)
    z, y, x = np.indices((48, 64, 64))
    image = np.zeros(z.shape)
    image[(z - 24) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 100] = 1
    image[(z - 24) ** 2 + (y - 44) ** 2 + (x - 44) ** 2 < 100] = 2
    image += rng.normal(0, 0.2, image.shape)  # 92 % background: split in two pixel-wise
    with pytest.warns(UserWarning, match=r"1 of the 3 components keeps almost none of its "
                                         r"pixels \(pixel-wise it had 0\.\d+ of them\), so a "
                                         r"label is \(nearly\) empty.*fewer components"):
        segmenter = GMMSegmenter(3, beta=1.0, random_state=0).fit(image)
    assert np.bincount(segmenter.predict(image).ravel(), minlength=4).min() < 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two classes for two components: no warning
        GMMSegmenter(2, beta=1.0, random_state=0).fit(np.where(image > 0.5, 1.0, 0.0)
                                                     + rng.normal(0, 0.2, image.shape))


def test_the_emptied_components_warning_says_who_chose_the_strength_and_lists_a_few():
    from gmm_segmenter._hmrf import HMRFResult, _warn_if_swallowed

    result = HMRFResult(None, 1.234, 1, True, (), masses=(0.5, 0.5, 0, 0, 0, 0))
    weights = np.array([0.3, 0.3, 0.13, 0.1, 0.09, 0.08])
    with pytest.warns(UserWarning, match=r"^Under the spatial prior, at the strength 1.23 that "
                                         r"beta='auto' chose, 4 of the 6 components .* had up "
                                         r"to 0.13, 0.1, 0.09, … of them\)"):
        _warn_if_swallowed(result, weights, chosen=True)
    with pytest.warns(UserWarning, match=r"^Under the spatial prior \(beta=1.23\) 1 of the 2 "
                                         r"components .* had 0.4 of them\)"):
        _warn_if_swallowed(replace(result, masses=(1.0, 0.0)), np.array([0.6, 0.4]))
