"""Tutorial: guide the mixture with a few brush strokes (scribbles).

Writes docs/images/guided_astronaut.png, docs/images/guided_phantom.png and
docs/images/guided_uncertainty.png.
Run from the repository root: ``python docs/scripts/guided_photo.py``.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from skimage import data
from skimage.draw import disk, ellipse, line

from gmm_segmenter import GMMSegmenter

IMAGES = Path(__file__).resolve().parents[1] / "images"
# label 0 transparent, then one colour per class (as in the napari widget's figures)
CLASSES = ListedColormap(["#00000000", "#e6550d", "#3182bd", "#31a354", "#756bb1", "#b8b8b8"])


def scribbles(shape, strokes, width=4):
    """An integer image of brush strokes: ``strokes`` maps a class to polylines of (row, col)."""
    painted = np.zeros(shape, dtype=np.uint8)
    for k, polylines in strokes.items():
        for points in polylines:
            for (r0, c0), (r1, c1) in zip(points[:-1], points[1:]):
                rows, cols = line(r0, c0, r1, c1)
                for dr in range(-width, width + 1):
                    for dc in range(-width, width + 1):
                        painted[np.clip(rows + dr, 0, shape[0] - 1),
                                np.clip(cols + dc, 0, shape[1] - 1)] = k
    return painted


def fluorescence_phantom(shape=(256, 256), seed=1):
    """Cells (dim cytoplasm, bright nucleus) on a dark background with saturated
    specks of debris, with Poisson noise; returns the image, the classes
    (1 background, 2 cytoplasm, 3 nucleus) and where the specks are."""
    rng = np.random.default_rng(seed)
    truth = np.ones(shape, np.uint8)
    for _ in range(14):
        r, c = rng.integers(25, shape[0] - 25, 2)
        rr, cc = ellipse(r, c, rng.integers(14, 22), rng.integers(14, 22), shape,
                         rotation=rng.uniform(0, np.pi))
        truth[rr, cc] = 2
        rr, cc = disk((r + rng.integers(-3, 4), c + rng.integers(-3, 4)), rng.integers(6, 9),
                      shape=shape)
        truth[rr, cc] = 3
    level = np.array([0.0, 12.0, 40.0, 90.0])[truth]
    specks = np.zeros(shape, bool)
    for _ in range(40):
        rr, cc = disk(tuple(rng.integers(0, shape[0], 2)), rng.integers(1, 3), shape=shape)
        specks[rr, cc] = True
    specks &= truth == 1
    level[specks] = 250.0
    image = rng.poisson(level + 3).astype(np.float32)
    return image, truth, specks


def share(labels, where, k):
    return float(np.mean(labels[where] == k))


# --8<-- [start:astronaut]
image = data.astronaut()  # (512, 512, 3) uint8

unguided = GMMSegmenter(n_components=3, channel_axis=-1, random_state=0).fit(image)
print("unguided means (RGB):", unguided.means_.round().astype(int).tolist())

# a few strokes, as painted in napari: 1 face, 2 suit, 3 wall; 0 = no opinion
strokes = scribbles(image.shape[:2], {
    1: [[(125, 205), (170, 240)]],
    2: [[(300, 90), (440, 120)], [(290, 320), (340, 330)]],
    3: [[(20, 300), (120, 340)]],
})
guided = GMMSegmenter(n_components=3, channel_axis=-1, random_state=0)
guided_labels = guided.fit(image, y=strokes).predict(image)
print("guided means (RGB):  ", guided.means_.round().astype(int).tolist())
# --8<-- [end:astronaut]

unguided_labels = unguided.predict(image)
face, suit = strokes == 1, strokes == 2
for name, labels in [("unguided", unguided_labels), ("guided", guided_labels)]:
    face_label = np.bincount(labels[face]).argmax()
    suit_label = np.bincount(labels[suit]).argmax()
    print(f"{name}: face strokes -> label {face_label}, suit strokes -> label {suit_label}"
          f" ({'one class' if face_label == suit_label else 'two classes'})")
dark = image.max(axis=-1) < 20
print(f"unguided: {share(unguided_labels, dark, 1):.0%} of the near-black pixels "
      f"(max channel < 20) are label 1, which is {np.mean(unguided_labels == 1):.0%} "
      "of the image")

fig, axes = plt.subplots(1, 3, figsize=(12, 4.3), layout="constrained")
axes[0].imshow(image)
axes[0].imshow(strokes, cmap=CLASSES, vmin=0, vmax=5, interpolation="nearest")
axes[0].set_title("astronaut and the strokes")
axes[1].imshow(unguided_labels, cmap=CLASSES, vmin=0, vmax=5, interpolation="nearest")
axes[1].set_title("unguided, K=3")
axes[2].imshow(guided_labels, cmap=CLASSES, vmin=0, vmax=5, interpolation="nearest")
axes[2].set_title("guided by the strokes, K=3")
for ax in axes:
    ax.set_axis_off()
fig.savefig(IMAGES / "guided_astronaut.png", dpi=80)

# --8<-- [start:phantom]
cells, truth, specks = fluorescence_phantom()  # 1 background, 2 cytoplasm, 3 nucleus
strokes = scribbles(cells.shape, {
    1: [[(80, 100), (95, 150)]],                      # background
    2: [[(52, 14), (60, 20)], [(40, 100), (58, 100)]],  # cytoplasm of two cells
    3: [[(44, 26), (45, 32)], [(48, 112), (50, 116)]],  # their nuclei
}, width=1)
unguided = GMMSegmenter(n_components=3, random_state=0).fit_predict(cells)
guided = GMMSegmenter(n_components=4, random_state=0).fit_predict(cells, y=strokes)
# --8<-- [end:phantom]

cell = ~specks
for name, labels in [("unguided K=3", unguided), ("guided K=4", guided)]:
    print(f"{name}: cytoplasm as label 2 {share(labels, cell & (truth == 2), 2):.1%}, "
          f"nuclei as label 3 {share(labels, cell & (truth == 3), 3):.1%}, "
          f"specks as label {np.bincount(labels[specks]).argmax()}")

fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), layout="constrained")
axes[0].imshow(cells, cmap="magma", vmax=120)
axes[0].set_title("phantom (display clipped at 120)")
axes[1].imshow(cells, cmap="gray", vmax=120)
axes[1].imshow(strokes, cmap=CLASSES, vmin=0, vmax=5, interpolation="nearest")
axes[1].set_title("strokes: background, cytoplasm, nucleus")
axes[2].imshow(unguided, cmap=CLASSES, vmin=0, vmax=5, interpolation="nearest")
axes[2].set_title("unguided, K=3")
axes[3].imshow(guided, cmap=CLASSES, vmin=0, vmax=5, interpolation="nearest")
axes[3].set_title("guided, K=4 (4 unpainted)")
for ax in axes:
    ax.set_axis_off()
fig.savefig(IMAGES / "guided_phantom.png", dpi=80)

# --8<-- [start:uncertainty]
strokes = {  # the astronaut's three classes, as above
    1: [[(125, 205), (170, 240)]],
    2: [[(300, 90), (440, 120)], [(290, 320), (340, 330)]],
    3: [[(20, 300), (120, 340)]],
}
# beta=0: the pixel-wise posteriors; the spatial prior would make every
# pixel but those on edges confident
segmenter = GMMSegmenter(n_components=3, channel_axis=-1, beta=0, random_state=0)
segmenter.fit(image, y=scribbles(image.shape[:2], strokes))
posteriors = segmenter.predict_proba(image)  # (512, 512, 3)
uncertainty = 1 - posteriors.max(axis=-1)    # 0 sure ... 2/3 undecided between 3 classes

# where would another stroke help most? the 64 x 64 block with the most doubt
blocks = uncertainty.reshape(8, 64, 8, 64).mean(axis=(1, 3))
row, col = np.unravel_index(blocks.argmax(), blocks.shape)
print(f"most uncertain block: rows {64 * row}-{64 * row + 63}, columns "
      f"{64 * col}-{64 * col + 63}, mean uncertainty {blocks.max():.3f}")
# --8<-- [end:uncertainty]

# --8<-- [start:another]
# the block is the wall's shaded top right corner, darker than the stroked
# wall: one more stroke of class 3 (wall) across it
strokes[3].append([(8, 456), (56, 504)])
again = GMMSegmenter(n_components=3, channel_axis=-1, beta=0, random_state=0)
again.fit(image, y=scribbles(image.shape[:2], strokes))
after = 1 - again.predict_proba(image).max(axis=-1)
block = np.s_[64 * row:64 * (row + 1), 64 * col:64 * (col + 1)]
for name, doubt in [("3 strokes", uncertainty), ("+1 stroke", after)]:
    print(f"{name}: in the block mean uncertainty {doubt[block].mean():.3f}, "
          f"{np.mean(doubt[block] > 0.25):.1%} of the pixels above 0.25; "
          f"in the image {np.mean(doubt > 0.25):.1%}")
# --8<-- [end:another]

fig, axes = plt.subplots(1, 3, figsize=(12, 4.3), layout="constrained")
shown = axes[0].imshow(uncertainty, cmap="inferno", vmin=0, vmax=2 / 3)
axes[0].add_patch(plt.Rectangle((64 * col, 64 * row), 64, 64, fill=False, color="cyan", lw=2))
axes[0].set_title("1 - max posterior, 3 classes painted")
axes[1].imshow(image)
axes[1].imshow(scribbles(image.shape[:2], strokes), cmap=CLASSES, vmin=0, vmax=5,
               interpolation="nearest")
axes[1].add_patch(plt.Rectangle((64 * col, 64 * row), 64, 64, fill=False, color="cyan", lw=2))
axes[1].set_title("one more stroke (wall) in the box")
axes[2].imshow(after, cmap="inferno", vmin=0, vmax=2 / 3)
axes[2].add_patch(plt.Rectangle((64 * col, 64 * row), 64, 64, fill=False, color="cyan", lw=2))
axes[2].set_title("1 - max posterior, after")
for ax in axes:
    ax.set_axis_off()
fig.colorbar(shown, ax=[axes[0], axes[2]], shrink=0.7, label="uncertainty")
fig.savefig(IMAGES / "guided_uncertainty.png", dpi=80)
