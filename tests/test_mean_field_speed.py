"""The compiled mean field against the numpy implementation it replaced.

The reference below is the mean field, bound and HMRF-EM loop as they were
before the compiled kernel (numpy, one colour of the grid at a time, in
cache-sized blocks, every pixel every sweep). The compiled kernel must give
the same labels (up to ties), and the same posteriors, bound and beta to
rtol 1e-5.
"""

import functools
import itertools
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest

from gmm_segmenter import GMMSegmenter, _hmrf, _image, _kernel, _mixture, _mrf

# --------------------------------------------------------------------------
# the reference: the numpy implementation before the compiled kernel

_SWEEP_BLOCK_PIXELS = 1 << 14
SWEEPS_PER_ITERATION = 3
def _grid(spatial_shape) -> tuple:
    """The grid maps are laid out on: at least two axes (a signal is one row)."""
    spatial_shape = tuple(spatial_shape)
    return spatial_shape if len(spatial_shape) > 1 else (1,) + spatial_shape


def _grid_offsets(offsets: np.ndarray, ndim: int) -> np.ndarray:
    """Neighbour offsets on the grid (a signal's gain a zero for its one row)."""
    lead = np.zeros((len(offsets), ndim - offsets.shape[1]), dtype=offsets.dtype)
    return np.hstack([lead, offsets])


# the even and the odd columns of a row, in the order of _row_keys
_PARITIES = (slice(0, None, 2), slice(1, None, 2))


def _softmax_inplace(logits: np.ndarray, plane: np.ndarray) -> None:
    """Softmax across the first (component) axis; ``plane`` is scratch for one component."""
    np.copyto(plane, logits[0])
    for component in logits[1:]:
        np.maximum(plane, component, out=plane)
    logits -= plane
    np.exp(logits, out=logits)
    np.copyto(plane, logits[0])
    for component in logits[1:]:
        plane += component
    logits /= plane



@dataclass(frozen=True)
class _Block:
    """Rows of one colour (the pixels whose coordinates have given parities).

    ``target`` selects them in the map, ``sub`` in the unpadded grid,
    ``neighbours[j]`` their neighbours at the ``j``-th offset in the map;
    all lead with the component axis.
    """

    shape: tuple
    target: tuple
    sub: tuple
    neighbours: tuple


@functools.lru_cache(maxsize=16)
def _colour_blocks(grid: tuple, offsets: tuple, block_pixels: int) -> tuple:
    """The colours of the grid, in order, each cut into blocks of rows."""
    every = slice(None)
    blocks = []
    for parities in itertools.product((0, 1), repeat=len(grid)):
        counts = [(n - p + 1) // 2 for n, p in zip(grid, parities)]
        if min(counts) == 0:
            continue
        # the colour's (start, stop) along each axis of the grid, per block on the first
        spans = [(p, p + 2 * c - 1) for p, c in zip(parities, counts)]
        step = max(1, block_pixels // math.prod(counts[1:]))
        for row in range(0, counts[0], step):
            stop_row = min(row + step, counts[0])
            spans[0] = (parities[0] + 2 * row, parities[0] + 2 * stop_row - 1)

            def key(offset, lead=tuple(spans[:-1]), parity=parities[-1], count=counts[-1]):
                column = 1 + parity + offset[-1]  # padded column of the first pixel
                return (
                    (every,)
                    + tuple(slice(1 + lo + o, hi + 1 + o, 2) for (lo, hi), o in zip(lead, offset))
                    + (column % 2, slice(column // 2, column // 2 + count))
                )

            blocks.append(
                _Block(
                    shape=(stop_row - row,) + tuple(counts[1:]),
                    target=key((0,) * len(grid)),
                    sub=(every,) + tuple(slice(lo, hi, 2) for lo, hi in spans),
                    neighbours=tuple(key(offset) for offset in offsets),
                )
            )
    return tuple(blocks)


def _blocks(grid: tuple, hood, block_pixels: int) -> tuple:
    offsets = _grid_offsets(hood.offsets, len(grid))
    return _colour_blocks(grid, tuple(map(tuple, offsets.tolist())), block_pixels)


def _neighbour_field(padded, block, weights, field, scratch) -> None:
    """``field = Σ_j c_ij q_j`` for the pixels of ``block``."""
    for j, (neighbours, weight) in enumerate(zip(block.neighbours, weights)):
        if j == 0:
            np.multiply(padded[neighbours], weight, out=field)
        elif weight == 1:
            field += padded[neighbours]
        else:
            np.multiply(padded[neighbours], weight, out=scratch)
            field += scratch


class _Buffers:
    """Scratch arrays shaped for one block at a time, allocated once per pass."""

    def __init__(self, n_components: int, blocks, count: int):
        largest = max((math.prod(block.shape) for block in blocks), default=0)
        self.n_components = n_components
        self.planes = np.empty(largest, dtype=np.float32)
        self.maps = [np.empty(n_components * largest, dtype=np.float32) for _ in range(count)]

    def for_block(self, block):
        size = math.prod(block.shape)
        shape = (self.n_components,) + block.shape
        maps = [buffer[: self.n_components * size].reshape(shape) for buffer in self.maps]
        return self.planes[:size].reshape(block.shape), *maps


def reference_mean_field(
    log_potential: np.ndarray,
    padded: np.ndarray,
    valid: np.ndarray | None,
    beta: float,
    hood,
    *,
    max_sweeps: int,
    tol: float = _mrf.SWEEP_TOL,
    block_pixels: int = _SWEEP_BLOCK_PIXELS,
) -> tuple[int, float]:
    """Update the posteriors in ``padded`` in place, one colour at a time.

    Stops after ``max_sweeps`` sweeps or once the posteriors changed by
    less than ``tol`` on average in a sweep. Returns the number of sweeps
    and the last mean change.
    """
    n_components = log_potential.shape[0]
    grid = _grid(log_potential.shape[1:])
    log_potential = log_potential.reshape((n_components,) + grid)
    valid = None if valid is None else valid.reshape(grid)
    beta = np.float32(beta)
    weights = [np.float32(weight) for weight in hood.weights]
    blocks = _blocks(grid, hood, block_pixels)
    buffers = _Buffers(n_components, blocks, 2)  # no allocation in the sweeps
    # the mean over the pixels that can change: masked ones stay at zero
    n_valid = log_potential[0].size if valid is None else int(np.count_nonzero(valid))
    n_values = n_components * max(n_valid, 1)
    change = np.inf
    sweep = 0
    for sweep in range(1, max_sweeps + 1):
        change = 0.0
        for block in blocks:
            plane, field, scratch = buffers.for_block(block)
            _neighbour_field(padded, block, weights, field, scratch)
            field *= beta
            field += log_potential[block.sub]
            _softmax_inplace(field, plane)
            if valid is not None:
                field *= valid[block.sub[1:]]
            current = padded[block.target]
            np.subtract(field, current, out=scratch)
            np.abs(scratch, out=scratch)
            change += float(scratch.sum()) / n_values
            np.copyto(current, field)

        if change < tol:
            break
    return sweep, change


def reference_objective(
    log_potential: np.ndarray, padded: np.ndarray, beta: float, hood
) -> float:
    """Mean-field objective summed over the pixels of one image.

    ``Σ_i Σ_k q_ik (log_potential_ik - log q_ik) + beta Σ_{i~j} c_ij q_i·q_j``:
    a lower bound on the log-likelihood up to the prior's normalising
    constant. With ``beta=0`` and pixel-wise posteriors it is the mixture's
    log-likelihood. Masked-out pixels hold ``q = 0`` and add nothing.
    """
    n_components = log_potential.shape[0]
    grid = _grid(log_potential.shape[1:])
    log_potential = log_potential.reshape((n_components,) + grid)
    weights = [np.float32(weight) for weight in hood.weights]
    blocks = _blocks(grid, hood, _SWEEP_BLOCK_PIXELS)
    buffers = _Buffers(n_components, blocks, 2)
    tiny = np.finfo(np.float32).tiny  # q log q -> 0 as q -> 0
    # float32 sums within a block: their rounding is far below tol per pixel
    total = 0.0
    for block in blocks:
        _, field, scratch = buffers.for_block(block)
        q = padded[block.target]
        np.multiply(q, log_potential[block.sub], out=scratch)
        total += float(scratch.sum())
        np.maximum(q, tiny, out=scratch)
        np.log(scratch, out=scratch)
        scratch *= q
        total -= float(scratch.sum())
        if beta:
            # each pair of neighbours once: half of every pixel's field
            _neighbour_field(padded, block, weights, field, scratch)
            field *= q
            total += 0.5 * beta * float(field.sum())
    return total


# --------------------------------------------------------------------------
# estimating beta


def reference_hmrf_em(
    mixture: _mixture.Mixture,
    grids,
    log_potential,
    table,
    *,
    beta,
    max_iter: int,
    tol: float,
    reg_covar: float,
    shares=None,
    warn_swallowed=True,
):
    """Re-estimate ``mixture`` (and ``beta`` when ``'pseudo-likelihood'``) under the prior.

    ``shares`` and ``warn_swallowed`` are only for the emptied-component
    warning, which this reference does not give.

    ``log_potential(i, mixture)`` returns ``log w_k + log p(x | k)`` for
    every pixel of image ``i`` as ``(K, *spatial_shape)`` float32 (any
    finite value where not valid). The objective per valid pixel is the
    mean-field bound (see :func:`._mrf.objective`); iterations stop when it
    changes by less than ``tol``.
    """
    n_valid = sum(
        math.prod(grid.spatial_shape) if grid.valid is None else int(grid.valid.sum())
        for grid in grids
    )
    estimate = beta == "pseudo-likelihood"
    posteriors = []
    for i, grid in enumerate(grids):
        posteriors.append(_mrf.padded_posteriors(log_potential(i, mixture), grid.valid))
    if estimate:
        beta = _hmrf._pseudo_likelihood_beta(posteriors, grids, mixture)
    beta = float(beta)
    objectives = []
    converged = False
    n_iter = 0
    previous = -np.inf
    for n_iter in range(1, max_iter + 1):
        total = _reference_sweep(grids, posteriors, log_potential, mixture, beta)
        current = total / n_valid
        objectives.append(current)
        resp = table.weighted_resp(posteriors, [grid.spatial_shape for grid in grids])
        updated = _mixture.regularised_fit(
            table.values, resp, reg_covar, mixture.covariance_type, float(resp.sum())
        )
        # The weights are the prior's external field and stay those of the
        # pixel-wise fit: re-estimating them as the mean posterior feeds back
        # through the coupling (the majority grows, then grows the field that
        # made it grow) and drove whole components extinct in our phantoms.
        mixture = replace(updated, weights=mixture.weights)
        if estimate:
            beta = _hmrf._pseudo_likelihood_beta(posteriors, grids, mixture)

        if abs(current - previous) < tol:
            converged = True
            break
        previous = current
    return _hmrf.HMRFResult(mixture, beta, n_iter, converged, tuple(objectives))


def _reference_sweep(grids, posteriors, log_potential, mixture, beta) -> float:
    """A few mean-field sweeps over every image; the mean-field objective summed."""
    total = 0.0
    for i, grid in enumerate(grids):
        potential = log_potential(i, mixture)
        reference_mean_field(
            potential, posteriors[i], grid.valid, beta, grid.hood,
            max_sweeps=SWEEPS_PER_ITERATION,
        )
        total += reference_objective(potential, posteriors[i], beta, grid.hood)
        del potential
    return total


def reference_spatial_posteriors(log_potential, valid, beta, hood):
    if isinstance(log_potential, _mrf.TablePotential):  # the dense map it stands for
        log_potential = log_potential.table[:, log_potential.index]
        if valid is not None:
            log_potential[:, ~valid] = 0.0
    padded = _mrf.padded_posteriors(log_potential, valid)
    if beta:
        reference_mean_field(
            log_potential, padded, valid, beta, hood, max_sweeps=_mrf.PREDICT_MAX_SWEEPS
        )
    return padded


# --------------------------------------------------------------------------
# the compiled kernel against the reference

# Posteriors agree to rtol 1e-5 wherever they are above 1e-30; below, both
# are zero for every purpose (float32 exp underflows there differently).
RTOL, ATOL = 1e-5, 1e-30


def noisy_potential(shape, n_components=3, noise=0.6, seed=0):
    """Log-potentials of a noisy piecewise-constant image, ``(K, *shape)`` float32."""
    rng = np.random.default_rng(seed)
    truth = (np.indices(shape).sum(axis=0) // 5) % n_components
    values = truth + rng.normal(scale=noise, size=shape)
    means = np.arange(n_components)[(slice(None),) + (np.newaxis,) * len(shape)]
    return (-0.5 * (values - means) ** 2 / noise**2).astype(np.float32)


def channel_last(padded, shape):
    return _mrf.channel_last(padded, np.empty(tuple(shape) + padded.shape[:1], np.float32))


@pytest.mark.parametrize(
    "shape, connectivity, spacing, masked",
    [
        ((40, 51), 1, None, False),
        ((40, 50), 2, (2.0, 1.0), True),
        ((7, 12, 13), 1, (4.0, 1.0, 1.0), False),
        ((6, 9, 8), 3, None, True),
        ((3, 4, 5, 6), 2, None, False),
        ((300,), 1, None, True),
        ((2, 200), 1, None, False),
    ],
)
def test_mean_field_matches_the_reference(shape, connectivity, spacing, masked):
    potential = noisy_potential(shape)
    valid = np.random.default_rng(1).uniform(size=shape) > 0.2 if masked else None
    hood = _mrf.neighbourhood(len(shape), connectivity, spacing)
    ours = _mrf.padded_posteriors(potential, valid)
    theirs = _mrf.padded_posteriors(potential, valid)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    n_ours = _mrf.mean_field(potential, ours, valid, 1.0, hood, max_sweeps=30)
    n_theirs = reference_mean_field(potential, theirs, valid, 1.0, hood, max_sweeps=30)
    assert n_ours[0] == n_theirs[0]
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    assert _mrf.objective(potential, ours, 1.0, hood) == pytest.approx(
        reference_objective(potential, theirs, 1.0, hood), rel=RTOL
    )
    # every pixel every sweep: the same, to rounding
    every = _mrf.padded_posteriors(potential, valid)
    _mrf.mean_field(potential, every, valid, 1.0, hood, max_sweeps=30, skip_below=-1)
    np.testing.assert_allclose(every, theirs, rtol=RTOL, atol=ATOL)


def test_the_bound_adds_posteriors_by_row_as_the_separate_pass_did():
    shape = (33, 47)
    potential = noisy_potential(shape, seed=3)
    padded = _mrf.padded_posteriors(potential, None)
    hood = _mrf.neighbourhood(2, 1)
    rows = np.random.default_rng(4).integers(-1, 10, size=shape).astype(np.int32)
    fused = np.zeros((10, 3))
    _mrf.objective(potential, padded, 1.0, hood, rows_map=rows, resp=fused)
    separate = np.zeros((10, 3))
    _mrf.add_posteriors_by_row(padded, rows, separate)
    np.testing.assert_allclose(fused, separate, rtol=1e-6)


@pytest.mark.parametrize("shape", [(33, 47), (5, 6, 7), (9, 1)])
def test_posteriors_by_row_are_the_sums_bincount_gave(monkeypatch, shape):
    # the compiled scatter adds in bincount's order: the same bits, over several slabs
    monkeypatch.setattr(_mrf, "_SLAB_PIXELS", 64)
    potential = noisy_potential(shape, seed=5)
    padded = _mrf.padded_posteriors(potential, None)
    rows = np.random.default_rng(6).integers(-1, 12, size=shape).astype(np.int32)
    ours = np.random.default_rng(7).random((12, 3))
    theirs = ours.copy()
    _mrf.add_posteriors_by_row(padded, rows, ours)
    grid = _mrf._grid(shape)
    for slab in _mrf._slabs(grid):
        index = rows.reshape(grid)[slab]
        for key, columns in zip(_mrf._row_keys(slab, grid), _mrf._PARITIES):
            part = index[..., columns].reshape(-1)
            used = part >= 0
            q = padded[key].reshape(3, -1)[:, used]
            for k in range(3):
                theirs[:, k] += np.bincount(part[used], weights=q[k], minlength=len(theirs))
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("shape", [(33, 47), (5, 6, 7)])
def test_posteriors_at_positions_are_the_maps_values_exactly(shape):
    potential = noisy_potential(shape, seed=8)
    padded = _mrf.padded_posteriors(potential, None)
    positions = np.random.default_rng(9).permutation(int(np.prod(shape)))[:100]
    index = _mrf.map_positions(padded, shape, positions)
    expected = padded.reshape(3, -1)[:, index].T.astype(np.float64)
    got = _mrf.posteriors_at(padded, shape, positions)
    assert got.dtype == np.float64 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(_mrf.posteriors_at(padded, shape, positions, index), expected)
    # the grid's values: posteriors per pixel that sum to 1, in the pixels' order
    grid = _mrf.channel_last(padded, np.empty(shape + (3,), np.float32))
    np.testing.assert_array_equal(got, grid.reshape(-1, 3)[positions])


def _blobs(shape, seed, noise=0.5):
    rng = np.random.default_rng(seed)
    from scipy import ndimage as ndi

    field = ndi.gaussian_filter(rng.normal(size=shape), 3.0)
    truth = np.digitize(field, np.quantile(field, [1 / 3, 2 / 3]))
    return truth + rng.normal(scale=noise, size=shape)


def _images():
    blobs2 = _blobs((64, 80), 0)
    blobs3 = _blobs((12, 40, 36), 1)
    uint16 = np.clip(_blobs((70, 60), 2) * 4000 + 8000, 0, 65535).astype(np.uint16)
    rgb = np.clip(np.stack([_blobs((48, 50), 3 + c) for c in range(3)], -1) * 60 + 60, 0, 255)
    return {
        "2-D": (blobs2, {"beta": 1.0}),
        "3-D anisotropic": (blobs3, {"beta": 1.0, "spacing": (3.0, 1.0, 1.0)}),
        "uint16 histogram": (uint16, {"beta": 1.0}),
        "RGB": (rgb.astype(np.uint8), {"beta": 1.0, "channel_axis": -1}),
        "connectivity 2": (blobs2, {"beta": 1.0, "connectivity": 2}),
        "beta pseudo-likelihood": (blobs2, {"beta": "pseudo-likelihood"}),
        "noisier, beta 1.5": (_blobs((64, 64), 5, noise=0.9), {"beta": 1.5}),
    }


@pytest.mark.parametrize("case", list(_images()))
def test_fit_and_predict_match_the_reference(case, monkeypatch):
    image, params = _images()[case]
    mask = np.ones(image.shape[:-1] if "channel_axis" in params else image.shape, dtype=bool)
    mask[:5, :7] = False  # a masked-out corner
    ours = GMMSegmenter(3, random_state=0, **params).fit(image, mask=mask)
    proba = ours.predict_proba(image, mask=mask)
    labels = ours.predict(image, mask=mask)
    with monkeypatch.context() as patch:
        patch.setattr(_hmrf, "hmrf_em", reference_hmrf_em)
        patch.setattr(_mrf, "spatial_posteriors", reference_spatial_posteriors)
        theirs = GMMSegmenter(3, random_state=0, **params).fit(image, mask=mask)
        reference_proba = theirs.predict_proba(image, mask=mask)
        reference_labels = theirs.predict(image, mask=mask)
    assert ours.spatial_n_iter_ == theirs.spatial_n_iter_
    np.testing.assert_allclose(ours.beta_, theirs.beta_, rtol=RTOL)
    np.testing.assert_allclose(ours.spatial_lower_bounds_, theirs.spatial_lower_bounds_, rtol=RTOL)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=RTOL)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, rtol=RTOL)
    # an estimated beta agrees to rtol ~1e-6, which moves posteriors by up
    # to ~1e-6 in absolute terms (16 float32 ulps of a probability near 1)
    atol = 1e-6 if params.get("beta") == "pseudo-likelihood" else ATOL
    np.testing.assert_allclose(proba, reference_proba, rtol=RTOL, atol=atol)
    # labels: the same but where the two best posteriors tie to rounding
    top_two = np.sort(reference_proba, axis=-1)[..., -2:]
    tied = top_two[..., 1] - top_two[..., 0] < 1e-5
    np.testing.assert_array_equal(labels[~tied], reference_labels[~tied])


# --------------------------------------------------------------------------
# any number of dimensions


def test_a_32_dimensional_image_fits_in_well_under_a_second():
    image = np.zeros((1,) * 32)
    start = time.perf_counter()
    segmenter = GMMSegmenter(1, random_state=0).fit(image)
    labels = segmenter.predict(image)
    assert time.perf_counter() - start < 0.5
    assert labels.shape == image.shape and labels.ravel().tolist() == [1]
    assert len(_mrf.neighbourhood(32, 1).offsets) == 64


def test_a_thin_high_dimensional_image_matches_its_squeezed_self():
    rng = np.random.default_rng(7)
    thin = rng.normal(size=(1, 20, 1, 24, 1))
    squeezed = thin.reshape(20, 24)
    ours = GMMSegmenter(2, random_state=0).fit(thin)
    flat = GMMSegmenter(2, random_state=0).fit(squeezed)
    np.testing.assert_allclose(ours.means_, flat.means_, rtol=1e-6)
    np.testing.assert_array_equal(ours.predict(thin).reshape(20, 24), flat.predict(squeezed))


def test_neighbourhoods_are_built_without_enumerating_every_offset():
    start = time.perf_counter()
    hood = _mrf.neighbourhood(200, 1)
    assert len(hood.offsets) == 400 and hood.weights.sum() == pytest.approx(400)
    assert len(_mrf.neighbourhood(32, 2).offsets) == 64 + 4 * math.comb(32, 2)
    assert time.perf_counter() - start < 0.5
    with pytest.raises(ValueError, match=r"connectivity=3 in 32 spatial dimensions gives "
                                         r"41728 neighbours.*use connectivity <= 2"):
        _mrf.neighbourhood(32, 3)


def test_neighbour_order_is_that_of_the_full_enumeration():
    for ndim in range(1, 5):
        for connectivity in range(1, ndim + 1):
            expected = [
                offset for offset in itertools.product((-1, 0, 1), repeat=ndim)
                if 0 < np.count_nonzero(offset) <= connectivity
            ]
            assert list(map(tuple, _mrf.neighbourhood(ndim, connectivity).offsets)) == expected


# --------------------------------------------------------------------------
# progress and cancel inside a sweep


def test_a_sweep_reports_progress_and_can_be_cancelled_midway(monkeypatch):
    monkeypatch.setattr(_mrf, "_CALL_PIXELS", 64)
    monkeypatch.setattr(_mrf, "_REPORT_SECONDS", 0.0)
    potential = noisy_potential((64, 64))
    padded = _mrf.padded_posteriors(potential, None)
    before = padded.copy()
    seen = []

    def cancel(stage, done, total):
        seen.append((stage, done, total))
        if len(seen) == 3:
            raise RuntimeError("cancelled")

    from gmm_segmenter import progress

    with pytest.raises(RuntimeError, match="cancelled"), progress(cancel):
        _mrf.mean_field(potential, padded, None, 1.0, _mrf.neighbourhood(2, 1), max_sweeps=5)
    assert seen == [("smoothing", 0, 5)] * 3  # all within the first sweep
    assert 0 < np.count_nonzero(padded != before) < padded.size // 2


def test_the_memory_estimate_counts_the_maps_with_their_border(monkeypatch):
    asked = []
    monkeypatch.setattr(_kernel._image, "check_memory", lambda n_bytes, what: asked.append(n_bytes))
    thin = type("View", (), {"n_pixels": 2000, "spatial_shape": (2, 1000)})()
    _kernel.check_spatial_memory([thin], 3, "Fitting")
    map_bytes = 3 * 4 * 4 * 502 * 2  # (K, 2 + 2, 2, (1000 + 3) // 2) float32
    assert asked[0] >= map_bytes + 3 * 4 * 2000


# --------------------------------------------------------------------------
# threads, tiles and lookups: the same work, less of it, or split


@pytest.mark.parametrize("shape, masked", [((90, 131), False), ((9, 20, 33), True)])
def test_threads_give_the_result_of_one_thread(shape, masked, monkeypatch):
    """Each colour's rows split between threads: the same posteriors, bound
    and responsibilities as in one thread (the sums are taken per share)."""
    potential = noisy_potential(shape, noise=0.9)
    valid = np.random.default_rng(1).uniform(size=shape) > 0.2 if masked else None
    rows = np.random.default_rng(2).integers(-1, 10, size=shape).astype(np.int32)
    hood = _mrf.neighbourhood(len(shape), 1)
    monkeypatch.setattr(_mrf, "_THREAD_PIXELS", 64)
    monkeypatch.setattr(_mrf, "_CALL_PIXELS", 500)
    results = {}
    monkeypatch.setattr(_mrf, "spare_threads", lambda most: most)
    for threads in (1, 3):
        monkeypatch.setattr(_mrf, "n_threads", lambda threads=threads: threads)
        padded = _mrf.padded_posteriors(potential, valid)
        sweeps = _mrf.mean_field(potential, padded, valid, 1.2, hood, max_sweeps=8)
        resp = np.zeros((10, 3))
        bound = _mrf.objective(potential, padded, 1.2, hood, rows_map=rows, resp=resp)
        results[threads] = (padded, sweeps, bound, resp)
    one, three = results[1], results[3]
    np.testing.assert_array_equal(one[0], three[0])
    assert one[1][0] == three[1][0]
    assert one[2] == pytest.approx(three[2], rel=1e-12)
    np.testing.assert_allclose(one[3], three[3], rtol=1e-12)


@pytest.mark.parametrize("shape", [(90, 131), (9, 20, 33)])
def test_the_load_does_not_change_a_bit(shape, monkeypatch):
    """However many threads the load leaves, the rows are split as on an idle
    machine: the same bits of posteriors, bound and responsibilities."""
    potential = noisy_potential(shape, noise=0.9)
    rows = np.random.default_rng(2).integers(-1, 10, size=shape).astype(np.int32)
    hood = _mrf.neighbourhood(len(shape), 1)
    monkeypatch.setattr(_mrf, "_THREAD_PIXELS", 64)
    monkeypatch.setattr(_mrf, "_CALL_PIXELS", 500)
    monkeypatch.setattr(_mrf, "n_threads", lambda: 3)
    results = {}
    for spare in (1, 2, 3):
        monkeypatch.setattr(_mrf, "spare_threads", lambda most, spare=spare: spare)
        padded = _mrf.padded_posteriors(potential, None)
        sweeps = _mrf.mean_field(potential, padded, None, 1.2, hood, max_sweeps=8)
        resp = np.zeros((10, 3))
        bound = _mrf.objective(potential, padded, 1.2, hood, rows_map=rows, resp=resp)
        results[spare] = (padded, sweeps, bound, resp)
    for spare in (2, 3):
        np.testing.assert_array_equal(results[spare][0], results[1][0])
        assert results[spare][1] == results[1][1] and results[spare][2] == results[1][2]
        np.testing.assert_array_equal(results[spare][3], results[1][3])


def test_prediction_through_a_table_matches_the_dense_log_potentials(monkeypatch):
    rng = np.random.default_rng(0)
    for image, mask in [
        (np.clip(rng.normal(30000, 8000, (120, 97)), 0, 65535).astype(np.uint16), None),
        (rng.integers(0, 256, (9, 33, 41)).astype(np.uint8), rng.uniform(size=(9, 33, 41)) > 0.2),
    ]:
        segmenter = GMMSegmenter(3, beta=1.0, random_state=0).fit(image, mask=mask)
        proba = segmenter.predict_proba(image, mask=mask)
        labels = segmenter.predict(image, mask=mask)
        with monkeypatch.context() as patch:
            patch.setattr(_kernel, "table_log_potential", lambda *args: None)
            np.testing.assert_array_equal(proba, segmenter.predict_proba(image, mask=mask))
            np.testing.assert_array_equal(labels, segmenter.predict(image, mask=mask))


@pytest.mark.parametrize("shape", [(37, 50), (5, 9, 12)])
@pytest.mark.parametrize("masked", [False, True])
def test_pixelwise_posteriors_through_a_table_are_those_of_the_dense_potentials(shape, masked):
    rng = np.random.default_rng(0)
    table = rng.normal(scale=4.0, size=(3, 300)).astype(np.float32)
    index = rng.integers(0, 300, size=shape).astype(np.uint16)
    valid = rng.uniform(size=shape) > 0.3 if masked else None
    dense = np.ascontiguousarray(table[:, index])
    through = _mrf.padded_posteriors(_mrf.TablePotential(table, index), valid)
    np.testing.assert_array_equal(through, _mrf.padded_posteriors(dense, valid))


@pytest.mark.parametrize("masked", [False, True])
def test_log_potentials_from_kept_standardized_pixels_are_the_same(masked):
    from gmm_segmenter import _source

    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 30.0, (60, 70, 3))
    mask = None
    if masked:
        image[5, 7, 1] = np.nan
        mask = rng.uniform(size=(60, 70)) > 0.3
    model = GMMSegmenter(3, channel_axis=-1, beta=0, random_state=0).fit(image, mask=mask).model_
    (view,) = _source.open_images(image, channel_axis=-1, mask=mask).views
    (kept,) = _kernel.standardized_pixels([view], model.offset, model.scale)
    assert kept[0].dtype == np.float32 and (kept[1] is not None) == masked
    dense = _kernel.log_potential(view, model.standardized, model.offset, model.scale)
    again = _kernel.log_potential(view, model.standardized, model.offset, model.scale, kept)
    np.testing.assert_array_equal(again, dense)
    if masked:
        assert np.all(again[:, ~_image.valid_map(view)] == 0)


def test_fits_keep_standardized_pixels_only_within_their_budget(monkeypatch):
    image = np.random.default_rng(0).normal(size=(40, 50))
    calls = []
    original = _kernel.log_potential
    monkeypatch.setattr(_kernel, "log_potential", lambda *args, **kwargs: calls.append(
        kwargs.get("standardized")) or original(*args, **kwargs))
    fitted = GMMSegmenter(3, beta=1.0, random_state=0).fit(image)
    assert calls and all(kept is not None for kept in calls)
    calls.clear()
    monkeypatch.setattr(_kernel, "STANDARDIZED_MAX_VALUES", image.size - 1)
    again = GMMSegmenter(3, beta=1.0, random_state=0).fit(image)
    assert calls and all(kept is None for kept in calls)
    np.testing.assert_array_equal(again.means_, fitted.means_)


def test_histogram_rows_by_lookup_match_the_binary_search():
    rng = np.random.default_rng(0)
    for image, mask in [
        (rng.integers(0, 65536, (60, 50)).astype(np.uint16), None),
        (rng.integers(-100, 100, (20, 30)).astype(np.int8), rng.uniform(size=(20, 30)) > 0.4),
        (rng.integers(-5000, 90000, (40, 40)).astype(np.int32), None),
    ]:
        view = _image.as_images(image, channel_axis=None, mask=mask)[0]
        valid = _image.valid_map(view)
        distinct = np.unique(image if mask is None else image[mask]).astype(np.float64)
        expected = np.minimum(np.searchsorted(distinct, image.astype(np.float64)), len(distinct) - 1)
        if mask is not None:
            expected[~mask] = -1
        np.testing.assert_array_equal(_hmrf.histogram_rows(view, valid, distinct), expected)


def test_the_grey_level_table_is_reused_only_for_the_same_mixture():
    image = np.random.default_rng(0).integers(0, 4000, (30, 40)).astype(np.uint16)
    segmenter = GMMSegmenter(3, beta=0, random_state=0).fit(image)
    view = _image.as_images(image, channel_axis=None)[0]
    model = segmenter.model_
    first = _kernel.log_potential(view, model.standardized, model.offset, model.scale)
    again = _kernel.log_potential(view, model.standardized, model.offset, model.scale)
    np.testing.assert_array_equal(first, again)
    moved = replace(model.standardized, means=model.standardized.means + 0.5)
    other = _kernel.log_potential(view, moved, model.offset, model.scale)
    assert not np.allclose(first, other)


def test_tiles_are_spread_over_the_image_and_total_the_budget():
    shape = (2048, 1536)
    assert _hmrf.representative_tiles([shape], [None], max_pixels=shape[0] * shape[1]) is None
    tiles = _hmrf.representative_tiles([shape], [None], max_pixels=1 << 18)
    pixels = [math.prod(k.stop - k.start for k in tile.key) for tile in tiles]
    assert 1 << 18 <= sum(pixels) < (1 << 18) + max(pixels)
    covered = np.zeros(shape, dtype=bool)
    for tile in tiles:
        assert not covered[tile.key].any()  # no overlaps
        covered[tile.key] = True
    # every quarter of the image gets some
    for rows in (slice(0, 1024), slice(1024, None)):
        for columns in (slice(0, 768), slice(768, None)):
            assert covered[rows, columns].any()


def test_tiles_pass_over_masked_out_cells_and_share_a_batch():
    mask = np.zeros((1024, 1024), dtype=bool)
    mask[:, :300] = True
    tiles = _hmrf.representative_tiles([(1024, 1024), (512, 512)], [mask, None], 1 << 16)
    assert {tile.image for tile in tiles} == {0, 1}
    assert all(mask[tile.key].any() for tile in tiles if tile.image == 0)


def test_a_large_image_is_fitted_on_tiles_and_segments_as_well(monkeypatch):
    rng = np.random.default_rng(3)
    from scipy import ndimage as ndi

    field = ndi.gaussian_filter(rng.normal(size=(384, 384)), 6.0)
    truth = np.digitize(field, np.quantile(field, [1 / 3, 2 / 3]))
    image = truth + rng.normal(scale=0.5, size=truth.shape)
    whole = GMMSegmenter(3, random_state=0).fit(image)
    monkeypatch.setattr(_hmrf, "FIT_PIXELS", 1 << 15)
    monkeypatch.setattr(_hmrf, "TILE_PIXELS", 1 << 12)
    monkeypatch.setattr(_hmrf, "TILE_ROW", 64)
    seen = []
    real = _hmrf.hmrf_em
    monkeypatch.setattr(
        _hmrf, "hmrf_em", lambda mixture, grids, *a, **k: seen.append(
            [grid.spatial_shape for grid in grids]) or real(mixture, grids, *a, **k)
    )
    tiled = GMMSegmenter(3, random_state=0).fit(image)
    (shape,) = seen[0]  # the tiles stacked into one grid
    assert len(shape) == 3 and shape[0] > 1
    assert (1 << 15) <= math.prod(shape) < 1.2 * (1 << 15)
    # beta is one of the same candidates; on this image two of them are
    # within 0.005 nats a pixel of each other, and the tiles may pick either
    lattice = _hmrf.Lattice.of([_hmrf.Grid(image.shape, None, _mrf.neighbourhood(2), None)])
    centre = _hmrf.critical_beta(lattice, 3)
    assert min(abs(tiled.beta_ - f * centre) for f in _hmrf.BETA_FACTORS) < 1e-9
    np.testing.assert_allclose(tiled.means_, whole.means_, atol=0.05)
    from sklearn.metrics import adjusted_rand_score

    def score(segmenter):
        return adjusted_rand_score(truth.ravel(), segmenter.predict(image).ravel())

    assert score(tiled) > score(whole) - 0.01


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_pass_takes_a_second_thread_only_when_a_core_is_idle(monkeypatch):
    monkeypatch.setattr(_mrf, "n_threads", lambda: 2)
    # (load average, threads of the last pass) -> threads now
    for load, last, threads in ((0.2, 1, 2), (1.2, 1, 2), (2.0, 2, 2), (2.0, 1, 1), (4.0, 2, 1)):
        monkeypatch.setattr(_mrf.os, "getloadavg", lambda load=load: (load, load, load))
        monkeypatch.setattr(_mrf, "_recent_threads", last)
        assert _mrf.spare_threads(2) == threads


def test_a_forked_child_smooths_with_threads_of_its_own(monkeypatch):
    import multiprocessing

    monkeypatch.setattr(_mrf, "_THREAD_PIXELS", 64)
    monkeypatch.setattr(_mrf, "n_threads", lambda: 2)
    monkeypatch.setattr(_mrf, "spare_threads", lambda most: most)
    potential = noisy_potential((60, 70))
    hood = _mrf.neighbourhood(2, 1)
    here = _mrf.spatial_posteriors(potential, None, 1.0, hood)  # the parent's threads start
    with multiprocessing.get_context("fork").Pool(1) as pool:
        there = pool.apply_async(_mrf.spatial_posteriors, (potential, None, 1.0, hood)).get(60)
    np.testing.assert_array_equal(here, there)
