"""A resumable long-video run on disk: the frames made so far in raw uint8 files (F x H x W x C, appended) and a
state file that counts them, written only after the frames are synced, so an interrupted run leaves whole windows
behind and the next run with the same settings picks up after the last one. The folder is ``<out>.partial``."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...storage.files import write_json

STATE = "state.json"


class FrameStore:
    """uint8 frames of one shape appended to a raw file."""

    def __init__(self, path: Path, shape: tuple[int, int, int]):
        self.path, self.shape = path, tuple(shape)
        self.frame_bytes = int(np.prod(shape))

    def count(self) -> int:
        return self.path.stat().st_size // self.frame_bytes if self.path.exists() else 0

    def truncate(self, frames: int) -> None:
        """Keep the first ``frames`` frames (drops a window an interruption cut short)."""
        with open(self.path, "ab") as handle:
            handle.truncate(frames * self.frame_bytes)

    def append(self, frames: list[np.ndarray]) -> None:
        """Append uint8 (H, W, C) frames and sync them to disk."""
        with open(self.path, "ab") as handle:
            for frame in frames:
                handle.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
            handle.flush()
            os.fsync(handle.fileno())

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames start .. stop - 1, uint8 (n, H, W, C), read from disk (not all of the video in memory)."""
        start, stop = max(0, start), max(0, stop)
        if stop <= start:
            return np.zeros((0, *self.shape), dtype=np.uint8)
        with open(self.path, "rb") as handle:
            handle.seek(start * self.frame_bytes)
            data = np.fromfile(handle, dtype=np.uint8, count=(stop - start) * self.frame_bytes)
        return data.reshape(stop - start, *self.shape)  # (n * H * W * C,) -> (n, H, W, C), writable

    def frames(self, stop: int, block: int = 64) -> Iterator[np.ndarray]:
        """Frames 0 .. stop - 1 one at a time, read ``block`` at a time."""
        for start in range(0, stop, block):
            yield from self.read(start, min(stop, start + block))


class Run:
    """The ``<out>.partial`` folder of one generation: its settings, and how many frames of each stage are kept."""

    def __init__(self, out: Path, settings: dict, shape: tuple[int, int, int]):
        self.folder = out.with_name(out.name + ".partial")
        self.settings = settings
        self.base, self.out = FrameStore(self.folder / "base.u8", shape), FrameStore(self.folder / "out.u8", shape)
        self.done = {"base": 0, "out": 0}

    def open(self) -> bool:
        """Resume when the folder holds a run with the same settings (True), else start afresh (False)."""
        state_path = self.folder / STATE
        if state_path.is_file():
            try:
                state = json.loads(state_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = {}
            if state.get("settings") == self.settings:
                self.done = {k: int(state["done"][k]) for k in self.done}
                self.base.truncate(self.done["base"])
                self.out.truncate(self.done["out"])
                return True
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.commit()
        return False

    def commit(self, **done: int) -> None:
        """Record ``done`` frame counts (after their frames were appended and synced), atomically."""
        self.done.update(done)
        staging = self.folder / (STATE + ".tmp")
        write_json(staging, {"settings": self.settings, "done": self.done})
        os.replace(staging, self.folder / STATE)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
