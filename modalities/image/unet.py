"""The image backbone: a 2-D U-Net (``modalities.nn.unet``) with the conditioning images need, and the
sizes people use as presets.

Conditions (``cond``), all optional:
    class_labels (B,) long          a class; the extra index num_classes is the learned null class (guidance)
    caption_ids  (B, L) long        UTF-8 byte ids of a caption, for the built-in byte encoder (text = "bytes")
    text, text_mask (B, L, D), (B, L)  precomputed tokens of a frozen encoder (text = "embeddings")
    lowres (B, C', h, w), aug_level (B,)  a super-resolution stage's input and its augmentation level
A caption that is empty (all padding, or an all-False mask) is replaced by learned null tokens, which is what
condition dropout trains and guidance's unconditional branch uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...recipes.config import Config, ConfigError, setting
from ...registry import BackboneSpec, register_backbone
from ..nn.captions import CaptionConditioned, CaptionOptions
from ..nn.unet import Conditioning, UNet, UNetShape

# Named sizes: option values that replace the defaults below for every key left unset.
PRESETS: dict[str, dict] = {
    # Ho et al. 2020 (DDPM), CIFAR-10: 35.7M parameters.
    "cifar10": dict(channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=(2,), attention_resolutions=(16,),
                    head_channels=256, dropout=0.1, scale_shift=False, resblock_updown=False, skip_scale=1.0),
    # Dhariwal & Nichol 2021 (ADM), ImageNet 64x64, class-conditional, learned variance: 296M parameters.
    "imagenet64": dict(channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=(3,), attention_resolutions=(32, 16, 8),
                       head_channels=64, dropout=0.1, scale_shift=True, resblock_updown=True, skip_scale=1.0),
    # Imagen-like 64x64 base (Saharia et al. 2022, App. B; far smaller than their 2B model).
    "imagen_base64": dict(channels=256, channel_mult=(1, 2, 3, 4), num_res_blocks=(3,), attention_resolutions=(32, 16, 8),
                          head_channels=64, dropout=0.0, scale_shift=True, efficient=True, skip_scale=2**-0.5),
    # Imagen's Efficient U-Net for 64 -> 256 super-resolution (App. B.1: more blocks at low resolution).
    "imagen_sr256": dict(channels=128, channel_mult=(1, 2, 4, 8), num_res_blocks=(2, 4, 8, 8), attention_resolutions=(32,),
                         head_channels=64, dropout=0.0, scale_shift=True, efficient=True, skip_scale=2**-0.5),
    # Small enough to train on two CPU cores in minutes (8x8 digits, 32x32 glyphs).
    "tiny": dict(channels=32, channel_mult=(1, 2), num_res_blocks=(1,), attention_resolutions=(4,), head_channels=32),
}
DEFAULTS = dict(channels=64, channel_mult=(1, 2, 2), num_res_blocks=(2,), attention_resolutions=(8,), head_channels=64,
                dropout=0.0, scale_shift=True, resblock_updown=False, efficient=False, skip_scale=2**-0.5)


@dataclass(frozen=True)
class UNetSizeOptions(Config):
    """The size keys of an image U-Net; keys left "none" come from the preset (or the defaults)."""

    preset: str = setting("none", choices=("none", *PRESETS), doc="a named size; the keys set here override it")
    channels: int | None = setting(None, gt=0, le=4096, doc="channels of the first level")
    channel_mult: tuple[int, ...] | None = setting(None, gt=0, le=64, doc="channel multiplier of each level")
    num_res_blocks: tuple[int, ...] | None = setting(None, ge=1, le=64, doc="residual blocks per level (one value: "
                                                                          "every level; Efficient U-Net: more at low "
                                                                          "resolution)")
    attention_resolutions: tuple[int, ...] | None = setting(None, gt=0, doc="resolutions (e.g. 16 for 16x16) with "
                                                                           "self-attention")
    head_channels: int | None = setting(None, gt=0, doc="channels per attention head")
    dropout: float | None = setting(None, ge=0, lt=1, doc="dropout in the residual blocks")
    scale_shift: bool | None = setting(None, doc="scale-shift (AdaGN) conditioning of the residual blocks (ADM)")
    resblock_updown: bool | None = setting(None, doc="BigGAN-style residual blocks for up / down-sampling")
    efficient: bool | None = setting(None, doc="Imagen's Efficient U-Net: resample before (encoder) and after "
                                               "(decoder) each level's convolutions")
    skip_scale: float | None = setting(None, gt=0, le=1, doc="residual blocks' output scale (1/sqrt(2) keeps the "
                                                             "variance)")
    gradient_checkpointing: bool = setting(False, doc="recompute each block's activations in the backward pass")

    def resolved(self) -> dict:
        """Every size key: set here, else from the preset, else the default."""
        base = {**DEFAULTS, **PRESETS.get(self.preset, {})}
        return {k: getattr(self, k) if getattr(self, k) is not None else base[k] for k in DEFAULTS}


@dataclass(frozen=True)
class UNetOptions(CaptionOptions, UNetSizeOptions):
    """Options of the ``unet`` image backbone. Size keys left "none" come from the preset (or the defaults)."""

    num_classes: int = setting(0, ge=0, le=10**6, doc="class labels for conditioning; 0 = none")
    lowres_channels: int = setting(0, ge=0, le=64, doc="a super-resolution stage: channels of the low-resolution "
                                                       "image it is conditioned on (0: a base stage)")
    channels_last: bool = setting(False, doc="NHWC memory layout (faster convolutions on GPUs with tensor cores)")
    compile: bool = setting(False, doc="torch.compile the U-Net (slow first step, faster after)")


def unet_shape(options: UNetSizeOptions, spec: BackboneSpec, **extra) -> UNetShape:
    """The U-Net for examples (C, H, W) under these options; ``extra`` sets or overrides ``UNetShape`` fields."""
    channels, height, width = spec.example_shape
    r = options.resolved()
    levels = len(r["channel_mult"])
    blocks = tuple(r["num_res_blocks"]) * (levels if len(r["num_res_blocks"]) == 1 else 1)
    if len(blocks) != levels:
        raise ConfigError(("model", "options", "num_res_blocks"), f"{{key}} has {len(blocks)} entries for {levels} "
                                                                  f"levels (model.options.channel_mult)")
    downsamplings = levels if r["efficient"] else levels - 1
    if min(height, width) % 2**downsamplings:
        raise ConfigError(("model", "options", "channel_mult"), f"{{key}} has {levels} levels: {downsamplings} "
                                                                f"halvings do not divide {height}x{width} images")
    fields = dict(
        dims=2, in_channels=channels, out_channels=channels * spec.out_factor,
        channels=r["channels"], channel_mult=tuple(r["channel_mult"]), num_res_blocks=blocks,
        attention_factors=tuple(max(1, height // res) for res in r["attention_resolutions"]),
        head_channels=r["head_channels"], dropout=r["dropout"], scale_shift=r["scale_shift"],
        resblock_updown=r["resblock_updown"], efficient=r["efficient"], skip_scale=r["skip_scale"],
        checkpointing=options.gradient_checkpointing,
    )
    return UNetShape(**{**fields, **extra})


@register_backbone("unet", UNetOptions, example_shape=(3, 16, 16), conditional={"num_classes": 3, "text": "bytes",
                                                                               "text_dim": 32, "text_length": 8})
class ImageUNet(CaptionConditioned):
    """F(x_in, c_noise, cond) for images (B, C, H, W), see the module docstring for ``cond``."""

    def __init__(self, options: UNetOptions, spec: BackboneSpec):
        super().__init__()
        self.options, self.out_factor = options, spec.out_factor
        self.unet = build_unet(options, spec, in_channels=spec.example_shape[0] + options.lowres_channels,
                               num_classes=options.num_classes, aug_level=options.lowres_channels > 0,
                               context_dim=options.context_dim)
        self.null_cond, self.required_cond = {}, ()
        if options.num_classes:
            self.null_cond["class_labels"] = options.num_classes
        self.init_captions(options)
        if options.lowres_channels:
            self.required_cond = ("lowres", "aug_level")
        if options.channels_last:
            self.to(memory_format=torch.channels_last)
        self._run = torch.compile(self.unet.run) if options.compile else self.unet.run

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond) -> torch.Tensor:
        x = x_in
        if self.options.lowres_channels:
            lowres = nn.functional.interpolate(cond["lowres"].to(x.dtype), size=x.shape[2:], mode="bilinear",
                                               align_corners=False, antialias=False)
            x = torch.cat([x, lowres], dim=1)  # (B, C + C_lowres, H, W)
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        tokens, mask = self.caption_tokens(cond, x.shape[0], x.device)
        emb = self.unet.embed(c_noise, cond.get("class_labels"), cond.get("aug_level"), tokens, mask)
        return self._run(x, Conditioning(emb, tokens, mask))

    def fsdp_units(self) -> list[nn.Module]:
        return self.unet.fsdp_units()


def build_unet(options: UNetSizeOptions, spec: BackboneSpec, **extra) -> UNet:
    """The U-Net of these options for ``spec``'s examples; sizes that do not fit together are a ConfigError."""
    if len(spec.example_shape) != 3:
        raise ConfigError(("model", "options"), f"the image U-Net takes (C, H, W) examples, got {spec.example_shape}")
    try:
        return UNet(unet_shape(options, spec, **extra))
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(("model", "options"), f"{{key}} do not fit {spec.example_shape} images: {err}") from None


def describe(options: UNetOptions) -> str:
    """'preset cifar10' or 'custom' (for ``polydiff info``)."""
    return f"preset {options.preset}" if options.preset != "none" else "custom"

