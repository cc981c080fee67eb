"""Rewordings of the estimator's messages that the command and the napari widget share."""

import re

#: The array the estimator's messages call ``X`` is the image the user chose
#: (a file, a layer). Advice written as code on it (``X[..., 0]``,
#: ``np.log(X)``) is left as it is; each front end rewords what it can of
#: that first.
#: ``X`` standing alone in a message (not ``X[...]``, ``np.log(X)`` or a name).
LONE_X = re.compile(r"(?<![\w(.\[])X(?![\w\[)])")

X_AS_THE_IMAGE = [
    (re.compile(r"(^|\. )X(?![\w\[)])"), r"\1The image"),
    (LONE_X, "the image"),
]

#: Advice the estimator writes as code, which each front end says in its own terms.
RGBA_ADVICE = re.compile(
    r"for RGBA, pass X\[\.\.\., :3\] \(with mask=X\[\.\.\., 3\] > 0 if some pixels are "
    r"transparent\)"
)
#: ... the same for channels on another axis than the last
ALPHA_AXIS_ADVICE = re.compile(
    r"pass np\.take\(X, \[0, 1, 2\], axis=\d+\) with mask=np\.take\(X, 3, axis=\d+\) > 0"
)
ONE_CHANNEL_ADVICE = re.compile(r"\(for example X\[\.\.\., 0\] with channel_axis=None\)")
EM_ITER_ADVICE = re.compile(r"\bIncrease max_iter, raise tol, or try another init_params\.")
SPATIAL_ITER_ADVICE = re.compile(r"\bIncrease max_iter_spatial, or raise tol\.")
FEWER_COMPONENTS_ADVICE = re.compile(
    r"\bUse fewer components \(or n_components='auto'\), or a smaller beta\."
)
MASK_INSTEAD_ADVICE = re.compile(r"\bpass the image as mask= instead\.")
#: What a model's labels of an image of another bit depth or range are worth.
RESCALE_ADVICE = re.compile(
    r"\bWas the model fitted on images of another bit depth or intensity scale "
    r"\(skimage\.img_as_float, for one, turns 8-bit values into 0 to 1\)\? Its labels of "
    r"this image say little: rescale the image as the training images were, or fit a "
    r"model on images like it\."
)


def count(n: int, noun: str) -> str:
    """``"1 component"``, ``"3 components"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def reword(text: str, rules) -> str:
    """``text`` with each ``(pattern, replacement)`` of ``rules`` applied in turn."""
    for pattern, words in rules:
        text = pattern.sub(words, text)
    return text
