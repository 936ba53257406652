"""The batches a process trains on, from map-style or streaming data, starting at any step."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.examples import collate
from ..data.streaming import StreamingDataset
from ..recipes.schema import RecipeConfig
from .data_order import StepBatchSampler, rank_share


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C and SIGTERM to the main process, which finishes the step, writes a
    checkpoint and then shuts them down (a signal sent to the whole process group would otherwise kill them
    mid-step and the run with them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class Batches:
    """An endless iterator of collated micro-batches over a DataLoader iterator; ``close()`` shuts its worker
    processes down (they ignore SIGTERM, so they must be told to stop rather than terminated)."""

    def __init__(self, items: Iterator, per_batch: int | None = None):
        self._items, self._per_batch = items, per_batch

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> dict:
        if self._per_batch is None:  # the DataLoader batches itself
            return next(self._items)
        return collate(list(itertools.islice(self._items, self._per_batch)))

    def close(self) -> None:
        shutdown = getattr(self._items, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def make_loader(train_set: Dataset, cfg: RecipeConfig, start_step: int, rank: int, world: int
                ) -> tuple[slice, Batches]:
    """(this process's rows of each global batch, its collated micro-batches) from optimizer step
    ``start_step`` on. The DataLoader gets its own generator, so building it draws nothing from the global RNG
    that a checkpoint restores."""
    B, accum, workers = cfg.data.batch_size, cfg.train.grad_accum, cfg.data.num_workers
    share = rank_share(B, rank, world)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    start = start_step * accum  # micro-batches already seen
    common = {"num_workers": workers, "generator": generator, "persistent_workers": workers > 0,
              "worker_init_fn": _ignore_stop_signals}
    if isinstance(train_set, StreamingDataset):
        train_set.position(start, B, rank, world)
        return share, Batches(iter(DataLoader(train_set, batch_size=None, **common)), share.stop - share.start)
    sampler = StepBatchSampler(len(train_set), B, cfg.train.seed, start, rank, world)
    return share, Batches(iter(DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, **common)))
