"""The Result folder: one run at a time, each result set swapped in whole.

- A run holds a lock on ``OUTDIR`` (an OS lock on a file in the temporary
  folder named after OUTDIR's absolute path, released when the process ends
  however it ends) while it writes, so runs into one folder take turns.
- Each input's files are written into a hidden folder ``.NAME.XXXXXXXX.part``
  inside ``OUTDIR``. Once complete it is renamed ``.NAME.XXXXXXXX.ready``
  (with the plan of the swap inside) and its files are moved into place:
  the old report first removed, the new report moved last. A report in the
  folder therefore always describes the files beside it; a run killed in the
  middle of a swap leaves the ``.ready`` folder, and the next run into the
  folder completes the swap.
- Only files that an earlier run recorded in its ``NAME_report.json``
  (``"outputs"``) are ever replaced or removed, and only under the names this
  tool writes; anything else in the way is reported and left alone. Files
  given as inputs are never touched.
- Hidden ``.part`` files and folders left by killed runs are removed when the
  next run takes the lock.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

_PLAN_NAME = ".swap.json"
# Temporary files of io's writers and this module's result sets: .NAME.XXXXXXXX.part;
# and the zarr label store of earlier versions: .NAME_labels.zarr.part
_LEFTOVER = re.compile(r"^\..+(\.[0-9a-f]{8}|_labels\.zarr)\.part$")
_READY = re.compile(r"^\..+\.[0-9a-f]{8}\.ready$")
_OUTPUT_SUFFIX = re.compile(
    r"_(labels\.tif|labels\.zarr|segmented\.png|segmented\.tif|Mask\d+\.png|Mask\d+\.tif"
    r"|proba\.tif|bias\.tif|report\.json)"
)
# A report is a few kB (plus the BIC curve); a much larger "report" is not ours.
_MAX_REPORT_BYTES = 16 * 1024 * 1024


class OutputError(Exception):
    """An input's results cannot be put in place; reported on one line."""


def is_output_name(name, filename) -> bool:
    """Whether ``filename`` is one that gmm-segment writes for the input ``name``."""
    return (
        filename.startswith(f"{name}_")
        and _OUTPUT_SUFFIX.fullmatch(filename[len(name):]) is not None
    )


def _report(path):
    """The JSON document of a report gmm-segment wrote, or ``None``."""
    try:
        if not path.is_file() or path.stat().st_size > _MAX_REPORT_BYTES:
            return None
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    versions = document.get("versions") if isinstance(document, dict) else None
    outputs = document.get("outputs")
    if not isinstance(versions, dict) or "gmm_segmenter" not in versions:
        return None
    if not isinstance(outputs, list):
        return None
    return document


def recorded_outputs(outdir, name) -> set[str]:
    """The files the last complete run wrote for ``name`` into ``outdir``, by its report."""
    report = f"{name}_report.json"
    document = _report(Path(outdir) / report)
    if document is None:
        return set()
    recorded = {
        entry for entry in document["outputs"]
        if isinstance(entry, str) and is_output_name(name, entry)
    }
    return recorded if report in recorded else set()


def outputs_in(folder) -> set[Path]:
    """Every file that a report in ``folder`` records as written by gmm-segment."""
    folder = Path(folder)
    found = set()
    try:
        reports = [p for p in folder.iterdir() if p.name.endswith("_report.json")]
    except OSError:
        return found
    for report in reports:
        name = report.name[: -len("_report.json")]
        found |= {folder / entry for entry in recorded_outputs(folder, name)}
    return found


# ------------------------------------------------------------------ the lock


def _try_lock(fd, blocking) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not blocking:
                    return False
                import time

                time.sleep(0.5)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def lock_path(outdir) -> Path:
    """The lock file of ``outdir``: in the temporary folder, so the Result folder holds
    only results, and the same for every path that names ``outdir``."""
    key = hashlib.sha256(os.fsencode(Path(outdir).resolve())).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"gmm-segment-{key}.lock"


@contextlib.contextmanager
def locked(outdir, on_wait):
    """Hold the lock of ``outdir``; call ``on_wait(message)`` before waiting for it.

    The lock file is removed on release (POSIX), so the temporary folder does
    not keep one for every folder ever written to. A run that was waiting on
    the removed file then holds a lock on a file no longer in the folder: it
    sees that its file is not the one at the path, and locks that one anew.
    """
    path = lock_path(outdir)
    waiting = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # another user's lock file: locking needs no write access
            fd = os.open(path, os.O_RDONLY)
        try:
            if not _try_lock(fd, blocking=False):
                if not waiting:
                    on_wait(f"waiting for another gmm-segment run that writes into {outdir}")
                    waiting = True
                _try_lock(fd, blocking=True)
        except OSError as error:  # a file system without locks (some network shares)
            on_wait(f"cannot lock {path} ({error.strerror}); runs into this folder at the "
                    "same time would mix their results")
            try:
                yield
            finally:
                os.close(fd)
            return
        if _is_at(fd, path):
            break
        os.close(fd)  # released and removed while this run waited: lock the new file
    try:
        yield
    finally:
        if os.name != "nt":  # (Windows cannot remove an open file)
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)


def _is_at(fd, path) -> bool:
    """Whether the open file ``fd`` is the file at ``path``."""
    try:
        at_path = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


def tidy(outdir) -> list[str]:
    """Finish the swaps and remove the temporary files of killed runs; return what was done.

    Only call it while holding the lock: every ``.part`` is then a dead run's.
    """
    done = []
    for entry in sorted(Path(outdir).iterdir()):
        if _READY.match(entry.name) and (entry / _PLAN_NAME).is_file():
            _finish_swap(Path(outdir), entry)
            done.append(f"completed the results that an interrupted run left in {entry.name}")
        elif _LEFTOVER.match(entry.name):
            _remove(entry)
            done.append(f"removed {entry.name}, left by an interrupted run")
    return done


# ------------------------------------------------------------------ result sets


class ResultSet:
    """The files of one input, written into a hidden folder and swapped in whole."""

    def __init__(self, outdir, name, protected=frozenset()):
        self.outdir, self.name = Path(outdir), name
        self.protected = protected
        self.folder = self.outdir / f".{name}.{secrets.token_hex(4)}.part"
        self.folder.mkdir()

    def path(self, filename) -> Path:
        return self.folder / filename

    def discard(self):
        """Remove the set unless its swap has begun (then the next run completes it)."""
        if self.folder.name.endswith(".part"):
            _remove(self.folder)

    def commit(self):
        """Put the new files in place and remove the earlier run's files they do not replace."""
        new = sorted(p.name for p in self.folder.iterdir() if p.name != _PLAN_NAME)
        earlier = recorded_outputs(self.outdir, self.name)
        for filename in new:
            target = self.outdir / filename
            if _is_protected(target, self.protected):
                raise OutputError(f"{target} is one of this run's inputs; choose another --outdir")
            if (target.exists() or target.is_symlink()) and filename not in earlier:
                raise OutputError(
                    f"{target} exists, and no earlier gmm-segment run recorded writing it "
                    f"(in {self.name}_report.json); it is left alone. Move it away or "
                    "choose another --outdir"
                )
        stale = sorted(
            filename for filename in earlier - set(new)
            if not _is_protected(self.outdir / filename, self.protected)
        )
        plan = {"name": self.name, "files": new, "remove": stale}
        (self.folder / _PLAN_NAME).write_text(json.dumps(plan), encoding="utf-8")
        ready = self.folder.with_name(self.folder.name[: -len(".part")] + ".ready")
        os.replace(self.folder, ready)
        self.folder = ready
        _finish_swap(self.outdir, ready)


def _is_protected(path, protected) -> bool:
    if not protected:
        return False
    try:
        return path.resolve() in protected
    except OSError:
        return False


def _finish_swap(outdir, ready):
    """Move a complete result set into place: old report out first, new report in last."""
    plan = json.loads((ready / _PLAN_NAME).read_text(encoding="utf-8"))
    name = plan["name"]
    report = f"{name}_report.json"

    def ours(filename):  # a plain name of ours, never a path elsewhere
        return Path(filename).name == filename and is_output_name(name, filename)

    if ours(report) and (ready / report).exists():  # else the swap had already finished
        _remove(outdir / report)
        for filename in plan["files"]:
            if filename != report and ours(filename) and (ready / filename).exists():
                _replace(ready / filename, outdir / filename)
        for filename in plan["remove"]:
            if ours(filename):
                _remove(outdir / filename)
        os.replace(ready / report, outdir / report)
    _remove(ready)


def _replace(source, target):
    if source.is_dir() and (target.is_dir() and not target.is_symlink()):
        shutil.rmtree(target)
    os.replace(source, target)


def _remove(path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
