"""Scale: volumes larger than memory, bounded memory in memory, one-core speed.

Three parts, each printed as it finishes:

(a) **out of core**: writes a synthetic uint16 volume (``--size-gb``, default
    12 GB; smooth seeded blobs in three classes plus Gaussian noise) chunk by
    chunk into a temporary zarr store, from the workers of a memory-limited
    ``LocalCluster`` (``--workers`` x ``--memory-limit``, default 2 x 1.5 GB),
    fits ``GMMSegmenter`` from the chunks and writes the labels to a second
    zarr store, lazily, block by block. Prints the throughput (voxels/s) of
    fit and of predict+write and the peak memory of any worker (RSS sampled
    every 0.25 s through ``client.run``). Both stores are deleted at the end,
    also on error or Ctrl-C.
(b) **in memory, bounded**: peak extra memory (tracemalloc) of ``predict``
    for a 4096 x 4096 RGB uint8 image and a 512 x 512 x 256 uint16 volume,
    against the naive approach (a float64 pixel table and
    ``GaussianMixture.predict`` with the same parameters).
(c) **near the limit**: ``predict`` throughput (``beta=0``) on one core
    against a plain copy of the same pixels as a float32 array (the
    memory-bandwidth floor): RGB full covariance K=3, and uint16 grayscale
    (lookup table). Targets: grayscale within 5x of the copy, RGB within 20x.

    python benchmarks/scale.py --quick              # smoke run, seconds
    python benchmarks/scale.py --only a --beta 0    # the 12 GB volume, pixel-wise
    python benchmarks/scale.py --only a --size-gb 1 # spatial prior, smaller volume
    python benchmarks/scale.py --only bc            # in-memory parts only

It is a report, not a test: the exit code is 0 unless the script crashes.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import threading
import time
import tracemalloc

import numpy as np
from threadpoolctl import threadpool_limits

from gmm_segmenter import GMMSegmenter

GIB = 1 << 30


# --------------------------------------------------------------------------
# (a) out of core


def volume_shape(size_gb: float, chunk: int) -> tuple[int, int, int]:
    """A (Z, Y, X) uint16 shape of about ``size_gb`` GB, Y = X a multiple of ``chunk``."""
    voxels = size_gb * 1e9 / 2
    side = max(chunk, int(round(math.sqrt(voxels / 64) / chunk)) * chunk)
    side = min(side, 2048)
    depth = max(chunk // 2, int(round(voxels / side / side)))
    return depth, side, side


def synthetic_block(block_info=None):
    """One block of the phantom: three classes from a global smooth field, plus noise."""
    info = block_info[None]
    (z0, z1), (y0, y1), (x0, x1) = info["array-location"]
    z = np.arange(z0, z1, dtype=np.float32)[:, None, None]
    y = np.arange(y0, y1, dtype=np.float32)[None, :, None]
    x = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    field = np.sin(z / 37) + np.sin(y / 53 + z / 91) + np.cos(x / 41 - y / 77)
    classes = np.digitize(field, np.array([-0.8, 0.8], dtype=np.float32))
    seed = abs(hash(tuple(info["chunk-location"]))) % (1 << 32)
    rng = np.random.default_rng([seed, 12345])
    noise = rng.standard_normal(field.shape, dtype=np.float32) * 300
    values = 1000 + 1000 * classes.astype(np.float32) + noise
    return np.clip(values, 0, 65535).astype(np.uint16)


class MemorySampler:
    """Peak RSS of any worker, sampled in a background thread."""

    def __init__(self, client, interval=0.25):
        self.client, self.interval = client, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        def rss():
            import psutil

            return psutil.Process().memory_info().rss

        while not self._stop.is_set():
            try:
                sizes = self.client.run(rss)
                self.peak = max(self.peak, *sizes.values())
            except Exception:  # a worker restarting: keep sampling
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def out_of_core(args) -> None:
    import dask.array as da
    from dask.diagnostics import ProgressBar  # noqa: F401  (the CLI's progress bar)
    from distributed import Client, LocalCluster, progress

    chunk = args.chunk
    shape = volume_shape(args.size_gb, chunk)
    n_voxels = math.prod(shape)
    workdir = tempfile.mkdtemp(prefix="gmm-scale-", dir=args.tmpdir)
    print(f"\n(a) out of core: volume {shape} uint16 = {n_voxels * 2 / 1e9:.2f} GB "
          f"in {workdir}, chunks {chunk}^3, {args.workers} workers x {args.memory_limit}, "
          f"beta={args.beta}", flush=True)
    try:
        with LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True,
            memory_limit=args.memory_limit, dashboard_address=None, silence_logs=40,
            local_directory=workdir,
        ) as cluster, Client(cluster) as client:
            limit = cluster.workers[next(iter(cluster.workers))].memory_manager.memory_limit
            volume_path = os.path.join(workdir, "volume.zarr")
            labels_path = os.path.join(workdir, "labels.zarr")
            synthetic = da.map_blocks(
                synthetic_block, dtype=np.uint16, chunks=da.core.normalize_chunks(chunk, shape),
                meta=np.empty((0, 0, 0), np.uint16),
            )
            with MemorySampler(client) as sampler:
                started = time.perf_counter()
                future = synthetic.to_zarr(volume_path, compute=False).persist()
                if not args.quiet:
                    progress(future)
                future.compute()
                written = time.perf_counter() - started
                print(f"\n  wrote the volume in {written:.0f} s "
                      f"({n_voxels / written:.3g} voxels/s)", flush=True)

                volume = da.from_zarr(volume_path)
                started = time.perf_counter()
                segmenter = GMMSegmenter(3, beta=args.beta, random_state=0).fit(volume)
                fitted = time.perf_counter() - started
                print(f"  fit ({segmenter.fit_method_}) in {fitted:.1f} s "
                      f"({n_voxels / fitted:.3g} voxels/s); means "
                      f"{np.round(segmenter.means_.ravel()).tolist()}", flush=True)

                labels = segmenter.predict(volume)
                started = time.perf_counter()
                future = labels.to_zarr(labels_path, compute=False).persist()
                if not args.quiet:
                    progress(future)
                future.compute()
                predicted = time.perf_counter() - started
            print(f"\n  predicted and wrote the labels in {predicted:.0f} s: "
                  f"{n_voxels / predicted:.3g} voxels/s", flush=True)
            print(f"  peak worker memory {sampler.peak / GIB:.2f} GiB "
                  f"(limit {limit / GIB:.2f} GiB per worker; volume "
                  f"{n_voxels * 2 / limit:.1f}x one worker's limit, "
                  f"{n_voxels * 2 / (limit * args.workers):.1f}x the cluster's)", flush=True)
            check = da.from_zarr(labels_path)[:: max(1, shape[0] // 4), ::64, ::64].compute()
            print(f"  labels present: {np.unique(check).tolist()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"  deleted {workdir}", flush=True)


# --------------------------------------------------------------------------
# (b) bounded memory in memory


def peak_extra(function) -> tuple[int, object]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, result


def naive_predict(segmenter, image, channel_axis):
    from sklearn.mixture import GaussianMixture

    pixels = image if channel_axis is None else np.moveaxis(image, channel_axis, -1)
    table = pixels.reshape(-1, segmenter.n_features_in_).astype(np.float64)
    mixture = GaussianMixture(segmenter.n_components_, covariance_type=segmenter.covariance_type)
    mixture.weights_, mixture.means_ = segmenter.weights_, segmenter.means_
    mixture.covariances_ = segmenter.covariances_
    mixture.precisions_cholesky_ = segmenter.precisions_cholesky_
    return mixture.predict(table).reshape(pixels.shape[:-1] if channel_axis is not None
                                          else pixels.shape)


def rgb_image(side: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    tiles = np.array([[200, 40, 40], [40, 160, 60], [50, 60, 210]], dtype=np.float32)
    y, x = np.mgrid[:side, :side]
    classes = ((np.sin(y / 50) + np.cos(x / 70)) > 0).astype(int) + (
        (np.sin(x / 31 + y / 47)) > 0.5
    )
    image = tiles[classes] + rng.normal(0, 20, (side, side, 3)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def gray_volume(shape) -> np.ndarray:
    block_info = {None: {"array-location": [(0, n) for n in shape], "chunk-location": (0, 0, 0)}}
    return synthetic_block(block_info)


def bounded_memory(args) -> None:
    side = 512 if args.quick else 4096
    shape = (32, 64, 64) if args.quick else (512, 512, 256)
    print("\n(b) peak extra memory of predict (tracemalloc), ours vs naive")
    cases = [
        (f"RGB uint8 {side}x{side}", rgb_image(side), -1),
        (f"uint16 volume {'x'.join(map(str, shape))}", gray_volume(shape), None),
    ]
    for name, image, channel_axis in cases:
        for beta in (0.0, 1.0):
            segmenter = GMMSegmenter(3, channel_axis=channel_axis, beta=beta, random_state=0)
            segmenter.fit(image)
            ours, labels = peak_extra(lambda: segmenter.predict(image))
            line = (f"  {name}, beta={beta:g}: ours {ours / 2**20:.0f} MiB "
                    f"(output {labels.nbytes / 2**20:.0f} MiB)")
            if beta == 0:
                naive, _ = peak_extra(lambda: naive_predict(segmenter, image, channel_axis))
                line += f", naive {naive / 2**20:.0f} MiB, ratio {naive / ours:.1f}x"
            print(line, flush=True)


# --------------------------------------------------------------------------
# (c) one core against a copy


def best_time(function, repeat):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def against_copy(args) -> None:
    side = 512 if args.quick else 4096
    repeat = 2 if args.quick else 3
    print("\n(c) one core: predict (beta=0) time / time of a float32 copy of the pixels")
    cases = [
        ("RGB uint8, full covariance, K=3", rgb_image(side), -1, 20),
        ("uint16 grayscale (lookup table), K=3",
         gray_volume((1, side, side))[0], None, 5),
    ]
    os.environ["OMP_NUM_THREADS"] = "1"
    with threadpool_limits(limits=1):
        for name, image, channel_axis, target in cases:
            segmenter = GMMSegmenter(3, channel_axis=channel_axis, beta=0, random_state=0)
            segmenter.fit(image)
            pixels = np.ascontiguousarray(image, dtype=np.float32)
            copy = best_time(lambda: pixels.copy(), repeat)
            predict = best_time(lambda: segmenter.predict(image), repeat)
            ratio = predict / copy
            n = image.shape[0] * image.shape[1]
            print(f"  {name}: predict {predict * 1e3:.0f} ms ({n / predict:.3g} px/s), "
                  f"copy {copy * 1e3:.1f} ms, ratio {ratio:.1f}x "
                  f"(target {target}x: {'PASS' if ratio <= target else 'FAIL'})", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", default="abc", help="parts to run, e.g. 'a' or 'bc'")
    parser.add_argument("--size-gb", type=float, default=None,
                        help="volume size for (a) (default 12, 0.05 with --quick)")
    parser.add_argument("--chunk", type=int, default=None, help="chunk side (default 128)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="1.5GB", help="per worker")
    parser.add_argument("--beta", type=float, default=1.0, help="spatial prior for (a)")
    parser.add_argument("--tmpdir", default=None, help="where the zarr stores go")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.size_gb is None:
        args.size_gb = 0.05 if args.quick else 12.0
    if args.chunk is None:
        args.chunk = 64 if args.quick else 128
    if "a" in args.only:
        out_of_core(args)
    if "b" in args.only:
        bounded_memory(args)
    if "c" in args.only:
        against_copy(args)


if __name__ == "__main__":
    main()
