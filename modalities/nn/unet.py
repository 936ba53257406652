"""A U-Net for any number of example dimensions: ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on
Image Synthesis", building on Ho et al. 2020's DDPM U-Net) with the options of Imagen's Efficient U-Net
(Saharia et al. 2022, App. B.1). Images use it in 2-D, video in 3-D with temporal layers added
(``extra_layers``), so nothing is written once per dimension.

Encoder level l has ``num_res_blocks[l]`` residual blocks of ``channels * channel_mult[l]`` channels, with
self-attention (and cross-attention to condition tokens) where the downsampling factor is in
``attention_factors``; a middle block (res, attention, res); a mirrored decoder that concatenates the
encoder's activations. ADM resamples at the end of each level; the Efficient U-Net resamples first in the
encoder and last in the decoder, so the convolutions of every level run at the lower resolution.

Conditioning is summed into one embedding (B, E), E = 4 channels: the noise level (Fourier features of c_noise,
then an MLP), a class label (a table with one extra, learned null row), an augmentation level (cascades;
Ho et al. 2021, "Cascaded Diffusion Models", sec. 4.1) and the pooled condition tokens (Imagen, App. B).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import CrossAttention, SelfAttention
from .embeddings import FourierEmbedding
from .layers import Downsample, Upsample, conv_nd, group_norm, zero_init
from .resblock import ResBlock


@dataclass(frozen=True)
class UNetShape:
    """Every size and switch of a U-Net (the modalities map their typed options onto it)."""

    dims: int
    in_channels: int
    out_channels: int
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)
    attention_factors: tuple[int, ...] = (2,)
    head_channels: int = 64
    dropout: float = 0.0
    scale_shift: bool = True
    resblock_updown: bool = False
    efficient: bool = False
    skip_scale: float = 1.0
    resample: tuple[int, ...] | int = 2
    num_classes: int = 0
    context_dim: int = 0
    aug_level: bool = False
    middle_attention: bool = True
    checkpointing: bool = False
    decoder: bool = True  # False: the encoder and middle block only (a classifier's trunk)
    extra: dict = field(default_factory=dict)  # modality-specific switches read by subclasses


@dataclass
class Conditioning:
    """What every block may read: the summed embedding, condition tokens and their mask, and anything a
    modality's extra layers need (e.g. video's per-sample frame mask)."""

    emb: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


class Block(nn.ModuleList):
    """Layers applied in order; each gets what it needs from the ``Conditioning``."""

    checkpointing = False

    def forward(self, h: torch.Tensor, c: Conditioning) -> torch.Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._run, h, c, use_reentrant=False)
        return self._run(h, c)

    def _run(self, h: torch.Tensor, c: Conditioning) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, c.emb)
            elif isinstance(layer, CrossAttention):
                h = layer(h, c.tokens, c.mask) if c.tokens is not None else h
            elif getattr(layer, "takes_conditioning", False):
                h = layer(h, c)
            else:
                h = layer(h)
        return h


class UNet(nn.Module):
    """(x (B, C_in, *S), c_noise (B,), Conditioning pieces) -> (B, C_out, *S)."""

    def __init__(self, shape: UNetShape):
        super().__init__()
        s = self.shape = shape
        levels = len(s.channel_mult)
        if len(s.num_res_blocks) != levels:
            raise ValueError(f"num_res_blocks has {len(s.num_res_blocks)} entries for {levels} levels")
        emb = 4 * s.channels
        self.noise_embed = nn.Sequential(FourierEmbedding(s.channels), nn.Linear(s.channels, emb), nn.SiLU(),
                                         nn.Linear(emb, emb))
        self.class_embed = nn.Embedding(s.num_classes + 1, emb) if s.num_classes else None
        self.aug_embed = nn.Sequential(FourierEmbedding(s.channels), nn.Linear(s.channels, emb), nn.SiLU(),
                                       nn.Linear(emb, emb)) if s.aug_level else None
        self.pooled_embed = nn.Linear(s.context_dim, emb) if s.context_dim else None

        ch = s.channels * s.channel_mult[0]
        self.input = conv_nd(s.dims, s.in_channels, ch, 3)
        self.down, skips, factor = nn.ModuleList(), [] if s.efficient else [ch], 1
        self.keeps_skip: list[bool] = []  # whether the decoder receives the output of down[i]
        for level, mult in enumerate(s.channel_mult):
            if s.efficient:  # Imagen: resample first, so the level's convolutions run at the lower resolution
                self._add_down([self._downsample(ch, ch)], keep=False)
                factor *= 2
            for _ in range(s.num_res_blocks[level]):
                layers = [self._res(ch, s.channels * mult)]
                ch = s.channels * mult
                self._add_down(layers + self._attention(ch, factor), keep=True)
                skips.append(ch)
            if not s.efficient and level < levels - 1:
                self._add_down([self._downsample(ch, ch)], keep=True)
                skips.append(ch)
                factor *= 2
        middle = [self._res(ch, ch)] + (self._attention(ch, factor, always=True) if s.middle_attention else [])
        self.middle = self._block(middle + [self._res(ch, ch)])
        self.up, self.trunk_channels = nn.ModuleList(), ch
        if not s.decoder:
            return
        for level, mult in reversed(list(enumerate(s.channel_mult))):
            count = s.num_res_blocks[level] + (0 if s.efficient else 1)
            for i in range(count):
                layers = [self._res(ch + skips.pop(), s.channels * mult)]
                ch = s.channels * mult
                layers += self._attention(ch, factor)
                last = i == count - 1
                if last and (s.efficient or level > 0):
                    layers.append(self._upsample(ch, ch))
                    factor //= 2
                self.up.append(self._block(layers))
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_init(conv_nd(s.dims, ch, s.out_channels, 3)))

    # ------------------------------------------------------------------ building

    def _add_down(self, layers: list[nn.Module], keep: bool) -> None:
        self.down.append(self._block(layers))
        self.keeps_skip.append(keep)

    def _block(self, layers: list[nn.Module]) -> Block:
        block = Block(layers)
        block.checkpointing = self.shape.checkpointing
        return block

    def _res(self, cin: int, cout: int, resample: str | None = None) -> ResBlock:
        s = self.shape
        return ResBlock(s.dims, cin, cout, 4 * s.channels, s.dropout, s.scale_shift, resample, s.resample, s.skip_scale)

    def _downsample(self, cin: int, cout: int) -> nn.Module:
        s = self.shape
        return self._res(cin, cout, "down") if s.resblock_updown else Downsample(s.dims, cin, cout, True, s.resample)

    def _upsample(self, cin: int, cout: int) -> nn.Module:
        s = self.shape
        return self._res(cin, cout, "up") if s.resblock_updown else Upsample(s.dims, cin, cout, True, s.resample)

    def _attention(self, ch: int, factor: int, always: bool = False) -> list[nn.Module]:
        """Self- (and cross-) attention at the chosen downsampling factors, then the modality's extra layers."""
        s, layers = self.shape, []
        if always or factor in s.attention_factors:
            layers.append(SelfAttention(ch, s.head_channels))
            if s.context_dim:
                layers.append(CrossAttention(ch, s.context_dim, s.head_channels))
        return layers + self.extra_layers(ch, factor)

    def extra_layers(self, channels: int, factor: int) -> list[nn.Module]:
        """Layers a subclass adds after each block's residual and attention layers (none here)."""
        return []

    # ------------------------------------------------------------------ running

    def embed(self, c_noise: torch.Tensor, labels=None, aug_level=None, tokens=None, mask=None) -> torch.Tensor:
        """The summed conditioning embedding (B, E)."""
        emb = self.noise_embed(c_noise)
        if self.class_embed is not None:
            emb = emb + self.class_embed(labels)
        if self.aug_embed is not None:
            emb = emb + self.aug_embed(aug_level * 1000)  # in [0, 1] -> the range of timestep indices
        if self.pooled_embed is not None and tokens is not None:
            weights = mask.to(tokens.dtype)[..., None] if mask is not None else torch.ones_like(tokens[..., :1])
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, L, D) -> (B, D) masked mean
            emb = emb + self.pooled_embed(pooled.to(emb.dtype))
        return emb

    def encode(self, x: torch.Tensor, c: Conditioning) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The encoder and middle block: (the lowest-resolution features, the activations the decoder reuses)."""
        h = self.input(x)
        skips = [] if self.shape.efficient else [h]
        for block, keep in zip(self.down, self.keeps_skip):
            h = block(h, c)
            if keep:
                skips.append(h)
        return self.middle(h, c), skips

    def run(self, x: torch.Tensor, c: Conditioning) -> torch.Tensor:
        """The network on x (B, C_in, *S), already carrying any channel-concatenated conditions."""
        h, skips = self.encode(x, c)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), c)  # (B, C + C_skip, *S)
        return self.out(h)

    def fsdp_units(self) -> list[nn.Module]:
        """The blocks, sharded one by one under FSDP (``train.sharding``)."""
        return [*self.down, self.middle, *self.up]
