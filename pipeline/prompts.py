"""Captions as a model's conditions at sampling time: UTF-8 byte ids, then the recipe's ``at_sampling``
transforms (a frozen text encoder), exactly as the model saw captions in training."""

from __future__ import annotations

import torch

from .. import registry
from ..data.transforms import apply_transforms
from ..errors import UserError
from ..modalities.nn.text import encode_bytes
from .model import DiffusionModel

CAPTION_BYTES = 1024  # bytes kept of a prompt; the model cuts its captions to its own text length


def takes_text(model: DiffusionModel) -> bool:
    null = getattr(model.denoiser.backbone, "null_cond", {})
    return "caption_ids" in null or "text_mask" in null


def prompt_conditions(model: DiffusionModel, prompts: list[str]) -> dict:
    """``cond`` for one prompt per sample: ``caption_ids`` and what the recipe's at-sampling transforms add."""
    if not takes_text(model):
        raise UserError("--prompt: this model is not text-conditional (model.options.text)")
    cond = {"caption_ids": encode_bytes(prompts, CAPTION_BYTES)}
    transforms = [registry.get("transform", t.name) for t in model.config.data.transforms]
    built = [c.target(t.options) for c, t in zip(transforms, model.config.data.transforms) if c.info.get("at_sampling")]
    if built:
        batch = {"x": torch.zeros(len(prompts), *model.example_shape), "cond": cond}
        cond = apply_transforms(batch, built, [torch.Generator() for _ in prompts])["cond"]
    return cond
