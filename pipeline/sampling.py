"""Drawing samples from a denoiser: noise at the top of the grid, one generator per sample, a core sampler."""

from __future__ import annotations

import torch

from ..core.samplers import get_sampler
from ..core.utils import randn_like, seeded_generators


@torch.no_grad()
def draw_samples(denoiser, sigmas: torch.Tensor, example_shape: tuple[int, ...], num: int, sampler: str, seed: int,
                 cond: dict | None = None, callback=None) -> torch.Tensor:
    """``num`` samples (num, *example_shape) from noise at ``sigmas[0]``, one generator per sample (seed, seed+1,
    ...) on the grid's device, so a batch equals its samples drawn one at a time (EDM's per-sample RNG). The
    same seed gives different numbers on a CPU and a GPU (their generators differ)."""
    generators = seeded_generators(range(seed, seed + num), device=sigmas.device)
    x = sigmas[0] * randn_like(torch.empty(num, *example_shape, device=sigmas.device), generators)
    return get_sampler(sampler)(denoiser, x, sigmas, cond=cond, generator=generators, callback=callback)
