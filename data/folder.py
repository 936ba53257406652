"""Data sets of files on disk, read lazily (in DataLoader workers when ``data.num_workers`` > 0).

``FileDataset`` lists the files once and reads example i only when it is asked for. A file that cannot be
read (corrupt, truncated, wrong format) is replaced by the next readable file in the list, and its name
travels with the example (``SKIPPED``) so the trainer counts it and reports it at the end of the run; the
replacement is deterministic, so resume stays exact. A folder with no readable file is one clear error.

``npy_folder`` is the generic instance: one example per ``.npy`` file (arrays of any shape, such as
pre-computed mel spectrograms or latents), optionally one class per sub-folder (torchvision's ImageFolder
convention). Modalities subclass ``FileDataset`` with their own ``read`` (images, video, audio).
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..recipes.config import Config, ConfigError, setting
from ..registry import register_dataset
from .examples import SKIPPED

READ_ERRORS = (OSError, ValueError, RuntimeError, EOFError, SyntaxError, IndexError)  # what a bad file raises


def list_files(root: Path, suffixes: tuple[str, ...], class_folders: bool, key: str) -> tuple[list[Path], list[int],
                                                                                              list[str]]:
    """(files, labels, class names) under ``root`` with one of ``suffixes``, sorted; with ``class_folders`` each
    immediate sub-folder is a class (labels 0.. in sorted order) and files directly in ``root`` are ignored."""
    if not root.is_dir():
        raise UserError(f"{key}: {root} {'is not a folder' if root.exists() else 'does not exist'}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if class_folders else [""]
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        files += found
        labels += [label] * len(found)
    if not files:
        where = f"{root}'s class sub-folders" if class_folders else str(root)
        raise UserError(f"{key}: no {'/'.join(suffixes)} files in {where}")
    return files, labels, classes if class_folders else []


def read_folder(options, suffixes: tuple[str, ...], make) -> Dataset:
    """The data set ``make(files, labels or None, root, number of classes or None)`` of the files under
    ``options.root`` (with ``options.class_folders``), its first example read now: a folder of which no file
    reads is refused at once, not at the first step."""
    root = Path(options.root).expanduser()
    files, labels, classes = list_files(root, suffixes, options.class_folders, "data.options.root")
    dataset = make(files, labels if options.class_folders else None, root, len(classes) or None)
    dataset[0]
    return dataset


class FileDataset(Dataset):
    """Examples read on demand from ``files``; subclasses implement ``read(path) -> x`` (a tensor)."""

    def __init__(self, files: list[Path], labels: list[int] | None = None, root: Path | None = None,
                 num_classes: int | None = None):
        self.files, self.labels, self.root, self.num_classes = list(files), labels, root, num_classes

    def read(self, path: Path) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.files)

    def _example(self, i: int) -> dict:
        cond = {} if self.labels is None else {"class_labels": torch.tensor(self.labels[i], dtype=torch.long)}
        return {"x": self.read(self.files[i]), "cond": cond}

    def __getitem__(self, i: int) -> dict:
        skipped = []
        for k in range(len(self.files)):
            j = (i + k) % len(self.files)
            try:
                item = self._example(j)
            except READ_ERRORS as err:
                skipped.append(f"{self.files[j]} ({type(err).__name__}: {str(err)[:80]})")
                continue
            return {**item, SKIPPED: skipped} if skipped else item
        raise UserError(f"none of the {len(self.files)} files under {self.root or self.files[0].parent} could be "
                        f"read (first: {skipped[0]})")


@dataclass(frozen=True)
class FolderOptions(Config):
    """Base of the options of data sets read from a folder: ``root`` must name one."""

    root: str = setting("data", doc="the data folder")

    def check(self) -> None:
        if not self.root.strip():
            raise ConfigError(("root",), "{key} must name a folder, got an empty string")


@dataclass(frozen=True)
class NpyFolderOptions(FolderOptions):
    """Options of ``npy_folder``."""

    root: str = setting("data", doc="folder of .npy files, one example each (read with allow_pickle=False)")
    class_folders: bool = setting(False, doc="each sub-folder of root is a class (labels in sorted order)")


def as_example(array: np.ndarray, shape: tuple[int, ...] | None) -> torch.Tensor:
    """A numeric array as a float32 example, or ``ValueError`` saying why not: not real numbers (strings,
    booleans, complex), another shape than the data set's, NaN or inf."""
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"holds {array.dtype} values, not real numbers")
    if shape is not None and array.shape != shape:
        raise ValueError(f"shape {array.shape} differs from the data set's {shape}")
    values = np.array(array, dtype=np.float32)  # a copy, in memory even when the array is memory-mapped
    if not np.isfinite(values).all():
        raise ValueError("holds NaN or inf")
    return torch.from_numpy(values)


def common_shape(shapes, key: str, root: Path) -> tuple[int, ...]:
    """The most common of the first 16 readable ``shapes`` (an iterable yielding a shape or None per file): one
    odd or damaged file at the start does not decide the shape of a whole data set."""
    seen = [shape for shape in itertools.islice((s for s in shapes if s is not None), 16)]
    if not seen:
        raise UserError(f"{key}: no file under {root} could be read as a numeric array")
    return collections.Counter(seen).most_common(1)[0][0]


def npy_shape(path: Path) -> tuple[int, ...] | None:
    """The shape in a ``.npy`` header (memory-mapped: no data read), or None if it cannot be read."""
    try:
        return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    except (OSError, ValueError, TypeError):
        return None


class NpyFolder(FileDataset):
    """One float32 example per ``.npy`` file, each of the data set's shape."""

    def read(self, path: Path) -> torch.Tensor:
        return as_example(np.load(path, allow_pickle=False), self.example_shape)


@register_dataset("npy_folder", NpyFolderOptions)
def npy_folder(options: NpyFolderOptions, seed: int) -> NpyFolder:
    """The ``.npy`` files under ``options.root``; the example shape is the most common of the first readable."""
    def make(files, labels, root, num_classes):
        dataset = NpyFolder(files, labels, root, num_classes)
        dataset.example_shape = common_shape(map(npy_shape, files), "data.options.root", root)
        return dataset

    return read_folder(options, (".npy",), make)
