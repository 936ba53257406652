"""A residual MLP backbone for vector data (the toy modality): F(x_in, c_noise, cond) -> out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import UserError
from ...recipes.config import Config, ConfigError, setting
from ...registry import BackboneSpec, register_backbone
from ..nn.embeddings import FourierEmbedding


@dataclass(frozen=True)
class MLPOptions(Config):
    """Options of the ``mlp`` backbone; the data dimension D comes from the data set."""

    hidden: int = setting(128, gt=0, le=65536, doc="width of the residual blocks")
    depth: int = setting(3, ge=1, le=1024, doc="number of residual blocks")
    embed_dim: int = setting(64, gt=0, le=65536, doc="size of the Fourier noise embedding (even)")
    num_classes: int = setting(0, ge=0, le=10**6, doc="class labels for conditioning; 0 = unconditional")

    def check(self) -> None:
        if self.embed_dim % 2:
            raise ConfigError(("embed_dim",), f"{{key}} must be even (cos and sin halves), got {self.embed_dim}")


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


@register_backbone("mlp", MLPOptions, example_shape=(2,), conditional={"num_classes": 3})
class MLPBackbone(nn.Module):
    """Residual MLP on (B, D) inputs with a Fourier noise embedding and optional class labels
    (``cond["class_labels"]``; the extra index ``num_classes`` is the learned null label, see ``null_cond``).
    ``spec.out_factor`` 2 doubles the output for a learned variance (``Precond(learned_variance=True)``)."""

    def __init__(self, options: MLPOptions, spec: BackboneSpec):
        super().__init__()
        if len(spec.example_shape) != 1:
            raise UserError(f"backbone 'mlp' takes vectors (D,), but the examples have shape {spec.example_shape}")
        dims, embed_dim, classes = spec.example_shape[0], options.embed_dim, options.num_classes
        self.out_factor = spec.out_factor
        self.null_cond = {"class_labels": classes} if classes else {}
        self.embed = nn.Sequential(FourierEmbedding(embed_dim), nn.Linear(embed_dim, embed_dim), nn.SiLU())
        self.classes = nn.Embedding(classes + 1, embed_dim) if classes else None
        self.inp = nn.Linear(dims, options.hidden)
        self.blocks = nn.ModuleList(ResidualBlock(options.hidden, embed_dim) for _ in range(options.depth))
        self.out = nn.Sequential(nn.LayerNorm(options.hidden), nn.Linear(options.hidden, dims * spec.out_factor))

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: Mapping[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embed(c_noise)
        if self.classes is not None:
            emb = emb + self.classes(cond["class_labels"])
        h = self.inp(x_in)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
