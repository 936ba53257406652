"""Atomic folders: build in a hidden temporary sibling, fsync, then rename into place.

A reader therefore sees either no folder or a complete one, whatever moment the writer is killed at.
Names of leftovers say what they were: ``.tmp-<name>~<pid>-<hex>`` is a folder being written (or
abandoned by a crash), ``.del-<name>~...`` one being deleted, ``.trash-<name>~...`` an old folder being
replaced by a new one. The next write into the same parent removes them (a trash folder whose
replacement never arrived is put back instead). One writer per parent folder (rank 0 in distributed runs).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from .files import fsync_dir

_TMP = ".tmp-"
_DEL = ".del-"
_TRASH = ".trash-"


def _sibling(target: Path, prefix: str) -> Path:
    return target.parent / f"{prefix}{target.name}~{os.getpid()}-{uuid.uuid4().hex[:8]}"


def leftover_target_name(entry_name: str) -> str | None:
    """The target name a temp / trash entry was made for, or None for an ordinary entry."""
    for prefix in (_TMP, _DEL, _TRASH):
        if entry_name.startswith(prefix) and "~" in entry_name:
            return entry_name[len(prefix) :].rsplit("~", 1)[0]
    return None


def clean_leftovers(parent: Path, is_ours: Callable[[str], bool]) -> list[Path]:
    """Remove the temp / trash folders in ``parent`` whose target name satisfies ``is_ours``; return them.

    A trash folder whose target is missing (the writer died between the two renames of ``publish_dir``)
    is a complete old folder: it is renamed back into place instead of being deleted.
    """
    removed = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.iterdir()):
        target_name = leftover_target_name(entry.name)
        if target_name is None or not is_ours(target_name):
            continue
        target = parent / target_name
        if entry.name.startswith(_TRASH) and not target.exists():
            os.rename(entry, target)
            fsync_dir(parent)
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def make_staging_dir(target: Path) -> Path:
    """A fresh hidden sibling of ``target`` to write the new folder's files into."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, _TMP)
    staging.mkdir()
    return staging


def publish_dir(staging: Path, target: Path) -> None:
    """Atomically make the fully written ``staging`` folder visible as ``target``.

    The staging folder's entries are fsynced, then it is renamed; an existing ``target`` is first renamed
    aside and deleted only after the new one is in place; finally the parent folder is fsynced so the
    rename itself survives a power loss.
    """
    fsync_dir(staging)
    trash = None
    if target.exists():
        trash = _sibling(target, _TRASH)
        os.rename(target, trash)
    os.rename(staging, target)
    fsync_dir(target.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def write_dir_atomically(target: Path, write_files: Callable[[Path], None]) -> Path:
    """Call ``write_files(staging)`` to fill a staging folder, then publish it as ``target``.

    If ``write_files`` raises, the staging folder is removed and ``target`` is untouched. If the process
    dies instead, the staging folder stays behind and ``clean_leftovers`` removes it on the next write.
    """
    staging = make_staging_dir(target)
    try:
        write_files(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_dir(staging, target)
    return target


def remove_dir(target: Path) -> None:
    """Delete a folder so that no reader ever sees it half-deleted: rename it aside first, then remove it."""
    garbage = _sibling(target, _DEL)
    os.rename(target, garbage)
    shutil.rmtree(garbage, ignore_errors=True)
