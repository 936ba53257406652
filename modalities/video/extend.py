"""Long videos from a model of short clips: autoregressive extension and temporal upsampling, one window of frames
at a time, so memory does not grow with the video (Ho et al. 2022, "Video Diffusion Models", sec. 3.1 and 4.3).

Extension: the first window is generated from nothing; each next window knows its first ``context`` frames (the
last ones made) and generates the rest. Interpolation by ``factor`` K: a window holds known frames K apart and
generates the K - 1 between each pair. A window is sampled with its known frames either given to an explicitly
frame-conditioned model (cond known / known_mask; ``video_unet`` with frame_conditioning) or through
reconstruction guidance (``core.guidance.reconstruction_guidance``; weight 0: the replacement method) with any
model. Frames leave as uint8 and the known frames of the next window are read back from them, so what a window
sees does not depend on whether the run was interrupted and resumed; window i draws its noise from
(seed, stage, i).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ...core.conditioning import with_null_defaults
from ...core.guidance import reconstruction_guidance
from ...core.utils import randn_like, seeded_generators
from ...data.transforms import example_seed
from ...media import to_uint8
from ...pipeline.build import build_sigmas
from ...pipeline.sampling import draw_samples

Method = Literal["explicit", "guidance"]
EXTEND, INTERPOLATE = 1, 2  # the stages' seed keys


@dataclass(frozen=True)
class WindowSampler:
    """Samples one window (C, W, H, W') of ``model`` given known frames: the sampling settings of one run."""

    model: object
    method: Method
    weight: float = 2.0  # reconstruction guidance's w_r
    cond: dict | None = None  # e.g. class labels (1,)
    guidance: float | None = None  # classifier-free guidance (None: the model's default when cond is given)
    sampler: str | None = None
    steps: int | None = None
    seed: int = 0

    def to_model(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (F, H, W, C) -> model values (C, F, H, W) in the data range."""
        lo, hi = self.model.config.data.range
        x = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255  # (F, H, W, C) -> (C, F, H, W) in [0, 1]
        return (lo + (hi - lo) * x).to(self.model.device)

    def to_frames(self, clip: torch.Tensor) -> np.ndarray:
        """Model values (C, F, H, W) -> uint8 (F, H, W, C)."""
        return to_uint8(clip.cpu(), self.model.config.data.range).transpose(1, 2, 3, 0)

    def __call__(self, known: np.ndarray, positions: list[int], length: int, stage: int, index: int) -> np.ndarray:
        """A window of ``length`` frames whose frames at ``positions`` are ``known`` (uint8 (len, H, W, C)); the
        window's frames, uint8 (length, H, W, C) (the known ones as given)."""
        model, (channels, _, height, width) = self.model, self.model.example_shape
        shape = (channels, length, height, width)
        mask = torch.zeros(length, dtype=torch.bool, device=model.device)
        mask[positions] = True
        clip = torch.zeros(shape, device=model.device)
        if positions:
            clip[:, positions] = self.to_model(known)
        cond = dict(self.cond or {})
        explicit = self.method == "explicit" and bool(positions)
        if explicit:
            cond.update(known=clip[None], known_mask=mask[None])
        null = getattr(model.denoiser.backbone, "null_cond", {})
        cond = with_null_defaults(cond, null, 1, model.device) if cond else None  # guidance needs every key
        denoiser = model.guided(self.guidance, cond)
        seed = example_seed(self.seed, stage, index) % 2**62
        if positions and not explicit:
            noise = randn_like(clip[None], seeded_generators([seed + 1], device=model.device))
            denoiser = reconstruction_guidance(denoiser, clip[None], mask[None, None, :, None, None], self.weight,
                                               noise)
        sigmas = build_sigmas(model.config, model.schedule, self.steps, None, model.sampling).to(model.device)
        out = draw_samples(denoiser, sigmas, shape, 1, self.sampler or model.sampling.sampler, seed, cond)[0]
        frames = self.to_frames(out)
        if positions:
            frames[positions] = known  # the known frames exactly as given
        return frames


def extension_windows(total: int, window: int, context: int) -> Iterator[tuple[int, int, int]]:
    """(index, first new frame, end) of each extension window for ``total`` frames: window 0 makes frames 0 ..
    window - 1, each next one knows the ``context`` frames before its first new frame and makes window - context."""
    if not 0 < context < window:
        raise ValueError(f"the context ({context} frames) must be at least 1 and fewer than the window ({window})")
    index, begin, end = 0, 0, min(window, total)
    while begin < total:
        yield index, begin, end
        index, begin, end = index + 1, end, min(end + window - context, total)


def extension(sample: WindowSampler, total: int, window: int, context: int, tail: list[np.ndarray] | None = None,
              done: int = 0) -> Iterator[list[np.ndarray]]:
    """The new frames of each extension window (uint8 (H, W, C) each) up to ``total`` frames. ``done`` frames exist
    already (a resumed run, at a window's end), the last ``context`` of them in ``tail``."""
    tail = list(tail or [])[-context:]
    for index, begin, end in extension_windows(total, window, context):
        if end <= done:
            continue
        if begin != done:
            raise ValueError(f"{done} frames made is not the end of an extension window (a resume from a changed run?)")
        known = tail if index else []
        frames = sample(np.stack(known) if known else None, list(range(len(known))), window, EXTEND, index)
        new = list(frames[len(known): len(known) + end - begin])
        yield new
        tail, done = (tail + new)[-context:], end


def known_per_window(factor: int, window: int) -> int:
    """Known frames in each interpolation window: as many ``factor`` apart as fit in ``window`` frames, >= 2."""
    return max(2, (window - 1) // factor + 1)


def interpolation(sample: WindowSampler, frames: Iterable[np.ndarray], factor: int, window: int,
                  done_windows: int = 0) -> Iterator[list[np.ndarray]]:
    """The frames of ``frames`` with ``factor`` - 1 generated between each pair, one list per window (the last
    list ends with the last frame). ``done_windows`` windows were written already (a resumed run): their frames
    are skipped, and the stream must still start at frame 0."""
    per = known_per_window(factor, window)
    buffer, index = [], done_windows
    for position, frame in enumerate(frames):
        if position < done_windows * (per - 1):
            continue
        buffer.append(frame)
        if len(buffer) == per:
            yield list(sample(np.stack(buffer), [i * factor for i in range(per)], (per - 1) * factor + 1,
                              INTERPOLATE, index)[:-1])  # the last known frame starts the next window
            buffer, index = buffer[-1:], index + 1
    if len(buffer) > 1:  # the tail: fewer known frames than a window holds
        out = sample(np.stack(buffer), [i * factor for i in range(len(buffer))], (len(buffer) - 1) * factor + 1,
                     INTERPOLATE, index)
        yield list(out[:-1]) + buffer[-1:]
    elif buffer:
        yield buffer
