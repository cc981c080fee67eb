"""Fuzz the image readers and the model loader, each read in a killable subprocess.

Every example is a valid PNG, TIFF (plain, ImageJ or OME) or model file with a few bytes
overwritten, deleted, inserted or cut off (or pure noise), as in
``tests/test_fuzz.py``; or a valid zarr store (format 2 or 3, one of them
sharded) whose metadata (``.zarray``, ``.zattrs``, ``zarr.json``) had values
replaced by hostile ones (huge, negative, of the wrong type, deeply nested)
or its bytes changed, and whose chunks were changed, removed, swapped or
added. A worker process reads the examples one after the other under a
memory limit (``--memory``, default 2 GB of address space); the parent kills
it when one read takes longer than ``--seconds`` (default 10) and starts a
new one. Each read must succeed or raise ``ValueError``; the report counts

- hangs: reads killed after the time limit,
- crashes: the worker died (a signal, the memory limit, the OOM killer),
- escapes: any exception other than ``ValueError`` (``MemoryError`` from
  the memory limit included), or a ``ValueError`` that does not name the file,

and keeps every such file in ``--keep`` (default ``fuzz-failures/``) to be
replayed. ``load_model`` examples that load are also used to label an
image, which must work too. A zarr store is read as ``gmm-segment`` reads
it (``read_zarr`` with ``max_pixels=10**6``, as ``--max-pixels`` would set),
then materialised, and labelled chunk by chunk by a model fitted on the
unchanged store; only the labelling may fail with a ``ValueError`` that does
not name the store (the command prefixes those with the input's name).

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

READERS = ("png", "tiff", "npz", "zarr")
SUFFIXES = {"png": ".png", "tiff": ".tif", "npz": ".npz", "zarr": ".zarr"}
# A mutated zarr store is materialised, so its claimed size is bounded the way
# gmm-segment --max-pixels bounds it; without a limit (2**40 values) it would
# be read chunk by chunk for as long as it claims.
ZARR_MAX_PIXELS = 10**6


# ------------------------------------------------------------------ seeds and mutations


def seed_files(kind, folder) -> list:
    """The valid files that ``kind``'s examples are mutated from, in turn: for TIFF
    also an ImageJ hyperstack and an OME-TIFF that record their voxel size
    (what ``read_tiff_axes`` parses)."""
    if kind != "tiff":
        return [seed_bytes(kind, folder)]
    import tifffile

    stack = (np.arange(2 * 2 * 8 * 9) * 30).astype(np.uint16).reshape(2, 2, 8, 9)
    imagej, ome = io.BytesIO(), io.BytesIO()
    tifffile.imwrite(imagej, stack, imagej=True, resolution=(2.0, 2.0), compression="zlib",
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"})
    tifffile.imwrite(ome, stack[:, 0], ome=True, compression="zlib", metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 1.5})
    return [seed_bytes(kind, folder), imagej.getvalue(), ome.getvalue()]


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


def _volume():
    """The pixels of the seed zarr stores: three levels, a corner of fill value."""
    rng = np.random.default_rng(0)
    levels = np.repeat([100, 1000, 3000], 40)[rng.permutation(120)].reshape(4, 6, 5)
    volume = (levels + rng.integers(0, 50, levels.shape)).astype(np.uint16)
    volume[:2, :3] = 0  # chunks of the fill value only are not stored
    return volume


def seed_stores(folder):
    """The valid zarr stores that zarr examples are mutated from, as
    ``{relative path: bytes}``: format 2 (zstd; zlib behind a delta filter,
    float32) and format 3 (zstd; sharded)."""
    import numcodecs
    import zarr  # zarr >= 3 (create_array)

    volume = _volume()
    variants = [
        dict(zarr_format=2),
        dict(zarr_format=2, compressors=numcodecs.Zlib(level=1),
             filters=[numcodecs.Delta(dtype="<f4")], dtype="float32"),
        dict(zarr_format=3),
        dict(zarr_format=3, shards=(4, 6, 5)),
    ]
    stores = []
    for number, variant in enumerate(variants):
        path = Path(folder) / f"seed-{number}.zarr"
        settings = dict(variant)
        dtype = settings.pop("dtype", "uint16")
        array = zarr.create_array(str(path), shape=volume.shape, chunks=(2, 3, 5),
                                  dtype=dtype, **settings)
        array[:] = volume.astype(dtype)
        array.attrs["name"] = "seed"
        stores.append({
            file.relative_to(path).as_posix(): file.read_bytes()
            for file in sorted(path.rglob("*")) if file.is_file()
        })
    return stores


_METADATA_NAMES = (".zarray", ".zattrs", ".zgroup", "zarr.json")
# Values a hostile store might put anywhere in its metadata.
_HOSTILE_VALUES = [
    0, -1, 1, 2, 3, 255, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1, 2**63, 2**64,
    -(2**63), 10**12, 10**100, 1e300, -0.0, 0.5, float("nan"), float("inf"), "NaN",
    "Infinity", "", "x", "<f8", "|O", "<U8", "|V3", ">i2", "<c16", "int64", "float16",
    "complex128", "bool", "string", "bytes", "r16", None, True, False, [], {}, [0], [1],
    [1, 1, 1], [10**6, 10**6, 10**6], [2**31, 2**31], [1] * 40, [-1, 6, 5],
    {"id": "zlib"}, {"id": "pickle"}, {"id": "blosc", "cname": "nothing"},
    {"name": "bytes"}, {"name": "numcodecs.pickle"}, {"name": "transpose"},
    {"name": "sharding_indexed", "configuration": {"chunk_shape": [1, 1, 1]}},
]


def _deep(depth):
    nested = []
    for _ in range(depth):
        nested = [nested]
    return nested


def _hostile_value(rng, old):
    """A replacement for the metadata value ``old``."""
    choice = rng.random()
    if isinstance(old, int) and not isinstance(old, bool) and choice < 0.4:
        return int(rng.choice([old + 1, old - 1, -old, old * 2**int(rng.integers(1, 40)), 0]))
    if choice < 0.45:
        return _deep(int(rng.integers(100, 5000)))
    value = _HOSTILE_VALUES[int(rng.integers(len(_HOSTILE_VALUES)))]
    return json.loads(json.dumps(value))  # a fresh copy


def _mutate_json(text, rng):
    """``text`` (JSON) with one value replaced, removed or added, at any depth."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return mutate(text, rng)
    containers = []

    def collect(node):
        if isinstance(node, (dict, list)) and len(containers) < 500:
            containers.append(node)
            for child in (node.values() if isinstance(node, dict) else node):
                collect(child)

    collect(document)
    if not containers:
        return json.dumps(_hostile_value(rng, document)).encode()
    node = containers[int(rng.integers(len(containers)))]
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    action = rng.choice(["replace", "remove", "add"], p=[0.7, 0.15, 0.15])
    if action == "add" or not keys:
        if isinstance(node, dict):
            node[str(rng.choice(["shape", "chunks", "dtype", "codecs", "filters", "x"]))] = (
                _hostile_value(rng, None))
        else:
            node.append(_hostile_value(rng, None))
    elif action == "remove":
        del node[keys[int(rng.integers(len(keys)))]]
    else:
        key = keys[int(rng.integers(len(keys)))]
        node[key] = _hostile_value(rng, node[key])
    try:
        return json.dumps(document, allow_nan=True).encode()
    except (ValueError, RecursionError):
        return text


def mutate_store(files, rng):
    """A copy of the store ``files`` with 1 to 4 changes to its metadata or chunks."""
    files = dict(files)
    metadata = [name for name in files if name.rpartition("/")[2] in _METADATA_NAMES]
    for _ in range(int(rng.integers(1, 5))):
        chunks = [name for name in files if name not in metadata]
        action = rng.choice(["json", "metadata bytes", "chunk bytes", "drop", "swap", "add"],
                            p=[0.45, 0.1, 0.2, 0.1, 0.05, 0.1])
        if action == "json" or (not chunks and action != "add"):
            name = metadata[int(rng.integers(len(metadata)))]
            files[name] = _mutate_json(files[name], rng)
        elif action == "metadata bytes":
            name = metadata[int(rng.integers(len(metadata)))]
            files[name] = mutate(files[name], rng)
        elif action == "chunk bytes":
            name = chunks[int(rng.integers(len(chunks)))]
            files[name] = mutate(files[name], rng)
        elif action == "drop":
            del files[chunks[int(rng.integers(len(chunks)))]]
        elif action == "swap" and len(chunks) > 1:
            first, second = rng.choice(chunks, size=2, replace=False)
            files[first], files[second] = files[second], files[first]
        else:
            separator = "/" if any(name.startswith("c/") for name in chunks) else "."
            index = [str(int(rng.integers(0, 4))) for _ in range(3)]
            name = ("c/" + "/".join(index)) if separator == "/" else ".".join(index)
            files[name] = rng.bytes(int(rng.integers(0, 300)))
    return files


def write_store(files, path):
    """The store ``files`` as a folder at ``path`` (replacing what was there)."""
    shutil.rmtree(path, ignore_errors=True)
    for name, data in files.items():
        target = Path(path) / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except OSError:  # a chunk named where a folder of chunks is
            pass


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


def _read_zarr_as_the_command_does(path, segmenter):
    """Read, materialise and label the store at ``path``; ``ValueError``s of
    the labelling (which the command prefixes with the input) come back named."""
    from gmm_segmenter.io import read_zarr

    volume = read_zarr(path, max_pixels=ZARR_MAX_PIXELS)
    pixels = volume.compute()
    assert isinstance(pixels, np.ndarray) and pixels.dtype.kind in "biuf", pixels.dtype
    try:
        labels = np.asarray(segmenter.predict(volume))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    assert labels.shape == pixels.shape and labels.min() >= 0


def worker():
    """Read ``kind<TAB>path`` lines from stdin; answer one JSON line each."""
    import warnings

    from gmm_segmenter import GMMSegmenter
    from gmm_segmenter.io import load_model, read_image, read_tiff_axes

    warnings.simplefilter("ignore")  # warnings are allowed; they must not flood the pipe
    probe = _probe()
    zarr_segmenter = GMMSegmenter(3, beta=1.0, random_state=0).fit(_volume())
    print(json.dumps({"outcome": "ready"}), flush=True)
    for line in sys.stdin:
        kind, path = line.rstrip("\n").split("\t", 1)
        started = time.perf_counter()
        try:
            if kind == "npz":
                segmenter = load_model(path)
                labels = segmenter.predict(probe)
                assert labels.shape == probe.shape and labels.min() >= 1
            elif kind == "zarr":
                _read_zarr_as_the_command_does(path, zarr_segmenter)
            else:
                image = read_image(path)
                assert image.ndim >= 2 and image.size > 0 and image.dtype.kind in "biuf"
                # gmm-segment then reads what the file records of its axes: never raises
                found = read_tiff_axes(path)
                assert found is None or isinstance(found.axes, str)
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
    originals = seed_stores(folder) if kind == "zarr" else seed_files(kind, folder)
    counts = {"read": 0, "refused": 0, "hang": 0, "crash": 0, "escape": 0}
    slowest, slowest_index = 0.0, None
    path = Path(folder) / f"fuzzed{SUFFIXES[kind]}"
    reader = Worker(memory_bytes)
    try:
        for index in range(examples):
            original = originals[index % len(originals)]
            if kind == "zarr":
                data = mutate_store(original, rng)
                write_store(data, path)
            else:
                data = mutate(original, rng)
                path.write_bytes(data)
            reader.seconds = seconds
            outcome, detail = reader.read(kind, str(path), seconds)
            if reader.seconds > slowest:
                slowest, slowest_index = reader.seconds, index
            counts[outcome] += 1
            if outcome in ("hang", "crash", "escape"):
                keep.mkdir(parents=True, exist_ok=True)
                kept = keep / f"{kind}-{seed}-{index}-{outcome}{SUFFIXES[kind]}"
                if kind == "zarr":
                    write_store(data, kept)
                else:
                    kept.write_bytes(data)
                print(f"  {kind} #{index}: {outcome}: {detail} (kept as {kept})", flush=True)
            if not quiet and (index + 1) % 500 == 0:
                print(f"  {kind}: {index + 1} examples, {counts}", flush=True)
    finally:
        reader.stop()
    return counts, slowest, slowest_index


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
            counts, slowest, slowest_index = run(kind, args.examples, args.seed, args.seconds,
                                                 int(args.memory * 1e9), args.keep, folder,
                                                 args.quiet)
            failures += counts["hang"] + counts["crash"] + counts["escape"]
            print(
                f"{kind}: {args.examples} examples in {time.perf_counter() - started:.0f} s "
                f"(slowest read {slowest:.2f} s, #{slowest_index}): {counts['read']} read, "
                f"{counts['refused']} refused with ValueError, {counts['hang']} hangs, "
                f"{counts['crash']} crashes, {counts['escape']} escapes", flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
