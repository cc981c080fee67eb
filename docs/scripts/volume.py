"""Tutorial: segment a 3-D stack with anisotropic voxels.

Writes docs/images/volume.png.
Run from the repository root: ``python docs/scripts/volume.py``.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
from skimage import data

from gmm_segmenter import GMMSegmenter

IMAGES = Path(__file__).resolve().parents[1] / "images"

# --8<-- [start:volume]
# Blobs in a 96^3 cube, imaged every second plane: voxels are 2 units deep, 1 wide.
blobs = data.binary_blobs(length=96, n_dim=3, volume_fraction=0.3, blob_size_fraction=0.15, rng=1)
truth = 1 + blobs[::2].astype(np.uint8)  # (48, 96, 96): 1 background, 2 blobs
rng = np.random.default_rng(1)
signal = ndimage.gaussian_filter(truth.astype(np.float32), sigma=(0.5, 1, 1))  # a blurry microscope
volume = 100 * signal + rng.normal(scale=30, size=truth.shape).astype(np.float32)
# --8<-- [end:volume]

# --8<-- [start:segment]
segmenter = GMMSegmenter(2, spacing=(2, 1, 1), random_state=0)
labels = segmenter.fit_predict(volume)  # (48, 96, 96), the volume's shape

pixelwise = GMMSegmenter(2, beta=0, random_state=0).fit_predict(volume)
print(f"labels {labels.shape} {labels.dtype}, voxels per label: {np.bincount(labels.ravel())[1:]}")
print(f"beta=0:  {np.mean(pixelwise == truth):.1%} of the voxels right")
print(f"default: {np.mean(labels == truth):.1%} of the voxels right")
# --8<-- [end:segment]

planes = [8, 24, 40]
fig, axes = plt.subplots(3, len(planes), figsize=(7.5, 7.5), layout="constrained")
for column, z in enumerate(planes):
    for row, (picture, name, cmap) in enumerate(
        [(volume, "volume", "gray"), (pixelwise, "beta=0", "viridis"), (labels, "default", "viridis")]
    ):
        ax = axes[row, column]
        ax.imshow(picture[z], cmap=cmap, interpolation="nearest")
        ax.set_title(f"{name}, plane {z}")
        ax.set_axis_off()
fig.savefig(IMAGES / "volume.png", dpi=100)
