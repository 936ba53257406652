"""WaveGrad (Chen et al. 2021, "WaveGrad: Estimating Gradients for Waveform Generation", sec. 3 and its figures): the
vocoder backbone F(x_in, c_noise, cond) for waveforms (B, 1, T) conditioned on a log-mel ``cond["mel"]``
(B, n_mels, T // hop_length).

    mel (B, n_mels, F) -> conv 3 -> UBlock x f_1 -> ... -> UBlock x f_L -> conv 3 -> (B, out_factor, T = F f_1 ... f_L)
    x_in (B, 1, T)     -> conv 5 -> DBlock / f_L -> ... -> DBlock / f_2     (the waveform path: the lengths reversed)
    FiLM_l(waveform features at UBlock l's output length, noise level) -> (shift, scale) for UBlock l

FiLM adds a sinusoidal encoding of the noise level to the waveform features and gives UBlock l gamma (scale) and
zeta (shift): gamma * U + zeta. Layer shapes follow lmnt-com/wavegrad (src/wavegrad/model.py): the Base preset has
exactly its parameter count (15,810,401 with 80 mels, 15,920,993 with its 128; the paper says 15M), and the
convolutions start orthogonal (FiLM's Xavier-uniform) with zero bias, as there.

The noise level: the paper encodes sqrt(abar) scaled by C = 5000 (sec. 3, FiLM); pair this backbone with
``diffusion.c_noise = "sqrt_alpha_bar"`` (``core.precond.sqrt_alpha_bar_c_noise``) and the ``eps``
parameterization (its c_in makes x_in = sqrt(abar) x0 + sqrt(1 - abar) eps, WaveGrad's input). The backbone encodes
``noise_scale * c_noise``; lmnt encodes sqrt(abar) unscaled (noise_scale = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import UserError
from ...recipes.config import Config, ConfigError, setting
from ...registry import BackboneSpec, register_backbone
from ..nn.embeddings import FourierEmbedding
from ..nn.layers import Upsample, conv_nd

# Dilations of each UBlock's four 3x1 convolutions (paper sec. 3; lmnt): the two coarse levels, then the rest.
_PAPER_DILATIONS = (1, 2, 1, 2) * 2 + (1, 2, 4, 8) * 3
_BASE = dict(factors=(5, 5, 3, 2, 2), up_channels=(512, 512, 256, 128, 128), down_channels=(32, 128, 128, 256, 512),
             dilations=_PAPER_DILATIONS, mel_channels=768, ublocks_per_level=1)
PRESETS: dict[str, dict] = {
    "base": _BASE,  # 24 kHz, hop 300 (paper sec. 5): 15.8M parameters with 80 mels
    # Large (paper: 23M) as we read sec. 5: one more UBlock per level, at the level's length; see the tests' count.
    "large": {**_BASE, "ublocks_per_level": 2},
    "tiny": {**_BASE, "up_channels": (64, 64, 32, 32, 16), "down_channels": (16, 32, 32, 64, 64),
             "mel_channels": 64},  # trains on a CPU; the same hop of 300
}
SIZE_KEYS = tuple(_BASE)


@dataclass(frozen=True)
class WaveGradOptions(Config):
    """Options of the ``wavegrad`` backbone. Size keys left "none" come from the preset."""

    preset: Literal["tiny", "base", "large", "none"] = setting("tiny", doc='a named size, the keys set here override '
                                                                          'it; "none": set every size key')
    n_mels: int = setting(128, gt=0, le=1024, doc="mel bins of cond['mel'] (the mel config's n_mels)")
    hop_length: int = setting(300, gt=0, le=65536, doc="waveform samples per mel frame (the mel config's "
                                                       "hop_length); the factors must multiply to it")
    factors: tuple[int, ...] | None = setting(None, ge=1, le=64, doc="upsampling factor of each UBlock level, from "
                                                                     "mel frames to samples")
    up_channels: tuple[int, ...] | None = setting(None, gt=0, le=4096, doc="channels of each UBlock level")
    down_channels: tuple[int, ...] | None = setting(None, gt=0, le=4096, doc="channels of the waveform path at each "
                                                                             "level's length, full length first "
                                                                             "(the 5x1 conv, then each DBlock); even")
    dilations: tuple[int, ...] | None = setting(None, ge=1, le=256, doc="dilations of the four 3x1 convolutions of "
                                                                        "each UBlock, four per level")
    mel_channels: int | None = setting(None, gt=0, le=4096, doc="channels of the 3x1 convolution on the mel")
    ublocks_per_level: int | None = setting(None, ge=1, le=8, doc="UBlocks per level: the first upsamples, the rest "
                                                                  "keep the length (2 in Large)")
    noise_scale: float = setting(5000.0, gt=0, doc="C: the noise encoding sees C * c_noise (paper: 5000 with c_noise "
                                                   "sqrt(abar); lmnt: 1)")

    def resolved(self) -> dict:
        """Every size key: set here, else from the preset."""
        base = PRESETS.get(self.preset, {})
        return {k: getattr(self, k) if getattr(self, k) is not None else base[k] for k in SIZE_KEYS}

    def check(self) -> None:
        missing = [k for k in SIZE_KEYS if getattr(self, k) is None]
        if self.preset == "none" and missing:
            raise ConfigError((missing[0],), '{key} must be set: {preset} is "none", so no preset fills it')
        r = self.resolved()
        levels = len(r["factors"])
        origin = {k: "" if getattr(self, k) is not None else f" (preset {self.preset!r})" for k in SIZE_KEYS}
        for key in ("up_channels", "down_channels"):
            if len(r[key]) != levels:
                raise ConfigError((key,), f"{{key}}{origin[key]} has {len(r[key])} entries for the {levels} levels of "
                                          f"{{factors}}{origin['factors']}")
        if len(r["dilations"]) != 4 * levels:
            raise ConfigError(("dilations",), f"{{key}}{origin['dilations']} needs 4 per level, {4 * levels} for "
                                              f"{levels} levels, got {len(r['dilations'])}")
        if any(c % 2 for c in r["down_channels"]):
            raise ConfigError(("down_channels",), f"{{key}} must be even (the noise encoding's sin and cos "
                                                  f"halves), got {list(r['down_channels'])}")
        if math.prod(r["factors"]) != self.hop_length:
            product = " x ".join(map(str, r["factors"]))
            raise ConfigError(("factors",), f"{{key}}{origin['factors']} multiply to {product} = "
                                            f"{math.prod(r['factors'])}, but {{hop_length}} is {self.hop_length}: "
                                            f"each mel frame must become hop_length samples")


def _conv(in_channels: int, out_channels: int, kernel: int, dilation: int = 1, init=nn.init.orthogonal_) -> nn.Module:
    """A 1-D convolution with 'same' padding for its dilation, weights from ``init`` and zero bias (lmnt)."""
    conv = conv_nd(1, in_channels, out_channels, kernel, dilation=dilation, padding=dilation * (kernel // 2))
    init(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _act(h: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(h, 0.2)


class FiLM(nn.Module):
    """Feature-wise linear modulation (sec. 3): waveform features (B, C, L) at one level's length and the
    noise level (B,) -> shift and scale (B, C_up, L) for that level's UBlocks. The noise level enters as the
    Transformer sinusoidal encoding (Vaswani et al. 2017) added to every position."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv_in = _conv(channels, channels, 3, init=nn.init.xavier_uniform_)
        self.encoding = FourierEmbedding(channels)
        self.conv_out = _conv(channels, 2 * out_channels, 3, init=nn.init.xavier_uniform_)

    def forward(self, h: torch.Tensor, noise_level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = _act(self.conv_in(h)) + self.encoding(noise_level).to(h.dtype)[:, :, None]  # (B, C) -> (B, C, 1)
        shift, scale = self.conv_out(h).chunk(2, dim=1)
        return shift, scale


class UBlock(nn.Module):
    """Upsampling block (sec. 3): a 1x1 residual path and two FiLM-modulated pairs of dilated 3x1 convolutions.

        y   = conv1x1(up(x)) + conv_1(act(film(conv_0(up(act(x))))))          film(h) = scale * h + shift
        out = y + conv_3(act(film(conv_2(act(film(y))))))
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int, dilations: tuple[int, ...]):
        super().__init__()
        self.up = Upsample(1, in_channels, use_conv=False, factor=factor) if factor > 1 else nn.Identity()
        self.skip = _conv(in_channels, out_channels, 1)
        self.convs = nn.ModuleList([_conv(in_channels, out_channels, 3, dilations[0])]
                                   + [_conv(out_channels, out_channels, 3, d) for d in dilations[1:]])

    def forward(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        h = self.convs[0](self.up(_act(x)))
        y = self.skip(self.up(x)) + self.convs[1](_act(scale * h + shift))
        h = self.convs[2](_act(scale * y + shift))
        return y + self.convs[3](_act(scale * h + shift))


class DBlock(nn.Module):
    """Downsampling block (sec. 3): keep every ``factor``-th sample (lmnt's nearest-neighbour interpolation), then
    3x1 convolutions dilated 1, 2, 4, plus a 1x1 residual path."""

    def __init__(self, in_channels: int, out_channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.skip = _conv(in_channels, out_channels, 1)
        self.convs = nn.ModuleList([_conv(in_channels, out_channels, 3, 1), _conv(out_channels, out_channels, 3, 2),
                                    _conv(out_channels, out_channels, 3, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[..., :: self.factor]  # (B, C, L) -> (B, C, L / factor)
        h = x
        for conv in self.convs:
            h = conv(_act(h))
        return self.skip(x) + h


@register_backbone("wavegrad", WaveGradOptions, example_shape=(1, 4 * 300))
class WaveGrad(nn.Module):
    """F(x_in (B, 1, T), c_noise (B,), cond {"mel": (B, n_mels, T // hop_length)}) -> (B, out_factor, T)."""

    def __init__(self, options: WaveGradOptions, spec: BackboneSpec):
        super().__init__()
        shape = spec.example_shape
        if len(shape) != 2 or shape[0] != 1 or shape[1] % options.hop_length:
            raise UserError(f"backbone 'wavegrad' takes mono waveforms (1, T) with T a multiple of "
                            f"model.options.hop_length = {options.hop_length}, but the examples have shape {shape}")
        r = options.resolved()
        self.options, self.out_factor = options, spec.out_factor
        self.null_cond, self.required_cond = {}, ("mel",)
        self.mel_conv = _conv(options.n_mels, r["mel_channels"], 3)
        levels, in_channels = [], r["mel_channels"]
        for i, (factor, channels) in enumerate(zip(r["factors"], r["up_channels"])):
            dilations = r["dilations"][4 * i: 4 * i + 4]
            extra = [UBlock(channels, channels, 1, dilations) for _ in range(r["ublocks_per_level"] - 1)]
            levels.append(nn.ModuleList([UBlock(in_channels, channels, factor, dilations), *extra]))
            in_channels = channels
        self.up = nn.ModuleList(levels)
        down = r["down_channels"]
        self.wave_conv = _conv(1, down[0], 5)
        self.down = nn.ModuleList(DBlock(c_in, c_out, f) for c_in, c_out, f in
                                  zip(down[:-1], down[1:], reversed(r["factors"][1:])))
        self.films = nn.ModuleList(FiLM(d, u) for d, u in zip(down, reversed(r["up_channels"])))
        self.out = _conv(r["up_channels"][-1], spec.out_factor, 3)

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """The mel path's part that depends on neither x_in nor c_noise, (B, n_mels, F) -> (B, mel_channels, F):
        a sampler may compute it once per utterance (``decode``). The first UBlock's convolutions before its first
        FiLM are noise-free too (2 x 5 x 512 / 768 = 6.7x more values, ~2% of the compute): inference caches them as
        well (``wavegrad_fast.FastWaveGrad.encode``)."""
        return self.mel_conv(mel)

    def decode(self, x_in: torch.Tensor, c_noise: torch.Tensor, mel_features: torch.Tensor) -> torch.Tensor:
        """The noise-dependent rest: ``forward`` given ``encode_mel(cond["mel"])``."""
        noise_level = self.options.noise_scale * c_noise  # (B,): C sqrt(abar) in the paper
        h = self.wave_conv(x_in)
        films = [self.films[0](h, noise_level)]
        for block, film in zip(self.down, self.films[1:]):
            h = block(h)
            films.append(film(h, noise_level))
        u = mel_features
        for level, (shift, scale) in zip(self.up, reversed(films)):  # coarsest level first
            for block in level:
                u = block(u, shift, scale)
        return self.out(u)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond) -> torch.Tensor:
        mel, hop = cond["mel"], self.options.hop_length
        expected = (x_in.shape[0], self.options.n_mels, x_in.shape[-1] // hop)
        if tuple(mel.shape) != expected or x_in.shape[-1] % hop:
            raise UserError(f"backbone 'wavegrad': cond['mel'] has shape {tuple(mel.shape)}, but waveforms "
                            f"{tuple(x_in.shape)} need {expected} (model.options n_mels = {self.options.n_mels}, one "
                            f"frame per hop_length = {hop} samples, T a multiple of it)")
        return self.decode(x_in, c_noise, self.encode_mel(mel.to(x_in.dtype)))

    def example_cond(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """A value of every required condition for waveforms ``x`` (B, 1, T): a random log-mel (contract tests,
        benchmarks)."""
        shape = (x.shape[0], self.options.n_mels, x.shape[-1] // self.options.hop_length)
        return {"mel": torch.randn(shape, device=x.device, dtype=x.dtype) - 5.0}
