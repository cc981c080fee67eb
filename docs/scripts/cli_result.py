"""Tutorial: the gmm-segment command and its Result folder.

Runs ``gmm-segment --sample astronaut -k 3`` in a temporary folder, prints
what it wrote and writes docs/images/cli_result.png from those files.
Run from the repository root: ``python docs/scripts/cli_result.py``.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import imageio.v3 as iio
import matplotlib.pyplot as plt
from skimage import data

IMAGES = Path(__file__).resolve().parents[1] / "images"

# The installed command; `python -m gmm_segmenter` is the same program.
executable = shutil.which("gmm-segment")
command = [executable] if executable else [sys.executable, "-m", "gmm_segmenter"]

with tempfile.TemporaryDirectory() as scratch:
    run = subprocess.run(
        [*command, "--sample", "astronaut", "-k", "3", "--quiet"],
        cwd=scratch, check=True, capture_output=True, text=True,
    )
    result = Path(scratch) / "Result"
    print("$ ls Result")
    for path in sorted(result.iterdir()):
        print(path.name)

    report = json.loads((result / "astronaut_report.json").read_text())
    print()
    print("Result/astronaut_report.json, some of its entries:")
    for key in ["input", "shape", "dtype", "n_components", "pixels_per_label", "outputs"]:
        print(f"  {key}: {json.dumps(report[key])}")
    means = [[round(value) for value in mean] for mean in report["model"]["means"]]
    print(f"  model.means (rounded): {json.dumps(means)}")

    pictures = [data.astronaut(), iio.imread(result / "astronaut_segmented.png")]
    pictures += [iio.imread(result / f"astronaut_Mask{k}.png") for k in range(3)]

titles = ["input: astronaut", "astronaut_segmented.png"] + [f"astronaut_Mask{k}.png" for k in range(3)]
fig, axes = plt.subplots(1, 5, figsize=(14, 3.1), layout="constrained")
for ax, picture, title in zip(axes, pictures, titles):
    ax.imshow(picture, cmap="gray")
    ax.set_title(title)
    ax.set_axis_off()
fig.savefig(IMAGES / "cli_result.png", dpi=100)
