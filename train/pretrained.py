"""Model folders: the weights and everything sampling needs, in a folder a user can copy, version and share.

    <dir>/config.json        {"polydiff_format": 1, "polydiff_version": "0.1.0",
                              "config":   {...model configuration...},
                              "sampling": {"schedule": ..., "parameterization": ...,
                                           "sampler": ..., "steps": ...}}
    <dir>/model.safetensors  the weights to sample with (the EMA weights of a training run)

One JSON file with sections (rather than one file per concern) so that the marker, the model and the
sampling defaults can never drift apart; ``sampling`` may hold more keys than the required four. The
folder is replaced atomically (atomic.py); files a user added to an existing model folder (a README,
samples) are carried over. Loading never unpickles: a ``.pt`` / ``.bin`` / ``.ckpt`` is refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .atomic import clean_leftovers, write_dir_atomically
from .files import read_json, read_tensors, write_json, write_tensors
from .guards import CheckpointError, looks_like_pickle, refuse_pickle, require_dir, require_finite

PRETRAINED_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SAMPLING_KEYS = ("schedule", "parameterization", "sampler", "steps")
_OWN_FILES = (CONFIG_FILE, WEIGHTS_FILE)


def _check_sections(doc: Mapping[str, Any], where: Path) -> None:
    for section in ("config", "sampling"):
        if not isinstance(doc.get(section), dict):
            kind = type(doc.get(section)).__name__
            raise CheckpointError(f"{where}: '{section}' must be a JSON object, got {kind}")
    missing = [key for key in SAMPLING_KEYS if key not in doc["sampling"]]
    if missing:
        needed = ", ".join(SAMPLING_KEYS)
        raise CheckpointError(f"{where}: 'sampling' lacks {', '.join(missing)} (needs {needed})")


def _read_marked_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, checked for the polydiff marker and format version."""
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{path} is not a polydiff model folder: {CONFIG_FILE} is missing")
    doc = read_json(config_path)
    fmt = doc.get("polydiff_format") if isinstance(doc, dict) else None
    if not isinstance(fmt, int):
        raise CheckpointError(
            f"{path} is not a polydiff model folder: {CONFIG_FILE} has no 'polydiff_format' marker"
        )
    if fmt > PRETRAINED_FORMAT:
        raise CheckpointError(
            f"{config_path} has polydiff_format {fmt}, newer than polydiff {__version__} reads "
            f"({PRETRAINED_FORMAT}); upgrade polydiff"
        )
    return doc


def _user_files(path: Path) -> list[Path]:
    """Entries of an existing model folder that are not polydiff's; refuse to replace a foreign folder."""
    if not path.exists():
        return []
    if not path.is_dir():
        raise CheckpointError(f"{path} exists and is a file; refusing to replace it with a model folder")
    entries = list(path.iterdir())
    if entries:
        try:
            _read_marked_config(path)
        except CheckpointError as err:
            message = f"{path} exists and is not a polydiff model folder; won't replace it"
            raise CheckpointError(message) from err
    return [entry for entry in entries if entry.name not in _OWN_FILES]


def save_pretrained(
    path: str | Path,
    model_state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    sampling: Mapping[str, Any],
) -> Path:
    """Write a model folder: ``config.json`` (marker, version, config, sampling) + ``model.safetensors``.

    ``model_state`` is a flat state dict (pass the EMA weights); ``config`` and ``sampling`` must be
    JSON-able, ``sampling`` holding at least ``SAMPLING_KEYS``. Non-finite weights are refused.
    """
    path = Path(path)
    require_finite(model_state, "model")
    doc = {
        "polydiff_format": PRETRAINED_FORMAT,
        "polydiff_version": __version__,
        "config": dict(config),
        "sampling": dict(sampling),
    }
    _check_sections(doc, path / CONFIG_FILE)
    clean_leftovers(path.parent, lambda name: name == path.name)  # may put back a folder a crash moved aside
    carried = _user_files(path)

    def write_files(staging: Path) -> None:
        metadata = {"format": "pt", "polydiff_format": str(PRETRAINED_FORMAT)}
        write_tensors(staging / WEIGHTS_FILE, model_state, metadata)
        write_json(staging / CONFIG_FILE, doc)
        for entry in carried:
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, staging / entry.name)

    return write_dir_atomically(path, write_files)


def load_pretrained_files(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read a model folder: ``(state_dict, config, sampling)``.

    A missing folder or file, a foreign folder, corrupt JSON, a truncated or foreign weights file, or a
    pickle (never loaded) is a one-line ``CheckpointError`` naming the file.
    """
    path = require_dir(path, "polydiff model folder")
    doc = _read_marked_config(path)
    _check_sections(doc, path / CONFIG_FILE)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(entry for entry in path.iterdir() if entry.is_file() and looks_like_pickle(entry))
        if pickles:
            raise refuse_pickle(pickles[0])
        raise CheckpointError(f"{weights} is missing")
    return read_tensors(weights), doc["config"], doc["sampling"]
