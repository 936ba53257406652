"""N-dimensional layers every modality's networks are built from: convolutions, group norm, resampling.

``dims`` is the number of example dimensions after the channel: 1 (audio, (C, T)), 2 (images, (C, H, W)),
3 (video, (C, F, H, W)). Resampling takes a factor per axis, so video can resample space and keep time,
``(1, 2, 2)``, with the same code that halves an image, ``(2, 2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def conv_nd(dims: int, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3, **kwargs) -> nn.Module:
    """A ``dims``-D convolution; an odd kernel gets 'same' padding unless ``padding`` is given."""
    if "padding" not in kwargs:
        sizes = [kernel_size] * dims if isinstance(kernel_size, int) else list(kernel_size)
        kwargs["padding"] = tuple(k // 2 for k in sizes)
    return _CONV[dims](in_channels, out_channels, kernel_size, **kwargs)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero the module's parameters (output layers of residual branches start as the identity; ADM / EDM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class GroupNorm32(nn.GroupNorm):
    """Group normalization computed in float32 whatever the autocast dtype (ADM's GroupNorm32): bf16 / fp16
    statistics over large groups lose too many digits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def group_norm(channels: int, groups: int = 32) -> GroupNorm32:
    """``groups`` groups, or fewer when the channels do not divide (small CPU models)."""
    while channels % groups:
        groups //= 2
    return GroupNorm32(groups, channels, eps=1e-6)


def _factors(dims: int, factor: int | Sequence[int]) -> tuple[int, ...]:
    return (factor,) * dims if isinstance(factor, int) else tuple(factor)


class Downsample(nn.Module):
    """Reduce each axis by its factor: a strided 3-kernel convolution (``use_conv``) or average pooling."""

    def __init__(self, dims: int, channels: int, out_channels: int | None = None, use_conv: bool = True,
                 factor: int | Sequence[int] = 2):
        super().__init__()
        stride = _factors(dims, factor)
        out_channels = out_channels or channels
        if use_conv:
            kernel = tuple(3 if s > 1 else 1 for s in stride)
            self.op = conv_nd(dims, channels, out_channels, kernel, stride=stride)
        else:
            if out_channels != channels:
                raise ValueError("pooling cannot change the number of channels")
            self.op = _POOL[dims](kernel_size=stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Enlarge each axis by its factor (nearest neighbour), then an optional 3-kernel convolution."""

    def __init__(self, dims: int, channels: int, out_channels: int | None = None, use_conv: bool = True,
                 factor: int | Sequence[int] = 2):
        super().__init__()
        self.factor = _factors(dims, factor)
        out_channels = out_channels or channels
        self.conv = conv_nd(dims, channels, out_channels, 3) if use_conv else None
        if not use_conv and out_channels != channels:
            raise ValueError("upsampling without a convolution cannot change the number of channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = [n * f for n, f in zip(x.shape[2:], self.factor)]
        x = nn.functional.interpolate(x, size=size, mode="nearest")
        return self.conv(x) if self.conv is not None else x
