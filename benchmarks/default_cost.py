"""What the default costs: ``GMMSegmenter(K)`` against the former default and ``beta=0``.

The default chooses the smoothing strength from the image (``beta='auto'``:
one or two HMRF-EM runs, see docs/spatial.md) and screens several EM starts for
colour images (``n_init='auto'``). This script times fit + predict of

- the default,
- the former default, ``beta=1.0, n_init=1`` (one HMRF-EM run, one start),
- the pixel-wise mixture, ``beta=0``,

on bundled pictures and synthetic volumes, best of ``--repeat`` runs each, all
in the same process, and prints the ratios (default / former default, the
figure the targets are stated in; default / ``beta=0``).

    python benchmarks/default_cost.py
    python benchmarks/default_cost.py --repeat 3 --only camera
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
from skimage import data

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality  # noqa: E402  (the phantoms)

from gmm_segmenter import GMMSegmenter  # noqa: E402

VARIANTS = {
    "default": {},
    "former default (beta=1, n_init=1)": {"beta": 1.0, "n_init": 1},
    "beta=0": {"beta": 0.0},
}

#: The default may cost at most this many times the former default.
TARGET = 1.5


def images():
    """Name -> (image, channel_axis, n_components)."""
    blobs3d, _, _, _ = quality.blobs_3d(0.35, 64)
    noisy, _, _, _ = quality.blobs_2d(0.35, 512)
    return {
        "camera 512x512 uint8": (data.camera(), None, 3),
        "astronaut 512x512 RGB": (data.astronaut(), -1, 3),
        "coins 303x384 uint8": (data.coins(), None, 2),
        "blobs 512x512 float, noise 0.35": (noisy, None, 3),
        "blobs 64x64x64 float, noise 0.35": (blobs3d, None, 3),
    }


def best_time(image, channel_axis, k, params, repeat):
    best = np.inf
    for _ in range(repeat):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = GMMSegmenter(k, channel_axis=channel_axis, random_state=0, **params)
            model.fit(image).predict(image)
        best = min(best, time.perf_counter() - started)
    return best, model.beta_


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant; the best counts")
    parser.add_argument("--only", nargs="+", default=None, help="images whose name contains one of these")
    args = parser.parse_args(argv)
    GMMSegmenter(2, random_state=0).fit(data.camera()[:64, :64])  # compile the kernels first
    rows = []
    for name, (image, channel_axis, k) in images().items():
        if args.only and not any(part in name for part in args.only):
            continue
        times, betas = {}, {}
        for variant, params in VARIANTS.items():
            times[variant], betas[variant] = best_time(image, channel_axis, k, params, args.repeat)
        former = times["former default (beta=1, n_init=1)"]
        rows.append((name, times, betas["default"], times["default"] / former,
                     times["default"] / times["beta=0"]))
        print(f"{name:34s} default {times['default']:6.2f} s (beta_={betas['default']:.2f})  "
              f"former {former:6.2f} s  beta=0 {times['beta=0']:6.2f} s  "
              f"default/former {rows[-1][3]:4.2f}x  default/beta=0 {rows[-1][4]:5.1f}x", flush=True)
    print()
    print(f"| image | default | former default | beta=0 | default / former | default / beta=0 "
          f"| target (<= {TARGET}x the former) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, times, beta, to_former, to_pixelwise in rows:
        print(f"| {name} | {times['default']:.2f} s (beta_ {beta:.2f}) | "
              f"{times['former default (beta=1, n_init=1)']:.2f} s | {times['beta=0']:.2f} s | "
              f"{to_former:.2f}x | {to_pixelwise:.1f}x | {'met' if to_former <= TARGET else 'NOT met'} |")
    print()
    print(f"Default at most {TARGET}x the former default: "
          f"{sum(row[3] <= TARGET for row in rows)} of {len(rows)} images")


if __name__ == "__main__":
    main()
