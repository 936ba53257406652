"""The video part of ``polydiff demo``: the moving-digits recipe trained for a few CPU minutes on 8-frame clips,
then a video 8x longer than those clips made by autoregressive extension, and a video at twice the frame rate made
by interpolating between generated frames (Ho et al. 2022, sec. 3.1 and 4.3), each an MP4 and a PNG of its frames."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from ...media import Image, image_grid, save_media
from ...pipeline import DiffusionModel
from ...registry import register_demo
from ..image.writer import MIN_TILE
from .extend import WindowSampler
from .generate import discard_run, finished_frames, generate_video, output_frames

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "video" / "moving_digits.toml"
STEPS = 1000
LABEL = 3
GUIDANCE = 4.0  # classifier-free guidance on the label: after 1000 steps the known frames alone do not hold the
#                 digit's identity from window to window (README, Video), the guided label does


def frame_sheet(frames: np.ndarray, columns: int) -> np.ndarray:
    """uint8 (F, H, W, C) frames in rows of ``columns``, enlarged to ``MIN_TILE`` pixels, for looking at."""
    scale = max(1, MIN_TILE // max(frames.shape[1:3]))
    return image_grid(frames.repeat(scale, axis=1).repeat(scale, axis=2), columns)


@register_demo("video", order=30, about="moving digits: a clip model extended to 8x its length, and interpolated "
                                        "to twice the frame rate (~4 min on 2 cores)")
def moving_digits_demo(out: Path, quick: bool = False) -> list[Path]:
    """Train ``recipes/video/moving_digits.toml`` into ``<out>/moving_digits`` and write ``video_extended.mp4``
    (8x the training clips' length, digit 3) and ``video_interpolated.mp4`` (4x, then 2x the frame rate), each with
    a PNG of its frames."""
    from ...train.demo_run import train_for_demo  # the trainer only when a demo trains

    start = time.perf_counter()
    sets = ("data.options.num_samples=64", "data.options.frames=4", "data.batch_size=2", "sample.num=2") if quick else ()
    model = DiffusionModel.from_pretrained(train_for_demo(RECIPE, out, 4 if quick else STEPS, sets).model_dir)
    clip = model.example_shape[1]
    sample = WindowSampler(model, "explicit", cond={"class_labels": torch.tensor([LABEL])}, guidance=GUIDANCE,
                           steps=2 if quick else None)
    written = []
    for name, frames, factor in (("video_extended", 8 * clip, 1), ("video_interpolated", 4 * clip, 2)):
        path = out / f"{name}.mp4"
        generate_video(model, path, frames, sample, window=clip, context=clip // 2, factor=factor,
                       fps=4.0 * factor, progress=sys.stderr.isatty())
        made = finished_frames(model, path, factor, output_frames(frames, factor))
        discard_run(path)
        written += [path, save_media(Image(frame_sheet(made, 2 * clip if factor == 1 else 2 * clip - 1)),
                                     out / f"{name}_frames")]
        print(f"demo: {path.name}: {len(made)} frames of {made.shape[2]}x{made.shape[1]} ({frames} by extension "
              f"in windows of {clip} knowing {clip // 2}{', then 1 between each pair' if factor > 1 else ''})")
    print(f"demo: video part done in {time.perf_counter() - start:.0f} s")
    return written
