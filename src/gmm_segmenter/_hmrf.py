"""Fitting the mixture under the spatial prior: HMRF-EM.

HMRF-EM (Zhang, Brady & Smith, IEEE TMI 2001, the model behind FSL FAST)
alternates mean-field sweeps over every image (:func:`._mrf.mean_field`)
with the weighted M-step of :mod:`._mixture`, using the spatial posteriors
as responsibilities for the means and covariances; the weights, the prior's
external field, stay those of the pixel-wise fit. ``beta`` can be estimated
by maximum pseudo-likelihood (Besag 1975) on a sample of pixels.

The M-step needs the posteriors of the training values: the rows of the
exact histogram, or the pixels of a seeded sample of grid positions
(:class:`ResponsibilityTable`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize_scalar

from . import _image, _mixture, _mrf
from ._progress import report

#: ``beta`` estimated by pseudo-likelihood is searched in ``[0, BETA_MAX]``
#: (per nearest neighbour; beyond it every configuration is frozen anyway).
BETA_MAX = 4.0

#: Mean-field sweeps per HMRF-EM iteration: enough for the posteriors to
#: follow the parameters; the iterations do the rest (generalised EM). One
#: sweep cost 0.06 ARI on the noisiest Shepp-Logan phantom of
#: benchmarks/quality.py, two cost up to 0.002 elsewhere.
SWEEPS_PER_ITERATION = 3

#: Pixels at which pseudo-likelihood is evaluated when estimating ``beta``.
PSEUDO_LIKELIHOOD_PIXELS = 50_000


def estimate_beta(posteriors: np.ndarray, fields: np.ndarray, log_weights: np.ndarray) -> float:
    """Maximum pseudo-likelihood ``beta`` in ``[0, BETA_MAX]``.

    The pseudo-likelihood of soft labels ``q_i`` given their neighbours'
    field ``f_i`` is ``Σ_i Σ_k q_ik log softmax_k(log w_k + beta f_ik)``,
    concave in ``beta``.
    """
    if len(posteriors) == 0:
        return 0.0

    def negative_pseudo_likelihood(beta):
        logits = log_weights + beta * fields
        return -float(np.sum(posteriors * logits) - np.sum(_mixture.log_sum_exp(logits)))

    result = minimize_scalar(
        negative_pseudo_likelihood, bounds=(0.0, BETA_MAX), method="bounded",
        options={"xatol": 1e-3},
    )
    return float(result.x)


@dataclass
class Grid:
    """One image's grid: which pixels are used, and its neighbourhood."""

    spatial_shape: tuple
    valid: np.ndarray | None
    hood: _mrf.Neighbourhood
    positions: np.ndarray  # sampled valid flat positions (pseudo-likelihood)


class ResponsibilityTable:
    """Weighted pixel values for the M-step, filled from posterior maps.

    Either every valid pixel is summarised through ``rows`` (a map from
    pixel to row of ``values``, -1 where not used: the exact histogram), or
    the rows are the pixels at ``positions`` of each image (a sample).
    """

    def __init__(self, values: np.ndarray, *, rows=None, positions=None):
        self.values = values
        self.rows = rows
        self.positions = positions

    def weighted_resp(self, posteriors: Sequence[np.ndarray], shapes) -> np.ndarray:
        """Responsibilities of the rows from the maps of images of ``shapes``."""
        n_components = posteriors[0].shape[0]
        if self.positions is not None:
            parts = [
                _mrf.posteriors_at(padded, shape, positions)
                for padded, shape, positions in zip(posteriors, shapes, self.positions)
            ]
            return np.concatenate(parts)
        resp = np.zeros((len(self.values), n_components))
        for padded, rows_map in zip(posteriors, self.rows):
            _mrf.add_posteriors_by_row(padded, rows_map, resp)
        return resp


@dataclass(frozen=True)
class HMRFResult:
    mixture: _mixture.Mixture
    beta: float
    n_iter: int
    converged: bool
    objectives: tuple


def hmrf_em(
    mixture: _mixture.Mixture,
    grids: Sequence[Grid],
    log_potential: Callable[[int, _mixture.Mixture], np.ndarray],
    table: ResponsibilityTable,
    *,
    beta,
    max_iter: int,
    tol: float,
    reg_covar: float,
    update_data: Callable | None = None,
) -> HMRFResult:
    """Re-estimate ``mixture`` (and ``beta`` when ``'auto'``) under the spatial prior.

    ``log_potential(i, mixture)`` returns ``log w_k + log p(x | k)`` for
    every pixel of image ``i`` as ``(K, *spatial_shape)`` float32 (any
    finite value where not valid). The objective per valid pixel is the
    mean-field bound (see :func:`._mrf.objective`); iterations stop when it
    changes by less than ``tol``.

    ``update_data(resp, mixture)``, when given, is called before every
    M-step with the table's responsibilities; it may change what
    ``log_potential`` and ``table.values`` give from then on (a bias field
    refitted from the spatial posteriors).
    """
    n_valid = sum(
        math.prod(grid.spatial_shape) if grid.valid is None else int(grid.valid.sum())
        for grid in grids
    )
    estimate = beta == "auto"
    posteriors = []
    for i, grid in enumerate(grids):
        posteriors.append(_mrf.padded_posteriors(log_potential(i, mixture), grid.valid))
    if estimate:
        beta = _pseudo_likelihood_beta(posteriors, grids, mixture)
    beta = float(beta)
    objectives = []
    converged = False
    n_iter = 0
    previous = -np.inf
    for n_iter in range(1, max_iter + 1):
        # a histogram's responsibilities are summed in the pass of the bound
        resp = None if table.rows is None else np.zeros((len(table.values), mixture.n_components))
        total = _sweep(grids, posteriors, log_potential, mixture, beta, table.rows, resp)
        current = total / n_valid
        objectives.append(current)
        if resp is None:
            resp = table.weighted_resp(posteriors, [grid.spatial_shape for grid in grids])
        if update_data is not None:
            update_data(resp, mixture)
        updated = _mixture.regularised_fit(
            table.values, resp, reg_covar, mixture.covariance_type, float(resp.sum())
        )
        # The weights are the prior's external field and stay those of the
        # pixel-wise fit: re-estimating them as the mean posterior feeds back
        # through the coupling (the majority grows, then grows the field that
        # made it grow) and drove whole components extinct in our phantoms.
        mixture = replace(updated, weights=mixture.weights)
        if estimate:
            beta = _pseudo_likelihood_beta(posteriors, grids, mixture)
        report("spatial EM", n_iter, max_iter)
        if abs(current - previous) < tol:
            converged = True
            break
        previous = current
    return HMRFResult(mixture, beta, n_iter, converged, tuple(objectives))


def _sweep(grids, posteriors, log_potential, mixture, beta, rows=None, resp=None) -> float:
    """A few mean-field sweeps over every image; the mean-field objective summed.

    With ``rows`` (one map per image from pixel to row of ``resp``, -1 where
    not used), each pixel's posteriors are added to its row of ``resp``.
    """
    total = 0.0
    for i, grid in enumerate(grids):
        potential = log_potential(i, mixture)
        _mrf.mean_field(
            potential, posteriors[i], grid.valid, beta, grid.hood,
            max_sweeps=SWEEPS_PER_ITERATION,
        )
        total += _mrf.objective(
            potential, posteriors[i], beta, grid.hood,
            rows_map=None if rows is None else rows[i], resp=resp,
            progress_at=("smoothing", SWEEPS_PER_ITERATION, SWEEPS_PER_ITERATION),
        )
        del potential
    return total


def _pseudo_likelihood_beta(posteriors, grids, mixture) -> float:
    q_parts, field_parts = [], []
    for padded, grid in zip(posteriors, grids):
        q_parts.append(_mrf.posteriors_at(padded, grid.spatial_shape, grid.positions))
        field_parts.append(_mrf.local_fields(padded, grid.spatial_shape, grid.positions, grid.hood))
    return estimate_beta(
        np.concatenate(q_parts), np.concatenate(field_parts), np.log(mixture.weights)
    )


def sample_positions(
    grids_valid: Sequence[np.ndarray | None],
    shapes: Sequence[tuple],
    n_samples: int,
    random_state: np.random.Generator,
) -> list[np.ndarray]:
    """A uniform sample (without replacement) of valid flat positions per image."""
    counts = [
        math.prod(shape) if valid is None else int(np.count_nonzero(valid))
        for valid, shape in zip(grids_valid, shapes)
    ]
    drawn = _image.draw_ranks(counts, n_samples, random_state)
    return [
        local if valid is None else _nth_true(valid.reshape(-1), local)
        for valid, local in zip(grids_valid, drawn)
    ]


def _nth_true(flags: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Positions of the ``ranks``-th True values of ``flags`` (ranks sorted)."""
    out = []
    seen = 0
    step = 1 << 20
    for start in range(0, flags.size, step):
        block = flags[start : start + step]
        count = int(np.count_nonzero(block))
        lo, hi = np.searchsorted(ranks, [seen, seen + count])
        if hi > lo:
            out.append(start + np.flatnonzero(block)[ranks[lo:hi] - seen])
        seen += count
    return np.concatenate(out) if out else np.empty(0, dtype=np.intp)


# --------------------------------------------------------------------------
# from images to grids


def histogram_rows(
    view: _image.ImageView, valid: np.ndarray | None, distinct: np.ndarray
) -> np.ndarray:
    """The row of ``distinct`` each pixel's value is in (-1 where not valid)."""
    rows = np.empty(view.spatial_shape, dtype=np.int32)
    flat = rows.reshape(-1)
    for start, stop, values, _ in _image.iter_chunks(view):
        index = np.searchsorted(distinct, values[:, 0].astype(np.float64))
        flat[start:stop] = np.minimum(index, len(distinct) - 1)
    if valid is not None:
        rows[~valid] = -1
    return rows


def values_at(views: Sequence[_image.ImageView], positions: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel values at flat positions of each image, ``(n, n_channels)`` float64."""
    parts = [
        np.asarray(view.pixels[np.unravel_index(where, view.spatial_shape)], dtype=np.float64)
        for view, where in zip(views, positions)
    ]
    return np.concatenate(parts)
