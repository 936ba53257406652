"""Which examples each optimizer step sees: a pure function of (seed, step), so resume is exact.

Each epoch is a fresh permutation of the training split drawn from ``seed + epoch``; global batch k of
the run takes positions [k B, (k + 1) B) of the endless concatenation of epochs (dropping nothing, an
epoch boundary may fall inside a batch). With W processes, rank r takes its contiguous share of every
global batch, so a W-process run sees the same examples per step as a one-process run with the same
global batch, and a run resumed at step n continues with batch n without replaying anything.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from ..errors import UserError


def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class EpochOrder:
    """The epoch stream's permutations, each drawn once and kept while batches fall in its epoch (drawing one
    per batch took 0.19 s at 1.3 M examples, 1.8 s at 10 M)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, _epoch_permutation(self.n, self.seed, epoch)
        return self._perm

    def batch(self, batch_size: int, batch: int) -> list[int]:
        """Dataset indices of global batch number ``batch``: (batch_size,) positions of the epoch stream."""
        start = batch * batch_size
        indices: list[int] = []
        while len(indices) < batch_size:
            epoch, offset = divmod(start + len(indices), self.n)
            indices.extend(self.permutation(epoch)[offset : offset + batch_size - len(indices)].tolist())
        return indices


def global_batch_indices(n: int, batch_size: int, seed: int, batch: int) -> list[int]:
    """Dataset indices of global batch number ``batch`` (one-off; ``EpochOrder`` keeps the permutation)."""
    return EpochOrder(n, seed).batch(batch_size, batch)


def rank_share(batch_size: int, rank: int, world_size: int) -> slice:
    """The contiguous slice of a global batch that process ``rank`` of ``world_size`` takes."""
    if batch_size % world_size:
        raise UserError(f"data.batch_size = {batch_size} is the global batch: it must split evenly over the "
                        f"{world_size} processes")
    per = batch_size // world_size
    return slice(rank * per, (rank + 1) * per)


class StepBatchSampler(Sampler[list[int]]):
    """Endless batch sampler for ``DataLoader(batch_sampler=...)`` starting at micro-batch ``start``."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1):
        if n < 1:
            raise UserError("the training split is empty")
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.share = rank_share(batch_size, rank, world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order, batch = EpochOrder(self.n, self.seed), self.start
        while True:
            yield order.batch(self.batch_size, batch)[self.share]
            batch += 1
