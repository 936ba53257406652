"""Images to look at and to evaluate: a PNG grid (a row per class when the samples are class-conditional),
one PNG per sample, and ``samples.npz`` in guided-diffusion's layout (``arr_0``: uint8 N x H x W x C,
``arr_1``: class labels), the file its evaluation suite and most FID tools read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...media import Image, image_grid, save_media, save_npz, to_uint8
from ...registry import WriteContext, register_writer

MIN_TILE = 64  # small images (8x8 digits) are enlarged (nearest neighbour) to at least this many pixels in grids


def to_pixels(samples: torch.Tensor, value_range: tuple[float, float]) -> np.ndarray:
    """Samples (N, C, H, W) in ``value_range`` -> uint8 (N, H, W, C)."""
    return to_uint8(samples, value_range).transpose(0, 2, 3, 1)


def _columns(n: int, labels) -> int | None:
    """One row per class when the samples come in equal runs of sorted labels (``--labels all``)."""
    if labels is None or len(labels) != n:
        return None
    labels = np.asarray(labels)
    classes = np.unique(labels)
    per = n // len(classes)
    if per * len(classes) == n and np.array_equal(labels, np.repeat(classes, per)):
        return per
    return None


def grid(pixels: np.ndarray, columns: int | None = None) -> np.ndarray:
    """uint8 (N, H, W, C) tiled, small tiles enlarged to ``MIN_TILE``."""
    scale = max(1, MIN_TILE // max(pixels.shape[1], pixels.shape[2]))
    if scale > 1:
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    return image_grid(pixels, columns)


@torch.no_grad()
def write_images(samples: torch.Tensor, context: WriteContext) -> Image:
    """Samples (N, C, H, W) as one grid; real examples (``context.reference``) as a second grid beside it."""
    pixels = grid(to_pixels(samples, context.value_range), _columns(len(samples), context.labels))
    if context.reference is not None:
        real = grid(to_pixels(context.reference, context.value_range))
        height = max(pixels.shape[0], real.shape[0])
        pad = lambda a: np.pad(a, ((0, height - a.shape[0]), (0, 8), (0, 0)), constant_values=255)  # noqa: E731
        pixels = np.concatenate([pad(real), pad(pixels)], axis=1)
    return Image(pixels)


def export_images(samples: torch.Tensor, context: WriteContext, folder: Path) -> list[Path]:
    """``folder/samples.npz`` (arr_0 uint8 NHWC, arr_1 labels when known) and ``folder/images/000000.png``..."""
    pixels = to_pixels(samples, context.value_range)
    npz = save_npz(folder / "samples.npz", pixels, context.labels)
    for i, image in enumerate(pixels):
        save_media(Image(image), folder / "images" / f"{i:06d}")
    return [npz, folder / "images"]


register_writer("image", example_dims=3, export=export_images)(write_images)
