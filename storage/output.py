"""The run folder: created where the user said or refused with one line, and writes into it that fail for
reasons outside the program (a full disk, a read-only file system) reported as such."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from ..errors import UserError

_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def check_output_dir(path: str | Path, key: str) -> Path:
    """Raise a ``UserError`` naming ``key`` unless folder ``path`` could be created or written: an empty path,
    a path that is a file or lies below one, an existing ancestor that is not writable. Creates nothing."""
    if not str(path).strip():
        raise UserError(f"{key} must name a folder, got an empty path")
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                what = "is a file" if parent == path else f"lies below {parent}, which is a file"
                raise UserError(f"{key}: {path} {what}, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{key}: {parent} is not writable")
            break
    return path


def make_output_dir(path: str | Path, key: str) -> Path:
    """Create folder ``path`` (and its parents), or a ``UserError`` naming ``key`` when it cannot be: a parent
    that is a file, a path that is a file, no permission."""
    path = check_output_dir(path, key)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{key}: cannot create {path} ({err.strerror or err})") from None
    return path


def mount_point(path: Path) -> str:
    """The mount point of the file system holding ``path`` (for "no space left on /data")."""
    path = Path(os.path.abspath(path))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


def os_error_message(err: OSError, folder: Path, what: str, after: str = "") -> str:
    """One line for an ``OSError`` met while ``what`` in ``folder``: "no space left on /data while saving step
    12; the last complete checkpoint is step_000010"; ``after`` says what still stands."""
    tail = f"; {after}" if after else ""
    if err.errno in _DISK_FULL:
        return f"no space left on {mount_point(folder)} while {what}{tail}"
    where = err.filename or folder
    return f"{where}: {err.strerror or err} while {what}{tail}"


@contextlib.contextmanager
def writing(what: str, folder: Path, after: str = ""):
    """Turn an ``OSError`` from writing ``what`` into ``folder`` into one ``UserError`` line (``os_error_message``)."""
    try:
        yield
    except OSError as err:
        raise UserError(os_error_message(err, folder, what, after)) from None


DEMO_MARKER = ".polydiff-demo"


def fresh_demo_folder(path: Path) -> Path:
    """An empty folder for a demo run at ``path``: a folder an earlier demo made is replaced, any other existing
    folder is left alone and refused (a demo never deletes a user's run)."""
    import shutil

    if path.exists():
        if not (path / DEMO_MARKER).exists():
            raise UserError(f"{path} exists and is not a demo run: pass another --out")
        shutil.rmtree(path)
    make_output_dir(path, "--out")
    (path / DEMO_MARKER).write_text("written by polydiff demo; the next demo replaces this folder\n")
    return path
