"""The 2-D swiss roll, the toy data set of the demo and the toy recipe."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..recipes.config import Config, setting
from ..registry import register_dataset
from .examples import TensorExamples


def swiss_roll(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` points (n, 2) on a swiss roll, scaled to about unit standard deviation per coordinate.

    t ~ U(1.5 pi, 4.5 pi), point = t (cos t, sin t) / 8 + noise (the classic 2-D slice of scikit-learn's
    ``make_swiss_roll``, rescaled so that sigma_data is close to 0.5 like EDM's image data).
    """
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    points = torch.stack([t * t.cos(), t * t.sin()], 1) / 8  # (n, 2)
    points = points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return points.float()


@dataclass(frozen=True)
class SwissRollOptions(Config):
    """Options of the ``swiss_roll`` data set: a fixed set of points drawn once from the seed."""

    num_samples: int = setting(20_000, gt=0, le=10**8, doc="points in the data set (train and validation together)")
    noise: float = setting(0.05, ge=0, doc="std of the Gaussian jitter added to each point")


@register_dataset("swiss_roll", SwissRollOptions)
def swiss_roll_dataset(options: SwissRollOptions, seed: int) -> TensorExamples:
    """The points, drawn once from ``seed``."""
    return TensorExamples(swiss_roll(options.num_samples, options.noise, torch.Generator().manual_seed(seed)))
