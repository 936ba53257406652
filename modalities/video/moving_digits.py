"""``moving_digits``: real handwritten digits (scikit-learn's 8x8 set, enlarged) bouncing inside a frame, the video
modality's CPU data set, after Moving MNIST (Srivastava et al. 2015, "Unsupervised learning of video representations
using LSTMs") but made of digits that ship with scikit-learn, so nothing is downloaded. Clip i is drawn from
(seed, i) alone: its digits, start positions and velocities; each digit moves in a straight line and reflects off
the frame's edges. Digits overlap by their maximum. Any frame size, clip length and digit count.

Joint image-video training (Ho et al. 2022, sec. 3): with ``image_fraction`` > 0 that share of the examples are
F independent images instead of a clip, flagged cond["images"] = True (the video U-Net then keeps their frames
apart): each frame shows the same classes as a clip would, but other handwritten samples of them, at random
places. Every example carries the flag, False for clips.

Labels: with one digit, ``class_labels`` is its class (0-9); with n digits, the classes read as an n-digit number
(first digit first), 10^n classes, so a label names every digit of the clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch.utils.data import Dataset

from ...data.transforms import example_seed
from ...recipes.config import Config, ConfigError, setting
from ...registry import register_dataset
from ..image.digits import load_digits
from ..nn.text import encode_bytes


@dataclass(frozen=True)
class MovingDigitsOptions(Config):
    """Options of ``moving_digits``."""

    size: int = setting(32, ge=8, le=512, doc="frame side in pixels (grey, one channel)")
    digit_size: int = setting(12, ge=8, le=256, doc="side of each digit: the 8x8 originals enlarged (bicubic)")
    frames: int = setting(16, ge=1, le=4096, doc="frames per clip")
    digits: int = setting(1, ge=1, le=3, doc="digits per clip (10^digits classes)")
    speed: tuple[float, float] = setting((1.0, 2.0), ge=0, le=64, doc="range of a digit's speed, pixels per frame")
    num_samples: int = setting(10_000, gt=0, le=10**8, doc="clips in the data set")
    subpixel: bool = setting(False, doc="place digits at fractional positions (bilinear) rather than whole pixels, "
                                        "so motion is exactly linear between bounces")
    captions: bool = setting(False, doc="also give each clip a caption naming its digits and their directions, "
                                        "e.g. \"digit 3 moving up-left\" (cond caption_ids, for text models)")
    caption_length: int = setting(48, gt=0, le=4096, doc="caption bytes kept")
    image_fraction: float = setting(0.0, ge=0, le=1, doc="share of examples that are F independent images (joint "
                                                         "image-video training), flagged cond['images']")

    def check(self) -> None:
        if self.digit_size > self.size:
            raise ConfigError(("digit_size",), f"{{key}} must be <= {{size}} = {self.size}, got {self.digit_size}")
        if self.speed[0] > self.speed[1]:
            raise ConfigError(("speed",), f"{{key}} must be [low, high], got {list(self.speed)}")


@cache
def _digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, size, size) in [0, 1], classes (N,)): the bundled digits, enlarged once per size."""
    x, labels = load_digits(size)
    return ((x[:, 0] + 1) / 2).numpy(), labels.numpy()


def bounce(start: np.ndarray, velocity: np.ndarray, frames: int, span: float) -> np.ndarray:
    """Positions (frames, ...) of points moving from ``start`` at ``velocity`` per frame in [0, span], reflecting at
    both ends (a triangle wave of period 2 span)."""
    t = np.arange(frames).reshape(-1, *[1] * start.ndim)  # (F, 1, ...)
    if span <= 0:
        return np.zeros((frames, *start.shape))
    q = np.mod(start + velocity * t, 2 * span)
    return np.where(q <= span, q, 2 * span - q)


def render(images: np.ndarray, positions: np.ndarray, size: int, subpixel: bool = False) -> np.ndarray:
    """Frames (F, size, size) in [0, 1]: digit k (d, d) of ``images`` (n, d, d) with its corner at ``positions``
    (F, n, 2) (row, column), rounded to whole pixels or, with ``subpixel``, spread bilinearly over the four pixels
    around it; overlapping digits combine by maximum."""
    frames, d = positions.shape[0], images.shape[-1]
    out = np.zeros((frames, size, size), dtype=np.float32)
    corners = np.floor(positions) if subpixel else np.rint(positions)
    fractions = positions - corners if subpixel else np.zeros_like(positions)  # (F, n, 2) in [0, 1)
    for f in range(frames):
        for k, ((r, c), (fr, fc)) in enumerate(zip(corners[f].astype(int), fractions[f])):
            canvas = np.zeros((d + 1, d + 1), dtype=np.float32)  # the digit and the row/column it may spill into
            for dr, wr in ((0, 1 - fr), (1, fr)):
                for dc, wc in ((0, 1 - fc), (1, fc)):
                    canvas[dr:dr + d, dc:dc + d] += wr * wc * images[k]
            h, w = min(d + 1, size - r), min(d + 1, size - c)  # a digit at the far edge has nothing to spill
            np.maximum(out[f, r:r + h, c:c + w], canvas[:h, :w], out=out[f, r:r + h, c:c + w])
    return out


DIRECTIONS = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")  # 45 degrees apart


def caption(classes: np.ndarray, velocity: np.ndarray | None) -> str:
    """ "digit 3 moving up-left", "digits 3 moving left and 7 moving down", or "digit 3" for independent images."""
    if velocity is None:
        return f"digit{'s' if len(classes) > 1 else ''} {' and '.join(map(str, classes))}"
    steps = np.rint(np.arctan2(velocity[:, 0], velocity[:, 1]) / (np.pi / 4)).astype(int) % 8  # rows grow downwards
    moving = [f"{c} moving {DIRECTIONS[k]}" for c, k in zip(classes, steps)]
    return f"digit{'s' if len(classes) > 1 else ''} {' and '.join(moving)}"


class MovingDigits(Dataset):
    def __init__(self, options: MovingDigitsOptions, seed: int):
        self.options, self.seed = options, seed
        self.example_shape = (1, options.frames, options.size, options.size)  # (C, F, H, W)
        self.num_classes = 10**options.digits

    def __len__(self) -> int:
        return self.options.num_samples

    def is_images(self, i: int) -> bool:
        """Whether example ``i`` is independent images rather than a clip."""
        share = self.options.image_fraction
        return share > 0 and np.random.default_rng(example_seed(self.seed, i, 1)).random() < share

    def draw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(frames (F, size, size) in [0, 1], the digits' classes (n,), their velocities (n, 2) in pixels per frame
        as (rows, columns), None for an images example) of example ``i``."""
        o = self.options
        images, classes = _digits(o.digit_size)
        rng = np.random.default_rng(example_seed(self.seed, i))
        which = rng.integers(len(images), size=o.digits)
        span = o.size - o.digit_size
        if self.is_images(i):  # each frame: other samples of the same classes, at random places
            samples = np.stack([rng.choice(np.flatnonzero(classes == c), size=o.frames) for c in classes[which]], 1)
            positions = rng.uniform(0, span, size=(o.frames, o.digits, 2))
            frames = np.stack([render(images[s], p[None], o.size)[0] for s, p in zip(samples, positions)])
            return frames, classes[which], None
        start = rng.uniform(0, span, size=(o.digits, 2))
        angle = rng.uniform(0, 2 * np.pi, size=o.digits)
        speed = rng.uniform(*o.speed, size=o.digits)
        velocity = speed[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=1)  # (n, 2) rows, columns
        frames = render(images[which], bounce(start, velocity, o.frames, span), o.size, o.subpixel)
        return frames, classes[which], velocity

    def __getitem__(self, i: int) -> dict:
        frames, classes, velocity = self.draw(int(i))
        x = torch.from_numpy(frames)[None] * 2 - 1  # (F, H, W) -> (1, F, H, W) in [-1, 1]
        label = int("".join(map(str, classes)))
        cond = {"class_labels": torch.tensor(label, dtype=torch.long), "images": torch.tensor(velocity is None)}
        if self.options.captions:
            cond["caption_ids"] = encode_bytes([caption(classes, velocity)], self.options.caption_length)[0]
        return {"x": x, "cond": cond}


@register_dataset("moving_digits", MovingDigitsOptions)
def moving_digits(options: MovingDigitsOptions, seed: int) -> MovingDigits:
    """``num_samples`` clips of ``digits`` bouncing digits, labelled by their classes."""
    return MovingDigits(options, seed)
