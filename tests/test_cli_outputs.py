"""gmm-segment's Result folder: only its own files are replaced or removed, a
result set appears whole, killed and concurrent runs leave no mixed set."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile
from _images import gray_bands

from gmm_segmenter import cli
from gmm_segmenter import io as gio
from gmm_segmenter.cli import _folder

FAST = ["--beta", "0", "--quiet"]


def _image(seed=0, shape=(24, 30)):
    return gray_bands(shape, seed)


def _visible(folder):
    return sorted(p.name for p in folder.iterdir())


def _check_consistent(outdir, name):
    """The report, the labels and the masks beside it describe one run."""
    report = json.loads((outdir / f"{name}_report.json").read_text())
    labels = tifffile.imread(outdir / f"{name}_labels.tif")
    k = report["n_components"]
    for j in range(k):
        mask = gio.read_image(outdir / f"{name}_Mask{j}.png")
        np.testing.assert_array_equal(mask == 255, labels == j + 1)
    assert not (outdir / f"{name}_Mask{k}.png").exists()
    assert sorted(report["outputs"]) == sorted(
        p.name for p in outdir.iterdir() if p.name.startswith(f"{name}_")
    )
    return report


def test_files_the_tool_never_wrote_are_left_alone(tmp_path):
    gio.write_png(tmp_path / "cells.png", _image())
    (tmp_path / "cells_Mask7.csv").write_text("a user's table\n")
    (tmp_path / "cells_Mask12.png").write_bytes(b"a user's picture")
    (tmp_path / "cells_proba.tif").write_bytes(b"a user's posteriors")
    assert cli.main([str(tmp_path / "cells.png"), "-k", "2", "-o", str(tmp_path), *FAST]) == 0
    assert (tmp_path / "cells_Mask7.csv").read_text() == "a user's table\n"
    assert (tmp_path / "cells_Mask12.png").read_bytes() == b"a user's picture"
    assert (tmp_path / "cells_proba.tif").read_bytes() == b"a user's posteriors"
    # a later run with more components replaces only its own files
    assert cli.main([str(tmp_path / "cells.png"), "-k", "3", "-o", str(tmp_path), *FAST]) == 0
    assert (tmp_path / "cells_Mask12.png").read_bytes() == b"a user's picture"
    assert (tmp_path / "cells_Mask2.png").exists()


def test_a_file_in_the_way_that_the_tool_never_wrote_fails_that_input(tmp_path, capsys):
    gio.write_png(tmp_path / "a.png", _image())
    gio.write_png(tmp_path / "b.png", _image(1))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_Mask1.png").write_bytes(b"mine")
    status = cli.main([str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-k", "2",
                       "-o", str(out), *FAST])
    err = capsys.readouterr().err
    assert status == 1
    assert "a_Mask1.png exists, and no earlier gmm-segment run recorded writing it" in err
    assert len(err.strip().splitlines()) == 1
    assert (out / "a_Mask1.png").read_bytes() == b"mine"
    assert not (out / "a_labels.tif").exists() and not (out / "a_report.json").exists()
    _check_consistent(out, "b")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_report_that_lists_other_files_removes_none_of_them(tmp_path):
    gio.write_png(tmp_path / "x.png", _image())
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "x_Mask5.png").write_text("keep me too")
    # a hand-made report: only names of this tool's outputs for x count,
    # and only when they are recorded together with the report itself
    (tmp_path / "x_report.json").write_text(json.dumps({
        "versions": {"gmm_segmenter": "0"},
        "outputs": ["notes.txt", "../x.png", "x.png", "x_Mask5.png", "x_report.json"],
    }))
    assert cli.main([str(tmp_path / "x.png"), "-k", "2", "-o", str(tmp_path), *FAST]) == 0
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "x.png").exists()
    # recorded by the (forged) report as ours, so it goes: the tool's own name pattern
    assert not (tmp_path / "x_Mask5.png").exists()


def test_outputs_are_never_taken_as_inputs(tmp_path):
    for name in ("a", "b", "c"):
        gio.write_png(tmp_path / f"{name}.png", _image(ord(name)))
    assert cli.main([str(tmp_path), "-k", "2", "-o", str(tmp_path), *FAST]) == 0
    first = _visible(tmp_path)
    assert len(first) == 3 + 3 * 5
    assert cli.main([str(tmp_path), "-k", "3", "-o", str(tmp_path), *FAST]) == 0
    second = _visible(tmp_path)
    assert len(second) == 3 + 3 * 6
    for name in ("a", "b", "c"):
        assert (tmp_path / f"{name}.png").exists()
        _check_consistent(tmp_path, name)
    # a glob does not pick them up either
    assert cli.main([str(tmp_path / "*.png"), "-k", "2", "-o", str(tmp_path), *FAST]) == 0
    assert len(_visible(tmp_path)) == 3 + 3 * 5


def test_an_input_is_never_overwritten_by_a_result(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    gio.write_png(out / "a_Mask0.png", _image())
    gio.write_png(tmp_path / "a.png", _image())
    before = (out / "a_Mask0.png").read_bytes()
    status = cli.main([str(out / "a_Mask0.png"), str(tmp_path / "a.png"), "-k", "2",
                       "-o", str(out), *FAST])
    assert status == 1
    assert (out / "a_Mask0.png").read_bytes() == before
    assert "a_Mask0.png" in capsys.readouterr().err


def test_an_interrupted_run_keeps_the_earlier_complete_set(tmp_path, monkeypatch):
    gio.write_png(tmp_path / "x.png", _image())
    out = tmp_path / "out"
    assert cli.main([str(tmp_path / "x.png"), "-k", "3", "-o", str(out), *FAST]) == 0
    before = {name: (out / name).read_bytes() for name in _visible(out)}

    from gmm_segmenter.cli import _outputs

    calls = []

    def interrupted(path, array):
        calls.append(path)
        if len(calls) == 4:  # the picture and two masks are written: Ctrl-C
            raise KeyboardInterrupt
        return gio.write_png(path, array)

    monkeypatch.setattr(_outputs, "write_png", interrupted)
    assert cli.main([str(tmp_path / "x.png"), "-k", "8", "-o", str(out), *FAST]) == 130
    assert {name: (out / name).read_bytes() for name in _visible(out)} == before


def test_leftovers_of_killed_runs_are_removed_and_a_begun_swap_completed(tmp_path, capsys):
    gio.write_png(tmp_path / "x.png", _image())
    gio.write_png(tmp_path / "y.png", _image(1))
    out = tmp_path / "out"
    assert cli.main([str(tmp_path / "x.png"), "-k", "2", "-o", str(out), *FAST]) == 0
    # a run killed while writing: a temporary file and a half-written result set
    (out / ".x_Mask3.png.0123abcd.part").write_bytes(b"half")
    (out / ".x.89abcdef.part").mkdir()
    (out / ".x.89abcdef.part" / "x_labels.tif").write_bytes(b"half")
    (out / ".x_labels.zarr.part").mkdir()
    # a run killed in the middle of a swap: its complete set, ready, and the old report gone
    staged = tmp_path / "staged"
    assert cli.main([str(tmp_path / "x.png"), "-k", "3", "-o", str(staged), *FAST]) == 0
    ready = out / ".x.fedcba98.ready"
    ready.mkdir()
    for path in staged.iterdir():
        if path.name.startswith("x_"):
            os.replace(path, ready / path.name)
    (ready / ".swap.json").write_text(json.dumps({
        "name": "x", "files": sorted(p.name for p in ready.iterdir() if p.name != ".swap.json"),
        "remove": [],
    }))
    os.unlink(out / "x_report.json")
    os.replace(ready / "x_Mask0.png", out / "x_Mask0.png")  # moved before the kill
    (out / "keep.part").write_text("a user's file that merely ends in .part")
    assert cli.main([str(tmp_path / "y.png"), "-k", "2", "-o", str(out), "--beta", "0"]) == 0
    err = capsys.readouterr().err
    assert "interrupted run" in err
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert _check_consistent(out, "x")["n_components"] == 3
    _check_consistent(out, "y")
    assert (out / "keep.part").exists()


def test_an_unusable_output_folder_is_one_line_and_exit_1(tmp_path, capsys):
    gio.write_png(tmp_path / "x.png", _image())
    (tmp_path / "file").write_text("")
    for outdir in (tmp_path / "file", tmp_path / "file" / "below"):
        assert cli.main([str(tmp_path / "x.png"), "-o", str(outdir), *FAST]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"gmm-segment: error: -o {outdir}: ")
        assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.name == "nt" or (hasattr(os, "geteuid") and os.geteuid() == 0),
                    reason="needs a folder the user cannot write (root can write anywhere)")
def test_an_unwritable_output_folder_is_one_line(tmp_path, capsys):  # pragma: no cover
    gio.write_png(tmp_path / "x.png", _image())
    locked_folder = tmp_path / "ro"
    locked_folder.mkdir(mode=0o500)
    assert cli.main([str(tmp_path / "x.png"), "-o", str(locked_folder), *FAST]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


_RUN = textwrap.dedent("""
    import sys
    from gmm_segmenter.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_concurrent_runs_into_one_folder_take_turns(tmp_path):
    gio.write_png(tmp_path / "x.png", _image(shape=(120, 150)))
    out = tmp_path / "out"
    out.mkdir()
    # hold the lock, start two runs, release: both wait, then run one after the other
    with _folder.locked(out, lambda message: None):
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", _RUN, str(tmp_path / "x.png"), "-k", str(k),
                 "-o", str(out), "--beta", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for k in (2, 5)
        ]
        waited = [run.stderr.readline() for run in runs]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    for line in waited:
        assert "waiting for another gmm-segment run that writes into" in line
    report = _check_consistent(out, "x")
    assert report["n_components"] in (2, 5)
    # the lock file goes with the last run (one per folder ever written piled up)
    assert not _folder.lock_path(out).exists()


def test_a_zarr_result_replaces_only_its_own_store(tmp_path):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    volume = np.repeat(_image(shape=(8, 10))[np.newaxis], 4, axis=0)
    store = zarr.open_array(str(tmp_path / "vol.zarr"), mode="w", shape=volume.shape,
                            chunks=(2, 8, 10), dtype=volume.dtype)
    store[:] = volume
    out = tmp_path / "out"
    (out / "vol_labels.zarr").mkdir(parents=True)
    (out / "vol_labels.zarr" / "data.csv").write_text("someone's data")
    assert cli.main([str(tmp_path / "vol.zarr"), "-k", "2", "-o", str(out), *FAST]) == 1
    assert (out / "vol_labels.zarr" / "data.csv").read_text() == "someone's data"
    os.unlink(out / "vol_labels.zarr" / "data.csv")
    os.rmdir(out / "vol_labels.zarr")
    assert cli.main([str(tmp_path / "vol.zarr"), "-k", "2", "-o", str(out), *FAST]) == 0
    assert cli.main([str(tmp_path / "vol.zarr"), "-k", "3", "-o", str(out), *FAST]) == 0
    report = json.loads((out / "vol_report.json").read_text())
    assert report["n_components"] == 3
    assert _visible(out) == ["vol_labels.zarr", "vol_report.json"]


def test_an_ome_zarr_group_names_its_arrays_and_a_level_is_named_with_it(tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    pytest.importorskip("dask")
    volume = np.repeat(_image(shape=(8, 10))[np.newaxis], 4, axis=0)
    group = zarr.open_group(str(tmp_path / "image.zarr"), mode="w")
    for level in ("10", "1"):  # listed by name, levels in order, whatever the store's order
        group.create_array(level, shape=(4, 4, 5), dtype=volume.dtype)
    group.create_array("0", shape=volume.shape, chunks=(2, 8, 10), dtype=volume.dtype)[:] = volume
    out = tmp_path / "out"
    assert cli.main([str(tmp_path / "image.zarr"), "-k", "2", "-o", str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert (f"image.zarr: is a zarr group, not an array; give one of its arrays as the input: "
            f"{tmp_path / 'image.zarr' / '0'} (shape (4, 8, 10)), "
            f"{tmp_path / 'image.zarr' / '1'} (shape (4, 4, 5)), "
            f"{tmp_path / 'image.zarr' / '10'} (shape (4, 4, 5))\n") in err, err
    # its full-resolution level is named with the group, not "0"
    assert cli.main([str(tmp_path / "image.zarr" / "0"), "-k", "2", "-o", str(out), *FAST]) == 0
    assert _visible(out) == ["image_0_labels.zarr", "image_0_report.json"]


def test_the_report_records_the_mask_and_what_the_bic_curve_compared(tmp_path):
    rng = np.random.default_rng(0)
    image = (np.repeat([40, 120, 200], 12)[None, :] + rng.normal(0, 5, (30, 36))).astype(np.uint8)
    mask = np.zeros(image.shape, np.uint8)
    mask[5:25] = 255
    gio.write_png(tmp_path / "a.png", image)
    gio.write_png(tmp_path / "m.png", mask)
    out = tmp_path / "out"
    assert cli.main([str(tmp_path / "a.png"), "--mask", str(tmp_path / "m.png"), "-k", "auto",
                     "--k-range", "1", "4", "--beta", "0", "-o", str(out), "--quiet"]) == 0
    report = json.loads((out / "a_report.json").read_text())
    assert report["mask"] == {"file": str(tmp_path / "m.png"), "pixels_kept": 20 * 36}
    assert report["bic_curve"]["compared_on"].startswith("the histogram of the image's grey")
