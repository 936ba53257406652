"""``cifar10``: CIFAR-10 (Krizhevsky 2009) from its distribution files, the python or the binary version.

The python version is a pickle. polydiff never unpickles users' files freely: these batches are read with an
unpickler that can build only dicts, lists, strings, numbers and numpy arrays (the names a CIFAR batch
refers to), so a file that tries to run code is refused, not executed. The binary version is raw bytes
(one label byte and 3072 pixel bytes per image).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ...core.cascade import resize
from ...data.examples import TensorExamples
from ...data.folder import FolderOptions
from ...errors import UserError
from ...recipes.config import setting
from ...registry import register_dataset

_ALLOWED = {  # (module, name) a CIFAR python batch may refer to
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes: a pure function
}
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


class ArraysOnly(pickle.Unpickler):
    """Refuses every global but numpy's array reconstruction (the approach of torch.load's weights_only)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        import importlib

        return getattr(importlib.import_module(module.replace("numpy.core.", "numpy._core.")), name)


@dataclass(frozen=True)
class Cifar10Options(FolderOptions):
    """Options of ``cifar10``."""

    root: str = setting("data/cifar-10-batches-py", doc="the folder of cifar-10-python.tar.gz or "
                                                        "cifar-10-binary.tar.gz, unpacked")
    split: Literal["train", "test"] = setting("train", doc="the 50,000 training or 10,000 test images")
    size: int = setting(32, ge=4, le=32, doc="image side: 32, or smaller (area-averaged) for a cascade's base stage")


def _python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
        return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise UserError(f"{path}: not a CIFAR-10 python batch ({type(err).__name__}: {str(err)[:100]})") from None


def _binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise UserError(f"{path}: not a CIFAR-10 binary batch (size {raw.size} is not a multiple of 3073)")
    records = raw.reshape(-1, 3073)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def load_cifar10(root: Path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, 32, 32) in [-1, 1], labels (N,)) from the python or the binary batches in ``root``."""
    names = TRAIN if split == "train" else ["test_batch"]
    if all((root / n).is_file() for n in names):
        parts = [_python_batch(root / n) for n in names]
    elif all((root / f"{n}.bin").is_file() for n in names):
        parts = [_binary_batch(root / f"{n}.bin") for n in names]
    else:
        raise UserError(f"data.options.root: {root} holds no CIFAR-10 {split} batches ({', '.join(names)}, or the "
                        f".bin files of the binary version)")
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{root}: CIFAR-10 labels must be 0..9, found {labels.min()}..{labels.max()}")
    return torch.from_numpy(images).float() / 127.5 - 1, torch.from_numpy(labels)


@register_dataset("cifar10", Cifar10Options)
def cifar10(options: Cifar10Options, seed: int) -> TensorExamples:
    x, labels = load_cifar10(Path(options.root).expanduser(), options.split)
    if options.size != 32:
        x = resize(x, (options.size, options.size))
    return TensorExamples(x, {"class_labels": labels})
