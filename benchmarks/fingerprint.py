"""Digests of labels, posteriors and model files over a matrix of cases.

A refactoring that must not change results is checked by running this
before and after it and comparing the two outputs::

    python benchmarks/fingerprint.py > before.json
    # ... change the code ...
    python benchmarks/fingerprint.py > after.json
    diff before.json after.json    # empty when nothing changed

Each case fits a GMMSegmenter, then records SHA-256 digests of the labels,
of the float32 posteriors, of every array in the saved model file and of its
metadata, plus the score rounded to 12 significant digits.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from skimage import data

from gmm_segmenter import GMMSegmenter, load_model, save_model


def _digest(array) -> str:
    array = np.ascontiguousarray(np.asarray(array))
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(header + array.tobytes()).hexdigest()[:16]


def _model_digests(segmenter) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.npz"
        save_model(segmenter, path)
        out = {}
        with np.load(path, allow_pickle=False) as archive:
            for name in sorted(archive.files):
                value = archive[name]
                if name == "metadata":
                    metadata = json.loads(str(value))
                    metadata.pop("gmm_segmenter_version", None)
                    out[name] = hashlib.sha256(
                        json.dumps(metadata, sort_keys=True).encode()
                    ).hexdigest()[:16]
                else:
                    out[name] = _digest(value)
        loaded = load_model(path)
    return out, loaded


def _images():
    rng = np.random.default_rng(0)
    camera = data.camera()[::2, ::2]
    astronaut = data.astronaut()[::2, ::2]
    noisy = np.repeat([20.0, 120.0, 220.0], 60)[np.newaxis].repeat(90, axis=0)
    noisy += rng.normal(scale=40, size=noisy.shape)
    noisy[3, 5] = np.nan
    volume = (rng.normal(size=(12, 40, 44)) * 300 + 2000).astype(np.uint16)
    volume[:, 10:30, 10:30] += 1500
    wide = (rng.integers(0, 5, size=(60, 70)) * 100_000).astype(np.int64)
    wide += rng.integers(0, 40_000, size=wide.shape)
    mask = np.ones(camera.shape, bool)
    mask[:40] = False
    return {
        "camera": (camera, {}),
        "camera-mask": (camera, {"mask": mask}),
        "astronaut": (astronaut, {"channel_axis": -1}),
        "noisy-float": (noisy, {}),
        "volume-u16": (volume, {}),
        "wide-int": (wide, {}),
        "batch": ([camera, camera[:100, :120]], {}),
    }


CASES = [
    ("camera", {"beta": 0}),
    ("camera", {}),
    ("camera", {"beta": "auto"}),
    ("camera", {"covariance_type": "spherical", "n_components": 4}),
    ("camera-mask", {}),
    ("camera", {"n_components": "auto", "n_components_range": (2, 4), "beta": 0}),
    ("astronaut", {"beta": 0}),
    ("astronaut", {}),
    ("astronaut", {"covariance_type": "tied"}),
    ("astronaut", {"covariance_type": "diag", "beta": 0.5}),
    ("astronaut", {"covariance_type": "spherical", "beta": 0}),
    ("astronaut", {"init_params": "k-means++", "n_init": 2, "beta": 0}),
    ("noisy-float", {}),
    ("noisy-float", {"connectivity": 2, "spacing": (2.0, 1.0)}),
    ("noisy-float", {"init_params": "quantile", "beta": 0}),
    ("volume-u16", {}),
    ("volume-u16", {"beta": 0, "max_samples": 1000}),
    ("wide-int", {}),
    ("batch", {"n_components": 2}),
]


def run_case(images, name, params, with_dask):
    image, extra = images[name]
    extra = dict(extra)
    mask = extra.pop("mask", None)
    segmenter = GMMSegmenter(**{"random_state": 0, **extra, **params})
    segmenter.fit(image, mask=mask)
    labels = segmenter.predict(image, mask=mask)
    posteriors = segmenter.predict_proba(image, mask=mask)
    labels = labels if isinstance(labels, list) else [labels]
    posteriors = posteriors if isinstance(posteriors, list) else [posteriors]
    out = {
        "labels": [_digest(x) for x in labels],
        "posteriors": [_digest(x) for x in posteriors],
        "score": float(f"{segmenter.score(image, mask=mask):.12g}"),
        "beta_": float(f"{segmenter.beta_:.12g}"),
    }
    model, loaded = _model_digests(segmenter)
    out["model"] = model
    again = loaded.predict(image, mask=mask)
    again = again if isinstance(again, list) else [again]
    out["loaded_labels_equal"] = all(np.array_equal(a, b) for a, b in zip(again, labels))
    if with_dask and not isinstance(image, list):
        import dask.array as da

        chunks = tuple(max(8, n // 2) for n in np.shape(image))
        lazy = da.from_array(np.asarray(image), chunks=chunks)
        lazy_mask = None if mask is None else da.from_array(mask, chunks=chunks[: mask.ndim])
        out["dask_labels"] = _digest(segmenter.predict(lazy, mask=lazy_mask).compute())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-dask", action="store_true", help="skip the dask predictions")
    args = parser.parse_args(argv)
    images = _images()
    results = {}
    warnings.simplefilter("ignore")
    for name, params in CASES:
        key = name + " " + json.dumps(params, sort_keys=True)
        results[key] = run_case(images, name, params, not args.no_dask)
    json.dump(results, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
