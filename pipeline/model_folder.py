"""Model folders: the weights and everything sampling needs, in a folder a user can copy, version and share.

    <dir>/config.json        {"polydiff_format": 2, "polydiff_version": "0.1.0",
                              "config":        {...the resolved recipe...},
                              "example_shape": [C, H, W],          (the shape of one sample, from the data)
                              "sampling":      {"sampler": ..., "steps": ..., ...defaults a user may edit}}
    <dir>/model.safetensors  the weights to sample with (the EMA weights of a training run)

One JSON file with sections (rather than one file per concern) so that the marker, the model and the
sampling defaults can never drift apart. The folder is replaced atomically (``storage.atomic``); files a user
added to an existing model folder (a README, samples) are carried over. Loading never unpickles: a
``.pt`` / ``.bin`` / ``.ckpt`` is refused, and so are non-finite weights, as they are refused on save.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..storage.atomic import clean_leftovers, write_dir_atomically
from ..storage.files import read_json, read_tensors, write_json, write_tensors
from ..storage.guards import CheckpointError, looks_like_pickle, refuse_pickle, require_dir, require_finite

MODEL_FORMAT = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SAMPLING_KEYS = ("sampler", "steps")
_OWN_FILES = (CONFIG_FILE, WEIGHTS_FILE)


@dataclass(frozen=True)
class ModelFiles:
    """What a model folder holds, as read (the sections are checked for shape, not yet typed)."""

    state: dict[str, torch.Tensor]
    config: dict[str, Any]
    example_shape: tuple[int, ...]
    sampling: dict[str, Any]


def _check_sections(doc: Mapping[str, Any], where: Path) -> tuple[int, ...]:
    """Raise unless ``doc`` has its sections in the right JSON types; returns the example shape."""
    for section in ("config", "sampling"):
        if not isinstance(doc.get(section), dict):
            raise CheckpointError(f"{where}: '{section}' must be a JSON object, got {type(doc.get(section)).__name__}")
    shape = doc.get("example_shape")
    if not (isinstance(shape, list) and shape and all(type(n) is int and 0 < n < 2**31 for n in shape)):
        raise CheckpointError(f"{where}: 'example_shape' must be a list of positive integers, got {shape!r}")
    missing = [key for key in SAMPLING_KEYS if key not in doc["sampling"]]
    if missing:
        raise CheckpointError(f"{where}: 'sampling' lacks {', '.join(missing)} (needs {', '.join(SAMPLING_KEYS)})")
    return tuple(shape)


def _read_marked_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, checked for the polydiff marker and format version."""
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{path} is not a polydiff model folder: {CONFIG_FILE} is missing")
    doc = read_json(config_path)
    fmt = doc.get("polydiff_format") if isinstance(doc, dict) else None
    if type(fmt) is not int:
        raise CheckpointError(f"{path} is not a polydiff model folder: {CONFIG_FILE} has no 'polydiff_format' marker")
    if fmt > MODEL_FORMAT:
        raise CheckpointError(f"{config_path} has polydiff_format {fmt}, newer than polydiff {__version__} reads "
                              f"({MODEL_FORMAT}); upgrade polydiff")
    if fmt < MODEL_FORMAT:
        raise CheckpointError(f"{config_path} has polydiff_format {fmt}, written before model folders stored the "
                              f"example shape (format {MODEL_FORMAT}); export it again from its run's checkpoint")
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
            raise CheckpointError(f"{path} exists and is not a polydiff model folder; won't replace it") from err
    return [entry for entry in entries if entry.name not in _OWN_FILES]


def write_model_folder(
    path: str | Path,
    state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    example_shape: Sequence[int],
    sampling: Mapping[str, Any],
) -> Path:
    """Write a model folder: ``config.json`` (marker, version, config, example shape, sampling defaults) and
    ``model.safetensors``. ``state`` is a flat state dict (pass the EMA weights); ``config`` and ``sampling``
    must be JSON-able, ``sampling`` holding at least ``SAMPLING_KEYS``. Non-finite weights are refused."""
    path = Path(path)
    require_finite(state, "model")
    doc = {
        "polydiff_format": MODEL_FORMAT,
        "polydiff_version": __version__,
        "config": dict(config),
        "example_shape": [int(n) for n in example_shape],
        "sampling": dict(sampling),
    }
    _check_sections(doc, path / CONFIG_FILE)
    clean_leftovers(path.parent, lambda name: name == path.name)  # may put back a folder a crash moved aside
    carried = _user_files(path)

    def write_files(staging: Path) -> None:
        write_tensors(staging / WEIGHTS_FILE, state, {"format": "pt", "polydiff_format": str(MODEL_FORMAT)})
        write_json(staging / CONFIG_FILE, doc)
        for entry in carried:
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, staging / entry.name)

    return write_dir_atomically(path, write_files)


def read_model_folder(path: str | Path) -> ModelFiles:
    """Read a model folder. A missing folder or file, a foreign folder, corrupt JSON, sections of the wrong JSON
    type, a truncated or foreign weights file, non-finite weights, or a pickle (never loaded) is a one-line
    ``CheckpointError`` naming the file."""
    path = require_dir(path, "polydiff model folder")
    doc = _read_marked_config(path)
    shape = _check_sections(doc, path / CONFIG_FILE)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(entry for entry in path.iterdir() if entry.is_file() and looks_like_pickle(entry))
        if pickles:
            raise refuse_pickle(pickles[0])
        raise CheckpointError(f"{weights} is missing")
    state = read_tensors(weights)
    require_finite(state, "model", action=f"{weights}: refusing to load")
    return ModelFiles(state, doc["config"], shape, doc["sampling"])
