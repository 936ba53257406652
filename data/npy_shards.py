"""``npy_shards``: a streaming data set over ``.npy`` shard files, each holding many examples (N, *S).

Nothing is indexed up front: an epoch visits the shards in a seeded order (a fresh one each epoch) and the
rows of each shard in order, reading a shard's header (memory-mapped, no data) only when the epoch reaches
it. A shard whose header cannot be read counts as one skipped example.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..recipes.config import setting
from ..registry import register_dataset
from .folder import FolderOptions, as_example, common_shape, list_files, npy_shape
from .streaming import StreamingDataset


@dataclass(frozen=True)
class NpyShardsOptions(FolderOptions):
    """Options of ``npy_shards``."""

    root: str = setting("data", doc="folder of .npy shards, each an array (N, *S) of N examples")
    shuffle_shards: bool = setting(True, doc="visit the shards in a new seeded order each epoch")


class NpyShards(StreamingDataset):
    def __init__(self, shards: list[Path], seed: int, shuffle: bool, example_shape: tuple[int, ...]):
        self.shards, self.seed, self.shuffle, self.example_shape = shards, seed, shuffle, example_shape

    def keys(self, epoch: int) -> Iterator[tuple[int, int]]:
        order = range(len(self.shards))
        if self.shuffle:
            order = torch.randperm(len(self.shards), generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        for s in order:
            try:
                rows = len(np.load(self.shards[s], mmap_mode="r", allow_pickle=False))
            except (OSError, ValueError, TypeError):
                yield (s, -1)  # unreadable header: load() fails on it, and it is counted as skipped
                continue
            yield from ((s, row) for row in range(rows))

    def load(self, key: tuple[int, int]) -> dict:
        shard, row = key
        if row < 0:
            raise ValueError("unreadable shard header")
        return {"x": as_example(np.load(self.shards[shard], mmap_mode="r", allow_pickle=False)[row],
                                self.example_shape), "cond": {}}

    def name(self, key: tuple[int, int]) -> str:
        return f"{self.shards[key[0]]}[{key[1]}]"


@register_dataset("npy_shards", NpyShardsOptions)
def npy_shards(options: NpyShardsOptions, seed: int) -> NpyShards:
    """The shards under ``options.root``, in file-name order before shuffling."""
    root = Path(options.root).expanduser()
    files, _, _ = list_files(root, (".npy",), False, "data.options.root")
    rows = (shape[1:] if shape and len(shape) > 0 else None for shape in map(npy_shape, files))
    return NpyShards(files, seed, options.shuffle_shards, common_shape(rows, "data.options.root", root))
