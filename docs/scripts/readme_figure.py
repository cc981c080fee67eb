"""Make docs/images/readme_result.png: bundled images next to their segmentations.

Run from the repository root: ``python docs/scripts/readme_figure.py``.
"""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from skimage import color, data, transform

from gmm_segmenter import GMMSegmenter

OUT = Path(__file__).resolve().parents[1] / "images" / "readme_result.png"
HEIGHT = 256


def mean_colour_picture(image, labels, segmenter):
    """Each pixel painted with its component's mean colour (the original 'Segmented')."""
    palette = np.vstack([[0, 0, 0], segmenter.means_.reshape(len(segmenter.means_), -1)])
    painted = palette[labels]
    if painted.shape[-1] == 1:
        painted = np.repeat(painted, 3, axis=-1)
    return np.clip(painted, 0, 255).astype(np.uint8)


def resized(image):
    width = round(image.shape[1] * HEIGHT / image.shape[0])
    out = transform.resize(image, (HEIGHT, width), order=0, preserve_range=True, anti_aliasing=False)
    return out.astype(np.uint8)


def main():
    panels = []
    astronaut = data.astronaut()
    segmenter = GMMSegmenter(3, channel_axis=-1, random_state=0).fit(astronaut)
    labels = segmenter.predict(astronaut)
    panels += [astronaut, mean_colour_picture(astronaut, labels, segmenter)]

    camera = data.camera()
    camera_labels = GMMSegmenter(3, random_state=0).fit_predict(camera)
    panels += [
        np.repeat(camera[..., np.newaxis], 3, axis=-1),
        (color.label2rgb(camera_labels, bg_label=0) * 255).astype(np.uint8),
    ]
    gap = np.full((HEIGHT, 8, 3), 255, dtype=np.uint8)
    row = [gap]
    for panel in panels:
        row += [resized(panel), gap]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(OUT, np.concatenate(row, axis=1))
    print(f"wrote {OUT.relative_to(OUT.parents[2])}")


if __name__ == "__main__":
    main()
