"""Expectation-maximisation for Gaussian mixtures with sample weights.

Written here rather than taken from ``sklearn.mixture.GaussianMixture``
because that class takes no sample weights (scikit-learn issue #15647), and
weights are what make the histogram fit exact and what the spatial model
needs. With unit weights and the same initial parameters the updates are
scikit-learn's, step for step (``tests/test_mixture.py`` checks it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numba
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from . import _training
from ._covariance import COVARIANCE_TYPES, CollapsedCovariance, CovarianceType
from ._progress import report

__all__ = [
    "COVARIANCE_TYPES",
    "CollapsedCovariance",
    "Mixture",
    "FitResult",
    "fit_mixture",
]


@dataclass(frozen=True)
class Mixture:
    """Parameters of a Gaussian mixture, in the layout scikit-learn uses."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    covariance_type: str

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    @property
    def kind(self) -> CovarianceType:
        return COVARIANCE_TYPES[self.covariance_type]

    def channel_variances(self) -> np.ndarray:
        """Each component's variance along each channel, ``(K, d)`` (a read-only view)."""
        return np.broadcast_to(
            self.kind.variances(self.covariances, self.n_components), self.means.shape
        )

    def precisions(self) -> np.ndarray:
        return self.kind.precisions(self.precisions_cholesky)

    def reorder(self, order: np.ndarray) -> "Mixture":
        return replace(
            self,
            weights=self.weights[order],
            means=self.means[order],
            covariances=self.kind.reorder(self.covariances, order),
            precisions_cholesky=self.kind.reorder(self.precisions_cholesky, order),
        )

    def rescaled(self, offset: np.ndarray, scale: np.ndarray) -> "Mixture":
        """The same mixture for data ``x * scale + offset``."""
        covariances = self.covariances * self.kind.unit_factor(scale)
        return Mixture(
            weights=self.weights,
            means=self.means * scale + offset,
            covariances=covariances,
            precisions_cholesky=self.kind.precision_cholesky(covariances),
            covariance_type=self.covariance_type,
        )

    def standardized(self, offset: np.ndarray, scale: np.ndarray) -> "Mixture":
        """The same mixture for data ``(x - offset) / scale``.

        Not ``rescaled`` with the inverse map: subtracting before dividing
        stays accurate when the offset is many standard deviations from zero.
        """
        covariances = self.covariances / self.kind.unit_factor(scale)
        return Mixture(
            weights=self.weights,
            means=(self.means - offset) / scale,
            covariances=covariances,
            precisions_cholesky=self.kind.precision_cholesky(covariances),
            covariance_type=self.covariance_type,
        )


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Free parameters of a mixture, as ``GaussianMixture._n_parameters``."""
    cov_params = COVARIANCE_TYPES[covariance_type].n_parameters(n_components, n_features)
    return int(cov_params + n_components * n_features + n_components - 1)


def precision_cholesky(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    """Cholesky factors of the precision matrices (scikit-learn's layout)."""
    return COVARIANCE_TYPES[covariance_type].precision_cholesky(covariances)


def column_sums(values: np.ndarray) -> np.ndarray:
    """``values.sum(axis=0)`` of a 2-D array, the same bits, several times faster.

    numpy adds the rows of a tall ``(n, K)`` array one after another in
    order, and does so slowly for a short last axis (0.93 ms for 65 536 x 3
    float64, where the M-step's matrix product takes 0.04 ms). The compiled
    loop adds them in the same order (0.2 ms).
    """
    if (values.ndim != 2 or values.dtype != np.float64 or values.shape[1] < 2
            or not values.flags.c_contiguous):
        return values.sum(axis=0)  # numpy sums these pairwise: other bits
    return _column_sums(values)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _column_sums(values):  # pragma: no cover - compiled
    n_rows, n_columns = values.shape
    out = np.zeros(n_columns)
    for row in range(n_rows):
        for column in range(n_columns):
            out[column] += values[row, column]
    return out


def estimate_parameters(X, weighted_resp, reg_covar, covariance_type, mass=None):
    """M-step: weights, means and covariances from weighted responsibilities.

    ``weighted_resp`` is ``resp * sample_weight[:, None]``; ``mass``, when
    given, is its column sums (``weighted_resp.sum(axis=0)``).
    """
    if mass is None:
        mass = column_sums(weighted_resp)
    nk = mass + 10 * np.finfo(weighted_resp.dtype).eps
    means = weighted_resp.T @ X / nk[:, np.newaxis]
    covariances = COVARIANCE_TYPES[covariance_type].estimate(
        X, weighted_resp, nk, means, reg_covar
    )
    return nk, means, covariances


def log_gaussian_prob(X, means, precisions_cholesky, covariance_type):
    """Log density of each sample under each component, shape ``(n, K)``.

    Computed in the dtype of ``X`` (float32 for prediction, float64 for fits).
    The result is the transpose of a component-major ``(K, n)`` array: NumPy
    reduces and compares across a few long rows far faster than along many
    short ones, which is what every caller does next (max, sum, argmax over K).
    """
    dtype = X.dtype
    n_components, n_features = means.shape
    chol = precisions_cholesky.astype(dtype, copy=False)
    means = means.astype(dtype, copy=False)
    columns = X.T  # (d, n) view: products below come out component-major
    log_prob, log_det = COVARIANCE_TYPES[covariance_type].log_prob(
        columns, means, chol, n_components
    )
    log_prob = -0.5 * (n_features * np.log(2 * np.pi) + log_prob) + np.reshape(log_det, (-1, 1))
    return log_prob.astype(dtype, copy=False).T


def nearest_distance(X, mixture: Mixture) -> np.ndarray:
    """Each row's Mahalanobis distance to the nearest component, in standard deviations."""
    X = np.asarray(X, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # values near the float64 limit: inf
        squared, _ = mixture.kind.log_prob(
            X.T, mixture.means.astype(np.float64),
            mixture.precisions_cholesky.astype(np.float64), mixture.n_components,
        )
        nearest = squared.min(axis=0)
    return np.sqrt(np.where(np.isnan(nearest), np.inf, np.maximum(nearest, 0.0)))


def most_probable(X, mixture: Mixture, dtype=np.intp):
    """Index of the most probable component of each sample.

    Compares the component rows one by one: elementwise passes over a few
    long rows beat ``argmax`` along the short component axis several times.
    Ties go to the lower index, as with ``argmax``.
    """
    rows = weighted_log_prob(X, mixture).T  # (K, n), contiguous
    best = rows[0].copy()
    labels = np.zeros(rows.shape[1], dtype=dtype)
    for k in range(1, rows.shape[0]):
        better = rows[k] > best
        labels[better] = k
        np.maximum(best, rows[k], out=best)
    return labels


def log_sum_exp(log_prob):
    """Per-row ``log Σ_k exp(log_prob)``; rows whose entries are all -inf give -inf.

    Not ``scipy.special.logsumexp``: since SciPy 1.15 it rounds the last bits
    differently (it separates out the largest term), so every fitted model
    would depend on the SciPy version; this one gives the same bits on all.
    """
    peak = np.max(log_prob, axis=1)
    peak[~np.isfinite(peak)] = 0.0
    return np.log(np.sum(np.exp(log_prob - peak[:, np.newaxis]), axis=1)) + peak


def log_normalize(log_prob):
    """Per-sample ``log Σ_k exp(log_prob)`` and the log-responsibilities."""
    log_prob_norm = log_sum_exp(log_prob)
    return log_prob_norm, log_prob - log_prob_norm[:, np.newaxis]


def unit_weights(mixture: Mixture) -> Mixture:
    """``mixture`` with every weight 1: :func:`weighted_log_prob` gives ``log p(x | k)``."""
    return replace(mixture, weights=np.ones_like(mixture.weights))


def weighted_log_prob(X, mixture: Mixture):
    """``log p(x | k) + log w_k`` for each sample and component.

    float32 samples under full or tied covariances (what prediction and the
    spatial prior's log-potentials compute on every pixel) go through one
    compiled pass, :func:`_full_log_prob32`; the rest through
    :func:`log_gaussian_prob`.
    """
    if X.dtype == np.float32 and X.ndim == 2 and mixture.covariance_type in ("full", "tied"):
        return _compiled_log_prob(X, mixture)
    log_prob = log_gaussian_prob(
        X, mixture.means, mixture.precisions_cholesky, mixture.covariance_type
    )
    log_prob += np.log(mixture.weights).astype(log_prob.dtype)
    return log_prob


def _compiled_log_prob(X, mixture: Mixture, offset=None, scale=None):
    """:func:`weighted_log_prob` of float32 ``X`` under full or tied covariances;
    with ``offset`` and ``scale``, of ``(X - offset) / scale`` (see
    :func:`standardized_log_prob`)."""
    n_components, n_features = mixture.means.shape
    factors, shifts, log_det = COVARIANCE_TYPES[mixture.covariance_type].operands(
        mixture.means.astype(np.float32, copy=False),
        mixture.precisions_cholesky.astype(np.float32, copy=False), n_components,
    )
    if offset is None:
        offset, inverse = np.zeros(n_features, np.float32), np.ones(n_features, np.float32)
    else:
        offset, inverse = float32_standardisation(offset, scale)
    out = np.empty((n_components, len(X)), dtype=np.float32)
    _full_log_prob32(
        X.T, offset, inverse, np.ascontiguousarray(factors), shifts,
        float(n_features * np.log(2 * np.pi)), log_det,
        np.log(mixture.weights).astype(np.float32), out,
    )
    return out.T


def float32_standardisation(offset, scale):
    """``(offset, 1 / scale)`` as float32: what standardises 8- and 16-bit pixels,
    ``(float32(x) - offset) * (1 / scale)`` in float32, here and in
    ``_kernel.standardize`` alike (the two must give the same bits)."""
    offset = np.asarray(offset, dtype=np.float64)
    return offset.astype(np.float32), (1.0 / np.asarray(scale, dtype=np.float64)).astype(np.float32)


def standardized_log_prob(values, mixture: Mixture, offset, scale):
    """:func:`weighted_log_prob` of ``(values - offset) / scale``, float32 ``(n, K)``.

    ``values`` are 8- or 16-bit integers ``(n, n_features)`` (exact in
    float32) and ``mixture`` is in the standardised units. Under full or
    tied covariances the compiled pass standardises each block as it copies
    it, in the operations of ``_kernel.standardize`` (a float32 difference
    times the float32 reciprocal of ``scale``): the same bits, without the
    strided pass over the pixels that cost as much as the log-densities
    (0.08 s of a 2048² RGB image's 0.6 s spatial prediction). Other
    covariance types return ``None``: the caller standardises.
    """
    if mixture.covariance_type not in ("full", "tied"):
        return None
    return _compiled_log_prob(values, mixture, offset, scale)


#: Pixels :func:`_full_log_prob32` works on at a time.
_LOG_PROB_BLOCK = 512


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _full_log_prob32(columns, offset, inverse, factors, shifts, constant, log_det, log_weights,
                     out):  # pragma: no cover
    """``log w_k + log N(x_i | k)`` into ``out[k, i]`` in one pass, float32.

    ``columns`` is ``(d, n)`` (the transpose of the samples), of any real
    dtype: ``x = (float32(columns) - offset) * inverse`` (0 and 1 leave
    float32 samples as they are). The operations
    of :func:`log_gaussian_prob` and :func:`weighted_log_prob` in their
    order and precision (``y = L_k^T x - L_k^T mu_k`` and the squares
    summed in float32, ``-0.5 (d log 2 pi + .) + log det`` in float64,
    ``+ log w`` in float32), so one channel gives the same bits; with
    several, BLAS may sum ``L_k^T x`` in another order (a float32 step).
    NumPy made about eight passes over ``(K, n)`` arrays for this.
    """
    n_components, n_features = shifts.shape
    n_samples = columns.shape[1]
    y = np.empty(_LOG_PROB_BLOCK, dtype=np.float32)
    distance = np.empty(_LOG_PROB_BLOCK, dtype=np.float32)
    block = np.empty((n_features, _LOG_PROB_BLOCK), dtype=np.float32)
    for first in range(0, n_samples, _LOG_PROB_BLOCK):
        size = min(_LOG_PROB_BLOCK, n_samples - first)
        # the block's channels contiguous once: the loops below read them K d times
        for f in range(n_features):
            for t in range(size):
                block[f, t] = (np.float32(columns[f, first + t]) - offset[f]) * inverse[f]
        for k in range(n_components):
            for t in range(size):
                distance[t] = np.float32(0.0)
            for e in range(n_features):
                weight = factors[k, 0, e]
                for t in range(size):
                    y[t] = weight * block[0, t]
                for f in range(1, n_features):
                    weight = factors[k, f, e]
                    for t in range(size):
                        y[t] += weight * block[f, t]
                shift = shifts[k, e]
                for t in range(size):
                    value = y[t] - shift
                    distance[t] += value * value
            # in float64, as NumPy promotes it (the constant is a float64 scalar)
            scaled = np.float64(log_det[k])
            log_weight = log_weights[k]
            for t in range(size):
                value = (constant + np.float64(distance[t])) * -0.5 + scaled
                out[k, first + t] = np.float32(value) + log_weight


#: A component whose share of the total weight falls to this or below is
#: empty: its mean would be a ratio of rounding errors.
EMPTY_WEIGHT = 1e-10


def reseed_empty_components(X, weighted_resp, mass=None):
    """Re-seed every emptied component where the others explain the data worst.

    An E-step can leave a component with (numerically) no weight, for
    example when the data hold fewer clusters than components or a start
    placed it far from every sample; its mean and covariance would then be
    ``0 / eps`` noise. Like k-means relocating an empty cluster, each empty
    component is seeded at the sample farthest (in the fit's standardised
    units) from every remaining mean and takes over the samples closer to
    that seed than to any other mean, so it starts with a real spread rather
    than collapsing onto one value; the user is warned which one.
    Returns ``weighted_resp`` itself when no component is empty. ``mass``,
    when given, is ``weighted_resp.sum(axis=0)``.
    """
    if mass is None:
        mass = column_sums(weighted_resp)
    empty = np.flatnonzero(mass <= EMPTY_WEIGHT * mass.sum())
    if empty.size == 0 or empty.size == mass.size:
        return weighted_resp  # (before the row sums: they cost more than the M-step)
    row_mass = weighted_resp.sum(axis=1)
    candidates = np.flatnonzero(row_mass > 0)
    if candidates.size <= empty.size:
        return weighted_resp
    kept = np.setdiff1d(np.arange(mass.size), empty)
    means = weighted_resp[:, kept].T @ X / mass[kept, np.newaxis]
    values = X[candidates]
    distance = np.full(candidates.size, np.inf)
    for mean in means:  # one component at a time: memory stays O(samples)
        np.minimum(distance, np.sum((values - mean) ** 2, axis=1), out=distance)
    weighted_resp = weighted_resp.copy()
    for component in empty:
        seed = values[np.argmax(distance)]
        to_seed = np.sum((values - seed) ** 2, axis=1)
        taken = to_seed < distance
        taken[np.argmax(distance)] = True
        rows = candidates[taken]
        weighted_resp[rows] = 0.0
        weighted_resp[rows, component] = row_mass[rows]
        np.minimum(distance, to_seed, out=distance)
    # (how many, not which: EM's order is not yet the labels' darkest-first one)
    lost = (
        f"1 of the {mass.size} components lost all its pixels during EM and was "
        "re-seeded at the pixel value" if len(empty) == 1 else
        f"{len(empty)} of the {mass.size} components lost all their pixels during EM "
        "and were re-seeded at the pixel values"
    )
    warnings.warn(
        f"{lost} farthest from the other components. If this keeps happening the data "
        "hold fewer clusters than components: use fewer components or "
        "n_components='auto'.",
        UserWarning,
        stacklevel=_training.caller_stacklevel(),
    )
    return weighted_resp


def regularised_fit(X, weighted_resp, reg_covar, covariance_type, total_weight=None,
                    said=None):
    """M-step that survives a collapsing covariance.

    A component that sits on one value (common in images: saturated or
    zero-padded regions) has a singular covariance; instead of failing, the
    ridge is raised tenfold until the covariance is positive definite, and
    the user is told which component and what to change. A component that
    lost all its weight is re-seeded first (see :func:`reseed_empty_components`).
    The weights are ``nk / total_weight`` (by default, the summed weight of
    the rows). ``said``, a set an EM loop passes to every M-step, keeps the
    warnings given: each is given once per loop, not once per iteration.
    """
    mass = column_sums(weighted_resp)  # summed once: it costs as much as the means
    reseeded = reseed_empty_components(X, weighted_resp, mass)
    if reseeded is not weighted_resp:
        weighted_resp, mass = reseeded, column_sums(reseeded)
    if total_weight is None:
        total_weight = float(mass.sum())
    regularisation = reg_covar
    while True:
        nk, means, covariances = estimate_parameters(
            X, weighted_resp, regularisation, covariance_type, mass
        )
        try:
            chol = precision_cholesky(covariances, covariance_type)
        except CollapsedCovariance as collapsed:
            if regularisation >= 1.0:
                raise ValueError(
                    "Fitting the mixture failed: the covariance of component "
                    f"{collapsed.args[0]} stays singular even with reg_covar=1. "
                    "Use fewer components or a simpler covariance_type."
                ) from None
            new = max(regularisation * 10.0, 1e-12)
            message = (
                f"The covariance of a component collapsed (reg_covar={regularisation:g} "
                f"was not enough); it was regularised with {new:g} instead. This "
                "happens when a component covers only one or a few distinct "
                "values; consider fewer components or a larger reg_covar."
            )
            if said is None or message not in said:
                warnings.warn(message, UserWarning, stacklevel=_training.caller_stacklevel())
                if said is not None:
                    said.add(message)
            regularisation = new
            continue
        return Mixture(nk / total_weight, means, covariances, chol, covariance_type)


@dataclass(frozen=True)
class FitResult:
    mixture: Mixture
    lower_bound: float
    n_iter: int
    converged: bool
    lower_bounds: tuple


#: With ``polish``, EM goes on past ``tol`` to ``tol * POLISH_TOL``, and to
#: ``tol * POLISH_TOL_SMALL`` on one-channel tables of at most
#: :data:`POLISH_ROWS` rows (see :func:`run_em`).
POLISH_TOL = 0.1
POLISH_ROWS = 70_000
POLISH_TOL_SMALL = 1e-3


def run_em(
    X, sample_weight, initial: Mixture, *, max_iter, tol, reg_covar, log_prior=None,
    mixing_rows=None, polish=False, fixed_weights=False,
) -> FitResult:
    """EM from given initial parameters, with scikit-learn's stopping rule.

    The lower bound is the weighted mean log-likelihood per sample; EM has
    converged when it changes by less than ``tol`` between iterations. With
    ``polish`` (where this mixture is the final model) it goes on, within
    ``max_iter``, until the change is below ``tol * POLISH_TOL``, or
    ``tol * POLISH_TOL_SMALL`` on a small one-channel table (the histogram of
    a grey integer image, where an iteration costs microseconds). Stopping
    at ``tol`` can leave a slow climb unfinished: 0.011 nats per pixel below
    scikit-learn's fit on scikit-image's ``moon``, 0.053 on ``chelsea`` with
    five components.

    ``log_prior``, an ``(m, K)`` array, is added to every E-step's
    ``log w_k + log p(x | k)`` of the last ``m`` rows (guidance: a very
    negative entry fixes a row's responsibilities).
    With ``mixing_rows`` (a slice), the mixing weights are estimated from
    those rows alone, while every row shapes the means and covariances; the
    other rows' likelihood then leaves the weights out (``log p(x | k)``
    plus their ``log_prior``), so the M-step maximises the bound EM reports
    and it never falls (with the weights in, scribbled rows of a class the
    free rows make rare pulled it down as the weights moved away from them).
    With ``fixed_weights`` the mixing weights stay ``initial``'s: prior maps
    in ``log_prior`` are the class probabilities, and weights re-estimated
    from responsibilities that hold them would count them again at every
    step (constant maps of 0.5/0.3/0.2 drove one class to the whole image).
    """
    if not polish:
        polish_tol = tol
    elif X.shape[1] == 1 and X.shape[0] <= POLISH_ROWS:
        polish_tol = tol * POLISH_TOL_SMALL
    else:
        polish_tol = tol * POLISH_TOL
    total_weight = float(sample_weight.sum())
    if mixing_rows is not None:
        unweighted = np.ones(len(X), dtype=bool)
        unweighted[mixing_rows] = False
    mixture = initial
    lower_bound = -np.inf
    lower_bounds = []
    converged = False
    n_iter = 0
    said = set()  # the M-steps' warnings, each said once
    for n_iter in range(1, max_iter + 1):
        previous = lower_bound
        log_prob = weighted_log_prob(X, mixture)
        if mixing_rows is not None:
            log_prob[unweighted] = weighted_log_prob(X[unweighted], unit_weights(mixture))
        if log_prior is not None and len(log_prior):
            log_prob[len(log_prob) - len(log_prior):] += log_prior
        log_prob_norm, log_resp = log_normalize(log_prob)
        weighted_resp = np.exp(log_resp) * sample_weight[:, np.newaxis]
        mixture = regularised_fit(
            X, weighted_resp, reg_covar, initial.covariance_type, total_weight, said
        )
        if fixed_weights:
            mixture = replace(mixture, weights=initial.weights)
        elif mixing_rows is not None:
            mass = column_sums(weighted_resp[mixing_rows])
            mixture = replace(mixture, weights=mass / mass.sum())
        lower_bound = float(sample_weight @ log_prob_norm / total_weight)
        lower_bounds.append(lower_bound)
        report("EM", n_iter, max_iter)
        change = abs(lower_bound - previous)
        converged = converged or change < tol
        if change < polish_tol:
            break
    return FitResult(mixture, lower_bound, n_iter, converged, tuple(lower_bounds))


def initial_responsibilities(X, sample_weight, n_components, init_params, random_state):
    """Responsibilities to start EM from, one method per ``init_params``.

    ``random_state`` is a ``numpy.random.RandomState``, as scikit-learn uses.
    """
    from sklearn.cluster import KMeans, kmeans_plusplus

    n_samples = X.shape[0]
    resp = np.zeros((n_samples, n_components))
    if init_params == "kmeans":
        labels = (
            KMeans(n_clusters=n_components, n_init=1, random_state=random_state)
            .fit(X, sample_weight=sample_weight)
            .labels_
        )
        resp[np.arange(n_samples), labels] = 1
    elif init_params == "random":
        resp = random_state.uniform(size=(n_samples, n_components))
        resp /= resp.sum(axis=1)[:, np.newaxis]
    elif init_params == "random_from_data":
        probability = sample_weight / sample_weight.sum()
        indices = random_state.choice(n_samples, size=n_components, replace=False, p=probability)
        resp[indices, np.arange(n_components)] = 1
    elif init_params == "k-means++":
        _, indices = kmeans_plusplus(
            X, n_components, sample_weight=sample_weight, random_state=random_state
        )
        resp[indices, np.arange(n_components)] = 1
    elif init_params == "quantile":
        resp[np.arange(n_samples), quantile_labels(X, sample_weight, n_components)] = 1
    elif init_params == "otsu":
        resp[np.arange(n_samples), otsu_labels(X, sample_weight, n_components)] = 1
    else:  # pragma: no cover - guarded by parameter validation
        raise ValueError(f"Unknown init_params={init_params!r}")
    return resp


def _principal_projection(X, sample_weight):
    """The samples along their first principal axis (the values for one channel)."""
    if X.shape[1] == 1:
        return X[:, 0]
    mean = sample_weight @ X / sample_weight.sum()
    centred = X - mean
    covariance = (centred.T * sample_weight) @ centred
    _, vectors = np.linalg.eigh(covariance)
    axis = vectors[:, -1]
    axis = axis if axis.sum() >= 0 else -axis  # brighter is further along
    return centred @ axis


def otsu_labels(X, sample_weight, n_components, n_bins=256):
    """Multi-Otsu classes of the intensity histogram, found exactly.

    Multi-Otsu thresholds minimise the within-class variance of a histogram,
    which is k-means in one dimension; dynamic programming solves that
    exactly in O(K * n_bins**2) (Wang & Song, R Journal 2011). Written here
    because ``skimage.filters.threshold_multiotsu`` searches all threshold
    combinations, which is exponential in K. Unlike equal-size quantiles it
    finds small classes (a few bright cells on a large background).
    """
    projection = _principal_projection(X, sample_weight)
    if not _more_distinct_than(projection, n_bins):
        bin_of_sample = np.searchsorted(np.unique(projection), projection)
    else:
        edges = np.linspace(projection.min(), projection.max(), n_bins + 1)
        bin_of_sample = np.empty(projection.size, dtype=np.intp)
        _bin_of(projection, edges, bin_of_sample)
    mass = np.bincount(bin_of_sample, weights=sample_weight, minlength=n_bins)
    first_moment = np.bincount(bin_of_sample, weights=sample_weight * projection, minlength=n_bins)
    used = np.flatnonzero(mass > 0)
    if used.size < n_components:
        return quantile_labels(X, sample_weight, n_components)
    mass, first_moment = mass[used], first_moment[used]
    means = first_moment / mass
    second_moment = mass * means**2  # spread inside a bin is a constant: ignore it
    cum_w = np.concatenate([[0.0], np.cumsum(mass)])
    cum_x = np.concatenate([[0.0], np.cumsum(first_moment)])
    cum_x2 = np.concatenate([[0.0], np.cumsum(second_moment)])
    n = used.size
    start = np.arange(n)[:, np.newaxis]  # class covers bins start..end
    end = np.arange(n)[np.newaxis, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = cum_w[end + 1] - cum_w[start]
        x = cum_x[end + 1] - cum_x[start]
        cost = cum_x2[end + 1] - cum_x2[start] - x**2 / w
    cost[start > end] = np.inf
    best = cost[0].copy()  # best[j]: bins 0..j in one class
    choices = []
    for _ in range(1, n_components):
        total = best[start - 1] + cost  # last class starts at `start`
        total[0] = np.inf
        choice = np.argmin(total, axis=0)
        best = total[choice, np.arange(n)]
        choices.append(choice)
    # walk back from the last bin to find where each class starts
    class_of_bin = np.empty(n, dtype=int)
    last = n - 1
    for k in range(n_components - 1, 0, -1):
        first = choices[k - 1][last]
        class_of_bin[first : last + 1] = k
        last = first - 1
    class_of_bin[: last + 1] = 0
    lookup = np.zeros(n_bins, dtype=int)
    lookup[used] = class_of_bin
    return lookup[bin_of_sample]


@numba.njit(cache=True)
def _more_distinct_than(values, limit):  # pragma: no cover - compiled
    """Whether ``values`` hold more than ``limit`` distinct values; stops as soon
    as they do (after about ``limit`` values for noisy data, where a sort of
    all of them took 2 ms for a 256² image)."""
    seen = {values[0]}
    for value in values:
        seen.add(value)
        if len(seen) > limit:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _bin_of(values, edges, out):  # pragma: no cover - compiled
    """``clip(searchsorted(edges, values, 'right') - 1, 0, len(edges) - 2)`` for
    evenly spaced ``edges``: the bin computed from the spacing, then moved
    until it agrees with the edges themselves (the same bins, without a
    binary search per value)."""
    n_bins = edges.size - 1
    low, width = edges[0], (edges[-1] - edges[0]) / n_bins
    for i in range(values.size):
        value = values[i]
        count = int(min(max((value - low) / width, 0.0), n_bins)) if width > 0 else 0
        while count < edges.size and edges[count] <= value:
            count += 1  # count: how many edges are <= value
        while count > 0 and edges[count - 1] > value:
            count -= 1
        out[i] = min(max(count - 1, 0), n_bins - 1)


def quantile_labels(X, sample_weight, n_components):
    """Split the samples into ``n_components`` groups of equal weight.

    Along the first principal axis (the intensity itself for one channel):
    cheap, deterministic, and a good start for intensity mixtures. Groups are
    cut between distinct values, so ties never straddle two groups and every
    group gets at least one distinct value.
    """
    projection = _principal_projection(X, sample_weight)
    distinct, inverse = np.unique(projection, return_inverse=True)
    inverse = inverse.reshape(-1)
    mass = np.bincount(inverse, weights=sample_weight, minlength=distinct.size)
    cumulative = np.cumsum(mass) / mass.sum()
    # group g takes the distinct values whose cumulative mass centre lies in
    # [g/K, (g+1)/K); then every group is forced to be non-empty
    centres = cumulative - mass / (2 * mass.sum())
    group_of_value = np.minimum((centres * n_components).astype(int), n_components - 1)
    n_distinct = distinct.size
    lowest = np.arange(n_distinct)
    group_of_value = np.maximum(group_of_value, lowest - (n_distinct - n_components))
    group_of_value = np.minimum(group_of_value, lowest)
    group_of_value = np.maximum.accumulate(group_of_value)
    return group_of_value[inverse]


def initial_mixture(X, sample_weight, resp, reg_covar, covariance_type) -> Mixture:
    weighted_resp = resp * sample_weight[:, np.newaxis]
    return regularised_fit(
        X, weighted_resp, reg_covar, covariance_type, float(sample_weight.sum())
    )


def fit_mixture(
    X,
    sample_weight,
    n_components,
    *,
    covariance_type,
    init_params,
    n_init,
    max_iter,
    tol,
    reg_covar,
    random_state,
    input_scale=None,
    polish=False,
) -> FitResult:
    """Fit ``n_init`` times and keep the fit with the largest lower bound.

    ``n_init='auto'`` screens several starts instead (see :func:`screened_fit`)
    for several channels, and runs a deterministic start once for one channel.
    ``input_scale`` (the standardisation's scales) lets one screened start be
    k-means in the input's own units. ``polish`` is :func:`run_em`'s.
    """
    if n_init == "auto" and not screens_starts(n_init, X.shape[1], init_params):
        n_init = 1
    if n_init == "auto":
        best = screened_fit(
            X, sample_weight, n_components, covariance_type=covariance_type,
            init_params=init_params, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
            random_state=random_state, input_scale=input_scale, polish=polish,
        )
        _warn_if_not_converged(best, max_iter)
        return best
    best = None
    for _ in range(n_init):
        resp = initial_responsibilities(X, sample_weight, n_components, init_params, random_state)
        initial = initial_mixture(X, sample_weight, resp, reg_covar, covariance_type)
        result = run_em(
            X, sample_weight, initial, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
            polish=polish,
        )
        if best is None or result.lower_bound > best.lower_bound:
            best = result
        if init_params in ("quantile", "otsu"):
            break  # deterministic: further initialisations would repeat it
    _warn_if_not_converged(best, max_iter)
    return best


def fit_from(X, sample_weight, initial: Mixture, *, log_prior, max_iter, tol,
             reg_covar, mixing_rows=None, fixed_weights=False) -> FitResult:
    """EM from ``initial`` under a per-row ``log_prior`` (see :func:`run_em`),
    warning when it does not converge."""
    result = run_em(
        X, sample_weight, initial, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
        log_prior=log_prior, mixing_rows=mixing_rows, fixed_weights=fixed_weights,
    )
    _warn_if_not_converged(result, max_iter)
    return result


def screens_starts(n_init, n_features: int, init_params: str) -> bool:
    """Whether ``n_init`` makes :func:`fit_mixture` screen several starts: with
    ``'auto'``, except for a deterministic start on one channel."""
    deterministic = n_features == 1 and init_params in ("otsu", "quantile")
    return n_init == "auto" and not deterministic


def _warn_if_not_converged(result: FitResult, max_iter: int) -> None:
    if not result.converged:
        warnings.warn(
            f"EM did not converge in max_iter={max_iter} iterations (last change of "
            "the mean log-likelihood above tol). Increase max_iter, raise tol, or "
            "try another init_params.",
            ConvergenceWarning,
            stacklevel=_training.caller_stacklevel(),
        )


#: Starts that ``n_init='auto'`` screens besides the one ``init_params`` names.
SCREENED_STARTS = ("otsu", "kmeans", "k-means++", "k-means++", "random_from_data")

#: Rows the starts are screened on, EM iterations each gets there, and how
#: many of the best go on to EM on all the training rows.
SCREEN_ROWS = 20_000
SCREEN_ITER = 20
FINALISTS = 2

#: A component is a spike when more than this share of its weight sits on one
#: distinct value (a clipped or saturated level).
SPIKE_SHARE = 0.5


#: The screened start that runs k-means in the input's units, as
#: ``sklearn.mixture.GaussianMixture`` on the raw pixels starts.
INPUT_UNITS_KMEANS = "kmeans in input units"


def screened_fit(
    X, sample_weight, n_components, *, covariance_type, init_params, max_iter, tol,
    reg_covar, random_state, input_scale=None, polish=False,
) -> FitResult:
    """EM from the best of several starts, screened cheaply on a subsample.

    EM finds a local optimum, and which one depends on the start: on
    photographs the k-means start of scikit-learn and our multi-Otsu start
    each lose to the other on some image. Each start of
    :data:`SCREENED_STARTS` (and ``init_params`` itself) gets
    :data:`SCREEN_ITER` EM iterations on :data:`SCREEN_ROWS` of the rows;
    the :data:`FINALISTS` best by likelihood then run EM on every row, and
    the best of those is kept. With ``input_scale``, k-means in the input's
    units (scikit-learn's own start on the raw pixels, which weighs a
    channel of wide spread more) is screened too. A start may not win by squeezing more
    components onto single values (see :func:`spike_count`) than the
    ``init_params`` start does: such a fit has a large likelihood because a
    density spike sits on a clipped or saturated level, not because it
    describes the image better.
    """
    screen_X, screen_w = _screening_rows(X, sample_weight, random_state)
    rows = distinct_rows(screen_X)  # the same for every start
    starts = (init_params,) + tuple(s for s in SCREENED_STARTS if s != init_params)
    if input_scale is not None:
        starts += (INPUT_UNITS_KMEANS,)
    screened = []
    for index, start in enumerate(starts):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # re-seeding and ridges are reported by the final EM
            try:
                if start == INPUT_UNITS_KMEANS:
                    resp = initial_responsibilities(
                        screen_X * input_scale, screen_w, n_components, "kmeans", random_state
                    )
                else:
                    resp = initial_responsibilities(
                        screen_X, screen_w, n_components, start, random_state
                    )
                initial = initial_mixture(screen_X, screen_w, resp, reg_covar, covariance_type)
                result = run_em(
                    screen_X, screen_w, initial, max_iter=min(SCREEN_ITER, max_iter), tol=tol,
                    reg_covar=reg_covar, polish=False,
                )
            except ValueError:  # e.g. fewer distinct rows than components for this start
                continue
        spikes = spike_count(screen_X, screen_w, result.mixture, rows)
        screened.append((index, spikes, result))
    allowed = screened[0][1] if screened and screened[0][0] == 0 else 0
    ranked = sorted(
        (item for item in screened if item[1] <= allowed or item[0] == 0),
        key=lambda item: (-item[2].lower_bound, item[0]),
    )
    best = None
    for index, _, screened_result in ranked[:FINALISTS]:
        if len(X) <= SCREEN_ROWS and screened_result.converged and not polish:
            result = screened_result  # the screening saw every row already
        else:
            result = run_em(
                X, sample_weight, screened_result.mixture, max_iter=max_iter, tol=tol,
                reg_covar=reg_covar, polish=polish,
            )
        if best is None or result.lower_bound > best.lower_bound:
            best = result
    if best is None:  # every start failed: the default start says why
        resp = initial_responsibilities(X, sample_weight, n_components, init_params, random_state)
        initial = initial_mixture(X, sample_weight, resp, reg_covar, covariance_type)
        best = run_em(
            X, sample_weight, initial, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
            polish=polish,
        )
    return best


def _screening_rows(X, sample_weight, random_state):
    """At most :data:`SCREEN_ROWS` rows, drawn without replacement, weights kept."""
    if len(X) <= SCREEN_ROWS:
        return X, sample_weight
    rows = np.sort(random_state.choice(len(X), SCREEN_ROWS, replace=False))
    return X[rows], sample_weight[rows]


def distinct_rows(X) -> np.ndarray:
    """For each row of ``X``, the index of its distinct value (for :func:`spike_count`).

    Rows are sorted by a 64-bit hash of their bits, which is then checked:
    ``np.unique(X, axis=0)`` compares whole rows in its sort, 7-10 times
    slower on 65 536 RGB rows, and is only the fallback when two different
    rows share a hash.
    """
    X = np.ascontiguousarray(X, dtype=np.float64) + 0.0  # -0.0 and 0.0 alike
    bits = X.view(np.uint64)
    key = _mix64(bits[:, 0])
    for column in range(1, X.shape[1]):
        key = _mix64(key ^ bits[:, column])
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if np.array_equal(X[first[inverse]], X):
        return inverse
    _, inverse = np.unique(X, axis=0, return_inverse=True)
    return inverse.reshape(-1)


def _mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit moves about half of the output bits."""
    values = values ^ (values >> np.uint64(30))
    values *= np.uint64(0xBF58476D1CE4E5B9)
    values ^= values >> np.uint64(27)
    values *= np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def spike_count(X, sample_weight, mixture: Mixture, rows=None) -> int:
    """Components with more than :data:`SPIKE_SHARE` of their weight on one distinct row.

    ``rows`` is :func:`distinct_rows` of ``X``, when it is already known.
    """
    inverse = distinct_rows(X) if rows is None else rows
    _, log_resp = log_normalize(weighted_log_prob(X, mixture))
    resp = np.exp(log_resp) * sample_weight[:, np.newaxis]
    count = 0
    for k in range(mixture.n_components):
        per_value = np.bincount(inverse, weights=resp[:, k])
        total = per_value.sum()
        if total > 0 and per_value.max() > SPIKE_SHARE * total:
            count += 1
    return count
