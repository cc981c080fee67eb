"""Fuzz the image readers and the model loader, each read in a killable subprocess.

Every example is a valid PNG, TIFF or model file with a few bytes
overwritten, deleted, inserted or cut off (or pure noise), as in
``tests/test_fuzz.py``. A worker process reads the examples one after the
other under a memory limit (``--memory``, default 2 GB of address space);
the parent kills it when one read takes longer than ``--seconds`` (default
10) and starts a new one. Each read must succeed or raise ``ValueError``;
the report counts

- hangs: reads killed after the time limit,
- crashes: the worker died (a signal, the memory limit, the OOM killer),
- escapes: any exception other than ``ValueError`` (``MemoryError`` from
  the memory limit included), or a ``ValueError`` that does not name the file,

and keeps every such file in ``--keep`` (default ``fuzz-failures/``) to be
replayed. ``load_model`` examples that load are also used to label an
image, which must work too.

    python benchmarks/fuzz.py --examples 10000            # every reader
    python benchmarks/fuzz.py --examples 3000 --readers tiff --seed 7

Exit status 0 when there is no hang, crash or escape.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

READERS = ("png", "tiff", "npz")
SUFFIXES = {"png": ".png", "tiff": ".tif", "npz": ".npz"}


# ------------------------------------------------------------------ seeds and mutations


def seed_bytes(kind, folder):
    """The valid file that ``kind``'s examples are mutated from."""
    if kind == "png":
        import imageio.v3 as iio

        image = (np.arange(12 * 10 * 3) % 251).astype(np.uint8).reshape(12, 10, 3)
        return iio.imwrite("<bytes>", image, extension=".png")
    if kind == "tiff":
        import tifffile

        buffer = io.BytesIO()
        tifffile.imwrite(buffer, (np.arange(8 * 9) * 300).astype(np.uint16).reshape(8, 9),
                         compression="zlib")
        return buffer.getvalue()
    from gmm_segmenter import GMMSegmenter
    from gmm_segmenter.io import save_model

    path = save_model(GMMSegmenter(3, beta=0.0, random_state=0).fit(_probe()),
                      Path(folder) / "seed.npz")
    return path.read_bytes()


def _probe():
    return np.repeat([10.0, 100.0, 200.0], 20)[np.newaxis].repeat(5, axis=0)


def mutate(data, rng):
    """``data`` with 1 to 8 random bytes overwritten, deleted, inserted or cut off."""
    data = bytearray(data)
    for _ in range(rng.integers(1, 9)):
        if not data:
            break
        action = rng.choice(["flip", "delete", "insert", "truncate", "noise"],
                            p=[0.4, 0.2, 0.2, 0.1, 0.1])
        where = int(rng.integers(0, len(data)))
        if action == "flip":
            data[where] = int(rng.integers(0, 256))
        elif action == "delete":
            del data[where : where + int(rng.integers(1, 17))]
        elif action == "insert":
            data[where:where] = rng.bytes(int(rng.integers(1, 17)))
        elif action == "truncate":
            del data[where:]
        else:
            return rng.bytes(int(rng.integers(0, 513)))
    return bytes(data)


# ------------------------------------------------------------------ the worker


def worker():
    """Read ``kind<TAB>path`` lines from stdin; answer one JSON line each."""
    from gmm_segmenter.io import load_model, read_image

    probe = _probe()
    print(json.dumps({"outcome": "ready"}), flush=True)
    for line in sys.stdin:
        kind, path = line.rstrip("\n").split("\t", 1)
        started = time.perf_counter()
        try:
            if kind == "npz":
                segmenter = load_model(path)
                labels = segmenter.predict(probe)
                assert labels.shape == probe.shape and labels.min() >= 1
            else:
                image = read_image(path)
                assert image.ndim >= 2 and image.size > 0 and image.dtype.kind in "biuf"
            answer = {"outcome": "read"}
        except ValueError as error:
            cause = error.__cause__ or error.__context__
            if isinstance(cause, MemoryError):
                answer = {"outcome": "escape", "detail": f"memory limit: {error}"}
            elif not str(error).startswith(path):
                answer = {"outcome": "escape", "detail": f"ValueError not naming the file: {error}"}
            else:
                answer = {"outcome": "refused"}
        except BaseException as error:  # noqa: BLE001 - counted, not hidden
            answer = {"outcome": "escape", "detail": f"{type(error).__name__}: {error}"[:300]}
        answer["seconds"] = time.perf_counter() - started
        print(json.dumps(answer), flush=True)


class Worker:
    """A reading subprocess under a memory limit, restarted after a kill or a crash."""

    def __init__(self, memory_bytes):
        self.memory_bytes = memory_bytes
        self.process = None

    def _start(self):
        def limit():  # in the child, before exec
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))

        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
            preexec_fn=limit if sys.platform != "win32" else None, env=env,
        )
        # the imports are not timed: only reads are
        ready, _, _ = select.select([self.process.stdout], [], [], 300)
        if not ready or json.loads(self.process.stdout.readline() or "{}").get("outcome") != "ready":
            raise RuntimeError("the fuzz worker did not start (run it with --worker to see why)")

    def read(self, kind, path, seconds):
        """``(outcome, detail)`` of one read."""
        if self.process is None or self.process.poll() is not None:
            self._start()
        try:
            self.process.stdin.write(f"{kind}\t{path}\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return self._crashed()
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        if not ready:
            self.stop()
            return "hang", f"no answer in {seconds:g} s"
        line = self.process.stdout.readline()
        if not line:
            return self._crashed()
        answer = json.loads(line)
        self.seconds = answer.get("seconds", 0.0)
        return answer["outcome"], answer.get("detail", "")

    def _crashed(self):
        status = self.process.wait()
        self.process = None
        return "crash", f"worker exited with status {status}"

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


# ------------------------------------------------------------------ the run


def run(kind, examples, seed, seconds, memory_bytes, keep, folder, quiet):
    rng = np.random.default_rng([seed, READERS.index(kind)])
    original = seed_bytes(kind, folder)
    counts = {"read": 0, "refused": 0, "hang": 0, "crash": 0, "escape": 0}
    slowest = 0.0
    path = Path(folder) / f"fuzzed{SUFFIXES[kind]}"
    reader = Worker(memory_bytes)
    try:
        for index in range(examples):
            data = mutate(original, rng)
            path.write_bytes(data)
            reader.seconds = seconds
            outcome, detail = reader.read(kind, str(path), seconds)
            slowest = max(slowest, reader.seconds)
            counts[outcome] += 1
            if outcome in ("hang", "crash", "escape"):
                keep.mkdir(parents=True, exist_ok=True)
                kept = keep / f"{kind}-{seed}-{index}-{outcome}{SUFFIXES[kind]}"
                kept.write_bytes(data)
                print(f"  {kind} #{index}: {outcome}: {detail} (kept as {kept})", flush=True)
            if not quiet and (index + 1) % 500 == 0:
                print(f"  {kind}: {index + 1} examples, {counts}", flush=True)
    finally:
        reader.stop()
    return counts, slowest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="examples per reader")
    parser.add_argument("--readers", default=",".join(READERS),
                        help=f"comma-separated, from {', '.join(READERS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per read")
    parser.add_argument("--memory", type=float, default=2.0, help="memory limit in GB")
    parser.add_argument("--keep", type=Path, default=Path("fuzz-failures"),
                        help="folder for the files that hang, crash or escape")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker()
        return 0
    failures = 0
    folder = tempfile.mkdtemp(prefix="gmm-fuzz-")
    try:
        for kind in args.readers.split(","):
            started = time.perf_counter()
            counts, slowest = run(kind, args.examples, args.seed, args.seconds,
                                  int(args.memory * 1e9), args.keep, folder, args.quiet)
            failures += counts["hang"] + counts["crash"] + counts["escape"]
            print(
                f"{kind}: {args.examples} examples in {time.perf_counter() - started:.0f} s "
                f"(slowest read {slowest:.2f} s): {counts['read']} read, "
                f"{counts['refused']} refused with ValueError, {counts['hang']} hangs, "
                f"{counts['crash']} crashes, {counts['escape']} escapes", flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
