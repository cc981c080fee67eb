"""Stand-ins for a decoder that misbehaves, for the tests of decoding in a child
process. They live in a module of their own so that the child can import them
by name (a function defined in a test is pickled by reference too, but its
module pulls in pytest and the whole test's imports)."""

import os
import signal
import time
import warnings
from pathlib import Path

import numpy as np


def slow(path, **_):
    """A decoder stuck on a file: records its process id beside the file
    (``FILE.pid-N``), then never returns."""
    Path(f"{path}.pid-{os.getpid()}").touch()
    time.sleep(120)


def slow_when_named_slow(path, **limits):
    """:func:`gmm_segmenter.io.read_image`, except that files named ``slow*`` hang."""
    from gmm_segmenter.io import read_image

    if Path(path).name.startswith("slow"):
        slow(path)
    return read_image(path, **limits)


def greedy(path, **_):
    """A decoder that allocates without end (8 GiB at once)."""
    return np.ones(8 * 1024**3, np.uint8)


def greedy_when_named_greedy(path, **limits):
    from gmm_segmenter.io import read_image

    if Path(path).name.startswith("greedy"):
        greedy(path)
    return read_image(path, **limits)


def crash(path, **_):
    """A decoder with a memory error in C: the process dies of SIGSEGV."""
    os.kill(os.getpid(), signal.SIGSEGV)


def noisy(path, **_):
    """A decoder that prints on both standard streams and warns."""
    print("a decoder's message on stdout", flush=True)
    os.write(2, b"a decoder's message on stderr\n")
    warnings.warn(f"{path}: something odd", UserWarning, stacklevel=1)
    return np.arange(12, dtype=">u2").reshape(3, 4)


def process_id(path, **_):
    """The id of the process that decodes."""
    return np.array([[os.getpid()]])

