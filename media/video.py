"""MP4 writing with PyAV, frame by frame, so a long video never sits in memory whole."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


class Mp4Writer:
    """Streams uint8 (H, W, C) frames into an H.264 / yuv420p MP4 (plays in browsers). Odd widths and heights
    are padded by one black row / column (yuv420p needs even sizes). Use as a context manager."""

    def __init__(self, path: str | Path, fps: float, crf: int = 18):
        import av

        self.path, self.fps, self.crf = Path(path), Fraction(fps).limit_denominator(1001), crf
        self._container = av.open(str(self.path), mode="w")
        self._stream = None
        self.frames_written = 0

    def _open_stream(self, height: int, width: int) -> None:
        self._stream = self._container.add_stream("libx264", rate=self.fps)
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(self.crf)}

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 (H, W, C) frame, C in 1, 3."""
        import av

        if frame.ndim != 3 or frame.dtype != np.uint8 or frame.shape[2] not in (1, 3):
            raise ValueError(f"a frame must be uint8 (H, W, 1 or 3), got {frame.dtype} {frame.shape}")
        if self._stream is None:
            self._open_stream(frame.shape[0], frame.shape[1])
        rgb = np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame
        padded = np.zeros((self._stream.height, self._stream.width, 3), dtype=np.uint8)
        padded[: rgb.shape[0], : rgb.shape[1]] = rgb
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and close the file."""
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
