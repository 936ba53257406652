"""``frame_masks``: the random known-frame masks that train an explicitly frame-conditioned video model (Ho et al.
2022, sec. 3.1, the conditional model reconstruction guidance is compared with; Harvey et al. 2022, "Flexible
Diffusion Modeling of Long Videos", train one model for every mask). Each example gets, from its own generator:

    prefix       the first k frames known, k uniform in 1 .. F - 1       (extension: continue a clip)
    every_kth    every k-th frame known from a random offset, k in strides  (temporal upsampling: fill between)
    none         nothing known                                           (unconditional generation)

with the given probabilities. The clip itself goes in as cond["known"] (the network sees it only where
cond["known_mask"] (B, F) is True), so one model extends, interpolates and generates from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...recipes.config import Config, ConfigError, setting
from ...registry import register_transform


@dataclass(frozen=True)
class FrameMasksOptions(Config):
    """Options of ``frame_masks``: the probability of each kind of mask (they must add up to 1)."""

    prefix: float = setting(0.4, ge=0, le=1, doc="probability of a known prefix of 1 .. F - 1 frames")
    every_kth: float = setting(0.3, ge=0, le=1, doc="probability of every k-th frame known")
    none: float = setting(0.3, ge=0, le=1, doc="probability of no known frame")
    strides: tuple[int, ...] = setting((2, 4), ge=2, le=64, doc="the k of every_kth masks, drawn uniformly")

    def check(self) -> None:
        total = self.prefix + self.every_kth + self.none
        if abs(total - 1) > 1e-6:
            raise ConfigError(("prefix",), f"{{key}} + {{every_kth}} + {{none}} must be 1, got {total:g}")
        if not self.strides:
            raise ConfigError(("strides",), "{key} needs at least one stride")


def draw_mask(frames: int, options: FrameMasksOptions, generator: torch.Generator) -> torch.Tensor:
    """One example's known frames (F,) bool."""
    u, v, w = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    mask = torch.zeros(frames, dtype=torch.bool)
    if u < options.prefix and frames > 1:
        mask[: 1 + int(v * (frames - 1))] = True
    elif u < options.prefix + options.every_kth:
        stride = options.strides[int(v * len(options.strides))]
        mask[int(w * stride) % stride:: stride] = True
    return mask


@register_transform("frame_masks", FrameMasksOptions)
class FrameMasks:
    """cond["known"] = the clip and cond["known_mask"] = a random mask per example (see the module docstring)."""

    def __init__(self, options: FrameMasksOptions | None = None):
        self.options = options or FrameMasksOptions()

    def check(self, example_shape: tuple[int, ...]) -> str | None:
        if len(example_shape) != 4:
            return f"frame_masks masks the frames of clips (C, F, H, W), but the examples have shape {example_shape}"
        return None

    def __call__(self, batch: dict, generators: Sequence[torch.Generator]) -> dict:
        x = batch["x"]
        if x.ndim != 5:  # not clips: nothing to mask (check() says so before training)
            return batch
        mask = torch.stack([draw_mask(x.shape[2], self.options, g) for g in generators]).to(x.device)  # (B, F)
        return {**batch, "cond": {**batch["cond"], "known": x, "known_mask": mask}}
