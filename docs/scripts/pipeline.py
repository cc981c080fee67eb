"""Tutorial: texture segmentation with a feature step in a scikit-learn pipeline.

Writes docs/images/pipeline.png.
Run from the repository root: ``python docs/scripts/pipeline.py``.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
from skimage import data, feature
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from gmm_segmenter import GMMSegmenter

IMAGES = Path(__file__).resolve().parents[1] / "images"

# --8<-- [start:mosaic]
# Three bundled textures side by side, 384 x 192 pixels each.
brick, grass, gravel = data.brick(), data.grass(), data.gravel()
mosaic = np.hstack([brick[:384, :192], grass[:384, :192], gravel[:384, :192]])
truth = np.repeat([1, 2, 3], 192)[np.newaxis].repeat(384, axis=0)
# --8<-- [end:mosaic]

# --8<-- [start:pipeline]
def local_log_energy(features, sigma=16):
    """Texture is a local statistic: average each feature's energy over a window."""
    return np.log(ndimage.gaussian_filter(features**2, sigma=(sigma, sigma, 0)) + 1e-6)


pipe = make_pipeline(
    FunctionTransformer(
        feature.multiscale_basic_features,
        kw_args={"intensity": False, "edges": True, "texture": True, "sigma_min": 1, "sigma_max": 16},
    ),
    FunctionTransformer(local_log_energy),
    GMMSegmenter(3, channel_axis=-1, random_state=0),  # features are the last axis
)
labels = pipe.fit_predict(mosaic.astype(np.float32))  # (384, 576), the mosaic's shape

intensity_only = GMMSegmenter(3, random_state=0).fit_predict(mosaic)
n_features = pipe[:-1].transform(mosaic.astype(np.float32)).shape[-1]
print(f"features per pixel: {n_features}")
print(f"adjusted Rand index, intensity only:       {adjusted_rand_score(truth.ravel(), intensity_only.ravel()):.2f}")
print(f"adjusted Rand index, features -> segmenter: {adjusted_rand_score(truth.ravel(), labels.ravel()):.2f}")
# --8<-- [end:pipeline]

panels = [
    (mosaic, "brick | grass | gravel", "gray"),
    (intensity_only, "GMMSegmenter on intensity", "viridis"),
    (labels, "features -> GMMSegmenter", "viridis"),
]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.1), layout="constrained")
for ax, (picture, title, cmap) in zip(axes, panels):
    ax.imshow(picture, cmap=cmap, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
fig.savefig(IMAGES / "pipeline.png", dpi=100)
