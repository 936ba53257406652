"""The residual block of ADM-style U-Nets, for any number of example dimensions.

    h = conv(act(norm(x)))                         (optionally resampled between the activation and the conv:
                                                    BigGAN-style up / down blocks, Brock et al. 2019)
    h = norm(h) * (1 + scale) + shift              scale-shift from the embedding ("AdaGN", Dhariwal & Nichol
        or norm(h + proj(emb))                     2021, sec. 3); else the embedding is added (Ho et al. 2020)
    h = conv(dropout(act(h)))                      the last convolution starts at zero
    out = (skip(x) + h) * skip_scale               1/sqrt(2) keeps the variance (Song et al. 2021, NCSN++;
                                                   Karras et al. 2022, EDM); 1 as in DDPM / ADM
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...core.utils import append_dims
from .layers import Downsample, Upsample, conv_nd, group_norm, zero_init


class ResBlock(nn.Module):
    """(x (B, C_in, *S), emb (B, E)) -> (B, C_out, *S'), S' resampled by ``resample`` ('up' / 'down' / None)."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0,
                 scale_shift: bool = True, resample: str | None = None, factor: int | Sequence[int] = 2,
                 skip_scale: float = 1.0):
        super().__init__()
        self.scale_shift, self.skip_scale = scale_shift, skip_scale
        self.norm1, self.act = group_norm(in_channels), nn.SiLU()
        if resample == "up":
            self.h_resample = Upsample(dims, in_channels, use_conv=False, factor=factor)
            self.x_resample = Upsample(dims, in_channels, use_conv=False, factor=factor)
        elif resample == "down":
            self.h_resample = Downsample(dims, in_channels, use_conv=False, factor=factor)
            self.x_resample = Downsample(dims, in_channels, use_conv=False, factor=factor)
        else:
            self.h_resample = self.x_resample = nn.Identity()
        self.conv1 = conv_nd(dims, in_channels, out_channels, 3)
        self.emb = nn.Linear(emb_dim, 2 * out_channels if scale_shift else out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(conv_nd(dims, out_channels, out_channels, 3))
        self.skip = nn.Identity() if in_channels == out_channels else conv_nd(dims, in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.h_resample(self.act(self.norm1(x))))
        e = append_dims(self.emb(self.act(emb)).to(h.dtype), h.ndim)  # (B, C or 2C, 1, ..., 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(self.act(h)))
        return (self.skip(self.x_resample(x)) + h) * self.skip_scale
