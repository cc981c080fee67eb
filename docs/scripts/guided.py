"""Tutorial: scribbles tell the mixture which classes you mean, and their numbers.

Writes docs/images/guided.png.
Run from the repository root: ``python docs/scripts/guided.py``.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import adjusted_rand_score

from gmm_segmenter import GMMSegmenter

IMAGES = Path(__file__).resolve().parents[1] / "images"

# --8<-- [start:image]
# A head-like phantom: background, tissue, two small lesions and a thin
# bright rim, with noise 0.7 of the step between their levels.
size = 192
rows, cols = np.mgrid[:size, :size] - size / 2
radius = np.hypot(rows, cols)
truth = np.ones((size, size), dtype=np.uint8)  # 1 background
truth[radius < 0.42 * size] = 2  # tissue
lesions = (np.hypot(rows + 0.12 * size, cols) < 0.09 * size) | (
    np.hypot(rows - 0.12 * size, cols + 0.1 * size) < 0.07 * size
)
truth[lesions] = 3
truth[(radius >= 0.42 * size) & (radius < 0.46 * size)] = 4  # rim
rng = np.random.default_rng(0)
image = (truth - 1) * 100.0 + rng.normal(scale=70, size=truth.shape)
# --8<-- [end:image]

# --8<-- [start:scribbles]
# A few strokes, as painted in a napari Labels layer: 0 = unknown.
# Numbered as we like: the lesions are 1, whatever their brightness.
scribbles = np.zeros(truth.shape, dtype=np.uint8)
scribbles[10:12, 20:60] = 3  # background
scribbles[150:152, 80:112] = 2  # tissue
scribbles[70:73, 90:104] = 1  # a lesion
scribbles[86:106, 10:13] = 4  # the rim, on the left
# --8<-- [end:scribbles]
assert all(truth[scribbles == k].min() == truth[scribbles == k].max() for k in (1, 2, 3, 4))

# --8<-- [start:segment]
unguided = GMMSegmenter(4, random_state=0).fit_predict(image)
guided = GMMSegmenter(4, random_state=0).fit_predict(image, scribbles)

for name, labels in [("unguided", unguided), ("guided", guided)]:
    ari = adjusted_rand_score(truth.ravel(), labels.ravel())
    names = {c: int(np.bincount(labels[truth == c]).argmax()) for c in (1, 2, 3, 4)}
    print(f"{name:9s} ARI {ari:.3f}; label of background, tissue, lesions, rim: "
          f"{names[1]}, {names[2]}, {names[3]}, {names[4]}")
# --8<-- [end:segment]

panels = [
    (image, "image", "gray"),
    (np.ma.masked_equal(scribbles, 0), "scribbles (1 = lesions)", "tab10"),
    (unguided, "unguided (default)", "viridis"),
    (guided, "guided by the scribbles", "viridis"),
]
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4), layout="constrained")
for ax, (picture, title, cmap) in zip(axes, panels):
    if title.startswith("scribbles"):
        ax.imshow(image, cmap="gray")
        ax.imshow(picture, cmap=cmap, vmin=0, vmax=9, interpolation="nearest")
    else:
        ax.imshow(picture, cmap=cmap, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
fig.savefig(IMAGES / "guided.png", dpi=100)
