"""Noise-level embeddings: the backbone's view of c_noise."""

from __future__ import annotations

import math

import torch
from torch import nn


class FourierEmbedding(nn.Module):
    """Sinusoidal features of a (B,) input at geometric frequencies (Vaswani et al. 2017; DDPM's timestep
    embedding): (B,) -> (B, dim). ``max_period`` sets the slowest frequency."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = [math.exp(-math.log(max_period) * i / half) for i in range(half)]  # plain floats: cheap on meta too
        self.register_buffer("freqs", torch.tensor(freqs, dtype=torch.float32), persistent=False)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise.float()[:, None] * self.freqs[None, :]  # (B, dim/2)
        return torch.cat([angles.cos(), angles.sin()], dim=1)  # (B, dim)
