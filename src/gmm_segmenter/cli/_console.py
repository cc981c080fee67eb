"""What ``gmm-segment`` prints: messages, errors and progress bars.

Errors always go to stderr, one line each; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import contextlib
import errno
import re
import sys
import threading

from .._wording import (
    ALPHA_AXIS_ADVICE, EM_ITER_ADVICE, MASK_INSTEAD_ADVICE, ONE_CHANNEL_ADVICE, RESCALE_ADVICE,
    RGBA_ADVICE, SPATIAL_ITER_ADVICE, X_AS_THE_IMAGE, count, reword,
)

PROG = "gmm-segment"


_current = threading.local()


def current_input() -> str | None:
    """The label of the input this thread is working on, for warnings."""
    return getattr(_current, "label", None)


@contextlib.contextmanager
def working_on(label):
    """Warnings raised inside name ``label``, and are kept for its report."""
    previous, _current.label = current_input(), label
    previous_said, _current.said = getattr(_current, "said", None), []
    try:
        yield
    finally:
        _current.label, _current.said = previous, previous_said


def note_warning(text):
    """Keep a warning printed for the current input (see :func:`warnings_said`)."""
    said = getattr(_current, "said", None)
    if said is not None and text not in said:
        said.append(text)


def warnings_said() -> list[str]:
    """The warnings printed so far for the current input, in the command's words."""
    return list(getattr(_current, "said", None) or [])


#: The estimator's messages speak of its parameters and of the arrays passed
#: to it; here they become the options that set them.
_CLI_WORDS = [
    (re.compile(r"^bias_field: "), "--bias-field: "),
    # the shape the estimator saw has the class axis moved last: not the file's
    (re.compile(r"\bprior has (\d+) classes on its last axis \(shape \([^)]*\)\) but "
                r"n_components=(\d+); pass n_components=\d+ \(or 'auto'\), or one map per "
                r"component\."),
     r"--prior holds \1 class maps but -k \2; pass -k \1 (or -k auto), or one map per class."),
    (re.compile(r"\bX has (\d+) channel\(s\) along channel_axis=None, but this GMMSegmenter "
                r"was fitted on images with (\d+); pass images with the same channels as in "
                r"fit\."),
     r"The image is grey (\1 channel), but the --model was fitted on images with \2 "
     r"channels; give images with \2 channels (--channel-axis N when axis N holds them), "
     r"or a model fitted on images like this one."),
    # an axis the user may not have given (--channel-axis auto chose it)
    (re.compile(r"\bX has (\d+) channel\(s\) along channel_axis=(-?\d+), but this "
                r"GMMSegmenter was fitted on images with (\d+); pass images with the same "
                r"channels as in fit\."),
     lambda found: (
         f"The image has {found[1]} channels (on its axis {found[2]}), but the --model was "
         f"fitted on images with {count(int(found[3]), 'channel')}; give images with "
         f"{count(int(found[3]), 'channel')}, or a model fitted on images like this one."
     )),
    (re.compile(r"\bpass images with the same channels as in fit\."),
     "give images with the channels of the --model's images."),
    (re.compile(r"\bn_components_range=\((\d+), (\d+)\)"), r"--k-range \1 \2"),
    (re.compile(r"\bWiden n_components_range, or pass a number\."),
     "Widen --k-range, or give -k N."),
    # a fitted --model on an image of fewer dimensions: the options that adapt it
    (re.compile(r"To label it with this fitted model, call set_params\(connectivity=1\) first: "
                r"the fitted mixture stays as it is\."),
     "Give --connectivity 1 to label it with the --model."),
    (re.compile(r"To label it with this fitted model, call set_params\(spacing=None\) \(or "
                r"(\d+) voxel sizes\) first: the fitted mixture stays as it is\."),
     r"Give --spacing with \1 sizes to label it with the --model."),
    (re.compile(r"\bn_components=1 or n_components='auto'"), "-k 1 or -k auto"),
    # code that fixes the scribbles array: what to do to the label file instead
    (re.compile(r"pass np\.where\(y(\[\d+\])? < 0, 0, y(\[\d+\])?\)"),
     "set those pixels to 0 in the label file"),
    (re.compile(r": np\.where\(y(\[\d+\])? > K, 0, y(\[\d+\])?\)"), " in the label file"),
    (re.compile(r"e\.g\. np\.rint\(y(\[\d+\])?\)\.astype\(int\) if the values are labels "
                r"stored as floats"), "e.g. rounded and saved as integers"),
    (re.compile(r"\bScribbles y(\[\d+\])?"), "The --scribbles labels"),
    (re.compile(r"\bn_components<=(\d+)"), r"-k \1 or fewer"),
    (re.compile(r"\bn_components=('auto'|auto|\d+)"), r"-k \1"),
    (re.compile(r"\(or 'auto'\)"), "(or -k auto)"),
    (re.compile(r"\bn_components\b"), "-k"),
    # None as the options spell it: no --bias-field, --channel-axis none
    (re.compile(r"a mask of the pixels above 0 \(mask=image > 0\)"),
     "a --mask file of the pixels above 0"),
    (re.compile(r"\bUse bias_field=None\b"), "Leave out --bias-field"),
    (re.compile(r"\bbias_field=None\b"), "no --bias-field"),
    # advice written as code on X, in the command's terms
    (RGBA_ADVICE,
     "for an RGBA file with its channels last, --channel-axis auto (the default) leaves "
     "alpha out and gives transparent pixels label 0"),
    (ALPHA_AXIS_ADVICE,
     "save the first three channels as the image and where the fourth is above 0 as a "
     "--mask file"),
    (ONE_CHANNEL_ADVICE, "(saved as a grey image)"),
    (re.compile(r"\bbut this GMMSegmenter was fitted\b"), "but the --model was fitted"),
    (re.compile(r"\bRaise max_samples \(None uses every pixel\)"),
     "Raise --max-samples (all uses every pixel)"),
    (re.compile(r"\ba smaller max_samples\b"), "a smaller --max-samples"),
    (re.compile(r"^spacing must be None or a sequence of (\d+) positive numbers"),
     r"--spacing takes \1 positive numbers"),
    (re.compile(r"\bgot spacing=\(([^)]*)\)"),
     lambda found: "got --spacing " + found.group(1).replace(",", "")),
    (re.compile(r"^spacing must\b"), "--spacing must"),
    (re.compile(r"\bpass a mask with some True pixels\b"),
     "give a --mask with some nonzero pixels"),
    (re.compile(r"\bchannel_axis=None\b"), "--channel-axis none"),
    (re.compile(r"\babove tol\)"), "above --tol)"),
    (EM_ITER_ADVICE, "Raise --max-iter or --tol, or try another --init."),
    (SPATIAL_ITER_ADVICE, "Raise --max-iter-spatial or --tol."),
    (re.compile(r"\bor a smaller beta\."), "or a smaller --beta."),
    (re.compile(r"\(mask False\)"), "(outside --mask)"),
    (MASK_INSTEAD_ADVICE, "give the file as --mask instead."),
    (RESCALE_ADVICE,
     "Was the model (--model, or the one --fit-on fitted on all the inputs) fitted on "
     "files of another bit depth or range (an 8-bit picture saved as floats from 0 to 1, "
     "for one)? Its labels of this file say little: convert the file as the model's "
     "images were, or fit a model to it alone."),
    *X_AS_THE_IMAGE,
]
for _name, _option in (
    ("bias_field", "--bias-field"), ("channel_axis", "--channel-axis"), ("beta", "--beta"),
    ("max_samples", "--max-samples"), ("covariance_type", "--covariance-type"),
    ("connectivity", "--connectivity"), ("init_params", "--init"), ("n_init", "--n-init"),
    ("prior_weight", "--prior-weight"), ("reg_covar", "--reg-covar"), ("max_iter", "--max-iter"),
    ("max_iter_spatial", "--max-iter-spatial"),
    ("random_state", "--seed"), ("tol", "--tol"),
):
    _CLI_WORDS.append((re.compile(rf"\b{_name}=('[^']*'|[-\w.]+)"), rf"{_option} \1"))
    _CLI_WORDS.append(
        (re.compile(rf"\bThe '{_name}' parameter of GMMSegmenter must be"), f"{_option} must be")
    )
_CLI_WORDS.append((re.compile(r"\. Got (.+) instead\."), r"; got \1."))
_QUOTED = re.compile(r"(-k|--[a-z-]+) '([^']*)'")


def describe(error) -> str:
    """An exception (or warning) as one line of text, in the command's words."""
    text = " ".join(str(error).split()) or type(error).__name__
    return _QUOTED.sub(r"\1 \2", reword(text, _CLI_WORDS))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: stop as on Ctrl-C, so unfinished results are cleared away."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


#: The signals (SIGINT, SIGTERM, SIGHUP) this run received. A library may turn
#: the KeyboardInterrupt one raises into another error (numpy reports one met
#: while it reads a buffer's format as "not a valid PEP 3118 buffer format
#: string"): an error met after a signal is the signal's doing.
_signals: list[int] = []


def note_signal(signum):
    _signals.append(signum)


def forget_signals():
    _signals.clear()


def stop_if_signalled():
    """Raise the interrupt for a signal that arrived, if one did."""
    import signal

    if _signals:
        signum = _signals[0]
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def discard_stdout():
    """Send what is still written to standard output, buffered or not, nowhere.

    Once a write failed (a full disk, a closed pipe), the text left in
    Python's buffer would fail again at every flush, the exit's included.
    """
    import os

    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


def stdout_failed(error):
    """A write to standard output failed: say so on stderr (not for a closed
    pipe, whose reader, ``| head``, wanted no more) and send the rest nowhere."""
    discard_stdout()
    if getattr(error, "errno", None) != errno.EPIPE:
        with contextlib.suppress(OSError, ValueError):
            print(f"{PROG}: warning: cannot write to standard output ({describe(error)})",
                  file=sys.stderr, flush=True)


class Console:
    """A bar over the batch, a second one over the current image's steps, and messages."""

    def __init__(self, total, quiet, debug):
        from tqdm.auto import tqdm

        self.quiet, self.debug = quiet, debug
        self.stdout_broken = False
        self.stage_bar = None
        self.bar = tqdm(
            total=total, unit="image", desc=PROG, file=sys.stderr, leave=False,
            disable=quiet or total < 1 or not is_terminal(sys.stderr),
        )

    def _write(self, text, stream):
        if stream is sys.stdout and self.stdout_broken:
            return
        try:
            if self.bar.disable:
                print(text, file=stream, flush=True)
            else:
                self.bar.write(text, file=stream)
        except (OSError, ValueError) as error:  # a closed pipe or a full disk: results go on
            if stream is sys.stdout:
                self.stdout_broken = True
                discard_stdout()
                if getattr(error, "errno", None) == errno.ENOSPC:  # said once; a pipe's
                    # reader that stopped (| head) wanted no more
                    with contextlib.suppress(OSError, ValueError):
                        print(f"{PROG}: warning: standard output is full; the messages "
                              "stop there, the results are still written", file=sys.stderr,
                              flush=True)

    def info(self, text):
        if not self.quiet:
            self._write(text, sys.stdout)

    def error(self, text, details=None):
        stop_if_signalled()  # the error is the interrupt's doing, not the input's
        self._write(f"{PROG}: error: {text}", sys.stderr)
        if self.debug and details:
            self._write(details.rstrip(), sys.stderr)

    def warn(self, text):
        self._write(f"{PROG}: warning: {text}", sys.stderr)

    def status(self, text):
        if not self.bar.disable:
            self.bar.set_postfix_str(text)

    def step(self, label=None):
        if label:
            self.bar.set_postfix_str(label, refresh=False)
        self.bar.update(1)

    def stage(self, stage, done, total):
        """A second bar under the batch bar: the current step of the current image."""
        if self.bar.disable:
            return
        from tqdm.auto import tqdm

        if self.stage_bar is None:
            self.stage_bar = tqdm(file=sys.stderr, leave=False, position=1, desc=stage)
        if self.stage_bar.desc != stage or done < self.stage_bar.n:
            self.stage_bar.set_description_str(stage, refresh=False)
            self.stage_bar.reset(total=total)
        self.stage_bar.update(done - self.stage_bar.n)

    def close(self):
        if self.stage_bar is not None:
            self.stage_bar.close()
        self.bar.close()
