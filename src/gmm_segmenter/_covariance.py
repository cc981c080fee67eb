"""Covariance types: everything that differs between them, in one table.

scikit-learn dispatches its covariance types through dicts of functions
(``_estimate_gaussian_covariances_{full,tied,diag,spherical}``); here each
type is one class, and :data:`COVARIANCE_TYPES` maps its name to it. The
estimator's parameter validation, the command line's ``--covariance-type``
choices and the napari widget's menu all read that table, so a new type is
one new entry here.

Layouts are scikit-learn's: for ``K`` components and ``d`` channels,
``full`` covariances are ``(K, d, d)``, ``tied`` one ``(d, d)`` matrix,
``diag`` ``(K, d)`` variances and ``spherical`` ``(K,)`` variances.
"""

from __future__ import annotations

__all__ = ["COVARIANCE_TYPES", "CovarianceType", "CollapsedCovariance"]


class _NumPyOnFirstUse:
    """``numpy``, imported when this module first uses it.

    ``gmm-segment --help`` lists the names in :data:`COVARIANCE_TYPES` and
    must not wait for numpy; the first attribute looked up replaces this
    placeholder with the module itself, so later calls go straight to numpy.
    """

    def __getattr__(self, name):
        import numpy

        globals()["np"] = numpy
        return getattr(numpy, name)


np = _NumPyOnFirstUse()


class CollapsedCovariance(ValueError):
    """A covariance is not positive definite even after regularisation.

    ``args[0]`` is the index of the first such component (0 for ``tied``).
    """


class CovarianceType:
    """What one covariance structure needs: shapes, M-step, Cholesky, densities."""

    name: str
    description: str

    def shape(self, n_components: int, n_features: int) -> tuple:
        raise NotImplementedError

    def n_parameters(self, n_components: int, n_features: int) -> float:
        """Free parameters of the covariances (as ``GaussianMixture._n_parameters``)."""
        raise NotImplementedError

    def estimate(self, X, weighted_resp, nk, means, reg_covar) -> np.ndarray:
        """M-step covariances from weighted responsibilities."""
        raise NotImplementedError

    def precision_cholesky(self, covariances) -> np.ndarray:
        """Cholesky factors of the precisions; raises :class:`CollapsedCovariance`."""
        raise NotImplementedError

    def precisions(self, precisions_cholesky) -> np.ndarray:
        return precisions_cholesky**2

    def unit_factor(self, scale):
        """What covariances are multiplied by when the data are multiplied by ``scale``."""
        return scale**2

    def reorder(self, covariances, order):
        return covariances[order]

    def factor(self, covariances, component, n_features) -> np.ndarray:
        """A matrix ``A`` with ``A @ A.T`` the covariance of ``component``."""
        raise NotImplementedError

    def variances(self, covariances, n_components) -> np.ndarray:
        """The per-channel variances of each component, broadcastable to ``(K, d)``."""
        raise NotImplementedError

    def log_prob(self, columns, means, chol, n_components) -> tuple:
        """``(squared Mahalanobis distances (K, n), log-determinants)``.

        ``columns`` is the ``(d, n)`` transpose of the samples.
        """
        raise NotImplementedError

    def __repr__(self):
        return f"<covariance type {self.name!r}>"


# Values in one temporary of the log-density computation (16 MB of float64)
_GROUP_VALUES = 1 << 21


class _Full(CovarianceType):
    name = "full"
    description = "any ellipsoid per component"
    shared = False

    def shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) / 2.0

    def estimate(self, X, weighted_resp, nk, means, reg_covar):
        n_features = X.shape[1]
        covariances = np.empty((len(nk), n_features, n_features))
        # Feature-major copies: NumPy subtracts and multiplies along a few
        # long rows several times faster than along the short feature axis,
        # and (d, n) @ (n, d) of contiguous rows is a plain matrix product
        # (on 65 536 RGB pixels and 3 components, 2 ms against 5 ms).
        columns = np.ascontiguousarray(X.T)
        weights = np.ascontiguousarray(weighted_resp.T)
        for k in range(len(nk)):
            diff = columns - means[k][:, np.newaxis]
            covariances[k] = (diff * weights[k]) @ diff.T / nk[k]
            covariances[k].flat[:: n_features + 1] += reg_covar
        return covariances

    def _stacked(self, array):
        return array[np.newaxis] if self.shared else array

    def precision_cholesky(self, covariances):
        stacked = self._stacked(covariances)
        n_features = stacked.shape[-1]
        out = np.empty_like(stacked)
        # SciPy is imported here, not at the top: `gmm-segment --help` lists
        # this module's names and must not wait for it.
        from scipy import linalg

        for k, covariance in enumerate(stacked):
            try:
                cov_chol = linalg.cholesky(covariance, lower=True)
            except linalg.LinAlgError:
                raise CollapsedCovariance(k) from None
            out[k] = linalg.solve_triangular(cov_chol, np.eye(n_features), lower=True).T
        return out[0] if self.shared else out

    def precisions(self, precisions_cholesky):
        return np.einsum("kij,klj->kil", precisions_cholesky, precisions_cholesky)

    def unit_factor(self, scale):
        return np.outer(scale, scale)

    def factor(self, covariances, component, n_features):
        return np.linalg.cholesky(covariances[component])

    def variances(self, covariances, n_components):
        diagonal = np.diagonal(self._stacked(covariances), axis1=-2, axis2=-1)
        return np.broadcast_to(diagonal, (n_components, diagonal.shape[-1]))

    def operands(self, means, chol, n_components):
        """``(L_k, L_k^T mu_k, log det L_k)`` per component, in the dtype of
        ``means`` and ``chol``: what :meth:`log_prob` (and the compiled pass
        of ``_mixture.weighted_log_prob``) compute the densities from."""
        n_features = means.shape[1]
        factors = np.broadcast_to(self._stacked(chol), (n_components, n_features, n_features))
        log_det = np.sum(np.log(np.diagonal(factors, axis1=1, axis2=2)), axis=1)
        return factors, np.einsum("kd,kde->ke", means, factors), log_det

    def log_prob(self, columns, means, chol, n_components):
        dtype = columns.dtype
        n_features, n_samples = columns.shape
        factors, shifts, log_det = self.operands(means, chol, n_components)
        # y_k = L_k^T (x - mu_k) for a group of components in one product:
        # one (group * d, n) array, squared in place, summed over d
        group = max(1, _GROUP_VALUES // max(1, n_features * n_samples))
        distances = np.empty((n_components, n_samples), dtype=dtype)
        for first in range(0, n_components, group):
            ks = slice(first, min(first + group, n_components))
            size = ks.stop - ks.start
            y = factors[ks].transpose(0, 2, 1).reshape(size * n_features, n_features) @ columns
            y -= shifts[ks].reshape(-1, 1)
            y *= y
            np.sum(y.reshape(size, n_features, -1), axis=1, out=distances[ks])
        return distances, log_det


class _Tied(_Full):
    """One full covariance shared by every component: the full type's arithmetic."""

    name = "tied"
    description = "one covariance shared"
    shared = True

    def shape(self, n_components, n_features):
        return (n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) / 2.0

    def estimate(self, X, weighted_resp, nk, means, reg_covar):
        n_features = X.shape[1]
        total_weight = weighted_resp.sum(axis=1)
        avg_X2 = (X.T * total_weight) @ X
        avg_means2 = (nk * means.T) @ means
        covariances = (avg_X2 - avg_means2) / nk.sum()
        covariances.flat[:: n_features + 1] += reg_covar
        return covariances

    def precisions(self, precisions_cholesky):
        return precisions_cholesky @ precisions_cholesky.T

    def reorder(self, covariances, order):
        return covariances

    def factor(self, covariances, component, n_features):
        return np.linalg.cholesky(covariances)


class _Diag(CovarianceType):
    name = "diag"
    description = "axis-aligned per component"

    def shape(self, n_components, n_features):
        return (n_components, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features

    def estimate(self, X, weighted_resp, nk, means, reg_covar):
        avg_X2 = weighted_resp.T @ (X * X) / nk[:, np.newaxis]
        return avg_X2 - means**2 + reg_covar

    def precision_cholesky(self, covariances):
        bad = ~(np.isfinite(covariances) & (covariances > 0.0))
        if bad.any():
            raise CollapsedCovariance(int(np.argwhere(bad)[0][0]))
        return 1.0 / np.sqrt(covariances)

    def factor(self, covariances, component, n_features):
        return np.diag(np.sqrt(covariances[component]))

    def variances(self, covariances, n_components):
        return covariances

    def log_prob(self, columns, means, chol, n_components):
        log_det = np.sum(np.log(chol), axis=1)
        precisions = chol**2
        distances = (
            np.sum(means**2 * precisions, axis=1)[:, np.newaxis]
            - 2.0 * ((means * precisions) @ columns)
            + precisions @ (columns**2)
        )
        return distances, log_det


class _Spherical(_Diag):
    name = "spherical"
    description = "one variance per component"

    def shape(self, n_components, n_features):
        return (n_components,)

    def n_parameters(self, n_components, n_features):
        return n_components

    def estimate(self, X, weighted_resp, nk, means, reg_covar):
        return super().estimate(X, weighted_resp, nk, means, reg_covar).mean(axis=1)

    def unit_factor(self, scale):
        # a spherical covariance stays spherical only for a common scale
        return scale[0] ** 2

    def factor(self, covariances, component, n_features):
        return np.sqrt(covariances[component]) * np.eye(n_features)

    def variances(self, covariances, n_components):
        return covariances[:, np.newaxis]

    def log_prob(self, columns, means, chol, n_components):
        n_features = columns.shape[0]
        log_det = n_features * np.log(chol)
        precisions = chol**2
        squared_norms = np.sum(columns**2, axis=0)
        distances = (
            (np.sum(means**2, axis=1) * precisions)[:, np.newaxis]
            - 2 * ((means * precisions[:, np.newaxis]) @ columns)
            + precisions[:, np.newaxis] * squared_norms
        )
        return distances, log_det


#: Every covariance type by name, in the order menus list them.
COVARIANCE_TYPES: dict[str, CovarianceType] = {
    kind.name: kind for kind in (_Full(), _Tied(), _Diag(), _Spherical())
}
