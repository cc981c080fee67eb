"""The training data's units and checks: standardisation, collinear
channels, and how many components the data can hold."""

from __future__ import annotations

import sys
import warnings
from numbers import Integral

import numpy as np

__all__ = [
    "SCALE_LIMITS",
    "standardisation",
    "warn_if_collinear",
    "warn_if_alpha",
    "candidate_n_components",
    "caller_stacklevel",
]

#: Standard deviations the fit accepts per channel: covariances in input
#: units are standardised ones (down to ~1e-12 after regularisation) times
#: scale**2, and must stay normal, finite float64 numbers.
SCALE_LIMITS = (1e-140, 1e140)


def standardisation(values, weights, covariance_type):
    """Offset and scale that bring each channel to zero mean, unit variance.

    Fitting in these units keeps EM well conditioned for any intensity range
    (uint8, uint32, 1e-30..1e30 floats) and makes ``reg_covar`` relative.
    A spherical covariance needs one scale for all channels to stay spherical.

    Raises ``ValueError`` when a channel's spread is so large or small that
    its variance (the covariances in input units) would not fit in float64.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        # normalised weights: a convex combination of finite values cannot overflow
        offset = (weights / weights.sum()) @ values
        centred = values - offset
        magnitude = np.abs(centred).max(axis=0)
        # by value, not by spread: a rounded mean leaves a constant channel a
        # spread of a few ulps, which must not count as a (tiny) spread
        constant = values.max(axis=0) == values.min(axis=0)
        magnitude[magnitude == 0] = 1.0
        scale = np.sqrt((weights / weights.sum()) @ (centred / magnitude) ** 2) * magnitude
        if covariance_type == "spherical":
            largest = scale.max() if scale.max() > 0 else 1.0
            scale = np.full_like(scale, np.sqrt(np.mean((scale / largest) ** 2)) * largest)
    if covariance_type != "spherical":
        scale[constant] = 1.0  # a constant channel: any unit will do
    elif constant.all():
        scale[:] = 1.0  # spherical needs one common scale; keep it if any channel varies
    usable = (scale >= SCALE_LIMITS[0]) & (scale <= SCALE_LIMITS[1])
    if not usable.all():
        channel = int(np.flatnonzero(~usable)[0])
        where = f" in channel {channel}" if len(scale) > 1 else ""
        raise ValueError(
            f"The pixel values of X spread too {'little' if scale[channel] < 1 else 'much'}"
            f"{where} (standard deviation {scale[channel]:.3g}): GMMSegmenter needs a "
            f"standard deviation between {SCALE_LIMITS[0]:g} and {SCALE_LIMITS[1]:g} "
            "so that variances fit in float64. Multiply the image by a constant first "
            "(labels do not change with the units)."
        )
    return offset, scale


def mixed_depths(dtypes) -> tuple[int, int] | None:
    """Indices of the first image and the first other image of another bit depth,
    or ``None``: types of another kind or size (byte order aside) where one is
    an 8- or 16-bit integer type or bool, a camera's or a picture's, or where
    one is an integer and the other a float type. Wider integers of the same
    values (int32 and int64) are not other depths."""
    dtypes = [np.dtype(dtype) for dtype in dtypes]

    def small(dtype):
        return dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize <= 2)

    first = dtypes[0]
    for j, dtype in enumerate(dtypes):
        if (dtype.kind, dtype.itemsize) == (first.kind, first.itemsize):
            continue
        if small(dtype) or small(first) or (dtype.kind in "biu") != (first.kind in "biu"):
            return 0, j
    return None


#: What one model of images of other bit depths does (the CLI says it too).
MIXED_DEPTHS_CONSEQUENCE = (
    "One model sees their values as they are: if they are not on one scale (0-255 "
    "against 0-65535, say), the image of fewer bits lies at the dark end of the "
    "others' range and may come out as one class."
)


def warn_if_mixed_depths(dtypes) -> None:
    """Warn when a batch mixes images of other bit depths (see :func:`mixed_depths`)."""
    pair = mixed_depths(dtypes)
    if pair is None:
        return
    (i, j), dtypes = pair, [np.dtype(dtype) for dtype in dtypes]
    warnings.warn(
        f"X mixes images of other types: image {i} is {dtypes[i]} and image {j} is "
        f"{dtypes[j]}. {MIXED_DEPTHS_CONSEQUENCE} Bring them to one scale first (e.g. "
        "skimage.util.img_as_float on each), or fit each on its own.",
        UserWarning,
        stacklevel=caller_stacklevel(),
    )


#: Fewer sampled rows than this say too little about the channels to warn about them.
MIN_ROWS_FOR_CHANNEL_WARNINGS = 100


#: Largest value an alpha channel takes (opaque), by how it is stored.
OPAQUE_VALUES = (1.0, 255.0, 65535.0)
#: An alpha channel: at least this share of the pixels transparent, and as
#: many opaque, ...
ALPHA_MIN_SHARE = 0.01
#: ... and this share one or the other (the rest blends at edges).
ALPHA_BINARY_SHARE = 0.9


def warn_if_alpha(values, weights, channel_axis=-1, channels_last=True):
    """Warn when the fourth of four channels looks like a partly transparent
    alpha channel: value 0 on some pixels, its opaque maximum (1, 255 or
    65535) on some, more of them than blend (an outline), and one or the
    other on nearly all. ``channels_last``: ``channel_axis`` is the image's
    last axis (the advice is then ``X[..., :3]``).

    It is then segmented as a colour, and the transparent pixels, whatever
    their colour, take a component of their own. (An opaque alpha channel is
    constant; :func:`warn_if_collinear` speaks of it.)
    """
    if values.shape[1] != 4 or len(values) < MIN_ROWS_FOR_CHANNEL_WARNINGS:
        return
    alpha, share = values[:, 3], weights / weights.sum()
    opaque = float(alpha.max())
    if alpha.min() != 0 or opaque not in OPAQUE_VALUES:
        return
    transparent = float(share[alpha == 0].sum())
    solid = float(share[alpha == opaque].sum())
    blended = 1.0 - transparent - solid
    if (
        min(transparent, solid) < ALPHA_MIN_SHARE or transparent + solid < ALPHA_BINARY_SHARE
        or solid < blended  # a sparse channel (a marker), not a cut-out
    ):
        return
    advice = (
        "for RGBA, pass X[..., :3] (with mask=X[..., 3] > 0 if some pixels are transparent)"
        if channels_last else
        f"pass np.take(X, [0, 1, 2], axis={channel_axis}) with "
        f"mask=np.take(X, 3, axis={channel_axis}) > 0"
    )
    warnings.warn(
        f"Channel 3 of the 4 channels of X looks like an alpha channel: "
        f"{transparent:.0%} of the pixels are transparent (0), {solid:.0%} opaque "
        f"({opaque:g}). It is segmented as a colour, so the transparent pixels take a "
        f"component of their own; {advice}.",
        UserWarning,
        stacklevel=caller_stacklevel(),
    )


def warn_if_collinear(standardized, weights, reg_covar, covariance_type):
    """Warn when the channels are linearly dependent (a gray image stored as RGB).

    Their covariances are then singular: the fit still works, held positive
    definite by ``reg_covar``, but the redundant channels add nothing but cost
    (and with 'diag' or 'spherical' they count the same evidence twice). A
    handful of rows (a tiny ``max_samples``) says nothing about the image's
    channels: no warning then.
    """
    n_features = standardized.shape[1]
    if n_features < 2 or len(standardized) < MIN_ROWS_FOR_CHANNEL_WARNINGS:
        return
    correlation = (standardized.T * (weights / weights.sum())) @ standardized
    smallest = float(np.linalg.eigvalsh(correlation)[0])
    if smallest > 10 * max(reg_covar, 1e-12):
        return
    ridge = (
        f"only reg_covar={reg_covar:g} keeps the covariances invertible"
        if covariance_type in ("full", "tied")
        else f"covariance_type={covariance_type!r} counts the same evidence several times"
    )
    constant = np.flatnonzero(np.diag(correlation) <= 1e-12)
    if constant.size:
        # an opaque alpha channel, most often: dropping a colour channel
        # (the advice for dependent channels) would be the wrong cure
        several = constant.size > 1
        rgba = n_features == 4 and constant.tolist() == [3]
        warnings.warn(
            f"Channel{'s' if several else ''} {', '.join(map(str, constant))} of the "
            f"{n_features} channels of X {'are' if several else 'is'} constant (as an opaque "
            f"alpha channel is), so {'they carry' if several else 'it carries'} nothing to "
            f"segment by; {ridge}. Leave {'them' if several else 'it'} out of X"
            + (": for RGBA, pass X[..., :3] (with mask=X[..., 3] > 0 if some pixels are "
               "transparent)." if rgba else "."),
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
        return
    warnings.warn(
        f"The {n_features} channels of X are linearly dependent (smallest eigenvalue of "
        f"their correlation matrix {max(smallest, 0.0):.2g}), as in a grayscale image "
        f"stored as RGB; {ridge}. Segment one channel instead (for example X[..., 0] "
        "with channel_axis=None), or drop the redundant channels.",
        UserWarning,
        stacklevel=caller_stacklevel(),
    )


#: :func:`count_distinct_rows` peels off this many values one by one before it
#: sorts what is left: a pass each, where the first few nearly always tell.
PEELED_ROWS = 8


def count_distinct_rows(values, enough):
    """Number of distinct rows of ``values``, counting no further than ``enough``."""
    found = 0
    remaining = values
    while len(remaining) and found < min(enough, PEELED_ROWS):
        found += 1
        remaining = remaining[np.any(remaining != remaining[0], axis=1)]
    if len(remaining) and found < enough:
        # the rest sorted once (a pass per value was minutes for a large
        # number of components on a noisy image)
        found += len(
            np.unique(remaining[:, 0]) if remaining.shape[1] == 1
            else np.unique(remaining, axis=0)
        )
    return min(found, enough)


def caller_stacklevel():
    """``stacklevel`` that points a warning at the first frame outside this
    package and scikit-learn, whatever decorators ``fit`` carries."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in (
        "gmm_segmenter", "sklearn"
    ):
        frame, level = frame.f_back, level + 1
    return level


def check_range(n_components_range):
    if (
        len(n_components_range) != 2
        or not all(isinstance(n, Integral) for n in n_components_range)
        or not 1 <= n_components_range[0] <= n_components_range[1]
    ):
        raise ValueError(
            "n_components_range must be two integers (smallest, largest) with "
            f"1 <= smallest <= largest; got n_components_range={n_components_range!r}. "
            "For example n_components_range=(2, 6)."
        )
    return int(n_components_range[0]), int(n_components_range[1])


def candidate_n_components(n_components, n_components_range, values, raw=None, sampled=None):
    """Numbers of components to fit, after checking the data can hold them.

    ``values`` are standardised; ``raw`` (input units) only sharpens the
    message when standardising merged values that differ in the input.
    ``sampled``, ``(rows drawn, valid pixels, counter)``, says that ``values``
    are a sample of the image (``max_samples``), which the message then
    blames, unless ``counter(enough)`` (the distinct values of the whole
    image, counting no further than ``enough``; ``None`` when it cannot be
    asked) finds too few there too.
    """
    # checked with a fixed number too, as every parameter is at fit
    lowest, highest = check_range(n_components_range)
    if n_components != "auto":
        lowest = highest = n_components
    n_distinct = count_distinct_rows(values, highest)
    if n_distinct < lowest:
        what = (
            f"n_components={n_components} asks for {lowest} components"
            if n_components != "auto"
            else f"n_components_range={tuple(n_components_range)} asks for at least "
            f"{lowest} components"
        )
        if sampled is not None and lowest > sampled[1]:
            n_valid = sampled[1]
            raise ValueError(
                f"{what}, but X has only {n_valid} valid pixel{'s' * (n_valid != 1)}; "
                f"each component needs its own value to model. {_at_most(n_valid)}"
            )
        if sampled is not None and sampled[2] is not None:
            in_image = sampled[2](lowest)
            if in_image < lowest:  # the image itself, not the sample, holds too few
                sampled, values, raw, n_distinct = None, None, None, in_image
        if sampled is not None:  # the sample is what holds too few values
            drawn, n_valid, counter = sampled
            advice = (
                "Raise max_samples (None uses every pixel), or use fewer components if the "
                "image itself holds few distinct values." if counter is not None else
                # (a dask image was not read whole to count them)
                "If the image itself holds so few values, use fewer components; if not, "
                "raise max_samples (None uses every pixel)."
            )
            raise ValueError(
                f"{what}, but the {drawn} "
                f"pixel{'s' * (drawn != 1)} drawn from the {n_valid} valid pixels of X "
                f"(max_samples={drawn}) hold{'s' * (drawn == 1)} only {n_distinct} "
                f"distinct pixel value{'s' * (n_distinct != 1)}; each component needs "
                f"its own value to model. {advice}"
            )
        where = "pixel value" if n_distinct == 1 else "pixel values"
        if values is None or n_distinct < len(values):
            where = "distinct " + where
        merged = raw is not None and count_distinct_rows(raw, lowest) > n_distinct
        if merged:
            where += (
                " at float64 precision once scaled to the image's spread (values "
                f"from {raw.min():.3g} to {raw.max():.3g}: too wide a dynamic range; "
                "clip the outliers or segment np.log(X))"
            )
        elif n_distinct == 1:
            where += " (a constant image, or a mask or NaNs that leave one value)"
        raise ValueError(
            f"{what}, but the valid pixels "
            f"of X hold only {n_distinct} {where}; each component "
            f"needs its own value to model. {_at_most(n_distinct)}"
        )
    return list(range(lowest, min(highest, n_distinct) + 1))


def _at_most(limit: int) -> str:
    """The advice for more components than ``limit`` values: one value leaves
    a single choice, which "at most 1" would hide."""
    bound = "n_components=1" if limit == 1 else f"n_components<={limit}"
    return f"Use {bound} or n_components='auto'."
