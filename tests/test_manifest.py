"""The napari manifest is installed inside the package, where npe2 looks for it."""

from pathlib import Path

import pytest

npe2 = pytest.importorskip("npe2", reason="npe2 comes with the napari extra")


def test_manifest_is_found_and_valid():
    manifest = npe2.PluginManifest.from_distribution("gmm-segmenter")
    assert manifest.name == "gmm-segmenter"
    top_level = Path(__file__).resolve().parents[1] / "napari.yaml"
    # one source of truth: the packaged manifest is the top-level file
    assert npe2.PluginManifest.from_file(top_level) == manifest
