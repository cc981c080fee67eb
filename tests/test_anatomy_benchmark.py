"""``benchmarks/anatomy.py --ceiling``: the Dice a classifier trained on the
truth gets, and how the targets line weighs a miss against it."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="module")
def anatomy():
    path = Path(__file__).parent.parent / "benchmarks" / "anatomy.py"
    spec = importlib.util.spec_from_file_location("gmm_anatomy_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(autouse=True)
def one_thread():
    # the boosting's OpenMP threads slow down by orders of magnitude when
    # other processes hold the cores; these images are tiny
    with threadpool_limits(1):
        yield


def _tissues(noise, seed=0):
    """Three tissues as bands of smoothed white noise: no pattern that a
    pixel's position would give away in the other fold."""
    field = ndi.gaussian_filter(np.random.default_rng(seed).normal(size=(64, 64)), 1.5)
    truth = np.digitize(field, np.quantile(field, [1 / 3, 2 / 3])) + 1
    image = truth + np.random.default_rng(seed + 1).normal(scale=noise, size=truth.shape)
    return truth.astype(np.uint8), image


def _ceiling(anatomy, case, image):
    labels = anatomy.supervised_labels(case, image)
    return anatomy.mean_dice(case.truth, labels, image, case.mask)


def test_the_ceiling_follows_how_much_the_image_holds(anatomy):
    truth, clean = _tissues(0.05)
    _, noisy = _tissues(0.8)
    case = anatomy.Anatomy(clean, truth, None, (1.0, 1.0), "blobs")
    easy, per_class = _ceiling(anatomy, case, clean)
    hard, _ = _ceiling(anatomy, case, noisy)
    assert easy > 0.99 and len(per_class) == 3
    # noise hides the tissues from a pixel's neighbourhood, also from a trained model
    assert hard < easy - 0.05


def test_the_ceiling_only_scores_masked_pixels(anatomy):
    truth, image = _tissues(0.05)
    mask = np.zeros(truth.shape, bool)
    mask[:, :32] = True
    image[~mask] = 1e6  # outside the mask nothing is learnt from or scored
    case = anatomy.Anatomy(image, np.where(mask, truth, 0), mask, (1.0, 1.0), "half")
    dice, _ = _ceiling(anatomy, case, image)
    assert dice > 0.99


def test_the_targets_line_says_whether_a_miss_asks_for_more_than_the_ceiling(anatomy):
    def row(case, default, peer, ceiling, field=0.0):
        return {"case": case, "field": field, "ceiling": {"dice": ceiling},
                "results": {"default": {"dice": default, "seconds": 1.0},
                            "KMeans": {"dice": peer, "seconds": 1.0}}}

    lines = []
    anatomy.report([row("reachable", 0.90, 0.90, 0.97), row("beyond", 0.94, 0.96, 0.979),
                    row("met", 0.95, 0.90, 0.99)], out=lines.append)
    text = "\n".join(lines)
    assert "supervised ceiling |" in text
    assert "| reachable |" in text and "| 0.970 |" in text
    targets = next(line for line in lines if line.strip().startswith("default:"))
    assert "not met in 2" in targets
    assert "reachable (+0.000 vs KMeans; needs 0.930, below the supervised ceiling 0.970)" in targets
    assert "beyond (-0.020 vs KMeans; needs 0.990, above the supervised ceiling 0.979)" in targets
    assert "met (" not in targets
