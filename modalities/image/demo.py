"""The image part of ``polydiff demo``: the digits recipes trained through the engine, then sampled three ways
from their model folders: a class-by-class grid with classifier-free guidance, the unconditional path steered
by a separately trained noise-aware classifier (classifier guidance), and a two-stage cascade, 8x8 -> 32x32."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from ...media import Image, save_media
from ...pipeline import DiffusionModel, Pipeline
from ...pipeline.cascade import write_cascade
from ...registry import WriteContext, register_demo
from .writer import grid, to_pixels, write_images

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "image"
NUM = 100  # ten per class


def _train(recipe: str, out: Path, steps: int, sets: tuple[str, ...] = ()) -> Path:
    """Train ``recipes/image/<recipe>.toml`` for ``steps`` into ``out``; the model folder."""
    from ...train.demo_run import train_for_demo  # the trainer only when a demo trains

    return train_for_demo(RECIPES / f"{recipe}.toml", out, steps, sets).model_dir


def _grid(model: DiffusionModel, samples: torch.Tensor, labels: torch.Tensor) -> Image:
    return write_images(samples, WriteContext(model.config.data.range, model.config, labels=labels.tolist()))


def _cascade_picture(base: torch.Tensor, final: torch.Tensor, value_range) -> Image:
    """Each 8x8 base sample (enlarged, nearest) to the left of its 32x32 super-resolved version."""
    small = to_pixels(base, value_range)  # (N, 8, 8, C)
    small = small.repeat(final.shape[-2] // small.shape[1], axis=1).repeat(final.shape[-1] // small.shape[2], axis=2)
    large = to_pixels(final, value_range)  # (N, 32, 32, C)
    pairs = np.concatenate([small, large], axis=2)  # (N, 32, 64, C): low | high
    pairs = pairs.repeat(2, axis=1).repeat(2, axis=2)  # (N, 64, 128, C): large enough to see the pixels
    return Image(grid(pairs, columns=5))


@register_demo("image", order=10, about="handwritten digits: classifier-free and classifier guidance, an 8x8 -> "
                                        "32x32 cascade (~3 min on 2 cores)")
def digits_demo(out: Path, quick: bool = False) -> list[Path]:
    """Train the digits, digits_classifier and digits_cascade recipes into ``out`` and write ``digits.png``
    (a row per class, guidance 2), ``digits_classifier_guidance.png`` (the unconditional model, guided by the
    classifier: unguided | guided) and ``digits_cascade.png`` (8x8 base | 32x32 super-resolution)."""
    start, num, steps = time.perf_counter(), 20 if quick else NUM, 2 if quick else 18
    labels = torch.arange(num) * 10 // num
    digits = DiffusionModel.from_pretrained(_train("digits", out, 10 if quick else 700))
    written = [save_media(_grid(digits, digits.sample(num, steps=steps, cond={"class_labels": labels}), labels),
                          out / "digits")]

    classifier = DiffusionModel.from_pretrained(_train("digits_classifier", out, 10 if quick else 300))
    unguided = digits.sample(num, steps=steps, guidance=0.0, cond={"class_labels": labels})
    guided = digits.sample(num, steps=steps, guidance=0.0, cond={"class_labels": labels}, classifier=classifier,
                           classifier_scale=4.0)
    pair = [_grid(digits, x, labels).pixels for x in (unguided, guided)]
    pair[0] = np.pad(pair[0], ((0, 0), (0, 8), (0, 0)), constant_values=255)
    written.append(save_media(Image(np.concatenate(pair, axis=1)), out / "digits_classifier_guidance"))

    sr = _train("digits_cascade", out, 10 if quick else 400)
    folder = out / "digits_cascade"
    write_cascade(folder, [{"model": os.path.relpath(digits.source, folder)},
                           {"model": os.path.relpath(sr, folder), "aug_level": 0.1, "steps": 4 if quick else 12}])
    cascade, stages = Pipeline.from_pretrained(folder), {}
    final = cascade.sample(num // 2, cond={"class_labels": labels[::2]}, steps=steps,
                           on_stage=lambda i, x: stages.setdefault(i, x))
    written.append(save_media(_cascade_picture(stages[0], final, digits.config.data.range), out / "digits_cascade"))
    print(f"demo: image part done in {time.perf_counter() - start:.0f} s")
    return written
