"""``gmm-segment`` with no arguments in a terminal: each answer is checked as
it is given, and stopping at a prompt ends with one line."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from gmm_segmenter import cli
from gmm_segmenter.cli._interactive import interactive_argv


class _Terminal(io.StringIO):
    """Typed answers on a stdin that says it is a terminal; ``None`` in the
    answers is Ctrl-C there (the line is never finished)."""

    def __init__(self, *answers):
        self._answers = list(answers)
        super().__init__()

    def isatty(self):
        return True

    def readline(self, *args):
        if not self._answers:
            return ""  # Ctrl-D: end of input
        answer = self._answers.pop(0)
        if answer is None:
            raise KeyboardInterrupt
        if answer == "SIGTERM":  # as the command's handler raises it
            from gmm_segmenter.cli._console import Terminated

            raise Terminated(15)
        return answer + "\n"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A current folder holding two small images and a text file."""
    rng = np.random.default_rng(0)
    image = (np.repeat([30, 120, 210], 12)[np.newaxis].repeat(20, 0)
             + rng.normal(scale=5, size=(20, 36))).clip(0, 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "bands.tif", image)
    tifffile.imwrite(tmp_path / "rose.tif", image[:, ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _ask(monkeypatch, *answers):
    monkeypatch.setattr(sys, "stdin", _Terminal(*answers))
    return interactive_argv()


def test_unknown_name_is_asked_again_with_the_folder_offered(folder, monkeypatch, capsys):
    argv = _ask(monkeypatch, "bandz.tif", "2", "4")
    out = capsys.readouterr().out
    assert "There is no file 'bandz.tif'" in out
    assert "1  bands.tif" in out and "2  rose.tif" in out and "notes.txt" not in out
    assert argv == ["rose.tif", "-k", "4"]


def test_a_name_without_its_extension_a_sample_and_quotes(folder, monkeypatch, capsys):
    assert _ask(monkeypatch, "rose", "") == ["rose.tif", "-k", "3"]
    assert "Using rose.tif" in capsys.readouterr().out
    assert _ask(monkeypatch, "coins", "2") == ["--sample", "coins", "-k", "2"]
    assert _ask(monkeypatch, f"'{folder / 'bands.tif'}'", "2") == [
        str(folder / "bands.tif"), "-k", "2"]
    assert _ask(monkeypatch, "", "*.tif", "auto") == ["*.tif", "-k", "auto"]


def test_a_bad_number_of_components_is_asked_again(folder, monkeypatch, capsys):
    assert _ask(monkeypatch, "bands.tif", "0", "-2", "three", "2.5", "auto") == [
        "bands.tif", "-k", "auto"]
    assert capsys.readouterr().out.count("Please enter a positive whole number") == 4


@pytest.mark.parametrize(
    "answers, status",
    [((), 1), (("bands.tif",), 1), ((None,), 130), (("bands.tif", None), 130),
     (("SIGTERM",), 143)],
    ids=["ctrl-d at the image", "ctrl-d at k", "ctrl-c at the image", "ctrl-c at k",
         "sigterm at the image"],
)
def test_stopping_at_a_prompt_is_one_line(folder, monkeypatch, capsys, answers, status):
    monkeypatch.setattr(sys, "stdin", _Terminal(*answers))
    assert cli.main([]) == status
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("gmm-segment: ")
    assert "nothing segmented" in err and "usage:" not in err and "Traceback" not in err
    assert ("stopped by signal 15" in err) == (status == 143)
    assert not (folder / "Result").exists()


def test_a_typo_then_a_run(folder, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _Terminal("band.tif", "1", "three", "3"))
    assert cli.main([]) == 0
    assert sorted(p.name for p in (folder / "Result").glob("[!.]*")) == [
        "bands_Mask0.png", "bands_Mask1.png", "bands_Mask2.png", "bands_labels.tif",
        "bands_report.json", "bands_segmented.png"]


# ------------------------------------------------------------------ a real terminal


def _controlling_terminal():
    """In the child: a session of its own whose terminal is its stdin, so
    that Ctrl-C typed there becomes SIGINT, as in a shell."""
    import fcntl
    import termios

    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _answer_on_a_terminal(cwd, keystrokes):
    """Run ``gmm-segment`` on a pseudo-terminal, typing each ``(prompt, keys)``
    once ``prompt`` shows after the previous one; return the exit status and
    the transcript.

    A Ctrl-C typed at the very moment ``input()`` sets up the terminal can be
    lost (readline flushes pending input), as it can for a person, who then
    presses it again: the last keys are typed again every 2 s until the
    program ends."""
    master, slave = os.openpty()
    child = subprocess.Popen([sys.executable, "-m", "gmm_segmenter"], stdin=slave,
                             stdout=slave, stderr=slave, cwd=cwd, close_fds=True,
                             preexec_fn=_controlling_terminal)
    os.close(slave)
    transcript = b""
    seen = 0  # prompts are looked for after the previous one

    def read_until(text, timeout=60):
        nonlocal transcript, seen
        deadline = time.monotonic() + timeout
        while text not in transcript[seen:] and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                transcript += chunk
        found = transcript.find(text, seen)
        if found >= 0:
            seen = found + len(text)
        return found >= 0

    try:
        for prompt, keys in keystrokes:
            assert read_until(prompt), transcript
            os.write(master, keys)
        for _ in range(30):
            try:
                status = child.wait(timeout=2)
                break
            except subprocess.TimeoutExpired:
                os.write(master, keystrokes[-1][1])
        else:
            status = child.wait(timeout=1)
        read_until(b"\0", timeout=1)  # whatever is left
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    return status, transcript.decode(errors="replace")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
@pytest.mark.parametrize("key, status", [(b"\x03", 130), (b"\x04", 1)], ids=["ctrl-c", "ctrl-d"])
def test_ctrl_c_and_ctrl_d_on_a_real_terminal(folder, key, status):
    code, transcript = _answer_on_a_terminal(folder, [
        (b"Enter the image name", b"nothing.png\n"),
        (b"type a number or a name", b""),
        (b"Enter the image name", b"bands.tif\n"),
        (b"Enter the number of components", key),
    ])
    assert code == status, transcript
    assert "Traceback" not in transcript and "usage:" not in transcript
    assert transcript.count("gmm-segment: ") == 1, transcript
