"""Loading the compiled kernels ahead of the first fit (the napari dock
starts it when it opens)."""

from __future__ import annotations

import subprocess
import sys
import threading

from gmm_segmenter import _warmup

_FRESH = """
import sys, warnings
warnings.simplefilter("error")  # a warm-up that warns would fail here
from gmm_segmenter import _mixture, _mrf, _warmup
kernels = (_mrf._sweep_rows, _mrf._bound_rows, _mixture._full_log_prob32)
before = [len(kernel.signatures) for kernel in kernels]
{call}
print(before, [len(kernel.signatures) for kernel in kernels])
"""


def _signature_counts(call: str):
    done = subprocess.run(
        [sys.executable, "-c", _FRESH.format(call=call)], capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.strip().split("] [")
    return before + "]", "[" + after


def test_warm_up_loads_the_kernels_without_a_warning():
    before, after = _signature_counts("_warmup.warm_up()")
    assert before == "[0, 0, 0]"
    assert "0" not in after.strip("[]").split(", ")


def test_warm_up_in_background_starts_one_thread_that_loads_them():
    call = (
        "thread = _warmup.warm_up_in_background()\n"
        "assert thread is _warmup.warm_up_in_background()\n"
        "assert not thread.daemon\n"
        "thread.join(240)\n"
        "assert not thread.is_alive()"
    )
    before, after = _signature_counts(call)
    assert before == "[0, 0, 0]"
    assert "0" not in after.strip("[]").split(", ")


def test_a_failing_warm_up_is_silent(monkeypatch):
    def broken():
        raise MemoryError("no room")

    monkeypatch.setattr(_warmup, "warm_up", broken)
    _warmup._quietly()  # the first real fit reports what went wrong


def test_switched_off_it_starts_nothing(monkeypatch):
    monkeypatch.setattr(_warmup, "IN_BACKGROUND", False)
    monkeypatch.setattr(_warmup, "_thread", None)
    assert _warmup.warm_up_in_background() is None
    assert not [t for t in threading.enumerate() if t.name == "gmm-segmenter warm-up"]


def test_finish_waits_for_a_running_warm_up(monkeypatch):
    release, events = threading.Event(), []

    def slow():
        release.wait(30)
        events.append("warmed")

    monkeypatch.setattr(_warmup, "IN_BACKGROUND", True)
    monkeypatch.setattr(_warmup, "_thread", None)
    monkeypatch.setattr(_warmup, "warm_up", slow)
    _warmup.warm_up_in_background()
    waiter = threading.Thread(target=lambda: (_warmup.finish(), events.append("finished")))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and events == []
    release.set()
    waiter.join(30)
    assert events == ["warmed", "finished"]


def test_finish_gives_up_on_a_warm_up_that_never_ends(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(_warmup, "IN_BACKGROUND", True)
    monkeypatch.setattr(_warmup, "_thread", None)
    monkeypatch.setattr(_warmup, "warm_up", lambda: release.wait(30))
    monkeypatch.setattr(_warmup, "FINISH_TIMEOUT", 0.2)
    _warmup.warm_up_in_background()
    try:
        _warmup.finish()  # returns after FINISH_TIMEOUT
        assert _warmup._thread.is_alive()
    finally:
        release.set()
        _warmup._thread.join(30)


def test_finish_stops_waiting_when_asked(monkeypatch):
    release, stop = threading.Event(), threading.Event()
    monkeypatch.setattr(_warmup, "IN_BACKGROUND", True)
    monkeypatch.setattr(_warmup, "_thread", None)
    monkeypatch.setattr(_warmup, "warm_up", lambda: release.wait(30))
    _warmup.warm_up_in_background()
    try:
        waiter = threading.Thread(target=_warmup.finish, kwargs={"stop": stop})
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()
        stop.set()
        waiter.join(5)
        assert not waiter.is_alive() and _warmup._thread.is_alive()
    finally:
        release.set()
        _warmup._thread.join(30)
