"""gmm-segment reports every problem on one line with a documented exit status."""

import errno
import gc
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from gmm_segmenter import cli
from gmm_segmenter import io as gio

_COMMAND = [sys.executable, "-m", "gmm_segmenter"]
_ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")


def _hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] if folder.exists() else []


def test_ctrl_c_while_building_the_parser_is_130(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("gmm_segmenter.cli._main.build_parser", interrupted)
    assert cli.main(["x.png"]) == 130
    assert capsys.readouterr().err == "gmm-segment: interrupted\n"


@pytest.mark.parametrize("stage", ["gmm_segmenter.cli._inputs.collect_sources",
                                   "gmm_segmenter.cli._runner.run_all",
                                   "gmm_segmenter.cli._folder.tidy"])
def test_ctrl_c_at_each_stage_is_130(stage, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, interrupted)
    assert cli.main(["--sample", "coins", "-o", str(tmp_path)]) == 130
    assert capsys.readouterr().err.endswith("gmm-segment: interrupted\n")
    assert _hidden(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_a_library_turned_into_another_error_is_still_the_interrupt(
        signum, tmp_path, monkeypatch, capsys):
    # numpy turns a KeyboardInterrupt met while it reads a buffer's format
    # into "ValueError: ... is not a valid PEP 3118 buffer format string"
    from gmm_segmenter.cli import _runner

    read = _runner.Runner.read

    def swallowing(self, source):
        try:
            # to this thread: os.kill may hand a process's signal to another
            # thread, and the handler then runs wherever this one is next
            signal.raise_signal(signum)
            time.sleep(1.0)  # not reached: the handler runs as raise_signal returns
        except KeyboardInterrupt as stop:
            raise ValueError("'T{d:val:}' is not a valid PEP 3118 buffer format string") from stop
        return read(self, source)

    monkeypatch.setattr(_runner.Runner, "read", swallowing)
    status = cli.main(["--sample", "coins", "--sample", "camera", "-k", "2", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == (130 if signum == signal.SIGINT else 128 + signum), err
    assert "PEP 3118" not in err and "error" not in err
    assert _hidden(tmp_path) == [] and not list(tmp_path.glob("camera_*"))
    # the next run in this process is not taken for interrupted
    monkeypatch.setattr(_runner.Runner, "read", read)
    assert cli.main(["--sample", "coins", "-k", "2", "--beta", "0", "-o", str(tmp_path)]) == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("delay", [1.5, 4.0])
def test_ctrl_c_at_any_moment_exits_130(tmp_path, delay):
    # (Ctrl-C while the Python interpreter itself starts, before any of
    # gmm-segment's code runs, ends the process by the signal, as for any
    # Python program)
    child = subprocess.Popen([*_COMMAND, "--sample", "coins", "-k", "2", "-o", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ENV)
    time.sleep(delay)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode in (130, 0), err.decode()
    assert b"Traceback" not in err
    assert _hidden(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)])
def test_termination_clears_unfinished_results(tmp_path, signum):
    child = subprocess.Popen(
        [*_COMMAND, "--sample", "astronaut", "--sample", "coffee", "-k", "4", "-o", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ENV,
    )
    time.sleep(4.0)
    child.send_signal(signum)
    out, err = child.communicate(timeout=120)
    assert child.returncode in (128 + signum, 0), err.decode()
    assert b"Traceback" not in err
    assert _hidden(tmp_path) == []
    for name in ("astronaut", "coffee"):  # each result set is whole or absent
        assert (tmp_path / f"{name}_report.json").exists() == (
            tmp_path / f"{name}_labels.tif"
        ).exists()


def test_a_closed_stdout_is_no_traceback(tmp_path):
    child = subprocess.Popen([*_COMMAND, "--sample", "coins", "-k", "2", "--beta", "0",
                              "-o", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ENV)
    child.stdout.close()  # as `| head -c 0` does
    err = child.stderr.read()
    child.wait(timeout=120)
    assert child.returncode == 0, err.decode()
    assert err == b""
    assert (tmp_path / "coins_report.json").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("unbuffered", [False, True])
def test_a_full_stdout_is_one_warning(tmp_path, unbuffered):
    # buffered (Python's default), the text left in the buffer failed again
    # at the exit's flush, and was said a second time
    env = {name: value for name, value in _ENV.items() if name != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    with open("/dev/full", "w") as full:
        result = subprocess.run([*_COMMAND, "--sample", "coins", "-k", "2", "--beta", "0",
                                 "-o", str(tmp_path)],
                                stdout=full, stderr=subprocess.PIPE, env=env, timeout=120)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.strip().splitlines() == [
        "gmm-segment: warning: standard output is full; the messages stop there, the "
        "results are still written"]
    assert (tmp_path / "coins_report.json").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_into_a_full_stdout_says_it_could_not_be_written(option):
    # argparse dropped the error of --help's long text without a word
    env = {name: value for name, value in _ENV.items() if name != "PYTHONUNBUFFERED"}
    with open("/dev/full", "w") as full:
        result = subprocess.run([*_COMMAND, option], stdout=full, stderr=subprocess.PIPE,
                                env=env, timeout=120)
    err = result.stderr.decode()
    assert result.returncode == 0 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "gmm-segment: warning: cannot write to standard output ([Errno 28] No space left on "
        "device)"]


def test_a_full_disk_is_one_error_naming_the_file(tmp_path, monkeypatch, capfd):
    from pathlib import Path

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*out.png'") as raised:
        gio.write_png(tmp_path / "out.png", np.zeros((4, 4), np.uint8))
    assert ".part" not in str(raised.value)
    gc.collect()
    assert "Exception ignored" not in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_save_model_problems_are_found_before_the_batch(tmp_path, capsys):
    for target, problem in [(tmp_path / "missing" / "m.npz", "does not exist"),
                            (tmp_path, "is a folder")]:
        status = cli.main(["--sample", "coins", "-o", str(tmp_path / "out"),
                           "--save-model", str(target)])
        err = capsys.readouterr().err
        assert status == 2 and problem in err and str(target) in err
        assert ".part" not in err
        assert not (tmp_path / "out").exists()
    # beside the results, in the -o folder the run creates: saved there
    status = cli.main(["--sample", "coins", "-k", "2", "--beta", "0", "-o",
                       str(tmp_path / "new"), "--save-model", str(tmp_path / "new" / "coins")])
    assert status == 0, capsys.readouterr().err
    assert gio.load_model(tmp_path / "new" / "coins.npz").n_components_ == 2


def test_warnings_name_the_file_they_concern(tmp_path, capsys):
    gray = (np.arange(40)[None, :] // 14 * 80 + np.zeros((30, 1))).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 5, size=gray.shape).astype(np.uint8)
    rgb = np.repeat((gray + noise)[..., None], 3, axis=-1)
    gio.write_png(tmp_path / "grey-as-rgb.png", rgb)
    status = cli.main([str(tmp_path / "grey-as-rgb.png"), "-k", "3", "--beta", "0",
                       "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 0
    lines = err.strip().splitlines()
    assert lines and all(
        line.startswith(f"gmm-segment: warning: {tmp_path / 'grey-as-rgb.png'}: ")
        for line in lines
    ), err
    assert any("linearly dependent" in line for line in lines)


@pytest.mark.parametrize("message, expected", [
    ("Try a lower degree (bias_field=1 or 2) or bias_field=None.",
     "Try a lower degree (--bias-field 1 or 2) or no --bias-field."),
    ("Use bias_field=None: a field of the lowest degree needs 90 pixels.",
     "Leave out --bias-field: a field of the lowest degree needs 90 pixels."),
    ("pass channel_axis=None to segment by intensity",
     "pass --channel-axis none to segment by intensity"),
])
def test_none_is_said_as_the_options_spell_it(message, expected):
    from gmm_segmenter.cli._console import describe

    assert describe(message) == expected
    # and what it suggests is accepted
    if "--channel-axis none" in expected:
        assert cli.build_parser().parse_args(["x.png", "--channel-axis", "none"]).channel_axis == "none"


@pytest.mark.parametrize("axis, advice", [("0", "--channel-axis -1"), ("1", "--channel-axis -1")])
def test_a_spatial_channel_axis_is_judged_on_the_file_s_axes_once(tmp_path, capsys, axis, advice):
    rgb = np.random.default_rng(1).integers(0, 255, size=(64, 48, 3)).astype(np.uint8)
    gio.write_png(tmp_path / "photo.png", rgb)
    status = cli.main([str(tmp_path / "photo.png"), "-k", "2", "--beta", "0",
                       "--channel-axis", axis, "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 0
    lines = [line for line in err.splitlines() if "spatial axis" in line]
    # once (not again at fit and predict), with the shape the file has and the
    # axis the user gave, and advice that names the file's colour axis
    assert len(lines) == 1, err
    assert "(64, 48, 3)" in lines[0] and f"--channel-axis {axis} makes" in lines[0]
    assert f"Pass {advice} if axis -1 holds the colour channels" in lines[0]


@pytest.mark.parametrize("message, expected", [
    ("Leave it out: for RGBA, pass X[..., :3] (with mask=X[..., 3] > 0 if some pixels are "
     "transparent).",
     "Leave it out: for an RGBA file with its channels last, --channel-axis auto (the "
     "default) leaves alpha out and gives transparent pixels label 0."),
    ("X has 1 channel(s) along channel_axis=None, but this GMMSegmenter was fitted on images "
     "with 3; pass images with the same channels as in fit.",
     "The image is grey (1 channel), but the --model was fitted on images with 3 channels; "
     "give images with 3 channels (--channel-axis N when axis N holds them), or a model "
     "fitted on images like this one."),
    ("X has 4 channel(s) along channel_axis=2, but this GMMSegmenter was fitted on images "
     "with 3; pass images with the same channels as in fit.",
     "The image has 4 channels (on its axis 2), but the --model was fitted on images with "
     "3 channels; give images with 3 channels, or a model fitted on images like this "
     "one."),
    ("bias_field: the field estimated for a.png would scale intensities by up to 27.7 times",
     "--bias-field: the field estimated for a.png would scale intensities by up to 27.7 times"),
    ("Segment the rest only: a mask of the pixels above 0 (mask=image > 0).",
     "Segment the rest only: a --mask file of the pixels above 0."),
    ("Use n_components=1 or n_components='auto'.", "Use -k 1 or -k auto."),
    ("n_components=3 asks for 3 components, but the 1 pixel drawn from the 262144 "
     "valid pixels of X (max_samples=1) holds only 1 distinct pixel value; each component "
     "needs its own value to model. Raise max_samples (None uses every pixel).",
     "-k 3 asks for 3 components, but the 1 pixel drawn from the 262144 valid "
     "pixels of the image (--max-samples 1) holds only 1 distinct pixel value; each "
     "component needs its own value to model. Raise --max-samples (all uses every pixel)."),
    ("spacing must hold one positive number per spatial axis of X (2); got 3",
     "--spacing must hold one positive number per spatial axis of the image (2); got 3"),
    ("spacing must be None or a sequence of 2 positive numbers, one per spatial axis of X "
     "(which has 2 spatial dimension(s)); got spacing=(1.0, 1.0, 1.0).",
     "--spacing takes 2 positive numbers, one per spatial axis of the image (which has 2 "
     "spatial dimension(s)); got --spacing 1.0 1.0 1.0."),
    ("Every pixel of X is masked out or not finite, so there is nothing to fit; pass a mask "
     "with some True pixels inside X's finite values.",
     "Every pixel of the image is masked out or not finite, so there is nothing to fit; give "
     "a --mask with some nonzero pixels inside the image's finite values."),
    ("The 'max_samples' parameter of GMMSegmenter must be an int in the range [1, inf) or "
     "None. Got 0 instead.", "--max-samples must be an int in the range [1, inf) or None; "
     "got 0."),
    ("Segment one channel instead (for example X[..., 0] with channel_axis=None), or segment "
     "np.log(X)", "Segment one channel instead (saved as a grey image), or segment np.log(X)"),
])
def test_messages_speak_of_the_image_and_the_options(message, expected):
    from gmm_segmenter.cli._console import describe

    assert describe(message) == expected


def test_alpha_advice_for_channels_first_is_said_as_files():
    from _images import alpha_warning

    from gmm_segmenter.cli._console import describe

    said = describe(alpha_warning(channel_axis=0))
    assert "np.take" not in said and "X" not in said
    assert said.endswith("; save the first three channels as the image and where the fourth is "
                         "above 0 as a --mask file.")


def test_a_channel_first_colour_tiff_read_as_a_volume_says_so(tmp_path, capsys):
    rgb = np.random.default_rng(2).integers(0, 255, size=(3, 40, 36)).astype(np.uint8)
    gio.write_tiff(tmp_path / "first.tif", rgb)
    status = cli.main([str(tmp_path / "first.tif"), "-k", "2", "--beta", "0",
                       "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 0
    assert "its first axis of 3 looks like colour channels" in err
    assert "Pass --channel-axis 0 for a colour image" in err
    # told, it is read as colour: no warning
    status = cli.main([str(tmp_path / "first.tif"), "-k", "2", "--beta", "0",
                       "--channel-axis", "0", "-o", str(tmp_path / "out2"), "--quiet"])
    assert status == 0 and "looks like colour" not in capsys.readouterr().err
    # nor when a voxel size for each of its 3 axes says it is a volume
    status = cli.main([str(tmp_path / "first.tif"), "-k", "2", "--beta", "0", "--spacing",
                       "2", "1", "1", "-o", str(tmp_path / "out3"), "--quiet"])
    assert status == 0 and "looks like colour" not in capsys.readouterr().err


def test_a_colour_file_read_as_a_volume_is_warned_about_once(tmp_path, capsys):
    # the labels' predict used to add "the --model was fitted on grey
    # images", with no --model given
    rgb = np.random.default_rng(2).integers(0, 255, size=(40, 36, 3)).astype(np.uint8)
    gio.write_png(tmp_path / "photo.png", rgb)
    status = cli.main([str(tmp_path / "photo.png"), "-k", "2", "--beta", "0",
                       "--channel-axis", "none", "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 0
    assert err.count("looks like colour channels") == 1, err
    assert "Pass --channel-axis -1 for a colour image" in err and "--model" not in err


def test_a_fully_transparent_file_says_so(tmp_path, capsys):
    from PIL import Image

    rgba = np.zeros((20, 24, 4), dtype=np.uint8)
    rgba[..., :3] = np.random.default_rng(0).integers(0, 255, size=(20, 24, 3))
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    status = cli.main([str(tmp_path / "clear.png"), "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1
    assert "clear.png: every pixel is transparent (alpha 0): there is nothing to segment" in err
    assert "True" not in err


def test_images_may_follow_options_and_slips_are_caught_as_they_are_read(tmp_path, capsys,
                                                                        monkeypatch):
    image = np.random.default_rng(0).integers(0, 255, size=(20, 24)).astype(np.uint8)
    gio.write_png(tmp_path / "a.png", image)
    gio.write_png(tmp_path / "b.png", image[::-1])
    out = tmp_path / "out"
    status = cli.main([str(tmp_path / "a.png"), "-k", "2", str(tmp_path / "b.png"),
                       "--beta", "0", "-o", str(out), "--quiet"])
    assert status == 0 and {"a_labels.tif", "b_labels.tif"} <= set(os.listdir(out))
    capsys.readouterr()
    # a bad voxel size, or an image read as one, is a usage error, once
    for spacing, said in ((["0", "1"], "expected a positive, finite voxel size, got '0'"),
                          (["nan", "1"], "expected a positive, finite voxel size, got 'nan'"),
                          ([str(tmp_path / "b.png")], "--spacing takes one number per "
                           "spatial axis, in the array's order"),
                          (["2,1"], "separate the sizes with spaces: --spacing 2 1")):
        status = cli.main([str(tmp_path / "a.png"), "--spacing", *spacing, "-o", str(out)])
        err = capsys.readouterr().err
        assert status == 2 and err.count("error:") == 1 and said in err, err
    # --spacing takes its numbers, not the image after them
    status = cli.main(["-k", "2", "--spacing", "2", "1", str(tmp_path / "b.png"), "--beta",
                       "0.5", "-o", str(tmp_path / "sized"), "--no-masks", "--quiet"])
    report = json.loads((tmp_path / "sized" / "b_report.json").read_text())
    assert status == 0 and report["model"]["params"]["spacing"] == [2.0, 1.0], report["model"]
    # as argparse spells it too: a prefix, and the first size after =
    for spelling in (["--spac", "3", "1"], ["--spacing=3", "1"]):
        status = cli.main(["-k", "2", *spelling, str(tmp_path / "b.png"), "--beta", "0.5",
                           "-o", str(tmp_path / "spelt"), "--no-masks", "--quiet"])
        report = json.loads((tmp_path / "spelt" / "b_report.json").read_text())
        assert status == 0 and report["model"]["params"]["spacing"] == [3.0, 1.0], spelling
    # after --, a name that starts with - is an image, and so is everything else
    gio.write_png(tmp_path / "-d.png", image)
    out2 = tmp_path / "out2"
    status = cli.main(["-k", "2", "--beta", "0", "-o", str(out2), "--quiet", "--",
                       str(tmp_path / "-d.png"), str(tmp_path / "a.png")])
    assert status == 0 and {"-d_labels.tif", "a_labels.tif"} <= set(os.listdir(out2))
    capsys.readouterr()
    # an option after -- is refused before anything runs (it would be an image
    # name, and the results would go to Result/ instead)
    monkeypatch.chdir(tmp_path)
    status = cli.main(["--spacing", "1", "1", "--", str(tmp_path / "a.png"), "-o", "out3"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("error:") == 1, err
    assert "-o comes after --, which makes it (and all that follows) an image name" in err
    assert not (tmp_path / "Result").exists() and not (tmp_path / "out3").exists()
    # an empty output folder (an unset variable) is not the current folder
    status = cli.main([str(tmp_path / "a.png"), "-o", ""])
    assert status == 2 and "is a shell variable unset?" in capsys.readouterr().err


def test_a_symlink_loop_is_one_error(tmp_path, capsys):
    os.symlink(tmp_path / "two", tmp_path / "one")
    os.symlink(tmp_path / "one", tmp_path / "two")
    status = cli.main([str(tmp_path / "one"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 1 and "one: cannot be read (Too many levels of symbolic links)" in err
    assert "Traceback" not in err


def test_an_interrupt_stops_the_images_running_in_other_threads():
    import types

    from gmm_segmenter._progress import Cancelled, progress, report
    from gmm_segmenter.cli import _runner

    runner = types.SimpleNamespace(on_stage=lambda stage, done, total: None)
    stopped = []
    inside = threading.Event()

    def work(item):
        if item == 0:  # done once item 1 runs: the main thread is interrupted then
            inside.wait(10)
            return item
        inside.set()
        try:
            with progress(lambda *args: _runner.Runner._on_stage(runner, *args)):
                for step in range(2000):  # 20 s unless stopped
                    report("EM", step)
                    time.sleep(0.01)
        except Cancelled:
            stopped.append(item)
        return item

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _ in _runner._map(work, [0, 1, 2], 2):
            raise KeyboardInterrupt
    # (before: Ctrl-C with --jobs 2 waited for the images in progress to end)
    assert time.monotonic() - started < 5 and 1 in stopped
    assert not _runner._stopping.is_set()  # the next run is not stopped


def test_an_output_folder_that_takes_no_file_is_one_error_before_any_input(
    tmp_path, monkeypatch, capsys
):
    import tempfile
    import types

    from gmm_segmenter.cli import _main, _runner

    image = np.random.default_rng(0).integers(0, 255, size=(20, 24)).astype(np.uint8)
    for name in ("a", "b"):
        gio.write_png(tmp_path / f"{name}.png", image)
    out = tmp_path / "out"
    out.mkdir()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(_main, "tempfile", types.SimpleNamespace(TemporaryFile=read_only))
    status = cli.main([str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 1 and err.count("error") == 1, err
    assert "cannot write into the output folder (Read-only file system)" in err
    monkeypatch.setattr(_main, "tempfile", tempfile)
    # a folder the run made is removed when nothing went into it, interrupted too
    monkeypatch.setattr(_runner, "run_all", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli.main([str(tmp_path / "a.png"), "-o", str(tmp_path / "new")]) == 130
    assert not (tmp_path / "new").exists()


def test_an_input_named_twice_is_processed_once_under_its_own_name(tmp_path, capsys):
    image = np.random.default_rng(0).integers(0, 255, size=(20, 24)).astype(np.uint8)
    (tmp_path / "grey").mkdir()
    gio.write_png(tmp_path / "grey" / "coins.png", image)
    out = tmp_path / "out"
    named = [tmp_path / "grey" / "coins.png", tmp_path / "grey" / ".." / "grey" / "coins.png",
             tmp_path / "grey", str(tmp_path / "grey" / "*.png")]
    status = cli.main([*map(str, named), "-k", "2", "--beta", "0", "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 0 and err.count("the same input as") == 3, err
    assert sorted(p.name for p in out.iterdir() if "labels" in p.name) == ["coins_labels.tif"]


def test_a_second_channel_read_as_alpha_is_questioned(tmp_path, capsys):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 60_000, size=(30, 40)).astype(np.uint16)
    signal = (rng.integers(1, 4000, size=grey.shape) * (rng.random(grey.shape) > 0.25))
    gio.write_tiff(tmp_path / "two.tif", np.stack([grey, signal.astype(np.uint16)], axis=-1))
    alpha = np.where(rng.random(grey.shape) > 0.25, 65535, 0).astype(np.uint16)
    gio.write_tiff(tmp_path / "alpha.tif", np.stack([grey, alpha], axis=-1))
    args = ["-k", "2", "--beta", "0", "-o", str(tmp_path / "out"), "--quiet"]
    assert cli.main([str(tmp_path / "two.tif"), *args]) == 0
    err = capsys.readouterr().err
    assert "its last channel is read as alpha" in err and "--channel-axis -1" in err
    assert re.search(r"only 2\d% of it is transparent or opaque", err)
    assert re.search(r"0 or less get label 0: 2\d% of them here", err)
    # a float channel dipping below 0 left those pixels out too, while the
    # warning said only pixels at 0 do, and "0%" of them
    float_signal = rng.normal(1.0, 1.0, size=grey.shape).astype(np.float32)
    gio.write_tiff(tmp_path / "float.tif",
                   np.stack([grey.astype(np.float32), float_signal], axis=-1))
    assert cli.main([str(tmp_path / "float.tif"), *args]) == 0
    err = capsys.readouterr().err
    below = np.mean(float_signal <= 0)
    assert f"0 or less get label 0: {below:.0%} of them here" in err
    assert f"only {below:.0%} of it is transparent or opaque" in err
    assert cli.main([str(tmp_path / "alpha.tif"), *args]) == 0  # a real alpha channel
    assert "read as alpha" not in capsys.readouterr().err
    on_off = np.stack([grey > 30_000, rng.random(grey.shape) > 0.25], axis=-1)
    np.save(tmp_path / "bool.npy", on_off)  # a bool alpha is alpha-like, whatever it holds
    assert cli.main([str(tmp_path / "bool.npy"), "-k", "1", *args[2:]]) == 0
    assert "read as alpha" not in capsys.readouterr().err


@pytest.mark.parametrize("message, expected", [
    ("EM did not converge in max_iter=100 iterations (last change of the mean "
     "log-likelihood above tol). Increase max_iter, raise tol, or try another init_params.",
     "above --tol). Raise --max-iter or --tol, or try another --init."),
    ("HMRF-EM did not converge in max_iter_spatial=20 iterations (the mean-field bound per "
     "pixel last changed by 0.0037, not yet within tol=0.001). Increase max_iter_spatial, "
     "or raise tol.",
     "in --max-iter-spatial 20 iterations (the mean-field bound per pixel last changed by "
     "0.0037, not yet within --tol 0.001). Raise --max-iter-spatial or --tol."),
    ("Scribbles y hold only the label 255, as a black-and-white mask saved as an image does; "
     "scribbles number classes 1..K. To segment only those pixels, pass the image as mask= "
     "instead.", "To segment only those pixels, give the file as --mask instead."),
    ("... Use fewer components (or n_components='auto'), or a smaller beta.",
     "Use fewer components (or -k auto), or a smaller --beta."),
])
def test_advice_names_the_options(message, expected):
    from gmm_segmenter.cli._console import describe

    assert describe(message).endswith(expected)


def test_a_seed_numpy_does_not_take_is_a_usage_error(capsys):
    assert cli.main(["--sample", "coins", "--seed", "-1"]) == 2
    assert "--seed: expected an integer from 0 to 4294967295, got '-1'" in capsys.readouterr().err


def test_a_file_of_another_range_than_the_models_is_said_in_the_commands_words(
    tmp_path, capsys
):
    from skimage import data, img_as_float

    gio.write_png(tmp_path / "camera.png", data.camera()[::4, ::4])
    gio.write_tiff(tmp_path / "float.tif", img_as_float(data.camera()[::4, ::4]))
    model = tmp_path / "camera.npz"
    assert cli.main([str(tmp_path / "camera.png"), "-k", "3", "--beta", "0", "--save-model",
                     str(model), "-o", str(tmp_path / "fit"), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main([str(tmp_path / "float.tif"), "--model", str(model),
                     "-o", str(tmp_path / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("multiplied by 255 they would span about as much") == 1, err
    assert "(--model, or the one --fit-on fitted" in err and "fit a model to it alone" in err, err
    assert "skimage" not in err and "X's" not in err, err
    # the report keeps it: the labels alone look like a result
    report = json.loads((tmp_path / "out" / "float_report.json").read_text())
    assert any("multiplied by 255" in said for said in report["warnings"]), report["warnings"]
    fitted = json.loads((tmp_path / "fit" / "camera_report.json").read_text())
    assert fitted["warnings"] == []


def test_a_model_far_from_the_image_is_said_once_with_proba(tmp_path, capsys):
    from skimage import data

    gio.write_png(tmp_path / "camera.png", data.camera()[::4, ::4])
    gio.write_tiff(tmp_path / "coins16.tif", data.coins()[::4, ::4].astype(np.uint16) * 256)
    model = tmp_path / "camera.npz"
    assert cli.main([str(tmp_path / "camera.png"), "-k", "3", "--beta", "0", "--save-model",
                     str(model), "-o", str(tmp_path / "fit"), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main([str(tmp_path / "coins16.tif"), "--model", str(model), "--proba",
                     "-o", str(tmp_path / "out"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("values lie far from every class of this model") == 1, err


@pytest.mark.parametrize("shape, axis", [
    ((12, 2, 40, 48), "1"),   # (Z, C, Y, X), as an ImageJ hyperstack stores it
    ((12, 40, 48, 2), "-1"),  # (Z, Y, X, C); three or four there are colour
    ((2, 40, 48), "0"),       # (C, Y, X) of two channels
])
def test_a_short_axis_among_long_ones_is_named_as_channels(tmp_path, capsys, shape, axis):
    # it was segmented as an n-D grey volume without a word
    rng = np.random.default_rng(0)
    gio.write_tiff(tmp_path / "stack.tif", rng.random(shape).astype(np.float32))
    args = ["-k", "2", "--beta", "0", "-o", str(tmp_path / "out"), "--quiet"]
    assert cli.main([str(tmp_path / "stack.tif"), *args]) == 0
    err = capsys.readouterr().err
    assert f"its axis {axis} (of length {shape[int(axis)]}) looks like channels" in err, err
    assert f"Pass --channel-axis {axis} to model the channels together" in err
    assert ("ImageJ hyperstack" in err) == (axis == "1")
    if axis == "1":  # another long axis taken as channels names the short one
        assert cli.main([str(tmp_path / "stack.tif"), "--channel-axis", "2", *args]) == 0
        err = capsys.readouterr().err
        assert err.count("looks like the channels") == 1, err  # the file's axes only
        assert ("--channel-axis 2 makes 40 channels, while axis 1 (of length 2) looks like "
                "the channels") in err and "Pass --channel-axis 1 if it holds them" in err
        # the slices taken as channels (fewer than 32 of them) too
        assert cli.main([str(tmp_path / "stack.tif"), "--channel-axis", "0", *args]) == 0
        err = capsys.readouterr().err
        assert "--channel-axis 0 makes 12 channels, while axis 1 (of length 2)" in err, err
    # told the axis, it says nothing more; a volume of many slices says nothing
    assert cli.main([str(tmp_path / "stack.tif"), "--channel-axis", axis, *args]) == 0
    assert "looks like channels" not in capsys.readouterr().err
    # nor one given a voxel size for every axis: they are all space
    sizes = ["3"] + ["1"] * (len(shape) - 1)
    assert cli.main([str(tmp_path / "stack.tif"), "--spacing", *sizes, *args]) == 0
    assert "looks like channels" not in capsys.readouterr().err
    gio.write_tiff(tmp_path / "volume.tif", rng.random((12, 40, 48)).astype(np.float32))
    assert cli.main([str(tmp_path / "volume.tif"), *args]) == 0
    assert "looks like channels" not in capsys.readouterr().err
