"""Backbones by recipe name: each builder takes the recipe's typed options and returns an
``nn.Module`` F(x_in, c_noise, cond) -> out (``out_channels_factor`` 2 when the variance is learned)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..core.utils import lookup
from .nn.mlp import MLPBackbone


def _mlp(options, out_factor: int) -> nn.Module:
    return MLPBackbone(options.dims, options.hidden, options.depth, options.embed_dim, options.num_classes, out_factor)


BACKBONES: dict[str, Callable[..., nn.Module]] = {"mlp": _mlp}


def build_backbone(name: str, options, out_factor: int = 1) -> nn.Module:
    """The backbone ``name`` built from its options."""
    return lookup(BACKBONES, name, "model")(options, out_factor)
