"""Attention over flattened positions, for any number of example dimensions (torch's
scaled_dot_product_attention, which picks a fused kernel where one exists).

``SelfAttention``: every position of (B, C, *S) attends to every other (ADM's AttentionBlock; Vaswani et al.
2017), ``CrossAttention``: every position attends to a sequence of condition tokens (B, L, D) with a mask
(Imagen's text cross-attention; Saharia et al. 2022, App. B). Both are pre-norm residual branches whose
output projection starts at zero, so a new block begins as the identity.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from .layers import group_norm, zero_init


def heads_for(channels: int, head_channels: int) -> int:
    """Number of heads of ``head_channels`` each (one head when the channels are fewer)."""
    if channels <= head_channels:
        return 1
    if channels % head_channels:
        raise ValueError(f"{channels} channels do not split into heads of {head_channels}")
    return channels // head_channels


class SelfAttention(nn.Module):
    """x + proj(attention(norm(x))) over all positions of x (B, C, *S)."""

    def __init__(self, channels: int, head_channels: int = 64):
        super().__init__()
        self.heads = heads_for(channels, head_channels)
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        tokens = rearrange(self.norm(x), "b c ... -> b (...) c")  # (B, N, C), N = prod(S)
        q, k, v = rearrange(self.qkv(tokens), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)")
        out = rearrange(self.proj(out), "b n c -> b c n").reshape(b, c, *spatial)  # back to (B, C, *S)
        return x + out


class CrossAttention(nn.Module):
    """x + proj(attention(norm(x), context)): positions of x (B, C, *S) attend to tokens (B, L, D); ``mask``
    (B, L) marks the real tokens (every row needs at least one)."""

    def __init__(self, channels: int, context_dim: int, head_channels: int = 64):
        super().__init__()
        self.heads = heads_for(channels, head_channels)
        self.norm = group_norm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        q = rearrange(self.q(rearrange(self.norm(x), "b c ... -> b (...) c")), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(self.kv(context.to(q.dtype)), "b l (two h d) -> two b h l d", two=2, h=self.heads)
        bias = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L): True = attend
        out = rearrange(F.scaled_dot_product_attention(q, k, v, attn_mask=bias), "b h n d -> b n (h d)")
        out = rearrange(self.proj(out), "b n c -> b c n").reshape(b, c, *spatial)  # back to (B, C, *S)
        return x + out
