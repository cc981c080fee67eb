"""Fuzzing the image readers and the model loader with mutated files.

Every input is a valid PNG, TIFF or model file with random bytes changed,
cut off or inserted (or pure noise), or a valid zarr store with hostile
metadata values and damaged, missing or extra chunks (the mutations of
``benchmarks/fuzz.py``). Reading it must either succeed or fail with the
documented clean error, ``ValueError`` naming the file; anything else (a
crash, another exception, a hang) fails the test. Runs a few dozen examples
in the normal test run; set ``GMM_FUZZ_EXAMPLES=5000`` for a long run:
``GMM_FUZZ_EXAMPLES=5000 pytest -m fuzz``.
"""

import importlib.util
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _helpers import make_segmenter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmm_segmenter import io as gio

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("GMM_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=EXAMPLES <= 25,  # the default run is the same every time
)
# a mutated header may claim a huge image; no single read may take longer
SECONDS_PER_READ = 20.0


def _png_bytes():
    import imageio.v3 as iio

    image = (np.arange(12 * 10 * 3) % 251).astype(np.uint8).reshape(12, 10, 3)
    return iio.imwrite("<bytes>", image, extension=".png")


def _tiff_bytes():
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, (np.arange(8 * 9) * 300).astype(np.uint16).reshape(8, 9),
                     compression="zlib")
    return buffer.getvalue()


def _three_levels():
    """The image the seed model is fitted on, and that every loaded model labels."""
    return np.repeat([10.0, 100.0, 200.0], 20)[np.newaxis].repeat(5, axis=0)


def _model_bytes(tmp_dir):
    path = gio.save_model(make_segmenter(3).fit(_three_levels()), tmp_dir / "seed.npz")
    return path.read_bytes()


SEEDS = {}


def _seed(kind, tmp_path_factory):
    if kind not in SEEDS:
        SEEDS[kind] = {
            "png": _png_bytes,
            "tiff": _tiff_bytes,
            "npz": lambda: _model_bytes(tmp_path_factory.mktemp("seed")),
        }[kind]()
    return SEEDS[kind]


@st.composite
def mutations(draw, data):
    """``data`` with a few random bytes overwritten, deleted, inserted, or cut off."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "noise"]))
        if not data:
            break
        where = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[where] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 16))]
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        elif action == "truncate":
            del data[where:]
        else:
            return draw(st.binary(max_size=512))
    return bytes(data)


def _bounded(function, *args):
    """Run ``function(*args)``; fail if it takes too long (a hang)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # reported to the test below
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(SECONDS_PER_READ)
    assert not worker.is_alive(), f"{function.__name__} hung on a fuzzed file"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.mark.parametrize("kind, suffix", [("png", ".png"), ("tiff", ".tif")])
def test_read_image_on_mutated_files_fails_only_cleanly(kind, suffix, tmp_path_factory):
    seed = _seed(kind, tmp_path_factory)
    folder = tmp_path_factory.mktemp(f"fuzz-{kind}")

    @FUZZ
    @given(data=mutations(seed))
    def read(data):
        path = folder / f"fuzzed{suffix}"
        path.write_bytes(data)
        try:
            image = _bounded(gio.read_image, path)
        except ValueError as error:
            assert str(error).startswith(str(path))
            return
        assert isinstance(image, np.ndarray) and image.ndim >= 2 and image.size > 0
        assert image.dtype.kind in "biuf"

    read()


def test_load_model_on_mutated_files_fails_only_cleanly(tmp_path_factory):
    seed = _seed("npz", tmp_path_factory)
    folder = tmp_path_factory.mktemp("fuzz-npz")
    image = _three_levels()

    @FUZZ
    @given(data=mutations(seed))
    def load(data):
        path = folder / "fuzzed.npz"
        path.write_bytes(data)
        try:
            segmenter = _bounded(gio.load_model, path)
        except ValueError as error:
            assert str(error).startswith(f"{path}: not a valid gmm-segmenter model file")
            return
        # a file that passes every check is a usable model
        labels = segmenter.predict(image)
        assert labels.shape == image.shape
        assert labels.min() >= 1 and labels.max() <= segmenter.n_components_

    load()


def _benchmark():
    """``benchmarks/fuzz.py``, whose zarr mutations the test draws from."""
    path = Path(__file__).parent.parent / "benchmarks" / "fuzz.py"
    spec = importlib.util.spec_from_file_location("gmm_fuzz_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_read_zarr_on_mutated_stores_fails_only_cleanly(tmp_path_factory):
    pytest.importorskip("zarr", minversion="3")
    pytest.importorskip("dask")
    fuzz = _benchmark()
    stores = fuzz.seed_stores(tmp_path_factory.mktemp("seed-stores"))
    folder = tmp_path_factory.mktemp("fuzz-zarr")
    segmenter = make_segmenter(3).fit(fuzz._volume())

    @FUZZ
    @given(which=st.integers(0, len(stores) - 1), seed=st.integers(0, 2**32 - 1))
    def read(which, seed):
        path = folder / "fuzzed.zarr"
        fuzz.write_store(fuzz.mutate_store(stores[which], np.random.default_rng(seed)), path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing chunks are reported, and allowed
            try:
                _bounded(fuzz._read_zarr_as_the_command_does, str(path), segmenter)
            except ValueError as error:
                assert str(error).startswith(str(path)), error

    read()
