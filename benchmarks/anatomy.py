"""Segmentation quality on brain-like anatomy with known tissue maps.

Mean Dice (per class, averaged over the 3 classes) against the truth, and
fit + predict time, of every method on:

- **phantoms** (``benchmarks/_phantoms.py``): 3 classes (background and CSF,
  a grey-matter-like ribbon 1-3 pixels thick, a white-matter-like core with
  thin fingers) plus tubes 1-3 pixels wide, rendered on a finer grid and
  averaged down (partial-volume edges), in 2-D (256 x 256), 3-D isotropic
  (66 x 128 x 128) and 3-D with thick slices (22 x 128 x 128, spacing
  (3, 1, 1): each slice the mean of 3 isotropic ones, from the same
  anatomy);
- **the MNI152 template** (ICBM 2009a nonlinear symmetric T1) with its grey-
  and white-matter probability maps, which ship inside the ``nilearn`` wheel
  (``nilearn/datasets/data/``; nothing is downloaded). Truth is the most
  probable of CSF (1 - GM - WM), GM and WM, inside nilearn's brain mask (the
  template above 0.2), and only pixels in that mask are scored. At 2 mm (the
  "thin" case: the cortex is 1-2 voxels thick) the whole brain; at 1 mm a
  slab of 40 axial slices through the ventricles.

Each is degraded by Rician noise (the magnitude of the image plus complex
Gaussian noise; sd 3 % or 9 % of the mean intensity of the brightest tissue)
and a smooth multiplicative bias field (a seeded second-order polynomial, 20 %
or 40 % peak to peak over the brain: the tissue classes 2 and 3 of a phantom,
the brain mask of MNI).

Methods, in the same run:

- ``GMMSegmenter`` with the defaults of the installed package (whatever
  ``GMMSegmenter()`` is when the script runs), ``beta=0``, fixed ``beta`` in
  (0.25, 0.5, 1.0, 1.5), ``beta='pseudo-likelihood'``, ``covariance_type='tied'``
  and ``bias_field='auto'`` (only when the estimator has that parameter); all
  with ``random_state=0`` and the voxel spacing of the case;
- ``sklearn.mixture.GaussianMixture(3, random_state=0)`` and ``KMeans`` on
  the pixels, ``skimage.filters.threshold_multiotsu``;
- ANTs Atropos (``antspyx``; k-means init, MRF ``[0.3,1x1x1]``, 5
  iterations, as in ``quality.py``), and Atropos after
  ``ants.n4_bias_field_correction``;
- dipy's ``TissueClassifierHMRF`` (``beta=0.1``, its tutorial's value). It
  returns a label 0 ("background") besides its 3 classes, which here holds
  the darkest pixels; it is merged into its darkest class.

Methods that take a mask (GMMSegmenter, Atropos, N4, and the pixel-table
methods, which only see the masked pixels) get the brain mask on the MNI
cases. dipy has no mask and sees the whole cropped image; where the
background outside the brain is exactly 0 (the clean MNI cases) a class can
collapse onto it and dipy's EM returns NaN (it scored 0.22 on the clean
1 mm slab).

Labels are matched to classes by the assignment that maximises the overlap
(Hungarian matching on the confusion matrix), for every method alike: the
best matching each method can get. ``--matching intensity`` uses the
estimator's own contract instead (labels ordered by mean intensity, darkest
first) for every method; where a method lost a tissue (say, split the white
matter in two under a bias field and merged grey matter into CSF) the two
differ, and intensity order is the stricter, what a user would see.

The lead of a method is its mean Dice minus the best mean Dice of the
methods that are not GMMSegmenter. The project's quality targets are printed as
information: a lead of the default (and of ``bias_field='auto'`` where a
field is present) of at least 0.03 in every case, 0.05 with a 40 % field.

Run from the repository root::

    python benchmarks/anatomy.py                 # every case: 15-50 minutes on 2 cores
    python benchmarks/anatomy.py --quick         # 3 cases, a minute or two
    python benchmarks/anatomy.py --only mni      # cases whose name contains "mni"
    python benchmarks/anatomy.py --methods default "beta=0" Atropos
    python benchmarks/anatomy.py --json results.json
    python benchmarks/anatomy.py --from-json results.json   # its tables again
    python benchmarks/anatomy.py --ceiling       # and what a classifier trained on the truth gets

``--ceiling`` (see :func:`supervised_labels`) says how much Dice each case's
image holds, so that a target can be checked against what is reachable.

The peers do not depend on ``GMMSegmenter``, so their results are kept in
a cache (``~/.cache/gmm-segmenter-benchmarks/anatomy``, or ``--cache-dir``)
keyed by the method, the exact image, the library versions and the code
that runs and scores them, together with the built phantoms; a second run
only runs the ``GMMSegmenter`` rows (``--quick`` then takes well under a
minute on an idle machine). ``--no-cache`` recomputes everything.

The optional peers need ``pip install antspyx dipy nilearn`` (or the
``benchmark`` extra); a method whose package is missing shows as "not
installed", and the MNI cases are skipped without ``nilearn``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _phantoms

from gmm_segmenter import GMMSegmenter

N_CLASSES = 3
FIXED_BETAS = (0.25, 0.5, 1.0, 1.5)
TARGET_LEAD = 0.03
TARGET_LEAD_STRONG_FIELD = 0.05


# --------------------------------------------------------------------------
# cases


@dataclass
class Case:
    name: str
    anatomy: str  # key of ANATOMIES
    noise: float  # sd of each Gaussian part, as a fraction of the brightest tissue
    field: float  # peak-to-peak amplitude of the bias field
    quick: bool = False


@dataclass
class Anatomy:
    image: np.ndarray  # noise-free, no field
    truth: np.ndarray  # 1..N_CLASSES; 0 outside the mask
    mask: np.ndarray | None
    spacing: tuple
    description: str
    extra: dict = field(default_factory=dict)


def _phantom_2d():
    image, truth = _phantoms.brain_phantom((256, 256), supersample=4, seed=0)
    return Anatomy(image, truth, None, (1.0, 1.0), "phantom 256x256")


def _phantom_3d_labels():
    # One fine-grid anatomy for both 3-D cases, so that the thick-slice
    # volume shows the same brain as the isotropic one.
    if not hasattr(_phantom_3d_labels, "cache"):
        _phantom_3d_labels.cache = _phantoms.brain_labels((66, 128, 128), supersample=2, seed=1)
    return _phantom_3d_labels.cache


def _phantom_3d():
    labels, factors = _phantom_3d_labels()
    image, truth = _phantoms.average_down(labels, factors)
    return Anatomy(image, truth, None, (1.0, 1.0, 1.0), "phantom 66x128x128")


def _phantom_thick():
    labels, factors = _phantom_3d_labels()
    factors = (3 * factors[0],) + tuple(factors[1:])
    image, truth = _phantoms.average_down(labels, factors)
    return Anatomy(image, truth, None, (3.0, 1.0, 1.0), "phantom 22x128x128, spacing 3x1x1")


def _mni(resolution, slab=None):
    """MNI152 T1, cropped to the brain; truth from the GM and WM maps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nilearn import datasets
        from nilearn.image import get_data

        t1 = get_data(datasets.load_mni152_template(resolution=resolution))
        grey = get_data(datasets.load_mni152_gm_template(resolution=resolution))
        white = get_data(datasets.load_mni152_wm_template(resolution=resolution))
        mask = get_data(datasets.load_mni152_brain_mask(resolution=resolution)) > 0
    csf = np.clip(1 - grey - white, 0, 1)
    truth = (np.argmax(np.stack([csf, grey, white]), axis=0) + 1).astype(np.uint8)
    # x, y, z -> z, y, x: slices first, like the phantoms
    t1, truth, mask = (np.ascontiguousarray(np.transpose(a, (2, 1, 0))) for a in (t1, truth, mask))
    if slab is not None:
        centre = t1.shape[0] // 2 + 4 // resolution  # through the ventricles
        keep = slice(centre - slab // 2, centre + slab - slab // 2)
        t1, truth, mask = t1[keep], truth[keep], mask[keep]
    corner = np.maximum(np.argwhere(mask).min(axis=0) - 2, 0)
    end = np.argwhere(mask).max(axis=0) + 3
    crop = tuple(slice(a, b) for a, b in zip(corner, end))
    t1, truth, mask = t1[crop].astype(np.float64), truth[crop], mask[crop]
    truth[~mask] = 0
    shape = "x".join(str(n) for n in t1.shape)
    spacing = (float(resolution),) * 3
    return Anatomy(t1, truth, mask, spacing, f"MNI152 {resolution} mm, {shape}")


ANATOMIES = {
    "phantom-2d": _phantom_2d,
    "phantom-3d": _phantom_3d,
    "phantom-3d-thick": _phantom_thick,
    "mni-2mm": lambda: _mni(2),
    "mni-1mm-slab": lambda: _mni(1, slab=40),
}


def _cases():
    cases = []
    variants = {
        "phantom-2d": [(0.03, 0), (0.09, 0), (0.03, 0.2), (0.03, 0.4), (0.09, 0.4)],
        "phantom-3d": [(0.03, 0), (0.09, 0), (0.03, 0.4)],
        "phantom-3d-thick": [(0.03, 0), (0.03, 0.4)],
        "mni-2mm": [(0, 0), (0.03, 0), (0.09, 0), (0.03, 0.2), (0.03, 0.4), (0.09, 0.4)],
        "mni-1mm-slab": [(0, 0), (0.03, 0.2), (0.09, 0.4)],
    }
    quick = {("phantom-2d", 0.09, 0), ("phantom-2d", 0.03, 0.4), ("mni-2mm", 0.03, 0)}
    for anatomy, levels in variants.items():
        for noise, amplitude in levels:
            parts = [f"noise {round(noise * 100)}%" if noise else "clean"]
            if amplitude:
                parts.append(f"field {round(amplitude * 100)}%")
            name = f"{anatomy} " + " + ".join(parts)
            cases.append(Case(name, anatomy, noise, amplitude, (anatomy, noise, amplitude) in quick))
    return cases


CASES = _cases()


def degrade(anatomy: Anatomy, case: Case, seed=0):
    """The case's image: the anatomy times the bias field, plus Rician noise."""
    image = anatomy.image
    if case.field:
        # peak to peak over the tissue (the brain), not over the field of view
        tissue = anatomy.truth > 1 if anatomy.mask is None else anatomy.mask
        image = image * _phantoms.bias_field(image.shape, case.field, anatomy.spacing, seed, tissue)
    inside = anatomy.truth == N_CLASSES
    brightest = float(anatomy.image[inside].mean())
    return _phantoms.rician(image, case.noise * brightest, seed)


# --------------------------------------------------------------------------
# methods: each maps (image, mask or None, spacing) to labels of the image's shape


def gmm_segmenter(**params):
    def run(image, mask, spacing):
        model = GMMSegmenter(N_CLASSES, random_state=0, spacing=spacing, **params)
        return model.fit_predict(image, mask=mask)

    return run


def _pixels(image, mask):
    values = image[mask] if mask is not None else image.ravel()
    return values.reshape(-1, 1).astype(np.float64)


def _scatter(labels, image, mask):
    if mask is None:
        return labels.reshape(image.shape)
    out = np.zeros(image.shape, dtype=np.int64)
    out[mask] = labels
    return out


def gaussian_mixture(image, mask, spacing):
    labels = GaussianMixture(N_CLASSES, random_state=0).fit_predict(_pixels(image, mask))
    return _scatter(labels + 1, image, mask)


def kmeans(image, mask, spacing):
    labels = KMeans(N_CLASSES, n_init=3, random_state=0).fit_predict(_pixels(image, mask))
    return _scatter(labels + 1, image, mask)


def multiotsu(image, mask, spacing):
    from skimage.filters import threshold_multiotsu

    values = _pixels(image, mask).ravel()
    thresholds = threshold_multiotsu(values, classes=N_CLASSES, nbins=256)
    return _scatter(np.digitize(values, thresholds) + 1, image, mask)


def _ants_images(image, mask, spacing):
    import ants

    data = ants.from_numpy(image.astype(np.float32), spacing=tuple(float(s) for s in spacing))
    full = np.ones(image.shape, np.float32) if mask is None else mask.astype(np.float32)
    return data, data.new_image_like(full)


def _atropos(data, ants_mask):
    import ants

    mrf = "[0.3," + "x".join(["1"] * data.dimension) + "]"
    result = ants.atropos(a=data, x=ants_mask, i=f"kmeans[{N_CLASSES}]", m=mrf, c="[5,0]")
    return result["segmentation"].numpy().astype(np.int64)


def atropos(image, mask, spacing):
    return _atropos(*_ants_images(image, mask, spacing))


def atropos_n4(image, mask, spacing):
    import ants

    data, ants_mask = _ants_images(image, mask, spacing)
    corrected = ants.n4_bias_field_correction(data, mask=ants_mask)
    return _atropos(corrected, ants_mask)


def dipy_hmrf(image, mask, spacing):
    from dipy.segment.tissue import TissueClassifierHMRF

    # No mask: dipy sees the whole image, background included. (With the
    # background set to a constant, as in a skull-stripped image, one class
    # collapses onto it with zero variance and its EM returns NaN.)
    volume = image.astype(np.float64)
    if volume.ndim == 2:
        volume = volume[..., np.newaxis]
    with np.errstate(all="ignore"):
        _, labels, _ = TissueClassifierHMRF(verbose=False).classify(
            volume, N_CLASSES, beta=0.1
        )
    # dipy labels 1..3 by mean, plus 0 for what it takes for background (here
    # the darkest pixels, which belong to the darkest class)
    return np.maximum(labels.reshape(image.shape), 1).astype(np.int64)


def _installed(module):
    return importlib.util.find_spec(module) is not None


def all_methods():
    """Name -> function, or None when its package is not installed."""
    methods = {"default": gmm_segmenter(), "beta=0": gmm_segmenter(beta=0)}
    for beta in FIXED_BETAS:
        methods[f"beta={beta}"] = gmm_segmenter(beta=beta)
    methods["beta=pseudo-likelihood"] = gmm_segmenter(beta="pseudo-likelihood")
    # one variance for every class: partial-volume edges then do not widen
    # the thin middle class (see docs/benchmarks.md)
    methods["covariance_type=tied"] = gmm_segmenter(covariance_type="tied")
    if "bias_field" in GMMSegmenter().get_params():
        methods["bias_field=auto"] = gmm_segmenter(bias_field="auto")
    methods.update(
        {
            "GaussianMixture": gaussian_mixture,
            "KMeans": kmeans,
            "multi-Otsu": multiotsu,
            "Atropos": atropos if _installed("ants") else None,
            "N4+Atropos": atropos_n4 if _installed("ants") else None,
            "dipy HMRF": dipy_hmrf if _installed("dipy") else None,
        }
    )
    return methods


PEERS = ("GaussianMixture", "KMeans", "multi-Otsu", "Atropos", "N4+Atropos", "dipy HMRF")
PEER_CODE = (_pixels, _scatter, gaussian_mixture, kmeans, multiotsu, _ants_images, _atropos,
             atropos, atropos_n4, dipy_hmrf)


# --------------------------------------------------------------------------
# what can be reached at all: a classifier trained on the truth

#: Side of the cubes that alternate between the two folds of the ceiling.
CEILING_BLOCK = 16


def ceiling_features(image, spacing):
    """Per pixel: its 3^d neighbourhood, Gaussian means at 1, 2 and 4 pixels
    (in physical units, so thick slices are smoothed less across them) and
    its position, from which a smooth bias field can be learnt."""
    padded = np.pad(image, 1, mode="edge")
    columns = []
    for offset in np.ndindex(*(3,) * image.ndim):
        columns.append(padded[tuple(slice(o, o + n) for o, n in zip(offset, image.shape))])
    for scale in (1.0, 2.0, 4.0):
        columns.append(ndi.gaussian_filter(image, [scale / s for s in spacing]))
    columns.extend(np.indices(image.shape, dtype=np.float64))
    return np.stack([c.ravel() for c in columns], axis=1).astype(np.float32)


def supervised_labels(anatomy: Anatomy, image):
    """Labels of a classifier that learnt the tissues from the truth.

    ``HistGradientBoostingClassifier`` on :func:`ceiling_features`, trained
    on the truth of half the image (cubes of :data:`CEILING_BLOCK` pixels in
    a checkerboard) and labelling the other half, then the other way round.
    Their Dice is the ceiling: no unsupervised method is expected to beat it
    by much, since the classifier sees the same pixels and knows what each
    tissue looks like. A target above it asks for more than the image holds.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    features = ceiling_features(np.asarray(image, np.float64), anatomy.spacing)
    truth = anatomy.truth.ravel().astype(np.int64)
    scored = np.ones(truth.size, bool) if anatomy.mask is None else anatomy.mask.ravel()
    fold = ((np.indices(image.shape) // CEILING_BLOCK).sum(axis=0) % 2).ravel()
    labels = np.zeros_like(truth)
    for half in (0, 1):
        train, test = scored & (fold == half), scored & (fold != half)
        model = HistGradientBoostingClassifier(max_iter=200, random_state=0)
        model.fit(features[train], truth[train])
        labels[test] = model.predict(features[test])
    return labels.reshape(image.shape)


# --------------------------------------------------------------------------
# scoring


def mean_dice(truth, labels, image, mask=None, matching="overlap"):
    """Per-class Dice averaged over the classes of ``truth`` (1..N).

    ``matching='overlap'`` pairs predicted labels with classes by the
    assignment of largest total overlap (Hungarian); ``'intensity'`` orders
    the predicted labels by their mean intensity in ``image`` and gives the
    darkest N-1 the classes 1..N-1 and all brighter ones class N (the
    estimator's own contract, applied to every method).
    """
    if mask is not None:
        truth, labels, image = truth[mask], labels[mask], image[mask]
    truth = truth.ravel().astype(np.int64)
    values, labels = np.unique(labels.ravel(), return_inverse=True)
    overlap = np.zeros((N_CLASSES, len(values)))
    np.add.at(overlap, (truth - 1, labels), 1)
    if matching == "overlap":
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        merged = overlap[:, cols]
        order = rows
    else:
        means = np.bincount(labels, weights=image.ravel()) / np.bincount(labels)
        classes = np.minimum(np.argsort(np.argsort(means)), N_CLASSES - 1)
        merged = np.zeros((N_CLASSES, N_CLASSES))
        for col, class_index in enumerate(classes):
            merged[:, class_index] += overlap[:, col]
        order = np.arange(N_CLASSES)
    true_sizes = overlap.sum(axis=1)
    dice = np.zeros(N_CLASSES)  # a class matched to no label scores 0
    for column, row in enumerate(order):
        predicted = merged[:, column].sum()
        dice[row] = 2 * merged[row, column] / (true_sizes[row] + predicted)
    return float(dice.mean()), dice.tolist()


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# --------------------------------------------------------------------------
# cache: the peers do not change while GMMSegmenter is being tuned, and the
# 3-D phantom takes a while to build, so both are kept between runs


def default_cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "gmm-segmenter-benchmarks", "anatomy")


def _versions():
    found = {}
    for module in ("numpy", "sklearn", "skimage", "ants", "dipy", "nilearn"):
        try:
            found[module] = importlib.metadata.version(
                {"sklearn": "scikit-learn", "skimage": "scikit-image", "ants": "antspyx"}.get(
                    module, module
                )
            )
        except importlib.metadata.PackageNotFoundError:
            found[module] = None
    return found


def _digest(*parts):
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part if isinstance(part, bytes) else repr(part).encode())
    return hasher.hexdigest()[:24]


class Cache:
    """Peer results keyed by method, image, mask and library versions;
    anatomies keyed by the phantom code. ``directory=None`` keeps nothing."""

    def __init__(self, directory):
        self.directory = directory
        self.versions = _versions()
        self.results = {}
        self.hits = 0
        if directory is None:
            return
        os.makedirs(directory, exist_ok=True)
        try:
            with open(self._results_file()) as handle:
                self.results = json.load(handle)
        except (OSError, ValueError):
            self.results = {}

    def _results_file(self):
        return os.path.join(self.directory, "peer-results.json")

    def anatomy(self, name):
        if self.directory is None:
            return ANATOMIES[name]()
        with open(_phantoms.__file__, "rb") as handle:
            code = handle.read()
        path = os.path.join(self.directory, f"{name}-{_digest(code, self.versions)}.npz")
        if os.path.exists(path):
            with np.load(path) as saved:
                mask = saved["mask"] if saved["mask"].size else None
                return Anatomy(saved["image"], saved["truth"], mask,
                               tuple(saved["spacing"].tolist()), str(saved["description"]))
        anatomy = ANATOMIES[name]()
        np.savez_compressed(
            path, image=anatomy.image, truth=anatomy.truth,
            mask=np.zeros(0, bool) if anatomy.mask is None else anatomy.mask,
            spacing=np.array(anatomy.spacing), description=anatomy.description,
        )
        return anatomy

    def key(self, method, image, mask, matching):
        # the code that runs and scores the peers is part of the key: a change
        # to how a peer is called or scored must not reuse old results
        code = "".join(inspect.getsource(function) for function in PEER_CODE + (mean_dice,))
        mask_bytes = b"" if mask is None else np.packbits(mask).tobytes()
        return _digest(method, image.shape, image.tobytes(), mask_bytes, matching,
                       self.versions, code)

    def get(self, key):
        found = self.results.get(key)
        if found is not None:
            self.hits += 1
            return dict(found, cached=True)
        return None

    def put(self, key, result):
        if self.directory is None:
            return
        self.results[key] = result
        temporary = self._results_file() + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(self.results, handle)
        os.replace(temporary, self._results_file())


def warm_up(methods):
    """Run every method once on small images, so that one-off costs (imports,
    compiling kernels on first use) do not land in the first case's time."""
    rng = np.random.default_rng(0)
    for shape, spacing in (((48, 48), (1.0, 1.0)), ((12, 24, 24), (1.0, 1.0, 1.0))):
        image = (1 + np.indices(shape).sum(axis=0) % 3 + rng.normal(scale=0.1, size=shape))
        for name, method in methods.items():
            if method is None:
                continue
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                try:
                    method(image.astype(np.float32), None, spacing)
                except Exception as error:  # noqa: BLE001 - the real run will show it again
                    print(f"warm-up of {name} on {shape} failed: {error!r}", file=sys.stderr)


def run(cases, methods, cache, matching="overlap", log=print, ceiling=False):
    anatomies = {}
    rows = []
    for case in cases:
        if case.anatomy not in anatomies:
            start = time.perf_counter()
            try:
                anatomies[case.anatomy] = cache.anatomy(case.anatomy)
            except ImportError as error:
                anatomies[case.anatomy] = None
                log(f"{case.anatomy}: skipped ({error})")
                continue
            log(f"{case.anatomy}: {anatomies[case.anatomy].description} "
                f"({time.perf_counter() - start:.1f} s to build or load)")
        anatomy = anatomies[case.anatomy]
        if anatomy is None:
            continue
        image = degrade(anatomy, case)
        results = {}
        for name, method in methods.items():
            if method is None:
                results[name] = None
                continue
            key = cache.key(name, image, anatomy.mask, matching) if name in PEERS else None

            def labels_of(method=method):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    return method(image, anatomy.mask, anatomy.spacing)

            result = results[name] = _scored(labels_of, anatomy, image, matching, cache, key)
            log(f"  {case.name:38s} {name:16s} Dice={result['dice']:.3f} "
                f"[{' '.join(f'{d:.2f}' for d in result['dice_per_class'])}] "
                f"{result['seconds']:6.2f} s{' (cached)' if result.get('cached') else ''}",
                flush=True)
        row = {"case": case.name, "anatomy": case.anatomy, "description": anatomy.description,
               "noise": case.noise, "field": case.field, "results": results}
        if ceiling:
            row["ceiling"] = _ceiling(anatomy, image, cache, matching)
            log(f"  {case.name:38s} {'ceiling':16s} Dice={row['ceiling']['dice']:.3f} "
                f"(a classifier trained on the truth){' (cached)' if row['ceiling'].get('cached') else ''}",
                flush=True)
        rows.append(row)
    return rows


def _scored(labels_of, anatomy, image, matching, cache, key=None):
    """Dice and time of ``labels_of()``, from the cache when ``key`` is in it
    (and kept there under ``key``)."""
    result = cache.get(key) if key else None
    if result is None:
        start = time.perf_counter()
        labels = labels_of()
        seconds = time.perf_counter() - start
        dice, per_class = mean_dice(anatomy.truth, labels, image, anatomy.mask, matching)
        result = {"dice": dice, "dice_per_class": per_class, "seconds": seconds}
        if key:
            cache.put(key, result)
    return result


def _ceiling(anatomy, image, cache, matching):
    code = inspect.getsource(ceiling_features) + inspect.getsource(supervised_labels)
    key = _digest(cache.key("supervised ceiling", image, anatomy.mask, matching), code,
                  anatomy.truth.tobytes())
    return _scored(lambda: supervised_labels(anatomy, image), anatomy, image, matching, cache, key)


def lead(row, name):
    """Mean Dice of ``name`` minus the best peer's, and that peer."""
    results = row["results"]
    peers = {p: results[p]["dice"] for p in PEERS if results.get(p)}
    if not results.get(name) or not peers:
        return None, None
    best = max(peers, key=peers.get)
    return results[name]["dice"] - peers[best], best


def report(rows, out=print):
    if not rows:
        out("No case ran.")
        return
    names = list(rows[0]["results"])
    with_ceiling = all("ceiling" in row for row in rows)
    out("")
    out("Mean Dice over the 3 classes (fit + predict seconds):")
    out("")
    out("| case | " + " | ".join(names) + " | best peer | lead of default |"
        + (" lead of bias_field=auto |" if "bias_field=auto" in names else "")
        + (" supervised ceiling |" if with_ceiling else ""))
    out("|---" + "|---:" * (len(names) + 2 + ("bias_field=auto" in names) + with_ceiling) + "|")
    for row in rows:
        cells = []
        for name in names:
            result = row["results"][name]
            cells.append("not installed" if result is None
                         else f"{result['dice']:.3f} ({result['seconds']:.1f} s)")
        default_lead, best = lead(row, "default")
        extra = ""
        if "bias_field=auto" in names:
            field_lead, _ = lead(row, "bias_field=auto")
            extra = " n/a |" if field_lead is None else f" {field_lead:+.3f} |"
        tail = ("n/a | n/a |" if best is None
                else f"{best} {row['results'][best]['dice']:.3f} | {default_lead:+.3f} |")
        if with_ceiling:
            extra += f" {row['ceiling']['dice']:.3f} |"
        out(f"| {row['case']} | " + " | ".join(cells) + f" | {tail}{extra}")
    means = []
    for name in names:
        scores = [row["results"][name]["dice"] for row in rows if row["results"][name]]
        means.append(f"{np.mean(scores):.3f}" if len(scores) == len(rows) else "n/a")
    blank = (" |" if "bias_field=auto" in names else "") + (" |" if with_ceiling else "")
    out("| **mean** | " + " | ".join(means) + " | | |" + blank)
    seconds = []
    for name in names:
        times = [row["results"][name]["seconds"] for row in rows if row["results"][name]]
        seconds.append(f"{np.median(times):.2f} s" if times else "n/a")
    out("| median time | " + " | ".join(seconds) + " | | |" + blank)

    out("")
    out(f"Targets (information): lead >= {TARGET_LEAD} in every case, "
        f">= {TARGET_LEAD_STRONG_FIELD} with a 40 % field")
    for name in ("default", "bias_field=auto"):
        if name not in names:
            continue
        misses = []
        for row in rows:
            if name == "bias_field=auto" and not row["field"]:
                continue
            value, best = lead(row, name)
            if value is None:
                continue
            needed = TARGET_LEAD_STRONG_FIELD if row["field"] >= 0.4 else TARGET_LEAD
            if value < needed:
                miss = f"{row['case']} ({value:+.3f} vs {best}"
                if with_ceiling:
                    wanted = row["results"][best]["dice"] + needed
                    reach = row["ceiling"]["dice"]
                    miss += (f"; needs {wanted:.3f}, "
                             + ("above" if wanted > reach else "below")
                             + f" the supervised ceiling {reach:.3f}")
                misses.append(miss + ")")
        status = "met in every case" if not misses else f"not met in {len(misses)}: " + "; ".join(misses)
        out(f"  {name}: {status}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 cases (2-D noise 9 %%, 2-D 40 %% field, MNI 2 mm noise 3 %%)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="only cases whose name contains TEXT (repeatable; any may match)")
    parser.add_argument("--methods", nargs="+", metavar="NAME",
                        help="only these methods (names as in the table)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--from-json", metavar="FILE",
                        help="print the tables of a run saved with --json, run nothing")
    parser.add_argument("--matching", choices=("overlap", "intensity"), default="overlap",
                        help="how labels are paired with classes (default: %(default)s)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also train a classifier on each case's truth (half the image, "
                             "scored on the other half): the Dice a target can ask for")
    parser.add_argument("--list", action="store_true", help="list cases and methods and exit")
    parser.add_argument("--cache-dir", default=default_cache_dir(), metavar="DIR",
                        help="where peer results and built phantoms are kept (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute everything and keep nothing")
    args = parser.parse_args(argv)

    if args.from_json:
        with open(args.from_json) as handle:
            report(json.load(handle)["cases"])
        return
    methods = all_methods()
    cases = [c for c in CASES if c.quick] if args.quick else list(CASES)
    if args.only:
        cases = [c for c in cases if any(text.lower() in c.name.lower() for text in args.only)]
    if args.list:
        print("cases:\n  " + "\n  ".join(c.name for c in cases))
        print("methods:\n  " + "\n  ".join(f"{n}{'' if m else ' (not installed)'}"
                                          for n, m in methods.items()))
        return
    if args.methods:
        unknown = sorted(set(args.methods) - set(methods))
        if unknown:
            parser.error(f"unknown method(s) {unknown}; choose from {list(methods)}")
        methods = {n: m for n, m in methods.items() if n in args.methods}

    default_params = GMMSegmenter().get_params()
    print(f"GMMSegmenter() defaults: beta={default_params.get('beta')!r}"
          + (f", bias_field={default_params['bias_field']!r}" if "bias_field" in default_params else
             " (no bias_field parameter)"))
    load_before = load_average()
    start = time.perf_counter()
    cache = Cache(None if args.no_cache else args.cache_dir)
    warm_up(methods)
    rows = run(cases, methods, cache, args.matching, ceiling=args.ceiling)
    total = time.perf_counter() - start
    load_after = load_average()
    report(rows)
    print()
    print(f"{len(rows)} cases in {total:.0f} s; 1-minute load average {load_before:.2f} before, "
          f"{load_after:.2f} after, on {os.cpu_count()} cores")
    if max(load_before, load_after) > (os.cpu_count() or 1) * 0.75:
        print("The machine was busy: run times are indicative only (Dice is not affected).")
    if cache.hits:
        print(f"{cache.hits} peer (and ceiling) results came from the cache in {cache.directory} (their times "
              "are those of the run that computed them); --no-cache recomputes them.")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"defaults": {k: repr(v) for k, v in default_params.items()},
                       "seconds": total, "load_average": [load_before, load_after],
                       "cases": rows}, handle, indent=1)
        print(f"Results written to {args.json}")


if __name__ == "__main__":
    main()
