"""Bias-field correction: uneven illumination in microscopy and vignetting in a photograph.

Writes docs/images/bias_field_microscopy.png and docs/images/bias_field_vignetting.png.
Run from the repository root: ``python docs/scripts/bias_field.py``.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from skimage import data
from sklearn.metrics import adjusted_rand_score

from gmm_segmenter import GMMSegmenter

IMAGES = Path(__file__).resolve().parents[1] / "images"

# --8<-- [start:microscopy]
# A bright-field micrograph (stained tissue) that ships with scikit-image,
# under an illumination that falls off away from an off-centre spot: the far
# corner gets half the light of the brightest point.
tissue = data.immunohistochemistry()  # (512, 512, 3) uint8
rows, cols = np.indices(tissue.shape[:2]) / 512
illumination = 0.4 + 0.6 * np.exp(-((rows - 0.3) ** 2 + (cols - 0.35) ** 2) / (2 * 0.5**2))
uneven = (tissue * illumination[..., np.newaxis]).astype(np.uint8)

plain = GMMSegmenter(3, channel_axis=-1, random_state=0)
corrected = GMMSegmenter(3, channel_axis=-1, bias_field="auto", random_state=0)
plain_labels = plain.fit_predict(uneven)
corrected_labels = corrected.fit_predict(uneven)
field = corrected.bias_field_  # (512, 512, 3): one field per channel, channels last as in X
# --8<-- [end:microscopy]

def agreement(params, image, reference_image):
    """ARI between the labels of ``image`` and those of the same scene without
    the added field, both segmented with ``params``."""
    reference = GMMSegmenter(**params).fit_predict(reference_image)
    return adjusted_rand_score(reference.ravel(), GMMSegmenter(**params).fit_predict(image).ravel())


def recovered(params, image, reference_image, added):
    """Correlation of the logs of the added field and of the estimated field
    divided by the one estimated without it (the scene's own shading)."""
    ratio = GMMSegmenter(**params).fit(image).bias_field_ / GMMSegmenter(**params).fit(
        reference_image).bias_field_
    return np.corrcoef(np.log(ratio[..., 0]).ravel(), np.log(added).ravel())[0, 1]


print("microscopy (bright-field tissue, illumination falling to 50 %):")
print(f"  labels like the evenly lit image's (ARI): no correction "
      f"{agreement(plain.get_params(), uneven, tissue):.2f}, bias_field='auto' "
      f"{agreement(corrected.get_params(), uneven, tissue):.2f}")
print("  added illumination recovered (correlation of the logs): "
      f"{recovered(corrected.get_params(), uneven, tissue, illumination):.3f}")

# --8<-- [start:vignetting]
# A photograph with vignetting: the lens lets less light reach the corners,
# here down to 50 % (a quadratic fall-off from the centre).
cat = data.chelsea()  # (300, 451, 3) uint8
rows, cols = np.indices(cat.shape[:2], dtype=float)
radius2 = ((rows - 149.5) / 149.5) ** 2 + ((cols - 225) / 225) ** 2  # 2 in the corners
vignetting = 1 - 0.25 * radius2
vignetted = (cat * vignetting[..., np.newaxis]).astype(np.uint8)

plain_photo = GMMSegmenter(2, channel_axis=-1, random_state=0)
corrected_photo = GMMSegmenter(2, channel_axis=-1, bias_field="auto", random_state=0)
photo_plain_labels = plain_photo.fit_predict(vignetted)
photo_corrected_labels = corrected_photo.fit_predict(vignetted)
# --8<-- [end:vignetting]

print("photograph (vignetting, corners at 50 %):")
print(f"  labels like the image's without vignetting (ARI): no correction "
      f"{agreement(plain_photo.get_params(), vignetted, cat):.2f}, bias_field='auto' "
      f"{agreement(corrected_photo.get_params(), vignetted, cat):.2f}")
print("  vignetting recovered (correlation of the logs): "
      f"{recovered(corrected_photo.get_params(), vignetted, cat, vignetting):.3f}")


def figure(panels, path):
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4),
                             layout="constrained")
    for ax, (picture, title, cmap) in zip(axes, panels):
        shown = ax.imshow(picture, cmap=cmap, interpolation="nearest")
        if cmap == "magma":
            fig.colorbar(shown, ax=ax, shrink=0.7)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.savefig(path, dpi=80)
    plt.close(fig)


figure([
    (uneven, "unevenly lit micrograph", None),
    (plain_labels, "labels, no correction", "viridis"),
    (corrected_labels, "labels, bias_field='auto'", "viridis"),
    (field[..., 0], "estimated field (red channel)", "magma"),
    (np.clip(uneven / field, 0, 255).astype(np.uint8), "corrected image", None),
], IMAGES / "bias_field_microscopy.png")
figure([
    (vignetted, "photograph with vignetting", None),
    (photo_plain_labels, "labels, no correction", "viridis"),
    (photo_corrected_labels, "labels, bias_field='auto'", "viridis"),
    (corrected_photo.bias_field_[..., 0], "estimated field (red channel)", "magma"),
    (np.clip(vignetted / corrected_photo.bias_field_, 0, 255).astype(np.uint8),
     "corrected image", None),
], IMAGES / "bias_field_vignetting.png")
