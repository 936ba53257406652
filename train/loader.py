"""The batches a process trains on, from map-style or streaming data, starting at any step."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.examples import collate
from ..data.streaming import StreamingDataset
from ..recipes.schema import RecipeConfig
from .data_order import StepBatchSampler, rank_share


def make_loader(train_set: Dataset, cfg: RecipeConfig, start_step: int, rank: int, world: int
                ) -> tuple[slice, Iterator[dict]]:
    """(this process's rows of each global batch, an endless iterator of its collated micro-batches) from
    optimizer step ``start_step`` on. The DataLoader gets its own generator, so building it draws nothing from
    the global RNG that a checkpoint restores."""
    B, accum, workers = cfg.data.batch_size, cfg.train.grad_accum, cfg.data.num_workers
    share = rank_share(B, rank, world)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    start = start_step * accum  # micro-batches already seen
    if isinstance(train_set, StreamingDataset):
        train_set.position(start, B, rank, world)
        items = DataLoader(train_set, batch_size=None, num_workers=workers, generator=generator,
                           persistent_workers=workers > 0)
        per = share.stop - share.start
        stream = iter(items)
        return share, (collate(list(itertools.islice(stream, per))) for _ in itertools.count())
    sampler = StepBatchSampler(len(train_set), B, cfg.train.seed, start, rank, world)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                        generator=generator, persistent_workers=workers > 0)
    return share, iter(loader)
