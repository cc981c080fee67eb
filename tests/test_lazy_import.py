"""`import gmm_segmenter` and `gmm-segment --help` load no heavy library;
the public names still appear, and load on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gmm_segmenter

HEAVY = ("numpy", "sklearn", "scipy", "skimage")


def _loaded_after(code: str) -> set[str]:
    """The heavy top-level packages in ``sys.modules`` after running ``code``
    in a fresh interpreter (this one has loaded everything already)."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted(set(m.partition('.')[0] for m in sys.modules))))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split()) & set(HEAVY)


def test_import_loads_no_heavy_library():
    assert _loaded_after("import gmm_segmenter") == set()


def test_help_loads_no_heavy_library():
    code = (
        "import contextlib, io\n"
        "from gmm_segmenter.cli import build_parser\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    build_parser().print_help()"
    )
    assert _loaded_after(code) == set()


def test_public_names_are_listed_and_load_on_use():
    for name in gmm_segmenter.__all__:
        assert name in dir(gmm_segmenter)
        assert getattr(gmm_segmenter, name) is not None
    from gmm_segmenter import GMMSegmenter
    from gmm_segmenter.estimator import GMMSegmenter as same

    assert GMMSegmenter is same
    loaded = _loaded_after("from gmm_segmenter import GMMSegmenter")
    assert loaded >= {"numpy", "sklearn", "scipy"}


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        gmm_segmenter.NoSuchThing  # noqa: B018
