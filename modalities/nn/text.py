"""Text as condition tokens: captions travel as UTF-8 byte ids, and a small trainable encoder turns them into
tokens for cross-attention (what the CPU recipes train; a frozen T5 / CLIP encoder is the alternative, see
``polydiff.data.text``).

Byte ids need no vocabulary file (Xue et al. 2022, ByT5, make the case for bytes): 0 pads, byte b is id b + 1,
so a caption is a (L,) long tensor that a data set can hold and a model folder never needs a tokenizer for.
"""

from __future__ import annotations

import torch
from torch import nn

PAD = 0
VOCAB = 257  # padding + 256 byte values


def encode_bytes(texts: list[str], length: int) -> torch.Tensor:
    """Captions as byte ids (N, length): UTF-8 bytes + 1, cut to ``length``, padded with 0."""
    out = torch.zeros(len(texts), length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = list(text.encode("utf-8"))[:length]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long) + 1
    return out


def decode_bytes(ids: torch.Tensor) -> list[str]:
    """The captions back from byte ids (N, L) (invalid UTF-8 is replaced, never fatal)."""
    return [bytes(int(v) - 1 for v in row if int(v) != PAD).decode("utf-8", "replace") for row in ids.reshape(len(ids), -1)]


class ByteEncoder(nn.Module):
    """Byte ids (B, L) -> tokens (B, L, D) and mask (B, L): embeddings plus learned positions through a small
    pre-norm Transformer encoder (Vaswani et al. 2017) that ignores the padding."""

    def __init__(self, dim: int, length: int, layers: int = 2, heads: int = 4):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim, padding_idx=PAD)
        self.position = nn.Parameter(torch.zeros(length, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = ids != PAD
        h = self.embed(ids) + self.position[: ids.shape[1]]
        if self.encoder is not None:
            empty = ~mask.any(1, keepdim=True)  # a row of padding only attends to itself rather than to nothing
            h = self.encoder(h, src_key_padding_mask=~(mask | empty))
        return self.norm(h), mask
