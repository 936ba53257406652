"""Training checkpoints: everything needed to continue a run exactly, written atomically, last k kept.

A checkpoint is a folder ``<run_dir>/step_000123/`` holding

    tensors.safetensors   every tensor: model and EMA weights, optimizer moments, RNG states, ...
    state.json            the rest of the state as a JSON tree referencing those tensors (state_codec)
    config.json           the resolved run configuration, as given
    COMPLETE              written last: {"step": 123}

The folder is written under a hidden temporary name, each file fsynced, then renamed into place
(atomic.py), so killing the process at any moment leaves the newest complete checkpoint loadable;
the COMPLETE marker also rejects folders copied only partly (e.g. an interrupted rsync). Nothing is
pickled and nothing is unpickled. Non-finite model / EMA weights are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..storage.atomic import clean_leftovers, remove_dir, write_dir_atomically
from ..storage.files import read_json, read_tensors, write_json, write_tensors
from ..storage.guards import CheckpointError, require_dir, require_finite
from ..storage.state_codec import decode_state, flatten_state
from .rng import capture_rng_state, restore_rng_state
from .state_checks import check_like

CHECKPOINT_FORMAT = 1
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
COMPLETE_FILE = "COMPLETE"
_STEP_NAME = re.compile(r"step_(\d+)")
_PARTS = ("model", "ema", "optimizer", "lr_scheduler", "scaler")


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after ``step`` optimizer steps (ordering uses the number)."""
    return f"step_{step:06d}"


def _step_of(name: str) -> int | None:
    match = _STEP_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of ``run_dir``, oldest step first; temp folders and unmarked ones are skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [
        (step, entry)
        for entry in run_dir.iterdir()
        if (step := _step_of(entry.name)) is not None and (entry / COMPLETE_FILE).is_file()
    ]
    return [entry for _, entry in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in ``run_dir``, or None if there is none."""
    complete = list_checkpoints(run_dir)
    return complete[-1] if complete else None


def _state_dicts(**parts: Any) -> dict[str, Any]:
    """Each part's state: a mapping as given, else its ``state_dict()``."""
    return {name: obj if isinstance(obj, Mapping) else obj.state_dict() for name, obj in parts.items() if obj is not None}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: Any = None,
    ema: Any = None,
    optimizer: Any = None,
    lr_scheduler: Any = None,
    scaler: Any = None,
    extra_state: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    keep_last: int | None = 3,
) -> Path:
    """Atomically write ``<run_dir>/step_<step>/`` and keep only the newest ``keep_last`` checkpoints.

    ``model`` / ``ema`` / ``optimizer`` / ``lr_scheduler`` / ``scaler`` (fp16 loss scaling) are anything with
    ``state_dict()``, or such a state already taken (None = absent); ``extra_state`` is any nested state
    (data-loader position, counters, ...); ``generators``
    names per-run ``torch.Generator`` objects whose states are saved with the global RNGs. Leftovers of
    a crashed save are removed first; older checkpoints are deleted only after the new one is in place,
    and never the one just written (``keep_last=None`` keeps all). Returns the checkpoint folder.
    """
    if step < 0:
        raise CheckpointError(f"checkpoint step must be >= 0, got {step}")
    if keep_last is not None and keep_last < 1:
        raise CheckpointError(f"keep_last must be >= 1 or None, got {keep_last}")
    parts = _state_dicts(model=model, ema=ema, optimizer=optimizer, lr_scheduler=lr_scheduler, scaler=scaler)
    for name in ("model", "ema"):
        if name in parts:
            require_finite(parts[name], name)
    state = {"parts": parts, "rng": capture_rng_state(generators), "extra": dict(extra_state or {})}
    tensors, tree = flatten_state(state)
    header = {
        "polydiff_checkpoint": CHECKPOINT_FORMAT,
        "polydiff_version": __version__,
        "step": step,
        "state": tree,
    }

    def write_files(staging: Path) -> None:
        write_tensors(staging / TENSORS_FILE, tensors, {"polydiff_checkpoint": str(CHECKPOINT_FORMAT)})
        write_json(staging / CONFIG_FILE, dict(config or {}))
        write_json(staging / STATE_FILE, header)
        write_json(staging / COMPLETE_FILE, {"step": step})

    run_dir = Path(run_dir)
    clean_leftovers(run_dir, lambda name: _step_of(name) is not None)
    target = write_dir_atomically(run_dir / checkpoint_name(step), write_files)
    _prune(run_dir, keep_last, keep=target)
    return target


def _prune(run_dir: Path, keep_last: int | None, keep: Path) -> None:
    if keep_last is None:
        return
    for old in list_checkpoints(run_dir)[:-keep_last]:
        if old != keep:
            remove_dir(old)


def _read_header(path: Path) -> dict[str, Any]:
    """``state.json`` of a complete checkpoint folder, validated."""
    path = require_dir(path, "checkpoint")
    if not (path / COMPLETE_FILE).is_file():
        if list_checkpoints(path):
            raise CheckpointError(f"{path} is a run folder; pass one of its checkpoints (latest_checkpoint)")
        raise CheckpointError(f"{path} is not a complete checkpoint (no {COMPLETE_FILE} marker: interrupted)")
    header = read_json(path / STATE_FILE)
    fmt = header.get("polydiff_checkpoint") if isinstance(header, dict) else None
    if not isinstance(fmt, int):
        raise CheckpointError(f"{path / STATE_FILE} is not a polydiff checkpoint state (no format key)")
    if fmt > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {fmt}, newer than polydiff {__version__} reads "
            f"({CHECKPOINT_FORMAT}); upgrade polydiff"
        )
    return header


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint folder was taken at."""
    step = _read_header(Path(path)).get("step")
    if type(step) is not int or step < 0:
        raise CheckpointError(f"{Path(path) / STATE_FILE}: 'step' must be a non-negative integer, got {step!r}")
    return step


def checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The resolved run configuration stored in a checkpoint folder."""
    _read_header(Path(path))
    return read_json(Path(path) / CONFIG_FILE)


def load_checkpoint(
    path: str | Path,
    *,
    model: Any = None,
    ema: Any = None,
    optimizer: Any = None,
    lr_scheduler: Any = None,
    scaler: Any = None,
    generators: Mapping[str, torch.Generator] | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore a checkpoint folder into the given objects (None = skip) and the RNGs; return ``extra_state``.

    Each object gets ``load_state_dict``; asking for a part the checkpoint lacks, or one whose shapes /
    keys differ, is a ``CheckpointError``; so is a learning-rate scheduler or loss-scaler state whose entries are
    not of the kinds the live object has (``state_checks``). Parts present in the checkpoint but not asked for
    are ignored (e.g. loading only the EMA weights to sample). Tensors load on the CPU; ``load_state_dict``
    moves them.
    """
    path = Path(path)
    header = _read_header(path)
    state = decode_state(header.get("state"), read_tensors(path / TENSORS_FILE), str(path / STATE_FILE))
    if not (isinstance(state, dict) and isinstance(state.get("parts"), dict) and isinstance(state.get("extra"), dict)
            and isinstance(state.get("rng"), dict)):
        raise CheckpointError(f"{path / STATE_FILE}: the state must hold 'parts', 'rng' and 'extra' tables")
    targets = dict(zip(_PARTS, (model, ema, optimizer, lr_scheduler, scaler)))
    for name in ("model", "ema"):
        if name in state["parts"] and targets[name] is not None:
            require_finite(state["parts"][name], name, action=f"{path}: not a usable checkpoint")
    for name, target in targets.items():
        if target is not None:
            _load_part(path, name, target, state["parts"])
    if restore_rng:
        try:
            restore_rng_state(state["rng"], generators)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            detail = " ".join(str(err).split())[:200]
            raise CheckpointError(f"{path}: the random-number-generator state is damaged ({detail})") from None
    return state["extra"]


def _load_part(path: Path, name: str, target: Any, parts: Mapping[str, Any]) -> None:
    if name not in parts:
        raise CheckpointError(f"{path} holds no {name} state (it has: {', '.join(parts) or 'nothing'})")
    if name in ("lr_scheduler", "scaler"):  # small states whose load_state_dict checks nothing
        check_like(target.state_dict(), parts[name], f"{path}: {name}")
    try:
        target.load_state_dict(parts[name])
    except (RuntimeError, KeyError, ValueError) as err:  # what load_state_dict raises for states that do not fit
        detail = " ".join(str(err).split())[:400]
        raise CheckpointError(f"{path}: {name} does not match the checkpoint ({detail})") from err
