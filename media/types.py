"""The three media types and the conversions from samples in the data's range."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def _check(array: np.ndarray, ndim: int, dtype, what: str, layout: str) -> None:
    if not isinstance(array, np.ndarray) or array.ndim != ndim or array.dtype != dtype:
        got = f"{getattr(array, 'dtype', type(array).__name__)} {getattr(array, 'shape', '')}"
        raise ValueError(f"{what} must be a {np.dtype(dtype).name} array {layout}, got {got}")


@dataclass(frozen=True, eq=False)
class Image:
    """An image to look at: ``pixels`` uint8 (H, W, C) with C in 1, 3, 4."""

    pixels: np.ndarray

    def __post_init__(self):
        _check(self.pixels, 3, np.uint8, "Image.pixels", "(H, W, C)")
        if self.pixels.shape[2] not in (1, 3, 4):
            raise ValueError(f"Image.pixels needs 1, 3 or 4 channels, got {self.pixels.shape[2]}")


@dataclass(frozen=True, eq=False)
class Video:
    """A clip: ``frames`` uint8 (F, H, W, C) with C in 1, 3, played at ``fps`` frames per second."""

    frames: np.ndarray
    fps: float = 8.0

    def __post_init__(self):
        _check(self.frames, 4, np.uint8, "Video.frames", "(F, H, W, C)")
        if self.frames.shape[3] not in (1, 3) or len(self.frames) == 0:
            raise ValueError(f"Video.frames needs >= 1 frame of 1 or 3 channels, got shape {self.frames.shape}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"Video.fps must be a positive number, got {self.fps}")


@dataclass(frozen=True, eq=False)
class Audio:
    """A clip: ``samples`` float32 (T, channels) in [-1, 1] at ``rate`` samples per second."""

    samples: np.ndarray
    rate: int

    def __post_init__(self):
        _check(self.samples, 2, np.float32, "Audio.samples", "(T, channels)")
        if not (isinstance(self.rate, int) and self.rate > 0):
            raise ValueError(f"Audio.rate must be a positive integer, got {self.rate!r}")


Media = Image | Video | Audio


def to_unit_range(samples: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Samples in ``value_range`` = (lo, hi) mapped to [0, 1] and clipped (float32, on the CPU)."""
    lo, hi = value_range
    return ((samples.detach().float().cpu() - lo) / (hi - lo)).clamp(0.0, 1.0)


def to_uint8(samples: torch.Tensor, value_range: tuple[float, float]) -> np.ndarray:
    """Samples in ``value_range`` as uint8 0..255 (rounded, clipped), same layout."""
    return (to_unit_range(samples, value_range) * 255).round().to(torch.uint8).numpy()


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2, fill: int = 128) -> np.ndarray:
    """uint8 images (N, H, W, C) tiled into one (H', W', C) grid, ``columns`` wide (default ~sqrt(N)), with a
    ``pad``-pixel border of grey ``fill`` between tiles (visible on black and on white images)."""
    n, h, w, c = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid
