"""Caption conditioning shared by the U-Net backbones (images, video): the options, the trainable byte encoder or
precomputed frozen-encoder tokens, and the learned null caption of classifier-free guidance (Imagen, Saharia et
al. 2022: cross-attention to the tokens plus their pooled summary in the embedding, ``nn.unet``).

A backbone mixes in ``CaptionConditioned``, calls ``init_captions`` in its constructor (after ``null_cond``
exists) and ``caption_tokens`` in its forward pass; its parameters are ``text_encoder.*`` and ``null_text``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ...recipes.config import Config, ConfigError, setting
from .text import ByteEncoder


@dataclass(frozen=True)
class CaptionOptions(Config):
    """The caption keys of a backbone's options."""

    text: Literal["none", "bytes", "embeddings"] = setting("none", doc="caption conditioning: a trainable byte "
                                                                       "encoder, or precomputed frozen-encoder "
                                                                       "tokens (data.transforms text_embeddings)")
    text_dim: int = setting(128, gt=0, le=8192, doc="width of the caption tokens (the byte encoder's, or the "
                                                    "frozen encoder's)")
    text_length: int = setting(64, gt=0, le=1024, doc="caption tokens (bytes or encoder tokens) kept")
    text_layers: int = setting(2, ge=0, le=48, doc="Transformer layers of the byte encoder")

    def check(self) -> None:
        if self.text == "bytes" and self.text_dim % 4:
            raise ConfigError(("text_dim",), f"{{key}} must be a multiple of 4 (the byte encoder's heads), got "
                                             f"{self.text_dim}")

    @property
    def context_dim(self) -> int:
        """Width of the tokens the U-Net cross-attends to; 0 without captions."""
        return self.text_dim if self.text != "none" else 0


def fit_length(t: torch.Tensor, length: int, pad) -> torch.Tensor:
    """t (B, L, ...) cut or padded with ``pad`` along dim 1 to ``length``."""
    if t.shape[1] >= length:
        return t[:, :length]
    filler = torch.full((t.shape[0], length - t.shape[1], *t.shape[2:]), pad, dtype=t.dtype, device=t.device)
    return torch.cat([t, filler], dim=1)


class CaptionConditioned(nn.Module):
    """A backbone conditioned on captions (cond caption_ids (B, L) bytes, or text, text_mask (B, L, D), (B, L))."""

    def init_captions(self, options: CaptionOptions) -> None:
        """The encoder, the learned null caption and the null conditions of ``options``' caption keys."""
        self.caption_options, self.text_encoder = options, None
        if options.text == "bytes":
            self.text_encoder = ByteEncoder(options.text_dim, options.text_length, options.text_layers,
                                            heads=max(1, options.text_dim // 64) if options.text_dim >= 64 else 4)
            self.null_cond["caption_ids"] = 0  # all padding, whatever the caption length: the empty caption
        elif options.text == "embeddings":
            self.null_cond["text_mask"] = False  # no token at all
        if options.text != "none":
            self.null_text = nn.Parameter(torch.zeros(options.text_length, options.text_dim))

    def caption_tokens(self, cond, batch: int, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Caption tokens (B, L, D) and mask (B, L), or (None, None) without captions; empty captions become the
        learned null tokens."""
        options = self.caption_options
        if options.text == "none":
            return None, None
        length = options.text_length  # every caption becomes exactly this many tokens (cut or padded)
        if self.text_encoder is not None:
            ids = cond["caption_ids"]
            ids = ids[:, None] if ids.ndim == 1 else ids  # a null caption filled in per sample: (B,) -> (B, 1)
            tokens, mask = self.text_encoder(fit_length(ids, length, 0))
        else:
            mask = cond["text_mask"].to(torch.bool)
            mask = mask[:, None] if mask.ndim == 1 else mask  # a null mask filled in per sample: (B,) -> (B, 1)
            tokens = cond.get("text")
            if tokens is None:  # no caption at all: every row is empty
                tokens = torch.zeros(batch, mask.shape[1], options.text_dim, device=device)
            tokens, mask = fit_length(tokens, length, 0.0), fit_length(mask, length, False)
        empty = ~mask.any(1)  # (B,)
        null = self.null_text[: tokens.shape[1]].to(tokens.dtype)
        tokens = torch.where(empty[:, None, None], null.expand_as(tokens), tokens)
        return tokens, mask | empty[:, None]
