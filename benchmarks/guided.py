"""Guided segmentation: scribbles on the phantoms of ``quality.py``.

For every phantom and noise level of ``benchmarks/quality.py``, a seeded
script draws scribbles covering about 0.5 % of the pixels (a few short
strokes per class, each inside its true class, numbered by a seeded
permutation so that the bright class is not always the last label) and
prints the adjusted Rand index (ARI) against the truth and the time of:

- GMMSegmenter with default parameters, unsupervised (``fit_predict(X)``);
- GMMSegmenter with default parameters, guided (``fit_predict(X, y)``);
- pixel classifiers trained on the same scribbles: APOC's
  ``PixelClassifier`` (its defaults: an OpenCL random forest of 100 trees
  of depth 2) when it can run here (``pip install apoc
  pocl-binary-distribution`` gives it a CPU OpenCL device), and
  scikit-learn's ``RandomForestClassifier`` (100 trees, unlimited depth),
  both on the same per-pixel features: the image, Gaussian blurs,
  differences of Gaussians and Sobel magnitudes of the blurs at sigma 1, 2
  and 4, per channel.

Then a markdown table, the guided ÷ unguided fit time (``fit`` alone,
median of ``--repeat`` runs), the share of runs whose labels follow the
scribble numbering (the most frequent label of each true class is that
class's scribble number), and whether the targets hold.

Run from the repository root::

    python benchmarks/guided.py            # the table in docs/benchmarks.md
    python benchmarks/guided.py --quick    # one noise level, smaller phantoms
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from quality import NOISE_LEVELS, PHANTOMS
from scipy import ndimage as ndi
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from gmm_segmenter import GMMSegmenter

#: Share of the pixels the scribbles cover, and strokes per class.
COVERAGE = 0.005
STROKES_PER_CLASS = 3


def draw_scribbles(truth, n_classes, seed=0, coverage=COVERAGE, strokes=STROKES_PER_CLASS):
    """Seeded scribbles: ``strokes`` short straight strokes per class, each
    kept two pixels inside its true class, covering about ``coverage`` of the
    pixels; class ``c`` is scribbled as label ``numbering[c]``.

    Returns ``(scribbles, numbering)``.
    """
    rng = np.random.default_rng(seed)
    numbering = rng.permutation(n_classes) + 1
    scribbles = np.zeros(truth.shape, dtype=np.uint8)
    per_stroke = max(2, int(round(coverage * truth.size / (n_classes * strokes))))
    for c in range(n_classes):
        inside = ndi.binary_erosion(truth == c, iterations=2)
        if not inside.any():
            inside = truth == c
        candidates = np.argwhere(inside)
        for _ in range(strokes):
            point = candidates[rng.integers(len(candidates))].astype(float)
            last_inside = point.copy()
            direction = rng.normal(size=truth.ndim)
            direction /= np.linalg.norm(direction)
            drawn = 0
            for _ in range(8 * per_stroke):  # walk until the stroke is long enough
                at = tuple(np.round(point).astype(int))
                if not all(0 <= a < n for a, n in zip(at, truth.shape)) or not inside[at]:
                    # at the class's edge: back to the last pixel inside, another direction
                    point = last_inside.copy()
                    direction = rng.normal(size=truth.ndim)
                    direction /= np.linalg.norm(direction)
                    point += direction
                    continue
                last_inside = point.copy()
                if scribbles[at] == 0:
                    scribbles[at] = numbering[c]
                    drawn += 1
                if drawn >= per_stroke:
                    break
                point += direction
    return scribbles, numbering


def pixel_features(image, channel_axis, sigmas=(1.0, 2.0, 4.0)):
    """APOC-like features per pixel: the image, Gaussian blurs, differences
    of Gaussians and Sobel magnitudes of the blurs, per channel."""
    channels = [image] if channel_axis is None else list(np.moveaxis(image, channel_axis, 0))
    features = []
    for channel in channels:
        channel = channel.astype(np.float32)
        features.append(channel)
        blurs = [ndi.gaussian_filter(channel, sigma) for sigma in sigmas]
        for i, blur in enumerate(blurs):
            features.append(blur)
            sobel = np.sqrt(sum(ndi.sobel(blur, axis=a) ** 2 for a in range(blur.ndim)))
            features.append(sobel)
            if i + 1 < len(blurs):
                features.append(blur - blurs[i + 1])
    return np.stack(features, axis=-1)


#: The same features as :func:`pixel_features`, in APOC's words.
APOC_FEATURES = " ".join(
    ["original"]
    + [f"gaussian_blur={s}" for s in (1, 2, 4)]
    + [f"difference_of_gaussian={s}" for s in (1, 2)]
    + [f"sobel_of_gaussian_blur={s}" for s in (1, 2, 4)]
)


def apoc_available() -> bool:
    try:
        import apoc  # noqa: F401
        import pyclesperanto_prototype as cle

        return len(cle.available_device_names()) > 0
    except Exception:  # not installed, or no OpenCL device
        return False


def apoc_classifier(image, channel_axis, scribbles):
    """Labels from APOC's pixel classifier (its defaults) trained on the scribbles."""
    import tempfile

    import apoc

    channels = [image] if channel_axis is None else list(np.moveaxis(image, channel_axis, 0))
    channels = [np.ascontiguousarray(c, dtype=np.float32) for c in channels]
    with tempfile.TemporaryDirectory() as folder:
        classifier = apoc.PixelClassifier(opencl_filename=f"{folder}/classifier.cl")
        classifier.train(APOC_FEATURES, scribbles, channels if len(channels) > 1 else channels[0])
        labels = classifier.predict(image=channels if len(channels) > 1 else channels[0])
    return np.asarray(labels)


def pixel_classifier(image, channel_axis, scribbles):
    """Labels from scikit-learn's random forest trained on the scribbled pixels."""
    features = pixel_features(image, channel_axis)
    flat = features.reshape(-1, features.shape[-1])
    scribbled = scribbles.reshape(-1) > 0
    forest = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1)
    forest.fit(flat[scribbled], scribbles.reshape(-1)[scribbled])
    return forest.predict(flat).reshape(scribbles.shape)


def follows_numbering(labels, truth, numbering) -> bool:
    """Whether the most frequent label of each true class is its scribble number."""
    return all(
        np.bincount(labels[truth == c].ravel()).argmax() == numbering[c]
        for c in range(len(numbering))
    )


def fit_seconds(image, channel_axis, k, scribbles, repeat):
    """Median time of ``fit`` unguided and guided, run alternately."""
    plain, guided = [], []
    for _ in range(repeat):
        for times, y in ((plain, None), (guided, scribbles)):
            segmenter = GMMSegmenter(k, channel_axis=channel_axis, random_state=0)
            start = time.perf_counter()
            segmenter.fit(image, y)
            times.append(time.perf_counter() - start)
    return statistics.median(plain), statistics.median(guided)


def run(quick, repeat):
    levels = NOISE_LEVELS[1:2] if quick else NOISE_LEVELS
    rows = []
    for index, (phantom, (make, size, quick_size)) in enumerate(PHANTOMS.items()):
        for noise in levels:
            seed = 1000 * index + int(round(100 * noise))
            image, truth, channel_axis, k = make(noise, quick_size if quick else size)
            scribbles, numbering = draw_scribbles(truth, k, seed=seed)
            row = {"phantom": phantom, "noise": noise, "shape": image.shape,
                   "coverage": np.count_nonzero(scribbles) / scribbles.size}
            methods = [
                ("unsupervised", lambda: GMMSegmenter(
                    k, channel_axis=channel_axis, random_state=0).fit_predict(image)),
                ("guided", lambda: GMMSegmenter(
                    k, channel_axis=channel_axis, random_state=0).fit_predict(image, scribbles)),
                ("classifier", lambda: pixel_classifier(image, channel_axis, scribbles)),
            ]
            if apoc_available():
                methods.append(("APOC", lambda: apoc_classifier(image, channel_axis, scribbles)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                for name, run_method in methods:
                    start = time.perf_counter()
                    labels = run_method()
                    seconds = time.perf_counter() - start
                    row[name] = (adjusted_rand_score(truth.ravel(), labels.ravel()), seconds)
                    if name != "unsupervised":  # the classifiers learn the numbering too
                        row[name + " numbering"] = follows_numbering(labels, truth, numbering)
                row["fit"] = fit_seconds(image, channel_axis, k, scribbles, repeat)
            print(
                f"{phantom:12s} noise={noise:<5} scribbled {row['coverage']:.2%}  "
                + "  ".join(f"{n} ARI={row[n][0]:.3f} ({row[n][1]:.2f} s)"
                            for n in ("unsupervised", "guided", "classifier", "APOC") if n in row)
                + f"  fit {row['fit'][0]:.2f} s -> {row['fit'][1]:.2f} s",
                flush=True,
            )
            rows.append(row)
    return rows


def report(rows):
    classifier = "random forest"
    apoc = "APOC" in rows[0]
    print()
    print("| phantom | shape | noise | scribbled | unsupervised default | guided default | "
          "random forest on the scribbles | " + ("APOC on the scribbles | " if apoc else "")
          + "guided ÷ unguided fit time |")
    print("|---" * (9 if apoc else 8) + "|")
    failures = []
    ratios = []
    for row in rows:
        unsupervised, guided, forest = row["unsupervised"], row["guided"], row["classifier"]
        plain_fit, guided_fit = row["fit"]
        ratio = guided_fit / plain_fit
        ratios.append(ratio)
        shape = "x".join(str(n) for n in row["shape"])
        apoc_cell = f"{row['APOC'][0]:.3f} ({row['APOC'][1]:.2f} s) | " if apoc else ""
        print(
            f"| {row['phantom']} | {shape} | {row['noise']} | {row['coverage']:.2%} | "
            f"{unsupervised[0]:.3f} ({unsupervised[1]:.2f} s) | {guided[0]:.3f} ({guided[1]:.2f} s) | "
            f"{forest[0]:.3f} ({forest[1]:.2f} s) | {apoc_cell}{ratio:.2f}x |"
        )
        where = f"{row['phantom']}, noise {row['noise']}"
        if unsupervised[0] < 0.95 and not guided[0] > unsupervised[0]:
            failures.append(f"guided does not beat unsupervised ({where})")
        if not guided[0] > forest[0]:
            failures.append(f"guided does not beat the {classifier} ({where})")
        if apoc and not guided[0] > row["APOC"][0]:
            failures.append(f"guided does not beat APOC ({where})")
        if ratio > 1.2:
            failures.append(f"guided fit costs {ratio:.2f}x the unguided fit ({where})")
        if not row["guided numbering"]:
            failures.append(f"guided labels do not follow the scribble numbering ({where})")
    print()
    share = np.mean([row["guided numbering"] for row in rows])
    forest_share = np.mean([row["classifier numbering"] for row in rows])
    print(f"Runs whose guided labels follow the scribble numbering: {share:.0%} "
          f"({classifier}: {forest_share:.0%}"
          + (f", APOC: {np.mean([row['APOC numbering'] for row in rows]):.0%})" if apoc else ")"))
    print(f"Guided ÷ unguided fit time: median {statistics.median(ratios):.2f}x, "
          f"largest {max(ratios):.2f}x")
    print("Targets: " + ("all met" if not failures else "NOT met:"))
    for failure in failures:
        print(f"  {failure}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one noise level, smaller phantoms")
    parser.add_argument("--repeat", type=int, default=5,
                        help="fits timed per method for the fit-time ratio (median)")
    args = parser.parse_args(argv)
    report(run(args.quick, args.repeat))


if __name__ == "__main__":
    main()
