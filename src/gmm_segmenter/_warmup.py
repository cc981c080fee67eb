"""Load the compiled kernels before the first fit needs them.

The first spatial fit of a process spends about half a second loading
numba's cached machine code (and numba's own modules), which an
interactive front end can hide: :func:`warm_up_in_background` fits two
tiny images in a thread of its own while the user is still choosing settings.

A front end calls :func:`finish` before its own fits. Warning filters
(``warnings.catch_warnings``) and the BLAS thread limit are global to the
process, and a fit that set them while the warm-up set them too could, on
leaving, restore the other's; waiting costs nothing, as the fit would have
loaded the same code. That orders the front end's own threads only; in
napari's process, whose libraries are imported by then, the warm-up itself
enters no ``catch_warnings`` (measured), so it cannot upset one that
napari's main thread holds.
"""

from __future__ import annotations

import threading
import time

import numpy as np

__all__ = ["warm_up", "warm_up_in_background", "finish"]

#: Whether :func:`warm_up_in_background` starts its thread (the test suite
#: turns it off, so that no fit runs beside the ones a test watches).
IN_BACKGROUND = True

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _images():
    """Two small images, 8-bit (the lookup-table path) and float (the dense
    one), of three flat classes with a little noise: clear enough that no
    fit warns."""
    rows = np.arange(64)[:, None] // 22 + np.zeros((1, 64), dtype=int)
    noise = np.random.default_rng(0).normal(0.0, 0.15, rows.shape)
    levels = rows + noise
    return (np.round(40 + 60 * levels).astype(np.uint8), levels.astype(np.float32))


def warm_up() -> None:
    """Fit and label two tiny images with the default settings, so that the
    compiled kernels they use are loaded in this process."""
    from .estimator import GMMSegmenter

    for image in _images():
        GMMSegmenter(3, random_state=0).fit(image).predict(image)


def _quietly():
    # The first real fit loads whatever this did not; a failure here must
    # not reach the user (it would only reappear, with context, in that fit).
    try:
        warm_up()
    except Exception:  # noqa: BLE001
        pass


def warm_up_in_background() -> threading.Thread | None:
    """Start :func:`warm_up` in a thread, once per process; return that
    thread (``None`` when :data:`IN_BACKGROUND` is off).

    The thread is not a daemon: a process that ends within the second it
    takes waits for it, rather than stopping it inside numba's loader.
    """
    global _thread
    with _lock:
        if _thread is None and IN_BACKGROUND:
            _thread = threading.Thread(target=_quietly, name="gmm-segmenter warm-up")
            _thread.start()
        return _thread


#: Longest wait for a running warm-up, in seconds: it takes about one (five
#: of CPU where the kernels must be compiled first); past this, go on.
FINISH_TIMEOUT = 60.0


def finish(stop: threading.Event | None = None) -> None:
    """Wait for a warm-up that is still running (called from any other
    thread), at most :data:`FINISH_TIMEOUT` seconds, or until ``stop`` is set."""
    thread = _thread
    if thread is None or thread is threading.current_thread():
        return
    deadline = time.monotonic() + FINISH_TIMEOUT
    while thread.is_alive() and time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return
        thread.join(min(0.05, max(deadline - time.monotonic(), 0.0)))
