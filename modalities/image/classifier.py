"""A noise-aware image classifier for classifier guidance (Dhariwal & Nichol 2021, sec. 4): the encoder half
of the U-Net (input, encoder levels, middle block) and a pooled head, p_phi(y | x_sigma). It trains with its
own recipe (``objective.task = "classify"``: cross-entropy on noised images, ``core.objectives``) and guides
any image model of the same size and data range: ``polydiff sample MODEL --classifier DIR``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...recipes.config import setting
from ...registry import BackboneSpec, register_backbone
from ..nn.layers import group_norm
from ..nn.unet import Conditioning
from .unet import UNetSizeOptions, build_unet


@dataclass(frozen=True)
class UNetClassifierOptions(UNetSizeOptions):
    """Options of the ``unet_classifier`` backbone (the U-Net's size keys, and the classes)."""

    num_classes: int = setting(10, gt=0, le=10**6, doc="classes the classifier tells apart")


@register_backbone("unet_classifier", UNetClassifierOptions, example_shape=(3, 16, 16), output="logits")
class UNetClassifier(nn.Module):
    """F(x_in, c_noise, cond) -> logits (B, num_classes): the U-Net encoder, then norm, SiLU, mean over
    positions and a linear layer (ADM's encoder classifier, with mean instead of attention pooling)."""

    def __init__(self, options: UNetClassifierOptions, spec: BackboneSpec):
        super().__init__()
        self.num_classes, self.null_cond, self.out_factor = options.num_classes, {}, 1
        self.required_cond = ("class_labels",)  # the targets: the loss takes them, the network never sees them
        self.unet = build_unet(options, spec, decoder=False)
        ch = self.unet.trunk_channels
        self.head = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Flatten(2))
        self.logits = nn.Linear(ch, options.num_classes)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond) -> torch.Tensor:
        h, _ = self.unet.encode(x_in, Conditioning(self.unet.embed(c_noise)))
        return self.logits(self.head(h).mean(-1))  # (B, C, N) -> (B, C) -> (B, K)

    def fsdp_units(self) -> list[nn.Module]:
        return self.unet.fsdp_units()
