"""Decoding an input file in a child process, under a time and a memory limit.

The header checks of :func:`gmm_segmenter.io.read_image` refuse files that
declare too much, but a file within those bounds can still keep a decoder
busy for hours, make it allocate without end, or crash it. ``gmm-segment``
therefore decodes each file in a child process: the child limits its own
address space (``RLIMIT_AS``), reads, and sends the array back through a
pipe; the parent waits at most the time limit, then kills it. A read that
runs out of time or memory, or a decoder that crashes, becomes one
``ValueError`` naming the file, and the batch goes on.

Children come from multiprocessing's fork server, which imports the readers
once, so starting one costs milliseconds rather than an interpreter start.
The guard needs Linux (``RLIMIT_AS`` and the fork server); elsewhere files
are read in the calling process, without it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
import warnings
from dataclasses import dataclass

#: Default ``--read-timeout``: seconds one file may take to decode.
DEFAULT_SECONDS = 60.0
# The default memory limit: the memory free when the read starts, but at least
# this much (decoders need buffers of their own even for a tiny image) ...
_MIN_MEMORY = 256 * 1024**2
# ... and at most this many bytes per value --max-pixels allows: 8-byte values,
# decoded once by the decoder and once more into the array (palettes expand,
# imageio copies Pillow's buffer).
_BYTES_PER_VALUE = 32
# The array's bytes come through the pipe, read straight into the array;
# a larger pipe buffer than the 64 KiB default makes that about 1 GB/s.
_PIPE_BYTES = 1024**2
_F_SETPIPE_SZ = 1031  # from <fcntl.h>; Linux only, like the guard
# Loaded once in the fork server, so that a child starts ready to decode.
_PRELOAD = [
    "__main__", "numpy", "gmm_segmenter.io", "gmm_segmenter._image", "tifffile",
    "imageio.v3", "imageio.plugins.pillow", "PIL.Image", "PIL.PngImagePlugin",
    "PIL.TiffImagePlugin", "PIL.JpegImagePlugin", "psutil", "imagecodecs",
    "gmm_segmenter.cli._isolated",
]  # a module that is not installed is left out


def supported() -> bool:
    """Whether files can be decoded in a child under limits here (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import multiprocessing
        import resource  # noqa: F401

        return "forkserver" in multiprocessing.get_all_start_methods()
    except ImportError:  # pragma: no cover - a Python built without them
        return False


@dataclass(frozen=True)
class Limits:
    """How long, and with how much memory, one file may be decoded.

    ``seconds`` ``None``: no time limit. ``memory``: ``"auto"`` (the free
    memory, see :meth:`memory_bytes`), a number of bytes, or ``None`` (no
    limit). With neither limit the file is read in this process.
    """

    seconds: float | None = DEFAULT_SECONDS
    memory: int | str | None = "auto"
    max_pixels: int | None = None

    @classmethod
    def from_arguments(cls, args) -> Limits:
        """``--read-timeout``, ``--read-memory`` and ``--max-pixels``, as limits."""
        seconds, memory = args.read_timeout, args.read_memory
        return cls(
            seconds=DEFAULT_SECONDS if seconds is None else (seconds or None),
            memory="auto" if memory is None else (memory or None),
            max_pixels=args.max_pixels,
        )

    @property
    def active(self) -> bool:
        return (self.seconds is not None or self.memory is not None) and supported()

    def memory_bytes(self) -> int | None:
        """Bytes the decoder may add to the child's address space."""
        if self.memory != "auto":
            return self.memory
        from .._image import available_memory
        from ..io import MAX_PIXELS

        free = available_memory()
        allowed = _BYTES_PER_VALUE * (self.max_pixels or MAX_PIXELS)
        return max(_MIN_MEMORY, allowed if free is None else min(free, allowed))


# ------------------------------------------------------------------ the parent


_starting = threading.Lock()
_started = False
_running: dict = {}  # process -> whether it is being stopped


def start(*, quiet=True) -> None:
    """Start the fork server now, so that it imports the readers while the
    caller imports its own; ``quiet``: its children print nothing."""
    with _starting:
        _start(quiet)


def _start(quiet):
    global _started
    import multiprocessing

    if _started:
        return
    _started = True
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    # The server, and every child it forks, inherits the standard output and
    # error it starts with: a decoder's own messages (or the traceback of a
    # child that Ctrl-C reached before it could ignore it) would break the one
    # line per error.
    with _output_to_null(quiet):
        forkserver.ensure_running()


@contextlib.contextmanager
def _output_to_null(quiet):
    """File descriptors 1 and 2 on the null device while starting a process."""
    if not quiet:
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def stop_all() -> None:
    """Kill every child that is decoding (Ctrl-C while other threads read)."""
    for process in list(_running):
        _running[process] = True
        with contextlib.suppress(Exception):
            process.kill()


def shut_down() -> None:
    """Before ``os._exit``: stop the children, and remove the temporary folder
    of multiprocessing (it holds the fork server's socket), which the exit
    handlers that ``os._exit`` skips would otherwise remove."""
    stop_all()
    if _started:
        import shutil
        from multiprocessing import util

        shutil.rmtree(util.get_temp_dir(), ignore_errors=True)


def read(path, reader, limits: Limits):
    """``reader(path)``, decoded in a child under ``limits`` where :func:`supported`.

    ``reader`` must be picklable (a module-level function, or a
    :func:`functools.partial` of one). Warnings the child raises are raised
    again here; its exceptions are raised again, except that running out of
    time or memory, and a crash, are a ``ValueError`` naming ``path``.
    """
    if not limits.active:
        return reader(path)
    import fcntl
    import multiprocessing

    import numpy as np

    context = multiprocessing.get_context("forkserver")
    memory = limits.memory_bytes()
    receiver, sender = context.Pipe(duplex=False)
    with contextlib.suppress(OSError):
        fcntl.fcntl(receiver.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
    process = context.Process(
        target=_decode, args=(sender, reader, path, memory), name="gmm-segment-reader",
        daemon=True,
    )
    try:
        with _starting:
            try:
                _start(quiet=True)
                process.start()
            except (OSError, EOFError, RuntimeError) as error:
                raise ValueError(
                    f"{path}: cannot start a process to decode the file in ({error}); "
                    "--read-timeout 0 --read-memory none decodes in this process"
                ) from error
            _running[process] = False
        sender.close()
        header = _receive(receiver, process, limits.seconds, path)
        if header[0] == "error":
            _, error, out_of_memory = header
            if out_of_memory:
                raise _out_of_memory(path, memory) from None
            raise error
        _, shape, dtype, caught = header
        image = np.empty(shape, dtype)
        flat = memoryview(image.reshape(-1).view(np.uint8))
        offset = 0
        while offset < image.nbytes:
            received = os.readv(receiver.fileno(), [flat[offset:]])
            if not received:
                raise _ended(process, path)
            offset += received
        for category, message in caught:
            warnings.warn(message, category, stacklevel=2)
        return image
    finally:
        receiver.close()
        sender.close()
        _end(process)


def _receive(receiver, process, seconds, path):
    """The child's header: the array's shape, dtype and warnings, or its error."""
    if not receiver.poll(seconds):  # waits until the child writes or ends
        raise ValueError(
            f"{path}: reading took longer than the limit of {seconds:g} s and was "
            "stopped; if the file is genuine, allow more time (--read-timeout SECONDS, "
            "0 for no limit)"
        )
    try:
        return receiver.recv()
    except EOFError:
        raise _ended(process, path) from None


def _ended(process, path):
    """The error for a child that ended without an answer."""
    process.join(10)
    code = process.exitcode
    if _running.get(process):
        return ValueError(f"{path}: reading was stopped")
    if code is not None and code < 0:
        name = _signal_name(-code)
        if -code == signal.SIGKILL:
            return ValueError(
                f"{path}: the reading process was killed ({name}), most likely by the "
                "system for lack of memory"
            )
        return ValueError(f"{path}: the decoder crashed ({name}) while reading the file")
    return ValueError(f"{path}: the reading process ended without an answer (status {code})")


def _out_of_memory(path, memory):
    from .._image import format_bytes

    if memory is None:
        return ValueError(f"{path}: decoding ran out of memory")
    return ValueError(
        f"{path}: decoding needs more than the {format_bytes(memory)} of memory allowed "
        "for reading one file; if the file is genuine, allow more (--read-memory SIZE, "
        "none for no limit)"
    )


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _end(process):
    """Kill the child if it still runs, and wait for it: no zombie is left."""
    with contextlib.suppress(Exception):
        if process.pid is not None:
            if process.exitcode is None:
                process.kill()
            process.join()
            process.close()  # its file descriptors, now rather than when collected
    _running.pop(process, None)


# ------------------------------------------------------------------ the child


def _decode(sender, reader, path, memory):
    """In the child: read, then send a header and the array's bytes (or the error)."""
    import numpy as np

    # Ctrl-C is the parent's to handle: it kills this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if memory is not None:
        _limit_address_space(memory)
    image = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            image = np.ascontiguousarray(reader(path))
        if image.dtype.hasobject:  # pointers mean nothing in another process
            raise TypeError(f"{path}: decoded to Python objects, not pixel values")
        header = ("image", image.shape, image.dtype, [_picklable_warning(w) for w in caught])
    except BaseException as error:  # sent to the parent, which raises it again
        image = None
        header = ("error", _picklable_error(error), _ran_out_of_memory(error))
    sender.send(header)
    if image is not None:
        flat, offset = memoryview(image.reshape(-1).view(np.uint8)), 0
        while offset < image.nbytes:
            offset += os.write(sender.fileno(), flat[offset : offset + _PIPE_BYTES])
    sender.close()


def _die_with_parent():
    """Be killed when the fork server ends (it ends with gmm-segment, however it ends)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _limit_address_space(memory):
    """Allow this process ``memory`` bytes of address space beyond what it uses now."""
    import resource

    with open("/proc/self/statm") as stream:
        used = int(stream.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + int(memory)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _ran_out_of_memory(error):
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, MemoryError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _picklable_error(error):
    """``error`` if it survives pickling, else a ``RuntimeError`` with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _picklable_warning(caught):
    try:
        pickle.dumps(caught.category)
        category = caught.category
    except Exception:
        category = UserWarning
    return category, str(caught.message)
