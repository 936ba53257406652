"""The 2-D swiss roll, the toy data set of the demo and the toy recipe."""

from __future__ import annotations

import math

import torch


def swiss_roll(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` points (n, 2) on a swiss roll, scaled to about unit standard deviation per coordinate.

    t ~ U(1.5 pi, 4.5 pi), point = t (cos t, sin t) / 8 + noise (the classic 2-D slice of scikit-learn's
    ``make_swiss_roll``, rescaled so that sigma_data is close to 0.5 like EDM's image data).
    """
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    points = torch.stack([t * t.cos(), t * t.sin()], 1) / 8  # (n, 2)
    points = points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return points.float()
