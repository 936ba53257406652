"""A residual MLP backbone for vector data (the toy recipe): F(x_in, c_noise, cond) -> out."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .embeddings import FourierEmbedding


class ResidualBlock(nn.Module):
    """LayerNorm -> Linear -> SiLU -> Linear with the noise embedding added in between (pre-norm residual)."""

    def __init__(self, width: int, embed_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.emb = nn.Linear(embed_dim, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h)) + self.emb(emb)))


class MLPBackbone(nn.Module):
    """Residual MLP on (B, dims) inputs with a Fourier noise embedding and optional class labels
    (``cond["class_labels"]``, the extra index ``num_classes`` being the null label for guidance, see
    ``null_cond``). ``out_factor`` 2 doubles the output for a learned variance (``Precond(learned_variance)``)."""

    def __init__(self, dims: int = 2, hidden: int = 128, depth: int = 3, embed_dim: int = 64, num_classes: int = 0,
                 out_factor: int = 1):
        super().__init__()
        self.null_cond = {"class_labels": num_classes} if num_classes else {}
        self.embed = nn.Sequential(FourierEmbedding(embed_dim), nn.Linear(embed_dim, embed_dim), nn.SiLU())
        self.classes = nn.Embedding(num_classes + 1, embed_dim) if num_classes else None
        self.inp = nn.Linear(dims, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, embed_dim) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dims * out_factor))

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: Mapping[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embed(c_noise)
        if self.classes is not None and "class_labels" in cond:
            emb = emb + self.classes(cond["class_labels"])
        h = self.inp(x_in)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
