"""Tutorial: segment a colour photo by colour, as the original script did.

Writes docs/images/colour_photo.png and docs/images/colour_photo_masks.png.
Run from the repository root: ``python docs/scripts/colour_photo.py``.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_sample_image

from gmm_segmenter import GMMSegmenter

IMAGES = Path(__file__).resolve().parents[1] / "images"

# --8<-- [start:segment]
image = load_sample_image("flower.jpg")  # (427, 640, 3) uint8, ships with scikit-learn

segmenter = GMMSegmenter(n_components=4, channel_axis=-1, random_state=0)
labels = segmenter.fit_predict(image)  # (427, 640) uint8: 1..4, darkest first

# Every pixel painted with its component's mean colour (label 0 would be black).
palette = np.vstack([[0, 0, 0], segmenter.means_]).round().astype(np.uint8)
segmented = palette[labels]

# One binary mask per component, as gmm-segment writes NAME_Mask0, NAME_Mask1, ...
masks = [labels == k for k in range(1, segmenter.n_components_ + 1)]

for k, (mean, weight) in enumerate(zip(segmenter.means_, segmenter.weights_), start=1):
    print(f"label {k}: mean RGB {mean.round().astype(int)}, {weight:.0%} of the pixels")
# --8<-- [end:segment]

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
for ax, picture, title in zip(axes, [image, segmented], ["flower.jpg", "segmented (mean colours)"]):
    ax.imshow(picture)
    ax.set_title(title)
    ax.set_axis_off()
fig.savefig(IMAGES / "colour_photo.png", dpi=100)

fig, axes = plt.subplots(1, len(masks), figsize=(10, 2), layout="constrained")
for k, (ax, mask) in enumerate(zip(axes, masks)):
    ax.imshow(mask, cmap="gray")
    ax.set_title(f"Mask{k} (label {k + 1})")
    ax.set_axis_off()
fig.savefig(IMAGES / "colour_photo_masks.png", dpi=100)
