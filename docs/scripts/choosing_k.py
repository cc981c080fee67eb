"""Tutorial: let the estimator choose the number of components.

Writes docs/images/choosing_k.png.
Run from the repository root: ``python docs/scripts/choosing_k.py``.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
from skimage import data

from gmm_segmenter import GMMSegmenter

IMAGES = Path(__file__).resolve().parents[1] / "images"

# --8<-- [start:synthetic]
# Four materials at 40, 95, 150 and 205 with noise: the right answer is K = 4.
rng = np.random.default_rng(0)
field = ndimage.gaussian_filter(rng.normal(size=(256, 256)), sigma=10)
truth = 1 + np.digitize(field, np.quantile(field, [0.25, 0.5, 0.75]))
image = np.array([40, 95, 150, 205])[truth - 1] + rng.normal(scale=12, size=truth.shape)
image = np.clip(image, 0, 255).astype(np.uint8)

auto = GMMSegmenter("auto", random_state=0).fit(image)
print("synthetic: chose K =", auto.n_components_)
for k, bic in zip(auto.n_components_candidates_, auto.bic_curve_):
    print(f"  K = {k}: BIC {bic:,.0f}")
# --8<-- [end:synthetic]


def three_class_phantom(shape=(256, 256), seed=0):
    """Three smooth regions at 60, 130 and 200 with noise."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=10)
    truth = 1 + np.digitize(field, np.quantile(field, [1 / 3, 2 / 3]))
    picture = np.array([60, 130, 200])[truth - 1] + rng.normal(scale=15, size=shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


# --8<-- [start:photos]
pictures = {
    "astronaut": data.astronaut(), "chelsea": data.chelsea(),
    "coffee": data.coffee(), "coins": data.coins(), "camera": data.camera(),
    "3-class phantom": three_class_phantom(),
}
print(f"{'image':16} {'K':>2}  fitted  drop in BIC / largest drop so far")
fitted = {}
for name, picture in pictures.items():
    channel_axis = -1 if picture.ndim == 3 else None
    segmenter = GMMSegmenter("auto", channel_axis=channel_axis, beta=0,
                             random_state=0).fit(picture)
    fitted[name] = segmenter
    drops = -np.diff(segmenter.bic_curve_)
    shares = [drop / drops[: i + 1].max() for i, drop in enumerate(drops)]
    tried = segmenter.n_components_candidates_
    print(f"{name:16} {segmenter.n_components_:2d}  {tried[0]}..{tried[-1]:<3}  ",
          " ".join(f"{share:5.2f}" for share in shares))
# --8<-- [end:photos]

fig, axes = plt.subplots(3, 4, figsize=(12, 8), layout="constrained")
for (name, picture), pair in zip(pictures.items(), axes.reshape(6, 2)):
    segmenter = fitted[name]
    labels = segmenter.predict(picture)
    palette = np.vstack([np.zeros(segmenter.means_.shape[1]), segmenter.means_])
    shown = palette[labels].round().astype(np.uint8)
    pair[0].imshow(shown, cmap=None if picture.ndim == 3 else "gray")
    pair[0].set_title(f"{name}: K = {segmenter.n_components_}")
    pair[0].set_axis_off()
    curve = pair[1]
    candidates, bics = segmenter.n_components_candidates_, segmenter.bic_curve_
    curve.plot(candidates, bics, "o-")
    chosen = list(candidates).index(segmenter.n_components_)
    curve.plot(candidates[chosen], bics[chosen], "r*", markersize=14)
    curve.set_xticks(candidates)
    curve.set_xlabel("n_components")
    curve.set_ylabel("BIC")
    curve.set_title("bic_curve_ (★ chosen)")
fig.savefig(IMAGES / "choosing_k.png", dpi=80)
