"""Speed, memory and fit quality of GMMSegmenter against the naive script.

The "naive" method is what the original script did: flatten every pixel to a
float64 table of shape (n_pixels, n_channels), fit
``sklearn.mixture.GaussianMixture(n_components=3, random_state=0)`` on all of
it and predict all of it. "Ours" is ``GMMSegmenter(3, channel_axis=...,
random_state=0)`` fit + predict on the image as it is.

Two images, built from scikit-image's bundled data only (no downloads):

* RGB uint8, 2048 x 2048: a checkerboard of 512 x 512 tiles of
  ``astronaut()`` and ``coffee()`` (coffee reflect-padded from 400 x 600 to
  512 x 512). Not an integer single-channel image, so ours fits a seeded
  subsample and predicts chunk by chunk.
* grayscale uint16, 4096 x 4096: ``camera()`` tiled 8 x 8, scaled by 256, plus
  seeded uniform noise 0..255 per pixel (about 65 000 distinct values). Ours
  fits the exact histogram and predicts through a lookup table.

For each image it prints the time of both methods (best of ``--repeat``), their
peak memory (separate pass), the mean log-likelihood per pixel of both fitted
mixtures on every pixel, the difference, the adjusted Rand index between the
two label maps, PASS/FAIL against the project's targets, and finally a table
to paste into docs. It is a report, not a test: the exit code is 0 unless the
script itself crashes.

    python benchmarks/speed.py            # full sizes, several minutes
    python benchmarks/speed.py --quick    # small images, a few seconds
    python benchmarks/speed.py --repeat 3 --profile --rss
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import platform
import pstats
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import sklearn
import skimage
from skimage import data
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from gmm_segmenter import GMMSegmenter

K = 3
SEED = 0

# targets (for the full-size images)
TARGET_SPEEDUP = {"rgb": 50.0, "uint16": 200.0}
TARGET_MAX_LL_DEFICIT = 0.01  # nats/pixel ours may lie below naive
TARGET_MEMORY_FRACTION = 0.25  # ours peak <= this * naive peak
# the default (spatial prior) against beta=0 on the same image, same run
TARGET_DEFAULT_RATIO = {"rgb": 4.0, "uint16": 10.0}

FULL_SIZE = {"rgb": 2048, "uint16": 4096}
QUICK_STRIDE = {"rgb": 16, "uint16": 16}  # quick: 128 x 128 RGB, 256 x 256 uint16

MiB = 1024.0**2


# ----------------------------------------------------------------- images


def rgb_image(size: int = FULL_SIZE["rgb"]) -> np.ndarray:
    """RGB uint8 mosaic of astronaut/coffee 512 x 512 tiles, size x size."""
    astronaut = data.astronaut()  # (512, 512, 3) uint8
    coffee = np.pad(data.coffee()[:, :512], ((56, 56), (0, 0), (0, 0)), mode="reflect")
    n_tiles = -(-size // 512)
    rows = []
    for i in range(n_tiles):
        row = [astronaut if (i + j) % 2 == 0 else coffee for j in range(n_tiles)]
        rows.append(np.concatenate(row, axis=1))
    mosaic = np.concatenate(rows, axis=0)[:size, :size]
    return np.ascontiguousarray(mosaic)


def uint16_image(size: int = FULL_SIZE["uint16"]) -> np.ndarray:
    """uint16 grayscale: camera() tiled, scaled to 16 bits, plus seeded noise."""
    camera = data.camera().astype(np.uint16) * 256  # (512, 512)
    n_tiles = -(-size // 512)
    tiled = np.tile(camera, (n_tiles, n_tiles))[:size, :size]
    noise = np.random.default_rng(SEED).integers(0, 256, size=(size, size), dtype=np.uint16)
    return tiled + noise  # at most 255*256 + 255 = 65535: no overflow


def build_cases(quick: bool):
    cases = []
    for name, build, channel_axis in (
        ("rgb", rgb_image, -1),
        ("uint16", uint16_image, None),
    ):
        image = build()
        if quick:
            # subsample the full mosaic rather than crop it, so the small image
            # still holds every tile's content
            stride = QUICK_STRIDE[name]
            image = np.ascontiguousarray(image[::stride, ::stride])
        cases.append((name, image, channel_axis))
    return cases


# ---------------------------------------------------------------- methods


def naive_fit_predict(image, channel_axis):
    """The original script: every pixel, float64, sklearn GaussianMixture."""
    n_channels = 1 if channel_axis is None else image.shape[channel_axis]
    X = image.reshape(-1, n_channels).astype(np.float64)
    gm = GaussianMixture(n_components=K, random_state=SEED).fit(X)
    labels = gm.predict(X)
    return gm, labels


PIXELWISE_ONLY = []  # set by --pixelwise-only


def ours_variants():
    """GMMSegmenter set-ups to benchmark: ``{label: extra constructor params}``.

    "ours" is exactly ``GMMSegmenter(3, channel_axis=..., random_state=0)``
    with the package defaults, whatever they are at the time of the run. If
    the defaults switch the spatial prior on (``beta != 0``), the pixel-wise
    model (``beta=0``, the same model as the naive script) is benchmarked as
    well, since it is the like-for-like comparison; ``--pixelwise-only``
    benchmarks only that one.
    """
    defaults = GMMSegmenter().get_params()
    if "beta" not in defaults or defaults["beta"] == 0:
        return {"ours": {}}
    if PIXELWISE_ONLY:
        return {"ours beta=0": {"beta": 0}}
    return {"ours": {}, "ours beta=0": {"beta": 0}}


def ours_method(params):
    def ours_fit_predict(image, channel_axis):
        seg = GMMSegmenter(K, channel_axis=channel_axis, random_state=SEED, **params)
        seg.fit(image)
        labels = seg.predict(image)
        return seg, labels

    return ours_fit_predict


def all_methods():
    methods = {"naive": naive_fit_predict}
    methods.update({label: ours_method(params) for label, params in ours_variants().items()})
    return methods


def time_best(function, image, channel_axis, repeat):
    """Best wall time of ``repeat`` runs (no tracing active) and the last result."""
    times, result = [], None
    for _ in range(repeat):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = function(image, channel_axis)
        times.append(time.perf_counter() - start)
    return min(times), result


# Peak memory is measured with tracemalloc in a pass of its own, after the
# timing pass, because tracing adds a cost to every allocation and would
# distort the times. numpy reports each array buffer to tracemalloc, so the
# traced peak is the high-water mark of all arrays (and Python objects) that
# the method allocates: the float64 pixel table, responsibilities, chunks,
# subsample, histogram, lookup table, posterior maps and the output labels.
# The input image exists before tracing starts and is counted for neither.
#
# Why not RSS: the process RSS is dominated by things both methods share
# (the interpreter with numpy/scipy/sklearn loaded, ~100+ MiB, and the input
# image itself), it is a per-process high-water mark (so each measurement
# needs a fresh process), freed heap is not always returned to the OS, and
# untouched pages of np.empty/np.zeros buffers never count. For "how much
# memory does the method itself need" tracemalloc is the sharper and fairer
# tool. Its blind spots are allocations made in C without telling Python --
# OpenBLAS and OpenMP scratch buffers, per-thread chunk buffers in sklearn's
# KMeans -- which are small and do not grow with the image. `--rss` runs a
# cross-check: each method in a fresh subprocess, reporting how far the
# resident-set high-water mark (VmHWM, reset just before the method runs)
# rises above the resident set at that moment.
def traced_peak(function, image, channel_axis):
    """Peak traced memory (bytes) above the baseline while ``function`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        result = function(image, channel_axis)
        peak = tracemalloc.get_traced_memory()[1] - baseline
        del result
    finally:
        tracemalloc.stop()
    return peak


def rss_peak_subprocess(case, method, quick):
    """Peak RSS growth (bytes) while ``method`` runs in a fresh process."""
    command = [sys.executable, os.path.abspath(__file__), "--_rss-child", case, method]
    if PIXELWISE_ONLY:
        command.append("--pixelwise-only")
    if quick:
        command.append("--quick")
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def _proc_status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _rss_child(case, method, quick):
    image, channel_axis = {name: (im, ax) for name, im, ax in build_cases(quick)}[case]
    function = all_methods()[method]
    function(image[:64, :64], channel_axis)  # imports and thread pools into the baseline
    gc.collect()
    try:  # Linux: writing 5 to clear_refs resets the high-water mark VmHWM
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        before = _proc_status_kib("VmRSS")
        result = function(image, channel_axis)
        after = _proc_status_kib("VmHWM")
    except OSError:  # elsewhere: growth of ru_maxrss (KiB on Linux, bytes on macOS)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = function(image, channel_axis)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del result
    print((after - before) * 1024)


# ------------------------------------------------------------- log-likelihood


def naive_score(gm, image, channel_axis):
    n_channels = 1 if channel_axis is None else image.shape[channel_axis]
    return gm.score(image.reshape(-1, n_channels).astype(np.float64))


def units_sanity_check():
    """Check that seg.score and GaussianMixture.score are in the same units.

    Fit ours (every variant) on small images -- an RGB one through the
    subsample path, a uint16 one through the histogram path -- copy its
    fitted parameters into a ``GaussianMixture`` and score the raw float64
    pixels with sklearn: the two mean log-likelihoods must agree to rounding.
    So both scores are nats per pixel in *input* intensity units, and their
    difference is meaningful.
    """
    worst = 0.0
    for params in ours_variants().values():
        for image, channel_axis in (
            (rgb_image(512)[::8, ::8], -1),
            (uint16_image(512)[::4, ::4], None),
        ):
            seg = GMMSegmenter(K, channel_axis=channel_axis, random_state=SEED, **params)
            seg.fit(image)
            gm = GaussianMixture(n_components=K, covariance_type="full")
            gm.weights_ = seg.weights_
            gm.means_ = seg.means_
            gm.covariances_ = seg.covariances_
            gm.precisions_cholesky_ = seg.precisions_cholesky_
            gm.precisions_ = seg.precisions_
            worst = max(worst, abs(naive_score(gm, image, channel_axis) - seg.score(image)))
    ok = worst < 1e-6
    print(
        "units check: GMMSegmenter.score vs GaussianMixture.score with the same "
        f"parameters, max |diff| = {worst:.1e} nats/pixel -> {'OK' if ok else 'MISMATCH'}"
    )
    return ok


# ---------------------------------------------------------------- profile


def profile_ours(name, image, channel_axis, label, params, top=12):
    """cProfile of our fit and predict: the functions with the most own time."""
    seg = GMMSegmenter(K, channel_axis=channel_axis, random_state=SEED, **params)
    for step, call in (("fit", lambda: seg.fit(image)), ("predict", lambda: seg.predict(image))):
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        call()
        profiler.disable()
        wall = time.perf_counter() - start
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(top)
        body = stream.getvalue()
        body = body[body.find("ncalls") :] if "ncalls" in body else body
        body = body.replace(os.path.dirname(os.path.dirname(np.__file__)) + os.sep, "")
        print(f"\n--- profile: {label} {step} on {name} (wall {wall:.3f} s under cProfile) ---")
        print(body.rstrip())


# ------------------------------------------------------------------- main


def load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def fmt_pass(ok, quick=False):
    # Quick runs use small images: the targets are meant for the full sizes.
    if quick:
        return "info (meets the full-size target)" if ok else "info (below the full-size target)"
    return "PASS" if ok else "FAIL"


_CODE_DESCRIPTION = []


def describe_code():
    """Commit of the package under test, and whether its sources are modified.

    Taken once, at the start of the run: the sources may change while it runs.
    """
    if _CODE_DESCRIPTION:
        return _CODE_DESCRIPTION[0]
    import gmm_segmenter

    root = os.path.dirname(os.path.abspath(gmm_segmenter.__file__))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "describe", "--always", "--dirty"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    defaults = GMMSegmenter().get_params()
    shown = {k: defaults[k] for k in ("beta", "init_params", "max_samples") if k in defaults}
    _CODE_DESCRIPTION.append(f"gmm_segmenter at {commit}; defaults {shown}")
    return _CODE_DESCRIPTION[0]


def run_case(name, image, channel_axis, repeat, rss, quick):
    n_pixels = image.shape[0] * image.shape[1]
    kind = f"{image.shape[1]}x{image.shape[0]} {'RGB' if image.ndim == 3 else 'gray'} {image.dtype}"
    print(f"\n=== {name}: {kind} ({n_pixels / 1e6:.2f} Mpx) ===", flush=True)
    rows = []

    t_naive, (gm, naive_labels) = time_best(naive_fit_predict, image, channel_axis, repeat)
    ll_naive = naive_score(gm, image, channel_axis)
    print(
        f"naive        {t_naive:8.3f} s  LL {ll_naive:.5f}  "
        f"(n_iter={gm.n_iter_}, converged={gm.converged_})",
        flush=True,
    )
    naive_row = dict(
        image=kind, method="naive", time=t_naive, speedup=1.0, ll=ll_naive, ll_diff=0.0, ari=1.0
    )
    rows.append(naive_row)
    del gm

    for label, params in ours_variants().items():
        t_ours, (seg, our_labels) = time_best(ours_method(params), image, channel_axis, repeat)
        ll_ours = seg.score(image)
        ari = adjusted_rand_score(naive_labels.ravel(), our_labels.ravel())
        extra = f", spatial_n_iter={seg.spatial_n_iter_}" if hasattr(seg, "spatial_n_iter_") else ""
        print(
            f"{label:12s} {t_ours:8.3f} s  LL {ll_ours:.5f}  ARI vs naive {ari:.4f}  "
            f"(n_iter={seg.n_iter_}{extra}, fit_method={seg.fit_method_})",
            flush=True,
        )
        rows.append(
            dict(
                image=kind, method=label, time=t_ours, speedup=t_naive / t_ours, ll=ll_ours,
                ll_diff=ll_ours - ll_naive, ari=ari,
            )
        )
        del seg, our_labels
    del naive_labels

    methods = all_methods()
    for row in rows:
        row["mem"] = traced_peak(methods[row["method"]], image, channel_axis)
        row["rss"] = rss_peak_subprocess(name, row["method"], quick) if rss else None
        print(
            f"peak memory {row['method']:12s} traced {row['mem'] / MiB:8.1f} MiB"
            + (f"   RSS growth {row['rss'] / MiB:8.1f} MiB" if rss else ""),
            flush=True,
        )
    for row in rows[1:]:
        row["mem_ratio"] = row["mem"] / naive_row["mem"]
        row["checks"] = [
            (
                "speed-up", f">= {TARGET_SPEEDUP[name]:g}x", f"{row['speedup']:.1f}x",
                row["speedup"] >= TARGET_SPEEDUP[name],
            ),
            (
                "LL ours - naive", f">= -{TARGET_MAX_LL_DEFICIT} nats/px",
                f"{row['ll_diff']:+.5f}", row["ll_diff"] >= -TARGET_MAX_LL_DEFICIT,
            ),
            (
                "peak memory ours/naive", f"<= {TARGET_MEMORY_FRACTION:g}",
                f"{row['mem_ratio']:.3f}", row["mem_ratio"] <= TARGET_MEMORY_FRACTION,
            ),
        ]
        for what, target, measured, ok in row["checks"]:
            print(f"  {fmt_pass(ok, quick)}  {row['method']}: {what} {measured} (target {target})")
    naive_row["mem_ratio"] = 1.0
    by_method = {row["method"]: row for row in rows}
    if "ours" in by_method and "ours beta=0" in by_method:
        default, pixelwise = by_method["ours"], by_method["ours beta=0"]
        ratio = default["time"] / pixelwise["time"]
        check = (
            "default / beta=0 time", f"<= {TARGET_DEFAULT_RATIO[name]:g}x", f"{ratio:.1f}x",
            ratio <= TARGET_DEFAULT_RATIO[name],
        )
        default["checks"].append(check)
        default["default_ratio"] = ratio
        print(
            f"default / beta=0: {default['time']:.3f} s / {pixelwise['time']:.3f} s = "
            f"{ratio:.1f}x"
        )
        print(f"  {fmt_pass(check[3], quick)}  ours: {check[0]} {check[2]} (target {check[1]})")
    return rows


def print_table(rows, repeat, quick, rss):
    print("\n## GMMSegmenter vs naive GaussianMixture on every pixel (K=3)\n")
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"scikit-image {skimage.__version__}; {describe_code()}; best of {repeat} run(s)"
        + ("; QUICK: small images, the targets are meant for the full sizes" if quick else "")
        + ".\n"
    )
    print(
        "| image | method | fit+predict s | speed-up | peak MiB | mem vs naive "
        + ("| peak RSS growth MiB " if rss else "")
        + "| LL nats/px | LL - naive | ARI vs naive |"
    )
    print("|---|---|---:|---:|---:|---:|" + ("---:|" if rss else "") + "---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['image']} | {r['method']} | {r['time']:.3f} | {r['speedup']:.1f}x | "
            f"{r['mem'] / MiB:.1f} | {r['mem_ratio']:.3f} | "
            + (f"{r['rss'] / MiB:.1f} | " if rss else "")
            + f"{r['ll']:.4f} | {r['ll_diff']:+.4f} | {r['ari']:.4f} |"
        )
    ratios = [r for r in rows if "default_ratio" in r]
    if ratios:
        print("\n| image | default fit+predict s | beta=0 fit+predict s | default / beta=0 |")
        print("|---|---:|---:|---:|")
        for r in ratios:
            pixelwise = r["time"] / r["default_ratio"]
            print(f"| {r['image']} | {r['time']:.3f} | {pixelwise:.3f} | {r['default_ratio']:.1f}x |")
    print("\n| image | method | check | target | measured | result |")
    print("|---|---|---|---|---:|---|")
    for r in rows:
        for what, target, measured, ok in r.get("checks", []):
            print(f"| {r['image']} | {r['method']} | {what} | {target} | {measured} | {fmt_pass(ok, quick)} |")
    print(
        "\nfit+predict: wall clock of fit + predict (naive includes building the float64 "
        "pixel table). peak MiB: tracemalloc high-water mark above the input image, in a "
        "separate pass. LL: mean log-likelihood per pixel of the fitted mixture over every "
        "pixel, in input intensity units. ARI: adjusted Rand index of the label maps."
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small images, a smoke run")
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="time every method N times and keep the best (naive too: N x its minutes)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile our fit and predict on the RGB image"
    )
    parser.add_argument(
        "--rss", action="store_true",
        help="cross-check peak memory as RSS growth in fresh subprocesses (runs every method again)",
    )
    parser.add_argument(
        "--pixelwise-only", action="store_true",
        help="when the package default is the spatial model (beta != 0), benchmark only "
        "beta=0 (the like-for-like model); skips the slow full-image mean-field runs",
    )
    parser.add_argument("--_rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pixelwise_only:
        PIXELWISE_ONLY.append(True)
    if args._rss_child:
        _rss_child(*args._rss_child, args.quick)
        return 0
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    start = time.perf_counter()
    print(
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
        f"cpu_count={os.cpu_count()}, {describe_code()}"
    )
    load_before = load_average()
    units_sanity_check()
    cases = build_cases(args.quick)
    # warm-up: imports, thread pools and BLAS dispatch happen outside the timings
    for _, image, channel_axis in cases:
        for function in all_methods().values():
            function(image[:64, :64], channel_axis)

    rows = []
    for name, image, channel_axis in cases:
        rows.extend(run_case(name, image, channel_axis, args.repeat, args.rss, args.quick))
    load_after = load_average()
    print_table(rows, args.repeat, args.quick, args.rss)
    # this benchmark itself keeps up to all cores busy (BLAS threads), so only
    # load beyond that, or any notable load before it started, means competition
    n_cpu = os.cpu_count() or 1
    busy = load_before > 0.5 * n_cpu or load_after > n_cpu + 0.5
    print(
        f"\nload average (1 min) before/after: {load_before:.2f} / {load_after:.2f} on "
        f"{os.cpu_count()} cores"
        + (
            " -- other processes were competing for the CPU: times, and the speed-ups "
            "built on them, are noisy; rerun on an idle machine for numbers to publish."
            if busy
            else ""
        )
    )
    if args.profile:
        name, image, channel_axis = cases[0]
        for label, params in ours_variants().items():
            profile_ours(name, image, channel_axis, label, params)
    print(f"\ntotal benchmark time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
