"""The video backbone: the factorized space-time U-Net of Video Diffusion Models (Ho et al. 2022, sec. 3), built
from the image U-Net (``modalities.nn.unet``) run on the frames folded into the batch, (B, C, F, H, W) ->
(B * F, C, H, W): every convolution and spatial attention is per frame, and each block ends with attention over
the frames at each position (``nn.temporal.TemporalAttention``, with a learned relative position bias, so any clip
length works) and optionally a temporal convolution initialised to the identity. Nothing 2-D is written twice.

Conditions (``cond``), all optional:
    class_labels (B,) long        a class; the extra index num_classes is the learned null class (guidance)
    caption_ids / text, text_mask  a caption per clip, as the image U-Net takes it (``nn.captions``); every frame
                                  cross-attends to its clip's tokens
    images       (B,) bool        the clip is F independent images: its frames do not see each other (joint
                                  image-video training, Ho et al. 2022, sec. 3); default False
    known, known_mask (B, C, F, H, W), (B, F)   frame conditioning (``frame_conditioning``): known frames and which
                                  are known, given to the network as extra input channels; no known frame = none
    lowres, aug_level (B, C', F, h, w), (B,)   a spatial super-resolution stage's input, upsampled per frame, and
                                  its augmentation level: the image cascade's code (``lowres_augment`` in training,
                                  ``pipeline.cascade`` at sampling) works on clips unchanged
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ...core.cascade import resize
from ...recipes.config import ConfigError, setting
from ...registry import BackboneSpec, register_backbone
from ..image.unet import UNetSizeOptions, unet_shape
from ..nn.captions import CaptionConditioned, CaptionOptions
from ..nn.temporal import TemporalAttention, TemporalConv
from ..nn.unet import Conditioning, UNet


@dataclass(frozen=True)
class VideoUNetOptions(CaptionOptions, UNetSizeOptions):
    """Options of the ``video_unet`` backbone: the image U-Net's size and caption keys (per frame), and the temporal
    layers."""

    num_classes: int = setting(0, ge=0, le=10**6, doc="class labels for conditioning; 0 = none")
    temporal_head_channels: int = setting(64, gt=0, le=4096, doc="channels per head of the temporal attention")
    max_distance: int = setting(32, ge=1, le=4096, doc="frame distances beyond this share one learned bias")
    temporal_conv: bool = setting(False, doc="a 3-tap temporal convolution (identity at start) after each "
                                             "temporal attention")
    frame_conditioning: bool = setting(False, doc="known frames and their mask as extra input channels "
                                                  "(cond known / known_mask, e.g. from the frame_masks transform)")
    lowres_channels: int = setting(0, ge=0, le=64, doc="a spatial super-resolution stage: channels of the "
                                                       "low-resolution clip it is conditioned on (0: a base stage)")


class FactorizedUNet(UNet):
    """The shared U-Net with temporal layers after each block's spatial layers."""

    def __init__(self, shape, temporal_head_channels: int, max_distance: int, temporal_conv: bool):
        self.temporal = (temporal_head_channels, max_distance, temporal_conv)
        super().__init__(shape)

    def extra_layers(self, channels: int, factor: int) -> list[nn.Module]:
        head_channels, max_distance, conv = self.temporal
        layers: list[nn.Module] = [TemporalAttention(channels, min(head_channels, channels), max_distance)]
        return layers + ([TemporalConv(channels)] if conv else [])


@register_backbone("video_unet", VideoUNetOptions, example_shape=(1, 3, 8, 8),
                   conditional={"num_classes": 3, "frame_conditioning": True, "text": "bytes", "text_dim": 32,
                                "text_length": 8})
class VideoUNet(CaptionConditioned):
    """F(x_in (B, C, F, H, W), c_noise (B,), cond) -> (B, C * out_factor, F, H, W), see the module docstring."""

    def __init__(self, options: VideoUNetOptions, spec: BackboneSpec):
        super().__init__()
        if len(spec.example_shape) != 4:
            raise ConfigError(("model", "options"), f"the video U-Net takes (C, F, H, W) clips, got "
                                                    f"{spec.example_shape}")
        channels, _, height, width = spec.example_shape
        self.options, self.out_factor = options, spec.out_factor
        frame = BackboneSpec((channels, height, width), spec.out_factor)
        extra_in = (channels + 1 if options.frame_conditioning else 0) + options.lowres_channels
        try:
            shape = unet_shape(options, frame, in_channels=channels + extra_in, num_classes=options.num_classes,
                               aug_level=options.lowres_channels > 0, context_dim=options.context_dim)
            self.unet = FactorizedUNet(shape, options.temporal_head_channels, options.max_distance,
                                       options.temporal_conv)
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(("model", "options"), f"{{key}} do not fit {spec.example_shape} clips: {err}") from None
        self.null_cond, self.required_cond = {}, ()
        if options.num_classes:
            self.null_cond["class_labels"] = options.num_classes
        self.init_captions(options)
        if options.frame_conditioning:
            self.null_cond["known_mask"] = False  # no known frame; "known" is then ignored
        if options.lowres_channels:
            self.required_cond = ("lowres", "aug_level")

    def _inputs(self, x: torch.Tensor, cond) -> torch.Tensor:
        """x with the low-resolution clip (upsampled per frame) and the known frames and their mask as channels,
        as the model takes them."""
        if self.options.lowres_channels:
            x = torch.cat([x, resize(cond["lowres"].to(x.dtype), x.shape[-2:])], dim=1)  # (B, C + C', F, H, W)
        if not self.options.frame_conditioning:
            return x
        batch, _, frames, height, width = x.shape
        clip = x[:, : x.shape[1] - self.options.lowres_channels]  # the noisy clip itself
        mask = cond.get("known_mask")
        mask = torch.zeros(batch, frames, dtype=torch.bool, device=x.device) if mask is None else mask.to(torch.bool)
        mask = mask[:, None].expand(batch, frames) if mask.ndim == 1 else mask  # a per-sample null (B,) -> (B, F)
        known = cond.get("known")
        known = torch.zeros_like(clip) if known is None else known.to(x.dtype)
        m = mask[:, None, :, None, None].to(x.dtype)  # (B, 1, F, 1, 1)
        return torch.cat([x, known * m, m.expand(batch, 1, frames, height, width)], dim=1)  # (B, 2C + 1, F, H, W)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond) -> torch.Tensor:
        frames = x_in.shape[2]
        h = rearrange(self._inputs(x_in, cond), "b c f y x -> (b f) c y x")  # frames into the batch
        tokens, mask = self.caption_tokens(cond, x_in.shape[0], x_in.device)  # (B, L, D), (B, L) or None
        emb = self.unet.embed(c_noise, cond.get("class_labels"), cond.get("aug_level"), tokens, mask)
        emb = emb.repeat_interleave(frames, dim=0)  # (B, E) -> (B * F, E): every frame of a clip
        if tokens is not None:  # every frame cross-attends to its clip's caption: (B, L, ...) -> (B * F, L, ...)
            tokens, mask = tokens.repeat_interleave(frames, dim=0), mask.repeat_interleave(frames, dim=0)
        out = self.unet.run(h, Conditioning(emb, tokens, mask, extra={"frames": frames, "images": cond.get("images")}))
        return rearrange(out, "(b f) c y x -> b c f y x", f=frames)

    def fsdp_units(self) -> list[nn.Module]:
        return self.unet.fsdp_units()

