"""Hostile and oversized files: refused from their headers, quickly, with ValueError.

The ``hostile-*.tif`` files in ``tests/data/`` are mutated TIFFs found by
fuzzing (``benchmarks/fuzz.py``) that used to hang ``read_image`` or make it
allocate tens of GiB: a chain of pages that loops (``hostile-page-loop.tif``,
419 bytes: endless pages and log lines), a 418-byte file declaring 274 MB of
deflate data (seconds of decoding), a 236-byte file declaring 27 billion
pixels and a strip byte count far beyond the file's size; and a PNG whose
chunk claims 2 GB (Pillow allocated the claim before reading).
"""

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

from gmm_segmenter import cli
from gmm_segmenter import io as gio

DATA = Path(__file__).parent / "data"
HOSTILE = sorted(DATA.glob("hostile-*"))

_READ_ALL = textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))
    from gmm_segmenter.io import read_image
    for path in sys.argv[1:]:
        started = time.perf_counter()
        try:
            read_image(path)
            outcome = "read"
        except ValueError as error:
            outcome = "ValueError" if str(error).startswith(path) else f"unnamed: {error}"
        except BaseException as error:
            outcome = f"{type(error).__name__}: {error}"
        print(json.dumps([path, outcome, time.perf_counter() - started]), flush=True)
""")


def test_the_hostile_files_are_there():
    assert [p.name for p in HOSTILE] == [
        "hostile-deflate-claim.tif", "hostile-huge-shape.tif", "hostile-huge-strip.tif",
        "hostile-page-loop.tif", "hostile-png-chunk-claim.png",
    ]
    assert all(p.stat().st_size < 500 for p in HOSTILE)


@pytest.mark.skipif(sys.platform == "win32", reason="uses an address-space limit")
def test_hostile_files_are_refused_quickly_within_two_gigabytes():
    # in a killable process under a 2 GB memory limit: a hang or a memory
    # blow-up fails this test instead of the test run
    result = subprocess.run(
        [sys.executable, "-c", _READ_ALL, *map(str, HOSTILE)],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(outcomes) == len(HOSTILE)
    for path, outcome, seconds in outcomes:
        assert outcome == "ValueError", (path, outcome)
        assert seconds < 2.0, (path, seconds)
    # nothing printed: tifffile's log lines about the damage are captured
    assert result.stderr == ""


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.name)
def test_each_hostile_file_gives_one_clear_line_in_the_cli(path, tmp_path, capfd):
    status = cli.main([str(path), "-o", str(tmp_path / "out"), "--quiet"])
    err = capfd.readouterr().err
    assert status == 1
    assert err.startswith(f"gmm-segment: error: {path}: ")
    assert len(err.strip().splitlines()) == 1


def test_the_pixel_limit_is_checked_from_the_header(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((20, 30), np.uint16))
    gio.write_png(tmp_path / "a.png", np.zeros((20, 30, 3), np.uint8))
    assert gio.read_image(tmp_path / "a.tif", max_pixels=600).shape == (20, 30)
    with pytest.raises(ValueError, match=r"a.tif: declares an image of shape \(20, 30\) "
                                         r"\(600 values\), more than the limit of 599"):
        gio.read_image(tmp_path / "a.tif", max_pixels=599)
    assert gio.read_image(tmp_path / "a.png", max_pixels=1800).shape == (20, 30, 3)
    with pytest.raises(ValueError, match="a.png: declares an image .* more than the limit"):
        gio.read_image(tmp_path / "a.png", max_pixels=1799)
    assert gio.MAX_PIXELS == 2**31


def test_a_large_claim_in_a_small_tiff_is_refused_before_decoding(tmp_path):
    # a genuine header for 400 million pixels over a few hundred kB of data
    path = tmp_path / "claim.tif"
    noise = np.random.default_rng(0).integers(0, 256, size=(600, 700), dtype=np.uint8)
    tifffile.imwrite(path, noise, compression="zlib", rowsperstrip=600)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages.first.tags["ImageLength"].overwrite(20000)
        tif.pages.first.tags["ImageWidth"].overwrite(20000)
        tif.pages.first.tags["RowsPerStrip"].overwrite(20000)
    assert path.stat().st_size > 400_000
    with pytest.raises(ValueError, match="claim.tif: cannot be read as an image"):
        gio.read_image(path)
    # the same claim in a file of a few hundred bytes is refused before decoding
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, noise[:10, :10], compression="zlib")
    with tifffile.TiffFile(small, mode="r+b") as tif:
        tif.pages.first.tags["ImageLength"].overwrite(20000)
        tif.pages.first.tags["ImageWidth"].overwrite(20000)
        tif.pages.first.tags["RowsPerStrip"].overwrite(20000)
    with pytest.raises(ValueError, match="small.tif: cannot be read as an image .*more than "
                                         "that compression can hold"):
        gio.read_image(small)


def test_the_cli_takes_a_pixel_limit(tmp_path, capsys):
    gio.write_png(tmp_path / "a.png", (np.arange(400).reshape(20, 20) % 3 * 90).astype(np.uint8))
    assert cli.main([str(tmp_path / "a.png"), "--max-pixels", "100", "-o",
                     str(tmp_path / "out"), "--quiet"]) == 1
    assert "more than the limit of 100" in capsys.readouterr().err
    assert cli.main([str(tmp_path / "a.png"), "--max-pixels", "400", "-k", "2", "-o",
                     str(tmp_path / "out"), "--quiet", "--beta", "0"]) == 0


def _returns_within(function, seconds=10.0):
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked"
    return outcome


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_and_devices_are_refused_without_opening_them(tmp_path):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    model_fifo = tmp_path / "model.npz"
    os.mkfifo(model_fifo)
    for function in (lambda: gio.read_image(fifo), lambda: gio.load_model(model_fifo),
                     lambda: gio.load_model("/dev/zero"), lambda: gio.read_image("/dev/zero")):
        error = _returns_within(function).get("error")
        assert isinstance(error, ValueError) and "not a regular file" in str(error)


def test_tifffile_log_lines_are_not_printed(caplog, capfd):
    with caplog.at_level(logging.DEBUG):
        for path in HOSTILE:
            with pytest.raises(ValueError):
                gio.read_image(path)
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]
    assert capfd.readouterr().err == ""
    # outside read_image, tifffile logs as it always did
    assert logging.getLogger("tifffile").filters[0].filter(
        logging.LogRecord("tifffile", logging.ERROR, "", 0, "x", None, None)
    )


def test_only_the_first_series_is_read_with_a_warning(tmp_path):
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(np.zeros((8, 9), np.uint8))
        writer.write(np.ones((5, 6), np.uint16))
    with pytest.warns(UserWarning, match=r"two.tif: holds 2 image series; only the first, "
                                         r"of shape \(8, 9\), is read"):
        image = gio.read_image(path)
    assert image.shape == (8, 9)


def test_a_zarr_store_claiming_a_huge_shape_is_refused_from_its_metadata(tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    zarr.open_array(str(tmp_path / "huge.zarr"), mode="w", shape=(10**7, 10**7, 10**3),
                    chunks=(100, 100, 100), dtype="uint8")
    with pytest.raises(ValueError, match="huge.zarr: declares an image of shape"):
        gio.read_zarr(tmp_path / "huge.zarr")
    assert cli.main([str(tmp_path / "huge.zarr"), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "huge.zarr: declares an image" in err and len(err.strip().splitlines()) == 1


def test_tiny_zarr_chunks_are_read_in_few_blocks(tmp_path):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    store = zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=(20, 40, 60),
                            chunks=(1, 1, 1), dtype="uint8")
    store[:] = np.arange(20 * 40 * 60).reshape(20, 40, 60) % 7
    volume = gio.read_zarr(tmp_path / "v.zarr")
    assert volume.npartitions == 1
    np.testing.assert_array_equal(volume.compute(), store[:])
