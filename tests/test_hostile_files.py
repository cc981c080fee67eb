"""Hostile and oversized files: refused from their headers, quickly, with ValueError.

The ``hostile-*.tif`` files in ``tests/data/`` are mutated TIFFs found by
fuzzing (``benchmarks/fuzz.py``) that used to hang ``read_image`` or make it
allocate tens of GiB: a chain of pages that loops (``hostile-page-loop.tif``,
419 bytes: endless pages and log lines), a 418-byte file declaring 274 MB of
deflate data (seconds of decoding), a 236-byte file declaring 27 billion
pixels and a strip byte count far beyond the file's size; and a PNG whose
chunk claims 2 GB (Pillow allocated the claim before reading).
"""

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import _decoders
import numpy as np
import pytest
import tifffile

from gmm_segmenter import cli
from gmm_segmenter import io as gio
from gmm_segmenter.cli import _isolated

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


def test_max_pixels_not_pillows_own_limit_decides(tmp_path, monkeypatch):
    from PIL import Image

    gio.write_png(tmp_path / "a.png", np.zeros((20, 30), np.uint8))
    # Pillow's limit (about 179 million pixels) scaled down to this image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert gio.read_image(tmp_path / "a.png").shape == (20, 30)
    assert Image.MAX_IMAGE_PIXELS == 100  # Pillow's guard is back for other readers
    with pytest.raises(ValueError, match=r"shape \(20, 30\) \(600 values\), more than the "
                                         r"limit of 599; .*--max-pixels in gmm-segment"):
        gio.read_image(tmp_path / "a.png", max_pixels=599)


def test_a_one_frame_gif_is_one_image_and_an_animation_a_stack(tmp_path):
    import imageio.v3 as iio

    frames = np.random.default_rng(0).integers(0, 256, size=(3, 20, 30), dtype=np.uint8)
    iio.imwrite(tmp_path / "one.gif", frames[0])
    iio.imwrite(tmp_path / "three.gif", frames)
    one, three = gio.read_image(tmp_path / "one.gif"), gio.read_image(tmp_path / "three.gif")
    assert one.shape[:2] == (20, 30) and one.ndim == three.ndim - 1  # (palette as RGB)
    assert three.shape[:3] == (3, 20, 30)
    gio.write_png(tmp_path / "row.png", frames[0][:1])  # one row stays a row
    assert gio.read_image(tmp_path / "row.png").shape == (1, 30)


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


def test_a_later_page_claiming_more_bytes_than_the_file_is_refused(tmp_path):
    # a damaged ImageJ hyperstack whose second page claimed 2.5 GB: only the first
    # page's claim was checked, and reading the second one ran out of memory
    path = tmp_path / "stack.tif"
    stack = np.arange(2 * 2 * 8 * 9, dtype=np.uint16).reshape(2, 2, 8, 9)
    tifffile.imwrite(path, stack, imagej=True, compression="zlib",
                     metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "um"})
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[1].tags["StripByteCounts"].overwrite(2_481_300_356)
    with pytest.raises(ValueError, match=r"stack.tif: cannot be read as an image \(declares "
                                         r"more data than the file of [\d,]+ bytes holds\)"):
        gio.read_image(path)


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
    # 10 100 chunks of one pixel (above 10 000, dask would make a task of each)
    store = zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=(101, 100),
                            chunks=(1, 1), dtype="uint8")
    store[:] = np.arange(101 * 100).reshape(101, 100) % 7
    volume = gio.read_zarr(tmp_path / "v.zarr")
    assert volume.npartitions == 1
    np.testing.assert_array_equal(volume.compute(), store[:])


def _small_store(path, zarr_format=2, **settings):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    array = zarr.create_array(str(path), shape=(4, 6, 5), chunks=(2, 3, 5), dtype="uint16",
                              zarr_format=zarr_format, **settings)
    array[:] = np.arange(120, dtype=np.uint16).reshape(4, 6, 5) * 50 + 7
    return path


def _edit_metadata(path, **changes):
    name = ".zarray" if (path / ".zarray").exists() else "zarr.json"
    document = json.loads((path / name).read_text())
    document.update(changes)
    (path / name).write_text(json.dumps(document))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_damaged_zarr_chunk_is_one_value_error_naming_the_store(tmp_path, zarr_format, capsys):
    # found by fuzzing (benchmarks/fuzz.py --readers zarr): zstd's RuntimeError,
    # zlib.error and a checksum's bare ValueError escaped from compute()
    path = _small_store(tmp_path / "v.zarr", zarr_format)
    chunk = sorted(p for p in path.rglob("*") if p.is_file() and "zarr" not in p.name
                   and not p.name.startswith("."))[0]
    chunk.write_bytes(b"\x28\xb5\x2f\xfd" + b"not zstd" * 4)
    volume = gio.read_zarr(path)  # the metadata are fine: nothing is read yet
    with pytest.raises(ValueError, match=f"^{path}: a chunk of the zarr array cannot be read "
                                         r"\(.*\)$"):
        volume.compute()
    assert cli.main([str(path), "-k", "2", "-o", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gmm-segment: error: {path}: a chunk of the zarr array cannot be read")
    assert len(err.splitlines()) == 1


def test_zarr_metadata_that_cannot_describe_pixels_are_refused(tmp_path):
    path = _small_store(tmp_path / "zero.zarr")
    _edit_metadata(path, chunks=[0, 3, 5])  # before: ZeroDivisionError when computed
    with pytest.raises(ValueError, match=r"zero.zarr: the zarr array of shape \(4, 6, 5\) "
                                         r"declares chunks of shape \(0, 3, 5\)"):
        gio.read_zarr(path)
    path = _small_store(tmp_path / "zero-shards.zarr", 3, shards=(4, 6, 5))
    document = json.loads((path / "zarr.json").read_text())
    document["chunk_grid"]["configuration"]["chunk_shape"] = [4, 6, 0]
    (path / "zarr.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"zero-shards.zarr: the zarr array of shape "
                                         r"\(4, 6, 5\) declares shards of shape \(4, 6, 0\)"):
        gio.read_zarr(path)
    path = _small_store(tmp_path / "complex.zarr")
    _edit_metadata(path, dtype="<c8", fill_value=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"complex.zarr: the zarr array holds values of dtype "
                                         r"complex64, not pixel values"):
        gio.read_zarr(path)


def test_deeply_nested_zarr_attributes_are_no_recursion_error(tmp_path):
    # before: dask's tokenize walked the attributes and overflowed the stack
    path = _small_store(tmp_path / "deep.zarr")
    nested = []
    for _ in range(400):  # deep enough for dask, not for json
        nested = [nested]
    (path / ".zattrs").write_text(json.dumps({"deep": nested}))
    volume = gio.read_zarr(path)
    np.testing.assert_array_equal(volume.compute(), np.arange(120).reshape(4, 6, 5) * 50 + 7)


@pytest.mark.parametrize("codecs", [
    {"filters": [{"id": "pickle"}]},
    {"compressor": {"id": "pickle"}},
])
def test_a_zarr_store_with_the_pickle_codec_is_never_read(tmp_path, codecs):
    # zarr 2 applies any codec the metadata name: unpickling a chunk could run code
    path = _small_store(tmp_path / "p.zarr")
    _edit_metadata(path, **codecs)
    with pytest.raises(ValueError, match="p.zarr: the zarr array uses the codec pickle, which "
                                         "unpickles Python objects and could run code"):
        gio.read_zarr(path)
    path = _small_store(tmp_path / "p3.zarr", 3)
    _edit_metadata(path, codecs=[{"name": "bytes"}, {"name": "numcodecs.pickle"}])
    with pytest.raises(ValueError, match="p3.zarr: the zarr array uses the codec numcodecs.pickle"):
        gio.read_zarr(path)


def test_a_shard_index_pointing_beyond_its_file_is_refused_before_zarr_reads_it(tmp_path):
    # found by fuzzing: zarr asked for a buffer of the size the index claims
    # (MemoryError under a 2 GB limit; OverflowError beyond 2**63)
    path = _small_store(tmp_path / "s.zarr", 3, shards=(4, 6, 5))
    shard = path / "c" / "0" / "0" / "0"
    data = shard.read_bytes()
    index = np.frombuffer(data[-68:-4], "<u8").copy()  # 4 chunks, then the checksum
    index[1] = 2**40  # the first chunk claims a terabyte
    shard.write_bytes(data[:-68] + index.tobytes())
    document = json.loads((path / "zarr.json").read_text())
    document["codecs"][0]["configuration"]["index_codecs"] = [
        {"name": "bytes", "configuration": {"endian": "little"}}]
    (path / "zarr.json").write_text(json.dumps(document))
    volume = gio.read_zarr(path)
    with pytest.raises(ValueError, match=r"s.zarr: shard c/0/0/0 declares a chunk of "
                                         r"1,099,511,627,776 bytes at byte \d+, beyond the "
                                         r"\d+ bytes of its file"):
        volume.compute()


def test_a_zarr_store_of_more_chunks_than_the_limit_allows_is_refused(tmp_path):
    # 2 KB of metadata can declare 8 192 chunks of 30 values: walking them took
    # 10 s per pass (found by fuzzing)
    path = _small_store(tmp_path / "many.zarr", 3)
    _edit_metadata(path, shape=[4, 6, 10240])
    with pytest.raises(ValueError, match=r"many.zarr: the zarr array of shape \(4, 6, 10240\) is "
                                         r"split into 8,192 chunks of shape \(2, 3, 5\); with "
                                         r"the limit of 1,000,000 values it may have at most 256"):
        gio.read_zarr(path, max_pixels=10**6)
    assert gio.read_zarr(path, max_pixels=10**8).npartitions == 8192


# ------------------------------------------------------------------ decoding in a child process

needs_guard = pytest.mark.skipif(not _isolated.supported(), reason="the decode guard needs Linux")


def _gone(pid, seconds=10.0):
    """Whether process ``pid`` has ended and been reaped (no zombie) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not Path(f"/proc/{pid}").exists()


def _decoding_pids(folder):
    return [int(p.name.rpartition("-")[2]) for p in folder.glob("*.pid-*")]


@needs_guard
def test_a_decoder_that_hangs_is_stopped_at_the_time_limit(tmp_path):
    _isolated.start()  # the fork server's own start is not part of a read
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"x.png: reading took longer than the limit of "
                                         r"2 s and was stopped; .*--read-timeout"):
        _isolated.read(tmp_path / "x.png", _decoders.slow, _isolated.Limits(seconds=2))
    assert time.monotonic() - started < 10
    (pid,) = _decoding_pids(tmp_path)
    assert _gone(pid)  # killed and reaped
    assert not _isolated._running


@needs_guard
def test_a_decoder_that_allocates_without_end_is_stopped_at_the_memory_limit():
    limits = _isolated.Limits(seconds=30, memory=300 * 1024**2)
    with pytest.raises(ValueError, match=r"^x.png: decoding needs more than the 300.0 MiB of "
                                         r"memory allowed for reading one file; .*--read-memory"):
        _isolated.read("x.png", _decoders.greedy, limits)


@needs_guard
def test_a_decoder_that_crashes_takes_only_its_process_down():
    with pytest.raises(ValueError, match=r"^x.png: the decoder crashed \(SIGSEGV\)"):
        _isolated.read("x.png", _decoders.crash, _isolated.Limits(seconds=30))


@needs_guard
def test_the_array_and_the_warnings_come_back_and_the_decoder_prints_nothing(capfd):
    _isolated.start()
    with pytest.warns(UserWarning, match="x.png: something odd"):
        image = _isolated.read("x.png", _decoders.noisy, _isolated.Limits(seconds=30))
    np.testing.assert_array_equal(image, np.arange(12, dtype=">u2").reshape(3, 4))
    assert image.dtype == np.dtype(">u2") and image.flags.writeable
    assert capfd.readouterr() == ("", "")
    # the decoder ran in another process
    pid = _isolated.read("x.png", _decoders.process_id, _isolated.Limits(seconds=30))
    assert int(pid[0, 0]) != os.getpid()


@needs_guard
def test_files_read_in_a_child_equal_files_read_here(tmp_path):
    rng = np.random.default_rng(0)
    images = {
        "rgb.png": rng.integers(0, 256, (300, 200, 3), dtype=np.uint8),
        "gray16.png": rng.integers(0, 65536, (64, 50), dtype=np.uint16),
        "stack.tif": rng.integers(0, 4096, (5, 300, 400), dtype=np.uint16),
        "float.tif": rng.normal(size=(33, 17)).astype(np.float32),
    }
    for name, image in images.items():
        if name.endswith(".png"):
            gio.write_png(tmp_path / name, image)
        else:
            tifffile.imwrite(tmp_path / name, image, compression="zlib")
    reader = functools.partial(gio.read_image, max_pixels=10**7)
    for name, image in images.items():
        read = _isolated.read(tmp_path / name, reader, _isolated.Limits(seconds=30))
        assert read.dtype == image.dtype
        np.testing.assert_array_equal(read, image)
    # a file's own errors and warnings are those of read_image
    with pytest.raises(FileNotFoundError, match="missing.png: no such file"):
        _isolated.read(tmp_path / "missing.png", reader, _isolated.Limits(seconds=30))
    for path in HOSTILE:
        with pytest.raises(ValueError, match=f"^{path}: "):
            _isolated.read(path, reader, _isolated.Limits(seconds=30))
    with tifffile.TiffWriter(tmp_path / "two.tif") as writer:
        writer.write(np.zeros((8, 9), np.uint8))
        writer.write(np.ones((5, 6), np.uint16))
    with pytest.warns(UserWarning, match="two.tif: holds 2 image series"):
        _isolated.read(tmp_path / "two.tif", reader, _isolated.Limits(seconds=30))


def test_without_limits_or_without_linux_files_are_read_here(monkeypatch):
    here = np.array([[os.getpid()]])
    no_limits = _isolated.Limits(seconds=None, memory=None)
    np.testing.assert_array_equal(_isolated.read("x.png", _decoders.process_id, no_limits), here)
    monkeypatch.setattr(_isolated, "supported", lambda: False)
    assert not _isolated.Limits().active
    np.testing.assert_array_equal(
        _isolated.read("x.png", _decoders.process_id, _isolated.Limits()), here
    )


def _two_images(folder, *names):
    for name in names:
        gio.write_png(folder / name, (np.arange(400).reshape(20, 20) % 3 * 90).astype(np.uint8))
    return [str(folder / name) for name in names]


@needs_guard
def test_the_cli_stops_a_hanging_decoder_and_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("gmm_segmenter.cli._inputs.read_image", _decoders.slow_when_named_slow)
    files = _two_images(tmp_path, "a.png", "slow.png")
    started = time.monotonic()
    status = cli.main([*files, "-k", "2", "--beta", "0", "--read-timeout", "3", "-o",
                       str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1
    assert err == (f"gmm-segment: error: {files[1]}: reading took longer than the limit of 3 s "
                   "and was stopped; if the file is genuine, allow more time (--read-timeout "
                   "SECONDS, 0 for no limit)\n")
    assert (tmp_path / "out" / "a_labels.tif").exists()
    assert time.monotonic() - started < 30


@needs_guard
def test_the_cli_stops_a_decoder_at_the_memory_limit_and_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("gmm_segmenter.cli._inputs.read_image",
                        _decoders.greedy_when_named_greedy)
    files = _two_images(tmp_path, "greedy.png", "b.png")
    status = cli.main([*files, "-k", "2", "--beta", "0", "--read-memory", "400M", "-o",
                       str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith(f"gmm-segment: error: {files[0]}: decoding needs more than the "
                          "400.0 MiB of memory allowed for reading one file")
    assert len(err.splitlines()) == 1
    assert (tmp_path / "out" / "b_labels.tif").exists()


def test_the_cli_reads_in_this_process_with_both_limits_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("gmm_segmenter.cli._inputs.read_image",
                        _decoders.greedy_when_named_greedy)
    calls = []
    monkeypatch.setattr(_isolated, "read", lambda *args: calls.append(args))
    files = _two_images(tmp_path, "a.png")
    assert cli.main([*files, "-k", "2", "--beta", "0", "--read-timeout", "0", "--read-memory",
                     "none", "-o", str(tmp_path / "out"), "--quiet"]) == 0
    assert calls == []


def test_the_cli_says_when_the_limits_cannot_be_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_isolated, "supported", lambda: False)
    files = _two_images(tmp_path, "a.png")
    assert cli.main([*files, "-k", "2", "--beta", "0", "--read-timeout", "5", "-o",
                     str(tmp_path / "out"), "--quiet"]) == 0
    assert capsys.readouterr().err == (
        "gmm-segment: warning: --read-timeout and --read-memory need Linux; files are read "
        "in this process, without a time or memory limit\n"
    )
    # the defaults say nothing
    assert cli.main([*files, "-k", "2", "--beta", "0", "-o", str(tmp_path / "out"),
                     "--quiet"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("flags, problem", [
    (["--read-timeout", "-1"], "--read-timeout: expected a number of seconds"),
    (["--read-timeout", "soon"], "--read-timeout: expected a number of seconds"),
    (["--read-memory", "4X"], "--read-memory: expected a size such as 4G"),
    (["--read-memory=-5M"], "--read-memory: expected a size such as 4G"),
])
def test_bad_limits_are_usage_errors(flags, problem, capsys):
    assert cli.main(["a.png", *flags]) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.splitlines()) == 1


def test_the_limits_the_flags_give():
    from gmm_segmenter.cli._parser import build_parser

    def limits(*flags):
        return _isolated.Limits.from_arguments(build_parser().parse_args(["a.png", *flags]))

    assert limits() == _isolated.Limits(seconds=60.0, memory="auto")
    assert limits("--read-timeout", "none", "--read-memory", "0") == _isolated.Limits(None, None)
    assert limits("--read-timeout", "2.5", "--read-memory", "1.5G") == _isolated.Limits(
        2.5, int(1.5 * 1024**3))
    assert limits("--max-pixels", "1000").max_pixels == 1000
    # the default memory: what is free, at most 32 bytes per allowed value, at least 256 MiB
    assert limits("--max-pixels", "1000").memory_bytes() == 256 * 1024**2
    assert limits("--max-pixels", str(2**25)).memory_bytes() <= 2**30


_INTERRUPTED_RUN = textwrap.dedent("""
    import sys
    import _decoders
    from gmm_segmenter.cli import _inputs, main
    _inputs.read_image = _decoders.slow_when_named_slow
    sys.argv = ["gmm-segment", *sys.argv[1:]]
    main()
""")


@needs_guard
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_while_decoding_exits_130_at_once_and_kills_the_decoder(tmp_path, jobs):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    files = _two_images(tmp_path, "slow1.png", "slow2.png")
    env = dict(os.environ, TMPDIR=str(scratch),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                           os.environ.get("PYTHONPATH", "")]),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    child = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_RUN, *files, "-j", jobs, "-o",
         str(tmp_path / "out"), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    deadline = time.monotonic() + 60
    while len(_decoding_pids(tmp_path)) < int(jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    decoding = _decoding_pids(tmp_path)
    assert len(decoding) == int(jobs), child.communicate(timeout=5)
    interrupted = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert time.monotonic() - interrupted < 10  # not after the 60 s read timeout
    assert child.returncode == 130, err.decode()
    assert err.decode() == "gmm-segment: interrupted\n"
    assert all(_gone(pid) for pid in decoding)
    # no temporary file is left behind (only the output folder's lock file, by design)
    assert [p.name for p in scratch.iterdir() if not p.name.endswith(".lock")] == []
    assert not (tmp_path / "out").exists()  # the run made it and left nothing in it


def test_npy_arrays_are_read_and_other_formats_listed(tmp_path):
    image = np.arange(600, dtype=np.uint16).reshape(20, 30)
    np.save(tmp_path / "a.npy", image)
    np.testing.assert_array_equal(gio.read_image(tmp_path / "a.npy"), image)
    with pytest.raises(ValueError, match=r"a.npy: declares an image of shape \(20, 30\)"):
        gio.read_image(tmp_path / "a.npy", max_pixels=599)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects.npy: the array holds Python objects"):
        gio.read_image(tmp_path / "objects.npy")
    (tmp_path / "notes.xyz").write_text("hello")
    with pytest.raises(ValueError, match=r"notes.xyz: cannot be read .*the formats read are "
                                         r"TIFF, NumPy \.npy and those Pillow knows"):
        gio.read_image(tmp_path / "notes.xyz")
