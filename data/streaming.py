"""Streaming data sets: corpora too large to index, read in order, split over processes and workers.

A subclass gives two things: ``keys(epoch)``, a cheap deterministic sequence of references (a shard and a
row, a file name, a URL), and ``load(key)``, which reads one example. The stream is the concatenation of
epochs 0, 1, 2, ...; global batch k of the run is stream positions [k B, (k + 1) B), and process r takes its
contiguous share of each, as for map-style data (``train.data_order``). Within a process, DataLoader worker w
of W loads the positions q with (q - q0) mod W = w, so the DataLoader's round-robin order is the stream's
order whatever the number of workers.

Resume: a run resumed at step n starts at position n B by walking the keys (not loading them) up to it: exact
when ``keys`` is deterministic and the world size and batch size are unchanged; walking costs time linear in
the examples already seen (subclasses may override ``keys`` to seek). An example that fails to load is
replaced by the next key that loads, and its key is reported (``SKIPPED``), as in ``data.folder``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from ..errors import UserError
from .examples import SKIPPED

MAX_CONSECUTIVE_FAILURES = 1000


class StreamingDataset(IterableDataset):
    """Base class: implement ``keys(epoch)`` and ``load(key)``; the engine calls ``position(...)`` first."""

    start, batch_size, rank, world = 0, 1, 0, 1

    def keys(self, epoch: int) -> Iterator[Any]:
        raise NotImplementedError

    def load(self, key: Any) -> dict:
        """The example ``{"x": ..., "cond": {...}}`` at ``key``; raise ``OSError`` / ``ValueError`` if unreadable."""
        raise NotImplementedError

    def name(self, key: Any) -> str:
        """How a skipped key is reported."""
        return str(key)

    def position(self, start_batch: int, batch_size: int, rank: int, world: int) -> StreamingDataset:
        """Start at global batch ``start_batch`` of ``batch_size`` examples, as process ``rank`` of ``world``."""
        self.start, self.batch_size, self.rank, self.world = start_batch, batch_size, rank, world
        return self

    def _stream(self) -> Iterator[Any]:
        for epoch in itertools.count():
            empty = True
            for key in self.keys(epoch):
                empty = False
                yield key
            if empty:
                raise ValueError(f"{type(self).__name__}: epoch {epoch} has no examples")

    def _global_position(self, q: int) -> int:
        """Stream position of this process's q-th example: its share of global batch q // per."""
        per = self.batch_size // self.world
        return (q // per) * self.batch_size + self.rank * per + q % per

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        per = self.batch_size // self.world
        q = self.start * per + worker  # this worker's first local position
        keys, at = self._stream(), 0
        buffer: list[Any] = []  # keys after the current one, for replacing unreadable examples
        while True:
            target = self._global_position(q)
            while at <= target:
                key = buffer.pop(0) if buffer else next(keys)
                at += 1
            yield self._load_or_next(key, keys, buffer)
            q += workers

    def _load_or_next(self, key: Any, keys: Iterator[Any], buffer: list[Any]) -> dict:
        skipped = []
        for attempt in range(MAX_CONSECUTIVE_FAILURES):
            try:
                item = self.load(key)
            except (OSError, ValueError, RuntimeError, EOFError) as err:
                skipped.append(f"{self.name(key)} ({type(err).__name__})")
                nxt = len(skipped) - 1
                if nxt >= len(buffer):
                    buffer.append(next(keys))
                key = buffer[nxt]
                continue
            return {**item, SKIPPED: skipped} if skipped else item
        raise UserError(f"{type(self).__name__}: {MAX_CONSECUTIVE_FAILURES} examples in a row failed to load "
                        f"(first: {skipped[0]})")
