"""Frozen text encoders for caption conditioning (Imagen conditions on a frozen T5-XXL; Saharia et al. 2022,
sec. 2.1), behind one small interface, and the batch transform that turns captions into their tokens.

Captions travel through data sets as UTF-8 byte ids (``modalities.nn.text``). The ``text_embeddings``
transform decodes them and adds ``text`` (B, L, D) and ``text_mask`` (B, L) from a Hugging Face encoder (T5 or
CLIP text, from a local folder or a hub name already in the local cache; nothing is downloaded by polydiff).
Encodings are cached in memory, and ``polydiff cache-text`` precomputes a data set's into a safetensors file
the transform reads, so training never runs the encoder twice on one caption. The transform also runs when
sampling (``--prompt``), so a model and its prompts always meet the same encoder.

Needs the optional ``text`` extra (``pip install polydiff[text]``: transformers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..modalities.nn.text import decode_bytes
from ..recipes.config import Config, ConfigError, setting
from ..registry import register_transform


def caption_key(caption: str) -> str:
    """The cache key of a caption: its SHA-1 (safetensors names are strings of limited alphabet)."""
    return hashlib.sha1(caption.encode("utf-8")).hexdigest()


class TextEncoder:
    """A frozen Hugging Face text encoder: captions -> (tokens (N, L, D) float32, mask (N, L) bool)."""

    def __init__(self, name: str, length: int, device: str | torch.device = "cpu"):
        try:
            import transformers
        except ImportError:
            raise UserError("frozen text encoders need the 'text' extra: pip install 'polydiff[text]' "
                            "(transformers)") from None
        try:
            config = transformers.AutoConfig.from_pretrained(name)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(name)
            kind = {"t5": transformers.T5EncoderModel, "mt5": transformers.T5EncoderModel,
                    "clip": transformers.CLIPTextModel, "clip_text_model": transformers.CLIPTextModel}
            self.model = kind.get(config.model_type, transformers.AutoModel).from_pretrained(name)
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"cannot load the text encoder {name!r} ({' '.join(str(err).split())[:200]})") from None
        self.model.eval().requires_grad_(False).to(device)
        self.length, self.device = length, device
        self.dim = int(getattr(self.model.config, "d_model", None) or self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.length,
                               return_tensors="pt")
        mask = batch["attention_mask"].to(self.device)
        out = self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=mask).last_hidden_state
        return out.float().cpu(), mask.bool().cpu()


@dataclass(frozen=True)
class TextEmbeddingsOptions(Config):
    """Options of ``text_embeddings``."""

    encoder: str = setting("t5-small", doc="a Hugging Face text encoder: a local folder or a cached hub name")
    length: int = setting(64, gt=0, le=4096, doc="encoder tokens kept (padded / truncated)")
    cache: str = setting("none", doc="a safetensors file of precomputed encodings (polydiff cache-text)")

    def check(self) -> None:
        if not self.encoder.strip():
            raise ConfigError(("encoder",), "{key} must name an encoder, got an empty string")


@register_transform("text_embeddings", TextEmbeddingsOptions, at_sampling=True)
class TextEmbeddings:
    """Adds ``text`` and ``text_mask`` from ``caption_ids``; an empty caption keeps an all-False mask (the
    backbone's learned null tokens). Deterministic: it draws nothing from the generators."""

    def __init__(self, options: TextEmbeddingsOptions):
        self.options = options
        self._encoder: TextEncoder | None = None
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if options.cache != "none":
            self.cache.update(read_cache(Path(options.cache)))

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            self._encoder = TextEncoder(self.options.encoder, self.options.length)
        return self._encoder

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (N, L, D), mask (N, L)) of captions, from the cache where it has them."""
        missing = sorted({c for c in captions if c and caption_key(c) not in self.cache})
        if missing:
            tokens, mask = self.encoder(missing)
            self.cache.update({caption_key(c): (t, m) for c, t, m in zip(missing, tokens, mask)})
        any_entry = next(iter(self.cache.values()), None)
        shape = any_entry[0].shape if any_entry is not None else (self.options.length, self.encoder.dim)
        empty = (torch.zeros(shape), torch.zeros(shape[0], dtype=torch.bool))
        pairs = [self.cache[caption_key(c)] if c else empty for c in captions]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def __call__(self, batch: dict, generators) -> dict:
        ids = batch["cond"].get("caption_ids")
        if ids is None:
            raise ValueError("text_embeddings needs captions (caption_ids) in the data")
        tokens, mask = self.encode(decode_bytes(ids.cpu()))
        device = ids.device
        return {**batch, "cond": {**batch["cond"], "text": tokens.to(device), "text_mask": mask.to(device)}}


def read_cache(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A cache file written by ``write_cache``; a damaged one is one clear error."""
    from ..storage.files import read_tensors

    tensors = read_tensors(path)
    return {key[:-7]: (tensors[key], tensors[key[:-7] + ".mask"].bool()) for key in tensors if key.endswith(".tokens")}


def write_cache(path: Path, cache: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Path:
    """The encodings as one safetensors file: ``<sha1>.tokens`` (L, D) and ``<sha1>.mask`` (L,) per caption."""
    from ..storage.files import write_tensors

    tensors = {}
    for key, (tokens, mask) in cache.items():
        tensors[f"{key}.tokens"], tensors[f"{key}.mask"] = tokens.contiguous(), mask.to(torch.uint8)
    write_tensors(path, tensors, {"polydiff_text_cache": "1"})
    return path
