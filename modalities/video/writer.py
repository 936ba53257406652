"""Clips to watch and to evaluate: one MP4 whose every frame is a grid of the samples' frames (PyAV, H.264), a PNG
strip of each sample's frames on request, and ``frames.npz`` (``arr_0``: uint8 N x F x H x W x C, ``arr_1``: class
labels) with one MP4 per sample, the files video evaluation tools read (FVD implementations take uint8 NFHWC)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...media import Image, Video, save_media, save_npz, to_uint8
from ...registry import WriteContext, register_writer
from ..image.writer import grid

DEFAULT_FPS = 8.0


def to_frames(samples: torch.Tensor, value_range: tuple[float, float]) -> np.ndarray:
    """Clips (N, C, F, H, W) in ``value_range`` -> uint8 (N, F, H, W, C)."""
    return to_uint8(samples, value_range).transpose(0, 2, 3, 4, 1)


def fps_of(context: WriteContext) -> float:
    """The recipe's frame rate (data.options.fps) when it has one, else 8 frames per second."""
    options = getattr(getattr(getattr(context, "config", None), "data", None), "options", None)
    return float(getattr(options, "fps", DEFAULT_FPS))


def strip(frames: np.ndarray) -> np.ndarray:
    """uint8 (F, H, W, C) side by side in one row, small frames enlarged as in grids."""
    return grid(frames, columns=len(frames))


@torch.no_grad()
def write_videos(samples: torch.Tensor, context: WriteContext) -> Video:
    """Samples (N, C, F, H, W) as one clip whose frame f tiles frame f of every sample."""
    frames = to_frames(samples, context.value_range)  # (N, F, H, W, C)
    return Video(np.stack([grid(frames[:, f]) for f in range(frames.shape[1])]), fps_of(context))


def export_videos(samples: torch.Tensor, context: WriteContext, folder: Path) -> list[Path]:
    """``folder/frames.npz`` (arr_0 uint8 NFHWC, arr_1 labels when known), ``folder/videos/000000.mp4``... and
    ``folder/strips/000000.png``... (each sample's frames in a row)."""
    frames = to_frames(samples, context.value_range)
    npz = save_npz(folder / "frames.npz", frames, context.labels)
    for i, clip in enumerate(frames):
        save_media(Video(clip, fps_of(context)), folder / "videos" / f"{i:06d}")
        save_media(Image(strip(clip)), folder / "strips" / f"{i:06d}")
    return [npz, folder / "videos", folder / "strips"]


register_writer("video", example_dims=4, export=export_videos)(write_videos)
