"""Progress reports and cancellation for long fits and predictions.

The estimator's loops call :func:`report` as they advance; a front end that
wants to show progress (a progress bar, napari's worker) or to stop the work
installs a callback with :func:`progress` around ``fit``/``predict``. The
callback lives in a context variable, so it is private to the thread (or
task) that installed it and survives scikit-learn's cloning and pipelines,
which a constructor parameter would not.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["progress", "report", "Cancelled"]

ProgressCallback = Callable[[str, int, "int | None"], None]

_callback: contextvars.ContextVar[ProgressCallback | None] = contextvars.ContextVar(
    "gmm_segmenter_progress", default=None
)


class Cancelled(Exception):
    """Raised from a progress callback to stop a fit or prediction."""

    def __str__(self):
        return super().__str__() or "cancelled from the progress callback"


@contextmanager
def progress(callback: ProgressCallback) -> Iterator[None]:
    """Call ``callback(stage, done, total)`` as fits and predictions advance.

    ``stage`` names the step (``"EM"``, ``"spatial EM"``, ``"labelling"``,
    …), ``done`` counts its units so far and ``total`` is their number, or
    ``None`` when only an upper bound is known in advance. Raising from the
    callback (for example :class:`Cancelled`) stops the work at once; the
    estimator is then left as it was before the call.

    Examples
    --------
    >>> import numpy as np
    >>> from gmm_segmenter import GMMSegmenter, progress
    >>> seen = []
    >>> with progress(lambda stage, done, total: seen.append(stage)):
    ...     _ = GMMSegmenter(2, beta=0).fit(np.arange(100.0).reshape(10, 10))
    >>> "EM" in seen
    True
    """
    token = _callback.set(callback)
    try:
        yield
    finally:
        _callback.reset(token)


def report(stage: str, done: int, total: int | None = None) -> None:
    """Tell the installed callback, if any, how far ``stage`` has come."""
    callback = _callback.get()
    if callback is not None:
        callback(stage, done, total)
