"""MkDocs hook: regenerate every figure and printed output before the build.

Each ``docs/scripts/*.py`` (except this file) runs once, in a fresh
interpreter, from the repository root, when ``mkdocs build`` or
``mkdocs serve`` starts; what it prints is saved as
``docs/scripts/output/NAME.txt``. The tutorials show the scripts' code and
printed output through ``pymdownx.snippets`` and their figures from
``docs/images/``, so what a reader sees is what ran. A failing script fails
the build.

Scripts that need a display and napari (screenshots) are not run here; their
docstrings say how to run them, and their committed images are used.

Set ``GMM_DOCS_SKIP_SCRIPTS=1`` to reuse the committed outputs while editing
prose.
"""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from mkdocs.exceptions import PluginError

log = logging.getLogger("mkdocs.hooks.gmm_segmenter")

SCRIPTS = Path(__file__).resolve().parent
OUTPUT = SCRIPTS / "output"
ROOT = SCRIPTS.parents[1]
# Need Qt, OpenGL and a display: run by hand (see each script's docstring).
NEEDS_DISPLAY = {"napari_screenshot.py", "napari_guided_screenshot.py"}


def on_startup(command, dirty):
    if os.environ.get("GMM_DOCS_SKIP_SCRIPTS"):
        log.info("GMM_DOCS_SKIP_SCRIPTS is set: using the committed figures")
        return
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
    OUTPUT.mkdir(exist_ok=True)
    for script in sorted(SCRIPTS.glob("*.py")):
        if script.name.startswith("_") or script.name in NEEDS_DISPLAY:
            continue
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise PluginError(
                f"docs/scripts/{script.name} failed (exit {result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-4000:]}"
            )
        (OUTPUT / f"{script.stem}.txt").write_text(result.stdout)
        log.info("ran docs/scripts/%s in %.1f s", script.name, time.perf_counter() - start)
