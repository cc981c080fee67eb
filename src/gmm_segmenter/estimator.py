"""The GMMSegmenter estimator and the ``segment`` one-liner."""

from __future__ import annotations

import functools
import hashlib
import math
import re
import warnings
from dataclasses import replace
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin, TransformerMixin, _fit_context, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import (
    _bias, _guidance, _hmrf, _image, _kernel, _mixture, _mrf, _selection, _source, _training,
    _wording,
)
from ._covariance import COVARIANCE_TYPES
from ._model import FittedModel

__all__ = ["GMMSegmenter", "segment"]

# Integer single-channel training data is fitted on its exact histogram when
# it has at most this many distinct values (or max_samples, if larger).
_HISTOGRAM_MIN_BINS = 1 << 16


def _single_threaded_blas(method):
    """Run ``method`` with one BLAS thread (see :func:`._kernel.one_blas_thread`)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _kernel.one_blas_thread():
            return method(*args, **kwargs)

    return wrapper


def _all_or_nothing(fit):
    """Leave the estimator as it was when ``fit`` fails or is cancelled.

    A half-finished fit would otherwise mix new and old fitted attributes.
    """

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        before = dict(vars(self))
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            raise

    return wrapper


#: Names other libraries give what a parameter here is called: scikit-learn's
#: clusterers (``n_clusters``), scikit-image and FSL FAST (``n_classes``,
#: ``smoothing``), seeds. difflib's spelling distance cannot find these.
_OTHER_NAMES = {
    "n_clusters": ("n_components",), "n_classes": ("n_components",),
    "classes": ("n_components",), "k": ("n_components",), "smoothing": ("beta",),
    "smoothness": ("beta",), "seed": ("random_state",), "random_seed": ("random_state",),
    "bias": ("bias_field",), "bias_correction": ("bias_field",),
    "max_iterations": ("max_iter",), "labels": ("y", "scribbles"),
    "scribbles": ("y",), "y": ("scribbles",),
}

#: Parameters of ``sklearn.mixture.GaussianMixture`` (and scikit-learn's
#: ``n_jobs``) that have no counterpart here, and what does their work instead.
_NOT_TAKEN = {
    "warm_start": (
        "every fit starts afresh from init_params. To fit several images together, "
        "pass them to one fit as a list; to label new images with a fitted model's "
        "classes, call its predict"
    ),
    **dict.fromkeys(("means_init", "weights_init", "precisions_init"), (
        "a start from given parameters is not offered. To say what the classes are, "
        "scribble a few pixels of each, fit(X, y=scribbles), or give per-class "
        "probability maps, fit(X, prior=maps)"
    )),
    **dict.fromkeys(("verbose", "verbose_interval"), (
        "to follow a fit, run it inside gmm_segmenter.progress(callback), as in "
        "with progress(lambda stage, done, total: print(stage, done, total)): "
        "model.fit(X)"
    )),
    "n_jobs": (
        "the spatial prior's passes already share the idle cores between threads "
        "(as many as the load average leaves idle); to use fewer cores, limit the "
        "process's CPU affinity (taskset, os.sched_setaffinity)"
    ),
}

#: What belongs to an image, and so is given to ``fit`` with it: how to say so.
_GIVEN_WITH_THE_IMAGE = {
    "mask": ("a mask belongs to an image, so it is", "mask=mask"),
    "prior": ("prior maps belong to an image, so they are", "prior=maps"),
    "y": ("scribbles belong to an image, so they are", "y=scribbles"),
    "scribbles": ("scribbles belong to an image, so they are", "y=scribbles"),
    "labels": ("scribbled labels belong to an image, so they are", "y=scribbles"),
}


class _InOrder(frozenset):
    """A set of options that lists them in the order given.

    scikit-learn's parameter errors list a ``StrOptions`` set in its
    iteration order, which for strings changes from one process to the next
    (hash randomisation): ``{'diag', 'tied', 'full', 'spherical'}`` one run,
    another order the next.
    """

    def __new__(cls, options):
        self = super().__new__(cls, options)
        self._order = tuple(dict.fromkeys(options))
        return self

    def __iter__(self):
        return iter(self._order)


def _closest(name, takes):
    """The parameter among ``takes`` that ``name`` most likely meant, or ``None``."""
    import difflib

    meant = next((other for other in _OTHER_NAMES.get(name.lower(), ()) if other in takes), None)
    if meant is not None:
        return meant
    # (difflib's default cutoff, 0.6, offered n_components for "nonsense")
    close = difflib.get_close_matches(name, takes, n=1, cutoff=0.65) or (
        difflib.get_close_matches(name.lower(), takes, n=1, cutoff=0.65)
    )
    return close[0] if close else None


#: A value longer than this (an array's repr) is shown as ``...`` in advice.
_SHOWN_VALUE_CHARS = 40

#: Parameters :meth:`GMMSegmenter.predict` and its kin read from the estimator
#: (docs/architecture.md); the others act through the fitted model, at the next fit.
_READ_AT_PREDICTION = ("channel_axis", "connectivity", "spacing", "bias_field")


def _shown(value) -> str:
    """``value`` as advice writes it: its repr, or ``...`` for an array's."""
    text = repr(value)
    return "..." if isinstance(value, np.ndarray) or len(text) > _SHOWN_VALUE_CHARS else text


def _unexpected(called, unknown, value, takes, it="It", also=""):
    """The error for keyword ``unknown=value`` in ``called``, which takes ``takes``."""
    close = _closest(unknown, takes)
    hint = f"; did you mean {close}={_shown(value)}?" if close else "."
    return TypeError(
        f"{called} got an unexpected keyword argument {unknown!r}{hint} {it} takes "
        f"{', '.join(takes)}{also}."
    )


class _KeywordsNamedAtConstruction(type):
    """``GMMSegmenter(n_clusters=3)`` names the parameter meant, and where a
    method's keyword given to the constructor (``mask``) belongs.

    Python's own error only calls the keyword unexpected. (A metaclass, as
    scikit-learn's estimators take no ``**kwargs`` in ``__init__`` that could
    catch it; ``clone``, ``get_params`` and pickling do not go through it.)
    """

    @property
    def __signature__(cls):
        # inspect.signature(GMMSegmenter), for help(), IDEs and scikit-learn's
        # checks: the parameters of __init__, not this __call__'s *args, **kwargs
        import inspect

        signature = inspect.signature(cls.__init__)
        return signature.replace(parameters=list(signature.parameters.values())[1:])

    def __call__(cls, *args, **kwargs):
        takes = cls._get_param_names()
        unknown = next((name for name in kwargs if name not in takes), None)
        if unknown is None:
            return super().__call__(*args, **kwargs)
        value = kwargs[unknown]
        called = f"{cls.__name__}()"
        if unknown in _GIVEN_WITH_THE_IMAGE:
            what, keyword = _GIVEN_WITH_THE_IMAGE[unknown]
            made = _shown(args[0] if args else kwargs.get("n_components", 3))
            raise TypeError(
                f"{called} got an unexpected keyword argument {unknown!r}: {what} "
                f"given with the image, as in {cls.__name__}({made}).fit(X, "
                f"{keyword}) (or fit_predict(X, {keyword}))."
            )
        if unknown in _NOT_TAKEN:
            raise TypeError(
                f"{called} got an unexpected keyword argument {unknown!r}: it takes no "
                f"{unknown}; {_NOT_TAKEN[unknown]}."
            )
        raise _unexpected(called, unknown, value, takes)


def _keywords_named(method):
    """Refuse a keyword ``method`` does not take with a message that helps.

    The usual slip is a constructor parameter given to a method, as
    ``fit(image, channel_axis=-1)``: Python's own error says only that the
    keyword is unexpected, not where it belongs. A misspelt keyword gets the
    closest one the method takes.
    """
    import inspect

    takes = [name for name in inspect.signature(method).parameters if name != "self"]

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        unknown = next((name for name in kwargs if name not in takes), None)
        if unknown is None:
            return method(self, *args, **kwargs)
        called = f"{type(self).__name__}.{method.__name__}()"
        value = kwargs[unknown]
        if unknown in self._get_param_names():
            name = method.__name__
            if name.startswith("fit") or name == "estimate_bias_field":
                then = f"; then call {name}(X)"
            elif unknown in _READ_AT_PREDICTION:
                then = f"; then call {name}(X) (it reads {unknown} from the estimator)"
            else:
                then = f"; then fit again: {name}() uses what fit() learned, not {unknown}"
            value = _shown(value)
            made = "" if unknown == "n_components" else f"{_shown(self.n_components)}, "
            raise TypeError(
                f"{called} got an unexpected keyword argument {unknown!r}: {unknown} is "
                f"a parameter of the estimator, not of a call; set it when the estimator "
                f"is made, as in {type(self).__name__}({made}{unknown}={value}), "
                f"or with .set_params({unknown}={value}){then}. {name}() "
                f"takes {', '.join(takes)}."
            )
        raise _unexpected(called, unknown, value, takes, it=f"{method.__name__}()")

    return wrapper


#: Numeric parameters for which a bool is a slip (``beta=True`` for "smooth"),
#: with what they take instead.
_NOT_BOOLS = {
    "n_components": "an int of at least 1 or 'auto'",
    "beta": "a float in [0, 1e6], 'auto' or 'pseudo-likelihood' (beta='auto' to "
            "smooth by a strength chosen from the image, beta=0 not to smooth)",
    "n_init": "an int of at least 1 or 'auto'",
    "max_iter": "an int of at least 1",
    "max_samples": "an int of at least 1, or None for every pixel",
    "connectivity": "an int from 1 to the number of spatial axes",
    "max_iter_spatial": "an int of at least 1",
}


class GMMSegmenter(DensityMixin, TransformerMixin, BaseEstimator,
                   metaclass=_KeywordsNamedAtConstruction):
    """Segment images with a Gaussian mixture model of their pixel values.

    Each pixel is assigned to the mixture component that most probably
    generated its intensity (or colour). Labels run ``1..K``, ordered by
    component mean intensity, darkest first; ``0`` marks pixels that are
    masked out or not finite.

    Integer single-channel images are fitted on their exact histogram and
    predicted through a lookup table; all other images are fitted on a seeded
    random subsample of ``max_samples`` pixels and predicted chunk by chunk in
    float32, so memory stays a small multiple of the output.

    Parameters
    ----------
    n_components : int or 'auto', default=3
        Number of mixture components (segments). ``'auto'`` fits 1, 2, 3, ...
        components (within ``n_components_range``) and stops at the elbow of
        the BIC curve: the first number whose drop in BIC is less than 15 % of
        the largest drop between neighbouring numbers so far is not kept, and
        the number before it is chosen. On a true mixture of K classes that is
        the BIC minimum, K; on photographs, where BIC keeps falling as long as
        components are added, it is where extra components stop paying off.
        The candidates are compared on a seeded subsample of 20 000 pixels
        (from the multi-Otsu start when ``init_params='auto'``); the chosen
        number is then fitted exactly as that fixed ``n_components`` would be.
        See ``docs/tutorials/choosing-k.md``.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Covariance structure, as in :class:`sklearn.mixture.GaussianMixture`.
    channel_axis : int or None, default=None
        Axis of the image that holds channels (colour); ``None`` means the
        image is grayscale. Same convention as scikit-image.
    init_params : {'auto', 'otsu', 'quantile', 'kmeans', 'k-means++', 'random', \
'random_from_data'}, default='auto'
        How to start EM. ``'otsu'`` starts from the multi-Otsu classes of the
        intensity histogram (256 bins), found exactly by dynamic programming:
        deterministic, cheap, and it finds small bright or dark classes.
        ``'quantile'`` splits the pixels into groups of equal size along the
        intensity: cheaper still, deterministic, but blind to small classes.
        Both work along the first principal axis for several channels.
        ``'auto'`` uses ``'otsu'`` for single-channel images and ``'kmeans'``
        otherwise. The other methods are scikit-learn's.
    n_init : int or 'auto', default='auto'
        Number of initialisations; the best fit is kept. ``'otsu'`` and
        ``'quantile'`` are deterministic and run once. ``'auto'``, for
        several channels, screens six starts (``init_params``, k-means by
        default, then multi-Otsu, k-means++ twice, ``'random_from_data'``
        and k-means in the input's units, scikit-learn's start on raw
        pixels; k-means as a seventh when ``init_params`` is another method)
        with 20 EM iterations each on a 20 000-pixel subsample, runs EM to
        the end from the two best, and keeps the better; a start may not win
        by putting more components on a single value (a clipped or saturated
        level) than the ``init_params`` start does. For one channel, and with
        a ``bias_field``, it runs ``init_params`` once. An int runs ``init_params`` that
        many times, as scikit-learn does. A fit with scribbles or prior maps
        starts once, from them (see :meth:`fit`).
    max_iter : int, default=100
        Maximum number of EM iterations.
    tol : float, default=1e-3
        EM has converged when the mean log-likelihood per pixel changes by
        less. With ``beta=0`` (the mixture is the model) EM goes on to
        ``tol / 10``, or ``tol / 1000`` on the histogram of a grey integer
        image, within ``max_iter``; see docs/how-it-works.md.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance. Pixel values are
        standardised (zero mean, unit variance per channel) for the fit, so
        this is relative to the image's intensity spread, whatever its units.
    max_samples : int or None, default=100_000
        Pixels drawn (seeded, without replacement) to fit non-histogram data.
        Larger values cost fit time linearly and change the fitted parameters
        by ever smaller amounts; ``None`` fits on every pixel.
    n_components_range : tuple of two int, default=(1, 8)
        Smallest and largest number of components ``n_components='auto'``
        may choose. The BIC curve is fitted from one component all the same
        (the numbers below the range set the scale of its elbow), so
        narrowing the range only removes choices.
    beta : float >= 0, 'auto' or 'pseudo-likelihood', default='auto'
        Strength of the spatial prior: a Potts model (hidden Markov random
        field) under which neighbouring pixels tend to share a label. The
        mixture is first fitted pixel-wise, then its means and covariances
        are re-estimated with the spatial posteriors (HMRF-EM, as in FSL
        FAST), and :meth:`predict` / :meth:`predict_proba` return mean-field
        posteriors that include the prior. ``0`` gives the pixel-wise
        mixture exactly. ``'auto'`` fits at the prior's critical strength
        (Bethe approximation: 0.92 for three classes in 2-D, 0.56 in 3-D),
        scores it and 2/3 and 4/3 of it by their free energy (the mean-field
        bound less the prior's log normalising constant) at that fit, and
        refits at the winner; with fewer than 256 valid pixels it warns and
        uses 0.5. Guided by
        scribbles with two or more strokes of some class, ``'auto'`` instead
        holds out every other stroke and uses the weakest of 1, 4/3, ... 8/3
        times the critical strength that labels them as painted (see
        ``docs/guided.md``). ``'pseudo-likelihood'`` re-estimates ``beta``
        by Besag's maximum pseudo-likelihood, which runs high on real
        images. The strength used is ``beta_``. See ``docs/spatial.md``.
    connectivity : int, default=1
        Which pixels are neighbours, as
        :func:`scipy.ndimage.generate_binary_structure` counts them: ``1``
        shares a face, ``2`` also an edge, up to the number of spatial
        dimensions (corners). The neighbourhood's total vote is the same
        for every connectivity. May be changed after fitting (with
        ``set_params``) to apply a model to an image of another dimension.
    spacing : sequence of float or None, default=None
        Voxel size along each spatial axis (as napari layers carry it);
        ``None`` is isotropic. A neighbour's vote is proportional to one over
        its physical distance, so thick slices of a stack count less. May be
        changed after fitting, like ``connectivity``.
    max_iter_spatial : int, default=20
        Maximum number of HMRF-EM iterations; they stop earlier when the
        mean-field bound per pixel changes by less than ``tol``. Stopping at
        the maximum warns (``ConvergenceWarning``). With ``bias_field``, the
        HMRF-EM run that refits the field at every iteration may take three
        times as many (the field moves the data, and the two settle together
        more slowly).
    bias_field : None, 'auto' or int in [1, 10], default=None
        Correct a smooth multiplicative bias field (uneven illumination,
        vignetting, coil sensitivity) while fitting, as FSL FAST does.
        ``None`` fits the intensities as they are. Otherwise each image's
        field is a polynomial of total degree ``bias_field`` in the physical
        coordinates (``spacing``), one per channel, fitted in the log domain
        jointly with the mixture; ``'auto'`` is degree 3 (slopes, bowls and
        saddles; a higher degree follows faster changes, and risks
        explaining large structures away). A fitted field's mean log over
        the valid pixels is 0, so intensities keep their units. Prediction
        estimates each new image's field with the mixture held fixed (see
        :meth:`estimate_bias_field`; on the training image's grid it may
        also take the image's overall brightness) and labels the corrected
        image. Only
        positive values enter the field's fit; an image with too few of them
        for the degree, mostly negative values or a field that would vary
        more than tenfold is segmented uncorrected, with a
        :class:`BiasFieldWarning`. See ``docs/bias-field.md``.
    prior_weight : float >= 0, default=1.0
        Weight of the prior probability maps passed to :meth:`fit` as
        ``prior``: ``prior_weight * log(prior)`` is added to each pixel's
        ``log w_k + log p(x | k)``. ``1`` takes the maps as the class
        probabilities before the pixel is seen; smaller values trust them
        less, ``0`` ignores them: the fit is the unguided one, each
        component numbered as the class whose map it overlaps most (with
        scribbles, or with ``n_components='auto'``, the maps start the
        classes instead). A
        hyper-parameter like the others (tunable with ``GridSearchCV``);
        the maps themselves belong to the image and go to :meth:`fit`.
    random_state : int, RandomState instance or None, default=None
        Seeds the pixel subsample and the random initialisations. An int makes
        every result reproducible.

    Attributes
    ----------
    model_ : FittedModel
        Everything prediction needs, frozen: the mixture in input units, the
        standardisation, ``beta_`` and the spatial settings. The attributes
        below that describe the mixture are read-only views of it; it is what
        :func:`save_model` stores and what dask ships to its workers.
    n_components_ : int
        Number of components fitted (chosen by BIC when ``'auto'``).
    weights_ : ndarray of shape (n_components_,)
        Mixing weights, ordered like the labels.
    means_ : ndarray of shape (n_components_, n_features_in_)
        Component means in the units of the input intensities.
    covariances_ : ndarray
        Component covariances in input units, shaped as in
        :class:`~sklearn.mixture.GaussianMixture` for ``covariance_type``.
    precisions_ : ndarray
        Inverses of ``covariances_``.
    precisions_cholesky_ : ndarray
        Cholesky factors of ``precisions_``.
    converged_ : bool
        Whether EM met ``tol`` before ``max_iter``.
    n_iter_ : int
        EM iterations of the best fit.
    lower_bound_ : float
        Mean log-likelihood per pixel of the training data at the last E-step
        (input units, as ``GaussianMixture.lower_bound_``).
    lower_bounds_ : list of float
        ``lower_bound_`` after every iteration of the best fit.
    n_features_in_ : int
        Number of channels (1 for grayscale).
    fit_method_ : {'histogram', 'subsample'}
        How the training data were summarised.
    n_pixels_fit_ : int
        Number of valid pixels in the training images.
    intensity_offset_, intensity_scale_ : ndarray of shape (n_features_in_,)
        The standardisation used internally: values are fitted as
        ``(x - intensity_offset_) / intensity_scale_``.
    n_components_candidates_, bic_curve_ : ndarray
        With ``n_components='auto'``: the numbers of components fitted (from
        one, up to the first that did not pay off) and the BIC of each on the
        subsample they were compared on: 20 000 pixels drawn from the
        images, or the whole histogram of integer grayscale images. Its
        values are on that sample's scale, not that of ``bic(X)`` over every
        pixel.
    beta_ : float
        Strength of the spatial prior used: ``beta``, or the one chosen
        when ``beta`` is ``'auto'`` or ``'pseudo-likelihood'``. ``0`` means
        pixel-wise predictions.
    spatial_n_iter_ : int
        HMRF-EM iterations run (0 with ``beta=0``); with ``beta='auto'``,
        those at the critical strength and at the strength kept.
    spatial_converged_ : bool
        Whether HMRF-EM met ``tol`` before ``max_iter_spatial`` (at the
        strength kept).
    spatial_lower_bounds_ : list of float
        Mean-field bound per pixel after every HMRF-EM iteration counted in
        ``spatial_n_iter_`` (input units; the prior's normalising constant
        left out, so bounds at two strengths do not compare).
    bias_field_ : ndarray, dask array or list of them
        With ``bias_field`` set: the multiplicative field fitted on each
        training image, float32, shaped like the image (channels on
        ``channel_axis``; none for a grayscale image), 1 where nothing is
        corrected; ``X / bias_field_`` is the corrected image. Lazy for a
        dask image; a list for a batch. Absent with ``bias_field=None``.

    See Also
    --------
    sklearn.mixture.GaussianMixture : the pixel-wise model on tabular data.
    skimage.filters.threshold_multiotsu : histogram thresholds for grayscale images.

    Notes
    -----
    With the spatial prior (``beta_ > 0``) the mixing weights ``weights_``
    come from the pixel-wise fit and act as the prior's external field;
    ``means_`` and ``covariances_`` are re-estimated under the prior.
    ``converged_``, ``n_iter_`` and ``lower_bound_`` describe the pixel-wise
    EM; :meth:`score`, :meth:`score_samples` and :meth:`bic` use the
    mixture likelihood without the prior. Each image of a batch is
    regularised on its own grid.

    Fitted with scribbles or prior maps (see :meth:`fit` and
    ``docs/guided.md``), component ``k`` is class ``k + 1`` of the guidance
    rather than the ``k``-th darkest; with the spatial prior, or with prior
    maps (which are the class probabilities), ``weights_`` are equal, the
    guidance being the per-pixel field; ``lower_bound_`` weighs the scribbled pixels as the
    fit did (together at least a tenth of the others), by their likelihood
    under their class without its mixing weight, which the unscribbled
    pixels alone estimate.

    With ``bias_field`` set, ``means_`` and ``covariances_`` describe the
    corrected intensities; :meth:`score_samples` is the density of the
    observed values (the corrected value's density divided by the field);
    :meth:`bic` and :meth:`aic` count the mixture's parameters only. With
    ``beta=0`` the pixel-wise EM alternates with the field (``n_iter_``
    counts both); with the spatial prior, HMRF-EM first runs without a field,
    then again refitting the field from its posteriors before every M-step
    (``spatial_n_iter_`` counts both runs). Each image of a batch has its
    own field.

    Examples
    --------
    >>> import numpy as np
    >>> from gmm_segmenter import GMMSegmenter
    >>> rng = np.random.default_rng(0)
    >>> image = np.repeat([20.0, 120.0, 220.0], 100)[np.newaxis].repeat(50, axis=0)
    >>> image += rng.normal(scale=10, size=image.shape)
    >>> segmenter = GMMSegmenter(n_components=3, random_state=0).fit(image)
    >>> labels = segmenter.predict(image)
    >>> labels.shape, labels.dtype
    ((50, 300), dtype('uint8'))
    >>> np.unique(labels[:, :100]), np.unique(labels[:, 200:])
    (array([1], dtype=uint8), array([3], dtype=uint8))
    >>> np.round(segmenter.means_.ravel(), -1)
    array([ 20., 120., 220.])
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "covariance_type": [StrOptions(_InOrder(COVARIANCE_TYPES))],
        "channel_axis": [Integral, None],
        "init_params": [
            StrOptions(_InOrder(
                ("auto", "otsu", "quantile", "kmeans", "k-means++", "random", "random_from_data")
            ))
        ],
        "n_init": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        # in standardised units (unit variance): far above 1 only smooths away the data
        "reg_covar": [Interval(Real, 0.0, 1e10, closed="both")],
        "max_samples": [Interval(Integral, 1, None, closed="left"), None],
        "n_components_range": [tuple, list],
        # beyond 1e6 the prior alone decides every label (and models refuse it)
        "beta": [
            Interval(Real, 0.0, 1e6, closed="both"),
            StrOptions(_InOrder(("auto", "pseudo-likelihood"))),
        ],
        "connectivity": [Interval(Integral, 1, None, closed="left")],
        "spacing": ["array-like", None],
        "max_iter_spatial": [Interval(Integral, 1, None, closed="left")],
        "bias_field": [
            None, StrOptions({"auto"}), Interval(Integral, 1, _bias.MAX_DEGREE, closed="both")
        ],
        "prior_weight": [Interval(Real, 0.0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components=3,
        *,
        covariance_type="full",
        channel_axis=None,
        init_params="auto",
        n_init="auto",
        max_iter=100,
        tol=1e-3,
        reg_covar=1e-6,
        max_samples=100_000,
        n_components_range=(1, 8),
        beta="auto",
        connectivity=1,
        spacing=None,
        max_iter_spatial=20,
        bias_field=None,
        prior_weight=1.0,
        random_state=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.channel_axis = channel_axis
        self.init_params = init_params
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_samples = max_samples
        self.n_components_range = n_components_range
        self.beta = beta
        self.connectivity = connectivity
        self.spacing = spacing
        self.max_iter_spatial = max_iter_spatial
        self.bias_field = bias_field
        self.prior_weight = prior_weight
        self.random_state = random_state

    def _validate_params(self):
        if isinstance(self.bias_field, (bool, np.bool_)):
            # bool is an int to Python: bias_field=True would silently mean degree 1
            # (checked first: scikit-learn's check would refuse False without advice)
            advice = (
                "use bias_field='auto' for the default smoothness, or bias_field=None "
                "for no correction" if self.bias_field else
                "use bias_field=None for no correction"
            )
            raise InvalidParameterError(
                "The 'bias_field' parameter of GMMSegmenter must be None, a str among "
                f"{{'auto'}} or an int in the range [1, {_bias.MAX_DEGREE}]. Got "
                f"{self.bias_field!r} instead; {advice}."
            )
        try:
            super()._validate_params()
        except InvalidParameterError as error:
            raise InvalidParameterError(
                f"{error}{self._closest_option(str(error))}{self._spacing_advice(str(error))}"
            ) from None
        for name, advice in _NOT_BOOLS.items():
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)):
                # Interval(Integral) / Interval(Real) take a bool as 0 or 1
                raise InvalidParameterError(
                    f"The {name!r} parameter of GMMSegmenter must be {advice}. Got "
                    f"{value!r} instead, which would silently count as {int(value)}."
                )

    def _spacing_advice(self, error: str) -> str:
        """How to give ``spacing`` when scikit-learn refused a number or a string."""
        if "The 'spacing' parameter" not in error:
            return ""
        return (
            " Give one voxel size per spatial axis, in the array's order, such as "
            "spacing=(3, 1, 1) for slices 3 times as thick as a pixel is wide."
        )

    def _closest_option(self, error: str) -> str:
        """`` Did you mean covariance_type='full'?`` for the misspelt string option
        ``error`` (scikit-learn's) is about, else ``''``."""
        for name, constraints in self._parameter_constraints.items():
            if f"The {name!r} parameter" not in error:
                continue
            value = getattr(self, name, None)
            options = [option for constraint in constraints if isinstance(constraint, StrOptions)
                       for option in constraint.options]
            if isinstance(value, str) and options and value not in options:
                close = _closest(value, options)
                if close is not None:
                    return f" Did you mean {name}={close!r}?"
        return ""

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    @_all_or_nothing
    @_single_threaded_blas
    def fit(self, X, y=None, *, mask=None, prior=None):
        """Fit the mixture to the pixels of one image or a batch of images.

        Parameters
        ----------
        X : (M[, N[, ...]][, C]) array or list of such arrays
            The image, with channels on ``channel_axis``, or a list of images
            (shapes may differ; channels must agree). Any real dtype.
        y : (M[, N[, ...]]) int array, list of such arrays, or None
            Scribbles: ``0`` where nothing is known, ``k`` (``1..K``) where the
            pixel belongs to class ``k``; a list (one per image, ``None`` for
            an image without) for a batch; a NumPy or dask array. Scribbled
            classes get the scribbles' numbers (label ``k`` is class ``k``);
            classes without a scribble are found freely and take the
            remaining numbers, darkest first. Scribbled pixels are clamped:
            their responsibilities are fixed to their class in every E-step
            (semi-supervised EM) and in the spatial prior's mean field, so
            they shape their class's mean and covariance and their
            neighbours' labels. Unlike scikit-learn's semi-supervised
            estimators, where ``-1`` is unlabelled, ``0`` means unknown here,
            because ``0`` is napari's background (unpainted) label. Floats
            holding whole numbers are accepted as labels; other floats,
            negative labels and labels above ``n_components`` are refused.
            Scribbles on masked-out or non-finite pixels are ignored.
            ``None`` fits unsupervised. See ``docs/guided.md``.
        mask : (M[, N[, ...]]) bool array, list of such arrays, or None
            Pixels to use (``True``); others are ignored. Non-finite pixels
            are always ignored. A numeric mask counts every nonzero value as
            ``True``, as ``np.asarray(mask, bool)`` does (a 0/255 mask image
            keeps its 255 pixels); NaN in it is refused.
        prior : (M[, N[, ...]], K) float array, list of such arrays, or None
            Prior probability maps, as FSL FAST and ANTs Atropos take them
            (an atlas, or a previous segmentation): the probability of each
            of the ``K = n_components`` classes at each pixel, summing to 1.
            ``prior_weight * log(prior)`` is added to every pixel's
            ``log w_k + log p(x | k)``, in EM, in HMRF-EM and in the labels of
            :meth:`fit_predict`; component ``k`` is the prior's class ``k``
            (label ``k + 1``). In-memory images only.

        Returns
        -------
        self : GMMSegmenter
            The fitted estimator.
        """
        self._fit(X, y, mask, prior)
        return self

    def _fit(self, X, y, mask, prior, inputs_checked=False):
        """:meth:`fit`; returns the guidance (or ``None``), for :meth:`fit_predict`.

        ``inputs_checked``: what the input itself warns about (opening it,
        its bit depths and channels) was said already, by the fit this one
        redoes without a bias field.

        With a bias field, the fit may be redone without one (every field
        refused), which would say again what the first said (too few pixels
        to choose the smoothing, say): each warning is then said once.
        """
        if self.bias_field is None or inputs_checked:
            return self._fit_images(X, y, mask, prior, inputs_checked)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            guidance = self._fit_images(X, y, mask, prior)
        seen = set()
        for warning in said:
            key = (warning.category, str(warning.message))
            if key not in seen:
                seen.add(key)
                # through warn at the caller, as the estimator's other warnings:
                # a filter on the caller's module matches its __name__, which
                # warn_explicit would guess from the file name instead
                warnings.warn(warning.message, stacklevel=_training.caller_stacklevel())
        return guidance

    def _fit_images(self, X, y, mask, prior, inputs_checked=False):
        """:meth:`_fit` itself."""
        images = self._open(X, mask, quiet=inputs_checked)
        if not inputs_checked:
            _training.warn_if_mixed_depths([view.dtype for view in images.views])
            if len(images.views) > 1:  # (one image with no pixel to fit is refused below)
                _warn_if_masked_out(images, "fit")
        # (for advice on the channels, written as code on X)
        first = X[0] if _image.is_batch(X) else X
        channels_last = self.channel_axis in (-1, np.ndim(first) - 1)
        hoods = self._neighbourhoods(images.views)
        random_state = check_random_state(self.random_state)
        guidance = _guidance.prepare(
            y, prior, images, self.n_components, self.prior_weight, images.pixels_at
        )
        naming = None
        if guidance is not None and guidance.names_only and self.n_components != "auto":
            # the maps add nothing to the fit: fit as without them, then name
            naming, guidance = guidance, None
        values, weights, method, n_valid = self._training_data(images, random_state)
        if n_valid == 0:
            raise ValueError(
                "Every pixel of X is masked out or not finite, so there is nothing "
                "to fit; pass a mask with some True pixels inside the image's "
                "finite values."
            )
        offset, scale = _training.standardisation(values, weights, self.covariance_type)
        guided = None
        if guidance is not None:
            generator = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
            guided = _guidance.training_rows(
                guidance, images.views, values, weights, method, n_valid, self.max_samples,
                generator,
            )
        in_memory = not any(_image.is_dask_array(view.pixels) for view in images.views)
        sampled = None
        if method == "subsample" and len(values) < n_valid:
            # (and how to count the values of the whole image, when the sample
            # holds too few: in memory only, a dask image would be read for it)
            sampled = (len(values), n_valid, functools.partial(
                _image.count_distinct_pixels, images.views) if in_memory else None)

        def before_em(n_components):
            if self.beta != 0 and in_memory:
                # said before EM, which may take minutes with many components
                _kernel.check_spatial_memory(
                    images.views, n_components, "Fitting with the spatial prior"
                )

        result = self._fit_pixelwise(
            values, weights, offset, scale, random_state, guided, sampled=sampled,
            channels_last=None if inputs_checked else channels_last, before_em=before_em,
        )
        fields = None
        if self.bias_field is not None and self.beta == 0:
            result, fields = self._fit_bias_field(
                images, result, offset, scale, random_state, guidance
            )
        mixture, beta = result.mixture, 0.0
        log_jacobian = np.log(scale).sum()
        spatial = None
        if self.beta != 0:
            shares = mixture.weights  # what HMRF-EM may not empty a component of
            if guidance is not None:
                # Guided, the classes are the user's and the per-pixel guidance
                # is the prior's field: the pixel-wise shares (poorly determined
                # where levels overlap) would pull every ambiguous pixel toward
                # the largest class. Equal weights gained up to 0.16 ARI on the
                # phantoms of benchmarks/guided.py and lost none beyond 0.01.
                n_components = mixture.n_components
                mixture = replace(mixture, weights=np.full(n_components, 1.0 / n_components))
            # dask images: HMRF-EM on tiles spread over them (as on large
            # in-memory images; only the tiles are read), or on an in-memory
            # crop of each when guided (whole images: tiles could miss every stroke)
            spatial = self._fit_spatial(
                images.views if guidance is None else images.spatial_fit_views(), hoods,
                mixture, values, offset, scale, method,
                random_state,
                guidance=None if guidance is None else guidance.restricted(
                    images.spatial_fit_keys()
                ),
                shares=shares,
            )
            if self.bias_field is not None:
                spatial, fields = self._fit_spatial_bias_field(
                    images, spatial, offset, scale, random_state, guidance, shares
                )
            mixture, beta = spatial.mixture, spatial.beta
        self.spatial_n_iter_ = 0 if spatial is None else spatial.n_iter
        self.spatial_converged_ = True if spatial is None else spatial.converged
        self.spatial_lower_bounds_ = (
            [] if spatial is None else [b - log_jacobian for b in spatial.objectives]
        )
        named = None
        if naming is not None:
            # the mixture is of the corrected pixels when a field was fitted
            source = images if fields is None or not fields.any else images.corrected(
                fields.fields, _names(images)
            )
            named = _guidance.order_by_maps(naming, mixture, source.pixels_at, offset, scale)
        mixture = mixture.rescaled(offset, scale)
        if named is not None:
            order = named
        elif guidance is None:
            # HMRF-EM may move the means past each other: sort again, darkest first
            order = np.argsort(mixture.means.mean(axis=1), kind="stable")
        else:
            order = _guidance.label_order(
                mixture.means, guidance.scribbled, fixed=guidance.has_prior
            )
        mixture = mixture.reorder(order)
        self.model_ = FittedModel(
            mixture, offset, scale, beta=beta, connectivity=self.connectivity,
            spacing=None if self.spacing is None else tuple(float(s) for s in self.spacing),
        )
        # fitted as volumes, images that look like colour ones were warned
        # about here; predict does not say it again (as for a model of grey images)
        self._colour_as_volume = self.channel_axis is None and any(
            _image.looks_like_colour(view.spatial_shape) for view in images.views
        )
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.lower_bound_ = result.lower_bound - log_jacobian
        self.lower_bounds_ = [bound - log_jacobian for bound in result.lower_bounds]
        self.fit_method_ = method
        self.n_pixels_fit_ = n_valid
        refused = fields is not None and not fields.any
        if refused and not self._fitted_as_without_field(values.shape[1], guidance):
            # Every field was refused: segment as without one (a fit with a
            # field runs one start and stops EM at tol).
            plain = clone(self).set_params(bias_field=None)
            plain._fit(X, y, mask, prior, inputs_checked=True)
            vars(self).update(
                (name, value) for name, value in vars(plain).items() if name.endswith("_")
            )
        elif spatial is not None and not spatial.converged:  # (the refit above said so itself)
            self._warn_spatial_not_converged(spatial)
        self._set_bias_field(images, fields)
        # scribbled components keep their index and a prior's keep theirs, so
        # the guidance already speaks of the components in label order
        return guidance

    def _fitted_as_without_field(self, n_channels, guidance) -> bool:
        """Whether a fit whose every field was refused is already the fit without one.

        With the spatial prior (the field comes after a first HMRF-EM run
        without it), pixel-wise starts that a field does not change (a
        deterministic start on one channel, or a fixed ``n_init``: the same
        starts either way), and no guidance.
        """
        same_starts = self.n_init != "auto" or not _mixture.screens_starts(
            self.n_init, n_channels, self._init_params(n_channels)
        )
        return self.beta != 0 and same_starts and guidance is None

    def _init_params(self, n_channels: int) -> str:
        """``init_params``, with ``'auto'`` resolved for images of ``n_channels``."""
        if self.init_params != "auto":
            return self.init_params
        return "otsu" if n_channels == 1 else "kmeans"

    def _fit_pixelwise(self, values, weights, offset, scale, random_state, guided=None,
                       sampled=None, channels_last=True, before_em=None):
        """EM for the fixed number of components, or for the one
        :mod:`._selection` chooses when ``n_components='auto'``.

        With ``guided`` (:class:`._guidance.GuidedRows`), ``n_components='auto'``
        chooses at least as many components as the scribbles and prior name,
        and the final fit is guided EM from :func:`._guidance.guided_start`.
        ``sampled`` is ``(rows drawn, valid pixels, counter)`` when ``values`` are a
        sample of fewer rows than the image has valid pixels. ``channels_last``:
        the channel axis is the images' last (for the advice of warnings);
        ``None`` when what the channels warn about was said already.
        ``before_em(n_components)``, when given, is called with a fixed number
        of components once the data are known to hold them, before EM.
        """
        standardized = (values - offset) / scale
        if channels_last is not None:
            _training.warn_if_collinear(
                standardized, weights, self.reg_covar, self.covariance_type
            )
            _training.warn_if_alpha(values, weights, self.channel_axis, channels_last)
        init_params = self._init_params(values.shape[1])
        candidates = _training.candidate_n_components(
            self.n_components, self.n_components_range, standardized, raw=values,
            sampled=sampled,
        )
        if before_em is not None and self.n_components != "auto":
            before_em(candidates[0])

        # With a bias field the screened start that best explains the uncorrected
        # pixels tends to spend a component on the field, a basin the field's
        # alternation does not leave: one start, as the field's fit expects.
        screened = self.n_init if self.bias_field is None or self.n_init != "auto" else 1

        def fit(n_components, X, sample_weight, random_state, init_params=init_params,
                n_init=screened):
            self._check_em_memory(len(X), n_components)
            return _mixture.fit_mixture(
                X,
                sample_weight,
                n_components,
                covariance_type=self.covariance_type,
                init_params=init_params,
                n_init=n_init,
                max_iter=self.max_iter,
                tol=self.tol,
                reg_covar=self.reg_covar,
                random_state=random_state,
                input_scale=scale,
                # EM past tol only where this mixture is the model: run
                # further, it spends a component on an uncorrected field or,
                # as HMRF-EM's start, on noise and partial volume
                polish=self.bias_field is None and self.beta == 0,
            )

        named = guided is not None and guided.n_prior_classes
        if named:
            candidates = [guided.n_prior_classes]  # the prior names every class
        if self.n_components == "auto" and not named:
            X, sample_weight, state = _selection.selection_data(
                standardized, weights, random_state
            )
            start = _selection.selection_init(self.init_params)
            n_init = _selection.selection_n_init(self.n_init)
            log_jacobian = np.log(scale).sum()
            fitted, bics, n_components = _selection.search(
                candidates,
                lambda k: _selection.bic(
                    X, sample_weight,
                    fit(k, X, sample_weight, state, start, n_init).mixture,
                    log_jacobian,
                ),
            )
            self.n_components_candidates_ = np.asarray(fitted)
            self.bic_curve_ = np.asarray(bics)
            top = _training.check_range(self.n_components_range)[1]
            if len(fitted) > 1 and n_components == fitted[-1] == top:
                warnings.warn(
                    f"n_components='auto' chose {n_components}, the top of "
                    f"n_components_range={tuple(self.n_components_range)}: every added "
                    "component still paid off, so the image may hold more classes. Widen "
                    "n_components_range, or pass a number.",
                    UserWarning,
                    stacklevel=_training.caller_stacklevel(),
                )
        else:
            n_components = candidates[0]
            for name in ("n_components_candidates_", "bic_curve_"):
                vars(self).pop(name, None)  # a refit with a fixed K must not keep an earlier curve
        if guided is not None:
            n_components = max(n_components, guided.min_components)
            return self._fit_guided(guided, n_components, offset, scale, init_params,
                                    random_state)
        # the chosen number is fitted as a fixed one would be: same data, same draws
        return fit(n_components, standardized, weights, random_state)

    def _check_em_memory(self, n_rows, n_components, scribbled=0):
        """Refuse, before it starts, EM whose ``(rows, components)`` arrays would not fit;
        ``scribbled``: the number of classes the scribbles (or prior) name."""
        if n_components == scribbled and self.n_components != n_components:
            asked = f"{n_components} components (the scribbles name {scribbled} classes)"
        elif self.n_components != "auto":
            asked = f"n_components={n_components}"
        else:
            asked = (f"{n_components} components (of n_components_range="
                     f"{tuple(self.n_components_range)})")
        _image.check_memory(
            EM_ARRAYS * np.dtype(np.float64).itemsize * n_rows * n_components,
            f"EM with {asked} on {n_rows} pixel values",
            "Use fewer components, a smaller max_samples, or free memory.",
        )

    def _fit_guided(self, guided, n_components, offset, scale, init_params, random_state):
        """Semi-supervised EM: the scribbled rows' responsibilities fixed, prior
        maps added to every E-step."""
        X = (np.vstack([guided.free_values, guided.scribble_values]) - offset) / scale
        self._check_em_memory(len(X), n_components, guided.min_components)
        sample_weight = np.concatenate([guided.free_weights, guided.scribble_weights])
        log_prior = guided.log_prior(n_components, self.prior_weight)
        # prior_weight=0 ignores the maps in EM, but they still name the classes
        start_prior = (
            guided.log_prior(n_components, 1.0)
            if self.prior_weight == 0 and guided.free_prior is not None else log_prior
        )
        initial = _guidance.guided_start(
            X, sample_weight, guided.scribble_classes, start_prior, n_components,
            covariance_type=self.covariance_type, init_params=init_params,
            reg_covar=self.reg_covar, random_state=random_state,
        )
        # prior maps are the class probabilities: equal mixing weights, held
        # (as the spatial prior's field is flat when guided)
        maps = guided.free_prior is not None and self.prior_weight != 0
        if maps:
            initial = replace(initial, weights=np.full(n_components, 1.0 / n_components))
        return _mixture.fit_from(
            X, sample_weight, initial, log_prior=log_prior, max_iter=self.max_iter,
            tol=self.tol, reg_covar=self.reg_covar,
            mixing_rows=slice(0, len(guided.free_values)), fixed_weights=maps,
        )

    # ------------------------------------------------------------ bias field

    def _fit_bias_field(self, images, result, offset, scale, random_state, guidance=None):
        """Pixel-wise EM again with a bias field per image, from the pixel-wise fit.

        Returns the fit's result and the :class:`._bias.Fields`.
        """
        generator = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        return self._joint_fit(images, result, offset, scale, generator, guidance)

    def _joint_fit(self, images, result, offset, scale, generator, guidance=None):
        """Pixel-wise EM of mixture and fields together, from ``result``'s mixture."""
        fields = self._sample_fields(images, generator)
        if not fields.any:
            return result, fields
        log_prior = None
        if guidance is not None:
            n_components = result.mixture.n_components
            log_prior = np.vstack([
                guide.log_prior_at(
                    np.ravel_multi_index(coordinates, guide.spatial_shape), n_components,
                    guidance.prior_weight,
                )
                for guide, coordinates in zip(guidance.images, fields.sample_coordinates())
            ])
        mixture, bounds, converged = fields.fit(
            result.mixture, offset, scale, max_iter=self.max_iter, tol=self.tol,
            reg_covar=self.reg_covar, log_prior=log_prior,
        )
        bounds = list(result.lower_bounds) + bounds
        result = _mixture.FitResult(
            mixture, bounds[-1], result.n_iter + len(bounds) - len(result.lower_bounds),
            converged, tuple(bounds),
        )
        return result, fields

    def _sample_fields(self, images, generator):
        """Each image's sample for its field (see :meth:`._bias.Fields.sample`)."""
        views = images.views
        for view, name in zip(views, _names(images)):
            # the field's coordinates need a voxel size per axis, beta or not
            _mrf.check_neighbourhood(len(view.spatial_shape), 1, self.spacing, name)
        budget = self.max_samples or _bias.SAMPLE_LIMIT
        per_image = max(budget // len(views), _bias.MIN_SAMPLES_PER_IMAGE)
        return _bias.Fields.sample(
            images.field_fit_views(), [view.spatial_shape for view in views], self.spacing,
            _bias.degree_of(self.bias_field), per_image, generator, _names(images),
        )

    def _warn_spatial_not_converged(self, spatial):
        """Warn that HMRF-EM stopped at ``max_iter_spatial``, as EM does at ``max_iter``."""
        why = (
            "one iteration cannot show the mean-field bound per pixel settle within"
            if spatial.last_change is None else
            f"the mean-field bound per pixel last changed by {spatial.last_change:.2g}, "
            "not yet within"
        )
        allowed = f"max_iter_spatial={self.max_iter_spatial} iterations"
        if spatial.max_iter is not None and spatial.max_iter != self.max_iter_spatial:
            allowed = (
                f"{spatial.max_iter} iterations ({FIELD_ITER_FACTOR} x "
                f"max_iter_spatial={self.max_iter_spatial}, with a bias field)"
            )
        warnings.warn(
            f"HMRF-EM did not converge in {allowed} ({why} tol={self.tol:g}). Increase "
            "max_iter_spatial, or raise tol.",
            ConvergenceWarning,
            stacklevel=_training.caller_stacklevel(),
        )

    def _fit_spatial_bias_field(self, images, spatial, offset, scale, random_state,
                                guidance=None, shares=None):
        """HMRF-EM again, from its converged state, now with a field per image.

        Starting once the mixture has settled without a field keeps the field
        from absorbing anatomy while the first posteriors are still poor (a
        noisy image's pixel-wise fit can miss a class that HMRF-EM then
        finds). A first field is estimated with that mixture held fixed; then
        HMRF-EM refits it from the spatial posteriors before every M-step.

        Dask images too large for memory at full resolution are fitted on
        strided copies; HMRF-EM then runs once more, with the fields as they
        are, on the corrected crop at full resolution (a coarse copy's
        partial volumes shift the means).

        A field that leaves a component almost no pixels under the prior,
        where the fit without it kept them, has taken the place of a class
        (a smooth dip across a large region of one tissue makes it look like
        the next darker one): every field is then refused, and the fit goes on
        as without one.

        Returns HMRF-EM's result over both runs and the :class:`._bias.Fields`.
        """
        generator = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        fields = self._sample_fields(images, generator)
        if not fields.any:
            return spatial, fields
        fields.quiet = True
        fields.estimate(spatial.mixture, offset, scale, check=False)
        start = spatial.mixture
        if fields.reasons:
            # A strong field (a ramp of 3 times across camera) moves the
            # classes so far that the mixture fitted without it cannot hold
            # the field in place: it went astray. Mixture and fields are then
            # fitted together pixel-wise, as with beta=0, for the first field.
            joint, fields = self._joint_fit(
                images, _mixture.FitResult(spatial.mixture, 0.0, 0, True, ()), offset, scale,
                generator, guidance,
            )
            start = joint.mixture
        fields.quiet = False
        if not fields.any:  # every field refused: the fit is redone without one
            return spatial, fields
        hoods = [
            _mrf.neighbourhood(len(step), self.connectivity, self._field_spacing(step))
            for step in fields.steps
        ]
        # the strength chosen without the field (a fixed beta stays as given)
        refined = self._fit_spatial(
            fields.views, hoods, start, None, offset, scale, "subsample",
            random_state, fields=fields, beta=spatial.beta,
            guidance=None if guidance is None else guidance.restricted(
                [tuple(slice(None, None, s) for s in step) for step in fields.steps]
            ),
            shares=shares, warn_swallowed=False,
        )
        if any(set(step) != {1} for step in fields.steps):
            # the mixture of a coarse copy, refitted at full resolution
            corrected = images.corrected(fields.fields, _names(images))
            again = self._fit_spatial(
                corrected.views if guidance is None else corrected.spatial_fit_views(),
                self._neighbourhoods(images.views),
                refined.mixture, None, offset, scale, "subsample", random_state,
                beta=spatial.beta,
                guidance=None if guidance is None else guidance.restricted(
                    corrected.spatial_fit_keys()
                ),
                shares=shares, warn_swallowed=False,
            )
            refined = replace(
                again, n_iter=refined.n_iter + again.n_iter,
                objectives=refined.objectives + again.objectives,
            )
        weights = spatial.mixture.weights if shares is None else shares
        emptied = set(_hmrf.swallowed(refined, weights)) - set(_hmrf.swallowed(spatial, weights))
        if emptied:
            fields.refuse(
                f"leaves {'a class' if len(emptied) == 1 else f'{len(emptied)} classes'} "
                "almost no pixels under the spatial prior, where the fit without a field "
                "keeps them: it takes the place of the contrast between two classes"
            )
            return spatial, fields
        # what else is empty was empty without the field, and HMRF-EM said so then
        merged = replace(
            refined, n_iter=spatial.n_iter + refined.n_iter,
            objectives=spatial.objectives + refined.objectives,
        )
        return merged, fields

    def _set_bias_field(self, images, fields):
        """``bias_field_`` (and the fields ``fit_predict`` and ``predict`` on the
        training images reuse), or neither without a field."""
        if fields is None:
            for name in ("bias_field_", "_training_fields", "_training_digest"):
                vars(self).pop(name, None)
            return
        self._training_fields = fields.fields
        self._training_digest = _digest(images)
        self.bias_field_ = images.unbatch(
            [self._field_layout(m) for m in images.field_maps(self._training_fields)]
        )

    def _field_layout(self, field_map):
        """A ``(*spatial_shape, C)`` field laid out as the input: channels on
        ``channel_axis``, none for a grayscale image."""
        if self.channel_axis is None:
            return field_map[..., 0]
        return np.moveaxis(field_map, -1, self.channel_axis)

    def _fields_for(self, images, model):
        """The training images' fields when given them again (the usual fit,
        then predict: those were fitted with the mixture, better than an
        estimate with it held fixed); otherwise each image's estimate."""
        trained_on = vars(self).get("_training_digest")
        degree = _bias.degree_of(self.bias_field)
        if (trained_on is not None and _digest(images) == trained_on
                and all(f is None or f.degree == degree for f in self._training_fields)):
            # (a degree set with set_params after fitting is estimated afresh)
            return self._training_fields
        return self._estimate_fields(images, model)

    def _estimate_fields(self, images, model):
        """Each image's field with the fitted mixture held fixed."""
        random_state = check_random_state(self.random_state)
        generator = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        fields = self._sample_fields(images, generator)
        spatial_posteriors = None if model.beta == 0 else self._spatial_posteriors(model, fields)
        fields.estimate(model.standardized, model.offset, model.scale, spatial_posteriors,
                        starts=self._training_starts(fields))
        return fields.fields

    def _training_starts(self, fields):
        """The coefficients of the field fitted on each training image, for
        the image of a prediction on the same grid (in order when there are as
        many, or the one training image), else ``None``."""
        trained = vars(self).get("_training_fields") or []
        samples = fields.samples
        if len(trained) not in (1, len(samples)):
            return None
        starts = []
        for i, sample in enumerate(samples):
            field = trained[0] if len(trained) == 1 else trained[i]
            same = (
                field is not None and field.geometry == sample.geometry
                and field.degree == sample.degree
                and field.coefficients.shape == (len(sample.design[0]), sample.values.shape[1])
            )
            starts.append(field.coefficients.copy() if same else None)
        return starts

    def _spatial_posteriors(self, model, fields):
        """The spatial prior's posterior maps of the views a field is fitted on
        (strided copies have voxels ``steps`` times larger)."""
        models = [model.with_settings(spacing=self._field_spacing(step)) for step in fields.steps]

        def spatial_posteriors(views):
            return [
                _kernel.predict_image(view, view_model, "posteriors")
                for view, view_model in zip(views, models)
            ]

        return spatial_posteriors

    def _field_spacing(self, steps):
        """The voxel size of an image's copy strided by ``steps``."""
        spacing = (1.0,) * len(steps) if self.spacing is None else self.spacing
        return tuple(float(s) * step for s, step in zip(spacing, steps))

    @_single_threaded_blas
    def estimate_bias_field(self, X, *, mask=None):
        """Estimate the multiplicative bias field of each image, the mixture held fixed.

        This is the field :meth:`predict`, :meth:`predict_proba`,
        :meth:`transform` and :meth:`score_samples` divide ``X`` by (they
        estimate it the same way, with the same seed). Given the training
        images again (same values, mask and layout; for a dask array, the
        same array or one built alike), it is ``bias_field_``,
        the field fitted together with the mixture, and so is what they use.
        Needs ``bias_field`` set (it may be set after fitting, with
        ``set_params``).

        Parameters
        ----------
        X : (M[, N[, ...]][, C]) array or list of such arrays
            Image(s) laid out as in :meth:`fit`; a dask array gives a lazy field.
        mask : bool array, list of such arrays, or None
            Pixels the field is fitted on; it is evaluated everywhere.

        Returns
        -------
        field : array of the shape of ``X`` (without a channel axis for a grayscale image), or a list
            float32, 1 where nothing is corrected; ``X / field`` is the
            corrected image. All ones, with a :class:`BiasFieldWarning`, for an
            image whose field cannot be estimated.

        Examples
        --------
        >>> import numpy as np
        >>> from gmm_segmenter import GMMSegmenter
        >>> rng = np.random.default_rng(0)
        >>> classes = np.where(np.indices((120, 120)).sum(axis=0) % 40 < 20, 100.0, 200.0)
        >>> ramp = np.linspace(0.8, 1.25, 120)[np.newaxis, :]
        >>> image = classes * ramp + rng.normal(scale=5, size=classes.shape)
        >>> segmenter = GMMSegmenter(2, bias_field=1, random_state=0).fit(image)
        >>> field = segmenter.estimate_bias_field(image)
        >>> field.shape, bool(field[:, -1].mean() > 1.3 * field[:, 0].mean())
        ((120, 120), True)
        """
        check_is_fitted(self)
        if self.bias_field is None:
            raise ValueError(
                "estimate_bias_field needs a bias_field setting, but this GMMSegmenter "
                "has bias_field=None; call set_params(bias_field='auto') (or a degree "
                "such as 2) first."
            )
        model = self._prediction_model()
        images = self._open_for_prediction(X, mask, model)
        self._neighbourhoods(images.views, fitted=True)  # the field's coordinates use spacing
        fields = self._fields_for(images, model)
        return images.unbatch([self._field_layout(m) for m in images.field_maps(fields)])

    def _neighbourhoods(self, views, fitted=False):
        """Each image's spatial neighbourhood, checked against its dimensions.

        ``fitted``: for a fitted model's prediction, whose message then says
        that ``set_params`` adapts the model to the image.
        """
        hoods = []
        for i, view in enumerate(views):
            name = "X" if len(views) == 1 else f"X[{i}]"
            ndim = len(view.spatial_shape)
            try:
                _mrf.check_neighbourhood(ndim, self.connectivity, self.spacing, name)
            except ValueError as error:
                if not fitted:
                    raise
                change = (
                    "set_params(connectivity=1)" if not 1 <= self.connectivity <= ndim
                    else f"set_params(spacing=None) (or {ndim} voxel sizes)"
                )
                raise ValueError(
                    f"{error} To label it with this fitted model, call {change} first: "
                    "the fitted mixture stays as it is."
                ) from None
            hoods.append(_mrf.neighbourhood(ndim, self.connectivity, self.spacing))
        return hoods

    def _fit_spatial(
        self, views, hoods, mixture, values, offset, scale, method, random_state, fields=None,
        beta=None, guidance=None, shares=None, warn_swallowed=True,
    ):
        """HMRF-EM from the pixel-wise fit, over the full grid of every image.

        ``shares`` are the pixel-wise fit's weights, when ``mixture``'s are
        not (guided fits start HMRF-EM from equal weights); see
        :func:`._hmrf.hmrf_em`.

        ``values`` are the training data in input units; only a histogram's
        distinct values are used here (a subsample is drawn anew from the grid).
        ``fields`` (a :class:`._bias.Fields` over these very images), when
        given, corrects the images and is refitted from the spatial posteriors
        before every M-step. ``beta`` overrides the estimator's ``beta``.
        ``guidance`` (over these very views) is added to the unary term.
        ``warn_swallowed`` is :func:`._hmrf.hmrf_em`'s.
        """
        if fields is not None:
            views = fields.corrected_views()
        # (a dask image's valid pixels are not known before it is read: its
        # tiles are chosen as if all were, and read alone; its memory is
        # weighed once they, or the whole of a small one, are in memory)
        lazy = any(_image.is_dask_array(view.pixels) for view in views)
        if not lazy:
            _kernel.check_spatial_memory(
                views, mixture.n_components, "Fitting with the spatial prior"
            )
        generator = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        valid_maps = [None if _image.is_dask_array(view.pixels) else _image.valid_map(view)
                      for view in views]
        # Guided fits keep whole images: a tile set could miss every stroke.
        tiles = None if fields is not None or guidance is not None else (
            _hmrf.representative_tiles([view.spatial_shape for view in views], valid_maps)
        )
        if tiles is not None:  # large images: HMRF-EM on tiles spread over them
            views, hoods = _hmrf.tile_views(views, hoods, tiles)
        elif lazy:  # small enough to fit whole
            views = [_image.computed(view) for view in views]
        if lazy:
            _kernel.check_spatial_memory(
                views, mixture.n_components, "Fitting with the spatial prior"
            )
        if tiles is not None or lazy:
            valid_maps = [_image.valid_map(view) for view in views]
        shapes = [view.spatial_shape for view in views]
        probes = _hmrf.sample_positions(
            valid_maps, shapes, _hmrf.PSEUDO_LIKELIHOOD_PIXELS, generator
        )
        if method == "histogram":
            rows = [
                _hmrf.histogram_rows(view, valid, values[:, 0])
                for view, valid in zip(views, valid_maps)
            ]
            table = _hmrf.ResponsibilityTable((values - offset) / scale, rows=rows)
        else:
            n_samples = np.iinfo(np.int64).max if self.max_samples is None else self.max_samples
            positions = _hmrf.sample_positions(valid_maps, shapes, n_samples, generator)
            table = _hmrf.ResponsibilityTable(
                (_hmrf.values_at(views, positions) - offset) / scale, positions=positions
            )
        if guidance is not None and fields is None:
            # the scribbles anchor their classes in every M-step (not with a
            # field, which changes the values they would be compared with)
            table_weight = sum(
                math.prod(shape) if valid is None else int(np.count_nonzero(valid))
                for shape, valid in zip(shapes, valid_maps)
            ) if method == "histogram" else sum(len(p) for p in positions)
            table.fixed = _guidance.anchor_rows(
                guidance, mixture.n_components, table_weight, offset, scale
            )
        grids = [
            _hmrf.Grid(shape, valid, hood, probe)
            for shape, valid, hood, probe in zip(shapes, valid_maps, hoods, probes)
        ]

        # a field changes the corrected values every iteration
        standardized = (
            [None] * len(views) if fields is not None
            else _kernel.standardized_pixels(views, offset, scale)
        )

        def guided_by(guidance):
            """``log_potential(i, mixture)`` of image ``i``, with ``guidance`` added."""
            adjust = [None] * len(views) if guidance is None else guidance.adjusters()

            def log_potential(i, mixture):
                potential = _kernel.log_potential(
                    views[i], mixture, offset, scale, standardized=standardized[i]
                )
                if adjust[i] is not None:
                    adjust[i](potential)
                return potential

            return log_potential

        log_potential = guided_by(guidance)
        beta = self.beta if beta is None else beta
        # HMRF-EM that refits a field at every iteration moves the data it
        # fits, and settles more slowly: it gets more iterations
        max_iter = self.max_iter_spatial * (FIELD_ITER_FACTOR if fields is not None else 1)
        split = None
        if beta == "auto" and guidance is not None and fields is None:
            split = guidance.held_out_split()
        hooks = {}
        if split is not None:
            # guided: the smoothing is chosen by the strokes (see docs/guided.md)
            kept, held_out = split
            chosen = _hmrf.held_out_beta(mixture, grids, guided_by(kept), held_out)
            if chosen is not None:
                beta, hooks["start"] = chosen
        if fields is not None:
            refit = fields.refiner(positions, offset, scale)

            def update_data(resp, mixture):
                table.values = refit(resp, mixture)
                views[:] = fields.corrected_views()

            hooks["update_data"] = update_data
        result = _hmrf.hmrf_em(
            mixture,
            grids,
            log_potential,
            table,
            beta=beta,
            max_iter=max_iter,
            tol=self.tol,
            reg_covar=self.reg_covar,
            shares=shares,
            warn_swallowed=warn_swallowed,
            **hooks,
        )
        return replace(result, max_iter=max_iter)

    def _training_data(self, images, random_state):
        """Weighted pixel values to fit: the exact histogram, or a subsample."""
        if images.n_channels == 1 and all(view.is_integer for view in images.views):
            distinct, counts = images.histogram()
            limit = max(self.max_samples or 0, _HISTOGRAM_MIN_BINS)
            if distinct.size <= limit or self.max_samples is None:
                values = distinct.astype(np.float64)[:, np.newaxis]
                return values, counts.astype(np.float64), "histogram", int(counts.sum())
        n_samples = np.iinfo(np.int64).max if self.max_samples is None else self.max_samples
        generator = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        values, n_valid = images.sample(n_samples, generator)
        return values, np.ones(len(values)), "subsample", n_valid

    # -------------------------------------------------------------- predict

    def predict(self, X, *, mask=None):
        """Label every pixel with its most probable component.

        Parameters
        ----------
        X : (M[, N[, ...]][, C]) array or list of such arrays
            Image(s) laid out as in :meth:`fit`.
        mask : bool array, list of such arrays, or None
            Pixels to label; the others get label 0.

        Returns
        -------
        labels : (M[, N[, ...]]) uint8 array (uint16 above 255 components), or a list
            Labels ``1..n_components_``, darkest component first; ``0`` where
            masked out or not finite.
        """
        return self._predict(X, mask, "labels")

    def predict_proba(self, X, *, mask=None):
        """Posterior probability of each component at each pixel.

        With ``beta_ > 0`` these are the mean-field posteriors of the
        hidden Markov random field: they include the spatial prior.

        Returns
        -------
        posteriors : (M[, N[, ...]], n_components_) float32 array, or a list
            Component axis last, in label order; all zeros where masked out
            or not finite.
        """
        return self._predict(X, mask, "posteriors")

    def transform(self, X, *, mask=None):
        """Posterior maps, component axis last (same as :meth:`predict_proba`).

        Lets the segmenter feed later steps of a pipeline.
        """
        return self.predict_proba(X, mask=mask)

    def set_params(self, **params):
        """Set the estimator's parameters, as in scikit-learn.

        A name it does not take is refused with what does that parameter's
        work here (GaussianMixture's ``warm_start``, ``means_init``, …) or the
        closest one it takes, not only the list of valid names: a grid of
        ``GridSearchCV`` reaches the estimator through here.
        """
        takes = self._get_param_names()
        for name in params:
            if name in takes or "__" in name:
                continue
            if name in _NOT_TAKEN:
                reason = f"it takes no {name}; {_NOT_TAKEN[name]}."
            else:
                close = _closest(name, takes)
                reason = (f"did you mean {close}? It" if close else "it") + (
                    f" takes {', '.join(takes)}.")
            raise ValueError(
                f"Invalid parameter {name!r} for estimator {type(self).__name__}: "
                f"{reason.strip()}"
            )
        return super().set_params(**params)

    def set_output(self, *, transform=None):
        """scikit-learn's output container of :meth:`transform`: NumPy only.

        The posterior maps are shaped like the image with a component axis
        last, which a table cannot hold, so ``transform='default'`` (or
        ``None``, no change) is accepted and ``'pandas'`` or ``'polars'``
        refused. This is what ``Pipeline.set_output`` calls on each step.
        """
        if transform not in (None, "default", "pandas", "polars"):
            raise ValueError(
                f"GMMSegmenter.set_output(transform={transform!r}): unknown output "
                "container; scikit-learn's are 'default' (NumPy arrays), 'pandas' and "
                "'polars', and transform gives posterior maps shaped like the image, which "
                "only 'default' (or None, no change) can hold."
            )
        if transform not in (None, "default"):
            raise ValueError(
                f"GMMSegmenter.set_output(transform={transform!r}): transform gives "
                "posterior maps shaped like the image (components on a last axis), which "
                "a table cannot hold; only transform='default' (NumPy arrays) or None is "
                "possible. To tabulate them, reshape: maps.reshape(-1, n_components_)."
            )
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    @_all_or_nothing
    @_single_threaded_blas
    def fit_predict(self, X, y=None, *, mask=None, prior=None):
        """Fit to ``X`` and return its labels (see :meth:`predict`).

        With ``bias_field`` set, ``X`` is corrected by the field fitted with
        the mixture (``bias_field_``) rather than by a new estimate. With
        scribbles ``y`` or ``prior`` maps (see :meth:`fit`), the labels
        include them as the fit did: scribbled pixels keep their class and,
        with the spatial prior, pass it on to their neighbours; the prior
        maps weigh every pixel. (:meth:`predict` on the same image uses the
        fitted model alone.) For a dask image the scribbled pixels keep
        their class, without passing it on.
        """
        guidance = self._fit(X, y, mask, prior)
        return self._predict(
            X, mask, "labels", fields=vars(self).get("_training_fields"), guidance=guidance,
            fitted_on_it=True,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    @_all_or_nothing
    @_single_threaded_blas
    def fit_transform(self, X, y=None, *, mask=None, prior=None):
        """Fit to ``X`` and return its posterior maps (see :meth:`transform`).

        With ``bias_field`` set, ``X`` is corrected by ``bias_field_``, and
        scribbles ``y`` and ``prior`` maps enter the posteriors, as in
        :meth:`fit_predict` (a scribbled pixel's posterior is 1 for its class).
        """
        guidance = self._fit(X, y, mask, prior)
        return self._predict(
            X, mask, "posteriors", fields=vars(self).get("_training_fields"), fitted_on_it=True,
            guidance=guidance,
        )

    def score_samples(self, X, *, mask=None):
        """Log-likelihood of each pixel under the mixture (NaN where not used).

        Returns
        -------
        log_likelihood : (M[, N[, ...]]) float64 array, or a list
        """
        return self._predict(X, mask, "log_likelihood")

    def score(self, X, y=None, *, mask=None):
        """Mean log-likelihood per valid pixel (higher is better).

        Over all pixels of all images when ``X`` is a batch. It is the
        pixel-wise mixture's, with no term for the spatial prior: a search
        over ``beta`` by ``score`` prefers ``beta=0``, whose fit maximises it.
        """
        total, count = self._log_likelihood_sum(X, mask)
        return total / count

    def _log_likelihood_sum(self, X, mask):
        """The summed log-likelihood of ``X``'s valid pixels and their number (at least 1)."""
        maps = self.score_samples(X, mask=mask)
        maps = maps if isinstance(maps, list) else [maps]
        total = sum(float(np.nansum(m)) for m in maps)
        count = sum(int(np.count_nonzero(~np.isnan(m))) for m in maps)
        if count == 0:
            raise ValueError(
                "Every pixel of X is masked out or not finite; there is nothing to score."
            )
        return total, count

    def _n_parameters(self):
        return _mixture.n_parameters(
            self.n_components_, self.n_features_in_, self.covariance_type
        )

    def bic(self, X, *, mask=None):
        """Bayesian information criterion of the fitted model on ``X`` (lower is better)."""
        total, count = self._log_likelihood_sum(X, mask)
        return -2 * total + self._n_parameters() * np.log(count)

    def aic(self, X, *, mask=None):
        """Akaike information criterion of the fitted model on ``X`` (lower is better)."""
        total, _ = self._log_likelihood_sum(X, mask)  # raises, as score, on no valid pixel
        return -2 * total + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw pixel values from the fitted mixture.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features_in_)
            Pixel values in input units.
        y : ndarray of shape (n_samples,)
            The label (``1..n_components_``) each value was drawn from.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(
                f"n_samples must be a positive integer; got n_samples={n_samples!r}."
            )
        random_state = check_random_state(self.random_state)
        counts = random_state.multinomial(n_samples, self.weights_)
        n_features = self.n_features_in_
        kind = COVARIANCE_TYPES[self.covariance_type]
        chunks = []
        for k, (count, mean) in enumerate(zip(counts, self.means_)):
            factor = kind.factor(self.covariances_, k, n_features)
            noise = random_state.standard_normal((count, n_features))
            chunks.append(mean + noise @ factor.T)
        labels = np.repeat(np.arange(1, self.n_components_ + 1), counts)
        return np.vstack(chunks), labels

    # ------------------------------------------------------------ internals

    def _prediction_model(self) -> FittedModel:
        """The fitted model with the spatial settings this estimator has now.

        ``connectivity`` and ``spacing`` may be changed after fitting, as
        when a model is applied to an image of another voxel size.
        """
        check_is_fitted(self)
        return self.model_.with_settings(connectivity=self.connectivity, spacing=self.spacing)

    def _open_for_prediction(self, X, mask, model, quiet=False):
        """``X`` opened for prediction; ``quiet``: what opening it warns about
        was said already (``fit_predict`` and ``fit_transform`` opened it to fit)."""
        # a NumPy image's channels can be counted before opening it, whose
        # warnings (a channel axis that looks spatial) would only repeat the
        # error; anything else (1-D, sparse, dask, other types) gets the
        # opening's own checks first
        axis = self.channel_axis
        if (
            isinstance(X, np.ndarray) and X.ndim >= 2 and X.size and X.dtype.kind in "biuf"
            and isinstance(axis, Integral) and not isinstance(axis, (bool, np.bool_))
            and -X.ndim <= axis < X.ndim and X.shape[axis] != model.n_features
        ):
            self._refuse_channels(X, X.shape[axis], model)
        grey_model = model.n_features == 1
        if grey_model and vars(self).get("_colour_as_volume"):
            grey_model = None  # the fit warned that these images look like colour
        images = self._open(X, mask, quiet=quiet, grey_model=grey_model)
        if images.n_channels != model.n_features:
            self._refuse_channels(X, images.n_channels, model)
        return images

    def _open(self, X, mask, quiet=False, grey_model=False):
        """``X`` opened; ``quiet``: what opening it warns about was said already;
        ``grey_model``: for a fitted model of grey images (its advice on a
        colour-looking image)."""
        # an anisotropic spacing says how many axes are space (an isotropic one is
        # as None: napari passes every layer's scale)
        sizes = () if self.spacing is None else tuple(np.atleast_1d(self.spacing))
        open_them = functools.partial(
            _source.open_images, X, channel_axis=self.channel_axis, mask=mask,
            grey_model=grey_model, n_sizes=len(sizes) if len(set(sizes)) > 1 else None,
        )
        if not quiet:
            # (no catch_warnings here: leaving one resets the registry that
            # shows a repeated warning once)
            return open_them()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return open_them()

    def _refuse_channels(self, X, n_channels, model):
        """Raise: ``X`` has ``n_channels`` channels, ``model`` other ones."""
        shape = None if _image.is_batch(X) else np.shape(X)
        if model.n_features > 1 and n_channels > 4 and shape is not None and len(shape) == 2:
            # the likely mistake first
            raise ValueError(
                f"X looks like a grey image of shape {shape} whose axis {self.channel_axis} "
                f"is taken for its channels (channel_axis={self.channel_axis}: "
                f"{n_channels} channels), but this GMMSegmenter was fitted on "
                f"{model.n_features}-channel (colour) images; pass images with the same "
                "channels as in fit."
            )
        hint = ""
        if shape is not None and model.n_features > 1:
            here = None if self.channel_axis is None else self.channel_axis % len(shape)
            holding = [axis for axis, size in enumerate(shape)
                       if size == model.n_features and axis != here]
            if len(holding) == 1:
                axis = _image.said_axis(holding[0], len(shape))
                hint = (f" Axis {axis} of X holds {model.n_features}: if those are the "
                        f"channels, call set_params(channel_axis={axis}) first (the fitted "
                        "model stays as it is).")
        raise ValueError(
            f"X has {n_channels} channel(s) along channel_axis="
            f"{self.channel_axis}, but this GMMSegmenter was fitted on images with "
            f"{model.n_features}; pass images with the same channels as in fit.{hint}"
        )

    @_single_threaded_blas
    def _predict(self, X, mask, output, fields=None, guidance=None, fitted_on_it=False):
        """``output`` (see :data:`._kernel.OUTPUTS`) for each image of ``X``.

        With ``bias_field`` set, each image is divided by its field first:
        ``fields`` (one per image), or the field estimated with the mixture fixed.
        ``guidance`` (:class:`._guidance.Guidance` of these images) enters
        labels and posteriors. ``fitted_on_it``: ``X`` is the image just
        fitted, whose warnings the fit gave.
        """
        model = self._prediction_model()
        images = self._open_for_prediction(X, mask, model, quiet=fitted_on_it)
        if not fitted_on_it and output != "log_likelihood":  # (NaN says it; score raises)
            _warn_if_masked_out(images, output)
        # (the training images with their fitted bias fields are not checked)
        if output != "log_likelihood" and fields is None:
            _warn_if_far_from_the_model(images, model)
        if self.bias_field is not None or (output != "log_likelihood" and model.beta > 0):
            # the prior's neighbourhood, and the field's coordinates, use spacing
            self._neighbourhoods(images.views, fitted=True)
        if self.bias_field is None:
            return images.predict(model, output, guidance)
        if fields is None:
            fields = self._fields_for(images, model)
        outputs = images.corrected(fields, _names(images)).predict(model, output, guidance)
        if output != "log_likelihood":
            return outputs
        # the density of the observed values: divided by the field's Jacobian
        outputs = outputs if images.batch else [outputs]
        jacobians = images.field_maps(fields, log=True)
        return images.unbatch([out - jacobian for out, jacobian in zip(outputs, jacobians)])

    # ------------------------------------------- fitted attributes (views of model_)

    n_components_ = property(lambda self: self._fitted().n_components)
    n_features_in_ = property(lambda self: self._fitted().n_features)
    weights_ = property(lambda self: self._fitted().mixture.weights)
    means_ = property(lambda self: self._fitted().mixture.means)
    covariances_ = property(lambda self: self._fitted().mixture.covariances)
    precisions_cholesky_ = property(lambda self: self._fitted().mixture.precisions_cholesky)
    precisions_ = property(lambda self: self._fitted().mixture.precisions())
    intensity_offset_ = property(lambda self: self._fitted().offset)
    intensity_scale_ = property(lambda self: self._fitted().scale)
    beta_ = property(lambda self: self._fitted().beta)

    def _fitted(self) -> FittedModel:
        try:
            return vars(self)["model_"]
        except KeyError:
            raise AttributeError(
                "This GMMSegmenter is not fitted yet; call fit first."
            ) from None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = []
        return tags


for _name in (
    "fit", "fit_predict", "fit_transform", "predict", "predict_proba", "transform",
    "score_samples", "score", "bic", "aic", "estimate_bias_field",
):
    setattr(GMMSegmenter, _name, _keywords_named(getattr(GMMSegmenter, _name)))
del _name


#: HMRF-EM that refits a bias field at every iteration may run this many
#: times ``max_iter_spatial`` iterations: the field moves the data it fits,
#: and the joint fit settles more slowly. On the unevenly lit micrograph of
#: docs/bias-field.md it stopped unsettled at 20 (labels agreeing with the
#: evenly lit image's at ARI 0.84) and settled at 29 (0.94); on the phantom
#: of benchmarks/anatomy.py at 9 % noise under a 40 % field, at 34 (mean Dice
#: 0.843 -> 0.863). The other anatomy cases settle within 20 either way.
FIELD_ITER_FACTOR = 3

#: EM holds about this many float64 arrays of one value per training row and
#: component at once (its peak, by tracemalloc: 7-8 of them for 50 and 200
#: components on 65 536 rows).
EM_ARRAYS = 8


#: Labels and posteriors warn when the median pixel of the image (of a sample
#: of FAR_SAMPLE) lies this many standard deviations farther from the nearest
#: class than a pixel of the class itself typically does: an image of another
#: bit depth or scale than the training images (a 16-bit file under a model
#: of 8-bit ones) comes out as one class. A class's own pixels lie about
#: ``sqrt(d)`` from its mean in ``d`` channels (the median of a chi
#: distribution), so the threshold grows with it: an image of hundreds of
#: channels (a spatial axis taken for channels) is not far from its own model.
FAR_FROM_THE_MODEL = 10.0
FAR_SAMPLE = 10_000


@functools.cache
def _typical_distance(n_features: int) -> float:
    """The median Mahalanobis distance of a Gaussian's own samples in ``n_features`` dimensions."""
    from scipy.stats import chi2

    return math.sqrt(chi2.ppf(0.5, n_features))


#: An image whose values span a small fraction of what the model's classes
#: span is another warning sign: ``skimage.img_as_float`` turns an 8-bit
#: image into [0, 1], whose values lie within 2 standard deviations of a wide
#: dark class and so not "far", yet label as one class. The warning is given
#: when the image's values (1st to 99th percentile, the widest channel) span
#: less than SHRUNK times the model's (means ± 2 standard deviations, the
#: widest channel) and a common change of bit depth or range (RESCALINGS)
#: would bring them to at least a fifth of it. Models of the 8-bit bundled
#: images of scikit-image applied to each other span 0.3 to 3 times.
SHRUNK = 1 / 50
RESCALINGS = (255.0, 4095.0, 65535.0)


def _shrunk_by(values, mixture) -> tuple[float, float, float] | None:
    """``(factor, image span, model span)`` when the values look shrunk by a
    change of range (see :data:`SHRUNK`), else ``None``."""
    low, high = np.percentile(values, [1, 99], axis=0)
    image_span = float(np.max(high - low))
    sd = np.sqrt(mixture.channel_variances())
    model_span = float(np.max(
        (mixture.means + 2 * sd).max(axis=0) - (mixture.means - 2 * sd).min(axis=0)
    ))
    if not 0 < image_span < SHRUNK * model_span:
        return None
    for factor in RESCALINGS:
        if image_span * factor >= model_span / 5:
            return factor, image_span, model_span
    return None


def _warn_if_far_from_the_model(images, model) -> None:
    if not isinstance(images, _source.InMemoryImages):
        return  # a chunked image would be read for it
    # pixels drawn at random (with replacement), the valid ones kept: no pass
    # over the image to count them first
    rng = np.random.default_rng(0)
    picked = [
        _image.pixels_at(view, rng.integers(0, view.n_pixels, FAR_SAMPLE // len(images.views) + 1))
        for view in images.views
    ]
    values = np.concatenate([values[valid] for values, valid in picked])
    if len(values) < 100:  # (nearly) all masked out or not finite: nothing to judge
        return
    values = values.astype(np.float64, copy=False)
    median = float(np.median(_mixture.nearest_distance(values, model.mixture)))
    typical = _typical_distance(model.n_features)
    far = median - typical > FAR_FROM_THE_MODEL - _typical_distance(1)
    shrunk = None if far else _shrunk_by(values, model.mixture)
    if not far and shrunk is None:
        return
    if far:
        means = model.mixture.means
        low, high = np.percentile(values, [1, 99])
        ranges = (
            f"the classes' means run from {means.min():.4g} to {means.max():.4g}; 98 % of "
            f"X's values from {low:.4g} to {high:.4g}"
        )
        said = (
            f"X's values lie far from every class of this model: its median pixel is "
            f"{median:.3g} standard deviations from the nearest class, where a pixel of a "
            f"class lies about {typical:.2g} from its mean ({ranges})."
        )
    else:
        factor, image_span, model_span = shrunk
        said = (
            f"X's values span {image_span:.3g} (1st to 99th percentile, in the widest "
            f"channel), where this model's classes span {model_span:.4g} (their means ± 2 "
            f"standard deviations): multiplied by {factor:g} they would span about as much."
        )
    warnings.warn(
        f"{said} Was the model fitted on images of another bit depth or intensity scale "
        "(skimage.img_as_float, for one, turns 8-bit values into 0 to 1)? Its labels of "
        "this image say little: rescale the image as the training images were, or fit a "
        "model on images like it.",
        UserWarning,
        stacklevel=_training.caller_stacklevel(),
    )


def _digest(images):
    """A digest of the images, their masks and layout.

    Tells ``predict`` that it was given the training images again, so that
    it can reuse the bias fields fitted with the mixture. In-memory arrays
    are read; a dask array is known by its name, the token of the graph
    that makes it (its source, slicing and chunks): the same array object,
    or one built alike, is the same image. (Before, a dask image's field was
    estimated again at ``predict``, and ``fit(X).predict(X)`` could differ
    from ``fit_predict(X)``: 10.7 % of the labels of a zarr volume under a
    field.)
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((images.batch, len(images.views))).encode())
    for view in images.views:
        digest.update(repr((view.pixels.shape, np.dtype(view.pixels.dtype).str)).encode())
        for part in (view.pixels, view.mask):
            if part is None:
                digest.update(b"no mask")
            elif _image.is_dask_array(part):
                digest.update(repr(("dask", part.name)).encode())
            elif isinstance(part, np.ndarray):
                for plane in part if part.ndim > 1 else [part]:  # no whole copy at once
                    digest.update(np.ascontiguousarray(plane).data)
            else:
                return None
    return digest.hexdigest()


def _warn_if_masked_out(images, output) -> None:
    """Warn about each in-memory image whose mask keeps no pixel, or that has
    no finite value where its mask keeps pixels.

    (``fit`` refuses a single such image, and says which images of a batch
    add nothing to the fit; labelling one gives zeros, which alone would look
    like a result.) ``output``: ``'labels'``, ``'posteriors'`` or ``'fit'``.
    """
    if not isinstance(images, _source.InMemoryImages):
        return  # a chunked mask would be read for it
    result = {
        "labels": "every label is 0",
        "fit": "it adds nothing to the fit (its labels would all be 0)",
    }.get(output, "every posterior is 0")
    for view, name in zip(images.views, _names(images)):
        if not view.pixels.size:
            continue
        if view.mask is not None and not np.any(view.mask):
            message = (f"The mask keeps no pixel of {name}, so {result}; pass a mask with "
                       "some True pixels inside the image.")
        elif not _image.has_valid_pixel(view):
            kept = "every pixel the mask keeps" if view.mask is not None else "every pixel"
            message = (f"{name} has no finite value ({kept} is NaN or infinite), so "
                       f"{result}.")
        else:
            continue
        warnings.warn(message, UserWarning, stacklevel=_training.caller_stacklevel())


def _names(images):
    """How messages name each image: ``X``, or ``X[i]`` in a batch."""
    return ["X"] if not images.batch else [f"X[{i}]" for i in range(len(images.views))]


def segment(image, n_components=3, *, channel_axis=None, mask=None, scribbles=None,
            random_state=None, **params):
    """Segment an image in one call: fit a :class:`GMMSegmenter` and label it.

    Parameters
    ----------
    image : (M[, N[, ...]][, C]) array
        The image; channels on ``channel_axis`` if any.
    n_components : int or 'auto', default=3
        Number of segments.
    channel_axis : int or None, default=None
        Axis holding colour channels; ``None`` for grayscale.
    mask : bool array or None
        Pixels to segment; the others get label 0.
    scribbles : (M[, N[, ...]]) int array or None
        Scribbles guiding the fit: 0 unknown, ``k`` for class ``k``, which
        becomes label ``k`` (see :meth:`GMMSegmenter.fit`).
    random_state : int or None
        Seed for reproducible results.
    **params
        Any other :class:`GMMSegmenter` parameter.

    Returns
    -------
    labels : (M[, N[, ...]]) uint8 array (uint16 above 255 components)
        ``1..n_components``, darkest first (scribbled classes first, by their
        numbers, with ``scribbles``); 0 outside the mask and where the image
        is not finite.

    Examples
    --------
    >>> from skimage import data
    >>> from gmm_segmenter import segment
    >>> labels = segment(data.coins(), 2, random_state=0)
    >>> labels.shape, sorted(set(labels.ravel().tolist()))
    ((303, 384), [1, 2])
    """
    _check_segment_params(params)
    segmenter = GMMSegmenter(
        n_components, channel_axis=channel_axis, random_state=random_state, **params
    )
    return _in_segment_s_words(lambda: segmenter.fit_predict(image, scribbles, mask=mask))


#: The estimator's name for the image, ``X`` (also in advice written as code,
#: ``X[..., :3]``), and for the scribbles, ``y``, are ``segment``'s ``image``
#: and ``scribbles``.
_SEGMENT_S_NAMES = [
    (re.compile(r"(?<![\w.'])X(?!\w)"), "image"),
    (re.compile(r"\bScribbles y\b"), "The scribbles"),
    (re.compile(r"(?<![\w.'])y(?=\[|=| has| must| holds)"), "scribbles"),
]

#: Exceptions whose message :func:`segment` words in its arguments' names
#: (exactly these types: a subclass may carry more than its message).
_REWORDED = (ValueError, TypeError, MemoryError)


def _in_segment_s_words(call):
    """``call()``, its warnings and errors in :func:`segment`'s names for its
    arguments (``image`` where the estimator says ``X``), warned at the
    caller's line."""
    said = []
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            return call()
    except _REWORDED as error:
        text = _wording.reword(str(error), _SEGMENT_S_NAMES)
        if type(error) not in _REWORDED or text == str(error):
            raise
        raise type(error)(text) from None
    finally:
        for warning in said:
            warnings.warn(
                _wording.reword(str(warning.message), _SEGMENT_S_NAMES), warning.category,
                stacklevel=_training.caller_stacklevel(),
            )


def _check_segment_params(params):
    """Refuse a keyword :func:`segment` does not take, naming the closest one.

    Passed on unchecked, a misspelt parameter reached ``GMMSegmenter()`` and
    Python's error named ``GMMSegmenter.__init__``, not the call the user made.
    """
    unknown = [name for name in params if name not in GMMSegmenter._get_param_names()]
    if not unknown:
        return
    own = ("image", "n_components", "channel_axis", "mask", "scribbles", "random_state")
    known = sorted(set(own) | set(GMMSegmenter._get_param_names()))
    raise _unexpected("segment()", unknown[0], params[unknown[0]], known,
                      also=" (the GMMSegmenter parameters and its own)")
