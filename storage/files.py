"""Durable writes and checked reads of the two file kinds polydiff stores: JSON and safetensors.

Writes end with ``fsync`` so that, once a folder holding them is renamed into place, its contents are on
disk. Reads turn every failure (missing, truncated, not JSON, not safetensors) into a one-line
``CheckpointError`` naming the file. Nothing here can unpickle: tensors only ever come from safetensors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .guards import CheckpointError, looks_like_pickle, refuse_pickle


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk (a read-only descriptor suffices for ``fsync`` on POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable; a no-op where directories cannot be opened."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (no NaN / Infinity literals) and fsync it."""
    try:
        text = json.dumps(obj, indent=2, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"cannot write {path}: value is not JSON-serializable ({err})") from err
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_json(path: Path) -> Any:
    """Parse a JSON file, with a one-line error for a missing, unreadable or malformed file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise CheckpointError(f"{path} is missing") from err
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} cannot be read as UTF-8 text ({err})") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is corrupt: not valid JSON ({err})") from err
    except RecursionError:
        raise CheckpointError(f"{path} is corrupt: its JSON is nested too deeply to be a polydiff file") from None


def storage_safe(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, cloning any that share storage with an earlier one.

    safetensors refuses aliased tensors (tied weights, views); a clone of the second alias keeps the
    values, and loading restores the tie because ``load_state_dict`` copies into the module's own tensors.
    """
    seen: set[tuple[str, int]] = set()
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = (tensor.device.type, tensor.untyped_storage().data_ptr())
        if storage in seen and tensor.numel() > 0:
            tensor = tensor.clone()
        seen.add(storage)
        out[name] = tensor
    return out


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file (string metadata in its header) and fsync it. A write that the operating system
    refuses (a full disk, no permission) raises ``OSError`` with its errno, as Python's own writes do (the
    safetensors library reports it as a ``SafetensorError`` naming the os error)."""
    try:
        save_file(storage_safe(tensors), str(path), metadata=dict(metadata))
    except SafetensorError as err:
        found = _OS_ERROR.search(str(err))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from err
    fsync_file(path)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file onto the CPU; a truncated or foreign file is a clear error."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        if looks_like_pickle(path):
            raise refuse_pickle(path) from err
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is corrupt or truncated: not valid safetensors ({reason})") from err
