"""The training side of a cascade's super-resolution stage: ``lowres_augment`` makes each example's
low-resolution input from the example itself, then corrupts it (CDM's conditioning augmentation, see
``core.cascade``), per example, with the trainer's per-example generators (reproduced by resume)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...core.cascade import gaussian_blur, noise_lowres, resize
from ...core.utils import rand_like_batch, randn_like
from ...recipes.config import Config, ConfigError, setting
from ...registry import register_transform


@dataclass(frozen=True)
class LowresAugmentOptions(Config):
    """Options of ``lowres_augment``."""

    size: int = setting(8, ge=1, le=4096, doc="side of the low-resolution input (the previous stage's output)")
    max_level: float = setting(0.5, ge=0, le=1, doc="Gaussian augmentation level a ~ U[0, max_level] per example "
                                                    "(0: none; 1: up to pure noise)")
    blur_prob: float = setting(0.0, ge=0, le=1, doc="fraction of examples blurred before the noise (CDM: 0.5 at the "
                                                    "higher resolutions)")
    blur_sigma: tuple[float, float] = setting((0.4, 0.6), gt=0, le=10, doc="range of the 3x3 blur's sigma, pixels")

    def check(self) -> None:
        if self.blur_sigma[0] > self.blur_sigma[1]:
            raise ConfigError(("blur_sigma",), f"{{key}} must be [low, high], got {list(self.blur_sigma)}")


@register_transform("lowres_augment", LowresAugmentOptions)
class LowresAugment:
    """Adds ``lowres`` (B, C, size, size) and ``aug_level`` (B,) to each batch's ``cond``."""

    def __init__(self, options: LowresAugmentOptions):
        self.options = options

    def check(self, example_shape: tuple[int, ...]) -> str | None:
        if len(example_shape) < 3 or self.options.size >= min(example_shape[-2:]):
            return (f"lowres_augment: size {self.options.size} must be smaller than the examples' image plane "
                    f"{example_shape[-2:]}")
        return None

    def __call__(self, batch: dict, generators: Sequence[torch.Generator]) -> dict:
        o, x = self.options, batch["x"]
        lowres = resize(x, (o.size, o.size))
        per_example = torch.empty(len(x), dtype=torch.float64)
        if o.blur_prob > 0:
            blur = rand_like_batch(per_example, generators) < o.blur_prob
            sigma = o.blur_sigma[0] + (o.blur_sigma[1] - o.blur_sigma[0]) * rand_like_batch(per_example, generators)
            blurred = gaussian_blur(lowres, sigma.to(x.device))
            lowres = torch.where(blur.to(x.device).view(-1, *[1] * (x.ndim - 1)), blurred, lowres)
        level = (o.max_level * rand_like_batch(per_example, generators)).to(device=x.device, dtype=x.dtype)
        noisy = noise_lowres(lowres, level, randn_like(lowres, generators))
        return {**batch, "cond": {**batch["cond"], "lowres": noisy, "aug_level": level}}
