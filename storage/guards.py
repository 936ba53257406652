"""What polydiff refuses to write or read: non-finite weights, pickle files, paths that are not folders.

Every refusal is a ``CheckpointError`` whose message is one line naming the offending file or parameter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError

# Suffixes of the pickle-based formats of torch.save / Lightning / old diffusers, and of raw pickles.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
# Leading bytes of a raw pickle (PROTO opcode 0x80 and protocol 2..5) and of torch.save's zip container.
_PICKLE_MAGIC = tuple(bytes([0x80, protocol]) for protocol in range(2, 6)) + (b"PK\x03\x04",)


class CheckpointError(UserError):
    """A checkpoint or model folder cannot be written or read; the message names the file."""


def _safetensors_shaped(head: bytes) -> bool:
    """A safetensors file starts with its JSON header's length (8 bytes, little-endian) and then '{'."""
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 40


def looks_like_pickle(path: Path) -> bool:
    """True for a file named or shaped like a pickle / ``torch.save`` archive (found without unpickling); a
    safetensors file (even a truncated one, whose header length may begin with 0x80) never is."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    return not _safetensors_shaped(head) and head.startswith(_PICKLE_MAGIC)


def refuse_pickle(path: Path) -> CheckpointError:
    """The error for a pickle handed to a loader: polydiff never unpickles (arbitrary code execution)."""
    return CheckpointError(
        f"{path} looks like a pickle / torch.save file; polydiff never loads pickles "
        "(they can run arbitrary code): convert the weights to safetensors and write a model folder "
        "with polydiff.train.save_pretrained"
    )


def require_dir(path: str | Path, what: str) -> Path:
    """``path`` as a ``Path`` if it is an existing directory, else a ``CheckpointError`` saying why not."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist (expected a {what})")
    if not path.is_dir():
        if looks_like_pickle(path):
            raise refuse_pickle(path)
        raise CheckpointError(f"{path} is a file, not a {what} directory")
    return path


def _tensors_in(state: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a nested state, with its dotted path (an EMA's ``{"model": {...}, ...}`` too)."""
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, Mapping):
        for key, value in state.items():
            yield from _tensors_in(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from _tensors_in(value, f"{prefix}.{i}" if prefix else str(i))


def require_finite(state: Any, what: str, action: str = "refusing to save") -> None:
    """Raise if any floating-point tensor of a (nested) state holds NaN or +-inf, naming the first one.

    A run never writes a checkpoint with non-finite weights (resuming from one would only replay the
    divergence, and it would silently replace the last good checkpoint under keep-last-k), and never samples
    from such weights (``action`` says which of the two refused).
    """
    for name, value in _tensors_in(state, ""):
        if not (value.is_floating_point() or value.is_complex()):
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            nans = int(torch.isnan(value).sum())
            infs = value.numel() - int(finite.sum()) - nans
            raise CheckpointError(
                f"{action}: {what} entry '{name}' has non-finite values "
                f"({nans} NaN, {infs} inf of {value.numel()})"
            )
