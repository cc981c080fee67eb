"""Getting started: one picture from segmenting to saved files.

Writes docs/images/getting_started.png.
Run from the repository root: ``python docs/scripts/getting_started.py``.
"""

import os
import tempfile
from pathlib import Path

IMAGES = Path(__file__).resolve().parents[1] / "images"

# --8<-- [start:segment]
import numpy as np
from skimage import data

from gmm_segmenter import GMMSegmenter

image = data.coffee()  # (400, 600, 3) uint8: a cup of coffee on a saucer

segmenter = GMMSegmenter(n_components=4, channel_axis=-1, random_state=0)
labels = segmenter.fit_predict(image)

print(labels.shape, labels.dtype, np.unique(labels))
# --8<-- [end:segment]

# --8<-- [start:look]
import matplotlib.pyplot as plt

for k in range(1, segmenter.n_components_ + 1):
    mean, weight = segmenter.means_[k - 1], segmenter.weights_[k - 1]
    print(f"label {k}: mean colour {mean.round().astype(int)}, {weight:.0%} of pixels")

# each pixel painted in its component's mean colour (label 0 would be black)
palette = np.vstack([[0, 0, 0], segmenter.means_]).round().astype(np.uint8)
segmented = palette[labels]

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
axes[0].imshow(image)
axes[0].set_title("data.coffee()")
axes[1].imshow(labels, cmap="viridis", interpolation="nearest")
axes[1].set_title("labels 1..4, darkest first")
axes[2].imshow(segmented)
axes[2].set_title("each label in its mean colour")
for ax in axes:
    ax.set_axis_off()
plt.show()
# --8<-- [end:look]
fig.savefig(IMAGES / "getting_started.png", dpi=80)

# The files go to a scratch folder, not into the repository.
os.chdir(tempfile.mkdtemp())

# --8<-- [start:save]
from pathlib import Path

import tifffile
from skimage import io

from gmm_segmenter import load_model, save_model

out = Path("Result")
out.mkdir(exist_ok=True)
tifffile.imwrite(out / "coffee_labels.tif", labels)  # for Fiji, napari, ...
io.imsave(out / "coffee_segmented.png", segmented)
for k in range(1, segmenter.n_components_ + 1):  # one mask per label
    mask = np.where(labels == k, 255, 0).astype(np.uint8)
    io.imsave(out / f"coffee_Mask{k - 1}.png", mask, check_contrast=False)
save_model(segmenter, out / "coffee_model.npz")  # the model, a few kB

# Later, in another session: the model labels new pictures of the kind.
model = load_model(out / "coffee_model.npz")
same = np.array_equal(model.predict(image), labels)
print("same labels from the saved model:", same)
print(sorted(path.name for path in out.iterdir()))
# --8<-- [end:save]
