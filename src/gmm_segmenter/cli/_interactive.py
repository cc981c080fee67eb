"""``gmm-segment`` with no arguments in a terminal: ask, as the usual script does.

Each answer is checked as it is given. An image name that names no file is
asked for again, with the images of the current folder offered by number (a
name without its extension, a folder, a glob and a ``--sample`` name work
too); a number of components that is not a positive whole number or 'auto'
is asked for again. Ctrl-D ends with one line and status 1, Ctrl-C with one
line and status 130.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from ._console import PROG, forget_signals
from ._parser import n_components_or_auto
from ._samples import available_samples

#: How many of the current folder's images are offered by number.
_OFFERED = 20


def interactive_argv() -> list[str] | int:
    """Ask for an image and a number of components; the arguments for that run.

    Returns the exit status instead when the user stops: 1 for Ctrl-D (end
    of input), 130 for Ctrl-C, 128 + the signal for SIGTERM or SIGHUP.
    """
    try:
        image = _ask_image()
        answer = _ask_n_components()
    except EOFError:
        print(flush=True)  # end the prompt's line
        print(f"{PROG}: input ended before a run was described; nothing segmented",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        forget_signals()  # handled here: said once
        signum = getattr(stop, "signum", None)  # SIGTERM or SIGHUP, else Ctrl-C
        print(flush=True)
        print(f"{PROG}: {f'stopped by signal {signum}' if signum else 'interrupted'}; "
              "nothing segmented", file=sys.stderr)
        return 128 + signum if signum else 130
    return [*image, "-k", answer]


def _ask_image() -> list[str]:
    """The image argument(s): a path, or ``['--sample', name]``."""
    offered: list[Path] = []
    while True:
        answer = _unquoted(input("Enter the image name: ").strip())
        if not answer:
            print("Please enter the name of an image file.")
            continue
        if answer.isdigit() and 1 <= int(answer) <= len(offered):
            return [str(offered[int(answer) - 1])]
        path = Path(answer).expanduser()
        if path.exists():
            return [str(path)]
        if set("*?[") & set(answer) and glob.glob(str(path), recursive=True):
            return [str(path)]
        same_stem = [p for p in _images_in(path.parent) if p.stem == path.name]
        if len(same_stem) == 1:
            print(f"Using {same_stem[0]}")
            return [str(same_stem[0])]
        if answer in available_samples():
            return ["--sample", answer]
        offered = same_stem or _images_in(Path("."))
        _offer(answer, offered)


def _unquoted(text: str) -> str:
    """``text`` without the quotes a terminal adds to a file dropped onto it."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _images_in(folder: Path) -> list[Path]:
    """The image files in ``folder``, by name; none if it cannot be listed."""
    # io's list of extensions: importing it loads NumPy and scikit-learn,
    # which only an unknown name makes worth waiting for.
    from ..io import IMAGE_EXTENSIONS

    try:
        return sorted(
            child for child in folder.iterdir()
            if child.is_file() and not child.name.startswith(".")
            and child.suffix.lower() in IMAGE_EXTENSIONS
        )
    except OSError:
        return []


def _offer(answer: str, offered: list[Path]) -> None:
    """Say that ``answer`` names no file, and what could be typed instead."""
    print(f"There is no file {answer!r} in {Path.cwd()}.")
    if offered:
        print("Images here (type a number or a name):")
        for number, path in enumerate(offered[:_OFFERED], start=1):
            print(f"  {number:2d}  {path}")
        if len(offered) > _OFFERED:
            print(f"  ... and {len(offered) - _OFFERED} more (type the name)")
    else:
        print("No image files here; type a path, such as ~/Pictures/rose.png.")
    samples = available_samples()
    if samples:
        print(f"Or a sample picture: {', '.join(samples[:6])}, ...")


def _ask_n_components() -> str:
    while True:
        answer = input("Enter the number of components [3]: ").strip() or "3"
        try:
            n_components_or_auto(answer)
        except argparse.ArgumentTypeError:
            print("Please enter a positive whole number, or 'auto'.")
            continue
        return answer
