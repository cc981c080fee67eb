"""``--sample``: the images shipped inside scikit-image, and nothing to download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: ``--sample`` names: the scikit-image loader and the file it reads. Only the
#: ones whose file ships inside the installed scikit-image are offered, so a
#: sample never triggers a download.
SAMPLE_IMAGES = {
    "astronaut": ("astronaut", "astronaut.png"),
    "brick": ("brick", "brick.png"),
    "camera": ("camera", "camera.png"),
    "cat": ("cat", "chelsea.png"),
    "cell": ("cell", "cell.png"),
    "checkerboard": ("checkerboard", "chessboard_GRAY.png"),
    "clock": ("clock", "clock_motion.png"),
    "coffee": ("coffee", "coffee.png"),
    "coins": ("coins", "coins.png"),
    "colorwheel": ("colorwheel", "color.png"),
    "grass": ("grass", "grass.png"),
    "gravel": ("gravel", "gravel.png"),
    "horse": ("horse", "horse.png"),
    "hubble_deep_field": ("hubble_deep_field", "hubble_deep_field.jpg"),
    "immunohistochemistry": ("immunohistochemistry", "ihc.png"),
    "logo": ("logo", "logo.png"),
    "microaneurysms": ("microaneurysms", "microaneurysms.png"),
    "moon": ("moon", "moon.png"),
    "page": ("page", "page.png"),
    "retina": ("retina", "retina.jpg"),
    "rocket": ("rocket", "rocket.jpg"),
    "shepp_logan_phantom": ("shepp_logan_phantom", "phantom.png"),
    "text": ("text", "text.png"),
}


def available_samples() -> list[str]:
    """``--sample`` names whose image file ships inside the installed scikit-image."""
    # The files are looked up without importing scikit-image, which would
    # make every start of gmm-segment (--help included) wait for it.
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - a dependency
        return []
    folder = Path(spec.submodule_search_locations[0], "data")
    return [name for name, (_, filename) in SAMPLE_IMAGES.items() if (folder / filename).is_file()]


def load_sample(name):
    """The sample image ``name`` as scikit-image's loader returns it."""
    import skimage.data

    return getattr(skimage.data, SAMPLE_IMAGES[name][0])()
