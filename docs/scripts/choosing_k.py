"""Tutorial: choose the number of components with the BIC.

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

auto = GMMSegmenter("auto", n_components_range=(1, 8), random_state=0).fit(image)
print("synthetic: chose K =", auto.n_components_)
for k, bic in zip(auto.n_components_candidates_, auto.bic_curve_):
    print(f"  K = {k}: BIC {bic:,.0f}")
# --8<-- [end:synthetic]

# --8<-- [start:camera]
camera = data.camera()
camera_auto = GMMSegmenter("auto", random_state=0).fit(camera)
print("camera: chose K =", camera_auto.n_components_)
# --8<-- [end:camera]

fig, axes = plt.subplots(2, 3, figsize=(11, 7), layout="constrained")
for row, (picture, fitted, name) in enumerate([(image, auto, "synthetic"), (camera, camera_auto, "camera")]):
    axes[row, 0].imshow(picture, cmap="gray")
    axes[row, 0].set_title(f"{name} image")
    axes[row, 1].imshow(fitted.predict(picture), cmap="viridis", interpolation="nearest")
    axes[row, 1].set_title(f"labels, K = {fitted.n_components_} chosen by BIC")
    for ax in axes[row, :2]:
        ax.set_axis_off()
    curve = axes[row, 2]
    curve.plot(fitted.n_components_candidates_, fitted.bic_curve_, "o-")
    best = np.argmin(fitted.bic_curve_)
    curve.plot(fitted.n_components_candidates_[best], fitted.bic_curve_[best], "r*", markersize=14)
    curve.set_xlabel("n_components")
    curve.set_ylabel("BIC (lower is better)")
    curve.set_title(f"{name}: bic_curve_")
fig.savefig(IMAGES / "choosing_k.png", dpi=100)
