"""Layers that mix the frames of a clip, for U-Nets that run their 2-D layers on frames folded into the batch
((B * F, C, H, W)): the factorized space-time U-Net of Video Diffusion Models (Ho et al. 2022, sec. 3: per-frame
spatial layers, then attention over time at each spatial position).

Both read the clip length F and the per-clip ``images`` flag (B,) from ``Conditioning.extra``. A clip flagged as
images holds F independent pictures (joint image-video training, Ho et al. 2022, sec. 3): its frames must not see
each other, so temporal attention lets each attend only to itself and the temporal convolution sees each alone;
changing one of its frames changes no other output.

``TemporalAttention``: pre-norm multi-head attention over frames with a learned relative position bias per head
(a bias for each frame distance -R..R, clipped beyond: Shaw et al. 2018, the T5 form of Raffel et al. 2020), so any
clip length works; output projection at zero, so it starts as the identity.
``TemporalConv``: a 3-tap convolution over frames initialised to the identity (Make-A-Video's pseudo-3-D
convolution, Singer et al. 2022), so a network warm-started from images begins unchanged.

So an image clip's frames come out exactly as each frame would alone, as a clip of one frame.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from .attention import heads_for
from .layers import group_norm, zero_init
from .unet import Conditioning


def frame_count(h: torch.Tensor, c: Conditioning) -> int:
    """F, the frames of each clip folded into ``h``'s batch (B * F, C, ...)."""
    frames = int(c.extra["frames"])
    if h.shape[0] % frames:
        raise ValueError(f"a batch of {h.shape[0]} frames is not whole clips of {frames}")
    return frames


def image_clips(c: Conditioning, clips: int, device) -> torch.Tensor:
    """(B,) bool: which clips are independent images (all False when the batch says nothing)."""
    images = c.extra.get("images")
    return torch.zeros(clips, dtype=torch.bool, device=device) if images is None else images.to(device, torch.bool)


class TemporalAttention(nn.Module):
    """h + proj(attention over frames (norm(h))) for h (B * F, C, H, W)."""

    takes_conditioning = True

    def __init__(self, channels: int, head_channels: int = 64, max_distance: int = 32):
        super().__init__()
        self.heads, self.max_distance = heads_for(channels, head_channels), max_distance
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))
        self.distance_bias = nn.Embedding(2 * max_distance + 1, self.heads)
        nn.init.zeros_(self.distance_bias.weight)

    def bias(self, frames: int, images: torch.Tensor, positions: int, dtype: torch.dtype) -> torch.Tensor:
        """The additive attention bias: the learned bias of each frame distance j - i, (heads, F, F); when some clips
        are images, also -inf between their different frames, per row of the attention batch (B * N, heads, F, F)
        for ``positions`` = N spatial positions per clip."""
        steps = torch.arange(frames, device=images.device)
        distance = (steps[None, :] - steps[:, None]).clamp(-self.max_distance, self.max_distance)
        bias = self.distance_bias(distance + self.max_distance).permute(2, 0, 1).to(dtype)  # (F, F, h) -> (h, F, F)
        if not images.any():
            return bias
        apart = images[:, None, None] & (distance != 0)  # (B, F, F)
        blocked = torch.zeros(apart.shape, dtype=dtype, device=images.device).masked_fill(apart, float("-inf"))
        return (bias[None] + blocked[:, None]).repeat_interleave(positions, dim=0)  # (B * N, heads, F, F)

    def forward(self, h: torch.Tensor, c: Conditioning) -> torch.Tensor:
        frames = frame_count(h, c)
        clips, positions = h.shape[0] // frames, h[0, 0].numel()
        tokens = rearrange(self.norm(h), "(b f) c ... -> (b ...) f c", f=frames)  # (B * N, F, C), N = H * W
        q, k, v = rearrange(self.qkv(tokens), "m f (three h d) -> three m h f d", three=3, h=self.heads)
        bias = self.bias(frames, image_clips(c, clips, h.device), positions, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B * N, heads, F, d): 4-D, fused kernels
        out = self.proj(rearrange(out, "(b n) h f d -> b f n (h d)", b=clips))  # (B, F, N, C)
        return h + rearrange(out, "b f n c -> (b f) c n").reshape(h.shape)  # back to (B * F, C, H, W)


class TemporalConv(nn.Module):
    """A 3-tap convolution over the frames of h (B * F, C, H, W) at each position, the identity at start; the frames
    of image clips each alone (zero padding: the centre tap)."""

    takes_conditioning = True

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, kernel // 2].copy_(torch.eye(channels))
            self.conv.bias.zero_()

    def forward(self, h: torch.Tensor, c: Conditioning) -> torch.Tensor:
        frames = frame_count(h, c)
        clips, _, height, width = h.shape[0] // frames, *h.shape[1:]
        x = rearrange(h, "(b f) c y x -> (b y x) c f", f=frames)  # (B * H * W, C, F)
        y = self.conv(x)
        images = image_clips(c, clips, h.device)
        if images.any():  # image clips: each frame alone, as a clip of one frame (zero padding: the centre tap)
            centre = self.conv.kernel_size[0] // 2
            alone = F.conv1d(x, self.conv.weight[:, :, centre:centre + 1], self.conv.bias)
            y = torch.where(images.repeat_interleave(height * width)[:, None, None], alone, y)  # rows (b y x)
        return rearrange(y, "(b y x) c f -> (b f) c y x", b=clips, y=height, x=width)
